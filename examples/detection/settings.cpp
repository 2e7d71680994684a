// examples/detection/settings.cpp - see settings.hpp.
#include "settings.hpp"

#include "common/cli.hpp"
#include "common/program.hpp"

#include <exception>

namespace framepipe_examples::detection {

void add_options(CLI::App& app, settings& s) {
    app.add_option("--video", s.video,
                   "video file (a path or file://), or a live stream: rtsp://, http(s):// MJPEG "
                   "(default: opencv-doc's vtest.avi)");
    app.add_option("--camera", s.camera, "V4L2 camera /dev/videoN instead of --video (live)")
        ->check(CLI::Range(0, 63));
    app.add_option("--source-fps", s.source_fps,
                   "files: read pace in fps, or 'native' (default 30); live inputs are read as "
                   "fast as they deliver");
    app.add_flag("--loop", s.loop, "files: restart at the end");
    app.add_option("--ui-fps", s.ui_fps, "frames per second sent to the UI")
        ->check(finite_range(0.1, 120.0));
    app.add_option("--jpeg-quality", s.jpeg_quality, "JPEG quality 1..100")->check(CLI::Range(1, 100));
    app.add_option("--detect-fps", s.detect_fps, "detector rate cap; 0 = as fast as it can")
        ->check(finite_range(0.0, 1000.0));
    app.add_option("--detector-threads", s.detector_threads, "OpenCV threads for the detector")
        ->check(CLI::Range(1, 64));
    app.add_option("--model", s.model, "YOLOv5/v8 .onnx, or Darknet .cfg (with --weights); default HOG");
    app.add_option("--weights", s.weights, "Darknet .weights");
    app.add_option("--classes", s.classes, "class names, one per line");
    app.add_option("--input-size", s.input_size, "ONNX input size (square)")->check(CLI::Range(32, 4096));
    app.add_option("--confidence", s.confidence, "confidence threshold")
        ->check(finite_range(0.0, 1.0));
    app.add_option("--nms", s.nms, "NMS IoU threshold")->check(finite_range(0.0, 1.0));
    app.add_option("--mode", s.mode, "pipelined or inline")->check(CLI::IsMember({"pipelined", "inline"}));
    app.add_flag("--no-ui", s.no_ui, "no web server (the UI stage still encodes, into a sink)");
    app.add_option("--duration", s.duration, "seconds to run (default: until the end or Ctrl-C)")
        ->check(finite_range(0.0, 1e7));
    app.add_flag("--json", s.json, "print one JSON summary object at exit");
    app.add_option("--host", s.host, "address to serve on (default 127.0.0.1)");
    app.add_option("--port", s.port, "port to serve on (default 7001; 0 = any)")->check(CLI::Range(0, 65535));
    app.add_option("--dot", s.dot, "write the pipeline graph (Graphviz DOT) to this file at exit");
    app.add_option("--max-clients", s.max_clients, "websocket + MJPEG clients at once")
        ->check(CLI::Range(1, 256));
    app.add_option("--sampling", s.sampling,
                   "which frames the detector gets: none, every-n:N, keyframes, motion[:T], "
                   "scene[:D], adaptive, cascade[:T] (docs/sampling.md)");
    app.add_option("--motion-mask", s.motion_mask,
                   "motion and cascade: a polygon 'x,y x,y x,y ...' (frame pixels) where motion "
                   "is ignored");
    add_live_options(app, s.live);
}

double parse_source_fps(const std::string& s) {
    if (s == "native") {
        return 0;
    }
    try {
        std::size_t used = 0;
        const double v = std::stod(s, &used);
        if (used == s.size() && v > 0 && v <= 1000) {
            return v;
        }
    } catch (const std::exception&) {
    }
    throw usage_error("--source-fps: expected a rate in (0, 1000] or 'native', got '" + s + "'");
}

} // namespace framepipe_examples::detection
