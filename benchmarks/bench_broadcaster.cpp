// bench_broadcaster - framepipe::broadcaster<T> against K separate SPSC queues and TBB's
// broadcast_node -> queue_node.
//
// Two threads: the benchmark thread publishes; one drain thread round-robins over the K
// subscriptions with non-blocking pops (2 cores: one consumer thread for all subscribers).
// Subscriber buffers hold 1024 values (framepipe: drop_oldest; TBB's queue_node is unbounded).
//
//   broadcaster.publish_K<k>   one iteration = one publish to K subscribers (time = publish
//                              cost), in batches of 256 into empty buffers, drained by the other
//                              core between batches: nothing is dropped (checked), so no
//                              implementation is timed on a cheap "full, drop" path.
//                              Counter: delivered (values popped / (publishes * K)) == 1.
//     framepipe.broadcaster        publish(T): boxes the value in one shared_ptr<const T>.
//     Kx<queue>.shared_ptr         same contract: make_shared once, push K pointer copies.
//     Kx<queue>.value              copies T into each of the K queues.
//     tbb.broadcast_node           broadcast_node<T> -> K queue_node<T> (copies T).
//   broadcaster.isolation_<none|stalled>   a producer paced at one value per 2 microseconds,
//                              one active subscriber drained flat out, plus nothing or one
//                              stalled subscriber (capacity 8, never popped). Counters:
//                              consumer_Mps (values received per microsecond), delivered, the
//                              age of the values received, behind_ns (see isolation_case).
#include "common.hpp"
#include "peers.hpp"

#include <framepipe/broadcaster.hpp>

#include <oneapi/tbb/flow_graph.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

