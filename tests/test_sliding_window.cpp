// tests/test_sliding_window.cpp - framepipe::sliding_window<T> and framepipe::window<T>.
//
// The contract under test is the comment block of include/framepipe/sliding_window.hpp: windows
// end at seqs size-1, size-1+stride, ...; a slow consumer gets the newest ready window and the
// overtaken ones are counted as dropped; ready == popped + dropped + size; windows are immutable,
// shared snapshots; bounded memory; exception guarantees; close semantics; thread safety.

// Test seams (detail/config.hpp), defined before any framepipe header: the thread-local actions
// of support/thread_hooks.hpp, run after a pop's wait returned ready and where a pop that found
// no window is about to wait again. Unset, nothing.
#include "support/thread_hooks.hpp"
#define FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK()                                                        \
    ::framepipe_test::run_hook(::framepipe_test::after_wait_action)
#define FRAMEPIPE_DETAIL_REWAIT_HOOK() ::framepipe_test::run_hook(::framepipe_test::rewait_action)

#include <framepipe/ring.hpp>
#include <framepipe/sliding_window.hpp>
#include <framepipe/stamped.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/allocation_counter.hpp"
#include "support/lifetime.hpp"
#if defined(__linux__)
#include "support/parked_threads.hpp"
#include "support/rounds_after_end.hpp"
#include "support/thread_state.hpp"
#endif

namespace {

using framepipe::push_status;
using framepipe::sliding_window;
using framepipe::window;
using framepipe_test::counted;
using framepipe_test::counted_error;
using framepipe_test::lifetime_scope;
using namespace std::chrono_literals;

// True when a window ends at `seq`: size-1, size-1+stride, size-1+2*stride, ...
bool ends_window(std::uint64_t seq, std::size_t size, std::size_t stride) {
    return seq + 1 >= size && (seq + 1 - size) % stride == 0;
}

// Number of windows that become ready after `pushed` items.
std::uint64_t expected_ready(std::uint64_t pushed, std::size_t size, std::size_t stride) {
    return pushed < size ? 0 : (pushed - size) / stride + 1;
}

// The counters as one flat record: windows from stats() (a channel_stats in windows), items
// from item_stats().
struct window_counts {
    std::uint64_t pushed = 0;      // items accepted
    std::uint64_t after_close = 0; // items refused after close
    std::uint64_t ready = 0;       // windows that became ready (stats().pushed)
    std::uint64_t popped = 0;      // windows taken
    std::uint64_t dropped = 0;     // windows overtaken (stats().evicted)
    std::uint64_t size = 0;        // ready windows waiting (0 or 1)
};

template <class T>
window_counts counts(const sliding_window<T>& w) {
    const framepipe::channel_stats s = w.stats();
    const framepipe::window_item_stats items = w.item_stats();
    // A window is only ever dropped by being overtaken (or lost to a throwing move): evicted.
    CHECK(s.dropped == s.evicted);
    CHECK(s.rejected + s.cancelled + s.expired + s.after_close + s.rate_limited == 0);
    return {items.pushed, items.after_close, s.pushed, s.popped, s.dropped, s.size};
}

void check_identity(const window_counts& s) {
    INFO("ready " << s.ready << " popped " << s.popped << " dropped " << s.dropped << " size "
                  << s.size);
    CHECK(s.size <= 1);
    CHECK(s.ready == s.popped + s.dropped + s.size);
}

// Checks that `w` holds the items with seqs [last - size + 1, last], where item value == seq.
void check_window_of_seqs(const window<std::uint64_t>& w, std::uint64_t last, std::size_t size) {
    REQUIRE(w.size() == size);
    CHECK(w.last_seq() == last);
    CHECK(w.first_seq() == last + 1 - size);
    CHECK(w.last_seq() - w.first_seq() + 1 == w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
        CHECK(w[i] == w.first_seq() + i);
    }
    std::uint64_t expected = w.first_seq();
    std::size_t n = 0;
    for (const std::uint64_t v : w) {
        CHECK(v == expected);
        ++expected;
        ++n;
    }
    CHECK(n == size);
    CHECK(w.front() == w.first_seq());
    CHECK(w.back() == w.last_seq());
}

std::vector<int> values_of(const window<counted>& w) {
    std::vector<int> out;
    for (const counted& c : w) {
        out.push_back(c.value());
    }
    return out;
}

std::vector<int> iota_values(int first, int count) {
    std::vector<int> out;
    for (int i = 0; i < count; ++i) {
        out.push_back(first + i);
    }
    return out;
}

// Copyable, nothrow-movable; counts its copies.
struct copy_tracked {
    int value;
    int* copies;
    copy_tracked(int v, int* c) : value(v), copies(c) {}
    copy_tracked(const copy_tracked& o) : value(o.value), copies(o.copies) { ++*copies; }
    copy_tracked(copy_tracked&& o) noexcept : value(o.value), copies(o.copies) { o.value = -1; }
    copy_tracked& operator=(const copy_tracked&) = delete;
    copy_tracked& operator=(copy_tracked&&) = delete;
    ~copy_tracked() = default;
};

// Move-only, and its move constructor can throw: the `throw_after` counter, when positive, counts
// down on each move and the move that brings it to zero throws.
// Holds a `counted` so that its lifetimes are counted too.
struct move_only_throwing {
    int value;
    int* throw_after;
    counted life;
    move_only_throwing(int v, int* t) : value(v), throw_after(t), life(v) {}
    move_only_throwing(const move_only_throwing&) = delete;
    move_only_throwing(move_only_throwing&& o) noexcept(false)
        : value(o.value), throw_after(o.throw_after), life(std::move(o.life)) {
        if (*throw_after > 0 && --*throw_after == 0) {
            throw counted_error("move");
        }
        o.value = -1;
    }
    move_only_throwing& operator=(const move_only_throwing&) = delete;
    move_only_throwing& operator=(move_only_throwing&&) = delete;
    ~move_only_throwing() = default;
};

template <class F>
std::string what_of(F&& f) {
    try {
        std::forward<F>(f)();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    FAIL("no std::invalid_argument thrown");
    return {};
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Readiness rule
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: a window is ready after size pushes, then one every stride pushes") {
    const auto [size, stride] = GENERATE(table<std::size_t, std::size_t>({
        {1, 1}, {3, 1}, {4, 2}, {5, 3}, {6, 5}, {4, 4}, {30, 30}, {7, 7}}));
    INFO("size " << size << " stride " << stride);

    sliding_window<std::uint64_t> w(size, stride);
    CHECK(w.window_size() == size);
    CHECK(w.stride() == stride);
    CHECK(w.size() == 0);
    CHECK_FALSE(w.try_pop().has_value());

    const std::uint64_t n = 3 * size + 2 * stride + 1;
    std::uint64_t windows = 0;
    for (std::uint64_t seq = 0; seq < n; ++seq) {
        INFO("seq " << seq);
        CHECK(w.push(seq) == push_status::ok); // the consumer keeps up: nothing is overtaken
        const bool ready = ends_window(seq, size, stride);
        CHECK(w.size() == (ready ? 1U : 0U));
        CHECK(counts(w).size == (ready ? 1U : 0U));
        auto got = w.try_pop();
        REQUIRE(got.has_value() == ready);
        if (got) {
            ++windows;
            check_window_of_seqs(*got, seq, size);
        }
        CHECK(w.size() == 0);
        const window_counts s = counts(w);
        CHECK(s.pushed == seq + 1);
        CHECK(s.ready == windows);
        CHECK(s.popped == windows);
        CHECK(s.dropped == 0);
        CHECK(s.size == 0);
        CHECK(s.after_close == 0);
        check_identity(s);
    }
    CHECK(windows == expected_ready(n, size, stride));
    CHECK(windows >= 3);
}

TEST_CASE("sliding_window: stride 1 hands out a window after every push once size is reached") {
    sliding_window<std::uint64_t> w(3);
    CHECK(w.stride() == 1);
    CHECK(w.push(0) == push_status::ok);
    CHECK_FALSE(w.try_pop().has_value());
    CHECK(w.push(1) == push_status::ok);
    CHECK_FALSE(w.try_pop().has_value());
    for (std::uint64_t seq = 2; seq < 10; ++seq) {
        CHECK(w.push(seq) == push_status::ok);
        auto got = w.try_pop();
        REQUIRE(got.has_value());
        check_window_of_seqs(*got, seq, 3);
        CHECK_FALSE(w.try_pop().has_value());
    }
}

TEST_CASE("sliding_window: size 30 stride 30 clears the buffer after each classification") {
    // The seed's case: classify 30 poses, then start again from an empty buffer.
    sliding_window<std::uint64_t> w(30, 30);
    std::uint64_t seq = 0;
    for (; seq < 29; ++seq) {
        CHECK(w.push(seq) == push_status::ok);
        CHECK_FALSE(w.try_pop().has_value());
    }
    CHECK(w.push(seq) == push_status::ok); // seq 29
    auto first = w.try_pop();
    REQUIRE(first.has_value());
    check_window_of_seqs(*first, 29, 30);
    ++seq;

    // None of the 30 classified items is reused: the next window needs 30 new ones.
    for (; seq < 59; ++seq) {
        CHECK(w.push(seq) == push_status::ok);
        CHECK_FALSE(w.try_pop().has_value());
    }
    CHECK(w.push(seq) == push_status::ok); // seq 59
    auto second = w.try_pop();
    REQUIRE(second.has_value());
    check_window_of_seqs(*second, 59, 30);
    CHECK(second->first_seq() == first->last_seq() + 1);
    ++seq;

    // A classifier that falls a whole window behind gets the newest one; the other is dropped.
    for (; seq < 120; ++seq) {
        const push_status st = w.push(seq);
        CHECK(st == (seq == 119 ? push_status::evicted : push_status::ok));
    }
    auto third = w.try_pop();
    REQUIRE(third.has_value());
    check_window_of_seqs(*third, 119, 30);
    CHECK_FALSE(w.try_pop().has_value());
    const window_counts s = counts(w);
    CHECK(s.pushed == 120);
    CHECK(s.ready == 4);
    CHECK(s.popped == 3);
    CHECK(s.dropped == 1);
    check_identity(s);
}

// ---------------------------------------------------------------------------------------------
// Slow consumers and dropped windows
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: a slower consumer gets only the newest ready window") {
    const auto [size, stride] =
        GENERATE(table<std::size_t, std::size_t>({{4, 1}, {5, 2}, {3, 3}, {6, 4}}));
    INFO("size " << size << " stride " << stride);
    sliding_window<std::uint64_t> w(size, stride);

    // Nobody pops: every ready window but the first overtakes an untaken one.
    const std::uint64_t n = 4 * size + 3 * stride;
    std::uint64_t ready = 0;
    std::uint64_t last_ready = 0;
    for (std::uint64_t seq = 0; seq < n; ++seq) {
        INFO("seq " << seq);
        const push_status st = w.push(seq);
        if (ends_window(seq, size, stride)) {
            CHECK(st == (ready == 0 ? push_status::ok : push_status::evicted));
            ++ready;
            last_ready = seq;
        } else {
            CHECK(st == push_status::ok);
        }
        const window_counts s = counts(w);
        CHECK(s.ready == ready);
        CHECK(s.dropped == (ready == 0 ? 0 : ready - 1));
        CHECK(s.popped == 0);
        CHECK(s.size == (ready == 0 ? 0U : 1U));
        check_identity(s);
    }
    REQUIRE(ready >= 3);
    auto got = w.try_pop();
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, last_ready, size);
    CHECK_FALSE(w.try_pop().has_value());
    window_counts s = counts(w);
    CHECK(s.ready == ready);
    CHECK(s.popped == 1);
    CHECK(s.dropped == ready - 1);
    CHECK(s.size == 0);
    check_identity(s);

