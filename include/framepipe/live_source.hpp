// framepipe/live_source.hpp - a camera or stream that drops, stalls and comes back, as a source
// that never hangs and always recovers.
//
//     framepipe::live_source<rtsp_backend> camera([] { return rtsp_backend("rtsp://..."); },
//                                                 {.stall_timeout = 2s});
//     framepipe::latest_slot<framepipe::stamped<Frame>> newest({.drop_older_epochs = true});
//     camera.start(newest);              // connects, reads, reconnects with backoff, on its threads
//     while (auto f = newest.pop(stop)) detect(f->value); // f->epoch: which connection; until
//                                                         // `stop` (the source never closes it)
//     camera.stop();                     // returns within abandon_after, whatever the backend does
//
// You supply the backend: anything that can open a connection, read one frame with a timeout and
// close (the live_backend concept below). The live source turns it into a state machine:
//
//                 open ok, first frame              end (file), restart_at_end
//     connecting ------------------------> streaming ------------------------> connecting
//      ^   |  open fails / no first frame    |    |  no frame for stall_timeout
//      |   v                                 |    v
//      |  backoff <----------------------- stalled (the connection is closed)
//      |   |      read error / server gone  <----+
//      +---+  after the backoff delay
//     ended (a file's end), failed (max_attempts failed in a row), stopped (stop): final.
//     With restart_at_end, an end before the connection's first frame is a failed attempt.
//
// - Backoff: exponential (initial * multiplier^(attempt - 1), capped at max) with jitter; a
//   connection that streams for reset_after resets it (and the attempt count).
// - Epoch: each connection gets the next epoch (1, 2, ...; after options' epoch_base). Every
//   frame goes out as a stamped<Frame> with its epoch, a source-wide sequence number and its
//   capture time (the backend's, via timestamp_traits<Frame>, when Frame has one; else the
//   moment read() returned).
//   A consumer tells frames from before a reconnect from frames after it, and channels with
//   drop_older_epochs refuse the late ones; a sliding_window restarts on a new epoch.
// - Never hangs: with start(), backend calls run on a thread of the source's own; a watchdog
//   abandons a call (make and open, read, close with the destructor) that overruns its timeout
//   by abandon_after (that thread and its backend are
//   left to finish on their own, and whatever the call returns is discarded by epoch), and
//   reconnects on a fresh backend (a close() abandoned after the input's end keeps the end: ended,
//   or with restart_at_end, open again at once). stop() returns within abandon_after: a push into
//   the output gets the stop token where the output takes one (push(item, stop), publish(item,
//   stop): the rings and the broadcaster), so a push waiting for room ends with it; only a push
//   that ignores the token (an evicting push waits for a consumer's peek() of the item it evicts,
//   token or not: see ring::peek), or an on_state_change call under way, is waited for (parked)
//   until it returns: the output must outlive the push, and no callback runs once stop() has
//   returned.
//   The cost of an abandoned call: one thread and one backend instance, until the call returns
//   (at most max_abandoned at once; beyond that the source fails, as it does when the fresh
//   runner's thread cannot start).
//
// Threads: start(), run() and on_state_change() from one thread; stop() from any thread but the
// runner's; state(), stats(), epoch(), wait_for() and wait() from any thread.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/unique_function.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

// FRAMEPIPE_DETAIL_LIVE_STOP_ABANDON_HOOK(): a test seam, not an option (as those of
// detail/config.hpp). Called on the thread in stop() when it gives up waiting for a runner still
// busy abandon_after after the stop, before it waits for that runner's state change in progress
// and abandons it; tests/test_live_source.cpp counts these (the stats do not count stop()'s
// abandonment). Expands to nothing unless a test program defines it before including this header.
#if !defined(FRAMEPIPE_DETAIL_LIVE_STOP_ABANDON_HOOK)
#define FRAMEPIPE_DETAIL_LIVE_STOP_ABANDON_HOOK() ((void)0)
#endif
// FRAMEPIPE_DETAIL_LIVE_RUNNER_START_HOOK(): a test seam of the same kind, called just before a
// runner's thread is created; a test makes it throw what a thread that cannot start throws.
#if !defined(FRAMEPIPE_DETAIL_LIVE_RUNNER_START_HOOK)
#define FRAMEPIPE_DETAIL_LIVE_RUNNER_START_HOOK() ((void)0)
#endif

namespace framepipe {

// Where a live source is. See the drawing in the file comment.
enum class live_state { connecting, streaming, stalled, backoff, ended, failed, stopped };

[[nodiscard]] constexpr std::string_view to_string(live_state s) noexcept {
    switch (s) {
    case live_state::connecting: return "connecting";
    case live_state::streaming: return "streaming";
    case live_state::stalled: return "stalled";
    case live_state::backoff: return "backoff";
    case live_state::ended: return "ended";
    case live_state::failed: return "failed";
    case live_state::stopped: return "stopped";
    }
    return "unknown";
}

// Every live_state, in declaration order (for a gauge per state).
inline constexpr live_state all_live_states[] = {
    live_state::connecting, live_state::streaming, live_state::stalled, live_state::backoff,
    live_state::ended,      live_state::failed,    live_state::stopped};

// Whether a live source in state `s` has stopped for good.
[[nodiscard]] constexpr bool is_final(live_state s) noexcept {
    return s == live_state::ended || s == live_state::failed || s == live_state::stopped;
}

// What a backend's open() returns: connected, or the reason it is not (one line).
struct open_result {
    std::string error; // empty: connected

    [[nodiscard]] bool ok() const noexcept { return error.empty(); }
    [[nodiscard]] static open_result success() { return {}; }
    [[nodiscard]] static open_result failure(std::string why) {
        return {why.empty() ? std::string("open failed") : std::move(why)};
    }
};

// What one read() found.
enum class read_status {
    frame,   // a frame
    timeout, // nothing within the timeout (or the stop token was requested)
    end,     // the input ended for good (a file's end); a live stream that goes away is an error
    error,   // the connection failed; error says why
};

template <class Frame>
struct read_result {
    read_status status = read_status::timeout;
    std::optional<Frame> frame; // with read_status::frame
    std::string error;          // with read_status::error

