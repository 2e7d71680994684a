// examples/multicam/stages.hpp - what framepipe-multicam's two consumers do: the detector on a
// batch of frames from different cameras, and the UI on one camera's frame.
#pragma once

#include "cameras.hpp"

#include "common/encoded_frame.hpp"
#include "common/jpeg_encoder.hpp"
#include "detector.hpp"

#include <framepipe/batcher.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/select.hpp>

#include <opencv2/core.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace framepipe_examples::multicam {

// The detector stage: records each frame's input age for its camera (inference start minus
// capture), runs the detector on the batch (one forward pass with an ONNX model made with a
// batch, frame by frame otherwise), and hands each camera its result. One thread at a time (the
// detector's); the meters may be read from any thread.
class detect_step {
public:
    detect_step(detection::detector& d, camera_set& cameras) : d_(d), cameras_(cameras) {}

    void operator()(const framepipe::batch<frame_ptr>& b);

    framepipe::latency_histogram age;       // every frame's input age
    framepipe::latency_histogram inference; // per batch
    std::atomic<std::uint64_t> frames{0};   // frames detected
    std::atomic<std::uint64_t> skipped{0};  // frames of a session that ended (not detected)
    std::atomic<std::uint64_t> batches{0};

private:
    detection::detector& d_;
    camera_set& cameras_;
    std::vector<cv::Mat> images_;
    std::vector<framepipe::input_id> sources_;
};

// The UI stage: one camera's frame scaled to the tile width, its newest boxes drawn, a caption,
// encoded with a description for the page ({"type": "frame", "camera", "seq", "boxes", ...}).
// nullopt for a camera that is gone. One thread at a time (it keeps the canvas).
class ui_step {
public:
    ui_step(jpeg_encoder& jpeg, camera_set& cameras, int tile_width)
        : jpeg_(jpeg), cameras_(cameras), tile_width_(tile_width) {}

    [[nodiscard]] std::optional<std::shared_ptr<const encoded_frame>> operator()(
        const framepipe::selected<frame_ptr>& s);

private:
    jpeg_encoder& jpeg_;
    camera_set& cameras_;
    int tile_width_;
    cv::Mat canvas_;
};

} // namespace framepipe_examples::multicam