    // Now a consumer taking every second ready window: the other one is dropped, and the push
    // that overtakes it (and only that push) returns evicted.
    std::uint64_t seq = n;
    for (int round = 0; round < 4; ++round) {
        std::vector<push_status> statuses;
        std::vector<std::uint64_t> ends;
        while (ends.size() < 2) {
            statuses.push_back(w.push(seq));
            if (ends_window(seq, size, stride)) {
                ends.push_back(seq);
            }
            ++seq;
        }
        for (std::size_t i = 0; i < statuses.size(); ++i) {
            const std::uint64_t this_seq = seq - statuses.size() + i;
            CHECK(statuses[i] == (this_seq == ends[1] ? push_status::evicted : push_status::ok));
        }
        auto newest = w.try_pop();
        REQUIRE(newest.has_value());
        check_window_of_seqs(*newest, ends[1], size);
        CHECK_FALSE(w.try_pop().has_value());
    }
    s = counts(w);
    CHECK(s.ready == ready + 8);
    CHECK(s.popped == 5);
    CHECK(s.dropped == ready - 1 + 4);
    CHECK(s.ready == expected_ready(s.pushed, size, stride));
    check_identity(s);
}

// ---------------------------------------------------------------------------------------------
// window<T>: immutable shared snapshots
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: a window is unchanged by later pushes and outlives the sliding_window") {
    lifetime_scope scope;
    {
        std::optional<window<counted>> a;
        std::optional<window<counted>> b;
        {
            sliding_window<counted> w(4, 1);
            for (int i = 0; i < 4; ++i) {
                CHECK(w.push(counted{i}) == push_status::ok);
            }
            a = w.try_pop();
            REQUIRE(a.has_value());
            CHECK(values_of(*a) == iota_values(0, 4));

            // Wrap the history several times over (its slots are reused and reset).
            for (int i = 4; i < 40; ++i) {
                w.push(counted{i});
            }
            CHECK(a->first_seq() == 0);
            CHECK(a->last_seq() == 3);
            CHECK(values_of(*a) == iota_values(0, 4));

            b = w.try_pop();
            REQUIRE(b.has_value());
            CHECK(b->first_seq() == 36);
            CHECK(values_of(*b) == iota_values(36, 4));
        } // the sliding_window is destroyed here; the windows are still held

        CHECK(scope.counters.alive() == 8); // exactly the two snapshots' items
        CHECK(a->size() == 4);
        CHECK(values_of(*a) == iota_values(0, 4));
        CHECK(b->size() == 4);
        CHECK(b->last_seq() == 39);
        CHECK(values_of(*b) == iota_values(36, 4));
        CHECK((*b)[0].value() == 36);
        CHECK(b->back().value() == 39);
        a.reset();
        CHECK(scope.counters.alive() == 4);
    }
    CHECK(scope.counters.alive() == 0);
}

TEST_CASE("sliding_window: a tumbling window of move-only items outlives the sliding_window") {
    std::optional<window<std::unique_ptr<int>>> held;
    {
        sliding_window<std::unique_ptr<int>> w(3, 3);
        for (int i = 0; i < 3; ++i) {
            w.push(std::make_unique<int>(i));
        }
        held = w.try_pop();
        REQUIRE(held.has_value());
        for (int i = 3; i < 12; ++i) {
            w.push(std::make_unique<int>(i));
        }
        for (int i = 0; i < 3; ++i) {
            REQUIRE((*held)[static_cast<std::size_t>(i)] != nullptr);
            CHECK(*(*held)[static_cast<std::size_t>(i)] == i);
        }
    }
    REQUIRE(held->size() == 3);
    CHECK(held->first_seq() == 0);
    for (int i = 0; i < 3; ++i) {
        REQUIRE((*held)[static_cast<std::size_t>(i)] != nullptr);
        CHECK(*(*held)[static_cast<std::size_t>(i)] == i);
    }
}

