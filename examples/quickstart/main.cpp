// framepipe-quickstart: one camera, two consumers at their own rates.
//
//                          +--> [ui: latest slot, 15 fps] -------> "show"
//   [camera 30 fps] --> broadcaster
//     (pooled,                 +--> [detector: latest slot] -----> "detect" (~200 ms of real work)
//      stamped frames)
//
// The camera never waits for anyone. The UI gets 15 fps whatever the detector does, and the
// detector always starts on the newest frame, so its input is at most one frame interval old.
// Run: framepipe-quickstart [seconds]   (default 5)
#include "common/cpu_work.hpp"

#include <framepipe/framepipe.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
using frame = framepipe::stamped<std::vector<std::uint8_t>>; // a 640x480 BGR image

double ms_since(clock_type::time_point t) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

} // namespace

int main(int argc, char** argv) {
    const int seconds = argc > 1 ? std::atoi(argv[1]) : 5;
    if (seconds <= 0) {
        std::fprintf(stderr, "framepipe-quickstart: seconds must be a positive integer\n");
        return 2;
    }

    framepipe::pool<frame> buffers(8, [] { return frame{std::vector<std::uint8_t>(640 * 480 * 3)}; });
    framepipe::broadcaster<frame> frames;
    auto ui = frames.subscribe({.capacity = 1, .max_rate_hz = 15, .name = "ui"});
    auto detector = frames.subscribe({.capacity = 1, .name = "detector"});

    std::jthread camera([&](std::stop_token stop) {
        framepipe::rate_limiter pace(30);
        for (std::uint64_t seq = 0; pace.acquire(stop); ++seq) {
            auto f = buffers.acquire(stop);
            if (!f) {
                break;
            }
            std::fill(f->value.begin(), f->value.end(), static_cast<std::uint8_t>(seq));
            f->seq = seq;
            f->captured = clock_type::now();
            (void)frames.publish(std::move(f));
        }
        frames.close();
    });

    std::uint64_t shown = 0;
    std::jthread ui_thread([&] {
        while (auto f = ui.pop()) {
            ++shown; // a real UI would encode and send (*f)->value here
        }
    });

    std::uint64_t detections = 0;
    double worst_age_ms = 0;
    std::jthread detector_thread([&] {
        while (auto f = detector.pop()) {
            worst_age_ms = std::max(worst_age_ms, ms_since((*f)->captured));
            (void)framepipe_examples::busy_compute((*f)->value, std::chrono::milliseconds(200));
            std::printf("detector: frame %llu, inference done\n",
                        static_cast<unsigned long long>((*f)->seq));
            ++detections;
        }
    });

    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    camera.request_stop();
    camera.join();
    ui_thread.join();
    detector_thread.join();

    std::printf("\n%-10s %10s %10s %10s %10s\n", "consumer", "offered", "taken", "dropped", "fps");
    for (const auto& s : frames.stats()) {
        std::printf("%-10s %10llu %10llu %10llu %10.1f\n", s.name.c_str(),
                    static_cast<unsigned long long>(s.stats.pushed),
                    static_cast<unsigned long long>(s.stats.popped),
                    static_cast<unsigned long long>(s.stats.dropped),
                    static_cast<double>(s.stats.popped) / seconds);
    }
    std::printf("ui shown %llu frames; detector ran %llu times; worst detector input age %.1f ms\n",
                static_cast<unsigned long long>(shown), static_cast<unsigned long long>(detections),
                worst_age_ms);
    return 0;
}
