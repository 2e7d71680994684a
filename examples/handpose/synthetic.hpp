// examples/handpose/synthetic.hpp - a hand that performs gestures, drawn into video frames.
//
// hand_generator decides what the hand does: an endless series of gesture segments (each a few
// seconds long) with randomised position, scale, rotation, mirroring, speed and amplitude. Its
// pose at any time t is a pure function of (seed, t): the same seed replays the same video, and
// frames may be asked for in any order (the single-threaded mode skips frames).
//
// renderer draws a pose: a textured background, moving distractors (grey and pastel shapes that
// cross the hand, and specks of saturated colour), the palm, the bones, and one marker per joint.
// The markers are what the estimator finds, so their design is its contract:
// - joint j is drawn in the hue marker_hue(j): 21 hues evenly spread round the colour wheel, fully
//   saturated (nothing else in the scene passes the estimator's mask, saturation >= 150 and
//   value >= 110, except the specks, which are far smaller than a marker);
// - the joint's depth z sets the marker's brightness (value = depth_to_value(z));
// - a marker is a filled disc of radius marker_radius(scale) drawn at sub-pixel precision;
//   nearer markers are drawn over farther ones.
// Gaussian pixel noise (sigma 2-8 per channel) is added last.
#pragma once

#include "hand.hpp"

#include <opencv2/core.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <vector>

namespace handpose {

// Joint positions in pixels (x, y) and depth (z, hand-size units), 21 x 3.
using joint_pixels = std::array<float, joint_count * values_per_joint>;

struct synthetic_options {
    int width = 640;
    int height = 480;
    // Segment lengths in seconds. A window of the classifier should fit inside one segment, so
    // main.cpp sets min_segment_s to the window's time span plus a margin.
    double min_segment_s = 2.6;
    double max_segment_s = 3.6;
    bool distractors = true;
    bool noise = true;
};

// What the hand does during one segment. Everything random about a segment is drawn once, here.
struct segment {
    gesture label = gesture::idle;
    double start = 0;     // seconds
    double duration = 3;  // seconds
    double cx = 320;      // wrist position at the segment's centre, px
    double cy = 300;
    double scale = 80;    // hand size (wrist to middle-finger knuckle), px
    double rotation = 0;  // radians, 0 = fingers up
    bool mirror = false;  // a left hand instead of a right one
    double speed = 1;     // tempo factor, 0.75-1.3
    double amplitude = 1; // gesture-specific extent factor, 0.8-1.2
    double direction = 1; // circle: +1 anticlockwise, -1 clockwise
    double phase = 0;     // wave / circle start phase, radians
    double base_curl = 0; // how bent the fingers are when the gesture does not bend them
    int noise_level = 0;  // index into the renderer's noise bank (sigma 2, 4, 6, 8)
};

// The truth about one frame.
struct frame_truth {
    gesture label = gesture::idle;
    joint_pixels joints{};
    float scale = 80; // hand size in px, for the renderer
    int noise_level = 0;
};

class hand_generator {
public:
    hand_generator(std::uint64_t seed, synthetic_options options = {});

    // The pose at time t >= 0 (seconds; std::invalid_argument naming t otherwise). Not
    // thread-safe (segments are drawn lazily): call from one thread. Segments that ended more
    // than 60 s before a t asked for are forgotten, so memory stays bounded; asking for such an
    // earlier t afterwards throws std::out_of_range.
    [[nodiscard]] frame_truth pose_at(double t);

    // The segment in force at time t (same rules as pose_at).
    [[nodiscard]] const segment& segment_at(double t);

    // A segment of gesture g with every other parameter drawn from `seed`, starting at 0.
    [[nodiscard]] static segment random_segment(gesture g, std::uint64_t seed,
                                                const synthetic_options& options);

    // The pose of segment s at time t (t relative to the start of the video); `jitter_seed`
    // seeds the sub-pixel joint jitter.
    [[nodiscard]] static frame_truth pose_of(const segment& s, double t, std::uint64_t jitter_seed);

    [[nodiscard]] const synthetic_options& options() const noexcept { return options_; }

private:
    segment draw_segment(double start);

    std::uint64_t seed_;
    synthetic_options options_;
    std::mt19937_64 rng_;
    std::deque<segment> segments_;
};

// Marker hue of joint j in OpenCV's 8-bit hue units (0-179).
[[nodiscard]] double marker_hue(std::size_t joint) noexcept;
// Marker brightness (HSV value, 0-255) for depth z, and back.
[[nodiscard]] double depth_to_value(double z) noexcept;
[[nodiscard]] double value_to_depth(double v) noexcept;
// Marker radius in px for a hand of `scale` px.
[[nodiscard]] double marker_radius(double scale) noexcept;

class renderer {
public:
    // Builds the background and the distractors; the noise bank is built once per image size
    // and shared (thread-safe). Throws std::invalid_argument naming width/height when they are
    // below 64.
    renderer(std::uint64_t seed, synthetic_options options = {});

    // Draws the frame at time t showing `truth` into `out` (reallocated only if its size or type
    // is wrong). One thread at a time per renderer.
    void render(const frame_truth& truth, double t, cv::Mat& out);

private:
    struct distractor {
        int kind = 0; // 0 ellipse, 1 rectangle, 2 speck
        cv::Point2d p0, v;
        cv::Size2d size;
        double angle = 0;
        cv::Scalar colour;
    };
    synthetic_options options_;
    cv::Mat background_;
    std::shared_ptr<const std::vector<cv::Mat>> noise_; // CV_16SC3, shared by all renderers
    std::size_t noise_offset_ = 0;
    std::vector<distractor> distractors_;
    std::mt19937_64 rng_;
};

} // namespace handpose
