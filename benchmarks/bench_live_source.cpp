// benchmarks/bench_live_source.cpp - what the live source's supervision costs per frame.
//
//   [backend: a frame at once, every read] -> live_source -> sink that keeps the last frame
//
// The floor is the same backend read in a plain loop that wraps each frame as the source does
// (a stamped<Frame> with its sequence number, capture time and epoch) and hands it to the same
// sink. The difference is the supervisor's work per frame: the deadline arithmetic, the
// counters, the clock reads for stall detection, and (threaded, start()) the watchdog's call
// bookkeeping and the emit gate.
#include <framepipe/live_source.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <stop_token>

namespace {

constexpr std::int64_t frames_per_run = 200'000;

// Gives a frame on every read until `limit`, then the end of input.
struct instant_backend {
    using frame_type = std::int64_t;
    std::int64_t n = 0;
    framepipe::open_result open(std::stop_token, std::chrono::nanoseconds) {
        return framepipe::open_result::success();
    }
    framepipe::read_result<std::int64_t> read(std::stop_token, std::chrono::nanoseconds) {
        if (n == frames_per_run) {
            return framepipe::read_result<std::int64_t>::ended();
        }
        return framepipe::read_result<std::int64_t>::got(n++);
    }
    void close() noexcept {}
};

// An output that keeps the last item (what a latest slot's consumer would see), no waiting.
struct last_item {
    framepipe::stamped<std::int64_t> last{};
    framepipe::push_status push(framepipe::stamped<std::int64_t> v) {
        last = v;
        return framepipe::push_status::ok;
    }
    void close() {}
};

void floor_plain_loop(benchmark::State& state) {
    for (auto _ : state) {
        instant_backend b;
        last_item out;
        std::uint64_t seq = 0;
        (void)b.open({}, std::chrono::seconds(1));
        for (;;) {
            auto r = b.read({}, std::chrono::seconds(1));
            if (r.status != framepipe::read_status::frame) {
                break;
            }
            (void)out.push(framepipe::stamped<std::int64_t>{
                *r.frame, seq++, std::chrono::steady_clock::now(), 1});
        }
        b.close();
        benchmark::DoNotOptimize(out.last);
    }
    state.SetItemsProcessed(state.iterations() * frames_per_run);
}
BENCHMARK(floor_plain_loop)->UseRealTime()->Unit(benchmark::kMillisecond);

void live_source_run(benchmark::State& state) {
    for (auto _ : state) {
        framepipe::live_source<instant_backend> src([] { return instant_backend{}; });
        last_item out;
        (void)src.run(out, {});
        benchmark::DoNotOptimize(out.last);
    }
    state.SetItemsProcessed(state.iterations() * frames_per_run);
}
BENCHMARK(live_source_run)->UseRealTime()->Unit(benchmark::kMillisecond);

void live_source_threaded(benchmark::State& state) {
    for (auto _ : state) {
        framepipe::live_source<instant_backend> src([] { return instant_backend{}; });
        last_item out;
        src.start(out);
        (void)src.wait_for(std::chrono::hours(1)); // ended
        src.stop();
        benchmark::DoNotOptimize(out.last);
    }
    state.SetItemsProcessed(state.iterations() * frames_per_run);
}
BENCHMARK(live_source_threaded)->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace

