#include "estimator.hpp"

#include "synthetic.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace handpose {

std::string first_line(const std::string& s) {
    // cv::Exception::what() reads "OpenCV(4.6.0) file:line: error: (-2:...) message in function";
    // keep it, but on one line.
    std::string out;
    for (const char c : s) {
        out += (c == '\n' || c == '\r') ? ' ' : c;
    }
    while (!out.empty() && out.back() == ' ') {
        out.pop_back();
    }
    return out;
}

marker_estimator::marker_estimator(int min_pixels) : min_pixels_(min_pixels) {
    if (min_pixels <= 0) {
        throw std::invalid_argument("min_pixels: must be at least 1");
    }
    // Hue -> joint, by the nearest marker hue on the (circular) wheel of 180 units.
    joint_of_hue_.fill(0xFF);
    for (int h = 0; h < 180; ++h) {
        double best = 1e9;
        std::size_t best_joint = 0;
        for (std::size_t j = 0; j < joint_count; ++j) {
            double d = std::abs(h - marker_hue(j));
            d = std::min(d, 180.0 - d);
            if (d < best) {
                best = d;
                best_joint = j;
            }
        }
        if (best <= 3.2) {
            joint_of_hue_[static_cast<std::size_t>(h)] = static_cast<std::uint8_t>(best_joint);
        }
    }
}

landmarks marker_estimator::estimate(const cv::Mat& image) {
    if (image.type() != CV_8UC3 || image.empty()) {
        throw std::invalid_argument("image: must be a non-empty 8-bit BGR image");
    }
    cv::cvtColor(image, hsv_, cv::COLOR_BGR2HSV);
    cv::inRange(hsv_, cv::Scalar(0, 150, 110), cv::Scalar(180, 255, 255), mask_);
    const int n = cv::connectedComponentsWithStats(mask_, labels_, stats_, centroids_, 8, CV_32S);
    const auto labels = static_cast<std::size_t>(n);
    votes_.assign(labels * joint_count, votes{});
    // Only components big enough to be a marker vote; visit just their bounding boxes.
    for (int l = 1; l < n; ++l) {
        if (stats_.at<std::int32_t>(l, cv::CC_STAT_AREA) < min_pixels_) {
            continue; // a speck
        }
        const int x0 = stats_.at<std::int32_t>(l, cv::CC_STAT_LEFT);
        const int y0 = stats_.at<std::int32_t>(l, cv::CC_STAT_TOP);
        const int x1 = x0 + stats_.at<std::int32_t>(l, cv::CC_STAT_WIDTH);
        const int y1 = y0 + stats_.at<std::int32_t>(l, cv::CC_STAT_HEIGHT);
        votes* mine = &votes_[static_cast<std::size_t>(l) * joint_count];
        for (int y = y0; y < y1; ++y) {
            const auto* lab = labels_.ptr<std::int32_t>(y);
            const auto* px = hsv_.ptr<std::uint8_t>(y);
            for (int x = x0; x < x1; ++x) {
                if (lab[x] != l) {
                    continue;
                }
                const auto* p = px + 3 * x;
                const auto j = joint_of_hue_[p[0]];
                if (j == 0xFF) {
                    continue;
                }
                auto& v = mine[j];
                v.sx += x;
                v.sy += y;
                v.sv += p[2];
                ++v.n;
            }
        }
    }
    landmarks out;
    std::array<bool, joint_count> seen{};
    const double w = image.cols;
    const double h = image.rows;
    for (std::size_t j = 0; j < joint_count; ++j) {
        const votes* best = nullptr;
        for (std::size_t l = 1; l < labels; ++l) {
            const auto& v = votes_[l * joint_count + j];
            if (v.n >= static_cast<std::uint32_t>(min_pixels_) && (best == nullptr || v.n > best->n)) {
                best = &v;
            }
        }
        if (best != nullptr) {
            out.points[3 * j] = static_cast<float>(best->sx / best->n / w);
            out.points[3 * j + 1] = static_cast<float>(best->sy / best->n / h);
            out.points[3 * j + 2] = static_cast<float>(value_to_depth(best->sv / best->n));
            seen[j] = true;
            ++out.joints_found;
        }
    }
    // Unseen joints: where they were last seen; on the very first frame, at the centre of the
    // seen ones (or of the image).
    float mx = 0.5F, my = 0.5F;
    if (out.joints_found > 0) {
        float sx = 0, sy = 0;
        for (std::size_t j = 0; j < joint_count; ++j) {
            if (seen[j]) {
                sx += out.points[3 * j];
                sy += out.points[3 * j + 1];
            }
        }
        mx = sx / out.joints_found;
        my = sy / out.joints_found;
    }
    for (std::size_t j = 0; j < joint_count; ++j) {
        if (!seen[j]) {
            if (have_last_) {
                for (std::size_t k = 0; k < 3; ++k) {
                    out.points[3 * j + k] = last_[3 * j + k];
                }
            } else {
                out.points[3 * j] = mx;
                out.points[3 * j + 1] = my;
                out.points[3 * j + 2] = 0;
            }
        }
    }
    last_ = out.points;
    have_last_ = true;
    return out;
}

onnx_landmark_model::onnx_landmark_model(const std::string& path, int input_size)
    : path_(path), input_size_(input_size) {
    if (input_size < 8 || input_size > 4096) {
        throw input_error("--landmark-input-size: must be between 8 and 4096");
    }
    if (!std::filesystem::is_regular_file(path)) {
        throw input_error("--landmark-model " + path + ": no such file");
    }
    try {
        net_ = cv::dnn::readNetFromONNX(path);
    } catch (const cv::Exception& e) {
        throw input_error("--landmark-model " + path + ": cannot load: " + first_line(e.err));
    }
    if (net_.empty()) {
        throw input_error("--landmark-model " + path + ": cannot load");
    }
    // Shape check with a blank frame.
    const cv::Mat blank(input_size, input_size, CV_8UC3, cv::Scalar::all(0));
    cv::Mat out;
    try {
        net_.setInput(cv::dnn::blobFromImage(blank, 1.0 / 255, cv::Size(input_size, input_size),
                                             cv::Scalar(), true, false));
        out = net_.forward();
    } catch (const cv::Exception& e) {
        throw input_error("--landmark-model " + path + ": does not accept a 1x3x" +
                          std::to_string(input_size) + "x" + std::to_string(input_size) +
                          " input: " + first_line(e.err));
    }
    if (out.total() != joint_count * values_per_joint) {
        throw input_error("--landmark-model " + path + ": returns " + std::to_string(out.total()) +
                          " values, expected 63 (21 points x 3)");
    }
}

landmarks onnx_landmark_model::estimate(const cv::Mat& image) {
    cv::Mat out;
    try {
        net_.setInput(cv::dnn::blobFromImage(image, 1.0 / 255, cv::Size(input_size_, input_size_),
                                             cv::Scalar(), true, false));
        out = net_.forward();
    } catch (const cv::Exception& e) {
        throw input_error("--landmark-model " + path_ + ": " + first_line(e.err));
    }
    const cv::Mat flat = out.reshape(1, 1);
    cv::Mat f32;
    flat.convertTo(f32, CV_32F);
    landmarks lm;
    for (std::size_t i = 0; i < lm.points.size(); ++i) {
        lm.points[i] = f32.at<float>(0, static_cast<int>(i));
    }
    lm.joints_found = static_cast<std::uint8_t>(joint_count);
    return lm;
}

} // namespace handpose
