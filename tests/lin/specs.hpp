// tests/lin/specs.hpp - the operations recorded in a history, and the sequential specification
// of each lock-free channel for the linearizability checker: the models of tests/fuzz/models.hpp,
// plus exactly the freedom each implementation documents (docs/verification.md, "Specifications").
//
// The freedom: a pop or peek may find the channel empty while the specification holds an item,
// only when the call pushing that item (the oldest one, the next to be popped) has taken effect
// but not yet returned at the point where the pop takes effect, and
// - ring (lock-free MPMC), and a subscription (whose buffer is one): always. A push claims its
//   position (the point at which it is ordered), then stores its item; until the store, a pop
//   finds the head position empty and returns nullopt (pop_for times out), even though later
//   positions may already be filled by pushes that have returned ok, and size() counts both.
// - spsc_ring: only when that push evicted (it moves the head past the victim, then stores its
//   own item) or when the ring is closed (the push checked `closed` before close() and stores
//   after it). Otherwise an SPSC push takes effect at its store: no freedom.
// - latest_slot: only when the slot is closed (a push that checked `closed` before close()
//   publishes its value after it). Otherwise a push takes effect at its exchange: no freedom.
// And a push racing close(): a push that began before the first close() returned may take
// effect after that close as if the channel were still open (ok or evicted, never closed); what
// it stores or replaces is then seen only after the close. A push that began after a close()
// returned gets closed. Where this comes from:
// - spsc_ring and latest_slot: the push read `closed` before close() stored it, and stores (or
//   evicts) after.
// - ring (MPMC) and a subscription: close() sets a bit in the word pushes claim positions from,
//   so a claim is ordered with it; but a push that claimed its position while the ring was full
//   decides only afterwards whether it evicts: if a consumer takes the oldest item first (after
//   the close), the push returns ok, not evicted. Its effect is at that decision. (The freedom
//   also covers a push that claimed with room before the close, which then could not be told
//   apart from one ordered before it.)
// Nothing else is relaxed: a pop that finds nothing while the oldest item's push has returned,
// a FIFO inversion, a lost or duplicated item, a wrong status, or wrong counters are refused.
#pragma once

#include "../fuzz/models.hpp"
#include "checker.hpp"

#include <framepipe/channel.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace framepipe_lin {

using framepipe::channel_stats;
using framepipe::push_status;
using framepipe_model::item;
using framepipe_model::wait_end_model;

enum class kind : std::uint8_t {
    push,     // push(): never waits under the policies used with it (drop_oldest, drop_newest)
    try_push, // try_push(): full under block is rejected
    push_for, // push_for(short): full under block until the deadline is rejected
    pop,      // try_pop() or pop_for(short): nullopt means empty at the point it takes effect
    peek,     // peek()
    close,    // close()
    stats,    // stats() and size(), only while no other call is in flight (exact)
};

struct op {
    kind k = kind::pop;
    std::int64_t value = 0;           // pushed
    push_status status = push_status::ok; // a push's result
    std::optional<std::int64_t> got;  // a pop's or peek's result
    channel_stats stats{};            // kind::stats
    std::size_t size = 0;             // kind::stats
};

inline std::string describe(const op& o) {
    switch (o.k) {
    case kind::push:
    case kind::try_push:
    case kind::push_for:
        return std::string(o.k == kind::push ? "push(" : o.k == kind::try_push ? "try_push(" : "push_for(") +
               std::to_string(o.value) + ") -> " + std::string(framepipe::to_string(o.status));
    case kind::pop: return "pop -> " + (o.got ? std::to_string(*o.got) : std::string("nullopt"));
    case kind::peek: return "peek -> " + (o.got ? std::to_string(*o.got) : std::string("nullopt"));
    case kind::close: return "close";
    case kind::stats:
        return "stats -> pushed " + std::to_string(o.stats.pushed) + " popped " +
               std::to_string(o.stats.popped) + " evicted " + std::to_string(o.stats.evicted) +
               " rejected " + std::to_string(o.stats.rejected) + " after_close " +
               std::to_string(o.stats.after_close) + " size " + std::to_string(o.size);
    }
    return "?";
}

// Which freedom a specification allows (see the file comment).
enum class relaxation { none, mpmc_claim, spsc_evict_or_close, slot_close };

// The push event that put `value` in, if any.
inline std::optional<std::size_t> pusher_of(const history<op>& h, std::int64_t value) {
    for (std::size_t i = 0; i < h.size(); ++i) {
        const op& o = h[i].op;
        if ((o.k == kind::push || o.k == kind::try_push || o.k == kind::push_for) && o.value == value) {
            return i;
        }
    }
    return std::nullopt;
}

// Whether an empty result is allowed while the specification's next item is `front`.
inline bool empty_allowed(relaxation r, const std::optional<item>& front, bool closed,
                          const step_context<op>& ctx) {
    if (r == relaxation::none || !front) {
        return false;
    }
    const auto p = pusher_of(ctx.events(), front->value);
    if (!p || !ctx.in_flight(*p)) {
        return false;
    }
    switch (r) {
    case relaxation::mpmc_claim: return true;
    case relaxation::spsc_evict_or_close:
        return ctx.events()[*p].op.status == push_status::evicted || closed;
    case relaxation::slot_close: return closed;
    case relaxation::none: break;
    }
    return false;
}

