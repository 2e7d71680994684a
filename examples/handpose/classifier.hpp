// examples/handpose/classifier.hpp - from a window of hand points to a gesture.
//
// dtw_classifier: nearest neighbour under dynamic time warping.
//   - A window of N frames becomes a trajectory of N x 42 values (x, y of the 21 points; depth
//     is left out), normalised for translation (minus the mean of every point of every frame)
//     and for scale (divided by the hand's mean size: the RMS distance of a frame's points from
//     their centroid, averaged over the frames). Motion is kept: a swipe stays a long stroke.
//   - Distance between two trajectories: DTW with a Sakoe-Chiba band, the cost of matching two
//     frames being the Euclidean distance of their 42 values, divided by the path's length.
//   - The label is the nearest template's; confidence = 1 - d_best / d_other, where d_other is
//     the distance to the nearest template of any other gesture (0: a tie, near 1: clear-cut).
//   - Templates are generated at start-up from the synthetic hand (random parameters, seeds
//     `template_seed_base` and up) or loaded from a JSON file it can also write.
//
// onnx_classifier: a user model through cv::dnn. Input 1 x window x 21 x 3 (float, the raw
// normalised points, oldest frame first); output gesture_count scores in gesture_names order.
#pragma once

#include "hand.hpp"
#include "synthetic.hpp"

#include <opencv2/dnn.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace handpose {

struct classification {
    gesture label = gesture::idle;
    float confidence = 0;
};

// x, y of every point, normalised for translation and scale over the whole window (see above).
[[nodiscard]] std::vector<float> normalise_trajectory(std::span<const hand_points> frames);

struct gesture_template {
    gesture label = gesture::idle;
    std::vector<hand_points> frames; // raw points, as the estimator gives them
};

// Seeds of generated templates start here; held-out tests use seeds far from this range.
inline constexpr std::uint64_t template_seed_base = 1;

// `per_gesture` examples of each gesture, `window` frames sampled at `fps`, from the synthetic
// hand's truth (plus its sub-pixel jitter) in images of options.width x options.height.
[[nodiscard]] std::vector<gesture_template> generate_templates(std::size_t per_gesture,
                                                               std::size_t window, double fps,
                                                               std::uint64_t seed_base,
                                                               const synthetic_options& options);

// One synthetic example: `window` frames of gesture g from segment seed `seed`, sampled at `fps`
// from a random offset inside the segment. Joint positions are normalised by the image size.
// Returns the truth in pixels too (for the estimator's tests) when `pixels` is not null.
[[nodiscard]] std::vector<hand_points> synthetic_example(gesture g, std::uint64_t seed,
                                                         std::size_t window, double fps,
                                                         const synthetic_options& options,
                                                         std::vector<frame_truth>* pixels = nullptr,
                                                         std::vector<double>* times = nullptr);

class dtw_classifier {
public:
    // Throws std::invalid_argument naming templates when it is empty or a template has fewer
    // than 2 frames; naming band when it is 0.
    explicit dtw_classifier(std::vector<gesture_template> templates, std::size_t band = 8);

    // Nearest template. Any number of threads (const, no shared scratch). Throws
    // std::invalid_argument naming frames when there are fewer than 2.
    [[nodiscard]] classification classify(std::span<const hand_points> frames) const;

    // DTW distance between two normalised trajectories (n x 42 and m x 42 values).
    [[nodiscard]] double distance(std::span<const float> a, std::span<const float> b) const;

    [[nodiscard]] const std::vector<gesture_template>& templates() const noexcept {
        return templates_;
    }

    // JSON: {"format": "framepipe-handpose-templates", "version": 1, "templates": [{"label":
    // "wave", "frames": [[63 numbers], ...]}, ...]}. save throws input_error when the file
    // cannot be written; load throws input_error (one line, naming the file) when it is missing
    // or malformed.
    void save(const std::string& path) const;
    [[nodiscard]] static dtw_classifier load(const std::string& path, std::size_t band = 8);

private:
    struct prepared {
        gesture label;
        std::vector<float> features;
    };
    std::vector<gesture_template> templates_;
    std::vector<prepared> prepared_;
    std::size_t band_;
};

class onnx_classifier {
public:
    // Loads `path` and checks, with a window of zeros, that it accepts 1 x window x 21 x 3 and
    // returns gesture_count scores. Throws input_error with a one-line message otherwise.
    onnx_classifier(const std::string& path, std::size_t window);

    // Scores -> label; confidence is the top probability (softmax applied unless the scores are
    // already a distribution: all in [0, 1], summing to 1 within 1e-3). One thread at a time.
    [[nodiscard]] classification classify(std::span<const hand_points> frames);

private:
    cv::Mat run(std::span<const hand_points> frames);
    std::string path_;
    std::size_t window_;
    cv::dnn::Net net_;
};

} // namespace handpose
