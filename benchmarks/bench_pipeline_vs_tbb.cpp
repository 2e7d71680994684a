// benchmarks/bench_pipeline_vs_tbb.cpp - framepipe's pipeline against oneTBB's flow graph, on the
// same two graphs with the same semantics.
//
// seed-000: the first source document's graph.
//
//     [camera] --> broadcast --+--> [ui: at most 15 a second]              (the rest skipped)
//                              +--> newest only --> [detector: 20 us each]  (older ones dropped)
//
//   framepipe: broadcaster; a subscription {capacity 1, max_rate_hz 15} into a sink, and a
//              subscription {capacity 1} (a latest slot) into a sink.
//   oneTBB:    input_node -> broadcast_node; a serial function_node that keeps its own 15 Hz
//              clock (limiter_node limits counts, not rates); a serial, rejecting function_node
//              fed by the broadcast_node directly: what arrives while it works is dropped, and it
//              takes the next value once free. (An overwrite_node in front would not do: it keeps
//              its value after a successor pulls it, so a free detector would get the same value
//              again and again.)
//
// chain-5: a linear chain of five stages, each adding 1, with at most 64 items in flight.
//
//     [source] -> s1 -> s2 -> s3 -> s4 -> [sink]
//
//   framepipe: rings of capacity 12 (overflow::block) between the stages: about 64 in flight in
//              all, as TBB's limiter allows; and, as automatic_cap1, rings of capacity 1, which
//              shows whether the latency is queueing in the rings or the hand-offs themselves;
//              and, as inline_when_idle, the capacity-12 chain with every stage and the sink
//              run inline while idle (stage_options::inline_when_idle): an item crosses the
//              chain on the thread that emitted it unless a stage is behind, as in TBB, where
//              the thread that finishes a node runs the next one.
//   oneTBB:    input_node -> limiter_node(64) -> five serial function_nodes, the sink's output
//              decrementing the limiter (TBB's way to bound the items in flight).
//
// framepipe runs each graph twice: with the pipeline's default spin (automatic: these graphs
// have more stage threads than this 2-core machine has cores, so their waits yield while they
// spin) and with spin_style::pause, which shows what the yield buys.
//
// Figures per run (counters): items per second through the source, end-to-end latency p50/p99
// (from the source's stamp to the last stage), the mean number of items in flight (Little's law:
// items per second x mean latency), CPU per item (user + system time of the process /
// items), and, in the idle_* cases, the CPU the graph uses per second while nothing flows
// (idle_floor: the same measurement with no graph at all). stall_floor: how often, and for how
// long, a thread running flat out loses its core on this machine.
#include <framepipe/broadcaster.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>

#include <benchmark/benchmark.h>
#include <oneapi/tbb/flow_graph.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

namespace {

namespace flow = oneapi::tbb::flow;
using clock_type = std::chrono::steady_clock;

constexpr std::uint64_t items_per_run = 100'000;
constexpr auto detector_work = std::chrono::microseconds(20);

struct item {
    std::uint64_t seq = 0;
    clock_type::time_point made{};
};

// CPU time of the whole process (every thread), user + system.
std::chrono::nanoseconds process_cpu() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto tv = [](const timeval& t) {
        return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
    };
    return tv(u.ru_utime) + tv(u.ru_stime);
}

void busy_for(std::chrono::nanoseconds d) {
    const auto until = clock_type::now() + d;
    while (clock_type::now() < until) {
    }
}

// A 15 Hz clock for the TBB UI node (the framepipe side uses its rate_limiter through
// max_rate_hz): admits when a 1/15 s slot has started since the last admission.
struct rate_clock {
    framepipe::rate_limiter limiter{15.0};
    bool admit() { return limiter.try_acquire(); }
};

// Figures of one run, reported as Google Benchmark counters.
struct figures {
    framepipe::latency_histogram latency;
    std::chrono::nanoseconds latency_sum{0}; // for the mean, exact
    std::chrono::nanoseconds cpu{0};
    std::chrono::nanoseconds wall{0};
    std::uint64_t items = 0;

    void report(benchmark::State& state) const {
        state.counters["items_per_s"] =
            static_cast<double>(items) / std::chrono::duration<double>(wall).count();
        state.counters["latency_p50_us"] = static_cast<double>(latency.quantile(0.5).count()) / 1e3;
        state.counters["latency_p99_us"] = static_cast<double>(latency.quantile(0.99).count()) / 1e3;
        state.counters["cpu_ns_per_item"] =
            static_cast<double>(cpu.count()) / static_cast<double>(items);
        // Little's law: items in flight on average = throughput x mean latency.
        const double mean_s = std::chrono::duration<double>(latency_sum).count() /
                              static_cast<double>(std::max<std::uint64_t>(latency.count(), 1));
        state.counters["in_flight_mean"] = state.counters["items_per_s"] * mean_s;
    }

    void record(std::chrono::nanoseconds d) {
        latency.record(d);
        latency_sum += d;
    }
};

// --- seed-000 -----------------------------------------------------------------------------------

