// tests/test_latest_slot.cpp - framepipe::latest_slot<T>: a capacity-1, always-overwritten slot.

// The test seam of detail/config.hpp in peek(), between its read of the slot and its pin (see
// support/test_seam.hpp), defined before any framepipe header. This file is a program of its own,
// so no other translation unit sees the headers with another definition.
#include "support/test_seam.hpp"

inline framepipe_test::test_seam peek_pin_seam;
#define FRAMEPIPE_DETAIL_LATEST_PEEK_HOOK() ::peek_pin_seam.run()

// The seam where a pop that found nothing is about to wait again (after its checks of the stop
// token and the deadline): a thread that sets rewait_action (support/thread_hooks.hpp) runs it.
#include "support/thread_hooks.hpp"
#define FRAMEPIPE_DETAIL_REWAIT_HOOK() ::framepipe_test::run_hook(::framepipe_test::rewait_action)

// The seam between the reads of drained() (a T whose move may throw): a thread that sets
// drained_action runs it with the step (1 after the first look at the slot, 2 after the first
// read of the pops that may put a value back).
#include <functional>
inline thread_local const std::function<void(int)>* drained_action = nullptr;
#define FRAMEPIPE_DETAIL_LATEST_DRAINED_HOOK(step)                                                 \
    do {                                                                                           \
        if (::drained_action != nullptr) {                                                         \
            (*::drained_action)(step);                                                             \
        }                                                                                          \
    } while (false)

#include <framepipe/channel.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/stamped.hpp>

#include <catch2/catch.hpp>

#include "support/lifetime.hpp"
#include "support/rounds_after_end.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using framepipe::channel_stats;
using framepipe::latest_slot;
using framepipe::push_status;
using framepipe::stamp;
using framepipe::stamped;
using framepipe_test::counted;
using framepipe_test::lifetime_scope;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// pushed == popped + dropped + size, and dropped is the sum of its reasons.
void check_identity(const channel_stats& s) {
    INFO("pushed " << s.pushed << " popped " << s.popped << " dropped " << s.dropped << " size "
                   << s.size << " evicted " << s.evicted << " rejected " << s.rejected
                   << " cancelled " << s.cancelled << " expired " << s.expired << " after_close "
                   << s.after_close);
    CHECK(s.pushed == s.popped + s.dropped + s.size);
    CHECK(s.dropped == s.evicted + s.rejected + s.cancelled + s.expired + s.after_close);
}

bool same_counts(const channel_stats& a, const channel_stats& b) {
    return a.pushed == b.pushed && a.popped == b.popped && a.dropped == b.dropped &&
           a.evicted == b.evicted && a.rejected == b.rejected && a.cancelled == b.cancelled &&
           a.expired == b.expired && a.after_close == b.after_close && a.size == b.size;
}

// The message of the std::invalid_argument that `f` throws (other exceptions propagate).
template <class F>
std::string invalid_argument_message(F&& f) {
    try {
        std::forward<F>(f)();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "<no std::invalid_argument thrown>";
}

// Spins (yielding) until `condition` holds. Only for conditions that must eventually hold.
template <class Condition>
void await(Condition condition) {
    while (!condition()) {
        std::this_thread::yield();
    }
}

// A value whose k-th move from the moment it is armed throws. Single-threaded tests only.
struct fragile_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct fragile_control {
    int moves_until_throw = 0; // 0: disarmed
    std::int64_t alive = 0;
};

fragile_control& fragile_ctl() {
    static fragile_control control;
    return control;
}

class fragile {
public:
    explicit fragile(int v) : value_(v) { ++fragile_ctl().alive; }
    fragile(const fragile& o) : value_(o.value_) { ++fragile_ctl().alive; }
    fragile(fragile&& o) : value_(o.value_) {
        fragile_control& c = fragile_ctl();
        if (c.moves_until_throw > 0 && --c.moves_until_throw == 0) {
            throw fragile_error("move");
        }
        ++c.alive;
    }
    fragile& operator=(const fragile&) = delete;
    fragile& operator=(fragile&&) = delete;
    ~fragile() { --fragile_ctl().alive; }

    [[nodiscard]] int value() const noexcept { return value_; }

private:
    int value_;
};

// Arms fragile for the duration of a scope; disarms on exit, however it is left.
struct arm_fragile {
    explicit arm_fragile(int k) { fragile_ctl().moves_until_throw = k; }
    ~arm_fragile() { fragile_ctl().moves_until_throw = 0; }
    arm_fragile(const arm_fragile&) = delete;
    arm_fragile& operator=(const arm_fragile&) = delete;
};

template <class S>
concept has_peek = requires(const S& s) { s.peek(); };

using stamped_slot = latest_slot<stamped<int>>;

// A stamped<int> captured an hour ago: stale under any max_age used here.
stamped<int> stale(int v) { return stamp(v, 0, clock_type::now() - 1h); }
// A stamped<int> captured now: fresh under a max_age of an hour.
stamped<int> fresh(int v) { return stamp(v, 0); }

} // namespace

// --- Shape ---

static_assert(std::is_same_v<latest_slot<int>::value_type, int>);
static_assert(std::is_same_v<latest_slot<std::unique_ptr<int>>::value_type, std::unique_ptr<int>>);
static_assert(!std::is_copy_constructible_v<latest_slot<int>>);
static_assert(!std::is_copy_assignable_v<latest_slot<int>>);
static_assert(!std::is_convertible_v<std::chrono::nanoseconds, stamped_slot>); // explicit
// peek() is offered exactly when T is copyable.
static_assert(has_peek<latest_slot<int>>);
static_assert(has_peek<stamped_slot>);
static_assert(!has_peek<latest_slot<std::unique_ptr<int>>>);

TEST_CASE("latest_slot: a new slot is empty, open, capacity 1, all counters zero") {
    latest_slot<int> slot;
    CHECK(slot.size() == 0);
    CHECK(slot.capacity() == 1);
    CHECK_FALSE(slot.closed());
    CHECK(same_counts(slot.stats(), channel_stats{}));
    CHECK_FALSE(slot.try_pop().has_value());
    CHECK_FALSE(slot.peek().has_value());
    // try_pop on an empty slot changes no counter.
    CHECK(same_counts(slot.stats(), channel_stats{}));
}

TEST_CASE("latest_slot: push into an empty slot returns ok and stores the value") {
    latest_slot<int> slot;
    CHECK(slot.push(7) == push_status::ok);
    CHECK(slot.size() == 1);
    CHECK(slot.capacity() == 1);
    const channel_stats s = slot.stats();
    CHECK(s.pushed == 1);
    CHECK(s.size == 1);
    CHECK(s.dropped == 0);
    check_identity(s);
    CHECK(slot.try_pop() == std::optional<int>(7));
    CHECK(slot.size() == 0);
}

TEST_CASE("latest_slot: each push replaces an unconsumed value (evicted, counted)") {
    latest_slot<int> slot;
    CHECK(slot.push(1) == push_status::ok);
    CHECK(slot.push(2) == push_status::evicted);
    CHECK(slot.push(3) == push_status::evicted);
    CHECK(slot.size() == 1);
    CHECK(slot.capacity() == 1);

    channel_stats s = slot.stats();
    CHECK(s.pushed == 3);
    CHECK(s.evicted == 2);
    CHECK(s.dropped == 2);
    CHECK(s.rejected == 0);
    CHECK(s.size == 1);
    check_identity(s);

    // Only the newest is there; the replaced ones are gone.
    CHECK(slot.try_pop() == std::optional<int>(3));
    CHECK_FALSE(slot.try_pop().has_value());

    // Once consumed, the next push finds the slot empty: ok, not evicted.
    CHECK(slot.push(4) == push_status::ok);
    s = slot.stats();
    CHECK(s.evicted == 2);
    CHECK(s.popped == 1);
    check_identity(s);
}

TEST_CASE("latest_slot: peek returns a copy without consuming") {
    latest_slot<std::string> slot;
    CHECK_FALSE(slot.peek().has_value());
    CHECK(slot.push("first") == push_status::ok);

    std::optional<std::string> seen = slot.peek();
    REQUIRE(seen.has_value());
    CHECK(*seen == "first");
    seen->assign("modified copy"); // a copy: the slot's value is untouched
    CHECK(slot.peek() == std::optional<std::string>("first"));
    CHECK(slot.size() == 1);
    const channel_stats s = slot.stats();
    CHECK(s.popped == 0);
    CHECK(s.size == 1);
    check_identity(s);

    // peek sees the replacement, and the value is still there to pop.
    CHECK(slot.push("second") == push_status::evicted);
    CHECK(slot.peek() == std::optional<std::string>("second"));
    CHECK(slot.try_pop() == std::optional<std::string>("second"));
    CHECK_FALSE(slot.peek().has_value());
}

TEST_CASE("latest_slot: peek works on a const slot") {
    latest_slot<int> slot;
    CHECK(slot.push(5) == push_status::ok);
    const latest_slot<int>& view = slot;
    CHECK(view.peek() == std::optional<int>(5));
    CHECK(view.size() == 1);
    CHECK(view.capacity() == 1);
    CHECK_FALSE(view.closed());
    CHECK(view.stats().pushed == 1);
}

TEST_CASE("latest_slot: try_pop takes the value once, then finds nothing") {
    latest_slot<int> slot;
    CHECK(slot.push(11) == push_status::ok);
    CHECK(slot.try_pop() == std::optional<int>(11));
    CHECK_FALSE(slot.try_pop().has_value());
    const channel_stats s = slot.stats();
    CHECK(s.popped == 1);
    CHECK(s.size == 0);
    check_identity(s);
}

TEST_CASE("latest_slot: pop returns a present value at once") {
    latest_slot<int> slot;
    CHECK(slot.push(3) == push_status::ok);
    CHECK(slot.pop() == std::optional<int>(3));
    CHECK(slot.stats().popped == 1);
    CHECK(slot.size() == 0);
}

TEST_CASE("latest_slot: a blocked pop wakes on push and gets the value") {
    stamped_slot slot(1h);
    std::atomic<bool> done{false};
    std::optional<stamped<int>> got;
    std::thread consumer([&] {
        got = slot.pop();
        done = true;
    });
    // Prove the consumer is inside pop(): only a pop discards this stale value, and a pop that
    // discarded it without returning is waiting for a fresh one.
    CHECK(slot.push(stale(1)) == push_status::ok);
    await([&] { return slot.stats().expired == 1 || done.load(); });
    CHECK_FALSE(done.load());

    CHECK(slot.push(fresh(2)) == push_status::ok);
    consumer.join();
    CHECK(done.load());
    REQUIRE(got.has_value());
    CHECK(got->value == 2);
    const channel_stats s = slot.stats();
    CHECK(s.popped == 1);
    CHECK(s.expired == 1);
    check_identity(s);
}

TEST_CASE("latest_slot: a push wakes one waiting consumer per value") {
    latest_slot<int> slot;
    std::latch started(2);
    std::atomic<int> finished{0};
    std::optional<int> got[2];
    std::vector<std::thread> consumers;
    for (int i = 0; i < 2; ++i) {
        consumers.emplace_back([&, i] {
            started.count_down();
            got[i] = slot.pop();
            ++finished;
        });
    }
    started.wait();
    CHECK(finished.load() == 0); // empty and open: nobody can have returned

    CHECK(slot.push(1) == push_status::ok);
    await([&] { return finished.load() >= 1; });
    // Exactly one consumer took it; the other is still waiting for its own value.
    CHECK(slot.stats().popped == 1);
    CHECK(finished.load() == 1);

    CHECK(slot.push(2) == push_status::ok);
    for (auto& t : consumers) {
        t.join();
    }
    REQUIRE(got[0].has_value());
    REQUIRE(got[1].has_value());
    CHECK(*got[0] + *got[1] == 3);
    CHECK(*got[0] != *got[1]);
    const channel_stats s = slot.stats();
    CHECK(s.popped == 2);
    CHECK(s.evicted == 0);
    check_identity(s);
}

