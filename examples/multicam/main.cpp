// framepipe-multicam: many cameras, one detector. Each camera is a live source with its own
// broadcaster; the detector takes the newest frame of each camera in weighted turns, in batches;
// cameras come and go while it runs; a web page shows them all.
//
//   camera "cam1" ... camera "camN"     live_camera under framepipe::live_source: rtsp://,
//      |               |                http(s):// MJPEG, v4l2://, a file in real time, or
//      |               |                synthetic frames; reconnected with backoff (cameras.hpp)
//   broadcaster "NAME/frames", one per camera
//      |-------.
//      |    subscription "NAME/detector": capacity 1, the newest frame ---------------+
//   subscription "NAME/ui": capacity 1, at most --ui-fps                             |
//      |                                                                              |
//   selector "ui frames": round robin                 batcher "batches": weighted turns
//      |                                              (--priority NAME=W), up to --batch
//   [ui] at 2 x --ui-fps, every frame that came       frames, one per camera, --batch-delay
//        since: scaled to --tile-width, its                                           |
//        newest boxes, encoded (stages.hpp) <-- newest result per camera --  [detector] HOG
//      |                                                                  frame by frame, or
//   broadcaster "jpeg" --> the page's grid (GET /ws), /video.mjpg       YOLO ONNX on the batch
//
//   POST /cameras, DELETE /cameras/NAME (control.hpp): cameras added and removed at run time.
//   --max-active K: the others are paused (cameras.hpp says how they rotate).
//
// --json prints one JSON summary at exit (then status lines go to stderr). The flags are in
// settings.hpp, the figures in summary.hpp.
#include "cameras.hpp"
#include "control.hpp"
#include "page.hpp"
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

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

namespace {

namespace fe = framepipe_examples;
namespace mc = framepipe_examples::multicam;
using mc::program;
using namespace std::chrono_literals;

std::chrono::nanoseconds secs(double s) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(s));
}

// What a stage's exception said (a camera's failure line).
std::string cause_of(const framepipe::stage_error& e) {
    try {
        e.rethrow_cause();
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
    }
    return e.what();
}

