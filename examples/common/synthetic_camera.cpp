// examples/common/synthetic_camera.cpp - see synthetic_camera.hpp.
#include "common/synthetic_camera.hpp"
#include "common/uri_scheme.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace framepipe_examples {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::nanoseconds;

constexpr std::string_view scheme = "synthetic:";

void check(const synthetic_options& o) {
    if (o.width < 16 || o.width > 4096) {
        throw std::invalid_argument("width: must be between 16 and 4096");
    }
    if (o.height < 16 || o.height > 4096) {
        throw std::invalid_argument("height: must be between 16 and 4096");
    }
    // At least one frame each 1000 s: a period that fits in nanoseconds, and a reader that waits
    // for it (NaN and infinities fail the test too).
    if (!(o.fps >= 0.001 && o.fps <= 240)) {
        throw std::invalid_argument("fps: must be between 0.001 and 240");
    }
}

// The strip: 2 x width columns, periodic with period `width` (see the header).
cv::Mat draw_strip(const synthetic_options& o) {
    const int w = o.width;
    const int h = o.height;
    cv::Mat period(h, w, CV_8UC3);
    // A gradient whose hue depends on the camera, so that tiles tell apart at a glance.
    const int tint = (o.number * 53) % 256;
    for (int y = 0; y < h; ++y) {
        auto* row = period.ptr<cv::Vec3b>(y);
        for (int x = 0; x < w; ++x) {
            row[x] = cv::Vec3b(static_cast<unsigned char>(tint),
                               static_cast<unsigned char>(40 + 120 * y / h),
                               static_cast<unsigned char>(60 + 120 * x / w));
        }
    }
    // Diagonal stripes: the motion is easy to see.
    const int gap = std::max(16, w / 8);
    for (int x = -h; x < w + h; x += gap) {
        cv::line(period, {x, 0}, {x + h, h}, cv::Scalar(230, 230, 230), std::max(2, w / 80),
                 cv::LINE_AA);
    }
    // "cam N" twice per period, each at most half a period wide.
    const std::string label = "cam " + std::to_string(o.number);
    double scale = h / 120.0;
    int base = 0;
    int thickness = std::max(1, h / 60);
    while (cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &base).width >
               w / 2 - 8 &&
           scale > 0.3) {
        scale *= 0.9;
    }
    const auto size = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &base);
    for (const int x : {w / 4 - size.width / 2, 3 * w / 4 - size.width / 2}) {
        const cv::Point at(std::max(0, x), h / 2 + size.height / 2);
        cv::putText(period, label, at, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(0, 0, 0),
                    thickness + 3, cv::LINE_AA);
        cv::putText(period, label, at, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(255, 255, 255),
                    thickness, cv::LINE_AA);
    }
    cv::Mat strip(h, 2 * w, CV_8UC3);
    period.copyTo(strip(cv::Rect(0, 0, w, h)));
    period.copyTo(strip(cv::Rect(w, 0, w, h)));
    return strip;
}

class synthetic_frames final : public frame_reader {
public:
    synthetic_frames(cv::Mat strip, synthetic_options o)
        : strip_(std::move(strip)),
          options_(o),
          period_(std::chrono::duration_cast<nanoseconds>(std::chrono::duration<double>(1.0 / o.fps))),
          step_(std::max(1, o.width / 120)) {}

    std::string open(std::stop_token, nanoseconds) override {
        t0_ = clock_type::now();
        next_ = 0;
        dropped_ = 0;
        return {};
    }

