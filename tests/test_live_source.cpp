// tests/test_live_source.cpp - framepipe::live_source: the state machine in virtual time (a fake
// backend scripted connection by connection, a virtual clock that the backend's reads and the
// source's backoff sleeps move forward; no sleeps, no real time), then the threaded mode with
// backends that ignore their timeouts.

#include <framepipe/latest_slot.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using framepipe::live_state;
using framepipe::open_result;
using framepipe::read_result;
using clock_type = std::chrono::steady_clock;
using ns = std::chrono::nanoseconds;

namespace {

// --- Virtual time --------------------------------------------------------------------------------

// The test's world: virtual now, when the test wants the source stopped, and a log.
struct world {
    clock_type::time_point now = clock_type::time_point{} + 24h;
    std::optional<clock_type::time_point> stop_at;
    std::stop_source stopper;
    std::vector<ns> sleeps;           // every backoff the source slept, in order
    std::vector<live_state> states;   // every state it went through, in order
    int opens = 0;
    int closes = 0;
    bool stop_in_close = false; // a close() that takes the source's stop with it

    // Moves time to `t`, or to stop_at (requesting the stop) if that comes first. False when
    // the stop came first.
    bool advance_to(clock_type::time_point t) {
        if (stop_at && *stop_at <= t) {
            now = std::max(now, *stop_at);
            stopper.request_stop();
            return false;
        }
        now = std::max(now, t);
        return true;
    }
};

class virtual_time {
public:
    explicit virtual_time(std::shared_ptr<world> w) : w_(std::move(w)) {}
    [[nodiscard]] clock_type::time_point now() const noexcept { return w_->now; }
    bool sleep_until(clock_type::time_point t, const std::stop_token& stop) {
        w_->sleeps.push_back(t - w_->now);
        return w_->advance_to(t) && !stop.stop_requested();
    }

private:
    std::shared_ptr<world> w_;
};

// One connection's script, in virtual time from the moment open() is called.
struct connection {
    bool opens = true;             // false: open fails
    ns open_takes = 10ms;          // how long open() takes (up to its timeout)
    int frames = 0;                // frames it delivers, one every `period`, the first at first_after
    ns first_after = 40ms;
    ns period = 33ms;
    enum class then { error, end, silence } after = then::error; // once its frames are out
    std::string error = "connection reset by peer";
};

// A backend that plays connection i of the script on its i-th open (the last one repeats).
struct scripted {
    using frame_type = int;
    std::shared_ptr<world> w;
    std::vector<connection> script;
    std::size_t at = 0; // which connection this backend plays
    int sent = 0;
    clock_type::time_point opened{};

    open_result open(std::stop_token stop, ns timeout) {
        ++w->opens;
        const connection& c = script[std::min(at, script.size() - 1)];
        const auto t = w->now + std::min(c.open_takes, timeout);
        if (!w->advance_to(t) || stop.stop_requested()) {
            return open_result::failure("stopped");
        }
        if (!c.opens || c.open_takes > timeout) {
            return open_result::failure(c.opens ? "open timed out" : "connection refused");
        }
        opened = w->now;
        return open_result::success();
    }

    read_result<int> read(std::stop_token stop, ns timeout) {
        const connection& c = script[std::min(at, script.size() - 1)];
        const auto limit = w->now + timeout;
        if (sent < c.frames) {
            const auto next = opened + c.first_after + c.period * sent;
            if (next <= limit) {
                if (!w->advance_to(std::max(next, w->now)) || stop.stop_requested()) {
                    return read_result<int>::timed_out();
                }
                return read_result<int>::got(sent++);
            }
        } else if (c.after != connection::then::silence) {
            const auto last = opened + c.first_after + c.period * std::max(0, c.frames - 1);
            const auto when = std::max(last + c.period, w->now);
            if (when <= limit) {
                if (!w->advance_to(when) || stop.stop_requested()) {
                    return read_result<int>::timed_out();
                }
                return c.after == connection::then::end ? read_result<int>::ended()
                                                        : read_result<int>::failed(c.error);
            }
        }
        (void)w->advance_to(limit);
        return read_result<int>::timed_out();
    }

