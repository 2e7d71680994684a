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
// When T's move constructor is noexcept (frame handles, shared_ptr, unique_ptr, plain values),
// the ring is lock-free (ring<T>::is_lock_free): a bounded array where each slot carries a
// sequence number, push and pop each take one compare-and-swap and touch only the slot they
// use, and counters cost nothing on the fast path (detail::lockfree_ring explains the protocol).
// Otherwise, a T whose move may throw, one internal mutex guards the items, so that every
// exception guarantee below holds (detail::locked_ring).
//
// A thread that must wait (pop on an empty ring, push under overflow::block on a full one) parks
// and uses no CPU. On a lock-free ring it first spins for a few microseconds, which catches a
// partner that answers quickly without a sleep (detail::event_count); on the mutex ring it parks
// at once on a condition variable (detail::park). size(), capacity(), closed() and policy()
// never lock.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>

namespace framepipe {

// How many threads may use a ring at once: any number (mpmc), or one producer and one consumer
// (spsc; see spsc_ring).
enum class concurrency {
    mpmc, // any number of producer and consumer threads
    spsc, // at most one thread pushing and one thread popping (or peeking) at any moment
};

// Everything a ring can be configured with. An aggregate, so it reads well with designated
// initialisers: ring<F> q({.capacity = 4, .policy = overflow::block, .block_timeout = 20ms});
struct ring_options {
    std::size_t capacity = 1;
    overflow policy = overflow::drop_oldest;
    // Only with overflow::block: how long a push waits for room before it evicts the oldest item
    // and accepts the new one ("block, then drop"). Unset: wait as long as it takes.
    std::optional<std::chrono::nanoseconds> block_timeout{};
    // Items older than this (by timestamp_traits<T>) are discarded at pop and counted as expired.
    // Unset: no age limit. Setting it requires a `timestamped` T.
    std::optional<std::chrono::nanoseconds> max_age{};
};

namespace detail {

// The mutex-based implementation, used for a T whose move constructor may throw: a lock-free
// ring cannot undo a half-done move, while under a lock every exception guarantee documented on
// ring<T> holds. One mutex guards the items; waits park on two condition variables.
template <class T>
class locked_ring {
public:
    using clock = std::chrono::steady_clock;

    explicit locked_ring(const ring_options& options)
        : capacity_(options.capacity), policy_(options.policy),
          block_timeout_(options.block_timeout), max_age_(options.max_age),
          slots_(std::make_unique<std::optional<T>[]>(capacity_)) {}

    push_status push(T& item, const std::stop_token* stop) { return push_impl(item, stop); }

    std::optional<T> pop(const std::stop_token* stop,
                         const std::optional<clock::time_point>& deadline, bool wait) {
        return pop_impl(stop, deadline, wait);
    }

    [[nodiscard]] std::optional<T> peek() const
    {
        const auto now = max_age_ ? clock::now() : clock::time_point{};
        const std::lock_guard<std::mutex> lock(mu_);
        for (std::size_t i = 0, at = head_; i < count_; ++i, at = next(at)) {
            if (!is_expired(*slots_[at], now)) {
                return *slots_[at];
            }
        }
        return std::nullopt;
    }

    void close() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            closed_ = true;
            // Relaxed: the flag is an advisory mirror for closed(); waiters read closed_ under mu_.
            closed_flag_.store(true, std::memory_order_relaxed);
        }
        not_empty_.notify_all();
        not_full_.notify_all();
    }

    [[nodiscard]] bool closed() const noexcept {
        return closed_flag_.load(std::memory_order_relaxed);
    }

    [[nodiscard]] std::size_t size() const noexcept {
        return size_.load(std::memory_order_relaxed);
    }

    [[nodiscard]] channel_stats stats() const {
        const std::lock_guard<std::mutex> lock(mu_);
        channel_stats s = stats_;
        s.size = count_;
        return s;
    }

private:
    [[nodiscard]] std::size_t next(std::size_t i) const noexcept {
        return i + 1 == capacity_ ? 0 : i + 1;
    }

    [[nodiscard]] bool is_expired(const T& item, clock::time_point now) const noexcept {
        return detail::older_than(item, max_age_, now);
    }

    void publish_size() noexcept {
        // Relaxed: size() is a hint for monitoring; correctness never depends on it.
        size_.store(count_, std::memory_order_relaxed);
    }

    // --- All *_locked functions require mu_ to be held. ---

    // Stores `item` at the tail; the ring must have room. Strong guarantee: if T's move
    // constructor throws, nothing changed.
    void store_locked(T& item) {
        std::size_t tail = head_ + count_;
        if (tail >= capacity_) {
            tail -= capacity_;
        }
        slots_[tail].emplace(std::move(item));
        ++count_;
        ++stats_.pushed;
        publish_size();
        if (consumers_waiting_ > 0) {
            not_empty_.notify_one();
        }
    }

    // Moves the oldest item into `victim` and counts it as evicted. Strong guarantee.
    void evict_oldest_locked(std::optional<T>& victim) {
        victim.emplace(std::move(*slots_[head_]));
        slots_[head_].reset();
        head_ = next(head_);
        --count_;
        ++stats_.evicted;
        ++stats_.dropped;
        publish_size();
    }

    // A push that will not wait: stores, evicts, refuses or reports closed.
    push_status push_now_locked(T& item, std::optional<T>& victim) {
        if (closed_) {
            ++stats_.pushed;
            ++stats_.after_close;
            ++stats_.dropped;
            return push_status::closed;
        }
        if (count_ < capacity_) {
            store_locked(item);
            return push_status::ok;
        }
        if (policy_ == overflow::drop_newest) {
            ++stats_.pushed;
            ++stats_.rejected;
            ++stats_.dropped;
            return push_status::rejected;
        }
        // drop_oldest, or block whose wait has ended in the timeout.
        evict_oldest_locked(victim);
        store_locked(item);
        return push_status::evicted;
    }