void seed000_framepipe(benchmark::State& state, framepipe::spin_style spin) {
    figures f;
    for (auto _ : state) {
        framepipe::broadcaster<item> frames;
        auto ui = frames.subscribe({.capacity = 1, .max_rate_hz = 15, .name = "ui"});
        auto det = frames.subscribe({.capacity = 1, .name = "detector"});
        std::uint64_t next = 0;
        std::uint64_t shown = 0;
        framepipe::pipeline p("seed-000", {.metrics = false, .spin = spin});
        p.source("camera", frames, [&]() -> std::optional<item> {
            if (next == items_per_run) {
                return std::nullopt;
            }
            return item{next++, clock_type::now()};
        });
        p.sink("ui", ui, [&](const std::shared_ptr<const item>&) { ++shown; });
        p.sink("detector", det, [&](const std::shared_ptr<const item>& x) {
            f.record(clock_type::now() - x->made);
            busy_for(detector_work);
        });
        const auto cpu0 = process_cpu();
        const auto t0 = clock_type::now();
        p.start();
        p.wait();
        f.wall += clock_type::now() - t0;
        f.cpu += process_cpu() - cpu0;
        f.items += items_per_run;
        benchmark::DoNotOptimize(shown);
    }
    f.report(state);
}
BENCHMARK_CAPTURE(seed000_framepipe, automatic, framepipe::spin_style::automatic)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(seed000_framepipe, pause, framepipe::spin_style::pause)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void seed000_tbb(benchmark::State& state) {
    figures f;
    for (auto _ : state) {
        flow::graph g;
        std::uint64_t next = 0;
        std::uint64_t shown = 0;
        rate_clock ui_rate;
        flow::input_node<item> camera(g, [&](oneapi::tbb::flow_control& fc) -> item {
            if (next == items_per_run) {
                fc.stop();
                return {};
            }
            return item{next++, clock_type::now()};
        });
        flow::broadcast_node<item> frames(g);
        flow::function_node<item> ui(g, flow::serial, [&](const item&) {
            if (ui_rate.admit()) {
                ++shown;
            }
        });
        flow::function_node<item, flow::continue_msg, flow::rejecting> detector(
            g, flow::serial, [&](const item& x) {
                f.record(clock_type::now() - x.made);
                busy_for(detector_work);
                return flow::continue_msg();
            });
        flow::make_edge(camera, frames);
        flow::make_edge(frames, ui);
        flow::make_edge(frames, detector);
        const auto cpu0 = process_cpu();
        const auto t0 = clock_type::now();
        camera.activate();
        g.wait_for_all();
        f.wall += clock_type::now() - t0;
        f.cpu += process_cpu() - cpu0;
        f.items += items_per_run;
        benchmark::DoNotOptimize(shown);
    }
    f.report(state);
}
BENCHMARK(seed000_tbb)->UseRealTime()->Unit(benchmark::kMillisecond);

// --- chain-5 ------------------------------------------------------------------------------------

void chain5_framepipe(benchmark::State& state, framepipe::spin_style spin, std::size_t cap,
                      bool inline_stages) {
    figures f;
    for (auto _ : state) {
        framepipe::ring<item> q0(cap, framepipe::overflow::block), q1(cap, framepipe::overflow::block),
            q2(cap, framepipe::overflow::block), q3(cap, framepipe::overflow::block),
            q4(cap, framepipe::overflow::block);
        std::uint64_t next = 0;
        framepipe::pipeline p("chain-5", {.metrics = false, .spin = spin});
        p.source("source", q0, [&]() -> std::optional<item> {
            if (next == items_per_run) {
                return std::nullopt;
            }
            return item{next++, clock_type::now()};
        });
        const auto step = [](item x) {
            ++x.seq;
            return x;
        };
        const framepipe::stage_options o{.inline_when_idle = inline_stages};
        p.stage("s1", q0, q1, step, o).stage("s2", q1, q2, step, o).stage("s3", q2, q3, step, o)
            .stage("s4", q3, q4, step, o);
        p.sink("sink", q4, [&](const item& x) { f.record(clock_type::now() - x.made); }, o);
        const auto cpu0 = process_cpu();
        const auto t0 = clock_type::now();
        p.start();
        p.wait();
        f.wall += clock_type::now() - t0;
        f.cpu += process_cpu() - cpu0;
        f.items += items_per_run;
    }
    f.report(state);
}
BENCHMARK_CAPTURE(chain5_framepipe, automatic, framepipe::spin_style::automatic, 12, false)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(chain5_framepipe, pause, framepipe::spin_style::pause, 12, false)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(chain5_framepipe, automatic_cap1, framepipe::spin_style::automatic, 1, false)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(chain5_framepipe, inline_when_idle, framepipe::spin_style::automatic, 12, true)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void chain5_tbb(benchmark::State& state) {
    figures f;
    for (auto _ : state) {
        flow::graph g;
        std::uint64_t next = 0;
        flow::input_node<item> source(g, [&](oneapi::tbb::flow_control& fc) -> item {
            if (next == items_per_run) {
                fc.stop();
                return {};
            }
            return item{next++, clock_type::now()};
        });
        flow::limiter_node<item> in_flight(g, 64);
        const auto step = [](item x) {
            ++x.seq;
            return x;
        };
        flow::function_node<item, item> s1(g, flow::serial, step), s2(g, flow::serial, step),
            s3(g, flow::serial, step), s4(g, flow::serial, step);
        flow::function_node<item, flow::continue_msg> sink(g, flow::serial, [&](const item& x) {
            f.record(clock_type::now() - x.made);
            return flow::continue_msg();
        });
        flow::make_edge(source, in_flight);
        flow::make_edge(in_flight, s1);
        flow::make_edge(s1, s2);
        flow::make_edge(s2, s3);
        flow::make_edge(s3, s4);
        flow::make_edge(s4, sink);
        flow::make_edge(sink, in_flight.decrementer());
        const auto cpu0 = process_cpu();
        const auto t0 = clock_type::now();
        source.activate();
        g.wait_for_all();
        f.wall += clock_type::now() - t0;
        f.cpu += process_cpu() - cpu0;
        f.items += items_per_run;
    }
    f.report(state);
}
BENCHMARK(chain5_tbb)->UseRealTime()->Unit(benchmark::kMillisecond);

