// tests/support/litmus.hpp - what the store-load litmus tests share: a spin that starts each
// round within nanoseconds on both threads, a time budget that ends the rounds early on a loaded
// machine instead of letting the watchdog end the test, race(), which runs the rounds of a race
// between two threads, one of them held at a test seam (support/litmus_hold.hpp) or none,
// until_waiter_parks(), which times one side's call to a waiter's registration, and cold_lines,
// which delays one store behind a cache miss.
#pragma once

#include <framepipe/detail/config.hpp>
#include <framepipe/detail/wait.hpp>

#include "litmus_hold.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

namespace framepipe_test {

#if defined(__SANITIZE_THREAD__)
constexpr int litmus_rounds = 2'000; // ThreadSanitizer makes each round many times slower
#else
constexpr int litmus_rounds = 20'000;
#endif

// Spins until pred() holds, yielding at every 64th look. A yield is a system call, too slow to
// start a round together; but a spin that never yields burns its whole time slice while the
// thread it waits for is not running. pred must become true through another thread's progress;
// a test that never gets there is ended by the watchdog.
template <class Pred>
void spin_until(Pred pred) {
    for (unsigned n = 1; !pred(); ++n) {
        if (n % 64 == 0) {
            std::this_thread::yield();
        } else {
            framepipe::detail::cpu_relax();
        }
    }
}

// Ten seconds of rounds at most. Each round needs both threads running at once; beside four busy
// processes on two cores, 20,000 rounds took over a minute. A loaded machine then runs fewer
// rounds (the tests report how many), which makes a fault less likely to show, never a correct
// header fail. Not a timing assertion: nothing checks how long the rounds took.
class litmus_budget {
public:
    [[nodiscard]] bool spent() const { return std::chrono::steady_clock::now() >= end_; }

private:
    std::chrono::steady_clock::time_point end_ =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
};

// Says so when a litmus test ran fewer rounds than it asked for (its budget was spent).
inline void note_rounds(int run, int asked = litmus_rounds) {
    if (run < asked) {
        WARN("only " << run << " of " << asked
                     << " rounds within the time budget (a loaded machine)");
    }
}

// Says so when some rounds were late (support/litmus_wake.hpp, timed_wake_rounds): their verdict
// was left out, only their accounting checked.
inline void note_late(int late, int run) {
    if (late > 0) {
        WARN(late << " of " << run
                  << " rounds late: the call returned after the waiter's deadline (this thread "
                     "was descheduled), so only their accounting was checked");
    }
}

// For a race against a waiter that spins (detail::spin_budget, 5 us) before it registers and
// parks: waits until about then, 0 to 960 ns later, a different amount each round (the spin checks
// its clock every 32 looks, which makes its end vary by about that much).
inline void until_waiter_parks(unsigned round) {
    const auto until = std::chrono::steady_clock::now() + framepipe::detail::spin_budget +
                       std::chrono::nanoseconds(64 * (round % 16));
    while (std::chrono::steady_clock::now() < until) {
    }
}

// 16 MiB, stored to one line at a time, each on another page (a cache and TLB miss): a store
// that queues before a racing store in the same thread's store buffer, which delays it while the
// thread's later loads go ahead.
class cold_lines {
public:
    void touch() noexcept {
        next_ = (next_ + 4099U * 64U) % bytes_.size(); // 2^18 lines before one comes back
        bytes_[next_] = 1;
    }

private:
    std::vector<char> bytes_ = std::vector<char>(std::size_t{16} << 20);
    std::size_t next_ = 0;
};

// What race() found: the rounds that went wrong, the rounds run, and the rounds asked for.
struct race_result {
    int wrong = 0;
    int rounds = 0;
    int asked = 0;
};

// How many pauses each side makes before its call, at most: a different number each round, which
// sweeps the two calls' offset across the window. The side whose path to the racing store is
// shorter gets the wider range.
struct offsets {
    std::uint32_t mine;
    std::uint32_t theirs;
};

// Runs `rounds` rounds of a race between this thread and a second one: each round, setup() on
// this thread, then mine() here and theirs() there, each after a few pauses, then check() here
// once both have returned (true: the round went right). `theirs_holds`: whether the second
// thread is the one held at its seam (litmus_hold(); else this one is). Stops early when the
// time budget is spent (litmus_budget).
template <class Setup, class Mine, class Theirs, class Check>
race_result race(int rounds, bool theirs_holds, offsets most, Setup setup, Mine mine,
                 Theirs theirs, Check check) {
    const litmus_budget budget;
    // A race before this one (another test case) left its last round here.
    litmus_round.store(0, std::memory_order_relaxed);
    litmus_other_returned.store(0, std::memory_order_relaxed);
    std::atomic<int> go{0};
    std::atomic<int> theirs_returned{0};
    constexpr int end = std::numeric_limits<int>::max();
    std::thread other([&] {
        litmus_holder = theirs_holds;
        std::uint32_t x = 12345;
        for (int i = 1;; ++i) {
            spin_until([&] { return go.load(std::memory_order_acquire) >= i; });
            if (go.load(std::memory_order_relaxed) == end) {
                break;
            }
            x = x * 1664525U + 1013904223U; // a fixed pseudo-random offset per round
            for (std::uint32_t d = (x >> 24) % most.theirs; d > 0; --d) {
                framepipe::detail::cpu_relax();
            }
            theirs();
            if (!theirs_holds) {
                litmus_other_returned.store(i, std::memory_order_release);
            }
            theirs_returned.store(i, std::memory_order_release);
        }
    });
    litmus_holder = !theirs_holds;
    race_result r;
    r.asked = rounds;
    std::uint32_t x = 777;
    for (int i = 1; i <= rounds && !budget.spent(); ++i) {
        r.rounds = i;
        setup();
        litmus_round.store(i, std::memory_order_relaxed);
        go.store(i, std::memory_order_release);
        x = x * 1664525U + 1013904223U;
        for (std::uint32_t d = (x >> 24) % most.mine; d > 0; --d) {
            framepipe::detail::cpu_relax();
        }
        mine();
        if (theirs_holds) {
            litmus_other_returned.store(i, std::memory_order_release);
        }
        spin_until([&] { return theirs_returned.load(std::memory_order_acquire) >= i; });
        r.wrong += check() ? 0 : 1;
    }
    go.store(end, std::memory_order_release);
    other.join();
    litmus_holder = false;
    return r;
}

} // namespace framepipe_test
