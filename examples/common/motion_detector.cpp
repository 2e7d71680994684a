// examples/common/motion_detector.cpp - see motion_detector.hpp.
#include "common/motion_detector.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace framepipe_examples {

namespace {

// Sutherland-Hodgman against one edge: keep what `inside` accepts, cutting the polygon's edges
// where they cross the line.
template <class Inside, class Cross>
std::vector<cv::Point2f> clip_edge(const std::vector<cv::Point2f>& in, Inside inside, Cross cross) {
    std::vector<cv::Point2f> out;
    for (std::size_t i = 0; i < in.size(); ++i) {
        const auto& cur = in[i];
        const auto& prev = in[(i + in.size() - 1) % in.size()];
        const bool cur_in = inside(cur);
        const bool prev_in = inside(prev);
        if (cur_in) {
            if (!prev_in) {
                out.push_back(cross(prev, cur));
            }
            out.push_back(cur);
        } else if (prev_in) {
            out.push_back(cross(prev, cur));
        }
    }
    return out;
}

// The point of segment a-b where x (vertical = true) or y equals v.
cv::Point2f at(const cv::Point2f& a, const cv::Point2f& b, float v, bool vertical) {
    const float t = vertical ? (v - a.x) / (b.x - a.x) : (v - a.y) / (b.y - a.y);
    return {a.x + t * (b.x - a.x), a.y + t * (b.y - a.y)};
}

// Which side of the line a-b the point c lies on: 1, -1, or 0 on it.
int side(cv::Point a, cv::Point b, cv::Point c) {
    const double v = (static_cast<double>(b.x) - a.x) * (static_cast<double>(c.y) - a.y) -
                     (static_cast<double>(b.y) - a.y) * (static_cast<double>(c.x) - a.x);
    return (v > 0) - (v < 0);
}

// Whether c, on the line a-b, lies on the segment a-b.
bool within(cv::Point a, cv::Point b, cv::Point c) {
    return std::min(a.x, b.x) <= c.x && c.x <= std::max(a.x, b.x) && std::min(a.y, b.y) <= c.y &&
           c.y <= std::max(a.y, b.y);
}

// Whether the segments a-b and c-d cross or touch.
bool meet(cv::Point a, cv::Point b, cv::Point c, cv::Point d) {
    const int s1 = side(c, d, a);
    const int s2 = side(c, d, b);
    const int s3 = side(a, b, c);
    const int s4 = side(a, b, d);
    if (s1 * s2 < 0 && s3 * s4 < 0) {
        return true;
    }
    return (s1 == 0 && within(c, d, a)) || (s2 == 0 && within(c, d, b)) ||
           (s3 == 0 && within(a, b, c)) || (s4 == 0 && within(a, b, d));
}

// Throws std::invalid_argument naming mask unless `mask` is a simple polygon with an inside:
// no two edges cross or touch, but neighbours at their common corner (a point repeated at once,
// or the first one repeated last, counts once). A self-crossing polygon ("bow-tie") has no
// inside one can clip and fill consistently: its shoelace area cancels out.
void check_mask(const std::vector<cv::Point>& mask) {
    if (mask.size() < 3) {
        throw std::invalid_argument("mask: a polygon needs at least 3 points");
    }
    std::vector<cv::Point> p;
    for (const auto& q : mask) {
        if (p.empty() || q != p.back()) {
            p.push_back(q);
        }
    }
    while (p.size() > 1 && p.back() == p.front()) {
        p.pop_back();
    }
    const std::size_t n = p.size();
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t j = i + 2; j < n; ++j) {
            if (i == 0 && j == n - 1) {
                continue; // neighbours: the last edge ends where the first begins
            }
            if (meet(p[i], p[(i + 1) % n], p[j], p[(j + 1) % n])) {
                throw std::invalid_argument(
                    "mask: edges " + std::to_string(i + 1) + " and " + std::to_string(j + 1) +
                    " of the polygon cross or touch; list its points in order around it");
            }
        }
    }
    if (n < 3 || cv::contourArea(p) <= 0) {
        throw std::invalid_argument("mask: the polygon encloses no area");
    }
}

} // namespace

std::vector<cv::Point2f> clip_polygon(const std::vector<cv::Point2f>& polygon, cv::Size size) {
    const auto w = static_cast<float>(size.width);
    const auto h = static_cast<float>(size.height);
    auto p = clip_edge(polygon, [](cv::Point2f q) { return q.x >= 0; },
                       [](cv::Point2f a, cv::Point2f b) { return at(a, b, 0, true); });
    p = clip_edge(p, [w](cv::Point2f q) { return q.x <= w; },
                  [w](cv::Point2f a, cv::Point2f b) { return at(a, b, w, true); });
    p = clip_edge(p, [](cv::Point2f q) { return q.y >= 0; },
                  [](cv::Point2f a, cv::Point2f b) { return at(a, b, 0, false); });
    p = clip_edge(p, [h](cv::Point2f q) { return q.y <= h; },
                  [h](cv::Point2f a, cv::Point2f b) { return at(a, b, h, false); });
    if (p.size() < 3 || std::abs(cv::contourArea(p)) <= 0) {
        p.clear(); // nothing (or only an edge or a corner) inside
    }
    return p;
}