    gst_capture::status read(std::stop_token stop, nanoseconds timeout, gst_frame& out,
                             std::string&) override {
        const auto now = clock_type::now();
        // The newest frame due by now, if the reader came late; never one already given.
        const auto late = static_cast<std::uint64_t>((now - t0_) / period_);
        std::uint64_t k = std::max(next_, late);
        auto due = t0_ + period_ * static_cast<std::int64_t>(k);
        if (due > now + timeout) {
            wait_until(stop, now + timeout);
            return gst_capture::status::timeout;
        }
        if (due > now && !wait_until(stop, due)) {
            return gst_capture::status::timeout; // stopped
        }
        dropped_ += k - next_; // the frames due meanwhile that the late reader skipped
        next_ = k + 1;
        const int shift = static_cast<int>((k * static_cast<std::uint64_t>(step_)) %
                                           static_cast<std::uint64_t>(options_.width));
        out.image = strip_(cv::Rect(shift, 0, options_.width, options_.height)); // a view
        out.captured = due;
        out.pts = due - t0_;
        out.key_frame = true;
        out.index_in_connection = k;
        return gst_capture::status::frame;
    }

    void close() noexcept override {}

    // Frames due that a late reader skipped (it gets the newest due one): a camera's drops.
    [[nodiscard]] std::uint64_t dropped_before_read() const noexcept override { return dropped_; }

private:
    // Parks until `t`; false when `stop` came first.
    bool wait_until(const std::stop_token& stop, clock_type::time_point t) {
        std::unique_lock<std::mutex> lock(mu_);
        (void)cv_.wait_until(lock, stop, t, [] { return false; });
        return !stop.stop_requested();
    }

    cv::Mat strip_;
    synthetic_options options_;
    nanoseconds period_;
    int step_;
    clock_type::time_point t0_{};
    std::uint64_t next_ = 0;
    std::uint64_t dropped_ = 0; // frames due that a late reader skipped
    std::mutex mu_;
    std::condition_variable_any cv_;
};

// A positive number at the front of `s` (advanced past it); nullopt when there is none.
std::optional<double> number(std::string_view& s) {
    double v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr == s.data()) {
        return std::nullopt;
    }
    s.remove_prefix(static_cast<std::size_t>(r.ptr - s.data()));
    return v;
}

} // namespace

bool is_synthetic_uri(std::string_view uri) noexcept {
    return has_scheme_prefix(uri, scheme); // in any case (RFC 3986 3.1)
}

std::optional<synthetic_options> parse_synthetic_uri(std::string_view uri,
                                                     const synthetic_options& defaults,
                                                     std::string* error) {
    const auto fail = [&](const std::string& why) -> std::optional<synthetic_options> {
        if (error != nullptr) {
            // (appended piece by piece: GCC 12 warns falsely on "'" + std::string(...), -Wrestrict)
            error->assign(1, '\'').append(uri).append("': ").append(why);
        }
        return std::nullopt;
    };
    if (!is_synthetic_uri(uri)) {
        return fail("not a synthetic: URI");
    }
    std::string_view rest = uri.substr(scheme.size());
    if (rest.substr(0, 2) == "//") {
        rest.remove_prefix(2);
    }
    synthetic_options o = defaults;
    const char* form = "expected synthetic://WIDTHxHEIGHT@FPS (each part optional)";
    if (!rest.empty() && rest.front() != '@') {
        const auto w = number(rest);
        if (!w || rest.empty() || rest.front() != 'x') {
            return fail(form);
        }
        rest.remove_prefix(1);
        const auto h = number(rest);
        if (!h || *w != std::floor(*w) || *h != std::floor(*h)) {
            return fail(form);
        }
        o.width = static_cast<int>(std::min(*w, 1e6));
        o.height = static_cast<int>(std::min(*h, 1e6));
    }
    if (!rest.empty()) {
        if (rest.front() != '@') {
            return fail(form);
        }
        rest.remove_prefix(1);
        const auto fps = number(rest);
        if (!fps || !rest.empty()) {
            return fail(form);
        }
        o.fps = *fps;
    }
    try {
        check(o);
    } catch (const std::invalid_argument& e) {
        return fail(e.what());
    }
    return o;
}

std::function<std::unique_ptr<frame_reader>()> synthetic_reader(const synthetic_options& options) {
    check(options);
    auto strip = draw_strip(options);
    return [strip, options]() -> std::unique_ptr<frame_reader> {
        return std::make_unique<synthetic_frames>(strip, options);
    };
}

} // namespace framepipe_examples
