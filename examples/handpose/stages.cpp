// examples/handpose/stages.cpp - see stages.hpp.
#include "stages.hpp"

#include "common/program.hpp"

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

namespace handpose {

namespace fe = framepipe_examples;
using clock_type = std::chrono::steady_clock;

void classify_window(const framepipe::window<hand_item>& w, classifier& c, meters& m,
                     std::vector<hand_points>& scratch) {
    const auto start = clock_type::now();
    const auto age = start - w.back().captured;
    m.window_age.record(age);
    scratch.clear();
    std::array<std::size_t, gesture_count> votes{};
    std::size_t labelled = 0;
    for (const auto& h : w) {
        scratch.push_back(h.value.points);
        if (h.value.truth) {
            ++votes[static_cast<std::size_t>(*h.value.truth)];
            ++labelled;
        }
    }
    const auto result = c(scratch);
    m.classify_time.record(clock_type::now() - start);
    // Scored against the truth when the whole window lies inside one gesture (a window that
    // straddles two gestures has no single right answer).
    const auto top = std::max_element(votes.begin(), votes.end());
    if (labelled == w.size() && *top == w.size()) {
        m.scored.fetch_add(1, std::memory_order_relaxed);
        if (static_cast<std::size_t>(result.label) == static_cast<std::size_t>(top - votes.begin())) {
            m.correct.fetch_add(1, std::memory_order_relaxed);
        }
    }
    m.classified.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard<std::mutex> lock(m.mu);
    m.last = result;
    m.last_window_age_ms = std::chrono::duration<double, std::milli>(age).count();
    m.last_window_seq = w.back().seq;
    m.last_window_captured = w.back().captured;
}

std::shared_ptr<const fe::encoded_frame> display::operator()(const estimate_item& e) {
    if (e.value.frame && !e.value.frame->value.empty()) {
        e.value.frame->value.copyTo(canvas_);
    } else {
        canvas_.create(480, 640, CV_8UC3); // replayed landmarks: a plain canvas
        canvas_.setTo(cv::Scalar(40, 40, 40));
    }
    const auto& hand = e.value.hand;
    const double w = canvas_.cols;
    const double h = canvas_.rows;
    auto pt = [&](std::size_t j) {
        return cv::Point(static_cast<int>(hand.points[3 * j] * w),
                         static_cast<int>(hand.points[3 * j + 1] * h));
    };
    for (const auto& [a, b] : bones) {
        cv::line(canvas_, pt(static_cast<std::size_t>(a)), pt(static_cast<std::size_t>(b)),
                 cv::Scalar(0, 255, 0), 2, cv::LINE_AA);
    }
    for (std::size_t j = 0; j < joint_count; ++j) {
        cv::circle(canvas_, pt(j), 3, cv::Scalar(0, 0, 255), cv::FILLED, cv::LINE_AA);
    }
    nlohmann::json points = nlohmann::json::array(); // the skeleton drawn, in pixels
    for (std::size_t j = 0; j < joint_count; ++j) {
        const auto p = pt(j);
        points.push_back({p.x, p.y});
    }
    nlohmann::json meta = {{"type", "frame"},
                           {"seq", e.seq},
                           {"points", std::move(points)},
                           {"joints_found", hand.joints_found},
                           {"gesture", nullptr},
                           {"confidence", nullptr},
                           {"window_age_ms", nullptr},
                           {"result_age_ms", nullptr},
                           {"result_seq", nullptr}};
    std::string caption = "gesture: (waiting for the first window)";
    {
        const std::lock_guard<std::mutex> lock(m_.mu);
        if (m_.last) {
            // How much older the classified window's newest frame is than this frame.
            const double result_age =
                std::chrono::duration<double, std::milli>(e.captured - m_.last_window_captured).count();
            meta["gesture"] = std::string(name_of(m_.last->label));
            meta["confidence"] = fe::round2(m_.last->confidence);
            meta["window_age_ms"] = fe::round2(m_.last_window_age_ms);
            meta["result_age_ms"] = fe::round2(result_age);
            meta["result_seq"] = m_.last_window_seq;
            caption = "gesture: " + std::string(name_of(m_.last->label)) + " " +
                      std::to_string(std::lround(m_.last->confidence * 100)) + "%  (window " +
                      std::to_string(static_cast<int>(result_age)) + " ms old)";
        }
    }
    cv::putText(canvas_, caption, {10, 28}, cv::FONT_HERSHEY_SIMPLEX, 0.7, cv::Scalar(255, 255, 255), 2,
                cv::LINE_AA);
    auto out = jpeg_.encode(canvas_, fe::json_text(meta), e.seq, e.captured);

    const auto now = clock_type::now();
    if (last_display_ != clock_type::time_point{}) {
        const auto gap = now - last_display_;
        m_.display_gap.record(gap);
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(gap).count();
        if (ns > m_.display_gap_max_ns.load(std::memory_order_relaxed)) {
            m_.display_gap_max_ns.store(ns, std::memory_order_relaxed);
        }
    }
    last_display_ = now;
    m_.displayed.fetch_add(1, std::memory_order_relaxed);
    return out;
}

} // namespace handpose
