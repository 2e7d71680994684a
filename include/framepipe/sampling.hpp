// framepipe/sampling.hpp - send the expensive stage only the frames worth its time: one in N, the
// ones a predicate flags, or as many as a closed loop says the consumer can take.
//
//     framepipe::ring<Frame> to_detector(4);
//     framepipe::sampled to_detector_1_in_5(to_detector, framepipe::every_n(5));
//     p.source("camera", to_detector_1_in_5, grab);            // 4 of 5 frames: sampled_out
//     p.stage("detector", to_detector_1_in_5, boxes, detect);  // pops from the ring inside
//
// Three samplers, each a small object with `bool admit(const T& item, time_point now)`:
// - every_n: keeps the 1st, (N+1)th, (2N+1)th ... item;
// - gate: keeps an item when a predicate holds, at most once per min_interval, and after a kept
//   item nothing for cooldown (a motion detector's "event, then quiet");
// - adaptive_rate: a closed-loop controller that keeps items at a rate between min_hz and max_hz,
//   set from a signal: an activity score you feed, the downstream occupancy, or the consumer's
//   busy share (see its comment for the control law and why it is stable).
//
// `sampled<Channel, Sampler>` puts a sampler in front of a channel: a push the sampler refuses is
// counted as `sampled_out` in the channel's stats (so the accounting identity holds, and the drop
// shows in a pipeline's metrics with its reason), and returns rejected. Every other call goes to
// the channel. A sampler can also be used inside a stage function directly.
//
// Threads: a sampler is not synchronised: use it from one thread at a time (a `sampled` channel
// takes a short lock around admit, so any number of producers may push). A sampler must not
// call into the `sampled` channel it runs in (a push from its predicate takes that lock a
// second time: undefined behaviour, a deadlock in practice).
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/channel_wrapper.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/rate_limiter.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

namespace framepipe {

// Keeps one item in every n: the 1st, the (n+1)th, ... Any T.
class every_n {
public:
    // Throws std::invalid_argument naming n when it is 0.
    explicit every_n(std::uint64_t n) : n_(n) {
        if (n == 0) {
            throw std::invalid_argument("n: must be at least 1");
        }
    }

    // Whether to keep this item. One thread at a time; never throws.
    template <class T>
    [[nodiscard]] bool admit(const T& /*item*/, std::chrono::steady_clock::time_point /*now*/) noexcept {
        return seen_++ % n_ == 0;
    }

    [[nodiscard]] std::uint64_t n() const noexcept { return n_; }

private:
    std::uint64_t n_;
    std::uint64_t seen_ = 0;
};

// Options of a gate. An item stamped earlier than the last kept one counts as less than
// min_interval (or cooldown) after it; with both 0, the time is not looked at.
struct gate_options {
    // Two kept items are at least this far apart (0: no limit).
    std::chrono::nanoseconds min_interval{0};
    // After a kept item, nothing is kept for this long, whatever the predicate says (0: none).
    std::chrono::nanoseconds cooldown{0};
};

// Keeps an item when `pred(item)` holds, within min_interval and cooldown.
template <class Pred>
class gate {
public:
    // Throws std::invalid_argument naming min_interval or cooldown when negative.
    explicit gate(Pred pred, gate_options options = {}) : pred_(std::move(pred)), o_(options) {
        if (o_.min_interval < std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument("min_interval: must not be negative");
        }
        if (o_.cooldown < std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument("cooldown: must not be negative");
        }
    }

