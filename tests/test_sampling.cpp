// tests/test_sampling.cpp - framepipe/sampling.hpp: every_n and gate with exact counts,
// adaptive_rate's control law in virtual time (convergence to the consumer's capacity, a fast
// rise and a stepwise decay with activity, at most one step of movement in steady state,
// saturation by occupancy), and the
// sampled channel's accounting, alone and in a pipeline.

#include <framepipe/broadcaster.hpp>
#include <framepipe/exposition.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/sampling.hpp>
#include <framepipe/select.hpp>
#include <framepipe/sliding_window.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using framepipe::push_status;

TEST_CASE("every_n keeps exactly the 1st, (n+1)th, ... item") {
    framepipe::every_n keep(5);
    std::vector<int> kept;
    for (int i = 0; i < 23; ++i) {
        if (keep.admit(i, clock_type::now())) {
            kept.push_back(i);
        }
    }
    CHECK(kept == std::vector<int>{0, 5, 10, 15, 20});
    framepipe::every_n all(1);
    int n = 0;
    for (int i = 0; i < 10; ++i) {
        n += all.admit(i, clock_type::now()) ? 1 : 0;
    }
    CHECK(n == 10);
    CHECK_THROWS_WITH(framepipe::every_n(0), Catch::Contains("n:"));
}

