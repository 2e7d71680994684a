// benchmarks/bench_broadcaster_publishers.cpp - publishers racing on one broadcaster.
//
//     [publisher] --+                    +--> [subscriber 1]
//     [publisher] --+--> broadcaster ----+--> ...            (drop_oldest, capacity 8)
//                                        +--> [subscriber K]
//
// P threads each publish the same shared value (publish(shared_ptr): no allocation) 10^6
// times to K drop_oldest subscribers of capacity 8. Without a reader ("full") every publish
// evicts in every subscriber; with one ("drained") a thread pops them all round-robin with
// try_pop; "parked": each subscriber has a thread of its own in a blocking pop(), which parks
// whenever its buffer is empty, so publishes wake parked consumers (a futex system call each).
// On this 2-core machine the readers and two publishers share the cores, so the cases with
// readers are noisy. Time: wall time of the publishers / all publishes (counter ns_per_publish).
//
// Not a goal of scripts/bench and not run by it; it shows what publish's lock costs when
// publishers contend (docs/benchmarks.md, "Missed, and why", the broadcaster).
#include <framepipe/broadcaster.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

namespace {

constexpr long publishes_per_thread = 1'000'000;

enum class readers { none, drained, parked };

void publishers(benchmark::State& st, int threads, int subscribers, readers kind) {
    for (auto _ : st) {
        framepipe::broadcaster<long> b;
        std::vector<framepipe::subscription<long>> subs;
        for (int i = 0; i < subscribers; ++i) {
            subs.push_back(b.subscribe({.capacity = 8}));
        }
        std::atomic<bool> done{false};
        std::vector<std::thread> reader_threads;
        if (kind == readers::drained) {
            reader_threads.emplace_back([&] {
                while (!done.load(std::memory_order_relaxed)) {
                    for (auto& s : subs) {
                        while (s.try_pop()) {
                        }
                    }
                }
            });
        } else if (kind == readers::parked) {
            for (auto& s : subs) {
                reader_threads.emplace_back([&s] {
                    while (s.pop()) { // ends when the broadcaster closes and s is drained
                    }
                });
            }
        }
        const auto value = std::make_shared<const long>(1);
        const auto start = std::chrono::steady_clock::now();
        std::vector<std::thread> ts;
        for (int p = 0; p < threads; ++p) {
            ts.emplace_back([&] {
                for (long i = 0; i < publishes_per_thread; ++i) {
                    benchmark::DoNotOptimize(b.publish(value));
                }
            });
        }
        for (auto& t : ts) {
            t.join();
        }
        const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        done.store(true, std::memory_order_relaxed);
        b.close();
        for (auto& t : reader_threads) {
            t.join();
        }
        st.SetIterationTime(took.count());
        st.counters["ns_per_publish"] =
            took.count() * 1e9 / static_cast<double>(publishes_per_thread * threads);
    }
}

BENCHMARK_CAPTURE(publishers, p1_k4_full, 1, 4, readers::none)->UseManualTime()->Iterations(1);
BENCHMARK_CAPTURE(publishers, p2_k1_full, 2, 1, readers::none)->UseManualTime()->Iterations(1);
BENCHMARK_CAPTURE(publishers, p2_k4_full, 2, 4, readers::none)->UseManualTime()->Iterations(1);
BENCHMARK_CAPTURE(publishers, p1_k4_drained, 1, 4, readers::drained)
    ->UseManualTime()
    ->Iterations(1);
BENCHMARK_CAPTURE(publishers, p2_k4_drained, 2, 4, readers::drained)
    ->UseManualTime()
    ->Iterations(1);
BENCHMARK_CAPTURE(publishers, p1_k4_parked, 1, 4, readers::parked)
    ->UseManualTime()
    ->Iterations(1);
BENCHMARK_CAPTURE(publishers, p2_k4_parked, 2, 4, readers::parked)
    ->UseManualTime()
    ->Iterations(1);

} // namespace
