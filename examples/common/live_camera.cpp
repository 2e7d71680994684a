// examples/common/live_camera.cpp - see live_camera.hpp.
#include "common/live_camera.hpp"
#include "common/uri_scheme.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <framepipe/pool.hpp>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace framepipe_examples {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::nanoseconds;

std::int64_t ns_now() noexcept {
    return clock_type::now().time_since_epoch().count();
}

double to_ms(std::int64_t ns) noexcept {
    return static_cast<double>(ns) / 1e6;
}

// "0.25 s" with up to two decimals.
std::string seconds_text(nanoseconds d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f s", std::chrono::duration<double>(d).count());
    return buf;
}

}  // namespace

bool is_live_uri(std::string_view uri) noexcept {
    for (const std::string_view scheme :
         {"rtsp://", "rtsps://", "rtspt://", "http://", "https://", "v4l2://"}) {
        if (has_scheme_prefix(uri, scheme)) {  // in any case (RFC 3986 3.1)
            return true;
        }
    }
    return false;
}

// -- the backend: one frame_reader (a gst_capture by default) per connection -----------------

// The default reader: GStreamer.
class gst_reader final : public frame_reader {
public:
    explicit gst_reader(const gst_capture_options& o) : capture_(o) {}
    std::string open(std::stop_token stop, nanoseconds timeout) override {
        return capture_.open(std::move(stop), timeout);
    }
    gst_capture::status read(std::stop_token stop, nanoseconds timeout, gst_frame& out,
                             std::string& error) override {
        return capture_.read(std::move(stop), timeout, out, error);
    }
    void close() noexcept override { capture_.close(); }
    [[nodiscard]] std::uint64_t skipped_before_decode() const noexcept override {
        return capture_.skipped_before_decode();
    }
    [[nodiscard]] std::uint64_t dropped_before_read() const noexcept override {
        return capture_.dropped_before_read();
    }
    [[nodiscard]] std::uint64_t unconvertible() const noexcept override {
        return capture_.unconvertible();
    }

private:
    gst_capture capture_;
};

struct shared_state;

// Defined before shared_state, which names live_source<live_camera_backend> (a constrained
// template: the backend must be complete there); its calls are defined after it.
struct live_camera_backend {
    using frame_type = live_camera::pooled_frame;

    std::shared_ptr<shared_state> state;
    std::unique_ptr<frame_reader> capture;

    framepipe::open_result open(std::stop_token stop, nanoseconds timeout);
    framepipe::read_result<frame_type> read(std::stop_token stop, nanoseconds timeout);
    void close() noexcept;
};

// -- what the source's threads share ------------------------------------------------------------

// Held by shared_ptr: the state-change callback and the backends hold it too, and a backend call
// the watchdog abandoned may outlive the camera.
struct shared_state {
    shared_state(const live_camera_options& o, std::string d)
        : options(o), description(std::move(d)), pool(o.pool_size, [] { return video_frame{}; }) {}

    const live_camera_options options;
    const std::string description;
    std::function<void(const std::string&)> log;
    // Frames: empty Mats up front, each sized by its first frame (then reused).
    framepipe::pool<video_frame> pool;

