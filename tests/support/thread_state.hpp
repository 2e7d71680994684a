// tests/support/thread_state.hpp - what another thread of this process is doing, read from
// /proc/self/task/<tid>: whether it sleeps in a futex wait on a given object, and its scheduler
// state. For tests that must know a thread has parked (or sleeps) without sleeping themselves.
// Linux only.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

namespace framepipe_test {

// The calling thread's id, as /proc/self/task names it.
inline long this_thread_id() noexcept { return static_cast<long>(::syscall(SYS_gettid)); }

// Whether thread `tid` sleeps in a futex wait on a word inside [object, object + size), from
// /proc/self/task/<tid>/syscall (the system call a blocked thread is in, and its arguments, the
// futex word's address first); nullopt when /proc does not say.
inline std::optional<bool> futex_waiting_in(long tid, const void* object, std::size_t size) {
    std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
    std::string call;
    std::string word;
    if (!(in >> call)) {
        return std::nullopt;
    }
    bool futex = call == std::to_string(SYS_futex);
#if defined(SYS_futex_time64)
    futex = futex || call == std::to_string(SYS_futex_time64); // 32-bit targets (wait.hpp)
#endif
    if (!futex || !(in >> word)) {
        return false; // running, or in another call
    }
    const auto at = static_cast<std::uintptr_t>(std::stoull(word, nullptr, 16));
    const auto begin = reinterpret_cast<std::uintptr_t>(object);
    return at >= begin && at - begin < size;
}

// Whether thread `tid` sleeps in a futex wait on any word (for a thread that has nothing else to
// sleep on than the wait under test); nullopt when /proc does not say.
inline std::optional<bool> in_futex_wait(long tid) {
    return futex_waiting_in(tid, nullptr, SIZE_MAX);
}

// Whether thread `tid` is inside nanosleep or clock_nanosleep (in framepipe: a wait for another
// thread's few instructions whose yields ran out, detail::yield_or_sleep), from
// /proc/self/task/<tid>/syscall; nullopt when /proc does not say.
inline std::optional<bool> in_sleep_call(long tid) {
    std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
    std::string call;
    if (!(in >> call)) {
        return std::nullopt;
    }
    return call == std::to_string(SYS_nanosleep) || call == std::to_string(SYS_clock_nanosleep)
#if defined(SYS_clock_nanosleep_time64)
           || call == std::to_string(SYS_clock_nanosleep_time64) // 32-bit targets
#endif
        ;
}

// Waits (yielding, no sleep) until thread `tid` (0 until the thread has stored it) sleeps in a
// futex wait inside `object`; false when /proc cannot tell (the caller then gives up on its
// test). Start the waiting threads one at a time, so that the only futex inside `object` one of
// them can sleep on is the event count it waits on.
template <class Object>
bool wait_until_parked_in(const std::atomic<long>& tid, const Object& object) {
    for (;;) {
        if (const long t = tid.load(); t != 0) {
            const auto parked = futex_waiting_in(t, &object, sizeof object);
            if (!parked) {
                return false;
            }
            if (*parked) {
                return true;
            }
        }
        std::this_thread::yield();
    }
}

// The scheduler state of thread `tid` of this process: 'R' running or runnable, 'S' asleep (a
// futex wait, say), ...; '?' when it cannot be read.
inline char thread_state(long tid) {
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string stat;
    std::getline(f, stat);
    const auto paren = stat.rfind(')'); // the name, in parentheses, may hold anything
    return paren != std::string::npos && paren + 2 < stat.size() ? stat[paren + 2] : '?';
}

} // namespace framepipe_test
