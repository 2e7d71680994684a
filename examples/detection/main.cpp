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
//   [ui] draws the newest result,                [detector] HOG / YOLO (ONNX) / Darknet,
//        encodes JPEG (--jpeg-quality)                at most --detect-fps (5; 0 = flat out)
//       |      ^                                        |
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
// The console prints each inference time. --json prints one JSON summary at exit (then the
// inference lines go to stderr, so that stdout is exactly that object).
#include "detector.hpp"
#include "page.hpp"

#include "common/process_stats.hpp"
#include "common/program.hpp"
#include "common/video_source.hpp"
#include "common/web_server.hpp"

#include <framepipe/framepipe.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <vector>

namespace {

namespace fe = framepipe_examples;
namespace det = framepipe_examples::detection;
using clock_type = std::chrono::steady_clock;
using frame_ptr = std::shared_ptr<const fe::video_frame>;

constexpr const char* program = "framepipe-detect";
constexpr const char* default_video = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

struct settings {
    std::string video = default_video;
    int camera = -1;
    std::string source_fps = "30";
    bool loop = false;
    double ui_fps = 15;
    int jpeg_quality = 80;
    double detect_fps = 5;
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
};

// One detection result, paired with the frame it was computed on (stamped: its seq and time).
struct detection_result {
    std::vector<det::labelled_detection> boxes;
    double inference_ms = 0;
};
using result = framepipe::stamped<detection_result>;

// Measured the same way in both modes.
struct meters {
    framepipe::latency_histogram detect_age; // frame age when inference starts
    framepipe::latency_histogram inference;  // inference time
    std::atomic<std::uint64_t> detections{0};
    std::atomic<std::uint64_t> encoded{0};       // JPEGs the UI stage produced
    std::atomic<std::uint64_t> rate_skipped{0};  // frames the detector passed over for --detect-fps
    std::atomic<std::int64_t> last_inference_us{0};
    std::atomic<std::uint64_t> jpeg_pool_misses{0};
    std::atomic<std::uint64_t> jpeg_bytes{0};    // all JPEGs encoded, for their mean size
};

// Runs the detector on one frame, records its meters, prints the inference time.
class detect_step {
public:
    detect_step(det::detector& d, meters& m, FILE* console) : d_(d), m_(m), console_(console) {}

    result operator()(const fe::video_frame& f) {
        const auto start = clock_type::now();
        m_.detect_age.record(start - f.captured);
        auto boxes = d_.detect(f.value);
        const auto took = clock_type::now() - start;
        m_.inference.record(took);
        m_.detections.fetch_add(1, std::memory_order_relaxed);
        const double ms = std::chrono::duration<double, std::milli>(took).count();
        m_.last_inference_us.store(std::chrono::duration_cast<std::chrono::microseconds>(took).count(),
                                   std::memory_order_relaxed);
        std::fprintf(console_, "inference %.1f ms (frame %llu, %zu boxes)\n", ms,
                     static_cast<unsigned long long>(f.seq), boxes.size());
        return framepipe::stamp(detection_result{std::move(boxes), ms}, f.seq, f.captured);
    }

private:
    det::detector& d_;
    meters& m_;
    FILE* console_;
};

// Draws the newest result on a copy of the frame, encodes it, and describes it for the page.
class ui_step {
public:
    ui_step(int quality, std::size_t pool_size, meters& m)
        : params_{cv::IMWRITE_JPEG_QUALITY, quality},
          pool_(pool_size, [] { return fe::encoded_frame{}; }),
          m_(m) {}

