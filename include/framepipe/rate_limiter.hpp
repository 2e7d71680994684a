// framepipe/rate_limiter.hpp - admits at most `hz` events per second, without drift.
//
//     framepipe::rate_limiter ui_rate(15);              // 30 fps in, 15 fps to the UI
//     for (auto& f : frames) if (ui_rate.try_acquire()) send_to_ui(f);
//
// How it decides. Time is cut into slots of 1/hz, anchored at the first call, and one token is
// added at the start of each slot, up to `burst` tokens; an event is admitted when a token is
// there. Because the slots are anchored, not restarted at each admission, the long-run rate is
// exact whatever the arrival pattern:
// - a steady 30 fps source decimated to 15, 10 or 5 fps gets exactly every 2nd, 3rd or 6th frame;
// - 30 to 7 fps admits 7 a second, for ever, with no drift (gaps of 4 or 5 source frames);
// - with jittered arrivals (30 fps +-5 ms) a 15 fps target still averages 15 fps.
// The naive rule `now - last_admitted >= 1/hz` restarts the clock at every admission and so
// loses the part of a frame interval by which each admitted frame came late: it decimates 30 to
// 7 fps as 6 fps, and a jittered 30 fps source to 15 fps as about 11 fps.
//
// Bound. In any interval of length L, admitted <= floor(hz * L) + burst + 1. The "+1" is the
// price of no drift: a frame admitted late in its slot can be followed by one at the start of
// the next. (A limiter that keeps every pair of admissions 1/hz apart cannot keep its average
// with arrivals that do not line up with its period; that is the naive rule above.)
//
// Slot boundaries are widened by 1/1000 of a period to absorb clock rounding: timestamps of a
// 30 fps source rounded to the nanosecond or microsecond would otherwise land a hair before the
// boundary they belong to.
//
// Thread safety: every member may be called from any thread. try_acquire() is lock-free on its
// usual path: it reads the clock once and decides on a 64-bit word holding (index of the next
// slot boundary, tokens). The first thread to admit owns the limiter and stores its decisions
// with a plain store; once another thread finds a token, every thread decides with one
// compare-and-swap, for good (see "One writer, or many" below). A call that finds no token on
// that path writes nothing. Setting the rate, the very first call, and the few calls that cross
// the boundary at which a new rate takes effect go through a mutex instead (see "How the word and
// the mutex share the work" below). Only acquire() waits. One process only (not in memory shared
// with another: a child made by fork() shares its parent's thread tags), and not
// async-signal-safe (a handler interrupting the owner's section would run another inside it).
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/detail/wait.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>

namespace framepipe {

namespace detail {
struct rate_limiter_access; // tests only: who may write the word (see rate_limiter::owner_)
} // namespace detail

class rate_limiter {
public:
    using clock = std::chrono::steady_clock;

    // At most `hz` admissions per second, and at most `burst` in a row after an idle spell.
    // Throws std::invalid_argument naming `hz` when it is <= 0, NaN, infinite, above 1e9 (one
    // per nanosecond) or so small that its period overflows; naming `burst` when it is 0 or
    // above 2^32 - 1.
    explicit rate_limiter(double hz, std::size_t burst = 1)
        : burst_(check_burst(burst)), token_bits_(detail::to<unsigned>(std::bit_width(burst_))),
          token_mask_((std::uint64_t{1} << token_bits_) - 1),
          max_next_k_((std::uint64_t{1} << (63 - token_bits_)) - 1),
          period_ns_(period_of(hz)), inverse_period_(1.0 / period_ns_.load()), hz_(hz),
          state_(slow_bit | burst_) {}

