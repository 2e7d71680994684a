// examples/common/scene_change.hpp - did the picture change into another one? A colour
// histogram distance between successive frames, thresholded: the sampler for content that cuts
// (edited video, a camera switched to another view), not for a fixed camera.
//
//     framepipe_examples::scene_change_detector scenes({.threshold = 0.3});
//     for (;;) {
//         const auto s = scenes.update(frame);       // BGR
//         if (s.cut) detect(frame);                  // the first frame of each scene
//     }
//
// Per frame: shrunk to frame_height rows, converted to HSV, a 2-D hue x saturation histogram
// (hue_bins x saturation_bins, normalised to sum 1; brightness left out, so that a light that
// dims is not a cut), compared with the previous frame's by the Bhattacharyya distance
// (cv::compareHist: 0 for the same distribution, 1 for disjoint ones). A distance above
// `threshold` is a cut. The first frame (and a frame of another size) is a cut: it begins the
// first scene.
//
// Successive frames, not the last cut: a slow pan that drifts into another view never fires,
// only a change between two frames does (what an edit or a switched camera makes).
//
// Thread safety: one thread at a time (it keeps the previous histogram).
#pragma once

#include <opencv2/core.hpp>

namespace framepipe_examples {

struct scene_options {
    double threshold = 0.3;   // Bhattacharyya distance (0 < t < 1) above which a frame is a cut
    int frame_height = 90;    // rows the histogram is taken on (>= 8)
    int hue_bins = 30;        // >= 2
    int saturation_bins = 32; // >= 2
};

struct scene_result {
    double distance = 0; // to the previous frame, 0..1 (1 for the first frame)
    bool cut = false;    // distance > threshold, or the first frame
};

class scene_change_detector {
public:
    // Throws std::invalid_argument naming the field out of its range.
    explicit scene_change_detector(scene_options options = {});

    // The distance of `frame` (BGR, 8-bit) to the previous one. Throws cv::Exception for an
    // empty frame or another pixel type.
    [[nodiscard]] scene_result update(const cv::Mat& frame);

    [[nodiscard]] const scene_options& options() const noexcept { return o_; }

private:
    scene_options o_;
    cv::Size size_;
    cv::Mat small_, hsv_, hist_, previous_;
};

} // namespace framepipe_examples
