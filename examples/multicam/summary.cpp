// examples/multicam/summary.cpp - see summary.hpp.
#include "summary.hpp"

#include "common/process_stats.hpp"
#include "common/program.hpp"

#include <framepipe/exposition.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

namespace framepipe_examples::multicam {

namespace {

// Drops of one consumer by reason (the non-zero ones): the subscription's, then the selector's.
nlohmann::json drops_json(const consumer_drops& d) {
    auto j = drops_by_reason(d.subscription);
    if (d.superseded != 0) {
        j["superseded"] = d.superseded;
    }
    if (d.expired != 0) {
        j["expired"] = j.value("expired", std::uint64_t{0}) + d.expired;
    }
    if (d.session_ended != 0) {
        j["session_ended"] = d.session_ended;
    }
    return j;
}

nlohmann::json camera_json(const camera_figures& f) {
    return {
        {"name", f.name},
        {"input", f.input},
        {"weight", f.weight},
        {"status", to_string(f.status)},
        {"state", f.state},
        {"last_error", f.last_error},
        {"offline_since_ms",
         f.offline_since && f.status != camera_status::online
             ? nlohmann::json(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  f.offline_since->time_since_epoch())
                                  .count())
             : nlohmann::json()},
        {"offline_for_s", f.status == camera_status::online ? 0.0 : round2(f.offline_for_s)},
        {"frames", f.frames},
        {"fps", round2(f.fps)},
        {"reconnects", f.reconnects},
        {"stalls", f.stalls},
        {"sessions", f.sessions},
        {"active_s", round2(f.active_s)},
        {"detections", f.detections},
        {"boxes", f.boxes},
        {"detector_share", std::round(f.detector_share * 1e4) / 1e4},
        {"age_p50_ms", round2(f.age_p50_ms)},
        {"age_p99_ms", round2(f.age_p99_ms)},
        {"ui_frames", f.ui_frames},
        {"drops", {{"detector", drops_json(f.detector_drops)}, {"ui", drops_json(f.ui_drops)}}},
        {"in_flight", {{"detector", f.detector_in_flight}, {"ui", f.ui_in_flight}}},
    };
}

} // namespace

std::vector<double> attainable_shares(const std::vector<double>& weights,
                                      const std::vector<double>& caps) {
    const std::size_t n = weights.size();
    std::vector<double> out(n, 0.0);
    if (n == 0 || caps.size() != n) {
        return out;
    }
    double room = 0;
    for (const double c : caps) {
        room += std::max(c, 0.0);
    }
    // Caps that cannot hold the whole: scaled up to (then the shares are the caps' proportions).
    const double scale = room < 1.0 && room > 0 ? 1.0 / room : 1.0;
    // Water-filling: shares proportional to the weights; a camera above its cap gets the cap,
    // the rest is shared again among the others by weight.
    std::vector<bool> capped(n, false);
    double left = 1.0;
    for (bool changed = true; changed;) {
        changed = false;
        double w = 0;
        for (std::size_t i = 0; i < n; ++i) {
            w += capped[i] ? 0.0 : weights[i];
        }
        for (std::size_t i = 0; i < n; ++i) {
            if (!capped[i]) {
                out[i] = w > 0 ? left * weights[i] / w : 0.0;
            }
        }
        for (std::size_t i = 0; i < n; ++i) {
            const double cap = std::max(caps[i], 0.0) * scale;
            if (!capped[i] && out[i] > cap + 1e-12) {
                capped[i] = true;
                out[i] = cap;
                left -= cap;
                changed = true;
            }
        }
    }
    return out;
}

std::optional<double> fairness(const std::vector<camera_figures>& cams, std::uint64_t batches) {
    std::vector<const camera_figures*> counted;
    double detections = 0;
    for (const auto& f : cams) {
        if (f.status == camera_status::online && f.frames > 0) {
            counted.push_back(&f);
            detections += static_cast<double>(f.detections);
        }
    }
    if (counted.empty()) {
        return std::nullopt;
    }
    if (detections == 0) {
        return 1.0; // nobody served: all equal
    }
    std::vector<double> weights;
    std::vector<double> caps;
    for (const auto* f : counted) {
        weights.push_back(static_cast<double>(f->weight));
        // At most one frame per batch, and no more than it delivered.
        caps.push_back(static_cast<double>(std::min(f->frames, batches)) / detections);
    }
    const auto fair = attainable_shares(weights, caps);
    std::vector<double> x;
    for (std::size_t i = 0; i < counted.size(); ++i) {
        const double share = static_cast<double>(counted[i]->detections) / detections;
        x.push_back(fair[i] > 0 ? share / fair[i] : 0.0);
    }
    return jain_index(x);
}

