// Tests of framepipe/metrics.hpp: latency_histogram buckets and quantiles, rate_meter.
#include <framepipe/metrics.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using framepipe::latency_histogram;
using framepipe::rate_meter;

TEST_CASE("latency_histogram: every value falls inside its bucket, buckets tile the range") {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 100000; ++i) {
        const std::uint64_t v = rng() >> (rng() % 64);
        const auto b = latency_histogram::index_of(v);
        REQUIRE(b < latency_histogram::bucket_count);
        REQUIRE(latency_histogram::lower_bound_of(b) <= v);
        REQUIRE(v - latency_histogram::lower_bound_of(b) < latency_histogram::width_of(b));
    }
    for (std::size_t b = 0; b + 1 < latency_histogram::bucket_count; ++b) {
        REQUIRE(latency_histogram::lower_bound_of(b) + latency_histogram::width_of(b) ==
                latency_histogram::lower_bound_of(b + 1));
    }
    REQUIRE(latency_histogram::index_of(UINT64_MAX) == latency_histogram::bucket_count - 1);
}

TEST_CASE("latency_histogram: relative bucket width is at most 1/16") {
    for (std::size_t b = latency_histogram::sub_buckets; b < latency_histogram::bucket_count; ++b) {
        REQUIRE(latency_histogram::width_of(b) * 16 <= latency_histogram::lower_bound_of(b));
    }
}

TEST_CASE("latency_histogram: quantiles of a known distribution within bucket error") {
    latency_histogram h;
    REQUIRE(h.quantile(0.5) == 0ns);
    // 1..1000 microseconds, once each.
    for (int us = 1; us <= 1000; ++us) {
        h.record(std::chrono::microseconds(us));
    }
    REQUIRE(h.count() == 1000);
    REQUIRE(h.sum() == std::chrono::microseconds(1000 * 1001 / 2));
    auto near = [](std::chrono::nanoseconds got, std::chrono::nanoseconds want) {
        const double err = std::abs(static_cast<double>(got.count() - want.count()));
        return err <= static_cast<double>(want.count()) / 16.0;
    };
    CHECK(near(h.quantile(0.50), 500us));
    CHECK(near(h.quantile(0.95), 950us));
    CHECK(near(h.quantile(0.99), 990us));
    CHECK(near(h.quantile(0.0), 1us));
    CHECK(near(h.quantile(1.0), 1000us));
}

TEST_CASE("latency_histogram: a quantile is the nearest rank, ceil(q * count)") {
    // 31 samples at 1 us, 2 at 1 ms: the 0.95-quantile is the 32nd sample (ceil(31.35)), 1 ms;
    // rounding the rank took the 31st. A product meant to be whole keeps its rank: with 100
    // samples, 95 at 1 us, the 0.95-quantile is the 95th, not the 96th.
    const auto near = [](std::chrono::nanoseconds got, std::chrono::nanoseconds want) {
        return latency_histogram::index_of(static_cast<std::uint64_t>(got.count())) ==
               latency_histogram::index_of(static_cast<std::uint64_t>(want.count()));
    };
    latency_histogram h;
    for (int i = 0; i < 31; ++i) {
        h.record(1us);
    }
    h.record(1ms);
    h.record(1ms);
    CHECK(near(h.quantile(0.95), 1ms));
    CHECK(near(h.quantile(0.93), 1us)); // ceil(30.69) = 31
    latency_histogram k;
    for (int i = 0; i < 100; ++i) {
        k.record(i < 95 ? 1us : 1ms);
    }
    CHECK(near(k.quantile(0.95), 1us));
    CHECK(near(k.quantile(0.96), 1ms));
    CHECK(near(k.quantile(0.0), 1us));
    CHECK(near(k.quantile(1.0), 1ms));
}

TEST_CASE("latency_histogram: negative durations count as zero") {
    latency_histogram h;
    h.record(-5ns);
    REQUIRE(h.count() == 1);
    REQUIRE(h.quantile(0.5) == 0ns);
}

