// framepipe-quickstart: one camera, two consumers at their own rates.
//
//                          +--> [ui: latest slot, paced to 15 fps] --> "show"
//   [camera 30 fps] --> broadcaster
//     (pooled,                 +--> [detector: latest slot] ---------> "detect" (~200 ms of work)
//      stamped frames; it ends after N seconds' worth)
//
// The camera never waits for anyone. The UI gets 15 fps whatever the detector does, and the
// detector always starts on the newest frame: its input is about one frame interval old at most
// (33 ms, plus however long the scheduler keeps its thread from running).
// When the camera ends, the pipeline drains and every stage ends: wait() returns.
// Run: framepipe-quickstart [seconds]   (default 5; --help says so)
#include "common/cpu_work.hpp"

#include <framepipe/framepipe.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
using frame = framepipe::stamped<std::vector<std::uint8_t>>; // a 640x480 BGR image
using frame_ptr = std::shared_ptr<const frame>;

double ms_since(clock_type::time_point t) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}

} // namespace

int main(int argc, char** argv) {
    int seconds = 5;
    if (argc > 1) {
        const std::string_view arg = argv[1];
        if (arg == "--help" || arg == "-h") {
            std::printf("usage: framepipe-quickstart [seconds]   (default 5)\n");
            return 0;
        }
        const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), seconds);
        if (argc > 2 || ec != std::errc{} || end != arg.data() + arg.size() || seconds <= 0) {
            std::fprintf(stderr, "framepipe-quickstart: seconds must be one positive integer\n");
            return 2;
        }
    }

    framepipe::pool<frame> buffers(8, [] { return frame{std::vector<std::uint8_t>(640 * 480 * 3)}; });
    framepipe::broadcaster<frame> frames;
    auto ui = frames.subscribe({.capacity = 1, .name = "ui"});
    auto detector = frames.subscribe({.capacity = 1, .name = "detector"});
    const auto last = static_cast<std::uint64_t>(seconds) * 30; // the camera's frames
    std::uint64_t shown = 0;
    std::uint64_t detections = 0;
    double worst_age_ms = 0;

    framepipe::pipeline p("quickstart");
    p.source(
        "camera", frames,
        [&, seq = std::uint64_t{0}](framepipe::stage_context& ctx) mutable -> std::shared_ptr<frame> {
            if (seq == last) {
                return nullptr; // the end: the subscriptions drain, then the consumers end
            }
            auto f = buffers.acquire(ctx.stop_token());
            if (f) {
                std::fill(f->value.begin(), f->value.end(), static_cast<std::uint8_t>(seq));
                f->seq = seq++;
                f->captured = clock_type::now();
            }
            return f;
        },
        {.max_rate_hz = 30});
    p.sink(
        "ui", ui, [&](const frame_ptr&) { ++shown; }, // a real UI would encode and send the frame
        {.max_rate_hz = 15}); // waits its turn, then takes the newest frame
    p.sink("detector", detector, [&](const frame_ptr& f) {
        worst_age_ms = std::max(worst_age_ms, ms_since(f->captured));
        (void)framepipe_examples::busy_compute(f->value, std::chrono::milliseconds(200));
        std::printf("detector: frame %llu, inference done\n", static_cast<unsigned long long>(f->seq));
        ++detections;
    });
    p.start();
    p.wait(); // every stage has ended: the camera ran out, the others drained

    std::printf("\n%-10s %10s %10s %10s %10s\n", "consumer", "offered", "taken", "dropped", "fps");
    for (const auto& c : p.snapshot().channels) {
        if (c.kind == "subscription") { // the frames a paced stage passed over count as dropped
            std::printf("%-10s %10llu %10llu %10llu %10.1f\n", c.name.c_str(),
                        static_cast<unsigned long long>(c.pushed),
                        static_cast<unsigned long long>(c.popped),
                        static_cast<unsigned long long>(c.dropped),
                        static_cast<double>(c.popped) / seconds);
        }
    }
    std::printf("ui shown %llu frames; detector ran %llu times; worst detector input age %.1f ms\n",
                static_cast<unsigned long long>(shown), static_cast<unsigned long long>(detections),
                worst_age_ms);
    return 0;
}
