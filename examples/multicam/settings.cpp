// examples/multicam/settings.cpp - see settings.hpp.
#include "settings.hpp"

#include "common/cli.hpp"
#include "common/program.hpp"
#include "common/uri_scheme.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <utility>

namespace framepipe_examples::multicam {

namespace {

// Frames a live camera pools: the detector's slot, a batch being detected, the UI's slot, the UI
// stage's frame, the one being read, and a spare.
constexpr std::size_t frames_per_camera = 6;

bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

// "NAME=URL" -> {NAME, URL}; a URL alone -> {"", URL}. A prefix is a name only when it is made of
// name characters (so "http://x/?a=b" stays a URL).
std::pair<std::string, std::string> split_named(const std::string& v) {
    const auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0 ||
        !std::all_of(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(eq), name_char)) {
        return {"", v};
    }
    return {v.substr(0, eq), v.substr(eq + 1)};
}

} // namespace

void add_options(CLI::App& app, settings& s) {
    app.add_option("--video", s.videos,
                   "a camera, repeated: [NAME=]URL with URL rtsp://, http(s):// MJPEG, "
                   "v4l2:///dev/videoN, a file (played in real time, looped) or synthetic://WxH@FPS");
    app.add_option("--synthetic", s.synthetic,
                   "N generated cameras (a moving pattern with the camera's number)")
        ->check(CLI::Range(0, 1024));
    app.add_option("--size", s.size, "synthetic frames: WIDTHxHEIGHT (default 640x480)");
    app.add_option("--fps", s.fps, "synthetic frames per second (default 30)")
        ->check(finite_range(0.1, 240.0));
    app.add_option("--priority", s.priorities,
                   "NAME=WEIGHT, repeated: the camera's share of the detector (default 1 each)");
    app.add_option("--max-active", s.max_active,
                   "cameras decoded at once; the others are paused (default: all)");
    app.add_option("--rotate", s.rotate,
                   "with --max-active: seconds between rotations of the active set (default 0: "
                   "no rotation)")
        ->check(finite_range(0.0, 86400.0));
    app.add_option("--batch", s.batch,
                   "frames of different cameras per detector pass (ONNX models with a dynamic "
                   "batch; default 1)")
        ->check(CLI::Range(1, 64));
    app.add_option("--batch-delay", s.batch_delay,
                   "seconds a batch may wait to fill once it has a frame (default 0: it goes with "
                   "what is ready)")
        ->check(finite_range(0.0, 10.0));
    app.add_option("--max-age", s.max_age,
                   "seconds: frames older than this are not detected (dropped as expired; "
                   "default 0: no limit)")
        ->check(finite_range(0.0, 3600.0));
    app.add_option("--ui-fps", s.ui_fps, "frames per second per camera sent to the page (default 5)")
        ->check(finite_range(0.1, 120.0));
    app.add_option("--tile-width", s.tile_width, "width of a camera's tile on the page (default 320)")
        ->check(CLI::Range(64, 1920));
    app.add_option("--jpeg-quality", s.jpeg_quality, "JPEG quality 1..100")->check(CLI::Range(1, 100));
    app.add_option("--model", s.model, "YOLOv5/v8 .onnx (a dynamic batch for --batch); default HOG");
    app.add_option("--classes", s.classes, "class names, one per line");
    app.add_option("--input-size", s.input_size, "ONNX input size (square)")->check(CLI::Range(32, 4096));
    app.add_option("--confidence", s.confidence, "confidence threshold")
        ->check(finite_range(0.0, 1.0));
    app.add_option("--nms", s.nms, "NMS IoU threshold")->check(finite_range(0.0, 1.0));
    app.add_option("--detector-threads", s.detector_threads, "OpenCV threads for the detector")
        ->check(CLI::Range(1, 64));
    app.add_flag("--no-ui", s.no_ui, "no web server and no UI stage");
    app.add_option("--duration", s.duration, "seconds to run (default: until Ctrl-C)")
        ->check(finite_range(0.0, 1e7));
    app.add_flag("--json", s.json, "print one JSON summary object at exit");
    app.add_option("--host", s.host,
                   "address to serve on (default 127.0.0.1; another needs --control-token)");
    app.add_option("--port", s.port, "port to serve on (default 7002; 0 = any)")->check(CLI::Range(0, 65535));
    app.add_option("--max-clients", s.max_clients, "websocket + MJPEG clients at once")
        ->check(CLI::Range(1, 256));
    app.add_option("--control-token", s.control_token,
                   "a secret that POST /cameras and DELETE /cameras/NAME must carry "
                   "(Authorization: Bearer TOKEN); required with a --host beyond loopback");
    app.add_option("--allow-sources", s.allow_sources,
                   "URL schemes POST /cameras accepts, comma-separated, of rtsp, http, https, "
                   "synthetic, file, v4l2 (default rtsp,http,https,synthetic)");
    add_live_options(app, s.live);
}

