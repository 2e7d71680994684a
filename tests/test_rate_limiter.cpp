// tests/test_rate_limiter.cpp - framepipe::rate_limiter.
//
// The contract under test is the comment block of include/framepipe/rate_limiter.hpp and the
// rate_limiter section of the fan-out brief: slots of 1/hz anchored at the first call, one token
// per slot up to `burst`; exact decimation of a steady 30 fps source; no drift; the documented
// contrast with the naive rule `now - last >= interval`; the bound floor(hz * L) + burst + 1;
// set_rate from the next slot; acquire() pacing and stop; bad arguments; thread safety.
// Accuracy is proven with explicit time points; no test sleeps or asserts on elapsed time.

#include <atomic>

#include "support/parked.hpp"
#include "support/wait_until.hpp"

// Holds one call at a test seam of rate_limiter (detail/config.hpp): once armed, the next call to
// reach the seam waits there until `release` is set, so that another thread can take the limiter
// over or change its rate meanwhile.
struct seam_hold {
    std::atomic<bool> armed{false};
    std::atomic<bool> inside{false}; // a call is held at the seam
    std::atomic<bool> release{false};
    // Holds the next call to reach the seam (forgetting the last hold).
    void arm() noexcept {
        inside = false;
        release = false;
        armed = true;
    }
    void run() noexcept {
        if (armed.load(std::memory_order_relaxed) && armed.exchange(false)) {
            inside.store(true);
            framepipe_test::wait_until([this] { return release.load(); });
        }
    }
};
// Inside the owner's section, after it read the word and before it stores the new one.
inline seam_hold owned_admit_hook;
// Before the owner marks its section: after try_acquire() found it the owner.
inline seam_hold owner_entry_hook;
// On a non-owner's lock-free path: after it read the word, before it reads the configuration.
inline seam_hold shared_decide_hook;
#define FRAMEPIPE_DETAIL_OWNED_ADMIT_HOOK() ::owned_admit_hook.run()
#define FRAMEPIPE_DETAIL_OWNER_ENTRY_HOOK() ::owner_entry_hook.run()
#define FRAMEPIPE_DETAIL_SHARED_DECIDE_HOOK() ::shared_decide_hook.run()

#include <framepipe/rate_limiter.hpp>

// Who may write a limiter's word, as the tests see it.
namespace framepipe::detail {
struct rate_limiter_access {
    enum class owner { nobody, this_thread, other_thread, taking_over, shared };
    static owner of(const rate_limiter& l) noexcept {
        const void* const o = l.owner_.load();
        if (o == nullptr) {
            return owner::nobody;
        }
        if (o == this_thread_tag()) {
            return owner::this_thread;
        }
        if (o == rate_limiter::shared_mark()) {
            return owner::shared;
        }
        if (o == rate_limiter::revoking_mark()) {
            return owner::taking_over;
        }
        return owner::other_thread;
    }
    // Whether a limiter can have an owner here (membarrier is there), as rate_limiter decides.
    static bool biasable(const rate_limiter&) noexcept {
        return asymmetric_barrier::enable();
    }
};
} // namespace framepipe::detail

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <latch>
#include <limits>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace {

using framepipe::rate_limiter;
using clock_type = rate_limiter::clock;
using time_point = clock_type::time_point;
using std::chrono::microseconds;
using std::chrono::nanoseconds;
using namespace std::chrono_literals;

// An arbitrary origin for simulated time, far from the clock's epoch.
const time_point sim_t0 = time_point{} + 1h + 123'456'789ns;

// How the timestamps of a steady 30 fps source are rounded.
enum class rounding { nearest_ns, nearest_us, truncated_us };

const char* name_of(rounding r) {
    switch (r) {
    case rounding::nearest_ns:
        return "nearest ns";
    case rounding::nearest_us:
        return "nearest us";
    case rounding::truncated_us:
        return "truncated us";
    }
    return "?";
}

// Capture time of frame i of a steady 30 fps source starting at t0: t0 + round(i * 1e9 / 30) ns,
// or the same rounded (or truncated) to the microsecond.
time_point frame_time(time_point t0, std::int64_t i, rounding r) {
    const double exact_ns = static_cast<double>(i) * 1e9 / 30.0;
    switch (r) {
    case rounding::nearest_ns:
        return t0 + nanoseconds{std::llround(exact_ns)};
    case rounding::nearest_us:
        return t0 + microseconds{std::llround(exact_ns / 1000.0)};
    case rounding::truncated_us:
        return t0 + microseconds{i * 1'000'000 / 30};
    }
    return t0;
}

std::vector<time_point> steady_30fps(time_point t0, std::int64_t frames, rounding r) {
    std::vector<time_point> out;
    out.reserve(static_cast<std::size_t>(frames));
    for (std::int64_t i = 0; i < frames; ++i) {
        out.push_back(frame_time(t0, i, r));
    }
    return out;
}

// A 30 fps source with uniform +-5 ms jitter on every arrival (fixed seed, so reproducible).
std::vector<time_point> jittered_30fps(time_point t0, std::int64_t frames, std::uint32_t seed) {
    std::mt19937 gen(seed);
    std::uniform_int_distribution<std::int64_t> jitter_ns(-5'000'000, 5'000'000);
    std::vector<time_point> out;
    out.reserve(static_cast<std::size_t>(frames));
    for (std::int64_t i = 0; i < frames; ++i) {
        out.push_back(frame_time(t0, i, rounding::nearest_ns) + nanoseconds{jitter_ns(gen)});
    }
    return out;
}

// Indices of the arrivals a fresh limiter admits.
std::vector<std::size_t> limiter_admits(double hz, std::size_t burst,
                                        const std::vector<time_point>& arrivals) {
    rate_limiter lim(hz, burst);
    std::vector<std::size_t> admitted;
    for (std::size_t i = 0; i < arrivals.size(); ++i) {
        if (lim.try_acquire(arrivals[i])) {
            admitted.push_back(i);
        }
    }
    return admitted;
}

// Indices the naive rule `now - last_admitted >= 1/hz` admits (the documented contrast).
std::vector<std::size_t> naive_admits(double hz, const std::vector<time_point>& arrivals) {
    const double interval_ns = 1e9 / hz;
    std::vector<std::size_t> admitted;
    for (std::size_t i = 0; i < arrivals.size(); ++i) {
        const bool first = admitted.empty();
        if (first || static_cast<double>((arrivals[i] - arrivals[admitted.back()]).count()) >=
                         interval_ns) {
            admitted.push_back(i);
        }
    }
    return admitted;
}

std::vector<time_point> times_of(const std::vector<std::size_t>& indices,
                                 const std::vector<time_point>& arrivals) {
    std::vector<time_point> out;
    out.reserve(indices.size());
    for (const std::size_t i : indices) {
        out.push_back(arrivals[i]);
    }
    return out;
}

// The most admissions in a closed interval [a, a + L] starting at an admission `a`.
// `admitted` must be sorted.
std::size_t max_in_window(const std::vector<time_point>& admitted, nanoseconds length) {
    std::size_t best = 0;
    std::size_t end = 0;
    for (std::size_t begin = 0; begin < admitted.size(); ++begin) {
        end = std::max(end, begin);
        while (end < admitted.size() && admitted[end] <= admitted[begin] + length) {
            ++end;
        }
        best = std::max(best, end - begin);
    }
    return best;
}

