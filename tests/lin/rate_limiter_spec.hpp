// tests/lin/rate_limiter_spec.hpp - rate_limiter's calls as recorded in a history, and its
// sequential specification for the linearizability checker (checker.hpp).
//
// The model restates rate_limiter.hpp's header comment in whole nanoseconds: slots of one period
// anchored at the first call, a token added at each boundary up to burst, boundaries widened by
// period/1000, a time point that goes backwards falling in the current slot, and a new rate that
// takes effect at the next boundary (at once before the first call). It shares no arithmetic with
// the limiter (which uses doubles and a packed word), so the histories use periods that are whole
// microseconds, where both are exact.
//
// No freedom is allowed: every try_acquire() takes effect at one point inside its call, and
// set_rate() too. The histories therefore check the limiter's handling of several writers
// (rate_limiter.hpp, "One writer, or many"): a takeover or a set_rate() that did not wait for the
// owner's section would show as a token used twice or a rate change lost.
#pragma once

#include "checker.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace framepipe_lin {

enum class limit_kind : std::uint8_t {
    acquire,  // try_acquire(at) -> admitted
    set_rate, // set_rate(1e9 / period_ns, at)
};

struct limit_op {
    limit_kind k = limit_kind::acquire;
    std::int64_t at_ns = 0;     // the time point passed, in ns after the histories' base
    std::int64_t period_ns = 0; // set_rate: the new period
    bool admitted = false;      // acquire: the result
};

inline std::string describe(const limit_op& o) {
    const std::string at = "@" + std::to_string(o.at_ns / 1000) + " us";
    if (o.k == limit_kind::set_rate) {
        return "set_rate(period " + std::to_string(o.period_ns / 1000) + " us, " + at + ")";
    }
    return "try_acquire(" + at + ") -> " + (o.admitted ? "true" : "false");
}

// One planned call (for record() in harness.hpp).
struct limit_plan {
    limit_kind k = limit_kind::acquire;
    std::int64_t at_ns = 0;
    std::int64_t period_ns = 0;
    unsigned spin_before = 0;
    std::chrono::microseconds sleep_before{0};
};

// The limiter, single-threaded, in integer nanoseconds. Periods must be multiples of 1000 ns (the
// widening, period/1000, is then a whole number of nanoseconds).
class rate_limiter_model {
public:
    rate_limiter_model(std::int64_t period_ns, std::uint64_t burst)
        : burst_(burst), period_(period_ns), tokens_(burst) {}

    // Admits when a token is there after the boundaries passed by `now` have added theirs.
    bool try_acquire(std::int64_t now) {
        settle(now);
        if (tokens_ == 0) {
            return false;
        }
        --tokens_;
        return true;
    }

    // The slot under way at `now` keeps its length; the new period starts at its end. Before the
    // first call there is no slot: the new period applies at once. A later set_rate() before
    // that boundary replaces the pending period.
    void set_rate(std::int64_t period_ns, std::int64_t now) {
        if (!started_) {
            period_ = period_ns;
            return;
        }
        settle(now);
        pending_ = period_ns;
    }

    void encode(std::vector<std::uint64_t>& out) const {
        out.push_back(started_ ? 1 : 0);
        out.push_back(static_cast<std::uint64_t>(anchor_));
        out.push_back(static_cast<std::uint64_t>(period_));
        out.push_back(static_cast<std::uint64_t>(passed_));
        out.push_back(tokens_);
        out.push_back(pending_ ? static_cast<std::uint64_t>(*pending_) : 0);
    }

private:
    // Adds the tokens of the boundaries passed by `now`. Boundary j (j >= 1) of the current
    // period is at anchor_ + j * period_, and counts as passed from period_/1000 before it.
    void settle(std::int64_t now) {
        if (!started_) {
            started_ = true; // the first call anchors slot 0; the bucket starts full
            anchor_ = now;
            passed_ = 0;
            return;
        }
        for (;;) {
            const std::int64_t widening = period_ / 1000;
            const std::int64_t next = passed_ + 1;
            if (now - anchor_ + widening < next * period_) {
                return; // still in the current slot (or time went backwards)
            }
            if (pending_) {
                // The new period starts at the first boundary crossed, which adds its token.
                anchor_ += next * period_;
                period_ = *pending_;
                pending_.reset();
                passed_ = 0;
                tokens_ = std::min(burst_, tokens_ + 1);
                continue;
            }
            const std::int64_t last = (now - anchor_ + widening) / period_;
            tokens_ = std::min(burst_, tokens_ + static_cast<std::uint64_t>(last - passed_));
            passed_ = last;
            return;
        }
    }

    std::uint64_t burst_;
    bool started_ = false;
    std::int64_t anchor_ = 0;
    std::int64_t period_;
    std::int64_t passed_ = 0; // boundaries passed since the anchor
    std::uint64_t tokens_;
    std::optional<std::int64_t> pending_;
};

class rate_limiter_spec {
public:
    using state = rate_limiter_model;

    rate_limiter_spec(std::int64_t period_ns, std::uint64_t burst) : period_(period_ns), burst_(burst) {}

    [[nodiscard]] state initial() const { return state(period_, burst_); }
    void encode(const state& s, std::vector<std::uint64_t>& out) const { s.encode(out); }

    template <class Emit>
    void step(const state& s, std::size_t i, const step_context<limit_op>& ctx, Emit&& emit) const {
        const limit_op& o = ctx.events()[i].op;
        state next = s;
        if (o.k == limit_kind::set_rate) {
            next.set_rate(o.period_ns, o.at_ns);
            emit(next);
        } else if (next.try_acquire(o.at_ns) == o.admitted) {
            emit(next);
        }
    }

private:
    std::int64_t period_;
    std::uint64_t burst_;
};

} // namespace framepipe_lin
