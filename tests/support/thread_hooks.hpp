// tests/support/thread_hooks.hpp - thread-local actions for the FRAMEPIPE_DETAIL_*_HOOK() seams
// of detail/config.hpp. A test program defines a seam as run_hook(one of these) before it
// includes any framepipe header; a thread that points one at an action has it run there, and
// every other thread runs nothing.
#pragma once

#include <functional>

namespace framepipe_test {

using thread_hook = const std::function<void()>*;

inline thread_local thread_hook after_wait_action = nullptr; // FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK()
inline thread_local thread_hook rewait_action = nullptr;     // FRAMEPIPE_DETAIL_REWAIT_HOOK()

inline void run_hook(thread_hook action) {
    if (action != nullptr) {
        (*action)();
    }
}

} // namespace framepipe_test
