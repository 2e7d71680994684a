// framepipe/detail/asymmetric_barrier.hpp - a memory barrier with a cheap half for a hot path and
// an expensive half for a rare one (membarrier(2) on Linux).
#pragma once

#include <framepipe/detail/config.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <exception>
#include <mutex>

#if FRAMEPIPE_DETAIL_LINUX
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

namespace framepipe::detail {

// An asymmetric memory barrier: a cheap half for a hot path and an expensive half for a rare
// one, which together order a store before a load on both sides (store-load ordering, which
// x86 and every other mainstream CPU otherwise only give with a full fence or a locked
// instruction).
//
// Used by spsc_ring's close and claim handshakes (pushing_, claiming_: see
// detail/spsc_lockfree_ring.hpp), by rate_limiter's owner (owner_busy_: see "One writer, or many"
// in rate_limiter.hpp) and by event_count's asymmetric mode: a notifier that publishes
// with a plain release store and then reads the waiter count must not have that read overtake its
// store, or a waiter that registers at the same moment and re-checks the state may miss it, and
// both miss each other (a lost wake-up). A full fence on every push would cost more than the whole
// push of an SPSC ring; waiters register rarely (once before they park, which costs a futex call
// anyway). So the notifier's half is only a compiler barrier, and the waiter's half is
// membarrier(2) with MEMBARRIER_CMD_PRIVATE_EXPEDITED: the kernel makes every other running thread
// of the process execute a full barrier before the call returns (a sleeping thread went through one
// when it was descheduled). Either the notifier's store came before that barrier and is visible to
// the waiter's re-check, or its load of the waiter count came after it and sees the registration.
// This is the asymmetric fence of liburcu and folly.
//
// Where membarrier is not available (not Linux, a kernel before 4.14, or a seccomp filter that
// forbids it), both halves are std::atomic_thread_fence(seq_cst): slower on the hot path, equally
// correct. light() reads a flag that is set only once registration has succeeded, so the hot
// half never skips its fence unless the heavy half will really call membarrier.
//
// membarrier can still fail after registration: ENOMEM (kernels built with
// CONFIG_CPUMASK_OFFSTACK allocate a cpumask per call), or a seccomp filter installed later. A
// transient error (EINTR, EAGAIN, ENOMEM) is retried: at once a few times, then with sleeps from
// 1 us doubling to 1 ms. On x86, once such errors have lasted about 10 ms, that one call orders
// the other threads by another route (below) and the next call tries membarrier again; elsewhere
// it retries until membarrier succeeds or fails persistently. A persistent error (EPERM, say)
// switches the barrier for good: light() fences from then on, and heavy() takes the other route,
// since some threads may have skipped their fence just before the switch: on x86, it downgrades
// the protection of a page of its own (mprotect), which makes the kernel send a TLB-shootdown
// interrupt to every core that runs a thread of the process, and an interrupt is a full barrier
// there. Elsewhere no such route is known, and heavy() calls std::terminate rather than lose a
// wake-up.
class asymmetric_barrier {
public:
    // A full barrier. ThreadSanitizer does not model std::atomic_thread_fence (GCC warns with
    // -Wtsan); under it, a seq_cst read-modify-write of a private atomic stands in, which on x86
    // (a locked instruction) is a full barrier as well.
    static void full_fence() noexcept {
#if defined(FRAMEPIPE_TSAN)
        static std::atomic<unsigned> dummy{0};
        dummy.fetch_add(0, std::memory_order_seq_cst);
#else
        std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
    }

    // Registers the process for expedited private membarrier on first use. Call it before any
    // light() whose partner heavy() must be cheap to pair with it (a constructor is the place).
    // Any thread; thread-safe; noexcept.
    static bool enable() noexcept {
        static const bool ok = register_process();
        return ok;
    }

    // The hot half. Any thread; never blocks; noexcept.
    FRAMEPIPE_ALWAYS_INLINE static void light() noexcept {
        if (enabled_.load(std::memory_order_relaxed)) {
            std::atomic_signal_fence(std::memory_order_seq_cst); // the compiler must not reorder
        } else {
            full_fence();
        }
    }