    // Whether to keep this item at `now` (any time point, time_point::min() and max() too: the
    // distance to the last kept one saturates). One thread at a time; throws what pred throws.
    template <class T>
    [[nodiscard]] bool admit(const T& item, std::chrono::steady_clock::time_point now) {
        const std::chrono::nanoseconds limit = std::max(o_.min_interval, o_.cooldown);
        if (kept_ && limit > std::chrono::nanoseconds::zero() &&
            detail::saturating_difference(now.time_since_epoch(), last_.time_since_epoch()) <
                limit) {
            return false;
        }
        if (!pred_(item)) {
            return false;
        }
        kept_ = true;
        last_ = now;
        return true;
    }

private:
    Pred pred_;
    gate_options o_;
    // The last kept item's time, once kept_. A flag rather than a std::optional: GCC 12 at -O1
    // warned (-Wmaybe-uninitialized, falsely) about the optional's payload in callers' code.
    bool kept_ = false;
    std::chrono::steady_clock::time_point last_{};
};

// What adaptive_rate is steered by, each in [0, 1], given with update().
struct rate_signal {
    // How much is happening (detections, motion): 1 asks for max_hz, 0 for min_hz.
    std::optional<double> activity;
    // The consumer's busy share over the last period (pipeline: the change in
    // stage_snapshot::busy_s over the period, divided by the period and the workers; or
    // busy_ratio, the share of the last two seconds).
    std::optional<double> busy;
    // How full the consumer's input is (size / capacity: 1 for a full latest slot).
    std::optional<double> occupancy;
};

// Options of adaptive_rate.
struct adaptive_rate_options {
    double min_hz = 1;      // never below (keeps a camera alive in the metrics when idle)
    double max_hz = 30;     // never above (a camera's rate, say)
    double step_hz = 1;     // the one step of a decrease, and the quantum of the rate
    double busy_high = 0.9; // the consumer is saturated above this busy share
    double busy_low = 0.7;  // and has room below it (between the two: hold)
    double occupancy_high = 0.5; // items wait at the consumer's input above this occupancy
    double occupancy_low = 0;    // without a busy share: room at or below this occupancy
};

// A closed-loop rate for a sampler: keeps items through a rate_limiter whose rate it sets from a
// signal, once per control period (each update()).
//
// Control law, with r the rate, s the step, D the rate the activity asks for
// (min_hz + activity * (max_hz - min_hz), max_hz without an activity signal):
//   1. saturated (busy > busy_high, or occupancy > occupancy_high): r <- r - s, and the ceiling
//      C (the consumer's capacity as found so far) becomes r - s too;
//   2. otherwise, r <- min(D, C) if that is above r (a rise is immediate: the attack), or
//      r <- max(D, r - s) if below (a fall is one step per period: the decay);
//   3. with room for two periods running or more at the ceiling (r = C), C is lifted by one
//      step per period, so a consumer that got faster is found again; a period below C (while
//      the activity asks for less) is not counted, as it says nothing of the rates above C.
//      Room: busy < busy_low (and occupancy, if given, not above occupancy_high); with no busy
//      share, occupancy <= occupancy_low (an empty input, by default), so that occupancy alone
//      can lift C again after a backlog;
//   r and C are rounded to the nearest rate of the grid: min_hz + k * s up to max_hz, and max_hz
//   itself (where both start; it may lie off the steps, and the first step down lands on them).
// Stability: every change is one step down, or up to a value at most C; C moves down to one step
// below a rate that saturated, and up by one step per period only while the consumer has room
// at C two periods running. Under a steady consumer the rate settles at the highest grid rate
// that neither saturates nor leaves room, and if the band [busy_low, busy_high] is narrower than
// one step it alternates between two neighbours: it moves by at most one step in steady state. A
// rise in activity reaches min(D, C) at the next update; a fall reaches D within (r - D) / s
// updates.
//
// Admissions follow at once. A fall takes effect at the rate_limiter's next slot (the slot under
// way keeps its length). A rise restarts the limiter at the new rate: the next item is kept as
// soon as one new period has passed since the last kept item (at once if that is already so),
// instead of waiting out a slot of the old, slower rate (up to 1 / min_hz).
class adaptive_rate {
public:
    // Starts at max_hz. Throws std::invalid_argument naming the field: min_hz or max_hz not
    // positive, finite and a rate_limiter accepts; max_hz below min_hz; step_hz not positive and
    // finite, or so small that it cannot move the rate (below max_hz / 1e12, or below
    // (max_hz - min_hz) / 1e9: more than 10^9 steps); busy_low above busy_high or either outside
    // [0, 1]; occupancy_high outside [0, 1]; occupancy_low outside [0, occupancy_high].
    explicit adaptive_rate(adaptive_rate_options options = {})
        : o_(validated(options)), rate_(o_.max_hz), ceiling_(o_.max_hz),
          limiter_(std::in_place, o_.max_hz) {}

    // Whether to keep this item now (the rate_limiter's decision; after a rise, not before one
    // new period since the last kept item). One thread at a time (with update). Never throws in
    // practice (as rate_limiter::try_acquire).
    template <class T>
    [[nodiscard]] bool admit(const T& /*item*/, std::chrono::steady_clock::time_point now) {
        if (now < resume_at_ || !limiter_->try_acquire(now)) {
            return false;
        }
        last_kept_ = now;
        return true;
    }

