// framepipe-handpose: the second source document's hand-gesture pipeline, rebuilt on framepipe.
//
// A hand-pose estimator turns frames into 21 hand points at 15 fps; a slow classifier labels
// the last 30 of them. --mode pipelined (default) runs this graph:
//
//   [camera 30 fps]  synthetic hand, or a --video file (common/video_source: pooled, stamped
//         |          frames), or a live input: --camera, --video rtsp:// or http(s)://
//         |          (common/live_camera: GStreamer under live_source, read as fast as it
//         |          delivers, reconnected with backoff)
//   broadcaster "frames"
//         |
//   subscription "estimator" (capacity 1, max 15 Hz: the newest frame, 15 a second; never a
//         |                  frame of an older connection after a newer one)
//         |
//   [estimator]  colour markers -> 21 x 3 points (or --landmark-model through cv::dnn)
//         |      ([landmarks] replays --landmarks file.csv here instead, at 15 Hz)
//   broadcaster "estimates"
//         |                                   |
//   subscription "display" (cap 1)      subscription "to_window" (cap 8)
//         |                                   |
//   [display] skeleton, gesture,        [windower]
//         |   JPEG                            |
//   broadcaster "jpeg" -> web page      sliding_window "hands" (30 points-frames, one every 5)
//         ^                                   |
//         +------ latest result ------- [classifier]  DTW nearest neighbour (or --classifier
//                                                      model.onnx) + --classifier-extra-ms of
//                                                      CPU, at nice --classifier-nice (5)
//
// The display never waits for the classifier: a slow classification only makes windows older,
// and a window it cannot take in time is dropped (counted). --mode single is the source
// document's Option 1: one loop (one source stage, "single-loop") that grabs the newest frame,
// estimates, classifies every `stride` frames, and then displays, so the video stalls while the
// classifier runs. (With a live input the camera reads on its own threads, and "single-loop" is
// a stage that takes the newest frame from its subscription.)
//
// Web page on 127.0.0.1:7002 (common/web_ui): the frames with the skeleton, the gesture and its
// confidence, the age of the classified window, live metrics; also /metrics, /stats.json.
// Flags: see --help and docs/examples/handpose.md. The input is in frame_source.hpp, the models
// in models.hpp, the stages' steps in stages.hpp, the summary in summary.hpp.
#include "frame_source.hpp"
#include "landmarks_csv.hpp"
#include "models.hpp"
#include "page.hpp"
#include "settings.hpp"
#include "stages.hpp"
#include "summary.hpp"

#include "common/cli.hpp"
#include "common/live_camera.hpp"
#include "common/live_input.hpp"
#include "common/program.hpp"
#include "common/run_loop.hpp"
#include "common/web_ui.hpp"

#include <framepipe/framepipe.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core/utils/logger.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace {

using namespace handpose;
namespace fe = framepipe_examples;

// The classifier thread's nice value: --classifier-nice, or the program's own when that is
// higher already (the slow model is background work: it never runs ahead of the estimator and
// the display, and lowering a nice value would need privileges).
int background_nice(int requested) {
    errno = 0;
    const int own = ::getpriority(PRIO_PROCESS, 0); // Linux: the calling (main) thread's
    return errno == 0 ? std::max(requested, own) : requested;
}

