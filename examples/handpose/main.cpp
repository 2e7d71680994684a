// framepipe-handpose: the second source document's hand-gesture pipeline, rebuilt on framepipe.
//
// A hand-pose estimator turns frames into 21 hand points at 15 fps; a slow classifier labels
// the last 30 of them. --mode pipelined (default) runs this graph:
//
//   [camera 30 fps]  synthetic hand / --video / --camera (pooled, stamped frames)
//         |
//   broadcaster "frames"
//         |
//   subscription "estimator" (capacity 1, max 15 Hz: the newest frame, 15 a second)
//         |
//   [estimator]  colour markers -> 21 x 3 points (or --landmark-model through cv::dnn)
//         |                              ([landmarks] replays --landmarks file.csv here instead)
//   broadcaster "estimates"
//         |                                  |
//   subscription "display" (cap 1)     subscription "to_window" (cap 8)
//         |                                  |
//   [display] <-- latest result --+    [windower]
//   skeleton, label, web page     |          |
//                                 |    sliding_window "hands" (30 points-frames, a new one every 5)
//                                 |          |
//                                 +--- [classifier]  DTW nearest neighbour (or --classifier
//                                                     model.onnx), + --classifier-extra-ms of CPU
//
// The display never waits for the classifier: a slow classification only makes windows older
// (and drops the ones it cannot take, counted). --mode single is the source document's Option 1,
// one loop: grab the newest frame, estimate, and every `stride` frames classify before showing,
// so the video stalls while the classifier runs.
//
// Flags: see --help and docs/examples/handpose.md.
#include "classifier.hpp"
#include "estimator.hpp"
#include "landmarks_csv.hpp"
#include "synthetic.hpp"

#include "common/cpu_work.hpp"
#include "common/process_stats.hpp"

#include <framepipe/framepipe.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace {

using namespace handpose;
using clock_type = std::chrono::steady_clock;

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
    double duration = 0;
    bool no_ui = false;
    int port = 7002;
    bool json = false;
};

std::atomic<bool> interrupted{false};
extern "C" void on_signal(int /*sig*/) { interrupted.store(true); }

// ---------------------------------------------------------------------------------------------
// What flows through the graph.

struct video_frame {
    cv::Mat image;
    std::optional<gesture> truth; // the generator's label (synthetic source only)
};
using frame_item = framepipe::stamped<video_frame>;

struct estimate {
    std::shared_ptr<const frame_item> frame; // null when replaying landmarks
    landmarks hand;
};
using estimate_item = framepipe::stamped<estimate>;
using hand_item = framepipe::stamped<landmarks>;

// ---------------------------------------------------------------------------------------------
// Sources of frames: the synthetic hand, a video file, a camera.

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
        } else {
            if (s.source == "video") {
                capture_.open(s.video_path);
            } else {
                capture_.open(s.camera);
            }
            if (!capture_.isOpened()) {
                throw input_error(s.source == "video" ? "--video " + s.video_path + ": cannot open"
                                                      : "--camera " + std::to_string(s.camera) +
                                                            ": cannot open");
            }
            const double fps = capture_.get(cv::CAP_PROP_FPS);
            file_fps_ = fps > 0 && fps < 1000 ? fps : 30.0;
        }
    }

    // Pace of the source stage: the synthetic camera's rate, a video file's own rate; a camera
    // paces itself.
    [[nodiscard]] double pace_hz() const {
        if (s_.source == "synthetic") {
            return s_.source_fps;
        }
        return s_.source == "video" ? file_fps_ : 0.0;
    }

    // Frame `seq` into `out`: the synthetic hand at time t (seconds), or the next frame of the
    // video / camera. false at the end of a video file.
    bool read(double t, video_frame& out) {
        if (generator_) {
            const frame_truth truth = generator_->pose_at(t);
            renderer_->render(truth, t, out.image);
            out.truth = truth.label;
            return true;
        }
        out.truth.reset();
        return capture_.read(out.image) && !out.image.empty();
    }

