// framepipe/pipeline.hpp - named stages on their own threads, joined by channels, with an
// orderly lifecycle, error propagation and live metrics.
//
//     framepipe::broadcaster<Frame> frames;
//     auto ui  = frames.subscribe({.name = "ui"});
//     auto det = frames.subscribe({.name = "detector"});
//     framepipe::latest_slot<Boxes> boxes;
//
//     framepipe::pipeline p("seed-000");
//     p.source("camera", frames, [&] { return grab(); }, {.max_rate_hz = 30});
//     p.stage("detector", det, boxes, [&](auto f) { return detect(*f); });
//     p.sink("ui", ui, [&](auto f) { show(*f, boxes.peek()); }, {.max_rate_hz = 15});
//     p.start();
//     if (!p.wait_for(10s)) { // true once every stage has ended (say, the camera ran out)
//         p.request_stop();   // sources stop, channels drain, stages end in order
//     }
//     p.wait();               // joins; rethrows a stage's exception as framepipe::stage_error
//
// Shapes of the functions (each may be move-only; with workers > 1 it is called from several
// threads at once and must allow that):
//   source: fn() or fn(stage_context&) returning std::optional<U> or a pointer (nullopt or a
//           null pointer ends the source), or a U to emit. A source without an output returns
//           bool (false ends it) or void (it runs until stopped).
//   stage:  fn(item) or fn(item, stage_context&) returning std::optional<U> (nullopt: emit
//           nothing for this item) or U.
//   sink:   fn(item) or fn(item, stage_context&); the result is ignored.
// Channels: any input_channel and output_channel (channel.hpp), framepipe's or your own.
//
// Lifecycle. request_stop() asks the sources to stop. A stage whose producers have all ended
// closes its output, so each consumer drains what is buffered and then ends, and so on down
// the graph: stages end in order, and nothing buffered is lost in an orderly stop. A stage that
// ends also closes its input, so a producer blocked on it (overflow::block) is released.
// request_stop(deadline) does the same but waits at most `deadline`; stages still running then
// are stopped at once (their pops and blocked pushes end) and are named in the report. (From a
// stage's own function it cannot wait for the rest, which may need that stage to return: it
// does what request_stop() does.) A stage whose input nothing in the pipeline feeds ends only
// when that channel's owner closes it; a selector or a batcher is closed by request_stop()
// (channel_traits' close_on_stop), and its stage ends after its inputs.
//
// Errors. An exception escaping a stage's function stops the whole pipeline at once (every
// stage's stop token is requested and every channel closed; a source added after that stops as
// soon as it starts); wait() rethrows it as stage_error, which names the stage and carries the
// original exception (cause(), rethrow_cause(); not a std::nested_exception).
//
// Threads. Build the graph (source/stage/sink/channel) on one thread before start(). After
// start(), sources may still be added (source()) and removed (remove()), one call at a time:
// cameras come and go while the rest runs. snapshot(), request_stop(), wait_for() and running()
// may be called from any thread; wait() from one thread at a time (it also joins a source
// added while it waits).
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/broadcaster.hpp>
#include <framepipe/channel.hpp>
#include <framepipe/detail/cores.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/unique_function.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/rate_limiter.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if FRAMEPIPE_DETAIL_LINUX
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace framepipe {

template <class T>
class latest_slot; // latest_slot.hpp: an input inline_when_idle can bypass (detail::bypassable)

// The exception wait() rethrows when a stage failed: names the stage and carries the cause.
class stage_error : public std::runtime_error {
public:
    stage_error(std::string stage, std::exception_ptr cause)
        : std::runtime_error("stage '" + stage + "' failed: " + describe(cause)),
          stage_(std::move(stage)), cause_(std::move(cause)) {}

    // Name of the stage whose function threw.
    [[nodiscard]] const std::string& stage() const noexcept { return stage_; }
    // The original exception.
    [[nodiscard]] std::exception_ptr cause() const noexcept { return cause_; }
    // Rethrows the original exception.
    [[noreturn]] void rethrow_cause() const { std::rethrow_exception(cause_); }

private:
    static std::string describe(const std::exception_ptr& e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            return x.what();
        } catch (...) {
            return "non-standard exception";
        }
    }

    std::string stage_;
    std::exception_ptr cause_;
};

// What a stage's function may ask of the pipeline while it runs.
class stage_context {
public:
    stage_context(const std::string& name, std::stop_token stop, std::size_t worker) noexcept
        : name_(&name), stop_(std::move(stop)), worker_(worker) {}

    [[nodiscard]] const std::string& name() const noexcept { return *name_; }
    // Requested when the pipeline stops this stage (sources: on request_stop; all stages: on an
    // error or a missed deadline). Pass it to any wait of your own.
    [[nodiscard]] const std::stop_token& stop_token() const noexcept { return stop_; }
    [[nodiscard]] bool stop_requested() const noexcept { return stop_.stop_requested(); }
    // Which of the stage's workers is calling, from 0.
    [[nodiscard]] std::size_t worker() const noexcept { return worker_; }

private:
    const std::string* name_;
    std::stop_token stop_;
    std::size_t worker_;
};

// How a source, stage or sink runs: the last argument of pipeline::source, stage and sink. An
// aggregate: p.stage("detector", in, out, detect, {.max_rate_hz = 5, .nice = 5}).
struct stage_options {
    // Pacing. A source calls its function at most this often. A stage or sink takes at most
    // this many items per second: it waits its turn, then takes the newest item its input holds;
    // the older ones it passes over are counted as rate_limited on that input. It passes over at
    // most the input's capacity per turn (4096 for an input that reports none), so a producer
    // that keeps the input full cannot hold it in that skip for ever. 0: unpaced.
    double max_rate_hz = 0;
    // Threads running the function of a stage or sink, all taking from the same input (sources
    // have one). The function is then called from several threads at once.
    std::size_t workers = 1;
    // The threads' nice value (Linux: setpriority), -20..19; unset: inherited. Raising priority
    // (below the current value) needs privileges: the stage then fails at start.
    std::optional<int> nice{};
    // The threads' name as top and gdb show it (Linux: the first 15 bytes); default: the stage's.
    std::string thread_name{};
    // A stage or sink only. While this stage is idle, with nothing left in its input, the thread
    // that emits an item into that input runs this stage's function on it at once instead of
    // waking this stage's thread: one hand-off less (a futex wake-up and a reschedule, a few
    // microseconds) per item. Items keep their order, metrics count them here, and an exception
    // fails this stage, as if its own thread had run them. The cost: the upstream thread is busy
    // for the function's time (and for what it emits inline further on), at its own nice value,
    // so its pace is then set by the stages it runs. For short functions on a machine with fewer
    // cores than stage threads. Needs workers == 1, max_rate_hz == 0, and an input that is a
    // ring, spsc_ring or latest_slot without max_age or drop_older_epochs, that one source or
    // stage with one worker pushes into and no other stage reads; start() checks that. Nothing
    // outside the pipeline may push into that input once it runs (it could be overtaken).
    bool inline_when_idle = false;
};

// A source's options are a stage's (workers must be 1).
using source_options = stage_options;

// What request_stop() found.
struct stop_report {
    bool clean = true;                   // no stage was still running when the call returned
    std::vector<std::string> unfinished; // the stages still running then: without a deadline,
                                         // still draining; with one, stopped at once
};

// What a stage thread does in the few microseconds a blocking call spins before it parks
// (detail/wait.hpp).
enum class spin_style {
    automatic, // yield when the pipeline runs more stage threads than the cores it may use
    pause,     // a pause instruction between checks: best when every thread has a core
    yield,     // std::this_thread::yield() between checks: hands the core to a runnable thread
};

struct pipeline_options {
    // Record service time, rate, busy share and item age. Every item is timed while items take
    // 10 us or more apart; faster than that, one in 16 (counts stay exact; see
    // detail::timing_sampler). Off: only item counts.
    bool metrics = true;
    // How the stage threads spin. With more threads than cores, the thread a stage waits for
    // is often not running; pausing keeps it off the core, and the waiter parks, so every
    // hand-off costs a futex wake-up. Yielding lets it run: a five-stage chain on 2 cores moves
    // 4-6x the items at a fifth to a sixth of the CPU per item, while a hand-off between two
    // threads that each have a core gets slower by about 1.5x (docs/benchmarks.md, "The pipeline
    // against oneTBB flow graph"). automatic decides when the threads start, from the number of
    // stage threads (a live_source's own threads not counted) and the cores they may use: the
    // fewest of std::thread::hardware_concurrency(), the starting thread's CPU affinity and the
    // process's cgroup CPU quota, rounded up (detail/cores.hpp). A source added later decides
    // again for its thread.
    spin_style spin = spin_style::automatic;
};

