// examples/common/live_camera.hpp - a camera or stream (RTSP, HTTP MJPEG, V4L2) read through
// GStreamer (gst_capture.hpp) and supervised by framepipe::live_source: it reconnects with
// backoff, detects stalls, never hangs, and publishes pooled frames into a broadcaster. It is
// the camera stage of the video examples when their input is live (docs/live_sources.md).
//
//     framepipe_examples::live_camera camera({.capture = {.uri = "rtsp://10.0.0.7/stream"},
//                                             .live = {.stall_timeout = 2s}});
//     camera.on_event([](const std::string& line) { std::puts(line.c_str()); });
//     framepipe::broadcaster<framepipe_examples::video_frame> frames;
//     p.source("camera", frames, camera);          // a supervised source: start/stop/status
//     ... camera.stats().status == stream_status::online ...
//
//   live_source<gst_backend> --stamped<pooled_frame>--> publisher --shared_ptr<const
//   video_frame>--> (reconnects, backoff,     (seq, camera time, epoch)  (gap, epoch  broadcaster
//   "frames"
//    stall, watchdog)                                     change)
//
// Reading: the source reads as fast as the camera delivers (appsink max-buffers=1 drop=true
// sync=false): it is never paced by a consumer; consumers pace themselves (rate-limited
// subscriptions, paced stages) and take the newest frame. Frames that come faster than the
// source reads them (a busy machine) are dropped in the appsink and counted
// (dropped_before_read).
//
// Frames: each connection's frames are copied once out of GStreamer's buffer into a frame of a
// framepipe::pool (frame_memory::copy into the pooled cv::Mat, reused when its size matches), so
// a steady stream allocates no frame memory and GStreamer's own buffer pool never grows with
// what consumers hold. When every pooled frame is held, a frame is allocated instead of waiting
// (the camera must never wait for a consumer) and counted as a pool miss. A frame's `captured` is
// the camera's time (the PTS mapped to steady_clock, gst_capture.hpp), its `epoch` the
// connection it came from.
//
// Status, for people: online (streaming), reconnecting (a connection was lost and the source is
// getting it back: stalled, backoff or connecting after having been online), offline (never
// connected yet in this run, or final: failed, ended, stopped). stats() adds the figures the
// examples report (max gap, frames after a reconnect, first frame after a reconnect, offline
// since).
//
// Thread safety: construct, on_event(), start(), stop() and wait() from one thread (the pipeline
// stage's); stats(), status(), failure() from any thread. The event callback runs on the
// source's runner thread.
#pragma once

#include "common/mask_passwords.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <framepipe/broadcaster.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/stamped.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/gst_capture.hpp"
#include "common/video_frame.hpp"

