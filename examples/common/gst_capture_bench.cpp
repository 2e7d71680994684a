// framepipe-gst-capture-bench: the measurements behind gst_capture's choices (README.md).
//
//   framepipe-gst-capture-bench memory FILE [REPS]    wrap vs copy: decode FILE as fast as
//                                                      possible, touch every pixel
//   framepipe-gst-capture-bench timing URI [SECONDS]  captured vs arrival, spacing vs PTS, of a
//                                                      live source read frame by frame
//   framepipe-gst-capture-bench live-cpu URI [SECONDS] wrap vs copy on a live source: CPU time
//   framepipe-gst-capture-bench key-only URI [SECONDS] every frame vs key_frames_only: CPU time
//
// Prints one line per measurement. Not a test: figures, no assertions.
#include "common/gst_capture.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace fe = framepipe_examples;
using clk = std::chrono::steady_clock;

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double ms(clk::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double quantile(std::vector<double> v, double q) {
    if (v.empty()) {
        return 0;
    }
    std::sort(v.begin(), v.end());
    const auto at = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[at];
}

const char* name(fe::frame_memory m) { return m == fe::frame_memory::wrap ? "wrap" : "copy"; }

int fail(const std::string& what) {
    std::fprintf(stderr, "framepipe-gst-capture-bench: %s\n", what.c_str());
    return 1;
}

// Decodes the whole file reading every frame; per frame, a consumer converts it to grey (it
// reads every pixel, as a model's preprocessing does).
int memory(const std::string& file, int reps) {
    cv::Mat grey;
    std::vector<double> wall[2];
    std::vector<double> cpu[2];
    std::vector<double> read_us[2];
    std::size_t frames = 0;
    for (int rep = 0; rep < reps; ++rep) {
        for (const auto mode : {fe::frame_memory::wrap, fe::frame_memory::copy}) {
            const auto m = static_cast<std::size_t>(mode == fe::frame_memory::copy);
            fe::gst_capture cap({.uri = file, .memory = mode});
            if (auto err = cap.open({}, 10s); !err.empty()) {
                return fail(err);
            }
            fe::gst_frame f;
            std::string err;
            frames = 0;
            double in_read = 0;
            const double cpu0 = cpu_seconds();
            const auto t0 = clk::now();
            for (;;) {
                const auto r0 = clk::now();
                const auto st = cap.read({}, 10s, f, err);
                in_read += ms(clk::now() - r0);
                if (st != fe::gst_capture::status::frame) {
                    if (st == fe::gst_capture::status::error) {
                        return fail(err);
                    }
                    break;
                }
                cv::cvtColor(f.image, grey, cv::COLOR_BGR2GRAY);
                ++frames;
            }
            const auto n = static_cast<double>(frames);
            wall[m].push_back(ms(clk::now() - t0) / n);
            cpu[m].push_back((cpu_seconds() - cpu0) * 1e3 / n);
            read_us[m].push_back(in_read * 1e3 / n);
            cap.close();
        }
    }
    for (const auto mode : {fe::frame_memory::wrap, fe::frame_memory::copy}) {
        const auto m = static_cast<std::size_t>(mode == fe::frame_memory::copy);
        std::printf("memory %s: %zu frames x %d reps: wall %.3f ms/frame, cpu %.3f ms/frame, "
                    "in read() %.1f us/frame (medians)\n",
                    name(mode), frames, reps, quantile(wall[m], 0.5), quantile(cpu[m], 0.5),
                    quantile(read_us[m], 0.5));
    }
    return 0;
}

// Reads every frame of a live source: how long before read() returned the frame was captured
// (decode + convert + hand-over: what captured-from-PTS removes from the frame's age), and how
// closely the captured spacing and the arrival spacing follow the PTS spacing. The first frame
// (decoder start-up) is reported apart.
int timing(const std::string& uri, int seconds) {
    fe::gst_capture cap({.uri = uri});
    if (auto err = cap.open({}, 10s); !err.empty()) {
        return fail(err);
    }
    fe::gst_frame f;
    std::string err;
    std::vector<double> age;         // returned - captured, ms
    std::vector<double> step;        // d pts, ms
    std::vector<double> spacing_err; // |d captured - d pts|, ms
    std::vector<double> arrival_err; // |d returned - d pts|, ms
    double first_age = 0;
    std::size_t frames = 0;
    std::size_t keys = 0;
    clk::time_point last_captured;
    clk::time_point last_returned;
    std::optional<std::chrono::nanoseconds> last_pts;
    const auto end = clk::now() + std::chrono::seconds(seconds);
    while (clk::now() < end) {
        const auto st = cap.read({}, 2s, f, err);
        const auto returned = clk::now();
        if (st != fe::gst_capture::status::frame) {
            return fail(st == fe::gst_capture::status::error ? err : "no frame for 2 s");
        }
        keys += f.key_frame ? 1 : 0;
        if (frames++ == 0) {
            first_age = ms(returned - f.captured);
        } else {
            age.push_back(ms(returned - f.captured));
            if (f.pts && last_pts) {
                const double dpts = static_cast<double>((*f.pts - *last_pts).count()) / 1e6;
                step.push_back(dpts);
                spacing_err.push_back(std::abs(ms(f.captured - last_captured) - dpts));
                arrival_err.push_back(std::abs(ms(returned - last_returned) - dpts));
            }
        }
        last_pts = f.pts;
        last_captured = f.captured;
        last_returned = returned;
    }
    std::printf("timing %s: %zu frames in %d s, %zu key frames; PTS step median %.2f ms, "
                "min %.2f, max %.2f\n",
                uri.c_str(), frames, seconds, keys, quantile(step, 0.5), quantile(step, 0.0),
                quantile(step, 1.0));
    std::printf("  first frame: read() returned it %.2f ms after its capture time\n", first_age);
    std::printf("  returned - captured:     median %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                quantile(age, 0.5), quantile(age, 0.95), quantile(age, 0.99), quantile(age, 1.0));
    std::printf("  |d captured - d pts|:    median %.3f ms, max %.3f ms\n",
                quantile(spacing_err, 0.5), quantile(spacing_err, 1.0));
    std::printf("  |d returned - d pts|:    median %.3f ms, p95 %.3f ms, p99 %.3f ms, max %.3f ms\n",
                quantile(arrival_err, 0.5), quantile(arrival_err, 0.95),
                quantile(arrival_err, 0.99), quantile(arrival_err, 1.0));
    return 0;
}

// A live source at its own rate, wrap versus copy: the process's CPU time per frame.
int live_cpu(const std::string& uri, int seconds) {
    cv::Mat grey;
    for (int rep = 0; rep < 2; ++rep) {
        for (const auto mode : {fe::frame_memory::wrap, fe::frame_memory::copy}) {
            fe::gst_capture cap({.uri = uri, .memory = mode});
            if (auto err = cap.open({}, 10s); !err.empty()) {
                return fail(err);
            }
            fe::gst_frame f;
            std::string err;
            std::size_t frames = 0;
            double in_read = 0;
            const double cpu0 = cpu_seconds();
            const auto end = clk::now() + std::chrono::seconds(seconds);
            while (clk::now() < end) {
                const auto r0 = clk::now();
                const auto st = cap.read({}, 2s, f, err);
                const auto r1 = clk::now();
                if (st != fe::gst_capture::status::frame) {
                    return fail(st == fe::gst_capture::status::error ? err : "no frame for 2 s");
                }
                in_read += ms(r1 - r0);
                cv::cvtColor(f.image, grey, cv::COLOR_BGR2GRAY);
                ++frames;
            }
            const auto n = static_cast<double>(frames);
            std::printf("live-cpu %s: %zu frames, cpu %.3f ms/frame (whole process)\n", name(mode),
                        frames, (cpu_seconds() - cpu0) * 1e3 / n);
            (void)in_read;
        }
    }
    return 0;
}

// Decoding every frame versus key frames only (delta units dropped before the decoder): the
// process's CPU time per second of stream.
int key_only(const std::string& uri, int seconds) {
    for (int rep = 0; rep < 2; ++rep) {
        for (const bool key_frames_only : {false, true}) {
            fe::gst_capture cap({.uri = uri, .key_frames_only = key_frames_only});
            if (auto err = cap.open({}, 10s); !err.empty()) {
                return fail(err);
            }
            fe::gst_frame f;
            std::string err;
            std::size_t frames = 0;
            const double cpu0 = cpu_seconds();
            const auto t0 = clk::now();
            const auto end = t0 + std::chrono::seconds(seconds);
            while (clk::now() < end) {
                const auto st = cap.read({}, 2s, f, err);
                if (st != fe::gst_capture::status::frame) {
                    return fail(st == fe::gst_capture::status::error ? err : "no frame for 2 s");
                }
                ++frames;
            }
            const double wall = std::chrono::duration<double>(clk::now() - t0).count();
            std::printf("key-only %s: %zu frames in %.1f s, cpu %.1f ms per second of stream\n",
                        key_frames_only ? "on " : "off", frames, wall,
                        (cpu_seconds() - cpu0) * 1e3 / wall);
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() >= 2 && args[0] == "memory") {
        return memory(args[1], args.size() > 2 ? std::stoi(args[2]) : 3);
    }
    if (args.size() >= 2 && args[0] == "timing") {
        return timing(args[1], args.size() > 2 ? std::stoi(args[2]) : 10);
    }
    if (args.size() >= 2 && args[0] == "live-cpu") {
        return live_cpu(args[1], args.size() > 2 ? std::stoi(args[2]) : 10);
    }
    if (args.size() >= 2 && args[0] == "key-only") {
        return key_only(args[1], args.size() > 2 ? std::stoi(args[2]) : 10);
    }
    std::fprintf(stderr, "usage: framepipe-gst-capture-bench memory FILE [REPS] | timing URI "
                         "[SECONDS] | live-cpu URI [SECONDS] | key-only URI [SECONDS]\n");
    return 2;
}
