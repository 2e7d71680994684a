// framepipe/pipeline.hpp - named stages on their own threads, joined by framepipe channels,
// with an orderly lifecycle, error propagation and live metrics.
//
//     framepipe::broadcaster<Frame> frames;
//     auto ui  = frames.subscribe({.max_rate_hz = 15, .name = "ui"});
//     auto det = frames.subscribe({.name = "detector"});
//     framepipe::latest_slot<Boxes> boxes;
//
//     framepipe::pipeline p("seed-000");
//     p.source("camera", frames, [&] { return grab(); }, 30.0);     // paced at 30 fps
//     p.stage("detector", det, boxes, [&](auto f) { return detect(*f); });
//     p.sink("ui", ui, [&](auto f) { show(*f, boxes.peek()); });
//     p.start();
//     ...
//     p.request_stop();   // sources stop, channels drain, stages end in order
//     p.wait();           // rethrows a stage's exception as framepipe::stage_error
//
// Shapes of the functions:
//   source: fn() or fn(stage_context&) returning std::optional<U> (nullopt ends the source) or U.
//   stage:  fn(item) or fn(item, stage_context&) returning std::optional<U> (nullopt: emit
//           nothing for this item) or U.
//   sink:   fn(item) or fn(item, stage_context&); the result is ignored.
// An output is anything with publish(U) (a broadcaster) or push(U, std::stop_token) (ring,
// latest_slot, sliding_window). An input is anything with pop(std::stop_token) returning an
// optional (ring, latest_slot, sliding_window, subscription).
//
// Lifecycle. request_stop() asks the sources to stop. A stage whose producers have all ended
// closes its output, so each consumer drains what is buffered and then ends, and so on down
// the graph: stages end in order, and nothing buffered is lost in an orderly stop. A stage that
// ends also closes its input, so a producer blocked on it (overflow::block) is released.
// request_stop(deadline) does the same but waits at most `deadline`; stages still running then
// are stopped at once (their pops and blocked pushes end) and are named in the report.
//
// Errors. An exception escaping a stage's function stops the whole pipeline at once (every
// stage's stop token is requested and every channel closed); wait() rethrows it as
// stage_error, which names the stage and nests the original exception.
//
// Threads. Build the graph (source/stage/sink/channel) on one thread before start(). After
// start(), snapshot(), to_prometheus(), to_dot(), request_stop() and running() may be called
// from any thread; wait() from one thread at a time.
#pragma once

#include <framepipe/broadcaster.hpp>
#include <framepipe/channel.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/rate_limiter.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/sliding_window.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace framepipe {

// The exception wait() rethrows when a stage failed: names the stage and nests the cause.
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

enum class stage_kind { source, stage, sink };
enum class stage_state { pending, running, finished, stopped, failed };

[[nodiscard]] constexpr std::string_view to_string(stage_kind k) noexcept {
    switch (k) {
    case stage_kind::source: return "source";
    case stage_kind::stage: return "stage";
    case stage_kind::sink: return "sink";
    }
    return "unknown";
}

[[nodiscard]] constexpr std::string_view to_string(stage_state s) noexcept {
    switch (s) {
    case stage_state::pending: return "pending";
    case stage_state::running: return "running";
    case stage_state::finished: return "finished";
    case stage_state::stopped: return "stopped";
    case stage_state::failed: return "failed";
    }
    return "unknown";
}

// What a stage's function may ask of the pipeline while it runs.
class stage_context {
public:
    stage_context(const std::string& name, std::stop_token stop) noexcept
        : name_(&name), stop_(std::move(stop)) {}

    [[nodiscard]] const std::string& name() const noexcept { return *name_; }
    // Requested when the pipeline stops this stage (sources: on request_stop; all stages: on an
    // error or a missed deadline). Pass it to any wait of your own.
    [[nodiscard]] const std::stop_token& stop_token() const noexcept { return stop_; }
    [[nodiscard]] bool stop_requested() const noexcept { return stop_.stop_requested(); }

private:
    const std::string* name_;
    std::stop_token stop_;
};