    push_status push_impl(T& item, const std::stop_token* stop) {
        // Declared first so it is destroyed last, after every lock below is released: the
        // evicted item's destructor (say, a frame returning to its pool) runs unlocked.
        std::optional<T> victim;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            if (policy_ != overflow::block || closed_ || count_ < capacity_) {
                return push_now_locked(item, victim);
            }
        }
        // overflow::block and full: wait. The stop callback takes mu_, so it is set up before
        // mu_ is locked and torn down after it is released (declaration order below).
        std::optional<std::stop_callback<detail::wake_all_on_stop>> on_stop;
        if (stop != nullptr && stop->stop_possible()) {
            on_stop.emplace(*stop, detail::wake_all_on_stop{&mu_, &not_full_});
        }
        std::optional<clock::time_point> deadline;
        if (block_timeout_) {
            deadline = detail::deadline_after(*block_timeout_);
        }
        std::unique_lock<std::mutex> lock(mu_);
        const auto end = detail::park(not_full_, lock, producers_waiting_, stop, deadline,
                                      [this] { return closed_ || count_ < capacity_; });
        if (end == detail::wait_end::stopped) {
            ++stats_.pushed;
            ++stats_.cancelled;
            ++stats_.dropped;
            return push_status::rejected;
        }
        // ready (room or closed) or timed_out (still full: evict).
        return push_now_locked(item, victim);
    }

    // Takes the oldest fresh item into `out`, discarding expired ones on the way. If T's move
    // throws, the item stays at the front; expired items discarded before it stay discarded,
    // and the guard still publishes the new size and wakes a producer for the room they freed.
    void take_locked(std::optional<T>& out, clock::time_point now) {
        struct after_freeing {
            locked_ring* self;
            bool freed = false;
            ~after_freeing() {
                if (freed) {
                    self->publish_size();
                    if (self->producers_waiting_ > 0) {
                        self->not_full_.notify_one();
                    }
                }
            }
        } guard{this};
        while (count_ > 0) {
            std::optional<T>& slot = slots_[head_];
            if (is_expired(*slot, now)) {
                slot.reset();
                ++stats_.expired;
                ++stats_.dropped;
            } else {
                out.emplace(std::move(*slot)); // may throw: this item has not moved yet
                slot.reset();
                ++stats_.popped;
            }
            head_ = next(head_);
            --count_;
            guard.freed = true;
            if (out) {
                break;
            }
        }
    }

    std::optional<T> pop_impl(const std::stop_token* stop,
                              const std::optional<clock::time_point>& deadline, bool wait) {
        std::optional<T> out;
        if (stop != nullptr && stop->stop_requested()) {
            return out;
        }
        {
            const std::lock_guard<std::mutex> lock(mu_);
            take_locked(out, max_age_ ? clock::now() : clock::time_point{});
            if (out || closed_ || !wait) {
                return out;
            }
        }
        // Empty and open: wait. See push_impl for the order of on_stop and lock.
        std::optional<std::stop_callback<detail::wake_all_on_stop>> on_stop;
        if (stop != nullptr && stop->stop_possible()) {
            on_stop.emplace(*stop, detail::wake_all_on_stop{&mu_, &not_empty_});
        }
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            const auto end = detail::park(not_empty_, lock, consumers_waiting_, stop, deadline,
                                          [this] { return closed_ || count_ > 0; });
            if (end != detail::wait_end::ready) {
                break;
            }
            take_locked(out, max_age_ ? clock::now() : clock::time_point{});
            if (out || closed_) {
                break;
            }
            // Everything that arrived had expired: keep waiting.
        }
        lock.unlock();
        return out;
    }

    const std::size_t capacity_;
    const overflow policy_;
    const std::optional<std::chrono::nanoseconds> block_timeout_;
    const std::optional<std::chrono::nanoseconds> max_age_;

    mutable std::mutex mu_;
    std::condition_variable not_empty_; // consumers park here
    std::condition_variable not_full_;  // producers park here (overflow::block)

    // Guarded by mu_.
    std::unique_ptr<std::optional<T>[]> slots_;
    std::size_t head_ = 0;  // index of the oldest item
    std::size_t count_ = 0; // items buffered
    std::size_t consumers_waiting_ = 0;
    std::size_t producers_waiting_ = 0;
    bool closed_ = false;
    channel_stats stats_{};

    // Lock-free mirrors of count_ and closed_ for size() and closed().
    std::atomic<std::size_t> size_{0};
    std::atomic<bool> closed_flag_{false};
};

// One step of waiting for another thread's few instructions (a move out of a slot, a fill):
// pause for a while, then yield, since the thread we wait for may have been preempted.
inline void backoff(unsigned& spins) noexcept {
    if (++spins < 64) {
        cpu_relax();
    } else {
        std::this_thread::yield();
    }
}

// The pop() of both lock-free rings: take an item now (take()), and only if there was none, the
// caller waits and stop is not requested, wait for one (wait_for_item()). One named result is
// returned on every path and the takes return prvalues, so the optional is built in the caller's
// slot and, inlined, stays in registers for a small T: an optional copied whole is written as a
// value plus a one-byte flag and read back as words, a store-forwarding stall (see
// FRAMEPIPE_ALWAYS_INLINE). The result is emplaced, not assigned: T need not be assignable.
template <class T, class Take, class Wait>
FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop_or_wait(const std::stop_token* stop, bool wait,
                                                     Take take, Wait wait_for_item) {
    std::optional<T> out =
        stop != nullptr && stop->stop_requested() ? std::optional<T>() : take();
    if (!out && wait && (stop == nullptr || !stop->stop_requested())) {
        if (std::optional<T> waited = wait_for_item()) {
            out.emplace(std::move(*waited));
        }
    }
    return out;
}

// take(), discarding the items older than max_age (count_expired() counts each); with no
// max_age, take() itself, without a clock read.
template <class T, class Take, class CountExpired>
FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_unexpired(
    const std::optional<std::chrono::nanoseconds>& max_age, Take take,
    CountExpired count_expired) noexcept {
    if (!max_age) {
        return take();
    }
    const auto now = std::chrono::steady_clock::now();
    for (;;) {
        std::optional<T> out = take();
        if (!out || !older_than(*out, max_age, now)) {
            return out;
        }
        count_expired();
    }
}