    // Figures. Written on the runner thread, read by stats() on any thread: relaxed atomics
    // (statistics; they order nothing).
    std::atomic<std::uint64_t> pool_misses{0};
    // Encoded frames skipped before decoding, and decoded frames dropped before the reader
    // read them: closed connections' totals (failed attempts included), and the current one's
    // (copied from the reader after each read; the reader itself is the runner thread's).
    std::atomic<std::uint64_t> skipped_closed{0};
    std::atomic<std::uint64_t> skipped_current{0};
    std::atomic<std::uint64_t> dropped_closed{0};
    std::atomic<std::uint64_t> dropped_current{0};
    std::atomic<std::uint64_t> unconvertible_closed{0}; // frames the reader could not convert
    std::atomic<std::uint64_t> unconvertible_current{0};
    std::atomic<std::int64_t> start_ns{0};       // start(); 0: not started
    std::atomic<std::int64_t> stop_ns{0};        // stop(); 0: running
    std::atomic<std::int64_t> last_frame_ns{0};  // the last frame published; 0: none yet
    std::atomic<std::int64_t> max_gap_ns{0};     // between frames published (and start -> first)
    std::atomic<std::int64_t> attempt_started_ns{0};         // the current attempt's connecting
    std::atomic<std::int64_t> first_after_reconnect_ns{-1};  // -1: no reconnect yet
    std::atomic<std::uint64_t> first_epoch{0};  // the epoch of the first frame published
    std::atomic<std::uint64_t> last_epoch{0};   // the epoch of the last frame published
    std::atomic<std::uint64_t> frames_after_reconnect{0};
    std::atomic<bool> been_online{false};

    // The source, for the callback's stats() (cleared by ~live_camera before it goes).
    std::mutex source_mu;
    const framepipe::live_source<live_camera_backend>* source = nullptr;

    void say(const std::string& line) const {
        if (log) {
            log(mask_passwords(options.name + ": " + line));
        }
    }

    [[nodiscard]] nanoseconds step(std::uint32_t failures) const noexcept {
        const auto& b = options.live.backoff;
        if (failures == 0) {
            return nanoseconds(0);
        }
        const double max = static_cast<double>(b.max.count());
        const double d = static_cast<double>(b.initial.count()) *
                         std::pow(b.multiplier, static_cast<double>(failures - 1));
        return nanoseconds(std::llround(std::min(std::isfinite(d) ? d : max, max)));
    }

    // One line per status event (see live_camera.hpp), on the runner thread.
    void on_state(framepipe::live_state, framepipe::live_state to) {
        using framepipe::live_state;
        if (to == live_state::connecting) {
            attempt_started_ns.store(ns_now(), std::memory_order_relaxed);
            return;
        }
        if (to == live_state::streaming) {
            return;  // the publisher says "online" with the first frame it publishes
        }
        const std::lock_guard<std::mutex> lock(source_mu);
        if (source == nullptr) {
            return;
        }
        const auto st = source->stats();
        const bool online_before = been_online.load(std::memory_order_relaxed);
        switch (to) {
            case live_state::stalled:
                say("stalled (no frame for " + seconds_text(options.live.stall_timeout) +
                    ", stall_timeout); reconnecting");
                break;
            case live_state::backoff:
                say(std::string(to_string(status_of(to, online_before))) + " (attempt " +
                    std::to_string(st.attempt) + " failed: " + st.last_error +
                    "; next attempt in " + seconds_text(st.current_backoff) + " of a " +
                    seconds_text(step(st.attempt)) + " step)");
                break;
            case live_state::failed:
                say("failed: " + st.last_error);
                break;
            case live_state::ended:
                say("ended");
                break;
            default:
                break;
        }
    }
};

// -- the backend's calls ---------------------------------------------------------------------

framepipe::open_result live_camera_backend::open(std::stop_token stop, nanoseconds timeout) {
    // Masked here, where the error becomes the source's last_error: every consumer (stats,
    // pages, summaries, event lines) gets it without the URL's password.
    const auto error = capture->open(std::move(stop), timeout);
    return error.empty() ? framepipe::open_result::success()
                         : framepipe::open_result::failure(mask_passwords(error));
}

