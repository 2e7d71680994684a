// examples/common/key_frames.hpp - which frames of a video file are key frames, from the
// key-frame flag GStreamer's demuxer puts on each encoded buffer (gst_capture.hpp).
//
//     const auto keys = framepipe_examples::scan_key_frames("vtest.avi");  // throws on bad input
//     keys.is_key(240);                                 // frame 240 (from 0, display order)
//
// How: the file is read once through gst_capture with key_frames_only, so delta units are
// dropped before the decoder and only the key frames are decoded (vtest.avi: 4 of 795 frames;
// the scan takes a few ms per key frame). Each decoded key frame's PTS less the first one's
// (the file's first frame: a file starts with a key frame; its PTS need not be 0, as in MPEG-TS
// or an MP4 with B-frames), times the file's frame rate, is its index. The frame rate and count
// come from the container (cv::VideoCapture).
//
// Sources without key-frame information are an error (key_frame_error), not a silent "every
// frame": a file whose every frame is a key frame (an intra-only codec such as MJPEG, or raw
// video, which has no decoder and so no flags at all) would make a key-frame sampler keep
// everything.
//
// The program reads frames through OpenCV, whose cv::VideoCapture gives no key-frame flag: this
// index is how it knows, and those frames are still decoded (only gst_capture can skip them
// before the decoder; framepipe-detect does so for live inputs).
//
// Thread safety: scan_key_frames() from any thread; a key_frame_index is a value.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

namespace framepipe_examples {

// Bad input for a key-frame sampler: what() is one line naming the file.
class key_frame_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct key_frame_index {
    std::vector<std::uint64_t> keys; // frame indices of the key frames, ascending
    std::uint64_t frames = 0;        // the file's frame count (the container's)
    double fps = 0;                  // the file's frame rate

    // Whether frame `index` (from 0; taken modulo the frame count, so a looped file's later
    // passes map onto the first) is a key frame.
    [[nodiscard]] bool is_key(std::uint64_t index) const;
};

// Scans `path` (see the file comment). Throws key_frame_error: the file does not open, has no
// frame rate or count, gives no key frame within `timeout`, or has a key frame at every frame
// (no key-frame information).
[[nodiscard]] key_frame_index scan_key_frames(const std::string& path, std::stop_token stop = {},
                                              std::chrono::nanoseconds timeout = std::chrono::seconds(60));

} // namespace framepipe_examples