// The drop counters of a lock-free ring, and the snapshot derived from them and the ring's
// positions (pushed and popped are not counted: they follow from the positions). Each counter is
// written, release, on its own slow path after the head moved for the item it counts; expired
// (the consumers' counter) sits on a line of its own, apart from the producers' four.
struct drop_counters {
    alignas(64) std::atomic<std::uint64_t> evicted{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> cancelled{0};
    std::atomic<std::uint64_t> after_close{0};
    alignas(64) std::atomic<std::uint64_t> expired{0};

    // Counters first, then `positions()` ({head, tail}, read in that order), then the derived
    // fields. A counter is incremented after the head moved for it, so the head read afterwards
    // already includes every eviction and expiry counted: popped never underflows. Every
    // snapshot satisfies dropped == sum of reasons and pushed >= popped + dropped + size, with
    // equality when no call is in flight. noexcept.
    template <class Positions>
    [[nodiscard]] channel_stats snapshot(std::uint64_t capacity, Positions positions) const noexcept {
        channel_stats s;
        s.evicted = evicted.load(std::memory_order_acquire);
        s.expired = expired.load(std::memory_order_acquire);
        s.rejected = rejected.load(std::memory_order_acquire);
        s.cancelled = cancelled.load(std::memory_order_acquire);
        s.after_close = after_close.load(std::memory_order_acquire);
        const auto [h, t] = positions();
        s.size = std::min<std::uint64_t>(t - h, capacity); // an evicting push may run ahead
        s.popped = h - s.evicted - s.expired;
        s.dropped = s.evicted + s.rejected + s.cancelled + s.expired + s.after_close;
        s.pushed = t + s.rejected + s.cancelled + s.after_close;
        return s;
    }
};

// The lock-free implementation, used for every T whose move constructor cannot throw (frame
// handles, shared_ptr, unique_ptr, plain values: the common case).
//
// A bounded MPMC array in the style of D. Vyukov's queue: every slot carries a sequence word
// that says which position (a 64-bit count of pushes) it is ready for, so producers and
// consumers never read each other's index on the fast path, only the slot they are about to use.
// Per slot, for position p (a slot serves positions p, p + capacity, p + 2 capacity, ...):
//
//     seq == 2p              free: the producer that claims position p may fill it
//     seq == 2p + 1          filled with the item of position p
//     seq == (2p + 1) | busy a consumer (or peek, or an evicting producer) owns the item of p
//
// (Positions are doubled so that "filled with p" and "free for p + capacity" differ even when
// the capacity is 1.)
//
// - tail_ counts claimed positions. A producer claims position `tail_` with a CAS once the slot
//   is free for it; close() sets a bit in tail_, so no position can be claimed after close.
// - head_ counts positions handed out. A consumer takes the slot of position `head_` by CAS on
//   the slot's seq (filled -> busy); only the winner can then advance head_, with a plain store.
//   It moves the item out and marks the slot free for position p + capacity.
// - drop_oldest (and block after its block_timeout): a producer that finds its slot still holding
//   the item of position p - capacity claims position p anyway, and evicts that item itself,
//   acting as a consumer on it (it waits until head_ reaches it, so head_ only moves forward),
//   then stores its own item in the same slot. So each evicting push drops exactly one item,
//   and the consumer always gets the oldest survivor.
// - peek() takes the busy state of a slot for the time of its copy.
//
// Waiting for another thread's few instructions (a consumer moving an item out of the slot a
// producer needs, a producer between claiming and filling a slot) is a short spin with pause,
// then yield: lock-free in the common case, but a thread preempted inside those instructions
// delays the one that needs its slot (as in every array queue of this family).
//
// Counters: pushed and popped are derived from the positions, so the fast path writes no
// counter at all; the drop reasons are atomics written only on their (slow) paths.
template <class T>
class lockfree_ring {
    static constexpr std::uint64_t busy_bit = std::uint64_t{1} << 63;   // in a slot's seq
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63; // in tail_

    struct slot {
        std::atomic<std::uint64_t> seq{0};
        alignas(T) std::byte storage[sizeof(T)];

        [[nodiscard]] T* item() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };

public:
    using clock = std::chrono::steady_clock;

    explicit lockfree_ring(const ring_options& options)
        : capacity_(options.capacity), pow2_((options.capacity & (options.capacity - 1)) == 0),
          policy_(options.policy), block_timeout_(options.block_timeout),
          max_age_(options.max_age), slots_(std::make_unique<slot[]>(capacity_)) {
        for (std::size_t i = 0; i < capacity_; ++i) {
            slots_[i].seq.store(2 * static_cast<std::uint64_t>(i), std::memory_order_relaxed);
        }
    }

    lockfree_ring(const lockfree_ring&) = delete;
    lockfree_ring& operator=(const lockfree_ring&) = delete;

    ~lockfree_ring() {
        // No call is in flight: every claimed position is filled.
        const std::uint64_t t = tail_.load(std::memory_order_acquire) & ~closed_bit;
        for (std::uint64_t p = head_.load(std::memory_order_acquire); p != t; ++p) {
            slot_of(p).item()->~T();
        }
    }

    push_status push(T& item, const std::stop_token* stop) noexcept {
        // Declared first, destroyed last: an evicted item's destructor (a frame going back to its
        // pool, say) runs after this push has stored its own item and released every slot.
        std::optional<T> victim;
        bool timed_out = false;
        std::optional<clock::time_point> deadline;
        std::uint64_t pos = tail_.load(std::memory_order_relaxed);
        unsigned spins = 0;
        for (;;) {
            if ((pos & closed_bit) != 0) {
                count(drops_.after_close);
                return push_status::closed;
            }
            slot& s = slot_of(pos);
            const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            const auto diff = static_cast<std::int64_t>((seq & ~busy_bit) - 2 * pos);
            if (diff == 0 && (seq & busy_bit) == 0) {
                // Free for pos: claim it.
                // seq_cst: this claim is the state change a parking consumer's has_items()
                // reads, so fill() can notify without a fence (notify_one_after_seq_cst).
                if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_seq_cst,
                                                std::memory_order_relaxed)) {
                    fill(s, pos, item);
                    return push_status::ok;
                }
                continue; // pos reloaded by the failed CAS
            }
            if (diff > 0) {
                pos = tail_.load(std::memory_order_relaxed); // another producer took pos
                continue;
            }
            // The slot still belongs to position pos - capacity.
            if ((seq & busy_bit) != 0 || seq == 2 * (pos - capacity_)) {
                // Being emptied by a consumer, or being filled by a producer: a few instructions.
                backoff(spins);
                pos = tail_.load(std::memory_order_relaxed);
                continue;
            }
            // Full: the slot holds the unconsumed item of pos - capacity.
            if (policy_ == overflow::drop_newest) {
                count(drops_.rejected);
                return push_status::rejected;
            }
            if (policy_ == overflow::block && !timed_out) {
                if (stop != nullptr && stop->stop_requested()) {
                    count(drops_.cancelled);
                    return push_status::rejected;
                }
                if (block_timeout_ && !deadline) {
                    deadline = deadline_after(*block_timeout_);
                }
                const wait_end end = not_full_.wait(stop, deadline, [this] { return has_room(); });
                if (end == wait_end::stopped) {
                    count(drops_.cancelled);
                    return push_status::rejected;
                }
                timed_out = end == wait_end::timed_out;
                pos = tail_.load(std::memory_order_relaxed);
                continue;
            }
            // drop_oldest, or block after its timeout: claim pos although its slot is full, then
            // evict the item of pos - capacity and store ours in its place.
            if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_seq_cst,
                                            std::memory_order_relaxed)) {
                return evict_and_fill(s, pos, item, victim);
            }
        }
    }

    // The fast path (an item is there, or the caller does not wait) is inlined into the caller
    // (see pop_or_wait()).
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop(const std::stop_token* stop,
                                                 const std::optional<clock::time_point>& deadline,
                                                 bool wait) {
        return pop_or_wait<T>(
            stop, wait, [this]() FRAMEPIPE_INLINE_LAMBDA { return take_fresh(); },
            [&] { return pop_wait(stop, deadline); });
    }

    // pop() once the ring was found empty: wait for an item, the close, the stop or the deadline.
    std::optional<T> pop_wait(const std::stop_token* stop,
                              const std::optional<clock::time_point>& deadline) {
        unsigned spins = 0;
        bool woke = false;
        for (;;) {
            // Empty, or an in-flight push has claimed the next position but not filled it yet.
            const std::uint64_t h = head_.load(std::memory_order_acquire);
            const std::uint64_t t = tail_.load(std::memory_order_acquire);
            if ((t & closed_bit) != 0 && (t & ~closed_bit) == h) {
                return std::nullopt; // closed and drained
            }
            if (woke) {
                // The wait said "ready" but the take found nothing: a push has claimed the head
                // position and not filled it yet, and the wait's exact predicate (tail != head)
                // stays true until it does. Back off (pause, then yield to the pushing thread,
                // which may have been preempted) instead of spinning hot, and keep honouring the
                // stop token and the deadline meanwhile.
                if (stop != nullptr && stop->stop_requested()) {
                    return std::nullopt;
                }
                if (deadline && clock::now() >= *deadline) {
                    return std::nullopt;
                }
                backoff(spins);
            }
            const wait_end end = not_empty_.wait(
                stop, deadline, [this] { return item_at_head(); }, [this] { return has_items(); });
            if (end != wait_end::ready) {
                return std::nullopt;
            }
            woke = true;
            if (std::optional<T> out = take_fresh()) {
                return out;
            }
        }
    }

    [[nodiscard]] std::optional<T> peek() const {
        const auto now = max_age_ ? clock::now() : clock::time_point{};
        unsigned spins = 0;
    restart:
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t t = tail_.load(std::memory_order_acquire) & ~closed_bit;
        for (std::uint64_t p = h; p < t; ++p) {
            slot& s = slot_of(p);
            std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq != 2 * p + 1) {
                if ((seq & ~busy_bit) < 2 * p + 1) {
                    return std::nullopt; // position p is claimed but not filled yet
                }
                backoff(spins); // being taken, or already gone: look again from the new head
                goto restart;
            }
            if (!s.seq.compare_exchange_strong(seq, seq | busy_bit, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
                backoff(spins);
                goto restart;
            }
            // The item of p is ours until we put the seq back, even if the copy throws.
            struct release_slot {
                slot& s;
                std::uint64_t seq;
                ~release_slot() { s.seq.store(seq, std::memory_order_release); }
            } guard{s, 2 * p + 1};
            if (!is_expired(*s.item(), now)) {
                return std::optional<T>(*s.item());
            }
        }
        return std::nullopt;
    }

    void close() noexcept {
        tail_.fetch_or(closed_bit, std::memory_order_acq_rel);
        closed_flag_.store(true, std::memory_order_release);
        not_empty_.notify_all();
        not_full_.notify_all();
    }

    [[nodiscard]] bool closed() const noexcept {
        return (tail_.load(std::memory_order_relaxed) & closed_bit) != 0;
    }

    [[nodiscard]] std::size_t size() const noexcept {
        // head first: tail read later is never behind it, so the difference is never negative.
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        const std::uint64_t t = tail_.load(std::memory_order_acquire) & ~closed_bit;
        // An evicting push has claimed its position before the eviction frees one: clamp.
        return static_cast<std::size_t>(std::min<std::uint64_t>(t - h, capacity_));
    }

    [[nodiscard]] channel_stats stats() const noexcept {
        return drops_.snapshot(capacity_, [this] {
            const std::uint64_t h = head_.load(std::memory_order_acquire);
            return std::pair{h, tail_.load(std::memory_order_acquire) & ~closed_bit};
        });
    }