// One stage's live figures.
struct stage_snapshot {
    std::string name;
    stage_kind kind = stage_kind::stage;
    stage_state state = stage_state::pending;
    std::uint64_t items_in = 0;  // taken from the input (sources: 0)
    std::uint64_t items_out = 0; // emitted to the output (sinks: 0)
    double fps = 0;              // items completed per second over the last 2 s
    double service_p50_ms = 0;   // time spent on one item (function + emit), quantiles
    double service_p95_ms = 0;
    double service_p99_ms = 0;
    std::uint64_t service_count = 0;
    double service_sum_s = 0;
    double busy_ratio = 0; // share of the stage's running time spent on items (vs waiting)
    std::vector<std::string> inputs;
    std::vector<std::string> outputs;
};

// One channel's live figures.
struct channel_snapshot {
    std::string name;
    std::string kind;   // ring, spsc_ring, latest_slot, subscription, sliding_window, broadcaster
    std::string policy; // overflow policy, or "window" / "fan-out"
    std::string parent; // for a subscription: the broadcaster it hangs off, if registered
    std::size_t capacity = 0;
    std::uint64_t pushed = 0; // windows for a sliding_window, publishes for a broadcaster
    std::uint64_t popped = 0;
    std::uint64_t dropped = 0;
    std::uint64_t size = 0;
    std::vector<std::pair<std::string, std::uint64_t>> dropped_by_reason;
    // Age of items when a stage took them (timestamped items only).
    bool has_age = false;
    std::uint64_t age_count = 0;
    double age_sum_s = 0;
    double age_p50_ms = 0;
    double age_p99_ms = 0;
};

struct pipeline_snapshot {
    std::string name;
    std::vector<stage_snapshot> stages;
    std::vector<channel_snapshot> channels;
};

// What request_stop(deadline) found.
struct stop_report {
    bool clean = true;                   // every stage finished before the deadline
    std::vector<std::string> unfinished; // stages still running at the deadline (then stopped)
};

struct pipeline_options {
    // Record per-item service time, rate, busy share and item age. Off: only item counts.
    bool metrics = true;
};

