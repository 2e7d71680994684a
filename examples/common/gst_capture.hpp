// examples/common/gst_capture.hpp - frames from a camera, an RTSP/HTTP stream or a file, through
// GStreamer, with every wait bounded: the "open / read one frame / close" backend that
// framepipe::live_source supervises.
//
//     framepipe_examples::gst_capture cam({.uri = "rtsp://127.0.0.1:8554/test"});
//     if (auto err = cam.open(stop, 5s); !err.empty()) { /* one line; back off, retry */ }
//     framepipe_examples::gst_frame f;
//     std::string err;
//     while (cam.read(stop, 2s, f, err) == gst_capture::status::frame) { use(f.image); }
//     cam.close();                                  // prompt even when the server is dead
//
// Pipelines (gst_capture::describe() gives the exact one; user strings are set as properties,
// never pasted into the description, so no quoting problem can arise):
//
//     rtsp://   rtspsrc protocols=tcp latency=200 drop-on-latency=true ! decodebin
//     http(s):// souphttpsrc is-live=true do-timestamp=true ! multipartdemux single-stream=true
//               ! decodebin                                    (MJPEG over multipart/x-mixed-replace)
//                                                     (a part's bytes are capped: max_part_bytes)
//     file      filesrc ! decodebin                   (a regular file: open() refuses a FIFO,
//                                                      a device or a directory, on which
//                                                      filesrc's blocking calls would hang)
//     camera N  v4l2src device=/dev/videoN ! decodebin
//     ... ! videoconvert ! video/x-raw,format=BGR ! appsink max-buffers=1 drop=true sync=false
//
// Freshness: the appsink keeps one frame and drops the older one (max-buffers=1 drop=true), and
// never waits on the clock (sync=false): a slow reader gets the newest frame, and never lets
// stale frames queue up in the decoder; the reader is never the pacer of a live source. The
// frames dropped so are counted (dropped_before_read(): a pad probe numbers the frames reaching
// the appsink, and each frame taken tells how many before it were not). A frame read() takes
// but cannot convert is dropped too, counted apart (unconvertible()), and never delivered.
// Files are the exception: by default (realtime=false) every frame is delivered and the reader
// is the pacer (drop=false, like cv::VideoCapture); with realtime=true a file plays at its own
// rate against the clock (sync=true) and drops like a live source.
//
// RTSP: TCP by default (interleaved in the RTSP connection: no loss, no firewall trouble, and a
// dead server is an error at once instead of a UDP silence); "udp" selectable. latency=200 ms
// bounds the jitterbuffer (rtspsrc's default is 2 s; in-order TCP packets leave it at once, the
// latency only bounds the wait for a late one: frames reach read() ~2 ms after capture here),
// drop-on-latency=true makes it drop instead of growing past that: never a backlog. Only the
// first video stream is set up (select-stream), so a camera's audio costs nothing. A server
// that stops sending but keeps the connection is no error for rtspsrc (57 s observed): read()
// returns timeout until the caller's stall timeout closes it. A server that closes the
// connection (or dies) makes rtspsrc end the stream: read() reports that as an error.
//
// Captured time (gst_frame::captured) is the camera's time on our clock, not the moment the
// frame was decoded. For live sources the buffer PTS is the running time at which the frame was
// captured (v4l2: the driver's timestamp) or, for RTSP, at which it reached the jitterbuffer,
// smoothed by the sender's RTP timestamps (rtpjitterbuffer's "slave" mode: the camera's
// spacing, our clock; its constant offset from the camera's real capture is the encode and
// network delay, which no receiver can see without synchronised clocks). It is mapped as
//     running = gst_segment_to_running_time(segment, pts)
//     captured = steady_at_sync + (running + base_time - clock_at_sync)
// with (steady_at_sync, clock_at_sync) read together once per open() (the pipeline's clock is
// GStreamer's monotonic system clock, the same clock as steady_clock on Linux; the offset is
// measured anyway so that another clock would work too), and never later than the moment
// read() took the frame (the jitterbuffer's PTS can run a few ms ahead while its skew estimate
// settles after a connect). This leaves out the decode, convert and queueing time, and a frame
// that waited in the appsink keeps its capture time. Measured (README.md, "Captured time"): the
// captured spacing equals the sender's 33.33 ms exactly, where stamping at the appsink would
// jitter by up to 43 ms. Files read with realtime=false have no clock to map to (the reader
// paces them): captured is the moment read() took the frame. HTTP MJPEG has no capture time on
// the wire: its PTS is the arrival of the part (do-timestamp).
//
// Key frames: decoded buffers do not carry GST_BUFFER_FLAG_DELTA_UNIT (measured: avdec_h264
// outputs flags 0 for every frame), so a pad probe on the decoder's sink pad records the PTS of
// each encoded key unit (no DELTA_UNIT flag) and read() looks the decoded frame's PTS up. The
// same probe drops delta units before the decoder when key_frames_only is set (measured: 4.6x
// less CPU on 768x576 H.264 at GOP 30), and always drops what comes before the first key unit
// of a connection (a stream joined mid-GOP would decode to grey smears), a delta unit carrying
// codec headers (HEADER flag) included: h264parse puts the SPS/PPS it has in front of the first
// unit it forwards, a P-slice when joined mid-GOP. The parameter sets still reach the decoder:
// h264parse and h265parse are set to config-interval=-1 (with every key unit), and a container's
// or an SDP's come in the caps. Raw sources (a v4l2 camera without compression) have only key
// frames. The first frame read after open() is a key frame when the appsink kept it (a frame
// dropped before read() is counted: dropped_before_read()).
//
// Frame memory: frame_memory::wrap (the default: 0.06 to 0.13 ms less CPU per 768x576 frame
// than copy, README.md) hands out the appsink's buffer itself: the cv::Mat points into the
// mapped GstBuffer, which stays mapped and referenced until the last cv::Mat sharing it is
// released (a custom cv::MatAllocator), so the frame stays valid after the next read and after
// close(), and a reader that holds frames never stalls the decoder (its buffer pool grows).
// The view is read-only (the appsink still references the buffer, so it is mapped for reading):
// clone() before drawing on it. frame_memory::copy copies once into a cv::Mat of its own: the
// one `out.image` already holds when nobody else shares it and it has the frame's size (so a
// caller that hands in a pooled buffer gets the frame written into it, with no allocation).
//
// Thread safety: one thread calls open/read/close (the source stage). The frames' cv::Mats may
// be released on any thread. gst_init runs once per process (std::call_once), on first open().
#pragma once

