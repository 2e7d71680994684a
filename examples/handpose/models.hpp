// examples/handpose/models.hpp - the estimator and the classifier as the flags choose them: the
// colour-marker estimator or --landmark-model; DTW (generated or --templates) or --classifier,
// plus --classifier-extra-ms of real CPU work.
#pragma once

#include "classifier.hpp"
#include "estimator.hpp"
#include "settings.hpp"

#include <opencv2/core.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace handpose {

class estimator {
public:
    // Throws input_error for a landmark model that cannot be loaded or does not fit.
    explicit estimator(const settings& s);
    // The hand in `image` (BGR; other layouts are converted). One thread at a time.
    [[nodiscard]] landmarks operator()(const cv::Mat& image);

private:
    marker_estimator markers_;
    std::optional<onnx_landmark_model> model_;
};

class classifier {
public:
    // Throws input_error for a model or templates file that cannot be loaded or does not fit.
    explicit classifier(const settings& s);
    [[nodiscard]] const std::string& name() const noexcept { return name_; } // "dtw" or "onnx"
    [[nodiscard]] const dtw_classifier* dtw() const noexcept { return dtw_ ? &*dtw_ : nullptr; }

    // One thread at a time (cv::dnn::Net is not thread-safe).
    [[nodiscard]] classification operator()(std::span<const hand_points> frames);

private:
    std::chrono::nanoseconds extra_;
    std::string name_ = "dtw";
    std::optional<dtw_classifier> dtw_;
    std::optional<onnx_classifier> onnx_;
    std::uint64_t sink_ = 0; // keeps the extra work observable
};

} // namespace handpose
