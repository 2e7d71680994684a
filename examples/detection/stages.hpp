// examples/detection/stages.hpp - what framepipe-detect's stages do to one frame, the same in
// both modes: detect_step (the detector stage) and ui_step (the ui stage: draw, then encode).
#pragma once

#include "detector.hpp"

#include "common/epoch_watch.hpp"
#include "common/jpeg_encoder.hpp"
#include "common/video_frame.hpp"

#include <framepipe/metrics.hpp>
#include <framepipe/stamped.hpp>

#include <opencv2/core.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace framepipe_examples::detection {

// One detection result, paired with the frame it was computed on (stamped: its seq and time).
struct detection_result {
    std::vector<labelled_detection> boxes;
    double inference_ms = 0;
    std::vector<std::string> stages; // which stages ran, with --sampling: {"motion", "hog"}
};
using result = framepipe::stamped<detection_result>;

// The detector's figures, measured the same way in both modes. Any thread.
struct meters {
    framepipe::latency_histogram detect_age; // frame age when inference starts
    framepipe::latency_histogram inference;  // inference time
    std::atomic<std::uint64_t> detections{0};
    std::atomic<std::int64_t> last_inference_us{0};
    epoch_watch detector_epochs; // the epochs of the frames the detector took
    epoch_watch ui_epochs;       // and the UI
};

// Runs the detector on one frame, records its meters, prints the inference time, the frame's age
// and epoch on `console` ("inference 231.4 ms (frame 240, 5 boxes, input age 12.3 ms, epoch 1)").
// One thread at a time (the detector's).
class detect_step {
public:
    detect_step(detector& d, meters& m, std::FILE* console) : d_(d), m_(m), console_(console) {}

    [[nodiscard]] result operator()(const video_frame& f);

private:
    detector& d_;
    meters& m_;
    std::FILE* console_;
};

// Draws the newest result on a copy of the frame with a caption saying how much older the result
// is, encodes it, and describes it for the page ({"type": "frame", seq, boxes, result_seq,
// result_age_ms, width, height}). One thread at a time (it keeps the canvas).
class ui_step {
public:
    ui_step(jpeg_encoder& jpeg, meters& m) : jpeg_(jpeg), m_(m) {}

    [[nodiscard]] std::shared_ptr<const encoded_frame> operator()(const video_frame& f,
                                                                  const std::optional<result>& r);

private:
    jpeg_encoder& jpeg_;
    meters& m_;
    cv::Mat canvas_;
};

} // namespace framepipe_examples::detection