namespace framepipe_examples {

// A live input's status as the page, /stats.json and /metrics show it.
enum class stream_status { online, reconnecting, offline };

[[nodiscard]] constexpr std::string_view to_string(stream_status s) noexcept {
    switch (s) {
        case stream_status::online:
            return "online";
        case stream_status::reconnecting:
            return "reconnecting";
        case stream_status::offline:
            return "offline";
    }
    return "unknown";
}

// The mapping (docs/live_sources.md): streaming -> online; connecting, stalled, backoff ->
// reconnecting once the source has been online in this run, offline before; ended, failed,
// stopped -> offline.
[[nodiscard]] constexpr stream_status status_of(framepipe::live_state s,
                                                bool been_online) noexcept {
    switch (s) {
        case framepipe::live_state::streaming:
            return stream_status::online;
        case framepipe::live_state::connecting:
        case framepipe::live_state::stalled:
        case framepipe::live_state::backoff:
            return been_online ? stream_status::reconnecting : stream_status::offline;
        case framepipe::live_state::ended:
        case framepipe::live_state::failed:
        case framepipe::live_state::stopped:
            return stream_status::offline;
    }
    return stream_status::offline;
}

// Whether `uri` names a live input (rtsp, rtsps, rtspt, http, https, v4l2; the scheme in any
// case), as opposed to a file (a path or file://).
[[nodiscard]] bool is_live_uri(std::string_view uri) noexcept;

// What a live camera reads, one object per connection: a gst_capture by default, or what
// live_camera_options::reader makes (synthetic_camera.hpp's generated frames). The calls mean
// what gst_capture's mean: open() returns "" once a first frame is ready, else one line; read()
// fills `out` (its image may come in holding a pooled Mat to reuse) or says timeout, end or
// error; close() is prompt. Called on the live source's runner thread, one call at a time.
class frame_reader {
public:
    virtual ~frame_reader() = default;
    [[nodiscard]] virtual std::string open(std::stop_token stop,
                                           std::chrono::nanoseconds timeout) = 0;
    [[nodiscard]] virtual gst_capture::status read(std::stop_token stop,
                                                   std::chrono::nanoseconds timeout,
                                                   gst_frame& out, std::string& error) = 0;
    virtual void close() noexcept = 0;
    // Encoded frames this connection dropped before decoding them (gst_capture's key-frame-only
    // mode), for the accounting; 0 for a reader that skips nothing. Read after each read() and
    // once more after close() (a reader serves one connection): kept through close().
    [[nodiscard]] virtual std::uint64_t skipped_before_decode() const noexcept { return 0; }
    // Frames this connection decoded and dropped before read() took them (gst_capture's
    // appsink keeps the newest); 0 for a reader that drops nothing. Read like the one above.
    [[nodiscard]] virtual std::uint64_t dropped_before_read() const noexcept { return 0; }
    // Frames this connection took and dropped because they could not be converted (read()
    // said error instead; gst_capture::unconvertible()); 0 for a reader that converts all.
    // Read like the ones above.
    [[nodiscard]] virtual std::uint64_t unconvertible() const noexcept { return 0; }
};

struct live_camera_options {
    gst_capture_options capture{};  // what to read (memory is set to copy: see the file comment)
    // When set, each connection reads from the reader this makes instead of a gst_capture of
    // `capture` (whose uri then only names the input). Called on the runner thread.
    std::function<std::unique_ptr<frame_reader>()> reader{};
    framepipe::live_options live{};
    std::size_t pool_size = 8;    // pooled frames; size for what the consumers hold at once
    std::string name = "camera";  // the prefix of event lines
};

// A live camera's figures.
struct live_camera_stats {
    framepipe::live_stats live;  // the supervisor's (state, epoch, connects, stalls, ...)
    stream_status status = stream_status::offline;
    // Frames delivered by every connection after the first one (frames - frames of the first).
    std::uint64_t frames_after_reconnect = 0;
    // For the latest reconnect: from the start of the attempt that succeeded (its connecting)
    // to its first frame published. nullopt before the first reconnect. The time from the
    // server's return to that first frame is at most this plus the backoff step in force.
    std::optional<double> first_frame_after_reconnect_ms;
    // The longest time without a frame published: between two frames, from start() to the
    // first frame, and the current wait since the last frame.
    double max_gap_ms = 0;
    // While not online: since when (the last frame published, or start()), wall-clock time.
    std::optional<std::chrono::system_clock::time_point> offline_since;
    double offline_for_s = 0;
    std::uint64_t pool_misses = 0;  // frames allocated because every pooled one was held
    // Encoded frames never decoded, over every connection (failed attempts included): delta
    // frames skipped before the decoder (capture.key_frames_only), and those before a
    // connection's first key frame.
    std::uint64_t skipped_before_decode = 0;
    // Decoded frames dropped before the source read them, over every connection: the reader
    // keeps only the newest frame, so frames that came faster than the source read them (a
    // busy machine) are dropped there (gst_capture::dropped_before_read()).
    std::uint64_t dropped_before_read = 0;
    // Decoded frames dropped because the reader could not convert them, over every connection
    // (each one a read error: the connection is closed and opened again).
    std::uint64_t unconvertible = 0;
};

class live_camera {
public:
    // Keeps the options; connects nothing until start(). Throws std::invalid_argument with one
    // line for an input gst_capture cannot describe (unknown scheme, bad transport, no URI;
    // not checked with a custom reader) and
    // naming the live_options field that is out of range (live_source's checks); pool_size
    // below 2.
    explicit live_camera(live_camera_options options);
    ~live_camera();  // stop()
    live_camera(const live_camera&) = delete;
    live_camera& operator=(const live_camera&) = delete;

    // Lines for people ("camera: online (epoch 1)", "camera: reconnecting (...)", ...), one per
    // status event, without a trailing newline. Called on the source's runner thread. Before
    // start().
    void on_event(std::function<void(const std::string&)> log);

    // The supervised-source interface (framepipe::pipeline::source(name, out, camera)).
    // start(): connects and reads on threads of its own, publishing into `out` (which must
    // outlive stop()). Returns at once. Once.
    void start(framepipe::broadcaster<video_frame>& out);
    // Stops within live_options::abandon_after (+ a publish in progress). Idempotent.
    void stop() noexcept;
    // Waits until the source reached a final state (true) or `stop` is requested (false).
    bool wait(std::stop_token stop);
    // The live source's state, counters and gauges, plus: counters frames_after_reconnect,
    // frame_pool_misses, frames_dropped_before_read and frames_unconvertible; gauges online,
    // reconnecting, offline (1 for the status it is in), offline_seconds, max_gap_seconds,
    // first_frame_after_reconnect_seconds (-1: none yet).
    [[nodiscard]] framepipe::source_status status() const;
    // "<uri>: no connection after N attempts in a row; last error: ..." once failed, else nullopt.
    [[nodiscard]] std::optional<std::string> failure() const;

    [[nodiscard]] live_camera_stats stats() const;
    // The input, for people: the URI (its password masked), or "camera N (/dev/videoN)".
    [[nodiscard]] const std::string& description() const noexcept { return description_; }
    [[nodiscard]] const live_camera_options& options() const noexcept { return options_; }

    // The backoff step (before jitter) after `failures` failed attempts in a row.
    [[nodiscard]] std::chrono::nanoseconds backoff_step(std::uint32_t failures) const noexcept;

    // A frame as the backend hands it to the live source: a pooled frame whose `captured` the
    // backend has set (timestamp_traits below).
    struct pooled_frame {
        std::shared_ptr<video_frame> buffer;
    };

private:
    struct impl;
    live_camera_options options_;
    std::string description_;
    std::unique_ptr<impl> impl_;
};

}  // namespace framepipe_examples

// The capture time of a pooled frame: the one its backend wrote (the camera's, from the PTS).
template <>
struct framepipe::timestamp_traits<framepipe_examples::live_camera::pooled_frame> {
    static std::chrono::steady_clock::time_point capture_time(
        const framepipe_examples::live_camera::pooled_frame& f) noexcept {
        return f.buffer ? f.buffer->captured : std::chrono::steady_clock::time_point::max();
    }
};