    std::shared_ptr<const fe::encoded_frame> operator()(const fe::video_frame& f,
                                                        const std::optional<result>& r) {
        f.value.copyTo(canvas_);
        nlohmann::json boxes = nlohmann::json::array();
        if (r) {
            for (const auto& b : r->value.boxes) {
                const cv::Rect box(b.box);
                cv::rectangle(canvas_, box, cv::Scalar(0, 255, 0), 2);
                const auto text = b.label + " " + std::to_string(static_cast<int>(b.score * 100)) + "%";
                cv::putText(canvas_, text, box.tl() + cv::Point(2, 14), cv::FONT_HERSHEY_SIMPLEX,
                            0.45, cv::Scalar(0, 255, 0), 1, cv::LINE_AA);
                boxes.push_back({{"x", b.box.x}, {"y", b.box.y}, {"w", b.box.width},
                                 {"h", b.box.height}, {"label", b.label},
                                 {"score", fe::round2(b.score)}, {"class_id", b.class_id}});
            }
        }
        // How old the drawn result is, against this frame: the pairing users otherwise do by hand.
        const double age_ms =
            r ? std::chrono::duration<double, std::milli>(f.captured - r->captured).count() : 0.0;
        const std::string caption =
            "frame " + std::to_string(f.seq) +
            (r ? "  result from frame " + std::to_string(r->seq) + " (" +
                     std::to_string(static_cast<int>(age_ms)) + " ms older)"
               : "  no result yet");
        cv::putText(canvas_, caption, cv::Point(8, canvas_.rows - 10), cv::FONT_HERSHEY_SIMPLEX,
                    0.5, cv::Scalar(255, 255, 255), 1, cv::LINE_AA);

        std::shared_ptr<fe::encoded_frame> out = pool_.try_acquire();
        if (!out) {
            // Every pooled buffer is held by clients still writing: allocate rather than wait
            // (a slow client must not hold up the UI stage). Counted.
            m_.jpeg_pool_misses.fetch_add(1, std::memory_order_relaxed);
            out = std::make_shared<fe::encoded_frame>();
        }
        cv::imencode(".jpg", canvas_, out->jpeg, params_);
        m_.jpeg_bytes.fetch_add(out->jpeg.size(), std::memory_order_relaxed);
        out->seq = f.seq;
        out->captured = f.captured;
        nlohmann::json meta = {{"type", "frame"},
                               {"seq", f.seq},
                               {"result_seq", nullptr},
                               {"result_age_ms", nullptr},
                               {"boxes", std::move(boxes)},
                               {"width", canvas_.cols},
                               {"height", canvas_.rows}};
        if (r) {
            meta["result_seq"] = r->seq;
            meta["result_age_ms"] = fe::round2(age_ms);
        }
        out->meta = meta.dump();
        m_.encoded.fetch_add(1, std::memory_order_relaxed);
        return out;
    }

private:
    std::vector<int> params_;
    framepipe::pool<fe::encoded_frame> pool_;
    meters& m_;
    cv::Mat canvas_;
};

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
    throw fe::usage_error("--source-fps: expected a rate in (0, 1000] or 'native', got '" + s + "'");
}

