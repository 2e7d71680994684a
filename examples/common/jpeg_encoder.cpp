// examples/common/jpeg_encoder.cpp - see jpeg_encoder.hpp.
#include "common/jpeg_encoder.hpp"

#include <opencv2/imgcodecs.hpp>

#include <stdexcept>
#include <utility>

namespace framepipe_examples {

namespace {

const jpeg_options& checked(const jpeg_options& o) {
    if (o.quality < 1 || o.quality > 100) {
        throw std::invalid_argument("quality: must be between 1 and 100");
    }
    if (o.pool_size == 0) {
        throw std::invalid_argument("pool_size: must be at least 1");
    }
    return o;
}

} // namespace

jpeg_encoder::jpeg_encoder(jpeg_options options)
    : params_{cv::IMWRITE_JPEG_QUALITY, checked(options).quality},
      pool_(options.pool_size, [] { return encoded_frame{}; }) {}

std::shared_ptr<const encoded_frame> jpeg_encoder::encode(
    const cv::Mat& image, std::string meta, std::uint64_t seq,
    std::chrono::steady_clock::time_point captured) {
    std::shared_ptr<encoded_frame> out = pool_.try_acquire();
    if (!out) {
        // Every pooled buffer is held by clients still writing: allocate rather than wait.
        pool_misses_.fetch_add(1, std::memory_order_relaxed);
        out = std::make_shared<encoded_frame>();
    }
    cv::imencode(".jpg", image, out->jpeg, params_);
    out->meta = std::move(meta);
    out->seq = seq;
    out->captured = captured;
    frames_.fetch_add(1, std::memory_order_relaxed);
    bytes_.fetch_add(out->jpeg.size(), std::memory_order_relaxed);
    return out;
}

double jpeg_encoder::mean_kb() const noexcept {
    const auto n = frames();
    return n == 0 ? 0.0 : static_cast<double>(bytes()) / static_cast<double>(n) / 1024.0;
}

} // namespace framepipe_examples
