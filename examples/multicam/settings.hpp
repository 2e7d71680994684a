// examples/multicam/settings.hpp - framepipe-multicam's flags (docs/examples/multicam.md), and
// the checks that turn them into cameras, weights and allowed sources.
#pragma once

#include "cameras.hpp"

#include "common/live_input.hpp"
#include "common/synthetic_camera.hpp"

#include <CLI/CLI.hpp>

#include <cstddef>
#include <set>
#include <string>
#include <vector>

namespace framepipe_examples::multicam {

inline constexpr const char* program = "framepipe-multicam";

struct settings {
    std::vector<std::string> videos;     // --video [NAME=]URL, repeated
    int synthetic = 0;                   // --synthetic N
    std::string size = "640x480";        // synthetic frames
    double fps = 30;                     // synthetic frames
    std::vector<std::string> priorities; // --priority NAME=WEIGHT, repeated
    int max_active = -1;                 // -1: not given (every camera active)
    double rotate = 0;                   // seconds; 0: no rotation
    int batch = 1;
    double batch_delay = 0;              // seconds the oldest frame of a batch may wait
    double max_age = 0;                  // seconds; 0: no limit
    double ui_fps = 5;                   // per camera
    int tile_width = 320;
    int jpeg_quality = 70;
    std::string model;
    std::string classes;
    int input_size = 640;
    float confidence = 0.25F;
    float nms = 0.45F;
    int detector_threads = 1;
    bool no_ui = false;
    double duration = 0;
    bool json = false;
    std::string host = "127.0.0.1";
    int port = 7002;
    std::size_t max_clients = 16;
    std::string control_token;
    std::string allow_sources = "rtsp,http,https,synthetic";
    framepipe_examples::live_settings live; // --reconnect-*, --stall-timeout, --max-attempts, ...
};

// Declares every flag of `s` on `app`.
void add_options(CLI::App& app, settings& s);

// The cameras of the command line: each --video (named NAME, or cam<k> by position), then
// --synthetic N (cam<k> for the following positions), weights from --priority. Throws
// usage_error (one line naming the flag) for a duplicate name, a bad name, a --priority for no
// camera or with a weight that is not a whole number >= 1, no camera at all.
[[nodiscard]] std::vector<camera_spec> cameras_of(const settings& s);

// The schemes a source given over HTTP may use: --allow-sources parsed. Known: rtsp (also rtsps,
// rtspt), http, https, synthetic, file (paths and file://), v4l2. Throws usage_error naming the
// flag for an unknown one.
[[nodiscard]] std::set<std::string> allowed_schemes(const std::string& list);

// The scheme of a camera URL as --allow-sources names it ("rtsp", "file", ...), whatever the
// URL's case ("RTSP://..." is "rtsp"); "" when it is none of the known ones.
[[nodiscard]] std::string scheme_of(const std::string& url);

// A camera's live_camera_options from its URL (see cameras.hpp's make_options): a synthetic
// camera (--size, --fps, its number drawn on it), a file (played in real time, looped), or a live
// input (rtsp, http(s), v4l2) with the live-input flags. Throws usage_error naming the URL.
[[nodiscard]] live_camera_options camera_options(const settings& s, const camera_spec& spec,
                                                 int number);

// --size as synthetic options (with --fps). Throws usage_error naming the flag.
[[nodiscard]] synthetic_options synthetic_defaults(const settings& s);

} // namespace framepipe_examples::multicam
