// framepipe/latest_slot.hpp - holds only the newest value; each push replaces an unread one.
//
//     framepipe::latest_slot<Frame> newest;
//     camera thread:   newest.push(grab());           // never waits; overwrites an unread frame
//     detector thread: while (auto f = newest.pop()) detect(*f);   // always the freshest frame
//
// This is the "queue of size 1 that is always overwritten": the producer never waits for the
// consumer, and a consumer that falls behind skips straight to the newest value. Overwritten
// values are counted as evicted. Any number of producer and consumer threads may share one slot.
//
// How it works: a triple buffer that also serves many threads. Values live in five buffers
// (cells_) and are never copied between them. One atomic word, middle_, names the buffer that is
// "in the slot", with a `fresh` bit when it holds an unread value. A thread never writes a buffer
// that another thread can see: a producer builds its value in an empty buffer it owns, swaps
// that buffer into middle_ with one atomic exchange, and owns the buffer it got back (destroying
// the value in it if that one was unread: an eviction). A consumer swaps an empty buffer it owns
// for the fresh one and moves the value out of it.
//
//                  producer side             middle_              consumer side
//                  [empty buffer] --xchg-->  [buf | fresh] --xchg--> [taken buffer]
//                  <-- old buffer            (one word)              empty buffer -->
//
// Where the empty buffers come from: one is cached for the producers and one for the consumers.
// A thread takes its side's cached buffer with one atomic exchange on a cache line that only its
// side touches, so with one producer and one consumer (the common case) a call costs that
// uncontended exchange plus the reference triple buffer's one exchange on middle_. A second
// producer (or consumer) arriving while the cached buffer is in use takes its side's overflow
// spare (the fourth buffer for the producers, the fifth for the consumers) under its side's
// small mutex: many producers and consumers stay correct, and they only serialise on a mutex when
// two threads of one side call at the same instant. The sides never share one: a push never
// waits for a pop's move, nor a pop for a push's.
//
// Closing is a separate flag, closed_, written once; see push_impl for how a push that races
// with close() is either refused or waited for by the consumers, so no value lands unseen.
//
// Waiting: a pop that finds the slot empty spins for a few microseconds, then parks on a futex
// (detail::event_count). A push pays one load of a rarely written word to see whether anyone is
// parked, and makes a system call only when someone is.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

namespace framepipe {

// What a latest_slot can be configured with. An aggregate for designated initialisers.
struct latest_slot_options {
    // A value older than this (by timestamp_traits<T>) is discarded at pop (expired).
    std::optional<std::chrono::nanoseconds> max_age{};
    // Refuse a value from an older epoch than one already pushed (see the constructor).
    bool drop_older_epochs = false;
};

template <class T>
class latest_slot {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::latest_slot<T>: T must be an object type (not a reference or array)");
    static_assert(std::is_move_constructible_v<T>,
                  "framepipe::latest_slot<T>: T must be move-constructible");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "framepipe::latest_slot<T>: T's destructor must not throw");

    static constexpr bool nothrow_move = std::is_nothrow_move_constructible_v<T>;

public:
    using value_type = T;
    using clock = std::chrono::steady_clock;

    // An empty, open slot without an age limit. Allocates nothing; never throws.
    latest_slot() noexcept = default;

    // A slot whose value is discarded at pop (counted as expired) once older than `max_age`.
    // Needs a `timestamped` T. Any std::chrono::duration (one beyond nanoseconds' range means no
    // limit). Throws std::invalid_argument naming max_age when it is negative or NaN, or T
    // carries no capture time.
    template <class Rep, class Period>
    explicit latest_slot(std::chrono::duration<Rep, Period> max_age)
        : latest_slot(latest_slot_options{.max_age = detail::to_nanoseconds(max_age, "max_age")}) {}

    // The general form. max_age as above; drop_older_epochs refuses (rejected) a push whose value
    // comes from an older epoch (epoch_traits<T>: a live source's connection) than one already
    // pushed, so that a late value from before a reconnect never replaces a newer one. Exact
    // with one pushing thread at a time (a live source's runner): two producers pushing
    // different epochs at the same instant can let the older value replace the newer. Throws
    // std::invalid_argument naming max_age (negative, or T not `timestamped`) or
    // drop_older_epochs (T not `epoched`).
    explicit latest_slot(const latest_slot_options& options)
        : max_age_(options.max_age), drop_older_epochs_(options.drop_older_epochs) {
        if (options.max_age) {
            if (*options.max_age < std::chrono::nanoseconds::zero()) {
                throw std::invalid_argument("max_age: must not be negative");
            }
            if constexpr (!timestamped<T>) {
                throw std::invalid_argument(
                    "max_age: T carries no capture time (specialise framepipe::timestamp_traits)");
            }
        }
        if (options.drop_older_epochs && !epoched<T>) {
            throw std::invalid_argument(
                "drop_older_epochs: T carries no epoch (specialise framepipe::epoch_traits)");
        }
    }