// Everything the program reports, for --json, /stats.json and the page's metrics panel.
nlohmann::json summary(const settings& s, const fe::video_source& video, const meters& m,
                       const framepipe::pipeline& p, const det::detector& d, double elapsed,
                       const framepipe::channel_stats& det_in, const framepipe::channel_stats& ui_in,
                       bool pipelined) {
    const double secs = std::max(elapsed, 1e-3);
    const auto frames = video.frames_read();
    const auto detections = m.detections.load(std::memory_order_relaxed);
    const auto encoded = m.encoded.load(std::memory_order_relaxed);
    nlohmann::json j;
    j["mode"] = s.mode;
    j["detector"] = d.description();
    j["video"] = video.description();
    j["seconds"] = fe::round2(elapsed);
    j["source_fps_target"] = fe::round2(video.pace_hz());
    j["source_fps"] = fe::round2(static_cast<double>(frames) / secs);
    j["ui_fps_target"] = s.ui_fps;
    j["ui_fps"] = fe::round2(static_cast<double>(encoded) / secs);
    j["detect_fps_target"] = s.detect_fps;
    j["detect_fps"] = fe::round2(static_cast<double>(detections) / secs);
    j["detect_age_p50_ms"] = fe::round2(fe::quantile_ms(m.detect_age, 0.5));
    j["detect_age_p99_ms"] = fe::round2(fe::quantile_ms(m.detect_age, 0.99));
    j["inference_ms_p50"] = fe::round2(fe::quantile_ms(m.inference, 0.5));
    j["inference_ms_p99"] = fe::round2(fe::quantile_ms(m.inference, 0.99));
    j["inference_ms_last"] =
        fe::round2(static_cast<double>(m.last_inference_us.load(std::memory_order_relaxed)) / 1000.0);
    j["frames_read"] = frames;
    j["corrupt_frames"] = video.corrupt_frames();
    j["loops"] = video.loops();
    j["detections"] = detections;
    j["ui_frames"] = encoded;
    if (pipelined) {
        // Frames the stage never worked on, whatever the reason (see the _by_reason objects).
        j["dropped_for_detector"] = det_in.dropped + m.rate_skipped.load(std::memory_order_relaxed);
        auto reasons = fe::drops_by_reason(det_in);
        if (const auto skipped = m.rate_skipped.load(std::memory_order_relaxed); skipped != 0) {
            reasons["detect_fps"] = skipped;
        }
        j["dropped_for_detector_by_reason"] = reasons;
        j["dropped_for_ui"] = ui_in.dropped;
        j["dropped_for_ui_by_reason"] = fe::drops_by_reason(ui_in);
    } else {
        j["dropped_for_detector"] = frames - std::min(frames, detections);
        j["dropped_for_detector_by_reason"] = nlohmann::json::object();
        j["dropped_for_ui"] = frames - std::min(frames, encoded);
        j["dropped_for_ui_by_reason"] = nlohmann::json::object();
    }
    j["jpeg_pool_misses"] = m.jpeg_pool_misses.load(std::memory_order_relaxed);
    j["jpeg_kb_mean"] = fe::round2(
        encoded == 0 ? 0.0
                     : static_cast<double>(m.jpeg_bytes.load(std::memory_order_relaxed)) /
                           static_cast<double>(encoded) / 1024.0);
    j["peak_rss_mb"] = fe::round2(fe::peak_rss_mb());
    j["rss_mb"] = fe::round2(fe::rss_mb());
    const auto snap = p.snapshot();
    for (const auto& st : snap.stages) {
        if (st.name == "detector" || st.name == "inline") {
            j["detector_busy_ratio"] = fe::round2(st.busy_ratio);
        }
    }
    j.update(fe::snapshot_json(snap));
    return j;
}

