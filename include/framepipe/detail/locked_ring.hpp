// framepipe/detail/locked_ring.hpp - ring<T>'s implementation for a T whose move constructor may
// throw (cv::Mat's, for one): one mutex guards the items.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/detail/config.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/ring_common.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/stamped.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <utility>

namespace framepipe::detail {

// A lock-free ring cannot undo a half-done move; under a lock every exception guarantee
// documented on ring<T> holds. One mutex guards the items. Waits happen outside it, on the same
// event counts as the lock-free rings use, with the predicates reading atomic mirrors of the
// count and the closed flag (written under the mutex); whoever wins the race for an item or a
// slot re-checks under the mutex.
//
// Wake-ups are never lost or absorbed: every pop that frees k slots wakes k producers (all, when
// k > 1), a woken thread whose move throws passes its wake-up on before the exception leaves, and
// a woken thread never leaves on its stop token before it has looked under the lock (a pop takes
// the item it was woken for; a push leaves only if it finds the ring full again; see pop()).
template <class T>
class locked_ring {
public:
    explicit locked_ring(const ring_options& options)
        : capacity_(options.capacity), policy_(options.policy),
          block_timeout_(options.block_timeout), max_age_(options.max_age),
          slots_(std::make_unique<std::optional<T>[]>(capacity_)) {}

    // Stores `item`, waiting for room under overflow::block as `w` allows. Throws what T's move
    // constructor throws (see ring::push for the guarantee).
    push_status push(T& item, const push_wait& w) {
        // Declared first, destroyed last: an evicted item's destructor (a frame returning to its
        // pool) runs after every lock below is released.
        std::optional<T> victim;
        block_wait blocked(w, block_timeout_);
        bool timed_out = false;
        for (;;) {
            push_status status = push_status::ok;
            bool must_wait = false;
            try {
                const spin_then_lock_guard lock(mu_); // see spin_then_lock_guard
                must_wait = policy_ == overflow::block && !timed_out && !closed_ &&
                            count_ == capacity_;
                if (!must_wait) {
                    status = push_now_locked(item, victim);
                }
            } catch (...) {
                // The room this push found (or made by evicting) stays free: a producer parked
                // beside it must hear about it.
                not_full_.notify_one();
                throw;
            }
            if (!must_wait) {
                if (accepted(status)) {
                    not_empty_.notify_one();
                }
                return status;
            }
            // overflow::block and full: wait outside the lock.
            auto next = blocked.before();
            if (next == block_wait::next::retry) {
                FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
                next = blocked.after(not_full_.wait(blocked.stop(), blocked.deadline(),
                                                    [this] { return has_room(); }));
            }
            switch (next) {
            case block_wait::next::retry:
                // The wait returned ready: look again under the lock, whatever the stop token
                // says now. The stop ends the push only when the ring is found full again
                // (before()), so a push never leaves with the wake-up for a free slot.
                FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK();
                break;
            case block_wait::next::evict: timed_out = true; break;
            case block_wait::next::reject: return count_refusal(push_status::rejected);
            case block_wait::next::cancel: return count_refusal(push_status::cancelled);
            }
        }
    }

    // Counts a push refused before it reached the ring (drop_older_epochs).
    push_status reject() { return count_refusal(push_status::rejected); }

    // Takes the oldest fresh item, waiting as the arguments say. Throws what T's move constructor
    // throws; the item then stays at the front (strong), and the wake-up that brought this
    // consumer here is passed on.
    // The stop token is checked first (a stopped consumer takes nothing), then only where the
    // ring was found empty and open, and by the wait. Never between a wait that returned ready
    // and the look that follows it: that wait may have absorbed the notify_one of the push it
    // saw, so a consumer leaving there would strand another consumer parked beside the item. It
    // takes the item instead (its stop raced with the push).
    std::optional<T> pop(const std::stop_token* stop,
                         const std::optional<clock::time_point>& deadline, bool wait) {
        if (stop != nullptr && stop->stop_requested()) {
            return std::nullopt;
        }
        for (;;) {
            {
                // Declared before the lock: the producers are woken after it is released.
                wake_producers freed{*this};
                const spin_then_lock_guard lock(mu_); // see spin_then_lock_guard
                freed.count = drop_expired_locked();
                if (count_ > 0) {
                    ++freed.count;
                    try {
                        // A prvalue: built straight into the caller's result (guaranteed copy
                        // elision), so no move of T follows the commit.
                        return take_front_locked();
                    } catch (...) {
                        --freed.count; // the item stayed
                        not_empty_.notify_one();
                        throw;
                    }
                }
                if (closed_ || !wait) {
                    return std::nullopt;
                }
            }
            // Empty and open: an item this consumer was woken for has gone to another, or had
            // expired, so leaving here strands nobody (a later push notifies the waiters still
            // parked). The deadline too: the wait returns at once while an item is there,
            // without looking at it, so a run of stale arrivals would keep a pop_for going.
            if (stop != nullptr && stop->stop_requested()) {
                return std::nullopt;
            }
            if (deadline && clock::now() >= *deadline) {
                return std::nullopt;
            }
            FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
            // Wait outside the lock (a wait that ends on stop or timeout passes on a wake-up it
            // may have absorbed), then look again.
            if (not_empty_.wait(stop, deadline, [this] { return has_items(); }) !=
                wait_end::ready) {
                return std::nullopt;
            }
            FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK();
        }
    }

