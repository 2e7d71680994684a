// framepipe-basic: the first source document's experiment in plain C++ (no OpenCV).
//
// A 30 fps camera feeds a UI that wants 15 fps and a detector that needs --detector-ms of CPU
// per frame (default 200: it manages 5 fps). Three ways to wire it:
//
//   --mode inline       one thread:  [camera] -> [detect] -> [show]
//                       the UI can only go as fast as the detector.
//
//   --mode unbounded    [camera] --+--> unbounded queue --> [detector]     (every frame, late)
//                                  +--> unbounded queue --> [ui 15 fps]
//                       the detector's backlog, its input age and memory grow without end.
//
//   --mode framepipe    [camera 30 fps, pooled stamped frames]
//                            |
//                       broadcaster "frames"
//                         |                         |
//                 [ui: 15 fps, cap 1]        [detector: latest slot]
//                         |                         |
//                      (show) <-- latest_slot <-- (detect)
//                                  "boxes"
//                       the UI keeps 15 fps and the detector always works on a fresh frame.
//
// Each mode is a framepipe::pipeline, run the same way (common/run_loop.hpp): inline is one
// source stage doing everything on its thread; unbounded joins its threads with the naive
// mutex + deque queues, plugged in as channels of our own. Flags: --seconds N, --detector-ms M,
// --json (one JSON object at exit), --compare (all three modes, each in its own process so that
// peak memory is its own, side by side).
#include "common/cli.hpp"
#include "common/cpu_work.hpp"
#include "common/process_stats.hpp"
#include "common/program.hpp"
#include "common/run_loop.hpp"

#include <framepipe/framepipe.hpp>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fe = framepipe_examples;
using clock_type = std::chrono::steady_clock;
using pixels = std::vector<std::uint8_t>;
using frame = framepipe::stamped<pixels>;
using frame_ptr = std::shared_ptr<const frame>;

constexpr const char* program = "framepipe-basic";
constexpr int width = 640;
constexpr int height = 480;
constexpr std::size_t frame_bytes = std::size_t{width} * height * 3;
constexpr auto ui_work = std::chrono::milliseconds(2); // stands in for JPEG encoding

struct settings {
    std::string mode = "framepipe";
    double seconds = 10;
    int detector_ms = 200;
    double source_fps = 30;
    double ui_fps = 15;
    bool json = false;
};

// What every mode measures, the same way.
struct meters {
    std::atomic<std::uint64_t> frames{0};     // frames the camera delivered to the program
    std::atomic<std::uint64_t> shown{0};      // frames the UI showed
    std::atomic<std::uint64_t> detections{0}; // frames the detector finished
    std::atomic<std::uint64_t> backlog{0};    // frames queued for the detector (unbounded mode)
    framepipe::latency_histogram detector_age; // frame age when inference starts
};

// Draws a synthetic frame: grey background and a bright square that moves with `seq`.
void draw(pixels& px, std::uint64_t seq) {
    std::fill(px.begin(), px.end(), std::uint8_t{64});
    const auto x0 = static_cast<int>((seq * 8) % (width - 64));
    for (int y = 200; y < 264; ++y) {
        const auto row = static_cast<std::size_t>(y) * width * 3;
        std::fill_n(px.begin() + static_cast<std::ptrdiff_t>(row + static_cast<std::size_t>(x0) * 3),
                    64 * 3, std::uint8_t{240});
    }
}

void detect(const frame& f, const settings& s, meters& m) {
    m.detector_age.record(clock_type::now() - f.captured);
    (void)fe::busy_compute(f.value, std::chrono::milliseconds(s.detector_ms));
    m.detections.fetch_add(1, std::memory_order_relaxed);
}

void show(const frame& f, meters& m) {
    (void)fe::busy_compute(f.value, ui_work);
    m.shown.fetch_add(1, std::memory_order_relaxed);
}

// Rates and ages over the measured window, taken when it ends (before the orderly stop, whose
// drain would add one stale detection per run).
nlohmann::json summarise(const settings& s, const meters& m, double elapsed_s) {
    auto ms = [](std::chrono::nanoseconds d) {
        return std::chrono::duration<double, std::milli>(d).count();
    };
    auto per_s = [elapsed_s](const std::atomic<std::uint64_t>& n) {
        return static_cast<double>(n.load()) / elapsed_s;
    };
    return {
        {"mode", s.mode},
        {"seconds", elapsed_s},
        {"detector_ms", s.detector_ms},
        {"source_fps", per_s(m.frames)},
        {"ui_fps", per_s(m.shown)},
        {"detector_fps", per_s(m.detections)},
        {"detector_age_p50_ms", ms(m.detector_age.quantile(0.50))},
        {"detector_age_p99_ms", ms(m.detector_age.quantile(0.99))},
        {"detector_backlog", m.backlog.load()},
        {"peak_rss_mb", fe::peak_rss_mb()},
    };
}