    // Shared by threads by reference; neither copyable nor movable.
    latest_slot(const latest_slot&) = delete;
    latest_slot& operator=(const latest_slot&) = delete;

    // Destroys the unread value, if any. No thread may be inside a call on this slot.
    ~latest_slot() {
        const std::uint32_t m = middle_.load(std::memory_order_acquire);
        if ((m & fresh_bit) != 0) {
            destroy(m & index_mask);
        }
    }

    // Stores `value`, replacing an unread one. Producer threads (any). Never waits for a
    // consumer's pop: lock-free with one producer; a second producer calling at the same instant
    // takes a brief lock. It waits only while a peek() copies the very value it replaces (see
    // peek()). Returns ok, evicted (an unread value was replaced: destroyed inside this
    // call, with no lock held except on the second-producer path for a T whose move may throw,
    // and counted as evicted), closed (nothing stored; `value` is destroyed), or, with
    // drop_older_epochs, rejected for a value from an older epoch (nothing stored).
    // Exceptions: none when T's move is noexcept (a failure to lock the second-producer mutex,
    // which std::mutex reports only for a broken program, then terminates). Otherwise what T's
    // move throws; the value is built in a private buffer before anything is published, so the
    // slot and its counts are unchanged (strong).
    push_status push(T value) noexcept(nothrow_move) { return push_impl(value); }

    // Same as push(T): a latest_slot never waits for room, so the token is never consulted.
    push_status push(T value, std::stop_token stop) noexcept(nothrow_move) {
        (void)stop;
        return push_impl(value);
    }

    // Same as push(T), which never waits: the name for code written against any channel.
    [[nodiscard]] push_status try_push(T value) noexcept(nothrow_move) { return push_impl(value); }

    // Takes the value if there is an unread one. Consumer threads (any). Never waits for a
    // producer; on an empty slot this is one atomic load. It waits only while a peek() copies the
    // very value it takes (see peek()). nullopt when empty, or when the value had expired (it
    // is then discarded and counted).
    // Exceptions: as push(); a move that throws puts the value back (strong), unless a push or
    // another consumer's pop touched the slot meanwhile: the value is then dropped, counted as
    // evicted (as if a push had replaced it).
    [[nodiscard]] std::optional<T> try_pop() noexcept(nothrow_move) {
        return pop_impl(nullptr, detail::no_deadline, false);
    }

    // Takes the value, waiting until one arrives: spins a few microseconds, then parks (no
    // CPU). nullopt only once the slot is closed and its last value taken. Exceptions: as
    // try_pop().
    [[nodiscard]] std::optional<T> pop() noexcept(nothrow_move) {
        return pop_impl(nullptr, detail::no_deadline, true);
    }

    // As pop(), but nullopt as soon as `stop` is requested (checked first, so a stopped consumer
    // leaves even when a value is there; the value stays).
    [[nodiscard]] std::optional<T> pop(std::stop_token stop) noexcept(nothrow_move) {
        return pop_impl(&stop, detail::no_deadline, true);
    }