nlohmann::json summary(const run_parts& r, const framepipe::pipeline_snapshot& snap, double elapsed) {
    const double secs = std::max(elapsed, 1e-3);
    const auto cams = r.cameras.figures();
    const auto b = r.batches.stats();
    nlohmann::json j;
    j["program"] = program;
    j["detector"] = r.d.description();
    j["seconds"] = round2(elapsed);
    nlohmann::json list = nlohmann::json::array();
    std::uint64_t frames = 0;
    std::size_t paused = 0;
    for (const auto& f : cams) {
        list.push_back(camera_json(f));
        frames += f.frames;
        paused += f.status == camera_status::paused ? 1 : 0;
    }
    j["cameras"] = std::move(list);
    j["camera_count"] = cams.size();
    j["active"] = r.cameras.active();
    j["paused"] = paused;
    j["max_active"] = r.cameras.options().max_active;
    j["cameras_opened"] = r.cameras.opened();
    j["frames"] = frames;
    j["frames_per_s"] = round2(static_cast<double>(frames) / secs);
    const auto jain = fairness(cams, b.batches);
    j["jain_index"] = jain ? nlohmann::json(std::round(*jain * 1e4) / 1e4) : nlohmann::json();
    const auto detected = r.detect.frames.load(std::memory_order_relaxed);
    j["detector_frames"] = detected;
    j["detector_skipped"] = r.detect.skipped.load(std::memory_order_relaxed);
    j["detector_orphaned"] = r.cameras.orphaned();
    const auto gone = r.cameras.removed();
    j["removed_cameras"] = {{"cameras", gone.cameras}, {"frames", gone.frames},
                            {"detections", gone.detections}};
    j["detector_fps"] = round2(static_cast<double>(detected) / secs);
    j["batch_max"] = r.batches.options().max_size;
    j["batches"] = b.batches;
    j["mean_batch_size"] = b.batches == 0 ? 0.0
                                          : round2(static_cast<double>(b.items) /
                                                   static_cast<double>(b.batches));
    nlohmann::json sizes = nlohmann::json::object();
    for (std::size_t n = 1; n < b.size_histogram.size(); ++n) {
        if (b.size_histogram[n] != 0) {
            sizes[std::to_string(n)] = b.size_histogram[n];
        }
    }
    j["batch_sizes"] = std::move(sizes);
    j["flushes"] = {{"full", b.flushes.full},
                    {"preferred", b.flushes.preferred},
                    {"deadline", b.flushes.deadline},
                    {"close", b.flushes.close}};
    j["batch_queue_delay_max_ms"] =
        round2(std::chrono::duration<double, std::milli>(b.max_queue_delay).count());
    j["age_p50_ms"] = round2(quantile_ms(r.detect.age, 0.5));
    j["age_p99_ms"] = round2(quantile_ms(r.detect.age, 0.99));
    j["inference_ms_p50"] = round2(quantile_ms(r.detect.inference, 0.5));
    j["inference_ms_p99"] = round2(quantile_ms(r.detect.inference, 0.99));
    j["ui_frames"] = r.jpeg.frames();
    j["jpeg_kb_mean"] = round2(r.jpeg.mean_kb());
    j["peak_rss_mb"] = round2(peak_rss_mb());
    j["rss_mb"] = round2(rss_mb());
    j["cpu_s"] = round2(cpu_seconds());
    const auto pipe = snapshot_json(snap);
    j["stages"] = pipe["stages"];
    j["channels"] = pipe["channels"];
    return j;
}

