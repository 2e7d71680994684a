// framepipe/detail/wait.hpp - the one waiting primitive of every framepipe block: spin for a few
// microseconds (pausing, or yielding the core on a thread that asked to), then park on a futex.
//
// Every blocking call in framepipe (a pop on an empty channel, a push under overflow::block, a
// pool acquire, rate_limiter::acquire) waits on a detail::event_count. The state a thread waits
// for lives in the block's own atomics; the event count only says "look again". Notifying costs
// one load (or one read-modify-write) of a word that is written only when someone waits, so a
// channel whose consumers keep up makes no system call at all.
#pragma once

#include <framepipe/detail/asymmetric_barrier.hpp>
#include <framepipe/detail/config.hpp>
#include <framepipe/detail/deadline.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

#if FRAMEPIPE_DETAIL_LINUX
#include <cerrno>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#include <condition_variable>
#endif

namespace framepipe::detail {

enum class wait_end { ready, timed_out, stopped };

// How long a waiter spins (checking its condition with plain loads) before it parks. Handing an
// item to a thread that is still spinning costs one cache-line transfer (~100 ns); waking a
// parked one costs a futex wake-up and a reschedule (tens of microseconds on a VM). A partner
// that answers within this budget is therefore caught without a sleep; a thread that really is
// idle burns at most this much CPU per wait before it parks ("idle means idle"). A waiter on an
// asymmetric event count may spin longer, up to asymmetric_spin_cap (see there).
inline constexpr std::chrono::nanoseconds spin_budget{5'000};

// The longest a waiter on an asymmetric event count spins. Parking there costs a membarrier
// system call, which interrupts every core running the process: about 1 us when the partner is
// idle, 20 us on the VMs we measure when it is running (and so about to hand something over).
// Such a waiter spins for as long as its last park's membarrier took (never less than
// spin_budget, never more than this): spinning for as long as parking costs is the classic
// 2-competitive choice, and a 5 us budget against a 20 us park made both sides of a hand-off
// park in turn, each one's membarrier delaying the other (docs/benchmarks.md, "spsc_ring's
// parked mode").
inline constexpr std::chrono::nanoseconds asymmetric_spin_cap{50'000};

// What a waiter on this thread does between two checks of its condition while it spins: false
// (the default), a pause instruction, which catches a partner running on another core within a
// cache-line transfer; true, std::this_thread::yield() (about 170 ns here when nothing else is
// runnable), which hands the core to a runnable thread, possibly the very one it waits for,
// when there are more running threads than cores. A pipeline sets it on its stage threads
// (pipeline_options::spin). Per thread, so that a read costs one thread-local load.
inline thread_local bool spin_yields = false;

// Per-thread counts of the slow paths of waiting, for diagnostics: the benchmarks report them per
// hand-off, which tells a hand-off caught while spinning from one that parked (a profiler can't:
// on the VMs we measure, sampling makes the waits park). Only the slow paths write them, after
// their spin ran out, so the fast paths pay nothing. Read and written by the owning thread only.
struct wait_counts {
    // event_count registrations as a sleeper, after a spin ran out (or in park()): one per
    // round of the park loop; in the asymmetric mode each one also pays asymmetric_barrier::heavy()
    std::uint64_t parks = 0;
    std::uint64_t sleeps = 0;      // of those, the ones that did sleep (a futex wait each)
    std::uint64_t lock_blocks = 0; // spin_then_lock_guard ran out of spins and called lock()
    std::uint64_t backoff_sleeps = 0; // yield_or_sleep() steps that slept (the yields ran out)
};
inline thread_local wait_counts this_thread_waits{};

// Step `n` (from 0) of a wait for another thread once the waiter's pauses have run out, out of
// line so that the loops that inline a wait stay short: steps 0-63 yield, later ones sleep, 1 us
// doubling up to 1 ms. A yield hands the processor only to threads of the caller's own priority;
// a caller of higher (real-time) priority than the thread it waits for, preempted on the same
// processor, would yield to nothing, for as long as the kernel's real-time throttling allows (a
// second) or for good. A sleep lets that thread run.
inline constexpr unsigned backoff_pauses = 64; // backoff()'s steps that pause (the first 63)
inline constexpr unsigned backoff_yields = 64; // yield_or_sleep()'s steps that yield

// The sleep of yield_or_sleep()'s step `n` (backoff_yields or more): 1 us doubling, 2^10 us
// (about 1 ms) at most.
[[nodiscard]] constexpr std::chrono::microseconds backoff_sleep(unsigned n) noexcept {
    return std::chrono::microseconds(1u << std::min(n - backoff_yields, 10u));
}

FRAMEPIPE_NOINLINE inline void yield_or_sleep(unsigned n) noexcept {
    if (n < backoff_yields) {
        std::this_thread::yield();
        return;
    }
    ++this_thread_waits.backoff_sleeps;
    std::this_thread::sleep_for(backoff_sleep(n));
}

// backoff()'s step `spins` (64 or more), out of line. A function of its own rather than a call
// of yield_or_sleep(spins - 64) in backoff(): that subtraction, inlined into the rings' pushes,
// changes how GCC lays out their fast paths (docs/benchmarks.md, spsc_ring's drop_oldest).
FRAMEPIPE_NOINLINE inline void backoff_after_pauses(unsigned spins) noexcept {
    yield_or_sleep(spins - backoff_pauses);
}

// One step of waiting for another thread's few instructions (a move out of a slot, a fill):
// pause for a while, then yield, then sleep (yield_or_sleep), since the thread we wait for may
// have been preempted. Any thread; `spins` counts the caller's steps, from 0.
inline void backoff(unsigned& spins) noexcept {
    if (++spins < backoff_pauses) {
        cpu_relax();
    } else {
        backoff_after_pauses(spins);
    }
}

// As backoff(), for a wait with a deadline of its own (a batch's, a call's): once its yields
// have run out, a step sleeps until `until` at the latest, and not at all once `until` has
// passed, so that the caller looks again in time. Without `until`, backoff() itself. Any
// thread; `spins` as for backoff().
inline void backoff_until(unsigned& spins, const std::optional<clock::time_point>& until) noexcept {
    if (!until || spins + 1 < backoff_pauses + backoff_yields) {
        backoff(spins);
        return;
    }
    ++spins;
    const clock::duration left = *until - clock::now();
    if (left > clock::duration::zero()) {
        ++this_thread_waits.backoff_sleeps;
        std::this_thread::sleep_for(
            std::min<clock::duration>(left, backoff_sleep(spins - backoff_pauses)));
    }
}

// Locks a block's mutex on its hot paths (sliding_window, pool, the mutex ring), where every
// holder keeps it for a few hundred nanoseconds. std::mutex::lock() parks a thread that finds it
// held on a futex, and a futex round trip costs tens of microseconds on a VM: a consumer woken
// by a push reaches the lock while the pusher still holds it, or a push lands while the
// consumer looks; the thread that parks there makes its partner's spin run out, so the partner
// parks too, and the two can stay in that mode for good (docs/benchmarks.md, "The wait
// primitive, before and after"). So try_lock() is retried for up to
// lock_spins pauses (2.4 us on the development machine; a pause costs 10 to 150
// cycles depending on the core) before lock() blocks.
// Any thread; throws what std::mutex::lock() throws.
inline constexpr unsigned lock_spins = 256;

class spin_then_lock_guard {
public:
    explicit spin_then_lock_guard(std::mutex& m) : m_(m) {
        for (unsigned i = 0; i < lock_spins; ++i) {
            if (m_.try_lock()) {
                return;
            }
            cpu_relax();
        }
        ++this_thread_waits.lock_blocks;
        m_.lock();
    }
    ~spin_then_lock_guard() { m_.unlock(); }
    spin_then_lock_guard(const spin_then_lock_guard&) = delete;
    spin_then_lock_guard& operator=(const spin_then_lock_guard&) = delete;

private:
    std::mutex& m_;
};

class event_count;

// A selector's hook on an event count (event_count::attach): while attached, every notification
// of the event count also notifies `target`, so that one thread can park on one event count of
// its own and still hear about every channel it watches. Owned by the selector; the event count
// links it into an intrusive list and never allocates.
struct event_listener {
    event_count* target = nullptr;
    event_listener* next = nullptr; // guarded by the watched event count's list lock
};

// An event count on a futex.
//
// The protocol (no lost wake-up). A waiter reads epoch_, registers in watchers_ (a seq_cst
// read-modify-write), then re-checks its exact predicate, and sleeps only while epoch_ still
// holds the value it read. A notifier changes the state the predicate reads, then reads
// watchers_; when it finds a waiter it bumps epoch_ and wakes the futex. Either the notifier's
// read of watchers_ sees the registration (then the bump lands after the waiter's read of epoch_,
// so its futex wait returns at once or is woken), or it does not, and then the state change is
// visible to the waiter's re-check:
// - notify_one()/notify_all(): the notifier reads watchers_ with a read-modify-write. Both RMWs
//   act on watchers_, so one comes first in its modification order; if the notifier's does, the
//   waiter's reads from it (release -> acquire) and the state change happens-before the
//   re-check. Works for any state change, also relaxed stores made under a lock.
// - notify_*_after_seq_cst(): for a state change that was itself a seq_cst store or RMW, read
//   by the predicate with seq_cst loads; then the single total order of seq_cst operations
//   forbids both sides missing each other, and the notifier's read is a plain load.
// - notify_one_asymmetric(): for a state change that was a plain release store, in an event
//   count constructed with `asymmetric`: the waiter pays asymmetric_barrier::heavy() between its
//   registration and its re-check, the notifier only a compiler barrier (see there). A woken
//   waiter looks at its predicate before it registers again, so a wake-up that found its state
//   ready cost one barrier, not two.
// Every step is an atomic operation that ThreadSanitizer sees, except the asymmetric barrier.
//
// Waking: a stop request (std::stop_callback) and notify_all wake every sleeper; notify_one
// wakes one (FUTEX_WAKE 1). A waiter that leaves on stop or timeout while its predicate holds
// passes the wake-up on, so a notify_one it may have absorbed is not lost.
//
// Selectors: attach(listener) makes every notification also notify listener.target (see
// event_listener). Attached listeners count in watchers_ like sleepers, so the notifier's one
// load still decides whether there is anything to do.
class event_count {
public:
    // Selects the asymmetric mode (see notify_one_asymmetric()).
    struct asymmetric_t {
        explicit asymmetric_t() = default;
    };
    static constexpr asymmetric_t asymmetric{};

    event_count() noexcept = default;

    // An event count whose notifiers may use notify_one_asymmetric(): each parking waiter pays a
    // membarrier system call so that its notifiers pay nothing but a plain load. Registers the
    // process for membarrier (asymmetric_barrier::enable()).
    explicit event_count(asymmetric_t) noexcept : asymmetric_(true) {
        (void)asymmetric_barrier::enable();
    }

    event_count(const event_count&) = delete;
    event_count& operator=(const event_count&) = delete;

    // Wakes one parked waiter, if any, and notifies the attached listeners. Call after making
    // the awaited state true (any kind of store). Any thread; never blocks; noexcept.
    void notify_one() noexcept {
        // An RMW, not a load: see the class comment.
        notify(watchers_.fetch_add(0, std::memory_order_seq_cst), false);
    }

    // As notify_one(), waking every parked waiter (close, stop).
    void notify_all() noexcept { notify(watchers_.fetch_add(0, std::memory_order_seq_cst), true); }

    // As notify_one(), after a state change that was a seq_cst store or read-modify-write of an
    // atomic that the waiter's exact predicate reads with seq_cst loads: one plain load when
    // nobody waits.
    FRAMEPIPE_ALWAYS_INLINE void notify_one_after_seq_cst() noexcept {
        notify(watchers_.load(std::memory_order_seq_cst), false);
    }

    // As notify_one_after_seq_cst(), waking every parked waiter.
    FRAMEPIPE_ALWAYS_INLINE void notify_all_after_seq_cst() noexcept {
        notify(watchers_.load(std::memory_order_seq_cst), true);
    }

    // As notify_one(), for an event count constructed with `asymmetric`, after a state change
    // that was a plain (release) store. One plain load when nobody waits. Acquire: a notifier
    // that sees a registration also sees the waiter's read of epoch_ before it (so its bump is
    // not mistaken for the value the waiter will sleep on).
    FRAMEPIPE_ALWAYS_INLINE void notify_one_asymmetric() noexcept {
        asymmetric_barrier::light();
        notify(watchers_.load(std::memory_order_acquire), false);
    }

    // Waits until ready() holds (returns ready), `deadline` passes (timed_out) or `*stop` is
    // requested (stopped; a stop request wins over readiness once parked). Spins first (see
    // spin_budget), then parks. ready() must read only atomics (the caller holds no lock) and
    // be exact. Any thread; blocks; noexcept when ready() is.
    template <class Ready>
    [[nodiscard]] wait_end wait(const std::stop_token* stop,
                                const std::optional<clock::time_point>& deadline,
                                Ready ready) noexcept(noexcept(ready())) {
        return wait(stop, deadline, ready, ready);
    }

    // As wait(stop, deadline, ready), with a cheaper predicate for the spin phase. spin_ready()
    // may miss a change (say, one that only another cache line shows), never report one that
    // did not happen; ready(), checked before parking, must be exact.
    template <class SpinReady, class Ready>
    [[nodiscard]] wait_end wait(const std::stop_token* stop,
                                const std::optional<clock::time_point>& deadline,
                                SpinReady spin_ready,
                                Ready ready) noexcept(noexcept(ready()) && noexcept(spin_ready())) {
        // spin_ready() alone: ready() may read lines the caller's partner writes (a ring's
        // tail), and is checked before parking anyway.
        if (spin_ready()) {
            return wait_end::ready;
        }
        // The clock is read every 32 pauses (a pause is 10-150 cycles depending on the core), so
        // the budget is kept to within a microsecond or so when spin_ready() costs a few loads
        // (wait_costly() is for one that costs more).
        auto spin_end = clock::now() + spin_for();
        if (deadline && *deadline < spin_end) {
            spin_end = *deadline;
        }
        if (spin_yields) [[unlikely]] {
            // Out of line: what every blocking call inlines is the pausing loop alone.
            if (const auto end = spin_yielding(stop, spin_end, spin_ready)) {
                return *end;
            }
            return park(stop, deadline, ready);
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
        return park(stop, deadline, ready);
    }

    // As wait(stop, deadline, ready), for a ready() that costs more than a few loads (a
    // selector's, which probes every input): wait() reads the clock once per 32 calls, so its
    // spin would last 32 calls of ready() whatever the budget. Here the clock is read after
    // every call, so the spin keeps to its budget, and a deadline already past parks at once
    // (park() looks once more and returns; no sleep). Any thread; blocks; noexcept when ready()
    // is.
    template <class Ready>
    [[nodiscard]] wait_end wait_costly(const std::stop_token* stop,
                                       const std::optional<clock::time_point>& deadline,
                                       Ready ready) noexcept(noexcept(ready())) {
        if (ready()) {
            return wait_end::ready;
        }
        auto spin_end = clock::now() + spin_for();
        if (deadline && *deadline < spin_end) {
            spin_end = *deadline;
        }
        if (spin_yields) [[unlikely]] {
            if (const auto end = spin_yielding(stop, spin_end, ready)) {
                return *end;
            }
            return park(stop, deadline, ready);
        }
        while (clock::now() < spin_end) {
            cpu_relax();
            if (ready()) {
                return wait_end::ready;
            }
            if (stop != nullptr && stop->stop_requested()) {
                return wait_end::stopped;
            }
        }
        return park(stop, deadline, ready);
    }

    // The spin phase of a thread whose spin_yields is set: yields between checks, and reads the
    // clock after every yield. ready or stopped; nullopt when the budget ran out (then park).
    template <class SpinReady>
    FRAMEPIPE_NOINLINE static std::optional<wait_end>
    spin_yielding(const std::stop_token* stop, clock::time_point spin_end,
                  SpinReady& spin_ready) noexcept(noexcept(spin_ready())) {
        for (;;) {
            std::this_thread::yield();
            if (spin_ready()) {
                return wait_end::ready;
            }
            if (stop != nullptr && stop->stop_requested()) {
                return wait_end::stopped;
            }
            if (clock::now() >= spin_end) {
                return std::nullopt;
            }
        }
    }

    // As wait(), without the spin phase: for waits whose end is a time (rate_limiter) or that
    // are known to be long.
    template <class Ready>
    [[nodiscard]] wait_end park(const std::stop_token* stop,
                                const std::optional<clock::time_point>& deadline,
                                Ready ready) noexcept(noexcept(ready())) {
        // The callback bumps epoch_ and wakes every sleeper; it takes no lock, so it may run
        // inline in this constructor or on another thread at any point below. Its destructor
        // waits for a callback running on another thread, so `this` outlives it.
        std::optional<std::stop_callback<wake_on_stop>> on_stop;
        if (stop != nullptr && stop->stop_possible()) {
            on_stop.emplace(*stop, wake_on_stop{this});
        }
        wait_end end = wait_end::ready;
        for (;;) {
            if (deadline && clock::now() >= *deadline) {
                end = ready() ? wait_end::ready : wait_end::timed_out;
                break;
            }
            // Acquire: a seen value written by a stop callback's bump comes with the stop
            // request that preceded it, so the check below cannot miss that request.
            const std::uint32_t seen = epoch_.load(std::memory_order_acquire);
            watchers_.fetch_add(1, std::memory_order_seq_cst); // see the class comment
            ++this_thread_waits.parks;
            if (asymmetric_) {
                const auto before = clock::now();
                asymmetric_barrier::heavy(); // pairs with notify_one_asymmetric()
                // Relaxed: only a hint for the next wait's spin (see asymmetric_spin_cap).
                park_cost_ns_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        clock::now() - before)
                                        .count(),
                                    std::memory_order_relaxed);
            }
            if (stop != nullptr && stop->stop_requested()) {
                watchers_.fetch_sub(1, std::memory_order_relaxed);
                end = wait_end::stopped;
                break;
            }
            if (ready()) {
                watchers_.fetch_sub(1, std::memory_order_relaxed);
                break;
            }
            ++this_thread_waits.sleeps;
            FRAMEPIPE_DETAIL_PARK_HOOK(); // a test seam (detail/config.hpp)
            sleep(seen, deadline);
            // Relaxed: the count only has to be exact eventually; a notifier that still sees
            // this thread counted makes one spare wake-up.
            watchers_.fetch_sub(1, std::memory_order_relaxed);
            // A wake-up usually means ready: look before registering again, which in the
            // asymmetric mode costs another barrier. Leaving on what it sees needs no barrier
            // (only a decision to sleep does). A stop request is looked at first, as above.
            if (asymmetric_ && (stop == nullptr || !stop->stop_requested()) && ready()) {
                break;
            }
        }
        // A waiter leaving without taking what it was woken for may have absorbed a notify_one
        // meant for another waiter: pass it on.
        if (end != wait_end::ready && ready()) {
            notify_one();
        }
        return end;
    }

    // How long the next wait spins before it parks: spin_budget, or for an asymmetric event
    // count what its last park's membarrier cost, within [spin_budget, asymmetric_spin_cap].
    // Any thread; wait-free.
    [[nodiscard]] std::chrono::nanoseconds spin_for() const noexcept {
        if (!asymmetric_) {
            return spin_budget;
        }
        return std::clamp(std::chrono::nanoseconds(park_cost_ns_.load(std::memory_order_relaxed)),
                          spin_budget, asymmetric_spin_cap);
    }

    // Adds `l`: from now on every notification also calls l.target->notify_one(). `l` must stay
    // alive and attached to no other event count until detach(l). Any thread; never blocks
    // beyond a short internal lock; noexcept. A notification that raced with attach may not
    // reach the listener: a selector attaches first, then looks at the channel, then waits.
    void attach(event_listener& l) noexcept {
        lock_list();
        l.next = listeners_;
        listeners_ = &l;
        unlock_list();
        // seq_cst: ordered before the attaching thread's own later look at the channel.
        watchers_.fetch_add(one_listener, std::memory_order_seq_cst);
    }

    // Removes `l`. Once this returns, no notification touches `l` or its target. Any thread;
    // waits only for a notification that is calling the listeners right now; noexcept.
    void detach(event_listener& l) noexcept {
        watchers_.fetch_sub(one_listener, std::memory_order_seq_cst);
        lock_list();
        for (event_listener** at = &listeners_; *at != nullptr; at = &(*at)->next) {
            if (*at == &l) {
                *at = l.next;
                break;
            }
        }
        l.next = nullptr;
        unlock_list();
    }

    // Listeners attached now. Any thread; wait-free.
    [[nodiscard]] std::size_t listeners() const noexcept {
        return to<std::size_t>(watchers_.load(std::memory_order_relaxed) >> 32);
    }

private:
    // watchers_ = parked waiters + attached listeners << 32.
    static constexpr std::uint64_t one_listener = std::uint64_t{1} << 32;
    static constexpr std::uint64_t sleeper_mask = one_listener - 1;

    struct wake_on_stop {
        event_count* self;
        void operator()() const noexcept { self->wake_sleepers(true); }
    };

    FRAMEPIPE_ALWAYS_INLINE void notify(std::uint64_t watchers, bool all) noexcept {
        if (watchers != 0) {
            wake(watchers, all);
        }
    }

    // The slow path: kept out of the inlined notify.
    FRAMEPIPE_NOINLINE void wake(std::uint64_t watchers, bool all) noexcept {
        FRAMEPIPE_DETAIL_WAKE_HOOK(); // a test seam (detail/config.hpp)
        if ((watchers & sleeper_mask) != 0) {
            wake_sleepers(all);
        }
        if (watchers >= one_listener) {
            lock_list();
            for (event_listener* l = listeners_; l != nullptr; l = l->next) {
                l->target->notify_one();
            }
            unlock_list();
        }
    }

    void wake_sleepers(bool all) noexcept {
        // Release: a waiter that reads the new epoch also sees what the notifier did before.
        epoch_.fetch_add(1, std::memory_order_release);
#if FRAMEPIPE_DETAIL_LINUX
        // The futex word is the atomic's own storage (a lock-free 32-bit atomic is a plain word).
        ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&epoch_), FUTEX_WAKE_PRIVATE,
                  all ? INT_MAX : 1, nullptr, nullptr, 0);
#else
        { const std::lock_guard<std::mutex> guard(mu_); }
        if (all) {
            cv_.notify_all();
        } else {
            cv_.notify_one();
        }
#endif
    }

