// tests/support/watchdog_selftest.cpp - test cases that hang on purpose (a wait whose wake-up
// never comes), each run by ctest with a 2 s watchdog: the test passes when the watchdog reports
// the test case's name, its section and the threads' backtraces, and the process fails (see
// tests/CMakeLists.txt and watchdog_selftest.cmake).
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#if defined(__linux__)
#include "thread_state.hpp"
#endif

TEST_CASE("a lost wake-up", "[watchdog][.]") {
    SECTION("waiting for a notify that never comes") {
        std::mutex mu;
        std::condition_variable cv;
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [] { return false; });
    }
}

#if defined(__linux__)
TEST_CASE("a lost wake-up that the thread dump rescues", "[watchdog][.]") {
    SECTION("a futex wait whose word changed without a wake-up") {
        // The word changes while this thread sleeps on it, with no notify: a lost wake-up. The
        // dump's ptrace attach interrupts the sleep, the kernel restarts it, finds the word
        // changed and returns, and the wait ends: the test case would pass late. It must fail.
        std::atomic<int> word{0};
        const long me = framepipe_test::this_thread_id();
        std::thread changer([&] {
            while (framepipe_test::futex_waiting_in(me, &word, sizeof word) != true) {
                std::this_thread::yield();
            }
            word.store(1); // no notify
        });
        word.wait(0);
        changer.join();
    }
}
#endif
