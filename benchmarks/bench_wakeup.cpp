// bench_wakeup - how fast a consumer blocked in a framepipe pop is woken, against the
// condition_variable baseline, the blocking peers and both floors.
//
// Every case is a blocking ping-pong between two threads on two cores: A hands a value to B
// and blocks until B hands it back; B does the mirror image. Each side finds its channel empty
// and waits, so one iteration (a round trip) is two wake-ups of a waiting consumer, each
// including the producer's push / notify. Counters rt_p50_ns and rt_p99_ns are percentiles of
// the individual round trips (TSC-timed); the iteration time is their mean. A framepipe waiter
// spins for a few microseconds before it parks, so a fast partner is caught without a sleep:
// for framepipe's channels and pool, counters parks, sleeps and lock_blocks say how often per
// round trip a wait's spin ran out, how often it then slept, and how often a lock was not had
// within its spin (detail::wait_counts).
//
//   wakeup/<payload>/framepipe.ring            ring<T>(16) push / pop()
//   wakeup/<payload>/framepipe.spsc_ring       spsc_ring<T>(16) push / pop()
//   wakeup/<payload>/framepipe.latest_slot     latest_slot<T> push / pop()
//   wakeup/<payload>/framepipe.sliding_window  sliding_window<T>(1, 1) push / pop()
//   wakeup/<payload>/framepipe.subscription    broadcaster<T> publish / subscription pop()
//   wakeup/<payload>/framepipe.pool            two pool<T>(1) used as semaphores; acquire()
//                                              waits until the other side releases
//   wakeup/<payload>/<peer>                    blocking pop of each peer
//   wakeup/any/floor.*                         see floors.hpp
#include "common.hpp"
#include "floors.hpp"
#include "peers.hpp"

#include <framepipe/broadcaster.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/pool.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/sliding_window.hpp>

#include <memory>
#include <thread>

