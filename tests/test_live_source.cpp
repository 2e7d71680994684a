// tests/test_live_source.cpp - framepipe::live_source: the state machine in virtual time (a fake
// backend scripted connection by connection, a virtual clock that the backend's reads and the
// source's backoff sleeps move forward; no sleeps, no real time), then the threaded mode with
// backends that ignore their timeouts, and a runner that stop() abandons with a frame in hand
// (held in its clock's now(), outside any backend call).

#include <atomic>
#include <system_error>

// A test seam (live_source.hpp): counts the runners stop() abandons, which the stats leave out.
inline std::atomic<int> stop_abandons{0};
#define FRAMEPIPE_DETAIL_LIVE_STOP_ABANDON_HOOK() (void)::stop_abandons.fetch_add(1)
// Another (live_source.hpp): while positive, each runner that is about to start uses one, and
// fails as a thread that cannot start does (std::thread throws std::system_error, EAGAIN).
inline std::atomic<int> runner_starts_to_fail{0};
#define FRAMEPIPE_DETAIL_LIVE_RUNNER_START_HOOK() ::fail_runner_start_if_asked()
inline void fail_runner_start_if_asked() {
    for (int n = runner_starts_to_fail.load(); n > 0;) {
        if (runner_starts_to_fail.compare_exchange_weak(n, n - 1)) {
            throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                                    "runner thread");
        }
    }
}

#include <framepipe/broadcaster.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <latch>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

#include "support/test_seam.hpp"
#include "support/thread_state.hpp"
#endif

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
    int stop_on_frame = -1;     // a read of frame n (of a connection) requests the stop too

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
                if (sent == w->stop_on_frame) {
                    w->stopper.request_stop(); // the frame comes back all the same
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

TEST_CASE("live_source: a source that takes over a channel with drop_older_epochs starts from "
          "the old one's epoch (epoch_base)") {
    framepipe::latest_slot<framepipe::stamped<int>> slot({.drop_older_epochs = true});
    const auto ended = [&slot](std::vector<connection> script, framepipe::live_options o) {
        auto w = std::make_shared<world>();
        auto src = make_source(w, std::move(script), o);
        CHECK(src->run(slot, w->stopper.get_token()) == live_state::ended);
        return src->epoch();
    };
    const auto last = ended({{.frames = 5, .after = connection::then::error},
                             {.frames = 5, .after = connection::then::end}},
                            exact());
    CHECK(last == 2);
    // A camera made anew counts from epoch 1 again: each of its frames is older than the slot's
    // last one, and refused (review: a replacement camera starved its detector silently).
    CHECK(ended({{.frames = 3, .after = connection::then::end}}, exact()) == 1);
    CHECK(slot.stats().rejected == 3);
    auto o = exact();
    o.epoch_base = last;
    CHECK(ended({{.frames = 3, .after = connection::then::end}}, o) == 3);
    CHECK(slot.stats().rejected == 3);
    const auto v = slot.try_pop();
    REQUIRE(v);
    CHECK(v->epoch == 3);
    CHECK(v->value == 2);
    o.epoch_base = std::uint64_t{1} << 63;
    CHECK_THROWS_WITH(make_source(std::make_shared<world>(), {}, o),
                      Catch::Contains("epoch_base"));
}

namespace {
// A backend whose destructor may throw: a live_source would destroy it in noexcept stop().
struct throwing_teardown : scripted {
    ~throwing_teardown() noexcept(false) {} // NOLINT: the point of the type
};
static_assert(!framepipe::live_backend<throwing_teardown>,
              "a backend whose destructor may throw is refused at compile time");

// A frame that can be moved but not assigned (a const member): the rings, the slot and the
// pipeline take one, and so must a live source.
struct fixed_frame {
    const int v;
};
struct fixed_backend {
    using frame_type = fixed_frame;
    int next = 0;
    framepipe::open_result open(std::stop_token, ns) { return framepipe::open_result::success(); }
    framepipe::read_result<fixed_frame> read(std::stop_token, ns) {
        if (next == 3) {
            return framepipe::read_result<fixed_frame>::ended();
        }
        return framepipe::read_result<fixed_frame>::got(fixed_frame{next++});
    }
    void close() {}
};
} // namespace

TEST_CASE("live_source: a frame type that cannot be assigned is streamed") {
    framepipe::live_source<fixed_backend> src([] { return fixed_backend{}; });
    framepipe::ring<framepipe::stamped<fixed_frame>> out(8);
    std::stop_source never;
    CHECK(src.run(out, never.get_token()) == live_state::ended);
    for (int i = 0; i < 3; ++i) {
        const auto f = out.try_pop();
        REQUIRE(f);
        CHECK(f->value.v == i);
    }
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
        bool varied_at_cap = false; // among attempts whose uncapped delay is hours or more
        for (std::size_t i = 0; i < w->sleeps.size(); ++i) {
            const double d = std::min(100e6 * std::pow(2.0, static_cast<double>(i)), 10e9);
            const auto s = static_cast<double>(w->sleeps[i].count());
            within = within && s > (1.0 - jitter) * d - 1.0 && s <= d + 1.0;
            varied = varied || s < d - 1.0;
            varied_at_cap = varied_at_cap || (i >= 20 && s < 10e9 - 1.0);
        }
        INFO("jitter " << jitter);
        CHECK(within);
        CHECK(varied); // not always the full delay
        // The cap applies before the jitter: at the cap the delays still spread below max (a
        // jitter applied to the uncapped delay would land above max, and be cut to it, every time).
        CHECK(varied_at_cap);
    }
}

