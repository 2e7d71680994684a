// examples/handpose/summary.hpp - everything framepipe-handpose reports: the --json line, the
// /stats.json body and the page's state messages (fields: docs/examples/handpose.md).
#pragma once

#include "settings.hpp"
#include "stages.hpp"

#include "common/jpeg_encoder.hpp"
#include "common/live_camera.hpp"

#include <framepipe/sliding_window.hpp>
#include <framepipe/snapshot.hpp>

#include <nlohmann/json.hpp>

#include <string>

namespace handpose {

// What the summary reads. Each member's counters may be read from any thread.
struct run_parts {
    const settings& s;
    std::string input;      // what the frames or landmarks come from
    std::string classifier; // "dtw" or "onnx"
    const meters& m;
    const framepipe_examples::jpeg_encoder& jpeg;
    const framepipe::sliding_window<hand_item>& hands; // its windows: ready, dropped
    const framepipe_examples::live_camera* camera = nullptr; // a live input, else null
};

// The summary after `elapsed` seconds, with the pipeline's stages and channels from `snap`.
[[nodiscard]] nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap,
                                     double elapsed);

} // namespace handpose
