// framepipe/sliding_window.hpp - hands out snapshots of the last N items.
//
//     framepipe::sliding_window<Pose> poses(30, 5);   // last 30 poses, a new window every 5
//     estimator thread:  poses.push(estimate(frame)); // never waits
//     classifier thread: while (auto w = poses.pop()) classify(*w);   // w->size() == 30
//
// A window is ready once `size` items have been pushed and at least `stride` items have arrived
// since the previous ready window, so ready windows end at sequence numbers size-1,
// size-1+stride, size-1+2*stride, ... A consumer slower than that gets only the newest ready
// window; each window overtaken before anyone took it is counted as dropped. stride == size
// gives tumbling (non-overlapping) windows.
//
// Epochs: for an epoched T (epoch_traits; a live source's stamped frames carry one), no window
// mixes items from two connections: a newer epoch restarts the window, an older one is refused.
//
// Counters: a sliding_window is a channel of windows. stats() returns the channel_stats every
// channel returns, counting windows: pushed = windows that became ready, popped = windows taken,
// evicted = ready windows overtaken by a newer one before anyone took them. item_stats() counts
// the items pushed in.
//
// Thread safety: any number of producers and consumers. push never waits; pops wait like
// ring<T>'s (a few microseconds of spinning, then parked). Memory is bounded: the window keeps
// size + stride items, plus whatever snapshots the consumers still hold.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/recycler.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/stamped.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace framepipe {

template <class T>
class sliding_window;

namespace detail {
// A window's items: their storage comes from the sliding_window's recycler and goes back to it.
template <class T>
using window_items = std::vector<T, recycling_allocator<T>>;
} // namespace detail

// A read-only snapshot of `size` consecutive items, oldest first. Cheap to copy (the items are
// shared between copies, never duplicated) and safe to read from any thread: nothing changes it
// once it has been handed out. A moved-from window is empty: size() 0, begin() == end(); its
// first_seq() and last_seq() are unspecified, and front(), back() and operator[] must not be
// called (as on an empty std::vector). Assigning a window to it makes it usable again.
template <class T>
class window {
public:
    using value_type = T;
    using const_iterator = typename detail::window_items<T>::const_iterator;
    // const T&; a bool by value for T = bool, whose items are a std::vector<bool>'s bits.
    using const_reference = typename detail::window_items<T>::const_reference;

    // Number of items: the sliding_window's size, or 0 once moved from. Never throws.
    [[nodiscard]] std::size_t size() const noexcept { return items_ ? items_->size() : 0; }

    // The i-th oldest item, 0 <= i < size(); unchecked, like std::vector::operator[].
    [[nodiscard]] const_reference operator[](std::size_t i) const noexcept {
        return (*items_)[i];
    }

    // The oldest and the newest item; the window must not be empty.
    [[nodiscard]] const_reference front() const noexcept { return items_->front(); }
    [[nodiscard]] const_reference back() const noexcept { return items_->back(); }

    // The items, oldest first (random access). begin() == end() once moved from.
    [[nodiscard]] const_iterator begin() const noexcept {
        return items_ ? items_->begin() : const_iterator();
    }
    [[nodiscard]] const_iterator end() const noexcept {
        return items_ ? items_->end() : const_iterator();
    }

    // Sequence numbers of the oldest and the newest item, counted from 0 at the first push.
    [[nodiscard]] std::uint64_t first_seq() const noexcept { return first_seq_; }
    [[nodiscard]] std::uint64_t last_seq() const noexcept { return first_seq_ + size() - 1; }

private:
    friend class sliding_window<T>;
    window(std::shared_ptr<const detail::window_items<T>> items, std::uint64_t first_seq) noexcept
        : items_(std::move(items)), first_seq_(first_seq) {}

    std::shared_ptr<const detail::window_items<T>> items_;
    std::uint64_t first_seq_;
};

// A window of timestamped items is timestamped by its newest item: its age is how old the
// freshest data in it is. An empty (moved-from) window has time_point::max(), like a null
// pointer: never expired.
template <class T>
    requires timestamped<T>
struct timestamp_traits<window<T>> {
    static std::chrono::steady_clock::time_point capture_time(const window<T>& w) noexcept {
        return w.size() == 0 ? std::chrono::steady_clock::time_point::max()
                             : timestamp_traits<T>::capture_time(w.back());
    }
};

