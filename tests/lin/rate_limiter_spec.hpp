// tests/lin/rate_limiter_spec.hpp - rate_limiter's calls as recorded in a history, and its
// sequential specification for the linearizability checker (checker.hpp).
//
// The model (rate_limiter_model, tests/fuzz/models.hpp) restates rate_limiter.hpp's header
// comment in integer nanoseconds. It shares no arithmetic with the limiter (which uses doubles and
// a packed word), so the histories use periods that are whole microseconds, where both are exact.
//
// No freedom is allowed: every try_acquire() takes effect at one point inside its call, and
// set_rate() too. The histories therefore check the limiter's handling of several writers
// (rate_limiter.hpp, "One writer, or many"): a takeover or a set_rate() that did not wait for the
// owner's section would show as a token used twice or a rate change lost.
#pragma once

#include "../fuzz/models.hpp"
#include "checker.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
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

using framepipe_model::rate_limiter_model;

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