TEST_CASE("gate keeps what the predicate flags, within min_interval and cooldown") {
    const auto t0 = clock_type::time_point{} + 1h;
    // Motion in frames 10..40 and 100..105 of a 30 fps stream (33.3 ms apart).
    const auto moving = [](int i) { return (i >= 10 && i <= 40) || (i >= 100 && i <= 105); };
    auto run = [&](framepipe::gate_options o) {
        framepipe::gate g([&](int i) { return moving(i); }, o);
        std::vector<int> kept;
        for (int i = 0; i < 150; ++i) {
            const auto now = t0 + std::chrono::microseconds(33'334) * i; // just over 1/30 s
            if (g.admit(i, now)) {
                kept.push_back(i);
            }
        }
        return kept;
    };
    std::vector<int> all;
    for (int i = 0; i < 150; ++i) {
        if (moving(i)) {
            all.push_back(i);
        }
    }
    CHECK(run({}) == all); // no limits: exactly the flagged frames
    // At most one a second (30 frames): 10, 40 (30 frames later), then 100 (a new event).
    CHECK(run({.min_interval = 1s}) == std::vector<int>{10, 40, 100});
    // After a kept frame, 500 ms of quiet (15 frames): 10, 25, 40, then 100.
    CHECK(run({.cooldown = 500ms}) == std::vector<int>{10, 25, 40, 100});
    // At the boundary: an item exactly min_interval (or cooldown) after the last kept one is kept.
    for (const framepipe::gate_options o : {framepipe::gate_options{.min_interval = 1s},
                                            framepipe::gate_options{.cooldown = 1s}}) {
        framepipe::gate g([](int) { return true; }, o);
        CHECK(g.admit(1, t0));
        CHECK_FALSE(g.admit(2, t0 + 1s - 1ns));
        CHECK(g.admit(3, t0 + 1s));
        CHECK_FALSE(g.admit(4, t0 + 2s - 1ns));
    }
    CHECK_THROWS_WITH(framepipe::gate([](int) { return true; }, {.cooldown = -1ms}),
                      Catch::Contains("cooldown"));
}

TEST_CASE("gate: with no limits the time is not looked at; far-apart time points do not overflow") {
    const auto t0 = clock_type::time_point{} + 1h;
    const auto lowest = clock_type::time_point::min();
    const auto highest = clock_type::time_point::max();
    framepipe::gate open([](int) { return true; });
    CHECK(open.admit(1, t0));
    CHECK(open.admit(2, t0 - 1ms)); // stamped before the last kept one (another camera's clock)
    CHECK(open.admit(3, highest));
    CHECK(open.admit(4, lowest));
    // max() - min() overflowed (and read as less than a second): the distance saturates.
    framepipe::gate limited([](int) { return true; }, {.min_interval = 1s});
    CHECK(limited.admit(1, lowest));
    CHECK(limited.admit(2, highest));
    CHECK_FALSE(limited.admit(3, lowest)); // before the last kept one: within min_interval
    CHECK_FALSE(limited.admit(4, highest - 1ns));
}

namespace {

// A consumer that needs `service` per item, fed by a 30 fps camera through adaptive_rate, in
// virtual time, one control period (1 s) at a time. Returns the rate after each period.
struct simulation {
    framepipe::adaptive_rate control;
    clock_type::time_point now = clock_type::time_point{} + 1h;
    std::uint64_t frame = 0;

    explicit simulation(framepipe::adaptive_rate_options o) : control(o) {}

    // Runs one period; the consumer's busy share is what it was given times its service time.
    double period(std::chrono::nanoseconds service, std::optional<double> activity) {
        int admitted = 0;
        for (int i = 0; i < 30; ++i) {
            now += std::chrono::microseconds(33'333);
            admitted += control.admit(frame++, now) ? 1 : 0;
        }
        const double busy = std::min(
            1.0, admitted * std::chrono::duration<double>(service).count() / 1.0);
        return control.update({.activity = activity, .busy = busy, .occupancy = std::nullopt}, now);
    }
};

framepipe::adaptive_rate_options options() {
    return {.min_hz = 1, .max_hz = 30, .step_hz = 1, .busy_high = 0.9, .busy_low = 0.7};
}

} // namespace

TEST_CASE("adaptive_rate converges to the consumer's capacity and then moves at most one step") {
    // A consumer that needs 80 ms an item manages 12.5 a second: busy share r * 0.08.
    simulation sim(options());
    std::vector<double> rates;
    for (int i = 0; i < 60; ++i) {
        rates.push_back(sim.period(80ms, std::nullopt));
    }
    // Settled: the rate keeps the consumer between busy_low and busy_high (8.75..11.25 Hz).
    const auto tail = std::vector<double>(rates.end() - 30, rates.end());
    const auto [lo, hi] = std::minmax_element(tail.begin(), tail.end());
    CHECK(*hi - *lo <= 1.0);        // never more than one step of movement in steady state
    CHECK(*lo >= 0.7 / 0.08 - 1.0); // not starved
    CHECK(*hi <= 0.9 / 0.08 + 1.0); // not over capacity
    // It got there within (30 - 11) steps of one per period.
    CHECK(std::find_if(rates.begin(), rates.end(), [](double r) { return r <= 11; }) - rates.begin() <= 20);
}

TEST_CASE("adaptive_rate rises at once when activity rises, and decays a step a period") {
    simulation sim(options());
    // A fast consumer (5 ms an item): only activity steers.
    for (int i = 0; i < 5; ++i) {
        (void)sim.period(5ms, 0.0); // idle scene: down towards min_hz, a step a period
    }
    double r = 0;
    for (int i = 0; i < 40; ++i) {
        r = sim.period(5ms, 0.0);
    }
    CHECK(r == 1.0); // min_hz
    r = sim.period(5ms, 1.0); // something happens
    CHECK(r == 30.0);          // max_hz at the very next update
    std::vector<double> decay;
    for (int i = 0; i < 5; ++i) {
        decay.push_back(sim.period(5ms, 0.5)); // activity halves: wants 15.5 Hz
    }
    CHECK(decay == std::vector<double>{29, 28, 27, 26, 25}); // one step a period, no jump
    for (int i = 0; i < 20; ++i) {
        r = sim.period(5ms, 0.5);
    }
    CHECK(r == Approx(15.5).margin(0.5)); // the grid value nearest to what activity asks
}

TEST_CASE("adaptive_rate finds a consumer that got faster again") {
    simulation sim(options());
    for (int i = 0; i < 40; ++i) {
        (void)sim.period(100ms, std::nullopt); // 10 a second at most
    }
    CHECK(sim.control.rate() <= 10);
    double r = 0;
    for (int i = 0; i < 80; ++i) {
        r = sim.period(40ms, std::nullopt); // now 25 a second
    }
    CHECK(r >= 0.7 / 0.04 - 1.0); // climbed back towards the new capacity
    CHECK(r <= 0.9 / 0.04 + 1.0);
}

TEST_CASE("adaptive_rate lifts its ceiling only after two periods of room running") {
    framepipe::adaptive_rate control(options());
    const auto t = clock_type::time_point{} + 1h;
    const auto step = [&](double busy) {
        return control.update({.activity = std::nullopt, .busy = busy, .occupancy = std::nullopt},
                              t);
    };
    CHECK(step(0.95) == 29); // saturated at 30: one step down, ceiling one step below
    CHECK(control.ceiling() == 29);
    (void)step(0.5);         // room, one period
    (void)step(0.8);         // in the band: the run of room ends
    (void)step(0.5);         // room, one period again
    CHECK(control.ceiling() == 29);
    (void)step(0.5);         // room, two periods running: lifted one step
    CHECK(control.ceiling() == 30);
    CHECK(control.rate() == 30);
}

TEST_CASE("adaptive_rate: a quiet scene does not lift the ceiling it found") {
    // A consumer that manages 12.5 items a second. Once the rate had settled, a quiet scene let
    // it decay to min_hz, where the consumer had room, and each period of that room lifted the
    // ceiling by a step, back to max_hz, although no rate above it had been tried: when the
    // activity came back the rate jumped to 30 and overloaded the consumer for 19 periods.
    framepipe::adaptive_rate control({.min_hz = 1, .max_hz = 30, .step_hz = 1});
    auto now = clock_type::time_point{} + 1h;
    const auto period = [&](double activity) {
        const double busy = std::min(1.0, control.rate() * 0.08); // 80 ms an item
        return control.update({.activity = activity, .busy = busy, .occupancy = std::nullopt},
                              now += 1s);
    };
    for (int i = 0; i < 40; ++i) {
        (void)period(1.0);
    }
    const double found = control.ceiling();
    REQUIRE(found <= 12);
    REQUIRE(control.rate() <= found);
    for (int i = 0; i < 30; ++i) {
        (void)period(0.0);
    }
    CHECK(control.rate() == 1);
    CHECK(control.ceiling() == found);
    CHECK(period(1.0) <= found); // the attack goes back to the capacity found, no further
}

TEST_CASE("adaptive_rate: after a rise the next item is kept one new period after the last, "
          "not a slot of the old rate later") {
    framepipe::adaptive_rate control({.min_hz = 0.05, .max_hz = 30, .step_hz = 1});
    auto now = clock_type::time_point{} + 1h;
    for (int i = 0; i < 40; ++i) {
        (void)control.update({.activity = 0.0, .busy = std::nullopt, .occupancy = std::nullopt},
                             now += 1s);
    }
    REQUIRE(control.rate() == 0.05); // min_hz: a slot of 20 s
    const auto kept = now + 1s;
    REQUIRE(control.admit(0, kept)); // the slow slot under way now runs until kept + 20 s
    CHECK_FALSE(control.admit(1, kept + 1s));
    CHECK(control.update({.activity = 1.0, .busy = std::nullopt, .occupancy = std::nullopt},
                         kept + 1s + 10ms) == 30);
    // Not before 1/30 s after the last kept item (it was longer ago here: at once), then 30 Hz.
    CHECK(control.admit(2, kept + 1s + 20ms));
    CHECK_FALSE(control.admit(3, kept + 1s + 30ms));
    int in_a_second = 0;
    for (int i = 1; i <= 30; ++i) {
        in_a_second += control.admit(3 + i, kept + 1s + 20ms + i * 33'334us) ? 1 : 0;
    }
    CHECK(in_a_second == 30);
    // A rise right after a kept item keeps the new period's spacing from it.
    framepipe::adaptive_rate fresh({.min_hz = 1, .max_hz = 10, .step_hz = 1});
    (void)fresh.update({.activity = 0.0, .busy = std::nullopt, .occupancy = std::nullopt}, now);
    REQUIRE(fresh.rate() == 9);
    REQUIRE(fresh.admit(0, now));
    CHECK(fresh.update({.activity = 1.0, .busy = std::nullopt, .occupancy = std::nullopt},
                       now + 10ms) == 10);
    CHECK_FALSE(fresh.admit(1, now + 99ms)); // within 1/10 s of the last kept item
    CHECK(fresh.admit(2, now + 100ms));
}

TEST_CASE("adaptive_rate: occupancy alone lifts the ceiling again once the input is empty") {
    framepipe::adaptive_rate control(options()); // occupancy_high 0.5, occupancy_low 0
    const auto t = clock_type::time_point{} + 1h;
    const auto step = [&](double occupancy) {
        return control.update({.activity = 1.0, .busy = std::nullopt, .occupancy = occupancy}, t);
    };
    for (int i = 0; i < 5; ++i) {
        (void)step(1.0); // a backlog: five steps down
    }
    CHECK(control.ceiling() == 25);
    CHECK(step(0.3) == 25); // between occupancy_low and occupancy_high: hold, no room
    CHECK(step(0.3) == 25);
    CHECK(control.ceiling() == 25);
    std::vector<double> rates;
    for (int i = 0; i < 7; ++i) {
        rates.push_back(step(0.0)); // empty: room; from the second period, a step a period
    }
    CHECK(rates == std::vector<double>{25, 26, 27, 28, 29, 30, 30});
    framepipe::adaptive_rate low({.occupancy_high = 0.5, .occupancy_low = 0.25});
    CHECK(low.update({.activity = 1.0, .busy = std::nullopt, .occupancy = 1.0}, t) == 29);
    (void)low.update({.activity = 1.0, .busy = std::nullopt, .occupancy = 0.25}, t);
    CHECK(low.update({.activity = 1.0, .busy = std::nullopt, .occupancy = 0.25}, t) == 30);
}

TEST_CASE("adaptive_rate: occupancy above occupancy_high is saturation, whatever the busy share") {
    framepipe::adaptive_rate control(options()); // occupancy_high 0.5
    const auto t = clock_type::time_point{} + 1h;
    const auto step = [&](std::optional<double> busy, double occupancy) {
        return control.update({.activity = std::nullopt, .busy = busy, .occupancy = occupancy}, t);
    };
    CHECK(step(std::nullopt, 1.0) == 29); // items wait at the input: one step down
    CHECK(control.ceiling() == 29);
    CHECK(step(std::nullopt, 0.5) == 29); // at occupancy_high: not saturated, and no room: holds
    CHECK(step(0.5, 0.6) == 28);          // a busy share with room, but items wait: down
    CHECK(control.ceiling() == 28);
}

TEST_CASE("adaptive_rate keeps its rate on the grid min_hz + k * step_hz") {
    // max_hz 10.5 is off the grid 1, 3, 5, ...: the rate starts there, and every step lands on it.
    framepipe::adaptive_rate control({.min_hz = 1, .max_hz = 10.5, .step_hz = 2});
    const auto t = clock_type::time_point{} + 1h;
    CHECK(control.rate() == 10.5);
    std::vector<double> rates;
    for (int i = 0; i < 3; ++i) {
        rates.push_back(control.update(
            {.activity = std::nullopt, .busy = 1.0, .occupancy = std::nullopt}, t)); // saturated
    }
    CHECK(rates == std::vector<double>{9, 7, 5}); // 8.5 rounds to the grid value 9
}

TEST_CASE("adaptive_rate: max_hz off the steps stays reachable, even with a step wider than "
          "the range") {
    const auto t = clock_type::time_point{} + 1h;
    const framepipe::rate_signal room{.activity = 1.0, .busy = 0.1, .occupancy = 0.0};
    const framepipe::rate_signal saturated{.activity = 1.0, .busy = 0.95, .occupancy = 0.0};
    // Steps of 4 from 1 (1, 5, ..., 29) end below max_hz 30: with room and full activity the
    // rate stays at 30 instead of being rounded down to 29.
    framepipe::adaptive_rate coarse({.min_hz = 1, .max_hz = 30, .step_hz = 4});
    CHECK(coarse.update(room, t) == 30);
    CHECK(coarse.update(saturated, t) == 25); // the first step down lands on the steps
    // A step wider than the range: the rate is min_hz or max_hz, never pinned to min_hz.
    framepipe::adaptive_rate wide({.min_hz = 1, .max_hz = 30, .step_hz = 60});
    CHECK(wide.update(room, t) == 30);
    CHECK(wide.update(saturated, t) == 1);
    CHECK(wide.update(room, t) == 1);  // one period of room: the ceiling stays
    CHECK(wide.update(room, t) == 30); // two running: lifted by a step, to max_hz
}

TEST_CASE("adaptive_rate: the ceiling is on the grid too, so the rate never sits above it") {
    framepipe::adaptive_rate control({.min_hz = 1, .max_hz = 30.5, .step_hz = 1});
    const auto t = clock_type::time_point{} + 1h;
    const framepipe::rate_signal saturated{.activity = std::nullopt, .busy = 0.95,
                                           .occupancy = std::nullopt};
    const framepipe::rate_signal band{.activity = std::nullopt, .busy = 0.8,
                                      .occupancy = std::nullopt};
    CHECK(control.update(saturated, t) == 30); // 29.5 rounds to the grid value 30
    CHECK(control.ceiling() == 30);
    for (int i = 0; i < 3; ++i) {
        CHECK(control.update(band, t) <= control.ceiling());
    }
    CHECK(control.update(saturated, t) == 29);
    CHECK(control.ceiling() == 29);
}

TEST_CASE("adaptive_rate: a NaN signal is refused, naming it, and changes nothing") {
    framepipe::adaptive_rate control(options());
    const auto t = clock_type::time_point{} + 1h;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH(control.update({.activity = nan, .busy = 0.1, .occupancy = 0.0}, t),
                      Catch::Contains("activity"));
    CHECK_THROWS_WITH(control.update({.activity = 0.0, .busy = nan, .occupancy = 0.0}, t),
                      Catch::Contains("busy"));
    CHECK_THROWS_WITH(control.update({.activity = 0.0, .busy = 0.1, .occupancy = nan}, t),
                      Catch::Contains("occupancy"));
    CHECK(control.rate() == 30);
    CHECK(control.ceiling() == 30);
    CHECK(control.update({.activity = 0.0, .busy = 0.1, .occupancy = 0.0}, t) == 29); // steers on
}

TEST_CASE("adaptive_rate: bad options are refused, naming the field") {
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.min_hz = 0}), Catch::Contains("min_hz"));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.min_hz = 5, .max_hz = 2}), Catch::Contains("max_hz"));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.step_hz = 0}), Catch::Contains("step_hz"));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.busy_high = 0.5, .busy_low = 0.8}),
                      Catch::Contains("busy_low"));
    // Steps too small to move the rate: 30 - 1e-20 == 30, and (30 - 1) / 1e-310 is infinite.
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.step_hz = 1e-20}), Catch::Contains("step_hz"));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.step_hz = 1e-310}), Catch::Contains("step_hz"));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.min_hz = 1, .max_hz = 1e6, .step_hz = 1e-4}),
                      Catch::Contains("step_hz")); // 10^10 steps
    CHECK_NOTHROW(framepipe::adaptive_rate({.min_hz = 1, .max_hz = 1e6, .step_hz = 1e-3}));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.occupancy_high = 0.5, .occupancy_low = 0.6}),
                      Catch::Contains("occupancy_low"));
    CHECK_THROWS_WITH(framepipe::adaptive_rate({.occupancy_low = -0.1}),
                      Catch::Contains("occupancy_low"));
}

