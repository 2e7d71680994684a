// framepipe-handpose: the second source document's hand-gesture pipeline, rebuilt on framepipe.
//
// A hand-pose estimator turns frames into 21 hand points at 15 fps; a slow classifier labels
// the last 30 of them. --mode pipelined (default) runs this graph:
//
//   [camera 30 fps]  synthetic hand, or --video / --camera (common/video_source: pooled,
//         |          stamped frames)
//   broadcaster "frames"
//         |
//   subscription "estimator" (capacity 1, max 15 Hz: the newest frame, 15 a second)
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
//                                                      model.onnx) + --classifier-extra-ms of CPU
//
// The display never waits for the classifier: a slow classification only makes windows older,
// and a window it cannot take in time is dropped (counted). --mode single is the source
// document's Option 1: one loop (one source stage, "single-loop") that grabs the newest frame,
// estimates, classifies every `stride` frames, and then displays, so the video stalls while the
// classifier runs.
//
// Web page on 127.0.0.1:7002 (common/web_server): the frames with the skeleton, the gesture and
// its confidence, the age of the classified window, live metrics; also /metrics, /stats.json.
// Flags: see --help and docs/examples/handpose.md.
#include "classifier.hpp"
#include "estimator.hpp"
#include "landmarks_csv.hpp"
#include "page.hpp"
#include "synthetic.hpp"

#include "common/cpu_work.hpp"
#include "common/process_stats.hpp"
#include "common/program.hpp"
#include "common/video_source.hpp"
#include "common/web_server.hpp"

#include <framepipe/framepipe.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace {

using namespace handpose;
namespace fe = framepipe_examples;
using clock_type = std::chrono::steady_clock;
constexpr const char* program = "framepipe-handpose";

struct settings {
    std::string mode = "pipelined";
    std::string source = "synthetic";
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
};

// ---------------------------------------------------------------------------------------------
// What flows through the graph.

using frame_ptr = std::shared_ptr<const fe::video_frame>; // stamped<cv::Mat>, pooled

struct estimate {
    frame_ptr frame; // null when replaying landmarks
    landmarks hand;
};
using estimate_item = framepipe::stamped<estimate>;
using hand_item = framepipe::stamped<landmarks>;

// The synthetic generator's label of recent frames, by sequence number, for accuracy only.
// The source writes a frame's entry before publishing the frame; the estimator reads it after
// taking the frame from the broadcaster, whose lock orders the two, so relaxed atomics suffice.
// An entry overwritten by a frame 256 later carries that frame's seq and is not mistaken for it.
class truth_table {
public:
    void put(std::uint64_t seq, gesture g) noexcept {
        slots_[seq % slots_.size()].store((seq << 8) | (static_cast<std::uint64_t>(g) + 1),
                                          std::memory_order_relaxed);
    }
    [[nodiscard]] std::optional<gesture> get(std::uint64_t seq) const noexcept {
        const auto v = slots_[seq % slots_.size()].load(std::memory_order_relaxed);
        if ((v >> 8) != seq || (v & 0xFF) == 0) {
            return std::nullopt;
        }
        return static_cast<gesture>((v & 0xFF) - 1);
    }

private:
    std::array<std::atomic<std::uint64_t>, 256> slots_{};
};

// ---------------------------------------------------------------------------------------------
// Sources of frames: the synthetic hand (drawn into pooled frames), or common/video_source.

class frame_source {
public:
    explicit frame_source(const settings& s) : s_(s) {
        if (s.source == "synthetic") {
            synthetic_options o;
            // A classifier window must fit inside one gesture for the truth to be clear.
            o.min_segment_s = static_cast<double>(s.window) / s.estimate_fps + 0.6;
            o.max_segment_s = o.min_segment_s + 1.0;
            generator_.emplace(s.seed, o);
            renderer_.emplace(s.seed, o);
            pool_ = std::make_unique<framepipe::pool<fe::video_frame>>(
                8, [o] { return fe::video_frame{cv::Mat(o.height, o.width, CV_8UC3), 0, {}}; });
        } else {
            video_.emplace(fe::video_source_options{.path = s.video_path,
                                                    .camera = s.source == "camera" ? s.camera : -1,
                                                    .fps = std::nullopt});
        }
    }

