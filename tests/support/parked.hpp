// tests/support/parked.hpp - for a test that must know a thread is asleep in a waiting call
// before it checks the wake-up: the thread's id, and a wait until it sleeps in a futex wait inside
// a given object. Builds everywhere; only Linux can tell (/proc, thread_state.hpp), and elsewhere
// the wait returns false at once, so the test goes on less sharply (a thread not yet asleep
// needs no wake-up).
#pragma once

#include <atomic>

#if defined(__linux__)
#include "thread_state.hpp"
#endif

namespace framepipe_test {

// The calling thread's id, for wait_until_parked(); 0 where /proc cannot tell.
inline long parking_id() noexcept {
#if defined(__linux__)
    return this_thread_id();
#else
    return 0;
#endif
}

// Waits (yielding, no sleep) until the thread `tid` names (0 until it has stored its
// parking_id()) sleeps in a futex wait inside `object`; false when that cannot be told. Start
// the waiting threads one at a time, so that the only futex inside `object` one of them can
// sleep on is the one it waits on.
template <class Object>
bool wait_until_parked(const std::atomic<long>& tid, const Object& object) {
#if defined(__linux__)
    return wait_until_parked_in(tid, object);
#else
    (void)tid;
    (void)object;
    return false;
#endif
}

} // namespace framepipe_test