// floor(hz * L) with L in nanoseconds; the epsilon keeps an exact integer product from rounding
// down to the integer below (which would make the documented bound stricter than it is).
std::size_t floor_hz_times(double hz, nanoseconds length) {
    return static_cast<std::size_t>(
        std::floor(hz * static_cast<double>(length.count()) / 1e9 + 1e-9));
}

// The what() of the std::invalid_argument `f` throws (another exception type propagates).
template <class F>
std::string invalid_argument_message(F f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "<no std::invalid_argument thrown>";
}

} // namespace

// --- Construction and observers. ---

TEST_CASE("rate_limiter: rate() and burst() report what was given") {
    const rate_limiter a(15.0);
    CHECK(a.rate() == 15.0);
    CHECK(a.burst() == 1);

    const rate_limiter b(29.97, 3);
    CHECK(b.rate() == 29.97);
    CHECK(b.burst() == 3);
}

TEST_CASE("rate_limiter: bad hz throws invalid_argument naming hz") {
    const double bad = GENERATE(0.0, -1.0, -0.001, std::numeric_limits<double>::quiet_NaN(),
                                std::numeric_limits<double>::infinity(),
                                -std::numeric_limits<double>::infinity());
    INFO("hz = " << bad);

    CHECK_THAT(invalid_argument_message([bad] {
                   rate_limiter lim(bad);
                   (void)lim;
               }),
               Catch::Matchers::Contains("hz"));
    CHECK_THAT(invalid_argument_message([bad] {
                   rate_limiter lim(bad, 3);
                   (void)lim;
               }),
               Catch::Matchers::Contains("hz"));

    SECTION("set_rate throws naming hz and leaves the rate and the schedule unchanged") {
        rate_limiter lim(10.0); // slots of 100 ms
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        CHECK_THAT(invalid_argument_message([&lim, bad, a] { lim.set_rate(bad, a); }),
                   Catch::Matchers::Contains("hz"));
        CHECK(lim.rate() == 10.0);
        // Still 100 ms slots: a rejected set_rate must not become a pending change either.
        CHECK(lim.try_acquire(a + 100ms));
        CHECK_FALSE(lim.try_acquire(a + 150ms));
        CHECK(lim.try_acquire(a + 200ms));
        CHECK_FALSE(lim.try_acquire(a + 290ms));
        CHECK(lim.try_acquire(a + 300ms));
    }

    SECTION("a rejected set_rate keeps an earlier pending change") {
        rate_limiter lim(10.0);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        lim.set_rate(2.0, a); // from the next slot (a + 100 ms) slots of 500 ms
        CHECK_THROWS_AS(lim.set_rate(bad, a), std::invalid_argument);
        CHECK(lim.rate() == 2.0);
        CHECK(lim.try_acquire(a + 100ms));
        CHECK_FALSE(lim.try_acquire(a + 590ms));
        CHECK(lim.try_acquire(a + 600ms));
    }
}

TEST_CASE("rate_limiter: bad burst throws invalid_argument naming burst") {
    CHECK_THAT(invalid_argument_message([] {
                   rate_limiter lim(10.0, 0);
                   (void)lim;
               }),
               Catch::Matchers::Contains("burst"));
    if constexpr (sizeof(std::size_t) > sizeof(std::uint32_t)) {
        // Above 2^32 (the header's limit); also the largest size_t.
        constexpr std::size_t above = std::size_t{std::numeric_limits<std::uint32_t>::max()} + 2;
        CHECK_THAT(invalid_argument_message([] {
                       rate_limiter lim(10.0, above);
                       (void)lim;
                   }),
                   Catch::Matchers::Contains("burst"));
        CHECK_THAT(invalid_argument_message([] {
                       rate_limiter lim(10.0, std::numeric_limits<std::size_t>::max());
                       (void)lim;
                   }),
                   Catch::Matchers::Contains("burst"));
    }
    // The largest 32-bit burst is accepted.
    const rate_limiter big(10.0, std::numeric_limits<std::uint32_t>::max());
    CHECK(big.burst() == std::numeric_limits<std::uint32_t>::max());
}

// --- Slots anchored at the first call. ---

TEST_CASE("rate_limiter: the first call is admitted and anchors the slots") {
    rate_limiter lim(10.0); // slots of 100 ms
    const time_point a = sim_t0 + 37ms;
    CHECK(lim.try_acquire(a));
    CHECK_FALSE(lim.try_acquire(a));
    CHECK_FALSE(lim.try_acquire(a + 99ms));
    CHECK(lim.try_acquire(a + 100ms)); // slot 1 starts 100 ms after the first call
    CHECK_FALSE(lim.try_acquire(a + 100ms));
    CHECK_FALSE(lim.try_acquire(a + 199ms));
    CHECK(lim.try_acquire(a + 200ms));
}

TEST_CASE("rate_limiter: slots are anchored, not restarted at each admission") {
    rate_limiter lim(10.0);
    const time_point a = sim_t0;
    REQUIRE(lim.try_acquire(a));
    // Admitted late in slot 1 ...
    CHECK(lim.try_acquire(a + 190ms));
    // ... and again at the start of slot 2, only 10 ms later (the naive rule would wait 100 ms).
    CHECK(lim.try_acquire(a + 200ms));
    CHECK_FALSE(lim.try_acquire(a + 290ms));
    CHECK(lim.try_acquire(a + 300ms));
}

TEST_CASE("rate_limiter: slot boundaries absorb clock rounding of a hair") {
    rate_limiter lim(10.0); // boundaries widened by 100 ms / 1000 = 100 us
    const time_point a = sim_t0;
    REQUIRE(lim.try_acquire(a));
    CHECK_FALSE(lim.try_acquire(a + 100ms - 150us)); // well before the boundary
    CHECK(lim.try_acquire(a + 100ms - 50us));        // a hair before it: belongs to slot 1
    CHECK_FALSE(lim.try_acquire(a + 100ms));         // same slot, token used
}

TEST_CASE("rate_limiter: a time point that goes backwards falls in the current slot") {
    SECTION("burst 1: no extra token, and the schedule does not move") {
        rate_limiter lim(10.0);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        REQUIRE(lim.try_acquire(a + 100ms));
        CHECK_FALSE(lim.try_acquire(a + 50ms));
        CHECK_FALSE(lim.try_acquire(a - 1h));
        CHECK_FALSE(lim.try_acquire(a + 199ms));
        CHECK(lim.try_acquire(a + 200ms));
    }
    SECTION("burst 3: it may use the token of the current slot, but no more") {
        rate_limiter lim(10.0, 3);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        REQUIRE(lim.try_acquire(a));
        REQUIRE(lim.try_acquire(a));
        REQUIRE_FALSE(lim.try_acquire(a));
        // Two slots begin (two tokens); one is used, then a call carries an earlier time point:
        // it falls in the current slot (slot 2) and may use that slot's remaining token.
        CHECK(lim.try_acquire(a + 250ms));
        CHECK(lim.try_acquire(a + 50ms));
        CHECK_FALSE(lim.try_acquire(a + 60ms));
        CHECK_FALSE(lim.try_acquire(a + 299ms));
        CHECK(lim.try_acquire(a + 300ms));
    }
}