// Whether push `i` may take effect after a close as if the channel were open (see the file
// comment): under every freedom but none, when it began before the first close() returned.
inline bool may_push_past_close(relaxation r, const step_context<op>& ctx, std::size_t i) {
    if (r == relaxation::none) {
        return false;
    }
    const history<op>& h = ctx.events();
    std::optional<std::uint64_t> first_close_returned;
    for (const event<op>& e : h) {
        if (e.op.k == kind::close && (!first_close_returned || e.responded < *first_close_returned)) {
            first_close_returned = e.responded;
        }
    }
    return first_close_returned && h[i].invoked < *first_close_returned;
}

// ring<T> (MPMC or SPSC) and a subscription's buffer.
class ring_spec {
public:
    using state = framepipe_model::ring_model;

    ring_spec(framepipe_model::ring_model::config cfg, relaxation r) : cfg_(cfg), relax_(r) {}

    [[nodiscard]] state initial() const { return state(cfg_); }
    void encode(const state& s, std::vector<std::uint64_t>& out) const { s.encode(out); }

    template <class Emit>
    void step(const state& s, std::size_t i, const step_context<op>& ctx, Emit&& emit) const {
        const op& o = ctx.events()[i].op;
        switch (o.k) {
        case kind::push:
        case kind::try_push:
        case kind::push_for: {
            state next = s;
            // push() is recorded only under policies where it never waits; a try_push or a timed
            // out push_for on a full block ring is rejected.
            const auto end = o.k == kind::push ? wait_end_model::forever : wait_end_model::reject;
            const auto st = next.push(item{.value = o.value}, end);
            if (st && *st == o.status) {
                emit(next);
            } else if (s.closed() && o.status != push_status::closed && may_push_past_close(relax_, ctx, i)) {
                state past = s;
                const auto late = past.push_past_close(item{.value = o.value}, end);
                if (late && *late == o.status) {
                    emit(past);
                }
            }
            break;
        }
        case kind::pop: {
            state next = s;
            const auto got = next.pop();
            if (same(got, o.got)) {
                emit(next);
            } else if (!o.got && empty_allowed(relax_, front(s), s.closed(), ctx)) {
                emit(s);
            }
            break;
        }
        case kind::peek: {
            const auto got = s.peek();
            if (same(got, o.got) || (!o.got && empty_allowed(relax_, front(s), s.closed(), ctx))) {
                emit(s);
            }
            break;
        }
        case kind::close: {
            state next = s;
            next.close();
            emit(next);
            break;
        }
        case kind::stats:
            if (state::same_counts(s.stats(), o.stats) && s.size() == o.size) {
                emit(s);
            }
            break;
        }
    }

private:
    static std::optional<item> front(const state& s) {
        return s.items().empty() ? std::nullopt : std::optional<item>(s.items().front());
    }
    static bool same(const std::optional<item>& model, const std::optional<std::int64_t>& real) {
        return model.has_value() == real.has_value() && (!model || model->value == *real);
    }

    framepipe_model::ring_model::config cfg_;
    relaxation relax_;
};

// latest_slot<T>.
class latest_slot_spec {
public:
    using state = framepipe_model::latest_slot_model;

    explicit latest_slot_spec(relaxation r = relaxation::slot_close) : relax_(r) {}

    [[nodiscard]] state initial() const { return state({}); }
    void encode(const state& s, std::vector<std::uint64_t>& out) const { s.encode(out); }

    template <class Emit>
    void step(const state& s, std::size_t i, const step_context<op>& ctx, Emit&& emit) const {
        const op& o = ctx.events()[i].op;
        switch (o.k) {
        case kind::push:
        case kind::try_push:
        case kind::push_for: {
            state next = s;
            if (next.push(item{.value = o.value}) == o.status) {
                emit(next);
            } else if (s.closed() && o.status != push_status::closed && may_push_past_close(relax_, ctx, i)) {
                state past = s;
                if (past.push_past_close(item{.value = o.value}) == o.status) {
                    emit(past);
                }
            }
            break;
        }
        case kind::pop: {
            state next = s;
            const auto got = next.pop();
            if (same(got, o.got)) {
                emit(next);
            } else if (!o.got && empty_allowed(relax_, s.value(), s.closed(), ctx)) {
                emit(s);
            }
            break;
        }
        case kind::peek:
            if (same(s.peek(), o.got) || (!o.got && empty_allowed(relax_, s.value(), s.closed(), ctx))) {
                emit(s);
            }
            break;
        case kind::close: {
            state next = s;
            next.close();
            emit(next);
            break;
        }
        case kind::stats:
            if (framepipe_model::ring_model::same_counts(s.stats(), o.stats) && s.size() == o.size) {
                emit(s);
            }
            break;
        }
    }

private:
    static bool same(const std::optional<item>& model, const std::optional<std::int64_t>& real) {
        return model.has_value() == real.has_value() && (!model || model->value == *real);
    }
    relaxation relax_;
};

} // namespace framepipe_lin
