// examples/detection/summary.cpp - see summary.hpp.
#include "summary.hpp"

#include "common/live_input.hpp"
#include "common/process_stats.hpp"
#include "common/program.hpp"

#include <algorithm>

namespace framepipe_examples::detection {

nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap, double elapsed) {
    const double secs = std::max(elapsed, 1e-3);
    const auto frames = r.video ? r.video->frames_read() : r.camera->stats().live.frames;
    const auto detections = r.m.detections.load(std::memory_order_relaxed);
    const auto encoded = r.jpeg.frames();
    nlohmann::json j;
    j["mode"] = r.s.mode;
    j["detector"] = r.d.description();
    j["video"] = r.video ? r.video->description() : r.camera->description();
    j["live"] = r.camera != nullptr;
    j["seconds"] = round2(elapsed);
    // A live input is read as fast as it delivers: no target.
    j["source_fps_target"] =
        r.video ? nlohmann::json(round2(r.video->pace_hz())) : nlohmann::json();
    j["source_fps"] = round2(static_cast<double>(frames) / secs);
    j["ui_fps_target"] = r.s.ui_fps;
    j["ui_fps"] = round2(static_cast<double>(encoded) / secs);
    j["detect_fps_target"] = r.s.detect_fps;
    j["detect_fps"] = round2(static_cast<double>(detections) / secs);
    j["detect_age_p50_ms"] = round2(quantile_ms(r.m.detect_age, 0.5));
    j["detect_age_p99_ms"] = round2(quantile_ms(r.m.detect_age, 0.99));
    j["inference_ms_p50"] = round2(quantile_ms(r.m.inference, 0.5));
    j["inference_ms_p99"] = round2(quantile_ms(r.m.inference, 0.99));
    j["inference_ms_last"] =
        round2(static_cast<double>(r.m.last_inference_us.load(std::memory_order_relaxed)) / 1000.0);
    j["frames_read"] = frames;
    j["corrupt_frames"] = r.video ? r.video->corrupt_frames() : 0;
    j["loops"] = r.video ? r.video->loops() : 0;
    j["detections"] = detections;
    j["ui_frames"] = encoded;
    if (r.s.mode == "pipelined") {
        // Frames the stage never worked on, whatever the reason. The snapshot counts the frames
        // the paced detector passed over for a newer one as rate_limited on its subscription.
        const auto& det_in = channel_named(snap, "detector");
        const auto& ui_in = channel_named(snap, "ui");
        j["dropped_for_detector"] = det_in.dropped;
        j["dropped_for_detector_by_reason"] = drops_by_reason(det_in);
        j["dropped_for_ui"] = ui_in.dropped;
        j["dropped_for_ui_by_reason"] = drops_by_reason(ui_in);
    } else if (r.camera) {
        // The live camera publishes on its own threads; the inline stage takes the newest.
        const auto& in = channel_named(snap, "inline");
        j["dropped_for_detector"] = frames - std::min(frames, detections);
        j["dropped_for_detector_by_reason"] = drops_by_reason(in);
        j["dropped_for_ui"] = frames - std::min(frames, encoded);
        j["dropped_for_ui_by_reason"] = nlohmann::json::object();
    } else {
        j["dropped_for_detector"] = frames - std::min(frames, detections);
        j["dropped_for_detector_by_reason"] = nlohmann::json::object();
        j["dropped_for_ui"] = frames - std::min(frames, encoded);
        j["dropped_for_ui_by_reason"] = nlohmann::json::object();
    }
    j["jpeg_pool_misses"] = r.jpeg.pool_misses();
    j["jpeg_kb_mean"] = round2(r.jpeg.mean_kb());
    j["peak_rss_mb"] = round2(peak_rss_mb());
    j["rss_mb"] = round2(rss_mb());
    for (const auto& st : snap.stages) {
        if (st.name == "detector" || st.name == "inline") {
            // The whole run's share (busy_ratio is the last two seconds'); one worker.
            j["detector_busy_ratio"] = round2(std::min(1.0, st.busy_s / secs));
        }
    }
    j["sources"] = nlohmann::json::array();
    if (r.camera) {
        j["sources"].push_back(source_json("camera", *r.camera));
    }
    // Frames a stage took from an older epoch after a newer one: 0 (docs/live_sources.md).
    j["epoch_regressions"] = r.m.detector_epochs.regressions() + r.m.ui_epochs.regressions();
    j.update(snapshot_json(snap));
    return j;
}

} // namespace framepipe_examples::detection
