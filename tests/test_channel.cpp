// tests/test_channel.cpp - the shared vocabulary of channel.hpp: to_string, accepted(),
// channel_stats, and the waiting helper's behaviour as seen through a ring.

#include <framepipe/channel.hpp>
#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using framepipe::overflow;
using framepipe::push_status;
using framepipe::ring;

// Gives a thread that must be blocked plenty of chances to run, then checks it has not finished.
void check_still_blocked(const std::atomic<bool>& done) {
    for (int i = 0; i < 2000; ++i) {
        std::this_thread::yield();
    }
    CHECK_FALSE(done.load());
}

} // namespace

// Usable in constant expressions and never throwing.
static_assert(framepipe::to_string(overflow::block) == "block");
static_assert(framepipe::to_string(push_status::evicted) == "evicted");
static_assert(framepipe::accepted(push_status::ok));
static_assert(noexcept(framepipe::to_string(overflow::drop_oldest)));
static_assert(noexcept(framepipe::to_string(push_status::ok)));
static_assert(noexcept(framepipe::accepted(push_status::ok)));

TEST_CASE("channel: to_string names every overflow policy") {
    CHECK(framepipe::to_string(overflow::drop_oldest) == std::string_view("drop_oldest"));
    CHECK(framepipe::to_string(overflow::drop_newest) == std::string_view("drop_newest"));
    CHECK(framepipe::to_string(overflow::block) == std::string_view("block"));
    CHECK(framepipe::to_string(static_cast<overflow>(42)) == std::string_view("unknown"));
}

TEST_CASE("channel: to_string names every push_status") {
    CHECK(framepipe::to_string(push_status::ok) == std::string_view("ok"));
    CHECK(framepipe::to_string(push_status::evicted) == std::string_view("evicted"));
    CHECK(framepipe::to_string(push_status::rejected) == std::string_view("rejected"));
    CHECK(framepipe::to_string(push_status::closed) == std::string_view("closed"));
    CHECK(framepipe::to_string(static_cast<push_status>(42)) == std::string_view("unknown"));
}

TEST_CASE("channel: accepted() is true exactly for ok and evicted") {
    CHECK(framepipe::accepted(push_status::ok));
    CHECK(framepipe::accepted(push_status::evicted));
    CHECK_FALSE(framepipe::accepted(push_status::rejected));
    CHECK_FALSE(framepipe::accepted(push_status::closed));
}

TEST_CASE("channel: channel_stats starts at zero") {
    const framepipe::channel_stats s{};
    CHECK(s.pushed == 0);
    CHECK(s.popped == 0);
    CHECK(s.dropped == 0);
    CHECK(s.evicted == 0);
    CHECK(s.rejected == 0);
    CHECK(s.cancelled == 0);
    CHECK(s.expired == 0);
    CHECK(s.after_close == 0);
    CHECK(s.rate_limited == 0);
    CHECK(s.size == 0);
}

TEST_CASE("channel: a stop request wins over a ready item") {
    ring<int> r(2);
    REQUIRE(r.push(1) == push_status::ok);
    std::stop_source stop;
    stop.request_stop();
    CHECK_FALSE(r.pop(stop.get_token()).has_value());
    CHECK_FALSE(r.pop_for(std::chrono::hours(1), stop.get_token()).has_value());
    CHECK(r.size() == 1);
    CHECK(r.stats().popped == 0);
}

TEST_CASE("channel: the longest timeout saturates instead of overflowing into the past") {
    using std::chrono::nanoseconds;
    SECTION("pop_for(nanoseconds::max()) waits for an item") {
        ring<int> r(1);
        std::latch started(1);
        std::atomic<bool> done{false};
        std::optional<int> result;
        std::thread consumer([&] {
            started.count_down();
            result = r.pop_for(nanoseconds::max());
            done = true;
        });
        started.wait();
        check_still_blocked(done);
        REQUIRE(r.push(5) == push_status::ok);
        consumer.join();
        CHECK(result == 5);
    }
    SECTION("block_timeout nanoseconds::max() waits for room instead of evicting") {
        ring<int> r(1, overflow::block, nanoseconds::max());
        REQUIRE(r.push(1) == push_status::ok);
        std::latch started(1);
        std::atomic<bool> done{false};
        push_status result = push_status::closed;
        std::thread producer([&] {
            started.count_down();
            result = r.push(2);
            done = true;
        });
        started.wait();
        check_still_blocked(done);
        CHECK(r.pop() == 1);
        producer.join();
        CHECK(result == push_status::ok);
        CHECK(r.stats().evicted == 0);
        CHECK(r.try_pop() == 2);
    }
}

// --- detail::event_count: the spin-then-park waiting primitive ---------------------------------

using framepipe::detail::event_count;
using framepipe::detail::wait_end;

TEST_CASE("event_count: wait returns ready at once when the state is already ready") {
    event_count ev;
    CHECK(ev.wait(nullptr, std::nullopt, [] { return true; }) == wait_end::ready);
    CHECK(ev.wait(nullptr, std::nullopt, [] { return false; }, [] { return true; }) ==
          wait_end::ready);
}

TEST_CASE("event_count: wait ends with timed_out at the deadline, also a past one") {
    event_count ev;
    const auto never = [] { return false; };
    CHECK(ev.wait(nullptr, std::chrono::steady_clock::now(), never) == wait_end::timed_out);
    // Longer than the spin budget, so the park phase's timed wait is used too.
    CHECK(ev.wait(nullptr, framepipe::detail::deadline_after(std::chrono::milliseconds(2)),
                  never) == wait_end::timed_out);
}

TEST_CASE("event_count: a stop request ends a wait, already requested or requested later") {
    event_count ev;
    const auto never = [] { return false; };
    std::stop_source early;
    early.request_stop();
    const std::stop_token early_token = early.get_token();
    CHECK(ev.wait(&early_token, std::nullopt, never) == wait_end::stopped);

    std::stop_source later;
    const std::stop_token later_token = later.get_token();
    std::atomic<bool> done{false};
    std::thread waiter([&] {
        const auto end = ev.wait(&later_token, std::nullopt, never);
        done = end == wait_end::stopped;
    });
    check_still_blocked(done);
    later.request_stop(); // wakes it, spinning or parked
    waiter.join();
    CHECK(done);
}

TEST_CASE("event_count: no lost wake-up over many hand-offs through both wait phases") {
    // A waiter waits for `value` to reach each next number; the notifier bumps it and notifies.
    // Whether the waiter is spinning or parked at the time varies from one hand-off to the next;
    // a lost wake-up hangs the test. The notifier also pauses now and then for longer than the
    // spin budget (a busy loop, not a sleep), so that the park phase is exercised.
    event_count ev;
    std::atomic<int> value{0};
    std::atomic<int> acked{0};
    constexpr int rounds = 2'000;
    std::thread waiter([&] {
        for (int i = 1; i <= rounds; ++i) {
            (void)ev.wait(nullptr, std::nullopt,
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
        ev.notify_one();
        while (acked.load(std::memory_order_acquire) < i) {
            std::this_thread::yield();
        }
    }
    waiter.join();
    CHECK(acked.load() == rounds);
}

TEST_CASE("event_count: notify_all wakes every parked waiter") {
    event_count ev;
    std::atomic<bool> go{false};
    std::atomic<int> woken{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 3; ++i) {
        waiters.emplace_back([&] {
            if (ev.wait(nullptr, std::nullopt, [&] { return go.load(); }) == wait_end::ready) {
                ++woken;
            }
        });
    }
    go = true;
    ev.notify_all();
    for (auto& t : waiters) {
        t.join();
    }
    CHECK(woken == 3);
}