    // One control step (see the class comment) with the signal of the period that ended at
    // `now`. Returns the rate now in force. One thread at a time. Throws std::invalid_argument
    // naming the signal (activity, busy or occupancy) when it is NaN; nothing changes then.
    double update(const rate_signal& signal, std::chrono::steady_clock::time_point now) {
        require_number(signal.activity, "activity: must be a number, not NaN");
        require_number(signal.busy, "busy: must be a number, not NaN");
        require_number(signal.occupancy, "occupancy: must be a number, not NaN");
        const auto clamp01 = [](double v) { return std::clamp(v, 0.0, 1.0); };
        const bool saturated =
            (signal.busy && clamp01(*signal.busy) > o_.busy_high) ||
            (signal.occupancy && clamp01(*signal.occupancy) > o_.occupancy_high);
        const bool room =
            signal.busy ? clamp01(*signal.busy) < o_.busy_low &&
                              (!signal.occupancy || clamp01(*signal.occupancy) <= o_.occupancy_high)
                        : signal.occupancy && clamp01(*signal.occupancy) <= o_.occupancy_low;
        const double wanted =
            signal.activity ? o_.min_hz + clamp01(*signal.activity) * (o_.max_hz - o_.min_hz)
                            : o_.max_hz;
        double next = rate_;
        if (saturated) {
            ceiling_ = quantized(rate_ - o_.step_hz);
            next = rate_ - o_.step_hz;
            quiet_periods_ = 0;
        } else {
            // A period in the band (neither saturated nor with room) ends the run of room, and
            // so does one below the ceiling: room at a lower rate says nothing of the rates
            // above C (a quiet scene would lift C back to max_hz, untried).
            quiet_periods_ = room && rate_ >= ceiling_ ? quiet_periods_ + 1 : 0;
            if (quiet_periods_ >= 2) {
                ceiling_ = quantized(ceiling_ + o_.step_hz);
            }
            const double target = std::min(wanted, ceiling_);
            next = target > rate_ ? target : std::max(target, rate_ - o_.step_hz);
        }
        next = quantized(next);
        if (next < rate_) {
            limiter_->set_rate(next, now); // in [min_hz, max_hz], which validated() accepted
        } else if (next > rate_) {
            restart(next);
        }
        rate_ = next;
        return rate_;
    }

    // The rate in force. One thread at a time (with update and admit).
    [[nodiscard]] double rate() const noexcept { return rate_; }
    // The consumer's capacity as the controller believes it (max_hz until it first saturates).
    [[nodiscard]] double ceiling() const noexcept { return ceiling_; }
    [[nodiscard]] const adaptive_rate_options& options() const noexcept { return o_; }

private:
    static adaptive_rate_options validated(const adaptive_rate_options& o) {
        const auto rate_ok = [](double hz) {
            return hz > 0 && std::isfinite(hz) && hz <= 1e9 && std::isfinite(1e9 / hz);
        };
        if (!rate_ok(o.min_hz)) {
            throw std::invalid_argument("min_hz: must be a positive rate a rate_limiter accepts");
        }
        if (!rate_ok(o.max_hz)) {
            throw std::invalid_argument("max_hz: must be a positive rate a rate_limiter accepts");
        }
        if (o.max_hz < o.min_hz) {
            throw std::invalid_argument("max_hz: must not be below min_hz");
        }
        if (!(o.step_hz > 0) || !std::isfinite(o.step_hz)) {
            throw std::invalid_argument("step_hz: must be positive");
        }
        if (o.step_hz < o.max_hz / 1e12 || (o.max_hz - o.min_hz) / o.step_hz > 1e9) {
            throw std::invalid_argument(
                "step_hz: too small (at least max_hz / 1e12 and (max_hz - min_hz) / 1e9)");
        }
        if (!(o.busy_low >= 0 && o.busy_low <= o.busy_high && o.busy_high <= 1)) {
            throw std::invalid_argument("busy_low: must be in [0, busy_high], busy_high in [0, 1]");
        }
        if (!(o.occupancy_high >= 0 && o.occupancy_high <= 1)) {
            throw std::invalid_argument("occupancy_high: must be in [0, 1]");
        }
        if (!(o.occupancy_low >= 0 && o.occupancy_low <= o.occupancy_high)) {
            throw std::invalid_argument("occupancy_low: must be in [0, occupancy_high]");
        }
        return o;
    }

    static void require_number(const std::optional<double>& v, const char* what) {
        if (v && std::isnan(*v)) {
            throw std::invalid_argument(what);
        }
    }