// Runs `p` for --seconds with one live line a second, and returns the summary of that window.
// The orderly stop that follows may take a detection or two.
nlohmann::json run_measured(framepipe::pipeline& p, const settings& s, meters& m) {
    std::uint64_t last_frames = 0, last_shown = 0, last_det = 0;
    auto live_line = [&](std::uint64_t second) {
        if (s.json) {
            return;
        }
        const auto f = m.frames.load(), u = m.shown.load(), d = m.detections.load();
        std::printf("[%s] t=%2llus  source %5.1f fps  ui %5.1f fps  detector %4.1f fps  "
                    "age p99 %7.1f ms  backlog %4llu  rss %6.1f MB\n",
                    s.mode.c_str(), static_cast<unsigned long long>(second),
                    static_cast<double>(f - last_frames), static_cast<double>(u - last_shown),
                    static_cast<double>(d - last_det),
                    std::chrono::duration<double, std::milli>(m.detector_age.quantile(0.99)).count(),
                    static_cast<unsigned long long>(m.backlog.load()), fe::rss_mb());
        std::fflush(stdout);
        last_frames = f;
        last_shown = u;
        last_det = d;
    };
    // The orderly stop has room for the detection under way and the one buffered.
    const auto stop_deadline = std::chrono::seconds(10) + 2 * std::chrono::milliseconds(s.detector_ms);
    fe::run_loop run(p, {.duration_s = s.seconds,
                         .stop_deadline = stop_deadline,
                         .tick_period = std::chrono::seconds(1),
                         .on_tick = live_line});
    nlohmann::json j;
    (void)run.run([&](fe::run_end) { j = summarise(s, m, run.seconds()); });
    return j;
}

// --mode inline: one thread reads the newest camera frame, detects, shows: the source
// document's baseline. A source without an output; the pipeline only hosts its thread.
nlohmann::json run_inline(const settings& s, meters& m) {
    // The camera's clock: frame k exists from t0 + k / fps on (t0: the first call).
    std::optional<clock_type::time_point> t0;
    auto frames_by = [&](clock_type::time_point t) {
        const double since = std::chrono::duration<double>(t - *t0).count();
        return static_cast<std::uint64_t>(since * s.source_fps) + 1;
    };

    framepipe::pipeline p("basic-inline");
    // The loop's own state lives in its lambda: the UI's rate, the one frame buffer, the next seq.
    p.source("inline", [&, ui_rate = framepipe::rate_limiter(s.ui_fps),
                        f = frame{pixels(frame_bytes), 0, {}}, next = std::uint64_t{0}]() mutable {
        if (!t0) {
            t0 = clock_type::now();
        }
        // Wait for the next frame, then read the newest one (a camera does not queue for us).
        std::this_thread::sleep_until(*t0 + std::chrono::duration_cast<clock_type::duration>(
                                                std::chrono::duration<double>(static_cast<double>(next) /
                                                                              s.source_fps)));
        const auto now = clock_type::now();
        f.seq = frames_by(now) - 1;
        f.captured = now;
        draw(f.value, f.seq);
        next = f.seq + 1;
        m.frames.fetch_add(1, std::memory_order_relaxed);
        detect(f, s, m);
        if (ui_rate.try_acquire()) {
            show(f, m);
        }
    });
    auto j = run_measured(p, s, m);
    const auto produced = t0 ? frames_by(clock_type::now()) : 0;
    j["dropped_for_detector"] = produced - std::min(produced, m.detections.load());
    j["dropped_for_ui"] = produced - std::min(produced, m.shown.load());
    return j;
}