    // The rate the source stage runs at.
    [[nodiscard]] double pace_hz() const { return video_ ? video_->pace_hz() : s_.source_fps; }
    [[nodiscard]] std::string description() const {
        return video_ ? video_->description() : "synthetic hand, seed " + std::to_string(s_.seed);
    }

    // The next frame: synthetic frame number `synthetic_seq` (the newest one, when the caller is
    // the single loop), or the video's next frame. nullptr at the end of the input or on stop.
    // One thread.
    [[nodiscard]] std::shared_ptr<fe::video_frame> next(std::stop_token stop,
                                                        std::uint64_t synthetic_seq) {
        if (video_) {
            return video_->next(std::move(stop));
        }
        auto f = pool_->acquire(std::move(stop));
        if (!f) {
            return nullptr;
        }
        const double t = static_cast<double>(synthetic_seq) / s_.source_fps;
        const frame_truth truth = generator_->pose_at(t);
        renderer_->render(truth, t, f->value);
        f->seq = synthetic_seq;
        f->captured = clock_type::now();
        truth_.put(synthetic_seq, truth.label);
        return f;
    }

    // The generator's label of frame `seq` (synthetic only; never given to the estimator).
    [[nodiscard]] std::optional<gesture> truth(std::uint64_t seq) const noexcept {
        return video_ ? std::nullopt : truth_.get(seq);
    }

private:
    const settings& s_;
    std::optional<hand_generator> generator_;
    std::optional<renderer> renderer_;
    std::unique_ptr<framepipe::pool<fe::video_frame>> pool_;
    std::optional<fe::video_source> video_;
    truth_table truth_;
};

// The estimator: colour markers on the synthetic hand, or the user's landmark model.
class estimator {
public:
    explicit estimator(const settings& s) {
        if (!s.landmark_model.empty()) {
            model_.emplace(s.landmark_model, s.landmark_input_size);
        }
    }
    // One thread at a time.
    [[nodiscard]] landmarks operator()(const cv::Mat& image) {
        if (image.type() != CV_8UC3) {
            cv::Mat bgr;
            cv::cvtColor(image, bgr, image.channels() == 1 ? cv::COLOR_GRAY2BGR : cv::COLOR_BGRA2BGR);
            return (*this)(bgr);
        }
        return model_ ? model_->estimate(image) : markers_.estimate(image);
    }

private:
    marker_estimator markers_;
    std::optional<onnx_landmark_model> model_;
};

// The classifier, with its optional extra CPU work.
class classifier {
public:
    explicit classifier(const settings& s) : extra_(std::chrono::milliseconds(s.classifier_extra_ms)) {
        if (!s.classifier_model.empty()) {
            onnx_.emplace(s.classifier_model, s.window);
            name_ = "onnx";
        } else if (!s.templates_path.empty()) {
            dtw_.emplace(dtw_classifier::load(s.templates_path));
        } else {
            const synthetic_options o; // the synthetic hand's image size: points are normalised by it
            dtw_.emplace(generate_templates(s.templates_per_gesture, s.window, s.estimate_fps,
                                            template_seed_base, o));
        }
    }
    [[nodiscard]] const std::string& name() const noexcept { return name_; }
    [[nodiscard]] const dtw_classifier* dtw() const noexcept { return dtw_ ? &*dtw_ : nullptr; }

    // One thread at a time (cv::dnn::Net is not thread-safe).
    [[nodiscard]] classification operator()(std::span<const hand_points> frames) {
        const auto c = onnx_ ? onnx_->classify(frames) : dtw_->classify(frames);
        if (extra_.count() > 0) {
            // The source document's slow model: real computation on the window, not a sleep.
            const std::span<const std::uint8_t> bytes(
                reinterpret_cast<const std::uint8_t*>(frames.data()), frames.size_bytes());
            sink_ ^= fe::busy_compute(bytes, extra_);
        }
        return c;
    }

private:
    std::chrono::nanoseconds extra_;
    std::string name_ = "dtw";
    std::optional<dtw_classifier> dtw_;
    std::optional<onnx_classifier> onnx_;
    std::uint64_t sink_ = 0; // keeps the extra work observable
};

// ---------------------------------------------------------------------------------------------
// Measurements, shared by both modes.