    [[nodiscard]] static read_result got(Frame f) {
        return {read_status::frame, std::optional<Frame>(std::move(f)), {}};
    }
    [[nodiscard]] static read_result timed_out() { return {read_status::timeout, {}, {}}; }
    [[nodiscard]] static read_result ended() { return {read_status::end, {}, {}}; }
    [[nodiscard]] static read_result failed(std::string why) {
        return {read_status::error, {}, why.empty() ? std::string("read failed") : std::move(why)};
    }
};

// What a live source needs of a backend. One backend object serves one connection: the source
// makes a new one (with its factory) for every attempt, calls open once, read until it stops
// reading, then close, on one thread.
//   open(stop, timeout): connect; give up when `timeout` has passed or `stop` is requested.
//   read(stop, timeout): the next frame; timeout when none came within `timeout` (or stop).
//   close(): let go of the connection; must not throw.
//   ~B(): must not throw (it runs in stop() and the destructor, which are noexcept).
// A backend that ignores its timeouts is survived (see the file comment), not relied upon.
template <class B>
concept live_backend = std::is_nothrow_destructible_v<B> &&
                       requires(B& b, std::stop_token stop, std::chrono::nanoseconds timeout) {
    typename B::frame_type;
    { b.open(stop, timeout) } -> std::same_as<open_result>;
    { b.read(stop, timeout) } -> std::same_as<read_result<typename B::frame_type>>;
    b.close();
};

// How the wait between two attempts grows.
struct backoff_options {
    std::chrono::nanoseconds initial{std::chrono::milliseconds(500)}; // after the first failure
    std::chrono::nanoseconds max{std::chrono::seconds(30)};           // the cap
    double multiplier = 2.0;                                          // growth per failure
    // 0: waits exactly the computed delay d; 1 (full jitter): uniformly in (0, d]; in between,
    // in ((1 - jitter) * d, d]. Spreads the reconnects of many cameras after a shared outage.
    double jitter = 1.0;
    // A connection that streams this long counts as healthy: the next failure starts again
    // from `initial`, and the attempt count for max_attempts starts again from 0.
    std::chrono::nanoseconds reset_after{std::chrono::seconds(10)};
};

namespace detail {

// Throws std::invalid_argument naming the field for backoff options no schedule can follow: an
// initial or max that is not positive, a negative reset_after, max below initial, a multiplier
// below 1 or not finite, a jitter outside [0, 1]. (live_source and the NATS adapter.)
inline void check_backoff(const backoff_options& b) {
    require_positive(b.initial, "backoff.initial");
    require_positive(b.max, "backoff.max");
    require_non_negative(b.reset_after, "backoff.reset_after");
    if (b.max < b.initial) {
        throw std::invalid_argument("backoff.max: must not be below backoff.initial");
    }
    if (!(b.multiplier >= 1.0) || !std::isfinite(b.multiplier)) {
        throw std::invalid_argument("backoff.multiplier: must be a finite number >= 1");
    }
    if (!(b.jitter >= 0.0 && b.jitter <= 1.0)) {
        throw std::invalid_argument("backoff.jitter: must be between 0 and 1");
    }
}

} // namespace detail

// A live source's options. An aggregate: {.stall_timeout = 2s, .max_attempts = 5}.
struct live_options {
    std::chrono::nanoseconds open_timeout{std::chrono::seconds(5)};        // per open()
    std::chrono::nanoseconds first_frame_timeout{std::chrono::seconds(5)}; // open -> first frame
    std::chrono::nanoseconds stall_timeout{std::chrono::seconds(2)}; // no frame this long: stalled
    backoff_options backoff{};
    std::uint32_t max_attempts = 0; // failed attempts in a row before failed; 0: for ever
    // A backend's end: open again at once (true) or ended (false). With true, an end before the
    // connection's first frame is a failed attempt instead (backoff, max_attempts): an input that
    // ends as soon as it opens is not reopened in a busy loop.
    bool restart_at_end = false;
    // A backend call that has not returned this long after its timeout is abandoned (start()
    // only; run() has no watchdog). Also stop()'s bound.
    std::chrono::nanoseconds abandon_after{std::chrono::seconds(1)};
    std::size_t max_abandoned = 4; // abandoned calls still running at once, beyond which: failed
    std::uint64_t seed = 0;        // the jitter's random seed; 0: a random one
    // Epochs count on from here: the first connection's is epoch_base + 1. A source that takes
    // over a channel with drop_older_epochs from another (a camera made anew: a live_source
    // starts once) starts from the old one's epoch(), or every frame of it is older than the
    // last one the channel took, and refused. Below 2^63.
    std::uint64_t epoch_base = 0;
};

// A live source's figures, as one snapshot.
struct live_stats {
    live_state state = live_state::stopped; // stopped: not started, or stopped
    std::uint64_t epoch = 0; // the current (or last) connection's epoch; epoch_base: none yet
    std::uint64_t connects = 0;       // opens that succeeded
    std::uint64_t reconnects = 0;     // connects after the first
    // Streaming connections that went quiet for stall_timeout: a read that returned no frame in
    // it. (A read that overran its timeout and then returned a frame is not one.)
    std::uint64_t stalls = 0;
    std::uint64_t open_failures = 0;  // opens that failed or timed out
    std::uint64_t no_first_frame = 0; // connections that gave no frame within first_frame_timeout
    std::uint64_t read_errors = 0;    // connections that failed while reading
    std::uint64_t ends = 0;           // ends of input (files)
    std::uint64_t frames = 0;         // frames pushed into the output (a push that threw: not)
    double fps = 0;                   // of those, per second over the last 2 s (rate_meter)
    // Frames a read returned after a stop was requested: not pushed.
    std::uint64_t dropped_at_stop = 0;
    // Frames a read returned after its runner was abandoned (by the watchdog, or by stop()): not
    // pushed. Counted when that read returns, which may be after stop() has returned. (The
    // abandoned runner counts nothing else: the other figures are its successor's.)
    std::uint64_t abandoned_frames = 0;
    // Backend calls the watchdog abandoned for overrunning their timeout by abandon_after. Not
    // counted: a runner that stop() abandons (one still busy abandon_after after the stop, in a
    // backend call, a push or on_state_change); that sets no last_error either.
    std::uint64_t abandoned = 0;
    std::uint64_t state_changes = 0;  // transitions between states
    std::uint32_t attempt = 0;        // failed attempts in a row (see max_attempts)
    std::optional<std::chrono::nanoseconds> last_frame_age; // since the last frame, if any
    // When the current connection gave its first frame, while it streams; none once it is
    // gone (stalled, failed, ended, abandoned by the watchdog) and in every final state.
    std::optional<std::chrono::steady_clock::time_point> connected_since;
    std::chrono::nanoseconds current_backoff{0}; // the last backoff delay chosen
    std::string last_error;                      // the last open or read error, one line
};

// The clock and the waits of a live source: steady_clock and real sleeps. A test gives its own
// type with the same members to run a source in virtual time (see tests/test_live_source.cpp).
class steady_time {
public:
    using clock = std::chrono::steady_clock;

    [[nodiscard]] clock::time_point now() const noexcept { return clock::now(); }

    // Sleeps until `t`; false when `stop` was requested first. Parks (no CPU).
    bool sleep_until(clock::time_point t, const std::stop_token& stop) noexcept {
        return waits_->park(&stop, t, [] { return false; }) != detail::wait_end::stopped;
    }

private:
    std::shared_ptr<detail::event_count> waits_ = std::make_shared<detail::event_count>();
};

namespace detail {

// What a connection came to, as its runner closes it (see live_runner::closing).
enum class live_closing : unsigned char {
    failed,  // a failed attempt (or nothing to close): the next runner starts in backoff
    ended,   // the input ended, restart_at_end false: the source is ended
    restart, // the input ended, restart_at_end true: open again at once, no attempt counted
};

// One runner: the thread that runs the state machine and makes the backend calls. A runner that
// the watchdog abandons keeps its own copy of this until its call returns.
struct live_runner {
    // call_deadline_ns once the watchdog has taken the current call away (abandoned it).
    static constexpr std::int64_t taken = std::numeric_limits<std::int64_t>::min();

    // The watchdog's view of this runner's current backend call: its deadline (ns since the
    // clock's epoch; 0 between calls; `taken`, see above) and a sequence number that tells calls
    // apart. The watchdog abandons a call only by swapping its deadline for `taken`, and the
    // runner ends a call by swapping it for 0: one of the two swaps comes first, so the runner
    // knows, once its call has returned, whether it still owns the source.
    std::atomic<std::int64_t> call_deadline_ns{0};
    std::atomic<std::uint64_t> call_seq{0};
    // When the watchdog will next look at this runner (ns since the clock's epoch; max: not
    // yet), and the flag that wakes it sooner: a call due before then sets it (announce_call(),
    // wake_watchdog()).
    std::atomic<std::int64_t> watch_at_ns{std::numeric_limits<std::int64_t>::max()};
    std::atomic<bool> watch_again{false};
    // Set by whoever abandons the runner (the watchdog, stop()) and by the runner when it finds
    // its call taken. From then on the runner changes nothing shared but abandoned_frames (see
    // run_machine).
    std::atomic<bool> abandoned{false};
    // Whether this runner has been abandoned. seq_cst: the Dekker pair with `pushing` (see
    // begin_push()) and with the watchdog's take of a call (see call()).
    [[nodiscard]] bool gone() const noexcept { return abandoned.load(std::memory_order_seq_cst); }
    std::atomic<bool> pushing{false}; // inside an emit (see begin_push())
    std::stop_source calls;           // the stop token every backend call gets
    // The runner's thread is about to end (see finish()).
    std::atomic<bool> finished{false};
    // The runner before this one, if it was abandoned: its last emit must be over before this
    // runner's first (then it is let go).
    std::shared_ptr<live_runner> previous;
    // Whether this runner begins in backoff, as after any failure: it replaces a runner the
    // watchdog abandoned in a failed attempt's call (not one abandoned in the close() after an
    // end, see `closing`). Set before its thread starts; read by it only.
    bool backoff_first = false;
    // What the connection this runner is closing came to: stored by the runner before that
    // close() (the call's announcement releases it to the watchdog's read of the deadline) and
    // reset to `failed` after it; the watchdog reads it before it takes the call (all seq_cst:
    // the reset, after the runner's end of the call, cannot be what a successful take read). A
    // watchdog that abandons the close acts on it in the runner's stead: ended stays ended,
    // restart reconnects at once (see watch()).
    std::atomic<live_closing> closing{live_closing::failed};

