// framepipe/ring.hpp - a bounded FIFO channel with a drop policy.
//
//     framepipe::ring<Frame> q(4);                       // drop_oldest: freshness first
//     q.push(grab());                                    // never waits; evicts when full
//     while (auto f = q.pop()) process(*f);              // waits; ends once closed and drained
//
// Any number of producer and consumer threads may share one ring. When exactly one thread
// pushes and one pops, spsc_ring<T> (ring<T, concurrency::spsc>) has the same API for less:
//
//     framepipe::spsc_ring<Frame> q(4);                  // camera thread -> detector thread
//
// Three implementations sit behind this one class, chosen from T and the concurrency:
// - T's move constructor is noexcept (frame handles, shared_ptr, unique_ptr, plain values): the
//   ring is lock-free (is_lock_free). MPMC: a bounded array whose slots carry sequence numbers,
//   one compare-and-swap per push and per pop (detail/lockfree_ring.hpp). SPSC: cached indices,
//   no read-modify-write on the fast path unless the policy evicts
//   (detail/spsc_lockfree_ring.hpp).
// - Otherwise (cv::Mat, whose move constructor is not declared noexcept, or any T whose move may
//   throw): one internal mutex guards the items, so that every exception guarantee below holds
//   (detail/locked_ring.hpp), for either concurrency.
//
// A thread that must wait (a pop on an empty ring, a push under overflow::block on a full one)
// spins for a few microseconds, then parks on a futex and uses no CPU (detail/wait.hpp).
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/locked_ring.hpp>
#include <framepipe/detail/lockfree_ring.hpp>
#include <framepipe/detail/ring_common.hpp>
#include <framepipe/detail/spsc_lockfree_ring.hpp>
#include <framepipe/stamped.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string_view>
#include <type_traits>
#include <utility>

namespace framepipe {

namespace detail {
struct ring_access;
} // namespace detail

template <class T, concurrency C = concurrency::mpmc>
class ring {
    static_assert(C == concurrency::mpmc || C == concurrency::spsc,
                  "framepipe::ring<T, C>: C must be concurrency::mpmc or concurrency::spsc");
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::ring<T>: T must be an object type (not a reference or array)");
    static_assert(std::is_move_constructible_v<T>,
                  "framepipe::ring<T>: T must be move-constructible");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "framepipe::ring<T>: T's destructor must not throw");

public:
    using value_type = T;
    using clock = std::chrono::steady_clock;

    // True when this ring is lock-free: T's move constructor is noexcept (see the file
    // comment). Otherwise every call takes an internal mutex (for either concurrency).
    static constexpr bool is_lock_free = std::is_nothrow_move_constructible_v<T>;

    // The threads this ring admits (the template argument).
    static constexpr concurrency threads = C;

    // A ring holding at most `capacity` items with the given overflow policy (overflow::block
    // waits for room as long as it takes). Throws std::invalid_argument naming capacity when it
    // is 0 or above 2^61; std::bad_alloc.
    explicit ring(std::size_t capacity, overflow policy = overflow::drop_oldest)
        : ring(ring_options{.capacity = capacity, .policy = policy}) {}

    // "Block, then drop": a full ring makes push wait up to `block_timeout` for room, then evict
    // the oldest item and accept the new one. Throws std::invalid_argument naming policy unless
    // it is overflow::block, naming block_timeout when it is negative, naming capacity as above.
    // block_timeout may be any std::chrono::duration: one beyond nanoseconds' range (say
    // seconds::max()) means no limit; a floating-point NaN throws std::invalid_argument naming it.
    template <class Rep, class Period>
    ring(std::size_t capacity, overflow policy, std::chrono::duration<Rep, Period> block_timeout)
        : ring(ring_options{
              .capacity = capacity,
              .policy = policy,
              .block_timeout = detail::to_nanoseconds(block_timeout, "block_timeout")}) {}

    // The general form. Throws std::invalid_argument naming the offending field: capacity 0 (or
    // above 2^61); a policy that is none of overflow's values; a block_timeout with a policy other
    // than block; a negative block_timeout or max_age; a max_age when T is not `timestamped`;
    // drop_older_epochs when T is not `epoched`.
    explicit ring(const ring_options& options) : impl_(validated(options)) {}

    // Shared by threads by reference; neither copyable nor movable.
    ring(const ring&) = delete;
    ring& operator=(const ring&) = delete;