private:
    const settings& s_;
    std::optional<hand_generator> generator_;
    std::optional<renderer> renderer_;
    cv::VideoCapture capture_;
    double file_fps_ = 30;
};

// The estimator: colour markers on the synthetic hand, or the user's landmark model.
class estimator {
public:
    explicit estimator(const settings& s) {
        if (!s.landmark_model.empty()) {
            model_.emplace(s.landmark_model, s.landmark_input_size);
        }
    }
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
            synthetic_options o; // the synthetic hand's image size: points are normalised by it
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
            const auto* bytes = reinterpret_cast<const std::uint8_t*>(frames.data());
            sink_ ^= framepipe_examples::busy_compute(
                std::span<const std::uint8_t>(bytes, frames.size_bytes()), extra_);
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

struct result_state {
    std::optional<classification> last;
    double window_age_ms = 0;            // age of the newest frame of that window at start
    clock_type::time_point window_newest{}; // capture time of that frame
    std::uint64_t classified = 0;
};

struct meters {
    std::atomic<std::uint64_t> source_frames{0};
    std::atomic<std::uint64_t> estimated{0};
    std::atomic<std::uint64_t> joints_found{0};
    std::atomic<std::uint64_t> displayed{0};
    std::atomic<std::uint64_t> classified{0};
    std::atomic<std::uint64_t> scored{0};
    std::atomic<std::uint64_t> correct{0};
    std::atomic<std::int64_t> display_gap_max_ns{0};
    framepipe::latency_histogram display_gap;
    framepipe::latency_histogram window_age;
    framepipe::latency_histogram classify_time;
    clock_type::time_point last_display{}; // display thread only

    std::mutex mu;
    result_state result; // guarded by mu
};

// Classifies one window: the part both modes share.
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
    m.result.last = result;
    m.result.window_age_ms = std::chrono::duration<double, std::milli>(age).count();
    m.result.window_newest = w.back().captured;
    ++m.result.classified;
}

// The display: draws the skeleton and the current gesture over the frame. One thread.
class display {
public:
    explicit display(meters& m) : m_(m) {}

    void show(const cv::Mat* image, const landmarks& hand) {
        if (image != nullptr && !image->empty()) {
            image->copyTo(canvas_);
        } else {
            canvas_.create(480, 640, CV_8UC3);
            canvas_.setTo(cv::Scalar(40, 40, 40));
        }
        const double w = canvas_.cols;
        const double h = canvas_.rows;
        auto pt = [&](std::size_t j) {
            return cv::Point(static_cast<int>(hand.points[3 * j] * w),
                             static_cast<int>(hand.points[3 * j + 1] * h));
        };
        for (const auto& [a, b] : bones) {
            cv::line(canvas_, pt(static_cast<std::size_t>(a)), pt(static_cast<std::size_t>(b)),
                     cv::Scalar(0, 255, 0), 2);
        }
        for (std::size_t j = 0; j < joint_count; ++j) {
            cv::circle(canvas_, pt(j), 3, cv::Scalar(0, 0, 255), cv::FILLED);
        }
        std::string text = "...";
        {
            const std::lock_guard<std::mutex> lock(m_.mu);
            if (m_.result.last) {
                text = std::string(name_of(m_.result.last->label)) + " " +
                       std::to_string(static_cast<int>(m_.result.last->confidence * 100)) + "%";
            }
        }
        cv::putText(canvas_, text, {12, 32}, cv::FONT_HERSHEY_SIMPLEX, 0.9, cv::Scalar(255, 255, 255), 2);
        const auto now = clock_type::now();
        if (m_.last_display != clock_type::time_point{}) {
            const auto gap = now - m_.last_display;
            m_.display_gap.record(gap);
            const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(gap).count();
            if (ns > m_.display_gap_max_ns.load(std::memory_order_relaxed)) {
                m_.display_gap_max_ns.store(ns, std::memory_order_relaxed);
            }
        }
        m_.last_display = now;
        m_.displayed.fetch_add(1, std::memory_order_relaxed);
    }