struct meters {
    std::atomic<std::uint64_t> source_frames{0};
    std::atomic<std::uint64_t> estimated{0};
    std::atomic<std::uint64_t> joints_found{0};
    std::atomic<std::uint64_t> displayed{0};
    std::atomic<std::uint64_t> classified{0};
    std::atomic<std::uint64_t> scored{0};
    std::atomic<std::uint64_t> correct{0};
    std::atomic<std::uint64_t> jpeg_pool_misses{0};
    std::atomic<std::int64_t> display_gap_max_ns{0};
    framepipe::latency_histogram display_gap;
    framepipe::latency_histogram window_age;
    framepipe::latency_histogram classify_time;

    // The newest classification, for the display and the page. Guarded by mu.
    mutable std::mutex mu;
    std::optional<classification> last;
    double last_window_age_ms = 0;          // age of its window's newest frame at the start
    std::uint64_t last_window_seq = 0;      // seq of that frame
    clock_type::time_point last_window_captured{};
};

// Classifies one window: the part both modes share. One thread at a time.
void classify_window(const framepipe::window<hand_item>& w, classifier& c, meters& m,
                     std::vector<hand_points>& scratch) {
    const auto start = clock_type::now();
    const auto age = start - w.back().captured;
    m.window_age.record(age);
    scratch.clear();
    std::array<std::size_t, gesture_count> votes{};
    std::size_t labelled = 0;
    for (const auto& h : w) {
        scratch.push_back(h.value.points);
        if (h.value.truth) {
            ++votes[static_cast<std::size_t>(*h.value.truth)];
            ++labelled;
        }
    }
    const auto result = c(scratch);
    m.classify_time.record(clock_type::now() - start);
    // Scored against the truth when the whole window lies inside one gesture (a window that
    // straddles two gestures has no single right answer).
    const auto top = std::max_element(votes.begin(), votes.end());
    if (labelled == w.size() && *top == w.size()) {
        m.scored.fetch_add(1, std::memory_order_relaxed);
        if (static_cast<std::size_t>(result.label) == static_cast<std::size_t>(top - votes.begin())) {
            m.correct.fetch_add(1, std::memory_order_relaxed);
        }
    }
    m.classified.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard<std::mutex> lock(m.mu);
    m.last = result;
    m.last_window_age_ms = std::chrono::duration<double, std::milli>(age).count();
    m.last_window_seq = w.back().seq;
    m.last_window_captured = w.back().captured;
}

// The display: draws the skeleton and the current gesture over the frame, encodes it as JPEG and
// describes it for the page. One thread.
class display {
public:
    display(meters& m, int jpeg_quality)
        : m_(m), params_{cv::IMWRITE_JPEG_QUALITY, jpeg_quality},
          pool_(6, [] { return fe::encoded_frame{}; }) {}