    // Moves the limiter's whole state (rate, slots, tokens) into a new one, so that a limiter
    // can be built in place and handed over, or captured by a stage's lambda. No thread may be
    // using `other` meanwhile. Never throws.
    rate_limiter(rate_limiter&& other) noexcept
        : burst_(other.burst_), token_bits_(other.token_bits_), token_mask_(other.token_mask_),
          max_next_k_(other.max_next_k_),
          anchor_ns_(other.anchor_ns_.load(std::memory_order_relaxed)),
          period_ns_(other.period_ns_.load(std::memory_order_relaxed)),
          inverse_period_(other.inverse_period_.load(std::memory_order_relaxed)),
          k0_(other.k0_.load(std::memory_order_relaxed)),
          hz_(other.hz_.load(std::memory_order_relaxed)),
          state_(other.state_.load(std::memory_order_relaxed)),
          pending_period_(other.pending_period_), started_(other.started_),
          locked_mode_(other.locked_mode_), locked_next_k_(other.locked_next_k_),
          locked_tokens_(other.locked_tokens_) {}

    rate_limiter(const rate_limiter&) = delete;
    rate_limiter& operator=(const rate_limiter&) = delete;
    rate_limiter& operator=(rate_limiter&&) = delete;

    // Whether an event now may pass (it then uses a token). Any thread; never waits for a token
    // (acquire() does): lock-free except on the rare calls described above, which take a mutex briefly, and the first call
    // that finds a token on a thread that does not own the limiter, which also makes one
    // membarrier call (microseconds; see "One writer, or many") and waits for the owner's
    // section under way (a few instructions; backing off to sleeps if the owner was preempted
    // there). Reads steady_clock::now() once.
    // Never throws in practice (std::mutex::lock on the rare path).
    [[nodiscard]] bool try_acquire() { return try_acquire(clock::now()); }

    // The same decision at an explicit time point, so that decisions can be replayed and
    // simulated. Time points should not go backwards; one that does is treated as falling in the
    // current slot. Any time point is accepted, time_point::min() and max() included; slot
    // boundaries more than 9e18 slots after the anchor never pass. Any thread; never waits (as
    // try_acquire()).
    [[nodiscard]] bool try_acquire(clock::time_point now) {
        const void* const me = detail::this_thread_tag();
        if (owner_.load(std::memory_order_relaxed) == me) [[likely]] {
            const owned r = try_acquire_owned(now, me);
            if (r != owned::elsewhere) {
                return r == owned::admitted;
            }
        }
        return try_acquire_shared(now, me);
    }

    // Waits until an event may pass and takes its token: paces a loop at the rate. Any thread.
    // Blocks: parks (no spinning) until the next slot begins, a set_rate() or `stop`. Once the
    // slot index has saturated (see try_acquire(time_point)), no slot begins again, set_rate()
    // included (a new rate applies from the next slot): only `stop` ends the wait. Returns
    // true when admitted, false when `stop` is requested first. Never throws in practice
    // (std::mutex::lock, briefly, to read when the next slot begins).
    [[nodiscard]] bool acquire(std::stop_token stop = {}) {
        for (;;) {
            if (stop.stop_requested()) {
                return false;
            }
            if (try_acquire(clock::now())) {
                return true;
            }
            // Acquire: pairs with set_rate(); a change after this read ends the wait below.
            const std::uint64_t seen = rate_changes_.load(std::memory_order_acquire);
            clock::time_point next_slot;
            {
                const std::lock_guard<std::mutex> lock(mu_);
                next_slot = next_slot_locked();
            }
            const auto end = rate_changed_.park(&stop, next_slot, [&]() noexcept {
                return rate_changes_.load(std::memory_order_acquire) != seen;
            });
            if (end == detail::wait_end::stopped) {
                return false;
            }
        }
    }