TEST_CASE("live_source: a frame that carries its capture time keeps it; one that does not gets its read's time") {
    // Frames of stamped<int>, each captured 5 s before the read that returns it, and one whose
    // capture time is time_point::max() ("unknown"): the emitted item's time is the frame's own,
    // and the read's time for the unknown one.
    using frame = framepipe::stamped<int>;
    struct captured_backend {
        using frame_type = frame;
        std::shared_ptr<world> w;
        int n = 0;
        open_result open(std::stop_token, ns) { return open_result::success(); }
        read_result<frame> read(std::stop_token, ns) {
            if (n == 4) {
                return read_result<frame>::ended();
            }
            (void)w->advance_to(w->now + 10ms);
            const auto captured = n == 3 ? clock_type::time_point::max() : w->now - 5s;
            return read_result<frame>::got(framepipe::stamp(n++, 0, captured));
        }
        void close() noexcept {}
    };
    struct frames_out {
        std::vector<framepipe::stamped<frame>> got;
        framepipe::push_status push(framepipe::stamped<frame> v) {
            got.push_back(std::move(v));
            return framepipe::push_status::ok;
        }
        void close() {}
    };
    auto w = std::make_shared<world>();
    framepipe::live_source<captured_backend, virtual_time> src(
        [w] { return captured_backend{w}; }, exact(), virtual_time(w));
    frames_out out;
    CHECK(src.run(out, w->stopper.get_token()) == live_state::ended);
    REQUIRE(out.got.size() == 4);
    const auto first_read = clock_type::time_point{} + 24h + 10ms;
    for (int i = 0; i < 3; ++i) {
        INFO("frame " << i);
        CHECK(out.got[static_cast<std::size_t>(i)].captured ==
              first_read + i * 10ms - 5s); // the frame's own
    }
    CHECK(out.got[3].captured == first_read + 30ms); // unknown: when its read returned
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

TEST_CASE("live_source: with restart_at_end, an end before the first frame is a failed attempt") {
    // An input that ends as soon as it opens (an empty file, a server that closes at once) was
    // opened again at once, for ever: a busy loop that max_attempts never ended.
    auto w = std::make_shared<world>();
    auto options = exact();
    options.restart_at_end = true;
    options.max_attempts = 3;
    w->stop_at = clock_type::time_point{} + 24h + 60s; // the old loop: stopped, not failed
    auto src = make_source(w, {{.frames = 0, .after = connection::then::end}}, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::failed);
    const auto st = src->stats();
    CHECK(w->opens == 3);
    CHECK(st.ends == 3);
    CHECK(w->sleeps == std::vector<ns>{100ms, 200ms});
    CHECK(st.last_error.find("ended before its first frame") != std::string::npos);
    REQUIRE(src->failure());
    CHECK(src->failure()->find("3 attempts") != std::string::npos);
}

TEST_CASE("live_source: with restart_at_end, an input that ended after a frame opens at once") {
    // One frame, then the end: a one-frame file looping. No backoff, no attempt counted.
    auto w = std::make_shared<world>();
    auto options = exact();
    options.restart_at_end = true;
    options.max_attempts = 2;
    w->stop_at = clock_type::time_point{} + 24h + 2s;
    auto src = make_source(w, {{.frames = 1, .after = connection::then::end}}, options);
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::stopped);
    CHECK(w->sleeps.empty());
    CHECK(src->stats().ends >= 3);
    CHECK(out.got.size() >= 3);
}

TEST_CASE("live_source: a frame read after the stop request is counted as dropped_at_stop") {
    auto w = std::make_shared<world>();
    w->stop_on_frame = 3; // the read of frame 3 requests the stop and returns the frame
    auto src = make_source(w, {{.frames = 10, .after = connection::then::end}}, exact());
    collector out;
    CHECK(src->run(out, w->stopper.get_token()) == live_state::stopped);
    const auto st = src->stats();
    CHECK(out.got.size() == 3);
    CHECK(st.frames == 3);
    CHECK(st.dropped_at_stop == 1);
    const auto status = src->status();
    const auto it = std::find_if(status.counters.begin(), status.counters.end(),
                                 [](const auto& c) { return c.name == "dropped_at_stop"; });
    REQUIRE(it != status.counters.end());
    CHECK(it->value == 1.0);
}

TEST_CASE("live_source: time blocked in a push does not count against stall_timeout") {
    // A consumer that takes 600 ms per frame (virtual time, advanced in the push) behind a camera
    // with a frame ready at every read, stall_timeout 500 ms. The stall clock used to run from
    // the read, so the time the push blocked made a healthy camera stalled after each frame:
    // reconnects, then failed after max_attempts.
    struct slow_consumer {
        std::shared_ptr<world> w;
        std::vector<item> got;
        framepipe::push_status push(item v) {
            got.push_back(std::move(v));
            w->now += 600ms; // blocked for room this long
            return framepipe::push_status::ok;
        }
        void close() {}
    };
    auto w = std::make_shared<world>();
    auto options = exact();
    options.max_attempts = 3;
    auto src = make_source(w, {{.frames = 10, .after = connection::then::end}}, options);
    slow_consumer out{w, {}};
    CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
    const auto st = src->stats();
    CHECK(st.stalls == 0);
    CHECK(st.connects == 1);
    CHECK(out.got.size() == 10);
    CHECK(st.frames == 10);
}

TEST_CASE("live_source: fps is the frames pushed over the last 2 s, in stats and status") {
    // A pipeline's stage for a live source showed 0 fps while it streamed: the source pushes on
    // threads of its own, which the stage's meters do not see.
    struct paced_consumer { // takes a frame every 100 ms of virtual time: 10 frames a second
        std::shared_ptr<world> w;
        framepipe::push_status push(item) {
            w->now += 100ms;
            return framepipe::push_status::ok;
        }
        void close() {}
    };
    auto w = std::make_shared<world>();
    auto src = make_source(w, {{.frames = 30, .after = connection::then::end}}, exact());
    CHECK(src->stats().fps == 0);
    paced_consumer out{w};
    CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
    const auto st = src->stats();
    CHECK(st.frames == 30);
    CHECK(st.fps == Approx(10.0)); // 20 frames in the 2 s that ended with the last
    const auto status = src->status();
    const auto it = std::find_if(status.gauges.begin(), status.gauges.end(),
                                 [](const auto& g) { return g.name == "fps"; });
    REQUIRE(it != status.gauges.end());
    CHECK(it->value == st.fps);
    w->now += 3s; // nothing since: the window is empty
    CHECK(src->stats().fps == 0);
}

TEST_CASE("live_source: a read that returns status frame without a frame is a read error") {
    // It used to dereference the empty optional.
    struct empty_frame {
        using frame_type = int;
        int reads = 0;
        open_result open(std::stop_token, ns) { return open_result::success(); }
        read_result<int> read(std::stop_token, ns) {
            if (++reads == 1) {
                return {framepipe::read_status::frame, std::nullopt, {}};
            }
            return read_result<int>::ended();
        }
        void close() noexcept {}
    };
    framepipe::live_options o;
    o.max_attempts = 1;
    framepipe::live_source<empty_frame> src([] { return empty_frame{}; }, o);
    collector out;
    CHECK(src.run(out, std::stop_token{}) == live_state::failed);
    const auto st = src.stats();
    CHECK(st.read_errors == 1);
    CHECK(st.frames == 0);
    CHECK(out.got.empty());
    CHECK_THAT(st.last_error, Catch::Contains("without a frame"));
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
        ns open_takes{0}; // how long open() takes (set before start)

        // Lets every hung read return (late), and waits until they have.
        void let_hung_calls_return() {
            release = true;
            while (returned_late.load() < hung_calls.load()) {
                std::this_thread::yield();
            }
        }
    };
    std::shared_ptr<control> c;
    int n = 0;

    open_result open(std::stop_token, ns) {
        ++c->opens;
        const auto until = clock_type::now() + c->open_takes;
        while (clock_type::now() < until) {
            std::this_thread::yield();
        }
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

// A watchdog that abandons a hung read within tens of milliseconds, and a short backoff.
framepipe::live_options quick_abandon() {
    framepipe::live_options o;
    o.stall_timeout = 20ms;
    o.abandon_after = 20ms;
    o.backoff = {.initial = 1ms, .max = 10ms, .multiplier = 2.0, .jitter = 0.0};
    return o;
}

} // namespace

