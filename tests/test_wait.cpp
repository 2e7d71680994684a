// tests/test_wait.cpp - detail::event_count (detail/wait.hpp), the one waiting primitive of every
// framepipe block: readiness, deadlines, stop requests, no lost wake-up through both phases (nor
// for a notify that lands just before a waiter sleeps), notify_all, the asymmetric mode, and the
// listener hook a selector over several channels uses; spin_then_lock_guard, the lock taken
// after a wait; and the per-thread counts of waits that parked.

// A test seam (detail/config.hpp): holds a parking waiter after its last look at the state,
// before it sleeps. Defined before any framepipe header. (support/test_seam.hpp reads /proc, as
// test_ring.cpp's seams do: these tests are for Linux.)
#include "support/test_seam.hpp"
inline framepipe_test::test_seam park_seam;
#define FRAMEPIPE_DETAIL_PARK_HOOK() ::park_seam.run()

#include <framepipe/detail/wait.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "support/wait_until.hpp"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>

#include "support/one_cpu.hpp"
#endif

namespace {

using framepipe::detail::event_count;
using framepipe::detail::event_listener;
using framepipe::detail::no_deadline;
using framepipe::detail::wait_end;

// Gives a thread that must be blocked plenty of chances to run, then checks it has not finished.
void check_still_blocked(const std::atomic<bool>& done) {
    for (int i = 0; i < 2000; ++i) {
        std::this_thread::yield();
    }
    CHECK_FALSE(done.load());
}

// Yields for well past the spin budget, so that a waiter that started waiting before has most
// likely parked (the tests hold either way; this makes them exercise the park phase).
void let_waiters_park() {
    const auto until = std::chrono::steady_clock::now() + 20 * framepipe::detail::spin_budget;
    while (std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
    }
}

// One park() that is sure to sleep: park() has no spin phase, so once ready() has said no the
// thread goes to sleep (a notify that comes first only makes that sleep return at once). A
// notifier thread answers that first "no" by making the state ready and notifying.
wait_end park_once(event_count& ev) {
    std::atomic<bool> asked{false};
    std::atomic<bool> state{false};
    std::jthread notifier([&] {
        while (!asked.load()) {
            std::this_thread::yield();
        }
        state.store(true);
        ev.notify_one();
    });
    return ev.park(nullptr, no_deadline, [&] {
        asked.store(true);
        return state.load();
    });
}

} // namespace

TEST_CASE("event_count: wait returns ready at once when the state is already ready") {
    event_count ev;
    CHECK(ev.wait(nullptr, no_deadline, [] { return true; }) == wait_end::ready);
    CHECK(ev.wait(nullptr, no_deadline, [] { return false; }, [] { return true; }) ==
          wait_end::ready);
    CHECK(ev.park(nullptr, no_deadline, [] { return true; }) == wait_end::ready);
}

TEST_CASE("event_count: wait ends with timed_out at the deadline, also a past one") {
    event_count ev;
    const auto never = [] { return false; };
    CHECK(ev.wait(nullptr, std::chrono::steady_clock::now(), never) == wait_end::timed_out);
    // Longer than the spin budget, so the park phase's timed wait is used too.
    CHECK(ev.wait(nullptr, framepipe::detail::deadline_after(std::chrono::milliseconds(2)),
                  never) == wait_end::timed_out);
    CHECK(ev.park(nullptr, framepipe::detail::deadline_after(std::chrono::milliseconds(1)),
                  never) == wait_end::timed_out);
}

TEST_CASE("event_count: wait_costly keeps to the spin budget whatever ready() costs") {
    // A ready() that takes longer than the whole spin budget (5 us) on every call: wait() reads
    // the clock once per 32 calls, so it would call it 32 times or more before parking;
    // wait_costly() reads it after each call. The count does not depend on the machine's speed:
    // a slower or preempted call only makes the spin end sooner.
    event_count ev;
    int calls = 0;
    const auto costly = [&calls] {
        ++calls;
        const auto until = std::chrono::steady_clock::now() + 4 * framepipe::detail::spin_budget;
        while (std::chrono::steady_clock::now() < until) {
        }
        return false;
    };
    // A deadline already past: one look before the spin, none in it, and park()'s two (at the
    // deadline, and the look that passes on a notification it may have absorbed).
    CHECK(ev.wait_costly(nullptr, std::chrono::steady_clock::now(), costly) ==
          wait_end::timed_out);
    CHECK(calls <= 3);
    // A later deadline: the spin stops after one call; park() adds one look per registration
    // (each wake, here the deadline's, with nobody notifying) and the two above.
    calls = 0;
    const auto parks_before = framepipe::detail::this_thread_waits.parks;
    CHECK(ev.wait_costly(nullptr, framepipe::detail::deadline_after(std::chrono::milliseconds(2)),
                         costly) == wait_end::timed_out);
    const auto parks = framepipe::detail::this_thread_waits.parks - parks_before;
    CHECK(parks >= 1);
    CHECK(static_cast<std::uint64_t>(calls) <= 4 + parks);
    // And it sees a ready state, and a stop request, as wait() does.
    CHECK(ev.wait_costly(nullptr, no_deadline, [] { return true; }) == wait_end::ready);
    std::stop_source stop;
    stop.request_stop();
    const auto token = stop.get_token();
    CHECK(ev.wait_costly(&token, no_deadline, [] { return false; }) == wait_end::stopped);
}

