// bench_multicam: N synthetic cameras into one detector with a fixed service time, as
// framepipe-multicam builds it, against the design users write by hand, in one process per run
// (run.sh runs them all and prints the table; docs/examples/multicam.md explains it).
//
//   --design framepipe   framepipe-multicam's graph (examples/multicam/cameras.hpp): each camera
//                        a live_camera (live_source over a synthetic reader) publishing into its
//                        broadcaster; a rate-limited UI subscription into a selector drained
//                        at 2 x --ui-fps by a refresh that draws nothing; a latest-slot
//                        subscription into the batcher
//                        (weighted turns, up to --batch frames, one per camera); the detector
//                        sink sleeps --service-ms per batch.
//   --design naive       a thread and an unbounded std::deque (under a mutex) per camera; one
//                        detector thread loops over the queues, taking the oldest frame of each
//                        non-empty queue in turn (up to --batch), sleeping --service-ms per
//                        batch, and 1 ms when every queue is empty.
//   --design floor       the cameras alone: a thread per camera waking at each frame's due time
//                        and taking the frame, which goes nowhere. What any design pays for a
//                        camera thread; the framework's own cost is the difference.
//   --idle               framepipe's graph with cameras that connect, deliver one frame and then
//                        nothing (timeouts of an hour): the CPU of a graph with nothing flowing.
//
// Every design reads the same frames: the synthetic reader's views into each camera's pattern
// (common/synthetic_camera.hpp: no pixel is written per frame, no frame is decoded).
//
// Output: one JSON object on stdout, measured over --seconds after --warmup: frames captured,
// process CPU per frame (CLOCK_PROCESS_CPUTIME_ID: every thread, user and system), detector
// input age p50/p99 (inference start minus capture), Jain's index over the frames detected per
// camera, batches, peak and current RSS with the bound, and the load average.
#include "cameras.hpp"

#include "common/process_stats.hpp"
#include "common/synthetic_camera.hpp"

#include <framepipe/framepipe.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fe = framepipe_examples;
namespace mc = framepipe_examples::multicam;
using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct options {
    std::string design = "framepipe";
    int cameras = 4;
    double seconds = 10;
    double warmup = 3;
    double service_ms = 20;
    int batch = 8;
    int width = 640;
    int height = 480;
    double fps = 30;
    double ui_fps = 5;
    bool idle = false;
};

std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string one, five, fifteen;
    in >> one >> five >> fifteen;
    return one + " " + five + " " + fifteen;
}

double ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

// What every design measures over the window.
struct window {
    double cpu0 = 0, cpu1 = 0;
    double rss0 = 0, rss1 = 0;
    clk::time_point t0, t1;
    std::vector<std::uint64_t> frames0, frames1;   // per camera
    std::vector<std::uint64_t> detected0, detected1;
    std::uint64_t batches0 = 0, batches1 = 0;
};

nlohmann::json report(const options& o, const window& w, const framepipe::latency_histogram& age,
                      double baseline_rss_mb, double per_camera_bytes) {
    const double secs = std::chrono::duration<double>(w.t1 - w.t0).count();
    std::uint64_t frames = 0;
    std::uint64_t detected = 0;
    std::vector<double> shares;
    for (std::size_t i = 0; i < w.frames1.size(); ++i) {
        frames += w.frames1[i] - w.frames0[i];
        detected += w.detected1[i] - w.detected0[i];
        shares.push_back(static_cast<double>(w.detected1[i] - w.detected0[i]));
    }
    const double cpu = w.cpu1 - w.cpu0;
    const double frame_interval_ms = 1000.0 / o.fps;
    nlohmann::json j;
    j["design"] = o.idle ? "framepipe-idle" : o.design;
    j["cameras"] = o.cameras;
    j["seconds"] = secs;
    j["frames"] = frames;
    j["frames_per_s"] = static_cast<double>(frames) / secs;
    j["cpu_s"] = cpu;
    j["cpu_percent"] = 100.0 * cpu / secs;
    j["cpu_us_per_frame"] = frames == 0 ? 0.0 : 1e6 * cpu / static_cast<double>(frames);
    j["detected"] = detected;
    j["batches"] = w.batches1 - w.batches0;
    j["mean_batch"] = w.batches1 == w.batches0
                          ? 0.0
                          : static_cast<double>(detected) / static_cast<double>(w.batches1 - w.batches0);
    j["age_p50_ms"] = ms(age.quantile(0.5));
    j["age_p99_ms"] = ms(age.quantile(0.99));
    j["age_max_ms"] = ms(age.quantile(1.0));
    j["age_bound_ms"] = o.cameras * o.service_ms / o.batch + frame_interval_ms;
    const auto jain = mc::jain_index(shares);
    j["jain"] = jain ? *jain : 1.0;
    j["rss_start_mb"] = w.rss0;
    j["rss_end_mb"] = w.rss1;
    j["peak_rss_mb"] = fe::peak_rss_mb();
    j["rss_baseline_mb"] = baseline_rss_mb;
    j["rss_bound_mb"] = per_camera_bytes > 0
                            ? baseline_rss_mb + o.cameras * per_camera_bytes / (1024.0 * 1024.0)
                            : 0.0;
    j["per_camera_bound_kib"] = per_camera_bytes / 1024.0;
    j["load_average"] = load_average();
    return j;
}

