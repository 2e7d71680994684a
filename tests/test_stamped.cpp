// tests/test_stamped.cpp - stamped<T>, stamp(), timestamp_traits and the timestamped concept.

#include <framepipe/stamped.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace {

using framepipe::stamp;
using framepipe::stamped;
using framepipe::timestamp_traits;
using framepipe::timestamped;
using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using namespace std::chrono_literals;

// A type of the user's own, made `timestamped` by specialising timestamp_traits (as stamped.hpp
// invites). The capture time is kept as a tick count to prove the traits really are consulted.
struct own_frame {
    std::int64_t ticks = 0;
};

// A deleter that is not std::default_delete, for unique_ptr<T, D>.
struct counting_deleter {
    int* deletions = nullptr;
    template <class T>
    void operator()(T* p) const {
        ++*deletions;
        delete p;
    }
};

} // namespace

template <>
struct framepipe::timestamp_traits<own_frame> {
    static time_point capture_time(const own_frame& f) noexcept {
        return time_point{clock_type::duration{f.ticks}};
    }
};

// --- The timestamped concept: which types a channel can read a capture time from. ---

// Plain values and pointers to plain values carry no capture time.
static_assert(!timestamped<int>);
static_assert(!timestamped<std::string>);
static_assert(!timestamped<std::shared_ptr<int>>);
static_assert(!timestamped<std::shared_ptr<const int>>);
static_assert(!timestamped<std::unique_ptr<int>>);
static_assert(!timestamped<int*>);
// stamped<T>, and shared_ptr / unique_ptr to (const) stamped<T>, do.
static_assert(timestamped<stamped<int>>);
static_assert(timestamped<stamped<std::string>>);
static_assert(timestamped<stamped<std::unique_ptr<int>>>);
static_assert(timestamped<std::shared_ptr<stamped<int>>>);
static_assert(timestamped<std::shared_ptr<const stamped<int>>>);
static_assert(timestamped<std::unique_ptr<stamped<int>>>);
static_assert(timestamped<std::unique_ptr<const stamped<int>>>);
static_assert(timestamped<std::unique_ptr<stamped<int>, counting_deleter>>);
// A user specialisation makes a type timestamped, and pointers to it follow.
static_assert(timestamped<own_frame>);
static_assert(timestamped<std::shared_ptr<own_frame>>);
static_assert(timestamped<std::unique_ptr<const own_frame>>);

// --- stamped<T>'s shape. ---

static_assert(std::is_same_v<stamped<int>::value_type, int>);
static_assert(std::is_same_v<stamped<std::string>::value_type, std::string>);
static_assert(std::is_same_v<stamped<int>::clock, std::chrono::steady_clock>);
static_assert(std::is_same_v<decltype(stamped<int>{}.seq), std::uint64_t>);
static_assert(std::is_same_v<decltype(stamped<int>{}.captured), time_point>);
static_assert(std::is_aggregate_v<stamped<int>>);
// stamped<T> is as movable / copyable as T.
static_assert(std::is_copy_constructible_v<stamped<std::string>>);
static_assert(!std::is_copy_constructible_v<stamped<std::unique_ptr<int>>>);
static_assert(std::is_move_constructible_v<stamped<std::unique_ptr<int>>>);
// age() and the accessors do not throw; capture_time() does not throw.
static_assert(noexcept(std::declval<const stamped<int>&>().age(std::declval<time_point>())));
static_assert(noexcept(*std::declval<stamped<int>&>()));
static_assert(noexcept(std::declval<const stamped<int>&>().operator->()));
static_assert(noexcept(
    timestamp_traits<stamped<int>>::capture_time(std::declval<const stamped<int>&>())));
static_assert(noexcept(timestamp_traits<std::shared_ptr<stamped<int>>>::capture_time(
    std::declval<const std::shared_ptr<stamped<int>>&>())));
// stamp() decays its argument's type.
static_assert(std::is_same_v<decltype(stamp(1, 0)), stamped<int>>);
static_assert(std::is_same_v<decltype(stamp(std::declval<const std::string&>(), 0)),
                             stamped<std::string>>);
static_assert(std::is_same_v<decltype(stamp("abc", 0)), stamped<const char*>>);
static_assert(std::is_same_v<decltype(stamp(std::declval<std::unique_ptr<int>>(), 0)),
                             stamped<std::unique_ptr<int>>>);

TEST_CASE("stamped: a default stamped<T> is value-initialised, seq 0, captured at the epoch") {
    const stamped<int> s;
    CHECK(s.value == 0);
    CHECK(s.seq == 0);
    CHECK(s.captured == time_point{});

    const stamped<std::string> t;
    CHECK(t.value.empty());
    CHECK(t.seq == 0);
    CHECK(t.captured == time_point{});
}

TEST_CASE("stamped: fields hold what they were given (designated initialisers)") {
    const time_point when = time_point{} + 123ms;
    const stamped<std::string> s{.value = "frame", .seq = 42, .captured = when};
    CHECK(s.value == "frame");
    CHECK(s.seq == 42);
    CHECK(s.captured == when);
}