TEST_CASE("latest_slot: pop(stop) returns nullopt when stop is already requested, value stays") {
    latest_slot<int> slot;
    CHECK(slot.push(9) == push_status::ok);
    std::stop_source source;
    source.request_stop();
    // The token is checked first: a stopped consumer leaves even though a value is there.
    CHECK_FALSE(slot.pop(source.get_token()).has_value());
    CHECK(slot.size() == 1);
    CHECK(slot.stats().popped == 0);
    CHECK(slot.try_pop() == std::optional<int>(9));
}

TEST_CASE("latest_slot: pop(stop) without a stop request behaves like pop") {
    latest_slot<int> slot;
    std::stop_source source;
    CHECK(slot.push(4) == push_status::ok);
    CHECK(slot.pop(source.get_token()) == std::optional<int>(4));
    CHECK(slot.push(5) == push_status::ok);
    CHECK(slot.pop(std::stop_token{}) == std::optional<int>(5));
    CHECK(slot.stats().popped == 2);
}

TEST_CASE("latest_slot: a blocked pop(stop) wakes with nullopt when stop is requested") {
    stamped_slot slot(1h);
    std::stop_source source;
    std::atomic<bool> done{false};
    std::optional<stamped<int>> got = fresh(-1);
    std::thread consumer([&] {
        got = slot.pop(source.get_token());
        done = true;
    });
    CHECK(slot.push(stale(1)) == push_status::ok);
    await([&] { return slot.stats().expired == 1 || done.load(); });
    CHECK_FALSE(done.load());

    source.request_stop();
    consumer.join();
    CHECK_FALSE(got.has_value());
    CHECK(slot.stats().popped == 0);
    CHECK_FALSE(slot.closed());
    // The slot still works after the stopped consumer left.
    CHECK(slot.push(fresh(2)) == push_status::ok);
    const auto next = slot.try_pop();
    REQUIRE(next.has_value());
    CHECK(next->value == 2);
}

TEST_CASE("latest_slot: pop_for returns a present value, nullopt on an empty slot") {
    latest_slot<int> slot;
    CHECK_FALSE(slot.pop_for(1ms).has_value());
    CHECK_FALSE(slot.pop_for(0ns).has_value());
    CHECK(slot.push(8) == push_status::ok);
    CHECK(slot.pop_for(1ms) == std::optional<int>(8));
    CHECK(slot.push(9) == push_status::ok);
    CHECK(slot.pop_for(0ns) == std::optional<int>(9));
    CHECK_FALSE(slot.pop_for(1ms).has_value());
    const channel_stats s = slot.stats();
    CHECK(s.popped == 2);
    check_identity(s);
}

TEST_CASE("latest_slot: a pop_for waiting with a long timeout gets a value pushed later") {
    stamped_slot slot(1h);
    std::atomic<bool> done{false};
    std::optional<stamped<int>> got;
    std::thread consumer([&] {
        got = slot.pop_for(std::chrono::nanoseconds::max()); // saturates; must not time out
        done = true;
    });
    // Each stale value is discarded by the waiting pop_for, which must then wait on.
    for (int i = 1; i <= 3; ++i) {
        CHECK(slot.push(stale(i)) == push_status::ok);
        await([&] {
            return slot.stats().expired == static_cast<std::uint64_t>(i) || done.load();
        });
        CHECK_FALSE(done.load());
    }
    CHECK(slot.push(fresh(4)) == push_status::ok);
    consumer.join();
    REQUIRE(got.has_value());
    CHECK(got->value == 4);
}

TEST_CASE("latest_slot: pop_for(timeout, stop) gets a value, or ends with nullopt on stop") {
    stamped_slot slot(1h);
    std::stop_source source;
    CHECK(slot.push(fresh(1)) == push_status::ok);
    const auto first = slot.pop_for(1ms, source.get_token());
    REQUIRE(first.has_value());
    CHECK(first->value == 1);
    CHECK_FALSE(slot.pop_for(1ms, source.get_token()).has_value());

    std::atomic<bool> done{false};
    std::optional<stamped<int>> got = fresh(-1);
    std::thread consumer([&] {
        got = slot.pop_for(1h, source.get_token());
        done = true;
    });
    CHECK(slot.push(stale(2)) == push_status::ok);
    await([&] { return slot.stats().expired == 1 || done.load(); });
    CHECK_FALSE(done.load());
    source.request_stop();
    consumer.join();
    CHECK_FALSE(got.has_value());
    CHECK(slot.stats().popped == 1);
}

TEST_CASE("latest_slot: push(T, stop) never waits and never consults the token") {
    latest_slot<int> slot;
    std::stop_source source;
    source.request_stop();
    CHECK(slot.push(1, source.get_token()) == push_status::ok);
    CHECK(slot.push(2, source.get_token()) == push_status::evicted);
    channel_stats s = slot.stats();
    CHECK(s.pushed == 2);
    CHECK(s.evicted == 1);
    CHECK(s.cancelled == 0);
    CHECK(s.rejected == 0);
    check_identity(s);
    CHECK(slot.try_pop() == std::optional<int>(2));

    slot.close();
    CHECK(slot.push(3, source.get_token()) == push_status::closed);
    s = slot.stats();
    CHECK(s.after_close == 1);
    CHECK(s.cancelled == 0);
    check_identity(s);
}

TEST_CASE("latest_slot: close is observable, idempotent, and pops on a drained slot end") {
    latest_slot<int> slot;
    CHECK_FALSE(slot.closed());
    slot.close();
    CHECK(slot.closed());
    const channel_stats before = slot.stats();
    slot.close();
    CHECK(slot.closed());
    CHECK(same_counts(slot.stats(), before));

    // Closed and empty: every pop ends at once with nullopt.
    CHECK_FALSE(slot.pop().has_value());
    CHECK_FALSE(slot.try_pop().has_value());
    CHECK_FALSE(slot.pop(std::stop_source{}.get_token()).has_value());
    CHECK_FALSE(slot.pop_for(1h).has_value());
    CHECK_FALSE(slot.pop_for(1h, std::stop_source{}.get_token()).has_value());
    CHECK(same_counts(slot.stats(), before));
}

TEST_CASE("latest_slot: pushes after close return closed, store nothing, and are counted") {
    latest_slot<int> slot;
    slot.close();
    CHECK(slot.push(1) == push_status::closed);
    CHECK(slot.push(2) == push_status::closed);
    CHECK(slot.size() == 0);
    const channel_stats s = slot.stats();
    CHECK(s.pushed == 2);
    CHECK(s.after_close == 2);
    CHECK(s.dropped == 2);
    CHECK(s.evicted == 0);
    CHECK(s.size == 0);
    check_identity(s);
    CHECK_FALSE(slot.try_pop().has_value());
    CHECK_FALSE(slot.pop().has_value());
}

TEST_CASE("latest_slot: the last value is still drained after close") {
    latest_slot<int> slot;
    CHECK(slot.push(1) == push_status::ok);
    CHECK(slot.push(2) == push_status::evicted);
    slot.close();
    // A push after close neither replaces nor evicts the unread value.
    CHECK(slot.push(3) == push_status::closed);
    CHECK(slot.size() == 1);
    CHECK(slot.peek() == std::optional<int>(2));

    channel_stats s = slot.stats();
    CHECK(s.evicted == 1);
    CHECK(s.after_close == 1);
    CHECK(s.size == 1);
    check_identity(s);

    CHECK(slot.pop() == std::optional<int>(2));
    CHECK_FALSE(slot.pop().has_value());
    CHECK_FALSE(slot.pop_for(1ms).has_value());
    s = slot.stats();
    CHECK(s.popped == 1);
    CHECK(s.size == 0);
    check_identity(s);
}

TEST_CASE("latest_slot: the last value is drained after close by every kind of pop") {
    latest_slot<int> slot;
    std::stop_source source;

    CHECK(slot.push(1) == push_status::ok);
    slot.close();
    CHECK(slot.try_pop() == std::optional<int>(1));
    CHECK_FALSE(slot.try_pop().has_value());

    latest_slot<int> slot2;
    CHECK(slot2.push(2) == push_status::ok);
    slot2.close();
    CHECK(slot2.pop(source.get_token()) == std::optional<int>(2));
    CHECK_FALSE(slot2.pop(source.get_token()).has_value());

    latest_slot<int> slot3;
    CHECK(slot3.push(3) == push_status::ok);
    slot3.close();
    CHECK(slot3.pop_for(1h) == std::optional<int>(3));
    CHECK_FALSE(slot3.pop_for(1h).has_value());

    latest_slot<int> slot4;
    CHECK(slot4.push(4) == push_status::ok);
    slot4.close();
    CHECK(slot4.pop_for(1h, source.get_token()) == std::optional<int>(4));
    CHECK_FALSE(slot4.pop_for(1h, source.get_token()).has_value());
}

TEST_CASE("latest_slot: a blocked pop wakes with nullopt on close") {
    stamped_slot slot(1h);
    std::atomic<bool> done{false};
    std::optional<stamped<int>> got = fresh(-1);
    std::thread consumer([&] {
        got = slot.pop();
        done = true;
    });
    CHECK(slot.push(stale(1)) == push_status::ok);
    await([&] { return slot.stats().expired == 1 || done.load(); });
    CHECK_FALSE(done.load());

    slot.close();
    consumer.join();
    CHECK_FALSE(got.has_value());
    const channel_stats s = slot.stats();
    CHECK(s.popped == 0);
    check_identity(s);
}

TEST_CASE("latest_slot: close wakes every blocked consumer, whichever pop it waits in") {
    latest_slot<int> slot;
    std::stop_source source;
    std::latch started(4);
    std::atomic<int> finished{0};
    std::atomic<int> got_value{0};
    auto record = [&](const std::optional<int>& r) {
        if (r) {
            ++got_value;
        }
        ++finished;
    };
    std::vector<std::thread> consumers;
    consumers.emplace_back([&] {
        started.count_down();
        record(slot.pop());
    });
    consumers.emplace_back([&] {
        started.count_down();
        record(slot.pop(source.get_token()));
    });
    consumers.emplace_back([&] {
        started.count_down();
        record(slot.pop_for(1h));
    });
    consumers.emplace_back([&] {
        started.count_down();
        record(slot.pop_for(1h, source.get_token()));
    });
    started.wait();
    CHECK(finished.load() == 0);
    slot.close();
    for (auto& t : consumers) {
        t.join();
    }
    CHECK(got_value.load() == 0); // woken by close, not by a value
}