namespace detail {

template <class T>
struct is_subscription : std::false_type {};
template <class T>
struct is_subscription<subscription<T>> : std::true_type {};

template <class R>
struct is_optional : std::false_type {};
template <class U>
struct is_optional<std::optional<U>> : std::true_type {};

// A source that runs on threads of its own, which a pipeline stage supervises: a live_source.
template <class S, class Out>
concept supervised_source = requires(S& s, const S& cs, Out& out, std::stop_token stop) {
    s.start(out);
    s.stop();
    s.wait(stop);
    { cs.status() } -> std::same_as<source_status>;
    { cs.failure() } -> std::same_as<std::optional<std::string>>;
};

// A supervised source (it has an item_type, stop() and status()) whose output cannot take what it
// emits: pipeline::source() then fails with one message instead of no overload at all.
template <class S, class Out>
concept mismatched_supervised_source = !supervised_source<S, Out> && requires(S& s, const S& cs) {
    typename S::item_type;
    s.stop();
    { cs.status() } -> std::same_as<source_status>;
};
template <class>
inline constexpr bool always_false = false;

// A result that ends a source when it is null (std::shared_ptr, std::unique_ptr, T*).
template <class R>
concept nullable_pointer = !is_optional<R>::value && requires(const R& r) {
    r == nullptr;
    static_cast<bool>(r);
};

// The members a pipeline needs of a channel, checked one by one so that a type that does not fit
// gets a short message naming what it lacks (and nothing else: the callers compile their body
// only when this returns true).
template <class C>
concept has_pop = requires(C& c, std::stop_token stop) { c.pop(stop); };
template <class C>
concept has_close = requires(C& c) { c.close(); };

template <class In>
consteval bool check_input() {
    static_assert(has_pop<In>,
                  "framepipe::pipeline: an input channel needs pop(std::stop_token) (see "
                  "input_channel in framepipe/channel.hpp)");
    if constexpr (has_pop<In>) {
        static_assert(optional_like<decltype(std::declval<In&>().pop(std::stop_token{}))>,
                      "framepipe::pipeline: an input's pop(std::stop_token) must return an "
                      "optional-like item (tests false when there is none; * gives the item)");
    }
    static_assert(has_close<In>, "framepipe::pipeline: an input channel needs close()");
    return input_channel<In>;
}

template <class Out, class U>
consteval bool check_output() {
    static_assert(requires(Out& o, U&& u) { o.push(std::forward<U>(u)); } ||
                      requires(Out& o, U&& u) { o.publish(std::forward<U>(u)); },
                  "framepipe::pipeline: the output channel needs push(U) (or publish(U)) for the "
                  "item type U the function returns (see output_channel in framepipe/channel.hpp)");
    static_assert(has_close<Out>, "framepipe::pipeline: an output channel needs close()");
    return output_channel<Out, U>;
}

// Calls fn with (args..., ctx) when it accepts the context, else with (args...).
template <class Fn, class... Args>
decltype(auto) call(Fn& fn, stage_context& ctx, Args&&... args) {
    if constexpr (std::is_invocable_v<Fn&, Args..., stage_context&>) {
        return std::invoke(fn, std::forward<Args>(args)..., ctx);
    } else {
        return std::invoke(fn, std::forward<Args>(args)...);
    }
}

template <class Fn, class... Args>
inline constexpr bool callable_with =
    std::is_invocable_v<Fn&, Args..., stage_context&> || std::is_invocable_v<Fn&, Args...>;

template <class Fn, class... Args>
using call_result_t = decltype(call(std::declval<Fn&>(), std::declval<stage_context&>(),
                                    std::declval<Args>()...));

// What a stage emits for a function result of type R: the value inside an optional, else R.
template <class R>
struct emitted {
    using type = R;
};
template <class U>
struct emitted<std::optional<U>> {
    using type = U;
};

// Emits `v` into an output channel (see output_channel for why push gets no stop token).
// Returns false once the channel is closed (say, by a consumer that ended): the producer stops.
template <class Out, class V>
bool emit(Out& out, V&& v) {
    if constexpr (requires { out.publish(std::forward<V>(v)); }) {
        const auto r = out.publish(std::forward<V>(v));
        if constexpr (requires { r.broadcaster_closed; }) {
            return !r.broadcaster_closed;
        } else {
            return true;
        }
    } else if constexpr (std::is_same_v<decltype(out.push(std::forward<V>(v))), push_status>) {
        return out.push(std::forward<V>(v)) != push_status::closed;
    } else {
        (void)out.push(std::forward<V>(v)); // a user channel's own result: nothing to go by
        return true;
    }
}

struct inline_gate;

// The channels an item may bypass (inline_when_idle): framepipe's rings and latest_slot, whose
// push reports exactly what entered (ok: one item more; evicted: one in, one out), and whose push
// and pop do nothing else to an item unless it filters items by age or epoch, which
// inline_access::filters() tells. A wrapper (sampled<>) or a channel of the user's does not
// qualify: what it does to an item is its own.
template <class C>
inline constexpr bool bypassable = false;
template <class T, concurrency C>
inline constexpr bool bypassable<ring<T, C>> = true;
template <class T>
inline constexpr bool bypassable<latest_slot<T>> = true;

struct inline_access {
    template <class T, concurrency C>
    [[nodiscard]] static bool filters(const ring<T, C>& r) noexcept {
        return r.has_max_age_ || r.drop_older_epochs_;
    }
    template <class T>
    [[nodiscard]] static bool filters(const latest_slot<T>& s) noexcept {
        return s.max_age_.has_value() || s.drop_older_epochs_;
    }
};

// A producer can hand an item it emits into Out to Out's consumer's function directly: Out is
// bypassable and its item type can be built from what the producer emits.
template <class Out, class V>
concept inline_handoff = bypassable<Out> && std::constructible_from<input_item_t<Out>, V&&>;

// A type's identity without RTTI (-fno-rtti builds): the address of an object of its own, one
// per program (an inline variable). Not const: a linker's identical-data folding (lld's
// --icf=all) may merge equal constants, never writable objects.
template <class T>
inline char type_key_object = 0;
template <class T>
[[nodiscard]] constexpr const void* type_key() noexcept {
    return &type_key_object<T>;
}

struct channel_entry {
    std::string name;
    const void* address = nullptr;
    const void* type = nullptr; // the channel's own type (type_key)
    bool one_producer = false;
    bool one_consumer = false;
    std::function<channel_description()> describe;
    // Closes the channel; never throws: what the channel's close() threw is returned (null
    // when it did not). A stage's end that closes its channel fails the stage with it; the
    // closes of a stop or an abort ignore it.
    std::function<std::exception_ptr()> close;
    std::function<bool(const void*, const void*)> hangs_off; // subscription: parent? (type_key)
    // selector, batcher: the addresses of the channels it reads (channel_traits<C>::inputs).
    std::function<std::vector<const void*>()> inputs;
    bool close_on_stop = false; // channel_traits<C>::close_on_stop: request_stop() closes it
    latency_histogram age;
    bool timestamped_items = false;
    std::size_t producers = 0; // producing threads of the stages in the graph
    std::size_t consumers = 0; // consuming threads of the stages in the graph
    // Registered by pipeline::channel() and not used by a stage since: remove() keeps it (its
    // source is yet to be added).
    bool reserved = false;
    // Named by pipeline::channel(): remove() before start() keeps it (reserved again) when no
    // stage uses it any more, as if the source removed had never been added.
    bool named = false;
    std::atomic<std::size_t> producers_running{0};
    // Items a paced stage popped and passed over for a newer one, or dropped unhandled when it
    // stopped or its skip's try_pop() threw: popped by the channel, shown as rate_limited drops
    // in the snapshot.
    std::atomic<std::uint64_t> skipped{0};
    // inline_when_idle: the item type a producer could hand its consumer directly (null: its
    // producer cannot), and the consuming stage's gate once start() has checked the pair.
    const void* inline_item = nullptr; // type_key
    bool inline_filtered = false; // max_age or drop_older_epochs: an item may not bypass it
    inline_gate* gate = nullptr;
};

// The most items a paced stage passes over in one turn: its input's capacity, enough to reach
// the newest item the input held when the turn came (the first `capacity` pops take every item
// then there), and finite, so that a producer that refills the input as fast as the stage takes
// cannot keep it skipping. A channel that reports no capacity (0: not bounded by items) gets
// unbounded_input_skip, and one that reports more than largest_input_skip (SIZE_MAX, say, for
// "unbounded") gets that: a turn then takes milliseconds at most. Calls describe(): once per
// worker, at its start.
inline constexpr std::size_t unbounded_input_skip = 4096;
inline constexpr std::size_t largest_input_skip = std::size_t{1} << 20;
inline std::size_t max_skip(const channel_entry& c) {
    const std::size_t capacity = c.describe().capacity;
    return capacity == 0 ? unbounded_input_skip : std::min(capacity, largest_input_skip);
}

// Which of a worker's items are timed (two clock reads, a histogram record). Every one while
// items are slow, so that the figures are exact where they matter (frames: an item takes
// milliseconds, a clock read tens of nanoseconds); one in `fast_stride` while they come faster
// than one per `slow_item`, so that metrics cost a few nanoseconds per item at millions of items
// a second. Counts are always exact; the histograms then hold a sample, and busy time and rate
// are estimated from it (each timed item stands for the items since the last one).
struct timing_sampler {
    static constexpr std::chrono::nanoseconds slow_item{10'000};
    static constexpr std::uint32_t fast_stride = 16;
    std::uint32_t skip = 0; // items to pass before the next timed one
    std::uint32_t since = 0; // items done since the last timed one (untimed)

    [[nodiscard]] bool due() noexcept {
        if (skip == 0) {
            return true;
        }
        --skip;
        ++since;
        return false;
    }
    // After a timed item: `span` since the end of the previous timed one covered `n` items.
    void timed(std::chrono::nanoseconds span, std::uint32_t n) noexcept {
        skip = span < slow_item * n ? fast_stride - 1 : 0;
        since = 0;
    }
};

struct worker_entry {
    std::jthread thread;
    rate_meter rate;        // single writer: this worker (or, gate held, the inline runner)
    busy_meter busy;        // single writer (as above)
    timing_sampler timing;  // this worker's only (as above)
    std::chrono::steady_clock::time_point last_end{}; // of the last timed item (as above)
};

struct stage_entry;

// The state a stage that runs inline_when_idle shares with the thread upstream of it. Whichever
// thread runs the stage's function holds the gate. The upstream thread (the input's only
// producer) runs it only when every item its pushes left in the input has been taken by the
// stage's own thread (taken == entered): the input is empty and no item taken waits for the
// gate, so the items keep their order. The stage's thread counts an item taken once it holds
// the gate, and the gate's acquire/release makes that count visible to the next holder.
struct inline_gate {
    enum : int { shut = 0, open = 1, held = 2 };
    static constexpr std::optional<std::chrono::steady_clock::time_point> no_deadline{};

    // The upstream thread: holds the gate if it is open and nobody holds it. Never waits.
    [[nodiscard]] bool try_hold() noexcept {
        int s = open;
        return state.compare_exchange_strong(s, held, std::memory_order_acquire,
                                             std::memory_order_relaxed);
    }
    // The stage's thread: waits (spins, then parks) until nobody holds the gate, then holds it.
    // false when it was shut (an inline run failed).
    [[nodiscard]] bool hold() noexcept {
        for (;;) {
            int s = open;
            // Acquire on failure too: a gate found shut carries the failure recorded before it.
            if (state.compare_exchange_strong(s, held, std::memory_order_acquire,
                                              std::memory_order_acquire)) {
                return true;
            }
            if (s == shut) {
                return false;
            }
            (void)released.wait(nullptr, no_deadline, [this]() noexcept {
                return state.load(std::memory_order_seq_cst) != held;
            });
        }
    }
    // Either thread, holding it: opens the gate, or shuts it for good. seq_cst: the state the
    // waiter's predicate reads (event_count::notify_one_after_seq_cst).
    void release(int to = open) noexcept {
        state.store(to, std::memory_order_seq_cst);
        released.notify_one_after_seq_cst();
    }
    // The stage's thread, not holding it, at its end: waits for an inline run to end, then shuts
    // the gate, so that no other thread runs the function once the stage has ended.
    void shut_down() noexcept {
        for (;;) {
            int s = open;
            if (state.compare_exchange_strong(s, shut, std::memory_order_acquire,
                                              std::memory_order_acquire) ||
                s == shut) {
                return;
            }
            (void)released.wait(nullptr, no_deadline, [this]() noexcept {
                return state.load(std::memory_order_seq_cst) != held;
            });
        }
    }

