// examples/detection/remote.cpp - see remote.hpp.
#include "remote.hpp"

#include "detector.hpp"
#include "page.hpp"
#include "stages.hpp"

#include "common/live_input.hpp"
#include "common/mat_codecs.hpp"
#include "common/program.hpp"
#include "common/run_loop.hpp"
#include "common/uri_scheme.hpp"
#include "common/video_source.hpp"
#include "common/web_ui.hpp"

#include <framepipe/exposition.hpp>
#include <framepipe/framepipe.hpp>
#if defined(FRAMEPIPE_DETECT_ICEORYX)
#include <framepipe/transport/iceoryx.hpp>
#endif
#if defined(FRAMEPIPE_DETECT_NATS)
#include <framepipe/transport/nats.hpp>
#endif

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace framepipe_examples::detection {
namespace {

namespace tp = framepipe::transport;
using frame_ptr = std::shared_ptr<const video_frame>;

// Results on the wire: JSON (small, and readable with `nats sub`).
struct result_codec {
    using value_type = detection_result;
    using view_type = detection_result;

    void encode(const detection_result& r, tp::lender& lend) const {
        nlohmann::json boxes = nlohmann::json::array();
        for (const auto& b : r.boxes) {
            boxes.push_back({{"x", b.box.x},
                             {"y", b.box.y},
                             {"w", b.box.width},
                             {"h", b.box.height},
                             {"label", b.label},
                             {"score", b.score},
                             {"class_id", b.class_id}});
        }
        const auto text =
            json_text(nlohmann::json{{"boxes", boxes}, {"inference_ms", r.inference_ms}});
        const auto out = lend(text.size());
        std::memcpy(out.data(), text.data(), text.size());
    }

    [[nodiscard]] std::optional<detection_result> decode(
        std::span<const std::byte> b) const noexcept {
        try {
            const auto* p = reinterpret_cast<const char*>(b.data());
            const auto j = nlohmann::json::parse(p, p + b.size());
            detection_result r;
            r.inference_ms = j.at("inference_ms").get<double>();
            for (const auto& x : j.at("boxes")) {
                r.boxes.push_back({cv::Rect2f(x.at("x").get<float>(), x.at("y").get<float>(),
                                              x.at("w").get<float>(), x.at("h").get<float>()),
                                   x.at("class_id").get<int>(), x.at("score").get<float>(),
                                   x.at("label").get<std::string>()});
            }
            return r;
        } catch (...) { // another program's message: malformed, counted, skipped
            return std::nullopt;
        }
    }
};

std::string default_name() {
    char host[64] = {};
    (void)gethostname(host, sizeof(host) - 1);
    return "worker-" + std::string(host).substr(0, 24) + "-" + std::to_string(getpid());
}

std::vector<std::string> split_urls(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');) {
        if (!has_scheme_prefix(item, "nats://")) { // in any case (RFC 3986 3.1)
            throw usage_error("expected iceoryx or nats://host:port[,nats://...], got '" + s + "'");
        }
        out.push_back(with_lower_case_scheme(item)); // the form the NATS client compares
    }
    return out;
}

// A RouDi this program started (--roudi-config), stopped at exit.
struct started_roudi {
    pid_t pid = -1;
    ~started_roudi() {
        if (pid > 0) {
            ::kill(pid, SIGKILL); // SIGTERM would make RouDi SIGTERM its clients, this one too
            (void)::waitpid(pid, nullptr, 0);
        }
    }
};

// The camera side's figures, merged into the page's state and the --json summary.
struct camera_figures {
    std::mutex mu;
    std::map<std::string, std::uint64_t> results_by_worker; // guarded by mu
    std::string last_worker;                                // guarded by mu
};

// The results' channel: the newest result for the ui (a latest_slot), counted per worker on the
// way in. Reads as the slot in the pipeline's snapshot.
struct counted_results {
    framepipe::latest_slot<tp::received_ptr<detection_result>> slot;
    camera_figures& fig;

    framepipe::push_status push(tp::received_ptr<detection_result> r) {
        {
            const std::lock_guard<std::mutex> lock(fig.mu);
            ++fig.results_by_worker[r->sender];
            fig.last_worker = r->sender;
        }
        return slot.push(std::move(r));
    }
    void close() { slot.close(); }
    [[nodiscard]] framepipe::channel_stats stats() const { return slot.stats(); }
    [[nodiscard]] std::size_t capacity() const { return 1; }
    [[nodiscard]] framepipe::overflow policy() const { return framepipe::overflow::drop_oldest; }
};

// The newest remote result as the ui stage draws it: labels name the worker.
std::optional<result> as_local(const tp::received_ptr<detection_result>& r) {
    result out{r->value, r->seq, r->captured, r->epoch};
    for (auto& b : out.value.boxes) {
        b.label += " @" + r->sender;
    }
    return out;
}

nlohmann::json to_json(const tp::transport_stats& t) {
    return {{"state", std::string(framepipe::to_string(t.state))},
            {"connects", t.connects},
            {"reconnects", t.reconnects},
            {"sent", t.sent},
            {"no_buffer", t.no_buffer},
            {"too_large", t.too_large},
            {"disconnected", t.disconnected},
            {"send_failed", t.send_failed},
            {"acknowledged", t.acknowledged},
            {"lost_in_transport", t.lost_in_transport},
            {"pending_receipts", t.pending_receipts},
            {"last_error", t.last_error}};
}

template <class FramesOut, class ResultsIn, class TransportStats>
int run_camera(const settings& s, const std::string& where, FramesOut& frames_out,
               ResultsIn& results_in, video_source& video, TransportStats transport_stats) {
    std::FILE* console = s.json ? stderr : stdout;
    framepipe::broadcaster<video_frame> frames;
    framepipe::broadcaster<encoded_frame> jpegs;
    camera_figures fig;
    counted_results results{{}, fig};
    auto ui_in = frames.subscribe({.capacity = 1, .max_rate_hz = s.ui_fps, .name = "ui"});
    auto tx_in = frames.subscribe({.capacity = 1, .name = "transport"});
    std::optional<framepipe::subscription<encoded_frame>> sink_in;
    if (s.no_ui) {
        sink_in = jpegs.subscribe({.capacity = 1, .name = "ui-sink"});
    }
    jpeg_encoder jpeg({.quality = s.jpeg_quality, .pool_size = 4 + 2 * s.max_clients});
    meters ui_meters; // the UI's epochs (the detector's meters are the workers')
    ui_step render(jpeg, ui_meters);
    auto read = [&video](framepipe::stage_context& ctx) { return video.next(ctx.stop_token()); };

    framepipe::pipeline p("detect-publish");
    p.channel(frames, "frames").channel(jpegs, "jpeg").channel(results, "results");
    p.source("camera", frames, read, {.max_rate_hz = video.pace_hz()});
    p.sink("to-workers", tx_in, [&](const frame_ptr& f) {
        // A frame too large for the transport will not shrink: stop, saying so (exit 2).
        if (frames_out.send(f) == tp::send_status::too_large) {
            throw std::runtime_error(frames_out.stats().last_error);
        }
    });
    p.source("from-workers", results, results_in);
    p.stage("ui", ui_in, jpegs, [&](const frame_ptr& f) {
        const auto r = results.slot.peek();
        if (!r) {
            return render(*f, std::nullopt);
        }
        // Name the worker on the frame, then draw as in one process.
        video_frame named{f->value.clone(), f->seq, f->captured, f->epoch};
        cv::putText(named.value, "result by " + (*r)->sender, cv::Point(8, 20),
                    cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar(0, 255, 255), 1, cv::LINE_AA);
        return render(named, as_local(*r));
    });
    if (sink_in) {
        p.sink("ui-sink", *sink_in, [](const std::shared_ptr<const encoded_frame>&) {});
    }
    run_loop run(p, {.duration_s = s.duration});
    auto stats = [&] {
        const auto snap = p.snapshot();
        nlohmann::json j;
        j["mode"] = "publish";
        j["transport"] = where;
        j["video"] = video.description();
        j["seconds"] = round2(run.seconds());
        j["frames_read"] = video.frames_read();
        j["ui_frames"] = jpeg.frames();
        j["ui_fps"] = round2(static_cast<double>(jpeg.frames()) / std::max(run.seconds(), 1e-3));
        j["transport_stats"] = to_json(transport_stats(false));
        const auto rs = results_in.stats();
        j["results_received"] = rs.received;
        j["results_malformed"] = rs.malformed;
        const std::lock_guard<std::mutex> lock(fig.mu);
        j["last_worker"] = fig.last_worker;
        j["results_by_worker"] = fig.results_by_worker;
        j.update(snapshot_json(snap));
        return j;
    };
    std::optional<web_server> server;
    if (!s.no_ui) {
        auto options = web_ui_options({.host = s.host,
                                       .port = static_cast<unsigned short>(s.port),
                                       .page_html = page_html,
                                       .max_streams = s.max_clients,
                                       .log_name = program},
                                      p, stats);
        // /metrics: the pipeline's, and the frames' link (a sink's publisher is no stage).
        options.metrics_text = [&] {
            return framepipe::to_prometheus(p.snapshot()) +
                   tp::to_prometheus(transport_stats(false), "detect-publish", "to-workers");
        };
        server.emplace(std::move(options), jpegs);
        server->start();
        announce(console, program, s.host, *server);
    }
    std::fprintf(console, "%s: %s, publishing frames on %s\n", program, video.description().c_str(),
                 where.c_str());
    std::fflush(console);
    nlohmann::json j;
    // A stage that fails (to-workers: a frame over the transport's limit) ends the run with
    // framepipe::stage_error, which run_main prints as one line, exit 2.
    (void)run.run([&](run_end) {
        j = stats();
        if (server) {
            server->stop();
        }
    });
    j["transport_stats"] = to_json(transport_stats(true)); // after the drain, receipts settled
    std::printf(s.json ? "%s\n" : "\n%s\n", json_text(j, s.json ? -1 : 2).c_str());
    std::fflush(stdout);
    return 0;
}

// A receiver started before the pipeline (so that the worker announces itself only once it is
// subscribed), supervised by the pipeline from then on.
template <class Rx>
struct already_started {
    Rx& rx;
    template <class Out>
    void start(Out&) {}
    void stop() { rx.stop(); }
    bool wait(std::stop_token stop) { return rx.wait(stop); }
    [[nodiscard]] framepipe::source_status status() const { return rx.status(); }
    [[nodiscard]] std::optional<std::string> failure() const { return rx.failure(); }
};

template <class FramesIn, class ResultsOut>
int run_worker(const settings& s, const std::string& name, const std::string& where,
               FramesIn& frames_in, ResultsOut& results_out) {
    std::FILE* console = s.json ? stderr : stdout;
    auto detector = make_detector({.model = s.model,
                                   .weights = s.weights,
                                   .classes = s.classes,
                                   .input_size = s.input_size,
                                   .decode = {.confidence = s.confidence, .nms_iou = s.nms}});
    cv::setNumThreads(s.detector_threads);
    meters m;
    detect_step detect(*detector, m, console);
    using frame_handle = tp::received_ptr<cv::Mat>;
    framepipe::latest_slot<frame_handle> newest;
    tp::loss_counted frames(newest); // gaps in the stream show on this channel too
    framepipe::pipeline p("detect-worker");
    p.channel(frames, "frames");
    frames_in.start(frames); // subscribed from here on: the line below means "ready"
    already_started<FramesIn> source{frames_in};
    p.source("frames-in", frames, source);
    p.sink("detector", frames,
           [&](const frame_handle& f) {
               // A header over the received pixels (the iceoryx chunk itself): no copy.
               const video_frame view{f->value, f->seq, f->captured, f->epoch};
               (void)results_out.send(detect(view));
           },
           {.max_rate_hz = s.detect_fps});
    run_loop run(p, {.duration_s = s.duration});
    std::fprintf(console, "%s: worker %s on %s, detector: %s\n", program, name.c_str(),
                 where.c_str(), detector->description().c_str());
    std::fflush(console);
    nlohmann::json j;
    (void)run.run([&](run_end) {
        const auto in = frames_in.stats();
        j = {{"mode", "worker"},
             {"name", name},
             {"transport", where},
             {"detections", m.detections.load()},
             {"detect_age_p50_ms", round2(quantile_ms(m.detect_age, 0.5))},
             {"detect_age_p99_ms", round2(quantile_ms(m.detect_age, 0.99))},
             {"inference_ms_p50", round2(quantile_ms(m.inference, 0.5))},
             {"frames_received", in.received},
             {"frames_malformed", in.malformed},
             {"lost_in_transport", in.lost_in_transport},
             {"slow_consumer_dropped", in.slow_consumer_dropped},
             {"dropped_at_stop", in.dropped_at_stop},
             {"reconnects", in.reconnects}};
        j.update(snapshot_json(p.snapshot()));
    });
    std::printf(s.json ? "%s\n" : "\n%s\n", json_text(j, s.json ? -1 : 2).c_str());
    std::fflush(stdout);
    return 0;
}

video_source open_video(const settings& s) {
    const double fps = parse_source_fps(s.source_fps);
    return video_source({.path = s.video,
                         .camera = s.camera,
                         .fps = fps > 0 ? std::optional<double>(fps) : std::nullopt,
                         .loop = s.loop});
}

#if defined(FRAMEPIPE_DETECT_ICEORYX)
void ensure_roudi(const remote_settings& r, started_roudi& started) {
    auto why = tp::roudi_unreachable();
    if (!why) {
        return;
    }
    if (r.roudi_config.empty()) {
        throw std::runtime_error(*why + "; start iox-roudi, or pass --roudi-config to start one");
    }
    const std::string config = r.roudi_config;
    const char* argv[] = {"iox-roudi", "-c", config.c_str(), "-l", "error", nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    const int rc =
        posix_spawnp(&started.pid, "iox-roudi", &fa, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        started.pid = -1;
        throw std::runtime_error(*why +
                                 " and could not be started: iox-roudi: " + std::strerror(rc));
    }
    for (int i = 0; i < 100 && (why = tp::roudi_unreachable()); ++i) {
        if (::waitpid(started.pid, nullptr, WNOHANG) == started.pid) {
            started.pid = -1;
            throw std::runtime_error(*why + " and could not be started: iox-roudi -c " + config +
                                     " exited (another RouDi, or a bad config)");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (why) {
        throw std::runtime_error(*why + " and could not be started within 5 s");
    }
}

int run_iceoryx(const settings& s, const remote_settings& r, const std::string& name) {
    started_roudi roudi;
    ensure_roudi(r, roudi);
    const std::string instance = "detect." + r.stream;
    if (!r.publish.empty()) {
        auto video = open_video(s);
        const auto size = video.frame_size();
        const std::size_t bytes =
            raw_mat_codec::header_size + static_cast<std::size_t>(size.area()) * 3;
        tp::iceoryx_publisher_options po{.service = {.instance = instance},
                                         .sender_name = r.stream};
        if (bytes + tp::envelope_size + 64 > po.largest_chunk) {
            throw usage_error("frames of " + std::to_string(size.width) + "x" +
                              std::to_string(size.height) + " (" + std::to_string(bytes) +
                              " bytes) are over the largest iceoryx chunk (" +
                              std::to_string(po.largest_chunk) + " bytes; docs/transport.md)");
        }
        tp::iceoryx_init("framepipe-detect-camera");
        tp::iceoryx_publisher<raw_mat_codec> out(po);
        tp::iceoryx_receiver<result_codec> in(
            {.service = {.instance = instance, .event = "results"},
             .queue_capacity = 16,
             .kind = tp::message_kind::result});
        return run_camera(s, "iceoryx " + instance, out, in, video,
                          [&](bool) { return out.stats(); });
    }
    tp::iceoryx_init("framepipe-detect-worker");
    tp::iceoryx_receiver<raw_mat_codec> in({.service = {.instance = instance}});
    tp::iceoryx_publisher<result_codec> out({.service = {.instance = instance, .event = "results"},
                                             .sender_name = name,
                                             .kind = tp::message_kind::result});
    return run_worker(s, name, "iceoryx " + instance, in, out);
}
#endif

#if defined(FRAMEPIPE_DETECT_NATS)
// A NATS publisher's figures; at the end (final), after waiting up to 2 s for the last receipts,
// so that every frame is either acknowledged or lost.
template <class Publisher>
tp::transport_stats settled(Publisher& out, bool final) {
    if (final) {
        out.settle(std::chrono::seconds(2));
    }
    return out.stats();
}

// NATS connect attempts at start: the live inputs' --max-attempts, or 3 when it is 0 (its default,
// "never give up", would leave a process that cannot reach NATS waiting in a constructor).
std::uint32_t nats_attempts(const settings& s) { return s.live.max_attempts != 0 ? s.live.max_attempts : 3; }

int run_nats(const settings& s, const remote_settings& r, const std::string& name,
             const std::string& urls) {
    const auto frames_subject = tp::frame_subject("detect", r.stream);
    const auto results_subject = tp::result_subject("detect", r.stream);
    if (!r.publish.empty()) {
        auto video = open_video(s);
        tp::nats_connection nc({.servers = split_urls(urls),
                                .name = "framepipe-detect " + r.stream,
                                .max_attempts = nats_attempts(s)});
        const auto size = video.frame_size();
        const std::size_t raw =
            raw_mat_codec::header_size + static_cast<std::size_t>(size.area()) * 3;
        if (r.wire_codec == "raw" &&
            raw + tp::envelope_size > static_cast<std::size_t>(nc.max_payload())) {
            throw usage_error("frames of " + std::to_string(size.width) + "x" +
                              std::to_string(size.height) + " are " +
                              std::to_string(raw + tp::envelope_size) +
                              " bytes raw, over the server's max_payload of " +
                              std::to_string(nc.max_payload()) + ": use --wire-codec jpeg");
        }
        tp::nats_receiver<result_codec> in(
            nc, {.subject = results_subject, .name = r.stream, .kind = tp::message_kind::result});
        const tp::nats_publisher_options po{
            .subject = frames_subject, .sender_name = r.stream, .receipt_subject = results_subject};
        const std::string where = urls + " (" + r.wire_codec + ")";
        if (r.wire_codec == "raw") {
            tp::nats_publisher<raw_mat_codec> out(nc, po);
            return run_camera(s, where, out, in, video,
                              [&](bool final) { return settled(out, final); });
        }
        tp::nats_publisher<jpeg_mat_codec> out(nc, po, jpeg_mat_codec{s.jpeg_quality});
        return run_camera(s, where, out, in, video,
                          [&](bool final) { return settled(out, final); });
    }
    tp::nats_connection nc(
        {.servers = split_urls(urls), .name = name, .max_attempts = nats_attempts(s)});
    tp::nats_publisher<result_codec> out(nc, {.subject = results_subject,
                                              .sender_name = name,
                                              .kind = tp::message_kind::result,
                                              .drop_while_disconnected = false});
    const tp::nats_receiver_options ro{.subject = frames_subject,
                                       .queue_group = r.group,
                                       .receipt_subject = results_subject,
                                       .name = name};
    const std::string where = urls + " group " + r.group;
    if (r.wire_codec == "raw") {
        tp::nats_receiver<raw_mat_codec> in(nc, ro);
        return run_worker(s, name, where, in, out);
    }
    tp::nats_receiver<jpeg_mat_codec> in(nc, ro);
    return run_worker(s, name, where, in, out);
}
#endif

} // namespace

void add_remote_options(CLI::App& app, remote_settings& r) {
    auto* pub = app.add_option(
        "--publish", r.publish,
        "run the camera and UI side, frames out on iceoryx or nats://host:port[,...]");
    auto* wrk =
        app.add_option("--worker", r.worker, "run a detector worker on iceoryx or nats://...");
    pub->excludes(wrk);
    app.add_option("--camera-name", r.stream,
                   "the camera's name in subjects and services (default cam0)");
    app.add_option("--queue-group", r.group, "NATS queue group of the workers (default detectors)");
    app.add_option("--worker-name", r.name,
                   "this process's name in its messages (default worker-<host>-<pid>)");
    app.add_option("--wire-codec", r.wire_codec, "NATS frames: jpeg (default) or raw")
        ->check(CLI::IsMember({"jpeg", "raw"}));
    app.add_option("--roudi-config", r.roudi_config,
                   "start iox-roudi with this config if none runs");
}

int run_remote(const settings& s, const remote_settings& r, const CLI::App& app) {
    const std::string& where = r.publish.empty() ? r.worker : r.publish;
    const std::string name = r.name.empty() ? default_name() : r.name;
    if (s.mode != "pipelined") {
        throw usage_error("--publish / --worker: not with --mode inline");
    }
    if (s.sampling != "none") {
        throw usage_error("--publish / --worker: not with --sampling (a worker detects what it is sent)");
    }
    // The flags the one-process run checks, which these modes would otherwise take and ignore.
    if (!r.publish.empty() && is_live_input(s.video, s.camera)) {
        // The camera side reads through one VideoCapture, opened once: a live input that is down
        // or drops would end the run instead of being retried as in one process.
        throw usage_error("--publish: reads a video file; run a live input (rtsp://, http(s)://, "
                          "--camera) in one process");
    }
    for (const char* flag : live_flags) { // --max-attempts also counts NATS connect attempts
        if (app.count(flag) > 0 && std::string_view(flag) != "--max-attempts") {
            throw usage_error(std::string(flag) + ": only for live inputs, not with --publish / "
                                                  "--worker");
        }
    }
    if (!s.motion_mask.empty()) {
        throw usage_error("--motion-mask: only with --sampling motion or cascade");
    }
    if (!s.dot.empty()) {
        throw usage_error("--dot: not with --publish / --worker");
    }
    if (where == "iceoryx") {
#if defined(FRAMEPIPE_DETECT_ICEORYX)
        return run_iceoryx(s, r, name);
#else
        throw usage_error("iceoryx: this build has no iceoryx adapter (framepipe::iceoryx)");
#endif
    }
    if (has_scheme_prefix(where, "nats://")) {
#if defined(FRAMEPIPE_DETECT_NATS)
        return run_nats(s, r, name, where);
#else
        throw usage_error("nats: this build has no NATS adapter (framepipe::nats)");
#endif
    }
    throw usage_error("--publish / --worker: expected iceoryx or nats://host:port, got '" + where +
                      "'");
}

} // namespace framepipe_examples::detection