namespace fpb {
namespace {

constexpr std::size_t sub_capacity = 1024;
constexpr std::size_t stalled_capacity = 8;

template <class T>
struct fp_bcast {
    framepipe::broadcaster<T> b;
    std::vector<framepipe::subscription<T>> subs;
    fp_bcast(std::size_t k, std::size_t stalled) {
        for (std::size_t i = 0; i < k; ++i) {
            subs.push_back(b.subscribe({.capacity = sub_capacity}));
        }
        for (std::size_t i = 0; i < stalled; ++i) {
            stalled_subs.push_back(b.subscribe({.capacity = stalled_capacity}));
        }
    }
    std::size_t publish(const T& v) {
        const auto r = b.publish(v);
        return r.evicted + r.rejected;
    }
    template <class F>
    std::size_t drain(F&& f) {
        std::size_t got = 0;
        for (auto& s : subs) {
            if (auto x = s.try_pop()) {
                f(**x);
                ++got;
            }
        }
        return got;
    }
    std::vector<framepipe::subscription<T>> stalled_subs;
};

// K SPSC queues of shared_ptr<const T> (the broadcaster's zero-copy contract).
template <class Q, class T>
struct k_spsc_shared {
    std::vector<std::unique_ptr<Q>> qs;
    std::vector<std::unique_ptr<Q>> stalled;
    k_spsc_shared(std::size_t k, std::size_t stalled_n) {
        for (std::size_t i = 0; i < k; ++i) {
            qs.push_back(std::make_unique<Q>(sub_capacity));
        }
        for (std::size_t i = 0; i < stalled_n; ++i) {
            stalled.push_back(std::make_unique<Q>(stalled_capacity));
        }
    }
    std::size_t publish(const T& v) {
        const auto sp = std::make_shared<const T>(v);
        std::size_t dropped = 0;
        for (auto& q : qs) {
            dropped += !q->try_push(sp);
        }
        for (auto& q : stalled) {
            dropped += !q->try_push(sp);
        }
        return dropped;
    }
    template <class F>
    std::size_t drain(F&& f) {
        std::size_t got = 0;
        std::shared_ptr<const T> x;
        for (auto& q : qs) {
            if (q->try_pop(x)) {
                f(*x);
                x.reset();
                ++got;
            }
        }
        return got;
    }
};

// K SPSC queues of T (each subscriber gets a copy).
template <class Q, class T>
struct k_spsc_value {
    std::vector<std::unique_ptr<Q>> qs;
    std::vector<std::unique_ptr<Q>> stalled;
    k_spsc_value(std::size_t k, std::size_t stalled_n) {
        for (std::size_t i = 0; i < k; ++i) {
            qs.push_back(std::make_unique<Q>(sub_capacity));
        }
        for (std::size_t i = 0; i < stalled_n; ++i) {
            stalled.push_back(std::make_unique<Q>(stalled_capacity));
        }
    }
    std::size_t publish(const T& v) {
        std::size_t dropped = 0;
        for (auto& q : qs) {
            dropped += !q->try_push(v);
        }
        for (auto& q : stalled) {
            dropped += !q->try_push(v);
        }
        return dropped;
    }
    template <class F>
    std::size_t drain(F&& f) {
        std::size_t got = 0;
        T x{};
        for (auto& q : qs) {
            if (q->try_pop(x)) {
                f(x);
                ++got;
            }
        }
        return got;
    }
};

template <class T>
struct tbb_bcast {
    tbb::flow::graph g;
    tbb::flow::broadcast_node<T> b{g};
    std::vector<std::unique_ptr<tbb::flow::queue_node<T>>> qs;
    tbb_bcast(std::size_t k, std::size_t /*stalled: unbounded queue_node, not measured*/) {
        for (std::size_t i = 0; i < k; ++i) {
            qs.push_back(std::make_unique<tbb::flow::queue_node<T>>(g));
            tbb::flow::make_edge(b, *qs.back());
        }
    }
    ~tbb_bcast() { g.wait_for_all(); }
    tbb_bcast(const tbb_bcast&) = delete;
    tbb_bcast& operator=(const tbb_bcast&) = delete;
    std::size_t publish(const T& v) {
        (void)b.try_put(v);
        return 0;
    }
    template <class F>
    std::size_t drain(F&& f) {
        std::size_t got = 0;
        T x{};
        for (auto& q : qs) {
            if (q->try_get(x)) {
                f(x);
                ++got;
            }
        }
        return got;
    }
};

// Publish cost, without drops or contention: the producer publishes a batch of 256 values into
// empty buffers (capacity 1024, so nothing is dropped and nobody takes a shortcut by failing a
// full push), then the drain thread, on the other core, empties every subscriber while the
// producer waits. Only the publishes are timed; they pay for the cache lines the consumer took.
template <class B, class T>
void publish_cost(benchmark::State& st, std::size_t k) {
    constexpr std::uint64_t batch = 256;
    static_assert(batch <= sub_capacity);
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    B b(k, 0);
    start_line line;
    pinned_scope pin(0);
    alignas(64) std::atomic<std::uint64_t> ready{0}; // values published so far
    alignas(64) std::atomic<std::uint64_t> acked{0}; // values drained so far (per subscriber)
    std::uint64_t got = 0;
    std::thread drainer([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        std::uint64_t done = 0;
        while (done < n) {
            std::uint64_t r;
            while ((r = ready.load(std::memory_order_acquire)) == done) {
                cpu_relax();
            }
            const std::uint64_t want = (r - done) * k;
            for (std::uint64_t g = 0; g < want;) {
                const auto x = b.drain([](const T& v) { benchmark::DoNotOptimize(v); });
                g += x;
                got += x;
                if (x == 0) {
                    cpu_relax();
                }
            }
            done = r;
            acked.store(done, std::memory_order_release);
        }
    });
    line.wait_for(1);
    std::uint64_t dropped = 0;
    double timed_ns = 0;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        for (std::uint64_t i = 1; i <= n;) {
            const std::uint64_t end = std::min(n, i + batch - 1);
            const double t0 = steady_ns();
            for (std::uint64_t j = i; j <= end; ++j) {
                dropped += b.publish(make_item<T>(j));
            }
            timed_ns += steady_ns() - t0;
            ready.store(end, std::memory_order_release);
            while (acked.load(std::memory_order_acquire) != end) {
                cpu_relax();
            }
            i = end + 1;
        }
        st.SetIterationTime(timed_ns * 1e-9);
    }
    drainer.join();
    if (dropped != 0 || got != n * k) {
        st.SkipWithError("values were dropped or lost");
    }
    st.counters["delivered"] = static_cast<double>(got) / static_cast<double>(n * k);
}

// Isolation: the producer publishes one value every 2 microseconds (500 000 values a second, far
// above any camera, with headroom over framepipe's contended publish cost, so that the case
// measures isolation and not a saturated producer); the drain thread takes from
// the active subscriber flat out; `stalled` more subscribers (capacity 8) are never read, so
// their buffers fill and then drop every value. Counters: consumer_Mps (values the active
// consumer received per microsecond), delivered (fraction of the published values it got),
// age_p50_ns / age_p99_ns (publish -> receipt, TSC-stamped) and behind_ns (how far the producer
// fell behind its pace at the end: > 0 means publish itself could not keep the pace).
template <class B, class T>
void isolation_case(benchmark::State& st, std::size_t stalled) {
    constexpr double pace_ns = 2000.0;
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    const auto& cal = calibration();
    const double pace_ticks = pace_ns / cal.ns_per_tick;
    B b(1, stalled);
    start_line line;
    pinned_scope pin(0);
    std::atomic<bool> done{false};
    std::uint64_t got = 0;
    samples age(1u << 20);
    std::thread drainer([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        while (!done.load(std::memory_order_relaxed)) {
            const auto g = b.drain([&](const T& v) {
                age.add(static_cast<double>(ticks() - seq_of(v)) * cal.ns_per_tick);
            });
            got += g;
            if (g == 0) {
                cpu_relax();
            }
        }
    });
    line.wait_for(1);
    double wall_ns = 0;
    double behind_ns = 0;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        double next = static_cast<double>(ticks());
        for (std::uint64_t i = 1; i <= n; ++i) {
            while (static_cast<double>(ticks()) < next) {
            }
            next += pace_ticks;
            (void)b.publish(make_item<T>(ticks()));
        }
        const double t1 = steady_ns();
        behind_ns = std::max(0.0, (static_cast<double>(ticks()) - next) * cal.ns_per_tick);
        wall_ns = t1 - t0;
        st.SetIterationTime(seconds_between(t0, t1));
    }
    done.store(true, std::memory_order_relaxed);
    drainer.join();
    st.counters["consumer_Mps"] = static_cast<double>(got) / (wall_ns * 1e-3);
    st.counters["delivered"] = static_cast<double>(got) / static_cast<double>(n);
    st.counters["age_p50_ns"] = age.pct(0.50);
    st.counters["age_p99_ns"] = age.pct(0.99);
    st.counters["behind_ns"] = behind_ns;
}