    // As pop(), waiting at most `timeout`. Any std::chrono::duration; one beyond nanoseconds' range
    // (say seconds::max()) means no limit. Throws std::invalid_argument naming timeout when it is
    // negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout) {
        return pop_impl(nullptr, deadline_for(detail::to_nanoseconds(timeout, "timeout")), true);
    }

    // As pop_for(), also ending when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout,
                                           std::stop_token stop) {
        return pop_impl(&stop, deadline_for(detail::to_nanoseconds(timeout, "timeout")), true);
    }

    // A copy of the unread value without consuming it; nullopt if there is none (or it has
    // expired: it is skipped, not removed). Any thread; never waits. Needs a copyable T.
    // Cost: the copy, plus two atomic read-modify-writes on a line of its own (a "pin" on the
    // buffer, so that the value cannot be taken or replaced while it is copied). The slot keeps
    // working meanwhile, except that a push replacing that very value, or a pop taking it, waits
    // for the copy to finish before it destroys or moves the value (pausing, yielding, then
    // sleeping briefly).
    // Exceptions: what T's copy constructor throws; the slot is unchanged (strong).
    [[nodiscard]] std::optional<T> peek() const
        requires std::is_copy_constructible_v<T>
    {
        std::optional<T> copy;
        for (;;) {
            // seq_cst, and the pin below: a thread that swaps this buffer out of middle_ loads
            // the pin after its exchange (seq_cst), so either it sees the pin and waits for us, or
            // our re-check sees its exchange and we let go without reading the buffer.
            const std::uint32_t seen = middle_.load(std::memory_order_seq_cst);
            if ((seen & fresh_bit) == 0) {
                return copy;
            }
            const std::uint32_t i = seen & index_mask;
            FRAMEPIPE_DETAIL_LATEST_PEEK_HOOK();
            const pin held(pins_.count[i]);
            if (middle_.load(std::memory_order_seq_cst) != seen) {
                continue; // taken or replaced meanwhile: look again
            }
            // Still the unread value (perhaps a newer one in the same buffer: also unread), and
            // nobody may move or destroy it until the pin is released.
            if (!is_expired(*value_at(i))) {
                copy.emplace(*value_at(i)); // may throw: the pin is released, nothing changed
            }
            return copy;
        }
    }

    // Closes the slot: later pushes return closed and store nothing; consumers take the last
    // value, then get nullopt. Wakes every waiting consumer. Any thread; idempotent; never
    // waits; noexcept.
    void close() noexcept {
        // seq_cst: see push_impl (a push either sees the flag or is seen in flight by drained())
        // and event_count (the store is what notify_all_after_seq_cst() publishes).
        closed_.store(true, std::memory_order_seq_cst);
        waiters_.notify_all_after_seq_cst();
    }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_seq_cst); }

    // 1 when an unread value is present, else 0 (a hint: it may change at once). Any thread;
    // wait-free. An expired value counts until a pop discards it.
    [[nodiscard]] std::size_t size() const noexcept {
        return (middle_.load(std::memory_order_relaxed) & fresh_bit) != 0 ? 1 : 0;
    }

    // Always 1. Any thread; wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return 1; }

    // Always overflow::drop_oldest: a new value replaces the unread one. Any thread; wait-free.
    [[nodiscard]] overflow policy() const noexcept { return overflow::drop_oldest; }

    // The counters; replaced values are counted as evicted. Any thread; wait-free (it reads the
    // counters, which each side keeps on its own cache line, without a lock). When no call is in
    // flight, pushed == popped + dropped + size exactly; a snapshot taken while other threads
    // push and pop may be off by the calls in flight.
    [[nodiscard]] channel_stats stats() const noexcept {
        channel_stats s;
        const counters* const all[] = {&producer_.counts, &consumer_.counts,
                                       &producer_overflow_.counts, &consumer_overflow_.counts};
        for (const counters* c : all) {
            s.pushed += c->pushed.load(std::memory_order_relaxed);
            s.popped += c->popped.load(std::memory_order_relaxed);
            s.evicted += c->evicted.load(std::memory_order_relaxed);
            s.expired += c->expired.load(std::memory_order_relaxed);
            s.after_close += c->after_close.load(std::memory_order_relaxed);
        }
        const auto refused = refused_.load(std::memory_order_relaxed);
        s.pushed += refused;
        s.rejected = refused;
        s.dropped = s.evicted + s.rejected + s.expired + s.after_close;
        s.size = size();
        return s;
    }