TEST_CASE("latest_slot: accounting identity holds after every step") {
    latest_slot<int> slot;
    struct expected {
        std::uint64_t pushed, popped, evicted, after_close, size;
    };
    auto check = [&](expected e) {
        const channel_stats s = slot.stats();
        CHECK(s.pushed == e.pushed);
        CHECK(s.popped == e.popped);
        CHECK(s.evicted == e.evicted);
        CHECK(s.after_close == e.after_close);
        CHECK(s.size == e.size);
        CHECK(slot.size() == e.size);
        CHECK(s.dropped == e.evicted + e.after_close);
        CHECK(s.rejected == 0);
        CHECK(s.cancelled == 0);
        CHECK(s.expired == 0);
        check_identity(s);
    };
    check({0, 0, 0, 0, 0});
    CHECK(slot.push(1) == push_status::ok);
    check({1, 0, 0, 0, 1});
    CHECK(slot.push(2) == push_status::evicted);
    check({2, 0, 1, 0, 1});
    CHECK(slot.peek() == std::optional<int>(2));
    check({2, 0, 1, 0, 1});
    CHECK(slot.pop() == std::optional<int>(2));
    check({2, 1, 1, 0, 0});
    CHECK_FALSE(slot.try_pop().has_value());
    check({2, 1, 1, 0, 0});
    CHECK(slot.push(3) == push_status::ok);
    CHECK(slot.push(4) == push_status::evicted);
    CHECK(slot.push(5) == push_status::evicted);
    check({5, 1, 3, 0, 1});
    slot.close();
    check({5, 1, 3, 0, 1});
    CHECK(slot.push(6) == push_status::closed);
    check({6, 1, 3, 1, 1});
    CHECK(slot.pop() == std::optional<int>(5));
    check({6, 2, 3, 1, 0});
    CHECK_FALSE(slot.pop().has_value());
    check({6, 2, 3, 1, 0});
}

// --- max_age ---

TEST_CASE("latest_slot: max_age discards a stale value at pop, counted as expired") {
    stamped_slot slot(1min);
    CHECK(slot.capacity() == 1);
    CHECK(slot.push(stale(1)) == push_status::ok);
    CHECK(slot.size() == 1); // still held until a pop discards it
    CHECK_FALSE(slot.try_pop().has_value());
    channel_stats s = slot.stats();
    CHECK(s.expired == 1);
    CHECK(s.dropped == 1);
    CHECK(s.popped == 0);
    CHECK(s.size == 0);
    CHECK(slot.size() == 0);
    check_identity(s);

    // A fresh value is returned.
    CHECK(slot.push(stamp(2, 7)) == push_status::ok);
    const auto got = slot.try_pop();
    REQUIRE(got.has_value());
    CHECK(got->value == 2);
    CHECK(got->seq == 7);
    s = slot.stats();
    CHECK(s.popped == 1);
    CHECK(s.expired == 1);
    check_identity(s);
}

TEST_CASE("latest_slot: max_age: pop(stop) and pop_for end while stale values keep arriving, one "
          "a look") {
    // After a take that found only an expired value, the pop waited again without looking at
    // its stop token or deadline, and the wait returned at once (a value was there) without
    // looking at them either: a stopped or timed-out pop went on for as long as stale values
    // came, one a look (review). The consumer pushes them itself, from the seam before each
    // wait again, up to 200000.
    stamped_slot slot(1min);
    framepipe_test::rounds_after_end r;
    const std::function<void()> feed = [&] {
        if (r.next()) {
            (void)slot.push(stale(static_cast<int>(r.rounds)));
        }
    };
    std::optional<stamped<int>> result{fresh(0)};
    framepipe_test::rewait_action = &feed;
    SECTION("pop(stop)") {
        std::stop_source stop;
        r.stop = &stop;
        r.stop_at = 100;
        result = slot.pop(stop.get_token());
        CHECK(r.rounds >= 100);
        CHECK(r.after_stop <= 1);
    }
    SECTION("pop_for") {
        r.timeout = 2ms;
        result = slot.pop_for(r.timeout);
        CHECK(r.rounds < r.limit);
        CHECK(r.after_deadline <= 1);
    }
    framepipe_test::rewait_action = nullptr;
    CHECK_FALSE(result);
    check_identity(slot.stats());
}

TEST_CASE("latest_slot: max_age, peek skips a stale value without removing or counting it") {
    stamped_slot slot(1min);
    CHECK(slot.push(stale(1)) == push_status::ok);
    CHECK_FALSE(slot.peek().has_value());
    CHECK(slot.size() == 1);
    CHECK(slot.stats().expired == 0);
    CHECK(slot.stats().size == 1);

    // A fresh value replaces it (the stale one is evicted, not expired) and is seen by peek.
    CHECK(slot.push(fresh(2)) == push_status::evicted);
    const auto seen = slot.peek();
    REQUIRE(seen.has_value());
    CHECK(seen->value == 2);
    const auto got = slot.pop();
    REQUIRE(got.has_value());
    CHECK(got->value == 2);
    const channel_stats s = slot.stats();
    CHECK(s.evicted == 1);
    CHECK(s.expired == 0);
    CHECK(s.popped == 1);
    check_identity(s);
}

TEST_CASE("latest_slot: max_age, every kind of pop discards a stale value") {
    std::stop_source source;
    auto check_discarded = [](stamped_slot& slot) {
        const channel_stats s = slot.stats();
        CHECK(s.expired == 1);
        CHECK(s.popped == 0);
        CHECK(s.size == 0);
        check_identity(s);
    };
    {
        stamped_slot slot(1min);
        CHECK(slot.push(stale(1)) == push_status::ok);
        CHECK_FALSE(slot.pop_for(1ms).has_value());
        check_discarded(slot);
    }
    {
        stamped_slot slot(1min);
        CHECK(slot.push(stale(1)) == push_status::ok);
        CHECK_FALSE(slot.pop_for(1ms, source.get_token()).has_value());
        check_discarded(slot);
    }
    {
        // Closed with only a stale value: pop discards it and ends with nullopt.
        stamped_slot slot(1min);
        CHECK(slot.push(stale(1)) == push_status::ok);
        slot.close();
        CHECK_FALSE(slot.pop().has_value());
        check_discarded(slot);
    }
    {
        stamped_slot slot(1min);
        CHECK(slot.push(stale(1)) == push_status::ok);
        slot.close();
        CHECK_FALSE(slot.pop(source.get_token()).has_value());
        check_discarded(slot);
    }
}

TEST_CASE("latest_slot: max_age with shared_ptr<stamped> and shared_ptr<const stamped>") {
    {
        latest_slot<std::shared_ptr<stamped<int>>> slot(1min);
        CHECK(slot.push(std::make_shared<stamped<int>>(stale(1))) == push_status::ok);
        CHECK_FALSE(slot.try_pop().has_value());
        CHECK(slot.stats().expired == 1);
        CHECK(slot.push(std::make_shared<stamped<int>>(fresh(2))) == push_status::ok);
        const auto got = slot.try_pop();
        REQUIRE(got.has_value());
        REQUIRE(*got != nullptr);
        CHECK((*got)->value == 2);
        check_identity(slot.stats());
    }
    {
        latest_slot<std::shared_ptr<const stamped<int>>> slot(1min);
        CHECK(slot.push(std::make_shared<const stamped<int>>(stale(1))) == push_status::ok);
        CHECK_FALSE(slot.peek().has_value());
        CHECK_FALSE(slot.try_pop().has_value());
        CHECK(slot.stats().expired == 1);
        CHECK(slot.push(std::make_shared<const stamped<int>>(fresh(2))) == push_status::ok);
        const auto got = slot.pop();
        REQUIRE(got.has_value());
        REQUIRE(*got != nullptr);
        CHECK((*got)->value == 2);
        check_identity(slot.stats());
    }
}

TEST_CASE("latest_slot: max_age with unique_ptr<stamped> (move-only and timestamped)") {
    latest_slot<std::unique_ptr<stamped<int>>> slot(1min);
    CHECK(slot.push(std::make_unique<stamped<int>>(stale(1))) == push_status::ok);
    CHECK_FALSE(slot.try_pop().has_value());
    CHECK(slot.stats().expired == 1);
    CHECK(slot.push(std::make_unique<stamped<int>>(fresh(2))) == push_status::ok);
    auto got = slot.pop_for(1ms);
    REQUIRE(got.has_value());
    REQUIRE(*got != nullptr);
    CHECK((*got)->value == 2);
    check_identity(slot.stats());
}

TEST_CASE("latest_slot: max_age never expires a null pointer") {
    {
        latest_slot<std::shared_ptr<stamped<int>>> slot(0ns);
        CHECK(slot.push(nullptr) == push_status::ok);
        const auto seen = slot.peek();
        REQUIRE(seen.has_value());
        CHECK(*seen == nullptr);
        const auto got = slot.try_pop();
        REQUIRE(got.has_value());
        CHECK(*got == nullptr);
        CHECK(slot.stats().expired == 0);
        CHECK(slot.stats().popped == 1);
    }
    {
        latest_slot<std::unique_ptr<stamped<int>>> slot(0ns);
        CHECK(slot.push(nullptr) == push_status::ok);
        const auto got = slot.pop();
        REQUIRE(got.has_value());
        CHECK(*got == nullptr);
        CHECK(slot.stats().expired == 0);
    }
}

TEST_CASE("latest_slot: a pop waiting under max_age skips stale arrivals for a fresh one") {
    stamped_slot slot(1min);
    std::atomic<bool> done{false};
    std::optional<stamped<int>> got;
    std::thread consumer([&] {
        got = slot.pop();
        done = true;
    });
    for (int i = 1; i <= 3; ++i) {
        CHECK(slot.push(stale(i)) == push_status::ok);
        await([&] {
            return slot.stats().expired == static_cast<std::uint64_t>(i) || done.load();
        });
        CHECK_FALSE(done.load());
    }
    CHECK(slot.push(fresh(4)) == push_status::ok);
    consumer.join();
    REQUIRE(got.has_value());
    CHECK(got->value == 4);
    const channel_stats s = slot.stats();
    CHECK(s.expired == 3);
    CHECK(s.popped == 1);
    check_identity(s);
}

TEST_CASE("latest_slot: max_age of zero is accepted; without one nothing expires") {
    CHECK_NOTHROW(stamped_slot(0ns));
    // The default constructor sets no age limit: even an ancient stamped value is delivered.
    stamped_slot slot;
    CHECK(slot.push(stamp(1, 0, clock_type::time_point{})) == push_status::ok);
    const auto got = slot.try_pop();
    REQUIRE(got.has_value());
    CHECK(got->value == 1);
    CHECK(slot.stats().expired == 0);
}

// --- Bad arguments ---

TEST_CASE("latest_slot: a negative max_age throws invalid_argument naming max_age") {
    CHECK_THAT(invalid_argument_message([] { stamped_slot slot(-1ns); }),
               Catch::Matchers::Contains("max_age"));
    CHECK_THAT(invalid_argument_message([] { stamped_slot slot(-1h); }),
               Catch::Matchers::Contains("max_age"));
    CHECK_THAT(invalid_argument_message(
                   [] { latest_slot<std::shared_ptr<stamped<int>>> slot(-1ms); }),
               Catch::Matchers::Contains("max_age"));
}

TEST_CASE("latest_slot: max_age on a T without a capture time throws naming max_age") {
    CHECK_THAT(invalid_argument_message([] { latest_slot<int> slot(1s); }),
               Catch::Matchers::Contains("max_age"));
    CHECK_THAT(invalid_argument_message([] { latest_slot<int> slot(0ns); }),
               Catch::Matchers::Contains("max_age"));
    CHECK_THAT(invalid_argument_message([] { latest_slot<std::shared_ptr<int>> slot(1s); }),
               Catch::Matchers::Contains("max_age"));
}

