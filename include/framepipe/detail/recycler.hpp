// framepipe/detail/recycler.hpp - memory that goes round instead of back to the heap: what a
// broadcaster's publish(T) and a sliding_window's snapshots allocate, reused once released, so
// that neither allocates in the steady state.
#pragma once

#include <framepipe/detail/config.hpp>
#include <framepipe/detail/wait.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

namespace framepipe::detail {

// A free list of equal-sized blocks. The first request fixes the block size (every request of
// one user is the same type: a control block with its value); a request of another size is
// served by the heap. Every block given back is kept, and a new one is made only when none is
// free, so the blocks held (in use and free) never exceed the most that were in use at once
// (or the reserve, if larger): the memory follows the owner's peak, which its capacities bound.
// A burst (a subscriber's buffer filling up) is served from the heap once and then recycled.
//
// Lifetime: reference-counted by its owner and by every block out, so blocks released after the
// owner is gone (a consumer still holding a frame) still come back safely; the last release
// deletes it. Thread-safe: the list is guarded by a spin lock held for a few instructions.
class block_recycler {
public:
    // A recycler holding the owner's reference. Throws std::bad_alloc.
    [[nodiscard]] static block_recycler* create() { return new block_recycler(); }

    block_recycler(const block_recycler&) = delete;
    block_recycler& operator=(const block_recycler&) = delete;

    // Asks for `n` free blocks to be made at once when the block size becomes known (the first
    // take). Before the first take.
    void reserve(std::size_t n) noexcept { reserve_.store(n, std::memory_order_relaxed); }

    // A block of `size` bytes aligned for `align`. Throws std::bad_alloc.
    [[nodiscard]] void* take(std::size_t size, std::size_t align) {
        if (matches(size, align)) {
            if (const std::size_t n = reserve_.exchange(0, std::memory_order_relaxed); n != 0) {
                fill(n, size, align);
            }
            lock();
            node* n = free_;
            if (n != nullptr) {
                free_ = n->next;
                --cached_;
            }
            unlock();
            if (n != nullptr) {
                retain();
                return n;
            }
        }
        void* p = ::operator new(std::max(size, sizeof(node)), std::align_val_t{align});
        retain();
        return p;
    }

    // Gives back a block that take() returned for the same size and alignment: it joins the
    // free list (see the class comment for why that is bounded). Any thread.
    void give(void* p, std::size_t size, std::size_t align) noexcept {
        if (matches(size, align)) {
            lock();
            free_ = ::new (p) node{free_};
            ++cached_;
            unlock();
        } else {
            ::operator delete(p, std::align_val_t{align});
        }
        release();
    }

    void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }

    // Drops one reference; the last one frees the cached blocks and the recycler.
    void release() noexcept {
        // acq_rel: every use of the recycler by other threads happens-before its deletion.
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            while (free_ != nullptr) {
                node* n = free_;
                free_ = n->next;
                n->~node();
                ::operator delete(n, std::align_val_t{align_});
            }
            delete this;
        }
    }

    // Free blocks held now. Any thread (a hint).
    [[nodiscard]] std::size_t cached() const noexcept {
        return cached_count_.load(std::memory_order_relaxed);
    }

private:
    struct node {
        node* next;
    };

    block_recycler() noexcept = default;

    // Adds n new blocks to the free list.
    void fill(std::size_t n, std::size_t size, std::size_t align) {
        for (std::size_t i = 0; i < n; ++i) {
            void* p = ::operator new(size, std::align_val_t{align});
            lock();
            free_ = ::new (p) node{free_};
            ++cached_;
            unlock();
        }
    }

    // The first request fixes the size; later ones of another size go to the heap.
    bool matches(std::size_t size, std::size_t align) noexcept {
        std::size_t expected = 0;
        if (size_.compare_exchange_strong(expected, size, std::memory_order_relaxed)) {
            align_ = align; // written once, by the thread that fixed the size
            align_set_.store(true, std::memory_order_release);
            return size >= sizeof(node);
        }
        return expected == size && size >= sizeof(node) && align_set_.load(std::memory_order_acquire) &&
               align_ == align;
    }

    void lock() noexcept {
        unsigned spins = 0;
        while (lock_.exchange(true, std::memory_order_acquire)) {
            backoff(spins);
        }
    }
    void unlock() noexcept {
        cached_count_.store(cached_, std::memory_order_relaxed);
        lock_.store(false, std::memory_order_release);
    }

    std::atomic<std::size_t> size_{0};
    std::size_t align_ = alignof(std::max_align_t);
    std::atomic<bool> align_set_{false};
    std::atomic<bool> lock_{false};
    node* free_ = nullptr;     // guarded by lock_
    std::size_t cached_ = 0; // guarded by lock_
    std::atomic<std::size_t> reserve_{0}; // blocks to make at the first take
    std::atomic<std::size_t> cached_count_{0};
    std::atomic<std::size_t> refs_{1}; // the owner's
};

// The owner's reference to a block_recycler: created with it, released when it goes (values
// still out keep the recycler alive until they come back).
class recycler_handle {
public:
    recycler_handle() : p_(block_recycler::create()) {}
    ~recycler_handle() { p_->release(); }
    recycler_handle(const recycler_handle&) = delete;
    recycler_handle& operator=(const recycler_handle&) = delete;

    [[nodiscard]] block_recycler* get() const noexcept { return p_; }

private:
    block_recycler* p_;
};

// An allocator for std::allocate_shared that takes its blocks from a block_recycler: the control
// block and the value of every shared_ptr it makes come from the recycler and go back to it.
template <class U>
struct recycling_allocator {
    using value_type = U;
    block_recycler* recycler;

    explicit recycling_allocator(block_recycler* r) noexcept : recycler(r) {}
    template <class V>
    recycling_allocator(const recycling_allocator<V>& o) noexcept // NOLINT: rebinding
        : recycler(o.recycler) {}

    [[nodiscard]] U* allocate(std::size_t n) {
        return static_cast<U*>(recycler->take(n * sizeof(U), alignof(U)));
    }
    void deallocate(U* p, std::size_t n) noexcept { recycler->give(p, n * sizeof(U), alignof(U)); }

    template <class V>
    bool operator==(const recycling_allocator<V>& o) const noexcept {
        return recycler == o.recycler;
    }
};

} // namespace framepipe::detail