private:
    friend struct detail::readable_access;
    friend struct detail::inline_access;

    // The event count consumers wait on for a value (see detail::readable_access).
    [[nodiscard]] detail::event_count& readable_event() noexcept { return waiters_; }

    // middle_ = index of the buffer in the slot | fresh_bit when it holds an unread value (or
    // | a pop's tag, see pop_tag_shift, when it holds none). Every buffer that middle_ does not
    // name and no thread inside a call holds is empty, so values are destroyed when they are
    // replaced or taken, never later.
    static constexpr std::uint32_t index_mask = 0x7;
    static constexpr std::uint32_t fresh_bit = 0x8;
    static constexpr std::uint32_t no_buffer = 0xFF;
    // For a T whose move may throw, a pop leaves its empty buffer in middle_ with a tag above
    // these bits: the low 28 bits of the number of such pops started before it, so that no
    // later exchange leaves middle_ with the same word (see put_back).
    static constexpr unsigned pop_tag_shift = 4;

    // Counters with a single writer: the thread that holds the claim they belong to (a side's
    // cached buffer, or the overflow mutex). An increment is then a relaxed load and store (no
    // locked instruction); atomics only so that stats() may read them from any thread.
    struct counters {
        std::atomic<std::uint64_t> pushed{0};
        std::atomic<std::uint64_t> popped{0};
        std::atomic<std::uint64_t> evicted{0};
        std::atomic<std::uint64_t> expired{0};
        std::atomic<std::uint64_t> after_close{0};
    };
    static void bump(std::atomic<std::uint64_t>& c) noexcept {
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    // One buffer per cache line, so a producer filling its buffer never invalidates the line a
    // consumer is moving a value out of. Raw storage, not std::optional: whether a buffer holds a
    // value is known from middle_ and from who holds it, so there is no "engaged" flag to read
    // and write (with a trivially destructible T a consumer then only reads the buffer, and the
    // producer's next write to it costs what it costs in a plain triple buffer).
    struct alignas(std::max(detail::cache_line, alignof(T))) buffer {
        unsigned char bytes[sizeof(T)];
    };

    [[nodiscard]] T* value_at(std::uint32_t i) noexcept {
        return std::launder(reinterpret_cast<T*>(cells_[i].bytes));
    }
    [[nodiscard]] const T* value_at(std::uint32_t i) const noexcept {
        return std::launder(reinterpret_cast<const T*>(cells_[i].bytes));
    }
    void destroy(std::uint32_t i) noexcept { value_at(i)->~T(); }

    // The producers' or the consumers' cached empty buffer and their counters, on a line of their
    // own: with one thread per side, this line never leaves that thread's core.
    struct alignas(detail::cache_line) side {
        explicit side(std::uint32_t first) noexcept : cached(first) {}
        // The cached buffer's index, or no_buffer while a thread of this side holds it. For the
        // producers' side that also says "a push is in flight" (see drained()).
        std::atomic<std::uint32_t> cached;
        counters counts;
        // The consumers' side only, and only for a T whose move may throw: the pops that may
        // still put a value back, in the low 32 bits, and, above them, how many such pops have
        // started (only ever rising, modulo 2^32; see take_from and drained()).
        std::atomic<std::uint64_t> restoring{0};
    };

    // side::restoring: one pop more started, in the high half.
    static constexpr std::uint64_t restore_started = std::uint64_t{1} << 32;
    static constexpr std::uint64_t restore_in_flight = restore_started - 1;

    // The spare buffer for a second thread of one side, guarded by a mutex of that side's own,
    // and (the producers' side only) the count of pushes in flight on this path: they do not
    // show in the producers' `cached` (see drained()).
    struct alignas(detail::cache_line) overflow_side {
        explicit overflow_side(std::uint32_t first) noexcept : spare(first) {}
        std::mutex mu;
        std::uint32_t spare; // guarded by mu
        counters counts;
        std::atomic<std::uint32_t> publishers{0};
    };

    // Pins on the five buffers, held by peek() while it copies (see peek()). On their own line:
    // every push and pop loads one of them, and they are written only by peek().
    struct alignas(detail::cache_line) pin_counts {
        std::atomic<std::uint32_t> count[5] = {};
    };

    class pin {
    public:
        explicit pin(std::atomic<std::uint32_t>& n) noexcept : n_(&n) {
            n_->fetch_add(1, std::memory_order_seq_cst); // seq_cst: see peek()
        }
        ~pin() {
            // Release: our reads of the value happen before the destruction or move by the
            // thread that sees the count drop (acquire in wait_unpinned).
            n_->fetch_sub(1, std::memory_order_release);
        }
        pin(const pin&) = delete;
        pin& operator=(const pin&) = delete;

    private:
        std::atomic<std::uint32_t>* n_;
    };

    // Called by a thread that has just swapped buffer `i`, holding a value, out of middle_ (and
    // will move or destroy that value): waits until no peek() is copying it. seq_cst: see peek().
    void wait_unpinned(std::uint32_t i) const noexcept {
        // A loop of its own rather than detail::backoff(): the publish inlines it, and backoff's
        // shape moved GCC's layout of the publish (docs/benchmarks.md, latest_slot).
        for (unsigned n = 0; pins_.count[i].load(std::memory_order_seq_cst) != 0; ++n) {
            if (n < 128) {
                detail::cpu_relax();
            } else {
                detail::yield_or_sleep(n - 128); // the copying thread may have been preempted
            }
        }
    }

    // Counts a call in `n` while it lives: a push on the overflow path in
    // overflow_side::publishers, or (Word = std::uint64_t, `started` = restore_started) a pop
    // that may put a value back in side::restoring, which also counts it as started.
    template <class Word, Word started = 0>
    class announce {
    public:
        explicit announce(std::atomic<Word>& n) noexcept : n_(&n) {
            // seq_cst: ordered before the caller's load of closed_ (see push_impl), or before
            // the pop's exchange on middle_ (see drained()).
            before_ = n_->fetch_add(started | 1, std::memory_order_seq_cst);
        }
        // The count as this call found it.
        [[nodiscard]] Word before() const noexcept { return before_; }
        ~announce() {
            // Release: a consumer that reads 0 here (acquire, in drained()) sees what we did.
            n_->fetch_sub(1, std::memory_order_release);
        }
        announce(const announce&) = delete;
        announce& operator=(const announce&) = delete;

    private:
        std::atomic<Word>* n_;
        Word before_;
    };

    // Who owns which empty buffer. A call first claims one empty buffer (and the counters that
    // go with it) for itself: its side's cached buffer, taken with one exchange on the side's
    // `cached` (no_buffer while a thread holds it), or, when another thread of its side holds
    // that one, its side's overflow spare under that side's overflow_side::mu. Whatever empty buffer the call ends up
    // owning goes back where the claim came from before it returns (or throws).
    //
    // The cached path is written out in push_impl and take with the buffer index in a plain
    // local, not in an object that also holds the overflow lock: such an object has its address
    // taken (the lock's unlock is a call), so it would live on the caller's stack and be stored
    // and reloaded around every exchange. The overflow path is out of line (push_overflow,
    // take_overflow); it is only reached when two threads of one side call at the same instant.

    // Claims the cached buffer of side `s`, or returns no_buffer if a thread of that side holds
    // it. `order`: seq_cst for the producers (the exchange announces the push, see push_impl),
    // acquire for the consumers. Either way the acquire half makes the previous holder's writes
    // (its counters, what it did to the buffer) visible; they were released by release_cached.
    [[nodiscard]] static std::uint32_t claim_cached(side& s, std::memory_order order) noexcept {
        return s.cached.exchange(no_buffer, order);
    }
    // Hands the cached buffer (now `index`, an empty buffer) back to the side. Release: the next
    // holder (acquire, in claim_cached) sees our writes to the counters and to the buffer.
    static void release_cached(side& s, std::uint32_t index) noexcept {
        s.cached.store(index, std::memory_order_release);
    }

    static std::optional<clock::time_point> deadline_for(std::chrono::nanoseconds timeout) {
        detail::require_non_negative(timeout, "timeout");
        return detail::deadline_after(timeout);
    }

    [[nodiscard]] bool is_expired(const T& item) const noexcept {
        // The clock is read only when there is an age limit.
        return max_age_ && detail::older_than(item, max_age_, clock::now());
    }

    // Close versus push. A push first announces itself (its claim's exchange on the producers'
    // `cached`, or `publishers` on the overflow path), then loads closed_; close() stores
    // closed_; a consumer that sees closed_ checks, in drained(), that no push is announced
    // before it concludes that nothing more will arrive. All four are seq_cst, so in their
    // single total order either the push's load of closed_ comes after close()'s store (the push
    // sees it and stores nothing), or the push's announcement comes before it, and then every
    // consumer that saw closed_ also sees the push in flight (and waits for its value).
    //
    // The common case, one producer thread: one exchange on the producers' own line (the claim),
    // one load of closed_ (a line written once), the value built in place, one exchange on
    // middle_, a load of the sleeper count (a plain load on x86), the counters on the
    // producers' own line, and a release store of the claim. The buffer index stays in a
    // register: nothing else is written.
    push_status push_impl(T& value) {
        if constexpr (epoched<T>) {
            if (drop_older_epochs_) {
                const std::uint64_t before = epochs_.newest();
                if (!epochs_.admit(value)) {
                    // Relaxed: a statistics counter (stats() sums it into pushed and rejected).
                    refused_.fetch_add(1, std::memory_order_relaxed);
                    return push_status::rejected;
                }
                if constexpr (!std::is_nothrow_move_constructible_v<T>) {
                    // A push whose move throws stores nothing: the gate's mark goes back.
                    const std::uint64_t raised = epoch_traits<T>::epoch(value);
                    try {
                        return push_admitted(value);
                    } catch (...) {
                        epochs_.restore(before, raised);
                        throw;
                    }
                }
            }
        }
        return push_admitted(value);
    }

    // push_impl() past the epoch check (see above).
    push_status push_admitted(T& value) {
        std::uint32_t mine = claim_cached(producer_, std::memory_order_seq_cst);
        if (mine == no_buffer) {
            return push_overflow(value); // another producer is inside push at this instant
        }
        push_status status;
        if constexpr (std::is_nothrow_move_constructible_v<T>) {
            status = publish(mine, producer_.counts, value, nullptr);
        } else {
            try {
                status = publish(mine, producer_.counts, value, nullptr);
            } catch (...) {
                release_cached(producer_, mine); // publish left `mine` as it was: empty
                throw;
            }
        }
        release_cached(producer_, mine);
        waiters_.notify_one_after_seq_cst();
        return status;
    }

    // A second producer, while the first holds the cached buffer: the producers' spare, under
    // their overflow mutex (which no consumer takes). Out of line so that push_impl's common path
    // stays short.
    FRAMEPIPE_NOINLINE push_status push_overflow(T& value) {
        // Declared before the lock, so destroyed after it is released: an evicted value is moved
        // here and destroyed outside our lock (a frame returning to its pool must not run under
        // it), when T's move cannot throw; otherwise it is destroyed in place, under the lock.
        std::optional<T> victim;
        push_status status;
        {
            const std::lock_guard<std::mutex> lock(producer_overflow_.mu);
            const announce<std::uint32_t> busy(producer_overflow_.publishers);
            std::uint32_t mine = producer_overflow_.spare;
            // May throw: then `mine` is unchanged, the spare stays where it was.
            status = publish(mine, producer_overflow_.counts, value, &victim);
            producer_overflow_.spare = mine;
        }
        waiters_.notify_one_after_seq_cst();
        return status;
    }

    // The push itself, by a thread that owns the empty buffer `mine` and the counters `n` and
    // has announced itself (see push_impl). On return `mine` is the buffer it got back from
    // middle_, empty. Unread value replaced: destroyed here (or moved into *victim, if given and
    // T's move cannot throw). Throws what T's move throws, before anything is published or
    // counted, with `mine` unchanged.
    push_status publish(std::uint32_t& mine, counters& n, T& value, std::optional<T>* victim) {
        if (closed_.load(std::memory_order_seq_cst)) {
            bump(n.after_close);
            bump(n.pushed);
            return push_status::closed;
        }
        // May throw: nothing published, nothing counted.
        ::new (static_cast<void*>(cells_[mine].bytes)) T(std::move(value));
        // seq_cst: the release half publishes the value to whoever takes this buffer; the
        // acquire half makes ours the buffer we get back (and the consumer's reset of it);
        // seq_cst: it is the state change notify_one_after_seq_cst() publishes (event_count).
        const std::uint32_t old = middle_.exchange(mine | fresh_bit, std::memory_order_seq_cst);
        mine = old & index_mask; // now ours: empty, or holding the value we replaced
        bump(n.pushed);
        if ((old & fresh_bit) == 0) {
            return push_status::ok;
        }
        wait_unpinned(mine);
        if constexpr (std::is_nothrow_move_constructible_v<T>) {
            if (victim != nullptr) {
                victim->emplace(std::move(*value_at(mine)));
            }
        }
        destroy(mine);
        bump(n.evicted);
        return push_status::evicted;
    }

    // Puts the value in buffer `held` back into the slot after a pop's move threw, if nothing
    // happened to the slot since the pop took it (middle_ still holds `installed`, the word the
    // pop left there). Otherwise a push (or another pop) came in between: the held value is
    // dropped as a replaced one, counted as evicted. Pushes and pops pass the same few buffers
    // around, so middle_ can name this pop's empty buffer again after others went through; the
    // pop's tag in `installed` (see pop_tag_shift) tells that word from this one, unless 2^28
    // pops whose move may throw started in between. Returns the empty buffer the caller owns.
    std::uint32_t put_back(std::uint32_t held, std::uint32_t installed, counters& n) noexcept {
        std::uint32_t expected = installed;
        // seq_cst: the value reappears, and waiters parked meanwhile must see it (the notify).
        if (middle_.compare_exchange_strong(expected, held | fresh_bit, std::memory_order_seq_cst,
                                            std::memory_order_relaxed)) {
            waiters_.notify_one_after_seq_cst();
            return installed & index_mask;
        }
        destroy(held);
        bump(n.evicted);
        return held;
    }

    // Closed, and nothing more can arrive: no push is in flight, no value is there, and (for a
    // T whose move may throw) no pop can still put one back. seq_cst loads: see push_impl. Only
    // called once closed_ has been seen.
    [[nodiscard]] bool drained() const noexcept {
        const bool empty = producer_.cached.load(std::memory_order_seq_cst) != no_buffer &&
                           producer_overflow_.publishers.load(std::memory_order_seq_cst) == 0 &&
                           (middle_.load(std::memory_order_seq_cst) & fresh_bit) == 0;
        if constexpr (nothrow_move) {
            return empty;
        } else {
            // A pop counts itself in `restoring` (in flight, and started) before its exchange
            // takes the value, and stops counting in flight after its put_back. Read after the
            // empty slot above, no pop in flight means that each pop that had started had ended:
            // delivered, or put back before it stopped counting (the acquire makes the put_back
            // visible), which the second look at middle_ then sees, unless a pop took it again.
            // That pop started after the read (its start precedes its exchange, which precedes
            // the second look), so the started count differs at the third read. Equal counts and
            // an empty second look: no value can come back.
            FRAMEPIPE_DETAIL_LATEST_DRAINED_HOOK(1);
            const std::uint64_t before = consumer_.restoring.load(std::memory_order_seq_cst);
            FRAMEPIPE_DETAIL_LATEST_DRAINED_HOOK(2);
            return empty && (before & restore_in_flight) == 0 &&
                   (middle_.load(std::memory_order_seq_cst) & fresh_bit) == 0 &&
                   consumer_.restoring.load(std::memory_order_seq_cst) == before;
        }
    }

    // What one attempt to take found. `closing`: closed, but a push is still in flight, or a
    // pop that may put its value back, so a value may yet appear (a few nanoseconds, unless
    // that thread is descheduled).
    enum class took { value, empty, closing, closed };

    took take(std::optional<T>& out) {
        // Relaxed: an empty slot is reported without touching anything else; the value itself
        // is acquired by the exchange in take_from.
        if ((middle_.load(std::memory_order_relaxed) & fresh_bit) == 0) {
            if (!closed_.load(std::memory_order_seq_cst)) {
                return took::empty;
            }
            return drained() ? took::closed : took::closing;
        }
        // Acquire: only exclusivity is at stake on this side (no handshake with close()).
        std::uint32_t mine = claim_cached(consumer_, std::memory_order_acquire);
        if (mine == no_buffer) {
            return take_overflow(out); // another consumer is inside a pop at this instant
        }
        took r;
        if constexpr (std::is_nothrow_move_constructible_v<T>) {
            r = take_from(mine, consumer_.counts, out);
        } else {
            try {
                r = take_from(mine, consumer_.counts, out);
            } catch (...) {
                release_cached(consumer_, mine); // take_from left an empty buffer in `mine`
                throw;
            }
        }
        release_cached(consumer_, mine);
        return r;
    }

    // A second consumer, while the first holds the cached buffer: the consumers' spare, under
    // their overflow mutex (which no producer takes; an expired value destroyed here holds up
    // only a third consumer). Out of line so that take's common path stays short.
    FRAMEPIPE_NOINLINE took take_overflow(std::optional<T>& out) {
        const std::lock_guard<std::mutex> lock(consumer_overflow_.mu);
        std::uint32_t mine = consumer_overflow_.spare;
        took r;
        try {
            r = take_from(mine, consumer_overflow_.counts, out);
        } catch (...) {
            consumer_overflow_.spare = mine; // take_from left an empty buffer in `mine`
            throw;
        }
        consumer_overflow_.spare = mine;
        return r;
    }

    // The take itself, by a thread that owns the empty buffer `mine` and the counters `n`. On
    // return (or throw) `mine` is again an empty buffer the caller owns. Throws what T's move
    // throws; the value is then put back (see put_back).
    took take_from(std::uint32_t& mine, counters& n, std::optional<T>& out) {
        if constexpr (nothrow_move) {
            return take_value(mine, n, out);
        } else {
            // Counted from before the exchange until after a put_back: a close()d slot is not
            // drained while a value may come back into it (see drained()).
            const announce<std::uint64_t, restore_started> taking(consumer_.restoring);
            constexpr std::uint32_t tag_bits = (std::uint32_t{1} << (32 - pop_tag_shift)) - 1;
            const auto tag = static_cast<std::uint32_t>(taking.before() >> 32) & tag_bits;
            return take_value(mine, n, out, tag << pop_tag_shift);
        }
    }

    // `tag`: 0, or for a T whose move may throw, this pop's tag (see pop_tag_shift).
    took take_value(std::uint32_t& mine, counters& n, std::optional<T>& out,
                    std::uint32_t tag = 0) {
        const std::uint32_t installed = mine | tag; // our empty buffer, not fresh
        // seq_cst: acquire makes the producer's value in the buffer we take visible; release
        // hands whoever gets our empty buffer next everything we did to it; and the exchange must
        // precede our load of the buffer's pin in the single total order (see peek()). On x86
        // this is the same instruction as acq_rel.
        const std::uint32_t old = middle_.exchange(installed, std::memory_order_seq_cst);
        mine = old & index_mask; // ours now: empty, or holding the value we took
        if ((old & fresh_bit) == 0) {
            return took::empty; // another consumer was faster; the caller looks again
        }
        const std::uint32_t held = mine;
        wait_unpinned(held);
        T* const v = value_at(held);
        if (is_expired(*v)) {
            destroy(held);
            bump(n.expired);
            return took::empty;
        }
        try {
            out.emplace(std::move(*v));
        } catch (...) {
            mine = put_back(held, installed, n);
            throw;
        }
        destroy(held);
        bump(n.popped);
        return took::value;
    }

    [[nodiscard]] bool ready() const noexcept {
        // seq_cst: the waiter's re-check (event_count::notify_one_after_seq_cst()).
        return (middle_.load(std::memory_order_seq_cst) & fresh_bit) != 0 ||
               closed_.load(std::memory_order_seq_cst);
    }

    std::optional<T> pop_impl(const std::stop_token* stop,
                              const std::optional<clock::time_point>& deadline, bool wait) {
        std::optional<T> out;
        if (stop != nullptr && stop->stop_requested()) {
            return out;
        }
        unsigned closing_steps = 0; // yield_or_sleep() steps while a push finishes after close()
        for (;;) {
            const took r = take(out);
            if (r == took::value || r == took::closed || !wait) {
                return out;
            }
            if (r == took::closing) {
                // A push that began before close() is finishing, or a pop whose move may throw
                // may still put its value back: the value (if any) appears within nanoseconds.
                // Yield (or sleep) rather than park: neither sends a wake-up here.
                if ((stop != nullptr && stop->stop_requested()) ||
                    (deadline && clock::now() >= *deadline)) {
                    return out;
                }
                FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
                detail::yield_or_sleep(closing_steps++);
                continue;
            }
            // Empty (nothing there, another consumer was faster, or the value had expired). The
            // stop token and the deadline are honoured here, since the wait returns at once
            // while a value is there, without looking at them: a run of stale arrivals would
            // otherwise keep a stopped or timed-out pop going.
            if ((stop != nullptr && stop->stop_requested()) ||
                (deadline && clock::now() >= *deadline)) {
                return out;
            }
            FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
            if (waiters_.wait(stop, deadline, [this] { return ready(); }) !=
                detail::wait_end::ready) {
                return out;
            }
        }
    }

    // Five buffers: the one in the slot, the producers' and the consumers' cached ones, and
    // the producers' and the consumers' overflow spares.
    buffer cells_[5];
    // The hand-off word, alone on its line: producers and consumers contend on it and on nothing
    // else.
    alignas(detail::cache_line) std::atomic<std::uint32_t> middle_{0};
    side producer_{1};
    side consumer_{2};
    overflow_side producer_overflow_{3};
    overflow_side consumer_overflow_{4};
    mutable pin_counts pins_; // peek() pins in a const member
    // Written once, by close(); read by every push: alone on its line so that it stays cached.
    alignas(detail::cache_line) std::atomic<bool> closed_{false};
    // Consumers wait here (see detail::event_count).
    detail::event_count waiters_;
    const std::optional<std::chrono::nanoseconds> max_age_{};
    const bool drop_older_epochs_ = false;
    detail::epoch_gate epochs_;              // drop_older_epochs
    std::atomic<std::uint64_t> refused_{0}; // pushes refused by drop_older_epochs
};

// How a pipeline shows a latest_slot (see channel_traits).
template <class T>
struct channel_traits<latest_slot<T>> {
    static constexpr std::string_view kind = "latest_slot";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
};

} // namespace framepipe