    // Destroys the buffered items. No thread may be inside a call on this ring.
    ~ring() = default;

    // Offers `item`. Producer threads (any thread; spsc_ring: one at a time).
    // Room: stores it (ok) and wakes a waiting consumer. Full: drop_oldest evicts the oldest and
    // stores this one (evicted); drop_newest refuses it (rejected); block waits for room, and
    // with a block_timeout evicts the oldest once that has passed (evicted). Closed, also while
    // waiting: closed. With drop_older_epochs, an item from an older epoch than one already
    // pushed is refused first (rejected). Never waits except under block, and while a peek()
    // copies the very item an eviction takes (see peek()). Every call is counted in stats(); a
    // push that returns evicted dropped exactly one item, destroyed after the push has left the
    // ring.
    // Exceptions: none for a lock-free ring. Otherwise what T's move constructor throws; the
    // item is then not stored and not counted. If moving the oldest item out to evict it throws,
    // nothing changed; if storing the new one then throws, the oldest has already been removed
    // and counted as evicted (basic guarantee; the counts stay exact).
    FRAMEPIPE_ALWAYS_INLINE push_status push(T item) noexcept(is_lock_free) {
        return push_impl(item, detail::push_wait{});
    }

    // As push(T); a wait for room (overflow::block) ends when `stop` is requested: the item is
    // refused and counted as cancelled.
    push_status push(T item, std::stop_token stop) noexcept(is_lock_free) {
        return push_impl(item, detail::push_wait{.stop = &stop});
    }

    // As push(T), but never waits: a full ring under overflow::block refuses the item (rejected,
    // counted as rejected). Under the other policies the same as push(T).
    [[nodiscard]] push_status try_push(T item) noexcept(is_lock_free) {
        return push_impl(item, detail::push_wait{.allowed = false});
    }

    // As push(T), waiting at most `timeout` for room: then the item is refused (rejected,
    // counted as rejected), unless the ring's block_timeout ends first (it then evicts).
    // Any std::chrono::duration; one beyond nanoseconds' range (say seconds::max()) means no
    // limit. Throws std::invalid_argument naming timeout when it is negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] push_status push_for(T item, std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return push_impl(item, detail::push_wait{.give_up = detail::deadline_after(ns)});
    }

    // As push_for(); also ends (cancelled) when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] push_status push_for(T item, std::chrono::duration<Rep, Period> timeout,
                                       std::stop_token stop) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return push_impl(item,
                         detail::push_wait{.stop = &stop, .give_up = detail::deadline_after(ns)});
    }

    // Takes the oldest item if there is one. Consumer threads (any; spsc_ring: one at a time).
    // Never waits for an item: nullopt when empty (also when the next position is claimed by a
    // push that has not stored yet), or when every buffered item has expired (they are discarded
    // and counted). A lock-free ring may spin for the few instructions another consumer, a peek
    // or an evicting producer needs to finish with the head slot.
    // Exceptions: none for a lock-free ring; otherwise what T's move constructor throws, and the
    // item stays in the ring (strong). With a max_age the age check is noexcept: a
    // timestamp_traits<T>::capture_time that throws calls std::terminate (every pop and peek).
    [[nodiscard]] FRAMEPIPE_ALWAYS_INLINE std::optional<T> try_pop() noexcept(is_lock_free) {
        return impl_.pop(nullptr, detail::no_deadline, false);
    }

    // Takes the oldest item, waiting for one: spins a few microseconds, then parks (no CPU).
    // nullopt only once the ring is closed and drained. Exceptions: as try_pop().
    [[nodiscard]] FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop() noexcept(is_lock_free) {
        return impl_.pop(nullptr, detail::no_deadline, true);
    }

    // As pop(), but nullopt as soon as `stop` is requested: the token is checked first, so a
    // stopped consumer leaves even when items remain (they stay in the ring). A stop that lands
    // just as a push wakes this consumer may yield that item instead (docs/channels.md, Waiting).
    [[nodiscard]] std::optional<T> pop(std::stop_token stop) noexcept(is_lock_free) {
        return impl_.pop(&stop, detail::no_deadline, true);
    }

    // As pop(), waiting at most `timeout`: nullopt when it runs out, or closed and drained.
    // Any std::chrono::duration; one beyond nanoseconds' range (say seconds::max()) means no
    // limit. Throws std::invalid_argument naming timeout when it is negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return impl_.pop(nullptr, detail::deadline_after(ns), true);
    }

    // As pop_for(), also ending (nullopt) when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout,
                                           std::stop_token stop) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return impl_.pop(&stop, detail::deadline_after(ns), true);
    }

    // A copy of the item the next pop would return, left in place (items past max_age are
    // skipped, not removed). Any thread (spsc_ring: the consumer's). Never waits for an item. A
    // consumer taking that very item, and a push evicting it, wait for the copy (neither their
    // stop token nor close() ends that wait; the mutex ring copies under its lock, so every call
    // waits). So T's copy must not wait for a producer of this ring: a copy that takes from a
    // pool the producer holds deadlocks both. Needs a copyable T.
    // Exceptions: what T's copy constructor throws; the ring is unchanged.
    [[nodiscard]] std::optional<T> peek() const
        requires std::is_copy_constructible_v<T>
    {
        return impl_.peek();
    }

    // Closes the ring: later pushes return closed; consumers drain what is buffered, then get
    // nullopt. Wakes every waiting producer and consumer. Any thread; idempotent; never waits
    // (beyond the internal mutex of a ring that is not lock-free).
    void close() noexcept(is_lock_free) { impl_.close(); }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return impl_.closed(); }

    // Items buffered now (may be stale by the time the caller looks). Any thread; wait-free.
    // Counts items that have expired but not yet been discarded by a pop.
    [[nodiscard]] std::size_t size() const noexcept { return impl_.size(); }

    // The most items the ring ever holds. Any thread; wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    // The overflow policy. Any thread; wait-free.
    [[nodiscard]] overflow policy() const noexcept { return policy_; }

    // A snapshot of the counters (see channel_stats for the identities). Any thread; lock-free
    // for a lock-free ring, else takes the internal mutex briefly.
    [[nodiscard]] channel_stats stats() const noexcept(is_lock_free) { return impl_.stats(); }

