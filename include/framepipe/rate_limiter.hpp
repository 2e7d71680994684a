// framepipe/rate_limiter.hpp - admits at most `hz` events per second, without drift.
//
//     framepipe::rate_limiter ui_rate(15);              // 30 fps in, 15 fps to the UI
//     for (auto& f : frames) if (ui_rate.try_acquire()) send_to_ui(f);
//
// How it decides. Time is cut into slots of 1/hz, anchored at the first call, and one token is
// added at the start of each slot, up to `burst` tokens; an event is admitted when a token is
// there. Because the slots are anchored, not restarted at each admission, the long-run rate is
// exact whatever the arrival pattern:
// - a steady 30 fps source decimated to 15, 10 or 5 fps gets exactly every 2nd, 3rd or 6th frame;
// - 30 to 7 fps admits 7 a second, for ever, with no drift (gaps of 4 or 5 source frames);
// - with jittered arrivals (30 fps +-5 ms) a 15 fps target still averages 15 fps.
// The naive rule `now - last_admitted >= 1/hz` restarts the clock at every admission and so
// loses the part of a frame interval by which each admitted frame came late: it decimates 30 to
// 7 fps as 6 fps, and a jittered 30 fps source to 15 fps as about 11 fps.
//
// Bound. In any interval of length L, admitted <= floor(hz * L) + burst + 1. The "+1" is the
// price of no drift: a frame admitted late in its slot can be followed by one at the start of
// the next. (A limiter that keeps every pair of admissions 1/hz apart cannot keep its average
// with arrivals that do not line up with its period; that is the naive rule above.)
//
// Slot boundaries are widened by 1/1000 of a period to absorb clock rounding: timestamps of a
// 30 fps source rounded to the nanosecond or microsecond would otherwise land a hair before the
// boundary they belong to.
//
// Thread safety: every member may be called from any thread; the state is guarded by a mutex
// held for a few instructions. Only acquire() waits.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>

namespace framepipe {

class rate_limiter {
public:
    using clock = std::chrono::steady_clock;

    // At most `hz` admissions per second, and at most `burst` in a row after an idle spell.
    // Throws std::invalid_argument naming `hz` when it is <= 0, NaN, infinite, above 1e9 (one
    // per nanosecond) or so small that its period overflows; naming `burst` when it is 0 or
    // above 2^32 - 1.
    explicit rate_limiter(double hz, std::size_t burst = 1)
        : period_ns_(period_of(hz)), hz_(hz), burst_(check_burst(burst)), tokens_(burst_) {}

    rate_limiter(const rate_limiter&) = delete;
    rate_limiter& operator=(const rate_limiter&) = delete;

    // Whether an event now may pass (it then uses a token). Any thread; never waits (brief lock);
    // never throws in practice (std::mutex::lock).
    [[nodiscard]] bool try_acquire() { return try_acquire(clock::now()); }

    // The same decision at an explicit time point, so that decisions can be replayed and
    // simulated. Time points should not go backwards; one that does is treated as falling in the
    // current slot. Any thread; never waits.
    [[nodiscard]] bool try_acquire(clock::time_point now) {
        const std::lock_guard<std::mutex> lock(mu_);
        refill_locked(now);
        if (tokens_ == 0) {
            return false;
        }
        --tokens_;
        return true;
    }

    // Waits until an event may pass and takes its token: paces a loop at the rate. Any thread.
    // Blocks (sleeping, not spinning) until the next slot. Returns true when admitted, false when
    // `stop` is requested first.
    [[nodiscard]] bool acquire(std::stop_token stop = {}) {
        std::optional<std::stop_callback<wake>> on_stop;
        if (stop.stop_possible()) {
            on_stop.emplace(stop, wake{this});
        }
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            if (stop.stop_requested()) {
                return false;
            }
            refill_locked(clock::now());
            if (tokens_ > 0) {
                --tokens_;
                return true;
            }
            // Sleep until the next slot begins (or a rate change or stop wakes us).
            sleepers_.wait_until(lock, next_slot_locked());
        }
    }