TEST_CASE("sampled: a refused push is rejected and counted as sampled_out; the identity holds") {
    framepipe::ring<int> q(64);
    framepipe::sampled s(q, framepipe::every_n(3));
    int accepted = 0;
    for (int i = 0; i < 30; ++i) {
        accepted += framepipe::accepted(s.push(i)) ? 1 : 0;
    }
    CHECK(accepted == 10);
    const auto st = s.stats();
    CHECK(st.pushed == 30);
    CHECK(st.sampled_out == 20);
    CHECK(st.dropped == 20);
    CHECK(st.size == 10);
    CHECK(st.pushed == st.popped + st.dropped + st.size);
    CHECK(s.try_pop() == 0);
    CHECK(s.try_pop() == 3);
    CHECK(framepipe::detail::describe_channel(s).kind == "sampled");
}

TEST_CASE("sampled: over a channel its traits describe (a sliding_window), a pipeline shows that "
          "description, the sampled-out pushes added") {
    // The wrapper's own description came from its members: a sliding_window has no policy(),
    // so the window's size and stride went missing from the snapshot, the metrics and the graph.
    framepipe::sliding_window<int> w(4, 2);
    framepipe::sampled s(w, framepipe::every_n(2));
    for (int i = 0; i < 20; ++i) {
        (void)s.push(i);
    }
    const auto inner = framepipe::detail::describe_channel(w);
    const auto d = framepipe::detail::describe_channel(s);
    CHECK(d.kind == "sampled");
    CHECK(inner.policy == "window 4/2");
    CHECK(d.policy == inner.policy);
    CHECK(d.capacity == inner.capacity);
    REQUIRE(inner.stats);
    REQUIRE(d.stats);
    CHECK(d.stats->sampled_out == 10);
    CHECK(d.stats->pushed == inner.stats->pushed + 10);
    CHECK(d.stats->dropped == inner.stats->dropped + 10);
    CHECK(d.stats->popped == inner.stats->popped);
    CHECK(d.stats->size == inner.stats->size);
}

