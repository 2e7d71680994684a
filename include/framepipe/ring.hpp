// framepipe/ring.hpp - a bounded FIFO channel with a drop policy.
//
//     framepipe::ring<Frame> q(4);                       // drop_oldest: freshness first
//     q.push(grab());                                    // never waits; evicts when full
//     while (auto f = q.pop()) process(*f);              // waits; ends once closed and drained
//
// Any number of producer and consumer threads may share one ring. All operations on the items
// take one internal mutex for a few instructions; a thread that must wait (pop on an empty ring,
// push under overflow::block on a full one) parks on a condition variable and uses no CPU.
// size(), capacity(), closed() and policy() read atomics and never lock.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/stamped.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace framepipe {

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

template <class T>
class ring {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::ring<T>: T must be an object type (not a reference or array)");
    static_assert(std::is_move_constructible_v<T>,
                  "framepipe::ring<T>: T must be move-constructible");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "framepipe::ring<T>: T's destructor must not throw");

public:
    using value_type = T;
    using clock = std::chrono::steady_clock;

    // A ring holding at most `capacity` items with the given overflow policy. overflow::block
    // here waits for room as long as it takes (see the next constructor for a bound).
    // Throws std::invalid_argument("capacity: ...") when capacity is 0; std::bad_alloc.
    explicit ring(std::size_t capacity, overflow policy = overflow::drop_oldest)
        : ring(ring_options{.capacity = capacity, .policy = policy}) {}

    // "Block, then drop": a full ring makes push wait up to `block_timeout` for room, then evicts
    // the oldest item and accepts the new one (push returns evicted).
    // Throws std::invalid_argument naming `policy` unless it is overflow::block, naming
    // `block_timeout` when it is negative, naming `capacity` when it is 0.
    ring(std::size_t capacity, overflow policy, std::chrono::nanoseconds block_timeout)
        : ring(ring_options{.capacity = capacity, .policy = policy, .block_timeout = block_timeout}) {}

    // The general form. Throws std::invalid_argument naming the offending field: capacity 0;
    // a block_timeout with a policy other than block; a negative block_timeout or max_age; a
    // max_age when T is not `timestamped`.
    explicit ring(const ring_options& options)
        : capacity_(options.capacity), policy_(options.policy),
          block_timeout_(options.block_timeout), max_age_(options.max_age) {
        if (capacity_ == 0) {
            throw std::invalid_argument("capacity: must be at least 1");
        }
        if (block_timeout_) {
            if (policy_ != overflow::block) {
                throw std::invalid_argument("policy: a block_timeout needs overflow::block");
            }
            detail::require_non_negative(*block_timeout_, "block_timeout");
        }
        if (max_age_) {
            detail::require_non_negative(*max_age_, "max_age");
            if constexpr (!timestamped<T>) {
                throw std::invalid_argument(
                    "max_age: T carries no capture time (specialise framepipe::timestamp_traits)");
            }
        }
        slots_ = std::make_unique<std::optional<T>[]>(capacity_);
    }

    // Shared by threads by reference; neither copyable nor movable.
    ring(const ring&) = delete;
    ring& operator=(const ring&) = delete;

    // Destroys the buffered items. No thread may be inside a call on this ring.
    ~ring() = default;

    // Offers `item` to the ring. Any thread.
    // - Room: stores it, returns ok, and wakes one waiting consumer.
    // - Full, drop_oldest: evicts the oldest item, stores this one, returns evicted. Never waits.
    // - Full, drop_newest: refuses this one, returns rejected. Never waits.
    // - Full, block: waits for room; with a block_timeout, after the timeout evicts the oldest
    //   and returns evicted. Ends with closed if the ring is closed meanwhile.
    // - Closed: returns closed and stores nothing.
    // Every call is counted in stats(); dropped items are counted under their reason.
    // Exceptions: what T's move constructor throws. The new item is then not stored and not
    // counted. On the eviction path, if moving the oldest item out throws, nothing has changed;
    // if storing the new item throws, the oldest has already been removed and counted as
    // evicted (basic guarantee; the counts stay exact either way). The evicted item is
    // destroyed after the lock is released.
    push_status push(T item) { return push_impl(item, nullptr); }

    // As push(T), but a push that is waiting for room (overflow::block) gives up when `stop` is
    // requested, returns rejected, and is counted as cancelled. A push that need not wait does
    // not look at `stop`.
    push_status push(T item, std::stop_token stop) { return push_impl(item, &stop); }

    // Takes the oldest item if there is one. Any thread. Never waits for an item (it takes the
    // internal lock for a few instructions). Returns nullopt when the ring is empty, or when
    // every buffered item has expired (they are discarded and counted).
    // Exceptions: what T's move constructor throws; the item then stays in the ring (strong).
    [[nodiscard]] std::optional<T> try_pop() { return pop_impl(nullptr, std::nullopt, false); }

    // Takes the oldest item, waiting for one. Any thread. Blocks (parked, no CPU) while the ring
    // is empty and open. Returns nullopt only once the ring is closed and drained.
    // Exceptions: as try_pop().
    [[nodiscard]] std::optional<T> pop() { return pop_impl(nullptr, std::nullopt, true); }

    // As pop(), but returns nullopt as soon as `stop` is requested: the token is checked first,
    // so a stopped consumer leaves even when items remain (they stay in the ring).
    [[nodiscard]] std::optional<T> pop(std::stop_token stop) {
        return pop_impl(&stop, std::nullopt, true);
    }

    // As pop(), but waits at most `timeout`; nullopt when it runs out, or closed and drained.
    // Throws std::invalid_argument("timeout: ...") when timeout is negative.
    [[nodiscard]] std::optional<T> pop_for(std::chrono::nanoseconds timeout) {
        detail::require_non_negative(timeout, "timeout");
        return pop_impl(nullptr, detail::deadline_after(timeout), true);
    }

    // As pop_for(), also ending (nullopt) when `stop` is requested.
    [[nodiscard]] std::optional<T> pop_for(std::chrono::nanoseconds timeout, std::stop_token stop) {
        detail::require_non_negative(timeout, "timeout");
        return pop_impl(&stop, detail::deadline_after(timeout), true);
    }

    // A copy of the item the next pop would return, leaving it in place (items past max_age are
    // skipped, not removed). Any thread; never waits. Needs a copyable T.
    // Exceptions: what T's copy constructor throws; the ring is unchanged.
    [[nodiscard]] std::optional<T> peek() const
        requires std::is_copy_constructible_v<T>
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

    // Closes the ring: later pushes return closed; consumers drain what is buffered, then get
    // nullopt. Wakes every waiting producer and consumer. Any thread; idempotent; never waits
    // beyond the internal lock.
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

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept {
        return closed_flag_.load(std::memory_order_relaxed);
    }

    // Items buffered now (may be stale by the time the caller looks). Any thread; wait-free.
    // Counts items that have expired but not yet been discarded by a pop.
    [[nodiscard]] std::size_t size() const noexcept {
        return size_.load(std::memory_order_relaxed);
    }

    // The most items the ring ever holds. Any thread; wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    // The overflow policy. Any thread; wait-free.
    [[nodiscard]] overflow policy() const noexcept { return policy_; }

    // A consistent snapshot of the counters (see channel_stats for the identities). Any thread;
    // takes the internal lock briefly.
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
        if constexpr (timestamped<T>) {
            if (max_age_) {
                const auto captured = timestamp_traits<T>::capture_time(item);
                return captured != clock::time_point::max() && now - captured > *max_age_;
            }
        }
        (void)item;
        (void)now;
        return false;
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
            ring* self;
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

} // namespace framepipe