TEST_CASE("rate_limiter: try_acquire() decides on steady_clock::now()") {
    rate_limiter lim(0.001); // slots of 1000 s, boundary widened by 1 s
    const time_point before = clock_type::now();
    CHECK(lim.try_acquire());
    const time_point after = clock_type::now();
    CHECK_FALSE(lim.try_acquire());
    // The anchor is a steady_clock reading taken between `before` and `after`.
    CHECK_FALSE(lim.try_acquire(before + 998s));
    CHECK(lim.try_acquire(after + 1000s));
}

// --- Accuracy on a steady 30 fps source. ---

TEST_CASE("rate_limiter: decimates a steady 30 fps source to 15, 10 and 5 fps exactly") {
    const rounding r = GENERATE(rounding::nearest_ns, rounding::nearest_us, rounding::truncated_us);
    const auto [t0, t0_name] = GENERATE(table<time_point, const char*>({
        {time_point{}, "clock epoch"},
        {sim_t0, "epoch + 1 h + 123456789 ns"},
        {clock_type::now(), "steady_clock::now()"},
    }));
    const int target = GENERATE(15, 10, 5);
    const std::size_t every = static_cast<std::size_t>(30 / target);
    INFO("timestamps rounded to " << name_of(r) << ", t0 = " << t0_name << ", target " << target
                                  << " fps (every " << every << " frames)");

    const std::int64_t frames = 30 * 600; // ten simulated minutes
    const auto arrivals = steady_30fps(t0, frames, r);
    rate_limiter lim(static_cast<double>(target));
    std::size_t wrong = 0;
    std::size_t first_wrong = 0;
    std::size_t admitted = 0;
    for (std::size_t i = 0; i < arrivals.size(); ++i) {
        const bool got = lim.try_acquire(arrivals[i]);
        admitted += got ? 1 : 0;
        if (got != (i % every == 0)) {
            first_wrong = wrong == 0 ? i : first_wrong;
            ++wrong;
        }
    }
    INFO("first wrong decision at frame " << first_wrong);
    CHECK(wrong == 0);
    CHECK(admitted == static_cast<std::size_t>(frames) / every);
}

TEST_CASE("rate_limiter: 30 to 7 fps admits 7 a second with no drift over an hour") {
    const rounding r = GENERATE(rounding::nearest_ns, rounding::nearest_us, rounding::truncated_us);
    INFO("timestamps rounded to " << name_of(r));

    const std::int64_t seconds = 3600;
    const auto arrivals = steady_30fps(sim_t0, 30 * seconds, r);
    const auto admitted = limiter_admits(7.0, 1, arrivals);

    // 7 +- 1 in every whole second [t0 + s, t0 + s + 1 s).
    std::vector<std::size_t> per_second(static_cast<std::size_t>(seconds), 0);
    for (const std::size_t i : admitted) {
        // Every frame of the hour lies in [t0, t0 + 3600 s).
        const auto s = std::chrono::floor<std::chrono::seconds>(arrivals[i] - sim_t0).count();
        ++per_second.at(static_cast<std::size_t>(s));
    }
    std::size_t bad_seconds = 0;
    std::size_t min_count = 1000;
    std::size_t max_count = 0;
    for (const std::size_t n : per_second) {
        bad_seconds += (n < 6 || n > 8) ? 1 : 0;
        min_count = std::min(min_count, n);
        max_count = std::max(max_count, n);
    }
    INFO("per whole second: min " << min_count << ", max " << max_count);
    CHECK(bad_seconds == 0);

    // No drift: the hour's total is 7 * 3600 +- 1.
    INFO("admitted in the hour: " << admitted.size());
    CHECK(admitted.size() >= 7 * 3600 - 1);
    CHECK(admitted.size() <= 7 * 3600 + 1);

    // Gaps of 4 or 5 source frames, never anything else.
    std::size_t bad_gaps = 0;
    for (std::size_t k = 1; k < admitted.size(); ++k) {
        const std::size_t gap = admitted[k] - admitted[k - 1];
        bad_gaps += (gap == 4 || gap == 5) ? 0 : 1;
    }
    CHECK(bad_gaps == 0);

    // Any one-second window starting at an admission holds at most floor(7) + 1 + 1.
    CHECK(max_in_window(times_of(admitted, arrivals), 1s) <= 9);

    // The documented contrast: the naive rule decimates 30 to 7 fps as 6 fps.
    const auto naive = naive_admits(7.0, arrivals);
    INFO("naive rule admitted in the hour: " << naive.size());
    CHECK(naive.size() == 6 * 3600);
}

TEST_CASE("rate_limiter: jittered 30 fps to 15 fps averages 15 fps, the naive rule does not") {
    const double minutes = 10.0;
    const std::int64_t frames = 30 * 60 * 10;
    const auto arrivals = jittered_30fps(sim_t0, frames, 20240611u);

    const auto admitted = limiter_admits(15.0, 1, arrivals);
    const double limiter_fps = static_cast<double>(admitted.size()) / (minutes * 60.0);
    const auto naive = naive_admits(15.0, arrivals);
    const double naive_fps = static_cast<double>(naive.size()) / (minutes * 60.0);
    INFO("limiter: " << admitted.size() << " frames = " << limiter_fps << " fps; naive rule: "
                     << naive.size() << " frames = " << naive_fps << " fps");

    CHECK(limiter_fps >= 14.5);
    CHECK(limiter_fps <= 15.5);
    CHECK(naive_fps < 13.0);
    // The bound holds on these arrivals too.
    const auto when = times_of(admitted, arrivals);
    CHECK(max_in_window(when, 1s) <= floor_hz_times(15.0, 1s) + 1 + 1);
}

// --- The documented bound. ---

