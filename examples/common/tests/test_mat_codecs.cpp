// Tests of mat_codecs.hpp's JPEG codec: the frame size it reads from the header, and the frames
// it refuses before decoding them.
#include "common/mat_codecs.hpp"

#include <catch2/catch.hpp>
#include <opencv2/imgcodecs.hpp>

#include <cstddef>
#include <span>
#include <vector>

namespace fe = framepipe_examples;

namespace {

// A small real JPEG: `cols` x `rows`, a gradient.
std::vector<std::byte> jpeg_of(int cols, int rows) {
    cv::Mat m(rows, cols, CV_8UC3);
    for (int y = 0; y < rows; ++y) {
        for (int x = 0; x < cols; ++x) {
            m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<unsigned char>(x * 4),
                                              static_cast<unsigned char>(y * 4), 128);
        }
    }
    std::vector<unsigned char> buf;
    REQUIRE(cv::imencode(".jpg", m, buf));
    std::vector<std::byte> out(buf.size());
    for (std::size_t i = 0; i < buf.size(); ++i) {
        out[i] = std::byte{buf[i]};
    }
    return out;
}

// Where the SOF0 segment's height starts (its two bytes, then the width's).
std::size_t sof_size_at(const std::vector<std::byte>& j) {
    for (std::size_t i = 0; i + 1 < j.size(); ++i) {
        if (j[i] == std::byte{0xFF} && j[i + 1] == std::byte{0xC0}) {
            return i + 5;
        }
    }
    FAIL("no SOF0");
    return 0;
}

} // namespace

TEST_CASE("jpeg_mat_codec: reads the frame size from the header, and decodes what fits") {
    const auto j = jpeg_of(64, 48);
    const auto size = fe::jpeg_mat_codec::declared_size(j);
    REQUIRE(size);
    CHECK(size->first == 64);
    CHECK(size->second == 48);
    const fe::jpeg_mat_codec codec;
    const auto m = codec.decode(j);
    REQUIRE(m);
    CHECK(m->cols == 64);
    CHECK(m->rows == 48);
    // max_side is inclusive, per side.
    CHECK(fe::jpeg_mat_codec{.max_side = 64}.decode(j));
    CHECK_FALSE(fe::jpeg_mat_codec{.max_side = 63}.decode(j));
    CHECK_FALSE(fe::jpeg_mat_codec{.max_side = 47}.decode(j));
}

TEST_CASE("jpeg_mat_codec: a header that declares more than max_side is malformed, undecoded") {
    // A few hundred bytes declaring 30000x30000 were decoded: 2.6 GB and seconds of CPU on the
    // receiver's thread, counted as delivered. Here 9000 x 9000 (243 MB, were it decoded).
    auto j = jpeg_of(16, 16);
    const auto at = sof_size_at(j);
    for (const std::size_t k : {at, at + 2}) {
        j[k] = std::byte{9000 >> 8};
        j[k + 1] = std::byte{9000 & 0xFF};
    }
    const auto size = fe::jpeg_mat_codec::declared_size(j);
    REQUIRE(size);
    CHECK(size->first == 9000);
    CHECK(size->second == 9000);
    CHECK_FALSE(fe::jpeg_mat_codec{}.decode(j));
    // Height 0 (to come in a DNL segment) is refused too.
    auto zero = jpeg_of(16, 16);
    const auto z = sof_size_at(zero);
    zero[z] = std::byte{0};
    zero[z + 1] = std::byte{0};
    CHECK_FALSE(fe::jpeg_mat_codec{}.decode(zero));
}

TEST_CASE("jpeg_mat_codec: bytes that are no JPEG, or end before the frame header, are malformed") {
    const auto j = jpeg_of(32, 32);
    const auto at = sof_size_at(j);
    const std::vector<std::vector<std::byte>> bad{
        {},
        {std::byte{0xFF}, std::byte{0xD8}},
        std::vector<std::byte>(j.begin(), j.begin() + static_cast<std::ptrdiff_t>(at)),
        std::vector<std::byte>(100, std::byte{0x42}),
        // A scan (SOS) before any frame header.
        {std::byte{0xFF}, std::byte{0xD8}, std::byte{0xFF}, std::byte{0xDA}, std::byte{0},
         std::byte{2}},
        // A segment length past the end.
        {std::byte{0xFF}, std::byte{0xD8}, std::byte{0xFF}, std::byte{0xE0}, std::byte{0xFF},
         std::byte{0xFF}},
    };
    for (const auto& b : bad) {
        INFO(b.size() << " bytes");
        CHECK_FALSE(fe::jpeg_mat_codec::declared_size(b));
        CHECK_FALSE(fe::jpeg_mat_codec{}.decode(b));
    }
    // Fill bytes before a marker are skipped.
    std::vector<std::byte> filled(j.begin(), j.begin() + 2);
    filled.insert(filled.end(), 3, std::byte{0xFF});
    filled.insert(filled.end(), j.begin() + 2, j.end());
    const auto size = fe::jpeg_mat_codec::declared_size(filled);
    REQUIRE(size);
    CHECK(size->first == 32);
}