namespace fpb {
namespace {

template <class T, framepipe::concurrency C = framepipe::concurrency::mpmc>
struct fp_ring_wake {
    static constexpr bool counts_waits = true; // waits on framepipe's event_count
    framepipe::ring<T, C> r{16};
    explicit fp_ring_wake(std::size_t) {}
    void push_wait(const T& v) { (void)r.push(v); }
    bool pop_wait(T& v) {
        auto o = r.pop();
        if (o) {
            v = *o;
        }
        return o.has_value();
    }
};

template <class T>
struct fp_latest_wake {
    static constexpr bool counts_waits = true; // waits on framepipe's event_count
    framepipe::latest_slot<T> s;
    explicit fp_latest_wake(std::size_t) {}
    void push_wait(const T& v) { (void)s.push(v); }
    bool pop_wait(T& v) {
        auto o = s.pop();
        if (o) {
            v = *o;
        }
        return o.has_value();
    }
};

template <class T>
struct fp_window_wake {
    static constexpr bool counts_waits = true; // waits on framepipe's event_count
    framepipe::sliding_window<T> w{1, 1};
    explicit fp_window_wake(std::size_t) {}
    void push_wait(const T& v) { (void)w.push(v); }
    bool pop_wait(T& v) {
        auto o = w.pop();
        if (o) {
            v = o->back();
        }
        return o.has_value();
    }
};

template <class T>
struct fp_sub_wake {
    static constexpr bool counts_waits = true; // waits on framepipe's event_count
    framepipe::broadcaster<T> b;
    framepipe::subscription<T> s = b.subscribe({.capacity = 16});
    explicit fp_sub_wake(std::size_t) {}
    void push_wait(const T& v) { (void)b.publish(v); }
    bool pop_wait(T& v) {
        auto o = s.pop();
        if (o) {
            v = **o;
        }
        return o.has_value();
    }
};

// This thread's waits (detail::wait_counts) since `before`.
framepipe::detail::wait_counts waits_since(const framepipe::detail::wait_counts& before) {
    const auto& now = framepipe::detail::this_thread_waits;
    return {.parks = now.parks - before.parks,
            .sleeps = now.sleeps - before.sleeps,
            .lock_blocks = now.lock_blocks - before.lock_blocks};
}

// Per round trip of n, both threads: how often a wait's spin ran out (parks), how often it then
// slept (sleeps), and how often a lock could not be had within its spin (lock_blocks). Near 0:
// the hand-offs were caught while spinning; near 2: every wake-up was a futex wake-up.
void wait_counters(benchmark::State& st, std::uint64_t n,
                   const framepipe::detail::wait_counts& mine,
                   const framepipe::detail::wait_counts& partner) {
    const auto per_rt = [n](std::uint64_t count) {
        return static_cast<double>(count) / static_cast<double>(n);
    };
    st.counters["parks"] = per_rt(mine.parks + partner.parks);
    st.counters["sleeps"] = per_rt(mine.sleeps + partner.sleeps);
    st.counters["lock_blocks"] = per_rt(mine.lock_blocks + partner.lock_blocks);
}

template <class Q, class T>
void wake_pingpong(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    Q there(16);
    Q back(16);
    start_line line;
    pinned_scope pin(0);
    framepipe::detail::wait_counts partner_waits{};
    std::thread partner([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        const auto before = framepipe::detail::this_thread_waits;
        T v{};
        for (std::uint64_t i = 0; i < n; ++i) {
            (void)there.pop_wait(v);
            back.push_wait(v);
        }
        partner_waits = waits_since(before);
    });
    line.wait_for(1);
    samples rt(std::min<std::uint64_t>(n, 1u << 20));
    const double ns_per_tick = calibration().ns_per_tick;
    std::uint64_t wrong = 0;
    const auto waits_before = framepipe::detail::this_thread_waits;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        T v{};
        for (std::uint64_t i = 1; i <= n; ++i) {
            const auto a = ticks();
            there.push_wait(make_item<T>(i));
            (void)back.pop_wait(v);
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
    if constexpr (requires { Q::counts_waits; }) {
        wait_counters(st, n, waits_since(waits_before), partner_waits);
    }
}

// Two pools of one object each, used as two semaphores: A releases P's object (B, parked in
// P.acquire(), wakes) and parks in Q.acquire() until B releases Q's object. Nobody releases into
// the pool it acquires from next, so no acquire can barge in on its own release. The objects
// travel back through two boxes (ordered by the pools' own hand-offs), so that each side holds
// what it must release next. One loop = one round trip = two wake-ups of a parked acquire.
template <class T>
void pool_pingpong(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    framepipe::pool<T> P(1);
    framepipe::pool<T> Q(1);
    start_line line;
    pinned_scope pin(0);
    std::shared_ptr<T> a_hold = P.acquire();
    std::shared_ptr<T> b_hold = Q.acquire();
    std::shared_ptr<T> box_p; // B -> A, written before B releases Q's object
    std::shared_ptr<T> box_q; // A -> B, written before A releases P's object
    framepipe::detail::wait_counts partner_waits{};
    std::thread partner([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        const auto before = framepipe::detail::this_thread_waits;
        std::shared_ptr<T> q = std::move(b_hold);
        for (std::uint64_t i = 0; i < n; ++i) {
            std::shared_ptr<T> p = P.acquire(); // parks until A releases P's object
            if (i > 0) {
                q = std::move(box_q);
            }
            box_p = std::move(p);
            q.reset(); // wakes A, parked in Q.acquire()
        }
        partner_waits = waits_since(before);
    });
    line.wait_for(1);
    samples rt(std::min<std::uint64_t>(n, 1u << 20));
    const double ns_per_tick = calibration().ns_per_tick;
    std::uint64_t waited_before = P.stats().waited + Q.stats().waited;
    const auto waits_before = framepipe::detail::this_thread_waits;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        std::shared_ptr<T> p = std::move(a_hold);
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto a = ticks();
            p.reset();                          // wakes B, parked in P.acquire()
            std::shared_ptr<T> q = Q.acquire(); // parks until B releases Q's object
            rt.add(static_cast<double>(ticks() - a) * ns_per_tick);
            p = std::move(box_p);
            box_q = std::move(q);
        }
        const double t1 = steady_ns();
        st.SetIterationTime(seconds_between(t0, t1));
        a_hold = std::move(p);
    }
    partner.join();
    const std::uint64_t waited = P.stats().waited + Q.stats().waited - waited_before;
    st.counters["rt_p50_ns"] = rt.pct(0.50);
    st.counters["rt_p99_ns"] = rt.pct(0.99);
    // Fraction of acquires that found the pool empty and waited (2 per round trip); near 1 means
    // the case measured what it should. Whether a wait was caught spinning: parks and sleeps.
    st.counters["parked"] = static_cast<double>(waited) / static_cast<double>(2 * n);
    wait_counters(st, n, waits_since(waits_before), partner_waits);
}

template <class T>
void register_payload() {
    const std::string p = payload_name<T>();
    const std::string s = "wakeup";
    reg_manual(case_name(s, p, "framepipe.ring"), wake_pingpong<fp_ring_wake<T>, T>);
    reg_manual(case_name(s, p, "framepipe.spsc_ring"),
               wake_pingpong<fp_ring_wake<T, framepipe::concurrency::spsc>, T>);
    reg_manual(case_name(s, p, "framepipe.latest_slot"), wake_pingpong<fp_latest_wake<T>, T>);
    reg_manual(case_name(s, p, "framepipe.sliding_window"), wake_pingpong<fp_window_wake<T>, T>);
    reg_manual(case_name(s, p, "framepipe.subscription"), wake_pingpong<fp_sub_wake<T>, T>);
    reg_manual(case_name(s, p, "framepipe.pool"), pool_pingpong<T>);
    reg_manual(case_name(s, p, "std.mutex+condvar+deque"), wake_pingpong<cv_queue<T>, T>);
    reg_manual(case_name(s, p, "moodycamel.BlockingReaderWriterQueue"),
               wake_pingpong<mc_brwq<T>, T>);
    reg_manual(case_name(s, p, "moodycamel.ReaderWriterCircularBuffer"),
               wake_pingpong<mc_rwcb<T>, T>);
    reg_manual(case_name(s, p, "moodycamel.BlockingConcurrentQueue"), wake_pingpong<mc_bcq<T>, T>);
    reg_manual(case_name(s, p, "tbb.concurrent_bounded_queue"), wake_pingpong<tbb_cbq<T>, T>);
}

const bool registered = [] {
    register_payload<h8>();
    register_payload<p64>();
    register_floors("wakeup", true, true);
    return true;
}();

} // namespace
} // namespace fpb
