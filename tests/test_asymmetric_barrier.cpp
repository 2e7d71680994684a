// tests/test_asymmetric_barrier.cpp - detail::asymmetric_barrier and the asymmetric event count
// that pays it: the waiter's spin follows what the barrier cost, and a woken waiter pays no second
// barrier; when membarrier fails after registration, a transient error is retried, a persistent
// one switches to the fallback, and the spsc_ring hand-off (which relies on the barrier) keeps
// losing no wake-up.
//
// The membarrier system call is interposed: this test program defines syscall() itself, which
// the inline library code calls, and forwards every other call to libc's.

#include <framepipe/detail/asymmetric_barrier.hpp>
#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <optional>
#include <thread>

#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
#include <dlfcn.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>

namespace {

// How the interposed membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) behaves.
std::atomic<int> fail_next{0};        // fail this many calls with ENOMEM, then succeed
std::atomic<bool> fail_always{false}; // fail every call with EPERM (a seccomp filter, say)
std::atomic<int> barrier_calls{0};
std::atomic<long> delay_ns{0};        // each call takes at least this long (a busy kernel, say)

} // namespace

// It reads six arguments whatever the call, as libc's syscall() does: past the ones a caller
// passed, that reads the caller's stack, which AddressSanitizer reports (stack-buffer-underflow)
// when a redzone happens to lie there. Not instrumented, for that reason.
extern "C" __attribute__((no_sanitize("address"))) long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (long& x : a) {
        x = va_arg(ap, long);
    }
    va_end(ap);
    if (number == SYS_membarrier && a[0] == MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
        barrier_calls.fetch_add(1);
        const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(delay_ns);
        while (std::chrono::steady_clock::now() < until) {
            // the simulated kernel work: a spin, so that no other system call is made here
        }
        if (fail_always.load()) {
            errno = EPERM;
            return -1;
        }
        if (fail_next.load() > 0) {
            fail_next.fetch_sub(1);
            errno = ENOMEM;
            return -1;
        }
    }
    using real_t = long (*)(long, ...);
    static const auto real = reinterpret_cast<real_t>(dlsym(RTLD_NEXT, "syscall"));
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

namespace {

// A ping-pong through two spsc_rings (whose waiters pay heavy() and whose notifiers pay light()):
// a lost wake-up hangs it.
void ping_pong(int rounds) {
    framepipe::spsc_ring<int> there(1);
    framepipe::spsc_ring<int> back(1);
    std::thread partner([&] {
        for (int i = 0; i < rounds; ++i) {
            auto v = there.pop();
            (void)back.push(v ? *v + 1 : -1);
        }
    });
    long long sum = 0;
    for (int i = 0; i < rounds; ++i) {
        (void)there.push(i);
        auto v = back.pop();
        sum += v ? *v - i : 0;
    }
    partner.join();
    CHECK(sum == rounds);
}

} // namespace

using framepipe::detail::asymmetric_barrier;
using framepipe::detail::event_count;
using framepipe::detail::this_thread_waits;
using framepipe::detail::wait_end;

namespace {

// Whether membarrier works here (then heavy() calls the interposed syscall); says so when not.
bool membarrier_here() {
    if (asymmetric_barrier::enable()) {
        return true;
    }
    WARN("membarrier is not available on this machine: nothing to interpose");
    return false;
}

} // namespace

// Before the fallback test below, which switches membarrier off for good (Catch2 runs the cases
// in the order they are declared).
TEST_CASE("asymmetric_barrier: an asymmetric waiter's spin follows its last barrier's cost") {
    if (!membarrier_here()) {
        return;
    }
    event_count ev(event_count::asymmetric);
    // A park whose state is ready at its first look still pays heavy() once, before that look.
    const auto park = [&] { return ev.park(nullptr, std::nullopt, [] { return true; }); };
    delay_ns = 20'000;
    CHECK(park() == wait_end::ready);
    CHECK(ev.spin_for() >= std::chrono::microseconds(20)); // above spin_budget (5 us)
    delay_ns = 500'000;
    CHECK(park() == wait_end::ready);
    CHECK(ev.spin_for() == framepipe::detail::asymmetric_spin_cap); // 50 us, not 500
    delay_ns = 0;
    CHECK_FALSE(asymmetric_barrier::fallen_back());
}

