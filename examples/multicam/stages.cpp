// examples/multicam/stages.cpp - see stages.hpp.
#include "stages.hpp"

#include "common/program.hpp"

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <string>
#include <utility>

namespace framepipe_examples::multicam {

using clock_type = std::chrono::steady_clock;

void detect_step::operator()(const framepipe::batch<frame_ptr>& b) {
    const auto start = clock_type::now();
    images_.clear();
    sources_.clear();
    for (std::size_t i = 0; i < b.items.size(); ++i) {
        const auto& f = *b.items[i];
        age.record(start - f.captured);
        // A frame of a session that ended (paused, rotated out, removed) is skipped, counted for
        // its camera as dropped (session_ended) by record_input.
        if (cameras_.record_input(b.sources[i], f, start)) {
            images_.push_back(f.value);
            sources_.push_back(b.sources[i]);
        } else {
            skipped.fetch_add(1, std::memory_order_relaxed);
        }
    }
    auto results = d_.detect_batch(images_);
    inference.record(clock_type::now() - start);
    frames.fetch_add(images_.size(), std::memory_order_relaxed);
    batches.fetch_add(1, std::memory_order_relaxed);
    std::size_t k = 0;
    for (std::size_t i = 0; i < b.items.size() && k < sources_.size(); ++i) {
        if (b.sources[i] != sources_[k]) {
            continue;
        }
        cameras_.record_result(sources_[k], {std::move(results[k]), b.items[i]->seq,
                                             b.items[i]->captured});
        ++k;
    }
    cameras_.batch_done();
}

std::optional<std::shared_ptr<const encoded_frame>> ui_step::operator()(
    const framepipe::selected<frame_ptr>& s) {
    const auto view = cameras_.for_ui(s.input);
    if (!view) {
        return std::nullopt;
    }
    const auto& f = *s.item;
    const double scale = static_cast<double>(tile_width_) / f.value.cols;
    const int height = std::max(1, static_cast<int>(f.value.rows * scale + 0.5));
    cv::resize(f.value, canvas_, cv::Size(tile_width_, height), 0, 0, cv::INTER_AREA);
    nlohmann::json boxes = nlohmann::json::array();
    const auto& r = view->result;
    if (r) {
        for (const auto& d : r->boxes) {
            const cv::Rect box(cv::Rect2f(static_cast<float>(d.box.x * scale),
                                          static_cast<float>(d.box.y * scale),
                                          static_cast<float>(d.box.width * scale),
                                          static_cast<float>(d.box.height * scale)));
            cv::rectangle(canvas_, box, cv::Scalar(0, 255, 0), 2);
            boxes.push_back({{"x", box.x}, {"y", box.y}, {"w", box.width}, {"h", box.height},
                             {"label", d.label}, {"score", round2(d.score)}});
        }
    }
    const double result_age_ms =
        r ? std::chrono::duration<double, std::milli>(f.captured - r->captured).count() : 0.0;
    cv::putText(canvas_, view->name + "  frame " + std::to_string(f.seq),
                cv::Point(6, canvas_.rows - 8), cv::FONT_HERSHEY_SIMPLEX, 0.45,
                cv::Scalar(255, 255, 255), 1, cv::LINE_AA);
    nlohmann::json meta = {{"type", "frame"},
                           {"camera", view->name},
                           {"seq", f.seq},
                           {"boxes", std::move(boxes)},
                           {"result_seq", r ? nlohmann::json(r->seq) : nlohmann::json()},
                           {"result_age_ms", r ? nlohmann::json(round2(result_age_ms)) : nlohmann::json()},
                           {"width", canvas_.cols},
                           {"height", canvas_.rows}};
    return jpeg_.encode(canvas_, json_text(meta), f.seq, f.captured);
}

} // namespace framepipe_examples::multicam
