// framepipe/detail/asymmetric_barrier.hpp - a memory barrier with a cheap half for a hot path and
// an expensive half for a rare one (membarrier(2) on Linux).
#pragma once

#include <framepipe/detail/config.hpp>

#include <atomic>
#include <exception>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace framepipe::detail {

// An asymmetric memory barrier: a cheap half for a hot path and an expensive half for a rare
// one, which together order a store before a load on both sides (store-load ordering, which
// x86 and every other mainstream CPU otherwise only give with a full fence or a locked
// instruction).
//
// Used by event_count's asymmetric mode: a notifier that publishes with a plain release store
// and then reads the waiter count must not have that read overtake its store, or a waiter that
// registers at the same moment and re-checks the state may miss it, and both miss each other (a
// lost wake-up). A full fence on every push would cost more than the whole push of an SPSC ring;
// waiters register rarely (once before they park, which costs a futex call anyway). So the
// notifier's half is only a compiler barrier, and the waiter's half is membarrier(2) with
// MEMBARRIER_CMD_PRIVATE_EXPEDITED: the kernel makes every other running thread of the process
// execute a full barrier before the call returns (a sleeping thread went through one when it was
// descheduled). Either the notifier's store came before that barrier and is visible to the
// waiter's re-check, or its load of the waiter count came after it and sees the registration.
// This is the asymmetric fence of liburcu and folly.
//
// Where membarrier is not available (not Linux, a kernel before 4.14, or a seccomp filter that
// forbids it), both halves are std::atomic_thread_fence(seq_cst): slower on the hot path, equally
// correct. light() reads a flag that is set only once registration has succeeded, so the hot
// half never skips its fence unless the heavy half will really call membarrier.
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
    // (microseconds). Any thread; never blocks for long; noexcept.
    static void heavy() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
        if (enable()) {
            if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) {
                return;
            }
            // Cannot fail once registered; if it ever did, light() may have skipped its fence,
            // and nothing here can order the other thread. Fail loudly rather than lose wake-ups.
            std::terminate();
        }
#endif
        full_fence();
    }

private:
    static bool register_process() noexcept {
#if defined(__linux__) && defined(SYS_membarrier)
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

    // Relaxed is enough: a light() that reads a stale false only pays an unneeded fence.
    static inline std::atomic<bool> enabled_{false};
};

} // namespace framepipe::detail