int run(const settings& s) {
    const bool pipelined = s.mode == "pipelined";
    // Bad input is found here, before anything runs: models, templates, files, the port.
    classifier cls(s);
    if (!s.write_templates_path.empty()) {
        if (cls.dtw() == nullptr) {
            throw fe::usage_error("--write-templates: the ONNX classifier has no templates");
        }
        cls.dtw()->save(s.write_templates_path);
        return 0;
    }
    std::optional<estimator> est;
    std::optional<frame_source> source;
    std::optional<fe::live_camera> camera;
    std::vector<recorded_frame> recorded;
    std::FILE* console = s.json ? stderr : stdout;
    if (s.source == "landmarks") {
        recorded = read_landmarks_csv(s.landmarks_path);
    } else {
        est.emplace(s); // the model first: a bad model is reported before a bad video
        if (is_live(s)) {
            // Checked now (URL, flags); it connects once the pipeline runs, and keeps trying
            // while the page serves. Pooled frames: the subscriptions, the estimates that carry
            // their frame (up to 8 in "to_window") and the stages at work.
            camera.emplace(fe::live_camera_options_from(
                s.live, s.source == "camera" ? "" : s.video_path,
                s.source == "camera" ? s.camera : -1, 16));
            camera->on_event([console](const std::string& line) {
                std::fprintf(console, "%s: %s\n", program, line.c_str());
                std::fflush(console);
            });
        } else {
            source.emplace(s);
        }
    }
    std::optional<landmarks_csv_writer> csv_out;
    if (!s.write_landmarks_path.empty()) {
        csv_out.emplace(s.write_landmarks_path);
    }
    // One estimator thread at a time, each stage on its own thread: OpenCV's own worker threads
    // would only compete with the pipeline's on a small machine.
    cv::setNumThreads(1);

    // The channels of the drawing (declared before the pipeline: its destructor closes them).
    framepipe::broadcaster<fe::video_frame> frames;
    framepipe::broadcaster<estimate_item> estimates;
    framepipe::broadcaster<fe::encoded_frame> jpegs;
    framepipe::sliding_window<hand_item> hands(s.window, s.stride);
    auto to_estimator = frames.subscribe({.capacity = 1,
                                          .max_rate_hz = s.estimate_fps,
                                          .drop_older_epochs = true,
                                          .name = "estimator"});
    std::optional<framepipe::subscription<fe::video_frame>> to_single; // single mode, live input
    if (!pipelined && camera) {
        to_single =
            frames.subscribe({.capacity = 1, .drop_older_epochs = true, .name = "single-loop"});
    }
    auto to_display = estimates.subscribe({.capacity = 1, .name = "display"});
    auto to_window = estimates.subscribe({.capacity = 8, .name = "to_window"});
    std::optional<framepipe::subscription<fe::encoded_frame>> jpeg_sink_in; // --no-ui
    if (s.no_ui) {
        jpeg_sink_in = jpegs.subscribe({.capacity = 1, .name = "no-ui"});
    }

    meters m;
    fe::jpeg_encoder jpeg({.quality = s.jpeg_quality, .pool_size = 6});
    display show(m, jpeg);
    std::vector<hand_points> scratch;
    // One frame's estimate (or the next recorded one), written to the CSV if asked.
    auto estimate_of = [&](const frame_ptr& f) -> estimate_item {
        m.estimator_epochs.see(f->epoch);
        estimate e{f, (*est)(f->value)};
        if (source) {
            e.hand.truth = source->truth(f->seq); // carried along for accuracy, never looked at
        }
        m.estimated.fetch_add(1, std::memory_order_relaxed);
        m.joints_found.fetch_add(e.hand.joints_found, std::memory_order_relaxed);
        if (csv_out) {
            csv_out->write(f->seq, e.hand);
        }
        return framepipe::stamp(std::move(e), f->seq, f->captured, f->epoch);
    };
    std::size_t next_row = 0;
    auto next_recorded = [&]() -> std::optional<estimate_item> {
        if (next_row == recorded.size()) {
            return std::nullopt; // the end of the file: the graph drains and ends
        }
        const auto& r = recorded[next_row++];
        m.source_frames.fetch_add(1, std::memory_order_relaxed);
        m.estimated.fetch_add(1, std::memory_order_relaxed);
        m.joints_found.fetch_add(r.hand.joints_found, std::memory_order_relaxed);
        if (csv_out) {
            csv_out->write(r.frame, r.hand);
        }
        return framepipe::stamp(estimate{nullptr, r.hand}, r.frame);
    };

    framepipe::pipeline p(std::string("handpose-") + s.mode);
    fe::run_loop run(p, {.duration_s = s.duration}); // until --duration, the input's end, or Ctrl-C
    p.channel(jpegs, "jpeg");
    if (pipelined) {
        p.channel(estimates, "estimates").channel(hands, "hands");
        if (camera) {
            p.channel(frames, "frames");
            p.source("camera", frames, *camera); // its own threads, never paced by a reader
            p.stage("estimator", to_estimator, estimates,
                    [&](const frame_ptr& f) { return estimate_of(f); });
        } else if (source) {
            p.channel(frames, "frames");
            p.source(
                "camera", frames,
                [&, seq = std::uint64_t{0}](framepipe::stage_context& ctx) mutable {
                    auto f = source->next(ctx.stop_token(), seq++); // nullptr: the video ended
                    if (f) {
                        m.source_frames.fetch_add(1, std::memory_order_relaxed);
                    }
                    return f;
                },
                {.max_rate_hz = source->pace_hz()});
            p.stage("estimator", to_estimator, estimates, [&](const frame_ptr& f) { return estimate_of(f); });
        } else {
            p.source("landmarks", estimates, next_recorded, {.max_rate_hz = s.estimate_fps});
        }
        p.stage("display", to_display, jpegs,
                [&](const std::shared_ptr<const estimate_item>& e) { return show(*e); });
        p.stage("windower", to_window, hands, [](const std::shared_ptr<const estimate_item>& e) {
            return framepipe::stamp(e->value.hand, e->seq, e->captured);
        });
        p.sink(
            "classifier", hands,
            [&](const framepipe::window<hand_item>& w) { classify_window(w, cls, m, scratch); },
            {.nice = background_nice(s.classifier_nice)});
    } else if (camera) {
        // Option 1 on a live input: the camera reads on its own threads; the loop takes the
        // newest frame, estimates, classifies when a window is ready (the video waits), displays.
        p.channel(frames, "frames");
        p.source("camera", frames, *camera);
        p.stage(
            "single-loop", *to_single, jpegs,
            [&](const frame_ptr& f) -> std::shared_ptr<const fe::encoded_frame> {
                const auto e = estimate_of(f);
                (void)hands.push(framepipe::stamp(e.value.hand, e.seq, e.captured));
                if (auto w = hands.try_pop()) {
                    classify_window(*w, cls, m, scratch); // the video waits here
                }
                return show(e);
            },
            {.max_rate_hz = s.estimate_fps});
    } else {
        // Option 1: grab the newest frame, estimate, classify when a window is ready (the video
        // waits), display. The same sliding_window block, filled and emptied by the one loop, so
        // both modes classify the same windows (one every `stride` estimates).
        p.source(
            "single-loop", jpegs,
            [&](framepipe::stage_context& ctx) -> std::shared_ptr<const fe::encoded_frame> {
                std::optional<estimate_item> e;
                if (source) {
                    // The synthetic camera ran on while we were busy: take its newest frame.
                    const auto newest = static_cast<std::uint64_t>(run.seconds() * s.source_fps);
                    const auto f = source->next(ctx.stop_token(), newest);
                    if (!f) {
                        return nullptr; // the end of the video
                    }
                    m.source_frames.store(s.source == "synthetic" ? newest + 1 : f->seq + 1,
                                          std::memory_order_relaxed);
                    e = estimate_of(f);
                } else if (!(e = next_recorded())) {
                    return nullptr;
                }
                (void)hands.push(framepipe::stamp(e->value.hand, e->seq, e->captured));
                if (auto w = hands.try_pop()) {
                    classify_window(*w, cls, m, scratch); // the video waits here
                }
                return show(*e);
            },
            {.max_rate_hz = s.estimate_fps});
    }
    if (s.no_ui) {
        // Nobody watches: a sink takes the JPEGs so that the display does its full work.
        p.sink("no-ui", *jpeg_sink_in, [](const std::shared_ptr<const fe::encoded_frame>&) {});
    }

    const run_parts parts{s,
                          camera   ? camera->description()
                          : source ? source->description()
                                   : "landmarks " + s.landmarks_path,
                          cls.name(),
                          m,
                          jpeg,
                          hands,
                          camera ? &*camera : nullptr};
    auto stats = [&] { return summary(parts, p.snapshot(), run.seconds()); };
    std::optional<fe::web_server> server;
    if (!s.no_ui) {
        server.emplace(fe::web_ui_options({.host = s.host,
                                           .port = static_cast<unsigned short>(s.port),
                                           .page_html = page_html,
                                           .log_name = program},
                                          p, stats),
                       jpegs);
        server->start();
        fe::announce(console, program, s.host, *server);
    }
    std::fprintf(console, "%s: %s, %s mode, classifier %s\n", program, parts.input.c_str(),
                 s.mode.c_str(), cls.name().c_str());
    std::fflush(console);

    nlohmann::json j;
    // A stage's failure (a model failing on a frame; a live input that failed --max-attempts
    // times in a row, named with its last error) is rethrown here: exit 2, one line.
    fe::run_result r;
    try {
        r = run.run([&](fe::run_end) {
            j = stats(); // the rates over the run, before the orderly stop drains what is buffered
            if (server) {
                server->stop();
            }
        });
    } catch (const framepipe::stage_error&) {
        if (camera) {
            if (const auto why = camera->failure()) {
                throw std::runtime_error(*why);
            }
        }
        throw;
    }
    if (!r.stop.clean) {
        throw std::runtime_error("stages did not stop within 10 s");
    }
    if (csv_out) {
        csv_out->close();
    }
    j.erase("stages"); // live figures for the page; the summary keeps the totals
    j.erase("channels");
    std::printf("%s\n", fe::json_text(j, s.json ? -1 : 2).c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"framepipe-handpose: a hand-pose estimator at 15 fps and a slow gesture "
                 "classifier over a 30-frame window, without stalling the video"};
    settings s;
    add_options(app, s);
    if (const auto code = fe::parse_command_line(app, argc, argv, program)) {
        return *code;
    }
    // Errors reach the user as one line from us, not as OpenCV's or FFmpeg's own log lines
    // (cv::dnn logs a refused input shape at error level, so even those are silenced), unless
    // the user asks for them with OPENCV_LOG_LEVEL.
    fe::quiet_video_logs();
    if (std::getenv("OPENCV_LOG_LEVEL") == nullptr) {
        cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    }
    return fe::run_main(program, [&] {
        check_settings(s, app);
        return run(s);
    });
}