    // Changes the rate. The slot under way at `now` keeps its length; the new rate applies from
    // the next slot. Before the first acquire there is no slot yet, so it applies at once. Pass
    // the same kind of time points as to try_acquire(time_point) when simulating.
    // Any thread; never waits for a token. Takes a brief lock; from a thread other than the
    // owner, also one membarrier call, which pauses the owner without taking the limiter from
    // it, and a wait for the owner's section under way (as try_acquire()). Throws
    // std::invalid_argument naming `hz` as the constructor does; the rate is then unchanged.
    void set_rate(double hz, clock::time_point now) {
        const double period = period_of(hz);
        {
            const std::lock_guard<std::mutex> lock(mu_);
            const void* const paused = pause_owner_locked(detail::this_thread_tag());
            slot_state st = freeze_locked();
            if (!started_) {
                set_period_locked(period);
            } else {
                refill_locked(now, st); // settle the slots up to now under the old rate
                pending_period_ = period;
            }
            hz_.store(hz, std::memory_order_relaxed);
            publish_locked(st);
            if (paused != nullptr) {
                // Release: the owner's next section reads the word published above.
                owner_.store(paused, std::memory_order_release);
            }
            rate_changes_.fetch_add(1, std::memory_order_release);
        }
        rate_changed_.notify_all();
    }

    // set_rate(hz, steady_clock::now()).
    void set_rate(double hz) { set_rate(hz, clock::now()); }

    // The rate set last. Any thread; wait-free.
    [[nodiscard]] double rate() const noexcept { return hz_.load(std::memory_order_relaxed); }

    // The burst size. Any thread; wait-free.
    [[nodiscard]] std::size_t burst() const noexcept { return burst_; }

private:
    friend struct detail::rate_limiter_access;

    // How the word and the mutex share the work.
    //
    // state_ packs (next_k << token_bits_) | tokens, plus slow_bit. next_k is the index of the next
    // slot boundary, counted from the first call for the limiter's whole life (it never goes back,
    // not even when the rate changes). The configuration that turns an index into a time, boundary
    // k at anchor_ns_ + (k - k0_) * period_ns_ (widened by period/1000), changes only under mu_ and
    // only while slow_bit is set; the slow path sets slow_bit with a compare-and-swap before it
    // touches the configuration and clears it last. So a lock-free call that read a configuration
    // newer than its word fails its compare-and-swap, and a word with a given next_k never
    // reappears under another configuration (a new rate takes effect at a boundary, which next_k
    // passes). The owner's section, which stores the word instead, never overlaps a slow path: one
    // on another thread pauses the owner or takes the limiter over first (see "One writer, or
    // many"). slow_bit stays set while the limiter has not started, while a new rate waits for the
    // next boundary, and for good if next_k outgrows its bits (63 - bit_width(burst) bits: at 1 GHz
    // with burst 1, centuries).
    static constexpr std::uint64_t slow_bit = std::uint64_t{1} << 63;

    // One writer, or many. Beyond the clock read, an admission's cost is mostly its
    // compare-and-swap, and most limiters are used by one thread (a stage's loop). So the first
    // thread whose try_acquire() writes the word becomes its owner (owner_ holds its tag) and
    // decides inside a section: it marks owner_busy_, checks that it still owns the limiter, and
    // stores the new word with a plain store. Any other thread that must write the word (to admit,
    // or on the slow path) takes it over first, under mu_: it stores revoking_mark() in owner_ and
    // runs asymmetric_barrier::heavy(), after which either the owner's mark is visible (it waits
    // for the section to end) or the owner's check comes later and fails; then it stores
    // shared_mark(), and from then on every thread uses the compare-and-swap. set_rate() from
    // another thread pauses the owner the same way and gives the limiter back. Taking over costs
    // the taker one membarrier call (1-20 us), once; the owner's section costs two stores and no
    // fence. Where membarrier is missing, nobody becomes the owner: the section would need a fence,
    // which costs about what the compare-and-swap does. A call that finds no token on the lock-free
    // path writes nothing, so a thread whose calls find none there never takes the limiter over;
    // a call on the slow path (under mu_) takes it over whatever it decides. The taker waits for
    // the owner's section with detail::backoff, whose sleeps let a preempted owner of lower
    // (real-time) priority finish.

    struct slot_state {
        std::uint64_t next_k;
        std::uint64_t tokens;
    };