std::string metrics_text(const run_parts& r, const framepipe::pipeline_snapshot& snap) {
    const auto cams = r.cameras.figures();
    std::string out;
    const auto family = [&out](const char* name, const char* type, const char* help) {
        out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    const auto sample = [&out](const std::string& name, const std::string& labels, double v) {
        out += name;
        if (!labels.empty()) {
            out += "{" + labels + "}";
        }
        out += ' ';
        framepipe::detail::append_number(out, v);
        out += '\n';
    };
    const auto cam = [](const camera_figures& f) {
        return "camera=\"" + framepipe::detail::prometheus_escape(f.name) + "\"";
    };
    const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
    const auto per_camera = [&](const char* name, const char* type, const char* help,
                                auto value) {
        family(name, type, help);
        for (const auto& f : cams) {
            sample(name, cam(f), value(f));
        }
    };
    per_camera("framepipe_multicam_camera_frames_total", "counter",
               "Frames a camera delivered, over all its sessions.",
               [&](const camera_figures& f) { return n(f.frames); });
    per_camera("framepipe_multicam_camera_fps", "gauge", "Frames a camera delivered per second lately.",
               [](const camera_figures& f) { return f.fps; });
    per_camera("framepipe_multicam_camera_weight", "gauge", "A camera's weight for the detector.",
               [&](const camera_figures& f) { return n(f.weight); });
    family("framepipe_multicam_camera_status", "gauge",
           "1 for the status a camera is in (online, reconnecting, offline, paused), else 0.");
    for (const auto& f : cams) {
        for (const auto st : {camera_status::online, camera_status::reconnecting,
                              camera_status::offline, camera_status::paused}) {
            sample("framepipe_multicam_camera_status",
                   cam(f) + ",status=\"" + std::string(to_string(st)) + "\"", f.status == st ? 1 : 0);
        }
    }
    per_camera("framepipe_multicam_camera_offline_seconds", "gauge",
               "Seconds since a camera's last frame while it is not online (0 online).",
               [](const camera_figures& f) {
                   return f.status == camera_status::online ? 0.0 : f.offline_for_s;
               });
    per_camera("framepipe_multicam_camera_reconnects_total", "counter",
               "Connections a camera opened after the first of a session.",
               [&](const camera_figures& f) { return n(f.reconnects); });
    per_camera("framepipe_multicam_camera_stalls_total", "counter",
               "Connections of a camera that went quiet for the stall timeout.",
               [&](const camera_figures& f) { return n(f.stalls); });
    per_camera("framepipe_multicam_camera_sessions_total", "counter",
               "Times a camera was made active (started or resumed).",
               [&](const camera_figures& f) { return n(f.sessions); });
    per_camera("framepipe_multicam_camera_active_seconds_total", "counter",
               "Seconds a camera was active (not paused).",
               [](const camera_figures& f) { return f.active_s; });
    per_camera("framepipe_multicam_camera_detections_total", "counter",
               "Frames of a camera the detector ran on.",
               [&](const camera_figures& f) { return n(f.detections); });
    per_camera("framepipe_multicam_camera_boxes_total", "counter", "Boxes found on a camera's frames.",
               [&](const camera_figures& f) { return n(f.boxes); });
    per_camera("framepipe_multicam_camera_detector_share", "gauge",
               "A camera's share of the frames the detector ran on.",
               [](const camera_figures& f) { return f.detector_share; });
    per_camera("framepipe_multicam_camera_ui_frames_total", "counter",
               "Frames of a camera the UI drew.",
               [&](const camera_figures& f) { return n(f.ui_frames); });
    family("framepipe_multicam_camera_input_age_seconds", "summary",
           "Age of a camera's frames when the detector started on them.");
    for (const auto& f : cams) {
        sample("framepipe_multicam_camera_input_age_seconds", cam(f) + ",quantile=\"0.5\"",
               f.age_p50_ms / 1e3);
        sample("framepipe_multicam_camera_input_age_seconds", cam(f) + ",quantile=\"0.99\"",
               f.age_p99_ms / 1e3);
        sample("framepipe_multicam_camera_input_age_seconds_sum", cam(f), f.age_sum_s);
        sample("framepipe_multicam_camera_input_age_seconds_count", cam(f), n(f.age_count));
    }
    family("framepipe_multicam_camera_dropped_total", "counter",
           "A camera's frames a consumer (detector, ui) never worked on, by reason.");
    for (const auto& f : cams) {
        for (const auto& [consumer, d] :
             {std::pair<const char*, const consumer_drops*>{"detector", &f.detector_drops},
              {"ui", &f.ui_drops}}) {
            const auto drops = drops_json(*d); // items() refers to it: keep it alive
            for (const auto& [reason, count] : drops.items()) {
                sample("framepipe_multicam_camera_dropped_total",
                       cam(f) + ",consumer=\"" + consumer + "\",reason=\"" + reason + "\"",
                       count.get<double>());
            }
        }
    }
    const auto b = r.batches.stats();
    family("framepipe_multicam_cameras", "gauge", "Cameras, by status.");
    for (const auto st : {camera_status::online, camera_status::reconnecting, camera_status::offline,
                          camera_status::paused}) {
        sample("framepipe_multicam_cameras", "status=\"" + std::string(to_string(st)) + "\"",
               static_cast<double>(std::count_if(cams.begin(), cams.end(),
                                                 [st](const auto& f) { return f.status == st; })));
    }
    family("framepipe_multicam_cameras_opened_total", "counter",
           "Camera sessions started (a connection opened or a generator started).");
    sample("framepipe_multicam_cameras_opened_total", "", n(r.cameras.opened()));
    family("framepipe_multicam_jain_index", "gauge",
           "Jain's fairness index over the online cameras' detector shares relative to their "
           "attainable weighted shares (1: fair).");
    sample("framepipe_multicam_jain_index", "", fairness(cams, b.batches).value_or(1.0));
    family("framepipe_multicam_batches_total", "counter", "Batches the detector ran, by size.");
    for (std::size_t k = 1; k < b.size_histogram.size(); ++k) {
        sample("framepipe_multicam_batches_total", "size=\"" + std::to_string(k) + "\"",
               n(b.size_histogram[k]));
    }
    family("framepipe_multicam_batch_flushes_total", "counter", "Batches by why they went.");
    for (const auto& [cause, count] : {std::pair<const char*, std::uint64_t>{"full", b.flushes.full},
                                       {"preferred", b.flushes.preferred},
                                       {"deadline", b.flushes.deadline},
                                       {"close", b.flushes.close}}) {
        sample("framepipe_multicam_batch_flushes_total", std::string("cause=\"") + cause + "\"",
               n(count));
    }
    return out + framepipe::to_prometheus(snap);
}

} // namespace framepipe_examples::multicam
