// tests/test_wait_litmus.cpp - a store-load litmus test of detail::event_count's pairing
// (detail/wait.hpp): a notify racing a waiter's registration is never lost, for notify_one() and
// for the asymmetric mode's notify_one_asymmetric() with the waiter's membarrier.
//
// Built with -O2 in every preset (tests/CMakeLists.txt): at -O0 libstdc++'s atomics take their
// memory order as a run-time argument, which GCC treats as seq_cst, so every store of the test
// would be a full barrier and no reordering could show. Under ThreadSanitizer the atomics are
// calls into its runtime and the test only checks that nothing hangs. Linux only (/proc).

#include <framepipe/detail/wait.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#if defined(__linux__)
#include "support/thread_state.hpp"
#include "support/litmus.hpp"

namespace {

using framepipe::detail::event_count;
using framepipe::detail::no_deadline;

// A store-load litmus test of an event count's pairing, in the shape every channel uses: the
// notifier stores the state (a release store) and then notify() reads whether anyone waits; the
// waiter registers, then reads the state, then sleeps. x86 lets a load pass the same thread's
// earlier store still waiting in its store buffer, so without the pairing's read-modify-write or
// membarrier both sides can miss each other: the notify sees nobody, the waiter sees the old
// state and sleeps through it. To open that window wide, the notifier's store of the state
// queues behind a store to a cold line (a cache and TLB miss in a 16 MiB buffer), as a
// producer's store of an index may queue behind its store of the item; and the two sides start
// each round together, each after a different few pauses, sweeping their offset across it.
// park() has no spin phase: the waiter registers and looks at once. Against copies of
// detail/wait.hpp without the asymmetric waiter's membarrier, or with notify_one()'s
// read-modify-write made a plain load, hundreds of rounds in 20,000 lost their wake-up.
//
// A round whose waiter stays asleep on `ev` (/proc) after notify() returned, with the state set
// and the round not acknowledged, lost its wake-up: the notify bumped the futex word before the
// waiter's sleep (which then would not have started) or woke it. "Stays": a woken thread can
// still read as asleep for a while, until its CPU takes the wake-up (an inter-processor
// interrupt, slow in a VM), so the round counts as lost only if the waiter reads as asleep at
// every look for a full second; that is a hang detector's threshold, not a timing assertion. The
// first lost round ends the run (its waiter is woken with notify_all()). Returns the rounds
// lost, 0 or 1 (where /proc cannot tell, none are seen), and the rounds run: litmus_rounds, or
// fewer if the time budget ran out (support/litmus.hpp).
struct race_result {
    int lost = 0;
    int rounds = 0;
};

template <class Notify>
race_result lost_wake_ups_in_races(event_count& ev, Notify notify) {
    const framepipe_test::litmus_budget budget;
    std::atomic<int> go{0};
    std::atomic<int> value{0};
    std::atomic<int> acked{0};
    std::atomic<int> last{0}; // the last round, set before go is released for the end
    std::atomic<long> tid{0};
    std::vector<char> cold(std::size_t{16} << 20);
    std::thread waiter([&] {
        tid = framepipe_test::this_thread_id();
        std::uint32_t x = 12345;
        for (int i = 1;; ++i) {
            framepipe_test::spin_until([&] { return go.load(std::memory_order_acquire) >= i; });
            if (last.load(std::memory_order_relaxed) != 0 && i > last.load(std::memory_order_relaxed)) {
                break; // read after go's acquire: the end's store of last comes with it
            }
            x = x * 1664525U + 1013904223U; // a fixed pseudo-random offset per round
            for (std::uint32_t d = (x >> 24) % 16; d > 0; --d) {
                framepipe::detail::cpu_relax();
            }
            (void)ev.park(nullptr, no_deadline,
                          [&] { return value.load(std::memory_order_acquire) >= i; });
            acked.store(i, std::memory_order_release);
        }
    });
    const auto asleep = [&] {
        return framepipe_test::futex_waiting_in(tid.load(), &ev, sizeof ev).value_or(false);
    };
    int lost = 0;
    int done = 0;
    std::uint32_t x = 777;
    for (int i = 1; i <= framepipe_test::litmus_rounds && lost == 0 && !budget.spent(); ++i) {
        done = i;
        go.store(i, std::memory_order_release);
        x = x * 1664525U + 1013904223U;
        for (std::uint32_t d = (x >> 24) % 16; d > 0; --d) {
            framepipe::detail::cpu_relax();
        }
        cold[(std::size_t{x} * 4099U) % cold.size()] = static_cast<char>(i); // queues first
        value.store(i, std::memory_order_release);
        notify();
        for (unsigned n = 1; acked.load(std::memory_order_acquire) < i; ++n) {
            if (n % 1024 == 0 && asleep()) {
                const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                bool stayed = true;
                while (stayed && std::chrono::steady_clock::now() < until) {
                    std::this_thread::yield();
                    stayed = asleep() && acked.load(std::memory_order_acquire) < i;
                }
                if (stayed) {
                    lost = 1;
                    ev.notify_all(); // a read-modify-write, which sees the waiter
                }
            }
            if (n % 64 == 0) {
                std::this_thread::yield();
            } else {
                framepipe::detail::cpu_relax();
            }
        }
    }
    last.store(done, std::memory_order_relaxed);
    go.store(std::numeric_limits<int>::max(), std::memory_order_release); // the end
    waiter.join();
    return {lost, done};
}

} // namespace

TEST_CASE("event_count: a notify racing a waiter's registration is never lost (store-load litmus)") {
    SECTION("notify_one(): its read-modify-write orders the notifier's store before its look") {
        event_count ev;
        const race_result r = lost_wake_ups_in_races(ev, [&] { ev.notify_one(); });
        if (r.lost == 0) {
            framepipe_test::note_rounds(r.rounds); // a lost round ends the rounds early
        }
        CHECK(r.lost == 0);
    }
    SECTION("notify_one_asymmetric(): the waiter's membarrier orders the notifier's store") {
        event_count ev(event_count::asymmetric);
        const race_result r = lost_wake_ups_in_races(ev, [&] { ev.notify_one_asymmetric(); });
        if (r.lost == 0) {
            framepipe_test::note_rounds(r.rounds); // a lost round ends the rounds early
        }
        CHECK(r.lost == 0);
    }
}
#endif