    [[nodiscard]] const cv::Mat& canvas() const noexcept { return canvas_; }

private:
    meters& m_;
    cv::Mat canvas_;
};

// ---------------------------------------------------------------------------------------------
// Run control: until --duration has passed, the input has ended, or Ctrl-C.

struct run_clock {
    clock_type::time_point t0;
    std::optional<clock_type::time_point> deadline;
};

// Window figures the summary reports, per mode.
struct window_figures {
    std::uint64_t ready = 0;
    std::uint64_t dropped = 0;
};

nlohmann::json summarise(const settings& s, const std::string& classifier_name, const meters& m,
                         double elapsed, const window_figures& wf) {
    auto ms = [](std::chrono::nanoseconds d) {
        return std::chrono::duration<double, std::milli>(d).count();
    };
    auto per_s = [elapsed](const std::atomic<std::uint64_t>& n) {
        return elapsed > 0 ? static_cast<double>(n.load()) / elapsed : 0.0;
    };
    const auto estimated = m.estimated.load();
    nlohmann::json j = {
        {"mode", s.mode},
        {"source", s.source},
        {"classifier", classifier_name},
        {"classifier_extra_ms", s.classifier_extra_ms},
        {"seconds", elapsed},
        {"display_fps", per_s(m.displayed)},
        {"estimate_fps", per_s(m.estimated)},
        {"classify_per_s", per_s(m.classified)},
        {"window_age_p50_ms", ms(m.window_age.quantile(0.50))},
        {"window_age_p99_ms", ms(m.window_age.quantile(0.99))},
        {"windows_ready", wf.ready},
        {"windows_classified", m.classified.load()},
        {"windows_dropped", wf.dropped},
        {"classify_ms_p50", ms(m.classify_time.quantile(0.50))},
        {"display_gap_p99_ms", ms(m.display_gap.quantile(0.99))},
        {"display_gap_max_ms", static_cast<double>(m.display_gap_max_ns.load()) / 1e6},
        {"source_frames", m.source_frames.load()},
        {"joints_found_mean",
         estimated > 0 ? static_cast<double>(m.joints_found.load()) / static_cast<double>(estimated)
                       : 0.0},
        {"accuracy_windows", m.scored.load()},
        {"peak_rss_mb", framepipe_examples::peak_rss_mb()},
    };
    if (m.scored.load() > 0) {
        j["accuracy"] = static_cast<double>(m.correct.load()) / static_cast<double>(m.scored.load());
    } else {
        j["accuracy"] = nullptr; // no truth (a video, a camera, or a CSV without labels)
    }
    return j;
}

// Waits until the deadline, Ctrl-C, or `finished()` is true; wakes every 100 ms to look.
template <class Finished>
void wait_for_end(const run_clock& rc, Finished finished) {
    std::mutex mu;
    std::condition_variable cv;
    std::unique_lock<std::mutex> lock(mu);
    while (!interrupted.load() && !finished()) {
        auto until = clock_type::now() + std::chrono::milliseconds(100);
        if (rc.deadline) {
            if (clock_type::now() >= *rc.deadline) {
                return;
            }
            until = std::min(until, *rc.deadline);
        }
        cv.wait_until(lock, until);
    }
}

// ---------------------------------------------------------------------------------------------
// --mode pipelined