#include <framepipe/stamped.hpp>

#include <opencv2/core.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

namespace framepipe_examples {

// How a frame's pixels are held: in the GStreamer buffer (no copy) or copied into an own Mat.
enum class frame_memory { wrap, copy };

struct gst_capture_options {
    // rtsp:// (also rtsps://), http(s):// (MJPEG over multipart/x-mixed-replace), file:// or a
    // plain path, or v4l2:///dev/videoN; the scheme in any case (RTSP:// is rtsp://). Ignored
    // when camera >= 0.
    std::string uri;
    // >= 0: the V4L2 camera /dev/video<camera>.
    int camera = -1;
    // RTSP lower transport: "tcp" (default, see the file comment) or "udp".
    std::string rtsp_transport = "tcp";
    // RTSP jitterbuffer latency (rtspsrc latency, whole milliseconds).
    std::chrono::milliseconds latency{200};
    // RTSP: drop packets rather than let the jitterbuffer exceed `latency`.
    bool drop_on_latency = true;
    // Files only: false: every frame, as fast as read() asks (the reader paces); true: at the
    // file's own rate against the clock, a slow reader getting the newest frame, like a camera.
    bool realtime = false;
    // Decode only key frames (delta units are dropped before the decoder).
    bool key_frames_only = false;
    // HTTP MJPEG: the most bytes the demuxer may hold of one part (from the end of the last
    // part to the next boundary). A part sent without Content-Length ends only at the next
    // boundary, and the demuxer keeps all of it until then: a camera that never sends one
    // would grow the capture's memory until the stall timeout. Past the cap (checked as each
    // buffer from the server comes: the demuxer holds at most the cap and one buffer) the
    // stream fails (read() or open() report "... part of more than N bytes without its end
    // (max_part_bytes)"; a live source reconnects). 0: no cap. 32 MiB is 100 times a 1080p
    // JPEG of good quality.
    std::size_t max_part_bytes = std::size_t{32} << 20;
    frame_memory memory = frame_memory::wrap;
};

struct gst_frame {
    cv::Mat image;                                  // BGR, CV_8UC3, the source's own size
    std::chrono::steady_clock::time_point captured; // see the file comment
    std::optional<std::chrono::nanoseconds> pts;    // the buffer's raw PTS, when it has one
    bool key_frame = false;                         // decoded from a key unit (or raw)
    std::uint64_t index_in_connection = 0;          // 0 for the first frame after open()
};

class gst_capture {
public:
    enum class status {
        frame,   // `out` holds the next frame
        timeout, // no frame within the timeout, or `stop` was requested
        end,     // a file's end (a live stream that ends, e.g. the server closed the
                 // connection, is an error: a camera has no end, so reconnect)
        error,   // `error` holds one line; close() and open() again to retry
    };

