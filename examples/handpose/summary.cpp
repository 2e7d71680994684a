// examples/handpose/summary.cpp - see summary.hpp.
#include "summary.hpp"

#include "common/live_input.hpp"
#include "common/process_stats.hpp"
#include "common/program.hpp"

#include <algorithm>
#include <mutex>

namespace handpose {

namespace fe = framepipe_examples;

nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap, double elapsed) {
    const auto& s = r.s;
    const auto& m = r.m;
    const double secs = std::max(elapsed, 1e-3);
    auto per_s = [secs](const std::atomic<std::uint64_t>& n) {
        return fe::round2(static_cast<double>(n.load(std::memory_order_relaxed)) / secs);
    };
    const auto estimated = m.estimated.load(std::memory_order_relaxed);
    const auto ws = r.hands.stats(); // counts windows: pushed = made ready, dropped = overtaken
    nlohmann::json j = {
        {"mode", s.mode},
        {"source", s.source},
        {"input", r.input},
        {"classifier", r.classifier},
        {"classifier_extra_ms", s.classifier_extra_ms},
        {"classifier_nice", s.mode == "pipelined" ? s.classifier_nice : 0},
        {"window", s.window},
        {"stride", s.stride},
        {"seconds", fe::round2(elapsed)},
        {"estimate_fps_target", s.estimate_fps},
        {"display_fps", per_s(m.displayed)},
        {"estimate_fps", per_s(m.estimated)},
        {"classify_per_s", per_s(m.classified)},
        {"window_age_p50_ms", fe::round2(fe::quantile_ms(m.window_age, 0.50))},
        {"window_age_p99_ms", fe::round2(fe::quantile_ms(m.window_age, 0.99))},
        {"windows_ready", ws.pushed},
        {"windows_classified", m.classified.load(std::memory_order_relaxed)},
        {"windows_dropped", ws.dropped},
        {"classify_ms_p50", fe::round2(fe::quantile_ms(m.classify_time, 0.50))},
        {"display_gap_p99_ms", fe::round2(fe::quantile_ms(m.display_gap, 0.99))},
        {"display_gap_max_ms",
         fe::round2(static_cast<double>(m.display_gap_max_ns.load(std::memory_order_relaxed)) / 1e6)},
        {"source_frames", r.camera != nullptr ? r.camera->stats().live.frames
                                              : m.source_frames.load(std::memory_order_relaxed)},
        {"joints_found_mean",
         estimated > 0 ? fe::round2(static_cast<double>(m.joints_found.load()) / static_cast<double>(estimated))
                       : 0.0},
        {"accuracy_windows", m.scored.load(std::memory_order_relaxed)},
        {"jpeg_pool_misses", r.jpeg.pool_misses()},
        {"peak_rss_mb", fe::round2(fe::peak_rss_mb())},
    };
    const auto scored = m.scored.load(std::memory_order_relaxed);
    if (scored > 0) {
        j["accuracy"] = fe::round2(static_cast<double>(m.correct.load()) / static_cast<double>(scored));
    } else {
        j["accuracy"] = nullptr; // no truth (a video, a camera, a CSV without labels) or no window yet
    }
    {
        const std::lock_guard<std::mutex> lock(m.mu);
        j["gesture"] = m.last ? nlohmann::json(std::string(name_of(m.last->label))) : nlohmann::json();
        j["confidence"] = m.last ? nlohmann::json(fe::round2(m.last->confidence)) : nlohmann::json();
        j["last_window_age_ms"] = m.last ? nlohmann::json(fe::round2(m.last_window_age_ms)) : nlohmann::json();
    }
    j["sources"] = nlohmann::json::array();
    if (r.camera != nullptr) {
        j["sources"].push_back(fe::source_json("camera", *r.camera));
    }
    // Frames the estimator took from an older epoch after a newer one: 0 (docs/live_sources.md).
    j["epoch_regressions"] = m.estimator_epochs.regressions();
    j.update(fe::snapshot_json(snap));
    return j;
}

} // namespace handpose