    std::atomic<int> state{shut}; // opened by the stage's thread once ctx is set
    std::uint64_t entered = 0; // the upstream thread's alone: items its pushes left in the input
    std::uint64_t taken = 0;   // items the stage's thread popped; written with the gate held
    stage_entry* stage = nullptr; // set by start()
    stage_context* ctx = nullptr; // the stage thread's own, valid while the gate is not shut
    const void* item = nullptr; // the input's item type (type_key), which run() takes
    // Runs the stage's function on an item of type *item (moved from), with its metrics; false
    // when the stage's output was closed.
    unique_function<bool(void*)> run;
    // Set by start(): the stage fails with what its inline run threw, and the pipeline stops at
    // once, as if the stage's own thread had thrown it. Called by the upstream thread, holding
    // the gate, which it then shuts: the stage's thread, which sees the gate shut (acquire),
    // sees its stage failed.
    unique_function<void(std::exception_ptr)> fail;
    event_count released;     // the stage's thread waits here while an inline run holds the gate
};

struct stage_entry {
    std::string name;
    stage_kind kind = stage_kind::stage;
    stage_options options;
    channel_entry* input = nullptr;
    channel_entry* output = nullptr;
    unique_function<void(stage_entry&, stage_context&)> body;
    std::optional<rate_limiter> pace; // max_rate_hz of a stage or sink, shared by its workers
    std::function<source_status()> source_status_of; // a supervised source's own figures
    std::vector<std::unique_ptr<worker_entry>> workers;
    std::mutex join_mu; // wait() and remove() may both join the workers
    std::atomic<std::size_t> workers_running{0};
    std::atomic<bool> failed{false};
    std::atomic<stage_state> state{stage_state::pending};
    // Relaxed counters: statistics read by snapshot(), written by the stage's workers.
    std::atomic<std::uint64_t> items_in{0};
    std::atomic<std::uint64_t> items_out{0};
    std::atomic<std::uint64_t> items_inline{0}; // of items_in: run on the upstream's thread
    std::atomic<std::int64_t> busy_ns{0}; // since start, summed over the workers
    latency_histogram service;
    std::unique_ptr<inline_gate> gate; // inline_when_idle
};

// The pipeline whose stage this thread runs (null on every other thread): request_stop(deadline)
// does not wait on a thread whose own stage has to return before the rest can end.
inline thread_local const void* stage_thread_of = nullptr;

inline double to_ms(std::chrono::nanoseconds d) noexcept {
    return std::chrono::duration<double, std::milli>(d).count();
}

// Applies a stage's thread options on the calling thread. Throws std::system_error when the nice
// value cannot be set (the stage then fails).
inline void apply_thread_options(const stage_options& o, const std::string& stage) {
#if FRAMEPIPE_DETAIL_LINUX
    const std::string name = (o.thread_name.empty() ? stage : o.thread_name).substr(0, 15);
    (void)::prctl(PR_SET_NAME, name.c_str(), 0, 0, 0); // cosmetic: a failure is not an error
    if (o.nice) {
        const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
        if (::setpriority(PRIO_PROCESS, tid, *o.nice) != 0) {
            const int error = errno; // before the message's allocation, which may set it
            throw std::system_error(error, std::generic_category(),
                                    "nice: setpriority(" + std::to_string(*o.nice) + ")");
        }
    }
#else
    (void)o;
    (void)stage;
#endif
}

} // namespace detail

class pipeline {
public:
    using clock = std::chrono::steady_clock;

    // The most threads (stage_options::workers) one stage may have.
    static constexpr std::size_t max_workers = 4096;

    // An empty graph named `name` (in snapshots, errors and the exposition formats). Starts no
    // thread; allocates nothing beyond the name given; does not throw.
    explicit pipeline(std::string name = "pipeline", pipeline_options options = {})
        : name_(std::move(name)), options_(options) {}

    pipeline(const pipeline&) = delete;
    pipeline& operator=(const pipeline&) = delete;

    // Stops every stage at once (not an orderly drain: call request_stop() and wait() first for
    // that), closes every channel, and joins the threads. A stage stuck in its own code (not
    // in a framepipe wait) keeps the destructor waiting. Exceptions from stages are discarded.
    // Must not run on one of the pipeline's own stage threads: a thread cannot join itself
    // (std::terminate), and the stage would return into a pipeline that is gone.
    ~pipeline() {
        if (!started_) {
            return; // nothing runs, and the channels are the caller's to close
        }
        abort_all();
        join_all();
    }

    // Names a channel in snapshots, Prometheus labels and the DOT graph (default: a
    // subscription's own name, "-2", "-3", ... appended when another channel has it, else
    // "channel-N", N counting every channel registered, never reused). Registers it if it is not
    // yet; a channel registered here and not yet used by a stage stays registered (remove()
    // keeps it) until a stage uses it, and so does one named here whose only users were
    // sources removed before start() (as if they had never been added). Any time (a channel of
    // a source added while the pipeline runs is named before that source is added); one thread
    // at a time with source() and remove(); never waits, but for the graph's lock. Throws
    // std::invalid_argument naming `name` when another channel has that name, std::bad_alloc;
    // either way nothing changes.
    template <class C>
    pipeline& channel(C& ch, std::string name) {
        const std::lock_guard<std::mutex> lock(graph_mu_);
        for (const auto& c : channels_) {
            if (c->address != static_cast<const void*>(&ch) && c->name == name) {
                throw std::invalid_argument("name: channel '" + name + "' already exists");
            }
        }
        const bool known = find_entry(ch) != nullptr;
        auto& e = entry_for(ch);
        e.name = std::move(name); // std::string's move assignment: no throw
        e.named = true;
        if (!known) {
            e.reserved = true;
        }
        return *this;
    }

    // Adds a source that emits into `out`: calls fn repeatedly (paced by options.max_rate_hz)
    // and emits each result, until fn returns nullopt or a null pointer, or the pipeline stops.
    // Before or after start(): a source added while the pipeline runs starts at once (a camera
    // joining; remove() takes one away). One thread at a time. Throws std::invalid_argument
    // naming `name` (empty or taken), `max_rate_hz` (negative, not finite, above 1e9 or with an
    // overflowing period), `workers` (not 1), `nice` (outside -20..19), `inline_when_idle` (set:
    // a source has no input), or `out` (an spsc_ring given a second producer); std::system_error if its thread cannot start; what copying or
    // moving fn throws. A source refused (by any of these) leaves the graph as it was. After
    // request_stop(), or once a failure (or request_stop(deadline)'s deadline) has stopped the
    // pipeline at once, a source added is asked to stop as soon as its thread starts.
    template <class Out, class Fn>
        requires detail::callable_with<Fn>
    pipeline& source(std::string name, Out& out, Fn fn, source_options options = {}) {
        using result = std::remove_cvref_t<detail::call_result_t<Fn>>;
        using item = typename detail::emitted<result>::type;
        if constexpr (detail::check_output<Out, item>()) {
            const std::lock_guard<std::mutex> lock(graph_mu_);
            check_options(options, stage_kind::source);
            check_output_threads(out, 1);
            registration reg(*this);
            auto& e = reg.add(std::move(name), stage_kind::source, options);
            reg.output(out);
            note_inline_producer<Out, item>(e, out);
            const bool metrics = options_.metrics;
            e.body = [&out, fn = std::move(fn), metrics](detail::stage_entry& self,
                                                         stage_context& ctx) mutable {
                produce(self, ctx, metrics, [&](stage_context& c) {
                    auto v = detail::call(fn, c);
                    bool open = true;
                    if constexpr (detail::is_optional<result>::value) {
                        if (!v) {
                            return false;
                        }
                        open = emit_from(self, out, std::move(*v));
                    } else if constexpr (detail::nullable_pointer<result>) {
                        if (!v) {
                            return false;
                        }
                        open = emit_from(self, out, std::move(v));
                    } else {
                        open = emit_from(self, out, std::move(v));
                    }
                    self.items_out.fetch_add(1, std::memory_order_relaxed);
                    return open; // a closed output ends the source
                });
            };
            launch_if_started(e);
            reg.commit();
        }
        return *this;
    }

    // A supervised source whose output cannot take its item_type: one compile-time message.
    template <class Out, class S>
        requires detail::mismatched_supervised_source<S, Out>
    pipeline& source(std::string, Out&, S&, source_options = {}) {
        static_assert(detail::always_false<S>,
                      "framepipe::pipeline: the output channel must take the supervised source's "
                      "item_type (a live_source emits stamped<frame_type>) by push or publish");
        return *this;
    }

    // Adds a supervised source, such as a live_source (live_source.hpp), that emits into `out` on
    // threads of its own: the stage starts it, waits until it ends (ended, failed) or the
    // pipeline stops, then stops it (also when its wait() throws, which fails the stage). A
    // source that failed (max_attempts) fails the stage with its last error (stage_error from
    // wait()). Its state and counters show in the snapshot (stage_snapshot::source), Prometheus
    // text and DOT. Before or after start(), as above; `src` and `out` must outlive the
    // pipeline's run (or the source's remove()). Throws as source() does, naming max_rate_hz when
    // it is set (a live source is paced by its input). An output that cannot take the source's
    // item_type fails to compile with one message (the overload before this one).
    template <class Out, class S>
        requires detail::supervised_source<S, Out>
    pipeline& source(std::string name, Out& out, S& src, source_options options = {}) {
        if (options.max_rate_hz != 0) {
            throw std::invalid_argument("max_rate_hz: a supervised source is paced by its input");
        }
        const std::lock_guard<std::mutex> lock(graph_mu_);
        check_options(options, stage_kind::source);
        check_output_threads(out, 1);
        registration reg(*this);
        auto& e = reg.add(std::move(name), stage_kind::source, options);
        reg.output(out);
        e.source_status_of = [&src] { return src.status(); };
        e.body = [&out, &src](detail::stage_entry&, stage_context& ctx) {
            src.start(out);
            try {
                (void)src.wait(ctx.stop_token());
            } catch (...) {
                src.stop(); // its threads end before the stage fails
                throw;
            }
            src.stop();
            if (auto why = src.failure()) {
                throw std::runtime_error(*why);
            }
        };
        launch_if_started(e);
        reg.commit();
        return *this;
    }

