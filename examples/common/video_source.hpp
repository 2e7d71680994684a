// examples/common/video_source.hpp - frames from cv::VideoCapture, in pooled, stamped buffers.
//
//     framepipe_examples::video_source video({.path = "vtest.avi", .fps = 30, .loop = true});
//     p.source("camera", frames, [&](framepipe::stage_context& ctx) {
//         return video.next(ctx.stop_token());      // nullptr at the end: ends the source
//     }, {.max_rate_hz = video.pace_hz()});         // pipeline::source paces the calls
//
// Input: a file path, a camera index, or a stream URL (anything FFmpeg opens, "rtsp://...").
// Opening checks everything a user can get wrong and throws video_error with one line naming
// the input and the problem (missing, not a readable file, not a video, camera absent); the
// constructor also reads the first frame, so "opens but decodes nothing" is caught up front.
//
// Frames: each is a framepipe::stamped<cv::Mat> from a framepipe::pool (all buffers made up
// front at the first frame's size; cv::VideoCapture::read decodes into the buffer in place), so
// reading allocates nothing in the steady state. seq counts delivered frames from 0, across
// loops; captured is the time the frame was decoded.
//
// Corrupt frames in a file are read past, never fatal: reads that fail before the end of the
// file and are followed by a good frame, and a jump in the file's timestamps that skips frames
// (FFmpeg drops undecodable frames silently), are counted in corrupt_frames() (the larger of
// the two, as they are the same frames). Failures with no good frame after them are the end,
// not counted. `max_failures` failed reads in a row end the input; for a camera or stream that
// is how it stops delivering, and end_reason() says so.
//
// Pacing: pace_hz() is the rate to read at: `fps` when set (the source document reads its 10 fps
// file at 30), else the file's own rate.
//
// Thread safety: next() from one thread at a time (the source stage); the counters from any
// thread.
#pragma once

#include "common/video_frame.hpp"

#include <framepipe/pool.hpp>

#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>

namespace framepipe_examples {

struct video_source_options {
    std::string path;              // a file or a stream URL; used when camera < 0
    int camera = -1;               // a camera index (/dev/videoN) when >= 0
    std::optional<double> fps = 30; // the pace; nullopt: the file's own rate
    bool loop = false;             // restart a file at its end (not cameras or streams)
    std::size_t pool_size = 8;     // frame buffers
    int max_failures = 25;         // failed reads in a row that end the input
};

// Bad input: what() is one line naming the input and the problem.
class video_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Silences OpenCV's warnings and FFmpeg's log lines on stderr (unless the user set
// OPENCV_LOG_LEVEL or OPENCV_FFMPEG_LOGLEVEL), so that a program's errors stay one line each;
// the video source reports what matters itself (end reasons, corrupt-frame counts). Call at the
// start of main, before any thread starts (it may set an environment variable).
void quiet_video_logs();

class video_source {
public:
    // Opens the input and reads its first frame. Throws video_error (see the file comment), or
    // std::invalid_argument naming fps (not > 0 and finite), pool_size (< 2) or max_failures
    // (< 1).
    explicit video_source(video_source_options options);
    ~video_source();
    video_source(const video_source&) = delete;
    video_source& operator=(const video_source&) = delete;

    // The next frame, or nullptr at the end of the input (see end_reason()) or when `stop` is
    // requested. Blocks while decoding, and while every pool buffer is out (until one comes
    // back or `stop`). One thread at a time. Throws cv::Exception only for OpenCV failures that
    // are not bad input (out of memory).
    [[nodiscard]] std::shared_ptr<video_frame> next(std::stop_token stop = {});

    // The rate the frames should be read at, in Hz. Any thread.
    [[nodiscard]] double pace_hz() const noexcept { return pace_hz_; }
    // The input's own rate (0 when it does not say). Any thread.
    [[nodiscard]] double native_fps() const noexcept { return native_fps_; }
    [[nodiscard]] cv::Size frame_size() const noexcept { return size_; }
    // "file 'x'", "camera 0", "stream 'url'".
    [[nodiscard]] const std::string& description() const noexcept { return description_; }

    // Counters. Any thread; relaxed reads (statistics).
    [[nodiscard]] std::uint64_t frames_read() const noexcept {
        return frames_read_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t corrupt_frames() const noexcept {
        return corrupt_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t loops() const noexcept {
        return loops_.load(std::memory_order_relaxed);
    }
    // Why next() returned nullptr ("" while running): "end of file", "camera 0 stopped
    // delivering frames", "stopped". Read after next() returned nullptr, on the same thread, or
    // after the source stage has ended.
    [[nodiscard]] const std::string& end_reason() const noexcept { return end_reason_; }

private:
    bool open();
    bool read_into(cv::Mat& image); // one frame, reading past corrupt ones; false at the end

    video_source_options options_;
    std::string description_;
    bool is_file_ = false;
    cv::VideoCapture capture_;
    double native_fps_ = 0;
    double pace_hz_ = 30;
    cv::Size size_;
    std::unique_ptr<framepipe::pool<video_frame>> pool_;
    cv::Mat first_;               // the frame read by the constructor, delivered first
    bool first_pending_ = false;
    double last_msec_ = -1;       // the file position of the previous frame
    std::string end_reason_;
    // Relaxed: statistics read by other threads; they order nothing.
    std::atomic<std::uint64_t> frames_read_{0};
    std::atomic<std::uint64_t> corrupt_{0};
    std::atomic<std::uint64_t> loops_{0};
    std::uint64_t seq_ = 0;
};

} // namespace framepipe_examples
