// examples/handpose/settings.cpp - see settings.hpp.
#include "settings.hpp"

#include "common/cli.hpp"
#include "common/program.hpp"

namespace handpose {

namespace fe = framepipe_examples;

void add_options(CLI::App& app, settings& s) {
    app.add_option("--mode", s.mode, "pipelined (framepipe, default) or single (one loop, Option 1)")
        ->check(CLI::IsMember({"single", "pipelined"}));
    app.add_option("--source", s.source, "synthetic (default), landmarks, video or camera")
        ->check(CLI::IsMember({"synthetic", "landmarks", "video", "camera"}));
    app.add_option("--seed", s.seed, "synthetic hand: random seed (default 7)")
        ->check(fe::whole_number());
    app.add_option("--source-fps", s.source_fps, "synthetic camera frame rate (default 30)")
        ->check(fe::finite_range(1.0, 240.0));
    app.add_option("--estimate-fps", s.estimate_fps, "estimator rate (default 15)")
        ->check(fe::finite_range(1.0, 120.0));
    app.add_option("--window", s.window, "points-frames per classified window (default 30)")
        ->check(CLI::Range(2, 1000));
    app.add_option("--stride", s.stride, "new points-frames between windows (default 5)")
        ->check(CLI::Range(1, 1000));
    app.add_option("--landmarks", s.landmarks_path,
                   "replay recorded landmarks (CSV) instead of video")
        ->check(fe::non_empty());
    app.add_option("--video", s.video_path,
                   "video file, or a live stream: rtsp://, http(s):// MJPEG (needs "
                   "--landmark-model)")
        ->check(fe::non_empty());
    app.add_option("--camera", s.camera, "V4L2 camera /dev/videoN, live (needs --landmark-model)")
        ->check(CLI::Range(0, 64));
    app.add_option("--landmark-model", s.landmark_model, "ONNX landmark model for --video/--camera")
        ->check(fe::non_empty());
    app.add_option("--landmark-input-size", s.landmark_input_size,
                   "its square input size in pixels (default 224)")
        ->check(CLI::Range(8, 4096));
    app.add_option("--classifier", s.classifier_model, "ONNX classifier, input 1x<window>x21x3")
        ->check(fe::non_empty());
    app.add_option("--templates", s.templates_path, "load DTW templates (JSON)")
        ->check(fe::non_empty());
    app.add_option("--write-templates", s.write_templates_path,
                   "write the DTW templates (JSON) and exit")
        ->check(fe::non_empty());
    app.add_option("--templates-per-gesture", s.templates_per_gesture,
                   "generated templates per gesture (default 20)")
        ->check(CLI::Range(1, 1000));
    app.add_option("--write-landmarks", s.write_landmarks_path,
                   "write the estimated landmarks (CSV)")
        ->check(fe::non_empty());
    app.add_option("--classifier-extra-ms", s.classifier_extra_ms,
                   "extra CPU time per classification, in ms (default 0)")
        ->check(CLI::Range(0, 60000));
    app.add_option("--classifier-nice", s.classifier_nice,
                   "pipelined mode: nice value of the classifier's thread (default 5)")
        ->check(CLI::Range(0, 19));
    app.add_option("--duration", s.duration, "seconds to run (default 0: until the input ends or Ctrl-C)")
        ->check(fe::finite_range(0.0, 86400.0));
    app.add_flag("--no-ui", s.no_ui, "run headless (no web page)");
    app.add_option("--host", s.host, "address for the web page (default 127.0.0.1)");
    app.add_option("--port", s.port, "port for the web page (default 7002; 0 = any)")
        ->check(CLI::Range(0, 65535));
    app.add_option("--jpeg-quality", s.jpeg_quality, "JPEG quality of the page's frames (default 80)")
        ->check(CLI::Range(1, 100));
    app.add_flag("--json", s.json, "print the summary as one JSON line at exit");
    fe::add_live_options(app, s.live);
}

void check_settings(settings& s, const CLI::App& app) {
    const bool has_landmarks = app.count("--landmarks") > 0;
    const bool has_video = app.count("--video") > 0;
    const bool has_camera = app.count("--camera") > 0;
    if (static_cast<int>(has_landmarks) + static_cast<int>(has_video) + static_cast<int>(has_camera) > 1) {
        throw fe::usage_error("--landmarks, --video and --camera exclude each other");
    }
    std::string implied = "synthetic";
    if (has_landmarks) {
        implied = "landmarks";
    } else if (has_video) {
        implied = "video";
    } else if (has_camera) {
        implied = "camera";
    }
    if (app.count("--source") > 0 && s.source != implied) {
        throw fe::usage_error("--source " + s.source + ": " +
                              (implied == "synthetic" ? "needs --" + s.source
                                                      : "conflicts with the --" + implied + " flag"));
    }
    s.source = implied;
    if ((s.source == "video" || s.source == "camera") && s.landmark_model.empty()) {
        throw fe::usage_error("--" + s.source +
                              ": needs --landmark-model (the built-in estimator only knows the "
                              "synthetic hand's markers)");
    }
    if (!s.landmark_model.empty() && s.source != "video" && s.source != "camera") {
        throw fe::usage_error("--landmark-model: only with --video or --camera");
    }
    if (s.stride > s.window) {
        throw fe::usage_error("--stride: must be between 1 and --window (" + std::to_string(s.window) + ")");
    }
    if (!s.classifier_model.empty() && !s.templates_path.empty()) {
        throw fe::usage_error("--classifier and --templates exclude each other");
    }
    if (!is_live(s)) {
        fe::reject_live_flags(app, s.source == "video" ? "a file" : "the " + s.source + " input");
    }
}

bool is_live(const settings& s) {
    return s.source == "camera" || (s.source == "video" && fe::is_live_uri(s.video_path));
}

} // namespace handpose