    // Adds a source without an output: a loop that does its work in fn (say, reads, processes
    // and publishes by itself). fn returns bool (false ends the source) or void (it runs until
    // the pipeline stops). Paced and validated as the source above.
    template <class Fn>
        requires detail::callable_with<Fn>
    pipeline& source(std::string name, Fn fn, source_options options = {}) {
        using result = detail::call_result_t<Fn>;
        static_assert(std::is_void_v<result> || std::is_same_v<std::remove_cvref_t<result>, bool>,
                      "framepipe::pipeline::source: a source without an output returns bool "
                      "(false ends it) or void");
        const std::lock_guard<std::mutex> lock(graph_mu_);
        check_options(options, stage_kind::source);
        registration reg(*this);
        auto& e = reg.add(std::move(name), stage_kind::source, options);
        const bool metrics = options_.metrics;
        e.body = [fn = std::move(fn), metrics](detail::stage_entry& self,
                                               stage_context& ctx) mutable {
            produce(self, ctx, metrics, [&](stage_context& c) {
                if constexpr (std::is_void_v<result>) {
                    detail::call(fn, c);
                    return true;
                } else {
                    return static_cast<bool>(detail::call(fn, c));
                }
            });
        };
        launch_if_started(e);
        reg.commit();
        return *this;
    }

    // Adds a processing stage: pops items from `in`, calls fn, emits its result into `out`.
    // Before start(); after it, throws std::logic_error. Throws as source() does, naming
    // `workers` also when it is 0 or above max_workers, or when `in` admits one consumer thread
    // (an spsc_ring), and `inline_when_idle` when it is set with workers != 1 or max_rate_hz != 0;
    // a refused stage leaves the graph as it was.
    template <class In, class Out, class Fn>
    pipeline& stage(std::string name, In& in, Out& out, Fn fn, stage_options options = {}) {
        if constexpr (detail::check_input<In>()) {
            using in_item = input_item_t<In>;
            static_assert(detail::callable_with<Fn, in_item>,
                          "framepipe::pipeline::stage: the function must accept (item) or "
                          "(item, stage_context&) for the input's item type");
            if constexpr (detail::callable_with<Fn, in_item>) {
                using result = std::remove_cvref_t<detail::call_result_t<Fn, in_item>>;
                using item = typename detail::emitted<result>::type;
                if constexpr (detail::check_output<Out, item>()) {
                    const std::lock_guard<std::mutex> lock(graph_mu_);
                    check_options(options, stage_kind::stage);
                    check_input_threads(in, options.workers);
                    check_output_threads(out, options.workers, new_default_names(in, out));
                    registration reg(*this);
                    auto& e = reg.add(std::move(name), stage_kind::stage, options);
                    reg.input(in);
                    reg.output(out);
                    note_inline_producer<Out, item>(e, out);
                    install_consumer(e, in, [&out, fn = std::move(fn)](detail::stage_entry& self,
                                                                       stage_context& ctx,
                                                                       in_item&& x) mutable {
                        auto v = detail::call(fn, ctx, std::move(x));
                        bool open = true;
                        if constexpr (detail::is_optional<result>::value) {
                            if (!v) {
                                return true;
                            }
                            open = emit_from(self, out, std::move(*v));
                        } else {
                            open = emit_from(self, out, std::move(v));
                        }
                        self.items_out.fetch_add(1, std::memory_order_relaxed);
                        return open; // a closed output ends the stage
                    });
                    reg.commit();
                }
            }
        }
        return *this;
    }

    // Adds a sink: pops items from `in` and calls fn on each. Before start(); after it, throws
    // std::logic_error. Otherwise throws as stage() does.
    template <class In, class Fn>
    pipeline& sink(std::string name, In& in, Fn fn, stage_options options = {}) {
        if constexpr (detail::check_input<In>()) {
            using in_item = input_item_t<In>;
            static_assert(detail::callable_with<Fn, in_item>,
                          "framepipe::pipeline::sink: the function must accept (item) or "
                          "(item, stage_context&) for the input's item type");
            if constexpr (detail::callable_with<Fn, in_item>) {
                const std::lock_guard<std::mutex> lock(graph_mu_);
                check_options(options, stage_kind::sink);
                check_input_threads(in, options.workers);
                registration reg(*this);
                auto& e = reg.add(std::move(name), stage_kind::sink, options);
                reg.input(in);
                install_consumer(e, in, [fn = std::move(fn)](detail::stage_entry&,
                                                             stage_context& ctx,
                                                             in_item&& x) mutable {
                    (void)detail::call(fn, ctx, std::move(x));
                    return true;
                });
                reg.commit();
            }
        }
        return *this;
    }

    // Starts every stage's workers on their own threads. Once. Throws std::logic_error when
    // called twice or with no stages; std::invalid_argument naming inline_when_idle and the
    // stage when its input cannot be handed to it inline (nothing starts then); std::system_error
    // if a thread cannot start: the pipeline is then stopped at once, as on a stage's failure
    // (every channel closed, a source added later stopped at once), and the stages that never
    // started stay pending; wait() joins the threads that did start (and reports no error).
    void start() {
        const std::lock_guard<std::mutex> graph(graph_mu_);
        const std::lock_guard<std::mutex> lock(mu_);
        if (started_) {
            throw std::logic_error("pipeline::start: already started");
        }
        if (stages_.empty()) {
            throw std::logic_error("pipeline::start: no stages");
        }
        link_inline_stages();
        started_ = true;
        for (auto& c : channels_) {
            c->producers_running.store(c->producers, std::memory_order_relaxed);
        }
        running_.store(stages_.size(), std::memory_order_relaxed);
        // Every worker's entry exists before any thread starts: a running worker reads its
        // stage's list of workers (a later emplace_back could move it under that read).
        for (auto& s : stages_) {
            s->state.store(stage_state::running, std::memory_order_relaxed);
            s->workers_running.store(s->options.workers, std::memory_order_relaxed);
            for (std::size_t w = 0; w < s->options.workers; ++w) {
                s->workers.push_back(std::make_unique<detail::worker_entry>());
            }
        }
        for (auto& s : stages_) {
            launch_or_unwind(*s);
            if (stopping_ && s->kind == stage_kind::source) {
                stop_workers(*s); // request_stop() came before start()
            }
        }
    }

    // Orderly stop: asks the sources to stop; the rest drains and ends in order. Any thread;
    // never waits, but for the graph's lock. The request sticks: a source started after it (by
    // start(), or added later while the pipeline runs) is asked to stop as soon as its thread
    // starts, so request_stop() then wait() returns however the calls interleave, provided
    // every stage's input is fed by a source or stage of this pipeline. An input nothing in the
    // pipeline produces into (fed from outside, or whose sources are yet to be added) is never
    // closed by it: its consumers end once its owner closes it. A selector or a batcher (a
    // channel whose channel_traits set close_on_stop) is closed here, since its close() only
    // forbids new inputs: its stage ends once its inputs have ended. The report names the
    // stages still running when it returns (those drain and end on their own, but for the ones
    // just said). Throws std::bad_alloc (the report's names), after the stop was requested.
    stop_report request_stop() {
        {
            const std::lock_guard<std::mutex> lock(graph_mu_);
            stopping_ = true;
            for (auto& s : stages_) {
                if (s->kind == stage_kind::source) {
                    stop_workers(*s);
                }
            }
            for (auto& c : channels_) {
                if (c->close_on_stop) {
                    (void)c->close(); // what it threw is ignored, as in an abort
                }
            }
        }
        return report_unfinished();
    }

    // Removes a source while the pipeline runs (a camera leaving): stops it, waits at most
    // `deadline` for it to end (its output is then closed if it was the last producer, so that
    // what it buffered drains to the consumers, who end if nothing else feeds them), joins its
    // thread and takes it out of the graph, with the channels no remaining stage uses (but those
    // named with channel() and not used yet). The report is clean when it ended in time;
    // otherwise it stays in the graph, stopping, and is named. Before start() it takes the source
    // out of the graph at once, as if it had never been added (its output is not closed; a
    // channel named with channel() stays registered, under that name). Any thread but the
    // source's own; blocks up to `deadline`. Throws std::invalid_argument naming
    // `name` when there is no such stage or it is not a source, naming `deadline` when it is
    // negative or NaN (nothing changes then); std::system_error if joining fails. `deadline` is
    // any std::chrono::duration; one beyond nanoseconds' range (say seconds::max()) means no limit.
    template <class Rep, class Period>
    stop_report remove(std::string_view name, std::chrono::duration<Rep, Period> deadline_in) {
        const std::chrono::nanoseconds deadline = detail::to_nanoseconds(deadline_in, "deadline");
        detail::require_non_negative(deadline, "deadline");
        std::shared_ptr<detail::stage_entry> e;
        {
            const std::lock_guard<std::mutex> lock(graph_mu_);
            for (const auto& s : stages_) {
                if (s->name == name) {
                    e = s;
                }
            }
            if (!e) {
                throw std::invalid_argument("name: no stage '" + std::string(name) + "'");
            }
            if (e->kind != stage_kind::source) {
                throw std::invalid_argument("name: '" + std::string(name) +
                                            "' is not a source (only sources come and go)");
            }
            stop_workers(*e);
        }
        if (started_) {
            const auto ended = ended_.park(nullptr, detail::deadline_after(deadline), [&]() noexcept {
                return e->state.load(std::memory_order_seq_cst) != stage_state::running;
            });
            if (ended != detail::wait_end::ready) {
                return {.clean = false, .unfinished = {std::string(name)}};
            }
            join_workers(*e);
        }
        const std::lock_guard<std::mutex> lock(graph_mu_);
        // Its threads are no longer counted on its channels: a later start() (or spsc_ring
        // check) counts only the stages that remain.
        if (e->output != nullptr) {
            detach(*e->output, &detail::channel_entry::producers, e->options.workers);
        }
        if (e->input != nullptr) {
            detach(*e->input, &detail::channel_entry::consumers, e->options.workers);
        }
        std::erase(stages_, e);
        const bool before_start = !started_;
        std::erase_if(channels_, [this, before_start](const auto& c) {
            if (c->reserved) {
                return false; // named with channel() for a stage still to come
            }
            for (const auto& s : stages_) {
                if (s->input == c.get() || s->output == c.get()) {
                    return false;
                }
            }
            if (before_start && c->named) {
                c->reserved = true; // as if the source had never been added
                return false;
            }
            return true;
        });
        return {};
    }

    // Orderly stop that waits at most `deadline` for every stage to end. Stages still running
    // then are stopped at once and named in the report. Any thread; blocks up to the deadline.
    // Called from one of this pipeline's stage threads (a stage's function, or one it runs
    // inline), it cannot wait: the rest may end only once that stage returns (its consumers
    // wait for its output to close, producers blocked on its input for it to pop). It then does
    // what request_stop() does and returns at once, its report naming the stages still running
    // (the caller's among them), and stops nothing at once. Throws std::invalid_argument naming
    // deadline when it is negative or NaN (nothing is stopped then); std::bad_alloc as
    // request_stop(). Any std::chrono::duration; one beyond nanoseconds' range (say
    // seconds::max()) means no limit.
    template <class Rep, class Period>
    stop_report request_stop(std::chrono::duration<Rep, Period> deadline_in) {
        const std::chrono::nanoseconds deadline = detail::to_nanoseconds(deadline_in, "deadline");
        detail::require_non_negative(deadline, "deadline");
        if (detail::stage_thread_of == this) {
            return request_stop(); // waiting here would wait for this very stage
        }
        (void)request_stop();
        if (wait_until(detail::deadline_after(deadline))) {
            return {};
        }
        stop_report report = report_unfinished();
        abort_all();
        return report;
    }