TEST_CASE("live_source: a read that ignores its timeout is abandoned; its late frame is dropped") {
    auto control = std::make_shared<hanging::control>();
    framepipe::live_options o = quick_abandon();
    o.first_frame_timeout = 20ms; // the new runner's first read hangs too
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
    control->let_hung_calls_return(); // the abandoned calls return, late
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
    // Each late frame is counted, as its runner sees it was abandoned (they were counted
    // nowhere: review), once.
    const auto late = static_cast<std::uint64_t>(control->returned_late.load());
    CHECK(late >= 2);
    while (src.stats().abandoned_frames < late) {
        std::this_thread::yield();
    }
    CHECK(src.stats().abandoned_frames == late);
    CHECK(src.stats().frames == static_cast<std::uint64_t>(values.size()));
}

TEST_CASE("live_source: a fresh runner whose thread cannot start fails the source") {
    // The watchdog abandons a read that ignores its timeout, and its new runner's thread cannot
    // start. That threw out of the watchdog's thread: std::terminate. Now the source fails.
    auto control = std::make_shared<hanging::control>();
    framepipe::live_source<hanging> src([control] { return hanging{control}; }, quick_abandon());
    framepipe::ring<item> out(1 << 16);
    src.start(out);
    while (src.stats().frames < 10) {
        std::this_thread::yield();
    }
    runner_starts_to_fail.store(1);
    control->hang = true; // the current connection's next read blocks for good
    CHECK(src.wait(std::stop_token{})); // the source ends: failed
    CHECK(src.state() == live_state::failed);
    CHECK(runner_starts_to_fail.load() == 0); // the relaunch was tried, and failed
    CHECK(src.stats().abandoned == 1);
    CHECK_FALSE(src.stats().connected_since);
    CHECK_THAT(src.stats().last_error, Catch::Contains("cannot start a new runner"));
    src.stop(); // returns: no runner thread to join
    CHECK(src.state() == live_state::failed);
    control->let_hung_calls_return(); // the abandoned call returns, and its runner leaves
    while (auto v = out.try_pop()) {
        CHECK(v->value != -1); // no late frame
    }
    runner_starts_to_fail.store(0);
}

TEST_CASE("live_source: start() whose runner thread cannot start throws, and the source is stopped") {
    auto control = std::make_shared<hanging::control>();
    framepipe::live_source<hanging> src([control] { return hanging{control}; });
    framepipe::ring<item> out(16);
    runner_starts_to_fail.store(1);
    CHECK_THROWS_AS(src.start(out), std::system_error);
    CHECK(runner_starts_to_fail.load() == 0);
    CHECK(src.state() == live_state::stopped);
    CHECK(src.wait(std::stop_token{})); // a final state: returns at once
    src.stop();
    CHECK(src.state() == live_state::stopped);
    CHECK(control->opens.load() == 0);
    runner_starts_to_fail.store(0);
}

TEST_CASE("live_source: a push that throws closes the connection and fails the source") {
    // It used to escape the runner thread (std::terminate) or leave run() with the state
    // streaming and the connection open.
    struct throwing_output {
        int pushes = 0;
        framepipe::push_status push(item) {
            if (++pushes == 3) {
                throw std::runtime_error("out of frame buffers");
            }
            return framepipe::push_status::ok;
        }
        void close() {}
    };
    auto w = std::make_shared<world>();
    auto src = make_source(w, {{.frames = 10, .after = connection::then::end}}, exact());
    throwing_output out;
    SECTION("run() rethrows") {
        CHECK_THROWS_WITH(src->run(out, w->stopper.get_token()), "out of frame buffers");
    }
    SECTION("start(): the runner thread survives it") {
        src->start(out);
        CHECK(src->wait(std::stop_token{}));
        src->stop(); // joins the runner: what it did is visible here
    }
    CHECK(src->state() == live_state::failed);
    CHECK_THAT(src->stats().last_error, Catch::Contains("out of frame buffers"));
    CHECK_FALSE(src->stats().connected_since);
    CHECK(out.pushes == 3);
    CHECK(src->stats().frames == 2); // the push that threw did not count a frame
    CHECK(w->opens == 1);
    CHECK(w->closes == 1);
    REQUIRE_FALSE(w->states.empty());
    CHECK(w->states.back() == live_state::failed);
}

TEST_CASE("live_source: a read after an hour-long open is abandoned at its own deadline") {
    // The watchdog used to sleep until the last call it had seen was due: after watching an
    // open with a timeout of an hour, it slept for that hour while the first read hung. (This
    // test then hangs until the per-test watchdog fails it.)
    auto control = std::make_shared<hanging::control>();
    control->hang = true;        // the first read blocks for good
    control->open_takes = 100ms; // a slow connect, so that the watchdog sees it in flight (how
                                 // long it takes changes no outcome)
    framepipe::live_options o;
    o.open_timeout = std::chrono::hours(1);
    o.first_frame_timeout = 20ms;
    o.abandon_after = 20ms;
    o.backoff = {.initial = std::chrono::hours(1), .max = std::chrono::hours(1)};
    framepipe::live_source<hanging> src([control] { return hanging{control}; }, o);
    framepipe::ring<item> out(64);
    src.start(out);
    while (src.stats().abandoned == 0) {
        std::this_thread::yield();
    }
    src.stop(); // ends the new runner's hour of backoff
    CHECK(src.state() == live_state::stopped);
    control->release = true;
    CHECK(control->opens.load() == 1);
    CHECK(control->hung_calls.load() == 1);
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
    const int abandons = stop_abandons.load();
    src.stop(); // bounded: abandons the runner stuck in open
    CHECK(src.state() == live_state::stopped);
    *release = true;
    CHECK(stop_abandons.load() == abandons + 1);
    // stop()'s abandonment is not the backend's overrun: neither counted nor an error. (It used
    // to be both.)
    CHECK(src.stats().abandoned == 0);
    CHECK(src.stats().last_error.empty());
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
    // The runner ended with the stop: stop() did not have to abandon it (as it does a runner
    // still busy abandon_after later, which a backoff sleep deaf to the stop would be).
    CHECK(src.stats().abandoned == 0);
    int n = 0;
    bool ordered = true;
    while (auto v = out.try_pop()) {
        ordered = ordered && v->value == n && v->epoch == 1;
        ++n;
    }
    CHECK(n == 50);
    CHECK(ordered);
}

// --- Regressions: stop() twice at once, abandoned runners, long timeouts, stop before start -----

