// examples/handpose/settings.hpp - framepipe-handpose's flags (see docs/examples/handpose.md).
#pragma once

#include "common/live_input.hpp"

#include <CLI/CLI.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace handpose {

inline constexpr const char* program = "framepipe-handpose";

struct settings {
    std::string mode = "pipelined";
    std::string source = "synthetic"; // synthetic, landmarks, video or camera (check_settings)
    std::uint64_t seed = 7;
    double source_fps = 30;
    double estimate_fps = 15;
    std::size_t window = 30;
    std::size_t stride = 5;
    std::string landmarks_path;
    std::string video_path;
    int camera = -1;
    std::string landmark_model;
    int landmark_input_size = 224;
    std::string classifier_model;
    std::string templates_path;
    std::string write_templates_path;
    std::size_t templates_per_gesture = 20;
    std::string write_landmarks_path;
    int classifier_extra_ms = 0;
    int classifier_nice = 5;
    double duration = 0;
    bool no_ui = false;
    std::string host = "127.0.0.1";
    int port = 7002;
    int jpeg_quality = 80;
    bool json = false;
    framepipe_examples::live_settings live; // --reconnect-*, --stall-timeout, ... (live inputs)
};

// Declares every flag of `s` on `app`.
void add_options(CLI::App& app, settings& s);

// The checks that need more than one flag, after parsing; sets s.source from the input flags.
// Throws framepipe_examples::usage_error naming the flags.
void check_settings(settings& s, const CLI::App& app);

// Whether the input is live (--camera, or --video rtsp:// / http(s)://): read by
// framepipe_examples::live_camera. After check_settings().
[[nodiscard]] bool is_live(const settings& s);

} // namespace handpose
