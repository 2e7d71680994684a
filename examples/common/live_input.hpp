// examples/common/live_input.hpp - the live-input flags both video examples take, checked the
// same way, and a live camera's figures as JSON (the --json summary, /stats.json, the page).
//
//     framepipe_examples::live_settings live;
//     framepipe_examples::add_live_options(app, live);       // --reconnect-initial, ...
//     ... parse ...
//     if (framepipe_examples::is_live_input(video, camera)) {
//         camera.emplace(framepipe_examples::live_camera_options_from(live, video, camera_index,
//         8));
//     } else {
//         framepipe_examples::reject_live_flags(app, "a file");   // --stall-timeout on a file:
//         exit 2
//     }
//     j["sources"] = {framepipe_examples::source_json("camera", *camera)};
//
// Durations are seconds and take fractions (--stall-timeout 2.5). The defaults and the reasons
// for them are in docs/live_sources.md.
//
// Header-only; needs CLI11 and nlohmann-json, and live_camera (framepipe_examples_gst).
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/live_camera.hpp"
#include "common/program.hpp"

namespace framepipe_examples {

struct live_settings {
    double reconnect_initial = 0.5;  // s, the first backoff step
    double reconnect_max = 10;       // s, the cap of the backoff step
    double reconnect_jitter = 0.5;   // each wait is in ((1 - jitter) * step, step]
    double stall_timeout = 2;        // s without a frame: stalled, reconnect
    double open_timeout = 5;         // s for a connection to give its first frame
    std::uint32_t max_attempts = 0;  // failed attempts in a row before giving up (exit 2); 0: never
    std::string rtsp_transport = "tcp";
    double rtsp_latency = 0.2;  // s, rtspsrc's jitterbuffer
};

// The flags whose names the checks below use.
inline constexpr const char* live_flags[] = {
    "--reconnect-initial", "--reconnect-max", "--reconnect-jitter", "--stall-timeout",
    "--open-timeout",      "--max-attempts",  "--rtsp-transport",   "--rtsp-latency"};

// Declares the live-input flags on `app`.
inline void add_live_options(CLI::App& app, live_settings& s) {
    const char* group = "Live inputs (rtsp://, http(s):// MJPEG, --camera)";
    app.add_option("--reconnect-initial", s.reconnect_initial,
                   "seconds: first wait before reconnecting (default 0.5)")
        ->group(group);
    app.add_option("--reconnect-max", s.reconnect_max,
                   "seconds: the longest wait between attempts; each failure doubles it up to "
                   "this (default 10)")
        ->group(group);
    app.add_option("--reconnect-jitter", s.reconnect_jitter,
                   "0..1: each wait is drawn in ((1 - jitter) * step, step] (default 0.5)")
        ->group(group);
    app.add_option("--stall-timeout", s.stall_timeout,
                   "seconds without a frame before a connection counts as stalled and is "
                   "reopened (default 2)")
        ->group(group);
    app.add_option("--open-timeout", s.open_timeout,
                   "seconds for a connection attempt to give its first frame (default 5)")
        ->group(group);
    app.add_option("--max-attempts", s.max_attempts,
                   "failed attempts in a row before giving up with exit code 2 (default 0: "
                   "never give up)")
        ->group(group);
    app.add_option("--rtsp-transport", s.rtsp_transport, "tcp (default) or udp")->group(group);
    app.add_option("--rtsp-latency", s.rtsp_latency,
                   "seconds: RTSP jitterbuffer latency; late packets beyond it are dropped "
                   "(default 0.2)")
        ->group(group);
}

// Whether the input is live: a camera index, or an rtsp/http(s)/v4l2 URL.
[[nodiscard]] inline bool is_live_input(std::string_view video, int camera) noexcept {
    return camera >= 0 || is_live_uri(video);
}

// Throws usage_error naming the first live-input flag given on the command line: they do not
// apply to `input` (say, "a file").
inline void reject_live_flags(const CLI::App& app, std::string_view input) {
    for (const char* flag : live_flags) {
        if (app.count(flag) > 0) {
            throw usage_error(std::string(flag) +
                              ": only for live inputs (rtsp://, http(s)://, "
                              "--camera), not " +
                              std::string(input));
        }
    }
}

namespace detail {
// `v` seconds of flag `flag` as nanoseconds; throws usage_error naming the flag when `v` is not
// finite, not above `min_excl`, above `max`, or so small that it rounds to 0 ns (say 1e-10: the
// library would refuse the 0 naming its own field, not the flag).
inline std::chrono::nanoseconds seconds_flag(const char* flag, double v, double min_excl,
                                             double max) {
    const auto refuse = [&] {
        return usage_error(std::string(flag) + ": expected seconds above " +
                           (min_excl == 0 ? std::string("0") : std::to_string(min_excl)) +
                           " and at most " + std::to_string(static_cast<long long>(max)) +
                           ", got " + (v > 0 && v < 1e-6 ? std::to_string(v * 1e9) + " ns"
                                                         : std::to_string(v)));
    };
    if (!std::isfinite(v) || !(v > min_excl) || v > max) {
        throw refuse();
    }
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(v));
    if (ns <= std::chrono::nanoseconds::zero()) {
        throw refuse();
    }
    return ns;
}
}  // namespace detail

