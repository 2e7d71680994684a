// bench_ring - framepipe::ring<T> against the packaged queues.
//
// Scenarios (one iteration = one item, unless said otherwise):
//   ring.spsc_throughput     one producer, one consumer, both flat out, capacity 1024.
//                            Peers: try_push / try_pop spinning (with a pause instruction).
//                            framepipe.ring_spin uses the same protocol (overflow::drop_newest
//                            push as try_push, try_pop); framepipe.ring_block uses overflow::block
//                            and the parking pop(), as does std.mutex+condvar+deque_block.
//   ring.spsc_roundtrip      ping-pong through two queues, spinning; one iteration = one round
//                            trip. Floor: floor.cas_pingpong.
//   ring.mpmc_2p2c_blocking  two producers, two consumers, blocking, capacity 1024 (4 threads on
//                            2 cores, so only blocking consumers are measured; the producers
//                            pinned to one core, the consumers to the other).
//   ring.push_pop_uncontended  one thread: push then pop on a ring that is never full. Shows
//                            that drop_oldest costs the same as the other policies until full.
//   ring.overflow_<k>x       a producer paced k times faster than a consumer with a 2 us service
//                            time, capacity 8, drop-oldest. One iteration = one push; the time
//                            per iteration is the mean cost of the push call alone (TSC-timed).
//                            k = 0.5 is the non-overflowing reference. Peers emulate drop-oldest.
#include "common.hpp"
#include "floors.hpp"
#include "peers.hpp"

#include <framepipe/ring.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace fpb {
namespace {

constexpr std::size_t spsc_capacity = 1024;
constexpr std::size_t overflow_capacity = 8;

// ring<T> with a fixed policy, used by the single-threaded push/pop case.
template <class T, framepipe::overflow P,
          framepipe::concurrency C = framepipe::concurrency::mpmc>
struct fp_ring_policy {
    framepipe::ring<T, C> r;
    explicit fp_ring_policy(std::size_t cap) : r(cap, P) {}
    bool try_push(const T& v) { return framepipe::accepted(r.push(v)); }
    bool try_pop(T& v) {
        auto o = r.try_pop();
        if (!o) {
            return false;
        }
        v = std::move(*o);
        return true;
    }
};

double scale() {
    const char* s = std::getenv("FPB_SCALE");
    const double v = s ? std::atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

// --------------------------------------------------------------------------- spsc throughput

template <class Q, class T>
void spsc_throughput(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    Q q(spsc_capacity);
    start_line line;
    pinned_scope pin(0);
    // What the consumer reports, written once at its end, on a line of its own: a variable in
    // the producer's frame that the consumer wrote per item would share a cache line with the
    // producer's hot stack slots and slow every implementation down (false sharing).
    struct alignas(64) consumer_result {
        double t_end = 0;
        std::uint64_t out_of_order = 0;
    } result;
    double& t_end = result.t_end;
    std::uint64_t& out_of_order = result.out_of_order;
    std::thread consumer([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        T v{};
        std::uint64_t expect = 1;
        std::uint64_t wrong = 0; // local: see the consumer_result comment
        for (std::uint64_t got = 0; got < n;) {
            if (q.try_pop(v)) {
                wrong += seq_of(v) != expect;
                ++expect;
                ++got;
            } else {
                cpu_relax();
            }
        }
        t_end = steady_ns();
        out_of_order = wrong;
    });
    line.wait_for(1);
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        for (std::uint64_t i = 1; i <= n; ++i) {
            const T v = make_item<T>(i);
            while (!q.try_push(v)) {
                cpu_relax();
            }
        }
        consumer.join();
        st.SetIterationTime(seconds_between(t0, t_end));
    }
    if (out_of_order != 0) {
        st.SkipWithError("items arrived out of order");
    }
}

// The same with the blocking API (push_wait / pop_wait).
template <class Q, class T>
void spsc_throughput_blocking(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    Q q(spsc_capacity);
    start_line line;
    pinned_scope pin(0);
    // What the consumer reports, written once at its end, on a line of its own: a variable in
    // the producer's frame that the consumer wrote per item would share a cache line with the
    // producer's hot stack slots and slow every implementation down (false sharing).
    struct alignas(64) consumer_result {
        double t_end = 0;
        std::uint64_t out_of_order = 0;
    } result;
    double& t_end = result.t_end;
    std::uint64_t& out_of_order = result.out_of_order;
    std::thread consumer([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        T v{};
        std::uint64_t expect = 1;
        std::uint64_t wrong = 0; // local: see the consumer_result comment
        for (std::uint64_t got = 0; got < n; ++got) {
            (void)q.pop_wait(v);
            wrong += seq_of(v) != expect;
            ++expect;
        }
        t_end = steady_ns();
        out_of_order = wrong;
    });
    line.wait_for(1);
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        for (std::uint64_t i = 1; i <= n; ++i) {
            q.push_wait(make_item<T>(i));
        }
        consumer.join();
        st.SetIterationTime(seconds_between(t0, t_end));
    }
    if (out_of_order != 0) {
        st.SkipWithError("items arrived out of order");
    }
}

