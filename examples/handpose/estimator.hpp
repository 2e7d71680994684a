// examples/handpose/estimator.hpp - from a video frame to 21 hand points.
//
// marker_estimator finds the synthetic hand's joints in the pixels, by colour segmentation:
//   1. BGR -> HSV; keep pixels of saturation >= 150 and value >= 110 (only the joint markers and
//      the tiny distractor specks are that saturated);
//   2. connected components of that mask (8-connected);
//   3. each kept pixel votes for the joint whose marker hue is nearest its hue (within 3.2 of 180
//      hue units, else for none), in its component;
//   4. for each joint, the component with the most votes wins if it has at least `min_pixels`
//      of them (a speck has at most 5): the joint is the centroid of those pixels, and its depth
//      comes from their mean brightness (see synthetic.hpp).
// A joint that is not seen (hidden behind another marker, out of the frame) keeps its last
// position, and is not counted in joints_found. It never looks at the generator's truth: it gets
// pixels only.
//
// onnx_landmark_model runs a user's landmark model through cv::dnn (see
// docs/examples/handpose.md for the input and output it expects).
#pragma once

#include "hand.hpp"

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace handpose {

// A problem with the user's input (file, model, flag): the program prints it and exits 2.
class input_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class marker_estimator {
public:
    // Throws std::invalid_argument naming min_pixels when it is 0.
    explicit marker_estimator(int min_pixels = 8);

    // The hand in a BGR image (CV_8UC3). One thread at a time (keeps scratch buffers and the last
    // position of each joint). Throws std::invalid_argument naming image when it is not CV_8UC3.
    [[nodiscard]] landmarks estimate(const cv::Mat& image);

private:
    struct votes {
        double sx = 0, sy = 0, sv = 0;
        std::uint32_t n = 0;
    };
    int min_pixels_;
    std::array<std::uint8_t, 256> joint_of_hue_{};
    cv::Mat hsv_, mask_, labels_, stats_, centroids_;
    std::vector<votes> votes_;
    hand_points last_{};
    bool have_last_ = false;
};

class onnx_landmark_model {
public:
    // Loads `path` and checks, with a blank image, that it takes 1x3xSxS (S = input_size) and
    // returns 63 values. Throws input_error with a one-line message otherwise.
    onnx_landmark_model(const std::string& path, int input_size);

    // One thread at a time (cv::dnn::Net is not thread-safe). Throws input_error when the model
    // fails on this frame.
    [[nodiscard]] landmarks estimate(const cv::Mat& image);

private:
    std::string path_;
    int input_size_;
    cv::dnn::Net net_;
};

// The first line of an exception's message (cv::Exception messages span several lines).
[[nodiscard]] std::string first_line(const std::string& s);

} // namespace handpose