int run(const settings& s) {
    const double source_fps = parse_source_fps(s.source_fps);
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
    FILE* console = s.json ? stderr : stdout;

    meters m;
    framepipe::broadcaster<fe::video_frame> frames;
    framepipe::broadcaster<fe::encoded_frame> jpegs;
    framepipe::latest_slot<result> results;
    framepipe::latest_slot<std::uint64_t> inline_done; // the inline stage's output: frame numbers
    auto ui_in = frames.subscribe({.capacity = 1, .max_rate_hz = s.ui_fps, .name = "ui"});
    auto det_in = frames.subscribe({.capacity = 1, .name = "detector"});
    std::optional<framepipe::subscription<fe::encoded_frame>> sink_in;
    if (s.no_ui) {
        sink_in = jpegs.subscribe({.capacity = 1, .name = "ui-sink"});
    }
    detect_step detect(*detector, m, console);
    ui_step render(s.jpeg_quality, 4 + 2 * s.max_clients, m);
    std::optional<framepipe::rate_limiter> detect_rate;
    if (s.detect_fps > 0) {
        detect_rate.emplace(s.detect_fps);
    }

    // The source's end (file end, camera gone) is the run's end.
    std::mutex end_mu;
    std::condition_variable end_cv;
    bool source_ended = false;
    auto read = [&](framepipe::stage_context& ctx) -> std::shared_ptr<fe::video_frame> {
        auto f = video.next(ctx.stop_token());
        if (!f) {
            {
                const std::lock_guard<std::mutex> lock(end_mu);
                source_ended = true;
            }
            end_cv.notify_all();
        }
        return f;
    };

    framepipe::pipeline p(std::string("detect-") + s.mode);
    p.channel(jpegs, "jpeg");
    if (pipelined) {
        p.channel(frames, "frames").channel(results, "results");
        p.source(
            "camera", frames,
            [&](framepipe::stage_context& ctx) -> std::optional<std::shared_ptr<const fe::video_frame>> {
                auto f = read(ctx);
                if (!f) {
                    return std::nullopt;
                }
                return f;
            },
            {.max_rate_hz = video.pace_hz()});
        p.stage("detector", det_in, results,
                [&](frame_ptr f, framepipe::stage_context& ctx) -> std::optional<result> {
                    if (detect_rate && !detect_rate->try_acquire()) {
                        // Faster than --detect-fps: wait for the next turn, then take the newest
                        // frame rather than this one, which has aged meanwhile (freshness first).
                        if (!detect_rate->acquire(ctx.stop_token())) {
                            return std::nullopt;
                        }
                        if (auto newer = det_in.try_pop()) {
                            f = std::move(*newer);
                            m.rate_skipped.fetch_add(1, std::memory_order_relaxed);
                        }
                    }
                    return detect(*f);
                });
        p.stage("ui", ui_in, jpegs,
                [&](const frame_ptr& f) { return render(*f, results.peek()); });
    } else {
        p.channel(inline_done, "inline-seq");
        p.source(
            "inline", inline_done,
            [&, last = std::optional<result>{},
             ui_rate = std::make_shared<framepipe::rate_limiter>(s.ui_fps)](
                framepipe::stage_context& ctx) mutable -> std::optional<std::uint64_t> {
                auto f = read(ctx);
                if (!f) {
                    return std::nullopt;
                }
                if (!detect_rate || detect_rate->try_acquire()) {
                    last = detect(*f);
                }
                if (ui_rate->try_acquire()) {
                    jpegs.publish(render(*f, last));
                }
                return f->seq;
            },
            {.max_rate_hz = video.pace_hz()});
    }
    if (sink_in) {
        p.sink("ui-sink", *sink_in, [](const std::shared_ptr<const fe::encoded_frame>&) {});
    }

    const auto t0 = clock_type::now();
    std::atomic<double> elapsed_at_stop{-1};
    auto elapsed = [&] {
        const double e = elapsed_at_stop.load();
        return e >= 0 ? e : std::chrono::duration<double>(clock_type::now() - t0).count();
    };
    auto stats = [&] {
        return summary(s, video, m, p, *detector, elapsed(), det_in.stats(), ui_in.stats(), pipelined);
    };

    std::optional<fe::web_server> server;
    if (!s.no_ui) {
        server.emplace(
            fe::web_server_options{
                .host = s.host,
                .port = static_cast<unsigned short>(s.port),
                .page_html = det::page_html,
                .metrics_text = [&p] { return framepipe::to_prometheus(p.snapshot()); },
                .stats_json = [&stats] { return stats().dump(); },
                .state_json =
                    [&stats] {
                        auto j = stats();
                        j["type"] = "state";
                        return j.dump();
                    },
                .max_streams = s.max_clients,
                .log_name = program},
            jpegs);
    }

    p.start();
    if (server) {
        server->start();
        std::fprintf(console, "%s: serving the live UI at http://%s:%u/ (also /video.mjpg, /metrics, /stats.json)\n",
                     program, s.host.c_str(), static_cast<unsigned>(server->port()));
    }
    std::fprintf(console, "%s: %s, %s mode, detector: %s\n", program, video.description().c_str(),
                 s.mode.c_str(), detector->description().c_str());
    std::fflush(console);

    // Run until the duration, the source's end, or Ctrl-C.
    fe::install_stop_signals();
    const auto until = s.duration > 0
                           ? t0 + std::chrono::duration_cast<clock_type::duration>(
                                      std::chrono::duration<double>(s.duration))
                           : clock_type::time_point::max();
    {
        std::unique_lock<std::mutex> lock(end_mu);
        while (!source_ended && !fe::stop_requested() && clock_type::now() < until) {
            // Wakes at least every 200 ms to notice a signal (a handler cannot notify).
            end_cv.wait_until(lock, std::min(until, clock_type::now() + std::chrono::milliseconds(200)));
        }
    }
    elapsed_at_stop = std::chrono::duration<double>(clock_type::now() - t0).count();
    auto j = stats(); // the rates over the run, before the drain
    if (server) {
        server->stop();
    }
    const auto report = p.request_stop(std::chrono::seconds(10));
    try {
        p.wait();
    } catch (const framepipe::stage_error& e) {
        fe::print_error(program, e.what());
        return 1;
    }
    if (!report.clean) {
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
    j["end_reason"] = end.empty() ? (fe::stop_requested() ? "signal" : "duration") : end;
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
    settings s;
    app.add_option("--video", s.video, "video file or stream URL (default: opencv-doc's vtest.avi)");
    app.add_option("--camera", s.camera, "camera index instead of --video")->check(CLI::Range(0, 63));
    app.add_option("--source-fps", s.source_fps, "read pace in fps, or 'native' (default 30)");
    app.add_flag("--loop", s.loop, "restart the file at its end");
    app.add_option("--ui-fps", s.ui_fps, "frames per second sent to the UI")->check(CLI::Range(0.1, 120.0));
    app.add_option("--jpeg-quality", s.jpeg_quality, "JPEG quality 1..100")->check(CLI::Range(1, 100));
    app.add_option("--detect-fps", s.detect_fps, "detector rate cap; 0 = as fast as it can")
        ->check(CLI::Range(0.0, 1000.0));
    app.add_option("--detector-threads", s.detector_threads, "OpenCV threads for the detector")
        ->check(CLI::Range(1, 64));
    app.add_option("--model", s.model, "YOLOv5/v8 .onnx, or Darknet .cfg (with --weights); default HOG");
    app.add_option("--weights", s.weights, "Darknet .weights");
    app.add_option("--classes", s.classes, "class names, one per line");
    app.add_option("--input-size", s.input_size, "ONNX input size (square)")->check(CLI::Range(32, 4096));
    app.add_option("--confidence", s.confidence, "confidence threshold")->check(CLI::Range(0.0, 1.0));
    app.add_option("--nms", s.nms, "NMS IoU threshold")->check(CLI::Range(0.0, 1.0));
    app.add_option("--mode", s.mode, "pipelined or inline")->check(CLI::IsMember({"pipelined", "inline"}));
    app.add_flag("--no-ui", s.no_ui, "no web server (the UI stage still encodes, into a sink)");
    app.add_option("--duration", s.duration, "seconds to run (default: until the end or Ctrl-C)")
        ->check(CLI::Range(0.0, 1e7));
    app.add_flag("--json", s.json, "print one JSON summary object at exit");
    app.add_option("--host", s.host, "address to serve on (default 127.0.0.1)");
    app.add_option("--port", s.port, "port to serve on (default 7001; 0 = any)")->check(CLI::Range(0, 65535));
    app.add_option("--dot", s.dot, "write the pipeline graph (Graphviz DOT) to this file at exit");
    app.add_option("--max-clients", s.max_clients, "websocket + MJPEG clients at once")
        ->check(CLI::Range(1, 256));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        fe::print_error(program, e.what());
        return 2;
    }
    return fe::run_main(program, [&] { return run(s); });
}