// The items a sliding_window took in (its windows are counted by stats(): see the file comment).
// Every push is counted in exactly one of pushed, after_close and stale_epoch.
struct window_item_stats {
    std::uint64_t pushed = 0;      // items accepted by push()
    std::uint64_t after_close = 0; // items refused after close()
    std::uint64_t stale_epoch = 0; // items refused because they came from an older epoch
    std::uint64_t restarts = 0;    // new epochs that restarted the window (items dropped)
};

template <class T>
class sliding_window {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::sliding_window<T>: T must be an object type");
    static_assert(std::is_move_constructible_v<T>,
                  "framepipe::sliding_window<T>: T must be move-constructible");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "framepipe::sliding_window<T>: T's destructor must not throw");

public:
    using value_type = T;
    using clock = std::chrono::steady_clock;

    // Windows of the last `size` items, one every `stride` items.
    // Throws std::invalid_argument naming `size` when it is 0 or so large that an array of
    // size + stride items overflows (more than PTRDIFF_MAX bytes), naming `stride` when it is 0
    // or greater than size, or when windows overlap (stride < size) and T cannot be copied (an
    // item that belongs to two windows has to be in both). std::bad_alloc. A T that claims a copy
    // constructor it cannot instantiate (std::vector<std::unique_ptr<U>>) does not compile even
    // for tumbling windows: wrap it in a move-only struct.
    explicit sliding_window(std::size_t size, std::size_t stride = 1)
        : size_(size), stride_(stride), capacity_(capacity_of(size, stride)) {
        // size + stride slots: the pending window needs at most size + stride - 1 of them, and
        // the spare one lets a push store the new item before the oldest is let go, so a
        // throwing move leaves the window intact.
        history_ = std::make_unique<std::optional<T>[]>(capacity_);
    }

    sliding_window(const sliding_window&) = delete;
    sliding_window& operator=(const sliding_window&) = delete;

    // Appends `item`. Any thread; never waits for a consumer (takes the window's lock briefly).
    // Returns ok; evicted when this push made a window ready while the previous ready window was
    // still untaken (that window is counted as evicted); closed when the window is closed
    // (nothing stored, counted in after_close). Wakes one waiting consumer when a window becomes
    // ready. For an epoched T (a live source's stamped frames): an item from a newer epoch
    // restarts the window (the items before the gap, and a window still waiting, are dropped),
    // and an item from an older epoch is refused (rejected, counted in stale_epoch).
    // Exceptions: what T's move constructor throws; nothing changes (strong).
    push_status push(T item) {
        bool ready = false;
        const push_status status = push_locked(item, ready);
        if (ready) {
            // After mu_ is released: the consumer woken here goes straight for mu_, and a wake-up
            // system call made while holding it would park that consumer on the mutex (and a
            // parked consumer makes the next push's wake-up a system call again). The event
            // count's RMW still publishes the flag stored under the lock.
            not_empty_.notify_one();
        }
        return status;
    }

    // Same as push(T): pushing never waits, so the token is never consulted.
    push_status push(T item, std::stop_token /*stop*/) { return push(std::move(item)); }

    // Same as push(T), which never waits: the name for code written against any channel.
    [[nodiscard]] push_status try_push(T item) { return push(std::move(item)); }

    // Takes the newest ready window if there is one. Any thread; never waits (brief lock).
    // Exceptions: std::bad_alloc, or what T's copy constructor throws; the window stays
    // available (strong). Tumbling windows (stride == size) move their items out when T's move
    // cannot throw. A move-only T whose move constructor throws gives the basic guarantee: the
    // window being taken is dropped (counted as evicted) and the exception propagates.
    [[nodiscard]] std::optional<window<T>> try_pop() { return pop_impl(nullptr, detail::no_deadline, false); }

    // Takes the newest ready window, waiting for one. Any thread; blocks (spins briefly, then
    // parks). nullopt only once closed and the last ready window has been taken.
    // Exceptions: as try_pop().
    [[nodiscard]] std::optional<window<T>> pop() { return pop_impl(nullptr, detail::no_deadline, true); }

    // As pop(), but nullopt as soon as `stop` is requested (checked first).
    [[nodiscard]] std::optional<window<T>> pop(std::stop_token stop) {
        return pop_impl(&stop, detail::no_deadline, true);
    }

    // As pop(), waiting at most `timeout`. Any std::chrono::duration; one beyond nanoseconds' range
    // (say seconds::max()) means no limit. Throws std::invalid_argument naming timeout when it is
    // negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<window<T>> pop_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return pop_impl(nullptr, detail::deadline_after(ns), true);
    }

    // As pop_for(), also ending when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<window<T>> pop_for(std::chrono::duration<Rep, Period> timeout,
                                                   std::stop_token stop) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return pop_impl(&stop, detail::deadline_after(ns), true);
    }

    // Closes: later pushes return closed; consumers take the last ready window, then get
    // nullopt. Wakes every waiting consumer. Any thread; idempotent; brief lock. Never throws in
    // practice (std::mutex::lock).
    void close() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            closed_ = true;
            closed_flag_.store(true, std::memory_order_relaxed); // also read by waiting pops
        }
        not_empty_.notify_all();
    }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return closed_flag_.load(std::memory_order_relaxed); }

    // Ready windows waiting to be taken: 0 or 1 (a hint). Any thread; wait-free.
    [[nodiscard]] std::size_t size() const noexcept {
        return pending_flag_.load(std::memory_order_relaxed) ? 1 : 0;
    }

    // Items per window. Any thread; wait-free.
    [[nodiscard]] std::size_t window_size() const noexcept { return size_; }

    // Items between the ends of consecutive ready windows. Any thread; wait-free.
    [[nodiscard]] std::size_t stride() const noexcept { return stride_; }

    // Ready windows the channel holds at most: 1 (a slower consumer gets the newest). The items
    // per window are window_size(). Any thread; wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return 1; }

    // A consistent snapshot of the counters, in windows (see the file comment): pushed == popped
    // + dropped + size, and dropped == evicted (windows overtaken before anyone took them). Any
    // thread; takes the lock briefly. Never throws in practice (std::mutex::lock).
    [[nodiscard]] channel_stats stats() const {
        const std::lock_guard<std::mutex> lock(mu_);
        channel_stats s = windows_;
        s.size = pending_ ? 1 : 0;
        return s;
    }

    // The items pushed in: accepted, refused after close, refused from an older epoch, and the
    // restarts of new epochs. Any thread; takes the lock briefly. Never throws in practice
    // (std::mutex::lock).
    [[nodiscard]] window_item_stats item_stats() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return items_;
    }