private:
    [[nodiscard]] slot& slot_of(std::uint64_t pos) const noexcept {
        const std::size_t i = pow2_ ? static_cast<std::size_t>(pos & (capacity_ - 1))
                                    : static_cast<std::size_t>(pos % capacity_);
        return slots_[i];
    }

    static void count(std::atomic<std::uint64_t>& c) noexcept {
        // Release: stats() reads the counters before head_; see there.
        c.fetch_add(1, std::memory_order_release);
    }

    [[nodiscard]] bool is_expired(const T& item, clock::time_point now) const noexcept {
        return detail::older_than(item, max_age_, now);
    }

    // What a spinning consumer polls: the slot of head_ (the line the producer writes to publish
    // the item, and the one the consumer reads next anyway, so a spinning consumer sees an item
    // after a single cache-line transfer) and the read-mostly closed_flag_. It deliberately does
    // not read tail_: a spinning consumer holding tail_'s line would make every push's claim of
    // tail_ pay an extra invalidation. It can miss an item (head_ read stale while another
    // consumer advances it), so it is only the spin-phase predicate.
    [[nodiscard]] bool item_at_head() const noexcept {
        const std::uint64_t h = head_.load(std::memory_order_acquire);
        return slot_of(h).seq.load(std::memory_order_acquire) == 2 * h + 1 ||
               closed_flag_.load(std::memory_order_acquire);
    }

    // The exact predicate checked before parking: a claimed position not yet handed out, or
    // closed. A push claims tail_ before it notifies, so a parking consumer cannot miss it.
    // seq_cst loads: see event_count::notify_one_after_seq_cst().
    [[nodiscard]] bool has_items() const noexcept {
        const std::uint64_t h = head_.load(std::memory_order_seq_cst);
        const std::uint64_t t = tail_.load(std::memory_order_seq_cst);
        return (t & closed_bit) != 0 || (t & ~closed_bit) != h;
    }

    // The exact predicate of a producer waiting for room (overflow::block); seq_cst loads: see
    // event_count::notify_one_after_seq_cst() (take_one() stores head_ seq_cst under block).
    // head_ first: tail_ read later is never behind it (no underflow); a head_ that moves on
    // after it was read belongs to a pop whose notify sees this waiter.
    [[nodiscard]] bool has_room() const noexcept {
        const std::uint64_t h = head_.load(std::memory_order_seq_cst);
        const std::uint64_t t = tail_.load(std::memory_order_seq_cst);
        return (t & closed_bit) != 0 || (t & ~closed_bit) - h < capacity_;
    }

    // Stores `item` in the claimed, free slot of `pos` and publishes it.
    void fill(slot& s, std::uint64_t pos, T& item) noexcept {
        ::new (static_cast<void*>(s.storage)) T(std::move(item));
        s.seq.store(2 * pos + 1, std::memory_order_release);
        not_empty_.notify_one_after_seq_cst(); // the claim of tail_ was seq_cst
    }

    // `pos` is claimed and its slot belongs to position old = pos - capacity: filled, being
    // filled, or being taken by a consumer. Evicts that item if it is still there once head_
    // reaches it; if a consumer takes it first, just fills the freed slot.
    push_status evict_and_fill(slot& s, std::uint64_t pos, T& item,
                               std::optional<T>& victim) noexcept {
        const std::uint64_t old = pos - capacity_;
        unsigned spins = 0;
        for (;;) {
            std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * pos) {
                fill(s, pos, item); // a consumer emptied it meanwhile: nothing to evict
                return push_status::ok;
            }
            // Evict only the head: positions are handed out in order, so head_ only advances.
            if (seq == 2 * old + 1 && head_.load(std::memory_order_acquire) == old &&
                s.seq.compare_exchange_weak(seq, seq | busy_bit, std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
                head_.store(old + 1, std::memory_order_release);
                victim.emplace(std::move(*s.item()));
                s.item()->~T();
                count(drops_.evicted);
                ::new (static_cast<void*>(s.storage)) T(std::move(item));
                s.seq.store(2 * pos + 1, std::memory_order_release);
                not_empty_.notify_one_after_seq_cst(); // the claim of tail_ was seq_cst
                return push_status::evicted;
            }
            backoff(spins);
        }
    }

    // Takes the item at head_. nullopt when there is none now (empty, or the next position is
    // claimed but not filled yet). Every return is a prvalue, constructed straight into the
    // caller's optional; what must follow the move out of the slot (destroying the moved-from
    // item, freeing the slot) runs in a guard's destructor, after the result exists. A named
    // optional returned instead is copied whole, and GCC's copy reads the one-byte "engaged" flag
    // just written back as part of a word: a store-forwarding stall (see FRAMEPIPE_ALWAYS_INLINE).
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_one() noexcept {
        std::uint64_t pos = head_.load(std::memory_order_acquire);
        unsigned spins = 0;
        for (;;) {
            slot& s = slot_of(pos);
            std::uint64_t seq = s.seq.load(std::memory_order_acquire);
            if (seq == 2 * pos + 1) {
                if (s.seq.compare_exchange_weak(seq, seq | busy_bit, std::memory_order_acquire,
                                                std::memory_order_relaxed)) {
                    // Under overflow::block, producers may park on has_room(), which reads
                    // head_: a seq_cst store lets the notify below skip its fence.
                    if (policy_ == overflow::block) {
                        head_.store(pos + 1, std::memory_order_seq_cst);
                    } else {
                        head_.store(pos + 1, std::memory_order_release);
                    }
                    // Runs once the result has been moved out of the slot (see take_one()).
                    struct release_slot {
                        lockfree_ring& r;
                        slot& s;
                        std::uint64_t pos;
                        FRAMEPIPE_ALWAYS_INLINE ~release_slot() {
                            s.item()->~T();
                            s.seq.store(2 * (pos + r.capacity_), std::memory_order_release);
                            if (r.policy_ == overflow::block) {
                                r.not_full_.notify_one_after_seq_cst();
                            }
                        }
                    } release{*this, s, pos};
                    return std::optional<T>(std::in_place, std::move(*s.item()));
                }
                continue;
            }
            if (seq == ((2 * pos + 1) | busy_bit)) {
                backoff(spins); // another consumer or peek has it; head_ moves on shortly
                pos = head_.load(std::memory_order_acquire);
                continue;
            }
            if ((seq & ~busy_bit) > 2 * pos + 1) {
                pos = head_.load(std::memory_order_acquire); // pos was taken: look again
                continue;
            }
            return std::nullopt; // not filled yet
        }
    }

    // take_one(), discarding and counting expired items.
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_fresh() noexcept {
        return take_unexpired<T>(
            max_age_, [this]() FRAMEPIPE_INLINE_LAMBDA { return take_one(); },
            [this] { count(drops_.expired); });
    }

    // Read-only after construction; shared by every thread.
    const std::size_t capacity_;
    const bool pow2_;
    const overflow policy_;
    const std::optional<std::chrono::nanoseconds> block_timeout_;
    const std::optional<std::chrono::nanoseconds> max_age_;
    const std::unique_ptr<slot[]> slots_;
    // Mirror of tail_'s closed bit for waiting consumers (see has_items()); written once.
    std::atomic<bool> closed_flag_{false};

    // Each index on its own cache line: producers write tail_, consumers head_. Sharing a line
    // would make every push invalidate the consumers' copy of head_ and vice versa (false
    // sharing), which is what dominated the mutex ring's SPSC throughput.
    alignas(64) std::atomic<std::uint64_t> tail_{0};
    alignas(64) std::atomic<std::uint64_t> head_{0};
    // Drop reasons: written only on their slow paths, read by stats().
    drop_counters drops_;
    // Waiters. Each push reads not_empty_'s waiter count; it is written only by a consumer that
    // parks, so its line stays shared (cached) on the producer's core while nobody parks.
    alignas(64) event_count not_empty_;
    alignas(64) event_count not_full_;
};

