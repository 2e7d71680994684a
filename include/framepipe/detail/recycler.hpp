// framepipe/detail/recycler.hpp - memory that goes round instead of back to the heap: what a
// broadcaster's publish(T) and a sliding_window's snapshots allocate, reused once released, so
// that neither allocates in the steady state.
#pragma once

#include <framepipe/detail/config.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/wait.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <type_traits>

namespace framepipe::detail {

// A free list of equal-sized blocks. The first request fixes the block size and alignment (every
// request of one user is the same type: a control block with its value); a request of another
// size or alignment is served by the heap. Every block given back is kept, and a new one is made only when none is
// free, so the blocks held (in use and free) never exceed the most that were in use at once
// (or the reserve, if larger): the memory follows the owner's peak, which its capacities bound.
// A burst (a subscriber's buffer filling up) is served from the heap once and then recycled.
//
// Cache lines: a recycled block is taken on one thread (a publish, a window's take) and given
// back on another (its last release), while the next block is being filled. So every block of
// the recycler's size starts a cache line and fills whole lines, and the recycler itself starts
// a line: neither shares a line with a neighbour on the heap (docs/benchmarks.md, "The
// recycler's lines").
//
// Lifetime: the owner (recycler_handle) and every block out keep it alive, so blocks released
// after the owner is gone (a consumer still holding a frame) still come back safely; whoever
// leaves it with no owner and no block out deletes it. Thread-safe: a spin lock, held for a few
// instructions, guards the list and the count of blocks out, so a take or a give costs one
// locked instruction (the lock's) and no other read-modify-write.
class alignas(cache_line) block_recycler {
public:
    // A recycler owned by the caller, who gives it up with release_owner(). Throws
    // std::bad_alloc.
    [[nodiscard]] static block_recycler* create() { return new block_recycler(); }

    block_recycler(const block_recycler&) = delete;
    block_recycler& operator=(const block_recycler&) = delete;

    // Asks for `n` free blocks to be made at once when the block size becomes known (the first
    // take of that size). Before the first take.
    void reserve(std::size_t n) noexcept {
        reserve_.store(std::min(n, making - 1), std::memory_order_relaxed);
    }

    // A block of `size` bytes aligned for `align`: a free one when the size is the recycler's,
    // else a new one from the heap. Any thread; never waits but for the lock's few
    // instructions, and, once, for the reserve: the first take of the recycler's size makes it,
    // and a take that comes meanwhile waits for it (parked) rather than go to the heap. Throws std::bad_alloc (nothing changed but the blocks of the reserve made so far).
    [[nodiscard]] void* take(std::size_t size, std::size_t align) {
        const bool ours = matches(size, align);
        // A load first: make_reserve runs only while a reserve is pending or being made.
        if (ours && reserve_.load(std::memory_order_acquire) != 0) {
            make_reserve(size, align);
        }
        lock();
        node* n = ours ? free_ : nullptr;
        if (n != nullptr) {
            free_ = n->next;
            --cached_;
        }
        ++out_;
        unlock();
        if (n != nullptr) {
            return n;
        }
        try {
            return ours ? new_block(size, align)
                        : ::operator new(size, std::align_val_t{align});
        } catch (...) {
            give_back_count();
            throw;
        }
    }

    // Gives back a block that take() returned for the same size and alignment: it joins the
    // free list (see the class comment for why that is bounded), or goes to the heap if its
    // size is not the recycler's. The last block back after the owner has gone deletes the
    // recycler. Any thread; noexcept.
    void give(void* p, std::size_t size, std::size_t align) noexcept {
        if (!matches(size, align)) {
            ::operator delete(p, std::align_val_t{align});
            give_back_count();
            return;
        }
        lock();
        free_ = ::new (p) node{free_};
        ++cached_;
        --out_;
        unlock_and_go_if_last();
    }