namespace {
// A user's channel that a selector cannot watch: no readable event.
struct bare_channel_for_select {
    using value_type = int;
    framepipe::ring<int> r{4, framepipe::overflow::block};
    framepipe::push_status push(int v) { return r.push(v); }
    std::optional<int> try_pop() { return r.try_pop(); }
    std::optional<int> pop(std::stop_token stop) { return r.pop(std::move(stop)); }
    [[nodiscard]] std::size_t size() const noexcept { return r.size(); }
    [[nodiscard]] bool closed() const noexcept { return r.closed(); }
    void close() { r.close(); }
};
template <class W>
concept has_peek = requires(W& w) { w.peek(); };
template <class W>
concept has_pop_for_stop = requires(W& w, std::stop_token st) { w.pop_for(1ms, st); };
template <class W>
concept has_push_for = requires(W& w) { w.push_for(1, 1ms); };
} // namespace

TEST_CASE("sampled: the channel's peek, pop_for with a stop token and push_for are there, "
          "and push_for goes through the sampler") {
    using wrapped = framepipe::sampled<framepipe::ring<int>, framepipe::every_n>;
    static_assert(has_peek<wrapped>, "peek is the ring's");
    static_assert(has_pop_for_stop<wrapped>, "pop_for(timeout, stop) is the ring's");
    static_assert(has_push_for<wrapped>, "push_for goes through the sampler");
    static_assert(!has_push_for<framepipe::sampled<framepipe::latest_slot<int>, framepipe::every_n>>,
                  "latest_slot has no push_for, so neither has its wrapper");

    framepipe::ring<int> q(4, framepipe::overflow::block);
    framepipe::sampled s(q, framepipe::every_n(2));
    CHECK(s.push_for(10, 1ms) == push_status::ok);
    CHECK(s.push_for(11, 1ms) == push_status::rejected); // the sampler's, not the ring's
    std::stop_source stop;
    CHECK(s.push_for(12, 1ms, stop.get_token()) == push_status::ok);
    CHECK(s.peek() == 10);
    CHECK(s.pop_for(0ms, stop.get_token()) == 10);
    CHECK(s.pop_for(0ms, stop.get_token()) == 12);
    stop.request_stop();
    CHECK(s.pop_for(1h, stop.get_token()) == std::nullopt); // ends on the stop, not after an hour
    const auto st = s.stats();
    CHECK(st.pushed == 3);
    CHECK(st.sampled_out == 1);
    CHECK(st.popped == 2);
    CHECK(st.pushed == st.popped + st.dropped + st.size);
}

