// examples/common/scene_change.cpp - see scene_change.hpp.
#include "common/scene_change.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace framepipe_examples {

scene_change_detector::scene_change_detector(scene_options options) : o_(options) {
    if (!(o_.threshold > 0 && o_.threshold < 1)) {
        throw std::invalid_argument("threshold: must be in (0, 1)");
    }
    if (o_.frame_height < 8) {
        throw std::invalid_argument("frame_height: must be at least 8");
    }
    if (o_.hue_bins < 2 || o_.saturation_bins < 2) {
        throw std::invalid_argument("hue_bins, saturation_bins: must be at least 2");
    }
}

scene_result scene_change_detector::update(const cv::Mat& frame) {
    CV_Assert(!frame.empty() && frame.type() == CV_8UC3);
    const int rows = std::min(o_.frame_height, frame.rows);
    const double scale = static_cast<double>(frame.rows) / rows;
    cv::resize(frame, small_,
               cv::Size(std::max(1, static_cast<int>(std::lround(frame.cols / scale))), rows), 0,
               0, cv::INTER_AREA);
    cv::cvtColor(small_, hsv_, cv::COLOR_BGR2HSV);
    const int channels[] = {0, 1};
    const int bins[] = {o_.hue_bins, o_.saturation_bins};
    const float hue_range[] = {0, 180};
    const float saturation_range[] = {0, 256};
    const float* ranges[] = {hue_range, saturation_range};
    cv::calcHist(&hsv_, 1, channels, cv::Mat(), hist_, 2, bins, ranges);
    cv::normalize(hist_, hist_, 1, 0, cv::NORM_L1);

    scene_result r;
    if (previous_.empty() || frame.size() != size_) {
        r.distance = 1;
        r.cut = true;
    } else {
        r.distance = std::clamp(cv::compareHist(previous_, hist_, cv::HISTCMP_BHATTACHARYYA), 0.0, 1.0);
        r.cut = r.distance > o_.threshold;
    }
    size_ = frame.size();
    std::swap(previous_, hist_);
    return r;
}

} // namespace framepipe_examples