nlohmann::json run_pipelined(const settings& s) {
    meters m;
    classifier cls(s);
    std::optional<landmarks_csv_writer> csv_out;
    if (!s.write_landmarks_path.empty()) {
        csv_out.emplace(s.write_landmarks_path);
    }
    std::vector<recorded_frame> recorded;
    std::optional<frame_source> source;
    std::optional<estimator> est;
    if (s.source == "landmarks") {
        recorded = read_landmarks_csv(s.landmarks_path);
    } else {
        est.emplace(s); // the model first: a bad model is reported before a bad video
        source.emplace(s);
    }

    framepipe::pool<frame_item> buffers(6, [] { return frame_item{{cv::Mat(480, 640, CV_8UC3), {}}, 0, {}}; });
    framepipe::broadcaster<frame_item> frames;
    auto to_estimator = frames.subscribe(
        {.capacity = 1, .max_rate_hz = s.estimate_fps, .name = "estimator"});
    framepipe::broadcaster<estimate_item> estimates;
    auto to_display = estimates.subscribe({.capacity = 1, .name = "display"});
    auto to_window = estimates.subscribe({.capacity = 8, .name = "to_window"});
    framepipe::sliding_window<hand_item> hands(s.window, s.stride);

    framepipe::pipeline p("handpose");
    p.channel(frames, "frames").channel(estimates, "estimates").channel(hands, "hands");
    std::uint64_t seq = 0;
    std::size_t next_row = 0;
    if (source) {
        p.source(
            "camera", frames,
            [&](framepipe::stage_context& ctx) -> std::optional<std::shared_ptr<frame_item>> {
                auto f = buffers.acquire(ctx.stop_token());
                if (!f) {
                    return std::nullopt;
                }
                const double t = static_cast<double>(seq) / s.source_fps;
                if (!source->read(t, f->value)) {
                    return std::nullopt; // end of the video: the graph drains and ends
                }
                f->seq = seq++;
                f->captured = clock_type::now();
                m.source_frames.fetch_add(1, std::memory_order_relaxed);
                return f;
            },
            source->pace_hz());
        p.stage("estimator", to_estimator, estimates,
                [&](const std::shared_ptr<const frame_item>& f) {
                    estimate e{f, (*est)(f->value.image)};
                    e.hand.truth = f->value.truth; // carried along for accuracy, never looked at
                    m.estimated.fetch_add(1, std::memory_order_relaxed);
                    m.joints_found.fetch_add(e.hand.joints_found, std::memory_order_relaxed);
                    if (csv_out) {
                        csv_out->write(f->seq, e.hand);
                    }
                    return framepipe::stamp(std::move(e), f->seq, f->captured);
                });
    } else {
        p.source(
            "landmarks", estimates,
            [&]() -> std::optional<estimate_item> {
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
            },
            s.estimate_fps);
    }
    display disp(m);
    p.sink("display", to_display, [&](const std::shared_ptr<const estimate_item>& e) {
        disp.show(e->value.frame ? &e->value.frame->value.image : nullptr, e->value.hand);
    });
    p.stage("windower", to_window, hands, [](const std::shared_ptr<const estimate_item>& e) {
        return framepipe::stamp(e->value.hand, e->seq, e->captured);
    });
    std::vector<hand_points> scratch;
    p.sink("classifier", hands, [&](const framepipe::window<hand_item>& w) {
        classify_window(w, cls, m, scratch);
    });

    run_clock rc{clock_type::now(), {}};
    if (s.duration > 0) {
        rc.deadline = rc.t0 + std::chrono::duration_cast<clock_type::duration>(
                                  std::chrono::duration<double>(s.duration));
    }
    p.start();
    wait_for_end(rc, [&] { return !p.running(); });
    const double elapsed = std::chrono::duration<double>(clock_type::now() - rc.t0).count();
    // Figures over the measured time, before the orderly stop drains what is buffered.
    const auto ws = hands.stats();
    auto j = summarise(s, cls.name(), m, elapsed, {ws.ready, ws.dropped});
    p.request_stop();
    p.wait();
    if (csv_out) {
        csv_out->close();
    }
    return j;
}

// ---------------------------------------------------------------------------------------------
// --mode single: the source document's Option 1, one loop.