TEST_CASE("sampled: a wrapped framepipe channel is a selector's input, woken by pushes through "
          "the wrapper") {
    // The wrapper did not expose the channel's readable event, so selector::add refused it (it
    // did not compile) and a camera sampled at its source could not share a detector.
    using framepipe::every_n;
    using framepipe::sampled;
    using framepipe::selectable;
    static_assert(selectable<sampled<framepipe::ring<int>, every_n>, int>);
    static_assert(selectable<sampled<framepipe::latest_slot<int>, every_n>, int>);
    static_assert(!selectable<sampled<bare_channel_for_select, every_n>, int>,
                  "a user channel without a readable event is not selectable, wrapped or not");
    framepipe::ring<int> a(8, framepipe::overflow::block);
    framepipe::ring<int> b(8, framepipe::overflow::block);
    framepipe::sampled sa(a, framepipe::every_n(2));
    framepipe::selector<int> sel;
    const auto ia = sel.add(sa, {.take = framepipe::input_take::oldest, .name = "sampled"});
    (void)sel.add(b, {.take = framepipe::input_take::oldest, .name = "plain"});
    for (int i = 0; i < 4; ++i) {
        (void)sa.push(i); // 0 and 2 kept
    }
    CHECK(b.push(100) == push_status::ok);
    std::vector<int> got;
    for (int i = 0; i < 3; ++i) {
        const auto item = sel.try_pop();
        REQUIRE(item);
        got.push_back(item->item);
    }
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<int>{0, 2, 100});
    CHECK_FALSE(sel.try_pop());
    // A consumer waiting on the selector is woken by a push into the wrapper (no sleep orders
    // the two threads: the pop finds the item whether it parked before the push or not).
    std::optional<int> woken;
    std::thread consumer([&] {
        const auto item = sel.pop();
        if (item) {
            woken = item->item;
        }
    });
    CHECK(sa.push(4) == push_status::ok);
    consumer.join();
    CHECK(woken == 4);
    const auto st = sel.stats();
    REQUIRE(st.size() == 2);
    const auto& in = st[0].id == ia ? st[0] : st[1];
    CHECK(in.taken == 3);
    CHECK(sa.stats().sampled_out == 2);
    CHECK(sa.stats().popped == 3);

    // A wrapped moved-from subscription is refused like a bare one (it crashed: the wrapper hid
    // valid(), and the selector attached to the event of a null subscription).
    framepipe::broadcaster<int> frames;
    auto sub = frames.subscribe({.capacity = 2});
    auto taken = std::move(sub);
    framepipe::sampled empty(sub, every_n(2));
    framepipe::selector<std::shared_ptr<const int>> subs;
    CHECK_THROWS_WITH(subs.add(empty), Catch::Contains("channel") && Catch::Contains("moved-from"));
    framepipe::sampled good(taken, every_n(2));
    (void)subs.add(good);
    (void)frames.publish(5);
    const auto first = subs.try_pop();
    REQUIRE(first);
    CHECK(*first->item == 5);
}