    // Waits at most `timeout` for every stage to end (say, a finite source ran out and the rest
    // drained). true when they all have; then call wait() to join and see errors. Any thread;
    // blocks. Any std::chrono::duration; one beyond nanoseconds' range (say seconds::max()) means
    // no limit. Throws std::invalid_argument naming timeout when it is negative or NaN,
    // std::logic_error before start().
    template <class Rep, class Period>
    [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        if (!started_) {
            throw std::logic_error("pipeline::wait_for: not started");
        }
        return wait_until(detail::deadline_after(ns));
    }

    // Waits for every stage to end and joins the threads, those of a source added (by another
    // thread) while it waits included. Rethrows the first stage failure as stage_error. Blocks.
    // Call from one thread; after start(). Throws std::logic_error when called from one of this
    // pipeline's own stages (it would wait for itself: its neighbours wait for it to close its
    // output and to pop, and the stop never ends).
    void wait() {
        if (detail::stage_thread_of == this) {
            throw std::logic_error("pipeline::wait: called from one of its own stages");
        }
        join_all();
        const std::lock_guard<std::mutex> lock(mu_);
        if (error_) {
            throw stage_error(error_stage_, error_);
        }
    }

    // Whether any stage is still running. Any thread; wait-free.
    [[nodiscard]] bool running() const noexcept {
        return running_.load(std::memory_order_acquire) > 0;
    }

    // The name given at construction. Any thread; wait-free.
    [[nodiscard]] const std::string& name() const noexcept { return name_; }

    // Live figures of every stage and channel. Any thread; allocates. Holds the graph's lock
    // throughout (source(), remove(), channel() and a failing stage's stop of the others wait
    // for it meanwhile), under which it reads the stages' atomics and calls each channel's
    // description: framepipe's channels read atomics, except that a ring whose T may throw on
    // move and a sliding_window take their own lock briefly; a user channel's stats(),
    // capacity() and policy() (or its channel_traits::describe) and a supervised source's
    // status() run as written, and must not call into this pipeline. Throws std::bad_alloc, and
    // what those user functions throw.
    [[nodiscard]] pipeline_snapshot snapshot() const {
        const std::lock_guard<std::mutex> lock(graph_mu_);
        pipeline_snapshot out;
        out.name = name_;
        for (const auto& s : stages_) {
            out.stages.push_back(snapshot_of(*s));
        }
        // Which registered channel each selector's or batcher's input feeds: one call (one
        // lock) per selector, then a lookup per channel.
        std::unordered_map<const void*, const detail::channel_entry*> feeds;
        for (const auto& c : channels_) {
            if (c->inputs) {
                for (const void* in : c->inputs()) {
                    feeds.emplace(in, c.get()); // the first registered, if several read it
                }
            }
        }
        for (const auto& c : channels_) {
            out.channels.push_back(snapshot_of(*c, feeds));
        }
        return out;
    }

private:
    void check_options(const stage_options& o, stage_kind kind) const {
        if (!(o.max_rate_hz >= 0.0) || !std::isfinite(o.max_rate_hz) || o.max_rate_hz > 1e9 ||
            (o.max_rate_hz > 0 && !std::isfinite(1e9 / o.max_rate_hz))) {
            throw std::invalid_argument(
                "max_rate_hz: must be 0 (unpaced) or a rate a rate_limiter accepts");
        }
        if (o.workers == 0 || (kind == stage_kind::source && o.workers != 1)) {
            throw std::invalid_argument(kind == stage_kind::source
                                            ? "workers: a source has exactly one"
                                            : "workers: must be at least 1");
        }
        if (o.workers > max_workers) {
            throw std::invalid_argument("workers: at most " + std::to_string(max_workers) +
                                        " threads a stage");
        }
        if (o.nice && (*o.nice < -20 || *o.nice > 19)) {
            throw std::invalid_argument("nice: must be between -20 and 19");
        }
        if (o.inline_when_idle &&
            (kind == stage_kind::source || o.workers != 1 || o.max_rate_hz != 0)) {
            throw std::invalid_argument(
                kind == stage_kind::source
                    ? "inline_when_idle: a source has no input to be run from"
                    : "inline_when_idle: needs workers == 1 and max_rate_hz == 0");
        }
    }

    // Pairs each inline_when_idle stage with the one producer of its input (see
    // stage_options::inline_when_idle). Checks every pair before linking any. Requires
    // graph_mu_, before start.
    void link_inline_stages() {
        for (const auto& s : stages_) {
            if (!s->gate) {
                continue;
            }
            const detail::channel_entry& c = *s->input;
            if (c.producers != 1 || c.consumers != 1 || c.inline_item == nullptr ||
                c.inline_item != s->gate->item) {
                throw std::invalid_argument(
                    "inline_when_idle: stage '" + s->name + "' needs an input (a ring, spsc_ring "
                    "or latest_slot of the item type it takes) that one source or stage with one "
                    "worker pushes into and no other stage reads; '" + c.name + "' is not");
            }
            if (c.inline_filtered) {
                throw std::invalid_argument("inline_when_idle: stage '" + s->name + "': its input '" +
                                            c.name + "' filters items by max_age or "
                                            "drop_older_epochs, which an inline item would skip");
            }
        }
        for (const auto& s : stages_) {
            if (s->gate) {
                // Items already in the input (pushed before start) count as entered, so that
                // none is overtaken.
                const channel_description d = s->input->describe();
                s->gate->entered = d.stats ? d.stats->size : 0;
                s->input->gate = s->gate.get();
                s->gate->stage = s.get();
                s->gate->fail = [this, st = s.get()](std::exception_ptr e) {
                    fail_stage(*st, std::move(e));
                };
            }
        }
    }

    // Requires graph_mu_.
    detail::stage_entry& add_stage(std::string name, stage_kind kind, const stage_options& o) {
        if (started_ && kind != stage_kind::source) {
            throw std::logic_error("pipeline: stages and sinks must be added before start() "
                                   "(sources may come and go)");
        }
        if (name.empty()) {
            throw std::invalid_argument("name: a stage needs a name");
        }
        for (const auto& s : stages_) {
            if (s->name == name) {
                throw std::invalid_argument("name: stage '" + name + "' already exists");
            }
        }
        auto e = std::make_shared<detail::stage_entry>();
        e->name = std::move(name);
        e->kind = kind;
        e->options = o;
        if (kind != stage_kind::source && o.max_rate_hz > 0) {
            e->pace.emplace(o.max_rate_hz);
        }
        stages_.push_back(std::move(e));
        return *stages_.back();
    }

    // A channel's thread rules (channel_traits), checked before anything is registered, so that
    // a refused stage leaves the graph as it was.
    template <class In>
    void check_input_threads(const In& in, std::size_t threads) const {
        const auto* c = find_entry(in);
        if (channel_traits<In>::one_consumer &&
            more_than_one(c != nullptr ? c->consumers : 0, threads)) {
            throw std::invalid_argument("workers: channel '" + name_of(in) +
                                        "' admits one consumer thread (an spsc_ring)");
        }
    }
    // `named_first`: default names the registration hands out before the output's (see
    // new_default_names), so that an error names the output as it would be named.
    template <class Out>
    void check_output_threads(const Out& out, std::size_t threads,
                              std::size_t named_first = 0) const {
        const auto* c = find_entry(out);
        if (c != nullptr && c->gate != nullptr) {
            throw std::invalid_argument("out: channel '" + c->name +
                                        "' feeds a stage inline (inline_when_idle), which admits "
                                        "one producer");
        }
        if (channel_traits<Out>::one_producer &&
            more_than_one(c != nullptr ? c->producers : 0, threads)) {
            throw std::invalid_argument("out: channel '" + name_of(out, named_first) +
                                        "' admits one producer thread (an spsc_ring)");
        }
    }

    // Whether `existing + added` threads exceed one, without wrapping.
    [[nodiscard]] static constexpr bool more_than_one(std::size_t existing,
                                                      std::size_t added) noexcept {
        return existing > 1 || added > 1 - existing;
    }

    // Takes `threads` of a removed stage off a channel's count (`side`: producers or consumers).
    // Requires graph_mu_.
    static void detach(detail::channel_entry& c, std::size_t detail::channel_entry::*side,
                       std::size_t threads) noexcept {
        c.*side -= std::min(c.*side, threads);
        if (c.producers == 0) {
            c.inline_item = nullptr; // no producer left that could hand items over
            c.inline_filtered = false;
        }
    }

    // Adds a stage and attaches it to its channels; unless commit() is called, undoes all of it
    // when it goes out of scope, so that a refused stage (a function whose copy or move throws,
    // an allocation that fails, a thread that cannot start) leaves the graph as it was. Lives
    // with graph_mu_ held.
    class registration {
    public:
        explicit registration(pipeline& p) noexcept : p_(p), channels_(p.channels_.size()) {}
        registration(const registration&) = delete;
        registration& operator=(const registration&) = delete;
        ~registration() {
            if (!committed_) {
                undo();
            }
        }

        detail::stage_entry& add(std::string name, stage_kind kind, const stage_options& o) {
            stage_ = &p_.add_stage(std::move(name), kind, o);
            return *stage_;
        }
        template <class In>
        void input(In& in) {
            attach(p_.entry_for(in), &detail::channel_entry::consumers,
                   &detail::stage_entry::input);
        }
        template <class Out>
        void output(Out& out) {
            attach(p_.entry_for(out), &detail::channel_entry::producers,
                   &detail::stage_entry::output);
        }
        void commit() noexcept { committed_ = true; }

    private:
        // Counts the stage's threads on `c` (`side`: its producers or consumers) and links the
        // stage to it (`link`: its input or output), saving what undo() restores.
        void attach(detail::channel_entry& c, std::size_t detail::channel_entry::*side,
                    detail::channel_entry* detail::stage_entry::*link) noexcept {
            save(c);
            c.*side += stage_->options.workers;
            c.reserved = false;
            (*stage_).*link = &c;
        }

