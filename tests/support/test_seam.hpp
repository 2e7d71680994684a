// tests/support/test_seam.hpp - a point inside a framepipe header where a test holds one thread
// while others act (the FRAMEPIPE_DETAIL_*_HOOK() seams of detail/config.hpp, which a test
// program defines as `some_seam.run()` before including any framepipe header). Linux only.
//
// The thread that reaches an armed seam stays there, yielding, until the test says go, or until
// the thread being watched (if any) sleeps in a backoff: it has run out of pauses and yields
// waiting for the held thread, which is what the test wants to see it do. A copy of the header
// with a fault in that handshake instead goes on (its call returns, and the test says go), and
// the test sees what the held thread then does. No timing decides either way.
#pragma once

#include "thread_state.hpp"

#include <atomic>
#include <thread>

namespace framepipe_test {

// Waits, yielding, until `done` is set or the thread `watched` names (0: none yet, or none at
// all) sleeps in a backoff; /proc silent counts as asleep (the wait ends rather than hangs).
inline void wait_until_asleep_or_done(const std::atomic<long>& watched,
                                      const std::atomic<bool>& done) noexcept {
    const auto asleep = [&] {
        const long tid = watched.load();
        if (tid == 0) {
            return false;
        }
        try {
            return in_sleep_call(tid).value_or(true);
        } catch (...) {
            return true;
        }
    };
    while (!done.load() && !asleep()) {
        std::this_thread::yield();
    }
}

struct test_seam {
    std::atomic<bool> armed{false};
    std::atomic<unsigned> reached{0}; // times an armed seam held a thread
    std::atomic<unsigned> left{0};    // times a held thread went on (fewer than reached: held)
    std::atomic<bool> go{false};
    std::atomic<long> watch{0}; // the thread that must end up waiting for the held one (0: none)

    // Arms the seam for the next thread that reaches it.
    void arm(long watched_thread) noexcept {
        go.store(false);
        watch.store(watched_thread);
        armed.store(true);
    }
    // The seam itself: does nothing unless armed; then holds the first thread to arrive.
    void run() noexcept {
        if (!armed.load(std::memory_order_relaxed) || !armed.exchange(false)) {
            return;
        }
        reached.fetch_add(1);
        wait_until_asleep_or_done(watch, go);
        left.fetch_add(1);
    }
};

} // namespace framepipe_test
