// examples/handpose/models.cpp - see models.hpp.
#include "models.hpp"

#include "synthetic.hpp"

#include "common/cpu_work.hpp"

#include <opencv2/imgproc.hpp>

namespace handpose {

estimator::estimator(const settings& s) {
    if (!s.landmark_model.empty()) {
        model_.emplace(s.landmark_model, s.landmark_input_size);
    }
}

landmarks estimator::operator()(const cv::Mat& image) {
    if (image.type() != CV_8UC3) {
        cv::Mat bgr;
        cv::cvtColor(image, bgr, image.channels() == 1 ? cv::COLOR_GRAY2BGR : cv::COLOR_BGRA2BGR);
        return (*this)(bgr);
    }
    return model_ ? model_->estimate(image) : markers_.estimate(image);
}

classifier::classifier(const settings& s) : extra_(std::chrono::milliseconds(s.classifier_extra_ms)) {
    if (!s.classifier_model.empty()) {
        onnx_.emplace(s.classifier_model, s.window);
        name_ = "onnx";
    } else if (!s.templates_path.empty()) {
        dtw_.emplace(dtw_classifier::load(s.templates_path));
    } else {
        const synthetic_options o; // the synthetic hand's image size: points are normalised by it
        dtw_.emplace(generate_templates(s.templates_per_gesture, s.window, s.estimate_fps,
                                        template_seed_base, o));
    }
}

classification classifier::operator()(std::span<const hand_points> frames) {
    const auto c = onnx_ ? onnx_->classify(frames) : dtw_->classify(frames);
    if (extra_.count() > 0) {
        // The source document's slow model: real computation on the window, not a sleep.
        const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(frames.data()),
                                                  frames.size_bytes());
        sink_ ^= framepipe_examples::busy_compute(bytes, extra_);
    }
    return c;
}

} // namespace handpose