namespace detail {

struct channel_entry {
    std::string name;
    const void* address = nullptr;
    const void* group = nullptr; // broadcaster identity, shared with its subscriptions
    bool is_broadcaster = false;
    std::function<void(channel_snapshot&)> describe;
    std::function<void()> close;
    const std::type_info* type = nullptr;        // the channel's own type
    std::function<bool(const void*, const std::type_info&)> hangs_off; // subscription: parent?
    latency_histogram age;
    bool timestamped_items = false;
    std::size_t producers = 0;
    std::atomic<std::size_t> producers_running{0};
};

struct stage_entry {
    std::string name;
    stage_kind kind = stage_kind::stage;
    channel_entry* input = nullptr;
    channel_entry* output = nullptr;
    std::function<void(stage_entry&, std::stop_token)> body;
    std::jthread thread;
    std::atomic<stage_state> state{stage_state::pending};
    // Relaxed counters: statistics read by snapshot(), written by the stage's own thread.
    std::atomic<std::uint64_t> items_in{0};
    std::atomic<std::uint64_t> items_out{0};
    std::atomic<std::int64_t> busy_ns{0};
    std::atomic<std::int64_t> idle_ns{0};
    latency_histogram service;
    rate_meter rate;
};

// Emits `v` into an output channel. A push held up by back-pressure is not given the stage's
// stop token: in an orderly stop it completes as the consumers drain, and a forced stop closes
// the channel, which ends it (the item is then counted as after_close).
template <class Out, class V>
void emit(Out& out, V&& v) {
    if constexpr (requires { out.publish(std::forward<V>(v)); }) {
        (void)out.publish(std::forward<V>(v));
    } else {
        (void)out.push(std::forward<V>(v));
    }
}

template <class R>
struct is_optional : std::false_type {};
template <class U>
struct is_optional<std::optional<U>> : std::true_type {};

// Calls fn with (args..., ctx) when it accepts the context, else with (args...).
template <class Fn, class... Args>
decltype(auto) call(Fn& fn, stage_context& ctx, Args&&... args) {
    if constexpr (std::is_invocable_v<Fn&, Args..., stage_context&>) {
        return std::invoke(fn, std::forward<Args>(args)..., ctx);
    } else {
        static_assert(std::is_invocable_v<Fn&, Args...>,
                      "framepipe::pipeline: a stage function must accept (item) or "
                      "(item, stage_context&); a source function () or (stage_context&)");
        return std::invoke(fn, std::forward<Args>(args)...);
    }
}

inline double to_ms(std::chrono::nanoseconds d) noexcept {
    return std::chrono::duration<double, std::milli>(d).count();
}

inline void append_number(std::string& out, double v) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

inline void append_number(std::string& out, std::uint64_t v) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// Prometheus label values escape backslash, double quote and newline.
inline std::string prometheus_escape(std::string_view s) {
    std::string out;
    for (const char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

// DOT quoted strings escape double quote and backslash; "\n" is kept as DOT's line break.
inline std::string dot_escape(std::string_view s) {
    std::string out;
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out;
}

} // namespace detail

class pipeline {
public:
    using clock = std::chrono::steady_clock;

    explicit pipeline(std::string name = "pipeline", pipeline_options options = {})
        : name_(std::move(name)), options_(options) {}

    pipeline(const pipeline&) = delete;
    pipeline& operator=(const pipeline&) = delete;

    // Stops every stage at once (not an orderly drain: call request_stop() and wait() first for
    // that), closes every channel, and joins the threads. A stage stuck in its own code (not
    // in a framepipe wait) keeps the destructor waiting. Exceptions from stages are discarded.
    ~pipeline() {
        if (!started_) {
            return; // nothing runs, and the channels are the caller's to close
        }
        abort_all();
        for (auto& s : stages_) {
            if (s->thread.joinable()) {
                s->thread.join();
            }
        }
    }

    // Names a channel in snapshots, Prometheus labels and the DOT graph (default: a
    // subscription's own name, else "channel-N"). Registers it if it is not yet. Before start();
    // std::logic_error after it.
    template <class C>
    pipeline& channel(C& ch, std::string name) {
        if (started_) {
            throw std::logic_error("pipeline: channels must be named before start()");
        }
        entry_for(ch).name = std::move(name);
        return *this;
    }

    // Adds a source: calls fn repeatedly and emits each value into `out`, until fn returns
    // nullopt or the pipeline stops; with max_rate_hz > 0 the calls are paced at that rate by a
    // rate_limiter. Before start(). Throws std::invalid_argument naming `name` when it is empty
    // or already used, naming `max_rate_hz` when it is negative, not finite, above 1e9 or so
    // small that its period overflows; std::logic_error after start().
    template <class Out, class Fn>
    pipeline& source(std::string name, Out& out, Fn fn, double max_rate_hz = 0) {
        if (!(max_rate_hz >= 0.0) || !std::isfinite(max_rate_hz) || max_rate_hz > 1e9 ||
            (max_rate_hz > 0 && !std::isfinite(1e9 / max_rate_hz))) {
            throw std::invalid_argument(
                "max_rate_hz: must be 0 (unpaced) or a rate a rate_limiter accepts");
        }
        auto& e = add_stage(std::move(name), stage_kind::source);
        e.output = &entry_for(out);
        e.output->producers++;
        const bool metrics = options_.metrics;
        e.body = [&out, fn = std::move(fn), max_rate_hz, metrics](detail::stage_entry& self,
                                                                  std::stop_token stop) mutable {
            stage_context ctx(self.name, stop);
            std::optional<rate_limiter> pace;
            if (max_rate_hz > 0) {
                pace.emplace(max_rate_hz);
            }
            auto idle_from = clock::now();
            for (;;) {
                if (stop.stop_requested() || (pace && !pace->acquire(stop))) {
                    break;
                }
                const auto t0 = clock::now();
                auto v = detail::call(fn, ctx);
                if constexpr (detail::is_optional<decltype(v)>::value) {
                    if (!v) {
                        break;
                    }
                    detail::emit(out, std::move(*v));
                } else {
                    detail::emit(out, std::move(v));
                }
                self.items_out.fetch_add(1, std::memory_order_relaxed);
                if (metrics) {
                    record(self, idle_from, t0, clock::now());
                }
            }
        };
        return *this;
    }

    // Adds a processing stage: pops items from `in`, calls fn, emits its result into `out`.
    // Before start(). Throws as source() does.
    template <class In, class Out, class Fn>
    pipeline& stage(std::string name, In& in, Out& out, Fn fn) {
        auto& e = add_stage(std::move(name), stage_kind::stage);
        e.input = &entry_for(in);
        e.output = &entry_for(out);
        e.output->producers++;
        const bool metrics = options_.metrics;
        e.body = [&in, &out, fn = std::move(fn), metrics](detail::stage_entry& self,
                                                          std::stop_token stop) mutable {
            consume(self, in, stop, metrics, [&](auto&& item, stage_context& ctx) {
                auto v = detail::call(fn, ctx, std::move(item));
                if constexpr (detail::is_optional<decltype(v)>::value) {
                    if (v) {
                        detail::emit(out, std::move(*v));
                        self.items_out.fetch_add(1, std::memory_order_relaxed);
                    }
                } else {
                    detail::emit(out, std::move(v));
                    self.items_out.fetch_add(1, std::memory_order_relaxed);
                }
            });
        };
        return *this;
    }

    // Adds a sink: pops items from `in` and calls fn on each. Before start(). Throws as
    // source() does.
    template <class In, class Fn>
    pipeline& sink(std::string name, In& in, Fn fn) {
        auto& e = add_stage(std::move(name), stage_kind::sink);
        e.input = &entry_for(in);
        const bool metrics = options_.metrics;
        e.body = [&in, fn = std::move(fn), metrics](detail::stage_entry& self,
                                                    std::stop_token stop) mutable {
            consume(self, in, stop, metrics, [&](auto&& item, stage_context& ctx) {
                (void)detail::call(fn, ctx, std::move(item));
            });
        };
        return *this;
    }

    // Starts every stage on its own thread. Once. Throws std::logic_error when called twice or
    // with no stages; std::system_error if a thread cannot start (the ones started are then
    // stopped and joined by the destructor).
    void start() {
        const std::lock_guard<std::mutex> lock(mu_);
        if (started_) {
            throw std::logic_error("pipeline::start: already started");
        }
        if (stages_.empty()) {
            throw std::logic_error("pipeline::start: no stages");
        }
        started_ = true;
        for (auto& c : channels_) {
            c->producers_running.store(c->producers, std::memory_order_relaxed);
        }
        running_ = stages_.size();
        for (auto& s : stages_) {
            s->state.store(stage_state::running, std::memory_order_relaxed);
            s->thread = std::jthread([this, st = s.get()](std::stop_token stop) { run(*st, stop); });
        }
    }

    // Orderly stop: asks the sources to stop; the rest drains and ends in order. Any thread;
    // never waits; idempotent.
    void request_stop() noexcept {
        for (auto& s : stages_) {
            if (s->kind == stage_kind::source) {
                s->thread.request_stop();
            }
        }
    }

    // Orderly stop that waits at most `deadline` for every stage to end. Stages still running
    // then are stopped at once and named in the report. Any thread; blocks up to the deadline.
    // Throws std::invalid_argument naming deadline when it is negative.
    stop_report request_stop(std::chrono::nanoseconds deadline) {
        detail::require_non_negative(deadline, "deadline");
        request_stop();
        stop_report report;
        std::unique_lock<std::mutex> lock(mu_);
        if (!done_.wait_until(lock, detail::deadline_after(deadline),
                              [this] { return running_ == 0; })) {
            report.clean = false;
            for (auto& s : stages_) {
                if (s->state.load(std::memory_order_relaxed) == stage_state::running) {
                    report.unfinished.push_back(s->name);
                }
            }
            lock.unlock();
            abort_all();
        }
        return report;
    }

    // Waits for every stage to end and joins the threads. Rethrows the first stage failure as
    // stage_error. Blocks. Call from one thread; after start().
    void wait() {
        for (auto& s : stages_) {
            if (s->thread.joinable()) {
                s->thread.join();
            }
        }
        const std::lock_guard<std::mutex> lock(mu_);
        if (error_) {
            throw stage_error(error_stage_, error_);
        }
    }

    // Whether any stage is still running. Any thread.
    [[nodiscard]] bool running() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return started_ && running_ > 0;
    }

    [[nodiscard]] const std::string& name() const noexcept { return name_; }

    // Live figures of every stage and channel. Any thread; allocates. Reads atomics only, except
    // that a mutex ring (a T whose move may throw) and a sliding_window each take their internal
    // lock briefly; lock-free rings, subscriptions, latest_slots and broadcasters take none.
    [[nodiscard]] pipeline_snapshot snapshot() const {
        pipeline_snapshot out;
        out.name = name_;
        for (const auto& s : stages_) {
            stage_snapshot ss;
            ss.name = s->name;
            ss.kind = s->kind;
            ss.state = s->state.load(std::memory_order_relaxed);
            ss.items_in = s->items_in.load(std::memory_order_relaxed);
            ss.items_out = s->items_out.load(std::memory_order_relaxed);
            ss.fps = s->rate.per_second();
            ss.service_p50_ms = detail::to_ms(s->service.quantile(0.50));
            ss.service_p95_ms = detail::to_ms(s->service.quantile(0.95));
            ss.service_p99_ms = detail::to_ms(s->service.quantile(0.99));
            ss.service_count = s->service.count();
            ss.service_sum_s = std::chrono::duration<double>(s->service.sum()).count();
            const auto busy = s->busy_ns.load(std::memory_order_relaxed);
            const auto idle = s->idle_ns.load(std::memory_order_relaxed);
            ss.busy_ratio = busy + idle > 0 ? static_cast<double>(busy) /
                                                  static_cast<double>(busy + idle)
                                            : 0.0;
            if (s->input != nullptr) {
                ss.inputs.push_back(s->input->name);
            }
            if (s->output != nullptr) {
                ss.outputs.push_back(s->output->name);
            }
            out.stages.push_back(std::move(ss));
        }
        for (const auto& c : channels_) {
            channel_snapshot cs;
            cs.name = c->name;
            c->describe(cs);
            if (c->hangs_off) {
                for (const auto& p : channels_) {
                    if (p->is_broadcaster && c->hangs_off(p->address, *p->type)) {
                        cs.parent = p->name;
                    }
                }
            }
            cs.has_age = c->timestamped_items;
            if (cs.has_age) {
                cs.age_count = c->age.count();
                cs.age_sum_s = std::chrono::duration<double>(c->age.sum()).count();
                cs.age_p50_ms = detail::to_ms(c->age.quantile(0.50));
                cs.age_p99_ms = detail::to_ms(c->age.quantile(0.99));
            }
            out.channels.push_back(std::move(cs));
        }
        return out;
    }

    // The snapshot in Prometheus text exposition format (version 0.0.4), ready to serve at
    // /metrics. Any thread.
    [[nodiscard]] std::string to_prometheus() const { return to_prometheus(snapshot()); }

    [[nodiscard]] static std::string to_prometheus(const pipeline_snapshot& snap);

    // The graph in Graphviz DOT: stages as boxes, channels as ellipses with their policy and
    // live counters. Any thread.
    [[nodiscard]] std::string to_dot() const { return to_dot(snapshot()); }

    [[nodiscard]] static std::string to_dot(const pipeline_snapshot& snap);

private:
    detail::stage_entry& add_stage(std::string name, stage_kind kind) {
        if (started_) {
            throw std::logic_error("pipeline: stages must be added before start()");
        }
        if (name.empty()) {
            throw std::invalid_argument("name: a stage needs a name");
        }
        for (const auto& s : stages_) {
            if (s->name == name) {
                throw std::invalid_argument("name: stage '" + name + "' already exists");
            }
        }
        auto e = std::make_unique<detail::stage_entry>();
        e->name = std::move(name);
        e->kind = kind;
        stages_.push_back(std::move(e));
        return *stages_.back();
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
        e->type = &typeid(C);
        e->name = "channel-" + std::to_string(channels_.size());
        e->close = [&ch] { ch.close(); };
        describe_into(*e, ch);
        channels_.push_back(std::move(e));
        return *channels_.back();
    }

    static void fill_counts(channel_snapshot& cs, const channel_stats& s) {
        cs.pushed = s.pushed;
        cs.popped = s.popped;
        cs.dropped = s.dropped;
        cs.size = s.size;
        cs.dropped_by_reason = {{"evicted", s.evicted},     {"rejected", s.rejected},
                                {"cancelled", s.cancelled}, {"expired", s.expired},
                                {"after_close", s.after_close}, {"rate_limited", s.rate_limited}};
    }

    template <class T, concurrency C>
    static void describe_into(detail::channel_entry& e, ring<T, C>& ch) {
        e.timestamped_items = timestamped<T>;
        e.describe = [&ch](channel_snapshot& cs) {
            cs.kind = C == concurrency::spsc ? "spsc_ring" : "ring";
            cs.policy = std::string(to_string(ch.policy()));
            cs.capacity = ch.capacity();
            fill_counts(cs, ch.stats());
        };
    }
    template <class T>
    static void describe_into(detail::channel_entry& e, latest_slot<T>& ch) {
        e.timestamped_items = timestamped<T>;
        e.describe = [&ch](channel_snapshot& cs) {
            cs.kind = "latest_slot";
            cs.policy = "drop_oldest";
            cs.capacity = 1;
            fill_counts(cs, ch.stats());
        };
    }
    template <class T>
    static void describe_into(detail::channel_entry& e, subscription<T>& ch) {
        e.name = ch.name();
        e.timestamped_items = timestamped<std::shared_ptr<const T>>;
        e.describe = [&ch](channel_snapshot& cs) {
            cs.kind = "subscription";
            cs.policy = std::string(to_string(ch.policy()));
            cs.capacity = ch.capacity();
            fill_counts(cs, ch.stats());
        };
        e.hangs_off = [&ch](const void* b, const std::type_info& type) {
            return type == typeid(broadcaster<T>) &&
                   ch.subscribed_to(*static_cast<const broadcaster<T>*>(b));
        };
    }
    template <class T>
    static void describe_into(detail::channel_entry& e, sliding_window<T>& ch) {
        e.timestamped_items = timestamped<T>;
        e.describe = [&ch](channel_snapshot& cs) {
            cs.kind = "sliding_window";
            cs.policy = "window " + std::to_string(ch.window_size()) + "/" +
                        std::to_string(ch.stride());
            cs.capacity = ch.window_size();
            const window_stats s = ch.stats();
            cs.pushed = s.ready;
            cs.popped = s.popped;
            cs.dropped = s.dropped;
            cs.size = s.size;
            cs.dropped_by_reason = {{"overtaken", s.dropped}};
        };
    }
    template <class T>
    static void describe_into(detail::channel_entry& e, broadcaster<T>& ch) {
        e.is_broadcaster = true;
        e.describe = [&ch](channel_snapshot& cs) {
            cs.kind = "broadcaster";
            cs.policy = "fan-out";
            cs.capacity = 0;
            cs.pushed = ch.published();
        };
    }

    static void record(detail::stage_entry& self, clock::time_point& idle_from,
                       clock::time_point t0, clock::time_point t1) noexcept {
        self.idle_ns.fetch_add((t0 - idle_from).count(), std::memory_order_relaxed);
        self.busy_ns.fetch_add((t1 - t0).count(), std::memory_order_relaxed);
        self.service.record(t1 - t0);
        self.rate.record(t1);
        idle_from = t1;
    }

    // The loop of a stage or sink: pop, measure, hand the item to `handle`.
    template <class In, class Handle>
    static void consume(detail::stage_entry& self, In& in, const std::stop_token& stop,
                        bool metrics, Handle handle) {
        stage_context ctx(self.name, stop);
        auto idle_from = clock::now();
        while (auto item = in.pop(stop)) {
            self.items_in.fetch_add(1, std::memory_order_relaxed);
            const auto t0 = metrics ? clock::now() : clock::time_point{};
            using item_type = std::remove_cvref_t<decltype(*item)>;
            if constexpr (timestamped<item_type>) {
                if (metrics) {
                    const auto captured = timestamp_traits<item_type>::capture_time(*item);
                    if (captured != clock::time_point::max()) {
                        self.input->age.record(t0 - captured);
                    }
                }
            }
            handle(std::move(*item), ctx);
            if (metrics) {
                record(self, idle_from, t0, clock::now());
            }
        }
    }

    void run(detail::stage_entry& s, std::stop_token stop) {
        auto end = stage_state::finished;
        try {
            s.body(s, stop);
            if (stop.stop_requested() && s.kind != stage_kind::source) {
                end = stage_state::stopped;
            }
        } catch (...) {
            end = stage_state::failed;
            {
                const std::lock_guard<std::mutex> lock(mu_);
                if (!error_) {
                    error_ = std::current_exception();
                    error_stage_ = s.name;
                }
            }
            abort_all();
        }
        // Downstream: the last producer of a channel closes it, so its consumers drain and end.
        if (s.output != nullptr &&
            s.output->producers_running.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            s.output->close();
        }
        // Upstream: release producers blocked on a channel nobody will read any more.
        if (s.input != nullptr) {
            s.input->close();
        }
        s.state.store(end, std::memory_order_relaxed);
        {
            const std::lock_guard<std::mutex> lock(mu_);
            --running_;
        }
        done_.notify_all();
    }

    // Stops every stage now and closes every channel. Any thread, including a stage's own.
    void abort_all() noexcept {
        for (auto& s : stages_) {
            s->thread.request_stop();
        }
        for (auto& c : channels_) {
            c->close();
        }
    }

    std::string name_;
    pipeline_options options_;
    std::vector<std::unique_ptr<detail::stage_entry>> stages_;
    std::vector<std::unique_ptr<detail::channel_entry>> channels_;

    mutable std::mutex mu_;
    std::condition_variable done_; // a stage ended
    bool started_ = false;
    std::size_t running_ = 0;
    std::exception_ptr error_;
    std::string error_stage_;
};

inline std::string pipeline::to_prometheus(const pipeline_snapshot& snap) {
    std::string out;
    const std::string p = "pipeline=\"" + detail::prometheus_escape(snap.name) + "\"";
    auto family = [&out](std::string_view metric, std::string_view type, std::string_view help) {
        out += "# HELP ";
        out += metric;
        out += ' ';
        out += help;
        out += "\n# TYPE ";
        out += metric;
        out += ' ';
        out += type;
        out += '\n';
    };
    auto sample = [&out](std::string_view metric, const std::string& labels, auto value) {
        out += metric;
        out += '{';
        out += labels;
        out += "} ";
        detail::append_number(out, value);
        out += '\n';
    };
    auto stage_labels = [&p](const stage_snapshot& s) {
        return p + ",stage=\"" + detail::prometheus_escape(s.name) + "\"";
    };
    auto channel_labels = [&p](const channel_snapshot& c) {
        return p + ",channel=\"" + detail::prometheus_escape(c.name) + "\"";
    };

    family("framepipe_stage_items_in_total", "counter", "Items a stage took from its input.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_in_total", stage_labels(s), s.items_in);
    }
    family("framepipe_stage_items_out_total", "counter", "Items a stage emitted to its output.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_out_total", stage_labels(s), s.items_out);
    }
    family("framepipe_stage_items_per_second", "gauge",
           "Items a stage completed per second over the last two seconds.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_per_second", stage_labels(s), s.fps);
    }
    family("framepipe_stage_service_seconds", "summary", "Time a stage spent on one item.");
    for (const auto& s : snap.stages) {
        const auto l = stage_labels(s);
        sample("framepipe_stage_service_seconds", l + ",quantile=\"0.5\"", s.service_p50_ms / 1e3);
        sample("framepipe_stage_service_seconds", l + ",quantile=\"0.95\"", s.service_p95_ms / 1e3);
        sample("framepipe_stage_service_seconds", l + ",quantile=\"0.99\"", s.service_p99_ms / 1e3);
        sample("framepipe_stage_service_seconds_sum", l, s.service_sum_s);
        sample("framepipe_stage_service_seconds_count", l, s.service_count);
    }
    family("framepipe_stage_busy_ratio", "gauge",
           "Share of a stage's time spent on items rather than waiting for them.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_busy_ratio", stage_labels(s), s.busy_ratio);
    }
    family("framepipe_stage_running", "gauge", "1 while the stage's thread runs, else 0.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_running", stage_labels(s),
               std::uint64_t{s.state == stage_state::running ? 1U : 0U});
    }

    family("framepipe_channel_pushed_total", "counter",
           "Items offered to a channel (windows made ready, for a sliding window).");
    for (const auto& c : snap.channels) {
        sample("framepipe_channel_pushed_total", channel_labels(c), c.pushed);
    }
    family("framepipe_channel_popped_total", "counter", "Items taken from a channel.");
    for (const auto& c : snap.channels) {
        if (c.kind != "broadcaster") {
            sample("framepipe_channel_popped_total", channel_labels(c), c.popped);
        }
    }
    family("framepipe_channel_dropped_total", "counter", "Items a channel dropped, by reason.");
    for (const auto& c : snap.channels) {
        for (const auto& [reason, n] : c.dropped_by_reason) {
            sample("framepipe_channel_dropped_total",
                   channel_labels(c) + ",reason=\"" + detail::prometheus_escape(reason) + "\"", n);
        }
    }
    family("framepipe_channel_items", "gauge", "Items buffered in a channel now.");
    for (const auto& c : snap.channels) {
        if (c.kind != "broadcaster") {
            sample("framepipe_channel_items", channel_labels(c), c.size);
        }
    }
    family("framepipe_channel_capacity_items", "gauge", "Most items a channel holds.");
    for (const auto& c : snap.channels) {
        if (c.kind != "broadcaster") {
            sample("framepipe_channel_capacity_items", channel_labels(c),
                   static_cast<std::uint64_t>(c.capacity));
        }
    }
    family("framepipe_channel_item_age_seconds", "summary",
           "Age of timestamped items when a stage took them from the channel.");
    for (const auto& c : snap.channels) {
        if (c.has_age) {
            const auto l = channel_labels(c);
            sample("framepipe_channel_item_age_seconds", l + ",quantile=\"0.5\"", c.age_p50_ms / 1e3);
            sample("framepipe_channel_item_age_seconds", l + ",quantile=\"0.99\"", c.age_p99_ms / 1e3);
            sample("framepipe_channel_item_age_seconds_sum", l, c.age_sum_s);
            sample("framepipe_channel_item_age_seconds_count", l, c.age_count);
        }
    }
    return out;
}

