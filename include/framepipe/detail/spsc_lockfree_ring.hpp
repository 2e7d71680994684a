// framepipe/detail/spsc_lockfree_ring.hpp - spsc_ring<T>'s implementation (one producer thread,
// one consumer thread), when T's move constructor cannot throw.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/detail/asymmetric_barrier.hpp>
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
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <utility>

namespace framepipe::detail {

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
// end. While it may evict, the two sides agree through head_ alone:
// - the consumer claims the item at h by a CAS of head_ from h to h | busy_bit, moves it out, and
//   stores h + 1;
// - an evicting producer (full: tail == h + capacity) advances head_ from h to h + 1 by CAS, which
//   fails while the consumer holds busy_bit; it then evicts the item of h from the very slot it
//   is about to fill (slot h and slot h + capacity are the same one).
// So an item is taken by exactly one of the two. A producer that finds busy_bit set waits for the
// consumer's few instructions (a move), after which the ring has room. Under the other policies
// the producer never writes head_, and the consumer's claim is a plain load and store.
//
// Until the producer first tries to evict (a full ring alone is not enough), such a consumer claims
// as the other policies do, without the CAS, and the producer says when that ends: on entering its
// first eviction it sets evicting_ and runs asymmetric_barrier::heavy(). The consumer stores
// claiming_ = true, then reads evicting_ (light() between them), and takes the item with plain
// stores only if it is false. After the heavy barrier, either the consumer's claiming_ is visible
// to the producer, which then waits for it to clear before it reads head_, or the consumer's read
// comes after the barrier, sees true and claims by CAS. The producer clears evicting_ again once
// calm_pushes pushes have gone by since its last eviction (counting an attempt that found room
// after all) and calm_laps re-reads of head_ since then found the ring at most half full (a
// consumer inside a pop cannot be overtaken by that: while it is stalled, an eviction keeps the
// ring full). The re-read that finds the ring half empty acquires a head_ the consumer stored after
// the last eviction's CAS, so a consumer that then reads evicting_ false reads that head_ or a
// later one, never a head_ from before the eviction: its plain claim needs no more ordering than
// that. So a stream that overflowed once pays the CAS only while it keeps overflowing, plus one
// heavy barrier (1-20 us) per overflow episode, and episodes are at least calm_pushes apart: a ring
// that overflows now and then pays at most a few nanoseconds a push for the barriers, about what
// the CAS it saves costs.
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

#if FRAMEPIPE_SPSC_CHECKS
    // Marks one side busy for the length of a call. A second thread arriving while it is busy
    // breaks the thread rule (a data race that would corrupt the ring or hang it): abort with a
    // message instead.
    class role {
    public:
        role(std::atomic<bool>& busy, const char* what) noexcept : busy_(busy) {
            // Acquire/release: a thread taking the role over (after a join, say) sees what the
            // previous one did, as the rule's happens-before already guarantees.
            if (busy_.exchange(true, std::memory_order_acquire)) {
                std::fprintf(stderr,
                             "framepipe: spsc_ring: two threads %s at once; an spsc_ring admits one "
                             "producer thread and one consumer thread (use ring<T> for more)\n",
                             what);
                std::abort();
            }
        }
        ~role() { busy_.store(false, std::memory_order_release); }
        role(const role&) = delete;
        role& operator=(const role&) = delete;