// The single-producer, single-consumer implementation: ring<T, concurrency::spsc> for a T whose
// move constructor cannot throw. One thread pushes and one thread pops at a time, so neither side
// needs a compare-and-swap to claim a position: the slots hold bare items (no per-slot sequence
// word), the producer owns tail_ and the consumer owns head_, each publishes its index with one
// release store, and each keeps a private copy of the other's index, which it re-reads only when
// that copy says "full" (the producer) or "empty" (the consumer). In a steady stream the index
// lines therefore cross between the cores about once per lap of the ring, not once per item.
//
// Waking a parked partner costs the notifier one plain load (event_count's asymmetric mode: the
// waiter pays a membarrier system call before it parks; see asymmetric_barrier).
//
// drop_oldest (and block after its block_timeout) makes the producer evict from the consumer's
// end. The two sides then agree through head_ alone:
// - the consumer claims the item at h by a CAS of head_ from h to h | busy_bit, moves it out, and
//   stores h + 1;
// - an evicting producer (full: tail == h + capacity) advances head_ from h to h + 1 by CAS, which
//   fails while the consumer holds busy_bit; it then evicts the item of h from the very slot it
//   is about to fill (slot h and slot h + capacity are the same one).
// So an item is taken by exactly one of the two. A producer that finds busy_bit set waits for the
// consumer's few instructions (a move), after which the ring has room. Under the other policies
// the producer never writes head_, and the consumer's claim is a plain load and store.
//
// close() may come from any thread. A push announces itself in pushing_ before it reads closed_;
// a consumer that finds the ring closed and empty runs asymmetric_barrier::heavy() and waits for
// pushing_ to clear before it concludes that nothing more will arrive. So a push racing close is
// either refused (it saw closed_) or delivered to the consumer.
template <class T>
class spsc_lockfree_ring {
    static constexpr std::uint64_t busy_bit = std::uint64_t{1} << 63; // in head_

    struct slot {
        alignas(T) std::byte storage[sizeof(T)];

        [[nodiscard]] T* item() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    };

public:
    using clock = std::chrono::steady_clock;

    explicit spsc_lockfree_ring(const ring_options& options)
        : capacity_(options.capacity), pow2_((options.capacity & (options.capacity - 1)) == 0),
          policy_(options.policy),
          evicts_(options.policy == overflow::drop_oldest ||
                  (options.policy == overflow::block && options.block_timeout.has_value())),
          block_timeout_(options.block_timeout), max_age_(options.max_age),
          slots_(std::make_unique<slot[]>(capacity_)) {}

    spsc_lockfree_ring(const spsc_lockfree_ring&) = delete;
    spsc_lockfree_ring& operator=(const spsc_lockfree_ring&) = delete;

    ~spsc_lockfree_ring() {
        const std::uint64_t t = tail_.load(std::memory_order_acquire);
        for (std::uint64_t p = head_.load(std::memory_order_acquire) & ~busy_bit; p != t; ++p) {
            slot_of(p).item()->~T();
        }
    }

