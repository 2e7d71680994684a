// framepipe-detect: the first source document's object-detection pipeline on framepipe, with a
// live web UI.
//
//   --mode pipelined (default)
//
//   [camera] a file: cv::VideoCapture, paced to --source-fps (30), pooled stamped frames;
//       |    a live input (rtsp://, http(s)://, --camera): GStreamer under live_source
//       |    (common/live_camera.hpp), read as fast as it delivers, reconnected with backoff
//   broadcaster "frames" -------------------------------+
//       |                                               |
//   subscription "ui"                            subscription "detector"
//   capacity 1, max --ui-fps (15)                capacity 1 (a latest slot)
//   (both drop_older_epochs: never a frame of an older connection after a newer one)
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
//   --sampling other than none: [sampler] between "frames" and [detector] decides which frames
//   the detector gets (every-n:N, keyframes, motion, scene, adaptive, cascade: motion regions
//   only); see sampled_pipeline.hpp and docs/sampling.md.
//
//   --mode inline: the source document's single-threaded baseline.
//
//   [inline] read -> detect -> draw + encode -> broadcaster "jpeg"     (one thread)
//            the UI can only go as fast as the detector. With a live input the camera reads
//            on its own threads into "frames", and [inline] takes the newest frame from its
//            subscription "inline" each time round.
//
// A live input's status changes are printed on the console ("camera: online (epoch 1; ...)",
// "camera: reconnecting (...)"); its figures are in the summary's "sources".
//
//   --publish / --worker iceoryx|nats://...: the same graph split across processes (remote.hpp).
//
// The console prints each inference time. --json prints one JSON summary at exit (then the
// inference lines go to stderr, so that stdout is exactly that object). The steps of the stages
// are in stages.hpp, the summary in summary.hpp, the flags in settings.hpp.
#include "page.hpp"
#include "remote.hpp"
#include "sampled_pipeline.hpp"
#include "sampling.hpp"
#include "settings.hpp"
#include "stages.hpp"
#include "summary.hpp"