framepipe::read_result<live_camera_backend::frame_type> live_camera_backend::read(
    std::stop_token stop, nanoseconds timeout) {
    using result = framepipe::read_result<frame_type>;
    auto buffer = state->pool.try_acquire();
    if (!buffer) {
        // Every pooled frame is held by consumers: a frame of its own, never a wait.
        state->pool_misses.fetch_add(1, std::memory_order_relaxed);
        buffer = std::make_shared<video_frame>();
    }
    // The pooled Mat goes in as the frame to copy into (gst_capture reuses its memory when it
    // is ours alone and has the frame's size), and comes back out whatever happened.
    gst_frame f;
    f.image = std::move(buffer->value);
    std::string error;
    const auto status = capture->read(std::move(stop), timeout, f, error);
    state->skipped_current.store(capture->skipped_before_decode(), std::memory_order_relaxed);
    state->dropped_current.store(capture->dropped_before_read(), std::memory_order_relaxed);
    state->unconvertible_current.store(capture->unconvertible(), std::memory_order_relaxed);
    buffer->value = std::move(f.image);
    switch (status) {
        case gst_capture::status::frame:
            buffer->captured = f.captured;
            return result::got(frame_type{std::move(buffer)});
        case gst_capture::status::timeout:
            return result::timed_out();
        case gst_capture::status::end:
            return result::ended();
        case gst_capture::status::error:
            return result::failed(mask_passwords(error));
    }
    return result::failed("unknown read status");
}

void live_camera_backend::close() noexcept {
    // After close(): the reader keeps its counts (frame_reader), and they are final then (a
    // frame the appsink still held counts as dropped). An attempt whose open() failed is
    // closed too, so what it skipped while waiting for a key frame is counted.
    capture->close();
    state->skipped_closed.fetch_add(capture->skipped_before_decode(), std::memory_order_relaxed);
    state->skipped_current.store(0, std::memory_order_relaxed);
    state->dropped_closed.fetch_add(capture->dropped_before_read(), std::memory_order_relaxed);
    state->dropped_current.store(0, std::memory_order_relaxed);
    state->unconvertible_closed.fetch_add(capture->unconvertible(), std::memory_order_relaxed);
    state->unconvertible_current.store(0, std::memory_order_relaxed);
}

// -- the camera ---------------------------------------------------------------------------------

// What the live source pushes into: the frame gets its seq, capture time and epoch, and goes
// into the broadcaster as a shared_ptr<const video_frame> (no allocation).
struct publisher {
    shared_state* state = nullptr;
    framepipe::broadcaster<video_frame>* out = nullptr;

    void push(framepipe::stamped<live_camera::pooled_frame>&& item, std::stop_token stop) {
        shared_state& s = *state;
        auto& frame = item.value.buffer;
        frame->seq = item.seq;
        frame->captured = item.captured;
        frame->epoch = item.epoch;
        const auto now = ns_now();
        auto last = s.last_frame_ns.load(std::memory_order_relaxed);
        if (last == 0) {
            last = s.start_ns.load(std::memory_order_relaxed);
        }
        if (now - last > s.max_gap_ns.load(std::memory_order_relaxed)) {
            s.max_gap_ns.store(now - last, std::memory_order_relaxed);
        }
        s.last_frame_ns.store(now, std::memory_order_relaxed);
        if (item.epoch != s.last_epoch.load(std::memory_order_relaxed)) {
            // The first frame of a connection.
            s.last_epoch.store(item.epoch, std::memory_order_relaxed);
            s.been_online.store(true, std::memory_order_relaxed);
            const double since_attempt =
                to_ms(now - s.attempt_started_ns.load(std::memory_order_relaxed));
            char buf[160];
            if (s.first_epoch.load(std::memory_order_relaxed) == 0) {
                s.first_epoch.store(item.epoch, std::memory_order_relaxed);
                std::snprintf(buf, sizeof buf,
                              "online (epoch %llu; first frame %.0f ms after its attempt began)",
                              static_cast<unsigned long long>(item.epoch), since_attempt);
            } else {
                s.first_after_reconnect_ns.store(now - s.attempt_started_ns.load(),
                                                 std::memory_order_relaxed);
                std::snprintf(buf, sizeof buf,
                              "online again (epoch %llu; first frame %.0f ms after its attempt "
                              "began)",
                              static_cast<unsigned long long>(item.epoch), since_attempt);
            }
            s.say(buf);
        }
        if (item.epoch != s.first_epoch.load(std::memory_order_relaxed)) {
            s.frames_after_reconnect.fetch_add(1, std::memory_order_relaxed);
        }
        (void)out->publish(std::shared_ptr<const video_frame>(std::move(frame)), std::move(stop));
    }

