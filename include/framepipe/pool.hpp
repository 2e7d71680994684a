// framepipe/pool.hpp - a bounded set of reusable objects (frame buffers) lent as shared_ptr.
//
//     framepipe::pool<cv::Mat> buffers(8, [] { return cv::Mat(480, 640, CV_8UC3); });
//     std::shared_ptr<cv::Mat> f = buffers.acquire();   // waits if all 8 are out
//     capture >> *f;  frames.publish(std::move(f));      // back in the pool when the last user
//                                                        // lets go, wherever that happens
//
// All objects are built up front, so memory follows from the capacity. Lending one allocates
// nothing: each slot keeps room for the shared_ptr control block next to its object, and the
// shared_ptr's allocator places the block there. The object is not destroyed or reset when it
// comes back; the next borrower overwrites it.
//
// A slot comes back when the control block is released: when the last shared_ptr AND the last
// weak_ptr to it are gone. The pool may be destroyed while objects are still lent: they stay
// valid, and the storage is freed when the last one comes back.
//
// Thread safety: any thread may acquire, and a lent object may be released on any thread.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/wait.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

namespace framepipe {

// Counters of a pool.
struct pool_stats {
    std::uint64_t acquired = 0;  // objects lent
    std::uint64_t released = 0;  // objects returned
    std::uint64_t exhausted = 0; // try_acquire / timed or stopped acquire that got nothing
    std::uint64_t waited = 0;    // acquires that had to wait for a return
    std::uint64_t in_use = 0;    // lent now (acquired - released)
};

namespace detail {

template <class T>
class pool_core;

// Room for the shared_ptr control block of one lent object. libstdc++ and libc++ need 32 to 48
// bytes for a control block with an empty deleter and a two-pointer allocator; 128 leaves margin.
// A bigger block is still served, from the heap (correct, just not allocation-free).
inline constexpr std::size_t control_block_room = 128;

// One object and the room for its control block. A loan writes the control block (when the
// shared_ptr is built and when its counts drop) and next_free (when the slot goes back), one
// thread after another: both start the slot's first cache line, and no slot shares a line with
// another slot or with the next heap object, so two loans never contend for one line.
template <class T>
struct alignas(std::max(cache_line, alignof(std::optional<T>))) pool_slot {
    pool_slot* next_free = nullptr;
    alignas(std::max_align_t) unsigned char block[control_block_room];
    std::optional<T> object;
};

// Places the control block in its slot's reserved bytes, and returns the slot to the pool
// when the control block is freed.
template <class U, class T>
struct slot_allocator {
    using value_type = U;
    pool_core<T>* core;
    pool_slot<T>* slot;

    template <class V>
    struct rebind {
        using other = slot_allocator<V, T>;
    };

    slot_allocator(pool_core<T>* c, pool_slot<T>* s) noexcept : core(c), slot(s) {}
    template <class V>
    slot_allocator(const slot_allocator<V, T>& o) noexcept : core(o.core), slot(o.slot) {} // NOLINT

    U* allocate(std::size_t n) {
        if (n * sizeof(U) <= control_block_room && alignof(U) <= alignof(std::max_align_t)) {
            return reinterpret_cast<U*>(slot->block);
        }
        return static_cast<U*>(::operator new(n * sizeof(U), std::align_val_t{alignof(U)}));
    }
    void deallocate(U* p, std::size_t /*n*/) noexcept {
        if (reinterpret_cast<unsigned char*>(p) != slot->block) {
            // Unsized: clang before 19 does not declare sized deallocation by default.
            ::operator delete(p, std::align_val_t{alignof(U)});
        }
        core->give_back(slot);
    }
    template <class V>
    bool operator==(const slot_allocator<V, T>& o) const noexcept {
        return slot == o.slot;
    }
};

// Lends nothing itself: the object's life is the slot's, so the "deleter" has nothing to do.
struct keep_object {
    template <class P>
    void operator()(P*) const noexcept {}
};

// The shared state of a pool. Reference-counted by hand: the pool object holds one reference and
// every lent slot one more, so the core outlives the pool while objects are out.
template <class T>
class pool_core {
public:
    template <class Factory>
    pool_core(std::size_t capacity, Factory& make) : slots_(capacity) {
        for (auto& s : slots_) {
            s.object.emplace(make());
            s.next_free = free_.load(std::memory_order_relaxed);
            free_.store(&s, std::memory_order_relaxed);
        }
    }

    pool_core(const pool_core&) = delete;
    pool_core& operator=(const pool_core&) = delete;