namespace {
// A user's channel with the least a pipeline needs: push, pop(stop_token), close. No stats(),
// size() or closed(), which channel.hpp makes optional.
struct bare_channel {
    using value_type = int;
    framepipe::ring<int> r{64, framepipe::overflow::block};
    framepipe::push_status push(int v) { return r.push(v); }
    framepipe::push_status push(int v, std::stop_token stop) { return r.push(v, std::move(stop)); }
    std::optional<int> pop(std::stop_token stop) { return r.pop(std::move(stop)); }
    void close() { r.close(); }
};
template <class W>
concept has_stats = requires(const W& w) { w.stats(); };
template <class W>
concept has_size = requires(const W& w) { w.size(); };
template <class W>
concept has_closed = requires(const W& w) { w.closed(); };
template <class W>
concept has_plain_pop = requires(W& w) { w.pop(); };
} // namespace

TEST_CASE("sampled: over a channel without stats(), size() or closed(), the wrapper has none, "
          "and works in a pipeline") {
    // The wrapper declared them all (and stats() always), so that a pipeline took sampled's
    // stats() for the channel's and did not compile.
    using wrapped = framepipe::sampled<bare_channel, framepipe::every_n>;
    static_assert(!has_stats<wrapped> && !has_size<wrapped> && !has_closed<wrapped>);
    static_assert(!has_plain_pop<wrapped>);
    static_assert(has_stats<framepipe::sampled<framepipe::ring<int>, framepipe::every_n>>);
    bare_channel q;
    framepipe::sampled s(q, framepipe::every_n(2));
    int next = 0;
    std::vector<int> got;
    framepipe::pipeline p("bare");
    p.source("count", s, [&]() -> std::optional<int> {
        return next < 10 ? std::optional<int>(next++) : std::nullopt;
    });
    p.sink("keep", s, [&](int v) { got.push_back(v); });
    p.start();
    p.wait();
    CHECK(got == std::vector<int>{0, 2, 4, 6, 8});
    CHECK(s.sampled_out() == 5);
}