namespace {

// A camera at a high rate that honours its stop token: a frame per read.
// A read that hands out the next number at once (after a yield), until the stop.
read_result<int> next_number(const std::stop_token& stop, int& n) {
    if (stop.stop_requested()) {
        return read_result<int>::timed_out();
    }
    std::this_thread::yield();
    return read_result<int>::got(n++);
}

struct rapid {
    using frame_type = int;
    std::shared_ptr<std::atomic<int>> made; // backends the factory built
    int n = 0;
    open_result open(std::stop_token, ns) { return open_result::success(); }
    read_result<int> read(std::stop_token stop, ns) { return next_number(stop, n); }
    void close() noexcept {}
};

framepipe::live_source<rapid> rapid_source(const std::shared_ptr<std::atomic<int>>& made,
                                           framepipe::live_options o = {}) {
    return framepipe::live_source<rapid>(
        [made] {
            ++*made;
            return rapid{made};
        },
        o);
}

// The states a source went through, recorded from whichever thread changes them.
struct state_log {
    std::mutex mu;
    std::vector<live_state> states;
    void operator()(live_state, live_state to) {
        const std::lock_guard<std::mutex> lock(mu);
        states.push_back(to);
    }
    std::vector<live_state> get() {
        const std::lock_guard<std::mutex> lock(mu);
        return states;
    }
};

// A backend whose first instance (or every one, with all_refused) fails to open and whose first
// instance's close() ignores everything until `release`: a runner stuck there is abandoned.
struct stuck_close {
    using frame_type = int;
    struct control {
        bool all_refused = false;
        std::atomic<int> made{0};
        std::atomic<bool> in_close{false};
        std::atomic<bool> release{false};
    };
    std::shared_ptr<control> c;
    int index = 0;
    int n = 0;
    open_result open(std::stop_token, ns) {
        return index == 0 || c->all_refused ? open_result::failure("refused")
                                            : open_result::success();
    }
    read_result<int> read(std::stop_token stop, ns) { return next_number(stop, n); }
    void close() noexcept {
        if (index == 0) {
            c->in_close = true;
            while (!c->release.load()) {
                std::this_thread::yield(); // deaf to the stop token and the timeout
            }
        }
    }
};

// A started source of stuck_close backends whose state changes go to `log`; `alive` is held by
// its backend factory (see wait_until_gone).
std::unique_ptr<framepipe::live_source<stuck_close>> start_stuck_close(
    const std::shared_ptr<stuck_close::control>& control, const std::shared_ptr<int>& alive,
    const framepipe::live_options& o, const std::shared_ptr<state_log>& log,
    framepipe::ring<item>& out) {
    auto src = std::make_unique<framepipe::live_source<stuck_close>>(
        [control, alive] { return stuck_close{control, control->made++}; }, o);
    src->on_state_change([log](live_state from, live_state to) { (*log)(from, to); });
    src->start(out);
    return src;
}

// Waits until every thread of a source (abandoned runners included) has let its shared state
// go: `alive` is held by the source's backend factory, which that state holds.
void wait_until_gone(const std::weak_ptr<int>& alive) {
    while (!alive.expired()) {
        std::this_thread::yield();
    }
}

// Fails this thread's k-th next allocation (0: the next one) with std::bad_alloc; -1: none.
thread_local long t_fail_allocation = -1;

void* allocate(std::size_t n) {
    if (t_fail_allocation >= 0 && t_fail_allocation-- == 0) {
        throw std::bad_alloc();
    }
    if (void* p = std::malloc(n == 0 ? 1 : n)) {
        return p;
    }
    throw std::bad_alloc();
}

// Out of line: where GCC inlines operator delete into code that called operator new, it would
// warn about a free() of memory from operator new (-Wmismatched-new-delete).
[[gnu::noinline]] void release(void* p) noexcept { std::free(p); }

} // namespace

// The replaced allocation functions (every form but the aligned ones, which keep theirs), for
// "a start() that throws". Nothing else in this program arms t_fail_allocation.
void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }

TEST_CASE("live_source: stop() from two threads at once returns in both") {
    // Both used to join the watchdog thread: the second join of one thread never returned.
    for (int round = 0; round < 20; ++round) {
        INFO("round " << round);
        auto made = std::make_shared<std::atomic<int>>(0);
        auto src = rapid_source(made);
        framepipe::ring<item> out(64); // full soon: the runner drops frames, never blocks
        src.start(out);
        while (src.stats().frames == 0) {
            std::this_thread::yield();
        }
        std::latch go(2);
        std::thread a([&] {
            go.arrive_and_wait();
            src.stop();
        });
        std::thread b([&] {
            go.arrive_and_wait();
            src.stop();
        });
        a.join();
        b.join();
        CHECK(src.state() == live_state::stopped);
        src.stop(); // and a third, afterwards
        CHECK(src.state() == live_state::stopped);
    }
}

TEST_CASE("live_source: a runner abandoned inside close() changes nothing when close returns") {
    // The first connection is refused and its close() hangs: the watchdog abandons that runner
    // and a new one connects and streams. When the old close() returns at last, the old runner
    // used to count its failed attempt (the 2nd of max_attempts 2) and set the state failed
    // while the new runner streamed.
    auto control = std::make_shared<stuck_close::control>();
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 20ms;
    o.max_attempts = 2;
    o.backoff = {.initial = 1ms, .max = 1ms, .jitter = 0.0, .reset_after = std::chrono::hours(1)};
    auto log = std::make_shared<state_log>();
    framepipe::ring<item> out(64);
    auto src = start_stuck_close(control, alive, o, log, out);
    while (src->stats().frames == 0) { // the second runner streams
        std::this_thread::yield();
    }
    CHECK(control->in_close.load());
    CHECK(src->stats().abandoned == 1);
    control->release = true; // the abandoned runner's close() returns
    alive.reset();
    src->stop();
    const auto st = src->stats();
    src.reset();
    wait_until_gone(alive_weak); // the abandoned runner has finished too
    const auto states = log->get();
    CHECK(std::find(states.begin(), states.end(), live_state::failed) == states.end());
    REQUIRE_FALSE(states.empty());
    CHECK(states.back() == live_state::stopped);
    CHECK(std::count(states.begin(), states.end(), live_state::stopped) == 1);
    CHECK(st.attempt == 1); // the new runner's backoff only
    CHECK_THAT(st.last_error, Catch::Contains("abandoned"));
}

namespace {

// A backend whose first instance fails to open and whose first instance's destructor ignores
// everything until `release` (a library's teardown waiting for a peer that is gone). The moved-
// from husk of a move has no control and returns at once.
struct stuck_destructor {
    using frame_type = int;
    struct control {
        std::atomic<int> made{0};
        std::atomic<bool> in_destructor{false};
        std::atomic<bool> release{false};
    };
    std::shared_ptr<control> c;
    int index = 0;
    int n = 0;
    stuck_destructor(std::shared_ptr<control> ctl, int i) : c(std::move(ctl)), index(i) {}
    stuck_destructor(stuck_destructor&& o) noexcept : c(std::move(o.c)), index(o.index), n(o.n) {}
    stuck_destructor& operator=(stuck_destructor&&) = delete;
    ~stuck_destructor() {
        if (c && index == 0) {
            c->in_destructor = true;
            while (!c->release.load()) {
                std::this_thread::yield(); // deaf to everything
            }
        }
    }
    open_result open(std::stop_token, ns) {
        return index == 0 ? open_result::failure("refused") : open_result::success();
    }
    read_result<int> read(std::stop_token stop, ns) { return next_number(stop, n); }
    void close() noexcept {}
};

} // namespace