    std::shared_ptr<const fe::encoded_frame> operator()(const estimate_item& e) {
        if (e.value.frame && !e.value.frame->value.empty()) {
            e.value.frame->value.copyTo(canvas_);
        } else {
            canvas_.create(480, 640, CV_8UC3); // replayed landmarks: a plain canvas
            canvas_.setTo(cv::Scalar(40, 40, 40));
        }
        const auto& hand = e.value.hand;
        const double w = canvas_.cols;
        const double h = canvas_.rows;
        auto pt = [&](std::size_t j) {
            return cv::Point(static_cast<int>(hand.points[3 * j] * w),
                             static_cast<int>(hand.points[3 * j + 1] * h));
        };
        for (const auto& [a, b] : bones) {
            cv::line(canvas_, pt(static_cast<std::size_t>(a)), pt(static_cast<std::size_t>(b)),
                     cv::Scalar(0, 255, 0), 2, cv::LINE_AA);
        }
        for (std::size_t j = 0; j < joint_count; ++j) {
            cv::circle(canvas_, pt(j), 3, cv::Scalar(0, 0, 255), cv::FILLED, cv::LINE_AA);
        }
        nlohmann::json points = nlohmann::json::array(); // the skeleton drawn, in pixels
        for (std::size_t j = 0; j < joint_count; ++j) {
            const auto p = pt(j);
            points.push_back({p.x, p.y});
        }
        nlohmann::json meta = {{"type", "frame"},
                               {"seq", e.seq},
                               {"points", std::move(points)},
                               {"joints_found", hand.joints_found},
                               {"gesture", nullptr},
                               {"confidence", nullptr},
                               {"window_age_ms", nullptr},
                               {"result_age_ms", nullptr},
                               {"result_seq", nullptr}};
        std::string caption = "gesture: (waiting for the first window)";
        {
            const std::lock_guard<std::mutex> lock(m_.mu);
            if (m_.last) {
                // How much older the classified window's newest frame is than this frame.
                const double result_age =
                    std::chrono::duration<double, std::milli>(e.captured - m_.last_window_captured).count();
                meta["gesture"] = std::string(name_of(m_.last->label));
                meta["confidence"] = fe::round2(m_.last->confidence);
                meta["window_age_ms"] = fe::round2(m_.last_window_age_ms);
                meta["result_age_ms"] = fe::round2(result_age);
                meta["result_seq"] = m_.last_window_seq;
                caption = "gesture: " + std::string(name_of(m_.last->label)) + " " +
                          std::to_string(std::lround(m_.last->confidence * 100)) +
                          "%  (window " + std::to_string(static_cast<int>(result_age)) + " ms old)";
            }
        }
        cv::putText(canvas_, caption, {10, 28}, cv::FONT_HERSHEY_SIMPLEX, 0.7,
                    cv::Scalar(255, 255, 255), 2, cv::LINE_AA);
        std::shared_ptr<fe::encoded_frame> out = pool_.try_acquire();
        if (!out) {
            // Every pooled buffer is held by browsers still sending: allocate rather than wait
            // (a slow client must not hold up the display). Counted.
            m_.jpeg_pool_misses.fetch_add(1, std::memory_order_relaxed);
            out = std::make_shared<fe::encoded_frame>();
        }
        cv::imencode(".jpg", canvas_, out->jpeg, params_);
        out->meta = meta.dump();
        out->seq = e.seq;
        out->captured = e.captured;

        const auto now = clock_type::now();
        if (last_display_ != clock_type::time_point{}) {
            const auto gap = now - last_display_;
            m_.display_gap.record(gap);
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(gap).count();
            if (ns > m_.display_gap_max_ns.load(std::memory_order_relaxed)) {
                m_.display_gap_max_ns.store(ns, std::memory_order_relaxed);
            }
        }
        last_display_ = now;
        m_.displayed.fetch_add(1, std::memory_order_relaxed);
        return out;
    }

private:
    meters& m_;
    std::vector<int> params_;
    framepipe::pool<fe::encoded_frame> pool_;
    cv::Mat canvas_;
    clock_type::time_point last_display_{};
};

