// framepipe-detect: the first source document's object-detection pipeline on framepipe, with a
// live web UI.
//
//   --mode pipelined (default)
//
//   [camera] cv::VideoCapture, paced to --source-fps (30), pooled stamped frames
//       |
//   broadcaster "frames" -------------------------------+
//       |                                               |
//   subscription "ui"                            subscription "detector"
//   capacity 1, max --ui-fps (15)                capacity 1 (a latest slot)
//       |                                               |
//   [ui] draws the newest result,                [detector] HOG / YOLO (ONNX) / Darknet, paced
//        encodes JPEG (--jpeg-quality)                to --detect-fps (5; 0 = flat out): waits
//       |      ^                                        its turn, then takes the newest frame
//       |      +------------- peek ------------- latest_slot "results"
//       |                                        (boxes + the seq and time of their frame)
//   broadcaster "jpeg"
//       |-- ws-N: one subscription per browser (capacity 1): GET /ws
//       |-- mjpeg-N: one per MJPEG client: GET /video.mjpg
//       +-- "ui-sink" (--no-ui: counts what a browser would have received)
//
//   --mode inline: the source document's single-threaded baseline.
//
//   [inline] read -> detect -> draw + encode -> broadcaster "jpeg"     (one thread)
//            the UI can only go as fast as the detector.
//
//   --publish / --worker iceoryx|nats://...: the same graph split across processes (remote.hpp).
//
// The console prints each inference time. --json prints one JSON summary at exit (then the
// inference lines go to stderr, so that stdout is exactly that object). The steps of the stages
// are in stages.hpp, the summary in summary.hpp, the flags in settings.hpp.
#include "page.hpp"
#include "remote.hpp"
#include "settings.hpp"
#include "stages.hpp"
#include "summary.hpp"

#include "common/cli.hpp"
#include "common/program.hpp"
#include "common/run_loop.hpp"
#include "common/video_source.hpp"
#include "common/web_ui.hpp"

#include <framepipe/framepipe.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace {

namespace fe = framepipe_examples;
namespace det = framepipe_examples::detection;
using det::program;
using frame_ptr = std::shared_ptr<const fe::video_frame>;