TEST_CASE("latest_slot: a negative pop_for timeout throws naming timeout, value stays") {
    latest_slot<int> slot;
    CHECK(slot.push(1) == push_status::ok);
    CHECK_THAT(invalid_argument_message([&] { (void)slot.pop_for(-1ns); }),
               Catch::Matchers::Contains("timeout"));
    CHECK_THAT(invalid_argument_message(
                   [&] { (void)slot.pop_for(-1ms, std::stop_source{}.get_token()); }),
               Catch::Matchers::Contains("timeout"));
    CHECK(slot.size() == 1);
    CHECK(slot.stats().popped == 0);
    CHECK(slot.try_pop() == std::optional<int>(1));
}

// --- Move-only T and lifetimes ---

TEST_CASE("latest_slot: move-only T works through every operation") {
    latest_slot<std::unique_ptr<int>> slot;
    std::stop_source source;
    CHECK(slot.push(std::make_unique<int>(1)) == push_status::ok);
    CHECK(slot.push(std::make_unique<int>(2)) == push_status::evicted);
    auto a = slot.try_pop();
    REQUIRE(a.has_value());
    REQUIRE(*a != nullptr);
    CHECK(**a == 2);

    CHECK(slot.push(std::make_unique<int>(3), source.get_token()) == push_status::ok);
    auto b = slot.pop();
    REQUIRE(b.has_value());
    CHECK(**b == 3);

    CHECK(slot.push(std::make_unique<int>(4)) == push_status::ok);
    auto c = slot.pop(source.get_token());
    REQUIRE(c.has_value());
    CHECK(**c == 4);

    CHECK(slot.push(std::make_unique<int>(5)) == push_status::ok);
    auto d = slot.pop_for(1ms);
    REQUIRE(d.has_value());
    CHECK(**d == 5);

    CHECK(slot.push(std::make_unique<int>(6)) == push_status::ok);
    auto e = slot.pop_for(1ms, source.get_token());
    REQUIRE(e.has_value());
    CHECK(**e == 6);

    CHECK(slot.push(std::make_unique<int>(7)) == push_status::ok);
    slot.close();
    CHECK(slot.push(std::make_unique<int>(8)) == push_status::closed);
    auto f = slot.pop();
    REQUIRE(f.has_value());
    CHECK(**f == 7);
    CHECK_FALSE(slot.pop().has_value());
    const channel_stats s = slot.stats();
    CHECK(s.pushed == 8);
    CHECK(s.popped == 6);
    CHECK(s.evicted == 1);
    CHECK(s.after_close == 1);
    check_identity(s);
}

TEST_CASE("latest_slot: each value's destructor runs exactly once") {
    lifetime_scope scope;
    {
        latest_slot<counted> slot;
        for (int i = 0; i < 10; ++i) {
            (void)slot.push(counted{i});
        }
        // The nine replaced values were destroyed when replaced; only the newest lives.
        CHECK(scope.counters.alive() == 1);
        CHECK(slot.stats().evicted == 9);

        const auto seen = slot.peek();
        REQUIRE(seen.has_value());
        CHECK(seen->value() == 9);
        CHECK(scope.counters.alive() == 2); // the slot's value and the peeked copy

        {
            auto got = slot.try_pop();
            REQUIRE(got.has_value());
            CHECK(got->value() == 9);
            CHECK(scope.counters.alive() == 2);
        }
        CHECK(scope.counters.alive() == 1); // only the peeked copy

        CHECK(slot.push(counted{10}) == push_status::ok);
        slot.close();
        CHECK(slot.push(counted{11}) == push_status::closed); // refused and destroyed
        CHECK(scope.counters.alive() == 2);
        // The slot is destroyed with a value in it.
    }
    CHECK(scope.counters.alive() == 0);
    CHECK(scope.counters.constructed == scope.counters.destroyed);
}

// --- Exception guarantees ---

TEST_CASE("latest_slot: push into an empty slot whose move throws stores and counts nothing") {
    REQUIRE(fragile_ctl().alive == 0);
    int throws = 0;
    bool succeeded = false;
    for (int k = 1; k <= 16 && !succeeded; ++k) {
        INFO("the move that throws: " << k);
        latest_slot<fragile> slot;
        push_status status{};
        bool threw = false;
        {
            arm_fragile arm(k);
            try {
                status = slot.push(fragile{1});
            } catch (const fragile_error&) {
                threw = true;
            }
        }
        if (threw) {
            ++throws;
            CHECK(same_counts(slot.stats(), channel_stats{}));
            CHECK(slot.size() == 0);
            CHECK_FALSE(slot.try_pop().has_value());
        } else {
            succeeded = true;
            CHECK(status == push_status::ok);
        }
        // Whatever happened, the slot is still fully usable.
        CHECK(slot.push(fragile{2}) == (threw ? push_status::ok : push_status::evicted));
        const auto got = slot.try_pop();
        REQUIRE(got.has_value());
        CHECK(got->value() == 2);
        check_identity(slot.stats());
    }
    CHECK(throws >= 1);
    CHECK(succeeded);
    CHECK(fragile_ctl().alive == 0);
}

TEST_CASE("latest_slot: push replacing a value whose move throws leaves the old value (strong)") {
    // Documented: the new value is built in a private buffer before anything is published, so a
    // move that throws leaves the slot, its value and its counts exactly as they were.
    REQUIRE(fragile_ctl().alive == 0);
    int throws = 0;
    bool succeeded = false;
    for (int k = 1; k <= 16 && !succeeded; ++k) {
        INFO("the move that throws: " << k);
        latest_slot<fragile> slot;
        REQUIRE(slot.push(fragile{1}) == push_status::ok);
        const channel_stats before = slot.stats();
        push_status status{};
        bool threw = false;
        {
            arm_fragile arm(k);
            try {
                status = slot.push(fragile{2});
            } catch (const fragile_error&) {
                threw = true;
            }
        }
        const channel_stats after = slot.stats();
        check_identity(after);
        if (!threw) {
            succeeded = true;
            CHECK(status == push_status::evicted);
            CHECK(after.evicted == 1);
            CHECK(after.pushed == 2);
            const auto got = slot.try_pop();
            REQUIRE(got.has_value());
            CHECK(got->value() == 2);
            continue;
        }
        ++throws;
        // Nothing changed: not stored, not counted, the old value neither evicted nor moved.
        CHECK(same_counts(after, before));
        CHECK(slot.size() == 1);
        CHECK(fragile_ctl().alive == 1);
        const auto seen = slot.peek();
        REQUIRE(seen.has_value());
        CHECK(seen->value() == 1);
        // Still usable afterwards: the next push replaces the old value.
        CHECK(slot.push(fragile{3}) == push_status::evicted);
        const auto next = slot.try_pop();
        REQUIRE(next.has_value());
        CHECK(next->value() == 3);
        check_identity(slot.stats());
    }
    CHECK(throws >= 1);
    CHECK(succeeded);
    CHECK(fragile_ctl().alive == 0);
}

namespace {

// Each pop flavour, for the strong-guarantee sweep below.
template <class Pop>
void check_pop_strong_guarantee(Pop pop) {
    REQUIRE(fragile_ctl().alive == 0);
    int throws = 0;
    bool succeeded = false;
    for (int k = 1; k <= 16 && !succeeded; ++k) {
        INFO("the move that throws: " << k);
        latest_slot<fragile> slot;
        REQUIRE(slot.push(fragile{5}) == push_status::ok);
        const channel_stats before = slot.stats();
        bool threw = false;
        bool got = false;
        int value = -1;
        {
            arm_fragile arm(k);
            try {
                const std::optional<fragile> r = pop(slot);
                fragile_ctl().moves_until_throw = 0; // nothing the test does below may throw
                got = r.has_value();
                value = got ? r->value() : -1;
            } catch (const fragile_error&) {
                threw = true;
            }
        }
        if (threw) {
            ++throws;
            // Strong: the value is still there and no counter moved.
            CHECK(same_counts(slot.stats(), before));
            CHECK(slot.size() == 1);
            const auto seen = slot.peek();
            REQUIRE(seen.has_value());
            CHECK(seen->value() == 5);
            const auto again = slot.try_pop();
            REQUIRE(again.has_value());
            CHECK(again->value() == 5);
        } else {
            succeeded = true;
            REQUIRE(got);
            CHECK(value == 5);
            CHECK(slot.stats().popped == 1);
            CHECK(slot.size() == 0);
        }
        check_identity(slot.stats());
    }
    CHECK(throws >= 1);
    CHECK(succeeded);
    CHECK(fragile_ctl().alive == 0);
}

} // namespace

TEST_CASE("latest_slot: try_pop whose move throws leaves the value in place (strong)") {
    check_pop_strong_guarantee([](latest_slot<fragile>& s) { return s.try_pop(); });
}

TEST_CASE("latest_slot: pop whose move throws leaves the value in place (strong)") {
    check_pop_strong_guarantee([](latest_slot<fragile>& s) { return s.pop(); });
}

TEST_CASE("latest_slot: pop(stop) whose move throws leaves the value in place (strong)") {
    std::stop_source source;
    check_pop_strong_guarantee(
        [&](latest_slot<fragile>& s) { return s.pop(source.get_token()); });
}

TEST_CASE("latest_slot: pop_for whose move throws leaves the value in place (strong)") {
    check_pop_strong_guarantee([](latest_slot<fragile>& s) { return s.pop_for(1ms); });
    std::stop_source source;
    check_pop_strong_guarantee(
        [&](latest_slot<fragile>& s) { return s.pop_for(1ms, source.get_token()); });
}

TEST_CASE("latest_slot: peek whose copy throws leaves the slot unchanged (strong)") {
    lifetime_scope scope;
    {
        latest_slot<counted> slot;
        CHECK(slot.push(counted{3}) == push_status::ok);
        const channel_stats before = slot.stats();
        scope.counters.throw_on_copy = true;
        CHECK_THROWS_AS(slot.peek(), framepipe_test::counted_error);
        scope.counters.throw_on_copy = false;
        CHECK(same_counts(slot.stats(), before));
        CHECK(slot.size() == 1);
        CHECK(scope.counters.alive() == 1);
        const auto seen = slot.peek();
        REQUIRE(seen.has_value());
        CHECK(seen->value() == 3);
        const auto got = slot.try_pop();
        REQUIRE(got.has_value());
        CHECK(got->value() == 3);
    }
    CHECK(scope.counters.alive() == 0);
}

// --- Freshness and concurrency ---

TEST_CASE("latest_slot: freshness, a stalled consumer gets the newest of 1..N") {
    constexpr int n = 1000;
    latest_slot<int> slot;
    std::latch first_taken(1);
    std::latch producer_done(1);
    std::vector<push_status> statuses;
    std::optional<int> first;
    std::optional<int> newest;
    std::optional<int> after;

    std::thread consumer([&] {
        first = slot.pop();
        first_taken.count_down();
        producer_done.wait(); // stalled while the producer runs ahead
        newest = slot.pop();
        after = slot.try_pop();
    });
    std::thread producer([&] {
        (void)slot.push(0);
        first_taken.wait();
        for (int i = 1; i <= n; ++i) {
            statuses.push_back(slot.push(i));
        }
        producer_done.count_down();
    });
    producer.join();
    consumer.join();

    CHECK(first == std::optional<int>(0));
    CHECK(newest == std::optional<int>(n));
    CHECK_FALSE(after.has_value());
    REQUIRE(statuses.size() == static_cast<std::size_t>(n));
    CHECK(statuses.front() == push_status::ok);
    std::size_t evictions = 0;
    for (const push_status st : statuses) {
        evictions += st == push_status::evicted ? 1U : 0U;
    }
    CHECK(evictions == static_cast<std::size_t>(n - 1));
    const channel_stats s = slot.stats();
    CHECK(s.pushed == static_cast<std::uint64_t>(n + 1));
    CHECK(s.popped == 2);
    CHECK(s.evicted == static_cast<std::uint64_t>(n - 1));
    check_identity(s);
}

