// benchmarks/floors.hpp - the two hand-off floors, registered into each binary that compares
// against them, so that they are measured interleaved with the cases they bound.
//
// - floor.cas_pingpong: two threads spin on one cache line and hand it back and forth with a
//   compare-and-swap. Nothing can hand a value between two cores faster: the hardware floor.
// - floor.atomic_wait: the same ping-pong, but each side parks with std::atomic::wait and is
//   woken with notify_one (futex on Linux; libstdc++ spins briefly first): the OS wake-up floor.
// - floor.futex: the ping-pong with raw FUTEX_WAIT / FUTEX_WAKE system calls and no spinning.
//
// One iteration is one round trip (two hand-offs). Per-round-trip samples give rt_p50_ns and
// rt_p99_ns counters. The parking floors run under a watchdog (counter `stalls`, see
// stall_watchdog), so that a lost wake-up in the primitive they measure cannot hang a run.
#pragma once

#include "common.hpp"

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fpb {

namespace detail {

inline void futex_wait(std::atomic<std::uint32_t>& a, std::uint32_t v) noexcept {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&a), FUTEX_WAIT_PRIVATE, v, nullptr,
            nullptr, 0);
#else
    a.wait(v);
#endif
}

inline void futex_wake(std::atomic<std::uint32_t>& a, int waiters = 1) noexcept {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&a), FUTEX_WAKE_PRIVATE, waiters, nullptr,
            nullptr, 0);
#else
    if (waiters == 1) {
        a.notify_one();
    } else {
        a.notify_all();
    }
#endif
}

enum class floor_kind { cas, atomic_wait, futex };

template <floor_kind K>
void wait_for_value(std::atomic<std::uint32_t>& x, std::uint32_t want) noexcept {
    for (;;) {
        const std::uint32_t v = x.load(std::memory_order_acquire);
        if (v == want) {
            return;
        }
        if constexpr (K == floor_kind::cas) {
            cpu_relax();
        } else if constexpr (K == floor_kind::atomic_wait) {
            x.wait(v, std::memory_order_acquire);
        } else {
            futex_wait(x, v);
        }
    }
}

template <floor_kind K>
void hand_over(std::atomic<std::uint32_t>& x, std::uint32_t from, std::uint32_t to) noexcept {
    if constexpr (K == floor_kind::cas) {
        std::uint32_t e = from;
        while (!x.compare_exchange_weak(e, to, std::memory_order_acq_rel,
                                        std::memory_order_relaxed)) {
            e = from;
            cpu_relax();
        }
    } else if constexpr (K == floor_kind::atomic_wait) {
        x.store(to, std::memory_order_release);
        x.notify_one();
    } else {
        x.store(to, std::memory_order_release);
        futex_wake(x);
    }
}

// Wakes both sides of a parking floor when the hand-off word has not moved for 200 ms (a round
// trip takes microseconds), and counts it. Once, on the AMD VM, both threads of floor.atomic_wait
// stayed parked inside std::atomic::wait for over 20 minutes, until a debugger's attach
// interrupted the system calls: a wake-up lost below the benchmark (framepipe's own waits and
// the raw futex floor ran through). A stall count above 0 marks that repetition's figures as
// suspect; the spurious wake-ups it makes are harmless (each side re-checks the word).
template <floor_kind K>
class stall_watchdog {
public:
    explicit stall_watchdog(std::atomic<std::uint32_t>& x) : x_(x), thread_([this] { run(); }) {}
    ~stall_watchdog() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    stall_watchdog(const stall_watchdog&) = delete;
    stall_watchdog& operator=(const stall_watchdog&) = delete;

    [[nodiscard]] std::uint64_t stalls() const noexcept { return stalls_.load(); }

private:
    void run() {
        std::unique_lock<std::mutex> lock(mu_);
        std::uint32_t last = x_.load(std::memory_order_relaxed);
        while (!cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return done_; })) {
            const std::uint32_t now = x_.load(std::memory_order_relaxed);
            if (now == last) {
                stalls_.fetch_add(1);
                if constexpr (K == floor_kind::atomic_wait) {
                    x_.notify_all();
                } else {
                    futex_wake(x_, INT_MAX);
                }
            }
            last = now;
        }
    }

    std::atomic<std::uint32_t>& x_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::atomic<std::uint64_t> stalls_{0};
    std::thread thread_; // last: started once the members above exist
};

template <floor_kind K>
void pingpong(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    alignas(64) std::atomic<std::uint32_t> x{0};
    start_line line;
    pinned_scope pin(0);
    std::thread partner([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto odd = static_cast<std::uint32_t>(2 * i + 1);
            wait_for_value<K>(x, odd);
            hand_over<K>(x, odd, odd + 1);
        }
    });
    line.wait_for(1);
    samples rt(std::min<std::uint64_t>(n, 1u << 20));
    const double ns_per_tick = calibration().ns_per_tick;
    std::uint64_t stalls = 0;
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        std::optional<stall_watchdog<K>> watchdog;
        if constexpr (K != floor_kind::cas) {
            watchdog.emplace(x);
        }
        const double t0 = steady_ns();
        for (std::uint64_t i = 0; i < n; ++i) {
            const auto even = static_cast<std::uint32_t>(2 * i);
            const auto a = ticks();
            hand_over<K>(x, even, even + 1);
            wait_for_value<K>(x, even + 2);
            rt.add(static_cast<double>(ticks() - a) * ns_per_tick);
        }
        const double t1 = steady_ns();
        st.SetIterationTime(seconds_between(t0, t1));
        if (watchdog) {
            stalls += watchdog->stalls();
        }
    }
    partner.join();
    if constexpr (K != floor_kind::cas) {
        st.counters["stalls"] = static_cast<double>(stalls);
    }
    st.counters["rt_p50_ns"] = rt.pct(0.50);
    st.counters["rt_p99_ns"] = rt.pct(0.99);
}

} // namespace detail

// Registers the floors under "<scenario>/any/floor.*".
inline void register_floors(const std::string& scenario, bool cas = true, bool wait = true) {
    if (cas) {
        reg_manual(case_name(scenario, "any", "floor.cas_pingpong"),
                   detail::pingpong<detail::floor_kind::cas>);
    }
    if (wait) {
        reg_manual(case_name(scenario, "any", "floor.atomic_wait"),
                   detail::pingpong<detail::floor_kind::atomic_wait>);
        reg_manual(case_name(scenario, "any", "floor.futex"),
                   detail::pingpong<detail::floor_kind::futex>);
    }
}

} // namespace fpb