TEST_CASE("live_source: a backend whose destructor hangs is abandoned as a close() that hangs; "
          "the source reconnects") {
    // The destructor ran after the watched close(), outside any watched call: a runner stuck in
    // it was never abandoned, and the source stayed in its attempt for good.
    auto control = std::make_shared<stuck_destructor::control>();
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 20ms;
    o.backoff = {.initial = 1ms, .max = 1ms, .jitter = 0.0, .reset_after = std::chrono::hours(1)};
    framepipe::ring<item> out(64);
    auto src = std::make_unique<framepipe::live_source<stuck_destructor>>(
        [control, alive] { return stuck_destructor(control, control->made++); }, o);
    src->start(out);
    while (src->stats().frames == 0) { // the second backend streams
        std::this_thread::yield();
    }
    CHECK(control->in_destructor.load());
    CHECK(src->stats().abandoned == 1);
    CHECK(control->made.load() >= 2);
    control->release = true; // the abandoned runner's destructor returns
    alive.reset();
    src->stop();
    CHECK(src->state() == live_state::stopped);
    src.reset();
    wait_until_gone(alive_weak); // the abandoned runner has finished too
}

TEST_CASE("live_source: a runner that stop() abandons inside close() leaves the state stopped") {
    // stop() abandons a runner stuck in the close() after a refused open and sets stopped. When
    // that close() returned, the runner used to go on to backoff: the state left stopped.
    auto control = std::make_shared<stuck_close::control>();
    control->all_refused = true;
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 50ms;
    auto log = std::make_shared<state_log>();
    framepipe::ring<item> out(64);
    auto src = start_stuck_close(control, alive, o, log, out);
    while (!control->in_close.load()) {
        std::this_thread::yield();
    }
    src->stop(); // abandons the runner stuck in close()
    CHECK(src->state() == live_state::stopped);
    control->release = true;
    alive.reset();
    src.reset();
    wait_until_gone(alive_weak); // the abandoned runner has finished
    const auto states = log->get();
    REQUIRE_FALSE(states.empty());
    CHECK(states.back() == live_state::stopped);
    CHECK(std::count(states.begin(), states.end(), live_state::stopped) == 1);
}

#if defined(__linux__)
namespace {

// The clock of a live source, real time, with a seam in now() for the runner's thread: a point
// between a read that returned a frame and the push of that frame, outside any backend call
// (where the watchdog does not look), so that only stop() can abandon the runner there.
struct holding_time {
    struct control {
        std::atomic<long> runner{0}; // the thread the seam holds (the backend's reads store it)
        framepipe_test::test_seam seam;
    };
    std::shared_ptr<control> c = std::make_shared<control>();

    [[nodiscard]] clock_type::time_point now() const noexcept {
        if (c->runner.load() == framepipe_test::this_thread_id()) {
            c->seam.run();
        }
        return clock_type::now();
    }
    bool sleep_until(clock_type::time_point t, const std::stop_token& stop) {
        while (clock_type::now() < t && !stop.stop_requested()) {
            std::this_thread::yield();
        }
        return !stop.stop_requested();
    }
};

// Frames at once; after its tenth, arms the clock, so that the runner is held in the now() that
// follows that read, with the frame in hand.
struct arms_clock {
    using frame_type = int;
    std::shared_ptr<holding_time::control> c;
    std::shared_ptr<int> alive; // see wait_until_gone
    int n = 0;
    open_result open(std::stop_token, ns) { return open_result::success(); }
    read_result<int> read(std::stop_token, ns) {
        c->runner = framepipe_test::this_thread_id();
        if (++n == 10) {
            c->seam.arm(0); // held until the test says go
        }
        return read_result<int>::got(n);
    }
    void close() noexcept {}
};

} // namespace

TEST_CASE("live_source: a runner that stop() abandons with a frame in hand never pushes it after stop() returned") {
    // The runner is held after a read returned its frame and before the push (in the clock's
    // now()); stop() waits abandon_after for it, abandons it and returns. Let go, the runner
    // must drop the frame: `out` may be gone once stop() has returned.
    holding_time time;
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 20ms;
    struct guarded_out {
        std::atomic<bool> stopped{false}; // stop() has returned
        std::atomic<int> pushes{0};
        std::atomic<int> late{0}; // pushes after stop() returned
        framepipe::push_status push(item) {
            ++pushes;
            if (stopped.load()) {
                ++late;
            }
            return framepipe::push_status::ok;
        }
        void close() {}
    } out;
    auto src = std::make_unique<framepipe::live_source<arms_clock, holding_time>>(
        [c = time.c, alive] { return arms_clock{c, alive}; }, o, time);
    alive.reset();
    src->start(out);
    while (time.c->seam.reached.load() == 0) {
        std::this_thread::yield();
    }
    const int abandons = stop_abandons.load();
    src->stop(); // the runner is not in a backend call and does not end: abandoned
    out.stopped = true;
    CHECK(src->state() == live_state::stopped);
    CHECK(stop_abandons.load() == abandons + 1);
    CHECK(src->stats().abandoned == 0); // stop()'s abandonment is not counted
    CHECK_FALSE(src->stats().connected_since); // the connection is gone
    time.c->seam.go = true;
    src.reset();
    wait_until_gone(alive_weak); // the abandoned runner has finished
    CHECK(out.pushes.load() == 9); // the frames before the held one
    CHECK(out.late.load() == 0);
}
#endif

TEST_CASE("live_source: timeouts of nanoseconds::max() never run out") {
    constexpr auto forever = ns::max(); // accepted by validation: "no limit"
    SECTION("first_frame_timeout and stall_timeout: a slow stream is not stalled") {
        // opened_at + first_frame_timeout used to overflow: no first frame at once, failed.
        auto w = std::make_shared<world>();
        auto options = exact();
        options.first_frame_timeout = forever;
        options.stall_timeout = forever;
        options.max_attempts = 1;
        auto src = make_source(
            w, {{.frames = 3, .first_after = 100h, .period = 1000h, .after = connection::then::end}},
            options);
        collector out;
        CHECK(src->run(out, w->stopper.get_token()) == live_state::ended);
        const auto st = src->stats();
        CHECK(out.got.size() == 3);
        CHECK(st.no_first_frame == 0);
        CHECK(st.stalls == 0);
    }
    SECTION("backoff: a delay of nanoseconds::max() is waited for, not 1 ns") {
        // The jittered delay used to leave llround's range (and now + delay to overflow).
        auto w = std::make_shared<world>();
        auto options = exact();
        options.backoff.initial = forever;
        options.backoff.max = forever;
        w->stop_at = w->now + 1h;
        auto src = make_source(w, {{.opens = false}}, options);
        collector out;
        CHECK(src->run(out, w->stopper.get_token()) == live_state::stopped);
        CHECK(src->stats().current_backoff == forever);
        REQUIRE(w->sleeps.size() == 1); // one attempt, then a wait the stop ended
        CHECK(w->sleeps[0] == clock_type::time_point::max() - (clock_type::time_point{} + 24h + 10ms));
        CHECK(w->opens == 1);
    }
}