    // (output_channel asks for a push without a stop token too; the source uses the one above.)
    void push(framepipe::stamped<live_camera::pooled_frame>&& item) { push(std::move(item), {}); }

    void close() noexcept {}  // the pipeline closes the broadcaster when the stage ends
};

struct live_camera::impl {
    std::shared_ptr<shared_state> state;
    publisher pub;
    std::optional<framepipe::live_source<live_camera_backend>> source;
};

namespace {

live_camera_options checked(live_camera_options o) {
    o.capture.memory = frame_memory::copy;  // into the pool (see the file comment)
    std::string why;
    if (!o.reader) {
        (void)gst_capture::describe(o.capture, &why);
    }
    if (!why.empty()) {
        throw std::invalid_argument(why);
    }
    if (o.pool_size < 2) {
        throw std::invalid_argument("pool_size: must be at least 2");
    }
    return o;
}

std::string describe_input(const gst_capture_options& c) {
    if (c.camera >= 0) {
        return "camera " + std::to_string(c.camera) + " (/dev/video" + std::to_string(c.camera) +
               ")";
    }
    return c.uri;
}

}  // namespace

live_camera::live_camera(live_camera_options options)
    : options_(checked(std::move(options))),
      description_(mask_passwords(describe_input(options_.capture))),
      impl_(std::make_unique<impl>()) {
    auto state = std::make_shared<shared_state>(options_, description_);
    impl_->state = state;
    impl_->pub.state = state.get();
    impl_->source.emplace(
        [state] {
            const auto& o = state->options;
            return live_camera_backend{state, o.reader ? o.reader()
                                                       : std::make_unique<gst_reader>(o.capture)};
        },
        options_.live);  // throws std::invalid_argument naming a bad live_options field
    impl_->source->on_state_change([state](framepipe::live_state from, framepipe::live_state to) {
        state->on_state(from, to);
    });
    const std::lock_guard<std::mutex> lock(state->source_mu);
    state->source = &*impl_->source;
}

live_camera::~live_camera() {
    stop();
    const std::lock_guard<std::mutex> lock(impl_->state->source_mu);
    impl_->state->source = nullptr;
}

void live_camera::on_event(std::function<void(const std::string&)> log) {
    impl_->state->log = std::move(log);
}

void live_camera::start(framepipe::broadcaster<video_frame>& out) {
    impl_->pub.out = &out;
    impl_->state->start_ns.store(ns_now(), std::memory_order_relaxed);
    impl_->source->start(impl_->pub);
}

void live_camera::stop() noexcept {
    impl_->source->stop();
    if (impl_->state->start_ns.load(std::memory_order_relaxed) != 0 &&
        impl_->state->stop_ns.load(std::memory_order_relaxed) == 0) {
        impl_->state->stop_ns.store(ns_now(), std::memory_order_relaxed);
    }
}

bool live_camera::wait(std::stop_token stop) {
    return impl_->source->wait(std::move(stop));
}

std::chrono::nanoseconds live_camera::backoff_step(std::uint32_t failures) const noexcept {
    return impl_->state->step(failures);
}