std::vector<camera_spec> cameras_of(const settings& s) {
    std::vector<camera_spec> out;
    for (const auto& v : s.videos) {
        auto [name, url] = split_named(v);
        if (url.empty()) {
            throw usage_error("--video '" + v + "': no URL");
        }
        if (name.empty()) {
            name = "cam" + std::to_string(out.size() + 1);
        }
        out.push_back({name, url, 1});
    }
    for (int i = 0; i < s.synthetic; ++i) {
        out.push_back({"cam" + std::to_string(out.size() + 1), "synthetic:", 1});
    }
    if (out.empty()) {
        throw usage_error("no camera: give --video URL (repeated) or --synthetic N");
    }
    std::map<std::string, std::size_t> index;
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i].name.size() > 64) {
            throw usage_error("--video: camera name '" + out[i].name + "' is longer than 64");
        }
        if (!index.emplace(out[i].name, i).second) {
            throw usage_error("--video: duplicate camera name '" + out[i].name + "'");
        }
    }
    for (const auto& p : s.priorities) {
        const auto eq = p.rfind('=');
        if (eq == std::string::npos) {
            throw usage_error("--priority '" + p + "': expected NAME=WEIGHT");
        }
        const auto name = p.substr(0, eq);
        const auto text = p.substr(eq + 1);
        long long w = 0;
        const auto r = std::from_chars(text.data(), text.data() + text.size(), w);
        if (r.ec != std::errc() || r.ptr != text.data() + text.size() || w < 1 || w > 1000) {
            throw usage_error("--priority '" + p + "': the weight must be a whole number from 1 "
                              "to 1000");
        }
        const auto it = index.find(name);
        if (it == index.end()) {
            throw usage_error("--priority '" + p + "': no camera named '" + name + "'");
        }
        out[it->second].weight = static_cast<std::uint32_t>(w);
    }
    return out;
}

std::set<std::string> allowed_schemes(const std::string& list) {
    static const std::set<std::string> known{"rtsp", "http", "https", "synthetic", "file", "v4l2"};
    std::set<std::string> out;
    std::size_t at = 0;
    while (at <= list.size()) {
        const auto comma = std::min(list.find(',', at), list.size());
        const auto item = list.substr(at, comma - at);
        if (!item.empty()) {
            if (known.count(item) == 0) {
                throw usage_error("--allow-sources: unknown scheme '" + item +
                                  "' (known: rtsp, http, https, synthetic, file, v4l2)");
            }
            out.insert(item);
        }
        at = comma + 1;
    }
    return out;
}

std::string scheme_of(const std::string& url) {
    if (is_synthetic_uri(url)) {
        return "synthetic";
    }
    // Schemes in any case (RFC 3986 3.1).
    for (const char* s : {"rtsp://", "rtsps://", "rtspt://"}) {
        if (has_scheme_prefix(url, s)) {
            return "rtsp";
        }
    }
    for (const char* s : {"http", "https", "v4l2", "file"}) {
        if (has_scheme_prefix(url, std::string(s) + "://")) {
            return s;
        }
    }
    return url.find("://") == std::string::npos && url.find(':') == std::string::npos ? "file"
                                                                                        : "";
}

synthetic_options synthetic_defaults(const settings& s) {
    synthetic_options o;
    std::string why;
    const auto parsed = parse_synthetic_uri("synthetic://" + s.size, o, &why);
    if (!parsed) {
        throw usage_error("--size '" + s.size + "': expected WIDTHxHEIGHT, 16..4096 each");
    }
    o = *parsed;
    o.fps = s.fps;
    return o;
}

live_camera_options camera_options(const settings& s, const camera_spec& spec, int number) {
    // The live-input flags, checked once (their errors name the flag); the input comes next.
    auto o = live_camera_options_from(s.live, "", 0, frames_per_camera);
    o.capture.camera = -1;
    o.capture.uri = spec.url;
    const auto scheme = scheme_of(spec.url);
    if (scheme.empty()) {
        throw usage_error("'" + mask_passwords(spec.url) +
                          "': unsupported scheme (rtsp, rtsps, http, https, v4l2, file, synthetic)");
    }
    if (scheme == "synthetic") {
        auto defaults = synthetic_defaults(s);
        defaults.number = number;
        std::string why;
        const auto synthetic = parse_synthetic_uri(spec.url, defaults, &why);
        if (!synthetic) {
            throw usage_error(why);
        }
        o.reader = synthetic_reader(*synthetic);
        return o;
    }
    if (scheme == "file") {
        o.capture.realtime = true;    // at the file's own rate, like a camera
        o.live.restart_at_end = true; // looped
    }
    try {
        live_camera probe(o); // gst_capture describes the input, or says why it cannot
    } catch (const std::invalid_argument& e) {
        throw usage_error("'" + mask_passwords(spec.url) + "': " + mask_passwords(e.what()));
    }
    return o;
}

} // namespace framepipe_examples::multicam