TEST_CASE("live_source: the watchdog never abandons a call whose timeout is nanoseconds::max()") {
    // The watchdog's wake-up, deadline + abandon_after, used to overflow to a time long past:
    // it abandoned the open at once, and the new runner, starting in backoff, failed.
    struct slow_open {
        using frame_type = int;
        std::shared_ptr<std::atomic<int>> opens;
        ns takes;
        int n = 0;
        open_result open(std::stop_token stop, ns) {
            // A slow connect, longer than the watchdog's round between calls (abandon_after),
            // so that the watchdog sees it in flight. How long it takes changes no outcome.
            ++*opens;
            const auto until = clock_type::now() + takes;
            while (clock_type::now() < until && !stop.stop_requested()) {
                std::this_thread::yield();
            }
            return stop.stop_requested() ? open_result::failure("stopped")
                                         : open_result::success();
        }
        read_result<int> read(std::stop_token, ns) {
            return n == 20 ? read_result<int>::ended() : read_result<int>::got(n++);
        }
        void close() noexcept {}
    };
    auto opens = std::make_shared<std::atomic<int>>(0);
    framepipe::live_options o;
    o.open_timeout = ns::max();
    o.abandon_after = 10ms;
    o.max_attempts = 1;
    framepipe::live_source<slow_open> src([opens] { return slow_open{opens, 50ms}; }, o);
    framepipe::ring<item> out(64);
    src.start(out);
    CHECK(src.wait(std::stop_token{})); // a final state, whichever
    CHECK(src.state() == live_state::ended);
    CHECK(src.stats().abandoned == 0);
    CHECK(src.stats().frames == 20);
    CHECK(opens->load() == 1);
}

TEST_CASE("live_source: run() returns the state that state() reports, also after a stop()") {
    // A stop() on another thread sets stopped without waiting for run(). Here it comes while the
    // refused attempt's close() runs: run() used to return failed while the state said stopped.
    struct refused {
        using frame_type = int;
        std::shared_ptr<std::atomic<int>> phase;
        open_result open(std::stop_token, ns) { return open_result::failure("refused"); }
        read_result<int> read(std::stop_token, ns) { return read_result<int>::timed_out(); }
        void close() noexcept {
            phase->store(1);
            while (phase->load() != 2) { // until stop() has returned on the test's thread
                std::this_thread::yield();
            }
        }
    };
    auto phase = std::make_shared<std::atomic<int>>(0);
    framepipe::live_options o;
    o.max_attempts = 1; // this attempt fails the source, unless the stop came first
    framepipe::live_source<refused> src([phase] { return refused{phase}; }, o);
    collector out;
    live_state got = live_state::connecting;
    std::thread runner([&] { got = src.run(out, std::stop_token{}); });
    while (phase->load() != 1) {
        std::this_thread::yield();
    }
    src.stop();
    phase->store(2);
    runner.join();
    CHECK(got == live_state::stopped);
    CHECK(src.state() == live_state::stopped);
}

TEST_CASE("live_source: start() or run() after stop() start nothing and leave it stopped") {
    SECTION("run()") {
        // run() after stop() used to run the whole script (and end as ended).
        auto w = std::make_shared<world>();
        auto src = make_source(w, {{.frames = 5, .after = connection::then::end}}, exact());
        src->stop();
        collector out;
        CHECK(src->run(out, w->stopper.get_token()) == live_state::stopped);
        CHECK(src->state() == live_state::stopped);
        CHECK(src->wait_for(0ns));
        CHECK(w->opens == 0);
        CHECK(w->states.empty()); // never left stopped
        CHECK_THROWS_AS(src->run(out, w->stopper.get_token()), std::logic_error); // once only
    }
    SECTION("start()") {
        // start() after stop() used to leave the source connecting for ever.
        auto made = std::make_shared<std::atomic<int>>(0);
        auto src = rapid_source(made);
        framepipe::ring<item> out(64);
        src.stop(); // a shutdown that raced ahead of the start-up
        src.start(out);
        CHECK(src.wait_for(0ns));
        CHECK(src.state() == live_state::stopped);
        CHECK(src.stats().state_changes == 0);
        CHECK_THROWS_AS(src.start(out), std::logic_error); // once only
        src.stop();
        CHECK(made->load() == 0); // no backend was made
    }
}

TEST_CASE("live_source: stop() also ends a run() on another thread") {
    auto made = std::make_shared<std::atomic<int>>(0);
    auto src = rapid_source(made);
    framepipe::ring<item> out(64);
    std::stop_source never;
    live_state end = live_state::connecting;
    std::thread runner([&] { end = src.run(out, never.get_token()); });
    while (src.stats().frames == 0) {
        std::this_thread::yield();
    }
    src.stop();
    runner.join();
    CHECK(end == live_state::stopped);
    CHECK(src.state() == live_state::stopped);
}

TEST_CASE("live_source: stop() ends a publish into a broadcaster that waits for a subscriber") {
    // A broadcaster took a stop token only with a shared_ptr, so the runner published its frames
    // without one: a publish waiting for a blocking subscriber that nobody reads never ended,
    // and neither did stop() (nor the destructor) until the broadcaster was closed, so
    // `src.stop(); frames.close();` hung, the stopping thread yielding in a loop all the while.
    // (This test then hangs until the per-test watchdog fails it.)
    auto made = std::make_shared<std::atomic<int>>(0);
    framepipe::broadcaster<item> frames;
    auto never_read = frames.subscribe(
        {.capacity = 1, .policy = framepipe::overflow::block, .name = "never read"});
    auto src = std::make_unique<framepipe::live_source<rapid>>([made] {
        ++*made;
        return rapid{made};
    });
    std::optional<std::thread> runner; // run()'s
    live_state end = live_state::connecting;
    bool by_destructor = false;
    SECTION("start(), then stop()") {
        src->start(frames);
    }
    SECTION("start(), then the destructor") {
        src->start(frames);
        by_destructor = true;
    }
    SECTION("run() on another thread, then stop()") {
        runner.emplace([&] { end = src->run(frames, std::stop_token{}); });
    }
    // The second publish is under way (counted before any offer): the subscriber holds the
    // first frame and nobody pops, so it waits for room until the stop.
    while (frames.published() < 2) {
        std::this_thread::yield();
    }
    if (by_destructor) {
        src.reset(); // stops
    } else {
        src->stop();
        CHECK(src->state() == live_state::stopped);
        if (runner) {
            runner->join();
            CHECK(end == live_state::stopped);
        }
        src.reset();
    }
    const auto st = never_read.stats();
    CHECK(st.size == 1);
    CHECK(st.cancelled >= 1); // the publish the stop ended (and any after it)
    CHECK(st.pushed == frames.published());
    CHECK(st.pushed == 1 + st.cancelled);
    frames.close();
}

#if defined(__linux__)

using framepipe_test::thread_state;