TEST_CASE("sliding_window: copies of a window share its items instead of copying them") {
    lifetime_scope scope;
    {
        sliding_window<counted> w(3, 1);
        for (int i = 0; i < 5; ++i) {
            w.push(counted{i});
        }
        auto got = w.try_pop();
        REQUIRE(got.has_value());
        const std::int64_t copies = scope.counters.copies;
        const std::int64_t moves = scope.counters.moves;
        const std::int64_t alive = scope.counters.alive();

        const window<counted> copy = *got; // NOLINT(performance-unnecessary-copy-initialization)
        window<counted> assigned = copy;
        assigned = *got;
        const std::vector<window<counted>> many(10, copy);
        const window<counted> moved = std::move(assigned);

        CHECK(scope.counters.copies == copies);
        CHECK(scope.counters.moves == moves);
        CHECK(scope.counters.alive() == alive);
        CHECK(&copy[0] == &(*got)[0]);
        CHECK(&many[9][2] == &(*got)[2]);
        CHECK(&moved.front() == &got->front());
        CHECK(copy.first_seq() == got->first_seq());
        CHECK(copy.last_seq() == 4);
        CHECK(values_of(copy) == iota_values(2, 3));
        CHECK(values_of(many[5]) == iota_values(2, 3));
    }
    CHECK(scope.counters.alive() == 0);
}

TEST_CASE("sliding_window: a moved-from window is empty and safe to query") {
    // A moved-from window used to crash in its noexcept accessors (a null pointer).
    sliding_window<std::uint64_t> w(3, 1);
    for (std::uint64_t i = 0; i < 3; ++i) {
        (void)w.push(i);
    }
    auto got = w.try_pop();
    REQUIRE(got.has_value());
    window<std::uint64_t> moved = std::move(*got);
    check_window_of_seqs(moved, 2, 3);
    const window<std::uint64_t>& from = *got; // NOLINT(bugprone-use-after-move): the subject
    CHECK(from.size() == 0);
    CHECK(from.begin() == from.end());
    std::size_t n = 0;
    for ([[maybe_unused]] const std::uint64_t v : from) {
        ++n;
    }
    CHECK(n == 0);
    const window<std::uint64_t> copy = from; // copies of it are empty too
    CHECK(copy.size() == 0);
    // Assigning a window makes it usable again; a move assignment empties its source.
    *got = moved;
    check_window_of_seqs(*got, 2, 3);
    window<std::uint64_t> target = copy;
    target = std::move(moved);
    check_window_of_seqs(target, 2, 3);
    CHECK(moved.size() == 0); // NOLINT(bugprone-use-after-move): the subject

    // A moved-from window of stamped items has an unknown capture time, like a null pointer:
    // time_point::max(), never expired.
    using framepipe::stamped;
    using clock = std::chrono::steady_clock;
    using traits = framepipe::timestamp_traits<window<stamped<int>>>;
    const clock::time_point now = clock::now();
    sliding_window<stamped<int>> stamps(2, 2);
    (void)stamps.push(framepipe::stamp(1, 0, now - 2h));
    (void)stamps.push(framepipe::stamp(2, 1, now - 1h));
    auto stale = stamps.try_pop();
    REQUIRE(stale.has_value());
    const window<stamped<int>> kept = std::move(*stale);
    CHECK(traits::capture_time(kept) == now - 1h);
    // NOLINTNEXTLINE(bugprone-use-after-move): the subject
    CHECK(traits::capture_time(*stale) == clock::time_point::max());
    const std::optional<std::chrono::nanoseconds> max_age = 1s;
    CHECK(framepipe::detail::older_than(kept, max_age, now));
    CHECK_FALSE(framepipe::detail::older_than(*stale, max_age, now));
}

TEST_CASE("sliding_window: tumbling windows move their items out when T's move cannot throw") {
    int copies = 0;
    sliding_window<copy_tracked> w(3, 3);
    for (int i = 0; i < 9; ++i) {
        w.push(copy_tracked{i, &copies});
        if (auto got = w.try_pop()) {
            REQUIRE(got->size() == 3);
            for (std::size_t k = 0; k < 3; ++k) {
                CHECK((*got)[k].value == static_cast<int>(got->first_seq() + k));
            }
        }
    }
    CHECK(counts(w).popped == 3);
    CHECK(copies == 0);
}

TEST_CASE("sliding_window: overlapping windows copy their items, even when T's move cannot throw") {
    // An item of overlapping windows belongs to the next window too: moving it out would leave
    // that window a moved-from item (an empty string here). Strings longer than the small-string
    // buffer, so that a move takes the characters away.
    static_assert(std::is_nothrow_move_constructible_v<std::string>);
    const auto item = [](int i) { return "item " + std::to_string(i) + std::string(32, '.'); };
    sliding_window<std::string> w(3, 1);
    for (int i = 0; i < 8; ++i) {
        w.push(item(i));
        if (auto got = w.try_pop()) {
            REQUIRE(got->size() == 3);
            for (std::size_t k = 0; k < 3; ++k) {
                CHECK((*got)[k] == item(static_cast<int>(got->first_seq() + k)));
            }
        }
    }
    CHECK(counts(w).popped == 6);
}

// ---------------------------------------------------------------------------------------------
// try_pop / pop / pop(stop) / pop_for
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: pop(stop) and pop_for end while other consumers keep taking the "
          "window each wait saw") {
    // A pop whose look found the window gone (another consumer took it) waited again at once,
    // without looking at its stop token or deadline, and the wait returned ready while a window
    // was offered, without looking at them either: a stopped or timed-out pop went on for as
    // long as windows came and others won them (review: 300 ms, 1.6 million looks). The consumer
    // plays the others itself: after each wait it takes the window (try_pop), and before it
    // waits again it pushes the item that readies the next one; up to 200000 rounds.
    sliding_window<int> w(2, 1);
    framepipe_test::rounds_after_end r;
    int next = 0;
    const std::function<void()> take = [&] {
        if (r.next()) {
            (void)w.try_pop(); // another consumer was faster
        }
    };
    const std::function<void()> ready_next = [&] { w.push(next++); };
    bool got = true; // the call must say
    const auto run = [&](auto pop) {
        w.push(next++); // half a window: the pop waits
        std::atomic<long> tid{0};
        std::thread consumer([&] {
            tid = framepipe_test::this_thread_id();
            framepipe_test::after_wait_action = &take;
            framepipe_test::rewait_action = &ready_next;
            got = pop().has_value();
            framepipe_test::after_wait_action = framepipe_test::rewait_action = nullptr;
        });
        while (tid.load() == 0 || !framepipe_test::in_futex_wait(tid.load()).value_or(true)) {
            std::this_thread::yield();
        }
        w.push(next++); // a window: it wakes, and plays the others from then on
        consumer.join();
    };
    SECTION("pop(stop)") {
        std::stop_source stop;
        r.stop = &stop;
        r.stop_at = 100;
        run([&] { return w.pop(stop.get_token()); });
        CHECK(r.rounds >= 100);
        CHECK(r.after_stop <= 1);
    }
    SECTION("pop_for") {
        r.timeout = 2ms;
        run([&] { return w.pop_for(r.timeout); });
        CHECK(r.rounds < r.limit);
        CHECK(r.after_deadline <= 1);
    }
    CHECK_FALSE(got);
}

TEST_CASE("sliding_window: try_pop and pop_for return nullopt when no window is ready") {
    sliding_window<std::uint64_t> w(3, 2);
    CHECK_FALSE(w.try_pop().has_value());
    CHECK_FALSE(w.pop_for(1ms).has_value());
    CHECK_FALSE(w.pop_for(0ns).has_value());
    std::stop_source never;
    CHECK_FALSE(w.pop_for(1ms, never.get_token()).has_value());
    w.push(0);
    w.push(1);
    CHECK_FALSE(w.try_pop().has_value());
    CHECK_FALSE(w.pop_for(1ms).has_value());
    w.push(2);
    auto got = w.pop_for(0ns);
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 2, 3);
    CHECK_FALSE(w.pop_for(1ms).has_value()); // taken: no second copy of the same window
    w.push(3);
    CHECK_FALSE(w.pop_for(1ms, never.get_token()).has_value());
    w.push(4);
    got = w.pop_for(1ms, never.get_token());
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 4, 3);
    const window_counts s = counts(w);
    CHECK(s.ready == 2);
    CHECK(s.popped == 2);
    check_identity(s);
}

TEST_CASE("sliding_window: pop with a ready window returns it at once") {
    sliding_window<std::uint64_t> w(2, 1);
    w.push(0);
    w.push(1);
    auto got = w.pop();
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 1, 2);
    w.push(2);
    std::stop_source never;
    got = w.pop(never.get_token());
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 2, 2);
}