// A mutex + condition variable + deque: what the source documents' queues amount to. It has
// the members of a pipeline input channel (pop(stop_token), close()), so a stage can read it.
template <class T>
class unbounded_queue {
public:
    void push(T v) {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            q_.push_back(std::move(v));
        }
        cv_.notify_one();
    }
    // Waits for an item; nullopt once closed or stopped: the backlog is abandoned, not worked
    // through (the naive program's threads stop with the camera).
    std::optional<T> pop(const std::stop_token& stop) {
        std::unique_lock<std::mutex> lock(mu_);
        if (!cv_.wait(lock, stop, [this] { return closed_ || !q_.empty(); }) || closed_) {
            return std::nullopt;
        }
        T v = std::move(q_.front());
        q_.pop_front();
        return v;
    }
    void close() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            closed_ = true;
        }
        cv_.notify_all();
    }
    std::size_t size() {
        const std::lock_guard<std::mutex> lock(mu_);
        return q_.size();
    }

private:
    std::mutex mu_;
    std::condition_variable_any cv_;
    std::deque<T> q_;
    bool closed_ = false;
};

// The naive fan-out, as the camera's output channel: every frame to the detector's queue, the
// ones --ui-fps admits to the UI's. The pipeline closes it when the camera stops.
struct naive_fanout {
    unbounded_queue<frame_ptr>& to_detector;
    unbounded_queue<frame_ptr>& to_ui;
    framepipe::rate_limiter ui_rate;
    std::uint64_t rate_skipped = 0; // the camera's thread only

    void push(const frame_ptr& f) {
        to_detector.push(f);
        if (ui_rate.try_acquire(f->captured)) {
            to_ui.push(f);
        } else {
            ++rate_skipped;
        }
    }
    void close() {
        to_detector.close();
        to_ui.close();
    }
};

nlohmann::json run_unbounded(const settings& s, meters& m) {
    unbounded_queue<frame_ptr> to_detector;
    unbounded_queue<frame_ptr> to_ui;
    naive_fanout out{to_detector, to_ui, framepipe::rate_limiter(s.ui_fps)};

    framepipe::pipeline p("basic-unbounded");
    p.channel(out, "fan-out").channel(to_detector, "to-detector").channel(to_ui, "to-ui");
    p.source(
        "camera", out,
        [&, seq = std::uint64_t{0}]() mutable {
            auto f = std::make_shared<frame>(frame{pixels(frame_bytes), seq, {}}); // no pool: naive
            draw(f->value, seq++);
            f->captured = clock_type::now();
            m.frames.fetch_add(1, std::memory_order_relaxed);
            return frame_ptr(std::move(f));
        },
        {.max_rate_hz = s.source_fps});
    p.sink("detector", to_detector, [&](const frame_ptr& f) {
        m.backlog.store(to_detector.size(), std::memory_order_relaxed);
        detect(*f, s, m);
    });
    p.sink("ui", to_ui, [&](const frame_ptr& f) { show(*f, m); });
    auto j = run_measured(p, s, m);
    j["dropped_for_detector"] = 0; // nothing is dropped: it waits, for ever
    j["dropped_for_ui"] = out.rate_skipped;
    return j;
}

nlohmann::json run_framepipe(const settings& s, meters& m) {
    framepipe::pool<frame> buffers(8, [] { return frame{pixels(frame_bytes), 0, {}}; });
    framepipe::broadcaster<frame> frames;
    auto ui = frames.subscribe({.capacity = 1, .max_rate_hz = s.ui_fps, .name = "ui"});
    auto det = frames.subscribe({.capacity = 1, .name = "detector"});
    framepipe::latest_slot<std::uint64_t> boxes; // seq of the newest detection, for the overlay

    framepipe::pipeline p("basic");
    p.channel(frames, "frames").channel(boxes, "boxes");
    p.source(
        "camera", frames,
        [&, seq = std::uint64_t{0}](framepipe::stage_context& ctx) mutable {
            auto f = buffers.acquire(ctx.stop_token()); // nullptr on stop: the source ends
            if (f) {
                f->seq = seq++;
                draw(f->value, f->seq);
                f->captured = clock_type::now();
                m.frames.fetch_add(1, std::memory_order_relaxed);
            }
            return f;
        },
        {.max_rate_hz = s.source_fps});
    p.stage("detector", det, boxes, [&](const frame_ptr& f) {
        detect(*f, s, m);
        return f->seq;
    });
    p.sink("ui", ui, [&](const frame_ptr& f) {
        (void)boxes.peek(); // a real UI draws the newest boxes over the frame
        show(*f, m);
    });
    auto j = run_measured(p, s, m);
    j["dropped_for_detector"] = det.stats().dropped; // known once the pipeline has ended
    j["dropped_for_ui"] = ui.stats().dropped;
    return j;
}