    // Changes the rate. The slot under way at `now` keeps its length; the new rate applies from
    // the next slot. Before the first acquire there is no slot yet, so it applies at once. Pass
    // the same kind of time points as to try_acquire(time_point) when simulating.
    // Any thread; never waits. Throws std::invalid_argument naming `hz` as the constructor
    // does; the rate is then unchanged.
    void set_rate(double hz, clock::time_point now) {
        const double period = period_of(hz);
        {
            const std::lock_guard<std::mutex> lock(mu_);
            if (!started_) {
                period_ns_ = period;
            } else {
                refill_locked(now); // settle the slots up to now under the old rate
                pending_period_ns_ = period;
            }
            hz_ = hz;
        }
        sleepers_.notify_all();
    }

    // set_rate(hz, steady_clock::now()).
    void set_rate(double hz) { set_rate(hz, clock::now()); }

    // The rate set last. Any thread; never waits.
    [[nodiscard]] double rate() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return hz_;
    }

    // The burst size. Any thread; wait-free.
    [[nodiscard]] std::size_t burst() const noexcept { return burst_; }

private:
    struct wake {
        rate_limiter* self;
        void operator()() const noexcept {
            // Take the lock so the notification cannot slip between a waiter's stop check and
            // its wait (see detail::wake_all_on_stop in channel.hpp).
            { const std::lock_guard<std::mutex> lock(self->mu_); }
            self->sleepers_.notify_all();
        }
    };

    static double period_of(double hz) {
        if (!(hz > 0.0) || !std::isfinite(hz)) {
            throw std::invalid_argument("hz: must be a finite rate above 0");
        }
        const double period = 1e9 / hz;
        if (!(period >= 1.0)) {
            throw std::invalid_argument("hz: must be at most 1e9 (one event per nanosecond)");
        }
        if (!std::isfinite(period)) {
            throw std::invalid_argument("hz: too small (its period in nanoseconds overflows)");
        }
        return period;
    }

    static std::uint32_t check_burst(std::size_t burst) {
        if (burst == 0 || burst > UINT32_MAX) {
            throw std::invalid_argument("burst: must be between 1 and 2^32 - 1");
        }
        return static_cast<std::uint32_t>(burst);
    }

    // Nanoseconds from anchor_ to `t`, as a double (exact to well under a nanosecond for the
    // first few weeks after an anchor, which is re-set at every rate change).
    [[nodiscard]] double since_anchor(clock::time_point t) const noexcept {
        return static_cast<double>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(t - anchor_).count());
    }

    // Adds one token per slot boundary passed since the last call, capped at burst_. Boundary k
    // (k >= 1) is at anchor_ + k * period_ns_, widened by period/1000 for clock rounding.
    void refill_locked(clock::time_point now) {
        if (!started_) {
            started_ = true;
            anchor_ = now;
            next_k_ = 1;
            return;
        }
        for (;;) {
            const double slack = period_ns_ / 1000.0;
            const double pos = (since_anchor(now) + slack) / period_ns_;
            if (!(pos >= static_cast<double>(next_k_))) {
                return; // still in the current slot (or time went backwards)
            }
            if (pending_period_ns_) {
                // Cross one boundary at the old rate, then re-anchor there at the new rate.
                anchor_ += std::chrono::nanoseconds(
                    std::llround(static_cast<double>(next_k_) * period_ns_));
                period_ns_ = *pending_period_ns_;
                pending_period_ns_.reset();
                next_k_ = 1;
                tokens_ = std::min(burst_, tokens_ + 1);
                continue;
            }
            const auto crossed = static_cast<std::uint64_t>(std::floor(pos)) - next_k_ + 1;
            tokens_ = static_cast<std::uint32_t>(
                std::min<std::uint64_t>(burst_, std::uint64_t{tokens_} + crossed));
            next_k_ += crossed;
            return;
        }
    }

    // When the next token arrives.
    [[nodiscard]] clock::time_point next_slot_locked() const noexcept {
        const double at = static_cast<double>(next_k_) * period_ns_ - period_ns_ / 1000.0;
        const double room = static_cast<double>((clock::time_point::max() - anchor_).count());
        if (!(at < room)) {
            return clock::time_point::max(); // a period of centuries: no slot in sight
        }
        return anchor_ + std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(at)));
    }

    mutable std::mutex mu_;
    std::condition_variable sleepers_; // threads inside acquire()
    double period_ns_;                 // current slot length
    std::optional<double> pending_period_ns_; // set_rate() waiting for the next boundary
    double hz_;
    const std::uint32_t burst_;
    std::uint32_t tokens_;
    bool started_ = false;
    clock::time_point anchor_{};
    std::uint64_t next_k_ = 1; // index of the next slot boundary after anchor_
};

} // namespace framepipe