TEST_CASE("latency_histogram: concurrent records are all counted") {
    latency_histogram h;
    std::vector<std::jthread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&h, t] {
            for (int i = 0; i < 10000; ++i) {
                h.record(std::chrono::nanoseconds(t * 1000 + i));
            }
        });
    }
    threads.clear();
    REQUIRE(h.count() == 40000);
    // Thread t recorded t * 1000 * 10000 + (0 + ... + 9999) ns.
    REQUIRE(h.sum() == std::chrono::nanoseconds((0 + 1 + 2 + 3) * 1000 * 10000 + 4 * 49995000));
}

TEST_CASE("latency_histogram: the sum saturates at nanoseconds::max() instead of wrapping") {
    // The sum was a uint64 read back as an int64: it went negative past 292 years.
    using std::chrono::nanoseconds;
    latency_histogram two;
    two.record(nanoseconds::max());
    two.record(nanoseconds::max());
    CHECK(two.sum() == nanoseconds::max());
    two.record(1ns);
    CHECK(two.sum() == nanoseconds::max());
    CHECK(two.count() == 3);

    // The age of an item stamped with a default time_point on a machine up for 20 days.
    const auto age = std::chrono::hours(24 * 20);
    latency_histogram many;
    for (int i = 0; i < 5000; ++i) { // 5000 x 20 days is still below the maximum
        many.record(age);
    }
    CHECK(many.sum() == 5000 * age);
    for (int i = 0; i < 1000; ++i) {
        many.record(age);
    }
    CHECK(many.sum() == nanoseconds::max());
}

TEST_CASE("latency_histogram: quantile clamps q to [0, 1] and takes NaN as 0") {
    // NaN went through the clamp into a float-to-integer conversion (undefined behaviour).
    latency_histogram h;
    h.record(1us);
    h.record(1ms);
    const auto low = h.quantile(0.0);
    const auto high = h.quantile(1.0);
    REQUIRE(low < high);
    CHECK(h.quantile(std::numeric_limits<double>::quiet_NaN()) == low);
    CHECK(h.quantile(-std::numeric_limits<double>::quiet_NaN()) == low);
    CHECK(h.quantile(-1.0) == low);
    CHECK(h.quantile(-std::numeric_limits<double>::infinity()) == low);
    CHECK(h.quantile(2.0) == high);
    CHECK(h.quantile(std::numeric_limits<double>::infinity()) == high);
}

