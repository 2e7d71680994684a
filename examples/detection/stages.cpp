// examples/detection/stages.cpp - see stages.hpp.
#include "stages.hpp"

#include "common/program.hpp"

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <string>
#include <utility>

namespace framepipe_examples::detection {

using clock_type = std::chrono::steady_clock;

result detect_step::operator()(const video_frame& f) {
    const auto start = clock_type::now();
    m_.detect_age.record(start - f.captured);
    m_.detector_epochs.see(f.epoch);
    auto boxes = d_.detect(f.value);
    const auto took = clock_type::now() - start;
    m_.inference.record(took);
    m_.detections.fetch_add(1, std::memory_order_relaxed);
    const double ms = std::chrono::duration<double, std::milli>(took).count();
    m_.last_inference_us.store(std::chrono::duration_cast<std::chrono::microseconds>(took).count(),
                               std::memory_order_relaxed);
    std::fprintf(console_,
                 "inference %.1f ms (frame %llu, %zu boxes, input age %.1f ms, epoch %llu)\n", ms,
                 static_cast<unsigned long long>(f.seq), boxes.size(),
                 std::chrono::duration<double, std::milli>(start - f.captured).count(),
                 static_cast<unsigned long long>(f.epoch));
    return framepipe::stamp(detection_result{std::move(boxes), ms, {}}, f.seq, f.captured, f.epoch);
}

std::shared_ptr<const encoded_frame> ui_step::operator()(const video_frame& f,
                                                         const std::optional<result>& r) {
    m_.ui_epochs.see(f.epoch);
    f.value.copyTo(canvas_);
    nlohmann::json boxes = nlohmann::json::array();
    if (r) {
        for (const auto& b : r->value.boxes) {
            const cv::Rect box(b.box);
            cv::rectangle(canvas_, box, cv::Scalar(0, 255, 0), 2);
            const auto text = b.label + " " + std::to_string(static_cast<int>(b.score * 100)) + "%";
            cv::putText(canvas_, text, box.tl() + cv::Point(2, 14), cv::FONT_HERSHEY_SIMPLEX, 0.45,
                        cv::Scalar(0, 255, 0), 1, cv::LINE_AA);
            boxes.push_back({{"x", b.box.x}, {"y", b.box.y}, {"w", b.box.width},
                             {"h", b.box.height}, {"label", b.label},
                             {"score", round2(b.score)}, {"class_id", b.class_id}});
        }
    }
    // How old the drawn result is, against this frame: the pairing users otherwise do by hand.
    const double age_ms =
        r ? std::chrono::duration<double, std::milli>(f.captured - r->captured).count() : 0.0;
    const std::string caption =
        "frame " + std::to_string(f.seq) +
        (r ? "  result from frame " + std::to_string(r->seq) + " (" +
                 std::to_string(static_cast<int>(age_ms)) + " ms older)"
           : "  no result yet");
    cv::putText(canvas_, caption, cv::Point(8, canvas_.rows - 10), cv::FONT_HERSHEY_SIMPLEX, 0.5,
                cv::Scalar(255, 255, 255), 1, cv::LINE_AA);

    nlohmann::json meta = {{"type", "frame"},
                           {"seq", f.seq},
                           {"result_seq", nullptr},
                           {"result_age_ms", nullptr},
                           {"boxes", std::move(boxes)},
                           {"width", canvas_.cols},
                           {"height", canvas_.rows}};
    if (r) {
        meta["stages"] = r->value.stages; // with --sampling: which stages ran
        meta["result_seq"] = r->seq;
        meta["result_age_ms"] = round2(age_ms);
    }
    return jpeg_.encode(canvas_, json_text(meta), f.seq, f.captured);
}

} // namespace framepipe_examples::detection