    void close() noexcept {
        ++w->closes;
        if (w->stop_in_close) {
            w->stopper.request_stop();
        }
    }
};

using source_t = framepipe::live_source<scripted, virtual_time>;
using item = framepipe::stamped<int>;

// Collects what a source emits.
struct collector {
    std::vector<item> got;
    framepipe::push_status push(item v) {
        got.push_back(std::move(v));
        return framepipe::push_status::ok;
    }
    void close() {}
};

// A source over `script` in the world `w`, recording its states there.
std::unique_ptr<source_t> make_source(const std::shared_ptr<world>& w,
                                      std::vector<connection> script,
                                      framepipe::live_options options) {
    auto next = std::make_shared<std::size_t>(0);
    auto src = std::make_unique<source_t>(
        [w, script, next] {
            return scripted{w, script, (*next)++, 0, {}};
        },
        options, virtual_time(w));
    src->on_state_change([w](live_state, live_state to) { w->states.push_back(to); });
    return src;
}

// Options with exact backoff (no jitter) unless a test says otherwise.
framepipe::live_options exact() {
    framepipe::live_options o;
    o.open_timeout = 1s;
    o.first_frame_timeout = 1s;
    o.stall_timeout = 500ms;
    o.backoff = {.initial = 100ms, .max = 1600ms, .multiplier = 2.0, .jitter = 0.0,
                 .reset_after = 2s};
    o.seed = 42;
    return o;
}

bool went_through(const world& w, std::initializer_list<live_state> sequence) {
    auto it = w.states.begin();
    for (const live_state s : sequence) {
        it = std::find(it, w.states.end(), s);
        if (it == w.states.end()) {
            return false;
        }
        ++it;
    }
    return true;
}

} // namespace

// --- The state machine, in virtual time ------------------------------------------------------------

TEST_CASE("live_source: a dropped connection reconnects after the backoff; epochs tell them apart") {
    auto w = std::make_shared<world>();
    auto src = make_source(w,
                           {{.frames = 30, .after = connection::then::error},
                            {.frames = 20, .after = connection::then::end}},
                           exact());
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
    REQUIRE(out.got.size() == 50);
    for (std::size_t i = 0; i < out.got.size(); ++i) {
        CHECK(out.got[i].seq == i);                  // source-wide sequence
        CHECK(out.got[i].epoch == (i < 30 ? 1U : 2U)); // which connection
    }
    CHECK(out.got[30].value == 0); // the second connection's first frame
    const auto st = src->stats();
    CHECK(st.connects == 2);
    CHECK(st.reconnects == 1);
    CHECK(st.read_errors == 1);
    CHECK(st.ends == 1);
    CHECK(st.frames == 50);
    CHECK(st.epoch == 2);
    CHECK(st.last_error == "connection reset by peer");
    REQUIRE(w->sleeps.size() == 1);
    CHECK(w->sleeps[0] == 100ms); // the first backoff: initial, exactly (no jitter)
    CHECK(went_through(*w, {live_state::connecting, live_state::streaming, live_state::backoff,
                            live_state::connecting, live_state::streaming, live_state::ended}));
    CHECK(st.state_changes == w->states.size());
    CHECK(w->opens == w->closes); // every connection was closed
}

TEST_CASE("live_source: a connection that goes quiet is stalled within stall_timeout, then reconnected") {
    auto w = std::make_shared<world>();
    auto src = make_source(w,
                           {{.frames = 10, .after = connection::then::silence},
                            {.frames = 5, .after = connection::then::end}},
                           exact());
    collector out;
    clock_type::time_point stalled_at{};
    src->on_state_change([&, w](live_state, live_state to) {
        w->states.push_back(to);
        if (to == live_state::stalled) {
            stalled_at = w->now;
        }
    });
    CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
    const auto st = src->stats();
    CHECK(st.stalls == 1);
    CHECK(st.reconnects == 1);
    CHECK(out.got.size() == 15);
    CHECK(went_through(*w, {live_state::streaming, live_state::stalled, live_state::backoff,
                            live_state::connecting, live_state::streaming}));
    // The 10th frame came at open + 40 ms + 9 * 33 ms; the stall is declared stall_timeout later.
    const auto first_open_done = clock_type::time_point{} + 24h + 10ms;
    CHECK(stalled_at == first_open_done + 40ms + 9 * 33ms + 500ms);
    CHECK_THAT(st.last_error, Catch::Contains("stall_timeout"));
}