private:
    friend struct detail::readable_access;
    friend struct detail::ring_access;
    friend struct detail::inline_access;

    // The event count consumers wait on for an item (see detail::readable_access).
    [[nodiscard]] detail::event_count& readable_event() noexcept { return impl_.readable_event(); }

    // Every push: the drop_older_epochs check (only for an epoched T), then the implementation.
    // A push whose move throws stores nothing, and leaves the check's mark as it was.
    // victim_out: see detail::ring_access (the MPMC lock-free ring only).
    FRAMEPIPE_ALWAYS_INLINE push_status push_impl(
        T& item, const detail::push_wait& w,
        [[maybe_unused]] std::optional<T>* victim_out = nullptr) noexcept(is_lock_free) {
        if constexpr (epoched<T>) {
            if (drop_older_epochs_) {
                const std::uint64_t before = epochs_.newest();
                if (!epochs_.admit(item)) {
                    return impl_.reject();
                }
                if constexpr (!std::is_nothrow_move_constructible_v<T>) {
                    const std::uint64_t raised = epoch_traits<T>::epoch(item);
                    try {
                        return push_admitted(item, w, victim_out);
                    } catch (...) {
                        epochs_.restore(before, raised);
                        throw;
                    }
                }
            }
        }
        return push_admitted(item, w, victim_out);
    }

    // push_impl() past the epoch check.
    FRAMEPIPE_ALWAYS_INLINE push_status push_admitted(
        T& item, const detail::push_wait& w,
        [[maybe_unused]] std::optional<T>* victim_out) noexcept(is_lock_free) {
        if constexpr (C == concurrency::mpmc && is_lock_free) {
            return impl_.push(item, w, victim_out);
        } else {
            return impl_.push(item, w);
        }
    }

    const ring_options& validated(const ring_options& options) {
        // An enum set from an integer (static_cast<overflow>(3)): an spsc_ring would take it
        // for a policy that never evicts, and then evict with a plain claim (a double free).
        if (options.policy != overflow::block && options.policy != overflow::drop_newest &&
            options.policy != overflow::drop_oldest) {
            throw std::invalid_argument("policy: not an overflow (block, drop_newest, "
                                        "drop_oldest)");
        }
        // In 64 bits: a 32-bit size_t cannot hold 2^61 (and is below it anyway).
        if (options.capacity == 0 ||
            std::uint64_t{options.capacity} > (std::uint64_t{1} << 61)) {
            throw std::invalid_argument("capacity: must be at least 1 and at most 2^61");
        }
        if (options.block_timeout) {
            if (options.policy != overflow::block) {
                throw std::invalid_argument("policy: a block_timeout needs overflow::block");
            }
            detail::require_non_negative(*options.block_timeout, "block_timeout");
        }
        if (options.max_age) {
            detail::require_non_negative(*options.max_age, "max_age");
            if constexpr (!timestamped<T>) {
                throw std::invalid_argument(
                    "max_age: T carries no capture time (specialise framepipe::timestamp_traits)");
            }
        }
        if (options.drop_older_epochs && !epoched<T>) {
            throw std::invalid_argument(
                "drop_older_epochs: T carries no epoch (specialise framepipe::epoch_traits)");
        }
        capacity_ = options.capacity;
        policy_ = options.policy;
        drop_older_epochs_ = options.drop_older_epochs;
        has_max_age_ = options.max_age.has_value();
        return options;
    }

    std::size_t capacity_ = 0;
    overflow policy_ = overflow::drop_oldest;
    bool drop_older_epochs_ = false;
    bool has_max_age_ = false; // the implementation holds the age itself
    detail::epoch_gate epochs_;
    std::conditional_t<!is_lock_free, detail::locked_ring<T>,
                       std::conditional_t<C == concurrency::spsc, detail::spsc_lockfree_ring<T>,
                                          detail::lockfree_ring<T>>>
        impl_;
};