TEST_CASE("latest_slot: stress, producers and consumers with close during traffic") {
    constexpr int producers = 3;
    constexpr int consumers = 3;
    constexpr std::uint64_t close_after = 30'000; // pushes seen before close()
    constexpr int closed_pushes = 8;             // pushes per producer after its first closed
    constexpr int seq_limit = 300'000;           // per producer, in case close() never lands
    constexpr int producer_stride = 1 << 24;     // value = producer * stride + seq

    lifetime_scope scope;
    std::vector<std::vector<push_status>> statuses(producers);
    std::vector<std::vector<int>> received(consumers);
    std::atomic<int> bound_violations{0};
    {
        latest_slot<counted> slot;
        std::latch start(producers + consumers + 1);
        std::stop_source never_stopped;

        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                std::minstd_rand rng(static_cast<std::minstd_rand::result_type>(p + 1));
                std::vector<push_status>& mine = statuses[static_cast<std::size_t>(p)];
                start.arrive_and_wait();
                int closed_seen = 0;
                for (int seq = 0; seq < seq_limit; ++seq) {
                    // Pauses let consumers in; without them a producer runs far ahead.
                    if (rng() % 4 == 0) {
                        std::this_thread::sleep_for(std::chrono::microseconds(1 + rng() % 4));
                    }
                    const push_status st = (seq % 2 == 0)
                        ? slot.push(counted{p * producer_stride + seq})
                        : slot.push(counted{p * producer_stride + seq}, never_stopped.get_token());
                    mine.push_back(st);
                    if (st == push_status::closed && ++closed_seen > closed_pushes) {
                        break;
                    }
                }
            });
        }
        for (int c = 0; c < consumers; ++c) {
            threads.emplace_back([&, c] {
                std::minstd_rand rng(static_cast<std::minstd_rand::result_type>(100 + c));
                std::vector<int>& mine = received[static_cast<std::size_t>(c)];
                start.arrive_and_wait();
                for (;;) {
                    if (rng() % 32 == 0) {
                        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 8));
                    }
                    if (slot.size() > 1 || slot.stats().size > 1) {
                        ++bound_violations;
                    }
                    // pop() gives nullopt only once closed and drained; for the others, a slot
                    // that was closed before the call and gave nothing is drained for good.
                    const bool was_closed = slot.closed();
                    const std::optional<counted> v =
                        (c % 3 == 0)   ? slot.pop()
                        : (c % 3 == 1) ? slot.pop_for(1ms, never_stopped.get_token())
                                       : slot.try_pop();
                    if (!v) {
                        if (c % 3 == 0 || was_closed) {
                            break;
                        }
                        std::this_thread::yield();
                        continue;
                    }
                    mine.push_back(v->value());
                }
            });
        }
        start.arrive_and_wait();
        await([&] { return slot.stats().pushed >= close_after; });
        slot.close();
        for (auto& t : threads) {
            t.join();
        }

        // Counters agree with what the producers and consumers saw.
        std::uint64_t pushes = 0;
        std::uint64_t oks = 0;
        std::uint64_t evictions = 0;
        std::uint64_t closeds = 0;
        std::uint64_t others = 0;
        int closed_then_accepted = 0;
        for (const auto& mine : statuses) {
            bool seen_closed = false;
            for (const push_status st : mine) {
                ++pushes;
                switch (st) {
                case push_status::ok: ++oks; break;
                case push_status::evicted: ++evictions; break;
                case push_status::closed: ++closeds; break;
                case push_status::rejected:
                case push_status::cancelled: ++others; break;
                }
                if (st == push_status::closed) {
                    seen_closed = true;
                } else if (seen_closed) {
                    ++closed_then_accepted;
                }
            }
            CHECK(seen_closed); // each producer was still pushing when close() came
        }
        std::uint64_t deliveries = 0;
        for (const auto& mine : received) {
            deliveries += mine.size();
        }
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.pushed == pushes);
        CHECK(s.popped == deliveries);
        CHECK(s.evicted == evictions);
        CHECK(s.after_close == closeds);
        CHECK(s.rejected == 0);
        CHECK(s.cancelled == 0);
        CHECK(s.expired == 0);
        CHECK(s.size == 0); // drained
        CHECK(others == 0);
        CHECK(closed_then_accepted == 0); // once closed, every later push is refused
        // Every accepted value was either delivered or evicted by a later one.
        CHECK(oks + evictions == s.popped + s.evicted);
        CHECK(bound_violations.load() == 0);
    }
    // Every value, delivered, replaced or refused, was destroyed exactly once.
    CHECK(scope.counters.alive() == 0);

    // Per value: delivered at most once, only if accepted, and in increasing order per producer
    // as seen by each consumer (never older than one already received from that producer).
    std::vector<std::vector<char>> delivered(producers);
    for (int p = 0; p < producers; ++p) {
        delivered[static_cast<std::size_t>(p)].assign(
            statuses[static_cast<std::size_t>(p)].size(), 0);
    }
    int bad_values = 0;
    int not_accepted = 0;
    int duplicates = 0;
    int out_of_order = 0;
    std::uint64_t accepted_not_delivered = 0;
    for (const auto& mine : received) {
        std::vector<int> last(producers, -1);
        for (const int v : mine) {
            const int p = v / producer_stride;
            const int seq = v % producer_stride;
            if (v < 0 || p >= producers ||
                static_cast<std::size_t>(seq) >= statuses[static_cast<std::size_t>(p)].size()) {
                ++bad_values;
                continue;
            }
            const auto up = static_cast<std::size_t>(p);
            const auto useq = static_cast<std::size_t>(seq);
            if (!accepted(statuses[up][useq])) {
                ++not_accepted;
            }
            if (delivered[up][useq] != 0) {
                ++duplicates;
            }
            delivered[up][useq] = 1;
            if (seq <= last[up]) {
                ++out_of_order;
            }
            last[up] = seq;
        }
    }
    for (std::size_t p = 0; p < delivered.size(); ++p) {
        for (std::size_t i = 0; i < delivered[p].size(); ++i) {
            if (accepted(statuses[p][i]) && delivered[p][i] == 0) {
                ++accepted_not_delivered;
            }
        }
    }
    CHECK(bad_values == 0);
    CHECK(not_accepted == 0);
    CHECK(duplicates == 0);
    CHECK(out_of_order == 0);
    // Exactly the evicted values are the accepted ones nobody received.
    std::uint64_t evicted_statuses = 0;
    for (const auto& mine : statuses) {
        for (const push_status st : mine) {
            evicted_statuses += st == push_status::evicted ? 1U : 0U;
        }
    }
    CHECK(accepted_not_delivered == evicted_statuses);
}

// --- Lock-free hand-off: races the mutex version could not have ---

TEST_CASE("latest_slot: a push racing close is either refused or delivered, never stranded") {
    // One push and one close() race, round after round, while a consumer pops until nullopt.
    // An accepted value must reach the consumer: the consumer may not conclude "closed and
    // drained" while a push that began before close() is still storing its value.
    constexpr int rounds = 2000;
    int delivered = 0;
    int refused = 0;
    int lost = 0;
    for (int round = 0; round < rounds; ++round) {
        latest_slot<int> slot;
        std::latch go(3);
        push_status status{};
        std::vector<int> got;
        std::thread producer([&] {
            go.arrive_and_wait();
            status = slot.push(round);
        });
        std::thread consumer([&] {
            go.arrive_and_wait();
            while (const auto v = slot.pop()) {
                got.push_back(*v);
            }
        });
        go.arrive_and_wait();
        slot.close();
        producer.join();
        consumer.join();
        const channel_stats s = slot.stats();
        check_identity(s);
        if (status == push_status::closed) {
            ++refused;
            lost += got.empty() ? 0 : 1; // nothing may be delivered after a refusal
            CHECK(s.after_close == 1);
        } else {
            ++delivered;
            lost += (got.size() == 1 && got[0] == round) ? 0 : 1;
            CHECK(s.popped == 1);
        }
        CHECK(s.size == 0);
    }
    CHECK(lost == 0);
    CHECK(delivered + refused == rounds);
}

TEST_CASE("latest_slot: blocking ping-pong through two slots loses no wake-up") {
    // Each side parks in a blocking pop until the other side pushes. A lost wake-up would hang
    // this test (and ctest's timeout would report it). Every flavour of blocking pop is used.
    constexpr int rounds = 3000;
    latest_slot<int> there;
    latest_slot<int> back;
    std::stop_source never;
    std::thread partner([&] {
        for (int i = 0; i < rounds; ++i) {
            std::optional<int> v;
            switch (i % 3) {
            case 0: v = there.pop(); break;
            case 1: v = there.pop(never.get_token()); break;
            default: v = there.pop_for(std::chrono::hours(1), never.get_token()); break;
            }
            // No assertion in this thread (Catch2 v2 assertions are not thread-safe): a missing
            // value is passed on as -1, which the main thread counts as a mismatch.
            (void)back.push(v ? *v + 1 : -1);
        }
    });
    int mismatches = 0;
    for (int i = 0; i < rounds; ++i) {
        CHECK(there.push(2 * i) == push_status::ok);
        const std::optional<int> v = (i % 2 == 0) ? back.pop() : back.pop_for(std::chrono::hours(1));
        mismatches += (v == std::optional<int>(2 * i + 1)) ? 0 : 1;
    }
    partner.join();
    CHECK(mismatches == 0);
    CHECK(there.stats().popped == static_cast<std::uint64_t>(rounds));
    CHECK(back.stats().popped == static_cast<std::uint64_t>(rounds));
    CHECK(there.stats().evicted == 0); // each value was taken before the next was pushed
}

TEST_CASE("latest_slot: stop requested while consumers park ends every wait, counts exact") {
    constexpr int rounds = 300;
    for (int round = 0; round < rounds; ++round) {
        latest_slot<int> slot;
        std::stop_source stop;
        std::latch started(3);
        std::atomic<int> values{0};
        auto consume = [&](bool timed) {
            started.count_down();
            for (;;) {
                const auto v = timed ? slot.pop_for(std::chrono::hours(1), stop.get_token())
                                     : slot.pop(stop.get_token());
                if (!v) {
                    return; // only a stop ends these waits (the slot is never closed)
                }
                ++values;
            }
        };
        std::thread a(consume, false);
        std::thread b(consume, true);
        started.arrive_and_wait();
        if (round % 2 == 0) {
            (void)slot.push(round); // sometimes a value races the stop
        }
        stop.request_stop();
        a.join();
        b.join();
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.popped == static_cast<std::uint64_t>(values.load()));
        CHECK(s.popped + s.size == (round % 2 == 0 ? 1U : 0U));
        CHECK_FALSE(slot.closed());
    }
}

