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

#include <string>

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
// share, input age p50/p99, drops by reason and consumer, reconnects), and overall (Jain's index
// over the detector shares divided by the weights, batch sizes and flushes, input age, peak RSS,
// CPU), with the pipeline's stages and channels from `snap`.
[[nodiscard]] nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap,
                                     double elapsed);

// /metrics: every per-camera figure as a family with a `camera` label, the overall figures,
// then the pipeline's own (framepipe::to_prometheus).
[[nodiscard]] std::string metrics_text(const run_parts& r, const framepipe::pipeline_snapshot& snap);

} // namespace framepipe_examples::multicam
