// tests/support/litmus.hpp - what the store-load litmus tests share: a spin that starts each
// round within nanoseconds on both threads, and a time budget that ends the rounds early on a
// loaded machine instead of letting the watchdog end the test.
#pragma once

#include <framepipe/detail/config.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

namespace framepipe_test {

#if defined(__SANITIZE_THREAD__)
constexpr int litmus_rounds = 2'000; // ThreadSanitizer makes each round many times slower
#else
constexpr int litmus_rounds = 20'000;
#endif

// Spins until pred() holds, yielding at every 64th look. A yield is a system call, too slow to
// start a round together; but a spin that never yields burns its whole time slice while the
// thread it waits for is not running. pred must become true through another thread's progress;
// a test that never gets there is ended by the watchdog.
template <class Pred>
void spin_until(Pred pred) {
    for (unsigned n = 1; !pred(); ++n) {
        if (n % 64 == 0) {
            std::this_thread::yield();
        } else {
            framepipe::detail::cpu_relax();
        }
    }
}

// Ten seconds of rounds at most. Each round needs both threads running at once; beside four busy
// processes on two cores, 20,000 rounds took over a minute. A loaded machine then runs fewer
// rounds (the tests report how many), which makes a fault less likely to show, never a correct
// header fail. Not a timing assertion: nothing checks how long the rounds took.
class litmus_budget {
public:
    [[nodiscard]] bool spent() const { return std::chrono::steady_clock::now() >= end_; }

private:
    std::chrono::steady_clock::time_point end_ =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
};

// Says so when a litmus test ran fewer rounds than it asked for (its budget was spent).
inline void note_rounds(int run, int asked = litmus_rounds) {
    if (run < asked) {
        WARN("only " << run << " of " << asked
                     << " rounds within the time budget (a loaded machine)");
    }
}

} // namespace framepipe_test