TEST_CASE("rate_limiter: in any interval of length L at most floor(hz * L) + burst + 1") {
    const std::size_t burst = GENERATE(std::size_t{1}, std::size_t{3});
    const double hz = GENERATE(15.0, 7.0, 29.97);
    INFO("hz " << hz << ", burst " << burst);

    // Random arrivals, denser than the rate on average: clusters at one time point, short gaps,
    // and now and then an idle spell long enough to refill the burst.
    const double period_ns = 1e9 / hz;
    std::mt19937 gen(static_cast<std::uint32_t>(hz * 100.0) + static_cast<std::uint32_t>(burst));
    std::uniform_int_distribution<int> kind(0, 99);
    std::uniform_real_distribution<double> fraction(0.0, 1.0);
    std::vector<time_point> arrivals;
    time_point t = sim_t0;
    for (int n = 0; n < 20'000; ++n) {
        const int k = kind(gen);
        double gap_ns = 0.0;
        if (k < 2) {
            gap_ns = period_ns * (2.0 + 6.0 * fraction(gen)); // idle spell
        } else if (k >= 20) {
            gap_ns = period_ns * 0.5 * fraction(gen); // short gap; else same time point
        }
        t += nanoseconds{std::llround(gap_ns)};
        arrivals.push_back(t);
    }
    const auto admitted = times_of(limiter_admits(hz, burst, arrivals), arrivals);
    REQUIRE(admitted.size() > 100);

    const auto p = [period_ns](double periods) {
        return nanoseconds{std::llround(periods * period_ns)};
    };
    const nanoseconds whole_run = admitted.back() - admitted.front();
    const std::vector<nanoseconds> lengths{
        0ns, p(0.5), p(1.0), p(1.01), p(2.5), p(10.0), 1s, 7'300ms, 60s, whole_run};
    for (const nanoseconds length : lengths) {
        const std::size_t limit = floor_hz_times(hz, length) + burst + 1;
        const std::size_t most = max_in_window(admitted, length);
        INFO("L = " << length.count() << " ns: most admitted " << most << ", bound " << limit);
        CHECK(most <= limit);
        // The arrivals are dense enough that the bound is what limits them (else this proves
        // nothing): over short windows the busiest one reaches at least floor(hz * L). (Long
        // windows include idle spells, whose slots go unused.)
        if (length <= p(10.0)) {
            CHECK(most >= floor_hz_times(hz, length));
        }
    }
}

// --- burst. ---

TEST_CASE("rate_limiter: after an idle spell up to burst admissions in a row, then the rate") {
    const std::size_t burst = GENERATE(std::size_t{1}, std::size_t{3}, std::size_t{5});
    INFO("burst " << burst);
    rate_limiter lim(10.0, burst); // slots of 100 ms
    const time_point a = sim_t0;

    const auto in_a_row = [&lim](time_point at) {
        std::size_t n = 0;
        while (n < 100 && lim.try_acquire(at)) {
            ++n;
        }
        return n;
    };

    CHECK(in_a_row(a) == burst);                                   // full at the start
    CHECK(in_a_row(a + 100ms) == 1);                               // one token per slot
    CHECK(in_a_row(a + 350ms) == std::min<std::size_t>(2, burst)); // two slots: two tokens
    CHECK(in_a_row(a + 10s) == burst);                             // long idle: capped

    // Then the rate: a 100 fps source for the next 10 s gets one frame per slot, at its start.
    std::size_t admitted = 0;
    std::size_t off_slot = 0;
    for (int k = 1; k <= 1000; ++k) {
        if (lim.try_acquire(a + 10s + k * 10ms)) {
            ++admitted;
            off_slot += (k % 10 == 0) ? 0u : 1u;
        }
    }
    CHECK(admitted == 100);
    CHECK(off_slot == 0);
}

// --- set_rate. ---

TEST_CASE("rate_limiter: set_rate keeps the current slot, the new rate applies from the next") {
    SECTION("slowing down: 10 Hz to 2 Hz") {
        rate_limiter lim(10.0);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        lim.set_rate(2.0, a);
        CHECK(lim.rate() == 2.0); // the rate set last, at once
        CHECK_FALSE(lim.try_acquire(a + 50ms));
        CHECK(lim.try_acquire(a + 100ms)); // the current slot kept its 100 ms
        CHECK_FALSE(lim.try_acquire(a + 590ms));
        CHECK(lim.try_acquire(a + 600ms)); // the next slot lasted 500 ms
        CHECK_FALSE(lim.try_acquire(a + 1090ms));
        CHECK(lim.try_acquire(a + 1100ms));
    }
    SECTION("speeding up: 1 Hz to 100 Hz") {
        rate_limiter lim(1.0);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        lim.set_rate(100.0, a);
        CHECK(lim.rate() == 100.0);
        CHECK_FALSE(lim.try_acquire(a + 500ms));
        CHECK_FALSE(lim.try_acquire(a + 990ms)); // the current slot kept its 1 s
        CHECK(lim.try_acquire(a + 1000ms));
        CHECK_FALSE(lim.try_acquire(a + 1005ms));
        CHECK(lim.try_acquire(a + 1010ms)); // then slots of 10 ms
        CHECK_FALSE(lim.try_acquire(a + 1015ms));
        CHECK(lim.try_acquire(a + 1020ms));
    }
    SECTION("the next call lands after the current slot ended") {
        rate_limiter lim(10.0);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        lim.set_rate(2.0, a);
        CHECK(lim.try_acquire(a + 250ms)); // slot 1 began at a + 100 ms
        CHECK_FALSE(lim.try_acquire(a + 590ms));
        CHECK(lim.try_acquire(a + 600ms));
    }
    SECTION("two changes within one slot: the last one applies") {
        rate_limiter lim(10.0);
        const time_point a = sim_t0;
        REQUIRE(lim.try_acquire(a));
        lim.set_rate(2.0, a);
        lim.set_rate(4.0, a);
        CHECK(lim.rate() == 4.0);
        CHECK(lim.try_acquire(a + 100ms));
        CHECK_FALSE(lim.try_acquire(a + 340ms));
        CHECK(lim.try_acquire(a + 350ms));
    }
    SECTION("decimation stays exact after a change") {
        rate_limiter lim(15.0);
        const time_point t0 = sim_t0;
        std::size_t wrong = 0;
        for (std::int64_t i = 0; i < 300; ++i) {
            const bool got = lim.try_acquire(frame_time(t0, i, rounding::nearest_ns));
            wrong += got != (i % 2 == 0) ? 1u : 0u;
        }
        REQUIRE(wrong == 0);
        lim.set_rate(5.0, frame_time(t0, 299, rounding::nearest_ns)); // frame 300 starts the next slot, from there every 6th
        for (std::int64_t i = 300; i < 3000; ++i) {
            const bool got = lim.try_acquire(frame_time(t0, i, rounding::nearest_ns));
            wrong += got != ((i - 300) % 6 == 0) ? 1u : 0u;
        }
        CHECK(wrong == 0);
    }
}

TEST_CASE("rate_limiter: set_rate before the first call sets the length of the first slot") {
    // No slot has begun yet, so the first slot is "the next slot" and must have the new length.
    rate_limiter lim(1.0);
    lim.set_rate(10.0);
    CHECK(lim.rate() == 10.0);
    const time_point a = sim_t0;
    CHECK(lim.try_acquire(a));
    CHECK_FALSE(lim.try_acquire(a + 50ms));
    CHECK(lim.try_acquire(a + 100ms));
    CHECK(lim.try_acquire(a + 200ms));
    // And a 30 fps source decimated to 10 fps gets every 3rd frame.
    rate_limiter lim2(0.001);
    lim2.set_rate(10.0);
    std::size_t wrong = 0;
    for (std::int64_t i = 0; i < 300; ++i) {
        const bool got = lim2.try_acquire(frame_time(sim_t0, i, rounding::nearest_ns));
        wrong += got != (i % 3 == 0) ? 1u : 0u;
    }
    CHECK(wrong == 0);
}

// --- acquire(). ---

TEST_CASE("rate_limiter: acquire() is admitted at once the first time and takes the token") {
    rate_limiter lim(0.001); // slots of 1000 s
    const time_point before = clock_type::now();
    CHECK(lim.acquire());
    // The token of slot 0 is gone (the anchor is at or after `before`).
    CHECK_FALSE(lim.try_acquire(before + 998s));
    CHECK_FALSE(lim.try_acquire());
}

TEST_CASE("rate_limiter: acquire(stop) with stop already requested returns false, takes nothing") {
    rate_limiter lim(0.001);
    std::stop_source stop;
    stop.request_stop();
    CHECK_FALSE(lim.acquire(stop.get_token()));
    CHECK(lim.try_acquire()); // the first token is still there
    CHECK_FALSE(lim.acquire(stop.get_token()));
}

TEST_CASE("rate_limiter: acquire(stop) returns false when stopped while it waits") {
    rate_limiter lim(0.001); // the next slot is 1000 s away
    REQUIRE(lim.acquire());

    std::stop_source stop;
    constexpr int waiters = 2;
    std::atomic<int> finished{0};
    std::atomic<int> admitted{0};
    std::atomic<long> tids[waiters] = {0, 0};
    std::vector<std::thread> threads;
    for (int w = 0; w < waiters; ++w) {
        threads.emplace_back([&lim, &stop, &finished, &admitted, &tids, w] {
            tids[w] = framepipe_test::parking_id();
            if (lim.acquire(stop.get_token())) {
                admitted.fetch_add(1);
            }
            finished.fetch_add(1);
        });
        // Parked in the limiter before the next starts (so that the futex it sleeps on is its
        // wait, not the other's brief lock): the stop below must wake a sleeping waiter.
        if (!framepipe_test::wait_until_parked(tids[w], lim)) {
            WARN("cannot tell a parked thread here");
        }
    }
    CHECK(finished.load() == 0); // no token for 1000 s: they must be waiting

    stop.request_stop();
    for (auto& th : threads) {
        th.join();
    }
    CHECK(finished.load() == waiters);
    CHECK(admitted.load() == 0);
}

TEST_CASE("rate_limiter: acquire() parks, not spins, once no slot can pass any more") {
    // Anchored at time_point::min() at 1 GHz, the slot index saturates about 9e18 slots later
    // (now, on the steady clock), and no boundary passes after that. acquire() took the next
    // boundary, already past, for its deadline: a wait that ended at once, round and round on the
    // limiter's mutex until the stop (review).
    rate_limiter lim(1e9);
    REQUIRE(lim.try_acquire(clock_type::time_point::min()));
    (void)lim.try_acquire(clock_type::now()); // the saturated index: tokens, then none for good
    while (lim.try_acquire(clock_type::now())) {
    }
    std::stop_source stop;
    std::atomic<long> tid{0};
    std::atomic<int> result{-1};
    std::thread waiter([&] {
        tid = framepipe_test::parking_id();
        result = lim.acquire(stop.get_token()) ? 1 : 0;
    });
    // A spinning acquire() never sleeps in the limiter: this wait would not end (the watchdog
    // would end the test).
    if (!framepipe_test::wait_until_parked(tid, lim)) {
        WARN("cannot tell a parked thread here");
    }
    stop.request_stop();
    waiter.join();
    CHECK(result.load() == 0);
}

// That acquire() waits while there is no token is proven by the stop test above (it cannot
// return true for 1000 s); this one checks that each call is admitted once its slot comes.
TEST_CASE("rate_limiter: acquire() in a loop is admitted slot after slot, from two threads") {
    rate_limiter lim(2000.0); // slots of 0.5 ms, so this takes about 20 ms
    constexpr int per_thread = 20;
    std::atomic<int> admitted{0};
    std::latch start(2);
    const auto loop = [&lim, &admitted, &start] {
        start.arrive_and_wait();
        for (int i = 0; i < per_thread; ++i) {
            if (lim.acquire()) {
                admitted.fetch_add(1);
            }
        }
    };
    std::thread a(loop);
    std::thread b(loop);
    a.join();
    b.join();
    CHECK(admitted.load() == 2 * per_thread);
}

// --- Thread safety. ---

TEST_CASE("rate_limiter: two threads with the same time points admit no more than one would") {
    const std::size_t burst = GENERATE(std::size_t{1}, std::size_t{3});
    const bool jitter = GENERATE(false, true);
    INFO("burst " << burst << (jitter ? ", jittered" : ", steady") << " 30 fps to 15 fps");
    const auto arrivals = jitter ? jittered_30fps(sim_t0, 3000, 7u)
                                 : steady_30fps(sim_t0, 3000, rounding::nearest_ns);
    const std::size_t one_thread = limiter_admits(15.0, burst, arrivals).size();
    REQUIRE(one_thread >= 1500);

    for (int round = 0; round < 10; ++round) {
        rate_limiter lim(15.0, burst);
        std::latch start(2);
        std::size_t count_a = 0;
        std::size_t count_b = 0;
        const auto run = [&lim, &start, &arrivals](std::size_t& count) {
            start.arrive_and_wait();
            for (const time_point t : arrivals) {
                count += lim.try_acquire(t) ? 1u : 0u;
            }
        };
        std::thread ta(run, std::ref(count_a));
        std::thread tb(run, std::ref(count_b));
        ta.join();
        tb.join();
        INFO("round " << round << ": " << count_a << " + " << count_b << ", one thread "
                      << one_thread);
        CHECK(count_a + count_b <= one_thread);
        CHECK(count_a + count_b > 0);
    }
}

TEST_CASE("rate_limiter: set_rate and rate from other threads while others acquire") {
    rate_limiter lim(1000.0);
    const double rates[] = {1000.0, 2000.0, 4000.0};
    std::latch start(4);
    std::atomic<int> odd_rates{0};
    std::atomic<int> acquired{0};

    std::thread setter([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 2000; ++i) {
            lim.set_rate(rates[i % 3]);
        }
    });
    std::thread reader([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 2000; ++i) {
            const double r = lim.rate();
            if (r != rates[0] && r != rates[1] && r != rates[2]) {
                odd_rates.fetch_add(1);
            }
        }
    });
    std::thread trier([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 2000; ++i) {
            (void)lim.try_acquire();
        }
    });
    std::thread pacer([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 10; ++i) {
            acquired.fetch_add(lim.acquire() ? 1 : 0);
        }
    });
    setter.join();
    reader.join();
    trier.join();
    pacer.join();
    CHECK(odd_rates.load() == 0);
    CHECK(acquired.load() == 10);
    lim.set_rate(250.0);
    CHECK(lim.rate() == 250.0);
}