    // Takes a free slot, waiting as the arguments say. nullptr if none was had.
    std::shared_ptr<T> take(const std::stop_token* stop,
                            const std::optional<clock::time_point>& deadline, bool wait) {
        pool_slot<T>* slot = nullptr;
        if (stop != nullptr && stop->stop_requested()) {
            const std::lock_guard<std::mutex> lock(mu_);
            ++exhausted_;
            return nullptr; // like ring::pop(stop_token): the token is checked first
        }
        // An acquire that may wait and sees no slot free goes straight to waiting: locking mu_ to
        // look would take its line from the releasing thread, whose give_back must take it back.
        if (!wait || free_.load(std::memory_order_relaxed) != nullptr) {
            const detail::spin_then_lock_guard lock(mu_);
            slot = pop_free_locked(wait);
        }
        if (slot == nullptr && wait) {
            // Spin briefly, then park, until the free-count mirror says a slot came back; then
            // take it under the lock (another acquire may have been faster: wait again).
            for (;;) {
                const auto end = returned_.wait(stop, deadline, [this] {
                    return free_.load(std::memory_order_relaxed) != nullptr;
                });
                if (end == wait_end::ready) {
                    FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK(); // a test seam (detail/config.hpp)
                }
                bool again = false;
                {
                    const detail::spin_then_lock_guard lock(mu_); // see spin_then_lock_guard
                    if (end == wait_end::ready) {
                        slot = pop_free_locked(true);
                        // None free: another acquire was faster, so wait again. The stop token
                        // and the deadline are looked at first, since the wait returns at once
                        // while a slot is free, without looking at them: acquires that keep
                        // winning would otherwise keep a stopped or timed-out one going. None
                        // is free now, so leaving strands nobody.
                        again = slot == nullptr &&
                                !((stop != nullptr && stop->stop_requested()) ||
                                  (deadline && clock::now() >= *deadline));
                    }
                    if (!again) {
                        if (slot != nullptr) {
                            ++waited_;
                        } else {
                            ++exhausted_;
                        }
                    }
                }
                if (!again) {
                    break;
                }
                FRAMEPIPE_DETAIL_REWAIT_HOOK(); // a test seam (detail/config.hpp)
            }
        }
        if (slot == nullptr) {
            return nullptr;
        }
        refs_.fetch_add(1, std::memory_order_relaxed); // see release_ref() for the ordering
        // Cannot allocate (the block fits the slot), so cannot throw; if a platform's block is
        // larger, the heap is used and bad_alloc returns the slot via the guard below.
        struct guard {
            pool_core* core;
            pool_slot<T>* slot;
            ~guard() {
                if (slot != nullptr) {
                    core->give_back(slot);
                }
            }
        } g{this, slot};
        std::shared_ptr<T> out(std::addressof(*slot->object), keep_object{},
                               slot_allocator<T, T>(this, slot));
        g.slot = nullptr;
        return out;
    }

    // Called by the slot allocator when a control block is freed.
    void give_back(pool_slot<T>* slot) noexcept {
        {
            const detail::spin_then_lock_guard lock(mu_);
            slot->next_free = free_.load(std::memory_order_relaxed);
            free_.store(slot, std::memory_order_relaxed);
            ++released_;
        }
        // After the store above (the event count's RMW publishes it to a parking waiter),
        // and before release_ref(), which may delete this core.
        returned_.notify_one();
        release_ref();
    }

    // Drops one reference; the last one deletes the core.
    void release_ref() noexcept {
        // acq_rel: every use of the core by other threads happens-before its deletion here.
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            delete this;
        }
    }

    [[nodiscard]] std::size_t capacity() const noexcept { return slots_.size(); }

    [[nodiscard]] std::size_t available() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return slots_.size() - to<std::size_t>(acquired_ - released_);
    }

    [[nodiscard]] pool_stats stats() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return {.acquired = acquired_,
                .released = released_,
                .exhausted = exhausted_,
                .waited = waited_,
                .in_use = acquired_ - released_};
    }