    // The producer thread. The fast path (open, room) is small enough to be inlined.
    FRAMEPIPE_ALWAYS_INLINE push_status push(T& item, const std::stop_token* stop) noexcept {
        const std::uint64_t t = tail_.load(std::memory_order_relaxed); // written only by us
        // Announce the push before reading closed_ (see drained_after_close()). Relaxed: the
        // consumer reads pushing_ only after its heavy barrier; light() keeps the compiler from
        // moving the load of closed_ above this store.
        pushing_.store(true, std::memory_order_relaxed);
        asymmetric_barrier::light();
        if (!closed_.load(std::memory_order_relaxed) && has_room_cached(t)) [[likely]] {
            store(t, item);
            return push_status::ok;
        }
        return push_slow(item, stop, t);
    }

    // The consumer thread. The fast path (an item is there, or the caller does not wait) is
    // inlined into the caller (see pop_or_wait()).
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop(const std::stop_token* stop,
                                                 const std::optional<clock::time_point>& deadline,
                                                 bool wait) {
        return pop_or_wait<T>(
            stop, wait, [this]() FRAMEPIPE_INLINE_LAMBDA { return take_fresh(); },
            [&] { return pop_wait(stop, deadline); });
    }

    // The consumer thread.
    [[nodiscard]] std::optional<T> peek() const {
        const auto now = max_age_ ? clock::now() : clock::time_point{};
        std::uint64_t h = head_.load(std::memory_order_relaxed);
        if (evicts_) {
            // Hold busy_bit while copying, so that an evicting producer cannot take the items
            // (it waits; see the class comment). Acquire: pairs with the producer's CAS.
            while (!head_.compare_exchange_weak(h, h | busy_bit, std::memory_order_acquire,
                                                std::memory_order_relaxed)) {
            }
        }
        struct release_head {
            const spsc_lockfree_ring& r;
            std::uint64_t h;
            ~release_head() {
                if (r.evicts_) {
                    r.head_.store(h, std::memory_order_release);
                }
            }
        } guard{*this, h};
        const std::uint64_t t = tail_.load(std::memory_order_acquire);
        for (std::uint64_t p = h; p < t; ++p) {
            const T& item = *slot_of(p).item();
            if (!is_expired(item, now)) {
                return std::optional<T>(item);
            }
        }
        return std::nullopt;
    }

    void close() noexcept {
        // seq_cst, then notify_all's read-modify-write: the plain event_count protocol (a waiter
        // parked on either side re-checks closed_ after its registration).
        closed_.store(true, std::memory_order_seq_cst);
        not_empty_.notify_all();
        not_full_.notify_all();
    }

    [[nodiscard]] bool closed() const noexcept {
        return closed_.load(std::memory_order_relaxed);
    }

    [[nodiscard]] std::size_t size() const noexcept {
        // head first: tail read later is never behind it.
        const std::uint64_t h = head_.load(std::memory_order_acquire) & ~busy_bit;
        const std::uint64_t t = tail_.load(std::memory_order_acquire);
        return static_cast<std::size_t>(std::min<std::uint64_t>(t - h, capacity_));
    }

    [[nodiscard]] channel_stats stats() const noexcept {
        return drops_.snapshot(capacity_, [this] {
            const std::uint64_t h = head_.load(std::memory_order_acquire) & ~busy_bit;
            return std::pair{h, tail_.load(std::memory_order_acquire)};
        });
    }

private:
    [[nodiscard]] slot& slot_of(std::uint64_t pos) const noexcept {
        const std::size_t i = pow2_ ? static_cast<std::size_t>(pos & (capacity_ - 1))
                                    : static_cast<std::size_t>(pos % capacity_);
        return slots_[i];
    }

    // Counters have one writer each (the drop reasons of a push: the producer; expired: the
    // consumer), so a load and a store do, without a locked instruction. Release: stats()
    // reads the counters before head_.
    static void count(std::atomic<std::uint64_t>& c) noexcept {
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }

    [[nodiscard]] bool is_expired(const T& item, clock::time_point now) const noexcept {
        return detail::older_than(item, max_age_, now);
    }

    FRAMEPIPE_ALWAYS_INLINE void end_push() noexcept {
        // Release: a consumer that sees false also sees the tail_ store made before it.
        pushing_.store(false, std::memory_order_release);
    }

    // The producer: room for position t by the cached head, re-reading head_ only when the cache
    // says full (a consumer holding busy_bit on the head counts as not yet gone).
    FRAMEPIPE_ALWAYS_INLINE bool has_room_cached(std::uint64_t t) noexcept {
        if (t - head_cache_ < capacity_) {
            return true;
        }
        // Acquire: the consumer's store of head_ follows its move out of the slot we will reuse.
        head_cache_ = head_.load(std::memory_order_acquire) & ~busy_bit;
        return t - head_cache_ < capacity_;
    }

    // Exact predicate of a producer parked under overflow::block.
    [[nodiscard]] bool has_room(std::uint64_t t) const noexcept {
        return closed_.load(std::memory_order_acquire) ||
               t - (head_.load(std::memory_order_acquire) & ~busy_bit) < capacity_;
    }

    // Exact predicate of a parked consumer (also its spin predicate: one line it reads anyway).
    [[nodiscard]] bool has_items_or_closed() const noexcept {
        return tail_.load(std::memory_order_acquire) >
                   (head_.load(std::memory_order_relaxed) & ~busy_bit) ||
               closed_.load(std::memory_order_acquire);
    }

    // Constructs the item of position t in its free slot and publishes it.
    FRAMEPIPE_ALWAYS_INLINE void store(std::uint64_t t, T& item) noexcept {
        ::new (static_cast<void*>(slot_of(t).storage)) T(std::move(item));
        // Release: the consumer's acquire load of tail_ sees the item constructed.
        tail_.store(t + 1, std::memory_order_release);
        end_push();
        not_empty_.notify_one_asymmetric();
    }