TEST_CASE("event_count: a stop request ends a wait, already requested or requested later") {
    event_count ev;
    const auto never = [] { return false; };
    std::stop_source early;
    early.request_stop();
    const std::stop_token early_token = early.get_token();
    CHECK(ev.wait(&early_token, no_deadline, never) == wait_end::stopped);
    CHECK(ev.park(&early_token, no_deadline, never) == wait_end::stopped);

    std::stop_source later;
    const std::stop_token later_token = later.get_token();
    std::atomic<bool> done{false};
    std::thread waiter([&] {
        const auto end = ev.wait(&later_token, no_deadline, never);
        done = end == wait_end::stopped;
    });
    check_still_blocked(done);
    later.request_stop(); // wakes it, spinning or parked
    waiter.join();
    CHECK(done);
}

namespace {

// A waiter waits for `value` to reach each next number; the notifier bumps it (a release store)
// and calls notify(). Whether the waiter is spinning or parked at the time varies from one
// hand-off to the next; a lost wake-up hangs the test. The notifier also pauses now and then for
// longer than the spin budget (a busy loop, not a sleep), so that the park phase is exercised.
// `yields`: the waiter's thread yields between checks while it spins (detail::spin_yields).
template <class Notify>
int hand_offs(event_count& ev, Notify notify, bool yields = false) {
    std::atomic<int> value{0};
    std::atomic<int> acked{0};
    constexpr int rounds = 2'000;
    std::thread waiter([&] {
        framepipe::detail::spin_yields = yields;
        for (int i = 1; i <= rounds; ++i) {
            (void)ev.wait(nullptr, no_deadline,
                          [&] { return value.load(std::memory_order_acquire) >= i; });
            acked.store(i, std::memory_order_release);
        }
    });
    for (int i = 1; i <= rounds; ++i) {
        if (i % 64 == 0) {
            const auto until =
                std::chrono::steady_clock::now() + 3 * framepipe::detail::spin_budget;
            while (std::chrono::steady_clock::now() < until) {
                framepipe::detail::cpu_relax();
            }
        }
        value.store(i, std::memory_order_release);
        notify();
        while (acked.load(std::memory_order_acquire) < i) {
            std::this_thread::yield();
        }
    }
    waiter.join();
    return acked.load();
}

} // namespace

