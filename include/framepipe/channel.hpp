// framepipe/channel.hpp - vocabulary shared by every framepipe channel.
//
// The overflow policies, the result of a push, the counters every channel keeps, and two
// internal waiting helpers: detail::park (the mutex ring, which parks at once on a condition
// variable) and detail::event_count (spin, then park: the lock-free rings, sliding_window and
// pool; spsc_ring uses its asymmetric mode, built on detail::asymmetric_barrier). latest_slot
// waits on its own detail::slot_parker, and rate_limiter::acquire on its own condition variable.
// Users normally include a block's own header (ring.hpp, latest_slot.hpp, ...) and get this one
// with it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

// Forces a channel's small fast path into its caller. Used where an out-of-line call would return
// a std::optional<T> through memory: GCC writes the value and the one-byte "engaged" flag with
// two stores and reads them back as two words, and that read stalls on store forwarding (about
// 10 ns a call on the machines we measure, more than the whole fast path). Inlined, the optional
// stays in registers.
#if defined(__GNUC__) || defined(__clang__)
#define FRAMEPIPE_ALWAYS_INLINE [[gnu::always_inline]] inline
// The same for a lambda, written after its parameter list: [this]() FRAMEPIPE_INLINE_LAMBDA {...}
#define FRAMEPIPE_INLINE_LAMBDA __attribute__((always_inline))
#else
#define FRAMEPIPE_ALWAYS_INLINE inline
#define FRAMEPIPE_INLINE_LAMBDA
#endif

#if defined(__SANITIZE_THREAD__)
#define FRAMEPIPE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FRAMEPIPE_TSAN 1
#endif
#endif