    // The ring is full (as far as the cached head says) under drop_oldest or a timed-out block:
    // evict the item of t - capacity unless the consumer frees its slot first.
    push_status evict_and_store(std::uint64_t t, T& item, std::optional<T>& victim) noexcept {
        unsigned spins = 0;
        for (;;) {
            std::uint64_t h = head_.load(std::memory_order_acquire);
            if ((h & busy_bit) != 0) {
                backoff(spins); // the consumer is moving the oldest item out: a few instructions
                continue;
            }
            head_cache_ = h;
            if (t - h < capacity_) {
                store(t, item); // the consumer made room meanwhile: nothing to evict
                return push_status::ok;
            }
            // acq_rel: acquire pairs with the consumer's release of head_; release hands the
            // consumer (whose CAS then fails and re-reads head_) a head that skips this item.
            if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
                slot& s = slot_of(h); // the slot of t as well
                victim.emplace(std::move(*s.item()));
                s.item()->~T();
                count(drops_.evicted);
                head_cache_ = h + 1;
                store(t, item);
                return push_status::evicted;
            }
        }
    }

    // push() when closed or full, with the push announced in pushing_.
    push_status push_slow(T& item, const std::stop_token* stop, std::uint64_t t) noexcept {
        // Declared first, destroyed last: an evicted item's destructor runs after this push has
        // stored its own item and let go of head_.
        std::optional<T> victim;
        bool timed_out = false;
        std::optional<clock::time_point> deadline;
        // push() has just re-read head_ (or found the ring closed): the first round does not
        // read it again. A producer retrying on a full ring would otherwise pull the consumer's
        // head_ line twice per attempt, and every pop would have to take it back.
        for (bool first = true;; first = false) {
            if (closed_.load(std::memory_order_relaxed)) {
                end_push();
                count(drops_.after_close);
                return push_status::closed;
            }
            if (!first && has_room_cached(t)) {
                store(t, item);
                return push_status::ok;
            }
            // Full.
            if (policy_ == overflow::drop_newest) {
                end_push();
                count(drops_.rejected);
                return push_status::rejected;
            }
            if (policy_ == overflow::block && !timed_out) {
                end_push(); // not pushing while parked: a consumer that saw close need not wait
                if (stop != nullptr && stop->stop_requested()) {
                    count(drops_.cancelled);
                    return push_status::rejected;
                }
                if (block_timeout_ && !deadline) {
                    deadline = deadline_after(*block_timeout_);
                }
                const wait_end end =
                    not_full_.wait(stop, deadline, [this, t] { return has_room(t); });
                if (end == wait_end::stopped) {
                    count(drops_.cancelled);
                    return push_status::rejected;
                }
                timed_out = end == wait_end::timed_out;
                pushing_.store(true, std::memory_order_relaxed); // as in push()
                asymmetric_barrier::light();
                continue;
            }
            return evict_and_store(t, item, victim);
        }
    }

    // pop() once the ring was found empty: wait for an item, the close, the stop or the deadline.
    std::optional<T> pop_wait(const std::stop_token* stop,
                              const std::optional<clock::time_point>& deadline) {
        for (;;) {
            if (closed_.load(std::memory_order_acquire)) {
                if (drained_after_close()) {
                    return std::nullopt;
                }
            } else {
                const wait_end end =
                    not_empty_.wait(stop, deadline, [this] { return has_items_or_closed(); });
                if (end != wait_end::ready) {
                    return std::nullopt;
                }
            }
            // An item arrived (or a push that raced close delivered one), or it was closed.
            if (std::optional<T> out = take_fresh()) {
                return out;
            }
        }
    }

    // The consumer: takes the item at head_; nullopt when the ring is empty.
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_one() noexcept {
        for (;;) {
            // Relaxed: written only by this thread, or by an evicting producer, whose change
            // makes the CAS below fail and reload it.
            std::uint64_t h = head_.load(std::memory_order_relaxed);
            if (tail_cache_ <= h) {
                // Acquire: pairs with store(); the items below tail_ are constructed.
                tail_cache_ = tail_.load(std::memory_order_acquire);
                if (tail_cache_ <= h) {
                    return std::nullopt;
                }
            }
            if (evicts_ && !head_.compare_exchange_weak(h, h | busy_bit,
                                                        std::memory_order_acquire,
                                                        std::memory_order_relaxed)) {
                continue; // the producer evicted the item of h: look again
            }
            // Runs once the result has been moved out of the slot (see take_one() above).
            struct release_slot {
                spsc_lockfree_ring& r;
                slot& s;
                std::uint64_t h;
                FRAMEPIPE_ALWAYS_INLINE ~release_slot() {
                    s.item()->~T();
                    // Release: the producer that reads this head reuses the slot after our move.
                    r.head_.store(h + 1, std::memory_order_release);
                    if (r.policy_ == overflow::block) {
                        r.not_full_.notify_one_asymmetric();
                    }
                }
            } release{*this, slot_of(h), h};
            return std::optional<T>(std::in_place, std::move(*release.s.item()));
        }
    }

    // take_one(), discarding and counting expired items.
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_fresh() noexcept {
        return take_unexpired<T>(
            max_age_, [this]() FRAMEPIPE_INLINE_LAMBDA { return take_one(); },
            [this] { count(drops_.expired); });
    }

    // The consumer found the ring closed and (a moment ago) empty. A push that read closed_
    // before close() stored it may still be on its way: after the heavy barrier, either its
    // announcement in pushing_ is visible here, or its read of closed_ comes after the barrier and
    // sees true (it refuses). Wait for an announced push to finish, then look at tail_ again.
    bool drained_after_close() noexcept {
        asymmetric_barrier::heavy();
        unsigned spins = 0;
        while (pushing_.load(std::memory_order_acquire)) {
            backoff(spins); // a push between its check of closed_ and its store: a few instructions
        }
        return tail_.load(std::memory_order_acquire) <=
               (head_.load(std::memory_order_relaxed) & ~busy_bit);
    }

    // Read-only after construction; shared by both threads.
    const std::size_t capacity_;
    const bool pow2_;
    const overflow policy_;
    const bool evicts_; // the producer may evict (drop_oldest, or block with a block_timeout)
    const std::optional<std::chrono::nanoseconds> block_timeout_;
    const std::optional<std::chrono::nanoseconds> max_age_;
    const std::unique_ptr<slot[]> slots_;

    // tail_ alone on its line: written by every push, polled by a consumer that has caught up.
    // Anything else the producer writes per push lives on the next line, so that those writes
    // never have to take the line back from a polling consumer.
    alignas(64) std::atomic<std::uint64_t> tail_{0};
    // The producer's private line: pushing_ (written twice per push, read by the consumer only
    // after a close) and the producer's copy of head_.
    alignas(64) std::atomic<bool> pushing_{false};
    std::uint64_t head_cache_ = 0;
    // The consumer's line (mutable: peek() holds busy_bit while it copies). head_ is written by
    // every pop and read by the producer only when its copy says full; tail_cache_ is private
    // to the consumer.
    alignas(64) mutable std::atomic<std::uint64_t> head_{0};
    std::uint64_t tail_cache_ = 0;
    // Written once; read by every push (a shared line, so the read stays in cache).
    alignas(64) std::atomic<bool> closed_{false};
    // Drop reasons, each with a single writer here (expired: the consumer; the rest: the
    // producer), read by stats().
    drop_counters drops_;
    // Waiters: each notify reads a waiter count here; written only by a thread that parks.
    alignas(64) event_count not_empty_{event_count::asymmetric};
    alignas(64) event_count not_full_{event_count::asymmetric};
};

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

    // A ring holding at most `capacity` items with the given overflow policy. overflow::block
    // here waits for room as long as it takes (see the next constructor for a bound).
    // Throws std::invalid_argument("capacity: ...") when capacity is 0 or above 2^61;
    // std::bad_alloc.
    explicit ring(std::size_t capacity, overflow policy = overflow::drop_oldest)
        : ring(ring_options{.capacity = capacity, .policy = policy}) {}

    // "Block, then drop": a full ring makes push wait up to `block_timeout` for room, then evicts
    // the oldest item and accepts the new one (push returns evicted).
    // Throws std::invalid_argument naming `policy` unless it is overflow::block, naming
    // `block_timeout` when it is negative, naming `capacity` when it is 0 or above 2^61.
    ring(std::size_t capacity, overflow policy, std::chrono::nanoseconds block_timeout)
        : ring(ring_options{
              .capacity = capacity, .policy = policy, .block_timeout = block_timeout}) {}

    // The general form. Throws std::invalid_argument naming the offending field: capacity 0 (or
    // above 2^61); a block_timeout with a policy other than block; a negative block_timeout or
    // max_age; a max_age when T is not `timestamped`.
    explicit ring(const ring_options& options) : impl_(validated(options)) {}

    // Shared by threads by reference; neither copyable nor movable.
    ring(const ring&) = delete;
    ring& operator=(const ring&) = delete;

    // Destroys the buffered items. No thread may be inside a call on this ring.
    ~ring() = default;

    // Offers `item` to the ring. Any thread.
    // - Room: stores it, returns ok, and wakes one waiting consumer.
    // - Full, drop_oldest: evicts the oldest item, stores this one, returns evicted. Never waits
    //   for a consumer (a lock-free ring may spin for the few instructions another thread needs
    //   to finish with the slot this push uses).
    // - Full, drop_newest: refuses this one, returns rejected. Never waits.
    // - Full, block: waits for room; with a block_timeout, after the timeout evicts the oldest
    //   and returns evicted. Ends with closed if the ring is closed meanwhile.
    // - Closed: returns closed and stores nothing.
    // Every call is counted in stats(); dropped items are counted under their reason. A push
    // that returns evicted dropped exactly one item.
    // Exceptions: a lock-free ring (noexcept move) throws nothing; its push is noexcept, so the
    // one failure it cannot report, an overflow::block push that must park and cannot lock the
    // internal mutex (std::system_error), calls std::terminate. Otherwise, what T's move
    // constructor throws. The new item is then not stored and not counted. On the eviction path,
    // if moving the oldest item out throws, nothing has changed; if storing the new item throws,
    // the oldest has already been removed and counted as evicted (basic guarantee; the counts
    // stay exact either way). The evicted item is destroyed after the push has released the
    // ring (no lock held, no slot owned), so its destructor may call into the ring.
    FRAMEPIPE_ALWAYS_INLINE push_status push(T item) { return impl_.push(item, nullptr); }

    // As push(T), but a push that is waiting for room (overflow::block) gives up when `stop` is
    // requested, returns rejected, and is counted as cancelled. A push that need not wait does
    // not look at `stop`.
    push_status push(T item, std::stop_token stop) { return impl_.push(item, &stop); }

    // Takes the oldest item if there is one. Any thread. Never waits for an item. Returns nullopt
    // when the ring is empty, or when every buffered item has expired (they are discarded and
    // counted).
    // Exceptions: what T's move constructor throws; the item then stays in the ring (strong).
    // With a max_age, the age check runs in noexcept code: a timestamp_traits<T>::capture_time
    // that throws calls std::terminate (the same holds for every pop and for peek).
    [[nodiscard]] FRAMEPIPE_ALWAYS_INLINE std::optional<T> try_pop() {
        return impl_.pop(nullptr, std::nullopt, false);
    }

    // Takes the oldest item, waiting for one. Any thread. Blocks while the ring is empty and
    // open: a lock-free ring spins for a few microseconds (detail::spin_budget), then parks (no
    // CPU); the mutex ring parks at once. Returns nullopt only once the ring is closed and
    // drained.
    // Exceptions: as try_pop(); std::system_error if the wait cannot lock an internal mutex
    // (nothing is taken then).
    [[nodiscard]] FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop() {
        return impl_.pop(nullptr, std::nullopt, true);
    }

    // As pop(), but returns nullopt as soon as `stop` is requested: the token is checked first,
    // so a stopped consumer leaves even when items remain (they stay in the ring).
    [[nodiscard]] std::optional<T> pop(std::stop_token stop) {
        return impl_.pop(&stop, std::nullopt, true);
    }

    // As pop(), but waits at most `timeout`; nullopt when it runs out, or closed and drained.
    // Throws std::invalid_argument("timeout: ...") when timeout is negative.
    [[nodiscard]] std::optional<T> pop_for(std::chrono::nanoseconds timeout) {
        detail::require_non_negative(timeout, "timeout");
        return impl_.pop(nullptr, detail::deadline_after(timeout), true);
    }

    // As pop_for(), also ending (nullopt) when `stop` is requested.
    [[nodiscard]] std::optional<T> pop_for(std::chrono::nanoseconds timeout, std::stop_token stop) {
        detail::require_non_negative(timeout, "timeout");
        return impl_.pop(&stop, detail::deadline_after(timeout), true);
    }

    // A copy of the item the next pop would return, leaving it in place (items past max_age are
    // skipped, not removed). Any thread; never waits for an item (a consumer popping that very
    // item waits for the copy to finish). Needs a copyable T.
    // Exceptions: what T's copy constructor throws; the ring is unchanged.
    [[nodiscard]] std::optional<T> peek() const
        requires std::is_copy_constructible_v<T>
    {
        return impl_.peek();
    }

    // Closes the ring: later pushes return closed; consumers drain what is buffered, then get
    // nullopt. Wakes every waiting producer and consumer. Any thread; idempotent; never waits
    // beyond an internal lock.
    void close() { impl_.close(); }

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
    // for a lock-free ring, else takes the internal lock briefly.
    [[nodiscard]] channel_stats stats() const { return impl_.stats(); }