    // Marks this runner abandoned and asks its calls to stop: from then on it changes nothing
    // shared. Whoever abandons it (the watchdog, stop()); never blocks; noexcept. The store
    // is the abandoner's half of begin_push()'s Dekker pair (the request_stop() after it is a
    // read-modify-write, which x86 orders after the store anyway).
    void mark_abandoned() noexcept {
        abandoned.store(true, std::memory_order_seq_cst);
        calls.request_stop();
    }

    // Begins a push: sets `pushing`, then reads whether this runner has been abandoned. True: it
    // may push. The runner's thread; never blocks; noexcept; every call is followed by
    // end_push(). With mark_abandoned()'s store and the abandoner's read of `pushing` after it
    // (push_over()), a Dekker pair, both sides seq_cst: either this runner sees itself abandoned
    // and drops its frame, or whoever abandoned it sees the push under way and waits for it.
    // Release here would let the read pass the set: neither would see the other, and the runner
    // would push into an output that stop() may already have given back to its owner.
    [[nodiscard]] bool begin_push() noexcept {
        pushing.store(true, std::memory_order_seq_cst);
        return !gone();
    }

    // Ends this runner's push: clears `pushing` and wakes whoever waits on `push_ended` for it
    // (push_over()). The runner's thread; never blocks; noexcept. seq_cst (release would let the
    // notify's load of the watchers pass the store, and a waiter that registered meanwhile would
    // read the flag still set and sleep): notify_all_after_seq_cst() requires it, and the
    // waiters' predicate, push_over(), reads it seq_cst.
    void end_push(event_count& push_ended) noexcept {
        pushing.store(false, std::memory_order_seq_cst);
        push_ended.notify_all_after_seq_cst();
    }

    // Whether this runner is outside a push: the exact predicate of a wait on push_ended. Any
    // thread; seq_cst (see end_push()); it also acquires what the push did.
    [[nodiscard]] bool push_over() const noexcept {
        return !pushing.load(std::memory_order_seq_cst);
    }

    // Marks this runner's thread as about to end and wakes stop(), which waits on `runner_done`
    // for it (has_finished()) before it joins the thread. The runner's thread, once; never blocks;
    // noexcept. seq_cst, as in end_push(): a lost wake-up here makes stop() wait its whole
    // abandon_after and then abandon a runner that had ended.
    void finish(event_count& runner_done) noexcept {
        finished.store(true, std::memory_order_seq_cst);
        runner_done.notify_all_after_seq_cst();
    }

    // Whether finish() has been called: the exact predicate of a wait on runner_done. Any thread;
    // seq_cst (see finish()).
    [[nodiscard]] bool has_finished() const noexcept {
        return finished.load(std::memory_order_seq_cst);
    }

    // Announces a watched call: stores its deadline, then reads when the watchdog will next look
    // at this runner. True: that look comes after `overdue_ns` (the deadline + abandon_after),
    // so the caller must wake the watchdog (wake_watchdog()). The runner's thread; never blocks;
    // noexcept. With plan_watch(), a Dekker pair, both sides seq_cst: either the watchdog sees
    // this deadline, or this runner sees the watchdog's later look and wakes it. Release here
    // would let the read pass the store: the watchdog would sleep until a previous call's
    // overdue time and abandon an overrunning call late.
    [[nodiscard]] bool announce_call(std::int64_t deadline_ns, std::int64_t overdue_ns) noexcept {
        call_deadline_ns.store(deadline_ns, std::memory_order_seq_cst);
        return overdue_ns < watch_at_ns.load(std::memory_order_seq_cst);
    }

    // The watchdog's half of announce_call()'s pair: stores when it will next look at this runner,
    // then reads the call's deadline again. True: the deadline is still `deadline_ns`, the one the
    // look was planned for (a call that began meanwhile wakes the watchdog itself). The
    // watchdog's thread; never blocks; noexcept. seq_cst, for the same reason.
    [[nodiscard]] bool plan_watch(std::int64_t wake_ns, std::int64_t deadline_ns) noexcept {
        watch_at_ns.store(wake_ns, std::memory_order_seq_cst);
        return call_deadline_ns.load(std::memory_order_seq_cst) == deadline_ns;
    }

    // Asks the watchdog, parked on `watchdog_wait` until watch_requested(), to look again now.
    // The runner's thread; never blocks; noexcept. seq_cst, as in end_push(): a lost wake-up
    // leaves the watchdog asleep until the look it had planned, past the new call's overdue time.
    void wake_watchdog(event_count& watchdog_wait) noexcept {
        watch_again.store(true, std::memory_order_seq_cst);
        watchdog_wait.notify_one_after_seq_cst();
    }

    // Whether wake_watchdog() asked for a look: the exact predicate of the watchdog's wait. The
    // watchdog's thread; seq_cst (see wake_watchdog()).
    [[nodiscard]] bool watch_requested() const noexcept {
        return watch_again.load(std::memory_order_seq_cst);
    }
};

} // namespace detail

template <live_backend Backend, class Time = steady_time>
class live_source {
public:
    using backend_type = Backend;
    using frame_type = typename Backend::frame_type;
    using item_type = stamped<frame_type>; // what the source emits
    using clock = std::chrono::steady_clock;

    // `make` builds a backend for each connection attempt (on the source's runner thread; an
    // exception from it counts as a failed open). It may run on two threads at once: a runner
    // the watchdog abandoned inside make() (counted as the open's call) goes on running it while
    // the runner that replaced it calls it again: make it thread-safe (what it captures
    // included), or keep it to building an unconnected backend.
    // Throws std::invalid_argument naming the field: a timeout or backoff duration that is not
    // positive (reset_after may be 0), a multiplier below 1, a jitter outside [0, 1], max below
    // initial, max_abandoned 0, epoch_base from 2^63; and naming `make` when it is empty.
    explicit live_source(std::function<Backend()> make, live_options options = {}, Time time = {})
        : shared_(std::make_shared<shared>(std::move(make), validated(options), std::move(time))) {
        if (!shared_->make) {
            throw std::invalid_argument("make: a live_source needs a backend factory");
        }
    }

    live_source(const live_source&) = delete;
    live_source& operator=(const live_source&) = delete;

    // stop().
    ~live_source() { stop(); }

    // Calls `f(from, to)` on every state change, on the thread that makes it: the runner's, the
    // watchdog's (failed, past max_abandoned; ended, when it abandons the close() after an end),
    // or the thread in start(), run() or stop() (keep it short; what it throws is ignored; it
    // must not call stop(), start() or run(), nor anything that waits for this source to stop:
    // the remove() or request_stop(deadline) of a pipeline it is a source of, which would wait
    // their whole deadline, or wait() for ever). One call at a time, in the order of the changes:
    // a change waits (blocks) for a call in progress. stop() waits for one in progress, however
    // long it takes, and its `stopped` is the last call: never once stop() has returned (the
    // state is final then, and stays so), and a runner that stop() abandons makes no state change
    // after that. Before start() or run().
    void on_state_change(std::function<void(live_state, live_state)> f) {
        shared_->on_change = std::move(f);
    }

