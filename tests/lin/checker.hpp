// tests/lin/checker.hpp - a linearizability checker: Wing & Gong's search with Lowe's
// memoization, for histories of a few operations on one channel.
//
// A history is a list of completed operations, each with its invocation and response times on
// one clock, a global atomic counter ticked (seq_cst) just before a call and just after it
// returns. The counter is also what makes "A returned before B was called" mean something to
// the memory model: A's response tick is an RMW that B's invocation tick reads from (through the
// RMW chain), so everything A did happens-before everything B does.
//
// The history is linearizable when some total order of its operations
// - respects real time: if A responded before B was invoked, A comes first;
// - and is accepted by the sequential specification: run in that order from the initial state,
//   every operation returns what it returned in the history.
//
// The search (Wing & Gong): from a state and a set L of operations already placed, any operation
// X not in L whose invocation precedes every response of the operations outside L ("minimal")
// may come next; apply it to the specification, recurse, and back-track when the specification
// refuses X's recorded result. Lowe's memoization: a pair (L, specification state) that has
// failed once fails again, so it is cached; with at most 16 operations this keeps the search
// small whatever the interleaving.
//
// The specification may be non-deterministic (it yields every successor state that gives X's
// recorded result) and may depend on time: each step is told the earliest point at which X can
// take effect, the frontier (the latest invocation among L and X: placing each operation as
// early as real time allows leaves the most room to those after it). A channel whose operations
// take effect in two steps (the lock-free MPMC ring: a push claims its position, then stores its
// item) uses it to ask whether another operation was still in flight at that point (see
// specs.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace framepipe_lin {

// One completed call: what it was, its result, and when it was invoked and returned.
template <class Op>
struct event {
    Op op;
    std::uint64_t invoked = 0;
    std::uint64_t responded = 0;
    unsigned thread = 0;
};

template <class Op>
using history = std::vector<event<Op>>;

// What a specification step is told about the time at which the operation takes effect.
template <class Op>
class step_context {
public:
    step_context(const history<Op>& h, std::uint64_t frontier) noexcept : h_(h), frontier_(frontier) {}

    // Whether operation `i` had not yet returned at the earliest point the current operation can
    // take effect (so that point can be chosen inside i's call).
    [[nodiscard]] bool in_flight(std::size_t i) const noexcept { return h_[i].responded > frontier_; }
    [[nodiscard]] const history<Op>& events() const noexcept { return h_; }

private:
    const history<Op>& h_;
    std::uint64_t frontier_;
};

struct check_result {
    bool linearizable = false;
    std::size_t states_explored = 0;
    std::vector<std::size_t> order; // a witness order when linearizable
};

// Spec must provide:
//   using state = ...;                      copyable
//   state initial() const;
//   void encode(const state&, std::vector<std::uint64_t>&) const;   for memoization
//   template <class Emit> void step(const state&, std::size_t i, const step_context<Op>&,
//                                   Emit&& emit) const;
//       calls emit(next_state) for every successor in which event i's recorded result is the
//       specification's (no call: refused).
template <class Op, class Spec>
class checker {
public:
    static constexpr std::size_t max_events = 20;

    checker(const Spec& spec, const history<Op>& h) : spec_(spec), h_(h) {}

    [[nodiscard]] check_result run() {
        check_result r;
        if (h_.size() > max_events) {
            return r;
        }
        all_ = (std::uint32_t{1} << h_.size()) - 1;
        r.linearizable = search(0, 0, spec_.initial());
        r.states_explored = explored_;
        r.order.assign(order_.rbegin(), order_.rend());
        return r;
    }

private:
    bool search(std::uint32_t placed, std::uint64_t frontier, const typename Spec::state& s) {
        if (placed == all_) {
            return true;
        }
        std::vector<std::uint64_t> key{placed};
        spec_.encode(s, key);
        if (!failed_.insert(std::move(key)).second) {
            return false; // this (placed set, state) pair has failed before
        }
        ++explored_;
        // The earliest response among the operations not yet placed: only an operation invoked
        // before it can come next (otherwise that one would have to precede it in real time).
        std::uint64_t min_response = std::numeric_limits<std::uint64_t>::max();
        for (std::size_t i = 0; i < h_.size(); ++i) {
            if ((placed & bit(i)) == 0) {
                min_response = std::min(min_response, h_[i].responded);
            }
        }
        for (std::size_t i = 0; i < h_.size(); ++i) {
            if ((placed & bit(i)) != 0 || h_[i].invoked > min_response) {
                continue;
            }
            const std::uint64_t at = std::max(frontier, h_[i].invoked);
            const step_context<Op> ctx(h_, at);
            bool found = false;
            spec_.step(s, i, ctx, [&](const typename Spec::state& next) {
                if (!found && search(placed | bit(i), at, next)) {
                    found = true;
                }
            });
            if (found) {
                order_.push_back(i);
                return true;
            }
        }
        return false;
    }

    static std::uint32_t bit(std::size_t i) noexcept { return std::uint32_t{1} << i; }

    const Spec& spec_;
    const history<Op>& h_;
    std::uint32_t all_ = 0;
    std::set<std::vector<std::uint64_t>> failed_;
    std::size_t explored_ = 0;
    std::vector<std::size_t> order_;
};

template <class Op, class Spec>
[[nodiscard]] check_result check(const Spec& spec, const history<Op>& h) {
    return checker<Op, Spec>(spec, h).run();
}

// The history as text, one call per line, in invocation order: for failure messages.
template <class Op>
[[nodiscard]] std::string to_string(const history<Op>& h) {
    std::vector<std::size_t> idx(h.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
        idx[i] = i;
    }
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return h[a].invoked < h[b].invoked; });
    std::ostringstream out;
    for (const std::size_t i : idx) {
        out << "  #" << i << " thread " << h[i].thread << " [" << h[i].invoked << ", "
            << h[i].responded << "] " << describe(h[i].op) << "\n";
    }
    return out.str();
}

} // namespace framepipe_lin
