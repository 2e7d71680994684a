// tests/test_channel.cpp - the shared vocabulary of channel.hpp: to_string, accepted(),
// channel_stats, the channel concepts and channel_traits, and waits as seen through a ring.

#include <framepipe/channel.hpp>
#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include "support/parked.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using framepipe::overflow;
using framepipe::push_status;
using framepipe::ring;

// A thread that must be blocked in ring `r`: waits until it sleeps in a futex wait inside `r`,
// then checks it has not finished.
template <class R>
void check_parked(const std::atomic<long>& tid, const R& r, const std::atomic<bool>& done) {
    if (!framepipe_test::wait_until_parked(tid, r)) {
        WARN("cannot tell a parked thread here");
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
    CHECK(s.sampled_out == 0);
    CHECK(s.lost_in_transport == 0);
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
        std::atomic<long> tid{0};
        std::atomic<bool> done{false};
        std::optional<int> result;
        std::thread consumer([&] {
            tid = framepipe_test::parking_id();
            result = r.pop_for(nanoseconds::max());
            done = true;
        });
        check_parked(tid, r, done);
        REQUIRE(r.push(5) == push_status::ok);
        consumer.join();
        CHECK(result == 5);
    }
    SECTION("block_timeout nanoseconds::max() waits for room instead of evicting") {
        ring<int> r(1, overflow::block, nanoseconds::max());
        REQUIRE(r.push(1) == push_status::ok);
        std::atomic<long> tid{0};
        std::atomic<bool> done{false};
        push_status result = push_status::closed;
        std::thread producer([&] {
            tid = framepipe_test::parking_id();
            result = r.push(2);
            done = true;
        });
        check_parked(tid, r, done);
        CHECK(r.pop() == 1);
        producer.join();
        CHECK(result == push_status::ok);
        CHECK(r.stats().evicted == 0);
        CHECK(r.try_pop() == 2);
    }
}

// --- channel_traits and describe_channel: how a pipeline shows a channel ----------------------

namespace {

struct described_by_members {
    [[nodiscard]] framepipe::channel_stats stats() const {
        framepipe::channel_stats s;
        s.pushed = 7;
        return s;
    }
    [[nodiscard]] std::size_t capacity() const { return 3; }
    [[nodiscard]] overflow policy() const { return overflow::drop_newest; }
};

struct described_by_traits {};

} // namespace

template <>
struct framepipe::channel_traits<described_by_traits> {
    static constexpr std::string_view kind = "custom";
    static constexpr bool one_producer = true;
    static constexpr bool one_consumer = false;
    static channel_description describe(const described_by_traits&) {
        return {.kind = "custom", .policy = "whatever it does", .capacity = 9, .stats = {}};
    }
};

TEST_CASE("channel_traits: a channel is described by its members unless its traits say more") {
    const auto m = framepipe::detail::describe_channel(described_by_members{});
    CHECK(m.kind == "channel");
    CHECK(m.policy == "drop_newest");
    CHECK(m.capacity == 3);
    REQUIRE(m.stats.has_value());
    CHECK(m.stats->pushed == 7);

    const auto t = framepipe::detail::describe_channel(described_by_traits{});
    CHECK(t.kind == "custom");
    CHECK(t.policy == "whatever it does");
    CHECK(t.capacity == 9);
    CHECK_FALSE(t.stats.has_value());

    const auto r = framepipe::detail::describe_channel(ring<int>(4, overflow::block));
    CHECK(r.kind == "ring");
    CHECK(r.policy == "block");
    CHECK(r.capacity == 4);
    CHECK(framepipe::detail::describe_channel(framepipe::spsc_ring<int>(2)).kind == "spsc_ring");
    static_assert(framepipe::channel_traits<framepipe::spsc_ring<int>>::one_producer);
    static_assert(!framepipe::channel_traits<ring<int>>::one_consumer);
}

TEST_CASE("channel: to_string names push_status::cancelled") {
    CHECK(framepipe::to_string(push_status::cancelled) == std::string_view("cancelled"));
    CHECK_FALSE(framepipe::accepted(push_status::cancelled));
}
