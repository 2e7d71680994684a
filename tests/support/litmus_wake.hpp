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
// deadline, which ends the round.
#pragma once

#include <atomic>

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

} // namespace framepipe_test

#define FRAMEPIPE_DETAIL_PARK_HOOK() ::framepipe_test::note_park()
#define FRAMEPIPE_DETAIL_WAKE_HOOK() ::framepipe_test::note_wake()