int run(const mc::settings& s, const CLI::App& app) {
    cv::setNumThreads(s.detector_threads);
    std::FILE* console = s.json ? stderr : stdout;
    const auto say = [console](const std::string& line) {
        std::fprintf(console, "%s: %s\n", program, line.c_str());
        std::fflush(console);
    };

    // Bad input is found here, before anything runs: the cameras and weights, the flags, the
    // model and its batch, the port.
    const auto specs = mc::cameras_of(s);
    if (app.count("--max-active") > 0 && s.max_active < 1) {
        throw fe::usage_error("--max-active: must be at least 1, got " + std::to_string(s.max_active));
    }
    if (s.rotate > 0 && app.count("--max-active") == 0) {
        throw fe::usage_error("--rotate: only with --max-active (nothing is paused otherwise)");
    }
    const auto allowed = mc::allowed_schemes(s.allow_sources);
    if (!s.no_ui && s.host.rfind("127.", 0) != 0 && s.host != "::1" && s.control_token.empty()) {
        throw fe::usage_error("--control-token: required when serving beyond loopback (--host " +
                              s.host + "): anyone who reaches the port could open URLs");
    }
    (void)mc::synthetic_defaults(s); // --size
    auto detector = fe::detection::make_detector({.model = s.model,
                                                  .classes = s.classes,
                                                  .input_size = s.input_size,
                                                  .batch = s.batch,
                                                  .decode = {.confidence = s.confidence,
                                                             .nms_iou = s.nms}});

    // The channels of the drawing, declared before the pipeline (its destructor closes them)
    // and the cameras (their sessions feed them).
    mc::frame_batcher batches({.max_size = static_cast<std::size_t>(s.batch),
                               .max_delay = secs(s.batch_delay),
                               .max_per_source = 1,
                               .staleness = s.max_age > 0 ? std::optional(secs(s.max_age))
                                                          : std::nullopt,
                               .policy = framepipe::select_policy::weighted});
    mc::frame_selector ui_frames;
    framepipe::broadcaster<fe::encoded_frame> jpegs;
    fe::jpeg_encoder jpeg({.quality = s.jpeg_quality, .pool_size = 4 + 2 * s.max_clients});
    framepipe::pipeline p("multicam");
    mc::camera_set cameras(p, batches, s.no_ui ? nullptr : &ui_frames,
                           {.ui_fps = s.ui_fps,
                            .max_active = s.max_active > 0 ? static_cast<std::size_t>(s.max_active) : 0,
                            .rotate = secs(s.rotate),
                            .make_options = [&s](const mc::camera_spec& spec, int number) {
                                return mc::camera_options(s, spec, number);
                            },
                            .log = say});
    mc::detect_step detect(*detector, cameras);
    mc::ui_step draw(jpeg, cameras, s.tile_width);

    p.channel(batches, "batches");
    p.sink("detector", batches, [&](const framepipe::batch<mc::frame_ptr>& b) { detect(b); });
    if (!s.no_ui) {
        // The UI refreshes at twice --ui-fps and draws, each time, every camera's frame that
        // came since (try_pop until nothing is ready). A selector's pop scans the cameras for a
        // ready one, so popping each frame as it comes would cost a scan per frame (few cameras
        // are ready at once); a refresh costs one scan for all the frames it finds.
        p.source(
            "ui",
            [&] {
                while (auto f = ui_frames.try_pop()) {
                    if (auto encoded = draw(*f)) {
                        (void)jpegs.publish(std::move(*encoded));
                    }
                }
            },
            {.max_rate_hz = 2 * s.ui_fps});
    }
    for (const auto& spec : specs) {
        cameras.add(spec, true); // a camera that never connects (--max-attempts): exit 2
    }

    fe::run_loop run(p, {.duration_s = s.duration,
                         // Rotations are checked on ticks: every min(1 s, --rotate), but not
                         // more often than every 0.1 s.
                         .tick_period = s.rotate > 0 ? std::clamp(secs(s.rotate),
                                                                  std::chrono::nanoseconds(100ms),
                                                                  std::chrono::nanoseconds(1s))
                                                     : std::chrono::nanoseconds(1s),
                         .on_tick = [&](std::uint64_t) { cameras.tick(); }});
    const mc::run_parts parts{s, cameras, batches, *detector, detect, jpeg};
    auto stats = [&] { return mc::summary(parts, p.snapshot(), run.seconds()); };
    mc::control_context control{s, cameras, allowed};
    std::optional<fe::web_server> server;
    if (!s.no_ui) {
        auto o = fe::web_ui_options({.host = s.host,
                                     .port = static_cast<unsigned short>(s.port),
                                     .page_html = mc::page_html,
                                     .max_streams = s.max_clients,
                                     .log_name = program},
                                    p, stats);
        o.metrics_text = [&] { return mc::metrics_text(parts, p.snapshot()); };
        o.control = [&control](const fe::control_request& r, std::stop_token stop) {
            return mc::handle_control(control, r, std::move(stop));
        };
        o.control_token = s.control_token;
        server.emplace(std::move(o), jpegs);
        server->start();
        fe::announce(console, program, s.host, *server);
    }
    say(std::to_string(specs.size()) + " cameras, detector: " + detector->description());

    nlohmann::json j;
    fe::run_result r;
    try {
        r = run.run([&](fe::run_end) {
            j = stats(); // the run's figures, before the cameras stop
            if (server) {
                server->stop();
            }
            cameras.stop_all(); // every camera's subscriptions close ...
            batches.close();    // ... and the detector and the UI end once they finished
            ui_frames.close();
        });
    } catch (const framepipe::stage_error& e) {
        if (e.stage().rfind("camera/", 0) == 0) {
            fe::print_error(program, cause_of(e)); // --max-attempts at start: one line, exit 2
            return 2;
        }
        fe::print_error(program, e.what());
        return 1;
    }
    if (!r.stop.clean) {
        fe::print_error(program, "stages did not stop within 10 s");
    }
    j["end_reason"] = std::string(fe::to_string(r.end));
    if (s.json) {
        std::printf("%s\n", fe::json_text(j).c_str());
    } else {
        j.erase("stages");
        j.erase("channels");
        std::printf("\n%s\n", fe::json_text(j, 2).c_str());
    }
    std::fflush(stdout);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    fe::quiet_video_logs();
    CLI::App app{"framepipe-multicam: many cameras, one detector, a live web grid"};
    mc::settings s;
    mc::add_options(app, s);
    if (const auto code = fe::parse_command_line(app, argc, argv, program)) {
        return *code;
    }
    return fe::run_main(program, [&] { return run(s, app); });
}