int run_one(const settings& s) {
    meters m;
    auto j = s.mode == "inline"      ? run_inline(s, m)
             : s.mode == "unbounded" ? run_unbounded(s, m)
                                     : run_framepipe(s, m);
    if (s.json) {
        std::printf("%s\n", fe::json_text(j).c_str());
    } else {
        std::printf("\n%s\n", fe::json_text(j, 2).c_str());
    }
    return 0;
}

// Runs `argv` with its stdout into a pipe, until it exits, and returns what it printed. The first
// SIGINT or SIGTERM to this process (install_stop_signals) is passed on to the child as SIGTERM:
// it stops in order and prints its summary, as it would in a run of its own. Throws
// std::runtime_error when the child cannot start or does not exit 0.
std::string run_child(const std::vector<std::string>& argv, const std::string& what) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    if (rc != 0) {
        close(out[0]);
        throw std::runtime_error("cannot run " + argv[0] + ": " + std::strerror(rc));
    }
    std::string text;
    bool passed_on = false;
    for (;;) {
        if (fe::stop_requested() && !passed_on) {
            (void)kill(pid, SIGTERM);
            passed_on = true;
        }
        pollfd p{out[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) {
            continue; // a timeout, or a signal (EINTR): look at the stop again
        }
        std::array<char, 4096> buf{};
        const auto n = read(out[0], buf.data(), buf.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        text.append(buf.data(), static_cast<std::size_t>(n));
    }
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (passed_on && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) {
        return {}; // stopped before it had set up its own handling: no summary
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw std::runtime_error("the " + what + " run failed");
    }
    return text;
}

// Runs each mode as a child process (--json) and prints the summaries side by side. Ctrl-C or
// SIGTERM stops the mode under way (its summary still comes) and runs no more: the modes that
// ran are printed.
int run_compare(const settings& s, const std::string& self) {
    fe::install_stop_signals();
    const std::array<std::string, 3> all{"inline", "unbounded", "framepipe"};
    std::vector<std::string> modes;
    std::vector<nlohmann::json> results;
    for (const auto& mode : all) {
        if (fe::stop_requested()) {
            break;
        }
        std::fprintf(stderr, "running %s mode for %.0f s...\n", mode.c_str(), s.seconds);
        const std::string out =
            run_child({self, "--json", "--mode", mode, "--seconds", std::to_string(s.seconds),
                       "--detector-ms", std::to_string(s.detector_ms)},
                      mode);
        if (out.empty()) {
            break; // stopped before it could print
        }
        results.push_back(nlohmann::json::parse(out));
        modes.push_back(mode);
    }
    std::printf("\n%-22s", "");
    for (const auto& mode : modes) {
        std::printf("%12s", mode.c_str());
    }
    std::printf("\n");
    const std::array<std::pair<const char*, const char*>, 9> rows{{
        {"source fps", "source_fps"},
        {"ui fps", "ui_fps"},
        {"detector fps", "detector_fps"},
        {"detector age p50 ms", "detector_age_p50_ms"},
        {"detector age p99 ms", "detector_age_p99_ms"},
        {"dropped for detector", "dropped_for_detector"},
        {"dropped for ui", "dropped_for_ui"},
        {"detector backlog", "detector_backlog"},
        {"peak RSS MB", "peak_rss_mb"},
    }};
    for (const auto& [label, key] : rows) {
        std::printf("%-22s", label);
        for (const auto& r : results) {
            std::printf("%12.1f", r.at(key).get<double>());
        }
        std::printf("\n");
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"framepipe-basic: a 30 fps camera, a 15 fps UI and a slow detector, three ways"};
    settings s;
    bool compare = false;
    auto* mode = app.add_option("--mode", s.mode, "inline, unbounded or framepipe")
                     ->check(CLI::IsMember({"inline", "unbounded", "framepipe"}));
    app.add_option("--seconds", s.seconds, "run time per mode")
        ->check(fe::finite_range(1.0, 86400.0));
    app.add_option("--detector-ms", s.detector_ms, "CPU time per detection")
        ->check(CLI::Range(1, 10000));
    auto* json = app.add_flag("--json", s.json, "print one JSON object at exit");
    app.add_flag("--compare", compare, "run all three modes and print them side by side")
        ->excludes(mode)
        ->excludes(json);
    if (const auto code = fe::parse_command_line(app, argc, argv, program)) {
        return *code;
    }
    return fe::run_main(program, [&] {
        return compare ? run_compare(s, std::filesystem::read_symlink("/proc/self/exe").string())
                       : run_one(s);
    });
}