// ---------------------------------------------------------------------------- spsc round trip

template <class Q, class T>
void spsc_roundtrip(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    Q there(spsc_capacity);
    Q back(spsc_capacity);
    start_line line;
    pinned_scope pin(0);
    std::thread partner([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        T v{};
        for (std::uint64_t i = 0; i < n; ++i) {
            while (!there.try_pop(v)) {
                cpu_relax();
            }
            while (!back.try_push(v)) {
                cpu_relax();
            }
        }
    });
    line.wait_for(1);
    samples rt(std::min<std::uint64_t>(n, 1u << 20));
    const double ns_per_tick = calibration().ns_per_tick;
    std::uint64_t wrong = 0;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        T v{};
        for (std::uint64_t i = 1; i <= n; ++i) {
            const auto a = ticks();
            while (!there.try_push(make_item<T>(i))) {
                cpu_relax();
            }
            while (!back.try_pop(v)) {
                cpu_relax();
            }
            rt.add(static_cast<double>(ticks() - a) * ns_per_tick);
            wrong += seq_of(v) != i;
        }
        const double t1 = steady_ns();
        st.SetIterationTime(seconds_between(t0, t1));
    }
    partner.join();
    if (wrong != 0) {
        st.SkipWithError("wrong item returned");
    }
    st.counters["rt_p50_ns"] = rt.pct(0.50);
    st.counters["rt_p99_ns"] = rt.pct(0.99);
}

// -------------------------------------------------------------------------- mpmc, blocking

// The two producers share core 0 and the two consumers core 1, for every implementation, so that
// items always cross between the cores, as in the two-thread cases. Left to the scheduler, the
// median of 10 repetitions of framepipe's ring moved by up to 98 % between four runs of this
// case; pinned, by 6-8 % (docs/benchmarks.md, "Where framepipe stands").
template <class Q, class T>
void mpmc_blocking(benchmark::State& st) {
    // KeepRunningBatch must be given exactly max_iterations, or it runs the body twice.
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    const std::array<std::uint64_t, 2> share{(n + 1) / 2, n / 2};
    Q q(spsc_capacity);
    start_line line;
    std::array<std::uint64_t, 2> got{};
    std::array<double, 2> t_end{};
    std::array<std::thread, 4> threads;
    for (int p = 0; p < 2; ++p) {
        threads[static_cast<std::size_t>(p)] = std::thread([&, p] {
            pin_this_thread(0); // producers on core 0 (see the comment above)
            line.arrive_and_wait();
            const std::uint64_t base = p == 0 ? 0 : share[0];
            for (std::uint64_t i = 1; i <= share[static_cast<std::size_t>(p)]; ++i) {
                q.push_wait(make_item<T>(base + i));
            }
            if constexpr (Q::poison) {
                // After this producer's items: safe for queues that are FIFO per producer only
                // (moodycamel), as a consumer stops at the first poison it takes.
                q.close();
            }
        });
    }
    for (int c = 0; c < 2; ++c) {
        threads[static_cast<std::size_t>(2 + c)] = std::thread([&, c] {
            pin_this_thread(1); // consumers on core 1
            line.arrive_and_wait();
            T v{};
            std::uint64_t k = 0;
            while (q.pop_wait(v)) {
                ++k;
            }
            got[static_cast<std::size_t>(c)] = k;
            t_end[static_cast<std::size_t>(c)] = steady_ns();
        });
    }
    line.wait_for(4);
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        threads[0].join();
        threads[1].join();
        if constexpr (!Q::poison) {
            q.close();
        }
        threads[2].join();
        threads[3].join();
        st.SetIterationTime(seconds_between(t0, std::max(t_end[0], t_end[1])));
    }
    if (got[0] + got[1] != n) {
        st.SkipWithError("items lost");
    }
}