#include "common/cli.hpp"
#include "common/live_camera.hpp"
#include "common/live_input.hpp"
#include "common/program.hpp"
#include "common/run_loop.hpp"
#include "common/uri_scheme.hpp"
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
#include <string_view>
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace {

namespace fe = framepipe_examples;
namespace det = framepipe_examples::detection;
using det::program;
using frame_ptr = std::shared_ptr<const fe::video_frame>;

// A file's path: a plain path, or a file:// URI (file:///abs/path). Throws usage_error for a
// scheme that is neither a file nor a live input.
std::string file_path(const std::string& video) {
    constexpr std::string_view file_scheme = "file://";
    if (fe::has_scheme_prefix(video, file_scheme)) { // in any case (RFC 3986 3.1)
        return video.substr(file_scheme.size());
    }
    if (video.find("://") != std::string::npos) {
        throw fe::usage_error("--video '" + fe::mask_passwords(video) +
                              "': unsupported scheme (rtsp, rtsps, http, https, file, v4l2)");
    }
    return video;
}

int run(const det::settings& s, const CLI::App& app) {
    cv::setNumThreads(s.detector_threads);
    const bool pipelined = s.mode == "pipelined";
    std::FILE* console = s.json ? stderr : stdout;
    // --dot: opened now, so that a path that cannot be written is exit 2 before the run.
    std::optional<std::ofstream> dot_file;
    if (!s.dot.empty()) {
        dot_file.emplace(s.dot);
        if (!*dot_file) {
            throw fe::usage_error("--dot: '" + s.dot + "' cannot be opened for writing");
        }
    }
    // --sampling: a bad spec is exit 2 before anything opens (sampling.hpp lists the forms).
    const auto sampling = det::parse_sampling(s.sampling);
    const bool sampled = sampling.kind != det::sampling_kind::none;
    if (sampled && !pipelined) {
        throw fe::usage_error("--sampling: only with --mode pipelined (the sampler is a stage)");
    }

    // Bad input is found here, before anything runs: the input, the model, the port. A live
    // input is only checked (its URL, the flags): it connects once the pipeline runs, and keeps
    // trying while the page serves.
    std::optional<fe::video_source> video;
    std::optional<fe::live_camera> camera;
    if (fe::is_live_input(s.video, s.camera)) {
        if (app.count("--source-fps") > 0) {
            throw fe::usage_error("--source-fps: only for files; a live input is read as fast as "
                                  "it delivers (--detect-fps and --ui-fps pace the consumers)");
        }
        if (s.loop) {
            throw fe::usage_error("--loop: only for files; a live input that ends is reconnected");
        }
        auto live_options =
            fe::live_camera_options_from(s.live, s.camera >= 0 ? "" : s.video, s.camera, 8);
        det::sampled_pipeline::prepare_live(sampling, s.video, s.camera, live_options);
        camera.emplace(live_options);
        camera->on_event([console](const std::string& line) {
            std::fprintf(console, "%s: %s\n", program, line.c_str());
            std::fflush(console);
        });
    } else {
        fe::reject_live_flags(app, "a file");
        const double source_fps = det::parse_source_fps(s.source_fps);
        video.emplace(fe::video_source_options{
            .path = file_path(s.video),
            .fps = source_fps > 0 ? std::optional<double>(source_fps) : std::nullopt,
            .loop = s.loop});
    }
    auto detector = det::make_detector({.model = s.model,
                                        .weights = s.weights,
                                        .classes = s.classes,
                                        .input_size = s.input_size,
                                        .decode = {.confidence = s.confidence, .nms_iou = s.nms}});

    // The channels of the drawing (declared before the pipeline: its destructor closes them).
    // A consumer never takes a frame of an older connection after a newer one
    // (drop_older_epochs; files have one epoch).
    framepipe::broadcaster<fe::video_frame> frames;
    framepipe::broadcaster<fe::encoded_frame> jpegs;
    framepipe::latest_slot<det::result> results;
    std::optional<framepipe::subscription<fe::video_frame>> ui_in;
    std::optional<framepipe::subscription<fe::video_frame>> det_in;
    std::optional<framepipe::subscription<fe::video_frame>> inline_in;
    if (pipelined) {
        ui_in = frames.subscribe(
            {.capacity = 1, .max_rate_hz = s.ui_fps, .drop_older_epochs = true, .name = "ui"});
        if (!sampled) {
            det_in = frames.subscribe({.capacity = 1, .drop_older_epochs = true, .name = "detector"});
        }
    } else if (camera) {
        inline_in = frames.subscribe({.capacity = 1, .drop_older_epochs = true, .name = "inline"});
    }
    std::optional<framepipe::subscription<fe::encoded_frame>> sink_in;
    if (s.no_ui) {
        sink_in = jpegs.subscribe({.capacity = 1, .name = "ui-sink"});
    }

    det::meters m;
    fe::jpeg_encoder jpeg({.quality = s.jpeg_quality, .pool_size = 4 + 2 * s.max_clients});
    det::detect_step detect(*detector, m, console);
    det::ui_step render(jpeg, m);
    // --sampling: the sampler stage in front of the detector (sampled_pipeline.hpp).
    std::unique_ptr<det::sampled_pipeline> sampler;
    if (sampled) {
        sampler = det::sampled_pipeline::make(sampling, s, video ? &*video : nullptr,
                                              video ? file_path(s.video) : "", *detector, m, console);
    } else if (!s.motion_mask.empty()) {
        throw fe::usage_error("--motion-mask: only with --sampling motion or cascade");
    }
    // A file: nullptr at its end (or on stop): the source ends, the graph drains.
    auto read = [&video](framepipe::stage_context& ctx) { return video->next(ctx.stop_token()); };
    // Inline: detect when --detect-fps allows (every frame with 0), draw and encode when
    // --ui-fps allows, in one thread.
    auto one_loop = [&, last = std::optional<det::result>{},
                     detect_rate = s.detect_fps > 0
                                       ? std::optional<framepipe::rate_limiter>(s.detect_fps)
                                       : std::nullopt,
                     ui_rate = framepipe::rate_limiter(s.ui_fps)](const frame_ptr& f) mutable
        -> std::shared_ptr<const fe::encoded_frame> {
        if (!detect_rate || detect_rate->try_acquire()) {
            last = detect(*f);
        }
        return ui_rate.try_acquire() ? render(*f, last) : nullptr;
    };

    framepipe::pipeline p(std::string("detect-") + s.mode);
    p.channel(jpegs, "jpeg");
    if (camera) {
        p.channel(frames, "frames");
        p.source("camera", frames, *camera); // on threads of its own, never paced by a reader
    } else if (pipelined) {
        p.channel(frames, "frames");
        p.source("camera", frames, read, {.max_rate_hz = video->pace_hz()});
    }
    if (pipelined) {
        p.channel(results, "results");
        if (sampler) {
            sampler->add_to(p, frames, results, s.detect_fps);
        } else {
            p.stage("detector", *det_in, results, [&](const frame_ptr& f) { return detect(*f); },
                    {.max_rate_hz = s.detect_fps});
        }
        p.stage("ui", *ui_in, jpegs, [&](const frame_ptr& f) { return render(*f, results.peek()); });
    } else if (camera) {
        // The camera reads on its own threads; the loop takes the newest frame each time round.
        p.stage("inline", *inline_in, jpegs,
                [&](const frame_ptr& f) -> std::optional<std::shared_ptr<const fe::encoded_frame>> {
                    auto jpeg_frame = one_loop(f);
                    if (!jpeg_frame) {
                        return std::nullopt;
                    }
                    return jpeg_frame;
                });
    } else {
        // One thread reads, detects and encodes (an output-less source publishing by itself).
        // No stage has "jpeg" as its output, so the pipeline never closes it: the source does,
        // at its end, or the --no-ui sink would wait for ever.
        p.source(
            "inline",
            [&](framepipe::stage_context& ctx) {
                const auto f = read(ctx);
                if (!f) {
                    jpegs.close();
                    return false;
                }
                if (auto jpeg_frame = one_loop(f)) {
                    (void)jpegs.publish(std::move(jpeg_frame));
                }
                return true;
            },
            {.max_rate_hz = video->pace_hz()});
    }
    if (sink_in) {
        p.sink("ui-sink", *sink_in, [](const std::shared_ptr<const fe::encoded_frame>&) {});
    }

    fe::run_loop run(p, {.duration_s = s.duration}); // until the duration, the end, or Ctrl-C
    const det::run_parts parts{s, video ? &*video : nullptr, camera ? &*camera : nullptr,
                               *detector, m, jpeg};
    auto stats = [&] {
        const auto snap = p.snapshot();
        auto j = det::summary(parts, snap, run.seconds());
        if (sampler) {
            j["sampling"] = sampler->json(snap);
            if (camera && j["sampling"].contains("skipped_before_decode")) {
                // A live input skips delta frames before its decoder; the camera counts them.
                j["sampling"]["skipped_before_decode"] = camera->stats().skipped_before_decode;
            }
        }
        return j;
    };
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
    std::fprintf(console, "%s: %s, %s mode, detector: %s\n", program,
                 video ? video->description().c_str() : camera->description().c_str(),
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
        if (camera) {
            if (const auto why = camera->failure()) {
                // --max-attempts failures in a row: exit 2, one line naming the input.
                fe::print_error(program, *why);
                return 2;
            }
        }
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
                            "dropped_for_ui_by_reason", "epoch_regressions", "peak_rss_mb", "stages",
                            "channels"}) {
        j[key] = after[key];
    }
    if (after.contains("sampling")) {
        j["sampling"] = after["sampling"];
    }
    if (dot_file) {
        *dot_file << framepipe::to_dot(p.snapshot());
        dot_file->flush();
        if (!*dot_file) {
            fe::print_error(program, "--dot: '" + s.dot + "': write failed");
            return 2;
        }
    }
    const std::string end = video ? video->end_reason() : std::string();
    j["end_reason"] = end.empty() ? (r.end == fe::run_end::signal ? "signal" : "duration") : end;
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
    if (s.sampling != "none" && app.count("--detect-fps") == 0) {
        s.detect_fps = 0; // with a sampler, the sampler decides what the detector gets
    }
    return fe::run_main(program, [&] {
        if (app.count("--camera") > 0 && app.count("--video") > 0) { // in every mode
            throw fe::usage_error("--camera and --video exclude each other");
        }
        return remote.active() ? det::run_remote(s, remote, app) : run(s, app);
    });
}