    // Sleeps while epoch_ == seen, until woken or the deadline. Returns early now and then
    // (signals, spurious wake-ups); the caller re-checks.
    void sleep(std::uint32_t seen, const std::optional<clock::time_point>& deadline) noexcept {
#if FRAMEPIPE_DETAIL_LINUX
        static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
                      "event_count: the futex word must be a plain 32-bit word");
        auto* const word = reinterpret_cast<std::uint32_t*>(&epoch_);
        std::int64_t ns = -1; // no timeout
        if (deadline) {
            const auto left = *deadline - clock::now();
            if (left <= clock::duration::zero()) {
                return;
            }
            // At most an hour per sleep (the caller loops), so any deadline fits a timespec.
            ns = std::min<std::int64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(left).count(),
                std::int64_t{3600} * 1'000'000'000);
        }
        // Not glibc's timespec: with -D_TIME_BITS=64 on a 32-bit target its tv_sec has 64 bits,
        // where SYS_futex reads the kernel's old 32-bit timespec (nanoseconds 0: no sleep at all).
#if defined(SYS_futex_time64)
        if constexpr (sizeof(long) == 4) {
            struct {
                std::int64_t tv_sec, tv_nsec;
            } t64{ns / 1'000'000'000, ns % 1'000'000'000}; // the kernel's __kernel_timespec
            if (::syscall(SYS_futex_time64, word, FUTEX_WAIT_PRIVATE, seen, ns < 0 ? nullptr : &t64,
                          nullptr, 0) == 0 ||
                errno != ENOSYS) {
                return;
            }
            // A kernel before 5.1 has no futex_time64: the old call (an hour fits its 32 bits).
        }
#endif
        // __kernel_long_t: long, except on x32, whose SYS_futex takes 64-bit fields too.
        struct {
            __kernel_long_t tv_sec, tv_nsec;
        } t{to<__kernel_long_t>(ns / 1'000'000'000), to<__kernel_long_t>(ns % 1'000'000'000)};
        ::syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, ns < 0 ? nullptr : &t, nullptr, 0);
