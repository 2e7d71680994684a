// tests/support/one_cpu.hpp - runs a function on a thread of its own whose CPU affinity allows
// one CPU (the first the caller may use), leaving the caller's affinity alone. Linux only.
#pragma once

#include <sched.h>

#include <cstddef>
#include <thread>

namespace framepipe_test {

// Calls fn() on a new thread pinned to one CPU and joins it. Returns false, without calling fn,
// when the affinity could not be read or set.
template <class Fn>
bool run_on_one_cpu(Fn fn) {
    cpu_set_t all;
    CPU_ZERO(&all);
    if (::sched_getaffinity(0, sizeof all, &all) != 0) {
        return false;
    }
    std::size_t first = 0;
    while (first < CPU_SETSIZE && !CPU_ISSET(first, &all)) {
        ++first;
    }
    if (first == CPU_SETSIZE) {
        return false;
    }
    bool pinned = false;
    std::thread([&] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        pinned = ::sched_setaffinity(0, sizeof one, &one) == 0;
        if (pinned) {
            fn();
        }
    }).join();
    return pinned;
}

} // namespace framepipe_test
