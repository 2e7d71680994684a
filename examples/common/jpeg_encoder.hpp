// examples/common/jpeg_encoder.hpp - the last step of the examples' UI stages: an image into a
// pooled encoded_frame for the web server.
//
//     framepipe_examples::jpeg_encoder jpeg({.quality = 80, .pool_size = 6});
//     p.stage("ui", in, jpegs, [&](const frame_ptr& f) {
//         draw(*f, canvas);                                      // the example's own drawing
//         return jpeg.encode(canvas, json_text(meta), f->seq, f->captured);
//     });
//
// (json_text, from program.hpp: a label or a name in `meta` with bytes that are not UTF-8 gets
// U+FFFD, where meta.dump() would throw and fail the UI stage.)
//
// Buffers come from a framepipe::pool of encoded_frame, so a steady stream reuses the same JPEG
// buffers and allocates nothing. A frame stays out of the pool while any client still writes it.
// When every pooled one is out, encode() allocates a new frame rather than wait (a slow client
// must not hold up the UI stage) and counts a pool miss. Size the pool for the clients: two
// frames per stream client (one being written, one waiting), one more for the frame the web
// server keeps to replay to a client that connects (its broadcaster's replay_last), plus a few.
//
// Thread safety: any thread (the counters are relaxed atomics, the pool is thread-safe).
#pragma once

#include "common/encoded_frame.hpp"

#include <framepipe/pool.hpp>

#include <opencv2/core.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace framepipe_examples {

struct jpeg_options {
    int quality = 80;          // cv::IMWRITE_JPEG_QUALITY, 1..100
    std::size_t pool_size = 6; // encoded frames kept for reuse
};

class jpeg_encoder {
public:
    // Throws std::invalid_argument naming quality (outside 1..100) or pool_size (0).
    explicit jpeg_encoder(jpeg_options options = {});

    // Encodes `image` (8-bit, 1 or 3 channels) into a pooled frame that carries `meta` (the text
    // message sent before it), `seq` and `captured`. Never waits. Throws cv::Exception when
    // OpenCV cannot encode the image.
    [[nodiscard]] std::shared_ptr<const encoded_frame> encode(
        const cv::Mat& image, std::string meta, std::uint64_t seq,
        std::chrono::steady_clock::time_point captured);

    // Frames encoded, their JPEG bytes in all, and the frames allocated because every pooled
    // one was out. Any thread; relaxed reads (statistics).
    [[nodiscard]] std::uint64_t frames() const noexcept {
        return frames_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t bytes() const noexcept {
        return bytes_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t pool_misses() const noexcept {
        return pool_misses_.load(std::memory_order_relaxed);
    }
    // The mean JPEG size in KiB (0 before the first frame).
    [[nodiscard]] double mean_kb() const noexcept;

private:
    std::vector<int> params_;
    framepipe::pool<encoded_frame> pool_;
    // Relaxed: statistics; they order nothing.
    std::atomic<std::uint64_t> frames_{0};
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<std::uint64_t> pool_misses_{0};
};

} // namespace framepipe_examples