        struct saved {
            detail::channel_entry* c = nullptr;
            std::size_t producers = 0;
            std::size_t consumers = 0;
            const void* inline_item = nullptr;
            bool inline_filtered = false;
            bool reserved = false;
        };
        void save(detail::channel_entry& c) noexcept {
            saved_[saved_count_++] = {&c, c.producers, c.consumers, c.inline_item,
                                      c.inline_filtered, c.reserved};
        }
        void undo() noexcept {
            while (saved_count_ > 0) {
                const saved& s = saved_[--saved_count_];
                s.c->producers = s.producers;
                s.c->consumers = s.consumers;
                s.c->inline_item = s.inline_item;
                s.c->inline_filtered = s.inline_filtered;
                s.c->reserved = s.reserved;
            }
            if (stage_ != nullptr) {
                p_.stages_.pop_back(); // add_stage appended it
            }
            // The channels registered for it alone: appended after the ones there before.
            while (p_.channels_.size() > channels_) {
                p_.channels_.pop_back();
            }
        }

        pipeline& p_;
        std::size_t channels_;
        detail::stage_entry* stage_ = nullptr;
        saved saved_[2];
        std::size_t saved_count_ = 0;
        bool committed_ = false;
    };

    template <class C>
    [[nodiscard]] const detail::channel_entry* find_entry(const C& ch) const noexcept {
        for (const auto& c : channels_) {
            if (c->address == static_cast<const void*>(&ch)) {
                return c.get();
            }
        }
        return nullptr;
    }

    // A channel's name; one not registered yet by the name it would get (a subscription's own,
    // or the next "channel-N" after `named_first` others). Requires graph_mu_.
    template <class C>
    [[nodiscard]] std::string name_of(const C& ch, std::size_t named_first = 0) const {
        if (const auto* c = find_entry(ch)) {
            return c->name;
        }
        if constexpr (detail::is_subscription<C>::value) {
            return unclaimed_name(ch.name());
        } else {
            auto n = next_channel_;
            for (std::size_t i = 0; i < named_first; ++i) {
                (void)free_channel_name(n);
            }
            return free_channel_name(n);
        }
    }

    // 1 when a stage's input is a channel not in the graph yet that will get a default name
    // ("channel-N") before its output does, else 0. Requires graph_mu_.
    template <class In, class Out>
    [[nodiscard]] std::size_t new_default_names(const In& in, const Out& out) const {
        if constexpr (detail::is_subscription<In>::value) {
            return 0;
        } else {
            return find_entry(in) == nullptr &&
                           static_cast<const void*>(&in) != static_cast<const void*>(&out)
                       ? 1
                       : 0;
        }
    }

    template <class C>
    detail::channel_entry& entry_for(C& ch) {
        for (auto& c : channels_) {
            if (c->address == static_cast<const void*>(&ch)) {
                return *c;
            }
        }
        auto e = std::make_unique<detail::channel_entry>();
        e->address = &ch;
        e->type = detail::type_key<C>();
        e->name = default_channel_name();
        e->one_producer = channel_traits<C>::one_producer;
        e->one_consumer = channel_traits<C>::one_consumer;
        e->describe = [&ch] { return detail::describe_channel(ch); };
        e->close = [&ch]() noexcept -> std::exception_ptr {
            try {
                ch.close();
                return nullptr;
            } catch (...) {
                return std::current_exception();
            }
        };
        if constexpr (input_channel<C>) {
            e->timestamped_items = timestamped<input_item_t<C>>;
        }
        if constexpr (requires(const C& c) {
                          {
                              channel_traits<C>::inputs(c)
                          } -> std::convertible_to<std::vector<const void*>>;
                      }) {
            e->inputs = [&ch]() -> std::vector<const void*> {
                return channel_traits<C>::inputs(ch);
            };
        }
        if constexpr (requires { bool{channel_traits<C>::close_on_stop}; }) {
            e->close_on_stop = channel_traits<C>::close_on_stop;
            if (e->close_on_stop && stopping_) {
                (void)e->close(); // request_stop() came first
            }
        }
        if constexpr (detail::is_subscription<C>::value) {
            using T = typename C::value_type::element_type;
            e->name = unclaimed_name(ch.name());
            e->hangs_off = [&ch](const void* b, const void* type) {
                return type == detail::type_key<broadcaster<std::remove_const_t<T>>>() &&
                       ch.subscribed_to(*static_cast<const broadcaster<std::remove_const_t<T>>*>(b));
            };
        }
        channels_.push_back(std::move(e));
        return *channels_.back();
    }

    // "channel-N" for the next N not yet handed out (they are never reused, so that a channel
    // removed with its source leaves no name to clash with), skipping a name a channel has been
    // given with channel(). Requires graph_mu_.
    [[nodiscard]] std::string default_channel_name() { return free_channel_name(next_channel_); }

    // "channel-N" for the first N from `n` on that no channel has; `n` is left past it.
    // Requires graph_mu_.
    [[nodiscard]] std::string free_channel_name(std::size_t& n) const {
        for (;;) {
            std::string name = "channel-" + std::to_string(n++);
            bool taken = false;
            for (const auto& c : channels_) {
                taken = taken || c->name == name;
            }
            if (!taken) {
                return name;
            }
        }
    }

    // `name` if no channel has it, else the first of "name-2", "name-3", ... that none has: a
    // subscription's own name is unique only among its broadcaster's ("subscriber-0" of two
    // cameras). Requires graph_mu_.
    [[nodiscard]] std::string unclaimed_name(const std::string& name) const {
        const auto taken = [this](const std::string& n) {
            for (const auto& c : channels_) {
                if (c->name == n) {
                    return true;
                }
            }
            return false;
        };
        if (!taken(name)) {
            return name;
        }
        for (std::size_t k = 2;; ++k) {
            std::string candidate = name + "-" + std::to_string(k);
            if (!taken(candidate)) {
                return candidate;
            }
        }
    }

    [[nodiscard]] stage_snapshot snapshot_of(const detail::stage_entry& s) const {
        stage_snapshot ss;
        ss.name = s.name;
        ss.kind = s.kind;
        ss.state = s.state.load(std::memory_order_acquire);
        ss.workers = s.options.workers;
        // items_inline first, with acquire: pairs with process()'s release increment, so the
        // items_in read after it counts every item it does (items_inline <= items_in).
        ss.items_inline = s.items_inline.load(std::memory_order_acquire);
        ss.items_in = s.items_in.load(std::memory_order_relaxed);
        ss.items_out = s.items_out.load(std::memory_order_relaxed);
        const auto now = clock::now();
        for (const auto& w : s.workers) { // empty until start()
            ss.fps += w->rate.per_second(now);
            ss.busy_ratio += w->busy.share(now);
        }
        if (!s.workers.empty()) {
            ss.busy_ratio /= static_cast<double>(s.workers.size());
        }
        ss.service_p50_ms = detail::to_ms(s.service.quantile(0.50));
        ss.service_p95_ms = detail::to_ms(s.service.quantile(0.95));
        ss.service_p99_ms = detail::to_ms(s.service.quantile(0.99));
        ss.service_count = s.service.count();
        ss.service_sum_s = std::chrono::duration<double>(s.service.sum()).count();
        ss.busy_s = static_cast<double>(s.busy_ns.load(std::memory_order_relaxed)) / 1e9;
        if (s.source_status_of) {
            ss.source = s.source_status_of();
            for (const auto& c : ss.source->counters) {
                // A source of the user's may give any double: one outside std::uint64_t's
                // range (negative, NaN, 2^64 or more) would be undefined to convert, and is
                // left out (items_out stays 0).
                if (c.name == "frames" && c.value >= 0 && c.value < 18446744073709551616.0) {
                    ss.items_out = static_cast<std::uint64_t>(c.value);
                }
            }
            // Its items are pushed on threads of its own, which the stage's meters do not see:
            // its rate is its own "fps" gauge when it gives one (live_source does).
            for (const auto& g : ss.source->gauges) {
                if (g.name == "fps" && g.value >= 0 && std::isfinite(g.value)) {
                    ss.fps = g.value;
                }
            }
        }
        if (s.input != nullptr) {
            ss.inputs.push_back(s.input->name);
        }
        if (s.output != nullptr) {
            ss.outputs.push_back(s.output->name);
        }
        return ss;
    }

    [[nodiscard]] channel_snapshot snapshot_of(
        const detail::channel_entry& c,
        const std::unordered_map<const void*, const detail::channel_entry*>& feeds) const {
        channel_snapshot cs;
        cs.name = c.name;
        const channel_description d = c.describe();
        cs.kind = d.kind;
        cs.policy = d.policy;
        cs.capacity = d.capacity;
        if (d.stats) {
            channel_stats s = *d.stats;
            // What a paced stage passed over was popped by the channel; it is shown as dropped
            // for the rate (never more than the channel counted as popped).
            const auto skipped = std::min(c.skipped.load(std::memory_order_relaxed), s.popped);
            s.popped -= skipped;
            s.rate_limited += skipped;
            s.dropped += skipped;
            cs.has_counts = true;
            cs.pushed = s.pushed;
            cs.popped = s.popped;
            cs.dropped = s.dropped;
            cs.size = s.size;
            if (d.kind != "broadcaster") {
                cs.dropped_by_reason = {{"evicted", s.evicted},
                                        {"rejected", s.rejected},
                                        {"cancelled", s.cancelled},
                                        {"expired", s.expired},
                                        {"after_close", s.after_close},
                                        {"rate_limited", s.rate_limited},
                                        {"sampled_out", s.sampled_out},
                                        {"lost_in_transport", s.lost_in_transport}};
            }
        }
        if (c.hangs_off) {
            for (const auto& p : channels_) {
                if (p->address != c.address && c.hangs_off(p->address, p->type)) {
                    cs.parent = p->name;
                }
            }
        }
        if (const auto it = feeds.find(c.address); it != feeds.end() && it->second != &c) {
            cs.feeds = it->second->name;
        }
        cs.has_age = c.timestamped_items;
        if (cs.has_age) {
            cs.age_count = c.age.count();
            cs.age_sum_s = std::chrono::duration<double>(c.age.sum()).count();
            cs.age_p50_ms = detail::to_ms(c.age.quantile(0.50));
            cs.age_p99_ms = detail::to_ms(c.age.quantile(0.99));
        }
        return cs;
    }

    // An item under way counts in its worker's busy share (busy_meter::begin_item) from its
    // start: t0 when it is timed; when it is not (one in 16 is, while items are fast), from the
    // end of the last timed item, since no clock is read for it (the items between took under
    // 10 us each, on average). It stops counting when record() ends it, or when it ends
    // without one (untimed, or the step threw or returned false). Two relaxed stores an item.
    struct item_under_way {
        detail::worker_entry& w;
        const bool metrics;
        item_under_way(detail::worker_entry& worker, bool with_metrics,
                       clock::time_point start) noexcept
            : w(worker), metrics(with_metrics) {
            if (metrics) {
                w.busy.begin_item(start);
            }
        }
        ~item_under_way() {
            if (metrics) {
                w.busy.abandon_item(); // after a record() too: the same store again
            }
        }
        item_under_way(const item_under_way&) = delete;
        item_under_way& operator=(const item_under_way&) = delete;
    };

