// tests/support/litmus_wake.hpp - what a litmus test of a wake-up counts at two test seams of
// detail/wait.hpp: the parks (a waiter that registered, found its predicate false and is about
// to sleep) and the wakes (a notifier that found a waiter or a listener). Included before any
// framepipe header, with the two seams defined to these counters (detail/config.hpp defines the
// seams only when a test has not), so it includes none.
//
// A round goes wrong when a waiter parked and the call that made its predicate true, once it
// returned, had woken nobody: the notifier's read of the watchers missed the registration, and
// the waiter's look missed the state change (a store-load pairing that failed). Counting needs
// no sleeping thread to be seen and no time threshold; the waiter's own wait is bounded by its
// deadline, which ends the round. That verdict holds only for a call that returned before the
// waiter's deadline (timed_wake_rounds below). A waiter without a deadline may sleep for good
// instead; lost_wake_rescued() below finds it and wakes it.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace framepipe_test {

inline std::atomic<int> litmus_parks{0};
inline std::atomic<int> litmus_wakes{0};

inline void note_park() noexcept { litmus_parks.fetch_add(1, std::memory_order_relaxed); }
inline void note_wake() noexcept { litmus_wakes.fetch_add(1, std::memory_order_relaxed); }

// Before each round.
inline void reset_wake_counts() noexcept {
    litmus_parks.store(0, std::memory_order_relaxed);
    litmus_wakes.store(0, std::memory_order_relaxed);
}

// The rounds of a test whose waiter has a deadline. A round's wake-up was lost when the waiter
// parked and the call that should wake it, once it returned, had woken nobody; but that verdict
// holds only for a call that returned before the waiter's deadline. A round whose call came later
// proves nothing: this thread was descheduled for milliseconds (a loaded machine, a virtual CPU's
// steal time), the waiter timed out meanwhile, and left the watchers before the call read them.
// Such a round is late: its wakes are not judged (a test checks only its accounting), and it is
// counted. The start is read before the round starts, so the waiter's deadline, which its own
// call reads from the clock later, is later still; a futex sleep never ends before its timeout.
// A round is classified, nothing is asserted about how long it took.
class timed_wake_rounds {
public:
    explicit timed_wake_rounds(std::chrono::steady_clock::duration timeout) : timeout_(timeout) {}

    // The waiter's timeout, for its call.
    [[nodiscard]] std::chrono::steady_clock::duration timeout() const { return timeout_; }

    // In the round's setup, before either thread starts its call.
    void start() {
        reset_wake_counts();
        start_ = std::chrono::steady_clock::now();
    }

    // On the waking thread, once its call has returned.
    void call_returned() {
        wakes_ = litmus_wakes.load(std::memory_order_relaxed);
        late_ = std::chrono::steady_clock::now() >= start_ + timeout_;
        late_rounds_ += late_ ? 1 : 0;
    }

    // In the round's check, once both calls have returned.
    [[nodiscard]] bool late() const { return late_; }
    [[nodiscard]] bool lost() const {
        return !late_ && litmus_parks.load(std::memory_order_relaxed) != 0 && wakes_ == 0;
    }

    [[nodiscard]] int late_rounds() const { return late_rounds_; }

private:
    std::chrono::steady_clock::duration timeout_;
    std::chrono::steady_clock::time_point start_{};
    int wakes_ = 0;
    bool late_ = false;
    int late_rounds_ = 0;
};

// For a test whose waiter has no deadline (so no round is ever late), on the waking thread once its
// call has returned; `returned`: set by the waiter once its wait returned. If the call woke nobody,
// a correct pairing lets the waiter see the state change and return without parking; if it parks
// instead, the wake-up was lost. Waits until one of the two happened (a waiter still spinning gets
// there within its spin_budget; this loop yields rather than use support/litmus.hpp's spin_until(),
// since this header comes before any framepipe header), and wakes a waiter that parked with
// notify_all(), a read-modify-write, which sees its registration, so that the rounds go on. True:
// lost.
template <class EventCount>
bool lost_wake_rescued(EventCount& ev, const std::atomic<bool>& returned) {
    if (litmus_wakes.load(std::memory_order_relaxed) != 0) {
        return false;
    }
    while (!returned.load(std::memory_order_acquire) &&
           litmus_parks.load(std::memory_order_relaxed) == 0) {
        std::this_thread::yield();
    }
    if (returned.load(std::memory_order_acquire)) {
        return false;
    }
    ev.notify_all();
    return true;
}

} // namespace framepipe_test

#define FRAMEPIPE_DETAIL_PARK_HOOK() ::framepipe_test::note_park()
#define FRAMEPIPE_DETAIL_WAKE_HOOK() ::framepipe_test::note_wake()