namespace detail {

// What the broadcaster needs from its subscriptions' rings (lock-free ring<T>) beyond their
// public calls.
struct ring_access {
    // As ring::push(item), or push(item, *stop) when stop is not null, but an item this push
    // evicts is moved into `victim` instead of being destroyed in the push, and a refused item
    // stays in `item`: the caller chooses where their last release runs (the broadcaster: after
    // its lock). Same threads, waits and guarantees as push.
    template <class T>
    static push_status push_keeping_victim(ring<T>& r, T& item, std::optional<T>& victim,
                                           const std::stop_token* stop) noexcept {
        static_assert(ring<T>::is_lock_free, "push_keeping_victim: for a lock-free ring<T>");
        return r.push_impl(item, push_wait{.stop = stop}, &victim);
    }

    // Whether the lock-free spsc_ring's pops claim their items by CAS now: from an eviction
    // until the ring has been calm a while (detail/spsc_lockfree_ring.hpp). For tests. Any thread.
    template <class T>
    [[nodiscard]] static bool spsc_claims_by_cas(const ring<T, concurrency::spsc>& r) noexcept {
        static_assert(ring<T, concurrency::spsc>::is_lock_free,
                      "spsc_claims_by_cas: for a lock-free spsc_ring<T>");
        return r.impl_.claims_by_cas();
    }
};

} // namespace detail

// A ring for exactly one producer thread and one consumer thread at a time: same API, policies,
// counters and exception guarantees as ring<T>, and for a noexcept-move T a cheaper protocol
// (no compare-and-swap on the fast path unless the policy can evict, cached indices, and a
// wake-up that costs the notifier one plain load).
//
// Thread rules: push(), try_push() and push_for() from one thread at a time (the producer);
// try_pop(), pop(), pop_for() and peek() from one thread at a time (the consumer; peek() is a
// consumer call here, unlike on ring<T>); close(), closed(), size(), capacity(), policy() and
// stats() from any thread. Handing a role to another thread needs a happens-before between the
// old and the new thread (a join, a mutex, a channel). Two threads inside push (or inside pop) at
// once abort the program with a message when FRAMEPIPE_SPSC_CHECKS is on (by default, whenever
// NDEBUG is not defined); with it off, that is a data race (undefined behaviour).
template <class T>
using spsc_ring = ring<T, concurrency::spsc>;

// How a pipeline shows a ring, and its thread rules (see channel_traits).
template <class T, concurrency C>
struct channel_traits<ring<T, C>> {
    static constexpr std::string_view kind = C == concurrency::spsc ? "spsc_ring" : "ring";
    static constexpr bool one_producer = C == concurrency::spsc;
    static constexpr bool one_consumer = C == concurrency::spsc;
};

} // namespace framepipe