TEST_CASE("live_source: a flapping source backs off more each time, up to the cap") {
    auto w = std::make_shared<world>();
    // Every connection gives 3 frames, then fails: never healthy for reset_after.
    std::vector<connection> script(8, {.frames = 3, .after = connection::then::error});
    script.push_back({.frames = 1, .after = connection::then::end});
    auto src = make_source(w, script, exact());
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
    const std::vector<ns> expected{100ms, 200ms, 400ms, 800ms, 1600ms, 1600ms, 1600ms, 1600ms};
    CHECK(w->sleeps == expected);
    CHECK(src->stats().reconnects == 8);
    CHECK(src->stats().current_backoff == 1600ms);
}

TEST_CASE("live_source: a source nobody serves fails after max_attempts, with the last error") {
    auto w = std::make_shared<world>();
    auto options = exact();
    options.max_attempts = 5;
    auto src = make_source(w, {{.opens = false}}, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::failed);
    CHECK(src->state() == live_state::failed);
    const auto st = src->stats();
    CHECK(st.open_failures == 5);
    CHECK(st.connects == 0);
    CHECK(st.attempt == 5);
    CHECK(st.last_error == "connection refused");
    CHECK(w->sleeps == std::vector<ns>{100ms, 200ms, 400ms, 800ms}); // four waits, five tries
    CHECK(out.got.empty());
    CHECK(w->opens == 5);
    CHECK(w->closes == 5);
}

TEST_CASE("live_source: an open that takes longer than open_timeout is a failed attempt") {
    auto w = std::make_shared<world>();
    auto options = exact();
    options.max_attempts = 2;
    auto src = make_source(w, {{.open_takes = 5s}}, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::failed);
    CHECK(src->stats().open_failures == 2);
    CHECK(src->stats().last_error == "open timed out");
}

TEST_CASE("live_source: a connection that sends no first frame is a failed attempt") {
    auto w = std::make_shared<world>();
    auto options = exact();
    options.max_attempts = 3;
    auto src = make_source(w, {{.frames = 0, .after = connection::then::silence}}, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::failed);
    const auto st = src->stats();
    CHECK(st.connects == 3);
    CHECK(st.no_first_frame == 3);
    CHECK(st.stalls == 0);
    CHECK_THAT(st.last_error, Catch::Contains("first_frame_timeout"));
}

TEST_CASE("live_source: jitter keeps every backoff within ((1 - jitter) d, d]") {
    for (const double jitter : {0.25, 0.5, 1.0}) {
        auto w = std::make_shared<world>();
        auto options = exact();
        options.backoff.jitter = jitter;
        options.max_attempts = 40;
        options.backoff.max = 10s;
        auto src = make_source(w, {{.opens = false}}, options);
        collector out;
        CHECK(src->run(out, w->stopper.get_token()) == live_state::failed);
        REQUIRE(w->sleeps.size() == 39);
        bool within = true;
        bool varied = false;
        for (std::size_t i = 0; i < w->sleeps.size(); ++i) {
            const double d = std::min(100e6 * std::pow(2.0, static_cast<double>(i)), 10e9);
            const auto s = static_cast<double>(w->sleeps[i].count());
            within = within && s > (1.0 - jitter) * d - 1.0 && s <= d + 1.0;
            varied = varied || s < d - 1.0;
        }
        INFO("jitter " << jitter);
        CHECK(within);
        CHECK(varied); // not always the full delay
    }
}