    [[nodiscard]] std::optional<T> peek() const {
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
            closed_flag_.store(true, std::memory_order_relaxed); // the notifies publish it
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

    // The event count consumers wait on for an item, for a selector's listener (select.hpp).
    [[nodiscard]] event_count& readable_event() noexcept { return not_empty_; }

private:
    // Wakes the producers parked for room, once per slot freed (all of them when more than one
    // slot was freed), when it goes out of scope.
    struct wake_producers {
        locked_ring& r;
        std::size_t count = 0;
        ~wake_producers() {
            if (count > 1) {
                r.not_full_.notify_all();
            } else if (count == 1) {
                r.not_full_.notify_one();
            }
        }
    };

    [[nodiscard]] std::size_t next(std::size_t i) const noexcept {
        return i + 1 == capacity_ ? 0 : i + 1;
    }

    [[nodiscard]] bool is_expired(const T& item, clock::time_point now) const noexcept {
        return detail::older_than(item, max_age_, now);
    }

    // The waiters' predicates, on the mirrors (relaxed: the notify after each change publishes
    // it; see event_count).
    [[nodiscard]] bool has_room() const noexcept {
        return closed_flag_.load(std::memory_order_relaxed) ||
               size_.load(std::memory_order_relaxed) < capacity_;
    }
    [[nodiscard]] bool has_items() const noexcept {
        return closed_flag_.load(std::memory_order_relaxed) ||
               size_.load(std::memory_order_relaxed) > 0;
    }

    // --- All *_locked functions require mu_ to be held. ---

    void publish_size_locked() noexcept { size_.store(count_, std::memory_order_relaxed); }

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
        publish_size_locked();
    }

    // Moves the oldest item into `victim` and counts it as evicted. Strong guarantee.
    void evict_oldest_locked(std::optional<T>& victim) {
        victim.emplace(std::move(*slots_[head_]));
        slots_[head_].reset();
        head_ = next(head_);
        --count_;
        ++stats_.evicted;
        ++stats_.dropped;
        publish_size_locked();
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
        // drop_oldest, or block whose wait has ended in the timeout. If storing throws, the
        // oldest has already gone (counted): basic guarantee, see ring::push.
        evict_oldest_locked(victim);
        store_locked(item);
        return push_status::evicted;
    }

    // Counts a push that gave up waiting for room (rejected: the caller's deadline, or
    // try_push; cancelled: its stop token).
    push_status count_refusal(push_status status) {
        const std::lock_guard<std::mutex> lock(mu_);
        ++stats_.pushed;
        ++stats_.dropped;
        ++(status == push_status::cancelled ? stats_.cancelled : stats_.rejected);
        return status;
    }

    // Discards the expired items at the front; returns how many.
    std::size_t drop_expired_locked() noexcept {
        if (!max_age_) {
            return 0;
        }
        const auto now = clock::now();
        std::size_t dropped = 0;
        while (count_ > 0 && is_expired(*slots_[head_], now)) {
            slots_[head_].reset();
            head_ = next(head_);
            --count_;
            ++stats_.expired;
            ++stats_.dropped;
            ++dropped;
        }
        if (dropped != 0) {
            publish_size_locked();
        }
        return dropped;
    }

    // Moves the front item into the result. The pop is committed (slot freed, counted) only once
    // the result exists: if T's move throws, the item stays at the front.
    std::optional<T> take_front_locked() {
        struct commit {
            locked_ring& r;
            const int exceptions = std::uncaught_exceptions();
            ~commit() {
                if (std::uncaught_exceptions() == exceptions) {
                    r.slots_[r.head_].reset();
                    r.head_ = r.next(r.head_);
                    --r.count_;
                    ++r.stats_.popped;
                    r.publish_size_locked();
                }
            }
        } c{*this};
        return std::optional<T>(std::in_place, std::move(*slots_[head_]));
    }

    const std::size_t capacity_;
    const overflow policy_;
    const std::optional<std::chrono::nanoseconds> block_timeout_;
    const std::optional<std::chrono::nanoseconds> max_age_;

    mutable std::mutex mu_;
    // Guarded by mu_.
    std::unique_ptr<std::optional<T>[]> slots_;
    std::size_t head_ = 0;  // index of the oldest item
    std::size_t count_ = 0; // items buffered
    bool closed_ = false;
    channel_stats stats_{};

    // Lock-free mirrors of count_ and closed_ for size(), closed() and the waiters' predicates.
    std::atomic<std::size_t> size_{0};
    std::atomic<bool> closed_flag_{false};
    alignas(cache_line) event_count not_empty_; // consumers wait here
    alignas(cache_line) event_count not_full_;  // producers wait here (overflow::block)
};

} // namespace framepipe::detail