live_camera_stats live_camera::stats() const {
    const shared_state& s = *impl_->state;
    live_camera_stats out;
    out.live = impl_->source->stats();
    const bool been_online = s.been_online.load(std::memory_order_relaxed);
    out.status = status_of(out.live.state, been_online);
    out.frames_after_reconnect = s.frames_after_reconnect.load(std::memory_order_relaxed);
    if (const auto ns = s.first_after_reconnect_ns.load(std::memory_order_relaxed); ns >= 0) {
        out.first_frame_after_reconnect_ms = to_ms(ns);
    }
    out.pool_misses = s.pool_misses.load(std::memory_order_relaxed);
    out.skipped_before_decode = s.skipped_closed.load(std::memory_order_relaxed) +
                                s.skipped_current.load(std::memory_order_relaxed);
    out.dropped_before_read = s.dropped_closed.load(std::memory_order_relaxed) +
                              s.dropped_current.load(std::memory_order_relaxed);
    out.unconvertible = s.unconvertible_closed.load(std::memory_order_relaxed) +
                        s.unconvertible_current.load(std::memory_order_relaxed);
    const auto start = s.start_ns.load(std::memory_order_relaxed);
    if (start == 0) {
        return out;  // not started: offline, no figures
    }
    const auto stopped = s.stop_ns.load(std::memory_order_relaxed);
    const auto now = stopped != 0 ? stopped : ns_now();
    auto last = s.last_frame_ns.load(std::memory_order_relaxed);
    const auto since = last != 0 ? last : start;
    out.max_gap_ms = to_ms(std::max(s.max_gap_ns.load(std::memory_order_relaxed), now - since));
    if (out.status != stream_status::online) {
        const auto offline_for = nanoseconds(ns_now() - since);
        out.offline_for_s = std::chrono::duration<double>(offline_for).count();
        out.offline_since =
            std::chrono::system_clock::now() -
            std::chrono::duration_cast<std::chrono::system_clock::duration>(offline_for);
    }
    return out;
}

framepipe::source_status live_camera::status() const {
    auto out = impl_->source->status();
    const auto st = stats();
    const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
    const auto flag = [&](stream_status s) { return st.status == s ? 1.0 : 0.0; };
    out.counters.push_back({"frames_after_reconnect",
                            "Frames delivered by the connections after the first.",
                            n(st.frames_after_reconnect)});
    out.counters.push_back({"frame_pool_misses",
                            "Frames allocated because every pooled frame was held.",
                            n(st.pool_misses)});
    out.counters.push_back({"frames_dropped_before_read",
                            "Decoded frames dropped because a newer one came before they were "
                            "read.",
                            n(st.dropped_before_read)});
    out.counters.push_back({"frames_unconvertible",
                            "Decoded frames dropped because they could not be converted.",
                            n(st.unconvertible)});
    out.gauges.push_back({"online", "1 while the source streams.", flag(stream_status::online)});
    out.gauges.push_back({"reconnecting", "1 while the source gets a lost connection back.",
                          flag(stream_status::reconnecting)});
    out.gauges.push_back({"offline", "1 while the source has not connected yet, or has given up.",
                          flag(stream_status::offline)});
    out.gauges.push_back({"offline_seconds",
                          "Seconds since the last frame while not online (0 "
                          "online).",
                          st.offline_for_s});
    out.gauges.push_back({"max_gap_seconds", "The longest time without a frame, in seconds.",
                          st.max_gap_ms / 1000.0});
    out.gauges.push_back(
        {"first_frame_after_reconnect_seconds",
         "From the start of the last successful reconnect attempt to its first "
         "frame (-1: no reconnect yet).",
         st.first_frame_after_reconnect_ms ? *st.first_frame_after_reconnect_ms / 1000.0 : -1.0});
    return out;
}

std::optional<std::string> live_camera::failure() const {
    if (impl_->source->state() != framepipe::live_state::failed) {
        return std::nullopt;
    }
    const auto st = impl_->source->stats();
    if (st.attempt == 0) {
        return mask_passwords(description_ + ": " + st.last_error);
    }
    return mask_passwords(description_ + ": no connection after " + std::to_string(st.attempt) +
                          (st.attempt == 1 ? " attempt" : " attempts in a row") +
                          "; last error: " + st.last_error);
}

}  // namespace framepipe_examples