    static double period_of(double hz) {
        if (!(hz > 0.0) || !std::isfinite(hz)) {
            throw std::invalid_argument("hz: must be a finite rate above 0");
        }
        const double period = 1e9 / hz;
        if (!(period >= 1.0)) {
            throw std::invalid_argument("hz: must be at most 1e9 (one event per nanosecond)");
        }
        if (!std::isfinite(period)) {
            throw std::invalid_argument("hz: too small (its period in nanoseconds overflows)");
        }
        return period;
    }

    static std::uint32_t check_burst(std::size_t burst) {
        if (burst == 0 || burst > UINT32_MAX) {
            throw std::invalid_argument("burst: must be between 1 and 2^32 - 1");
        }
        return static_cast<std::uint32_t>(burst);
    }

    [[nodiscard]] static std::int64_t ns_of(clock::time_point t) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }

    // The largest slot index, counted from an anchor, that last_passed() returns: 9e18, exact as
    // a double, far beyond what the packed word holds, and below 2^63 (converts to int64).
    static constexpr double max_last_pos = 9.0e18;
    static constexpr std::uint64_t max_last = 9'000'000'000'000'000'000;

    // base + ns (ns >= 0, rounded to nearest), clamped to INT64_MAX (the clock's last time point)
    // instead of overflowing.
    [[nodiscard]] static std::int64_t advance(std::int64_t base, double ns) noexcept {
        // INT64_MAX - base, exact in uint64 for any base.
        const std::uint64_t room =
            static_cast<std::uint64_t>(INT64_MAX) - static_cast<std::uint64_t>(base);
        std::uint64_t d = 0;
        if (ns < max_last_pos) {
            d = static_cast<std::uint64_t>(std::llround(ns));
        } else if (ns < 1.8e19) { // below 2^64
            d = static_cast<std::uint64_t>(ns + 0.5);
        } else {
            return INT64_MAX;
        }
        // Modulo 2^64: the sum is in range (d <= room), so it is base + d.
        return d > room ? INT64_MAX
                        : static_cast<std::int64_t>(static_cast<std::uint64_t>(base) + d);
    }

    // now_ns - anchor as a double, without overflowing: the int64 difference, or for time points
    // more than 292 years apart the uint64 one (or -1.0, as good as any time before the anchor,
    // when now_ns is the earlier).
    [[nodiscard]] static double ns_since(std::int64_t now_ns, std::int64_t anchor) noexcept {
        std::int64_t d = 0;
#if defined(__GNUC__) || defined(__clang__)
        const bool overflow = __builtin_sub_overflow(now_ns, anchor, &d);
#else
        d = static_cast<std::int64_t>(static_cast<std::uint64_t>(now_ns) -
                                      static_cast<std::uint64_t>(anchor)); // modulo 2^64
        const bool overflow = (d < 0) != (now_ns < anchor);
#endif
        if (overflow) [[unlikely]] {
            return now_ns < anchor ? -1.0
                                   : static_cast<double>(static_cast<std::uint64_t>(now_ns) -
                                                         static_cast<std::uint64_t>(anchor));
        }
        return static_cast<double>(d);
    }

    // The configuration that turns boundary indices into times (see above).
    struct config {
        std::int64_t anchor; // ns since the clock's epoch of boundary k0
        double period;       // ns
        double inverse;      // 1 / period, so that the usual path multiplies instead of dividing
        std::uint64_t k0;