TEST_CASE("sampled: a push after the channel's close is the channel's refusal (closed, "
          "after_close), not the sampler's") {
    framepipe::ring<int> q(8);
    framepipe::sampled s(q, framepipe::every_n(3));
    CHECK(s.push(0) == push_status::ok);       // the sampler keeps 0, 3, 6, ...
    CHECK(s.push(1) == push_status::rejected); // and refuses 1 and 2
    q.close(); // the channel itself, not through the wrapper: the wrapper asks q.closed()
    for (int i = 2; i < 8; ++i) {
        CHECK(s.push(i) == push_status::closed);
    }
    CHECK(s.try_push(8) == push_status::closed);
    CHECK(s.push_for(9, 1ms) == push_status::closed);
    const auto st = s.stats();
    CHECK(st.sampled_out == 1);
    CHECK(st.after_close == 8);
    CHECK(st.pushed == 10);
    CHECK(st.pushed == st.popped + st.dropped + st.size);
}

TEST_CASE("sampled: over a channel without closed(), a push after the wrapper's close() is the "
          "channel's refusal, not the sampler's") {
    // The wrapper asked only the channel whether it was closed; a channel without closed()
    // left the sampler to refuse every other push (rejected, sampled_out) after the close.
    bare_channel q;
    framepipe::sampled s(q, framepipe::every_n(2));
    CHECK(s.push(0) == push_status::ok);
    CHECK(s.push(1) == push_status::rejected);
    s.close();
    for (int i = 2; i < 8; ++i) {
        CHECK(s.push(i) == push_status::closed);
    }
    CHECK(s.sampled_out() == 1);
}

TEST_CASE("sampled: a close() of the channel that throws leaves the wrapper open: the sampler "
          "goes on") {
    // The wrapper marked itself closed before the channel's close(): when that threw, the
    // channel stayed open and took every push, the sampler skipped.
    struct failing_close : bare_channel {
        void close() { throw std::runtime_error("close failed"); }
    };
    failing_close q;
    framepipe::sampled s(q, framepipe::every_n(2));
    CHECK(s.push(0) == push_status::ok);
    CHECK(s.push(1) == push_status::rejected);
    CHECK_THROWS_AS(s.close(), std::runtime_error);
    CHECK(s.push(2) == push_status::ok);
    CHECK(s.push(3) == push_status::rejected); // the sampler's, as before the close
    CHECK(s.sampled_out() == 2);
}

