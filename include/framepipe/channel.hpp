// framepipe/channel.hpp - the vocabulary every framepipe channel shares: overflow policies, the
// result of a push, the counters, the options of a ring, and the channel concepts a pipeline
// accepts (input_channel, output_channel) with their customization point, channel_traits.
//
// Users normally include a block's own header (ring.hpp, latest_slot.hpp, ...) and get this one
// with it. The internals (waiting, the rings' implementations) live in framepipe/detail/.
#pragma once

#include <framepipe/detail/config.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace framepipe {

// What a bounded channel does with a push that finds it full.
enum class overflow {
    drop_oldest, // evict the oldest item and accept the new one (freshness first)
    drop_newest, // refuse the new item; what is buffered stays (completeness of the backlog)
    block,       // wait for room (back-pressure); with a block_timeout, evict the oldest after it
};

// What happened to one push.
enum class push_status {
    ok,        // accepted; nothing was dropped
    evicted,   // accepted; the oldest buffered item was dropped to make room
    rejected,  // not accepted: the channel was full (drop_newest; try_push or push_for under
               // block), the item is of an older epoch (drop_older_epochs), or a sampled<>
               // wrapper's sampler kept it out
    cancelled, // not accepted: a push waiting for room was ended by its std::stop_token
    closed,    // not accepted: the channel was closed
};

// True when the pushed item is now in the channel.
[[nodiscard]] constexpr bool accepted(push_status s) noexcept {
    return s == push_status::ok || s == push_status::evicted;
}

[[nodiscard]] constexpr std::string_view to_string(overflow o) noexcept {
    switch (o) {
    case overflow::drop_oldest: return "drop_oldest";
    case overflow::drop_newest: return "drop_newest";
    case overflow::block: return "block";
    }
    return "unknown";
}

[[nodiscard]] constexpr std::string_view to_string(push_status s) noexcept {
    switch (s) {
    case push_status::ok: return "ok";
    case push_status::evicted: return "evicted";
    case push_status::rejected: return "rejected";
    case push_status::cancelled: return "cancelled";
    case push_status::closed: return "closed";
    }
    return "unknown";
}

// Counters of a channel: a ring, a latest_slot, a subscription, or a sliding_window (whose items,
// for these counters, are windows; see sliding_window.hpp).
//
// Every push that returns is counted in `pushed`, whatever its status (a push that throws is not
// counted; see the channel's exception guarantee), and every item that entered the channel's
// accounting leaves it exactly once: popped, or dropped under one reason. So, when no call is in
// flight:
//
//     pushed == popped + dropped + size()
//     dropped == evicted + rejected + cancelled + expired + after_close + rate_limited
//                + sampled_out + lost_in_transport
//
// A snapshot taken while other threads push and pop: a channel that uses a lock (a ring whose T
// may throw on move, a sliding_window) takes it, so the identities hold for the snapshot itself.
// A lock-free ring derives pushed and popped from its positions without a lock; its snapshots
// always satisfy the second identity and `pushed >= popped + dropped + size` (a push in flight
// may be counted before it is stored or before the item it evicts is; and `popped`, derived from
// the head minus evictions and expiries, may read high by the evictions and expiries in flight,
// at most one per thread pushing or popping, and so read lower in a later snapshot taken during
// traffic: it is not strictly monotonic between snapshots), with equality when no call is in
// flight. A latest_slot sums per-side counters without a lock: its snapshot may be off by the
// calls in flight (see latest_slot.hpp).
struct channel_stats {
    std::uint64_t pushed = 0;       // push() calls
    std::uint64_t popped = 0;       // items handed to a consumer
    std::uint64_t dropped = 0;      // sum of the reasons below
    std::uint64_t evicted = 0;      // dropped to make room for a newer item (drop_oldest, block
                                    // timeout, a latest_slot's unread value, an overtaken window)
    std::uint64_t rejected = 0;     // new item refused: the channel was full, or the item was of
                                    // an older epoch (drop_older_epochs)
    std::uint64_t cancelled = 0;    // push waiting for room, ended by its stop_token
    std::uint64_t expired = 0;      // discarded at pop because older than max_age
    std::uint64_t after_close = 0;  // pushed after close(); not enqueued
    std::uint64_t rate_limited = 0; // skipped for a rate: a subscription's max_rate_hz, or a
                                    // paced pipeline stage taking the newest item
    std::uint64_t sampled_out = 0;  // kept out by a sampler (sampling.hpp) on purpose
    std::uint64_t lost_in_transport = 0; // never arrived: a gap in a transport's sequence
                                         // numbers (transport/*.hpp), counted by the receiver
    std::uint64_t size = 0;         // items buffered when the snapshot was taken
};