double scale() {
    const char* s = std::getenv("FPB_SCALE");
    const double v = s ? std::atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

template <class T>
void register_payload() {
    const std::string p = payload_name<T>();
    // Fixed counts for the publish cost: its manual time counts only the publishes, so an
    // adaptive count would make the (untimed) drain phases run for many seconds.
    const auto publishes = static_cast<benchmark::IterationCount>(100000 * scale());
    using sp = std::shared_ptr<const T>;
    constexpr std::size_t C = sub_capacity;
    for (const std::size_t k : {1u, 2u, 4u, 8u, 16u}) {
        const std::string s = "broadcaster.publish_K" + std::to_string(k);
        auto add = [&](const std::string& impl, auto fn) {
            reg_manual(case_name(s, p, impl), [k, fn](benchmark::State& st) { fn(st, k); })
                ->Iterations(publishes);
        };
        add("framepipe.broadcaster", publish_cost<fp_bcast<T>, T>);
        add("Kx.moodycamel.ReaderWriterQueue.shared_ptr",
            publish_cost<k_spsc_shared<mc_rwq<sp>, T>, T>);
        add("Kx.boost.spsc_queue.shared_ptr", publish_cost<k_spsc_shared<boost_spsc<sp, C>, T>, T>);
        add("Kx.moodycamel.ReaderWriterQueue.value", publish_cost<k_spsc_value<mc_rwq<T>, T>, T>);
        add("Kx.boost.spsc_queue.value", publish_cost<k_spsc_value<boost_spsc<T, C>, T>, T>);
        add("tbb.broadcast_node", publish_cost<tbb_bcast<T>, T>);
    }
    for (const std::size_t stalled : {0u, 1u}) {
        const std::string s = stalled ? "broadcaster.isolation_stalled" : "broadcaster.isolation_none";
        auto add = [&](const std::string& impl, auto fn) {
            reg_manual(case_name(s, p, impl),
                       [stalled, fn](benchmark::State& st) { fn(st, stalled); });
        };
        add("framepipe.broadcaster", isolation_case<fp_bcast<T>, T>);
        add("Kx.moodycamel.ReaderWriterQueue.shared_ptr",
            isolation_case<k_spsc_shared<mc_rwq<sp>, T>, T>);
    }
}

const bool registered = [] {
    register_payload<h8>();
    register_payload<p64>();
    return true;
}();

} // namespace
} // namespace fpb