#else
        std::unique_lock<std::mutex> lock(mu_);
        while (epoch_.load(std::memory_order_acquire) == seen) {
            if (!deadline) {
                cv_.wait(lock);
            } else {
                // At most an hour per wait, as on Linux: a far deadline, converted to the clock
                // the condition variable waits on, could overflow.
                const auto until = std::min(*deadline, clock::now() + std::chrono::hours(1));
                if (cv_.wait_until(lock, until) == std::cv_status::timeout) {
                    return;
                }
            }
        }
#endif
    }

    // The listener list's lock: held for a few pointer operations (and, by a notifier, while it
    // notifies the listeners), so a spin with backoff; a mutex would make notify able to throw.
    void lock_list() noexcept {
        unsigned spins = 0;
        while (list_lock_.exchange(true, std::memory_order_acquire)) {
            backoff(spins);
        }
    }
    void unlock_list() noexcept { list_lock_.store(false, std::memory_order_release); }

    const bool asymmetric_ = false; // waiters pay asymmetric_barrier::heavy()
    // Read by every notify; written only when a thread parks or a listener attaches, so on the
    // fast path its line stays shared in every core's cache.
    std::atomic<std::uint64_t> watchers_{0};
    std::atomic<std::uint32_t> epoch_{0}; // the futex word
    std::atomic<bool> list_lock_{false};
    event_listener* listeners_ = nullptr; // guarded by list_lock_
    // What the last park's membarrier took (asymmetric mode only; see spin_for()). Written only
    // by parking waiters, so on the fast path its line stays shared.
    std::atomic<std::int64_t> park_cost_ns_{0};
#if !FRAMEPIPE_DETAIL_LINUX
    std::mutex mu_;
    std::condition_variable cv_;
#endif
};

} // namespace framepipe::detail