// Everything the program reports: --json, /stats.json and the page's state messages.
nlohmann::json summary(const settings& s, const std::string& source_description,
                       const std::string& classifier_name, const meters& m,
                       const framepipe::pipeline& p, const framepipe::sliding_window<hand_item>& hands,
                       double elapsed) {
    const double secs = std::max(elapsed, 1e-3);
    auto per_s = [secs](const std::atomic<std::uint64_t>& n) {
        return fe::round2(static_cast<double>(n.load(std::memory_order_relaxed)) / secs);
    };
    const auto estimated = m.estimated.load(std::memory_order_relaxed);
    const auto ws = hands.stats();
    nlohmann::json j = {
        {"mode", s.mode},
        {"source", s.source},
        {"input", source_description},
        {"classifier", classifier_name},
        {"classifier_extra_ms", s.classifier_extra_ms},
        {"classifier_nice", s.mode == "pipelined" ? s.classifier_nice : 0},
        {"window", s.window},
        {"stride", s.stride},
        {"seconds", fe::round2(elapsed)},
        {"estimate_fps_target", s.estimate_fps},
        {"display_fps", per_s(m.displayed)},
        {"estimate_fps", per_s(m.estimated)},
        {"classify_per_s", per_s(m.classified)},
        {"window_age_p50_ms", fe::round2(fe::quantile_ms(m.window_age, 0.50))},
        {"window_age_p99_ms", fe::round2(fe::quantile_ms(m.window_age, 0.99))},
        {"windows_ready", ws.pushed},
        {"windows_classified", m.classified.load(std::memory_order_relaxed)},
        {"windows_dropped", ws.dropped},
        {"classify_ms_p50", fe::round2(fe::quantile_ms(m.classify_time, 0.50))},
        {"display_gap_p99_ms", fe::round2(fe::quantile_ms(m.display_gap, 0.99))},
        {"display_gap_max_ms",
         fe::round2(static_cast<double>(m.display_gap_max_ns.load(std::memory_order_relaxed)) / 1e6)},
        {"source_frames", m.source_frames.load(std::memory_order_relaxed)},
        {"joints_found_mean",
         estimated > 0 ? fe::round2(static_cast<double>(m.joints_found.load()) / static_cast<double>(estimated))
                       : 0.0},
        {"accuracy_windows", m.scored.load(std::memory_order_relaxed)},
        {"jpeg_pool_misses", m.jpeg_pool_misses.load(std::memory_order_relaxed)},
        {"peak_rss_mb", fe::round2(fe::peak_rss_mb())},
    };
    const auto scored = m.scored.load(std::memory_order_relaxed);
    if (scored > 0) {
        j["accuracy"] = fe::round2(static_cast<double>(m.correct.load()) / static_cast<double>(scored));
    } else {
        j["accuracy"] = nullptr; // no truth (a video, a camera, a CSV without labels) or no window yet
    }
    {
        const std::lock_guard<std::mutex> lock(m.mu);
        j["gesture"] = m.last ? nlohmann::json(std::string(name_of(m.last->label))) : nlohmann::json();
        j["confidence"] = m.last ? nlohmann::json(fe::round2(m.last->confidence)) : nlohmann::json();
        j["last_window_age_ms"] = m.last ? nlohmann::json(fe::round2(m.last_window_age_ms)) : nlohmann::json();
    }
    j.update(fe::snapshot_json(p.snapshot()));
    return j;
}

