// Tests of framepipe/metrics.hpp: latency_histogram buckets and quantiles, rate_meter.
#include <framepipe/metrics.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
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

TEST_CASE("rate_meter: rates above the history use the span of the last events") {
    rate_meter m;
    const auto t0 = rate_meter::clock::time_point{} + 1000s;
    // 1000 events a second for one second: more than the 256 remembered.
    for (int i = 0; i < 1000; ++i) {
        m.record(t0 + std::chrono::microseconds(i * 1000));
    }
    CHECK(m.per_second(t0 + 1s) == Approx(1000.0).epsilon(0.02));
}
