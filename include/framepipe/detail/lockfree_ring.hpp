// framepipe/detail/lockfree_ring.hpp - ring<T>'s implementation for any number of producers and
// consumers, when T's move constructor cannot throw.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/detail/config.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/ring_common.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <utility>

namespace framepipe::detail {

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
// then yield, then brief sleeps (detail::backoff): lock-free in the common case, but a thread
// preempted inside those instructions delays the one that needs its slot (as in every array
// queue of this family).
//
// One unfinished push hides the finished ones behind it. A push that has claimed position p but
// not stored its item yet makes every pop see the ring as empty at p (try_pop returns nullopt,
// pop_for may time out), even when pushes that claimed p + 1, p + 2, ... have stored theirs and
// returned ok, and size() counts them. Consumers take positions in order, so p's item comes out
// first once it is stored (a few instructions later, unless that producer is descheduled). This
// is the known trade-off of this queue family: FIFO order and one CAS per operation, for a pop
// that may miss items while an earlier push is in flight.
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
    explicit lockfree_ring(const ring_options& options)
        : capacity_(options.capacity), pow2_((options.capacity & (options.capacity - 1)) == 0),
          policy_(options.policy), block_timeout_(options.block_timeout),
          max_age_(options.max_age), slots_(std::make_unique<slot[]>(capacity_)) {
        for (std::size_t i = 0; i < capacity_; ++i) {
            slots_[i].seq.store(2 * to<std::uint64_t>(i), std::memory_order_relaxed);
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

    // Stores `item` (moved from only if it is stored). Waits for room under overflow::block as
    // `w` allows. noexcept: the wait cannot fail.
    // The fast path (open, the slot of the tail free, the claim won) is small enough to be
    // inlined; anything else goes to push_slow().
    // victim_out: where an evicted item goes (see ring_access::push_keeping_victim); null: a
    // local of the push, destroyed as it returns.
    FRAMEPIPE_ALWAYS_INLINE push_status push(T& item, const push_wait& w,
                                             std::optional<T>* victim_out = nullptr) noexcept {
        std::uint64_t pos = tail_.load(std::memory_order_relaxed);
        if ((pos & closed_bit) == 0) [[likely]] {
            slot& s = slot_of(pos);
            // Free for pos: seq is 2 * pos, busy_bit clear (push_slow() tells the other cases
            // apart). seq_cst claim: see push_slow().
            if (s.seq.load(std::memory_order_acquire) == 2 * pos &&
                tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_seq_cst,
                                            std::memory_order_relaxed)) [[likely]] {
                fill(s, pos, item);
                return push_status::ok;
            }
        }
        return push_slow(item, w, pos, victim_out);
    }

    // Counts a push refused before it reached the ring (drop_older_epochs). Any thread.
    push_status reject() noexcept {
        count(drops_.rejected);
        return push_status::rejected;
    }

    // The fast path (an item is there, or the caller does not wait) is inlined into the caller
    // (see pop_or_wait()).
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop(const std::stop_token* stop,
                                                 const std::optional<clock::time_point>& deadline,
                                                 bool wait) noexcept {
        return pop_or_wait<T>(
            stop, wait, [this]() FRAMEPIPE_INLINE_LAMBDA { return take_fresh(); },
            [&] { return pop_wait(stop, deadline); });
    }

    // pop() once the ring was found empty: wait for an item, the close, the stop or the deadline.
    std::optional<T> pop_wait(const std::stop_token* stop,
                              const std::optional<clock::time_point>& deadline) noexcept {
        unsigned spins = 0;
        bool woke = false;   // the last take found nothing, and the head stood still
        bool looked = false; // a take after a wait found nothing
        for (;;) {
            // Empty, or an in-flight push has claimed the next position but not filled it yet.
            // tail_ is read only once the ring is closed: a consumer that read it on every wait
            // would make the next push's claim of tail_ pay an extra invalidation (see
            // item_at_head()). Acquire: close() sets tail_'s closed bit before the flag.
            if (closed_flag_.load(std::memory_order_acquire)) {
                const std::uint64_t h = head_.load(std::memory_order_acquire);
                const std::uint64_t t = tail_.load(std::memory_order_acquire);
                if ((t & ~closed_bit) == h) {
                    return std::nullopt; // closed and drained
                }
            }
            if (looked) {
                // The wait said "ready" but the take found nothing. The stop token and the
                // deadline are honoured here, since the wait returns at once while its
                // predicate holds, without looking at them: a run of stale arrivals (the head
                // moved) would otherwise keep a stopped or timed-out pop going. Leaving, pass
                // the wake-up on: the take fails on a head position a push is still filling
                // while a later position may hold an item, whose push's wake-up this consumer
                // may have taken; another consumer parked beside that item must hear of it.
                if ((stop != nullptr && stop->stop_requested()) ||
                    (deadline && clock::now() >= *deadline)) {
                    not_empty_.notify_one();
                    return std::nullopt;
                }
                FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
            }
            if (woke) {
                // A push has claimed the head position and not filled it yet, and the wait's
                // exact predicate (tail != head) stays true until it does. Back off (pause,
                // then yield or sleep for the pushing thread, which may have been preempted)
                // instead of spinning hot.
                backoff(spins);
            }
            const wait_end end = not_empty_.wait(
                stop, deadline, [this] { return item_at_head(); }, [this] { return has_items(); });
            if (end != wait_end::ready) {
                if (looked) {
                    not_empty_.notify_one(); // as above: a wake-up taken earlier is passed on
                }
                return std::nullopt;
            }
            FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK(); // a test seam (detail/config.hpp)
            // Relaxed: only compared with the head after the take, to tell whether it moved.
            const std::uint64_t before = head_.load(std::memory_order_relaxed);
            if (std::optional<T> out = take_fresh()) {
                return out;
            }
            // Back off only for a push still filling the head position. A head that moved means
            // the take discarded expired items (or another consumer took the item): wait again at
            // once, with the back-off from the start, so that a run of stale arrivals never
            // slows the wait down to sleeps (a fresh item could expire during one).
            looked = true;
            woke = head_.load(std::memory_order_relaxed) == before;
            if (!woke) {
                spins = 0;
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
        return to<std::size_t>(std::min<std::uint64_t>(t - h, capacity_));
    }

    [[nodiscard]] channel_stats stats() const noexcept {
        return drops_.snapshot(capacity_, [this] {
            const std::uint64_t h = head_.load(std::memory_order_acquire);
            return std::pair{h, tail_.load(std::memory_order_acquire) & ~closed_bit};
        });
    }

    // The event count consumers wait on for an item, for a selector's listener (select.hpp).
    [[nodiscard]] event_count& readable_event() noexcept { return not_empty_; }

private:
    // A blocked push's wait for room, out of line so that push_slow stays small (as in
    // spsc_ring; the blocking hand-off's figures are in docs/benchmarks.md, "The third run").
    FRAMEPIPE_NOINLINE wait_end wait_for_room(block_wait& blocked) noexcept {
        return not_full_.wait(blocked.stop(), blocked.deadline(), [this] { return has_room(); });
    }

    // push() when closed, or when the slot of `pos` (the tail as push() last read it) is not
    // free for it, or the claim was lost.
    push_status push_slow(T& item, const push_wait& w, std::uint64_t pos,
                          std::optional<T>* victim_out) noexcept {
        // Declared first, destroyed last: an evicted item's destructor (a frame going back to its
        // pool, say) runs after this push has stored its own item and released every slot, or
        // later still in the caller's optional (victim_out).
        std::optional<T> own_victim;
        std::optional<T>& victim = victim_out != nullptr ? *victim_out : own_victim;
        bool timed_out = false;
        block_wait blocked(w, block_timeout_);
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
                auto next = blocked.before();
                if (next == block_wait::next::retry) {
                    FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
                    next = blocked.after(wait_for_room(blocked));
                    if (next == block_wait::next::retry) {
                        FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK(); // a test seam (detail/config.hpp)
                    }
                }
                switch (next) {
                case block_wait::next::retry: break;
                case block_wait::next::evict: timed_out = true; break;
                case block_wait::next::reject: count(drops_.rejected); return push_status::rejected;
                case block_wait::next::cancel:
                    count(drops_.cancelled);
                    return push_status::cancelled;
                }
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

    [[nodiscard]] slot& slot_of(std::uint64_t pos) const noexcept {
        const std::size_t i = pow2_ ? to<std::size_t>(pos & (capacity_ - 1))
                                    : to<std::size_t>(pos % capacity_);
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
        FRAMEPIPE_DETAIL_RING_FILL_HOOK();
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
        FRAMEPIPE_DETAIL_RING_EVICT_HOOK();
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
    alignas(cache_line) std::atomic<std::uint64_t> tail_{0};
    alignas(cache_line) std::atomic<std::uint64_t> head_{0};
    // Drop reasons: written only on their slow paths, read by stats().
    drop_counters drops_;
    // Waiters. Each push reads not_empty_'s waiter count; it is written only by a consumer that
    // parks, so its line stays shared (cached) on the producer's core while nobody parks.
    alignas(cache_line) event_count not_empty_;
    alignas(cache_line) event_count not_full_;
};

} // namespace framepipe::detail
