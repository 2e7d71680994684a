// examples/common/key_frames.cpp - see key_frames.hpp.
#include "common/key_frames.hpp"

#include "common/gst_capture.hpp"

#include <opencv2/videoio.hpp>

#include <algorithm>
#include <cmath>
#include <optional>

namespace framepipe_examples {

bool key_frame_index::is_key(std::uint64_t index) const {
    if (frames > 0) {
        index %= frames;
    }
    return std::binary_search(keys.begin(), keys.end(), index);
}

key_frame_index scan_key_frames(const std::string& path, std::stop_token stop,
                                std::chrono::nanoseconds timeout) {
    const std::string name = "'" + path + "'";
    key_frame_index index;
    {
        cv::VideoCapture probe(path, cv::CAP_FFMPEG);
        if (!probe.isOpened()) {
            throw key_frame_error(name + ": not a video file that opens");
        }
        index.fps = probe.get(cv::CAP_PROP_FPS);
        const double count = probe.get(cv::CAP_PROP_FRAME_COUNT);
        if (!(index.fps > 0 && index.fps < 1000) || !(count > 0)) {
            throw key_frame_error(name + ": the container gives no frame rate or frame count, so "
                                         "key frames cannot be placed");
        }
        index.frames = static_cast<std::uint64_t>(std::llround(count));
    }
    gst_capture capture({.uri = path, .key_frames_only = true, .memory = frame_memory::copy});
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (const auto err = capture.open(stop, timeout); !err.empty()) {
        throw key_frame_error(name + ": " + err);
    }
    gst_frame f;
    std::string err;
    std::uint64_t decoded = 0;
    // Frame indices count from the first frame, whatever its PTS: an MPEG-TS starts at its
    // first PTS (0.125 s seen), an MP4 with B-frames and no edit list at the reordering delay
    // (0.067 s seen), and OpenCV numbers the frames from 0 either way. The first frame decoded
    // is the file's first frame, as a file starts with a key frame.
    std::optional<std::chrono::nanoseconds> first_pts;
    for (;;) {
        const auto left = deadline - std::chrono::steady_clock::now();
        const auto st = capture.read(stop, std::max(left, std::chrono::nanoseconds(0)), f, err);
        if (st == gst_capture::status::end) {
            break;
        }
        if (st == gst_capture::status::error) {
            throw key_frame_error(name + ": " + err);
        }
        if (st == gst_capture::status::timeout) {
            throw key_frame_error(name + ": the key-frame scan did not finish in time");
        }
        ++decoded;
        if (f.pts) {
            if (!first_pts) {
                first_pts = f.pts;
            }
            const double seconds = std::chrono::duration<double>(*f.pts - *first_pts).count();
            index.keys.push_back(static_cast<std::uint64_t>(std::llround(seconds * index.fps)));
        }
    }
    std::sort(index.keys.begin(), index.keys.end());
    index.keys.erase(std::unique(index.keys.begin(), index.keys.end()), index.keys.end());
    if (index.keys.empty()) {
        throw key_frame_error(name + ": no key frame with a timestamp was decoded");
    }
    // Every frame a key frame: raw video (no decoder, no flags) or an intra-only codec.
    if (decoded >= index.frames || index.keys.size() >= index.frames) {
        throw key_frame_error(name + ": carries no key-frame information (every frame is a key "
                                     "frame: raw video or an intra-only codec such as MJPEG), "
                                     "so keyframes would keep every frame");
    }
    return index;
}

} // namespace framepipe_examples