TEST_CASE("sliding_window: a blocked pop waits until a push makes a window ready") {
    sliding_window<std::uint64_t> w(4, 2);
    const int variant = GENERATE(0, 1, 2);
    INFO("variant " << variant << " (0 pop, 1 pop(stop), 2 pop_for)");
    std::stop_source never;
    std::latch started(1);
    std::atomic<bool> done{false};
    std::optional<window<std::uint64_t>> result;
    std::thread consumer([&] {
        started.count_down();
        if (variant == 0) {
            result = w.pop();
        } else if (variant == 1) {
            result = w.pop(never.get_token());
        } else {
            result = w.pop_for(1h);
        }
        done = true;
    });
    started.wait();
    for (std::uint64_t seq = 0; seq < 3; ++seq) {
        CHECK(w.push(seq) == push_status::ok);
    }
    CHECK(counts(w).pushed == 3);
    CHECK_FALSE(done.load()); // 3 items are not a window: the consumer still waits
    CHECK(w.push(3) == push_status::ok);
    consumer.join();
    CHECK(done.load());
    REQUIRE(result.has_value());
    check_window_of_seqs(*result, 3, 4);
    check_identity(counts(w));
}

TEST_CASE("sliding_window: a ready window wakes one waiting consumer, close wakes the rest") {
    sliding_window<std::uint64_t> w(2, 2);
    std::latch started(2);
    std::atomic<int> finished{0};
    std::atomic<int> got_window{0};
    std::atomic<std::uint64_t> got_last{0};
    auto consume = [&] {
        started.count_down();
        auto r = w.pop();
        if (r) {
            got_last = r->last_seq();
            ++got_window;
        }
        ++finished;
    };
    std::thread a(consume);
    std::thread b(consume);
    started.wait();
    w.push(0);
    w.push(1);
    while (finished.load() == 0) {
        std::this_thread::yield();
    }
    CHECK(got_window.load() == 1);
    CHECK(got_last.load() == 1);
    CHECK(counts(w).popped == 1);
    CHECK(finished.load() == 1); // no second window: the other consumer still waits
    w.close();
    a.join();
    b.join();
    CHECK(finished.load() == 2);
    CHECK(got_window.load() == 1); // the second one woke with nullopt
    check_identity(counts(w));
}

TEST_CASE("sliding_window: pop(stop) checks the token first and a stop wakes a blocked pop") {
    sliding_window<std::uint64_t> w(2, 2);
    w.push(0);
    w.push(1);

    std::stop_source stopped;
    stopped.request_stop();
    CHECK_FALSE(w.pop(stopped.get_token()).has_value());
    CHECK_FALSE(w.pop_for(1h, stopped.get_token()).has_value());
    CHECK_FALSE(w.pop_for(0ns, stopped.get_token()).has_value());
    window_counts s = counts(w);
    CHECK(s.size == 1); // the ready window was not taken
    CHECK(s.popped == 0);
    CHECK(w.size() == 1);
    auto got = w.try_pop();
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 1, 2);

    // A pop blocked on an empty sliding_window returns nullopt when its stop is requested.
    const bool with_timeout = GENERATE(false, true);
    INFO("pop_for: " << with_timeout);
    std::stop_source source;
    std::latch started(1);
    std::atomic<bool> done{false};
    std::optional<window<std::uint64_t>> result;
    std::thread consumer([&] {
        started.count_down();
        result = with_timeout ? w.pop_for(1h, source.get_token()) : w.pop(source.get_token());
        done = true;
    });
    started.wait();
    w.push(2); // not a window yet (stride 2)
    CHECK(counts(w).pushed == 3);
    CHECK_FALSE(done.load());
    source.request_stop();
    consumer.join();
    CHECK_FALSE(result.has_value());
    CHECK_FALSE(w.closed());
    s = counts(w);
    CHECK(s.popped == 1);
    CHECK(s.size == 0);
    check_identity(s);
    // Still usable afterwards.
    w.push(3);
    got = w.pop();
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 3, 2);
}

// ---------------------------------------------------------------------------------------------
// close
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: close wakes every blocked pop with nullopt") {
    sliding_window<std::uint64_t> w(3, 1);
    std::stop_source never;
    std::latch started(3);
    std::atomic<int> finished{0};
    std::atomic<int> windows{0};
    auto run = [&](int kind) {
        started.count_down();
        std::optional<window<std::uint64_t>> r;
        if (kind == 0) {
            r = w.pop();
        } else if (kind == 1) {
            r = w.pop(never.get_token());
        } else {
            r = w.pop_for(1h);
        }
        if (r) {
            ++windows;
        }
        ++finished;
    };
    std::thread t0(run, 0);
    std::thread t1(run, 1);
    std::thread t2(run, 2);
    started.wait();
    w.push(0);
    w.push(1);
    CHECK(counts(w).pushed == 2);
    CHECK(finished.load() == 0);
    CHECK_FALSE(w.closed());
    w.close();
    CHECK(w.closed());
    t0.join();
    t1.join();
    t2.join();
    CHECK(finished.load() == 3);
    CHECK(windows.load() == 0);
}

TEST_CASE("sliding_window: after close the pending window is drained, then pops return nullopt") {
    lifetime_scope scope;
    {
        sliding_window<counted> w(3, 2);
        for (int i = 0; i < 5; ++i) {
            w.push(counted{i});
        }
        REQUIRE(counts(w).size == 1);
        w.close();
        CHECK(w.closed());
        w.close(); // idempotent

        CHECK(w.push(counted{100}) == push_status::closed);
        CHECK(w.push(counted{101}, std::stop_token{}) == push_status::closed);
        CHECK(w.push(counted{102}) == push_status::closed);
        window_counts s = counts(w);
        CHECK(s.pushed == 5);
        CHECK(s.after_close == 3);
        CHECK(s.ready == 2);
        CHECK(s.dropped == 1);
        CHECK(s.size == 1);
        check_identity(s);

        auto got = w.pop();
        REQUIRE(got.has_value());
        CHECK(got->first_seq() == 2);
        CHECK(values_of(*got) == iota_values(2, 3));

        std::stop_source never;
        CHECK_FALSE(w.pop().has_value());
        CHECK_FALSE(w.pop(never.get_token()).has_value());
        CHECK_FALSE(w.try_pop().has_value());
        CHECK_FALSE(w.pop_for(1ms).has_value());
        CHECK_FALSE(w.pop_for(1h, never.get_token()).has_value());
        s = counts(w);
        CHECK(s.popped == 1);
        CHECK(s.size == 0);
        CHECK(s.pushed == 5);
        CHECK(s.after_close == 3);
        check_identity(s);
    }
    CHECK(scope.counters.alive() == 0);
}

TEST_CASE("sliding_window: pushes after close do not make windows ready") {
    sliding_window<std::uint64_t> w(2, 1);
    w.push(0);
    w.close();
    for (std::uint64_t seq = 1; seq < 6; ++seq) {
        CHECK(w.push(seq) == push_status::closed);
    }
    const window_counts s = counts(w);
    CHECK(s.pushed == 1);
    CHECK(s.after_close == 5);
    CHECK(s.ready == 0);
    CHECK(s.size == 0);
    CHECK_FALSE(w.pop().has_value());
    check_identity(s);
}

TEST_CASE("sliding_window: push with a stop token never consults it") {
    sliding_window<std::uint64_t> w(2, 2);
    std::stop_source stopped;
    stopped.request_stop();
    CHECK(w.push(0, stopped.get_token()) == push_status::ok);
    CHECK(w.push(1, stopped.get_token()) == push_status::ok);
    CHECK(w.push(2, stopped.get_token()) == push_status::ok);
    CHECK(w.push(3, stopped.get_token()) == push_status::evicted);
    auto got = w.try_pop();
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 3, 2);
    CHECK(counts(w).pushed == 4);
}

