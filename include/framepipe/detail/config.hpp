// framepipe/detail/config.hpp - the language check, the compiler hints and the cache-line size
// every framepipe header uses. Included first by every public header.
#pragma once

#if !defined(__cplusplus) || (__cplusplus < 202002L && (!defined(_MSVC_LANG) || _MSVC_LANG < 202002L))
#error "framepipe needs C++20 or later (compile with -std=c++20)"
#endif
// Bad arguments throw std::invalid_argument, and the channels keep their counts exact when T's
// move throws: there is no mode without exceptions. (RTTI is not needed.)
#if defined(__GNUC__) && !defined(__cpp_exceptions)
#error "framepipe needs exceptions (do not compile with -fno-exceptions)"
#endif

#include <cstddef>
#include <type_traits>

// Forces a channel's small fast path into its caller. Used where an out-of-line call would return
// a std::optional<T> through memory: GCC writes the value and the one-byte "engaged" flag with
// two stores and reads them back with a wider load that spans both, a store-forwarding stall
// that costs more than the whole fast path. Inlined, the optional stays in registers.
#if defined(__GNUC__) || defined(__clang__)
#define FRAMEPIPE_ALWAYS_INLINE [[gnu::always_inline]] inline
// The same for a lambda, written after its parameter list: [this]() FRAMEPIPE_INLINE_LAMBDA {...}
#define FRAMEPIPE_INLINE_LAMBDA __attribute__((always_inline))
// Keeps a rarely taken path out of its caller, so that the caller's fast path stays short.
#define FRAMEPIPE_NOINLINE [[gnu::noinline]]
#else
#define FRAMEPIPE_ALWAYS_INLINE inline
#define FRAMEPIPE_INLINE_LAMBDA
#define FRAMEPIPE_NOINLINE
#endif

#if defined(__SANITIZE_THREAD__)
#define FRAMEPIPE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FRAMEPIPE_TSAN 1
#endif
#endif

// FRAMEPIPE_SPSC_CHECKS: whether spsc_ring checks its one-producer, one-consumer rule at run time
// and aborts with a message when two threads push (or pop) at once. On whenever NDEBUG is not
// defined, like assert; define it to 1 or 0 to force it on or off.
#if !defined(FRAMEPIPE_SPSC_CHECKS)
#if defined(NDEBUG)
#define FRAMEPIPE_SPSC_CHECKS 0
#else
#define FRAMEPIPE_SPSC_CHECKS 1
#endif
#endif

// FRAMEPIPE_DETAIL_LINUX: 1 where the Linux-only paths are built (futex waits, membarrier, a
// stage's thread name and nice value, the affinity mask), else 0 and the portable ones are. A
// test seam, not an option: defining FRAMEPIPE_DETAIL_PORTABLE builds the portable paths on Linux
// too (the portable_smoke test does, so that they compile and run somewhere).
#if defined(__linux__) && !defined(FRAMEPIPE_DETAIL_PORTABLE)
#define FRAMEPIPE_DETAIL_LINUX 1
#else
#define FRAMEPIPE_DETAIL_LINUX 0
#endif

// FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK(): a test seam, not an option. Called on the waiting thread
// right after a blocking call's wait returned ready, before it looks at the channel again (the
// mutex ring's pop and push, the lock-free ring's pop and push, sliding_window's pop,
// selector::pop, batcher::pop, pool's acquire). Expands to nothing unless a test program
// defines it before including any framepipe header (tests/test_ring.cpp and
// tests/test_select.cpp do, to request a stop at exactly that point; the selector's, batcher's,
// sliding_window's and pool's tests act there between a wait and the look after it;
// tests/test_pool.cpp also holds an acquire there while another thread takes the returned
// object). Every translation unit of a program must see the same definition: each test file
// there is a program of its own.
#if !defined(FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK)
#define FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_REWAIT_HOOK(): a test seam of the same kind, called on a thread that is about
// to wait again after a look that found nothing (a pop of a ring of each kind, latest_slot or
// sliding_window, a blocked push of the MPMC rings, a pool's acquire), or to back off while a
// closed latest_slot settles, once it has looked at its stop token and its deadline. The tests of those blocks make the awaited state true there
// (a stale item pushed, a slot freed), so that every wait returns at once.
#if !defined(FRAMEPIPE_DETAIL_REWAIT_HOOK)
#define FRAMEPIPE_DETAIL_REWAIT_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_PARK_HOOK(): a test seam of the same kind in event_count::park()
// (detail/wait.hpp), called on a parking thread after its last look at the state, before it
// sleeps; tests/test_wait.cpp holds a waiter there while another thread makes the state ready
// and notifies, which the sleep must then not miss.
#if !defined(FRAMEPIPE_DETAIL_PARK_HOOK)
#define FRAMEPIPE_DETAIL_PARK_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_RESERVE_WAIT_HOOK(): a test seam of the same kind, called by a recycler's take
// before it waits for the reserve another take is making (detail/recycler.hpp);
// tests/test_broadcaster.cpp holds the maker until a racing publish is seen waiting there.
#if !defined(FRAMEPIPE_DETAIL_RESERVE_WAIT_HOOK)
#define FRAMEPIPE_DETAIL_RESERVE_WAIT_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_PLAIN_CLAIM_HOOK(): a test seam of the same kind. Called on spsc_ring's consumer
// thread after a pop of an evicting ring (drop_oldest, or block with a block_timeout) decided to
// take its item without the CAS, before it moves it out (detail/spsc_lockfree_ring.hpp);
// tests/test_ring.cpp holds the claim open there while the producer makes its first eviction.
#if !defined(FRAMEPIPE_DETAIL_PLAIN_CLAIM_HOOK)
#define FRAMEPIPE_DETAIL_PLAIN_CLAIM_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_SPSC_PUSH_HOOK(), FRAMEPIPE_DETAIL_SPSC_EVICT_HOOK(),
// FRAMEPIPE_DETAIL_SPSC_PEEK_HOOK(): test seams of the same kind in spsc_ring
// (detail/spsc_lockfree_ring.hpp), called by a push that has found the ring open and is about to
// store, by an evicting push between its read of head_ and its compare-and-swap, and by peek()
// while it holds the head, before it copies. tests/test_ring.cpp holds a thread at each while
// another closes, pops or evicts.
#if !defined(FRAMEPIPE_DETAIL_SPSC_PUSH_HOOK)
#define FRAMEPIPE_DETAIL_SPSC_PUSH_HOOK() ((void)0)
#endif
#if !defined(FRAMEPIPE_DETAIL_SPSC_EVICT_HOOK)
#define FRAMEPIPE_DETAIL_SPSC_EVICT_HOOK() ((void)0)
#endif
#if !defined(FRAMEPIPE_DETAIL_SPSC_PEEK_HOOK)
#define FRAMEPIPE_DETAIL_SPSC_PEEK_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_RING_FILL_HOOK(), FRAMEPIPE_DETAIL_RING_EVICT_HOOK(): test seams of the same
// kind in ring<T>'s lock-free MPMC implementation (detail/lockfree_ring.hpp), called by a push that
// has claimed its position, before it stores its item, and by one that has claimed a position
// whose slot still holds an older item, before it evicts that item. tests/test_ring.cpp holds a
// push at each while another thread closes and pops, or pushes and evicts.
#if !defined(FRAMEPIPE_DETAIL_RING_FILL_HOOK)
#define FRAMEPIPE_DETAIL_RING_FILL_HOOK() ((void)0)
#endif
#if !defined(FRAMEPIPE_DETAIL_RING_EVICT_HOOK)
#define FRAMEPIPE_DETAIL_RING_EVICT_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_LATEST_PEEK_HOOK(): a test seam of the same kind in latest_slot::peek(),
// called between its read of the slot and its pin on the buffer it read (latest_slot.hpp):
// tests/test_latest_slot.cpp holds a peek() there while a pop takes the value or a push replaces
// it, which the peek's re-check must then see.
#if !defined(FRAMEPIPE_DETAIL_LATEST_PEEK_HOOK)
#define FRAMEPIPE_DETAIL_LATEST_PEEK_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_LATEST_DRAINED_HOOK(step): a test seam of the same kind in latest_slot's
// drained() (for a T whose move may throw), called between its reads: step 1 after the first
// look at the slot, step 2 after the first read of the pops that may put a value back.
// tests/test_latest_slot.cpp lets one pop put its value back at step 1 and another take it at
// step 2, which the last read must then see.
#if !defined(FRAMEPIPE_DETAIL_LATEST_DRAINED_HOOK)
#define FRAMEPIPE_DETAIL_LATEST_DRAINED_HOOK(step) ((void)0)
#endif