        // The index (counted from k0) of the last boundary passed at `now_ns` if boundary
        // `local_next` (>= 1) has passed, else 0. Boundaries are widened by period/1000 for clock
        // rounding: timestamps of a 30 fps source rounded to the nanosecond or microsecond would
        // otherwise land a hair before the boundary they belong to. (Exact to well under a
        // nanosecond for the first few weeks after an anchor, which moves at every rate change.)
        [[nodiscard]] std::uint64_t last_passed(std::int64_t now_ns,
                                                std::uint64_t local_next) const noexcept {
            // Slots since the anchor. A multiplication by the cached inverse, not a division: it
            // can differ from since / period only in the last bit, and only a time point within
            // a few hundredths of a picosecond of a (widened) boundary could tell the difference.
            const double pos = (ns_since(now_ns, anchor) + period * 1e-3) * inverse;
            // local_next <= max_last + 1 < 2^63 (no index returned exceeds max_last): the
            // conversion to int64 is exact.
            if (!(pos >= static_cast<double>(static_cast<std::int64_t>(local_next)))) {
                return 0; // still in the current slot (or time went backwards)
            }
            // Truncation is floor here (pos >= 1). Centuries ahead, the index saturates at
            // max_last (the caller then goes slow: it is beyond what the word holds).
            const std::uint64_t last =
                pos < max_last_pos ? static_cast<std::uint64_t>(static_cast<std::int64_t>(pos))
                                   : max_last;
            // Not below local_next: a double that rounded local_next down (beyond 2^53 slots) or
            // the saturation must not move the schedule back.
            return last >= local_next ? last : 0;
        }
    };

    // The configuration, each field loaded with `order`.
    [[nodiscard]] config load_config(std::memory_order order) const noexcept {
        return {anchor_ns_.load(order), period_ns_.load(order), inverse_period_.load(order),
                k0_.load(order)};
    }

    // The lock-free path's view of `word` at `now`: the boundaries passed since add one token
    // each, up to burst. A next_k above max_next_k_ does not fit the word (the slow path decides).
    [[nodiscard]] FRAMEPIPE_ALWAYS_INLINE slot_state
    refilled(std::uint64_t word, const config& cfg, clock::time_point now) const noexcept {
        slot_state st{word >> token_bits_, word & token_mask_};
        const std::uint64_t last = cfg.last_passed(ns_of(now), st.next_k - cfg.k0);
        if (last != 0) {
            // Boundaries next_k .. k0 + last have passed.
            st.tokens =
                std::min<std::uint64_t>(burst_, st.tokens + (cfg.k0 + last - st.next_k + 1));
            st.next_k = cfg.k0 + last + 1;
        }
        return st;
    }

    // --- Who may write state_ (see "One writer, or many" above). ---

    enum class owned { rejected, admitted, elsewhere };

    // try_acquire() on the owner's thread: the decision of the lock-free path, stored with a plain
    // store instead of a compare-and-swap, inside the section that owner_busy_ marks. elsewhere:
    // the limiter is no longer (or not now) the caller's, or the word needs the slow path.
    FRAMEPIPE_ALWAYS_INLINE owned try_acquire_owned(clock::time_point now,
                                                    const void* me) noexcept {
        // A takeover may complete between the caller's check of owner_ and the store below (it
        // finds no section to wait for): the check after light() is what sends this call away.
        FRAMEPIPE_DETAIL_OWNER_ENTRY_HOOK();
        // Relaxed: a revoker reads owner_busy_ only after its heavy barrier; light() keeps the
        // compiler from moving the load of owner_ above this store.
        owner_busy_.store(true, std::memory_order_relaxed);
        detail::asymmetric_barrier::light();
        owned r = owned::elsewhere;
        // Acquire: pairs with the release by which set_rate() from another thread gives the
        // limiter back, so that the word read below is the one it published, not an older one
        // (relaxed would be enough on x86, not on ARM or POWER, where a later load may be
        // satisfied first).
        if (owner_.load(std::memory_order_acquire) == me) [[likely]] {
            // Acquire: the configuration a slow path stored before this word is visible. No other
            // thread writes the word while the section lasts (a writer revokes first and waits).
            const std::uint64_t word = state_.load(std::memory_order_acquire);
            FRAMEPIPE_DETAIL_OWNED_ADMIT_HOOK();
            if ((word & slow_bit) == 0) {
                // Relaxed: the acquire load of the word above ordered them.
                const slot_state st = refilled(word, load_config(std::memory_order_relaxed), now);
                if (st.next_k <= max_next_k_) { // else the slow path: the index would overflow
                    if (st.tokens == 0) {
                        r = owned::rejected;
                    } else {
                        // Release: a thread that reads this word reads its configuration.
                        state_.store((st.next_k << token_bits_) | (st.tokens - 1),
                                     std::memory_order_release);
                        r = owned::admitted;
                    }
                }
            }
        }
        // Release: a revoker that reads false reads the store of state_ above.
        owner_busy_.store(false, std::memory_order_release);
        return r;
    }