    // Records a timed item [t0, t1]; it stands for itself and the items passed untimed since
    // the last timed one ended at `last_end` (see timing_sampler).
    static void record(detail::stage_entry& self, detail::worker_entry& w,
                       clock::time_point& last_end, clock::time_point t0,
                       clock::time_point t1) noexcept {
        const std::uint32_t n = w.timing.since + 1;
        const auto service = t1 - t0;
        const auto span = t1 - last_end;
        const auto busy = std::min<clock::duration>(service * n, span);
        self.busy_ns.fetch_add(busy.count(), std::memory_order_relaxed);
        self.service.record(service);
        w.rate.record(t1, n);
        w.busy.record(t1, busy);
        w.timing.timed(span, n);
        last_end = t1;
    }

    // The loop of a source: pace, then step(ctx) until it returns false or the stop.
    template <class Step>
    static void produce(detail::stage_entry& self, stage_context& ctx, bool metrics, Step step) {
        std::optional<rate_limiter> pace;
        if (self.options.max_rate_hz > 0) {
            pace.emplace(self.options.max_rate_hz);
        }
        auto& w = *self.workers[ctx.worker()];
        auto idle_from = clock::now();
        for (;;) {
            if (ctx.stop_requested() || (pace && !pace->acquire(ctx.stop_token()))) {
                break;
            }
            const bool timed = metrics && w.timing.due();
            const auto t0 = timed ? clock::now() : clock::time_point{};
            const item_under_way under_way(w, metrics, timed ? t0 : idle_from);
            if (!step(ctx)) {
                break;
            }
            if (timed) {
                record(self, w, idle_from, t0, clock::now());
            }
        }
    }

    // GCC 12 at -O1 and up can warn, falsely, that the nested std::optional below (for a pop
    // result that cannot be reassigned) is used uninitialised, in the code that instantiates it.
    // Reassigning, the path of every other pop result, does not warn (test_optimized_build).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
    // The loop of a stage or sink: pop (and, when paced, wait the turn and skip to the newest),
    // then process. A stage that runs inline_when_idle holds its gate for each item it takes.
    template <class In, class Handle>
    static void consume(detail::stage_entry& self, In& in, stage_context& ctx, bool metrics,
                        Handle handle) {
        using item_type = input_item_t<In>;
        using popped = decltype(in.pop(ctx.stop_token()));
        auto& w = *self.workers[ctx.worker()];
        w.last_end = clock::now();
        // Linked by start() when the pair was checked; opened once ctx is there to be used.
        detail::inline_gate* const gate =
            self.gate && self.gate->stage != nullptr ? self.gate.get() : nullptr;
        // On every way out, an exception from the function included: no inline run after this
        // thread's end (it waits for one under way to finish).
        struct gate_closer {
            detail::inline_gate* gate;
            bool held = false;
            ~gate_closer() {
                if (gate == nullptr) {
                    return;
                }
                if (held) {
                    gate->release(detail::inline_gate::shut);
                } else {
                    gate->shut_down();
                }
            }
        } closer{gate};
        if (gate != nullptr) {
            gate->ctx = &ctx;
            gate->release(); // opens it
        }
        const std::size_t max_skip = self.pace ? detail::max_skip(*self.input) : 0;
        for (;;) {
            popped item = in.pop(ctx.stop_token());
            if (!item) {
                break;
            }
            // A newer item taken after the pacing wait replaces `item` (which releases the one
            // passed over at once), or, when the pop result cannot be reassigned, is kept here.
            [[maybe_unused]] std::optional<popped> newer;
            // The items the one held stands for in the channel's counters (a batch's size).
            [[maybe_unused]] const auto held_weight = [&]() noexcept -> std::uint64_t {
                return detail::item_weight<item_type>::of(newer ? **newer : *item);
            };
            if (self.pace) {
                if (!self.pace->try_acquire() && !self.pace->acquire(ctx.stop_token())) {
                    // Stopped while waiting its turn: the item it held is dropped, as skipped.
                    self.input->skipped.fetch_add(held_weight(), std::memory_order_relaxed);
                    break;
                }
                // Its turn, granted at once or after the wait: the newest item wins. (A function
                // slower than the period is always granted at once; what piled up meanwhile is
                // passed over all the same.)
                if constexpr (requires { { in.try_pop() } -> std::same_as<popped>; }) {
                    for (std::size_t k = 0; k < max_skip; ++k) {
                        // A try_pop that throws fails the stage, and the item it holds is
                        // dropped unhandled: counted as passed over, as on a stop above.
                        popped n = [&] {
                            try {
                                return in.try_pop();
                            } catch (...) {
                                self.input->skipped.fetch_add(held_weight(),
                                                              std::memory_order_relaxed);
                                throw;
                            }
                        }();
                        if (!n) {
                            break;
                        }
                        const std::uint64_t passed = held_weight();
                        if constexpr (std::is_move_assignable_v<popped>) {
                            item = std::move(n);
                        } else {
                            newer.reset();
                            newer.emplace(std::move(n));
                        }
                        self.input->skipped.fetch_add(passed, std::memory_order_relaxed);
                    }
                }
            }
            item_type& x = newer ? **newer : *item;
            if (gate != nullptr) {
                if (!gate->hold()) {
                    break; // shut by an inline run that failed: this stage has failed
                }
                closer.held = true;
                ++gate->taken;
            }
            const bool go_on = process(self, w, metrics, x, handle, false);
            if (gate != nullptr) {
                closer.held = false;
                // An output found closed ends this stage: no inline run after it.
                gate->release(go_on ? detail::inline_gate::open : detail::inline_gate::shut);
            }
            if (!go_on) {
                break; // the output was closed
            }
        }
        if (gate != nullptr) {
            closer.gate = nullptr;
            FRAMEPIPE_DETAIL_INLINE_END_HOOK();
            gate->shut_down(); // an inline run that failed has failed this stage (gate->fail)
        }
    }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

    // One item of a stage or sink, on its thread or inline: count, measure, hand it to `handle`.
    // False when the output was closed.
    template <class Item, class Handle>
    static bool process(detail::stage_entry& self, detail::worker_entry& w, bool metrics, Item& x,
                        Handle& handle, bool inline_run) {
        self.items_in.fetch_add(1, std::memory_order_relaxed);
        if (inline_run) {
            // After items_in, with release: a snapshot never shows more of these than of those
            // (see snapshot_of). An RMW either way on x86.
            self.items_inline.fetch_add(1, std::memory_order_release);
        }
        const bool timed = metrics && w.timing.due();
        const auto t0 = timed ? clock::now() : clock::time_point{};
        if constexpr (timestamped<Item>) {
            if (timed) {
                const auto captured = timestamp_traits<Item>::capture_time(x);
                if (captured != clock::time_point::max()) {
                    // Saturating: a capture time far in the past (time_point::min()) is the
                    // longest age, not an overflow.
                    self.input->age.record(detail::saturating_difference(
                        t0.time_since_epoch(), captured.time_since_epoch()));
                }
            }
        }
        const item_under_way under_way(w, metrics, timed ? t0 : w.last_end);
        const bool go_on = handle(std::move(x));
        if (timed) {
            record(self, w, w.last_end, t0, clock::now());
        }
        return go_on;
    }

    // A stage's or sink's body, from step(self, ctx, item) -> bool (false: the output was
    // closed); with inline_when_idle, also its gate, whose run() calls the same step.
    template <class In, class Step>
    void install_consumer(detail::stage_entry& e, In& in, Step step) {
        using in_item = input_item_t<In>;
        const bool metrics = options_.metrics;
        auto shared = std::make_shared<Step>(std::move(step));
        e.body = [&in, shared, metrics](detail::stage_entry& self, stage_context& ctx) {
            consume(self, in, ctx, metrics,
                    [&](in_item&& x) { return (*shared)(self, ctx, std::move(x)); });
        };
        if (e.options.inline_when_idle) {
            e.gate = std::make_unique<detail::inline_gate>();
            e.gate->item = detail::type_key<in_item>();
            e.gate->run = [&e, shared, metrics](void* p) {
                stage_context& ctx = *e.gate->ctx;
                auto handle = [&](in_item&& x) { return (*shared)(e, ctx, std::move(x)); };
                return process(e, *e.workers[0], metrics, *static_cast<in_item*>(p), handle, true);
            };
        }
    }

    // A producer stage whose output could take its consumer's items directly records the item
    // type it would build; start() pairs it with an inline_when_idle consumer.
    template <class Out, class V>
    static void note_inline_producer(detail::stage_entry& e, const Out& out) {
        if constexpr (detail::inline_handoff<Out, V>) {
            e.output->inline_item = detail::type_key<input_item_t<Out>>();
            e.output->inline_filtered = detail::inline_access::filters(out);
        }
    }

    // Emits what a source or stage produced: into the output, or, when the output's consumer runs
    // inline_when_idle and is idle, straight into that consumer's function on this thread.
    template <class Out, class V>
    static bool emit_from(detail::stage_entry& self, Out& out, V&& v) {
        if constexpr (detail::inline_handoff<Out, V>) {
            if (detail::inline_gate* const g = self.output->gate; g != nullptr) {
                return hand_off(*g, out, std::forward<V>(v));
            }
        }
        return detail::emit(out, std::forward<V>(v));
    }

    // This thread is the input's only producer. If the consumer's thread has taken every item
    // that entered the input, nothing waits there, so running the function now keeps the order.
    template <class Out, class V>
    static bool hand_off(detail::inline_gate& g, Out& out, V&& v) {
        if (g.try_hold()) {
            if (g.taken == g.entered && !out.closed()) {
                // Built before the run, outside its handler: a move or copy of the item that
                // throws is this producer's emit failing, as a push's would, not the consumer's.
                std::optional<input_item_t<Out>> x;
                try {
                    x.emplace(std::forward<V>(v));
                } catch (...) {
                    g.release();
                    throw;
                }
                bool go_on = false;
                try {
                    go_on = g.run(&*x);
                } catch (...) {
                    // The consumer's function threw: that stage fails, and the pipeline stops
                    // now (this producer ends as a stopped stage does). The consumer's thread
                    // wakes to an input closed and drained, and ends failed.
                    g.fail(std::current_exception());
                    g.release(detail::inline_gate::shut);
                    out.close();
                    return false;
                }
                g.release();
                if (!go_on) {
                    out.close(); // the consumer's output was closed: it ends, and so do we
                    return false;
                }
                return true;
            }
            g.release();
        }
        const push_status r = out.push(std::forward<V>(v));
        if (r == push_status::ok) {
            ++g.entered; // evicted: one in, one out; rejected, cancelled: none in
        }
        return r != push_status::closed;
    }