inline std::string pipeline::to_dot(const pipeline_snapshot& snap) {
    std::string out = "digraph \"" + detail::dot_escape(snap.name) + "\" {\n";
    out += "  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n";
    char buf[160];
    for (const auto& s : snap.stages) {
        std::snprintf(buf, sizeof buf, "%.1f fps, p50 %.2f ms, busy %.0f%%", s.fps,
                      s.service_p50_ms, s.busy_ratio * 100.0);
        out += "  \"stage:" + detail::dot_escape(s.name) + "\" [shape=box, style=rounded, label=\"" +
               detail::dot_escape(s.name) + "\\n" + std::string(to_string(s.kind)) + ", " +
               std::string(to_string(s.state)) + "\\nin " + std::to_string(s.items_in) +
               ", out " + std::to_string(s.items_out) + "\\n" + buf + "\"];\n";
    }
    for (const auto& c : snap.channels) {
        std::string label = detail::dot_escape(c.name) + "\\n" + c.kind;
        if (c.kind == "broadcaster") {
            label += "\\npublished " + std::to_string(c.pushed);
        } else {
            label += " (" + detail::dot_escape(c.policy) + ", cap " + std::to_string(c.capacity) +
                     ")\\npushed " + std::to_string(c.pushed) + ", popped " +
                     std::to_string(c.popped) + ", dropped " + std::to_string(c.dropped) +
                     ", held " + std::to_string(c.size);
            if (c.has_age && c.age_count > 0) {
                std::snprintf(buf, sizeof buf, "\\nage p50 %.1f ms, p99 %.1f ms", c.age_p50_ms,
                              c.age_p99_ms);
                label += buf;
            }
        }
        out += "  \"channel:" + detail::dot_escape(c.name) + "\" [shape=" +
               (c.kind == "broadcaster" ? "diamond" : "ellipse") + ", label=\"" + label + "\"];\n";
        if (!c.parent.empty()) {
            out += "  \"channel:" + detail::dot_escape(c.parent) + "\" -> \"channel:" +
                   detail::dot_escape(c.name) + "\";\n";
        }
    }
    for (const auto& s : snap.stages) {
        for (const auto& in : s.inputs) {
            out += "  \"channel:" + detail::dot_escape(in) + "\" -> \"stage:" +
                   detail::dot_escape(s.name) + "\";\n";
        }
        for (const auto& o : s.outputs) {
            out += "  \"stage:" + detail::dot_escape(s.name) + "\" -> \"channel:" +
                   detail::dot_escape(o) + "\";\n";
        }
    }
    out += "}\n";
    return out;
}

} // namespace framepipe