// The synthetic frames of camera `number`, as every design reads them.
std::function<std::unique_ptr<fe::frame_reader>()> reader_of(const options& o, int number) {
    return fe::synthetic_reader({.width = o.width, .height = o.height, .fps = o.fps, .number = number});
}

void wait_seconds(double s) {
    std::this_thread::sleep_for(std::chrono::duration<double>(s)); // the bench's clock, not an ordering
}

// framepipe-multicam's graph without the web page.
nlohmann::json run_framepipe(const options& o) {
    const double baseline = fe::rss_mb();
    mc::frame_batcher batches({.max_size = static_cast<std::size_t>(o.batch),
                               .max_per_source = 1,
                               .policy = framepipe::select_policy::weighted});
    mc::frame_selector ui_frames;
    framepipe::pipeline p("bench-multicam");
    framepipe::latency_histogram age;
    std::atomic<bool> measuring{false};
    std::atomic<std::uint64_t> batch_count{0};
    mc::camera_set cameras(
        p, batches, o.ui_fps > 0 ? &ui_frames : nullptr,
        {.ui_fps = o.ui_fps,
         .make_options = [&o](const mc::camera_spec&, int number) {
             fe::live_camera_options c;
             c.capture.uri = "synthetic:";
             c.reader = reader_of(o, number);
             c.pool_size = 6;
             if (o.idle) { // one frame, then nothing for an hour: no stall, no reconnect
                 c.live.open_timeout = c.live.first_frame_timeout = c.live.stall_timeout = 3600s;
             }
             return c;
         }});
    p.sink("detector", batches, [&](const framepipe::batch<mc::frame_ptr>& b) {
        const auto now = clk::now();
        for (std::size_t i = 0; i < b.items.size(); ++i) {
            if (measuring.load(std::memory_order_relaxed)) {
                age.record(now - b.items[i]->captured);
            }
            if (cameras.record_input(b.sources[i], *b.items[i], now)) {
                cameras.record_result(b.sources[i], {});
            }
        }
        cameras.batch_done(); // lets the figures of ended sessions go (as the program does)
        batch_count.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(o.service_ms));
    });
    if (o.ui_fps > 0) { // as the program's UI refreshes, drawing nothing
        p.source(
            "ui",
            [&ui_frames] {
                while (auto f = ui_frames.try_pop()) {
                }
            },
            {.max_rate_hz = 2 * o.ui_fps});
    }
    for (int i = 1; i <= o.cameras; ++i) {
        cameras.add({"cam" + std::to_string(i), "synthetic:", 1});
    }
    p.start();
    wait_seconds(o.warmup);
    const auto sample = [&](std::vector<std::uint64_t>& frames, std::vector<std::uint64_t>& detected,
                            std::uint64_t& batches_seen) {
        frames.clear();
        detected.clear();
        for (const auto& f : cameras.figures()) {
            frames.push_back(f.frames);
            detected.push_back(f.detections);
        }
        batches_seen = batch_count.load();
    };
    window w;
    w.rss0 = fe::rss_mb();
    w.cpu0 = fe::cpu_seconds();
    w.t0 = clk::now();
    sample(w.frames0, w.detected0, w.batches0);
    measuring = true;
    wait_seconds(o.seconds);
    measuring = false;
    sample(w.frames1, w.detected1, w.batches1);
    w.t1 = clk::now();
    w.cpu1 = fe::cpu_seconds();
    w.rss1 = fe::rss_mb();
    // The bound: per camera, its pattern (every frame is a view into it), its pooled frames
    // with their control blocks, and 64 KiB for each of its 3 threads (runner, watchdog, stage)
    // and for its channels, counters and histogram.
    const double pattern = 2.0 * o.width * o.height * 3;
    const double pool = 6.0 * (sizeof(fe::video_frame) + 128);
    const double per_camera = pattern + pool + 4 * 64 * 1024.0;
    auto j = report(o, w, age, baseline, per_camera);
    j["threads_per_camera"] = 3;
    cameras.stop_all();
    batches.close();
    ui_frames.close();
    (void)p.request_stop(10s);
    p.wait();
    return j;
}