    // Runs the source on the calling thread, emitting item_type into `out`, until `stop` is
    // requested or stop() is called (returns stopped), the input ends (ended) or max_attempts
    // failures in a row (failed); returns the final state, the one state() reports (stopped
    // when a stop() came first). Backend calls are made on this thread with no watchdog: for
    // backends that honour their timeouts, and for tests in virtual time. Once only (start() or
    // run()): throws std::logic_error when already started. After stop() (a shutdown that came
    // first), makes no backend call and returns stopped at once; the state stays stopped.
    // A push into `out` that throws ends the run: the connection is closed, the source fails
    // with the exception's message as last_error, and run() rethrows it.
    template <class Out>
        requires output_channel<Out, item_type>
    live_state run(Out& out, std::stop_token stop) {
        auto runner = std::make_shared<detail::live_runner>();
        const emitter e = emitter_for(out);
        std::stop_source either; // `stop` or stop(), whichever comes first
        {
            const std::lock_guard<std::mutex> lock(shared_->lifecycle_mu);
            if (!begin()) {
                return live_state::stopped;
            }
        }
        const auto request = [&either] { either.request_stop(); };
        const std::stop_callback on_stop_token(stop, request);
        const std::stop_callback on_stop_call(shared_->stop.get_token(), request);
        live_state end = live_state::failed;
        try {
            end = run_machine(
                *shared_, *runner,
                [&e, &s = *shared_](detail::live_runner&, item_type&& item,
                                    const std::stop_token& st) {
                    e(std::move(item), st);
                    s.frames.fetch_add(1, std::memory_order_relaxed); // not when it threw
                    s.frame_rate.record(s.time.now());
                },
                either.get_token(), false);
        } catch (...) {
            runner_threw(*shared_, *runner, std::current_exception());
            throw;
        }
        if (end == live_state::stopped) {
            set_state(*shared_, live_state::stopped);
        }
        // The state, not `end`: a stop() on another thread may have made it stopped first, and
        // a final state is for good.
        return shared_->state.load(std::memory_order_seq_cst);
    }

    // Starts the source on threads of its own (a runner and a watchdog), emitting item_type into
    // `out`. Returns at once (it may wait for a stop() running on another thread). Once only
    // (start() or run()). `out` must outlive stop() (or the destructor). The source never closes
    // `out`, not even in a final state (ended, failed): its consumer ends on a stop token, or when
    // the caller closes `out` (after wait(), say); a pipeline closes it for its sources. After
    // stop() (a shutdown that came first), starts nothing: the state stays stopped (final).
    // Throws std::logic_error when already started, and std::system_error (std::bad_alloc) if a
    // thread cannot start: then whatever did start is stopped, the state is stopped (final), and
    // the source cannot be started again (basic guarantee). Later, a push into `out` that
    // throws (on the runner) closes the connection and fails the source, the exception's message
    // as last_error: it never escapes the runner thread.
    template <class Out>
        requires output_channel<Out, item_type>
    void start(Out& out) {
        shared& s = *shared_;
        const std::lock_guard<std::mutex> life(s.lifecycle_mu);
        if (!begin()) {
            return;
        }
        try {
            s.emit = emitter_for(out);
            const std::lock_guard<std::mutex> lock(s.threads_mu);
            launch_runner(shared_, nullptr);
            s.watchdog = std::jthread([sp = shared_](std::stop_token st) { watch(sp, st); });
        } catch (...) {
            stop_locked(s); // takes threads_mu: the guard above is gone
            throw;
        }
    }

    // Stops the source: every backend call is asked to stop (its stop token), the runner ends,
    // and the state becomes stopped (unless it had already ended or failed). Returns within
    // abandon_after: a runner stuck in a backend call (its close() included) is abandoned (not
    // counted in stats().abandoned), and a push into `out` in progress is given the stop token
    // where the output takes one (push(item, stop) or publish(item, stop): framepipe's rings and
    // broadcaster), so a push waiting for room ends with the stop. A push that ignores the stop
    // token (an output with no such overload, or one that does not honour it) is waited for,
    // however long it takes, since `out` must outlive every push into it: stop() then parks
    // until that push returns. So is an on_state_change call in progress (on any thread): it is
    // the user's, short by contract, and nothing may call it once stop() has returned.
    // With run(), asks it to return (stopped) and does not wait for it. Before start() or run(),
    // makes them start nothing (see there).
    // Any thread but the runner's (and not from on_state_change); idempotent; noexcept. Calls
    // from several threads are serialised: a later one waits (parks) for the first to finish,
    // then has nothing left to do, so each returns within the bound above.
    void stop() noexcept {
        shared& s = *shared_;
        // std::mutex::lock throws only on a system error; noexcept turns that into terminate.
        const std::lock_guard<std::mutex> life(s.lifecycle_mu);
        stop_locked(s);
    }

    // Waits at most `timeout` for the source to reach a final state (ended, failed, stopped);
    // true when it has. Any thread; parks. Any std::chrono::duration; one beyond nanoseconds' range
    // (say seconds::max()) means no limit. Throws std::invalid_argument naming timeout when it is
    // negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return shared_->state_changed.park(nullptr, detail::deadline_after(ns), [this] {
                   return is_final(shared_->state.load(std::memory_order_seq_cst));
               }) == detail::wait_end::ready;
    }

    // Waits, with no time limit, for the source to reach a final state, or until `stop` is
    // requested; true when a final state was reached. Any thread; parks; does not throw in
    // practice.
    [[nodiscard]] bool wait(std::stop_token stop) {
        return shared_->state_changed.park(&stop, detail::no_deadline, [this] {
                   return is_final(shared_->state.load(std::memory_order_seq_cst));
               }) == detail::wait_end::ready;
    }

    // The state now. Any thread; wait-free.
    [[nodiscard]] live_state state() const noexcept { return shared_->state.load(); }

    // The current (or last) connection's epoch; options' epoch_base (0 by default) before the
    // first attempt. Any thread.
    [[nodiscard]] std::uint64_t epoch() const noexcept { return shared_->epoch.load(); }

    // Every figure at once. Any thread; takes a short lock for last_error.
    [[nodiscard]] live_stats stats() const {
        const shared& s = *shared_;
        live_stats st;
        st.state = s.state.load();
        st.epoch = s.epoch.load();
        st.connects = s.connects.load();
        st.reconnects = st.connects > 0 ? st.connects - 1 : 0;
        st.stalls = s.stalls.load();
        st.open_failures = s.open_failures.load();
        st.no_first_frame = s.no_first_frame.load();
        st.read_errors = s.read_errors.load();
        st.ends = s.ends.load();
        st.frames = s.frames.load();
        st.dropped_at_stop = s.dropped_at_stop.load();
        st.abandoned_frames = s.abandoned_frames.load();
        st.abandoned = s.abandoned.load();
        st.state_changes = s.state_changes.load();
        st.attempt = s.attempt.load();
        const auto now = s.time.now();
        st.fps = s.frame_rate.per_second(now);
        if (const auto last = s.last_frame_ns.load(); last != 0) {
            st.last_frame_age = now - time_at(last);
        }
        // None in a final state: a runner that stop() abandoned may leave the figure set.
        if (const auto since = s.connected_since_ns.load(); since != 0 && !is_final(st.state)) {
            st.connected_since = time_at(since);
        }
        st.current_backoff = std::chrono::nanoseconds(s.current_backoff_ns.load());
        const std::lock_guard<std::mutex> lock(s.error_mu);
        st.last_error = s.last_error;
        return st;
    }

    // The options in force. Any thread.
    [[nodiscard]] const live_options& options() const noexcept { return shared_->options; }

    // The figures as a pipeline shows them (snapshot.hpp): the state, the counters and the
    // gauges. Any thread.
    [[nodiscard]] source_status status() const {
        const live_stats st = stats();
        source_status out;
        out.state = std::string(to_string(st.state));
        for (const live_state s : all_live_states) {
            out.states.emplace_back(to_string(s));
        }
        const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
        out.counters = {
            {"connects", "Connections a live source opened.", n(st.connects)},
            {"reconnects", "Connections a live source opened after its first.", n(st.reconnects)},
            {"stalls", "Connections that went quiet for stall_timeout.", n(st.stalls)},
            {"open_failures", "Connection attempts whose open failed or timed out.",
             n(st.open_failures)},
            {"no_first_frame", "Connections that sent no frame within first_frame_timeout.",
             n(st.no_first_frame)},
            {"read_errors", "Connections that failed while reading.", n(st.read_errors)},
            {"frames", "Frames a live source emitted.", n(st.frames)},
            {"dropped_at_stop", "Frames read after a stop request and not emitted.",
             n(st.dropped_at_stop)},
            {"abandoned_frames", "Frames an abandoned read returned, not emitted.",
             n(st.abandoned_frames)},
            {"abandoned_calls", "Backend calls abandoned for overrunning their timeout.",
             n(st.abandoned)},
            {"state_changes", "State changes of a live source.", n(st.state_changes)},
        };
        const auto secs = [](std::chrono::nanoseconds d) {
            return std::chrono::duration<double>(d).count();
        };
        out.gauges = {
            {"epoch", "The live source's current connection number.", n(st.epoch)},
            {"fps", "Frames emitted per second over the last 2 s.", st.fps},
            {"attempt", "Failed connection attempts in a row.", static_cast<double>(st.attempt)},
            {"last_frame_age_seconds", "Seconds since the last frame (-1: none yet).",
             st.last_frame_age ? secs(*st.last_frame_age) : -1.0},
            {"backoff_seconds", "The last backoff delay chosen, in seconds.",
             secs(st.current_backoff)},
        };
        return out;
    }

    // Why the source failed (the last error, and how many attempts), once it is in state
    // failed; nullopt otherwise. Any thread.
    [[nodiscard]] std::optional<std::string> failure() const {
        if (state() != live_state::failed) {
            return std::nullopt;
        }
        const live_stats st = stats();
        if (st.attempt == 0) {
            return st.last_error;
        }
        return st.last_error + " (" + std::to_string(st.attempt) +
               (st.attempt == 1 ? " attempt)" : " attempts)");
    }