    private:
        std::atomic<bool>& busy_;
    };
#define FRAMEPIPE_SPSC_ROLE(flag, what) const role framepipe_spsc_role_(flag, what)
#else
#define FRAMEPIPE_SPSC_ROLE(flag, what) static_cast<void>(0)
#endif

public:
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
        // At most capacity items: bounded even if the thread rule was broken (unchecked) and the
        // positions no longer make sense.
        const std::uint64_t t = tail_.load(std::memory_order_acquire);
        std::uint64_t p = head_.load(std::memory_order_acquire) & ~busy_bit;
        for (std::size_t n = 0; p != t && n < capacity_; ++p, ++n) {
            slot_of(p).item()->~T();
        }
    }

    // The producer thread. The fast path (open, room) is small enough to be inlined.
    FRAMEPIPE_ALWAYS_INLINE push_status push(T& item, const push_wait& w) noexcept {
        FRAMEPIPE_SPSC_ROLE(producer_busy_, "pushed");
        const std::uint64_t t = tail_.load(std::memory_order_relaxed); // written only by us
        // Announce the push before reading closed_ (see drained_after_close()). Relaxed: the
        // consumer reads pushing_ only after its heavy barrier; light() keeps the compiler from
        // moving the load of closed_ above this store.
        pushing_.store(true, std::memory_order_relaxed);
        asymmetric_barrier::light();
        if (!closed_.load(std::memory_order_relaxed) && has_room_cached(t)) [[likely]] {
            FRAMEPIPE_DETAIL_SPSC_PUSH_HOOK();
            store(t, item);
            return push_status::ok;
        }
        return push_slow(item, w, t);
    }

    // Counts a push refused before it reached the ring (drop_older_epochs). The producer thread.
    push_status reject() noexcept {
        count(drops_.rejected);
        return push_status::rejected;
    }

    // The consumer thread. The fast path (an item is there, or the caller does not wait) is
    // inlined into the caller (see pop_or_wait()).
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop(const std::stop_token* stop,
                                                 const std::optional<clock::time_point>& deadline,
                                                 bool wait) noexcept {
        FRAMEPIPE_SPSC_ROLE(consumer_busy_, "popped");
        if (!wait && stop == nullptr && !max_age_) {
            return take_one(); // try_pop(): one optional, built once (see take_one())
        }
        return pop_or_wait<T>(
            stop, wait, [this]() FRAMEPIPE_INLINE_LAMBDA { return take_fresh(); },
            [&] { return pop_wait(stop, deadline); });
    }

    // The consumer thread.
    [[nodiscard]] std::optional<T> peek() const {
        FRAMEPIPE_SPSC_ROLE(consumer_busy_, "popped or peeked");
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
        FRAMEPIPE_DETAIL_SPSC_PEEK_HOOK();
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
        return to<std::size_t>(std::min<std::uint64_t>(t - h, capacity_));
    }

    [[nodiscard]] channel_stats stats() const noexcept {
        return drops_.snapshot(capacity_, [this] {
            const std::uint64_t h = head_.load(std::memory_order_acquire) & ~busy_bit;
            return std::pair{h, tail_.load(std::memory_order_acquire)};
        });
    }

    // Whether a pop now claims its item by CAS, because the producer may evict (see the class
    // comment); false for the policies that never evict. For tests (ring_access). Any thread.
    [[nodiscard]] bool claims_by_cas() const noexcept {
        return evicting_.load(std::memory_order_relaxed);
    }

    // The event count consumers wait on for an item, for a selector's listener (select.hpp).
    [[nodiscard]] event_count& readable_event() noexcept { return not_empty_; }