nlohmann::json run_single(const settings& s) {
    meters m;
    classifier cls(s);
    std::optional<landmarks_csv_writer> csv_out;
    if (!s.write_landmarks_path.empty()) {
        csv_out.emplace(s.write_landmarks_path);
    }
    std::vector<recorded_frame> recorded;
    std::optional<frame_source> source;
    std::optional<estimator> est;
    if (s.source == "landmarks") {
        recorded = read_landmarks_csv(s.landmarks_path);
    } else {
        est.emplace(s); // the model first: a bad model is reported before a bad video
        source.emplace(s);
    }
    // The same window block, filled and emptied by the one loop, so both modes classify the
    // same windows (one every `stride` estimates).
    framepipe::sliding_window<hand_item> hands(s.window, s.stride);
    display disp(m);
    std::vector<hand_points> scratch;
    framepipe::rate_limiter pace(s.estimate_fps);
    frame_item frame{{cv::Mat(480, 640, CV_8UC3), {}}, 0, {}};
    std::size_t next_row = 0;
    std::uint64_t estimated_seq = 0;

    run_clock rc{clock_type::now(), {}};
    if (s.duration > 0) {
        rc.deadline = rc.t0 + std::chrono::duration_cast<clock_type::duration>(
                                  std::chrono::duration<double>(s.duration));
    }
    for (;;) {
        if (interrupted.load() || (rc.deadline && clock_type::now() >= *rc.deadline)) {
            break;
        }
        (void)pace.acquire();
        landmarks hand;
        const cv::Mat* image = nullptr;
        std::uint64_t seq = 0;
        auto captured = clock_type::now();
        if (source) {
            // Grab: the synthetic camera's newest frame (it ran on while we were busy), or the
            // next frame of a video / camera.
            const double t = std::chrono::duration<double>(captured - rc.t0).count();
            seq = s.source == "synthetic" ? static_cast<std::uint64_t>(t * s.source_fps)
                                          : estimated_seq;
            if (!source->read(static_cast<double>(seq) / s.source_fps, frame.value)) {
                break;
            }
            m.source_frames.store(s.source == "synthetic" ? seq + 1 : estimated_seq + 1);
            hand = (*est)(frame.value.image);
            hand.truth = frame.value.truth;
            image = &frame.value.image;
        } else {
            if (next_row == recorded.size()) {
                break;
            }
            hand = recorded[next_row].hand;
            seq = recorded[next_row++].frame;
            m.source_frames.fetch_add(1);
        }
        ++estimated_seq;
        m.estimated.fetch_add(1, std::memory_order_relaxed);
        m.joints_found.fetch_add(hand.joints_found, std::memory_order_relaxed);
        if (csv_out) {
            csv_out->write(seq, hand);
        }
        (void)hands.push(framepipe::stamp(hand, seq, captured));
        if (auto w = hands.try_pop()) {
            classify_window(*w, cls, m, scratch); // the video waits here
        }
        disp.show(image, hand);
    }
    const double elapsed = std::chrono::duration<double>(clock_type::now() - rc.t0).count();
    const auto ws = hands.stats();
    auto j = summarise(s, cls.name(), m, elapsed, {ws.ready, ws.dropped});
    if (csv_out) {
        csv_out->close();
    }
    return j;
}