// ----------------------------------------------------------------- uncontended push + pop

template <class Q, class T>
void push_pop_uncontended(benchmark::State& st) {
    Q q(spsc_capacity);
    std::uint64_t i = 1;
    T v{};
    for (auto _ : st) {
        (void)q.try_push(make_item<T>(i++));
        (void)q.try_pop(v);
        benchmark::DoNotOptimize(v);
    }
}

// ------------------------------------------------------------------------------ overflowing

constexpr double service_ns = 2000.0;

template <class Q, class T>
void overflow_case(benchmark::State& st, double ratio) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    const auto& cal = calibration();
    const double gap_ticks = service_ns / ratio / cal.ns_per_tick;
    Q q(overflow_capacity);
    start_line line;
    pinned_scope pin(0);
    alignas(64) std::atomic<bool> done{false}; // read by the consumer per item: own line
    alignas(64) std::atomic<std::uint64_t> latest{0};
    // The consumer's tallies, written once at its end on a line of their own (see
    // spsc_throughput's consumer_result).
    struct alignas(64) consumer_tally {
        std::uint64_t popped = 0;
        std::uint64_t newest = 0;
        double lag_sum = 0;
        double pop_ticks = 0;
    } tally;
    std::thread consumer([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        T v{};
        consumer_tally mine;
        auto& [popped, newest, lag_sum, pop_ticks] = mine;
        while (!done.load(std::memory_order_relaxed)) {
            const auto a = ticks();
            const bool ok = q.try_pop(v);
            const auto b = ticks();
            if (!ok) {
                cpu_relax();
                continue;
            }
            pop_ticks += static_cast<double>(b - a) - cal.overhead_ticks;
            const std::uint64_t lag = latest.load(std::memory_order_relaxed) - seq_of(v);
            lag_sum += static_cast<double>(lag);
            newest += lag == 0;
            ++popped;
            spin_for_ns(service_ns);
        }
        tally = mine;
    });
    line.wait_for(1);
    samples push_ns(n);
    std::uint64_t evicted = 0;
    double push_ticks = 0;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        double next = static_cast<double>(ticks()) + gap_ticks;
        for (std::uint64_t i = 1; i <= n; ++i) {
            while (static_cast<double>(ticks()) < next) {
            }
            next += gap_ticks;
            const T v = make_item<T>(i);
            latest.store(i, std::memory_order_relaxed); // before the push: lag is never negative
            const auto a = ticks();
            evicted += q.push_drop_oldest(v);
            const auto b = ticks();
            const double t = std::max(0.0, static_cast<double>(b - a) - cal.overhead_ticks);
            push_ticks += t;
            push_ns.add(t * cal.ns_per_tick);
        }
        st.SetIterationTime(push_ticks * cal.ns_per_tick * 1e-9);
    }
    done.store(true, std::memory_order_relaxed);
    consumer.join();
    const auto& [popped, newest, lag_sum, pop_ticks] = tally;
    st.counters["push_p50_ns"] = push_ns.pct(0.50);
    st.counters["push_p99_ns"] = push_ns.pct(0.99);
    st.counters["push_max_ns"] = push_ns.max();
    st.counters["pop_ns"] = popped ? pop_ticks * cal.ns_per_tick / static_cast<double>(popped) : 0;
    st.counters["drop_ratio"] = static_cast<double>(evicted) / static_cast<double>(n);
    st.counters["consumed_ratio"] = static_cast<double>(popped) / static_cast<double>(n);
    st.counters["lag_items"] = popped ? lag_sum / static_cast<double>(popped) : 0;
    st.counters["newest_ratio"] =
        popped ? static_cast<double>(newest) / static_cast<double>(popped) : 0;
}