// --- The lock-free path decides exactly as the anchored-slot algorithm. ---

namespace {

// The anchored-slot algorithm written plainly (slot index from the anchor, tokens capped at
// burst, a new rate re-anchored at the next boundary, boundaries widened by period/1000), as a
// single-threaded model to compare the limiter's decisions with.
class model_limiter {
public:
    model_limiter(double hz, std::uint64_t burst) : period_(1e9 / hz), burst_(burst), tokens_(burst) {}

    bool try_acquire(time_point now) {
        refill(now);
        if (tokens_ == 0) {
            return false;
        }
        --tokens_;
        return true;
    }

    void set_rate(double hz, time_point now) {
        if (!started_) {
            period_ = 1e9 / hz;
            return;
        }
        refill(now);
        pending_ = 1e9 / hz;
    }

private:
    void refill(time_point now) {
        if (!started_) {
            started_ = true;
            anchor_ = now;
            next_ = 1;
            return;
        }
        for (;;) {
            const double since = static_cast<double>((now - anchor_).count()) + period_ / 1000.0;
            if (!(since >= static_cast<double>(next_) * period_)) {
                return;
            }
            if (pending_ > 0) {
                anchor_ += nanoseconds(std::llround(static_cast<double>(next_) * period_));
                period_ = pending_;
                pending_ = 0;
                next_ = 1;
                tokens_ = std::min(burst_, tokens_ + 1);
                continue;
            }
            const auto last = static_cast<std::uint64_t>(since / period_);
            const std::uint64_t crossed = std::max(last, next_) - next_ + 1;
            tokens_ = std::min(burst_, tokens_ + crossed);
            next_ += crossed;
            return;
        }
    }

