// examples/detection/sampling.hpp - framepipe-detect's --sampling: which frames the detector
// gets (docs/sampling.md). The parts that do not depend on the running pipeline, shared with
// benchmarks/sampling: the spec, and the cascade's regions.
//
//     const auto spec = parse_sampling("motion:25");   // throws usage_error listing the forms
//     auto regions = cascade_regions(motion.boxes, frame.size());
//     auto boxes = detect_in_regions(*detector, frame, regions);
//
// Thread safety: plain functions and values.
#pragma once

#include "detector.hpp"

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace framepipe_examples::detection {

enum class sampling_kind { none, every_n, keyframes, motion, scene, adaptive, cascade };

struct sampling_spec {
    sampling_kind kind = sampling_kind::none;
    std::uint64_t n = 1;   // every-n:N
    int threshold = 30;    // motion[:T] and cascade[:T]: the motion detector's pixel threshold
    double distance = 0.3; // scene[:D]: the histogram distance of a cut
    std::string text;      // as given, normalised ("motion:30")
};

// The forms --sampling accepts, for messages.
inline constexpr const char* sampling_forms =
    "none, every-n:N (N >= 1), keyframes, motion[:THRESHOLD] (1..255, default 30), "
    "scene[:DISTANCE] (0 < D < 1, default 0.3), adaptive, cascade[:THRESHOLD] (1..255)";

// Parses a --sampling value. Throws framepipe_examples::usage_error ("--sampling 'x': expected
// one of none, every-n:N ...").
[[nodiscard]] sampling_spec parse_sampling(std::string_view text);

// Parses --motion-mask "x,y x,y x,y ..." (frame pixels, at least 3 points; "" for none). Throws
// usage_error naming the flag.
[[nodiscard]] std::vector<cv::Point> parse_polygon(std::string_view text);

// The cascade's first stage hands the detector regions, not frames.
struct cascade_options {
    double grow = 0.5;              // each motion box grows by this share of its size on each side
    cv::Size min_region{128, 192};  // and to at least this (HOG's 64x128 window, with room)
    double full_frame_share = 0.6;  // regions covering more of the frame than this: the frame
};

// The regions to run the detector on for `motion_boxes` (frame pixels): each box grown, merged
// with the ones it overlaps, inside the frame; the whole frame when they cover most of it; none
// without motion.
[[nodiscard]] std::vector<cv::Rect> cascade_regions(const std::vector<cv::Rect>& motion_boxes,
                                                    cv::Size frame, const cascade_options& o = {});

// Runs `d` on each region of `frame` and returns the boxes in frame pixels. One thread at a
// time (the detector's rule).
[[nodiscard]] std::vector<labelled_detection> detect_in_regions(detector& d, const cv::Mat& frame,
                                                                const std::vector<cv::Rect>& regions);

// The detector's short name for "which stages ran": the first word of its description ("hog",
// "yolov8", ...).
[[nodiscard]] std::string short_name(const detector& d);

} // namespace framepipe_examples::detection