// ------------------------------------------------------------------------------ registration

template <class T>
void register_payload() {
    const std::string p = payload_name<T>();
    constexpr std::size_t C = spsc_capacity;
    constexpr std::size_t O = overflow_capacity;
    constexpr auto spsc = framepipe::concurrency::spsc;
    using framepipe::overflow;

    {
        const std::string s = "ring.spsc_throughput";
        reg_manual(case_name(s, p, "framepipe.ring_spin"), spsc_throughput<fp_ring_spin<T>, T>);
        reg_manual(case_name(s, p, "framepipe.ring_block"),
                   spsc_throughput_blocking<fp_ring_block<T>, T>);
        reg_manual(case_name(s, p, "framepipe.spsc_ring_spin"),
                   spsc_throughput<fp_ring_spin<T, spsc>, T>);
        reg_manual(case_name(s, p, "framepipe.spsc_ring_block"),
                   spsc_throughput_blocking<fp_ring_block<T, spsc>, T>);
        reg_manual(case_name(s, p, "moodycamel.ReaderWriterQueue"), spsc_throughput<mc_rwq<T>, T>);
        reg_manual(case_name(s, p, "moodycamel.ReaderWriterCircularBuffer"),
                   spsc_throughput<mc_rwcb<T>, T>);
        reg_manual(case_name(s, p, "atomic_queue.spsc"), spsc_throughput<aq<T, C, true>, T>);
        reg_manual(case_name(s, p, "boost.spsc_queue"), spsc_throughput<boost_spsc<T, C>, T>);
        reg_manual(case_name(s, p, "mpmc:atomic_queue"), spsc_throughput<aq<T, C, false>, T>);
        reg_manual(case_name(s, p, "mpmc:boost.lockfree.queue"),
                   spsc_throughput<boost_mpmc<T, C>, T>);
        reg_manual(case_name(s, p, "mpmc:moodycamel.ConcurrentQueue"),
                   spsc_throughput<mc_cq<T>, T>);
        reg_manual(case_name(s, p, "mpmc:tbb.concurrent_bounded_queue"),
                   spsc_throughput<tbb_cbq<T>, T>);
        reg_manual(case_name(s, p, "std.mutex+condvar+deque"), spsc_throughput<cv_queue<T>, T>);
        reg_manual(case_name(s, p, "std.mutex+condvar+deque_block"),
                   spsc_throughput_blocking<cv_queue<T>, T>);
    }
    {
        const std::string s = "ring.spsc_roundtrip";
        reg_manual(case_name(s, p, "framepipe.ring_spin"), spsc_roundtrip<fp_ring_spin<T>, T>);
        reg_manual(case_name(s, p, "framepipe.spsc_ring_spin"),
                   spsc_roundtrip<fp_ring_spin<T, spsc>, T>);
        reg_manual(case_name(s, p, "moodycamel.ReaderWriterQueue"), spsc_roundtrip<mc_rwq<T>, T>);
        reg_manual(case_name(s, p, "moodycamel.ReaderWriterCircularBuffer"),
                   spsc_roundtrip<mc_rwcb<T>, T>);
        reg_manual(case_name(s, p, "atomic_queue.spsc"), spsc_roundtrip<aq<T, C, true>, T>);
        reg_manual(case_name(s, p, "boost.spsc_queue"), spsc_roundtrip<boost_spsc<T, C>, T>);
        reg_manual(case_name(s, p, "mpmc:atomic_queue"), spsc_roundtrip<aq<T, C, false>, T>);
        reg_manual(case_name(s, p, "mpmc:tbb.concurrent_bounded_queue"),
                   spsc_roundtrip<tbb_cbq<T>, T>);
        reg_manual(case_name(s, p, "std.mutex+condvar+deque"), spsc_roundtrip<cv_queue<T>, T>);
    }
    {
        const std::string s = "ring.mpmc_2p2c_blocking";
        reg_manual(case_name(s, p, "framepipe.ring_block"), mpmc_blocking<fp_ring_block<T>, T>);
        reg_manual(case_name(s, p, "tbb.concurrent_bounded_queue"), mpmc_blocking<tbb_cbq<T>, T>);
        reg_manual(case_name(s, p, "moodycamel.BlockingConcurrentQueue"),
                   mpmc_blocking<mc_bcq<T>, T>);
        reg_manual(case_name(s, p, "std.mutex+condvar+deque"), mpmc_blocking<cv_queue<T>, T>);
    }
    {
        const std::string s = "ring.push_pop_uncontended";
        reg_real(case_name(s, p, "framepipe.ring_drop_oldest"),
                 push_pop_uncontended<fp_ring_policy<T, overflow::drop_oldest>, T>);
        reg_real(case_name(s, p, "framepipe.ring_drop_newest"),
                 push_pop_uncontended<fp_ring_policy<T, overflow::drop_newest>, T>);
        reg_real(case_name(s, p, "framepipe.ring_block"),
                 push_pop_uncontended<fp_ring_policy<T, overflow::block>, T>);
        reg_real(case_name(s, p, "framepipe.spsc_ring_drop_oldest"),
                 push_pop_uncontended<fp_ring_policy<T, overflow::drop_oldest, spsc>, T>);
        reg_real(case_name(s, p, "framepipe.spsc_ring_drop_newest"),
                 push_pop_uncontended<fp_ring_policy<T, overflow::drop_newest, spsc>, T>);
        reg_real(case_name(s, p, "framepipe.spsc_ring_block"),
                 push_pop_uncontended<fp_ring_policy<T, overflow::block, spsc>, T>);
        reg_real(case_name(s, p, "moodycamel.ReaderWriterQueue"),
                 push_pop_uncontended<mc_rwq<T>, T>);
        reg_real(case_name(s, p, "atomic_queue.spsc"),
                 push_pop_uncontended<aq<T, C, true>, T>);
        reg_real(case_name(s, p, "boost.spsc_queue"), push_pop_uncontended<boost_spsc<T, C>, T>);
        reg_real(case_name(s, p, "std.mutex+condvar+deque"),
                 push_pop_uncontended<cv_queue<T>, T>);
    }
    // Fixed iteration counts: the producer is paced, so the run length is set by the pace.
    const auto pushes = static_cast<benchmark::IterationCount>(60000 * scale());
    for (const double ratio : {0.5, 2.0, 10.0}) {
        const std::string s = ratio == 0.5    ? "ring.overflow_0.5x"
                              : ratio == 2.0 ? "ring.overflow_2x"
                                             : "ring.overflow_10x";
        // Same wall time for every pace: pushes * gap is constant.
        const auto iters =
            static_cast<benchmark::IterationCount>(static_cast<double>(pushes) * ratio / 2.0);
        auto add = [&](const std::string& impl, auto fn) {
            reg_manual(case_name(s, p, impl), [fn, ratio](benchmark::State& st) { fn(st, ratio); })
                ->Iterations(std::max<benchmark::IterationCount>(iters, 1000));
        };
        add("framepipe.ring_drop_oldest", overflow_case<fp_ring_drop_oldest<T>, T>);
        add("framepipe.spsc_ring_drop_oldest", overflow_case<fp_ring_drop_oldest<T, spsc>, T>);
        add("emul:atomic_queue", overflow_case<drop_oldest_emulation<aq<T, O, false>>, T>);
        add("emul:boost.lockfree.queue",
            overflow_case<drop_oldest_emulation<boost_mpmc<T, O>>, T>);
        add("emul:tbb.concurrent_bounded_queue",
            overflow_case<drop_oldest_emulation<tbb_cbq<T>>, T>);
        add("emul:std.mutex+boost.circular_buffer", overflow_case<mutex_circular_buffer<T>, T>);
        add("emul:std.mutex+deque", overflow_case<mutex_deque_drop_oldest<T>, T>);
    }
}

const bool registered = [] {
    register_payload<h8>();
    register_payload<p64>();
    register_floors("ring.spsc_roundtrip", true, false);
    return true;
}();

} // namespace
} // namespace fpb