    double period_;
    double pending_ = 0;
    std::uint64_t burst_;
    std::uint64_t tokens_;
    bool started_ = false;
    time_point anchor_{};
    std::uint64_t next_ = 1;
};

} // namespace

TEST_CASE("rate_limiter: decisions match the anchored-slot model, with rate changes and "
          "time going backwards") {
    const std::size_t burst = GENERATE(std::size_t{1}, std::size_t{3}, std::size_t{1000});
    const double rates[] = {7.0, 15.0, 30.0, 1000.0, 0.5};
    std::mt19937 gen(static_cast<std::uint32_t>(burst));
    std::uniform_int_distribution<int> op(0, 99);
    std::uniform_int_distribution<std::int64_t> step_ns(0, 80'000'000);
    std::uniform_int_distribution<std::size_t> pick(0, 4);
    INFO("burst " << burst);
    rate_limiter lim(30.0, burst);
    model_limiter model(30.0, burst);
    time_point t = sim_t0;
    int mismatches = 0;
    int admitted = 0;
    for (int i = 0; i < 20'000; ++i) {
        const int o = op(gen);
        if (o < 2) {
            const double hz = rates[pick(gen)];
            lim.set_rate(hz, t);
            model.set_rate(hz, t);
            continue;
        }
        // Mostly forward in time, sometimes a few ms back (falls in the current slot).
        t += (o < 8) ? -nanoseconds(step_ns(gen) / 20) : nanoseconds(step_ns(gen));
        const bool got = lim.try_acquire(t);
        mismatches += got != model.try_acquire(t) ? 1 : 0;
        admitted += got ? 1 : 0;
    }
    CHECK(mismatches == 0);
    CHECK(admitted > 1000); // the sequence exercised admissions, not only rejections
}

TEST_CASE("rate_limiter: a boundary index too large for the packed word moves to the locked "
          "path and keeps deciding") {
    // burst 2^32 - 1 leaves 31 bits for the boundary index: at 1 MHz that is about 36 minutes.
    rate_limiter lim(1e6, std::numeric_limits<std::uint32_t>::max());
    model_limiter model(1e6, std::numeric_limits<std::uint32_t>::max());
    const time_point a = sim_t0;
    int mismatches = 0;
    for (const time_point t : {a, a + 1s, a + 1h, a + 1h, a + 2h, a + 2h + 1us, a + 2h - 1s}) {
        mismatches += lim.try_acquire(t) != model.try_acquire(t) ? 1 : 0;
    }
    CHECK(mismatches == 0);
    // Two threads keep deciding on the locked path; every call has a token (the burst is huge).
    std::atomic<int> refused{0};
    std::latch start(2);
    const auto run = [&](int k) {
        start.arrive_and_wait();
        for (int i = 0; i < 2000; ++i) {
            refused += lim.try_acquire(a + 3h + microseconds(k * 5000 + i)) ? 0 : 1;
        }
    };
    std::thread x(run, 0);
    std::thread y(run, 1);
    x.join();
    y.join();
    CHECK(refused.load() == 0);
    // And a rate change still applies from the next boundary.
    lim.set_rate(1.0, a + 4h);
    CHECK(lim.rate() == 1.0);
}