int run(const det::settings& s) {
    const double source_fps = det::parse_source_fps(s.source_fps);
    if (s.camera >= 0 && s.loop) {
        throw fe::usage_error("--loop: only for files, not cameras");
    }
    cv::setNumThreads(s.detector_threads);
    const bool pipelined = s.mode == "pipelined";

    // Bad input is found here, before anything runs: the video, the model, the port.
    fe::video_source video({.path = s.video,
                            .camera = s.camera,
                            .fps = source_fps > 0 ? std::optional<double>(source_fps) : std::nullopt,
                            .loop = s.loop});
    auto detector = det::make_detector({.model = s.model,
                                        .weights = s.weights,
                                        .classes = s.classes,
                                        .input_size = s.input_size,
                                        .decode = {.confidence = s.confidence, .nms_iou = s.nms}});
    std::FILE* console = s.json ? stderr : stdout;

    // The channels of the drawing (declared before the pipeline: its destructor closes them).
    framepipe::broadcaster<fe::video_frame> frames;
    framepipe::broadcaster<fe::encoded_frame> jpegs;
    framepipe::latest_slot<det::result> results;
    auto ui_in = frames.subscribe({.capacity = 1, .max_rate_hz = s.ui_fps, .name = "ui"});
    auto det_in = frames.subscribe({.capacity = 1, .name = "detector"});
    std::optional<framepipe::subscription<fe::encoded_frame>> sink_in;
    if (s.no_ui) {
        sink_in = jpegs.subscribe({.capacity = 1, .name = "ui-sink"});
    }

    det::meters m;
    fe::jpeg_encoder jpeg({.quality = s.jpeg_quality, .pool_size = 4 + 2 * s.max_clients});
    det::detect_step detect(*detector, m, console);
    det::ui_step render(jpeg);
    // nullptr at the end of the input (or on stop): the source ends, the graph drains.
    auto read = [&video](framepipe::stage_context& ctx) { return video.next(ctx.stop_token()); };

    framepipe::pipeline p(std::string("detect-") + s.mode);
    p.channel(jpegs, "jpeg");
    if (pipelined) {
        p.channel(frames, "frames").channel(results, "results");
        p.source("camera", frames, read, {.max_rate_hz = video.pace_hz()});
        p.stage("detector", det_in, results, [&](const frame_ptr& f) { return detect(*f); },
                {.max_rate_hz = s.detect_fps});
        p.stage("ui", ui_in, jpegs, [&](const frame_ptr& f) { return render(*f, results.peek()); });
    } else {
        // One thread keeps both rates itself (--detect-fps 0: every frame is detected).
        p.source(
            "inline",
            [&, last = std::optional<det::result>{},
             detect_rate = s.detect_fps > 0 ? std::optional<framepipe::rate_limiter>(s.detect_fps)
                                            : std::nullopt,
             ui_rate = framepipe::rate_limiter(s.ui_fps)](framepipe::stage_context& ctx) mutable {
                const auto f = read(ctx);
                if (!f) {
                    return false;
                }
                if (!detect_rate || detect_rate->try_acquire()) {
                    last = detect(*f);
                }
                if (ui_rate.try_acquire()) {
                    (void)jpegs.publish(render(*f, last));
                }
                return true;
            },
            {.max_rate_hz = video.pace_hz()});
    }
    if (sink_in) {
        p.sink("ui-sink", *sink_in, [](const std::shared_ptr<const fe::encoded_frame>&) {});
    }

    fe::run_loop run(p, {.duration_s = s.duration}); // until the duration, the end, or Ctrl-C
    const det::run_parts parts{s, video, *detector, m, jpeg};
    auto stats = [&] { return det::summary(parts, p.snapshot(), run.seconds()); };
    std::optional<fe::web_server> server;
    if (!s.no_ui) {
        server.emplace(fe::web_ui_options({.host = s.host,
                                           .port = static_cast<unsigned short>(s.port),
                                           .page_html = det::page_html,
                                           .max_streams = s.max_clients,
                                           .log_name = program},
                                          p, stats),
                       jpegs);
        server->start();
        fe::announce(console, program, s.host, *server);
    }
    std::fprintf(console, "%s: %s, %s mode, detector: %s\n", program, video.description().c_str(),
                 s.mode.c_str(), detector->description().c_str());
    std::fflush(console);

    nlohmann::json j;
    fe::run_result r;
    try {
        r = run.run([&](fe::run_end) {
            j = stats(); // the rates over the run, before the drain
            if (server) {
                server->stop();
            }
        });
    } catch (const framepipe::stage_error& e) {
        fe::print_error(program, e.what());
        return 1;
    }
    if (!r.stop.clean) {
        fe::print_error(program, "stages did not stop within 10 s");
    }
    // Final counts after the drain.
    const auto after = stats();
    for (const char* key : {"frames_read", "corrupt_frames", "loops", "detections", "ui_frames", "jpeg_kb_mean",
                            "dropped_for_detector", "dropped_for_ui", "dropped_for_detector_by_reason",
                            "dropped_for_ui_by_reason", "peak_rss_mb", "stages", "channels"}) {
        j[key] = after[key];
    }
    if (!s.dot.empty()) {
        std::ofstream(s.dot) << framepipe::to_dot(p.snapshot());
    }
    const std::string end = video.end_reason();
    j["end_reason"] = end.empty() ? (r.end == fe::run_end::signal ? "signal" : "duration") : end;
    if (s.json) {
        std::printf("%s\n", j.dump().c_str());
    } else {
        j.erase("stages");
        j.erase("channels");
        std::printf("\n%s\n", j.dump(2).c_str());
    }
    std::fflush(stdout);
    if (s.camera >= 0 || video.description().rfind("stream", 0) == 0) {
        if (!end.empty() && end != "stopped") {
            fe::print_error(program, end);
            return 1;
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
#ifdef __GLIBC__
    // Frame-sized buffers (1.3 MB for vtest.avi) that OpenCV and FFmpeg allocate and free inside
    // their calls: with glibc's default, freeing one mmap'd block raises the mmap threshold, so
    // later ones come from the heap, where fragmentation keeps them resident (RSS then steps up
    // by a frame now and then over a long run). A fixed threshold keeps them mmap'd: returned to
    // the OS on free.
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
    fe::quiet_video_logs();
    CLI::App app{"framepipe-detect: object detection on a video, with a live web UI"};
    det::settings s;
    det::add_options(app, s);
    det::remote_settings remote;
    det::add_remote_options(app, remote);
    if (const auto code = fe::parse_command_line(app, argc, argv, program)) {
        return *code;
    }
    return fe::run_main(program,
                        [&] { return remote.active() ? det::run_remote(s, remote) : run(s); });
}
