// benchmarks/bench_pipeline.cpp - what the pipeline's live metrics cost.
//
//   [count] -> ring(1024, block) -> [sink]        200k items per run, metrics on and off
//
// A stage with metrics on counts every item and times some: every item while items come 10 us
// or more apart, one in 16 when they come faster; a timed item costs two steady_clock reads and
// a latency_histogram record (relaxed atomics, no lock, no allocation). The first pair of cases
// measures the whole per-item cost through a real pipeline; the rest price each piece on its
// own, next to the clock read that dominates it.
#include <framepipe/metrics.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <optional>

namespace {

constexpr std::int64_t items_per_run = 200'000;

void pipeline_throughput(benchmark::State& state) {
    const bool metrics = state.range(0) != 0;
    for (auto _ : state) {
        framepipe::ring<std::int64_t> q(1024, framepipe::overflow::block);
        std::int64_t next = 0;
        std::int64_t sum = 0;
        framepipe::pipeline p("bench", {.metrics = metrics});
        p.source("count", q, [&]() -> std::optional<std::int64_t> {
            return next < items_per_run ? std::optional<std::int64_t>(next++) : std::nullopt;
        });
        p.sink("sink", q, [&](std::int64_t v) { sum += v; });
        p.start();
        p.wait();
        benchmark::DoNotOptimize(sum);
    }
    state.SetItemsProcessed(state.iterations() * items_per_run);
    state.SetLabel(metrics ? "metrics on" : "metrics off");
}
BENCHMARK(pipeline_throughput)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void steady_clock_now(benchmark::State& state) {
    for (auto _ : state) {
        benchmark::DoNotOptimize(std::chrono::steady_clock::now());
    }
}
BENCHMARK(steady_clock_now);

void histogram_record(benchmark::State& state) {
    framepipe::latency_histogram h;
    std::int64_t v = 1000;
    for (auto _ : state) {
        h.record(std::chrono::nanoseconds(v));
        v = (v * 13 + 7) % 50'000'000; // spread over many buckets
    }
    benchmark::DoNotOptimize(h.count());
}
BENCHMARK(histogram_record);

void rate_meter_record(benchmark::State& state) {
    framepipe::rate_meter m;
    auto t = std::chrono::steady_clock::now();
    for (auto _ : state) {
        m.record(t);
        t += std::chrono::microseconds(33);
    }
    benchmark::DoNotOptimize(m.count());
}
BENCHMARK(rate_meter_record);

void snapshot_read(benchmark::State& state) {
    framepipe::latency_histogram h;
    for (int i = 1; i <= 10'000; ++i) {
        h.record(std::chrono::microseconds(i));
    }
    for (auto _ : state) {
        benchmark::DoNotOptimize(h.quantile(0.99));
    }
}
BENCHMARK(snapshot_read);

} // namespace