TEST_CASE("live_source: stop() sleeps while it waits for a push that ignores the stop token") {
    // stop() must wait for a push into `out` under way (`out` must outlive it); one that ignores
    // the stop token lasts as long as it likes. stop() used to wait for it in a loop of pauses
    // and yields: a core's worth of CPU for as long as the push lasted. Here the push returns
    // only once the thread in stop() has been seen asleep after abandoning the runner (the
    // spinning stop() never was: the test then hangs until the per-test watchdog fails it).
    struct deaf_output {
        std::atomic<int> pushes{0};
        std::atomic<bool> release{false};
        framepipe::push_status push(item) { // no stop token: the second push waits for `release`
            if (++pushes == 2) {
                release.wait(false);
            }
            return framepipe::push_status::ok;
        }
        void close() {}
    };
    auto made = std::make_shared<std::atomic<int>>(0);
    framepipe::live_options o;
    o.abandon_after = 20ms;
    auto src = rapid_source(made, o);
    deaf_output out;
    src.start(out);
    while (out.pushes.load() < 2) {
        std::this_thread::yield();
    }
    std::atomic<long> stopper_tid{0};
    const int abandons = stop_abandons.load();
    std::thread stopper([&] {
        stopper_tid = static_cast<long>(::syscall(SYS_gettid));
        src.stop();
    });
    // stop() waits abandon_after for the runner, abandons it, then waits for its push.
    while (stop_abandons.load() == abandons) {
        std::this_thread::yield();
    }
    while (thread_state(stopper_tid.load()) != 'S') {
        std::this_thread::yield();
    }
    out.release = true;
    out.release.notify_all();
    stopper.join(); // returns once the push has
    CHECK(src.state() == live_state::stopped);
    CHECK(out.pushes.load() == 2); // an abandoned runner pushes no more
    // The abandoned runner's connection used to stay in the stats after the stop.
    CHECK_FALSE(src.stats().connected_since);
}

#endif

TEST_CASE("live_source: a start() that throws leaves the source stopped and its threads gone") {
    // Fail each allocation start() makes in turn (the runner, its thread, the watchdog...).
    // start() used to leave the source connecting for ever after such a failure.
    long failures = 0;
    for (long k = 0;; ++k) {
        INFO("allocation " << k);
        auto made = std::make_shared<std::atomic<int>>(0);
        auto src = rapid_source(made);
        framepipe::ring<item> out(64);
        bool threw = false;
        t_fail_allocation = k;
        try {
            src.start(out);
        } catch (const std::bad_alloc&) {
            threw = true;
        }
        t_fail_allocation = -1;
        if (!threw) { // start() made fewer than k + 1 allocations: all were tried
            src.stop();
            break;
        }
        ++failures;
        CHECK(src.wait_for(0ns));
        CHECK(src.state() == live_state::stopped);
        CHECK_THROWS_AS(src.start(out), std::logic_error); // once only, as documented
    }
    CHECK(failures >= 2); // at least the runner and a thread
}

namespace {
// Opens, then sends nothing but timeouts until stopped.
struct silent_backend {
    using frame_type = int;
    open_result open(std::stop_token, ns) { return open_result::success(); }
    read_result<int> read(std::stop_token, ns) { return read_result<int>::timed_out(); }
    void close() noexcept {}
};
} // namespace

TEST_CASE("live_source: wait_for takes any duration; coarse max() means no limit") {
    framepipe::live_source<silent_backend> src([] { return silent_backend{}; });
    framepipe::ring<item> out(4);
    src.start(out);
    src.stop();
    CHECK(src.wait_for(std::chrono::hours::max())); // stopped: a final state
    CHECK(src.wait_for(std::chrono::seconds::max()));
    CHECK_THROWS_WITH((void)src.wait_for(std::chrono::hours::min()), Catch::Contains("timeout"));
}

TEST_CASE("live_source: wait_for with a NaN timeout throws naming it") {
    framepipe::live_source<silent_backend> src([] { return silent_backend{}; });
    const auto nan = std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_WITH((void)src.wait_for(nan), Catch::Contains("timeout"));
}

namespace {

// A file: five frames, then its end. The first instance's close() ignores everything until
// `release`, so that the watchdog abandons it; with `later_stream`, the instances after it
// stream until stopped instead of ending.
struct ends_then_slow_close {
    using frame_type = int;
    struct control {
        bool later_stream = false;
        std::atomic<int> made{0};
        std::atomic<int> opens{0};
        std::atomic<bool> release{false};
    };
    std::shared_ptr<control> c;
    std::shared_ptr<int> alive; // see wait_until_gone
    int index = 0;
    int n = 0;
    open_result open(std::stop_token, ns) {
        ++c->opens;
        return open_result::success();
    }
    read_result<int> read(std::stop_token stop, ns) {
        if (index > 0 && c->later_stream) {
            if (stop.stop_requested()) {
                return read_result<int>::timed_out();
            }
            std::this_thread::yield();
            return read_result<int>::got(n++);
        }
        return n == 5 ? read_result<int>::ended() : read_result<int>::got(n++);
    }
    void close() noexcept {
        if (index == 0) {
            while (!c->release.load()) {
                std::this_thread::yield(); // deaf to the stop token and the timeout
            }
        }
    }
};

std::unique_ptr<framepipe::live_source<ends_then_slow_close>> ends_source(
    const std::shared_ptr<ends_then_slow_close::control>& c, const std::shared_ptr<int>& alive,
    const framepipe::live_options& o) {
    return std::make_unique<framepipe::live_source<ends_then_slow_close>>(
        [c, alive] { return ends_then_slow_close{c, alive, c->made++}; }, o);
}

} // namespace

TEST_CASE("live_source: an input that ended stays ended when its close() is abandoned") {
    // The watchdog abandoned the slow close() after the end, and the runner that replaced the
    // abandoned one reconnected in backoff: the ended file was opened and played again.
    auto control = std::make_shared<ends_then_slow_close::control>();
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 20ms;
    o.backoff = {.initial = 1ms, .max = 1ms, .jitter = 0.0};
    auto src = ends_source(control, alive, o);
    alive.reset();
    framepipe::ring<item> out(64);
    src->start(out);
    CHECK(src->wait(std::stop_token{})); // a final state, whichever
    const auto st = src->stats();
    CHECK(st.state == live_state::ended);
    CHECK(st.abandoned == 1); // the close
    CHECK(control->opens.load() == 1);
    CHECK(st.ends == 1);
    CHECK(st.frames == 5);
    CHECK(st.epoch == 1);
    control->release = true;
    src->stop();
    CHECK(src->state() == live_state::ended);
    src.reset();
    wait_until_gone(alive_weak); // the abandoned runner has finished
}