TEST_CASE("sampled: in a pipeline, sampled_out shows as a drop reason of the channel") {
    framepipe::ring<int> q(8, framepipe::overflow::block);
    framepipe::sampled s(q, framepipe::every_n(4));
    int next = 0;
    std::vector<int> got;
    framepipe::pipeline p("sampling");
    p.channel(s, "to-detector");
    p.source("camera", s, [&]() -> std::optional<int> {
        return next < 400 ? std::optional<int>(next++) : std::nullopt;
    });
    p.sink("detector", s, [&](int v) { got.push_back(v); });
    p.start();
    p.wait();
    CHECK(got.size() == 100);
    const auto snap = p.snapshot();
    const auto& c = snap.channels.front();
    CHECK(c.name == "to-detector");
    std::uint64_t sampled_out = 0;
    for (const auto& [reason, n] : c.dropped_by_reason) {
        if (reason == "sampled_out") {
            sampled_out = n;
        }
    }
    CHECK(sampled_out == 300);
    CHECK(c.pushed == c.popped + c.dropped + c.size);
    CHECK_THAT(framepipe::to_prometheus(snap),
               Catch::Contains("reason=\"sampled_out\"} 300"));
}

TEST_CASE("sampled: several producers push through one sampler; counts stay exact") {
    framepipe::latest_slot<int> slot;
    framepipe::sampled s(slot, framepipe::every_n(2));
    constexpr int per_thread = 5000;
    std::vector<std::thread> producers;
    for (int t = 0; t < 3; ++t) {
        producers.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
                (void)s.push(i);
            }
        });
    }
    for (auto& t : producers) {
        t.join();
    }
    const auto st = s.stats();
    CHECK(st.pushed == 3 * per_thread);
    CHECK(st.sampled_out == 3 * per_thread / 2);
    CHECK(st.pushed == st.popped + st.dropped + st.size);
}

TEST_CASE("sampled: push_for and pop_for take any duration; coarse max() means no limit") {
    framepipe::ring<int> q(4, framepipe::overflow::block);
    framepipe::sampled s(q, framepipe::every_n(1));
    CHECK(s.push_for(10, std::chrono::seconds::max()) == push_status::ok);
    std::stop_source stop;
    stop.request_stop();
    CHECK(s.push_for(11, std::chrono::hours::max(), stop.get_token()) == push_status::ok); // room
    CHECK(s.pop_for(std::chrono::seconds::max()) == 10);
    CHECK(s.pop_for(std::chrono::hours::max()) == 11);
    CHECK(s.pop_for(std::chrono::hours::max(), stop.get_token()) == std::nullopt);
    CHECK_THROWS_WITH(s.push_for(12, std::chrono::hours::min()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(s.push_for(12, -1s, stop.get_token()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(s.pop_for(std::chrono::hours::min()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(s.pop_for(-1s, stop.get_token()), Catch::Contains("timeout"));
}

TEST_CASE("sampled: push_for and pop_for with a NaN timeout throw naming it") {
    framepipe::ring<int> q(4, framepipe::overflow::block);
    framepipe::sampled s(q, framepipe::every_n(1));
    std::stop_source never;
    const auto nan = std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_WITH(s.push_for(1, nan), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(s.push_for(1, nan, never.get_token()), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(s.pop_for(nan), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(s.pop_for(nan, never.get_token()), Catch::Contains("timeout"));
}

TEST_CASE("sampled: a bad push_for timeout throws before the sampler sees the item") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::stop_source never;
    framepipe::ring<int> q(4);
    framepipe::sampled one_in_two(q, framepipe::every_n(2));
    CHECK(one_in_two.push_for(0, 1s) == push_status::ok); // the 1st: kept
    // The 2nd item would be sampled out; the timeout is refused all the same.
    CHECK_THROWS_WITH(one_in_two.push_for(1, -1s), Catch::Contains("timeout"));
    CHECK_THROWS_WITH(one_in_two.push_for(1, std::chrono::duration<double>(nan)),
                      Catch::Contains("timeout"));
    CHECK_THROWS_WITH(one_in_two.push_for(1, -1s, never.get_token()), Catch::Contains("timeout"));
    CHECK(one_in_two.sampled_out() == 0);
    CHECK(one_in_two.push_for(1, 1s) == push_status::rejected); // still the 2nd the sampler saw
    CHECK(one_in_two.push_for(2, 1s) == push_status::ok);
    // A gate that would keep the item: a throwing call does not use up its min_interval.
    framepipe::ring<int> r(4);
    framepipe::sampled gated(r, framepipe::gate([](int) { return true; }, {.min_interval = 1h}));
    CHECK_THROWS_WITH(gated.push_for(1, -1s), Catch::Contains("timeout"));
    CHECK(gated.push_for(2, 1s) == push_status::ok);
    CHECK(r.try_pop() == 2);
    CHECK(gated.stats().pushed == 1);
}