// A thread per camera reading the same synthetic frames; `deliver` gets each frame.
class camera_threads {
public:
    camera_threads(const options& o, std::function<void(int, fe::gst_frame&&)> deliver)
        : frames_(static_cast<std::size_t>(o.cameras)) {
        for (int i = 0; i < o.cameras; ++i) {
            threads_.emplace_back([this, i, make = reader_of(o, i + 1), deliver](std::stop_token stop) {
                auto r = make();
                (void)r->open(stop, 1s);
                std::string error;
                while (!stop.stop_requested()) {
                    fe::gst_frame f;
                    if (r->read(stop, 1s, f, error) == fe::gst_capture::status::frame) {
                        frames_[static_cast<std::size_t>(i)].fetch_add(1, std::memory_order_relaxed);
                        deliver(i, std::move(f));
                    }
                }
            });
        }
    }
    ~camera_threads() {
        for (auto& t : threads_) {
            t.request_stop();
        }
    }
    camera_threads(const camera_threads&) = delete;
    camera_threads& operator=(const camera_threads&) = delete;

    [[nodiscard]] std::uint64_t frames(std::size_t i) const { return frames_[i].load(); }

private:
    std::vector<std::atomic<std::uint64_t>> frames_;
    std::vector<std::jthread> threads_;
};