// FRAMEPIPE_DETAIL_OWNED_ADMIT_HOOK(): a test seam of the same kind. Called on the thread that owns
// a rate_limiter, inside its section, after it read the word and before it stores the new one
// (rate_limiter.hpp); tests/test_rate_limiter.cpp holds the section open with it while another
// thread takes the limiter over or changes its rate, and tests/lin yields there now and then.
#if !defined(FRAMEPIPE_DETAIL_OWNED_ADMIT_HOOK)
#define FRAMEPIPE_DETAIL_OWNED_ADMIT_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_OWNER_ENTRY_HOOK(): a test seam of the same kind. Called on a thread that has
// found itself a rate_limiter's owner, before it marks its section (rate_limiter.hpp): a takeover
// in that window does not wait for it, and the section's own check of the owner must send it
// elsewhere. tests/test_rate_limiter.cpp holds a call there; tests/lin yields there now and then.
#if !defined(FRAMEPIPE_DETAIL_OWNER_ENTRY_HOOK)
#define FRAMEPIPE_DETAIL_OWNER_ENTRY_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_SHARED_DECIDE_HOOK(): a test seam of the same kind. Called on a rate_limiter
// call that is not the owner's, on its lock-free path, after it read the word and before it reads
// the configuration that interprets it (rate_limiter.hpp): a rate change in that window makes the
// two disagree, and only the call's re-read of the word may decide on them.
// tests/test_rate_limiter.cpp holds a call there; tests/lin yields there now and then.
#if !defined(FRAMEPIPE_DETAIL_SHARED_DECIDE_HOOK)
#define FRAMEPIPE_DETAIL_SHARED_DECIDE_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_SELECT_PROBE_HOOK(): a test seam of the same kind in a selector's wait
// predicate (select.hpp), called while it holds its pin on one input, after the check that the
// input is still there and before it reads the channel: tests/test_select.cpp holds a predicate
// there while another thread removes that input, which must not return before the pin is let go;
// tests/test_select_litmus.cpp holds one there once a removal has begun.
#if !defined(FRAMEPIPE_DETAIL_SELECT_PROBE_HOOK)
#define FRAMEPIPE_DETAIL_SELECT_PROBE_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_SELECT_ATTACHED_HOOK(): a test seam of the same kind in selector::add()
// (select.hpp), called once the input's listener is attached and add()'s barriers are made,
// before the input is published: the earliest point at which the selector may look at the
// channel. tests/test_select_litmus.cpp looks at the channel there.
#if !defined(FRAMEPIPE_DETAIL_SELECT_ATTACHED_HOOK)
#define FRAMEPIPE_DETAIL_SELECT_ATTACHED_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_WAKE_HOOK(): a test seam of the same kind in event_count::wake()
// (detail/wait.hpp), called by a notifier that found a parked waiter or an attached listener,
// before it wakes or notifies them. The litmus tests (tests/support/litmus_wake.hpp) count there
// the notifications that saw someone, against the parks that FRAMEPIPE_DETAIL_PARK_HOOK() counts.
#if !defined(FRAMEPIPE_DETAIL_WAKE_HOOK)
#define FRAMEPIPE_DETAIL_WAKE_HOOK() ((void)0)
#endif

// FRAMEPIPE_DETAIL_INLINE_END_HOOK(): a test seam of the same kind in pipeline.hpp, called on the
// thread of a stage that runs inline_when_idle once its loop has ended, before it shuts the gate
// for good: tests/test_pipeline.cpp holds a stage there, its output found closed, while the
// thread upstream hands it another item, which must not run inline; and holds a stage whose
// inline run threw there until the stage upstream has ended.
#if !defined(FRAMEPIPE_DETAIL_INLINE_END_HOOK)
#define FRAMEPIPE_DETAIL_INLINE_END_HOOK() ((void)0)
#endif

namespace framepipe::detail {

// The size of a cache line on the machines framepipe targets (x86-64 and most ARMv8 cores). Data
// written by different threads is kept this far apart so that one thread's writes never
// invalidate the line another thread is reading (false sharing).
// std::hardware_destructive_interference_size says the same, but GCC warns that its value may
// change between compiler versions and flags, which the layout of a header-only library's types
// cannot afford.
inline constexpr std::size_t cache_line = 64;

// One step of a spin loop: tells the core that this thread is spinning, which frees execution
// resources for a sibling hyper-thread and avoids a memory-order mis-speculation penalty when the
// awaited line finally changes.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

// An address that no other live thread shares, for code that tells threads apart on a hot path
// (rate_limiter's owner): a thread-local's address, which a program reads off its thread pointer
// without a call (std::this_thread::get_id() is a call into the C library). A later thread may get
// a dead thread's address. Any thread; noexcept.
inline thread_local char thread_tag_byte = 0;
[[nodiscard]] inline const void* this_thread_tag() noexcept { return &thread_tag_byte; }

// static_cast<To>(v), except where To and From are the same type: for the conversions that are
// needed on some targets (a 64-bit count into a 32-bit size_t) and are no-ops on others, where
// GCC's -Wuseless-cast would warn in the users' builds of these headers.
template <class To, class From>
[[nodiscard]] constexpr To to(From v) noexcept {
    if constexpr (std::is_same_v<To, From>) {
        return v;
    } else {
        return static_cast<To>(v);
    }
}

} // namespace framepipe::detail