private:
    pool_slot<T>* pop_free_locked(bool will_wait) {
        pool_slot<T>* slot = free_.load(std::memory_order_relaxed);
        if (slot == nullptr) {
            if (!will_wait) {
                ++exhausted_;
            }
            return nullptr;
        }
        free_.store(slot->next_free, std::memory_order_relaxed);
        ++acquired_;
        return slot;
    }

    // The hand-off line: every acquire and every release locks mu_, moves free_ and counts
    // itself, one thread after the other. On one line, a hand-off moves that one line between
    // the cores, not three or four (the lock, the free stack and the counters wherever the heap
    // put them, some of them on a line shared with the next heap object: docs/benchmarks.md,
    // "The pool's layout").
    alignas(cache_line) mutable std::mutex mu_;
    // Intrusive stack of free slots, written under mu_. Also read without the lock by waiting
    // acquires: relaxed, since it only decides when to look; the slot itself is taken under mu_.
    std::atomic<pool_slot<T>*> free_{nullptr};
    std::uint64_t acquired_ = 0; // guarded by mu_
    // The pool's own reference and one per loan. Not on the hand-off line: a release drops its
    // reference after unlocking, just when the acquire it woke is taking the lock.
    alignas(cache_line) std::atomic<std::size_t> refs_{1};
    // Written under mu_ by releases only: on a line of their own, which a stream of releases
    // from one thread keeps in that thread's cache.
    alignas(cache_line) std::uint64_t released_ = 0;
    // Written under mu_ by acquires that waited or got nothing, likewise.
    alignas(cache_line) std::uint64_t waited_ = 0;
    std::uint64_t exhausted_ = 0;
    // Acquires wait here: spin briefly, then park (see event_count). Written by releases (the
    // notify's read-modify-write) and by acquires that park.
    alignas(cache_line) event_count returned_;
    std::vector<pool_slot<T>> slots_; // never resized: slots do not move
};

// True when a std::shared_ptr<T> would set a weak_ptr in T: T* converts to a pointer to an
// unambiguous, accessible std::enable_shared_from_this<U> base, for any U (not only T).
template <class U>
void shared_from_this_base(const volatile std::enable_shared_from_this<U>*);
template <class T>
concept shares_from_this = requires(T* p) { detail::shared_from_this_base(p); };

} // namespace detail

template <class T>
class pool {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::pool<T>: T must be an object type");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "framepipe::pool<T>: T's destructor must not throw");
    static_assert(std::is_move_constructible_v<T>,
                  "framepipe::pool<T>: T must be move-constructible (the factory returns it)");
    static_assert(!detail::shares_from_this<T>,
                  "framepipe::pool<T>: T must not derive from std::enable_shared_from_this<U> "
                  "(any U): its weak_ptr would keep the control block, and so the slot, lent for "
                  "ever");

public:
    using value_type = T;

    // `capacity` value-initialised objects. Throws std::invalid_argument naming `capacity` when it
    // is 0 or its slots would not fit in memory's address range; std::bad_alloc; what T's
    // constructor throws.
    explicit pool(std::size_t capacity)
        requires std::is_default_constructible_v<T>
        : pool(capacity, [] { return T{}; }) {}

    // `capacity` objects made by calling `make()` (for example, frames of a given size).
    // Throws as pool(capacity); what `make` throws.
    template <class Factory>
        requires std::is_invocable_r_v<T, Factory&>
    pool(std::size_t capacity, Factory make) : core_(create(capacity, make)) {}

    pool(const pool&) = delete;
    pool& operator=(const pool&) = delete;

    // Lent objects stay valid after the pool is gone; see the file comment.
    ~pool() { core_->release_ref(); }

    // A free object, or nullptr when all are lent. Any thread; never waits (brief lock); does
    // not allocate. Never throws in practice (std::mutex::lock), nor do the calls below, except
    // acquire_for() for its argument.
    [[nodiscard]] std::shared_ptr<T> try_acquire() { return core_->take(nullptr, detail::no_deadline, false); }

    // A free object, waiting (spins briefly, then parks) until one is returned. Any thread.
    // Never returns nullptr.
    [[nodiscard]] std::shared_ptr<T> acquire() { return core_->take(nullptr, detail::no_deadline, true); }

    // As acquire(), but nullptr when `stop` is requested (checked first, even if an object is
    // free), or while it waits.
    [[nodiscard]] std::shared_ptr<T> acquire(std::stop_token stop) {
        return core_->take(&stop, detail::no_deadline, true);
    }

    // As acquire(), but nullptr after `timeout`. Any std::chrono::duration; one beyond nanoseconds'
    // range (say seconds::max()) means no limit. Throws std::invalid_argument naming timeout when
    // it is negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] std::shared_ptr<T> acquire_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return core_->take(nullptr, detail::deadline_after(ns), true);
    }

    // Number of objects. Any thread; wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return core_->capacity(); }

    // Objects free now (a hint). Any thread; brief lock; never throws in practice.
    [[nodiscard]] std::size_t available() const { return core_->available(); }

    // Counters. Any thread; brief lock; never throws in practice.
    [[nodiscard]] pool_stats stats() const { return core_->stats(); }

private:
    template <class Factory>
    static detail::pool_core<T>* create(std::size_t capacity, Factory& make) {
        if (capacity == 0) {
            throw std::invalid_argument("capacity: must be at least 1");
        }
        if (capacity > std::vector<detail::pool_slot<T>>().max_size()) {
            throw std::invalid_argument("capacity: too large (its slots' bytes overflow)");
        }
        return new detail::pool_core<T>(capacity, make);
    }

    detail::pool_core<T>* core_;
};

} // namespace framepipe
