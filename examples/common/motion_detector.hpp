// examples/common/motion_detector.hpp - is anything moving? Downscaled frame differencing
// against a running-average background, in the manner of Frigate's motion detector: the cheap
// first stage that decides whether a detector looks at a frame (and where).
//
//     framepipe_examples::motion_detector motion({.threshold = 30, .mask = {{0, 0}, {200, 0},
//                                                                           {200, 40}, {0, 40}}});
//     for (;;) {
//         const auto m = motion.detect(frame);      // BGR, any size
//         if (m.moving()) detect(frame, m.boxes);   // boxes in frame pixels
//     }
//
// Per frame: grey, shrunk to frame_height rows (area averaging, which also removes sensor
// noise), a 3x3 blur, then the absolute difference with the background (a float image,
// cv::accumulateWeighted with frame_alpha). Pixels that differ by more than `threshold` grey
// levels are motion; they are dilated (so the parts of one walking person join up) and their
// outer contours found; a contour of at least `contour_area` pixels of the small frame is a
// motion box. The score is the share of the small frame that such contours cover.
// - The background learns slowly (frame_alpha 0.01: a change is absorbed in a few hundred
//   frames): something that stops moving stays "motion" for a while, a waving tree all the time
//   (mask it).
// - Lightning: when more than lightning_threshold of the frame changes at once (a light switched
//   on, the camera's IR mode), that is not motion: the background is reset to the frame and the
//   frame reports no boxes (calibrating), as after the first frame.
// - The mask: a polygon in frame pixels whose inside never counts as motion (a timestamp, a
//   tree). A polygon that reaches outside the frame is clipped to it at the first frame, and
//   mask_note() says so ("" when it fitted). It must be simple and enclose an area: edges that
//   cross or touch (a "bow-tie", corners listed out of order), or points all on one line, make
//   the constructor throw std::invalid_argument naming mask (a point repeated at once, or the
//   first one repeated last, counts once).
//
// Thread safety: one thread at a time (it keeps the background).
#pragma once

#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace framepipe_examples {

struct motion_options {
    // Grey levels (1..255) a pixel must differ from the background by to count as motion.
    int threshold = 30;
    // The smallest contour (pixels of the downscaled frame) that counts as motion (> 0).
    double contour_area = 10;
    // How fast the background follows the frames (0 < alpha <= 1).
    double frame_alpha = 0.01;
    // Rows of the downscaled frame the differencing runs on (>= 8; a smaller frame keeps its
    // own size).
    int frame_height = 100;
    // A share of the frame (0 < x <= 1) changing at once above which the background is reset.
    double lightning_threshold = 0.8;
    // A polygon in frame pixels (>= 3 points, edges not crossing, or none) whose inside is
    // ignored.
    std::vector<cv::Point> mask;
};

struct motion_result {
    double score = 0;            // share of the downscaled frame covered by motion contours
    std::vector<cv::Rect> boxes; // frame pixels, one per contour
    bool calibrating = false;    // the background was (re)set on this frame: no boxes

    [[nodiscard]] bool moving() const noexcept { return !boxes.empty(); }
};

class motion_detector {
public:
    // Throws std::invalid_argument naming the field out of its range (see motion_options).
    explicit motion_detector(motion_options options = {});

    // The motion in `frame` (BGR or grey, 8-bit) against the background, which it then updates.
    // The first frame, and a frame of another size than the one before, sets the background and
    // reports calibrating. Throws cv::Exception for an empty frame or another pixel type.
    [[nodiscard]] motion_result detect(const cv::Mat& frame);

    // What became of the mask at the first frame: "" when it lay inside the frame, else one line
    // ("mask: 2 of 4 points lie outside the 768x576 frame; clipped to it", or "... lies
    // entirely outside the 768x576 frame; no mask").
    [[nodiscard]] const std::string& mask_note() const noexcept { return mask_note_; }
    // The mask as clipped to the frame (empty before the first frame, or when none).
    [[nodiscard]] const std::vector<cv::Point2f>& clipped_mask() const noexcept { return clipped_; }

    [[nodiscard]] const motion_options& options() const noexcept { return o_; }

private:
    void setup(cv::Size frame);

    motion_options o_;
    cv::Size frame_size_;
    cv::Size small_;
    double scale_ = 1; // frame pixels per small-frame pixel
    cv::Mat grey_, small_grey_, blurred_, background_, background8_, diff_, binary_;
    cv::Mat mask_; // 255 where motion counts (small frame), empty without a mask
    cv::Mat kernel_;
    std::vector<cv::Point2f> clipped_;
    std::string mask_note_;
    bool calibrate_ = true;
};

// `polygon` clipped to the rectangle [0, size.width] x [0, size.height] (Sutherland-Hodgman: the
// part of the polygon inside the frame, itself a polygon; empty when nothing is inside).
[[nodiscard]] std::vector<cv::Point2f> clip_polygon(const std::vector<cv::Point2f>& polygon,
                                                    cv::Size size);

} // namespace framepipe_examples
