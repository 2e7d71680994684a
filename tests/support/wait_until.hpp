// tests/support/wait_until.hpp - yields until a condition holds, for tests that order threads by
// what they have done, never by sleeping; and lets other threads run a while, for tests that
// check that something has not happened.
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

// Gives other threads many chances to run. Not a synchronisation: whatever is checked after it
// must hold under any scheduling; this only makes a wrong early completion likely to show.
inline void let_others_run() {
    for (int i = 0; i < 500; ++i) {
        std::this_thread::yield();
    }
}

} // namespace framepipe_test
