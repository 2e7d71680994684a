// examples/handpose/stages.hpp - what flows through framepipe-handpose's graph, what the stages
// measure (the same in both modes), and the steps they share: classify_window() (the classifier)
// and display (the skeleton, the gesture, the JPEG).
#pragma once

#include "classifier.hpp"
#include "hand.hpp"
#include "models.hpp"

#include "common/epoch_watch.hpp"
#include "common/jpeg_encoder.hpp"
#include "common/video_frame.hpp"

#include <framepipe/metrics.hpp>
#include <framepipe/sliding_window.hpp>
#include <framepipe/stamped.hpp>

#include <opencv2/core.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace handpose {

using frame_ptr = std::shared_ptr<const framepipe_examples::video_frame>; // stamped<cv::Mat>, pooled

// One frame's hand, with its frame (null when replaying landmarks).
struct estimate {
    frame_ptr frame;
    landmarks hand;
};
using estimate_item = framepipe::stamped<estimate>;
using hand_item = framepipe::stamped<landmarks>;

// Measurements, shared by both modes. Any thread.
struct meters {
    std::atomic<std::uint64_t> source_frames{0};
    std::atomic<std::uint64_t> estimated{0};
    std::atomic<std::uint64_t> joints_found{0};
    std::atomic<std::uint64_t> displayed{0};
    std::atomic<std::uint64_t> classified{0};
    std::atomic<std::uint64_t> scored{0};
    std::atomic<std::uint64_t> correct{0};
    std::atomic<std::int64_t> display_gap_max_ns{0};
    framepipe::latency_histogram display_gap;
    framepipe::latency_histogram window_age;
    framepipe::latency_histogram classify_time;
    framepipe_examples::epoch_watch estimator_epochs; // the epochs of the frames estimated

    // The newest classification, for the display and the page. Guarded by mu.
    mutable std::mutex mu;
    std::optional<classification> last;
    double last_window_age_ms = 0; // age of its window's newest frame at the start
    std::uint64_t last_window_seq = 0; // seq of that frame
    std::chrono::steady_clock::time_point last_window_captured{};
};

// Classifies one window, scores it against the truth when the whole window lies inside one
// gesture, and records it in `m`. `scratch` is reused between calls. One thread at a time.
void classify_window(const framepipe::window<hand_item>& w, classifier& c, meters& m,
                     std::vector<hand_points>& scratch);

// The display: draws the skeleton and the current gesture over the frame (a plain canvas for
// replayed landmarks), encodes it, and describes it for the page ({"type": "frame", seq, points,
// joints_found, gesture, confidence, window_age_ms, result_age_ms, result_seq}); records the gap
// since the previous frame. One thread at a time.
class display {
public:
    display(meters& m, framepipe_examples::jpeg_encoder& jpeg) : m_(m), jpeg_(jpeg) {}

    [[nodiscard]] std::shared_ptr<const framepipe_examples::encoded_frame> operator()(const estimate_item& e);

private:
    meters& m_;
    framepipe_examples::jpeg_encoder& jpeg_;
    cv::Mat canvas_;
    std::chrono::steady_clock::time_point last_display_{};
};

} // namespace handpose