TEST_CASE("asymmetric_barrier: a waiter woken to a ready state pays no second barrier") {
    if (!membarrier_here()) {
        return;
    }
    event_count ev(event_count::asymmetric);
    std::atomic<bool> asked{false};
    std::atomic<bool> state{false};
    const auto sleeps_before = this_thread_waits.sleeps;
    const int calls_before = barrier_calls.load();
    std::thread notifier([&] {
        while (!asked.load()) {
            std::this_thread::yield();
        }
        state.store(true);
        ev.notify_one_asymmetric();
    });
    // The state is read before the notifier is let go, so the first look finds it false and the
    // waiter sleeps (or finds the futex word already bumped) at least once.
    CHECK(ev.park(nullptr, std::nullopt, [&] {
        const bool ready = state.load();
        asked.store(true);
        return ready;
    }) == wait_end::ready);
    notifier.join();
    // One barrier per registration; one registration, plus one per wake-up that found the state
    // not ready yet (a spurious one).
    const auto sleeps = this_thread_waits.sleeps - sleeps_before;
    REQUIRE(sleeps >= 1);
    CHECK(static_cast<std::uint64_t>(barrier_calls.load() - calls_before) == sleeps);
}

TEST_CASE("asymmetric_barrier: membarrier works here, and a transient failure is retried") {
    if (!membarrier_here()) {
        return;
    }
    ping_pong(2'000);
    const int before = barrier_calls.load();
    fail_next = 3; // ENOMEM three times, then the call goes through
    asymmetric_barrier::heavy();
    CHECK(barrier_calls.load() - before == 4);
    CHECK_FALSE(asymmetric_barrier::fallen_back());
    ping_pong(2'000);
}

TEST_CASE("asymmetric_barrier: a burst of transient failures is waited out, not a fall-back") {
    if (!membarrier_here()) {
        return;
    }
    // More failures than the quick retries: the later retries sleep (1 us doubling to 1 ms, far
    // less than 10 ms in all for these), and the call still goes through membarrier.
    const int before = barrier_calls.load();
    fail_next = 20;
    asymmetric_barrier::heavy();
    CHECK(fail_next.load() == 0);
    CHECK(barrier_calls.load() - before == 21);
    CHECK_FALSE(asymmetric_barrier::fallen_back());
    ping_pong(2'000);
}

#if defined(__x86_64__) || defined(__i386__)
TEST_CASE("asymmetric_barrier: transient failures that last take the interrupt route once") {
    if (!membarrier_here()) {
        return;
    }
    // Failing far longer than the 10 ms a call waits: that call orders the other threads by the
    // interrupt route and returns; membarrier is not given up, and the next call uses it again.
    fail_next = 1'000'000;
    const int before = barrier_calls.load();
    asymmetric_barrier::heavy();
    const int calls = barrier_calls.load() - before;
    CHECK(calls > 8);
    CHECK(fail_next.load() == 1'000'000 - calls); // it stopped retrying on its own
    CHECK_FALSE(asymmetric_barrier::fallen_back());
    fail_next = 0;
    const int again = barrier_calls.load();
    asymmetric_barrier::heavy();
    CHECK(barrier_calls.load() - again == 1);
    ping_pong(2'000);
}
#endif

TEST_CASE("asymmetric_barrier: a persistent failure falls back, and hand-offs still work") {
    if (!membarrier_here()) {
        return;
    }
    fail_always = true;
    asymmetric_barrier::heavy(); // retries, then falls back instead of terminating
    CHECK(asymmetric_barrier::fallen_back());
    ping_pong(20'000); // notifiers fence now; waiters use the interrupt barrier
    fail_always = false;
    ping_pong(2'000); // the switch is for good
    CHECK(asymmetric_barrier::fallen_back());
}
#endif