namespace framepipe {

// What a bounded channel does with a push that finds it full.
enum class overflow {
    drop_oldest, // evict the oldest item and accept the new one (freshness first)
    drop_newest, // refuse the new item; what is buffered stays (completeness of the backlog)
    block,       // wait for room (back-pressure); with a block_timeout, evict the oldest after it
};

// What happened to one push.
enum class push_status {
    ok,       // accepted; nothing was dropped
    evicted,  // accepted; the oldest buffered item was dropped to make room
    rejected, // not accepted: full under drop_newest, or a blocked push was cancelled by stop
    closed,   // not accepted: the channel was closed
};

// True when the pushed item is now in the channel.
[[nodiscard]] constexpr bool accepted(push_status s) noexcept {
    return s == push_status::ok || s == push_status::evicted;
}

[[nodiscard]] constexpr std::string_view to_string(overflow o) noexcept {
    switch (o) {
    case overflow::drop_oldest: return "drop_oldest";
    case overflow::drop_newest: return "drop_newest";
    case overflow::block: return "block";
    }
    return "unknown";
}

[[nodiscard]] constexpr std::string_view to_string(push_status s) noexcept {
    switch (s) {
    case push_status::ok: return "ok";
    case push_status::evicted: return "evicted";
    case push_status::rejected: return "rejected";
    case push_status::closed: return "closed";
    }
    return "unknown";
}

// Counters of a ring, a latest_slot or a subscription.
//
// Every call to push() that returns is counted in `pushed`, whatever its status (a push that
// throws is not counted; see the channel's exception guarantee), and every item that entered
// the channel's accounting leaves it exactly once: popped, or dropped under one reason. So, when
// no call is in flight:
//
//     pushed == popped + dropped + size()
//     dropped == evicted + rejected + cancelled + expired + after_close + rate_limited
//
// A snapshot taken while other threads push and pop: a channel that uses a lock (a ring whose T
// may throw on move) takes it under that lock, so the identities hold for the snapshot itself.
// A lock-free ring (ring<T>::is_lock_free) derives pushed and popped from its positions without
// a lock; its snapshots always satisfy the second identity and `pushed >= popped + dropped +
// size` (a push in flight may be counted before it is stored or before the item it evicts is;
// and `popped`, derived from the head minus evictions and expiries, may read lower by the ones in
// flight in a later snapshot taken during traffic: it is not monotonic between snapshots),
// with equality when no call is in flight. A latest_slot sums per-side counters without a lock:
// its snapshot may be off by the calls in flight (see latest_slot.hpp).
struct channel_stats {
    std::uint64_t pushed = 0;      // push() calls
    std::uint64_t popped = 0;      // items handed to a consumer
    std::uint64_t dropped = 0;     // sum of the reasons below
    std::uint64_t evicted = 0;     // oldest item dropped to make room (drop_oldest, block timeout)
    std::uint64_t rejected = 0;    // new item refused because the channel was full (drop_newest)
    std::uint64_t cancelled = 0;   // blocked push ended by its stop_token
    std::uint64_t expired = 0;     // discarded at pop because older than max_age
    std::uint64_t after_close = 0; // pushed after close(); not enqueued
    std::uint64_t rate_limited = 0; // subscriptions only: skipped by max_rate_hz (0 for a ring)
    std::uint64_t size = 0;        // items buffered when the snapshot was taken
};

namespace detail {

using clock = std::chrono::steady_clock;

// Throws std::invalid_argument naming `what` when a caller passes a negative duration.
inline void require_non_negative(std::chrono::nanoseconds d, const char* what) {
    if (d < std::chrono::nanoseconds::zero()) {
        throw std::invalid_argument(std::string(what) + ": must not be negative");
    }
}

// now + d, saturating instead of overflowing for very long timeouts.
[[nodiscard]] inline clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
    const auto now = clock::now();
    if (d >= clock::time_point::max() - now) {
        return clock::time_point::max();
    }
    return now + std::chrono::duration_cast<clock::duration>(d);
}

// Registered as a std::stop_callback while a thread parks with a stop token. It takes the
// channel's mutex before notifying: the waiter checks stop_requested() under that mutex and then
// parks atomically with releasing it, so the notification cannot fall between the check and the
// park (the classic lost wake-up).
//
// Because this callback takes the mutex, the waiter must construct and destroy the stop_callback
// while NOT holding the mutex (construction may run the callback inline; destruction waits for a
// callback running on another thread).
struct wake_all_on_stop {
    std::mutex* mu;
    std::condition_variable* cv;
    void operator()() const noexcept {
        { const std::lock_guard<std::mutex> guard(*mu); }
        cv->notify_all();
    }
};

enum class wait_end { ready, timed_out, stopped };

// Parks the calling thread on `cv` until `ready()` holds, the deadline passes, or a stop is
// requested. `lock` must hold the mutex that guards what `ready()` reads; `waiters` (guarded by
// the same mutex) counts parked threads so that the other side notifies only when someone waits.
//
// A stop request wins over readiness. A thread that leaves because of stop may have consumed a
// notify_one meant for the condition it was waiting on; it passes that notification on so no
// other waiter is left asleep with work available.
template <class Ready>
[[nodiscard]] wait_end park(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                            std::size_t& waiters, const std::stop_token* stop,
                            const std::optional<clock::time_point>& deadline, Ready ready) {
    for (;;) {
        if (stop != nullptr && stop->stop_requested()) {
            if (waiters > 0 && ready()) {
                cv.notify_one();
            }
            return wait_end::stopped;
        }
        if (ready()) {
            return wait_end::ready;
        }
        ++waiters;
        if (deadline) {
            const auto status = cv.wait_until(lock, *deadline);
            --waiters;
            if (status == std::cv_status::timeout && !ready()) {
                return wait_end::timed_out;
            }
        } else {
            cv.wait(lock);
            --waiters;
        }
    }
}

// One "pause" of a spin loop: tells the core that this thread is spinning, which frees
// execution resources for a sibling hyper-thread and avoids a memory-order mis-speculation
// penalty when the awaited line finally changes.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

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

// How long a waiter spins (checking its condition with plain loads) before it parks. Handing an
// item to a thread that is still spinning costs one cache-line transfer (~100 ns); waking a
// parked one costs a futex wake-up and a reschedule (tens of microseconds on a VM). A partner
// that answers within this budget is therefore caught without a sleep; a consumer that really
// is idle burns at most this much CPU per wait before it parks ("idle means idle").
inline constexpr std::chrono::nanoseconds spin_budget{5'000};

// An event count: the waiting primitive of the lock-free ring, sliding_window and pool
// (latest_slot, also lock-free, has its own: detail::slot_parker in latest_slot.hpp).
//
// The state a waiter waits for lives elsewhere, in atomics of the owning block; `ready()` reads
// it. A notifier first changes that state, then calls notify_*(). When nobody waits, notify_*()
// costs one read-modify-write of `waiters_` (notify_one_after_seq_cst(): one plain load): no
// lock, no system call. A waiter first spins for up to spin_budget, re-reading ready(); then it
// parks on a mutex + condition variable, which exist only for this slow path (they also give
// timeouts and stop_token wake-ups).
//
// No lost wake-up. A parking waiter holds mu_, increments waiters_ (a seq_cst RMW), then
// re-reads ready(). A notifier changes the state, then reads waiters_ with an RMW (fetch_add 0).
// Both RMWs act on waiters_, so one is first in its modification order: if the waiter's is, the
// notifier reads a non-zero count and wakes it; if the notifier's is, the waiter's RMW reads from
// it (release -> acquire), so the notifier's state change happens-before the waiter's re-check,
// which sees it. (Plain happens-before, which ThreadSanitizer checks too; no standalone fences.)
// A notifier that sees a waiter takes mu_ before it signals, and the waiter holds mu_ from before
// its increment until the condition variable releases it atomically with going to sleep, so the
// signal cannot fall between the waiter's check and its sleep.
class event_count {
public:
    // Selects the asymmetric mode (see notify_one_asymmetric()).
    struct asymmetric_t {
        explicit asymmetric_t() = default;
    };
    static constexpr asymmetric_t asymmetric{};

    event_count() = default;

    // An event count whose notifiers may use notify_one_asymmetric(): each parking waiter pays a
    // membarrier system call (asymmetric_barrier::heavy()) so that its notifiers pay nothing but
    // a plain load. Registers the process for membarrier (asymmetric_barrier::enable()).
    explicit event_count(asymmetric_t) noexcept : asymmetric_(true) {
        (void)asymmetric_barrier::enable();
    }

    event_count(const event_count&) = delete;
    event_count& operator=(const event_count&) = delete;

    // Wakes one parked waiter, if any. Call after making the awaited state true. Any thread;
    // never waits beyond the internal lock (taken only when someone is parked). noexcept.
    void notify_one() noexcept {
        if (has_waiters()) {
            wake(false);
        }
    }

    // As notify_one(), for a notifier whose state change was a seq_cst read-modify-write (or
    // seq_cst store) of an atomic that the waiter's exact ready() predicate reads with seq_cst
    // loads. Then the state change, this load of waiters_, the waiter's increment and its
    // re-check are all seq_cst operations, whose single total order forbids both sides missing
    // each other; a notify with nobody parked is one plain load. noexcept.
    FRAMEPIPE_ALWAYS_INLINE void notify_one_after_seq_cst() noexcept {
        if (waiters_.load(std::memory_order_seq_cst) != 0) {
            wake(false);
        }
    }

    // As notify_one(), for an event count constructed with `asymmetric`, after a state change
    // that was a plain (release) store: asymmetric_barrier::light() (a compiler barrier where
    // membarrier works) keeps this load of waiters_ from being moved above the store by the
    // compiler, and the waiter's asymmetric_barrier::heavy(), between its registration and its
    // re-check, orders the CPU: either the store is visible to the re-check or the registration
    // is visible to this load. With nobody parked this is one plain load. noexcept.
    FRAMEPIPE_ALWAYS_INLINE void notify_one_asymmetric() noexcept {
        asymmetric_barrier::light();
        if (waiters_.load(std::memory_order_relaxed) != 0) {
            wake(false);
        }
    }

    // Wakes every parked waiter (close, stop). Any thread. noexcept.
    void notify_all() noexcept {
        if (has_waiters()) {
            wake(true);
        }
    }

    // Waits until ready() holds (returns ready), `deadline` passes (timed_out) or `stop` is
    // requested (stopped; a stop request wins over readiness once parked). ready() must read
    // only atomics: it is called without any lock held by the caller. Spins first (see
    // spin_budget), then parks. Throws what the stop_callback's or the mutex's construction
    // throws (std::system_error); otherwise no-throw.
    template <class Ready>
    [[nodiscard]] wait_end wait(const std::stop_token* stop,
                                const std::optional<clock::time_point>& deadline, Ready ready) {
        return wait(stop, deadline, ready, ready);
    }

    // As wait(stop, deadline, ready), with a cheaper predicate for the spin phase. spin_ready()
    // may miss a change (say, one that only another cache line shows), never report one that
    // did not happen; ready(), checked before parking, must be exact. Returns ready as soon as
    // either holds.
    template <class SpinReady, class Ready>
    [[nodiscard]] wait_end wait(const std::stop_token* stop,
                                const std::optional<clock::time_point>& deadline,
                                SpinReady spin_ready, Ready ready) {
        if (spin_ready() || ready()) {
            return wait_end::ready;
        }
        // Spin phase. The clock is read every 32 pauses (a pause is 10-150 cycles depending on
        // the core), so the budget is kept to within a microsecond or so.
        {
            auto spin_end = clock::now() + spin_budget;
            if (deadline && *deadline < spin_end) {
                spin_end = *deadline;
            }
            for (unsigned i = 1;; ++i) {
                cpu_relax();
                if (spin_ready()) {
                    return wait_end::ready;
                }
                if ((i & 31U) == 0) {
                    if (stop != nullptr && stop->stop_requested()) {
                        return wait_end::stopped;
                    }
                    if (clock::now() >= spin_end) {
                        break;
                    }
                }
            }
        }
        // Park phase. The stop callback takes mu_, so it is constructed before mu_ is locked and
        // destroyed after it is released (construction may run it inline; destruction waits for
        // a callback running on another thread).
        std::optional<std::stop_callback<wake_on_stop>> on_stop;
        if (stop != nullptr && stop->stop_possible()) {
            on_stop.emplace(*stop, wake_on_stop{this});
        }
        wait_end end = wait_end::ready;
        {
            std::unique_lock<std::mutex> lock(mu_);
            // seq_cst: pairs with has_waiters() and notify_one_after_seq_cst(); see above.
            waiters_.fetch_add(1, std::memory_order_seq_cst);
            if (asymmetric_) {
                asymmetric_barrier::heavy(); // pairs with notify_one_asymmetric()
            }
            for (;;) {
                if (stop != nullptr && stop->stop_requested()) {
                    end = wait_end::stopped;
                    break;
                }
                if (ready()) {
                    end = wait_end::ready;
                    break;
                }
                if (deadline) {
                    if (cv_.wait_until(lock, *deadline) == std::cv_status::timeout && !ready()) {
                        end = wait_end::timed_out;
                        break;
                    }
                } else {
                    cv_.wait(lock);
                }
            }
            waiters_.fetch_sub(1, std::memory_order_relaxed);
        }
        // A waiter leaving without taking what it was woken for (stop, timeout) may have consumed
        // a notify_one meant for another waiter: pass it on.
        if (end != wait_end::ready && ready()) {
            notify_one();
        }
        return end;
    }

private:
    struct wake_on_stop {
        event_count* self;
        void operator()() const noexcept { self->wake(true); }
    };

    [[nodiscard]] bool has_waiters() noexcept {
        // An RMW, not a load: it publishes the caller's state change to a waiter whose increment
        // comes later in waiters_'s modification order; see the class comment.
        return waiters_.fetch_add(0, std::memory_order_seq_cst) != 0;
    }

#if defined(__GNUC__) || defined(__clang__)
    [[gnu::noinline]] // the slow path: keep it out of the inlined notify
#endif
    void wake(bool all) noexcept {
        { const std::lock_guard<std::mutex> guard(mu_); }
        if (all) {
            cv_.notify_all();
        } else {
            cv_.notify_one();
        }
    }

    const bool asymmetric_ = false;         // waiters pay asymmetric_barrier::heavy()
    std::atomic<std::uint32_t> waiters_{0}; // threads in the park phase
    std::mutex mu_;                         // slow path only
    std::condition_variable cv_;            // slow path only
};

} // namespace detail
} // namespace framepipe