motion_detector::motion_detector(motion_options options) : o_(std::move(options)) {
    if (o_.threshold < 1 || o_.threshold > 255) {
        throw std::invalid_argument("threshold: must be in 1..255");
    }
    if (!(o_.contour_area > 0) || !std::isfinite(o_.contour_area)) {
        throw std::invalid_argument("contour_area: must be above 0");
    }
    if (!(o_.frame_alpha > 0 && o_.frame_alpha <= 1)) {
        throw std::invalid_argument("frame_alpha: must be in (0, 1]");
    }
    if (o_.frame_height < 8) {
        throw std::invalid_argument("frame_height: must be at least 8");
    }
    if (!(o_.lightning_threshold > 0 && o_.lightning_threshold <= 1)) {
        throw std::invalid_argument("lightning_threshold: must be in (0, 1]");
    }
    if (!o_.mask.empty()) {
        check_mask(o_.mask);
    }
    // 3x3 dilation, twice: joins the fragments of one moving body (head, legs) at 100 rows.
    kernel_ = cv::getStructuringElement(cv::MORPH_RECT, cv::Size(3, 3));
}

void motion_detector::setup(cv::Size frame) {
    frame_size_ = frame;
    const int rows = std::min(o_.frame_height, frame.height);
    scale_ = static_cast<double>(frame.height) / rows;
    small_ = cv::Size(std::max(1, static_cast<int>(std::lround(frame.width / scale_))), rows);
    mask_.release();
    clipped_.clear();
    mask_note_.clear();
    if (o_.mask.empty()) {
        return;
    }
    std::vector<cv::Point2f> polygon(o_.mask.begin(), o_.mask.end());
    const auto outside = std::count_if(polygon.begin(), polygon.end(), [&](cv::Point2f p) {
        return p.x < 0 || p.y < 0 || p.x > static_cast<float>(frame.width) ||
               p.y > static_cast<float>(frame.height);
    });
    clipped_ = clip_polygon(polygon, frame);
    const std::string size = std::to_string(frame.width) + "x" + std::to_string(frame.height);
    if (clipped_.empty()) {
        mask_note_ = "mask: the polygon lies entirely outside the " + size + " frame; no mask";
        return;
    }
    if (outside > 0) {
        mask_note_ = "mask: " + std::to_string(outside) + " of " + std::to_string(polygon.size()) +
                     " points lie outside the " + size + " frame; clipped to it";
    }
    mask_ = cv::Mat(small_, CV_8UC1, cv::Scalar(255));
    std::vector<cv::Point> scaled;
    for (const auto& p : clipped_) {
        scaled.emplace_back(static_cast<int>(std::lround(p.x / scale_)),
                            static_cast<int>(std::lround(p.y / scale_)));
    }
    cv::fillPoly(mask_, std::vector<std::vector<cv::Point>>{scaled}, cv::Scalar(0));
}

motion_result motion_detector::detect(const cv::Mat& frame) {
    CV_Assert(!frame.empty() && frame.depth() == CV_8U &&
              (frame.channels() == 3 || frame.channels() == 1));
    if (frame.size() != frame_size_) {
        setup(frame.size());
        calibrate_ = true;
    }
    const cv::Mat* grey = &frame;
    if (frame.channels() == 3) {
        cv::cvtColor(frame, grey_, cv::COLOR_BGR2GRAY);
        grey = &grey_;
    }
    cv::resize(*grey, small_grey_, small_, 0, 0, cv::INTER_AREA);
    cv::GaussianBlur(small_grey_, blurred_, cv::Size(3, 3), 0);

    motion_result r;
    if (calibrate_) {
        blurred_.convertTo(background_, CV_32F);
        calibrate_ = false;
        r.calibrating = true;
        return r;
    }
    background_.convertTo(background8_, CV_8U);
    cv::absdiff(blurred_, background8_, diff_);
    cv::threshold(diff_, binary_, o_.threshold, 255, cv::THRESH_BINARY);
    if (!mask_.empty()) {
        cv::bitwise_and(binary_, mask_, binary_);
    }
    cv::dilate(binary_, binary_, kernel_, cv::Point(-1, -1), 2);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(binary_, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
    double area = 0;
    for (const auto& c : contours) {
        const double a = cv::contourArea(c);
        if (a < o_.contour_area) {
            continue;
        }
        area += a;
        const cv::Rect b = cv::boundingRect(c);
        // Back to frame pixels, rounded outwards, inside the frame.
        const int x0 = static_cast<int>(std::floor(b.x * scale_));
        const int y0 = static_cast<int>(std::floor(b.y * scale_));
        const int x1 = static_cast<int>(std::ceil((b.x + b.width) * scale_));
        const int y1 = static_cast<int>(std::ceil((b.y + b.height) * scale_));
        r.boxes.push_back(cv::Rect(cv::Point(x0, y0), cv::Point(x1, y1)) &
                          cv::Rect(cv::Point(0, 0), frame_size_));
    }
    r.score = area / static_cast<double>(small_.area());
    if (r.score > o_.lightning_threshold) {
        // Most of the picture changed at once: a light, not a body. Start again from here.
        blurred_.convertTo(background_, CV_32F);
        r.boxes.clear();
        r.calibrating = true;
        return r;
    }
    cv::accumulateWeighted(blurred_, background_, o_.frame_alpha);
    return r;
}

} // namespace framepipe_examples