    // The owner lets go; the recycler goes now if no block is out, else with the last one
    // given back. Once, by the owner; noexcept.
    void release_owner() noexcept {
        lock();
        owned_ = false;
        unlock_and_go_if_last();
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

    // One block fewer out (one that is not joining the list).
    void give_back_count() noexcept {
        lock();
        --out_;
        unlock_and_go_if_last();
    }

    // Unlocks; deletes the recycler if the lock holder saw no owner and no block out (nobody
    // else can reach it then).
    void unlock_and_go_if_last() noexcept {
        const bool last = !owned_ && out_ == 0;
        unlock();
        if (last) {
            destroy();
        }
    }

    void destroy() noexcept {
        while (free_ != nullptr) {
            node* n = free_;
            free_ = n->next;
            n->~node();
            // Relaxed: a block joined the list after matches() read the key fixed, and lock_
            // orders that before this.
            const std::size_t align = align_of(key_.load(std::memory_order_relaxed));
            ::operator delete(n, std::align_val_t{block_align(align)});
        }
        delete this;
    }

    // The reserve: made by the take that claims it (reserve_ becomes `making`), and waited for by
    // any take that finds it being made, so that no block goes to the heap meanwhile and the
    // blocks made stay within max(reserve, the most in use at once). Out of line: once.
    FRAMEPIPE_NOINLINE void make_reserve(std::size_t size, std::size_t align) {
        std::size_t n = reserve_.load(std::memory_order_acquire);
        while (n != 0 && n != making) {
            if (reserve_.compare_exchange_weak(n, making, std::memory_order_acquire,
                                               std::memory_order_acquire)) {
                // Done, made or not (bad_alloc): the waiters take what there is, or the heap's.
                struct made {
                    block_recycler& r;
                    ~made() {
                        r.reserve_.store(0, std::memory_order_release);
                        r.reserve_made_.notify_all();
                    }
                } done{*this};
                fill(n, size, align);
                return;
            }
        }
        FRAMEPIPE_DETAIL_RESERVE_WAIT_HOOK(); // a test seam (detail/config.hpp)
        // Parked until the maker is done (its allocations may take a while); acquire: pairs
        // with its release store, although the blocks themselves are handed over under lock_.
        (void)reserve_made_.wait(nullptr, no_deadline, [this]() noexcept {
            return reserve_.load(std::memory_order_acquire) != making;
        });
    }

    // Adds n new blocks to the free list, all or none: they are made on a list of their own,
    // which a std::bad_alloc gives back to the heap before passing it on (a reserve larger than
    // memory holds keeps nothing).
    void fill(std::size_t n, std::size_t size, std::size_t align) {
        node* made = nullptr;
        node* last = nullptr;
        try {
            for (std::size_t i = 0; i < n; ++i) {
                made = ::new (new_block(size, align)) node{made};
                last = last == nullptr ? made : last;
            }
        } catch (...) {
            while (made != nullptr) {
                node* next = made->next;
                made->~node();
                ::operator delete(made, std::align_val_t{block_align(align)});
                made = next;
            }
            throw;
        }
        if (made == nullptr) {
            return;
        }
        lock();
        last->next = free_;
        free_ = made;
        cached_ += n;
        unlock();
    }

    // A block of the recycler's size: whole cache lines, starting one (see the class comment).
    static std::size_t block_bytes(std::size_t size) noexcept {
        return (std::max(size, sizeof(node)) + cache_line - 1) / cache_line * cache_line;
    }
    static std::size_t block_align(std::size_t align) noexcept {
        return std::max(align, cache_line);
    }
    static void* new_block(std::size_t size, std::size_t align) {
        return ::operator new(block_bytes(size), std::align_val_t{block_align(align)});
    }

    // The first request fixes the size and the alignment; later ones of another size or
    // alignment go to the heap. Both are fixed by one compare-and-swap of one word (key_), so a
    // thread that sees the size fixed sees the alignment too: no request of the recycler's size
    // is served by the heap and then given back as one of the recycler's blocks. A load first:
    // the compare-and-swap, a read-modify-write, runs only while nothing is fixed. Any size from
    // 1 byte may be the recycler's: its blocks are made by new_block(), at least a node and a
    // cache line whatever the size asked for.
    bool matches(std::size_t size, std::size_t align) noexcept {
        if (size == 0 || size > max_block) {
            return false; // the heap's: no key names 0 (key 0 is "not fixed"), and a size
                          // this large cannot be named in one (nor allocated)
        }
        const std::uint64_t key = key_of(size, align);
        std::uint64_t fixed = key_.load(std::memory_order_relaxed);
        if (fixed == 0) {
            // Relaxed: the key is the whole of what is published; the blocks made for it are
            // handed between threads under lock_.
            (void)key_.compare_exchange_strong(fixed, key, std::memory_order_relaxed,
                                               std::memory_order_relaxed);
            fixed = fixed == 0 ? key : fixed; // fixed: ours, or the winner's on failure
        }
        return fixed == key;
    }

    // A key names a size (at least 1: an allocation of n >= 1 objects) and a power-of-two
    // alignment: the size shifted left by 6 bits, and the alignment's log2 (below 64) in them.
    static constexpr unsigned align_bits = 6;
    static constexpr std::size_t max_block =
        std::numeric_limits<std::size_t>::max() >> align_bits;
    static std::uint64_t key_of(std::size_t size, std::size_t align) noexcept {
        return (std::uint64_t{size} << align_bits) |
               static_cast<std::uint64_t>(std::countr_zero(align));
    }
    static std::size_t align_of(std::uint64_t key) noexcept {
        return std::size_t{1} << (key & ((1U << align_bits) - 1));
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

    std::atomic<std::uint64_t> key_{0}; // the block size and alignment (matches()); 0: not fixed
    std::atomic<bool> lock_{false};
    node* free_ = nullptr;   // guarded by lock_
    std::size_t cached_ = 0; // guarded by lock_
    std::size_t out_ = 0;    // guarded by lock_: blocks taken and not given back
    bool owned_ = true;      // guarded by lock_: the owner has not let go
    // Blocks to make at the first take of the recycler's size; `making` while one makes them.
    static constexpr std::size_t making = std::size_t{1}
                                          << (std::numeric_limits<std::size_t>::digits - 1);
    std::atomic<std::size_t> reserve_{0};
    std::atomic<std::size_t> cached_count_{0};
    event_count reserve_made_; // takes waiting for the reserve park here (make_reserve)
};

// The owner's reference to a block_recycler: created with it, released when it goes (values
// still out keep the recycler alive until they come back).
class recycler_handle {
public:
    recycler_handle() : p_(block_recycler::create()) {}
    ~recycler_handle() { p_->release_owner(); }
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