TEST_CASE("latest_slot: stress, pop_for timeouts and peeks while producers push") {
    // Two producers (so the second one often takes the overflow path), a consumer polling with
    // short timeouts, and a monitor that peeks. Every pushed value is accounted for exactly once
    // and every value seen is one that was pushed, never older than one already taken.
    constexpr int per_producer = 20'000;
    lifetime_scope scope;
    {
        latest_slot<counted> slot;
        std::atomic<int> producers_done{0};
        std::vector<push_status> statuses[2];
        std::vector<int> received;
        std::atomic<int> bad_peeks{0};
        std::latch start(4);
        std::vector<std::thread> threads;
        for (int p = 0; p < 2; ++p) {
            threads.emplace_back([&, p] {
                start.arrive_and_wait();
                for (int i = 0; i < per_producer; ++i) {
                    statuses[p].push_back(slot.push(counted{p * per_producer + i}));
                }
                ++producers_done;
            });
        }
        threads.emplace_back([&] {
            start.arrive_and_wait();
            while (producers_done.load() < 2 || slot.size() > 0) {
                if (const auto v = slot.pop_for(std::chrono::microseconds(50))) {
                    received.push_back(v->value());
                }
            }
        });
        threads.emplace_back([&] {
            start.arrive_and_wait();
            while (producers_done.load() < 2) {
                if (const auto v = slot.peek()) {
                    if (v->value() < 0 || v->value() >= 2 * per_producer) {
                        ++bad_peeks;
                    }
                }
            }
        });
        for (auto& t : threads) {
            t.join();
        }
        // Nothing should be left; take it if it is, so the counts below still add up.
        while (const auto v = slot.try_pop()) {
            received.push_back(v->value());
        }
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.pushed == 2U * per_producer);
        CHECK(s.popped == received.size());
        CHECK(s.size == 0);
        CHECK(s.after_close == 0);
        CHECK(s.expired == 0);
        CHECK(bad_peeks.load() == 0);
        // Per producer, values arrive in increasing order and at most once.
        int out_of_order = 0;
        int last[2] = {-1, -1};
        for (const int v : received) {
            const int p = v / per_producer;
            const int seq = v % per_producer;
            out_of_order += seq <= last[p] ? 1 : 0;
            last[p] = seq;
        }
        CHECK(out_of_order == 0);
        // Peeks take nothing away: the evictions counted are exactly those pushes reported.
        std::uint64_t evicted_statuses = 0;
        for (const auto& mine : statuses) {
            for (const push_status st : mine) {
                evicted_statuses += st == push_status::evicted ? 1U : 0U;
            }
        }
        CHECK(evicted_statuses == s.evicted);
    }
    CHECK(scope.counters.alive() == 0);
}

// --- The cached-buffer path and the overflow path, each forced ---
//
// A call owns one empty buffer while it runs: its side's cached buffer, or, when another thread
// of its side holds that one, the overflow spare under a mutex. The tests below hold a side's
// cached buffer for as long as they like, with a value whose move blocks until it is let go: a
// push that blocks in the move into its buffer holds the producers' cached buffer; a pop that
// blocks in the move out of the buffer it took holds the consumers' one. Every other call of that
// side meanwhile must take the overflow path, and must be correct on its own.

namespace {

struct gate_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Lets one move block (until release()) or throw. Where in a value's life that happens is set per
// value: the n-th move of the value (counting the moves along its chain of moved-to objects)
// blocks when block_at == n, throws when throw_at == n. With throw_on_release set, the first
// blocked move to be let go throws instead of going on.
struct gate {
    std::atomic<int> inside{0};  // moves blocked right now
    std::atomic<bool> open{false};
    std::atomic<bool> throw_on_release{false};
    std::atomic<std::int64_t> alive{0};

    void wait_until_inside(int n) const {
        for (int now = inside.load(); now < n; now = inside.load()) {
            inside.wait(now); // woken by the blocked move's notify_all
        }
    }
    void release() {
        open.store(true);
        open.notify_all();
    }
    // The calling thread waits here, counted in `inside`, until release().
    void hold() {
        inside.fetch_add(1);
        inside.notify_all();
        while (!open.load()) {
            open.wait(false);
        }
        inside.fetch_sub(1);
        if (throw_on_release.exchange(false)) {
            throw gate_error("move, let go");
        }
    }
};

gate& the_gate() {
    static gate g;
    return g;
}

class gated {
public:
    explicit gated(int v, int block_at = 0, int throw_at = 0)
        : value_(v), block_at_(block_at), throw_at_(throw_at) {
        ++the_gate().alive;
    }
    gated(gated&& o) : value_(o.value_), block_at_(o.block_at_), throw_at_(o.throw_at_) {
        moves_ = o.moves_ + 1;
        if (moves_ == throw_at_) {
            throw gate_error("move");
        }
        if (moves_ == block_at_) {
            the_gate().hold();
        }
        ++the_gate().alive;
    }
    gated(const gated&) = delete;
    gated& operator=(const gated&) = delete;
    gated& operator=(gated&&) = delete;
    ~gated() { --the_gate().alive; }

    [[nodiscard]] int value() const noexcept { return value_; }

private:
    int value_;
    int block_at_;
    int throw_at_;
    int moves_ = 0;
};

// Resets the gate at the start and end of a test.
struct gate_scope {
    gate_scope() { reset(); }
    ~gate_scope() { reset(); }
    gate_scope(const gate_scope&) = delete;
    gate_scope& operator=(const gate_scope&) = delete;
    static void reset() {
        the_gate().inside.store(0);
        the_gate().open.store(false);
        the_gate().throw_on_release.store(false);
    }
};

} // namespace