    void run(detail::stage_entry& s, std::size_t worker, std::stop_token stop, bool spin_yields) {
        detail::spin_yields = spin_yields;
        detail::stage_thread_of = this;
        bool failed = false;
        try {
            detail::apply_thread_options(s.options, s.name);
            stage_context ctx(s.name, stop, worker);
            s.body(s, ctx);
        } catch (...) {
            failed = true;
            fail_stage(s, std::current_exception());
        }
        // Downstream: the last producer of a channel closes it, so its consumers drain and end.
        // A close() that throws fails this stage (its end did not happen as it should).
        if (s.output != nullptr &&
            s.output->producers_running.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            if (const std::exception_ptr e = s.output->close()) {
                failed = true;
                fail_stage(s, e);
            }
        }
        if (s.workers_running.fetch_sub(1, std::memory_order_acq_rel) != 1) {
            return; // other workers of this stage still run
        }
        // The last worker. Upstream: release producers blocked on a channel nobody reads now.
        if (s.input != nullptr) {
            if (const std::exception_ptr e = s.input->close()) {
                failed = true;
                fail_stage(s, e);
            }
        }
        auto end = stage_state::finished;
        if (failed || s.failed.load(std::memory_order_relaxed)) {
            end = stage_state::failed;
        } else if (stop.stop_requested() && s.kind != stage_kind::source) {
            end = stage_state::stopped;
        }
        // seq_cst, both: the state changes that the predicates of wait_until (running_) and of
        // remove() (this stage's state) read, as notify_all_after_seq_cst() requires. A release
        // store followed by the seq_cst decrement is enough on x86 and ARMv8, not in the C++
        // model, which lets remove()'s waiter and this notify both miss each other.
        s.state.store(end, std::memory_order_seq_cst);
        running_.fetch_sub(1, std::memory_order_seq_cst);
        ended_.notify_all_after_seq_cst();
    }

    // Stage `s` failed with `e` (its function threw, on its own thread or inline on its
    // upstream's): the first error is kept for wait(), and every stage stops now.
    // noexcept: a failure to record it (std::bad_alloc copying the name) terminates, as it did
    // when it escaped a stage's thread.
    void fail_stage(detail::stage_entry& s, std::exception_ptr e) noexcept {
        s.failed.store(true, std::memory_order_relaxed);
        {
            const std::lock_guard<std::mutex> lock(mu_);
            if (!error_) {
                error_ = std::move(e);
                error_stage_ = s.name;
            }
        }
        abort_all();
    }

    // Waits until no stage runs or `deadline`; true when none runs.
    bool wait_until(clock::time_point deadline) {
        const auto end = ended_.park(nullptr, deadline, [this]() noexcept {
            return running_.load(std::memory_order_seq_cst) == 0;
        });
        return end == detail::wait_end::ready;
    }

    stop_report report_unfinished() const {
        const std::lock_guard<std::mutex> lock(graph_mu_);
        stop_report report;
        for (const auto& s : stages_) {
            if (s->state.load(std::memory_order_acquire) == stage_state::running) {
                report.unfinished.push_back(s->name);
            }
        }
        report.clean = report.unfinished.empty();
        return report;
    }

    static void stop_workers(detail::stage_entry& s) noexcept {
        for (auto& w : s.workers) {
            w->thread.request_stop();
        }
    }

    // Stops every stage now and closes every channel. Any thread, including a stage's own. It
    // sticks: a source added later is stopped as soon as it starts (launch_if_started).
    void abort_all() noexcept {
        const std::lock_guard<std::mutex> lock(graph_mu_);
        aborted_ = true;
        for (auto& s : stages_) {
            stop_workers(*s);
        }
        for (auto& c : channels_) {
            (void)c->close(); // a close() that throws: the abort goes on
        }
    }

    // Joins every stage's workers, a source added meanwhile (by another thread) included. The
    // list is copied under the lock and joined without it (a stage that fails takes the lock to
    // stop the others); passes repeat until one finds no thread to join. A stage is in the list
    // once its threads are: source() and start() add and launch it under the same lock.
    void join_all() {
        for (bool joined = true; joined;) {
            std::vector<std::shared_ptr<detail::stage_entry>> stages;
            {
                const std::lock_guard<std::mutex> lock(graph_mu_);
                stages = stages_;
            }
            joined = false;
            for (auto& s : stages) {
                joined = join_workers(*s) || joined;
            }
        }
    }

    // Joins a stage's workers (but the calling thread); true when it joined any.
    static bool join_workers(detail::stage_entry& s) {
        const std::lock_guard<std::mutex> lock(s.join_mu);
        bool joined = false;
        for (auto& w : s.workers) {
            if (w->thread.joinable() && w->thread.get_id() != std::this_thread::get_id()) {
                w->thread.join();
                joined = true;
            }
        }
        return joined;
    }

    // start()'s launch of one stage. If a thread cannot start, stops what runs at once (as
    // abort_all(), whose lock start() holds), takes the workers of this stage and of the stages
    // after it that did not start off the counts their threads would have ended (their stage
    // ended by whoever takes the last off: here, or the last worker that did start), and
    // rethrows std::system_error. Requires graph_mu_, from start().
    void launch_or_unwind(detail::stage_entry& failed) {
        try {
            launch_workers(failed);
        } catch (...) {
            aborted_ = true;
            for (auto& s : stages_) {
                stop_workers(*s);
            }
            for (auto& c : channels_) {
                (void)c->close(); // as in abort_all()
            }
            bool after = false;
            for (auto& s : stages_) {
                after = after || s.get() == &failed;
                if (!after) {
                    continue; // launched whole: its threads end it
                }
                std::size_t idle = 0; // its workers without a thread
                for (const auto& w : s->workers) {
                    if (!w->thread.joinable()) {
                        ++idle;
                    }
                }
                if (s->output != nullptr) {
                    s->output->producers_running.fetch_sub(idle, std::memory_order_acq_rel);
                }
                if (s->workers_running.fetch_sub(idle, std::memory_order_acq_rel) != idle) {
                    continue; // a worker of it still runs, and ends it as run() does
                }
                // As run() ends a stage (seq_cst, both: see there).
                s->state.store(idle == s->options.workers ? stage_state::pending
                                                          : stage_state::stopped,
                               std::memory_order_seq_cst);
                running_.fetch_sub(1, std::memory_order_seq_cst);
            }
            ended_.notify_all_after_seq_cst();
            throw;
        }
    }

    // Starts a stage's workers (their entries exist first: a running worker reads its stage's
    // list of workers). Requires graph_mu_.
    void launch_workers(detail::stage_entry& s) {
        const bool yields = spin_yields();
        for (std::size_t w = 0; w < s.options.workers; ++w) {
            s.workers[w]->thread = std::jthread([this, st = &s, w, yields](std::stop_token stop) {
                run(*st, w, std::move(stop), yields);
            });
        }
    }

    // Whether stage threads started now yield while they spin (pipeline_options::spin).
    // Requires graph_mu_.
    [[nodiscard]] bool spin_yields() const noexcept {
        switch (options_.spin) {
        case spin_style::pause: return false;
        case spin_style::yield: return true;
        case spin_style::automatic: break;
        }
        std::size_t threads = 0;
        for (const auto& s : stages_) {
            threads += s->options.workers;
        }
        const std::size_t cores = detail::usable_cores(); // 0: unknown
        return cores != 0 && threads > cores;
    }

    // A source added while the pipeline runs: counted, then started (and asked to stop at once
    // after a request_stop() or an abort_all()). If its thread cannot start, the counts are
    // undone (its output closed if the producers running when it was counted have all ended
    // since, the close they left to it) and std::system_error is rethrown; the caller's
    // registration then takes the stage out. Requires graph_mu_.
    void launch_if_started(detail::stage_entry& s) {
        if (!started_) {
            return;
        }
        for (std::size_t w = 0; w < s.options.workers; ++w) {
            s.workers.push_back(std::make_unique<detail::worker_entry>());
        }
        std::size_t others = 0; // the output's producers running before this one
        if (s.output != nullptr) {
            others = s.output->producers_running.fetch_add(s.options.workers,
                                                           std::memory_order_acq_rel);
        }
        running_.fetch_add(1, std::memory_order_seq_cst);
        s.state.store(stage_state::running, std::memory_order_relaxed);
        s.workers_running.store(s.options.workers, std::memory_order_relaxed);
        try {
            launch_workers(s); // a source has one worker: when this throws, none started
        } catch (...) {
            s.workers.clear();
            s.workers_running.store(0, std::memory_order_relaxed);
            s.state.store(stage_state::pending, std::memory_order_relaxed);
            // As run() does for a producer that ended: the others running when it was counted may
            // have ended meanwhile, each leaving the close to the last, which this one now is.
            // (With none running then, the output is left as it was.)
            if (s.output != nullptr &&
                s.output->producers_running.fetch_sub(s.options.workers,
                                                      std::memory_order_acq_rel) ==
                    s.options.workers &&
                others > 0) {
                (void)s.output->close(); // this source never ran: its start() throws
            }
            running_.fetch_sub(1, std::memory_order_seq_cst);
            ended_.notify_all_after_seq_cst(); // wait_for() may be waiting for the 0
            throw;
        }
        if (stopping_ || aborted_) {
            stop_workers(s); // request_stop() or a failure came first: this source stops at once
        }
    }

    std::string name_;
    pipeline_options options_;
    // The graph. Guarded by graph_mu_ (sources come and go while it runs); the entries
    // themselves are shared with the threads that run them, so a stage removed while wait()
    // joins it stays alive until both let go.
    mutable std::mutex graph_mu_;
    std::vector<std::shared_ptr<detail::stage_entry>> stages_;
    std::vector<std::unique_ptr<detail::channel_entry>> channels_;
    std::size_t next_channel_ = 0; // the N of the next default name "channel-N"
    bool stopping_ = false;        // request_stop() was called: sources started later stop too
    bool aborted_ = false; // a failure, a missed deadline or the destructor stopped every stage

    mutable std::mutex mu_; // start(), error_
    std::atomic<bool> started_{false}; // written under mu_ by start(); read by any thread
    std::exception_ptr error_;
    std::string error_stage_;
    // Stages still running; ended_ wakes the threads waiting for it to reach 0.
    std::atomic<std::size_t> running_{0};
    detail::event_count ended_;
};

} // namespace framepipe