private:
    [[nodiscard]] slot& slot_of(std::uint64_t pos) const noexcept {
        const std::size_t i = pow2_ ? to<std::size_t>(pos & (capacity_ - 1))
                                    : to<std::size_t>(pos % capacity_);
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
        if (evicting_mine_ && t - head_cache_ <= capacity_ / 2) [[unlikely]] {
            note_calm();
        }
        return t - head_cache_ < capacity_;
    }

    // The producer, evicting_ set, has just re-read head_ and found the ring at most half full:
    // after calm_laps such re-reads and calm_pushes pushes with no eviction, the consumer may
    // claim without the CAS again (see the class comment). Out of line and without parameters
    // (it reads tail_ itself): the call then leaves the inlined push as GCC lays it out best (a
    // parameter cost a one-thread push+pop 0.25 ns, every policy).
    FRAMEPIPE_NOINLINE void note_calm() noexcept {
        // Relaxed: tail_ is written only by this thread.
        const std::uint64_t t = tail_.load(std::memory_order_relaxed);
        if (++calm_ >= calm_laps && t - last_eviction_ >= calm_pushes) {
            evicting_mine_ = false;
            // Relaxed: the consumer may go on claiming by CAS for a while; nothing to publish.
            evicting_.store(false, std::memory_order_relaxed);
        }
    }

    // The producer, about to evict: from here on the consumer claims by CAS, and a claim it made
    // without one is over (see the class comment). While evicting_ stays set, no pop can start a
    // plain claim, so only the first eviction of an episode waits for one to end.
    void begin_evicting(std::uint64_t t) noexcept {
        calm_ = 0;
        last_eviction_ = t;
        if (evicting_mine_) [[likely]] {
            return;
        }
        evicting_mine_ = true;
        evicting_.store(true, std::memory_order_relaxed);
        asymmetric_barrier::heavy(); // pairs with the consumer's light() in take_one()
        unsigned spins = 0;
        // Acquire: pairs with the release that ends a claim; the consumer's move out of the slot
        // and its store of head_ are visible after it.
        while (claiming_.load(std::memory_order_acquire)) {
            backoff(spins); // a pop that claimed without the CAS: a few instructions
        }
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
        begin_evicting(t);
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
            FRAMEPIPE_DETAIL_SPSC_EVICT_HOOK();
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

    // A blocked push's wait for room, out of line: push_slow stays small enough for GCC to
    // inline it into a caller's retry loop. Where it is not inlined, a flat-out hand-off tends to
    // run with the ring full, its slow side (docs/benchmarks.md, "The third run").
    FRAMEPIPE_NOINLINE wait_end wait_for_room(block_wait& blocked, std::uint64_t t) noexcept {
        return not_full_.wait(blocked.stop(), blocked.deadline(), [this, t] { return has_room(t); });
    }

    // push() when closed or full, with the push announced in pushing_.
    push_status push_slow(T& item, const push_wait& w, std::uint64_t t) noexcept {
        // Declared first, destroyed last: an evicted item's destructor runs after this push has
        // stored its own item and let go of head_.
        std::optional<T> victim;
        bool timed_out = false;
        block_wait blocked(w, block_timeout_);
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
                auto next = blocked.before();
                if (next == block_wait::next::retry) {
                    next = blocked.after(wait_for_room(blocked, t));
                }
                switch (next) {
                case block_wait::next::retry: break;
                case block_wait::next::evict: timed_out = true; break;
                case block_wait::next::reject: count(drops_.rejected); return push_status::rejected;
                case block_wait::next::cancel:
                    count(drops_.cancelled);
                    return push_status::cancelled;
                }
                pushing_.store(true, std::memory_order_relaxed); // as in push()
                asymmetric_barrier::light();
                continue;
            }
            return evict_and_store(t, item, victim);
        }
    }

    // pop() once the ring was found empty: wait for an item, the close, the stop or the deadline.
    std::optional<T> pop_wait(const std::stop_token* stop,
                              const std::optional<clock::time_point>& deadline) noexcept {
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
            // Nothing: the items there had expired. The stop token and the deadline are
            // honoured here, since the wait returns at once while an item is there, without
            // looking at them: a run of stale arrivals would otherwise keep a stopped or
            // timed-out pop going.
            if (stop != nullptr && stop->stop_requested()) {
                return std::nullopt;
            }
            if (deadline && clock::now() >= *deadline) {
                return std::nullopt;
            }
            FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
        }
    }

    // The consumer: takes the item at head_; nullopt when the ring is empty. The item is moved
    // into a local, head_ is released, and the optional is built from the local last: GCC builds
    // an optional<T> on the stack in pieces and copies it whole, and a load spanning pieces still
    // in the store buffer waits until they are written, here behind the store of head_, whose
    // line a producer polling a full ring keeps taking away (docs/benchmarks.md).
    FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_one() noexcept {
        for (;;) {
            // Relaxed: written only by this thread, or by an evicting producer, whose change
            // makes the CAS below fail and reload it; a plain claim comes after an eviction only
            // once the flag is clear, and then this load is past it (see the class comment).
            std::uint64_t h = head_.load(std::memory_order_relaxed);
            if (tail_cache_ <= h) {
                // Acquire: pairs with store(); the items below tail_ are constructed.
                tail_cache_ = tail_.load(std::memory_order_acquire);
                if (tail_cache_ <= h) {
                    return std::nullopt;
                }
            }
            bool claimed_plain = false;
            if (evicts_) {
                // Relaxed loads of evicting_: see the class comment. While it is set, claim by
                // CAS; else announce the claim, then look again (light() keeps that load below
                // the store, and the producer's heavy() orders the two for it).
                bool plain = !evicting_.load(std::memory_order_relaxed);
                if (plain) {
                    claiming_.store(true, std::memory_order_relaxed);
                    asymmetric_barrier::light();
                    plain = !evicting_.load(std::memory_order_relaxed);
                    if (!plain) {
                        claiming_.store(false, std::memory_order_relaxed); // nothing touched yet
                    }
                }
                if (plain) [[likely]] {
                    claimed_plain = true;
                    FRAMEPIPE_DETAIL_PLAIN_CLAIM_HOOK();
                } else if (!head_.compare_exchange_weak(h, h | busy_bit,
                                                        std::memory_order_acquire,
                                                        std::memory_order_relaxed)) {
                    continue; // the producer evicted the item of h: look again
                }
            }
            slot& s = slot_of(h);
            T item(std::move(*s.item())); // noexcept: this ring is for a noexcept-move T
            s.item()->~T();
            // Release: the producer that reads this head reuses the slot after our move.
            head_.store(h + 1, std::memory_order_release);
            if (claimed_plain) {
                // Release: an evicting producer that reads false sees the move and head_ above.
                claiming_.store(false, std::memory_order_release);
            }
            if (policy_ == overflow::block) {
                not_full_.notify_one_asymmetric();
            }
            return std::optional<T>(std::move(item));
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
    // The calm after which the consumer claims without the CAS again: re-reads of head_ that
    // find the ring at most half full, and pushes, since the last eviction (see note_calm()). The
    // pushes bound the heavy barriers to one per 4096 pushes (20 us / 4096: 5 ns a push at worst,
    // on the VM where the barrier costs most); the laps keep a large ring from switching back
    // before it has drained.
    static constexpr unsigned calm_laps = 64;
    static constexpr std::uint64_t calm_pushes = 4096;

    // tail_ alone on its line: written by every push, polled by a consumer that has caught up.
    // Anything else the producer writes per push lives on the next line, so that those writes
    // never have to take the line back from a polling consumer.
    alignas(cache_line) std::atomic<std::uint64_t> tail_{0};
    // The producer's private line: pushing_ (written twice per push, read by the consumer only
    // after a close), the producer's copy of head_, and its own copy of evicting_ with the
    // record of calm since the last eviction (see note_calm()).
    alignas(cache_line) std::atomic<bool> pushing_{false};
    std::uint64_t head_cache_ = 0;
    bool evicting_mine_ = false;
    unsigned calm_ = 0;
    std::uint64_t last_eviction_ = 0; // the position pushed by the last evicting push
    // A thread is inside push (see role). In the layout whether or not the checks are on, so that
    // translation units built with and without NDEBUG agree on the type.
    std::atomic<bool> producer_busy_{false};
    // The consumer's line (mutable: peek() holds busy_bit while it copies). head_ is written by
    // every pop and read by the producer only when its copy says full; tail_cache_ is private
    // to the consumer.
    alignas(cache_line) mutable std::atomic<std::uint64_t> head_{0};
    std::uint64_t tail_cache_ = 0;
    // A pop is taking the item at head_ without the CAS (evicts_ only; see the class comment).
    // On head_'s line: the evicting producer that reads it reads head_ next.
    std::atomic<bool> claiming_{false};
    // The producer may evict: pops claim by CAS (see the class comment). Read by every pop of an
    // evicting ring, so on the consumer's own line; written by the producer once per overflow
    // episode (elsewhere, the producer's drop counters would take the line at each eviction).
    std::atomic<bool> evicting_{false};
    mutable std::atomic<bool> consumer_busy_{false}; // a thread is inside pop or peek (see role)
    // Written once; read by every push (a shared line, so the read stays in cache).
    alignas(cache_line) std::atomic<bool> closed_{false};
    // Drop reasons, each with a single writer here (expired: the consumer; the rest: the
    // producer), read by stats().
    drop_counters drops_;
    // Waiters: each notify reads a waiter count here; written only by a thread that parks.
    alignas(cache_line) event_count not_empty_{event_count::asymmetric};
    alignas(cache_line) event_count not_full_{event_count::asymmetric};
};

#undef FRAMEPIPE_SPSC_ROLE

} // namespace framepipe::detail