private:
    friend struct detail::readable_access;

    // The history's slots, size + stride, once the arguments are checked; throws as the
    // constructor says.
    static std::size_t capacity_of(std::size_t size, std::size_t stride) {
        if (size == 0) {
            throw std::invalid_argument("size: must be at least 1");
        }
        if (stride == 0 || stride > size) {
            throw std::invalid_argument("stride: must be between 1 and size");
        }
        if constexpr (!std::is_copy_constructible_v<T>) {
            if (stride < size) {
                throw std::invalid_argument(
                    "stride: overlapping windows (stride < size) need a copyable T");
            }
        }
        // As std::vector's max_size(): more bytes than a pointer difference can count.
        constexpr std::size_t max_slots =
            static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) /
            sizeof(std::optional<T>);
        if (size > max_slots || stride > max_slots - size) {
            throw std::invalid_argument("size: too large (size + stride items overflow an array)");
        }
        return size + stride;
    }

    // The event count consumers wait on for a window (see detail::readable_access).
    [[nodiscard]] detail::event_count& readable_event() noexcept { return not_empty_; }

    // push(T)'s work under mu_; `ready` says whether a window became ready (to notify after).
    push_status push_locked(T& item, bool& ready) {
        const detail::spin_then_lock_guard lock(mu_);
        if (closed_) {
            ++items_.after_close;
            return push_status::closed;
        }
        bool restart = false;
        if constexpr (epoched<T>) {
            const std::uint64_t e = epoch_traits<T>::epoch(item);
            if (e < epoch_) {
                ++items_.stale_epoch; // a late item from before a reconnect: refused
                return push_status::rejected;
            }
            restart = e > epoch_ && next_seq_ > 0;
            epoch_after_ = e;
        }
        std::size_t tail = head_ + count_;
        if (tail >= capacity_) {
            tail -= capacity_;
        }
        history_[tail].emplace(std::move(item)); // may throw: nothing has changed yet
        if constexpr (epoched<T>) {
            epoch_ = epoch_after_;
        }
        if (restart) {
            restart_locked(tail);
        } else if (count_ + 1 == capacity_) {
            history_[head_].reset(); // older than any window that can still be handed out
            head_ = head_ + 1 == capacity_ ? 0 : head_ + 1;
        } else {
            ++count_;
        }
        const std::uint64_t seq = next_seq_++;
        ++items_.pushed;

        if (seq - window_start_ + 1 < size_ || (last_ready_ && seq - *last_ready_ < stride_)) {
            return push_status::ok;
        }
        // A new window, ending at seq, is ready.
        auto status = push_status::ok;
        if (pending_) {
            ++windows_.evicted; // the untaken window is overtaken
            ++windows_.dropped;
            status = push_status::evicted;
        }
        pending_ = seq;
        last_ready_ = seq;
        ++windows_.pushed;
        pending_flag_.store(true, std::memory_order_relaxed);
        ready = true;
        return status;
    }

    // A new epoch (a live source reconnected): the items from before the gap are dropped, with a
    // ready window still waiting for a consumer (counted as evicted), so that no window mixes
    // items from both sides. The item just stored in slot `kept` starts the next window.
    void restart_locked(std::size_t kept) noexcept {
        for (std::size_t i = 0, at = head_; i < count_; ++i, at = at + 1 == capacity_ ? 0 : at + 1) {
            history_[at].reset();
        }
        head_ = kept;
        count_ = 1;
        window_start_ = next_seq_;
        last_ready_.reset();
        if (pending_) {
            pending_.reset();
            pending_flag_.store(false, std::memory_order_relaxed);
            ++windows_.evicted;
            ++windows_.dropped;
        }
        ++items_.restarts;
    }

    // Builds the pending window into `out` and marks it taken. Requires mu_ and a pending window.
    void take_locked(std::optional<window<T>>& out) {
        const std::uint64_t last = *pending_;
        const std::uint64_t first = last + 1 - size_;
        const std::uint64_t oldest_held = next_seq_ - count_;
        std::size_t at = head_ + detail::to<std::size_t>(first - oldest_held);
        if (at >= capacity_) {
            at -= capacity_;
        }
        // Both the window's control block (with its vector) and its items' storage come from a
        // recycler of the sliding_window's, to which a released window returns them: a steady
        // stream of windows allocates nothing after warm-up.
        auto items = std::allocate_shared<detail::window_items<T>>(
            detail::recycling_allocator<detail::window_items<T>>(windows_recycler_.get()),
            detail::recycling_allocator<T>(items_recycler_.get()));
        items->reserve(size_);
        const bool move_out = stride_ == size_ && std::is_nothrow_move_constructible_v<T>;
        try {
            for (std::size_t i = 0; i < size_; ++i) {
                if constexpr (std::is_copy_constructible_v<T>) {
                    if (move_out) {
                        items->push_back(std::move(*history_[at]));
                    } else {
                        items->push_back(*history_[at]);
                    }
                } else {
                    // Tumbling windows only (checked in the constructor): each item is in one
                    // window, so it can be moved out.
                    items->push_back(std::move(*history_[at]));
                }
                at = at + 1 == capacity_ ? 0 : at + 1;
            }
        } catch (...) {
            if constexpr (!std::is_copy_constructible_v<T>) {
                // Some items have been moved out already: the window cannot be offered again.
                // It is dropped (counted), and the sliding_window stays usable.
                pending_.reset();
                pending_flag_.store(false, std::memory_order_relaxed);
                ++windows_.evicted; // lost to the throwing move; counted with the overtaken
                ++windows_.dropped;
            }
            throw;
        }
        out.emplace(window<T>(std::move(items), first));
        pending_.reset();
        pending_flag_.store(false, std::memory_order_relaxed);
        ++windows_.popped;
    }

    std::optional<window<T>> pop_impl(const std::stop_token* stop,
                                      const std::optional<clock::time_point>& deadline, bool wait) {
        std::optional<window<T>> out;
        if (stop != nullptr && stop->stop_requested()) {
            return out;
        }
        // A pop that may wait and sees no window ready goes straight to waiting: locking mu_ to
        // look would take its line from the producer, whose push must then take it back.
        if (!wait || pending_flag_.load(std::memory_order_relaxed) ||
            closed_flag_.load(std::memory_order_relaxed)) {
            const detail::spin_then_lock_guard lock(mu_);
            if (pending_) {
                take_locked(out);
            }
            if (out || closed_ || !wait) {
                return out;
            }
        }
        // Nothing ready and open: spin briefly, then park, until the mirrors say a window is
        // ready or the window closed; then take it under the lock (another consumer may have
        // been faster: wait again).
        for (;;) {
            const auto end = not_empty_.wait(stop, deadline, [this] {
                return pending_flag_.load(std::memory_order_relaxed) ||
                       closed_flag_.load(std::memory_order_relaxed);
            });
            if (end != detail::wait_end::ready) {
                return out;
            }
            FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK(); // a test seam (detail/config.hpp)
            {
                const detail::spin_then_lock_guard lock(mu_); // see spin_then_lock_guard
                if (pending_) {
                    try {
                        take_locked(out);
                    } catch (...) {
                        // The window stays offered (copyable T): a consumer parked beside it
                        // must hear about it, since this one may have absorbed the only wake-up.
                        not_empty_.notify_one();
                        throw;
                    }
                }
                if (out || closed_) {
                    return out;
                }
            }
            // Another consumer took the window. The stop token and the deadline are looked at
            // here, since the wait returns at once while a window is offered, without looking
            // at them: consumers that keep winning would otherwise keep a stopped or timed-out
            // pop going. None is offered now, so leaving strands nobody.
            if ((stop != nullptr && stop->stop_requested()) ||
                (deadline && clock::now() >= *deadline)) {
                return out;
            }
            FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
        }
    }

    const std::size_t size_;
    const std::size_t stride_;
    const std::size_t capacity_; // history slots: size + stride

    // Where handed-out windows' memory comes from and returns to (see take_locked): released
    // windows are kept for reuse, never more than consumers held at once (detail::block_recycler).
    // (Windows still held by consumers when the sliding_window goes keep them alive.)
    detail::recycler_handle windows_recycler_;
    detail::recycler_handle items_recycler_;

    // The history's slots (the pointer never changes; the slots are guarded by mu_).
    std::unique_ptr<std::optional<T>[]> history_;

    // Every push and every take writes the lock, the state and the stats below, one thread
    // after the other, so they start on a cache line of their own instead of straddling the
    // read-mostly members' lines (docs/benchmarks.md, "sliding_window's hand-off").
    alignas(detail::cache_line) mutable std::mutex mu_;

    // Guarded by mu_.
    bool closed_ = false;
    std::size_t head_ = 0;              // slot of the oldest held item
    std::size_t count_ = 0;             // items held (at most capacity_ - 1 between calls)
    std::uint64_t next_seq_ = 0;        // sequence number of the next push
    std::uint64_t window_start_ = 0;    // seq of the first item of the current epoch's windows
    std::uint64_t epoch_ = 0;           // epoch of the items held (epoched T only)
    std::uint64_t epoch_after_ = 0;     // epoch of the item being pushed
    std::optional<std::uint64_t> pending_;    // last seq of the ready, untaken window
    std::optional<std::uint64_t> last_ready_; // last seq of the newest window that became ready
    channel_stats windows_{}; // in windows; size is derived from pending_
    window_item_stats items_{};

    // Relaxed mirrors for size(), closed() and waiting pops. They only decide when to look: the
    // window itself is taken under mu_. On a line of their own, which a polling consumer can read
    // without taking the lock's line from a push in progress.
    alignas(detail::cache_line) std::atomic<bool> pending_flag_{false};
    std::atomic<bool> closed_flag_{false};

    // Consumers wait here: spin briefly, then park (see detail::event_count). On a line of its
    // own: a parking consumer's registration does not take the flags' line from the producer.
    alignas(detail::cache_line) detail::event_count not_empty_;
};

// How a pipeline shows a sliding_window: a channel of windows (see channel_traits).
template <class T>
struct channel_traits<sliding_window<T>> {
    static constexpr std::string_view kind = "sliding_window";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
    static channel_description describe(const sliding_window<T>& w) {
        return {.kind = std::string(kind),
                .policy = "window " + std::to_string(w.window_size()) + "/" +
                          std::to_string(w.stride()),
                .capacity = w.capacity(),
                .stats = w.stats()};
    }
};

} // namespace framepipe