// --- idle: a graph waiting for its input --------------------------------------------------------

constexpr auto idle_span = std::chrono::milliseconds(500);

// The share of one core the whole process uses over idle_span, after 50 ms for every thread to
// park. Sleeping is the measurement here: nothing flows, and we wait for nothing.
double idle_cpu_share() {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto cpu0 = process_cpu();
    std::this_thread::sleep_for(idle_span);
    return std::chrono::duration<double>(process_cpu() - cpu0).count() /
           std::chrono::duration<double>(idle_span).count();
}

void idle_framepipe(benchmark::State& state) {
    double cpu_share = 0;
    for (auto _ : state) {
        framepipe::ring<item> in(64, framepipe::overflow::block), q1(64, framepipe::overflow::block);
        framepipe::pipeline p("idle", {.metrics = false});
        p.stage("s1", in, q1, [](item x) { return x; });
        p.sink("sink", q1, [](const item&) {});
        p.start();
        cpu_share += idle_cpu_share();
        in.close();
        p.wait();
    }
    state.counters["idle_cpu_share"] = cpu_share / static_cast<double>(state.iterations());
}
BENCHMARK(idle_framepipe)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

void idle_tbb(benchmark::State& state) {
    double cpu_share = 0;
    for (auto _ : state) {
        flow::graph g;
        flow::function_node<item, item> s1(g, flow::serial, [](item x) { return x; });
        flow::function_node<item> sink(g, flow::serial, [](const item&) {});
        flow::make_edge(s1, sink);
        s1.try_put(item{}); // the graph has run once: TBB's workers exist
        g.wait_for_all();
        cpu_share += idle_cpu_share();
    }
    state.counters["idle_cpu_share"] = cpu_share / static_cast<double>(state.iterations());
}
BENCHMARK(idle_tbb)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// The floor of the two above: the same measurement of a process with no graph, only this thread
// sleeping (and whatever Google Benchmark and the C++ runtime keep running).
void idle_floor(benchmark::State& state) {
    double cpu_share = 0;
    for (auto _ : state) {
        cpu_share += idle_cpu_share();
    }
    state.counters["idle_cpu_share"] = cpu_share / static_cast<double>(state.iterations());
}
BENCHMARK(idle_floor)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

// --- stalls: how often a running thread loses its core ------------------------------------------

// One thread reads the clock flat out for 100 ms and counts the gaps between two reads longer than
// 5 us: the times it lost its core (a timer tick, an interrupt, the hypervisor). A source stalled
// that long leaves its newest item that much older for a consumer that takes the newest, which is
// what a latency p99 of the seed-000 graph can show.
void stall_floor(benchmark::State& state) {
    std::vector<double> stalls_us;
    std::chrono::nanoseconds span{0};
    for (auto _ : state) {
        const auto start = clock_type::now();
        auto prev = start;
        while (prev - start < std::chrono::milliseconds(100)) {
            const auto now = clock_type::now();
            if (now - prev > std::chrono::microseconds(5)) {
                stalls_us.push_back(std::chrono::duration<double, std::micro>(now - prev).count());
            }
            prev = now;
        }
        span += prev - start;
    }
    std::sort(stalls_us.begin(), stalls_us.end());
    state.counters["stalls_per_ms"] =
        static_cast<double>(stalls_us.size()) / std::chrono::duration<double, std::milli>(span).count();
    state.counters["stall_p50_us"] = stalls_us.empty() ? 0.0 : stalls_us[stalls_us.size() / 2];
    state.counters["stalled_share"] =
        std::accumulate(stalls_us.begin(), stalls_us.end(), 0.0) /
        std::chrono::duration<double, std::micro>(span).count();
}
BENCHMARK(stall_floor)->Iterations(3)->UseRealTime()->Unit(benchmark::kMillisecond);

} // namespace