    // The nearest rate on the grid: the steps from min_hz that lie below max_hz, and max_hz
    // itself (so that the rate only takes step-apart values, and max_hz stays reachable when it
    // is off the steps, or a step is wider than the range). In [min_hz, max_hz].
    // (A saturation sets the ceiling one step below the rate that saturated: the highest rate
    // not yet known to saturate, so a steady consumer is not probed again every period.)
    [[nodiscard]] double quantized(double hz) const noexcept {
        if (hz >= o_.max_hz) {
            return o_.max_hz;
        }
        if (hz <= o_.min_hz) {
            return o_.min_hz;
        }
        const double k = std::round((hz - o_.min_hz) / o_.step_hz);
        const double step = std::min(o_.min_hz + k * o_.step_hz, o_.max_hz);
        return o_.max_hz - hz < std::abs(step - hz) ? o_.max_hz : step;
    }

    // A rise to `hz`: a new limiter (its slots anchored at its first call), and no item before
    // one period of `hz` after the last kept one. Never throws in practice (hz was validated; a
    // throw would leave everything as it was).
    void restart(double hz) {
        rate_limiter fresh(hz);
        limiter_.reset();
        limiter_.emplace(std::move(fresh)); // rate_limiter's move never throws
        if (last_kept_) {
            resume_at_ = detail::saturating_add(
                *last_kept_,
                detail::to_nanoseconds(std::chrono::duration<double>(1.0 / hz), "hz"));
        }
    }

    adaptive_rate_options o_;
    double rate_;
    double ceiling_;
    unsigned quiet_periods_ = 0;
    std::optional<rate_limiter> limiter_; // always engaged (an optional to be rebuilt in place)
    std::optional<std::chrono::steady_clock::time_point> last_kept_; // the last admit() true
    std::chrono::steady_clock::time_point resume_at_ = std::chrono::steady_clock::time_point::min();
};

// A channel with a sampler in front: push(item) keeps the item only if the sampler admits it;
// otherwise the push returns rejected and is counted as sampled_out. Everything else (pop,
// capacity, ...) is the channel's, where the channel has it, and close() closes it. It is an
// input and an output for a pipeline, and its stats() (the channel's, plus the sampled-out
// pushes; only for a channel that keeps counters) show in the pipeline's metrics. Over a channel without closed(), the wrapper
// knows only of its own close(): the sampler also sees the pushes that come after the channel
// was closed directly (the channel then refuses those it keeps).
template <class Channel, class Sampler>
class sampled : public detail::channel_wrapper<Channel> {
    using base = detail::channel_wrapper<Channel>;

public:
    using value_type = typename Channel::value_type;

    // Wraps `channel` (which must outlive this object) with `sampler`.
    sampled(Channel& channel, Sampler sampler) : base(channel), sampler_(std::move(sampler)) {}

    // Offers `item`: to the channel if the sampler admits it, else counted as sampled_out and
    // rejected. Once the channel is closed, every push goes to it (closed, after_close). Any
    // thread (the sampler runs under a short lock). Waits as the channel's push does (try_push
    // and push_for exist when the channel has them, and wait as its own do). Exceptions: what
    // the sampler or the channel's push throws; push_for checks its timeout first (negative or
    // NaN: std::invalid_argument naming timeout, before the sampler sees the item).
    push_status push(value_type item) {
        if (!admit(item)) {
            return push_status::rejected;
        }
        return this->channel_.push(std::move(item));
    }
    push_status push(value_type item, std::stop_token stop) {
        if (!admit(item)) {
            return push_status::rejected;
        }
        return this->channel_.push(std::move(item), std::move(stop));
    }
    [[nodiscard]] push_status try_push(value_type item)
        requires requires(Channel& c, value_type v) { c.try_push(std::move(v)); }
    {
        if (!admit(item)) {
            return push_status::rejected;
        }
        return this->channel_.try_push(std::move(item));
    }
    template <class Rep, class Period>
    [[nodiscard]] push_status push_for(value_type item, std::chrono::duration<Rep, Period> timeout)
        requires requires(Channel& c, value_type v) { c.push_for(std::move(v), timeout); }
    {
        const std::chrono::nanoseconds ns = checked(timeout);
        if (!admit(item)) {
            return push_status::rejected;
        }
        return this->channel_.push_for(std::move(item), ns);
    }
    template <class Rep, class Period>
    [[nodiscard]] push_status push_for(value_type item, std::chrono::duration<Rep, Period> timeout,
                         std::stop_token stop)
        requires requires(Channel& c, value_type v, std::stop_token s) {
            c.push_for(std::move(v), timeout, std::move(s));
        }
    {
        const std::chrono::nanoseconds ns = checked(timeout);
        if (!admit(item)) {
            return push_status::rejected;
        }
        return this->channel_.push_for(std::move(item), ns, std::move(stop));
    }