// Checks that need more than one flag. Throws input_error.
void check_settings(settings& s, const CLI::App& app) {
    const bool has_landmarks = app.count("--landmarks") > 0;
    const bool has_video = app.count("--video") > 0;
    const bool has_camera = app.count("--camera") > 0;
    const bool explicit_source = app.count("--source") > 0;
    std::string implied = "synthetic";
    if (has_landmarks + has_video + has_camera > 1) {
        throw input_error("--landmarks, --video and --camera exclude each other");
    }
    if (has_landmarks) {
        implied = "landmarks";
    } else if (has_video) {
        implied = "video";
    } else if (has_camera) {
        implied = "camera";
    }
    if (explicit_source && s.source != implied) {
        throw input_error("--source " + s.source + ": " +
                          (implied == "synthetic" ? std::string("needs --") + s.source
                                                  : "conflicts with the --" + implied + " flag"));
    }
    s.source = implied;
    if ((s.source == "video" || s.source == "camera") && s.landmark_model.empty()) {
        throw input_error("--" + s.source +
                          ": needs --landmark-model (the built-in estimator only knows the "
                          "synthetic hand's markers)");
    }
    if (!s.landmark_model.empty() && s.source != "video" && s.source != "camera") {
        throw input_error("--landmark-model: only with --video or --camera");
    }
    if (s.stride > s.window) {
        throw input_error("--stride: must be between 1 and --window (" + std::to_string(s.window) + ")");
    }
    if (!s.classifier_model.empty() && !s.templates_path.empty()) {
        throw input_error("--classifier and --templates exclude each other");
    }
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"framepipe-handpose: a hand-pose estimator at 15 fps and a slow gesture "
                 "classifier over a 30-frame window, without stalling the video"};
    settings s;
    app.add_option("--mode", s.mode, "pipelined (framepipe, default) or single (one loop)")
        ->check(CLI::IsMember({"single", "pipelined"}));
    app.add_option("--source", s.source, "synthetic (default), landmarks, video or camera")
        ->check(CLI::IsMember({"synthetic", "landmarks", "video", "camera"}));
    app.add_option("--seed", s.seed, "synthetic hand: random seed");
    app.add_option("--source-fps", s.source_fps, "synthetic camera frame rate")
        ->check(CLI::Range(1.0, 240.0));
    app.add_option("--estimate-fps", s.estimate_fps, "estimator rate")->check(CLI::Range(1.0, 120.0));
    app.add_option("--window", s.window, "points-frames per classified window")
        ->check(CLI::Range(2, 1000));
    app.add_option("--stride", s.stride, "new points-frames between windows")->check(CLI::Range(1, 1000));
    app.add_option("--landmarks", s.landmarks_path, "replay recorded landmarks (CSV)");
    app.add_option("--video", s.video_path, "video file (needs --landmark-model)");
    app.add_option("--camera", s.camera, "camera index (needs --landmark-model)")->check(CLI::Range(0, 64));
    app.add_option("--landmark-model", s.landmark_model, "ONNX landmark model for --video/--camera");
    app.add_option("--landmark-input-size", s.landmark_input_size, "its square input size")
        ->check(CLI::Range(8, 4096));
    app.add_option("--classifier", s.classifier_model, "ONNX classifier, input 1x<window>x21x3");
    app.add_option("--templates", s.templates_path, "load DTW templates (JSON)");
    app.add_option("--write-templates", s.write_templates_path, "write the DTW templates and exit");
    app.add_option("--templates-per-gesture", s.templates_per_gesture, "generated templates per gesture")
        ->check(CLI::Range(1, 1000));
    app.add_option("--write-landmarks", s.write_landmarks_path, "write the estimated landmarks (CSV)");
    app.add_option("--classifier-extra-ms", s.classifier_extra_ms, "extra CPU time per classification")
        ->check(CLI::Range(0, 60000));
    app.add_option("--duration", s.duration, "seconds to run (0: until the input ends or Ctrl-C)")
        ->check(CLI::Range(0.0, 86400.0));
    app.add_flag("--no-ui", s.no_ui, "run headless (no web page)");
    app.add_option("--port", s.port, "web page port on 127.0.0.1")->check(CLI::Range(1, 65535));
    app.add_flag("--json", s.json, "print one JSON summary at exit");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "framepipe-handpose: %s\n", first_line(e.what()).c_str());
        return 2;
    }
    // Errors reach the user as one line from us, not as OpenCV's own log lines.
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    try {
        check_settings(s, app);
        if (!s.write_templates_path.empty()) {
            classifier c(s);
            if (c.dtw() == nullptr) {
                throw input_error("--write-templates: the ONNX classifier has no templates");
            }
            c.dtw()->save(s.write_templates_path);
            return 0;
        }
        std::signal(SIGINT, on_signal);
        std::signal(SIGTERM, on_signal);
        const auto j = s.mode == "single" ? run_single(s) : run_pipelined(s);
        std::printf("%s\n", s.json ? j.dump().c_str() : j.dump(2).c_str());
        return 0;
    } catch (const framepipe::stage_error& e) {
        std::fprintf(stderr, "framepipe-handpose: %s\n", first_line(e.what()).c_str());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "framepipe-handpose: %s\n", first_line(e.what()).c_str());
        return 2;
    }
}