// ---------------------------------------------------------------------------------------------
// Bad arguments
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: bad arguments throw invalid_argument naming the argument") {
    SECTION("size 0") {
        const std::string msg = what_of([] { sliding_window<int> w(0); });
        CHECK(msg.find("size") != std::string::npos);
        CHECK(msg.find("stride") == std::string::npos);
        CHECK(what_of([] { sliding_window<int> w(0, 0); }).find("size") != std::string::npos);
    }
    SECTION("stride 0") {
        CHECK(what_of([] { sliding_window<int> w(3, 0); }).find("stride") != std::string::npos);
        CHECK(what_of([] { sliding_window<int> w(1, 0); }).find("stride") != std::string::npos);
    }
    SECTION("stride greater than size") {
        CHECK(what_of([] { sliding_window<int> w(3, 4); }).find("stride") != std::string::npos);
        CHECK(what_of([] { sliding_window<int> w(1, 2); }).find("stride") != std::string::npos);
    }
    SECTION("overlapping windows of a move-only T") {
        using up = std::unique_ptr<int>;
        CHECK(what_of([] { sliding_window<up> w(3, 2); }).find("stride") != std::string::npos);
        CHECK(what_of([] { sliding_window<up> w(2); }).find("stride") != std::string::npos);
        CHECK_NOTHROW(sliding_window<up>(3, 3));
        CHECK_NOTHROW(sliding_window<up>(1));
    }
    SECTION("size + stride out of range") {
        // size + stride used to wrap: (max, 1) made a history of 0 slots, (max, 2) one of 1,
        // and the first push wrote past it.
        constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
        CHECK(what_of([] { sliding_window<std::string> w(max, 1); }).find("size") !=
              std::string::npos);
        CHECK(what_of([] { sliding_window<std::string> w(max, 2); }).find("size") !=
              std::string::npos);
        CHECK(what_of([] { sliding_window<int> w(max / 2 + 1, max / 2 + 1); }).find("size") !=
              std::string::npos);
        CHECK(what_of([] { sliding_window<int> w(max, max); }).find("size") != std::string::npos);
        // size + stride in range, but not its bytes (an allocator may not even be asked).
        CHECK(what_of([] { sliding_window<std::string> w(max / 2, max / 2); }).find("size") !=
              std::string::npos);
        constexpr std::size_t too_many =
            static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) /
                sizeof(std::optional<std::uint64_t>) +
            1;
        CHECK(what_of([] { sliding_window<std::uint64_t> w(too_many - 1, 1); }).find("size") !=
              std::string::npos);
    }
    SECTION("valid arguments do not throw") {
        CHECK_NOTHROW(sliding_window<int>(1, 1));
        CHECK_NOTHROW(sliding_window<int>(5, 1));
        CHECK_NOTHROW(sliding_window<int>(5, 5));
    }
    SECTION("negative timeout") {
        sliding_window<int> w(2, 1);
        w.push(0);
        w.push(1);
        CHECK(what_of([&] { (void)w.pop_for(-1ns); }).find("timeout") != std::string::npos);
        std::stop_source never;
        CHECK(what_of([&] { (void)w.pop_for(-1ms, never.get_token()); }).find("timeout") !=
              std::string::npos);
        const window_counts s = counts(w);
        CHECK(s.size == 1); // the throwing calls did not take the window
        CHECK(s.popped == 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: a window of stamped items is timestamped by its newest item") {
    using framepipe::stamped;
    using framepipe::timestamp_traits;
    using framepipe::timestamped;
    using clock = std::chrono::steady_clock;
    STATIC_REQUIRE(timestamped<window<stamped<int>>>);
    STATIC_REQUIRE_FALSE(timestamped<window<int>>);

    const clock::time_point base = clock::now() - 1h;
    sliding_window<stamped<int>> w(3, 1);
    for (int i = 0; i < 5; ++i) {
        const auto seq = static_cast<std::uint64_t>(i);
        w.push(framepipe::stamp(i, seq, base + std::chrono::minutes(10 * i)));
    }
    auto got = w.try_pop();
    REQUIRE(got.has_value());
    CHECK(got->first_seq() == 2);
    CHECK(got->front().value == 2);
    CHECK(got->back().value == 4);
    CHECK(timestamp_traits<window<stamped<int>>>::capture_time(*got) ==
          base + std::chrono::minutes(40));
    CHECK(timestamp_traits<window<stamped<int>>>::capture_time(*got) != got->front().captured);

    // A channel of windows with max_age judges a window by its freshest item.
    framepipe::ring<window<stamped<int>>> q(framepipe::ring_options{.capacity = 4, .max_age = 1s});
    sliding_window<stamped<int>> fresh(2, 2);
    fresh.push(framepipe::stamp(10, 0, clock::now() - 1h)); // stale oldest item
    fresh.push(framepipe::stamp(11, 1, clock::now() + 1h)); // newest item: not stale for an hour
    auto fresh_window = fresh.try_pop();
    REQUIRE(fresh_window.has_value());
    q.push(*got);          // newest item captured 20 minutes ago: expired
    q.push(*fresh_window); // its newest item is fresh: kept
    auto out = q.try_pop();
    REQUIRE(out.has_value());
    CHECK(out->back().value == 11);
    CHECK(q.stats().expired == 1);
}

// ---------------------------------------------------------------------------------------------
// Move-only T and lifetimes
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: move-only T works with tumbling windows") {
    lifetime_scope scope;
    {
        sliding_window<std::unique_ptr<counted>> w(3, 3);
        for (int i = 0; i < 3; ++i) {
            CHECK(w.push(std::make_unique<counted>(i)) == push_status::ok);
        }
        auto got = w.try_pop();
        REQUIRE(got.has_value());
        CHECK(got->first_seq() == 0);
        for (std::size_t k = 0; k < 3; ++k) {
            REQUIRE((*got)[k] != nullptr);
            CHECK((*got)[k]->value() == static_cast<int>(k));
        }
        // A slow consumer: the window 3..5 is overtaken by 6..8.
        for (int i = 3; i < 9; ++i) {
            CHECK(w.push(std::make_unique<counted>(i)) ==
                  (i == 8 ? push_status::evicted : push_status::ok));
        }
        got = w.pop();
        REQUIRE(got.has_value());
        CHECK(got->first_seq() == 6);
        for (std::size_t k = 0; k < 3; ++k) {
            REQUIRE((*got)[k] != nullptr);
            CHECK((*got)[k]->value() == static_cast<int>(6 + k));
        }
        CHECK(scope.counters.copies == 0);
        for (int i = 9; i < 11; ++i) {
            w.push(std::make_unique<counted>(i));
        }
        const window_counts s = counts(w);
        CHECK(s.pushed == 11);
        CHECK(s.ready == 3);
        CHECK(s.popped == 2);
        CHECK(s.dropped == 1);
        check_identity(s);
    }
    CHECK(scope.counters.alive() == 0);
    CHECK(scope.counters.constructed == 11);
    CHECK(scope.counters.destroyed == 11);
}

TEST_CASE("sliding_window: each item's destructor runs exactly once") {
    lifetime_scope scope;
    const auto [size, stride] =
        GENERATE(table<std::size_t, std::size_t>({{1, 1}, {4, 1}, {5, 2}, {3, 3}}));
    INFO("size " << size << " stride " << stride);
    {
        std::vector<window<counted>> kept;
        {
            sliding_window<counted> w(size, stride);
            for (int i = 0; i < 60; ++i) {
                w.push(counted{i});
                if (i % 7 == 0) {
                    if (auto got = w.try_pop()) {
                        if (i % 2 == 0) {
                            kept.push_back(*got);
                        }
                    }
                }
            }
            w.close();
            w.push(counted{1000});
            // Destroyed with a pending window and a full history.
        }
        for (const auto& k : kept) {
            REQUIRE(k.size() == size);
            CHECK(values_of(k) == iota_values(static_cast<int>(k.first_seq()),
                                              static_cast<int>(size)));
        }
    }
    CHECK(scope.counters.alive() == 0);
    CHECK(scope.counters.constructed == scope.counters.destroyed);
}