    // pop, try_pop, pop_for, peek, closed, size, capacity, policy, channel(): the channel's,
    // those it has (detail::channel_wrapper). close() is below.

    // The channel's counters, with the sampled-out pushes added (pushed and dropped include
    // them, reason sampled_out); only for a channel that keeps counters. Any thread.
    [[nodiscard]] channel_stats stats() const
        requires detail::channel_wrapper<Channel>::has_stats
    {
        return this->stats_with(&channel_stats::sampled_out,
                                sampled_out_.load(std::memory_order_relaxed));
    }

    // The description of the wrapped channel that its channel_traits give (only for a channel
    // they describe; see channel_traits::describe), its kind "sampled" and the sampled-out pushes
    // added to its counters as in stats() (a sliding_window counts windows: the figures then mix
    // its windows with the items kept out). A pipeline shows it. Any thread; throws what the
    // channel's description throws (std::bad_alloc).
    [[nodiscard]] channel_description description() const
        requires detail::described_by_traits<Channel>
    {
        channel_description d = this->describe_with(&channel_stats::sampled_out,
                                                    sampled_out_.load(std::memory_order_relaxed));
        d.kind = "sampled";
        return d;
    }

    // Closes the channel (its close(): same threads and exceptions), then marks the wrapper
    // closed: the pushes after it go to the channel without the sampler, whether or not the
    // channel has closed(). A push racing the close may still run the sampler. Any thread.
    void close() {
        this->channel_.close(); // first: if it throws, the wrapper stays open, as the channel
        // Release, after the channel's close: a push that reads the flag set finds the channel
        // closed, and is refused there.
        closed_.store(true, std::memory_order_release);
    }

    // The number of pushes the sampler kept out. Any thread.
    [[nodiscard]] std::uint64_t sampled_out() const noexcept {
        return sampled_out_.load(std::memory_order_relaxed);
    }

    // The sampler (for adaptive_rate::update, say). Use it under the same one-thread rule as
    // admit: from the thread that pushes, or with pushes stopped.
    [[nodiscard]] Sampler& sampler() noexcept { return sampler_; }

private:
    // The timeout as the channel will take it, checked before the sampler sees the item: a bad
    // one throws std::invalid_argument naming timeout (negative or NaN), and the sampler's state
    // is left as it was.
    template <class Rep, class Period>
    static std::chrono::nanoseconds checked(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return ns;
    }

    bool admit(const value_type& item) {
        // Closed (through this wrapper, or the channel itself where it says so): the channel
        // refuses the item (closed, counted as after_close), not the sampler, which is not
        // advanced by items that could not be kept anyway.
        if (closed_.load(std::memory_order_acquire)) {
            return true;
        }
        if constexpr (requires { this->channel_.closed(); }) {
            if (this->channel_.closed()) {
                return true;
            }
        }
        bool keep = false;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            keep = sampler_.admit(item, std::chrono::steady_clock::now());
        }
        if (!keep) {
            // Relaxed: a statistics counter.
            sampled_out_.fetch_add(1, std::memory_order_relaxed);
        }
        return keep;
    }

    Sampler sampler_;
    std::mutex mu_;
    std::atomic<std::uint64_t> sampled_out_{0};
    std::atomic<bool> closed_{false}; // close() came through this wrapper
};

// How a pipeline shows a sampled channel: kind "sampled", with the inner channel's policy,
// capacity and counters (plus sampled_out).
template <class Channel, class Sampler>
struct channel_traits<sampled<Channel, Sampler>> {
    static constexpr std::string_view kind = "sampled";
    static constexpr bool one_producer = channel_traits<Channel>::one_producer;
    static constexpr bool one_consumer = channel_traits<Channel>::one_consumer;
    // For a channel its traits describe (a sliding_window, say): that description, with the
    // sampled-out pushes (see sampled::description()). Otherwise from the members.
    static channel_description describe(const sampled<Channel, Sampler>& s)
        requires detail::described_by_traits<Channel>
    {
        return s.description();
    }
};

} // namespace framepipe