TEST_CASE("live_source: a healthy period resets the backoff and the attempt count") {
    auto w = std::make_shared<world>();
    auto options = exact();
    options.max_attempts = 3;
    // Two quick failures (attempt 2), then a connection that streams for 3 s (> reset_after),
    // then two more quick failures: the count starts again, so max_attempts 3 is not reached.
    std::vector<connection> script{{.frames = 2},
                                   {.frames = 2},
                                   {.frames = 100, .after = connection::then::error},
                                   {.frames = 2},
                                   {.frames = 1, .after = connection::then::end}};
    auto src = make_source(w, script, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
    CHECK(w->sleeps == std::vector<ns>{100ms, 200ms, 100ms, 200ms});
}

TEST_CASE("live_source: at the end of input, ended, or with restart_at_end, open again at once") {
    auto w = std::make_shared<world>();
    auto options = exact();
    options.restart_at_end = true;
    w->stop_at = clock_type::time_point{} + 24h + 5s;
    auto src = make_source(w, {{.frames = 10, .after = connection::then::end}}, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::stopped);
    CHECK(src->state() == live_state::stopped);
    const auto st = src->stats();
    CHECK(st.ends >= 10);   // the "file" looped many times in 5 virtual seconds
    CHECK(w->sleeps.empty()); // no backoff between loops
    CHECK(st.epoch == st.connects);
    CHECK(w->opens == w->closes);
}

TEST_CASE("live_source: stop in every state ends the run promptly, closing the connection") {
    struct when {
        const char* name;
        connection conn;
        ns stop_after; // from the start
        live_state during;
    };
    const std::vector<when> cases{
        {"connecting (inside open)", {.open_takes = 900ms}, 500ms, live_state::connecting},
        {"waiting for the first frame", {.frames = 0, .after = connection::then::silence}, 500ms,
         live_state::connecting},
        {"streaming", {.frames = 1000}, 2s, live_state::streaming},
        {"stalled, before the backoff", {.frames = 5, .after = connection::then::silence}, 400ms,
         live_state::streaming},
        {"backoff", {.opens = false}, 50ms + 10ms, live_state::backoff},
        {"stalled (inside the close that follows)", {.frames = 5, .after = connection::then::silence},
         0ns, live_state::stalled},
    };
    for (const auto& c : cases) {
        INFO(c.name);
        auto w = std::make_shared<world>();
        if (c.stop_after > 0ns) {
            w->stop_at = w->now + c.stop_after;
        } else {
            w->stop_in_close = true;
        }
        auto src = make_source(w, {c.conn}, exact());
        collector out;
        CHECK(src->run(out, w->stopper.get_token()) == live_state::stopped);
        CHECK(src->state() == live_state::stopped);
        if (w->stop_at) {
            CHECK(w->now == *w->stop_at); // virtual time did not run past the stop
        }
        CHECK(w->opens == w->closes);
        REQUIRE(w->states.size() >= 2);
        CHECK(w->states[w->states.size() - 2] == c.during);
    }
}

TEST_CASE("live_source: bad options are refused, naming the field") {
    auto w = std::make_shared<world>();
    const auto make = [&](framepipe::live_options o) {
        return source_t([w] { return scripted{w, {{}}, 0, 0, {}}; }, o, virtual_time(w));
    };
    auto o = exact();
    o.stall_timeout = 0ns;
    CHECK_THROWS_WITH(make(o), Catch::Contains("stall_timeout"));
    o = exact();
    o.backoff.jitter = 1.5;
    CHECK_THROWS_WITH(make(o), Catch::Contains("backoff.jitter"));
    o = exact();
    o.backoff.multiplier = 0.5;
    CHECK_THROWS_WITH(make(o), Catch::Contains("backoff.multiplier"));
    o = exact();
    o.backoff.max = 1ms;
    CHECK_THROWS_WITH(make(o), Catch::Contains("backoff.max"));
    CHECK_THROWS_WITH(source_t({}, exact(), virtual_time(w)), Catch::Contains("make"));
}

// --- Threads: never hang, whatever the backend does -------------------------------------------------

namespace {

// A backend that delivers frames until `hang` is set, then blocks in read() ignoring both its
// timeout and its stop token until `release` is set; its late frame must never come out.
struct hanging {
    using frame_type = int;
    struct control {
        std::atomic<bool> hang{false};
        std::atomic<bool> release{false};
        std::atomic<int> hung_calls{0};
        std::atomic<int> returned_late{0};
        std::atomic<int> opens{0};
    };
    std::shared_ptr<control> c;
    int n = 0;

    open_result open(std::stop_token, ns) {
        ++c->opens;
        return open_result::success();
    }
    read_result<int> read(std::stop_token stop, ns timeout) {
        if (c->hang.load()) {
            ++c->hung_calls;
            while (!c->release.load()) {
                std::this_thread::yield(); // deaf to the timeout and the token
            }
            ++c->returned_late;
            return read_result<int>::got(-1); // a late frame: must be discarded
        }
        // A camera at a high rate: a frame now, unless stopped.
        if (stop.stop_requested()) {
            return read_result<int>::timed_out();
        }
        (void)timeout;
        std::this_thread::yield();
        return read_result<int>::got(n++);
    }
    void close() noexcept {}
};

} // namespace

TEST_CASE("live_source: a read that ignores its timeout is abandoned; its late frame is dropped") {
    auto control = std::make_shared<hanging::control>();
    framepipe::live_options o;
    o.stall_timeout = 20ms;
    o.abandon_after = 20ms;
    o.backoff = {.initial = 1ms, .max = 10ms, .multiplier = 2.0, .jitter = 0.0};
    framepipe::live_source<hanging> src([control] { return hanging{control}; }, o);
    framepipe::ring<item> out(1 << 16);
    src.start(out);
    while (src.stats().frames < 100) {
        std::this_thread::yield();
    }
    control->hang = true; // the current connection's next read blocks for good
    // The watchdog abandons the call and a new runner connects again (on a backend that hangs
    // too): wait until at least two calls were abandoned.
    while (src.stats().abandoned < 2) {
        std::this_thread::yield();
    }
    src.stop(); // returns although every backend call is stuck
    CHECK(src.state() == live_state::stopped);
    control->release = true; // the abandoned calls return, late
    while (control->returned_late.load() < control->hung_calls.load()) {
        std::this_thread::yield();
    }
    // Let the abandoned runners see that they were abandoned and exit (they touch `out` never).
    std::vector<int> values;
    std::uint64_t last_epoch = 0;
    bool epochs_in_order = true;
    while (auto v = out.try_pop()) {
        values.push_back(v->value);
        epochs_in_order = epochs_in_order && v->epoch >= last_epoch;
        last_epoch = v->epoch;
    }
    CHECK(std::find(values.begin(), values.end(), -1) == values.end()); // no late frame
    CHECK(epochs_in_order);
    CHECK(control->opens.load() >= 2);
    CHECK_THAT(src.stats().last_error, Catch::Contains("abandoned"));
}

TEST_CASE("live_source: stop returns while an open ignores its timeout and its stop token") {
    struct deaf_open {
        using frame_type = int;
        std::shared_ptr<std::atomic<bool>> release;
        open_result open(std::stop_token, ns) {
            while (!release->load()) {
                std::this_thread::yield();
            }
            return open_result::failure("late");
        }
        read_result<int> read(std::stop_token, ns) { return read_result<int>::timed_out(); }
        void close() noexcept {}
    };
    auto release = std::make_shared<std::atomic<bool>>(false);
    framepipe::live_options o;
    o.abandon_after = 10ms;
    framepipe::live_source<deaf_open> src([release] { return deaf_open{release}; }, o);
    framepipe::latest_slot<item> out;
    src.start(out);
    while (src.state() != live_state::connecting || src.epoch() == 0) {
        std::this_thread::yield();
    }
    src.stop(); // bounded: abandons the runner stuck in open
    CHECK(src.state() == live_state::stopped);
    *release = true;
    CHECK(src.stats().abandoned >= 1);
}

TEST_CASE("live_source: threaded, frames flow into a channel and stop ends a backoff at once") {
    auto w = std::make_shared<world>(); // unused clock; the backend here is real-time
    struct quick {
        using frame_type = int;
        std::shared_ptr<std::atomic<int>> opens;
        int n = 0;
        open_result open(std::stop_token, ns) {
            return ++*opens == 1 ? open_result::success() : open_result::failure("gone");
        }
        read_result<int> read(std::stop_token, ns) {
            if (n == 50) {
                return read_result<int>::failed("dropped");
            }
            return read_result<int>::got(n++);
        }
        void close() noexcept {}
    };
    auto opens = std::make_shared<std::atomic<int>>(0);
    framepipe::live_options o;
    o.backoff = {.initial = std::chrono::hours(1), .max = std::chrono::hours(2)};
    framepipe::live_source<quick> src([opens] { return quick{opens}; }, o);
    framepipe::ring<item> out(64);
    src.start(out);
    while (src.state() != live_state::backoff) { // an hour-long backoff after 50 frames
        std::this_thread::yield();
    }
    CHECK_FALSE(src.wait_for(0ns));
    src.stop(); // wakes the sleep at once
    CHECK(src.wait_for(0ns));
    CHECK(src.state() == live_state::stopped);
    int n = 0;
    bool ordered = true;
    while (auto v = out.try_pop()) {
        ordered = ordered && v->value == n && v->epoch == 1;
        ++n;
    }
    CHECK(n == 50);
    CHECK(ordered);
}