TEST_CASE("event_count: no lost wake-up over many hand-offs through both wait phases") {
    event_count ev;
    CHECK(hand_offs(ev, [&] { ev.notify_one(); }) == 2'000);
}

TEST_CASE("event_count: a waiter that yields while it spins misses no wake-up and keeps its deadline") {
    event_count ev;
    CHECK(hand_offs(ev, [&] { ev.notify_one(); }, true) == 2'000);
    framepipe::detail::spin_yields = true;
    const auto never = [] { return false; };
    CHECK(ev.wait(nullptr, framepipe::detail::deadline_after(std::chrono::milliseconds(2)), never) ==
          wait_end::timed_out);
    std::stop_source stop;
    stop.request_stop();
    const std::stop_token token = stop.get_token();
    CHECK(ev.wait(&token, no_deadline, never) == wait_end::stopped);
    framepipe::detail::spin_yields = false;
}

TEST_CASE("event_count: notify_all wakes every parked waiter") {
    event_count ev;
    std::atomic<bool> go{false};
    std::atomic<int> woken{0};
    std::atomic<long> tids[3] = {0, 0, 0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 3; ++i) {
        waiters.emplace_back([&, i] {
            tids[i] = framepipe_test::this_thread_id();
            if (ev.wait(nullptr, no_deadline, [&] { return go.load(); }) == wait_end::ready) {
                ++woken;
            }
        });
        // Each asleep before the next starts, so that only the notify can end their sleeps
        // (/proc; where it cannot tell, the test holds less sharply: a waiter not yet asleep
        // sees go itself).
        (void)framepipe_test::wait_until_parked_in(tids[i], ev);
    }
    go = true;
    ev.notify_all();
    for (auto& t : waiters) {
        t.join(); // hangs (the watchdog fails the test) if notify_all left one asleep
    }
    CHECK(woken == 3);
}

TEST_CASE("event_count: a notify between a waiter's last look and its sleep ends that sleep") {
    // The seam holds the waiter in park() after ready() said no, before it sleeps; this thread
    // then makes the state ready and notifies. Let go, the waiter's sleep must return at once
    // (the futex word it read before looking has changed), and it must see the state. A waiter
    // that read the word after looking, or a notify that did not change it, sleeps for good:
    // seen asleep on the event count, it is stopped, and returns stopped.
    event_count ev;
    std::atomic<bool> state{false};
    std::atomic<bool> done{false};
    std::atomic<long> tid{0};
    std::stop_source stop;
    wait_end end = wait_end::timed_out;
    park_seam.arm(0);
    std::thread waiter([&] {
        tid = framepipe_test::this_thread_id();
        const std::stop_token token = stop.get_token();
        end = ev.park(&token, no_deadline, [&] { return state.load(); }); // no spin phase
        done = true;
    });
    framepipe_test::wait_until([&] { return park_seam.reached.load() == 1; });
    state = true;
    ev.notify_one();
    park_seam.go = true;
    framepipe_test::wait_until([&] {
        return done.load() || framepipe_test::futex_waiting_in(tid, &ev, sizeof ev).value_or(false);
    });
    stop.request_stop(); // after done: changes nothing
    waiter.join();
    CHECK(end == wait_end::ready);
}

TEST_CASE("event_count: the asymmetric mode hands off without a lost wake-up") {
    event_count ev(event_count::asymmetric); // the notifier's store is a plain release store
    CHECK(hand_offs(ev, [&] { ev.notify_one_asymmetric(); }) == 2'000);
}

// --- The selector hook --------------------------------------------------------------------------

TEST_CASE("event_count: an attached listener hears every notification of the channels it watches") {
    // One selector thread parks on its own event count and watches two "channels" (an atomic
    // counter each, with their own event counts). Each notification of a channel must reach it.
    event_count channel_a;
    event_count channel_b;
    event_count selector;
    std::atomic<int> items_a{0};
    std::atomic<int> items_b{0};
    event_listener on_a{&selector};
    event_listener on_b{&selector};
    channel_a.attach(on_a);
    channel_b.attach(on_b);
    constexpr int rounds = 1'000;
    std::atomic<int> taken{0};
    std::thread select_thread([&] {
        for (int i = 0; i < 2 * rounds; ++i) {
            (void)selector.wait(nullptr, no_deadline,
                                [&] { return items_a.load() + items_b.load() > 0; });
            // Take one item from whichever has one.
            for (std::atomic<int>* q : {&items_a, &items_b}) {
                int n = q->load();
                if (n > 0 && q->compare_exchange_strong(n, n - 1)) {
                    ++taken;
                    break;
                }
            }
            if (taken.load() <= i) {
                --i; // nothing taken this round (spurious): wait again
            }
        }
    });
    for (int i = 0; i < rounds; ++i) {
        if (i % 64 == 0) {
            let_waiters_park();
        }
        items_a.fetch_add(1);
        channel_a.notify_one(); // no one waits on channel_a itself: only the listener hears it
        items_b.fetch_add(1);
        channel_b.notify_one();
        while (taken.load() < 2 * (i + 1)) {
            std::this_thread::yield();
        }
    }
    select_thread.join(); // hangs if a notification did not reach the selector
    CHECK(taken == 2 * rounds);
    channel_a.detach(on_a);
    channel_b.detach(on_b);
}

TEST_CASE("event_count: a detached listener is no longer notified; attach and detach any time") {
    event_count channel;
    event_count selector;
    std::atomic<bool> flag{false};
    event_listener l{&selector};
    channel.attach(l);
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
        woke = selector.wait(nullptr, no_deadline, [&] { return flag.load(); }) == wait_end::ready;
    });
    let_waiters_park();
    flag = true;
    channel.notify_all(); // reaches the selector through the listener
    waiter.join();
    CHECK(woke);

    CHECK(channel.listeners() == 1);
    channel.detach(l);
    CHECK(channel.listeners() == 0);
    {
        // Once detach returns, notifications never touch the listener or its target: destroy
        // both, then notify (a use after free here is what ASan would report).
        auto target = std::make_unique<event_count>();
        auto gone = std::make_unique<event_listener>(event_listener{target.get()});
        channel.attach(*gone);
        channel.detach(*gone);
        gone.reset();
        target.reset();
        for (int i = 0; i < 1000; ++i) {
            channel.notify_one();
        }
    }

    // Many listeners, attached and detached while notifications fly: nothing crashes, and the
    // count returns to zero (a notify with nobody attached or parked is the plain fast path).
    std::vector<event_listener> many(8, event_listener{&selector});
    std::atomic<bool> stop_notifier{false};
    std::thread notifier([&] {
        while (!stop_notifier.load()) {
            channel.notify_one();
        }
    });
    for (int round = 0; round < 200; ++round) {
        for (auto& m : many) {
            channel.attach(m);
        }
        for (auto& m : many) {
            channel.detach(m);
        }
    }
    stop_notifier = true;
    notifier.join();
    CHECK(channel.listeners() == 0);
}

TEST_CASE("wait_counts: a park counts on the parking thread; a wait that needs none counts none") {
    using framepipe::detail::this_thread_waits;
    event_count ev;
    const auto before = this_thread_waits;
    CHECK(ev.wait(nullptr, no_deadline, [] { return true; }) == wait_end::ready);
    std::mutex mu;
    {
        const framepipe::detail::spin_then_lock_guard uncontended(mu); // free: taken at once
    }
    CHECK(this_thread_waits.parks == before.parks);
    CHECK(this_thread_waits.sleeps == before.sleeps);
    CHECK(this_thread_waits.lock_blocks == before.lock_blocks);

    CHECK(park_once(ev) == wait_end::ready);
    CHECK(this_thread_waits.sleeps >= before.sleeps + 1);
    CHECK(this_thread_waits.parks - before.parks >= this_thread_waits.sleeps - before.sleeps);
    CHECK(this_thread_waits.lock_blocks == before.lock_blocks);
}

// A timed wait that nothing ends sleeps through its timeout in a futex wait or two. It used to
// spin through futex calls that returned at once on a 32-bit target with a 64-bit time_t
// (-D_TIME_BITS=64): glibc's timespec handed to SYS_futex, read as the old 32-bit layout, said
// 0 ns (thousands of sleeps in 300 ms). scripts/test builds this file with -m32 to check that.
TEST_CASE("wait_counts: a timed wait that times out sleeps a few times, not in a loop") {
    using framepipe::detail::this_thread_waits;
    event_count ev;
    const auto never = [] { return false; };
    const auto before = this_thread_waits;
    CHECK(ev.wait(nullptr, framepipe::detail::deadline_after(std::chrono::milliseconds(300)),
                  never) == wait_end::timed_out);
    CHECK(this_thread_waits.sleeps - before.sleeps >= 1);
    CHECK(this_thread_waits.sleeps - before.sleeps <= 3);
    CHECK(this_thread_waits.parks - before.parks <= 3);
}

TEST_CASE("event_count: an asymmetric waiter's spin follows its last park's cost, within bounds") {
    using framepipe::detail::asymmetric_spin_cap;
    using framepipe::detail::spin_budget;
    event_count plain;
    event_count asym{event_count::asymmetric};
    CHECK(plain.spin_for() == spin_budget);
    CHECK(asym.spin_for() == spin_budget); // nothing measured yet

    CHECK(park_once(plain) == wait_end::ready);
    CHECK(park_once(asym) == wait_end::ready);
    CHECK(plain.spin_for() == spin_budget);
    CHECK(asym.spin_for() >= spin_budget);
    CHECK(asym.spin_for() <= asymmetric_spin_cap);
}

TEST_CASE("spin_then_lock_guard: excludes like a lock_guard, spinning or blocked") {
    using framepipe::detail::spin_then_lock_guard;
    std::mutex mu;
    SECTION("a holder that keeps the mutex past the spin: the guard blocks until it is released") {
        std::atomic<bool> trying{false};
        bool released = false; // guarded by mu
        bool seen_released = false;
        std::unique_lock<std::mutex> held(mu);
        std::jthread other([&] {
            trying.store(true);
            const spin_then_lock_guard lock(mu);
            seen_released = released;
        });
        while (!trying.load()) {
            std::this_thread::yield();
        }
        let_waiters_park(); // well past lock_spins pauses: the guard is in lock() by now
        released = true;
        held.unlock();
        other.join();
        CHECK(seen_released);
    }
    SECTION("contended by several threads: every increment made under it survives") {
        constexpr int threads = 4;
        constexpr int per_thread = 20000;
        long long count = 0; // guarded by mu
        {
            std::vector<std::jthread> ts;
            for (int t = 0; t < threads; ++t) {
                ts.emplace_back([&] {
                    for (int i = 0; i < per_thread; ++i) {
                        const spin_then_lock_guard lock(mu);
                        ++count;
                    }
                });
            }
        }
        CHECK(count == threads * per_thread);
        CHECK(mu.try_lock()); // every guard unlocked
        mu.unlock();
    }
}

TEST_CASE("backoff: 63 pauses, then 64 yields, then sleeps, each sleep counted on its thread") {
    using framepipe::detail::backoff;
    using framepipe::detail::this_thread_waits;
    const std::uint64_t before = this_thread_waits.backoff_sleeps;
    unsigned spins = 0;
    for (int i = 0; i < 127; ++i) {
        backoff(spins);
    }
    CHECK(this_thread_waits.backoff_sleeps == before); // steps 1-63 paused, 64-127 yielded
    for (int i = 0; i < 13; ++i) {
        backoff(spins); // 1 us doubling to about 1 ms: some 4 ms in all
    }
    CHECK(this_thread_waits.backoff_sleeps == before + 13);
    CHECK(spins == 140);
}

TEST_CASE("backoff_until: as backoff, but no sleep once its deadline has passed") {
    using framepipe::detail::backoff_until;
    using framepipe::detail::this_thread_waits;
    using clock_type = std::chrono::steady_clock;
    const std::uint64_t before = this_thread_waits.backoff_sleeps;
    unsigned spins = 0;
    for (int i = 0; i < 200; ++i) {
        backoff_until(spins, clock_type::now() - std::chrono::seconds(1)); // passed: never sleeps
    }
    CHECK(spins == 200);
    CHECK(this_thread_waits.backoff_sleeps == before);
    unsigned later = 0;
    for (int i = 0; i < 130; ++i) {
        backoff_until(later, clock_type::now() + std::chrono::hours(1)); // far: as backoff()
    }
    CHECK(this_thread_waits.backoff_sleeps == before + 3); // steps 128, 129 and 130 slept
    unsigned none = 0;
    for (int i = 0; i < 130; ++i) {
        backoff_until(none, std::nullopt); // no deadline: backoff() itself
    }
    CHECK(this_thread_waits.backoff_sleeps == before + 6);
    CHECK(none == 130);
}

#if defined(__linux__)
TEST_CASE("backoff: a real-time waiter lets the lower-priority thread it waits for run on its "
          "processor") {
    // Both threads on one processor: the waiter runs pinned (run_on_one_cpu), and `low`, which
    // it starts, inherits that affinity. `low` (the default policy) is waiting to be allowed to
    // finish its few instructions; the waiter, now SCHED_FIFO, allows it and backs off until it
    // has. A yield hands the processor only to threads of the waiter's priority, so `low` runs
    // only when the waiter sleeps (or when the kernel's real-time throttling steps in, after
    // most of a second; with throttling off, never).
    std::atomic<bool> low_ready{false};
    std::atomic<bool> go{false};
    std::atomic<bool> done{false};
    bool real_time = false;
    std::uint64_t sleeps = 0;
    const bool pinned = framepipe_test::run_on_one_cpu([&] {
        std::thread low([&] {
            low_ready = true;
            framepipe_test::wait_until([&] { return go.load(); });
            done = true;
        });
        framepipe_test::wait_until([&] { return low_ready.load(); });
        const sched_param fifo{.sched_priority = 10};
        real_time = ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &fifo) == 0;
        const std::uint64_t before = framepipe::detail::this_thread_waits.backoff_sleeps;
        go = true; // `low` may finish now, but only on this processor, which this thread holds
        unsigned spins = 0;
        while (!done.load()) {
            framepipe::detail::backoff(spins);
        }
        sleeps = framepipe::detail::this_thread_waits.backoff_sleeps - before;
        low.join();
    });
    REQUIRE(pinned);
    CHECK(done.load());
    if (!real_time) {
        WARN("SCHED_FIFO not permitted here (no CAP_SYS_NICE): the real-time case was not run");
        return;
    }
    CHECK(sleeps >= 1); // `low` could run only once the waiter slept
}
#endif
