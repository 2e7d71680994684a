// examples/common/video_source.cpp - see video_source.hpp.
#include "common/video_source.hpp"

#include "common/mask_passwords.hpp"

#include <opencv2/core/utils/logger.hpp>


#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace framepipe_examples {

namespace {

bool looks_like_url(const std::string& s) { return s.find("://") != std::string::npos; }

} // namespace

void quiet_video_logs() {
    if (std::getenv("OPENCV_LOG_LEVEL") == nullptr) {
        cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_ERROR);
    }
    // Read by OpenCV's FFmpeg backend when it first loads; -8 is AV_LOG_QUIET.
    setenv("OPENCV_FFMPEG_LOGLEVEL", "-8", 0);
}

video_source::video_source(video_source_options options) : options_(std::move(options)) {
    if (options_.fps && !(*options_.fps > 0 && std::isfinite(*options_.fps))) {
        throw std::invalid_argument("fps: must be a finite rate above 0 (or unset: native)");
    }
    if (options_.pool_size < 2) {
        throw std::invalid_argument("pool_size: must be at least 2");
    }
    if (options_.max_failures < 1) {
        throw std::invalid_argument("max_failures: must be at least 1");
    }
    if (options_.camera >= 0) {
        description_ = "camera " + std::to_string(options_.camera);
    } else if (looks_like_url(options_.path)) {
        description_ = "stream '" + mask_passwords(options_.path) + "'";
    } else {
        description_ = "video '" + options_.path + "'";
        is_file_ = true;
        namespace fs = std::filesystem;
        std::error_code ec;
        const auto status = fs::status(options_.path, ec);
        if (options_.path.empty()) {
            throw video_error("no video given");
        }
        if (!fs::exists(status)) {
            throw video_error(description_ + ": no such file");
        }
        if (!fs::is_regular_file(status) || !std::ifstream(options_.path, std::ios::binary)) {
            throw video_error(description_ + ": not a readable file");
        }
    }
    if (!open()) {
        throw video_error(description_ + (is_file_ ? ": not a video OpenCV can decode"
                                                   : ": cannot be opened"));
    }
    native_fps_ = capture_.get(cv::CAP_PROP_FPS);
    if (!(native_fps_ > 0 && native_fps_ < 1000)) {
        native_fps_ = 0;
    }
    pace_hz_ = options_.fps ? *options_.fps : (native_fps_ > 0 ? native_fps_ : 30.0);
    if (!read_into(first_) || first_.empty()) {
        throw video_error(description_ + (is_file_ ? ": not a video OpenCV can decode (no frame)"
                                                   : ": delivers no frames"));
    }
    first_pending_ = true;
    size_ = first_.size();
    const auto type = first_.type();
    const auto size = size_;
    pool_ = std::make_unique<framepipe::pool<video_frame>>(
        options_.pool_size, [size, type] { return video_frame{cv::Mat(size, type), 0, {}}; });
}

video_source::~video_source() = default;

bool video_source::open() {
    last_msec_ = -1;
    if (options_.camera >= 0) {
        return capture_.open(options_.camera);
    }
    // FFmpeg for files and streams: OpenCV's image-sequence backend would otherwise take a
    // single picture (or a printf-style pattern) for a video.
    return capture_.open(options_.path, cv::CAP_FFMPEG);
}

bool video_source::read_into(cv::Mat& image) {
    int failures = 0; // failed reads in a row
    for (;;) {
        if (capture_.read(image) && !image.empty()) {
            std::uint64_t missing = static_cast<std::uint64_t>(failures);
            if (is_file_ && native_fps_ > 0) {
                // FFmpeg skips frames it cannot decode without a word; their absence shows as
                // a jump in the timestamps of the frames that remain. Failed reads in between
                // are the same frames seen another way: count the larger of the two.
                const double msec = capture_.get(cv::CAP_PROP_POS_MSEC);
                const double interval = 1000.0 / native_fps_;
                if (last_msec_ >= 0 && msec - last_msec_ > 1.5 * interval) {
                    missing = std::max(
                        missing, static_cast<std::uint64_t>(std::llround((msec - last_msec_) / interval) - 1));
                }
                last_msec_ = msec;
            }
            corrupt_.fetch_add(missing, std::memory_order_relaxed);
            return true;
        }
        // A failed read: a corrupt frame if a good one follows, else the end (a file's end, or
        // a camera or stream that stopped). Failures at the very end are not counted.
        if (++failures >= options_.max_failures) {
            end_reason_ = is_file_ ? "end of file" : description_ + " stopped delivering frames";
            return false;
        }
        if (is_file_) {
            const double pos = capture_.get(cv::CAP_PROP_POS_FRAMES);
            const double count = capture_.get(cv::CAP_PROP_FRAME_COUNT);
            if (!(count > 0 && pos < count - 1)) {
                end_reason_ = "end of file";
                return false;
            }
        }
    }
}

std::shared_ptr<video_frame> video_source::next(std::stop_token stop) {
    auto buffer = pool_->acquire(stop);
    if (!buffer) {
        end_reason_ = "stopped";
        return nullptr;
    }
    if (first_pending_) {
        first_.copyTo(buffer->value); // once; the buffer has the right size already
        first_pending_ = false;
        first_.release();
    } else {
        while (!read_into(buffer->value)) {
            if (!(options_.loop && is_file_)) {
                return nullptr;
            }
            // Restart the file. Reopening is more reliable across containers than seeking.
            if (!open() || !read_into(buffer->value)) {
                end_reason_ = description_ + ": cannot be reopened for --loop";
                return nullptr;
            }
            end_reason_.clear();
            loops_.fetch_add(1, std::memory_order_relaxed);
            break;
        }
    }
    buffer->seq = seq_++;
    buffer->captured = std::chrono::steady_clock::now();
    frames_read_.fetch_add(1, std::memory_order_relaxed);
    return buffer;
}

} // namespace framepipe_examples