private:
    const ring_options& validated(const ring_options& options) {
        if (options.capacity == 0 || options.capacity > (std::size_t{1} << 61)) {
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
        capacity_ = options.capacity;
        policy_ = options.policy;
        return options;
    }

    std::size_t capacity_ = 0;
    overflow policy_ = overflow::drop_oldest;
    std::conditional_t<!is_lock_free, detail::locked_ring<T>,
                       std::conditional_t<C == concurrency::spsc, detail::spsc_lockfree_ring<T>,
                                          detail::lockfree_ring<T>>>
        impl_;
};

// A ring for exactly one producer thread and one consumer thread at a time: same API, same
// policies, counters and exception guarantees as ring<T>, and for a noexcept-move T a cheaper
// protocol (detail::spsc_lockfree_ring: no compare-and-swap on the fast path unless the policy
// can evict, cached indices, and a wake-up that costs the notifier one plain load).
//
// Thread rules: push() from one thread at a time; try_pop(), pop(), pop_for() and peek() from
// one thread at a time (the consumer; peek() is a consumer call here, unlike on ring<T>);
// close(), closed(), size(), capacity(), policy() and stats() from any thread. Handing a role to
// another thread needs a happens-before between the old and the new thread (a join, a mutex, a
// channel). Breaking the rule is a data race (undefined behaviour), not a checked error.
template <class T>
using spsc_ring = ring<T, concurrency::spsc>;

} // namespace framepipe
