// tests/support/wait_until.hpp - yields until a condition holds, for tests that order threads by
// what they have done, never by sleeping.
#pragma once

#include <thread>

namespace framepipe_test {

// Yields until pred() holds. pred must become true through another thread's progress; no
// timing is involved (a test that never gets there is ended by the watchdog).
template <class Pred>
void wait_until(Pred pred) {
    while (!pred()) {
        std::this_thread::yield();
    }
}

} // namespace framepipe_test