private:
    using emitter = std::function<void(item_type&&, const std::stop_token&)>;

    // Everything the threads share. Held by shared_ptr: an abandoned runner keeps it alive.
    struct shared {
        shared(std::function<Backend()> m, const live_options& o, Time t)
            : options(o), make(std::move(m)), time(std::move(t)),
              rng(o.seed != 0 ? o.seed : std::random_device{}()), epoch(o.epoch_base) {}

        const live_options options;
        std::function<Backend()> make;
        // Held while the state changes and its on_change runs (set_state, begin()): one change at
        // a time, each told before the next is made, and stop() waits here for one in progress.
        std::mutex change_mu;
        Time time;
        std::function<void(live_state, live_state)> on_change;
        emitter emit;
        std::stop_source stop;
        // start(), run()'s start and stop() hold it: one at a time, so that two stop() calls
        // never join one thread twice, and a stop() that comes first is seen by start().
        std::mutex lifecycle_mu;
        bool started = false; // guarded by lifecycle_mu
        std::mt19937_64 rng; // the runner's only (one runner at a time)

        // Figures (relaxed: statistics; the state is seq_cst for wait_for's predicate).
        // stopped until the source starts: "not running" (start() then reports connecting).
        std::atomic<live_state> state{live_state::stopped};
        std::atomic<std::uint64_t> epoch{0}, seq{0}, connects{0}, stalls{0}, open_failures{0},
            no_first_frame{0}, read_errors{0}, ends{0}, frames{0}, dropped_at_stop{0},
            abandoned_frames{0}, abandoned{0}, state_changes{0};
        std::atomic<std::uint32_t> attempt{0};
        std::atomic<std::int64_t> last_frame_ns{0}, connected_since_ns{0}, current_backoff_ns{0};
        // Frames pushed, for fps. One writer at a time: the runner that pushes (a new runner's
        // first push waits for the previous runner's to end, see emit_gated).
        rate_meter frame_rate;
        mutable std::mutex error_mu;
        std::string last_error; // guarded by error_mu
        detail::event_count state_changed;

        std::atomic<std::size_t> abandoned_running{0}; // abandoned calls not yet returned

        std::mutex threads_mu; // start(), stop(), the watchdog's relaunch
        std::shared_ptr<detail::live_runner> runner;
        std::thread runner_thread;
        detail::event_count runner_done;
        // Notified whenever a runner leaves a push (its pushing flag goes false): stop() and a
        // runner's replacement wait on it for a push under way (emit_gated).
        detail::event_count push_ended;
        detail::event_count watchdog_wait;
        std::jthread watchdog;
    };

    static live_options validated(const live_options& o) {
        detail::require_positive(o.open_timeout, "open_timeout");
        detail::require_positive(o.first_frame_timeout, "first_frame_timeout");
        detail::require_positive(o.stall_timeout, "stall_timeout");
        detail::check_backoff(o.backoff);
        detail::require_positive(o.abandon_after, "abandon_after");
        if (o.max_abandoned == 0) {
            throw std::invalid_argument("max_abandoned: must be at least 1");
        }
        if (o.epoch_base >= std::uint64_t{1} << 63) {
            throw std::invalid_argument("epoch_base: must be below 2^63");
        }
        return o;
    }

    // stop()'s work, with lifecycle_mu held (stop(), and start() undoing a failed start).
    static void stop_locked(shared& s) noexcept {
        s.stop.request_stop();
        // The watchdog first, without the lock it takes: once it is gone, nothing relaunches.
        if (s.watchdog.joinable()) {
            s.watchdog.request_stop();
            s.watchdog.join();
        }
        const std::lock_guard<std::mutex> lock(s.threads_mu);
        if (s.runner_thread.joinable()) {
            auto runner = s.runner;
            const auto until = detail::deadline_after(s.options.abandon_after);
            if (s.runner_done.park(nullptr, until, [&] { return runner->has_finished(); }) ==
                detail::wait_end::ready) {
                s.runner_thread.join();
            } else {
                // A backend call that ignores its stop token, a push (below), or on_change.
                FRAMEPIPE_DETAIL_LIVE_STOP_ABANDON_HOOK();
                {
                    // A state change under way (its on_change call) is waited for, however long
                    // it takes (parked): nothing may call on_change once stop() has returned.
                    // Abandoned under the lock, the runner makes no state change after this.
                    const std::lock_guard<std::mutex> changes(s.change_mu);
                    runner->mark_abandoned();
                }
                // Not counted in `abandoned` and no last_error: no backend call overran (as far
                // as anyone knows), the source stops. For the decrement when the runner ends:
                s.abandoned_running.fetch_add(1, std::memory_order_relaxed);
                s.runner_thread.detach();
                // A push into `out` already under way, one that ignores the stop token (the
                // runner is still in it abandon_after after the stop): `out` must outlive it, so
                // it is waited for, however long it takes. Parked at once: it is a long one.
                (void)s.push_ended.park(nullptr, detail::no_deadline, not_pushing(*runner));
            }
        }
        if (s.started && !is_final(s.state.load())) {
            set_state(s, live_state::stopped);
        }
    }

    // Marks the source started (once only: else throws std::logic_error) and in state
    // connecting before any thread runs, so that a wait() right after start() sees a running
    // source. False when stop() came first: then the state stays stopped (final) and nothing is
    // to run. Requires lifecycle_mu.
    bool begin() {
        shared& s = *shared_;
        if (s.started) {
            throw std::logic_error("live_source: already started");
        }
        s.started = true;
        if (s.stop.stop_requested()) {
            return false;
        }
        // The one change out of a final state: stopped means "not started" until now.
        const std::lock_guard<std::mutex> changes(s.change_mu);
        const live_state from = s.state.exchange(live_state::connecting, std::memory_order_seq_cst);
        announce(s, from, live_state::connecting);
        return true;
    }

    // How the runner pushes into `out`: with the stop token where the output takes one
    // (push(item, stop): the rings; publish(item, stop): a broadcaster), so that stop() also ends
    // a push blocked by back-pressure.
    template <class Out>
    static emitter emitter_for(Out& out) {
        return [&out](item_type&& item, const std::stop_token& stop) {
            if constexpr (requires { out.push(std::move(item), stop); }) {
                (void)out.push(std::move(item), stop);
            } else if constexpr (requires { out.publish(std::move(item), stop); }) {
                (void)out.publish(std::move(item), stop);
            } else if constexpr (requires { out.publish(std::move(item)); }) {
                (void)out.publish(std::move(item));
            } else {
                (void)out.push(std::move(item));
            }
        };
    }

    static std::int64_t ns_of(clock::time_point t) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }
    static clock::time_point time_at(std::int64_t ns) noexcept {
        return clock::time_point(
            std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(ns)));
    }

    static void set_error(shared& s, std::string why) {
        const std::lock_guard<std::mutex> lock(s.error_mu);
        s.last_error = std::move(why);
    }

    // Moves the state to `to`, unless it is final already: a final state is for good, so that
    // nothing late (a runner that stop() abandoned) can leave it. begin() alone leaves stopped.
    // Nothing either when `by`, the runner asking, has been abandoned. Under change_mu, with
    // the on_change call: blocks while another change's on_change runs. Any thread; noexcept
    // (a mutex that fails to lock, a system error, terminates).
    static void set_state(shared& s, live_state to,
                          const detail::live_runner* by = nullptr) noexcept {
        const std::lock_guard<std::mutex> changes(s.change_mu);
        if (by != nullptr && by->gone()) {
            return;
        }
        // seq_cst: the state change wait_for's predicate reads (event_count).
        live_state from = s.state.load(std::memory_order_seq_cst);
        do {
            if (from == to || is_final(from)) {
                return;
            }
        } while (!s.state.compare_exchange_weak(from, to, std::memory_order_seq_cst,
                                                std::memory_order_seq_cst));
        announce(s, from, to);
    }

    // A runner's state change: none once it has been abandoned (its replacement, or stop(), owns
    // the state). False when it has been, before or during the change (on_change may block).
    static bool runner_set_state(shared& s, detail::live_runner& me, live_state to) noexcept {
        if (me.gone()) {
            return false;
        }
        set_state(s, to, &me);
        return !me.gone();
    }

    // What escapes the machine (what a push into `out` threw, or a bad_alloc; backend calls'
    // exceptions are failed attempts): the source fails, with the exception's message as its
    // last error, unless the runner has been abandoned (then it changes nothing).
    static void runner_threw(shared& s, detail::live_runner& me,
                             const std::exception_ptr& e) noexcept {
        if (me.gone()) {
            return;
        }
        try {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                set_error(s, std::string("exception: ") + x.what());
            } catch (...) {
                set_error(s, "exception: unknown");
            }
        } catch (...) {
            // No memory for the message: the state still says failed.
        }
        s.connected_since_ns.store(0, std::memory_order_relaxed);
        (void)runner_set_state(s, me, live_state::failed);
    }

    // Counts and tells a change from `from` to `to` that has been made.
    static void announce(shared& s, live_state from, live_state to) noexcept {
        if (from == to) {
            return;
        }
        s.state_changes.fetch_add(1, std::memory_order_relaxed);
        s.state_changed.notify_all_after_seq_cst();
        if (s.on_change) {
            try {
                s.on_change(from, to);
            } catch (...) {
                // A callback's failure must not take the source down (documented as ignored).
            }
        }
    }

    // The delay before attempt `n` + 1, after n failures in a row (n >= 1).
    static std::chrono::nanoseconds backoff_delay(shared& s, std::uint32_t n) {
        const backoff_options& b = s.options.backoff;
        const double max = static_cast<double>(b.max.count());
        double d = static_cast<double>(b.initial.count()) *
                   std::pow(b.multiplier, static_cast<double>(n - 1));
        d = std::min(std::isfinite(d) ? d : max, max);
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(s.rng);
        const double jittered = d * (1.0 - b.jitter * u); // in ((1 - jitter) d, d]
        if (jittered >= max) {
            // d == max: as a double, max may be 2^63, out of llround's range (b.max of
            // nanoseconds::max()).
            return b.max;
        }
        return std::chrono::nanoseconds(std::max<std::int64_t>(1, std::llround(jittered)));
    }

    // A backend call, announced to the watchdog with its deadline. When the watchdog took the
    // call away meanwhile, the runner is abandoned once this returns (see live_runner). A call
    // due before the watchdog's next look wakes it (a read after a long open, say), so that an
    // overrun is seen at the call's own deadline + abandon_after.
    template <class F>
    static auto call(shared& s, detail::live_runner& me, bool watched,
                     std::chrono::nanoseconds timeout, F f) {
        if (watched) {
            // Relaxed: the watchdog only compares; a stale read delays its verdict by one round.
            me.call_seq.fetch_add(1, std::memory_order_relaxed);
            const auto deadline = detail::deadline_after(timeout);
            // The deadline's store also releases what this runner did before the call (the rng,
            // the error) to a runner the watchdog starts after taking it.
            const auto overdue = detail::saturating_add(deadline, s.options.abandon_after);
            if (me.announce_call(ns_of(deadline), ns_of(overdue))) {
                me.wake_watchdog(s.watchdog_wait);
            }
        }
        struct end_call {
            detail::live_runner& me;
            bool watched;
            ~end_call() {
                // An exchange, not a store: against the watchdog's compare-exchange, exactly one
                // of the two sees the other's value.
                if (watched && me.call_deadline_ns.exchange(0, std::memory_order_seq_cst) ==
                                   detail::live_runner::taken) {
                    me.abandoned.store(true, std::memory_order_seq_cst);
                }
            }
        } guard{me, watched};
        return f();
    }

    // Closes and destroys the connection's backend: one watched call, so that a destructor that
    // hangs (a library's teardown waiting on a dead peer) is abandoned as a close() that hangs
    // is, and the source reconnects on a fresh backend.
    static void close(shared& s, detail::live_runner& me, bool watched,
                      std::optional<Backend>& b) noexcept {
        if (b) {
            call(s, me, watched, s.options.abandon_after, [&] {
                b->close();
                b.reset();
                return 0;
            });
        }
    }

    // Emits one frame unless this runner has been abandoned. The pushing flag and the abandoned
    // flag form a Dekker pair (both seq_cst, see live_runner::begin_push()): either this runner
    // sees that it was abandoned and drops the frame, or the runner that replaced it (or stop())
    // sees the push in progress and waits for it before its own first push. So nothing of an older
    // epoch follows anything of a newer one. (The watchdog abandons only inside a backend call;
    // stop() at any point.)
    static void emit_gated(shared& s, detail::live_runner& me, item_type&& item,
                           const std::stop_token& stop) {
        if (me.previous) {
            // Spins briefly, then parks: the previous runner was abandoned inside a backend call,
            // so it is at most in the few instructions of a push it is about to drop.
            (void)s.push_ended.wait(nullptr, detail::no_deadline, not_pushing(*me.previous));
            me.previous.reset();
        }
        const bool may_push = me.begin_push();
        struct done_pushing {
            shared& s;
            detail::live_runner& me;
            ~done_pushing() { me.end_push(s.push_ended); }
        } guard{s, me};
        if (may_push) {
            s.emit(std::move(item), stop);
            // Counted once pushed (not when the push threw), before end_push(): stop() waits
            // for that, so an abandoned runner counts nothing after stop() has returned.
            s.frames.fetch_add(1, std::memory_order_relaxed);
            s.frame_rate.record(s.time.now());
        }
    }

    // The predicate of a wait on push_ended for `runner`'s push to be over (see emit_gated).
    static auto not_pushing(const detail::live_runner& runner) noexcept {
        return [&runner]() noexcept { return runner.push_over(); };
    }

    // The state machine (see the file comment). Returns the final state it reached, or
    // `stopped` for an abandoned runner. An abandoned runner leaves as soon as it notices, and
    // changes nothing shared on its way out (only closes its own backend, and counts a frame its
    // late read returned in abandoned_frames): it checks after every
    // backend call, close() included, and before every state change (runner_set_state). The
    // watchdog abandons a runner only inside a call (see live_runner), so that check is exact;
    // stop() may abandon one anywhere (a push, on_change), after it has set the state stopped,
    // which nothing can leave (set_state).
    template <class Emit>
    static live_state run_machine(shared& s, detail::live_runner& me, Emit emit,
                                  std::stop_token stop, bool watched) {
        const live_options& o = s.options;
        // Every backend call gets me.calls' token; a stop request reaches it through this.
        std::stop_callback<std::function<void()>> forward(stop, [&me] { me.calls.request_stop(); });
        const std::stop_token calls = me.calls.get_token();
        const auto change = [&](live_state to) { return runner_set_state(s, me, to); };
        bool reconnect_now = false; // after an end with restart_at_end: no backoff
        // A runner that replaces one abandoned in a failed attempt starts in backoff, as after
        // any failure (see live_runner::backoff_first).
        bool start_in_backoff = me.backoff_first;
        for (;;) {
            if (stop.stop_requested() || me.gone()) {
                return live_state::stopped;
            }
            std::string failure; // why this attempt failed (empty: it did not)
            if (!start_in_backoff) {
                const std::uint64_t epoch = s.epoch.fetch_add(1) + 1;
                if (!change(live_state::connecting)) {
                    return live_state::stopped;
                }
                std::optional<Backend> b;
                open_result opened;
                try {
                    opened = call(s, me, watched, o.open_timeout, [&] {
                        b.emplace(s.make());
                        return b->open(calls, o.open_timeout);
                    });
                } catch (const std::exception& e) {
                    opened = open_result::failure(std::string("backend: ") + e.what());
                } catch (...) {
                    opened = open_result::failure("backend: unknown exception");
                }
                if (me.gone()) {
                    close(s, me, false, b);
                    return live_state::stopped;
                }
                if (stop.stop_requested()) {
                    close(s, me, watched, b);
                    return live_state::stopped;
                }
                if (!opened.ok()) {
                    s.open_failures.fetch_add(1, std::memory_order_relaxed);
                    failure = opened.error;
                    close(s, me, watched, b);
                    if (me.gone()) { // abandoned inside close(): the new runner owns the source
                        return live_state::stopped;
                    }
                } else {
                    s.connects.fetch_add(1, std::memory_order_relaxed);
                    try {
                        failure =
                            stream(s, me, *b, epoch, emit, stop, calls, watched, reconnect_now);
                    } catch (...) { // a push that threw (see runner_threw): close, then fail
                        close(s, me, watched && !me.gone(), b);
                        throw;
                    }
                    if (me.gone()) {
                        close(s, me, false, b);
                        return live_state::stopped;
                    }
                    if (failure.empty() && !stop.stop_requested()) { // the input ended
                        // For the watchdog, should it abandon the close (see live_runner).
                        me.closing.store(reconnect_now ? detail::live_closing::restart
                                                       : detail::live_closing::ended,
                                         std::memory_order_seq_cst);
                    }
                    close(s, me, watched, b);
                    me.closing.store(detail::live_closing::failed, std::memory_order_seq_cst);
                    if (me.gone() || stop.stop_requested()) {
                        return live_state::stopped;
                    }
                    if (failure.empty()) { // the input ended
                        if (!reconnect_now) {
                            return change(live_state::ended) ? live_state::ended
                                                             : live_state::stopped;
                        }
                        continue; // restart_at_end: open again at once
                    }
                }
                set_error(s, failure);
            }
            start_in_backoff = false;
            // A failed attempt: count it, then wait before the next one.
            const std::uint32_t n = s.attempt.fetch_add(1) + 1;
            if (o.max_attempts != 0 && n >= o.max_attempts) {
                return change(live_state::failed) ? live_state::failed : live_state::stopped;
            }
            const auto delay = backoff_delay(s, n);
            s.current_backoff_ns.store(delay.count(), std::memory_order_relaxed);
            if (!change(live_state::backoff)) {
                return live_state::stopped;
            }
            if (!s.time.sleep_until(detail::saturating_add(s.time.now(), delay), stop)) {
                return live_state::stopped;
            }
        }
    }

    // Reads one connection until it fails (returns why), ends (returns "", with restart set to
    // restart_at_end; an end before the first frame with restart_at_end is a failure), the stop
    // or this runner's abandonment (returns ""). Emits every frame. The
    // stall clock runs from the first frame's read (first_frame_timeout from the open before it)
    // and restarts each time a push returns; a read returning `frame` without one is an error.
    template <class Emit>
    static std::string stream(shared& s, detail::live_runner& me, Backend& b, std::uint64_t epoch,
                              Emit& emit, const std::stop_token& stop,
                              const std::stop_token& calls, bool watched, bool& restart) {
        const live_options& o = s.options;
        const auto opened_at = s.time.now();
        clock::time_point last = opened_at;
        std::optional<clock::time_point> streaming_since;
        bool healthy = false;
        for (;;) {
            if (me.gone()) { // by stop(), during the last push
                return {};
            }
            // Saturated: a timeout of nanoseconds::max() never runs out.
            const auto deadline = streaming_since
                                      ? detail::saturating_add(last, o.stall_timeout)
                                      : detail::saturating_add(opened_at, o.first_frame_timeout);
            const auto now = s.time.now();
            if (now >= deadline) {
                s.connected_since_ns.store(0, std::memory_order_relaxed);
                if (streaming_since) {
                    s.stalls.fetch_add(1, std::memory_order_relaxed);
                    if (!runner_set_state(s, me, live_state::stalled)) {
                        return {};
                    }
                    return "no frame for " + seconds(o.stall_timeout) + " (stall_timeout)";
                }
                s.no_first_frame.fetch_add(1, std::memory_order_relaxed);
                return "no first frame within " + seconds(o.first_frame_timeout) +
                       " (first_frame_timeout)";
            }
            const auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
            // Built once, never assigned: a frame_type need not be assignable.
            read_result<frame_type> r = [&]() -> read_result<frame_type> {
                try {
                    return call(s, me, watched, timeout, [&] { return b.read(calls, timeout); });
                } catch (const std::exception& e) {
                    return read_result<frame_type>::failed(std::string("backend: ") + e.what());
                } catch (...) {
                    return read_result<frame_type>::failed("backend: unknown exception");
                }
            }();
            if (me.gone()) {
                // Touching nothing but this count: connected_since is the new runner's.
                if (r.status == read_status::frame && r.frame) {
                    s.abandoned_frames.fetch_add(1, std::memory_order_relaxed);
                }
                return {};
            }
            if (stop.stop_requested()) {
                s.connected_since_ns.store(0, std::memory_order_relaxed);
                if (r.status == read_status::frame && r.frame) {
                    s.dropped_at_stop.fetch_add(1, std::memory_order_relaxed);
                }
                return {};
            }
            if (r.status == read_status::frame && !r.frame) {
                r.status = read_status::error;
                r.error = "backend: a frame result without a frame";
            }
            switch (r.status) {
            case read_status::frame: {
                const auto at = s.time.now();
                if (!streaming_since) {
                    streaming_since = at;
                    s.connected_since_ns.store(ns_of(at), std::memory_order_relaxed);
                    if (!runner_set_state(s, me, live_state::streaming)) {
                        return {};
                    }
                }
                if (!healthy && at - *streaming_since >= o.backoff.reset_after) {
                    healthy = true;
                    s.attempt.store(0, std::memory_order_relaxed);
                }
                s.last_frame_ns.store(ns_of(at), std::memory_order_relaxed);
                clock::time_point captured = at;
                if constexpr (timestamped<frame_type>) {
                    const auto t = timestamp_traits<frame_type>::capture_time(*r.frame);
                    if (t != clock::time_point::max()) {
                        captured = t;
                    }
                }
                emit(me, item_type{std::move(*r.frame), s.seq.fetch_add(1), captured, epoch},
                     stop);
                // The stall clock starts when the push returns: a push that blocks (an output
                // full, a consumer slow, the user's choice) is not the camera's silence.
                last = s.time.now();
                break;
            }
            case read_status::timeout: break; // the loop checks the deadline
            case read_status::end:
                s.ends.fetch_add(1, std::memory_order_relaxed);
                s.connected_since_ns.store(0, std::memory_order_relaxed);
                if (o.restart_at_end && !streaming_since) {
                    // Opening again at once would loop without a pause for as long as the input
                    // ends before its first frame: a failed attempt instead.
                    return "the input ended before its first frame (restart_at_end)";
                }
                restart = o.restart_at_end;
                if (restart) {
                    s.attempt.store(0, std::memory_order_relaxed);
                }
                return {};
            case read_status::error:
                s.read_errors.fetch_add(1, std::memory_order_relaxed);
                s.connected_since_ns.store(0, std::memory_order_relaxed);
                return r.error;
            }
        }
    }

    static std::string seconds(std::chrono::nanoseconds d) {
        const double v = std::chrono::duration<double>(d).count();
        std::string out = std::to_string(v);
        out.erase(out.find_last_not_of('0') + 1);
        if (!out.empty() && out.back() == '.') {
            out.pop_back();
        }
        return out + " s";
    }

    // Starts a runner thread. Requires threads_mu. `previous`: the runner it replaces (abandoned);
    // `backoff_first`: whether the new one begins in backoff (see live_runner).
    // The thread holds the shared state: an abandoned runner may outlive the live_source.
    static void launch_runner(const std::shared_ptr<shared>& sp,
                              std::shared_ptr<detail::live_runner> previous,
                              bool backoff_first = false) {
        auto runner = std::make_shared<detail::live_runner>();
        runner->previous = std::move(previous);
        runner->backoff_first = backoff_first;
        sp->runner = runner;
        FRAMEPIPE_DETAIL_LIVE_RUNNER_START_HOOK();
        sp->runner_thread = std::thread([sp, runner] {
            shared& sh = *sp;
            const auto emit = [&sh](detail::live_runner& me, item_type&& item,
                                    const std::stop_token& stop) {
                emit_gated(sh, me, std::move(item), stop);
            };
            // ended and failed are set by the machine; stopped by stop().
            try {
                (void)run_machine(sh, *runner, emit, sh.stop.get_token(), true);
            } catch (...) {
                runner_threw(sh, *runner, std::current_exception());
            }
            runner->finish(sh.runner_done);
            if (runner->gone()) {
                // A runner that found its call taken may get here before the watchdog's
                // increment in abandon(); only the watchdog reads the count, after that.
                sh.abandoned_running.fetch_sub(1, std::memory_order_relaxed);
            }
        });
    }

    // The watchdog's abandonment of `runner`, whose overrunning call it has taken: its calls are
    // asked to stop, whatever it returns is dropped, and its connection is gone (connected_since).
    // Counted, with last_error. (stop()'s abandonment is not: see stop_locked().)
    static void abandon(shared& s, detail::live_runner& runner) noexcept {
        runner.mark_abandoned();
        s.abandoned.fetch_add(1, std::memory_order_relaxed);
        s.abandoned_running.fetch_add(1, std::memory_order_relaxed);
        s.connected_since_ns.store(0, std::memory_order_relaxed);
        try {
            set_error(s, "a backend call did not return within its timeout + abandon_after: "
                         "abandoned");
        } catch (...) {
            // No memory for the message: the count says it.
        }
    }

    // The watchdog: wakes at the current call's deadline + abandon_after (or every
    // abandon_after between calls, or sooner when a call due earlier begins); a call still
    // running then is abandoned, and a new runner takes over, in backoff as after any failure;
    // but a close() after an end carries out the runner's outcome (live_runner::closing): an
    // input that ended is ended (this thread sets it, calling on_change), one that restarts at
    // its end is opened again at once by the new runner, with no backoff and no attempt.
    static void watch(const std::shared_ptr<shared>& sp, std::stop_token stop) {
        shared& s = *sp;
        const auto grace = s.options.abandon_after;
        for (;;) {
            // The current runner's call (a runner abandoned before is no longer watched).
            std::shared_ptr<detail::live_runner> runner;
            {
                const std::lock_guard<std::mutex> lock(s.threads_mu);
                runner = s.runner;
            }
            runner->watch_again.store(false, std::memory_order_seq_cst);
            const std::uint64_t seq = runner->call_seq.load(std::memory_order_relaxed);
            const std::int64_t deadline = runner->call_deadline_ns.load(std::memory_order_seq_cst);
            // Saturated: a call with a timeout of nanoseconds::max() has a deadline of
            // time_point::max(), and is never overdue.
            const auto overdue_at = detail::saturating_add(time_at(deadline), grace);
            const auto wake = deadline != 0 ? overdue_at : detail::deadline_after(grace);
            // Publish the wake-up, then read the deadline again (see live_runner::plan_watch()): a
            // call that began in between either is seen here or sees this wake-up and, when it
            // is due earlier, wakes this thread.
            if (!runner->plan_watch(ns_of(wake), deadline)) {
                continue;
            }
            const auto look_again = [&runner] { return runner->watch_requested(); };
            if (s.watchdog_wait.park(&stop, wake, look_again) == detail::wait_end::stopped) {
                return;
            }
            const std::lock_guard<std::mutex> lock(s.threads_mu);
            if (stop.stop_requested() || s.runner->has_finished()) {
                return;
            }
            if (s.runner != runner || deadline == 0 ||
                runner->call_seq.load(std::memory_order_relaxed) != seq ||
                clock::now() < overdue_at) {
                continue; // the runner moved on
            }
            // What the runner's call is for, read before the take (see live_runner::closing):
            // seq_cst, as the runner's reset after the call, which then comes after this read.
            const detail::live_closing closing = runner->closing.load(std::memory_order_seq_cst);
            // Take the call: this fails when the runner ended it meanwhile (see live_runner).
            // seq_cst (acquire would do): pairs with the store in call().
            std::int64_t expected = deadline;
            if (!runner->call_deadline_ns.compare_exchange_strong(
                    expected, detail::live_runner::taken, std::memory_order_seq_cst)) {
                continue; // the call returned just now
            }
            auto old = s.runner;
            abandon(s, *old);
            s.runner_thread.detach();
            if (closing == detail::live_closing::ended) {
                set_state(s, live_state::ended);
                return;
            }
            if (s.abandoned_running.load(std::memory_order_relaxed) > s.options.max_abandoned) {
                set_state(s, live_state::failed);
                return;
            }
            try {
                launch_runner(sp, std::move(old), closing != detail::live_closing::restart);
            } catch (const std::exception& e) {
                // No thread for the new runner (std::system_error) or no memory: the source
                // fails, a state as after any failure (nothing above this thread would catch it).
                // stop() then has no runner thread to join: the one abandoned was detached.
                try {
                    set_error(s, std::string("cannot start a new runner: ") + e.what());
                } catch (...) {
                    // No memory for the message: the state says it.
                }
                set_state(s, live_state::failed);
                return;
            }
        }
    }

    std::shared_ptr<shared> shared_;
};

} // namespace framepipe