// ---------------------------------------------------------------------------------------------
// Bounded memory
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: it never owns more than size + stride items") {
    lifetime_scope scope;
    const auto [size, stride] = GENERATE(
        table<std::size_t, std::size_t>({{1, 1}, {3, 1}, {4, 2}, {5, 5}, {8, 3}, {30, 30}}));
    const bool consume = GENERATE(false, true);
    INFO("size " << size << " stride " << stride << " consume " << consume);
    const auto bound = static_cast<std::int64_t>(size + stride);
    {
        sliding_window<counted> w(size, stride);
        const int n = static_cast<int>(10 * (size + stride));
        for (int i = 0; i < n; ++i) {
            w.push(counted{i});
            // No window is held here: every live `counted` is owned by the sliding_window.
            INFO("after push " << i);
            CHECK(scope.counters.alive() <= bound);
            if (counts(w).size == 1) {
                CHECK(scope.counters.alive() >= static_cast<std::int64_t>(size));
            }
            if (consume) {
                if (auto got = w.try_pop()) {
                    CHECK(got->size() == size);
                }
                CHECK(scope.counters.alive() <= bound);
            }
        }
        CHECK(counts(w).pushed == static_cast<std::uint64_t>(n));
    }
    CHECK(scope.counters.alive() == 0);
}

// ---------------------------------------------------------------------------------------------
// Exception guarantees
// ---------------------------------------------------------------------------------------------

TEST_CASE("sliding_window: a throwing copy during pop leaves the window available") {
    lifetime_scope scope;
    // counted's move may throw, so both overlapping and tumbling windows copy their items.
    const auto [size, stride] = GENERATE(table<std::size_t, std::size_t>({{4, 2}, {3, 3}}));
    const int how = GENERATE(0, 1, 2);
    INFO("size " << size << " stride " << stride << " pop kind " << how);
    {
        sliding_window<counted> w(size, stride);
        const int n = static_cast<int>(size + stride);
        for (int i = 0; i < n; ++i) {
            w.push(counted{i});
        }
        const window_counts before = counts(w);
        REQUIRE(before.size == 1);
        const std::int64_t alive = scope.counters.alive();

        scope.counters.throw_on_copy = true;
        if (how == 0) {
            CHECK_THROWS_AS(w.try_pop(), counted_error);
        } else if (how == 1) {
            CHECK_THROWS_AS(w.pop(), counted_error);
        } else {
            CHECK_THROWS_AS(w.pop_for(1ms), counted_error);
        }
        scope.counters.throw_on_copy = false;

        const window_counts after = counts(w);
        CHECK(after.popped == before.popped);
        CHECK(after.ready == before.ready);
        CHECK(after.dropped == before.dropped);
        CHECK(after.size == 1);
        CHECK(w.size() == 1);
        check_identity(after);
        CHECK(scope.counters.alive() == alive); // nothing leaked from the partial snapshot

        auto got = w.try_pop();
        REQUIRE(got.has_value());
        CHECK(got->last_seq() == static_cast<std::uint64_t>(n - 1));
        CHECK(values_of(*got) == iota_values(n - static_cast<int>(size), static_cast<int>(size)));
        check_identity(counts(w));

        // And the sliding_window carries on normally.
        for (int i = n; i < n + static_cast<int>(stride); ++i) {
            w.push(counted{i});
        }
        got = w.try_pop();
        REQUIRE(got.has_value());
        CHECK(values_of(*got) ==
              iota_values(n + static_cast<int>(stride) - static_cast<int>(size),
                          static_cast<int>(size)));
    }
    CHECK(scope.counters.alive() == 0);
}

#if defined(__linux__)
namespace {

// An item whose copy throws once, when armed: the first copy after arming throws, every other
// copy succeeds.
struct throws_once {
    static inline std::atomic<bool> armed{false};
    int v = 0;
    explicit throws_once(int i) : v(i) {}
    throws_once(const throws_once& o) : v(o.v) {
        if (armed.exchange(false)) {
            throw std::runtime_error("copy");
        }
    }
    throws_once(throws_once&&) = default;
    throws_once& operator=(const throws_once&) = delete;
    throws_once& operator=(throws_once&&) = delete;
    ~throws_once() = default;
};

} // namespace

TEST_CASE("sliding_window: a woken consumer whose copy throws passes the wake-up on") {
    // Two consumers park in pop(stop); a push makes a window ready and wakes one of them
    // (notify_one), whose copy of the window throws. The window stays offered, so the other
    // must hear of it: a pop that let the exception out without passing the wake-up on left it
    // parked beside the window for ever (here, until the guard stops it).
    constexpr auto stranded_after = 20s; // a hang guard only: nothing waits this long when right
    sliding_window<throws_once> w(2, 1); // overlapping: pops copy the items
    w.push(throws_once(0));
    std::atomic<int> got[2] = {-3, -3}; // -3: still waiting; -2: threw; -1: nullopt; else the last
    framepipe_test::parked_threads<2> consumers;
    const auto finish = [&] {
        consumers.finish();
        throws_once::armed = false;
    };
    for (std::size_t i = 0; i < 2; ++i) {
        // One at a time: the first is parked before the second starts.
        if (!consumers.start_parked_in(i, framepipe::detail::readable_event(w),
                                       [&, i](std::stop_source& stop) {
                                           try {
                                               const auto win = w.pop(stop.get_token());
                                               got[i] = win ? win->back().v : -1;
                                           } catch (const std::runtime_error&) {
                                               got[i] = -2;
                                           }
                                       })) {
            WARN("/proc/self/task/<tid>/syscall unreadable: cannot tell a parked thread; skipped");
            finish();
            return;
        }
    }
    throws_once::armed = true;
    REQUIRE(w.push(throws_once(1)) == push_status::ok); // one window, one wake-up
    while (got[0] == -3 && got[1] == -3) {
        std::this_thread::yield();
    }
    const int first = got[0] != -3 ? 0 : 1;
    CHECK(got[first] == -2); // the woken one threw
    const auto give_up = std::chrono::steady_clock::now() + stranded_after;
    while (got[1 - first] == -3 && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
    }
    finish();
    INFO("consumer 0: " << got[0].load() << ", consumer 1: " << got[1].load()
                        << " (-2: threw, -1: nullopt)");
    CHECK(got[1 - first] == 1); // the other took the window, ending at item 1
    const window_counts c = counts(w);
    CHECK(c.popped == 1);
    CHECK(c.size == 0);
    check_identity(c);
}
#endif

TEST_CASE("sliding_window: a throwing move during push changes nothing") {
    lifetime_scope scope;
    const auto [size, stride] =
        GENERATE(table<std::size_t, std::size_t>({{3, 2}, {4, 1}, {3, 3}}));
    // How many items are pushed before the failing push: empty, not yet a window, a pending
    // window with the history full.
    const int prefix = GENERATE(0, 2, 9);
    INFO("size " << size << " stride " << stride << " prefix " << prefix);
    {
        sliding_window<counted> w(size, stride);
        for (int i = 0; i < prefix; ++i) {
            w.push(counted{i});
        }
        const window_counts before = counts(w);
        const std::int64_t alive = scope.counters.alive();

        scope.counters.throw_on_move = true;
        // A prvalue argument initialises push's parameter directly; the move that throws is the
        // one into the history.
        CHECK_THROWS_AS(w.push(counted{-100}), counted_error);
        scope.counters.throw_on_move = false;

        const window_counts after = counts(w);
        CHECK(after.pushed == before.pushed);
        CHECK(after.ready == before.ready);
        CHECK(after.dropped == before.dropped);
        CHECK(after.popped == before.popped);
        CHECK(after.size == before.size);
        CHECK(after.after_close == before.after_close);
        check_identity(after);
        CHECK(scope.counters.alive() == alive);

        // The failed push took no sequence number: the windows continue from `prefix`.
        for (int i = prefix; i < prefix + 3 * static_cast<int>(size); ++i) {
            const auto seq = static_cast<std::uint64_t>(i);
            const bool was_pending = counts(w).size == 1;
            const push_status st = w.push(counted{i});
            if (ends_window(seq, size, stride)) {
                CHECK(st == (was_pending ? push_status::evicted : push_status::ok));
                auto got = w.try_pop();
                REQUIRE(got.has_value());
                CHECK(got->last_seq() == seq);
                CHECK(values_of(*got) == iota_values(i + 1 - static_cast<int>(size),
                                                     static_cast<int>(size)));
            } else {
                CHECK(st == push_status::ok);
                CHECK(counts(w).size == (was_pending ? 1U : 0U));
                if (was_pending) {
                    // The window pending before the failed push is still the right one.
                    auto got = w.try_pop();
                    REQUIRE(got.has_value());
                    const auto last = static_cast<int>(got->last_seq());
                    CHECK(ends_window(got->last_seq(), size, stride));
                    CHECK(last < prefix);
                    CHECK(values_of(*got) ==
                          iota_values(last + 1 - static_cast<int>(size), static_cast<int>(size)));
                }
            }
        }
        const window_counts s = counts(w);
        CHECK(s.pushed == static_cast<std::uint64_t>(prefix + 3 * static_cast<int>(size)));
        CHECK(s.ready == expected_ready(s.pushed, size, stride));
        check_identity(s);
    }
    CHECK(scope.counters.alive() == 0);
}