// The live camera's options from the flags, for `uri` (or camera index `camera` >= 0). Throws
// usage_error naming the flag: a duration that is not a positive number of seconds (or above a
// day), --reconnect-max below --reconnect-initial, a jitter outside [0, 1], a transport other
// than tcp or udp; and, with the URI's text, an input gst_capture cannot read.
[[nodiscard]] inline live_camera_options live_camera_options_from(const live_settings& s,
                                                                  const std::string& uri,
                                                                  int camera,
                                                                  std::size_t pool_size) {
    constexpr double day = 86400;
    live_camera_options o;
    o.pool_size = pool_size;
    o.capture.uri = uri;
    o.capture.camera = camera;
    if (s.rtsp_transport != "tcp" && s.rtsp_transport != "udp") {
        throw usage_error("--rtsp-transport: expected tcp or udp, got '" + s.rtsp_transport + "'");
    }
    o.capture.rtsp_transport = s.rtsp_transport;
    if (!std::isfinite(s.rtsp_latency) || s.rtsp_latency < 0 || s.rtsp_latency > 60) {
        throw usage_error("--rtsp-latency: expected seconds from 0 to 60, got " +
                          std::to_string(s.rtsp_latency));
    }
    o.capture.latency = std::chrono::milliseconds(std::llround(s.rtsp_latency * 1000));
    o.capture.drop_on_latency = true;
    auto& l = o.live;
    l.backoff.initial = detail::seconds_flag("--reconnect-initial", s.reconnect_initial, 0, day);
    l.backoff.max = detail::seconds_flag("--reconnect-max", s.reconnect_max, 0, day);
    if (l.backoff.max < l.backoff.initial) {
        throw usage_error("--reconnect-max: must not be below --reconnect-initial (" +
                          std::to_string(s.reconnect_max) + " < " +
                          std::to_string(s.reconnect_initial) + ")");
    }
    if (!(s.reconnect_jitter >= 0 && s.reconnect_jitter <= 1)) {
        throw usage_error("--reconnect-jitter: expected a fraction from 0 to 1, got " +
                          std::to_string(s.reconnect_jitter));
    }
    l.backoff.jitter = s.reconnect_jitter;
    l.stall_timeout = detail::seconds_flag("--stall-timeout", s.stall_timeout, 0, day);
    l.open_timeout = detail::seconds_flag("--open-timeout", s.open_timeout, 0, day);
    l.first_frame_timeout = l.open_timeout;  // gst_capture's open() waits for the first frame
    l.max_attempts = s.max_attempts;
    l.restart_at_end = false;  // a live stream has no end: its end is a failure, reconnected
    try {
        live_camera probe(o);  // the URI and the options, checked once, before anything runs
    } catch (const std::invalid_argument& e) {
        // The URI's password masked, here and in the message (which may quote the URI).
        throw usage_error(camera >= 0 ? std::string("--camera: ") + mask_passwords(e.what())
                                      : "--video '" + mask_passwords(uri) +
                                            "': " + mask_passwords(e.what()));
    }
    return o;
}

// Milliseconds since the Unix epoch.
[[nodiscard]] inline std::int64_t unix_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// One live source's figures (docs/live_sources.md, "Counters"), for --json, /stats.json and the
// page ("sources": [...]).
[[nodiscard]] inline nlohmann::json source_json(std::string_view name, const live_camera& c) {
    const auto st = c.stats();
    const auto& l = st.live;
    nlohmann::json j = {
        {"name", name},
        {"input", c.description()},
        {"status", to_string(st.status)},
        {"state", to_string(l.state)},
        {"epoch", l.epoch},
        {"connects", l.connects},
        {"reconnects", l.reconnects},
        {"stalls", l.stalls},
        {"open_failures", l.open_failures},
        {"no_first_frame", l.no_first_frame},
        {"read_errors", l.read_errors},
        {"abandoned_calls", l.abandoned},
        {"frames", l.frames},
        {"dropped_at_stop", l.dropped_at_stop},
        {"frames_after_reconnect", st.frames_after_reconnect},
        {"max_gap_ms", round2(st.max_gap_ms)},
        {"first_frame_after_reconnect_ms",
         st.first_frame_after_reconnect_ms
             ? nlohmann::json(round2(*st.first_frame_after_reconnect_ms))
             : nlohmann::json()},
        {"attempt", l.attempt},
        {"backoff_s", round2(std::chrono::duration<double>(l.current_backoff).count())},
        {"last_error", mask_passwords(l.last_error)},
        {"offline_since_ms",
         st.offline_since ? nlohmann::json(unix_ms(*st.offline_since)) : nlohmann::json()},
        {"offline_for_s", round2(st.offline_for_s)},
        {"frame_pool_misses", st.pool_misses},
        {"frames_dropped_before_read", st.dropped_before_read},
        {"frames_unconvertible", st.unconvertible},
    };
    return j;
}

}  // namespace framepipe_examples
