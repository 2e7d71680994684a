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
// receiver counts the message as malformed (for JPEG, also a frame over max_side a side, found
// in its header before anything is decoded).
#pragma once

#include <framepipe/transport/detail/common.hpp>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <utility>
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
    // The largest width and height decode() takes, read from the JPEG's frame header before
    // decoding: a few hundred bytes can declare 30000x30000 pixels, which OpenCV would decode
    // (2.6 GB, seconds of CPU) however short the data. Larger ones are malformed.
    int max_side = 8192;

    void encode(const cv::Mat& m, framepipe::transport::lender& lend) const {
        thread_local std::vector<unsigned char> buf; // reused: no allocation per frame
        cv::imencode(".jpg", m, buf, {cv::IMWRITE_JPEG_QUALITY, quality});
        const auto out = lend(buf.size());
        std::memcpy(out.data(), buf.data(), buf.size());
    }

    // The width and height a JPEG declares in its frame header (SOF), found by walking its
    // marker segments up to the first scan; nullopt when the bytes are not such a JPEG.
    [[nodiscard]] static std::optional<std::pair<int, int>> declared_size(
        std::span<const std::byte> b) noexcept {
        const auto at = [&b](std::size_t i) { return std::to_integer<unsigned>(b[i]); };
        if (b.size() < 4 || at(0) != 0xFF || at(1) != 0xD8) {
            return std::nullopt;
        }
        std::size_t i = 2;
        while (i + 4 <= b.size()) {
            if (at(i) != 0xFF) {
                return std::nullopt;
            }
            const unsigned marker = at(i + 1);
            if (marker == 0xFF) { // fill byte before a marker
                ++i;
                continue;
            }
            if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { // no length
                i += 2;
                continue;
            }
            if (marker == 0xD9 || marker == 0xDA) { // the end, or a scan before any frame header
                return std::nullopt;
            }
            const std::size_t length = at(i + 2) << 8 | at(i + 3); // its own two bytes included
            if (length < 2 || length > b.size() - i - 2) {
                return std::nullopt;
            }
            // SOF0..SOF15, but DHT (C4), JPG (C8) and DAC (CC), which share the range.
            if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
                marker != 0xCC) {
                if (length < 7) {
                    return std::nullopt;
                }
                return std::pair<int, int>(static_cast<int>(at(i + 7) << 8 | at(i + 8)),
                                           static_cast<int>(at(i + 5) << 8 | at(i + 6)));
            }
            i += 2 + length;
        }
        return std::nullopt;
    }

    [[nodiscard]] std::optional<cv::Mat> decode(std::span<const std::byte> b) const noexcept {
        const auto size = declared_size(b);
        if (!size || size->first <= 0 || size->second <= 0 || size->first > max_side ||
            size->second > max_side) {
            return std::nullopt;
        }
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