// How many threads may use a ring at once: any number (mpmc), or one producer and one consumer
// (spsc; see spsc_ring).
enum class concurrency {
    mpmc, // any number of producer and consumer threads
    spsc, // at most one thread pushing and one thread popping (or peeking) at any moment
};

// Everything a ring (and a subscription's buffer) can be configured with. An aggregate, so it
// reads well with designated initialisers:
//     ring<F> q({.capacity = 4, .policy = overflow::block, .block_timeout = 20ms});
struct ring_options {
    std::size_t capacity = 1;
    overflow policy = overflow::drop_oldest;
    // Only with overflow::block: how long a push waits for room before it evicts the oldest item
    // and accepts the new one ("block, then drop"). Unset: wait as long as it takes.
    std::optional<std::chrono::nanoseconds> block_timeout{};
    // Items older than this (by timestamp_traits<T>) are discarded at pop and counted as expired.
    // Unset: no age limit. Setting it requires a `timestamped` T.
    std::optional<std::chrono::nanoseconds> max_age{};
    // Refuse (rejected) a push whose item comes from an older epoch (epoch_traits<T>: a live
    // source's connection) than an item already pushed, so that nothing from before a reconnect
    // follows anything from after it. Exact with one pushing thread at a time (a live source's
    // output). Setting it requires an `epoched` T.
    bool drop_older_epochs = false;
};

// --- The channel contract of a pipeline ---------------------------------------------------------
//
// A pipeline stage reads from an input channel and writes to an output channel. framepipe's own
// channels fit; so does any type of yours with these members:
//
//     input:  pop(std::stop_token) -> an optional-like item: waits for the next item; tests false
//             once nothing more will come (closed and drained) or the token was requested; *r is
//             the item. close(): nobody will read any more (releases blocked producers).
//             try_pop() (optional) -> the same, never waiting: used by a paced stage to skip to
//             the newest item.
//     output: push(U) (or publish(U)), for the item type U the stage emits. close(): no more
//             items will come (the consumers drain, then end). The pipeline does not give push a
//             stop token: in an orderly stop a blocked push completes as the consumers drain,
//             and a forced stop closes the channel, which ends it.
//     stats:  (optional) stats() -> channel_stats, capacity() -> std::size_t, policy() ->
//             overflow: shown in the pipeline's snapshot, Prometheus text and DOT graph.
//
// close() should not throw (framepipe's never do). If it does, the pipeline fails the stage whose
// end closed the channel with that exception, and ignores it in a stop or an abort, which go on:
// the channel may then stay open, and only the stop tokens end the waits on it.
//
// Specialise channel_traits<C> to name the channel's kind, to state its thread rules, or to
// describe a channel whose figures do not come from those members.

// What a pop returns: tests false when there is no item, and *r is the item.
template <class R>
concept optional_like = requires(R& r) {
    static_cast<bool>(r);
    *r;
};

// A channel a pipeline stage can read from.
template <class C>
concept input_channel = requires(C& c, std::stop_token stop) {
    { c.pop(stop) } -> optional_like;
    c.close();
};