TEST_CASE("stamped: operator* and operator-> reach the value, const and mutable") {
    stamped<std::string> s{.value = "abc", .seq = 1, .captured = {}};
    CHECK(*s == "abc");
    CHECK(s->size() == 3);
    CHECK(&*s == &s.value);
    CHECK(s.operator->() == &s.value);

    *s = "changed";
    CHECK(s.value == "changed");
    s->append("!");
    CHECK(s.value == "changed!");

    const stamped<std::string>& cs = s;
    static_assert(std::is_same_v<decltype(*cs), const std::string&>);
    static_assert(std::is_same_v<decltype(cs.operator->()), const std::string*>);
    CHECK(*cs == "changed!");
    CHECK(cs->size() == 8);
    CHECK(&*cs == &s.value);
}

TEST_CASE("stamped: stamp() fills value, seq and the given capture time") {
    const time_point when = time_point{} + 5s;
    const auto s = stamp(7, 3, when);
    CHECK(s.value == 7);
    CHECK(s.seq == 3);
    CHECK(s.captured == when);

    const auto big = stamp(std::string("x"), std::uint64_t{1} << 40, when);
    CHECK(big.value == "x");
    CHECK(big.seq == (std::uint64_t{1} << 40));
}

TEST_CASE("stamped: stamp() without a time captures now") {
    const time_point before = clock_type::now();
    const auto s = stamp(1, 0);
    const time_point after = clock_type::now();
    CHECK(s.captured >= before);
    CHECK(s.captured <= after);
}

TEST_CASE("stamped: stamp() copies an lvalue and moves an rvalue") {
    std::string source = "a long enough string to avoid the small-string buffer";
    const auto copied = stamp(source, 0, time_point{});
    CHECK(copied.value == source);
    CHECK_FALSE(source.empty());

    auto owner = std::make_unique<int>(9);
    int* const raw = owner.get();
    const auto moved = stamp(std::move(owner), 1, time_point{});
    CHECK(moved.value.get() == raw);
    CHECK(*moved.value == 9);
    CHECK(owner == nullptr); // NOLINT(bugprone-use-after-move): checking the move happened
}

TEST_CASE("stamped: age() is now minus the capture time") {
    const time_point captured = time_point{} + 10s;
    const auto s = stamp(0, 0, captured);
    CHECK(s.age(captured) == clock_type::duration::zero());
    CHECK(s.age(captured + 250ms) == 250ms);
    CHECK(s.age(captured + 1h) == 1h);
    // A time point before the capture gives a negative age rather than clamping.
    CHECK(s.age(captured - 2s) == -2s);
}

TEST_CASE("stamped: age() saturates instead of overflowing for far-apart time points") {
    // now - captured used to overflow (undefined behaviour) when the two were more than the
    // duration's range apart.
    using duration = clock_type::duration;
    CHECK(stamp(0, 0, time_point::min()).age(time_point{} + 1s) == duration::max());
    CHECK(stamp(0, 0, time_point::min()).age(time_point::max()) == duration::max());
    CHECK(stamp(0, 0, time_point::max()).age(time_point{} - 1s) == duration::min());
    CHECK(stamp(0, 0, time_point::max()).age(time_point::min()) == duration::min());
    // In range: exact, up to the range's ends.
    CHECK(stamp(0, 0, time_point::min()).age(time_point{} - 1ns) == duration::max());
    CHECK(stamp(0, 0, time_point{}).age(time_point::max()) == duration::max());
    CHECK(stamp(0, 0, time_point{} - 1ns).age(time_point::min()) == duration::min() + 1ns);
    CHECK(stamp(0, 0, time_point{} + 1ns).age(time_point::max()) == duration::max() - 1ns);
}

TEST_CASE("stamped: the channels' age check compares far-apart time points without overflow") {
    // now - captured used to overflow, so an item captured at time_point::min() was never
    // expired (the wrapped difference was negative).
    const std::optional<std::chrono::nanoseconds> max_age = 100ms;
    const time_point now = time_point{} + 10s;
    using framepipe::detail::older_than;
    CHECK(older_than(stamp(0, 0, time_point::min()), max_age, now));
    CHECK(older_than(stamp(0, 0, time_point::min()), max_age, time_point::max() - 1ns));
    CHECK(older_than(stamp(0, 0, time_point::min() + 1ns), max_age, time_point{} + 1ns));
    // A capture far after `now` is not old.
    CHECK_FALSE(older_than(stamp(0, 0, time_point::max() - 1ns), max_age, time_point::min()));
    CHECK_FALSE(older_than(stamp(0, 0, time_point::max() - 1ns), max_age, now));
    // Near the boundary: older than max_age, not equal to it.
    CHECK(older_than(stamp(0, 0, now - 100ms - 1ns), max_age, now));
    CHECK_FALSE(older_than(stamp(0, 0, now - 100ms), max_age, now));
    // The largest max_age expires nothing that is in range.
    const std::optional<std::chrono::nanoseconds> longest = std::chrono::nanoseconds::max();
    CHECK_FALSE(older_than(stamp(0, 0, time_point::min()), longest, time_point{} - 1ns));
}

