// examples/detection/summary.hpp - everything framepipe-detect reports: the --json object, the
// /stats.json body and the page's state messages (fields: docs/examples/detection.md).
#pragma once

#include "detector.hpp"
#include "settings.hpp"
#include "stages.hpp"

#include "common/jpeg_encoder.hpp"
#include "common/live_camera.hpp"
#include "common/video_source.hpp"

#include <framepipe/snapshot.hpp>

#include <nlohmann/json.hpp>

namespace framepipe_examples::detection {

// What the summary reads. Each member's counters may be read from any thread. The input is a
// file (video) or a live input (camera): exactly one of the two is set.
struct run_parts {
    const settings& s;
    const video_source* video;
    const live_camera* camera;
    const detector& d;
    const meters& m;
    const jpeg_encoder& jpeg;
};

// The summary after `elapsed` seconds, with the pipeline's figures from `snap`. Frames the
// detector and the UI never worked on are counted by reason: in pipelined mode from their
// subscriptions (evicted by a newer frame; rate_limited by --ui-fps, or passed over by the
// detector paced to --detect-fps); inline, as the frames read minus the ones worked on (a file),
// or from the inline stage's subscription (a live input). A live input adds "sources".
[[nodiscard]] nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap,
                                     double elapsed);

} // namespace framepipe_examples::detection