// The item an input channel hands out.
template <input_channel C>
using input_item_t =
    std::remove_cvref_t<decltype(*std::declval<decltype(std::declval<C&>().pop(std::stop_token{}))&>())>;

// A channel a pipeline stage can write items of type U to.
template <class C, class U>
concept output_channel = (requires(C& c, U&& u) { c.push(std::forward<U>(u)); } ||
                          requires(C& c, U&& u) { c.publish(std::forward<U>(u)); }) &&
                         requires(C& c) { c.close(); };

// How a channel looks in a pipeline's snapshot, metrics and graph.
struct channel_description {
    std::string kind;                   // ring, latest_slot, ..., or "channel"
    std::string policy;                 // what a full channel does, in a few words
    std::size_t capacity = 0;           // items it holds at most (0: not bounded by items)
    std::optional<channel_stats> stats; // nullopt: the channel keeps no counters
};

// The customization point for channels in a pipeline. The primary template describes a channel
// by its members (stats(), capacity(), policy(), each optional). A specialisation replaces it
// whole, so it must define kind, one_producer and one_consumer (the pipeline reads all three),
// and may define describe(c), inputs(c) and close_on_stop:
//   kind:          the name shown for the channel's type;
//   one_producer:  the channel admits one pushing thread (the pipeline refuses a second);
//   one_consumer:  the channel admits one popping thread;
//   describe(c):   (a static member function) the whole description, instead of the members;
//   inputs(c):     (static) the addresses of the channels c reads itself, as a
//                  std::vector<const void*> (a selector's or a batcher's inputs): the pipeline's
//                  graph draws an edge from each one it knows to c;
//   close_on_stop: (static constexpr bool) pipeline::request_stop() closes the channel, for one
//                  whose close() only forbids new inputs (a selector, a batcher).
template <class C>
struct channel_traits {
    static constexpr std::string_view kind = "channel";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
};

namespace detail {

class event_count;

// How many items one item of a channel stands for in its counters: 1, or a batch's size
// (batcher.hpp), so that what a paced pipeline stage passes over is counted in the channel's
// units. Specialised for such item types; of() must not throw.
template <class T>
struct item_weight {
    [[nodiscard]] static std::uint64_t of(const T&) noexcept { return 1; }
};

// What pipeline.hpp's inline_when_idle reads of a ring's or latest_slot's configuration (whether
// it filters items by age or epoch); each befriends it.
struct inline_access;

// The event count a framepipe channel's consumers wait on for an item (its "readable" event), for
// a selector to attach a listener to (select.hpp, batcher.hpp). Each framepipe channel befriends
// this struct and has a private readable_event(); code that needs the event calls
// detail::readable_event(ch). Wait-free; noexcept.
struct readable_access {
    template <class C>
    [[nodiscard]] static auto event(C& c) noexcept -> decltype(c.readable_event()) {
        return c.readable_event();
    }
};

template <class C>
[[nodiscard]] auto readable_event(C& c) noexcept -> decltype(readable_access::event(c)) {
    return readable_access::event(c);
}

// The description of `c`: channel_traits<C>::describe(c) if there is one, else from its members.
template <class C>
[[nodiscard]] channel_description describe_channel(const C& c) {
    using traits = channel_traits<C>;
    if constexpr (requires { { traits::describe(c) } -> std::same_as<channel_description>; }) {
        return traits::describe(c);
    } else {
        channel_description d;
        d.kind = std::string(traits::kind);
        if constexpr (requires { { c.stats() } -> std::convertible_to<channel_stats>; }) {
            d.stats = c.stats();
        }
        if constexpr (requires { { c.capacity() } -> std::convertible_to<std::size_t>; }) {
            d.capacity = c.capacity();
        }
        if constexpr (requires { { c.policy() } -> std::same_as<overflow>; }) {
            d.policy = std::string(to_string(c.policy()));
        }
        return d;
    }
}

} // namespace detail
} // namespace framepipe