// ---------------------------------------------------------------------------------------------
// The run: both modes build a framepipe::pipeline (single: one stage doing everything).

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
    std::vector<recorded_frame> recorded;
    if (s.source == "landmarks") {
        recorded = read_landmarks_csv(s.landmarks_path);
    } else {
        est.emplace(s); // the model first: a bad model is reported before a bad video
        source.emplace(s);
    }
    std::optional<landmarks_csv_writer> csv_out;
    if (!s.write_landmarks_path.empty()) {
        csv_out.emplace(s.write_landmarks_path);
    }
    // One estimator thread at a time, each stage on its own thread: OpenCV's own worker threads
    // would only compete with the pipeline's on a small machine.
    cv::setNumThreads(1);

    meters m;
    framepipe::broadcaster<fe::video_frame> frames;
    framepipe::broadcaster<estimate_item> estimates;
    framepipe::broadcaster<fe::encoded_frame> jpegs;
    framepipe::sliding_window<hand_item> hands(s.window, s.stride);
    auto to_estimator = frames.subscribe({.capacity = 1, .max_rate_hz = s.estimate_fps, .name = "estimator"});
    auto to_display = estimates.subscribe({.capacity = 1, .name = "display"});
    auto to_window = estimates.subscribe({.capacity = 8, .name = "to_window"});
    std::optional<framepipe::subscription<fe::encoded_frame>> jpeg_sink_in; // --no-ui
    if (s.no_ui) {
        jpeg_sink_in = jpegs.subscribe({.capacity = 1, .name = "no-ui"});
    }
    // Channels are declared above the pipeline: its destructor closes them.
    display show(m, s.jpeg_quality);
    std::vector<hand_points> scratch;

    // One frame's estimate (or the next recorded one), written to the CSV if asked.
    std::size_t next_row = 0;
    auto estimate_of = [&](const frame_ptr& f) -> estimate_item {
        estimate e{f, (*est)(f->value)};
        e.hand.truth = source->truth(f->seq); // carried along for accuracy, never looked at
        m.estimated.fetch_add(1, std::memory_order_relaxed);
        m.joints_found.fetch_add(e.hand.joints_found, std::memory_order_relaxed);
        if (csv_out) {
            csv_out->write(f->seq, e.hand);
        }
        return framepipe::stamp(std::move(e), f->seq, f->captured);
    };
    auto next_recorded = [&]() -> std::optional<estimate_item> {
        if (next_row == recorded.size()) {
            return std::nullopt;
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
    p.channel(jpegs, "jpeg");
    std::uint64_t seq = 0;
    const auto t0 = clock_type::now();
    if (pipelined) {
        p.channel(estimates, "estimates").channel(hands, "hands");
        if (source) {
            p.channel(frames, "frames");
            p.source(
                "camera", frames,
                [&](framepipe::stage_context& ctx) -> std::optional<frame_ptr> {
                    auto f = source->next(ctx.stop_token(), seq++);
                    if (!f) {
                        return std::nullopt; // end of the video: the graph drains and ends
                    }
                    m.source_frames.fetch_add(1, std::memory_order_relaxed);
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
        p.sink("classifier", hands, [&, niced = false](const framepipe::window<hand_item>& w) mutable {
            if (!niced) {
                // The slow model is background work: on a busy machine the estimator and the
                // display should get the CPU first. Linux nice values are per thread.
                niced = true;
                (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), s.classifier_nice);
            }
            classify_window(w, cls, m, scratch);
        });
    } else {
        // Option 1: grab the newest frame, estimate, classify when a window is ready (the video
        // waits), display. The same sliding_window block, filled and emptied by the one loop, so
        // both modes classify the same windows (one every `stride` estimates).
        p.source(
            "single-loop", jpegs,
            [&](framepipe::stage_context& ctx) -> std::optional<std::shared_ptr<const fe::encoded_frame>> {
                std::optional<estimate_item> e;
                if (source) {
                    // The synthetic camera ran on while we were busy: take its newest frame.
                    const double t = std::chrono::duration<double>(clock_type::now() - t0).count();
                    const auto newest = static_cast<std::uint64_t>(t * s.source_fps);
                    auto f = source->next(ctx.stop_token(), newest);
                    if (!f) {
                        return std::nullopt;
                    }
                    m.source_frames.store(s.source == "synthetic" ? newest + 1 : f->seq + 1,
                                          std::memory_order_relaxed);
                    e = estimate_of(f);
                } else {
                    e = next_recorded();
                    if (!e) {
                        return std::nullopt;
                    }
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

    std::atomic<double> elapsed_at_stop{-1};
    auto elapsed = [&] {
        const double e = elapsed_at_stop.load();
        return e >= 0 ? e : std::chrono::duration<double>(clock_type::now() - t0).count();
    };
    const std::string description = source ? source->description() : "landmarks " + s.landmarks_path;
    auto stats = [&] { return summary(s, description, cls.name(), m, p, hands, elapsed()); };
    std::optional<fe::web_server> server;
    if (!s.no_ui) {
        server.emplace(fe::web_server_options{.host = s.host,
                                              .port = static_cast<unsigned short>(s.port),
                                              .page_html = page_html,
                                              .metrics_text = [&p] { return framepipe::to_prometheus(p.snapshot()); },
                                              .stats_json = [&stats] { return stats().dump(); },
                                              .state_json =
                                                  [&stats] {
                                                      auto j = stats();
                                                      j["type"] = "state";
                                                      return j.dump();
                                                  },
                                              .log_name = program},
                       jpegs);
    }

    FILE* console = s.json ? stderr : stdout;
    p.start();
    if (server) {
        server->start();
        std::fprintf(console, "%s: serving the live UI at http://%s:%u/ (also /metrics, /stats.json)\n",
                     program, s.host.c_str(), static_cast<unsigned>(server->port()));
    }
    std::fprintf(console, "%s: %s, %s mode, classifier %s\n", program, description.c_str(),
                 s.mode.c_str(), cls.name().c_str());
    std::fflush(console);

    // Until --duration, the end of the input, or Ctrl-C. Wakes every 100 ms to look (a signal
    // handler cannot notify a condition variable).
    fe::install_stop_signals();
    const auto until = s.duration > 0 ? t0 + std::chrono::duration_cast<clock_type::duration>(
                                                 std::chrono::duration<double>(s.duration))
                                      : clock_type::time_point::max();
    {
        std::mutex mu;
        std::condition_variable cv;
        std::unique_lock<std::mutex> lock(mu);
        while (p.running() && !fe::stop_requested() && clock_type::now() < until) {
            cv.wait_until(lock, std::min(until, clock_type::now() + std::chrono::milliseconds(100)));
        }
    }
    elapsed_at_stop = std::chrono::duration<double>(clock_type::now() - t0).count();
    auto j = stats(); // the rates over the run, before the orderly stop drains what is buffered
    if (server) {
        server->stop();
    }
    const auto report = p.request_stop(std::chrono::seconds(10));
    p.wait(); // rethrows a stage's failure (a model failing on a frame): exit 2, one line
    if (!report.clean) {
        throw std::runtime_error("stages did not stop within 10 s");
    }
    if (csv_out) {
        csv_out->close();
    }
    j.erase("stages"); // live figures for the page; the summary keeps the totals
    j.erase("channels");
    std::printf("%s\n", s.json ? j.dump().c_str() : j.dump(2).c_str());
    return 0;
}

// Checks that need more than one flag. Throws usage_error.
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
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"framepipe-handpose: a hand-pose estimator at 15 fps and a slow gesture "
                 "classifier over a 30-frame window, without stalling the video"};
    settings s;
    app.add_option("--mode", s.mode, "pipelined (framepipe, default) or single (one loop, Option 1)")
        ->check(CLI::IsMember({"single", "pipelined"}));
    app.add_option("--source", s.source, "synthetic (default), landmarks, video or camera")
        ->check(CLI::IsMember({"synthetic", "landmarks", "video", "camera"}));
    app.add_option("--seed", s.seed, "synthetic hand: random seed (default 7)");
    app.add_option("--source-fps", s.source_fps, "synthetic camera frame rate (default 30)")
        ->check(CLI::Range(1.0, 240.0));
    app.add_option("--estimate-fps", s.estimate_fps, "estimator rate (default 15)")
        ->check(CLI::Range(1.0, 120.0));
    app.add_option("--window", s.window, "points-frames per classified window (default 30)")
        ->check(CLI::Range(2, 1000));
    app.add_option("--stride", s.stride, "new points-frames between windows (default 5)")
        ->check(CLI::Range(1, 1000));
    app.add_option("--landmarks", s.landmarks_path, "replay recorded landmarks (CSV) instead of video");
    app.add_option("--video", s.video_path, "video file or stream URL (needs --landmark-model)");
    app.add_option("--camera", s.camera, "camera index (needs --landmark-model)")->check(CLI::Range(0, 64));
    app.add_option("--landmark-model", s.landmark_model, "ONNX landmark model for --video/--camera");
    app.add_option("--landmark-input-size", s.landmark_input_size,
                   "its square input size in pixels (default 224)")
        ->check(CLI::Range(8, 4096));
    app.add_option("--classifier", s.classifier_model, "ONNX classifier, input 1x<window>x21x3");
    app.add_option("--templates", s.templates_path, "load DTW templates (JSON)");
    app.add_option("--write-templates", s.write_templates_path, "write the DTW templates (JSON) and exit");
    app.add_option("--templates-per-gesture", s.templates_per_gesture,
                   "generated templates per gesture (default 20)")
        ->check(CLI::Range(1, 1000));
    app.add_option("--write-landmarks", s.write_landmarks_path, "write the estimated landmarks (CSV)");
    app.add_option("--classifier-extra-ms", s.classifier_extra_ms,
                   "extra CPU time per classification, in ms (default 0)")
        ->check(CLI::Range(0, 60000));
    app.add_option("--classifier-nice", s.classifier_nice,
                   "pipelined mode: nice value of the classifier's thread (default 5)")
        ->check(CLI::Range(0, 19));
    app.add_option("--duration", s.duration, "seconds to run (default 0: until the input ends or Ctrl-C)")
        ->check(CLI::Range(0.0, 86400.0));
    app.add_flag("--no-ui", s.no_ui, "run headless (no web page)");
    app.add_option("--host", s.host, "address for the web page (default 127.0.0.1)");
    app.add_option("--port", s.port, "port for the web page (default 7002; 0 = any)")
        ->check(CLI::Range(0, 65535));
    app.add_option("--jpeg-quality", s.jpeg_quality, "JPEG quality of the page's frames (default 80)")
        ->check(CLI::Range(1, 100));
    app.add_flag("--json", s.json, "print the summary as one JSON line at exit");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        fe::print_error(program, e.what());
        return 2;
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