    // try_acquire() for a thread that is not the owner, or an owner sent elsewhere. Out of line,
    // so that the owner's path inlined into a caller's loop stays small (no registers to save).
    FRAMEPIPE_NOINLINE bool try_acquire_shared(clock::time_point now, const void* me) {
        // Acquire: the configuration stored before this word (see publish_locked) is visible.
        std::uint64_t word = state_.load(std::memory_order_acquire);
        for (;;) {
            if ((word & slow_bit) != 0) {
                return try_acquire_slow(now, me);
            }
            FRAMEPIPE_DETAIL_SHARED_DECIDE_HOOK();
            // Acquire loads: if any of them returns a value stored by a later configuration, the
            // slow path had already set slow_bit in state_ (it does so before touching them), so
            // the re-read or the compare-and-swap below cannot match `word` and we start over.
            const slot_state st = refilled(word, load_config(std::memory_order_acquire), now);
            if (st.next_k > max_next_k_) {
                return try_acquire_slow(now, me); // the packed index would overflow
            }
            if (st.tokens == 0) {
                // No boundary passed and no token: reject without writing, if the word we
                // decided on is still current (then the decision was made on a consistent view).
                const std::uint64_t again = state_.load(std::memory_order_acquire);
                if (again == word) {
                    return false;
                }
                word = again;
                continue;
            }
            // Acquire: pairs with the revoker's release of shared_mark(); the owner's last store
            // of the word is visible (the compare-and-swap below would reload it anyway).
            const void* const owner = owner_.load(std::memory_order_acquire);
            if (owner != me && owner != shared_mark()) [[unlikely]] {
                take_write_right(me);
                if (owner_.load(std::memory_order_relaxed) == me) {
                    return try_acquire(now); // the caller owns the limiter now
                }
                word = state_.load(std::memory_order_acquire);
                continue;
            }
            const std::uint64_t desired = (st.next_k << token_bits_) | (st.tokens - 1);
            // acq_rel on success: orders this admission with the others (the counts in the word
            // are the whole state); acquire on failure: `word` is reloaded for the next attempt.
            if (state_.compare_exchange_weak(word, desired, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
                return true;
            }
        }
    }

    // The sentinels of owner_ besides nullptr (no owner yet) and a thread's tag.
    static constexpr char marks_[2] = {};
    [[nodiscard]] static const void* shared_mark() noexcept { return &marks_[0]; }   // shared
    [[nodiscard]] static const void* revoking_mark() noexcept { return &marks_[1]; } // revoking

    // Lets `me` write state_ (a compare-and-swap), out of line: taken once per thread at most.
    FRAMEPIPE_NOINLINE void take_write_right(const void* me) {
        const std::lock_guard<std::mutex> lock(mu_);
        claim_locked(me);
    }

    // --- Everything below requires mu_. ---

    // Makes `me` free to write state_: it is the owner already, or the first writer (it becomes
    // the owner, where membarrier makes the owner's section cheap), or the limiter is shared; a
    // second writer makes it shared for good, after the owner has left its section.
    void claim_locked(const void* me) noexcept {
        const void* const owner = owner_.load(std::memory_order_relaxed);
        if (owner == me || owner == shared_mark()) {
            return;
        }
        // enable(): membarrier is there (registered now, before the owner's first section), so
        // the section needs no fence.
        if (owner == nullptr && detail::asymmetric_barrier::enable()) {
            owner_.store(me, std::memory_order_relaxed); // its first section is on this thread
            return;
        }
        if (owner != nullptr) {
            drain_owner_locked();
        }
        // Release: a thread that reads shared_mark() reads the owner's last store of the word.
        owner_.store(shared_mark(), std::memory_order_release);
    }

    // set_rate() from a thread that does not own the limiter: keeps the owner out of its section
    // while the word changes under slow_bit; returns the owner to put back, or nullptr.
    const void* pause_owner_locked(const void* me) noexcept {
        const void* const owner = owner_.load(std::memory_order_relaxed);
        if (owner == nullptr || owner == me || owner == shared_mark()) {
            return nullptr;
        }
        drain_owner_locked();
        return owner;
    }

    // Sends the owner's next sections elsewhere and waits for the one under way to end.
    void drain_owner_locked() noexcept {
        owner_.store(revoking_mark(), std::memory_order_relaxed);
        // Either the owner's store of owner_busy_ is visible after this barrier, or its load of
        // owner_ comes after it and sees revoking_mark() (it then leaves without writing).
        detail::asymmetric_barrier::heavy(); // pairs with light() in try_acquire_owned()
        unsigned spins = 0;
        // Acquire: pairs with the release that ends a section; its store of the word is visible.
        while (owner_busy_.load(std::memory_order_acquire)) {
            detail::backoff(spins); // a section is a few instructions
        }
    }

    void set_period_locked(double period) noexcept {
        period_ns_.store(period, std::memory_order_release);
        inverse_period_.store(1.0 / period, std::memory_order_release);
    }

    // Sets slow_bit (so that no lock-free call can change the word) and returns the state.
    slot_state freeze_locked() noexcept {
        if (locked_mode_) {
            return {locked_next_k_, locked_tokens_};
        }
        std::uint64_t word = state_.load(std::memory_order_relaxed);
        // acq_rel: acquire sees the admissions made so far; release orders this before the
        // configuration stores that follow (which the lock-free path reads with acquire).
        while (!state_.compare_exchange_weak(word, word | slow_bit, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
        }
        return {(word & ~slow_bit) >> token_bits_, word & token_mask_};
    }

    // Stores the state back; clears slow_bit when the lock-free path may run.
    void publish_locked(const slot_state& st) noexcept {
        if (!locked_mode_ && st.next_k > max_next_k_) {
            locked_mode_ = true; // the packed index would overflow: stay on the locked path
        }
        if (locked_mode_) {
            locked_next_k_ = st.next_k;
            locked_tokens_ = st.tokens;
            return; // state_ keeps slow_bit for good
        }
        const bool steady = started_ && !pending_period_;
        // Release: the configuration stored before is visible to whoever reads this word.
        state_.store((steady ? 0 : slow_bit) | (st.next_k << token_bits_) | st.tokens,
                     std::memory_order_release);
    }

    bool try_acquire_slow(clock::time_point now, const void* me) {
        const std::lock_guard<std::mutex> lock(mu_);
        claim_locked(me);
        slot_state st = freeze_locked();
        refill_locked(now, st);
        const bool admitted = st.tokens > 0;
        if (admitted) {
            --st.tokens;
        }
        publish_locked(st);
        return admitted;
    }

    // Adds one token per slot boundary passed since the last call, capped at burst_; applies a
    // pending rate at the first boundary it crosses. Boundary k (> k0_) is at
    // anchor_ns_ + (k - k0_) * period_ns_, widened by period/1000 for clock rounding.
    void refill_locked(clock::time_point now, slot_state& st) {
        if (!started_) {
            started_ = true;
            anchor_ns_.store(ns_of(now), std::memory_order_release);
            k0_.store(0, std::memory_order_release);
            st.next_k = 1;
            return;
        }
        for (;;) {
            const config cfg{anchor_ns_.load(std::memory_order_relaxed),
                             period_ns_.load(std::memory_order_relaxed),
                             inverse_period_.load(std::memory_order_relaxed),
                             k0_.load(std::memory_order_relaxed)};
            const std::uint64_t local_next = st.next_k - cfg.k0;
            const std::uint64_t last = cfg.last_passed(ns_of(now), local_next);
            if (last == 0) {
                return; // still in the current slot (or time went backwards)
            }
            if (pending_period_) {
                // Cross one boundary at the old rate, then re-anchor there at the new rate (at the
                // clock's last time point if the boundary is beyond it: it passed by widening).
                anchor_ns_.store(advance(cfg.anchor, static_cast<double>(local_next) * cfg.period),
                                 std::memory_order_release);
                set_period_locked(*pending_period_);
                pending_period_.reset();
                k0_.store(st.next_k, std::memory_order_release);
                ++st.next_k;
                st.tokens = std::min<std::uint64_t>(burst_, st.tokens + 1);
                continue;
            }
            st.tokens = std::min<std::uint64_t>(burst_, st.tokens + (last - local_next + 1));
            st.next_k = cfg.k0 + last + 1;
            return;
        }
    }

    // When the next token arrives (a hint for acquire(); lock-free admissions may have moved on).
    [[nodiscard]] clock::time_point next_slot_locked() const noexcept {
        const std::uint64_t next_k =
            locked_mode_ ? locked_next_k_
                         : (state_.load(std::memory_order_acquire) & ~slow_bit) >> token_bits_;
        const std::int64_t anchor = anchor_ns_.load(std::memory_order_relaxed);
        const double period = period_ns_.load(std::memory_order_relaxed);
        const std::uint64_t k0 = k0_.load(std::memory_order_relaxed);
        if (next_k - k0 > max_last) {
            // The index has saturated (see last_passed): no boundary passes again, and the one
            // computed below would lie in the past, a wait that ends at once, over and over.
            return clock::time_point::max();
        }
        // next_k > k0 once started (acquire() starts the limiter before it asks): at > 0.
        const double at = static_cast<double>(next_k - k0) * period - period * 1e-3;
        // time_point::max() when beyond the clock's range (a period of centuries: no slot in
        // sight).
        return clock::time_point(
            std::chrono::nanoseconds(advance(anchor, std::ceil(std::max(at, 0.0)))));
    }

    const std::uint32_t burst_;
    const unsigned token_bits_;       // bit_width(burst_): tokens never exceed burst_
    const std::uint64_t token_mask_;  // (1 << token_bits_) - 1
    const std::uint64_t max_next_k_;  // the largest next_k the word can hold

    // The line every try_acquire reads: the word and the configuration that interprets it. One
    // line, because a call needs all of them; the configuration changes only under mu_.
    alignas(detail::cache_line) std::atomic<std::int64_t> anchor_ns_{0}; // boundary k0_, in ns since the epoch
    std::atomic<double> period_ns_;                       // current slot length
    std::atomic<double> inverse_period_;                  // 1 / period_ns_
    std::atomic<std::uint64_t> k0_{0};                    // index of the anchor boundary
    std::atomic<double> hz_;                              // the rate set last (for rate())
    std::atomic<std::uint64_t> state_;                    // slow_bit | next_k | tokens
    // Who may write state_: nullptr (nobody has yet), the owner's thread tag, revoking_mark() or
    // shared_mark(). Read by every call, written a few times in the limiter's life.
    std::atomic<const void*> owner_{nullptr};

    // The owner is inside a section (try_acquire_owned). Written twice per call of the owner, so
    // on a line of its own: other threads' calls read the line above and never this one.
    alignas(detail::cache_line) std::atomic<bool> owner_busy_{false};

    // The slow path and acquire()'s sleepers, on their own lines.
    alignas(detail::cache_line) mutable std::mutex mu_;
    std::atomic<std::uint64_t> rate_changes_{0}; // set_rate() calls: ends acquire()'s waits
    detail::event_count rate_changed_;           // threads inside acquire() park here
    std::optional<double> pending_period_;    // set_rate() waiting for the next boundary
    bool started_ = false;
    bool locked_mode_ = false;                // state lives in the two fields below for good
    std::uint64_t locked_next_k_ = 0;
    std::uint64_t locked_tokens_ = 0;
};

} // namespace framepipe