    // Keeps the options; opens nothing. Never throws for bad options: open() reports them.
    explicit gst_capture(gst_capture_options options);
    ~gst_capture(); // close()
    // Movable (frames already read stay valid); a moved-from capture may only be destroyed or
    // assigned to (its open() reports the misuse, options() must not be called).
    gst_capture(gst_capture&&) noexcept;
    gst_capture& operator=(gst_capture&&) noexcept;
    gst_capture(const gst_capture&) = delete;
    gst_capture& operator=(const gst_capture&) = delete;

    // Builds and starts the pipeline (closing a previous one first) and waits until the first
    // frame has been decoded (the first read() returns it): "" on success, else one line saying
    // why (bad options, a missing plugin, the element's error from the bus, or "no frame within
    // N ms"), with the pipeline closed again. Blocks at most about `timeout` (+ the time close()
    // takes), and returns within ~50 ms of `stop` being requested (a stop is reported as
    // "stopped"). One thread. Throws only std::bad_alloc.
    [[nodiscard]] std::string open(std::stop_token stop, std::chrono::nanoseconds timeout);

    // Waits at most `timeout` for the next frame, in slices of <= 50 ms so that `stop` is
    // honoured within ~50 ms (then: timeout). A live source's frames are the newest: frames that
    // arrived while nobody read were dropped. On error fills `error` with one line (the bus's
    // GST_MESSAGE_ERROR text, the element's name and the debug detail). After open() only; a
    // read() without an open pipeline is an error. One thread. Throws only std::bad_alloc.
    [[nodiscard]] status read(std::stop_token stop, std::chrono::nanoseconds timeout,
                              gst_frame& out, std::string& error);

    // Sets the pipeline to NULL and frees it (the RTSP TEARDOWN waits at most 100 ms). Safe to
    // call twice, and open() may follow. Frames already read stay valid. One thread.
    void close() noexcept;

    [[nodiscard]] bool is_open() const noexcept;
    [[nodiscard]] const gst_capture_options& options() const noexcept;
    // Encoded units this connection dropped before the decoder: delta units while waiting for
    // the first key frame, and every delta unit with key_frames_only. Never decoded, so never
    // read() as frames. The latest connection's (a failed open()'s too): kept through close(),
    // back to 0 when open() starts the next one. Any thread (a relaxed counter).
    [[nodiscard]] std::uint64_t skipped_before_decode() const noexcept;
    // Decoded frames this connection dropped before read() returned them: the appsink keeps
    // only the newest (max-buffers=1 drop=true, see the file comment), so a reader slower than
    // the source loses the older ones; at close(), also the frame still waiting. Exact after
    // each read() (the frames between two frames read), at most two behind while no read()
    // takes a frame (one may still be waiting, one on its way in), and once the connection is
    // closed: frames that reached the appsink == frames read() returned +
    // dropped_before_read() + unconvertible(). Never decreases within a connection. Kept
    // through close(), back to 0 when open() starts the next connection. Any thread.
    [[nodiscard]] std::uint64_t dropped_before_read() const noexcept;
    // Decoded frames this connection dropped because read() took them and could not convert
    // them into a gst_frame (caps that are not BGR video, a buffer that does not map): read()
    // returned error for each, never the frame. Kept through close(), back to 0 when open()
    // starts the next connection. Any thread (a relaxed counter).
    [[nodiscard]] std::uint64_t unconvertible() const noexcept;
    // HTTP MJPEG: the most bytes the demuxer held of one part in this connection: the largest
    // part it put out, or what it held of an unfinished one when the next buffer came (at most
    // options().max_part_bytes when that is not 0; 0 for other sources). Kept through close(),
    // back to 0 when open() starts the next connection. Any thread (a relaxed figure).
    [[nodiscard]] std::uint64_t largest_part_bytes() const noexcept;

    // Tests only: the next `n` frames read() takes fail to convert, as a frame of unexpected
    // caps would (the pipeline's capsfilter lets no such frame through, so no input can make
    // one). The reading thread, between reads.
    void fail_next_conversions_for_testing(std::uint64_t n) noexcept;

    // The pipeline open() builds for `options`, with the user's strings (URI, device, path)
    // written in, for logs; "" with `error` set when the options are bad (an unknown scheme,
    // an unknown transport).
    [[nodiscard]] static std::string describe(const gst_capture_options& options,
                                              std::string* error = nullptr);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace framepipe_examples

// A gst_frame carries its capture time (the camera's, see the file comment): a
// framepipe::live_source of a backend whose frame_type is gst_frame stamps each frame with it
// instead of the moment read() returned, and channels can judge a gst_frame's age (max_age).
template <>
struct framepipe::timestamp_traits<framepipe_examples::gst_frame> {
    static std::chrono::steady_clock::time_point capture_time(
        const framepipe_examples::gst_frame& f) noexcept {
        return f.captured;
    }
};