TEST_CASE("sliding_window: a throwing move of a move-only T during pop drops that window") {
    // The header: a move-only T whose move constructor throws gives the basic guarantee: the
    // window being taken is dropped (counted in dropped) and the exception propagates.
    lifetime_scope scope;
    {
        int throw_after = 0;
        sliding_window<move_only_throwing> w(3, 3);
        for (int i = 0; i < 3; ++i) {
            w.push(move_only_throwing{i, &throw_after});
        }
        REQUIRE(counts(w).size == 1);
        throw_after = 2; // the second move out of the history throws
        CHECK_THROWS_AS(w.try_pop(), counted_error);
        throw_after = 0;
        window_counts s = counts(w);
        CHECK(s.ready == 1);
        CHECK(s.popped == 0);
        CHECK(s.dropped == 1);
        CHECK(s.size == 0);
        CHECK(w.size() == 0);
        check_identity(s);
        CHECK_FALSE(w.try_pop().has_value()); // the half-moved window is not offered again

        // The sliding_window stays usable: the next window is whole.
        for (int i = 3; i < 6; ++i) {
            CHECK(w.push(move_only_throwing{i, &throw_after}) == push_status::ok);
        }
        auto got = w.try_pop();
        REQUIRE(got.has_value());
        REQUIRE(got->size() == 3);
        CHECK(got->first_seq() == 3);
        for (std::size_t k = 0; k < 3; ++k) {
            CHECK((*got)[k].value == static_cast<int>(3 + k));
        }
        s = counts(w);
        CHECK(s.ready == 2);
        CHECK(s.popped == 1);
        CHECK(s.dropped == 1);
        check_identity(s);
    }
    CHECK(scope.counters.alive() == 0); // every item destroyed once, moved-from ones included
}

// ---------------------------------------------------------------------------------------------
// Multi-threaded stress
// ---------------------------------------------------------------------------------------------

namespace {

struct tagged {
    std::uint32_t producer;
    std::uint64_t counter; // per-producer push counter, from 0
};

struct stress_result {
    std::vector<std::vector<window<tagged>>> per_consumer;
    window_counts stats;
    std::uint64_t accepted = 0;
    std::uint64_t evicted = 0;
    std::uint64_t closed = 0;
};

stress_result run_stress(std::size_t size, std::size_t stride, std::uint32_t producers,
                         std::size_t consumers, std::uint64_t close_after) {
    stress_result out;
    out.per_consumer.resize(consumers);
    auto w = std::make_unique<sliding_window<tagged>>(size, stride);
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> evicted{0};
    std::atomic<std::uint64_t> closed{0};
    std::atomic<std::uint64_t> windows_taken{0};
    std::latch start(static_cast<std::ptrdiff_t>(producers + consumers + 1));

    std::vector<std::thread> threads;
    for (std::uint32_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            std::mt19937 rng(1234 + p);
            std::uniform_int_distribution<int> pause(0, 255);
            start.arrive_and_wait();
            for (std::uint64_t c = 0;; ++c) {
                const push_status st = w->push(tagged{p, c});
                if (st == push_status::closed) {
                    ++closed;
                    // Later pushes are refused too.
                    for (int k = 0; k < 3; ++k) {
                        if (w->push(tagged{p, c + 1 + static_cast<std::uint64_t>(k)}) ==
                            push_status::closed) {
                            ++closed;
                        }
                    }
                    break;
                }
                ++accepted;
                if (st == push_status::evicted) {
                    ++evicted;
                }
                if (pause(rng) == 0) {
                    std::this_thread::sleep_for(std::chrono::microseconds(pause(rng) % 20));
                }
            }
        });
    }
    for (std::size_t k = 0; k < consumers; ++k) {
        threads.emplace_back([&, k] {
            std::mt19937 rng(static_cast<std::uint32_t>(99 + k));
            std::uniform_int_distribution<int> pause(0, 63);
            start.arrive_and_wait();
            auto& mine = out.per_consumer[k];
            while (auto got = w->pop()) {
                mine.push_back(*got);
                ++windows_taken;
                if (pause(rng) == 0) {
                    std::this_thread::sleep_for(std::chrono::microseconds(pause(rng) % 30));
                }
            }
        });
    }
    start.arrive_and_wait();
    // Close during traffic: once enough items went in and consumers have taken some windows.
    for (;;) {
        const window_counts s = counts(*w);
        if (s.pushed >= close_after && windows_taken.load() >= 100) {
            break;
        }
        std::this_thread::yield();
    }
    w->close();
    for (auto& t : threads) {
        t.join();
    }
    out.stats = counts(*w);
    out.accepted = accepted.load();
    out.evicted = evicted.load();
    out.closed = closed.load();
    w.reset(); // the windows the consumers kept must outlive the sliding_window
    return out;
}

void check_stress(const stress_result& r, std::size_t size, std::size_t stride,
                  std::uint32_t producers) {
    const window_counts& s = r.stats;
    INFO("pushed " << s.pushed << " ready " << s.ready << " popped " << s.popped << " dropped "
                   << s.dropped << " after_close " << s.after_close);
    REQUIRE(s.pushed == r.accepted);
    CHECK(s.after_close == r.closed);
    CHECK(r.closed == 4 * producers);
    CHECK(s.size == 0); // the consumers drained the last window after close
    check_identity(s);
    CHECK(s.ready == expected_ready(s.pushed, size, stride));
    CHECK(s.dropped == r.evicted); // each evicted push overtook exactly one window

    std::uint64_t total = 0;
    std::set<std::uint64_t> last_seqs;
    std::vector<std::optional<tagged>> by_seq(s.pushed);
    bool contents_ok = true;
    bool shape_ok = true;
    bool increasing_ok = true;
    for (const auto& mine : r.per_consumer) {
        std::optional<std::uint64_t> prev;
        for (const auto& win : mine) {
            ++total;
            last_seqs.insert(win.last_seq());
            if (win.size() != size || win.last_seq() - win.first_seq() + 1 != size ||
                !ends_window(win.last_seq(), size, stride) || win.last_seq() >= s.pushed) {
                shape_ok = false;
                continue;
            }
            if (prev && win.last_seq() <= *prev) {
                increasing_ok = false;
            }
            prev = win.last_seq();
            // Consecutive items in push order: each producer's items appear with consecutive
            // counters, and every seq always maps to the same item, whichever window shows it.
            std::vector<std::optional<std::uint64_t>> next_counter(producers);
            for (std::size_t i = 0; i < win.size(); ++i) {
                const tagged& item = win[i];
                const std::uint64_t seq = win.first_seq() + i;
                if (item.producer >= producers) {
                    contents_ok = false;
                    continue;
                }
                auto& expect = next_counter[item.producer];
                if (expect && item.counter != *expect) {
                    contents_ok = false;
                }
                expect = item.counter + 1;
                if (producers == 1 && item.counter != seq) {
                    contents_ok = false; // one producer: its counter is the seq
                }
                auto& known = by_seq[seq];
                if (known) {
                    if (known->producer != item.producer || known->counter != item.counter) {
                        contents_ok = false;
                    }
                } else {
                    known = item;
                }
            }
        }
    }
    CHECK(shape_ok);
    CHECK(increasing_ok);
    CHECK(contents_ok);
    CHECK(total == s.popped);
    CHECK(last_seqs.size() == total); // no window handed out twice
    // The last ready window cannot be overtaken after close: someone took it.
    REQUIRE(s.ready > 0);
    CHECK(*last_seqs.rbegin() == size - 1 + (s.ready - 1) * stride);

    // Across all windows, each producer's items are in push order.
    std::vector<std::optional<std::uint64_t>> last_counter(producers);
    bool fifo_ok = true;
    for (const auto& item : by_seq) {
        if (!item) {
            continue;
        }
        auto& prev = last_counter[item->producer];
        if (prev && item->counter <= *prev) {
            fifo_ok = false;
        }
        prev = item->counter;
    }
    CHECK(fifo_ok);
}

} // namespace