TEST_CASE("rate_meter: events per second over the last two seconds") {
    rate_meter m;
    const auto t0 = rate_meter::clock::time_point{} + 1000s;
    REQUIRE(m.per_second(t0) == 0.0);
    // 30 events a second for 3 seconds.
    for (int i = 0; i < 90; ++i) {
        m.record(t0 + std::chrono::nanoseconds(std::int64_t{i} * 1'000'000'000 / 30));
    }
    REQUIRE(m.count() == 90);
    const auto end = t0 + 3s;
    CHECK(m.per_second(end) == Approx(30.0).margin(1.0));
    // Nothing for 5 more seconds: the window is empty.
    CHECK(m.per_second(end + 5s) == 0.0);
}

TEST_CASE("busy_meter: the share of the last two seconds spent on items; it falls when idle") {
    // busy_ratio was a figure since the start, counted up to the end of the last item: a stage
    // that went idle kept its last figure for good, and one that got faster read saturated long
    // after (review).
    framepipe::busy_meter m;
    const auto t0 = framepipe::busy_meter::clock::time_point{} + 1000s;
    CHECK(m.share(t0) == 0.0);
    // 20 items of 90 ms, one every 100 ms, for 2 s: 90 % busy.
    for (int i = 1; i <= 20; ++i) {
        m.record(t0 + std::chrono::milliseconds(100 * i), 90ms);
    }
    const auto end = t0 + 2s;
    CHECK(m.share(end) == Approx(0.9).margin(0.01));
    // Idle from then on: half the window later, half the share; a window later, none.
    CHECK(m.share(end + 1s) == Approx(0.45).margin(0.01));
    CHECK(m.share(end + 2s + 1ms) == 0.0);
    // 10 ms items every 100 ms: the share follows within a window.
    for (int i = 1; i <= 20; ++i) {
        m.record(end + 5s + std::chrono::milliseconds(100 * i), 10ms);
    }
    CHECK(m.share(end + 7s) == Approx(0.1).margin(0.01));
}

TEST_CASE("busy_meter: a share stays in [0, 1]; an item longer than the window counts as it") {
    framepipe::busy_meter m;
    const auto t0 = framepipe::busy_meter::clock::time_point{} + 1000s;
    m.record(t0, -5ms); // none
    CHECK(m.share(t0) == 0.0);
    m.record(t0 + 10s, 1h); // longer than the window: the window, not an overflow of a record
    CHECK(m.share(t0 + 10s) == 1.0);
    // Two workers' worth recorded on one meter cannot read above 1.
    framepipe::busy_meter two;
    for (int i = 1; i <= 40; ++i) {
        two.record(t0 + std::chrono::milliseconds(50 * i), 100ms);
    }
    CHECK(two.share(t0 + 2s) == 1.0);
    // Many short items, more than the history: the share over the span of the last ones.
    framepipe::busy_meter fast;
    for (int i = 1; i <= 2000; ++i) {
        fast.record(t0 + std::chrono::microseconds(500 * i), 250us);
    }
    CHECK(fast.share(t0 + 1s) == Approx(0.5).epsilon(0.02));
}

TEST_CASE("busy_meter: an item under way counts from its start, until it is recorded or "
          "abandoned") {
    // Each item counted only once it ended: a worker in the middle of an item longer than the
    // window read as idle, then as saturated.
    framepipe::busy_meter m;
    const auto t0 = framepipe::busy_meter::clock::time_point{} + 1000s;
    m.begin_item(t0);
    CHECK(m.share(t0) == 0.0);
    CHECK(m.share(t0 + 500ms) == Approx(0.25).margin(1e-9));
    CHECK(m.share(t0 + 1h) == 1.0); // longer than the window: the window
    // Recorded: the record counts it, and it no longer counts as under way.
    m.record(t0 + 1s, 1s);
    CHECK(m.share(t0 + 1s) == Approx(0.5).margin(1e-9));
    CHECK(m.share(t0 + 2s) == Approx(0.5).margin(1e-9));
    // One that failed: it counted while it ran, and not after.
    m.begin_item(t0 + 2s);
    CHECK(m.share(t0 + 2500ms) == Approx(0.75).margin(1e-9));
    m.abandon_item();
    CHECK(m.share(t0 + 2500ms) == Approx(0.5).margin(1e-9));
    // A start at either end of the clock does not overflow.
    framepipe::busy_meter ends;
    ends.begin_item(framepipe::busy_meter::clock::time_point::min() + 1ns);
    CHECK(ends.share(framepipe::busy_meter::clock::time_point::max()) == 1.0);
    ends.begin_item(framepipe::busy_meter::clock::time_point::max());
    CHECK(ends.share(framepipe::busy_meter::clock::time_point::min()) == 0.0);
}

TEST_CASE("rate_meter: rates above the history use the span of the last events") {
    rate_meter m;
    const auto t0 = rate_meter::clock::time_point{} + 1000s;
    // 1000 events a second for one second: more than the 256 remembered.
    for (int i = 0; i < 1000; ++i) {
        m.record(t0 + std::chrono::microseconds(i * 1000));
    }
    CHECK(m.per_second(t0 + 1s) == Approx(1000.0).epsilon(0.02));
}

TEST_CASE("rate_meter: exactly `history` records in the window are counted over the window") {
    // With exactly `history` records in the window the rate was taken over their span, as if
    // more had fallen in it: a burst of 256 read as 256 / 1 ms instead of 256 / 2 s.
    const auto t0 = rate_meter::clock::time_point{} + 1000s;
    const auto burst = [&](rate_meter& m, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            m.record(t0 + std::chrono::microseconds(i));
        }
    };
    rate_meter exact;
    burst(exact, rate_meter::history);
    CHECK(exact.per_second(t0 + 1ms) == Approx(128.0));
    rate_meter fewer;
    burst(fewer, rate_meter::history - 1);
    CHECK(fewer.per_second(t0 + 1ms) == Approx(127.5));
    // Older records outside the window do not count.
    rate_meter after_old;
    for (int i = 0; i < 100; ++i) {
        after_old.record(t0 - 100s + std::chrono::milliseconds(i));
    }
    burst(after_old, rate_meter::history);
    CHECK(after_old.per_second(t0 + 1ms) == Approx(128.0));
    // One more than the history: the last `history` over the time from the oldest of them
    // (t0 + 1 us) to now.
    rate_meter more;
    burst(more, rate_meter::history + 1);
    CHECK(more.per_second(t0 + 1ms) == Approx(256.0 / 999e-6));
}

TEST_CASE("rate_meter: records later than `now` are not in the window ending at `now`") {
    const auto t0 = rate_meter::clock::time_point{} + 1000s;
    rate_meter few;
    few.record(t0);
    few.record(t0 + 1s);
    few.record(t0 + 3s);
    CHECK(few.per_second(t0 + 1s) == Approx(1.0)); // t0 and t0 + 1 s
    // 1000 a second for half a second, read at 400 ms: the last 256 up to then span 255 ms. The
    // newest 256 used to be taken, 100 of them after now: 1641 a second.
    rate_meter many;
    for (int i = 0; i < 500; ++i) {
        many.record(t0 + std::chrono::milliseconds(i));
    }
    CHECK(many.per_second(t0 + 400ms) == Approx(256.0 / 0.255));
}

TEST_CASE("rate_meter: a read while the writer records counts only records of the window") {
    // The writer records flat out at times 1 ms apart (1000 a second); the reader asks for the
    // rate a few records past the writer's latest. Whatever the interleaving, the reader must
    // count distinct records of the window, so it cannot report more than `history` records
    // over the `history - 1` ms they span at least. The reader used to take the time the writer
    // had just stored in the slot it read last for the oldest: the span shrank to a few ms and
    // the rate came out 50 to 250 times too high.
    using std::chrono::milliseconds;
    const auto t0 = rate_meter::clock::time_point{} + 1000s;
    const auto at = [t0](std::uint64_t i) {
        return t0 + milliseconds(static_cast<std::int64_t>(i));
    };
    rate_meter m;
    std::atomic<std::uint64_t> recorded{0};
    std::atomic<bool> stop{false};
    std::jthread writer([&] {
        for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
            m.record(at(i));
            recorded.store(i + 1, std::memory_order_release);
        }
    });
    while (recorded.load(std::memory_order_acquire) < 2 * rate_meter::history) {
    }
    // 1003.9 a second, reached when the newest record is at `now`; 5% for rounding.
    const double bound = 1.05 * static_cast<double>(rate_meter::history) /
                         (static_cast<double>(rate_meter::history - 1) * 1e-3);
    double highest = 0;
    int overlapped = 0; // reads during which the writer recorded
    for (int r = 0; r < 200000 && overlapped < 20000 && highest <= bound; ++r) {
        const auto latest = recorded.load(std::memory_order_acquire);
        highest = std::max(highest, m.per_second(at(latest + 3)));
        overlapped += recorded.load(std::memory_order_relaxed) != latest ? 1 : 0;
    }
    stop.store(true, std::memory_order_relaxed);
    INFO("highest rate read: " << highest << " a second; reads the writer overlapped: "
                               << overlapped);
    CHECK(highest <= bound);
    CHECK(highest > 500.0); // some reads took the span of the history, as the writer's rate asks
}

TEST_CASE("rate_meter: a window that would begin before time_point::min() begins there") {
    // now - window would overflow for a `now` within two seconds of min(): the window then
    // starts at min() instead of wrapping to the far future (which read as an empty window).
    rate_meter m;
    const auto min = rate_meter::clock::time_point::min();
    m.record(min + 1s);
    CHECK(m.per_second(min + 1s) == Approx(0.5));
    CHECK(m.per_second(min) == 0.0); // the record is later than `now`
}
