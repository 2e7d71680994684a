// examples/common/mat_codecs.hpp - cv::Mat codecs for framepipe's transport adapters
// (framepipe/transport/*.hpp, the codec customization point in transport/detail/common.hpp).
//
//     raw_mat_codec    the pixels as they are, after a 64-byte image header; decodes to a
//                      cv::Mat header over the received bytes (no copy): with iceoryx the detector
//                      reads the frame in the shared-memory chunk the camera wrote it into.
//     jpeg_mat_codec   JPEG (quality 1..100): 20-40x smaller, for NATS and the network; decodes
//                      to a new cv::Mat (one decode, ~3 ms at 640x480).
//
// Sizes: raw is rows * step + 64 bytes (640x480 BGR: 921,664; 1920x1080 BGR: 6,220,864), which
// with the 128-byte envelope fits NATS's default max_payload (1 MB) at 640x480 and not at 1080p.
// Header-only; needs OpenCV (core, imgcodecs). decode never throws: bad bytes give nullopt, and the
// receiver counts the message as malformed.
#pragma once

#include <framepipe/transport/detail/common.hpp>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

namespace framepipe_examples {

struct raw_mat_codec {
    using value_type = cv::Mat;
    using view_type = cv::Mat; // a header over the received bytes: valid while the handle lives

    static constexpr std::size_t header_size = 64; // keeps the pixels 64-byte aligned in a chunk
    static constexpr std::uint32_t magic = 0x4D574152; // "RAWM"

    // The bytes a frame takes (header included).
    [[nodiscard]] static std::size_t encoded_size(const cv::Mat& m) {
        return header_size + m.total() * m.elemSize();
    }

    // One copy: row by row into the lent buffer (a continuous Mat in one memcpy).
    void encode(const cv::Mat& m, framepipe::transport::lender& lend) const {
        const std::size_t row = static_cast<std::size_t>(m.cols) * m.elemSize();
        const auto out = lend(encoded_size(m));
        const std::int32_t head[4] = {static_cast<std::int32_t>(magic), m.rows, m.cols, m.type()};
        std::memset(out.data(), 0, header_size);
        std::memcpy(out.data(), head, sizeof(head));
        std::byte* pixels = out.data() + header_size;
        if (m.isContinuous()) {
            std::memcpy(pixels, m.data, row * static_cast<std::size_t>(m.rows));
        } else {
            for (int r = 0; r < m.rows; ++r) {
                std::memcpy(pixels + row * static_cast<std::size_t>(r), m.ptr(r), row);
            }
        }
    }

    [[nodiscard]] std::optional<cv::Mat> decode(std::span<const std::byte> b) const noexcept {
        if (b.size() < header_size) {
            return std::nullopt;
        }
        std::int32_t head[4];
        std::memcpy(head, b.data(), sizeof(head));
        const int rows = head[1];
        const int cols = head[2];
        const int type = head[3];
        // Depth 0..6 (8U..64F), 1 to 4 channels: type = depth + 8 * (channels - 1).
        if (static_cast<std::uint32_t>(head[0]) != magic || rows <= 0 || cols <= 0 ||
            rows > 16384 || cols > 16384 || type < 0 || type >= 32 || (type & 7) > 6) {
            return std::nullopt;
        }
        const auto elem = static_cast<std::size_t>(CV_ELEM_SIZE(type));
        if (elem == 0 || b.size() - header_size != static_cast<std::size_t>(rows) *
                                                       static_cast<std::size_t>(cols) * elem) {
            return std::nullopt;
        }
        // A header over the bytes (cv::Mat wants a non-const pointer; nobody writes through it).
        return cv::Mat(rows, cols, type,
                       const_cast<std::byte*>(b.data() + header_size)); // NOLINT: read-only use
    }
};

struct jpeg_mat_codec {
    using value_type = cv::Mat;
    using view_type = cv::Mat; // owns its pixels

    int quality = 80;

    void encode(const cv::Mat& m, framepipe::transport::lender& lend) const {
        thread_local std::vector<unsigned char> buf; // reused: no allocation per frame
        cv::imencode(".jpg", m, buf, {cv::IMWRITE_JPEG_QUALITY, quality});
        const auto out = lend(buf.size());
        std::memcpy(out.data(), buf.data(), buf.size());
    }

    [[nodiscard]] std::optional<cv::Mat> decode(std::span<const std::byte> b) const noexcept {
        try {
            const cv::Mat bytes(1, static_cast<int>(b.size()), CV_8UC1,
                                const_cast<std::byte*>(b.data())); // NOLINT: read-only use
            cv::Mat m = cv::imdecode(bytes, cv::IMREAD_COLOR);
            if (m.empty()) {
                return std::nullopt;
            }
            return m;
        } catch (...) { // a corrupt JPEG from another program: malformed, never a crash
            return std::nullopt;
        }
    }
};

} // namespace framepipe_examples