    // The rare half: a system call that interrupts the other running threads of the process
    // (microseconds). Any thread; sleeps only while membarrier fails transiently (see the class
    // comment: about 10 ms at most on x86); noexcept.
    static void heavy() noexcept {
#if FRAMEPIPE_DETAIL_LINUX && defined(SYS_membarrier)
        if (enable()) {
            if (!fallen_back_.load(std::memory_order_acquire)) {
                for (int attempt = 0; attempt < 8; ++attempt) {
                    if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) {
                        return;
                    }
                    if (errno != EINTR && errno != EAGAIN && errno != ENOMEM) {
                        break;
                    }
                }
                if (retried()) {
                    return;
                }
            }
            interrupt_barrier();
            return;
        }
#endif
        full_fence();
    }

    // Whether heavy() has given up on membarrier (see the class comment). Any thread.
    [[nodiscard]] static bool fallen_back() noexcept {
        return fallen_back_.load(std::memory_order_acquire);
    }

private:
    static bool register_process() noexcept {
#if FRAMEPIPE_DETAIL_LINUX && defined(SYS_membarrier)
        const long cmds = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        if (cmds < 0 || (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 ||
            ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) {
            return false;
        }
        enabled_.store(true, std::memory_order_relaxed);
        return true;
#else
        return false;
#endif
    }

#if FRAMEPIPE_DETAIL_LINUX && defined(SYS_membarrier)
    // heavy()'s quick retries failed: falls back for good on a persistent error (false), or
    // keeps retrying a transient one with sleeps (the class comment says how). True once
    // membarrier succeeded; false after a fall-back or, on x86, about 10 ms of transient errors
    // (this call only). Out of line: a failure path, kept out of heavy()'s callers.
    FRAMEPIPE_NOINLINE static bool retried() noexcept {
        constexpr long longest_sleep_ns = 1'000'000;
        constexpr long transient_limit_ns = 10'000'000;
        long sleep_ns = 0;
        long slept_ns = 0;
        for (;;) {
            if (errno != EINTR && errno != EAGAIN && errno != ENOMEM) {
                fall_back();
                return false;
            }
            if (has_interrupt_barrier && slept_ns >= transient_limit_ns) {
                return false;
            }
            sleep_ns = sleep_ns == 0 ? 1'000 : std::min(2 * sleep_ns, longest_sleep_ns);
            timespec pause{};
            pause.tv_nsec = sleep_ns;
            (void)::nanosleep(&pause, nullptr);
            slept_ns += sleep_ns;
            if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) {
                return true;
            }
        }
    }
#endif

#if FRAMEPIPE_DETAIL_LINUX
    // membarrier failed for good: light() fences from now on; heavy() uses interrupt_barrier().
    static void fall_back() noexcept {
        enabled_.store(false, std::memory_order_relaxed);
        fallen_back_.store(true, std::memory_order_release);
    }

    // A barrier on every core that runs a thread of the process, without membarrier: downgrading
    // a private page's protection makes the kernel shoot down its TLB entries on those cores by
    // interrupt (x86). The page is touched first so that it is mapped and cached.
    static void interrupt_barrier() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        static void* const page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        static std::mutex mu; // one downgrade at a time
        if (page != MAP_FAILED) {
            const std::lock_guard<std::mutex> lock(mu);
            if (::mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0) {
                static_cast<volatile char*>(page)[0] = 0;
                if (::mprotect(page, 4096, PROT_READ) == 0) {
                    return;
                }
            }
        }
#endif
        std::terminate(); // no way to order the other threads: fail loudly, never lose a wake-up
    }
#endif

#if defined(__x86_64__) || defined(__i386__)
    static constexpr bool has_interrupt_barrier = true;
#else
    static constexpr bool has_interrupt_barrier = false;
#endif

    // Relaxed is enough: a light() that reads a stale false only pays an unneeded fence.
    static inline std::atomic<bool> enabled_{false};
    static inline std::atomic<bool> fallen_back_{false};
};

} // namespace framepipe::detail