TEST_CASE("rate_limiter: threads racing on the lock-free path never admit more than the tokens") {
    // Four threads call try_acquire(t) with the same time points, 40 per 10 ms slot, burst 2.
    // Whatever the interleaving, the latest time any call has used advances by at most 250 us
    // per call, so each boundary is crossed by one call at a time, which takes the token it
    // made: no token is ever lost to the burst cap. Every token is admitted exactly once, so the
    // threads together admit exactly what one caller admits.
    constexpr int calls = 4000;
    rate_limiter lim(100.0, 2);
    std::vector<time_point> times;
    for (int i = 0; i < calls; ++i) {
        times.push_back(sim_t0 + microseconds(i * 250)); // 40 calls per 10 ms slot
    }
    const std::size_t one_caller = limiter_admits(100.0, 2, times).size();
    std::atomic<std::size_t> total{0};
    std::latch start(4);
    std::vector<std::thread> threads;
    for (int k = 0; k < 4; ++k) {
        threads.emplace_back([&] {
            start.arrive_and_wait();
            std::size_t mine = 0;
            for (const time_point t : times) {
                mine += lim.try_acquire(t) ? 1U : 0U;
            }
            total += mine;
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    CHECK(one_caller == 101); // 1 s of calls: 2 in the first slot (burst), then one per slot
    CHECK(total.load() == one_caller);
}

// --- One writer, or many: the owner's plain stores, and taking the limiter over. ---

namespace {

using access = framepipe::detail::rate_limiter_access;
using owner = access::owner;

// Calls try_acquire(t) until it refuses (at most `limit` + 1 calls); how many it admitted.
std::size_t admissions_until_refused(rate_limiter& lim, time_point t, std::size_t limit) {
    std::size_t n = 0;
    while (n <= limit && lim.try_acquire(t)) {
        ++n;
    }
    return n;
}

// Admits once at sim_t0, which makes this thread the owner of `lim` (its first writer). False
// where no thread can own a limiter (no membarrier): every writer uses the compare-and-swap, and
// there is no section for the caller's test to race.
bool owned_after_first_admission(rate_limiter& lim) {
    REQUIRE(lim.try_acquire(sim_t0));
    if (!access::biasable(lim)) {
        CHECK(access::of(lim) == owner::shared);
        return false;
    }
    REQUIRE(access::of(lim) == owner::this_thread);
    return true;
}

using framepipe_test::wait_until;

} // namespace

TEST_CASE("rate_limiter: the first thread to admit owns it; a thread that only rejects leaves it "
          "so; one that admits makes it shared for good") {
    rate_limiter lim(1.0, 1); // one token a second
    CHECK(access::of(lim) == owner::nobody);
    REQUIRE(lim.try_acquire(sim_t0)); // anchors the slots and takes the one token
    if (!access::biasable(lim)) {
        // No membarrier here: nobody owns the limiter, every writer uses the compare-and-swap.
        CHECK(access::of(lim) == owner::shared);
        return;
    }
    CHECK(access::of(lim) == owner::this_thread);

    owner seen_before = owner::nobody;
    owner seen_after_reject = owner::nobody;
    owner seen_after_admit = owner::nobody;
    bool rejected = false;
    bool admitted = false;
    std::thread other([&] {
        seen_before = access::of(lim);
        rejected = !lim.try_acquire(sim_t0); // no token: decided without writing
        seen_after_reject = access::of(lim);
        admitted = lim.try_acquire(sim_t0 + 1s); // the next slot's token: a write
        seen_after_admit = access::of(lim);
    });
    other.join();
    CHECK(seen_before == owner::other_thread);
    CHECK(rejected);
    CHECK(seen_after_reject == owner::other_thread);
    CHECK(admitted);
    CHECK(seen_after_admit == owner::shared);
    CHECK(access::of(lim) == owner::shared);
    // Decisions go on as before, now by compare-and-swap on this thread too.
    CHECK_FALSE(lim.try_acquire(sim_t0 + 1s));
    CHECK(lim.try_acquire(sim_t0 + 2s));
    CHECK(access::of(lim) == owner::shared);
}

TEST_CASE("rate_limiter: a thread taking the limiter over waits for the owner's section under "
          "way, so no token is used twice") {
    constexpr std::size_t burst = 10;
    rate_limiter lim(1.0, burst); // every call below is at sim_t0: no token is added
    if (!owned_after_first_admission(lim)) { // 9 tokens left
        return;
    }
    owned_admit_hook.arm();
    bool taker_admitted = false;
    std::atomic<bool> taker_done{false};
    bool taker_done_too_early = true;
    std::thread taker([&] {
        wait_until([] { return owned_admit_hook.inside.load(); });
        taker_admitted = lim.try_acquire(sim_t0); // takes the limiter over
        taker_done = true;
    });
    std::thread releaser([&] {
        // The taker announces the takeover, then must wait: the owner is in its section.
        wait_until([&] {
            return access::of(lim) == owner::taking_over || taker_done.load();
        });
        taker_done_too_early = taker_done.load();
        owned_admit_hook.release = true;
    });
    const bool owner_admitted = lim.try_acquire(sim_t0); // held open with 9 tokens read
    releaser.join();
    taker.join();
    CHECK(owner_admitted);
    CHECK(taker_admitted);
    CHECK_FALSE(taker_done_too_early);
    CHECK(access::of(lim) == owner::shared);
    // 10 tokens, 3 used: exactly 7 left. A takeover that did not wait would have left 8 (the
    // owner's plain store overwriting the taker's compare-and-swap).
    CHECK(admissions_until_refused(lim, sim_t0, burst) == burst - 3);
}

TEST_CASE("rate_limiter: an owner held before its section is taken over without a wait, and its "
          "section then sees it and uses the compare-and-swap") {
    // The window between try_acquire()'s check of the owner and the store that marks the section:
    // a takeover there finds no section to wait for and completes; the section's own check must
    // then send the old owner to the shared path. Without that check it would store a word it
    // read before the taker's next admission, and that token would be used twice.
    constexpr std::size_t burst = 10;
    rate_limiter lim(1.0, burst);
    if (!owned_after_first_admission(lim)) { // 9 tokens left
        return;
    }
    owner_entry_hook.arm();
    std::atomic<bool> owner_done{false};
    bool taker_first = false;
    bool taker_second = false;
    bool shared_while_held = false;
    bool reached_store = true;
    std::thread taker([&] {
        wait_until([] { return owner_entry_hook.inside.load(); });
        taker_first = lim.try_acquire(sim_t0); // takes over: the owner has no section to wait for
        shared_while_held = access::of(lim) == owner::shared && !owner_done.load();
        // If the released owner got as far as its store, hold it there while this thread admits
        // again: a store of a word read before that admission would overwrite it.
        owned_admit_hook.arm();
        owner_entry_hook.release = true;
        wait_until([&] { return owned_admit_hook.inside.load() || owner_done.load(); });
        reached_store = owned_admit_hook.inside.load();
        taker_second = lim.try_acquire(sim_t0);
        owned_admit_hook.release = true;
    });
    const bool owner_second = lim.try_acquire(sim_t0); // held before its section
    owner_done = true;
    taker.join();
    owned_admit_hook.armed = false; // not fired: the section was never entered
    CHECK(taker_first);
    CHECK(shared_while_held);
    CHECK(owner_second);
    CHECK_FALSE(reached_store);
    CHECK(taker_second);
    CHECK(access::of(lim) == owner::shared);
    // 10 tokens, 4 used: exactly 6 left (7 if the owner's stale store had overwritten one).
    CHECK(admissions_until_refused(lim, sim_t0, burst) == burst - 4);
}

TEST_CASE("rate_limiter: set_rate from another thread waits for the owner's section and leaves "
          "the limiter to its owner") {
    constexpr std::size_t burst = 10;
    rate_limiter lim(1.0, burst);
    if (!owned_after_first_admission(lim)) {
        lim.set_rate(2.0, sim_t0);
        CHECK(access::of(lim) == owner::shared);
        return;
    }
    owned_admit_hook.arm();
    std::atomic<bool> set_done{false};
    bool set_done_too_early = true;
    std::thread setter([&] {
        wait_until([] { return owned_admit_hook.inside.load(); });
        lim.set_rate(2.0, sim_t0); // from the next boundary (sim_t0 + 1 s) on
        set_done = true;
    });
    std::thread releaser([&] {
        wait_until([&] {
            const owner o = access::of(lim);
            return o == owner::taking_over || set_done.load();
        });
        set_done_too_early = set_done.load();
        owned_admit_hook.release = true;
    });
    const bool held_admitted = lim.try_acquire(sim_t0); // held open with 9 tokens read
    releaser.join();
    setter.join();
    CHECK(held_admitted);
    CHECK_FALSE(set_done_too_early);
    CHECK(access::of(lim) == owner::this_thread); // paused, then given back
    CHECK(lim.rate() == 2.0);
    // 10 tokens, 2 used: 8 left, whichever path the owner now takes (the pending rate sends it
    // through the mutex until the next boundary).
    CHECK(admissions_until_refused(lim, sim_t0, burst) == burst - 2);
    CHECK(access::of(lim) == owner::this_thread);
    // The old rate's boundary at 1 s, then the new rate's at 1.5 s.
    CHECK(lim.try_acquire(sim_t0 + 1s));
    CHECK_FALSE(lim.try_acquire(sim_t0 + 1s));
    CHECK_FALSE(lim.try_acquire(sim_t0 + 1400ms));
    CHECK(lim.try_acquire(sim_t0 + 1500ms));
    CHECK(access::of(lim) == owner::this_thread);
}

TEST_CASE("rate_limiter: a call that read the word before a rate change re-anchored the slots "
          "does not refuse on the new slots") {
    // One token a second, burst 1. The first call anchors the slots at sim_t0 and takes the token;
    // boundary 1 is at sim_t0 + 1 s. Another thread asks at sim_t0 + 1.1 s (the boundary's token
    // is its), reads the word (next boundary 1, no token) and is held before it reads the
    // configuration. Meanwhile a rate change to 2/s waits for boundary 1, and a second one, made
    // after it, settles the slots: boundary 1 passes at the old rate, its token is added, and the
    // slots are re-anchored there at 500 ms. Read against that configuration, the held word says
    // "no boundary passed, no token": a refusal no order of the three calls allows. The call must
    // see that the word changed and decide again.
    rate_limiter lim(1.0, 1);
    REQUIRE(lim.try_acquire(sim_t0));
    shared_decide_hook.arm();
    bool admitted = false;
    std::thread asker([&] { admitted = lim.try_acquire(sim_t0 + 1100ms); });
    wait_until([] { return shared_decide_hook.inside.load(); });
    lim.set_rate(2.0, sim_t0 + 500ms);  // waits for boundary 1
    lim.set_rate(2.0, sim_t0 + 1050ms); // boundary 1 passed: re-anchored at sim_t0 + 1 s
    shared_decide_hook.release = true;
    asker.join();
    CHECK(admitted);
    // The one token is used; the next arrives at the new rate's first boundary, sim_t0 + 1.5 s.
    CHECK_FALSE(lim.try_acquire(sim_t0 + 1100ms));
    CHECK_FALSE(lim.try_acquire(sim_t0 + 1400ms));
    CHECK(lim.try_acquire(sim_t0 + 1500ms));
}

TEST_CASE("rate_limiter: a takeover in the middle of the owner's stream loses and repeats no "
          "token") {
    // The owner admits flat out at one time point (no token is added); a second thread starts
    // admitting once the owner has, and so takes the limiter over while the owner's sections go
    // on. Together they must admit exactly `burst`.
    constexpr std::size_t burst = 2000;
    for (int round = 0; round < 100; ++round) {
        rate_limiter lim(1.0, burst);
        std::atomic<bool> owner_started{false};
        std::size_t by_owner = 0;
        std::size_t by_taker = 0;
        std::thread taker([&] {
            wait_until([&] { return owner_started.load(); });
            by_taker = admissions_until_refused(lim, sim_t0, burst);
        });
        for (std::size_t i = 0; i <= burst && lim.try_acquire(sim_t0); ++i) {
            ++by_owner;
            owner_started.store(true, std::memory_order_relaxed);
        }
        owner_started = true; // had the owner been refused at once
        taker.join();
        INFO("round " << round << ": owner " << by_owner << ", taker " << by_taker);
        REQUIRE(by_owner + by_taker == burst);
        if (by_taker > 0) {
            // (A taker that found a token and lost it to the owner has taken over too.)
            CHECK(access::of(lim) == owner::shared);
        }
    }
}

TEST_CASE("rate_limiter: moving hands over the whole state: rate, slots and tokens") {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    framepipe::rate_limiter a(10.0); // one per 100 ms
    REQUIRE(a.try_acquire(t0));      // uses the only token
    framepipe::rate_limiter b(std::move(a));
    CHECK(b.rate() == 10.0);
    CHECK(b.burst() == 1);
    CHECK_FALSE(b.try_acquire(t0 + std::chrono::milliseconds(50))); // same slot: no token
    CHECK(b.try_acquire(t0 + std::chrono::milliseconds(100)));      // the next slot's token
    // Captured by value in a lambda (a stage function may own its limiter).
    auto paced = [limit = framepipe::rate_limiter(1.0)](clock::time_point t) mutable {
        return limit.try_acquire(t);
    };
    CHECK(paced(t0));
    CHECK_FALSE(paced(t0 + std::chrono::milliseconds(10)));
}

TEST_CASE("rate_limiter: time_point::max() and min() are decided without overflow") {
    SECTION("after max(), an earlier time point falls in the current slot") {
        // At 1 GHz the slot index at max() is out of the int64 range: it used to wrap, and an
        // earlier call then refilled the tokens and moved the schedule back.
        const std::size_t burst = GENERATE(std::size_t{1}, std::size_t{3});
        INFO("burst " << burst);
        rate_limiter lim(1e9, burst);
        REQUIRE(lim.try_acquire(time_point{} + 1ns));
        for (std::size_t i = 0; i < burst; ++i) {
            CHECK(lim.try_acquire(time_point::max())); // the burst refilled
        }
        CHECK_FALSE(lim.try_acquire(time_point::max()));
        int admitted = 0;
        for (const time_point t : {time_point::max() - nanoseconds(std::int64_t{1} << 60),
                                   time_point::max() - 1ns, time_point{} + 2ns, time_point{},
                                   time_point::min(), time_point::max()}) {
            admitted += lim.try_acquire(t) ? 1 : 0;
        }
        CHECK(admitted == 0);
    }
    SECTION("min() after a later anchor is before the anchor: no token") {
        // now - anchor used to overflow (undefined behaviour) and admit.
        rate_limiter lim(30.0);
        REQUIRE(lim.try_acquire(time_point{} + 1000s));
        CHECK_FALSE(lim.try_acquire(time_point::min()));
        CHECK_FALSE(lim.try_acquire(time_point{} + 1000s + 33ms));
        CHECK(lim.try_acquire(time_point{} + 1000s + 34ms));
    }
    SECTION("anchored at min(), later time points count their slots exactly") {
        rate_limiter lim(1.0);
        REQUIRE(lim.try_acquire(time_point::min()));
        CHECK(lim.try_acquire(time_point{})); // about 9.2e9 slots later
        // Boundaries are at min() + k s: the next one is 145'224'192 ns after the epoch (less
        // the widening, 1 ms).
        CHECK_FALSE(lim.try_acquire(time_point{} + 144ms));
        CHECK_FALSE(lim.try_acquire(time_point::min() + 1s)); // backwards: the current slot
        CHECK(lim.try_acquire(time_point{} + 145ms));
        CHECK(lim.try_acquire(time_point::max()));
        CHECK_FALSE(lim.try_acquire(time_point::max()));
    }
    SECTION("a new rate whose boundary is within the widening of the clock's end") {
        // Slots of 1e18 ns: boundary 1 lies 1e14 ns past time_point::max(), but the widening
        // (1e15 ns) lets max() cross it. Re-anchoring there used to overflow the anchor.
        rate_limiter lim(1e-9);
        const time_point a = time_point::max() - nanoseconds(1'000'000'000'000'000'000) +
                             nanoseconds(100'000'000'000'000);
        REQUIRE(lim.try_acquire(a));
        lim.set_rate(1.0, a);
        CHECK(lim.try_acquire(time_point::max())); // the boundary's token
        CHECK_FALSE(lim.try_acquire(time_point::max()));
        CHECK(lim.rate() == 1.0);
    }
}

TEST_CASE("rate_limiter: acquire() after simulated time points before the clock's epoch") {
    // The wait for the next slot is computed from the anchor: it used to overflow (undefined
    // behaviour) for an anchor before the epoch. Each call waits at most one 1 ms slot.
    const time_point anchor = GENERATE(time_point{} - 1ns, time_point::min());
    rate_limiter lim(1000.0);
    REQUIRE(lim.try_acquire(anchor));
    for (int i = 0; i < 5; ++i) {
        CHECK(lim.acquire());
    }
}