TEST_CASE("latest_slot: pushes while another producer holds the cached buffer (overflow path)") {
    // push(T) moves its argument once, into its buffer: block_at 1 blocks there, before the
    // value is published, while that push holds the producers' cached buffer.
    const gate_scope scope;
    REQUIRE(the_gate().alive.load() == 0);
    {
        latest_slot<gated> slot;
        push_status blocked_status{};
        std::thread blocked([&] { blocked_status = slot.push(gated{100, 1}); });
        the_gate().wait_until_inside(1);

        // The overflow path: stores, replaces, counts.
        CHECK(slot.push(gated{1}) == push_status::ok);
        CHECK(slot.size() == 1);
        CHECK(slot.push(gated{2}) == push_status::evicted);
        // Strong on the overflow path too: a throwing move changes nothing, and the spare
        // buffer it had claimed stays usable.
        const channel_stats before = slot.stats();
        CHECK_THROWS_AS(slot.push(gated{3, 0, 1}), gate_error);
        CHECK(same_counts(slot.stats(), before));
        {
            const auto got = slot.try_pop(); // the value from before the throw
            REQUIRE(got.has_value());
            CHECK(got->value() == 2);
        }
        CHECK(slot.push(gated{4}) == push_status::ok);

        // The blocked push finishes after all of these: it replaces 4.
        the_gate().release();
        blocked.join();
        CHECK(blocked_status == push_status::evicted);
        const auto last = slot.try_pop();
        REQUIRE(last.has_value());
        CHECK(last->value() == 100);

        // And the cached path works again afterwards.
        CHECK(slot.push(gated{5}) == push_status::ok);
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.pushed == 5); // 1, 2, 4, 100, 5 (the throwing push is not counted)
        CHECK(s.popped == 2);
        CHECK(s.evicted == 2); // 1 by 2, 4 by 100
        CHECK(s.size == 1);
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: pops while another consumer holds the cached buffer (overflow path)") {
    // A value moves once into its buffer (push) and once out of it (pop): block_at 2 blocks a
    // pop after it has taken the value out of the slot, while it holds the consumers' cached
    // buffer.
    const gate_scope scope;
    REQUIRE(the_gate().alive.load() == 0);
    {
        latest_slot<gated> slot;
        REQUIRE(slot.push(gated{100, 2}) == push_status::ok);
        int blocked_value = -1;
        std::thread blocked([&] {
            const auto v = slot.pop();
            blocked_value = v ? v->value() : -2;
        });
        the_gate().wait_until_inside(1);
        CHECK(slot.size() == 0); // the blocked pop has taken it out of the slot

        // The overflow path: takes a value, finds an empty slot.
        CHECK(slot.push(gated{1}) == push_status::ok);
        {
            const auto got = slot.try_pop();
            REQUIRE(got.has_value());
            CHECK(got->value() == 1);
        }
        CHECK_FALSE(slot.try_pop().has_value());
        // Strong on the overflow path: a move out that throws puts the value back.
        CHECK(slot.push(gated{2, 0, 2}) == push_status::ok);
        const channel_stats before = slot.stats();
        CHECK_THROWS_AS(slot.try_pop(), gate_error);
        CHECK(same_counts(slot.stats(), before));
        CHECK(slot.size() == 1);
        // (That value would throw again; a newer one replaces it, and is taken through the
        // spare buffer the failed pop handed back.)
        CHECK(slot.push(gated{3}) == push_status::evicted);
        {
            const auto got = slot.pop_for(std::chrono::hours(1));
            REQUIRE(got.has_value());
            CHECK(got->value() == 3);
        }

        the_gate().release();
        blocked.join();
        CHECK(blocked_value == 100);
        // And the cached path works again afterwards.
        CHECK(slot.push(gated{4}) == push_status::ok);
        {
            const auto got = slot.try_pop();
            REQUIRE(got.has_value());
            CHECK(got->value() == 4);
        }
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.pushed == 5);  // 100, 1, 2, 3, 4
        CHECK(s.popped == 4);  // 100, 1, 3, 4
        CHECK(s.evicted == 1); // 2 by 3
        CHECK(s.size == 0);
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: close during a push held on the overflow path waits for its value") {
    // A push that has announced itself on the overflow path and is still building its value when
    // close() lands: a blocking pop must not conclude "closed and drained" until it is in.
    const gate_scope scope;
    {
        latest_slot<gated> slot;
        push_status first{};
        push_status second{};
        std::thread on_cached([&] { first = slot.push(gated{1, 1}); });
        the_gate().wait_until_inside(1); // holds the producers' cached buffer
        std::thread on_overflow([&] { second = slot.push(gated{2, 1}); });
        the_gate().wait_until_inside(2); // announced on the overflow path, building its value
        slot.close();
        std::vector<int> got;
        std::thread consumer([&] {
            while (const auto v = slot.pop()) {
                got.push_back(v->value());
            }
        });
        the_gate().release();
        on_cached.join();
        on_overflow.join();
        consumer.join();
        // Both pushes began before close(): both are accepted, and each value is either
        // delivered or replaced by the other one (if the consumer was not quicker).
        CHECK(first != push_status::closed);
        CHECK(second != push_status::closed);
        CHECK(slot.push(gated{3}) == push_status::closed);
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(got.size() + s.evicted == 2);
        CHECK(((first == push_status::evicted) ? 1U : 0U) +
                  ((second == push_status::evicted) ? 1U : 0U) ==
              s.evicted);
        for (const int v : got) {
            CHECK((v == 1 || v == 2));
        }
        CHECK((got.size() < 2 || got[0] != got[1]));
        CHECK(s.pushed == 3);
        CHECK(s.popped == got.size());
        CHECK(s.after_close == 1);
        CHECK(s.size == 0);
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: a closed slot is not drained while a pop whose move throws may put its value back") {
    // A consumer takes the value of a closed slot and is held in its move out (the gate); that
    // move then throws, and the value goes back into the slot. Another consumer's pop(), called
    // while the value is out, must not conclude "closed and drained": the value is coming back.
    // It backs off instead, and lets the held move go at its first back-off (the seam); a pop
    // that concluded "drained" returns nullopt without backing off, and the value comes back to
    // a slot nobody reads.
    const gate_scope scope;
    {
        latest_slot<gated> slot;
        REQUIRE(slot.push(gated{1, 2}) == push_status::ok); // move 1: into the slot's buffer
        slot.close();
        the_gate().throw_on_release.store(true);
        bool threw = false;
        std::thread taker([&] {
            try {
                (void)slot.try_pop(); // move 2, out of the slot: held, then throws
            } catch (const gate_error&) {
                threw = true;
            }
        });
        the_gate().wait_until_inside(1); // the taker holds the value
        const std::function<void()> let_go = [] { the_gate().release(); };
        int got = 0; // the value the other pop returned; -1 for nullopt
        std::thread other([&] {
            framepipe_test::rewait_action = &let_go;
            const std::optional<gated> v = slot.pop();
            framepipe_test::rewait_action = nullptr;
            got = v ? v->value() : -1;
        });
        other.join();
        the_gate().release(); // if the pop returned without backing off
        taker.join();
        CHECK(threw);
        CHECK(got == 1);
        CHECK(slot.size() == 0);
        CHECK_FALSE(slot.pop().has_value()); // closed and drained now
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.popped == 1);
        CHECK(s.evicted == 0);
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: a pop whose move throws does not put back a value older than one taken since") {
    // A consumer takes value 1 and is held in its move out, which then throws. Meanwhile `rounds`
    // newer values are pushed and taken by another consumer. Pushes and pops pass three buffers
    // around (the producers' cached one, the slot's, the consumers' spare), so after every third
    // round the slot names the held pop's empty buffer again, in the very word that pop left. The
    // put-back must still see that the slot was touched: value 1 is dropped (evicted), and never
    // comes after the newer ones.
    const gate_scope scope;
    for (int rounds = 1; rounds <= 7; ++rounds) {
        CAPTURE(rounds);
        {
            latest_slot<gated> slot;
            REQUIRE(slot.push(gated{1, 2}) == push_status::ok); // move 2 (out) is held
            the_gate().throw_on_release.store(true);
            bool threw = false;
            std::thread taker([&] {
                try {
                    (void)slot.try_pop();
                } catch (const gate_error&) {
                    threw = true;
                }
            });
            the_gate().wait_until_inside(1); // the taker holds value 1 and the cached buffer
            for (int i = 0; i < rounds; ++i) {
                REQUIRE(slot.push(gated{10 + i}) == push_status::ok);
                const std::optional<gated> v = slot.try_pop(); // the consumers' spare buffer
                REQUIRE(v.has_value());
                CHECK(v->value() == 10 + i);
            }
            the_gate().release();
            taker.join();
            CHECK(threw);
            const std::optional<gated> after = slot.try_pop();
            CHECK_FALSE(after.has_value()); // value 1 was older than the ones taken since
            const channel_stats s = slot.stats();
            check_identity(s);
            CHECK(s.pushed == static_cast<std::uint64_t>(rounds) + 1);
            CHECK(s.popped == static_cast<std::uint64_t>(rounds));
            CHECK(s.evicted == 1); // value 1, dropped by the failed pop
            gate_scope::reset();
        }
        CHECK(the_gate().alive.load() == 0);
    }
}

namespace {

// A value whose copy can be held at the gate (hold_next_copy), and whose end stays visible: its
// moved-from state reads -1 and its destroyed state -2 (atomics, so that the stores are not
// dropped as dead). A copy made from a value destroyed or moved out meanwhile reads one of those.
class copy_held {
public:
    explicit copy_held(int v) : v_(v) {}
    copy_held(const copy_held& o) {
        if (hold_next_copy.exchange(false)) {
            the_gate().hold();
        }
        v_.store(o.v_.load()); // after the hold: what the source is now
    }
    copy_held(copy_held&& o) noexcept : v_(o.v_.exchange(-1)) {}
    copy_held& operator=(const copy_held&) = delete;
    copy_held& operator=(copy_held&&) = delete;
    ~copy_held() { v_.store(-2); }

    [[nodiscard]] int value() const noexcept { return v_.load(); }

    static inline std::atomic<bool> hold_next_copy{false};

private:
    std::atomic<int> v_;
};

// Opens the gate once thread `watched` sleeps in its backoff (it waits for the held thread, as it
// must) or `done` is set (its call returned without waiting). No timing decides either way.
void open_gate_when_asleep_or_done(const std::atomic<long>& watched, const std::atomic<bool>& done) {
    framepipe_test::wait_until_asleep_or_done(watched, done);
    the_gate().release();
}

} // namespace

TEST_CASE("latest_slot: a value put back and taken again between drained()'s reads is not missed") {
    // A closed slot; pop A holds its value in a move that will throw. Consumer Q's pop() looks
    // at the slot (empty: A has it), and then, at the seam: A's move throws and the value goes
    // back (step 1, before Q reads the pops in flight: none now); pop B takes the value again
    // and is held in its move, which will throw too (step 2, after that read). Q's second look
    // finds the slot empty, as at its first, but B started between its reads: not drained. Q
    // backs off, lets B's move go (it throws, the value goes back), and takes the value. A
    // drained() that did not read the started pops again returned nullopt, and B's put-back
    // left the value in a slot nobody read.
    const gate_scope scope;
    {
        latest_slot<gated> slot;
        REQUIRE(slot.push(gated{1, 2}) == push_status::ok); // each pop's move of it: held
        slot.close();
        the_gate().throw_on_release.store(true);
        std::atomic<int> threw{0};
        const auto pop_held = [&] {
            try {
                (void)slot.try_pop();
            } catch (const gate_error&) {
                threw.fetch_add(1);
            }
        };
        std::thread a(pop_held);
        the_gate().wait_until_inside(1); // A holds the value
        std::thread b;
        const std::function<void(int)> at_step = [&](int step) {
            if (step == 1 && a.joinable()) {
                the_gate().release(); // A's move throws; the value goes back
                a.join();
                the_gate().open.store(false); // B's move is held, and throws, in its turn
                the_gate().throw_on_release.store(true);
            } else if (step == 2 && !b.joinable()) {
                b = std::thread(pop_held);
                the_gate().wait_until_inside(1); // B holds the value
            }
        };
        const std::function<void()> let_go = [] { the_gate().release(); };
        int got = 0; // the value Q's pop() returned; -1 for nullopt
        std::thread q([&] {
            drained_action = &at_step;
            framepipe_test::rewait_action = &let_go;
            const std::optional<gated> v = slot.pop();
            framepipe_test::rewait_action = nullptr;
            drained_action = nullptr;
            got = v ? v->value() : -1;
        });
        q.join();
        the_gate().release(); // if Q's pop returned without backing off
        if (a.joinable()) {
            a.join();
        }
        if (b.joinable()) {
            b.join();
        }
        CHECK(threw.load() == 2);
        CHECK(got == 1);
        CHECK(slot.size() == 0);
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.popped == 1);
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: a second producer never waits for a second consumer, nor the reverse") {
    // Both sides' cached buffers are held (a push and a pop, each blocked in a move: the gate),
    // so the next push and the next pop take the overflow paths; one of those is held too, in
    // its move. The other must go through: each side has a spare and a mutex of its own. With
    // one mutex for both sides, it slept on that mutex until the held move was let go.
    const bool consumer_held = GENERATE(true, false);
    CAPTURE(consumer_held);
    const gate_scope scope;
    {
        latest_slot<gated> slot;
        std::vector<std::thread> held;
        std::atomic<long> last_id{0};
        std::atomic<bool> last_done{false};
        push_status last_pushed{};
        std::optional<int> last_taken;
        std::thread last;
        if (consumer_held) {
            REQUIRE(slot.push(gated{1, 2}) == push_status::ok); // its pop's move blocks
            held.emplace_back([&] { (void)slot.try_pop(); });    // holds the consumers' cache
            the_gate().wait_until_inside(1);
            REQUIRE(slot.push(gated{2, 2}) == push_status::ok);
            held.emplace_back([&] { (void)slot.try_pop(); }); // the consumers' spare, held
            the_gate().wait_until_inside(2);
            held.emplace_back([&] { (void)slot.push(gated{3, 1}); }); // the producers' cache
            the_gate().wait_until_inside(3);
            last = std::thread([&] { // the producers' spare
                last_id.store(framepipe_test::this_thread_id());
                last_pushed = slot.push(gated{4});
                last_done.store(true);
            });
        } else {
            REQUIRE(slot.push(gated{0, 2}) == push_status::ok); // its pop's move blocks
            held.emplace_back([&] { (void)slot.try_pop(); });    // holds the consumers' cache
            the_gate().wait_until_inside(1);
            REQUIRE(slot.push(gated{5}) == push_status::ok); // for the last pop to take
            held.emplace_back([&] { (void)slot.push(gated{1, 1}); }); // the producers' cache
            the_gate().wait_until_inside(2);
            held.emplace_back([&] { (void)slot.push(gated{2, 1}); }); // the producers' spare
            the_gate().wait_until_inside(3);
            last = std::thread([&] { // the consumers' spare
                last_id.store(framepipe_test::this_thread_id());
                if (const auto v = slot.try_pop()) {
                    last_taken = v->value();
                }
                last_done.store(true);
            });
        }
        // Until it returns, or sleeps on a futex inside the slot (the other side's mutex).
        bool can_tell = true;
        while (!last_done.load()) {
            if (const long tid = last_id.load(); tid != 0) {
                const auto parked = framepipe_test::futex_waiting_in(tid, &slot, sizeof slot);
                if (!parked || *parked) {
                    can_tell = parked.has_value();
                    break;
                }
            }
            std::this_thread::yield();
        }
        const bool went_through = last_done.load(); // before any held move is let go
        the_gate().release();
        last.join();
        for (auto& t : held) {
            t.join();
        }
        if (can_tell) {
            CHECK(went_through);
        } else {
            WARN("/proc/self/task/<tid>/syscall unreadable: cannot tell a parked thread");
        }
        if (consumer_held) {
            CHECK(last_pushed == push_status::ok); // the slot was empty: both values were taken
        } else {
            CHECK(last_taken == 5);
        }
        while (slot.try_pop()) {
        }
        check_identity(slot.stats());
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: a push or pop that replaces or takes the value peek() is copying waits for the copy") {
    // peek() is held inside its copy (the gate), pinning the value. A push replacing that value,
    // or a pop taking it, must wait until the copy is done before it destroys or moves the value
    // out: the copy is of the value as it was. The gate opens once that call sleeps waiting (or,
    // if it did not wait, once it returned).
    for (const bool replace : {true, false}) {
        CAPTURE(replace);
        const gate_scope scope;
        latest_slot<copy_held> slot;
        REQUIRE(slot.push(copy_held{1}) == push_status::ok);
        copy_held::hold_next_copy.store(true);
        std::optional<int> seen; // the value peek() copied
        std::thread peeker([&] {
            if (const auto v = slot.peek()) {
                seen = v->value();
            }
        });
        the_gate().wait_until_inside(1);
        std::atomic<long> other_id{0};
        std::atomic<bool> other_done{false};
        push_status pushed{};
        std::optional<int> taken;
        std::thread other([&] {
            other_id.store(framepipe_test::this_thread_id());
            if (replace) {
                pushed = slot.push(copy_held{2});
            } else if (const auto v = slot.try_pop()) {
                taken = v->value();
            }
            other_done.store(true);
        });
        open_gate_when_asleep_or_done(other_id, other_done);
        other.join();
        peeker.join();
        CHECK(seen == 1);
        if (replace) {
            CHECK(pushed == push_status::evicted);
            const auto got = slot.try_pop();
            REQUIRE(got.has_value());
            CHECK(got->value() == 2);
        } else {
            CHECK(taken == 1);
            CHECK(slot.size() == 0);
        }
    }
}

TEST_CASE("latest_slot: a peek() whose value is taken or replaced before its pin copies nothing stale") {
    // peek() is held after it read the slot and before it pins the buffer it read; a pop takes
    // that value, or a push replaces it, meanwhile (neither waits: there is no pin yet). The
    // peek's re-check must then see the slot changed and look again: after the pop it finds
    // nothing, after the push the new value. A peek that copied without the re-check would copy
    // a value moved out and destroyed.
    const gate_scope scope;
    for (const bool replace : {false, true}) {
        CAPTURE(replace);
        latest_slot<copy_held> slot;
        REQUIRE(slot.push(copy_held{1}) == push_status::ok);
        peek_pin_seam.arm(0); // held until the pop or push below has returned
        std::optional<int> seen;
        std::thread peeker([&] {
            if (const auto v = slot.peek()) {
                seen = v->value();
            }
        });
        while (peek_pin_seam.reached.load() == 0) {
            std::this_thread::yield();
        }
        if (replace) {
            CHECK(slot.push(copy_held{2}) == push_status::evicted);
        } else {
            const auto got = slot.try_pop();
            REQUIRE(got.has_value());
            CHECK(got->value() == 1);
        }
        peek_pin_seam.go.store(true);
        peeker.join();
        peek_pin_seam.reached.store(0);
        if (replace) {
            CHECK(seen == 2);
        } else {
            CHECK_FALSE(seen.has_value());
        }
    }
}

TEST_CASE("latest_slot: a pop that sees close() waits for a push that found the slot open") {
    // The push is held building its value (the gate), after its check of close(); close() and a
    // blocking pop come meanwhile. The pop may not conclude "closed and drained" while that push
    // is in flight: it waits (sleeping in its backoff, which opens the gate) and gets the value.
    const gate_scope scope;
    {
        latest_slot<gated> slot;
        push_status pushed{};
        std::thread producer([&] { pushed = slot.push(gated{5, 1}); });
        the_gate().wait_until_inside(1); // on the cached path, past its check of closed_
        slot.close();
        std::atomic<long> consumer_id{framepipe_test::this_thread_id()};
        std::atomic<bool> popped{false};
        std::thread opener([&] { open_gate_when_asleep_or_done(consumer_id, popped); });
        const std::optional<gated> got = slot.pop();
        popped.store(true);
        opener.join();
        producer.join();
        CHECK(pushed == push_status::ok);
        REQUIRE(got.has_value());
        CHECK(got->value() == 5);
        CHECK_FALSE(slot.try_pop().has_value());
        const channel_stats s = slot.stats();
        check_identity(s);
        CHECK(s.popped == 1);
    }
    CHECK(the_gate().alive.load() == 0);
}

TEST_CASE("latest_slot: stress, two producers and two consumers flat out, no pauses") {
    // Both sides of the slot used by two threads at once, with nothing to slow them down: calls
    // on the cached buffers and on the overflow spare race each other all the time. Every value
    // is accounted for exactly once; each consumer sees each producer's values in order.
    constexpr int per_producer = 40'000;
    lifetime_scope scope;
    std::vector<push_status> statuses[2];
    std::vector<int> received[2];
    {
        latest_slot<counted> slot;
        std::stop_source never_stopped;
        std::latch start(5);
        std::vector<std::thread> producers;
        for (int p = 0; p < 2; ++p) {
            producers.emplace_back([&, p] {
                start.arrive_and_wait();
                for (int i = 0; i < per_producer; ++i) {
                    const int v = p * per_producer + i;
                    statuses[p].push_back(i % 2 == 0
                                              ? slot.push(counted{v})
                                              : slot.push(counted{v}, never_stopped.get_token()));
                }
            });
        }
        std::vector<std::thread> consumers;
        consumers.emplace_back([&] {
            start.arrive_and_wait();
            while (const auto v = slot.pop()) {
                received[0].push_back(v->value());
            }
        });
        consumers.emplace_back([&] {
            start.arrive_and_wait();
            for (;;) {
                // Closed only after both producers returned: closed and empty is drained.
                const bool was_closed = slot.closed();
                if (const auto v = slot.try_pop()) {
                    received[1].push_back(v->value());
                } else if (was_closed) {
                    break;
                }
            }
        });
        start.arrive_and_wait();
        for (auto& t : producers) {
            t.join();
        }
        slot.close();
        for (auto& t : consumers) {
            t.join();
        }

        const channel_stats s = slot.stats();
        check_identity(s);
        std::uint64_t evicted_statuses = 0;
        std::uint64_t other_statuses = 0;
        for (const auto& mine : statuses) {
            for (const push_status st : mine) {
                evicted_statuses += st == push_status::evicted ? 1U : 0U;
                other_statuses += st == push_status::ok || st == push_status::evicted ? 0U : 1U;
            }
        }
        CHECK(other_statuses == 0);
        CHECK(s.pushed == 2U * per_producer);
        CHECK(s.popped == received[0].size() + received[1].size());
        CHECK(s.evicted == evicted_statuses);
        CHECK(s.after_close == 0);
        CHECK(s.size == 0);
    }
    CHECK(scope.counters.alive() == 0);

    std::vector<char> seen(2U * per_producer, 0);
    int bad = 0;
    int duplicates = 0;
    int out_of_order = 0;
    std::size_t delivered = 0;
    for (const auto& mine : received) {
        int last[2] = {-1, -1};
        for (const int v : mine) {
            if (v < 0 || v >= 2 * per_producer) {
                ++bad;
                continue;
            }
            const int p = v / per_producer;
            const int seq = v % per_producer;
            duplicates += seen[static_cast<std::size_t>(v)] != 0 ? 1 : 0;
            seen[static_cast<std::size_t>(v)] = 1;
            out_of_order += seq <= last[p] ? 1 : 0;
            last[p] = seq;
            ++delivered;
        }
    }
    CHECK(bad == 0);
    CHECK(duplicates == 0);
    CHECK(out_of_order == 0);
    // A value was delivered exactly when its push did not report it replaced later: the pushes
    // that returned evicted account for exactly the values nobody received.
    std::uint64_t evicted_statuses = 0;
    for (const auto& mine : statuses) {
        for (const push_status st : mine) {
            evicted_statuses += st == push_status::evicted ? 1U : 0U;
        }
    }
    CHECK(delivered + evicted_statuses == 2U * per_producer);
}

TEST_CASE("latest_slot: try_push is push (a slot never waits); policy() is drop_oldest") {
    framepipe::latest_slot<int> s;
    CHECK(s.policy() == framepipe::overflow::drop_oldest);
    CHECK(s.try_push(1) == framepipe::push_status::ok);
    CHECK(s.try_push(2) == framepipe::push_status::evicted);
    CHECK(s.try_pop() == 2);
    s.close();
    CHECK(s.try_push(3) == framepipe::push_status::closed);
    const auto st = s.stats();
    CHECK(st.pushed == 3);
    CHECK(st.evicted == 1);
    CHECK(st.after_close == 1);
    static_assert(noexcept(s.push(1)));
    static_assert(noexcept(s.try_pop()));
    CHECK(framepipe::detail::describe_channel(s).kind == "latest_slot");
}

TEST_CASE("latest_slot: a push whose move throws leaves drop_older_epochs as it was") {
    // Its epoch used to count as pushed: every later value of the older epoch was refused,
    // though no value of the newer one had entered.
    lifetime_scope scope;
    using item = stamped<counted>;
    latest_slot<item> s({.drop_older_epochs = true});
    const auto at = clock_type::now();
    const item newer = stamp(counted(1), 0, at, 5);
    scope.counters.throw_on_move = true; // the copy into push()'s argument works; its store not
    CHECK_THROWS_AS(s.push(newer), framepipe_test::counted_error);
    scope.counters.throw_on_move = false;
    CHECK(s.push(stamp(counted(2), 1, at, 4)) == push_status::ok);
    CHECK(s.push(stamp(counted(3), 2, at, 5)) == push_status::evicted);
    CHECK(s.push(stamp(counted(4), 3, at, 4)) == push_status::rejected); // a real 5 came first
}

TEST_CASE("latest_slot: drop_older_epochs keeps a late value from before a reconnect out") {
    using item = framepipe::stamped<int>;
    framepipe::latest_slot<item> s({.drop_older_epochs = true});
    const auto at = std::chrono::steady_clock::now();
    CHECK(s.push(framepipe::stamp(1, 0, at, 1)) == framepipe::push_status::ok);
    CHECK(s.push(framepipe::stamp(2, 1, at, 2)) == framepipe::push_status::evicted);
    // A late value of epoch 1 would replace the newer one: refused instead.
    CHECK(s.push(framepipe::stamp(3, 2, at, 1)) == framepipe::push_status::rejected);
    auto v = s.try_pop();
    REQUIRE(v.has_value());
    CHECK(v->value == 2);
    const auto st = s.stats();
    CHECK(st.pushed == 3);
    CHECK(st.rejected == 1);
    CHECK(st.pushed == st.popped + st.dropped + st.size);
    CHECK_THROWS_WITH(framepipe::latest_slot<int>({.drop_older_epochs = true}),
                      Catch::Contains("drop_older_epochs"));
}

TEST_CASE("latest_slot: pop_for and max_age take any duration; coarse max() means no limit") {
    latest_slot<int> slot;
    CHECK(slot.push(7) == push_status::ok);
    CHECK(slot.pop_for(std::chrono::seconds::max()) == std::optional<int>(7));
    CHECK(slot.push(8) == push_status::ok);
    CHECK(slot.pop_for(std::chrono::hours::max()) == std::optional<int>(8));
    std::stop_source stop;
    stop.request_stop();
    CHECK_FALSE(slot.pop_for(std::chrono::hours::max(), stop.get_token()).has_value());
    CHECK_THROWS_WITH(slot.pop_for(std::chrono::hours::min()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(slot.pop_for(-1s, stop.get_token()), Catch::Contains("timeout"));

    latest_slot<stamped<int>> ageless(std::chrono::hours::max()); // no age limit
    CHECK(ageless.push(stale(3)) == push_status::ok);
    const auto got = ageless.pop_for(std::chrono::seconds::max());
    REQUIRE(got.has_value());
    CHECK(got->value == 3);
    CHECK_THROWS_WITH(latest_slot<stamped<int>>(std::chrono::hours::min()),
                      Catch::Contains("max_age"));
}

TEST_CASE("latest_slot: a NaN timeout or max_age throws std::invalid_argument naming it") {
    latest_slot<int> slot;
    std::stop_source never;
    const auto nan = std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_WITH(slot.pop_for(nan), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(slot.pop_for(nan, never.get_token()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(latest_slot<stamped<int>>(nan), Catch::Contains("max_age"));
}