TEST_CASE("stamped: age() defaults to the current time") {
    // Captured an hour before a reading of now: age() (later still) is at least an hour.
    const auto s = stamp(0, 0, clock_type::now() - 1h);
    CHECK(s.age() >= 1h);
    // Captured in the future: age() is negative.
    const auto future = stamp(0, 0, clock_type::now() + 1h);
    CHECK(future.age() < clock_type::duration::zero());
}

TEST_CASE("stamped: timestamp_traits<stamped<T>> reads the capture time") {
    const time_point when = time_point{} + 77ms;
    const auto s = stamp(std::string("v"), 0, when);
    CHECK(timestamp_traits<stamped<std::string>>::capture_time(s) == when);
    const auto other = stamp(1, 0, when + 1s);
    CHECK(timestamp_traits<stamped<int>>::capture_time(other) == when + 1s);
}

TEST_CASE("stamped: timestamp_traits<shared_ptr<stamped<T>>> reads the pointee's capture time") {
    const time_point when = time_point{} + 3s;
    const auto p = std::make_shared<stamped<int>>(stamp(5, 0, when));
    CHECK(timestamp_traits<std::shared_ptr<stamped<int>>>::capture_time(p) == when);

    // Follows the pointee: a change to its capture time is seen.
    p->captured = when + 1s;
    CHECK(timestamp_traits<std::shared_ptr<stamped<int>>>::capture_time(p) == when + 1s);
}

TEST_CASE("stamped: timestamp_traits<shared_ptr<const stamped<T>>> reads the capture time") {
    const time_point when = time_point{} + 4s;
    const std::shared_ptr<const stamped<int>> p =
        std::make_shared<const stamped<int>>(stamp(5, 0, when));
    CHECK(timestamp_traits<std::shared_ptr<const stamped<int>>>::capture_time(p) == when);
}

TEST_CASE("stamped: timestamp_traits<unique_ptr<stamped<T>>> reads the capture time") {
    const time_point when = time_point{} + 6s;
    const auto p = std::make_unique<stamped<int>>(stamp(5, 0, when));
    CHECK(timestamp_traits<std::unique_ptr<stamped<int>>>::capture_time(p) == when);

    const std::unique_ptr<const stamped<int>> cp =
        std::make_unique<const stamped<int>>(stamp(5, 0, when + 1ms));
    CHECK(timestamp_traits<std::unique_ptr<const stamped<int>>>::capture_time(cp) ==
          when + 1ms);

    int deletions = 0;
    {
        using ptr = std::unique_ptr<stamped<int>, counting_deleter>;
        const ptr custom(new stamped<int>(stamp(5, 0, when + 2ms)), counting_deleter{&deletions});
        CHECK(timestamp_traits<ptr>::capture_time(custom) == when + 2ms);
        CHECK(deletions == 0); // reading the time does not touch ownership
    }
    CHECK(deletions == 1);
}

TEST_CASE("stamped: a null pointer never expires (capture time is time_point::max())") {
    const auto max = time_point::max();
    CHECK(timestamp_traits<std::shared_ptr<stamped<int>>>::capture_time(nullptr) == max);
    CHECK(timestamp_traits<std::shared_ptr<const stamped<int>>>::capture_time(nullptr) == max);
    CHECK(timestamp_traits<std::unique_ptr<stamped<int>>>::capture_time(nullptr) == max);
    CHECK(timestamp_traits<std::unique_ptr<const stamped<int>>>::capture_time(nullptr) == max);
    using custom_ptr = std::unique_ptr<stamped<int>, counting_deleter>;
    CHECK(timestamp_traits<custom_ptr>::capture_time(custom_ptr(nullptr, counting_deleter{})) ==
          max);

    // A pointer that is reset becomes null and so never-expiring too.
    auto p = std::make_shared<stamped<int>>(stamp(1, 0, time_point{}));
    CHECK(timestamp_traits<std::shared_ptr<stamped<int>>>::capture_time(p) == time_point{});
    p.reset();
    CHECK(timestamp_traits<std::shared_ptr<stamped<int>>>::capture_time(p) == max);
}

TEST_CASE("stamped: a user specialisation of timestamp_traits is used through pointers") {
    const own_frame frame{.ticks = 1234};
    const time_point expected{clock_type::duration{1234}};
    CHECK(timestamp_traits<own_frame>::capture_time(frame) == expected);

    const auto shared = std::make_shared<own_frame>(frame);
    CHECK(timestamp_traits<std::shared_ptr<own_frame>>::capture_time(shared) == expected);
    const auto unique = std::make_unique<const own_frame>(frame);
    CHECK(timestamp_traits<std::unique_ptr<const own_frame>>::capture_time(unique) == expected);
    CHECK(timestamp_traits<std::shared_ptr<own_frame>>::capture_time(nullptr) == time_point::max());
}