TEST_CASE("sliding_window: stress, producers and consumers with close during traffic") {
    const auto [size, stride, producers, consumers] =
        GENERATE(table<std::size_t, std::size_t, std::uint32_t, std::size_t>({
            {8, 3, 1, 2},
            {5, 1, 2, 3},
            {6, 6, 2, 2},
            {16, 5, 1, 3},
        }));
    INFO("size " << size << " stride " << stride << " producers " << producers << " consumers "
                 << consumers);
    const stress_result r = run_stress(size, stride, producers, consumers, 20000);
    check_stress(r, size, stride, producers);
}

TEST_CASE("sliding_window: reports like every channel, in windows; items are counted apart") {
    sliding_window<int> w(3, 2);
    CHECK(w.capacity() == 1); // one ready window at most
    CHECK(w.window_size() == 3);
    for (int i = 0; i < 7; ++i) {
        (void)w.try_push(i); // windows end at items 2, 4, 6: the first two are overtaken
    }
    const framepipe::channel_stats s = w.stats();
    CHECK(s.pushed == 3);  // windows made ready
    CHECK(s.evicted == 2); // overtaken before anyone took them
    CHECK(s.dropped == 2);
    CHECK(s.size == 1);
    CHECK(s.pushed == s.popped + s.dropped + s.size);
    CHECK(w.item_stats().pushed == 7);
    const auto d = framepipe::detail::describe_channel(w);
    CHECK(d.kind == "sliding_window");
    CHECK(d.policy == "window 3/2");
    CHECK(d.capacity == 1);
    REQUIRE(d.stats.has_value());
    CHECK(d.stats->evicted == 2);
}

TEST_CASE("sliding_window: a new epoch restarts the window; no window mixes two connections") {
    using item = framepipe::stamped<int>;
    sliding_window<item> w(3, 1);
    const auto at = std::chrono::steady_clock::now();
    for (int i = 0; i < 4; ++i) {
        (void)w.push(framepipe::stamp(i, static_cast<std::uint64_t>(i), at, 1));
    }
    REQUIRE(w.size() == 1); // a window of epoch 1 waits (items 1, 2, 3)
    // Reconnect: epoch 2. The waiting window and the held items are dropped.
    CHECK(w.push(framepipe::stamp(10, 4, at, 2)) == push_status::ok);
    CHECK(w.size() == 0);
    CHECK(w.push(framepipe::stamp(11, 5, at, 2)) == push_status::ok);
    CHECK(w.push(framepipe::stamp(3, 6, at, 1)) == push_status::rejected); // late, epoch 1
    CHECK(w.push(framepipe::stamp(12, 7, at, 2)) == push_status::ok);      // 3 of epoch 2: ready
    auto win = w.try_pop();
    REQUIRE(win.has_value());
    std::vector<int> values;
    for (const auto& x : *win) {
        values.push_back(x.value);
        CHECK(x.epoch == 2);
    }
    CHECK(values == std::vector<int>{10, 11, 12});
    const auto items = w.item_stats();
    CHECK(items.stale_epoch == 1);
    CHECK(items.restarts == 1);
    CHECK(items.pushed == 7);
    const framepipe::channel_stats s = w.stats();
    CHECK(s.pushed == s.popped + s.dropped + s.size);
    CHECK(s.evicted >= 1); // the epoch-1 window that waited when the reconnect came
}

TEST_CASE("sliding_window: a steady stream of windows allocates nothing after warm-up") {
    sliding_window<int> w(30, 5);
    std::atomic<std::uint64_t> seen{0};
    std::thread consumer([&] {
        while (auto win = w.pop()) {
            seen.fetch_add(win->size(), std::memory_order_relaxed); // released at once
        }
    });
    // Warm-up: windows go round until the consumer has taken a few (each of its first pops
    // allocates what later ones reuse).
    for (int i = 0; counts(w).popped < 4; ++i) {
        (void)w.push(i);
        std::this_thread::yield();
    }
    allocation_window a;
    a.start();
    for (int i = 0; i < 200'000; ++i) {
        (void)w.push(i);
    }
    a.stop();
    w.close();
    consumer.join();
    CHECK(allocation_window::allocations() == 0);
    const auto s = w.stats();
    CHECK(s.pushed == s.popped + s.dropped + s.size);
    CHECK(seen.load() == s.popped * 30);
}

namespace {
// Allocations in 1000 windows pushed and popped on one thread, after a warm-up.
template <class T>
std::uint64_t steady_allocations(std::size_t size, std::size_t stride) {
    sliding_window<T> w(size, stride);
    int next = 0;
    const auto round = [&] {
        for (std::size_t i = 0; i < stride; ++i) {
            (void)w.push(static_cast<T>(next++ % 100));
        }
        (void)w.try_pop(); // released at once
    };
    for (std::size_t i = 0; i < size; ++i) {
        (void)w.push(static_cast<T>(0));
    }
    for (int i = 0; i < 10; ++i) {
        round();
    }
    allocation_window a;
    a.start();
    for (int i = 0; i < 1000; ++i) {
        round();
    }
    a.stop();
    return allocation_window::allocations();
}
} // namespace

TEST_CASE("sliding_window: windows of fewer item bytes than a pointer allocate nothing after "
          "warm-up") {
    // Item blocks smaller than the recycler's free-list node used to go to the heap at every pop.
    CHECK(steady_allocations<char>(3, 1) == 0);
    CHECK(steady_allocations<char>(7, 7) == 0);
    CHECK(steady_allocations<int>(1, 1) == 0);
    CHECK(steady_allocations<char>(1, 1) == 0);
    CHECK(steady_allocations<int>(2, 1) == 0); // 8 bytes: the node's size
    CHECK(steady_allocations<char>(100, 30) == 0);
}

TEST_CASE("sliding_window: pop_for takes any duration; coarse max() means no limit") {
    sliding_window<std::uint64_t> w(3, 1);
    w.push(0);
    w.push(1);
    w.push(2);
    auto got = w.pop_for(std::chrono::seconds::max());
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 2, 3);
    w.push(3);
    got = w.pop_for(std::chrono::hours::max());
    REQUIRE(got.has_value());
    check_window_of_seqs(*got, 3, 3);
    std::stop_source stop;
    stop.request_stop();
    CHECK_FALSE(w.pop_for(std::chrono::hours::max(), stop.get_token()).has_value());
    CHECK_THROWS_WITH(w.pop_for(std::chrono::hours::min()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(w.pop_for(-1s, stop.get_token()), Catch::Contains("timeout"));
}

TEST_CASE("sliding_window: pop_for with a NaN timeout throws naming it") {
    sliding_window<std::uint64_t> w(3, 1);
    std::stop_source never;
    const auto nan = std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_WITH(w.pop_for(nan), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(w.pop_for(nan, never.get_token()), Catch::Contains("timeout"));
}

TEST_CASE("sliding_window<bool>: items are read by value, not through a dangling reference") {
    // The items are a std::vector<bool>, whose elements are bits: operator[], front() and back()
    // return its const_reference (a bool), not a const bool& to a temporary.
    STATIC_REQUIRE(std::is_same_v<window<bool>::const_reference, bool>);
    STATIC_REQUIRE(std::is_same_v<window<int>::const_reference, const int&>);
    sliding_window<bool> w(3, 3);
    REQUIRE(w.push(true) == push_status::ok);
    REQUIRE(w.push(false) == push_status::ok);
    REQUIRE(w.push(true) == push_status::ok);
    auto win = w.try_pop();
    REQUIRE(win.has_value());
    CHECK(win->front());
    CHECK_FALSE((*win)[1]);
    CHECK(win->back());
    CHECK(std::count(win->begin(), win->end(), true) == 2);
}
