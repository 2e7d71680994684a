// examples/detection/settings.hpp - framepipe-detect's flags (see docs/examples/detection.md).
#pragma once

#include "common/live_input.hpp"

#include <CLI/CLI.hpp>

#include <cstddef>
#include <string>

namespace framepipe_examples::detection {

inline constexpr const char* program = "framepipe-detect";
inline constexpr const char* default_video = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

struct settings {
    std::string video = default_video;
    int camera = -1;
    std::string source_fps = "30";
    bool loop = false;
    double ui_fps = 15;
    int jpeg_quality = 80;
    double detect_fps = 5; // 0: flat out
    int detector_threads = 1;
    std::string model;
    std::string weights;
    std::string classes;
    int input_size = 640;
    float confidence = 0.25F;
    float nms = 0.45F;
    std::string mode = "pipelined";
    bool no_ui = false;
    double duration = 0;
    bool json = false;
    std::string host = "127.0.0.1";
    int port = 7001;
    std::size_t max_clients = 16;
    std::string dot; // write the graph (Graphviz DOT, with the final counters) here at exit
    std::string sampling = "none"; // which frames the detector gets (sampling.hpp)
    std::string motion_mask;       // --motion-mask "x,y x,y x,y ..." (motion, cascade)
    framepipe_examples::live_settings live; // --reconnect-*, --stall-timeout, ... (live inputs)
};

// Declares every flag of `s` on `app`.
void add_options(CLI::App& app, settings& s);

// --source-fps: a rate in (0, 1000], or 0 for "native" (the file's own rate). Throws
// framepipe_examples::usage_error naming the flag.
[[nodiscard]] double parse_source_fps(const std::string& s);

} // namespace framepipe_examples::detection
