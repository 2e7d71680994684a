// examples/multicam/summary.hpp - everything framepipe-multicam reports: the --json object, the
// /stats.json body, the page's state messages, and /metrics (fields: docs/examples/multicam.md).
#pragma once

#include "cameras.hpp"
#include "settings.hpp"
#include "stages.hpp"

#include "common/jpeg_encoder.hpp"
#include "detector.hpp"

#include <framepipe/snapshot.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <cstdint>
#include <string>
#include <vector>

namespace framepipe_examples::multicam {

// What the summary reads; each part's figures may be read from any thread.
struct run_parts {
    const settings& s;
    const camera_set& cameras;
    const frame_batcher& batches;
    const detection::detector& d;
    const detect_step& detect;
    const jpeg_encoder& jpeg;
};

// The summary after `elapsed` seconds: per camera (frames, fps, status, detections, detector
// share, input age p50/p99, drops by reason and consumer, frames in flight, reconnects), and
// overall (fairness() as jain_index, the detector's frames, skipped and orphaned, the removed
// cameras' totals, batch sizes and flushes, input age, peak RSS, CPU), with the pipeline's
// stages and channels from `snap`.
[[nodiscard]] nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap,
                                     double elapsed);

// The shares of the detector a set of cameras of these weights gets from a weighted fair
// scheduler when camera i can take at most caps[i] (a share): proportional to the weights, a
// camera over its cap held to it and the rest shared again by weight (water-filling). Sums to 1
// (caps summing to less are scaled up to 1).
[[nodiscard]] std::vector<double> attainable_shares(const std::vector<double>& weights,
                                                    const std::vector<double>& caps);

// Jain's index of x = detections / attainable detections over the cameras online with at least
// one frame when the figures are taken (a camera paused, reconnecting, offline or that never
// delivered is left out). The attainable detections share out those cameras' detections by
// weight, each capped at min(its frames, `batches`): one frame per camera per batch, and none it
// did not deliver. nullopt when no camera is left; 1 when none was detected.
[[nodiscard]] std::optional<double> fairness(const std::vector<camera_figures>& cams,
                                             std::uint64_t batches);

// /metrics: every per-camera figure as a family with a `camera` label, the overall figures,
// then the pipeline's own (framepipe::to_prometheus).
[[nodiscard]] std::string metrics_text(const run_parts& r, const framepipe::pipeline_snapshot& snap);

} // namespace framepipe_examples::multicam
