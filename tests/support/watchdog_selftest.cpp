// tests/support/watchdog_selftest.cpp - a test case that hangs on purpose (a wait whose wake-up
// never comes), run by ctest with a 2 s watchdog: the test passes when the watchdog reports the
// test case's name, its section and the threads' backtraces (see tests/CMakeLists.txt).
#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>

TEST_CASE("a lost wake-up", "[watchdog][.]") {
    SECTION("waiting for a notify that never comes") {
        std::mutex mu;
        std::condition_variable cv;
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [] { return false; });
    }
}