TEST_CASE("live_source: with restart_at_end, a close() abandoned after the end reopens at once") {
    // The runner that replaced the abandoned one started in backoff: a backoff and a failed
    // attempt for an input that had only ended (here, with max_attempts 1: failed).
    auto control = std::make_shared<ends_then_slow_close::control>();
    control->later_stream = true;
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 20ms;
    o.restart_at_end = true;
    o.max_attempts = 1;
    o.backoff = {.initial = std::chrono::hours(1), .max = std::chrono::hours(1)};
    auto src = ends_source(control, alive, o);
    alive.reset();
    framepipe::ring<item> out(64); // full soon: the runner drops frames, never blocks
    src->start(out);
    while (src->stats().connects < 2 && !framepipe::is_final(src->state())) {
        std::this_thread::yield();
    }
    const auto st = src->stats();
    CHECK_FALSE(framepipe::is_final(st.state));
    CHECK(st.connects == 2);
    CHECK(st.abandoned == 1);
    CHECK(st.attempt == 0);
    CHECK(st.current_backoff == 0ns);
    CHECK(st.epoch == 2);
    src->stop();
    CHECK(src->state() == live_state::stopped);
    control->release = true;
    src.reset();
    wait_until_gone(alive_weak);
}

TEST_CASE("live_source: connected_since is gone once the watchdog abandons the streaming read") {
    // It kept the abandoned connection's time through the backoff that followed, and after stop.
    auto control = std::make_shared<hanging::control>();
    framepipe::live_options o;
    o.stall_timeout = 20ms;
    o.abandon_after = 20ms;
    o.backoff = {.initial = std::chrono::hours(1), .max = std::chrono::hours(1)};
    framepipe::live_source<hanging> src([control] { return hanging{control}; }, o);
    framepipe::ring<item> out(64); // full soon: the runner drops frames, never blocks
    src.start(out);
    while (src.stats().frames < 10) {
        std::this_thread::yield();
    }
    CHECK(src.stats().connected_since);
    control->hang = true;
    while (src.stats().abandoned == 0 || src.state() != live_state::backoff) {
        std::this_thread::yield();
    }
    CHECK_FALSE(src.stats().connected_since);
    src.stop();
    CHECK_FALSE(src.stats().connected_since);
    control->release = true;
}

#if defined(__linux__)

TEST_CASE("live_source: stop() waits for an on_state_change call in progress; stopped is the last") {
    // The runner is inside the callback (backoff) when stop() comes, and stays there past
    // abandon_after. stop() used to abandon it, call the callback for stopped itself and return
    // while the runner's call still ran (a use of whatever the callback holds after stop()).
    struct refused {
        using frame_type = int;
        std::shared_ptr<int> alive; // see wait_until_gone
        open_result open(std::stop_token, ns) { return open_result::failure("refused"); }
        read_result<int> read(std::stop_token, ns) { return read_result<int>::timed_out(); }
        void close() noexcept {}
    };
    struct control {
        std::atomic<bool> in_callback{false};
        std::atomic<bool> release{false};
        std::atomic<bool> stop_returned{false};
        std::atomic<int> late_calls{0}; // calls still running, or made, after stop() returned
        state_log log;
    };
    auto c = std::make_shared<control>();
    auto alive = std::make_shared<int>(0);
    const std::weak_ptr<int> alive_weak = alive;
    framepipe::live_options o;
    o.abandon_after = 20ms;
    o.backoff = {.initial = std::chrono::hours(1), .max = std::chrono::hours(1)};
    auto src = std::make_unique<framepipe::live_source<refused>>(
        [alive] { return refused{alive}; }, o);
    alive.reset();
    src->on_state_change([c](live_state from, live_state to) {
        if (to == live_state::backoff && !c->in_callback.exchange(true)) {
            while (!c->release.load()) {
                std::this_thread::yield();
            }
        }
        if (c->stop_returned.load()) {
            ++c->late_calls;
        }
        c->log(from, to);
    });
    framepipe::ring<item> out(16);
    src->start(out);
    while (!c->in_callback.load()) {
        std::this_thread::yield();
    }
    const int abandons = stop_abandons.load();
    std::atomic<long> stopper_tid{0};
    std::thread stopper([&] {
        stopper_tid = framepipe_test::this_thread_id();
        src->stop();
        c->stop_returned = true;
    });
    // stop() waits abandon_after for the runner, then gives up on it and waits for its callback:
    // let the callback go once stop() sleeps there (or once stop() has returned without it).
    while (!c->stop_returned.load() && stop_abandons.load() == abandons) {
        std::this_thread::yield();
    }
    while (!c->stop_returned.load() && thread_state(stopper_tid.load()) != 'S') {
        std::this_thread::yield();
    }
    c->release = true;
    stopper.join();
    CHECK(c->late_calls.load() == 0);
    const std::vector<live_state> expected{live_state::connecting, live_state::backoff,
                                           live_state::stopped};
    CHECK(c->log.get() == expected);
    const auto st = src->stats();
    CHECK(st.state == live_state::stopped);
    CHECK(st.abandoned == 0);           // stop()'s abandonment is not counted...
    CHECK(st.last_error == "refused"); // ...nor an error
    src.reset();
    wait_until_gone(alive_weak); // the abandoned runner has finished: no call after stopped
    CHECK(c->log.get().back() == live_state::stopped);
}

TEST_CASE("live_source: with run(), stop() waits for an on_state_change call in progress") {
    // stop() does not wait for run() (it only asks it to return), but it must for the callback:
    // it used to call it for stopped beside the run() thread's call, and return before that ended.
    struct refused {
        using frame_type = int;
        open_result open(std::stop_token, ns) { return open_result::failure("refused"); }
        read_result<int> read(std::stop_token, ns) { return read_result<int>::timed_out(); }
        void close() noexcept {}
    };
    std::atomic<bool> in_callback{false};
    std::atomic<bool> release{false};
    std::atomic<bool> stop_returned{false};
    std::atomic<int> late_calls{0};
    state_log log;
    framepipe::live_options o;
    o.backoff = {.initial = std::chrono::hours(1), .max = std::chrono::hours(1)};
    framepipe::live_source<refused> src([] { return refused{}; }, o);
    src.on_state_change([&](live_state from, live_state to) {
        if (to == live_state::backoff && !in_callback.exchange(true)) {
            while (!release.load()) {
                std::this_thread::yield();
            }
        }
        if (stop_returned.load()) {
            ++late_calls;
        }
        log(from, to);
    });
    collector out;
    live_state end = live_state::connecting;
    std::thread runner([&] { end = src.run(out, std::stop_token{}); });
    while (!in_callback.load()) {
        std::this_thread::yield();
    }
    std::atomic<long> stopper_tid{0};
    std::thread stopper([&] {
        stopper_tid = framepipe_test::this_thread_id();
        src.stop();
        stop_returned = true;
    });
    // The stop()'s only sleep is its wait for the callback: let the callback go once it sleeps
    // (or once stop() has returned without waiting).
    while (!stop_returned.load() &&
           (stopper_tid.load() == 0 || thread_state(stopper_tid.load()) != 'S')) {
        std::this_thread::yield();
    }
    release = true;
    stopper.join();
    runner.join();
    CHECK(end == live_state::stopped);
    CHECK(late_calls.load() == 0);
    const std::vector<live_state> expected{live_state::connecting, live_state::backoff,
                                           live_state::stopped};
    CHECK(log.get() == expected);
}

#endif
