// tests/support/litmus_hold.hpp - the hold that the litmus tests put at a test seam of the code
// under test. Included before any framepipe header (the seams are macros that detail/config.hpp
// defines only when a test has not), so it includes none.
#pragma once

#include <atomic>
#include <chrono>

namespace framepipe_test {

// What race() (support/litmus.hpp) tells the hold: the round under way, and the last round whose
// other call (the one not held) has returned.
inline std::atomic<int> litmus_round{0};
inline std::atomic<int> litmus_other_returned{0};
// Whether this thread is the side to hold; race() sets it on both threads.
inline thread_local bool litmus_holder = false;

// Called at a test seam: on the holding thread, waits until this round's other call has returned
// (or 20 us have passed), so that once a store-load pairing has failed, the other side always acts
// first and the failure shows in the result. A spin: it stretches a window of a few
// instructions, and must not give the processor away.
inline void litmus_hold() noexcept {
    if (!litmus_holder) {
        return;
    }
    const int round = litmus_round.load(std::memory_order_relaxed);
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    while (litmus_other_returned.load(std::memory_order_acquire) < round &&
           std::chrono::steady_clock::now() < until) {
    }
}

} // namespace framepipe_test