// The design users write: a thread and an unbounded queue per camera, one detector polling them.
nlohmann::json run_naive(const options& o, bool floor) {
    const double baseline = fe::rss_mb();
    const auto n = static_cast<std::size_t>(o.cameras);
    struct queue {
        std::mutex mu;
        std::deque<std::shared_ptr<const fe::gst_frame>> frames;
    };
    std::vector<queue> queues(n);
    std::vector<std::atomic<std::uint64_t>> detected(n);
    framepipe::latency_histogram age;
    std::atomic<bool> measuring{false};
    std::atomic<std::uint64_t> batch_count{0};
    camera_threads cams(o, [&](int i, fe::gst_frame&& f) {
        if (floor) {
            return; // the frame goes nowhere
        }
        auto frame = std::make_shared<const fe::gst_frame>(std::move(f)); // naive code allocates
        auto& q = queues[static_cast<std::size_t>(i)];
        const std::lock_guard<std::mutex> lock(q.mu);
        q.frames.push_back(std::move(frame));
    });
    std::jthread detector;
    if (!floor) {
        detector = std::jthread([&](std::stop_token stop) {
            std::size_t next = 0;
            std::vector<std::pair<std::size_t, std::shared_ptr<const fe::gst_frame>>> batch;
            while (!stop.stop_requested()) {
                batch.clear();
                for (std::size_t k = 0; k < n && batch.size() < static_cast<std::size_t>(o.batch); ++k) {
                    const std::size_t i = (next + k) % n;
                    auto& q = queues[i];
                    const std::lock_guard<std::mutex> lock(q.mu);
                    if (!q.frames.empty()) {
                        batch.emplace_back(i, std::move(q.frames.front()));
                        q.frames.pop_front();
                    }
                }
                if (batch.empty()) {
                    std::this_thread::sleep_for(1ms); // the usual poll
                    continue;
                }
                next = (batch.back().first + 1) % n;
                const auto now = clk::now();
                for (const auto& [i, f] : batch) {
                    if (measuring.load(std::memory_order_relaxed)) {
                        age.record(now - f->captured);
                    }
                    detected[i].fetch_add(1, std::memory_order_relaxed);
                }
                batch_count.fetch_add(1, std::memory_order_relaxed);
                std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(o.service_ms));
            }
        });
    }
    wait_seconds(o.warmup);
    const auto sample = [&](std::vector<std::uint64_t>& frames, std::vector<std::uint64_t>& det,
                            std::uint64_t& batches_seen) {
        frames.clear();
        det.clear();
        for (std::size_t i = 0; i < n; ++i) {
            frames.push_back(cams.frames(i));
            det.push_back(detected[i].load());
        }
        batches_seen = batch_count.load();
    };
    window w;
    w.rss0 = fe::rss_mb();
    w.cpu0 = fe::cpu_seconds();
    w.t0 = clk::now();
    sample(w.frames0, w.detected0, w.batches0);
    measuring = true;
    wait_seconds(o.seconds);
    measuring = false;
    sample(w.frames1, w.detected1, w.batches1);
    w.t1 = clk::now();
    w.cpu1 = fe::cpu_seconds();
    w.rss1 = fe::rss_mb();
    auto j = report(o, w, age, baseline, 0.0);
    std::size_t queued = 0;
    for (auto& q : queues) {
        const std::lock_guard<std::mutex> lock(q.mu);
        queued += q.frames.size();
    }
    j["design"] = floor ? "floor" : "naive";
    j["threads_per_camera"] = 1;
    j["queued_frames"] = queued;
    // What those queues would hold if each frame owned its decoded pixels, as a decoder's do.
    j["queued_if_decoded_mb"] = static_cast<double>(queued) * o.width * o.height * 3 / (1024.0 * 1024.0);
    if (floor) {
        j.erase("age_p50_ms");
        j.erase("age_p99_ms");
        j.erase("age_max_ms");
        j.erase("jain");
    }
    detector = {};
    return j;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_multicam: N synthetic cameras into one detector, framepipe vs naive"};
    options o;
    app.add_option("--design", o.design, "framepipe, naive or floor")
        ->check(CLI::IsMember({"framepipe", "naive", "floor"}));
    app.add_option("--cameras", o.cameras, "N")->check(CLI::Range(1, 1024));
    app.add_option("--seconds", o.seconds, "measured seconds")->check(CLI::Range(0.5, 3600.0));
    app.add_option("--warmup", o.warmup, "seconds before measuring")->check(CLI::Range(0.0, 600.0));
    app.add_option("--service-ms", o.service_ms, "the detector's time per batch")
        ->check(CLI::Range(0.0, 10000.0));
    app.add_option("--batch", o.batch, "frames per batch at most")->check(CLI::Range(1, 64));
    app.add_option("--width", o.width, "frame width")->check(CLI::Range(16, 4096));
    app.add_option("--height", o.height, "frame height")->check(CLI::Range(16, 4096));
    app.add_option("--fps", o.fps, "frames per second per camera")->check(CLI::Range(0.001, 240.0));
    app.add_option("--ui-fps", o.ui_fps, "framepipe: the UI subscription's rate (0: none)")
        ->check(CLI::Range(0.0, 240.0));
    app.add_flag("--idle", o.idle, "framepipe: cameras that deliver one frame, then nothing");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        if (o.idle) {
            o.design = "framepipe";
            o.fps = 0.001; // the first frame at once, the next in 1000 s
        }
        const auto j = o.design == "framepipe" ? run_framepipe(o) : run_naive(o, o.design == "floor");
        std::printf("%s\n", j.dump().c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_multicam: %s\n", e.what());
        return 2;
    }
    return 0;
}
