// YOLO decoding on hand-made output tensors: layouts, letterbox mapping, thresholds, class-wise NMS.
//
// The candidates are the ones tests/make_models.py bakes into the tiny models (see there):
//   A class 1 (32, 32, 20x10) 0.9 kept; B class 1 (33, 32) 0.6 suppressed by A;
//   C class 2 (33, 32) 0.7 kept; D class 0 (10, 40, 8x8) 0.1 below the threshold.
#include "yolo_decode.hpp"

#include <catch2/catch.hpp>
#include <opencv2/core.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

using namespace framepipe_examples::detection;

namespace {

struct cand {
    int cls;
    float cx, cy, w, h, obj, score;
};
constexpr std::array<cand, 4> candidates{{
    {1, 32, 32, 20, 10, 0.9F, 1.0F},
    {1, 33, 32, 20, 10, 1.0F, 0.6F},
    {2, 33, 32, 20, 10, 0.7F, 1.0F},
    {0, 10, 40, 8, 8, 0.1F, 1.0F},
}};
constexpr int classes = 3;
constexpr int rows = 16;

cv::Mat v8_tensor() {
    const int shape[] = {1, 4 + classes, rows};
    cv::Mat t(3, shape, CV_32F, cv::Scalar(0));
    auto* p = t.ptr<float>();
    for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
        const auto& c = candidates[static_cast<std::size_t>(i)];
        p[0 * rows + i] = c.cx;
        p[1 * rows + i] = c.cy;
        p[2 * rows + i] = c.w;
        p[3 * rows + i] = c.h;
        p[(4 + c.cls) * rows + i] = c.obj * c.score;
    }
    return t;
}

cv::Mat v5_tensor() {
    const int shape[] = {1, rows, 5 + classes};
    cv::Mat t(3, shape, CV_32F, cv::Scalar(0));
    auto* p = t.ptr<float>();
    for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
        const auto& c = candidates[static_cast<std::size_t>(i)];
        float* r = p + i * (5 + classes);
        r[0] = c.cx;
        r[1] = c.cy;
        r[2] = c.w;
        r[3] = c.h;
        r[4] = c.obj;
        r[5 + c.cls] = c.score;
    }
    return t;
}

// cv::dnn's Darknet layout: coordinates as fractions of the input, class scores times objectness.
cv::Mat darknet_tensor(cv::Size input) {
    cv::Mat t(rows, 5 + classes, CV_32F, cv::Scalar(0));
    for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
        const auto& c = candidates[static_cast<std::size_t>(i)];
        float* r = t.ptr<float>(i);
        r[0] = c.cx / static_cast<float>(input.width);
        r[1] = c.cy / static_cast<float>(input.height);
        r[2] = c.w / static_cast<float>(input.width);
        r[3] = c.h / static_cast<float>(input.height);
        r[4] = c.obj;
        r[5 + c.cls] = c.obj * c.score;
    }
    return t;
}

// A 128x64 frame letterboxed into 64x64: scale 0.5, 16 px of padding top and bottom.
letterbox_info frame_128x64() {
    cv::Mat frame(64, 128, CV_8UC3, cv::Scalar(10, 20, 30));
    cv::Mat boxed;
    return letterbox(frame, cv::Size(64, 64), boxed);
}

void check_box(const cv::Rect2f& b, float x, float y, float w, float h) {
    CHECK(b.x == Approx(x).margin(0.01));
    CHECK(b.y == Approx(y).margin(0.01));
    CHECK(b.width == Approx(w).margin(0.01));
    CHECK(b.height == Approx(h).margin(0.01));
}

// The expected answer for candidates A-D on the 128x64 frame.
void check_expected(const std::vector<detection>& d) {
    REQUIRE(d.size() == 2);
    CHECK(d[0].class_id == 1);
    CHECK(d[0].score == Approx(0.9F));
    check_box(d[0].box, 44, 22, 40, 20); // ((32-10)/0.5, (32-5-16)/0.5, 20/0.5, 10/0.5)
    CHECK(d[1].class_id == 2);
    CHECK(d[1].score == Approx(0.7F));
    check_box(d[1].box, 46, 22, 40, 20);
}

} // namespace

TEST_CASE("letterbox keeps the aspect ratio, centres the frame on grey padding") {
    cv::Mat frame(64, 128, CV_8UC3, cv::Scalar(10, 20, 30));
    cv::Mat boxed;
    const auto info = letterbox(frame, cv::Size(64, 64), boxed);
    CHECK(info.scale == Approx(0.5F));
    CHECK(info.pad_x == 0.0F);
    CHECK(info.pad_y == 16.0F);
    CHECK(info.original == cv::Size(128, 64));
    REQUIRE(boxed.size() == cv::Size(64, 64));
    CHECK(boxed.at<cv::Vec3b>(0, 0) == cv::Vec3b(114, 114, 114));   // padding, top
    CHECK(boxed.at<cv::Vec3b>(63, 63) == cv::Vec3b(114, 114, 114)); // padding, bottom
    CHECK(boxed.at<cv::Vec3b>(32, 32) == cv::Vec3b(10, 20, 30));    // the frame
    // A tall frame pads left and right instead.
    cv::Mat tall(100, 50, CV_8UC3, cv::Scalar(1, 2, 3));
    const auto t = letterbox(tall, cv::Size(64, 64), boxed);
    CHECK(t.scale == Approx(0.64F));
    CHECK(t.pad_x == 16.0F);
    CHECK(t.pad_y == 0.0F);
    CHECK_THROWS_AS(letterbox(cv::Mat(), cv::Size(64, 64), boxed), std::invalid_argument);
    CHECK_THROWS_AS(letterbox(frame, cv::Size(0, 64), boxed), std::invalid_argument);
}

TEST_CASE("unletterbox maps input pixels back to the frame and clips to it") {
    const auto info = frame_128x64();
    check_box(unletterbox(cv::Rect2f(22, 27, 20, 10), info), 44, 22, 40, 20);
    // A box reaching into the padding is clipped to the frame.
    check_box(unletterbox(cv::Rect2f(-4, 8, 20, 20), info), 0, 0, 32, 24);
}

TEST_CASE("the output layout is recognised from the tensor's shape") {
    {
        const int s[] = {1, 84, 8400};
        const auto l = recognise_layout(cv::Mat(3, s, CV_32F));
        REQUIRE(l);
        CHECK(l->layout == yolo_layout::v8);
        CHECK(l->classes == 80);
        CHECK(l->candidates == 8400);
    }
    {
        const int s[] = {1, 25200, 85};
        const auto l = recognise_layout(cv::Mat(3, s, CV_32F));
        REQUIRE(l);
        CHECK(l->layout == yolo_layout::v5);
        CHECK(l->classes == 80);
        CHECK(l->candidates == 25200);
    }
    {
        const auto l = recognise_layout(cv::Mat(507, 85, CV_32F));
        REQUIRE(l);
        CHECK(l->layout == yolo_layout::darknet);
        CHECK(l->classes == 80);
    }
    const int four_d[] = {1, 3, 1, 1};
    CHECK_FALSE(recognise_layout(cv::Mat(4, four_d, CV_32F)));
    const int too_few[] = {1, 4, 100}; // 4 attributes: no class
    CHECK_FALSE(recognise_layout(cv::Mat(3, too_few, CV_32F)));
    const int batch2[] = {2, 84, 8400};
    CHECK_FALSE(recognise_layout(cv::Mat(3, batch2, CV_32F)));
    CHECK(shape_of(cv::Mat(3, batch2, CV_32F)) == "[2, 84, 8400]");
}

TEST_CASE("YOLOv8 layout: threshold, class-wise NMS, boxes mapped back") {
    check_expected(decode({v8_tensor()}, frame_128x64()));
}

TEST_CASE("YOLOv5 layout: objectness times class score, same answer") {
    check_expected(decode({v5_tensor()}, frame_128x64()));
}

TEST_CASE("Darknet layout: normalised coordinates, one tensor per [yolo] layer") {
    const auto info = frame_128x64();
    check_expected(decode({darknet_tensor(info.input)}, info));
    // Two layers' outputs are pooled before NMS: the same candidates twice give the same answer.
    check_expected(decode({darknet_tensor(info.input), darknet_tensor(info.input)}, info));
}

TEST_CASE("the confidence threshold and the NMS overlap are honoured") {
    const auto info = frame_128x64();
    // Above every score: nothing.
    CHECK(decode({v8_tensor()}, info, {.confidence = 0.95F, .nms_iou = 0.45F}).empty());
    // Between C (0.7) and A (0.9): A only.
    const auto high = decode({v8_tensor()}, info, {.confidence = 0.8F, .nms_iou = 0.45F});
    REQUIRE(high.size() == 1);
    CHECK(high[0].class_id == 1);
    // Below D (0.1): D comes in too.
    const auto low = decode({v8_tensor()}, info, {.confidence = 0.05F, .nms_iou = 0.45F});
    CHECK(low.size() == 3);
    // A and B overlap with IoU ~0.9: an NMS threshold above that keeps both.
    const auto loose = decode({v8_tensor()}, info, {.confidence = 0.25F, .nms_iou = 0.95F});
    CHECK(loose.size() == 3);
    // Sorted by score, best first.
    for (std::size_t i = 1; i < loose.size(); ++i) {
        CHECK(loose[i - 1].score >= loose[i].score);
    }
}

TEST_CASE("a score equal to the confidence threshold is kept; only scores below it go") {
    const auto info = frame_128x64();
    // A scores 0.9 exactly (as a float), C 0.7: a threshold of exactly 0.7F keeps both.
    const auto at_c = decode({v8_tensor()}, info, {.confidence = 0.7F, .nms_iou = 0.45F});
    REQUIRE(at_c.size() == 2);
    CHECK(at_c[1].class_id == 2);
    CHECK(at_c[1].score == 0.7F);
    // Just above C: A only.
    CHECK(decode({v8_tensor()}, info, {.confidence = std::nextafter(0.7F, 1.0F), .nms_iou = 0.45F})
              .size() == 1);
    // The same for the YOLOv5 layout (objectness times class score: A 0.9 x 1, C 0.7 x 1).
    CHECK(decode({v5_tensor()}, info, {.confidence = 0.7F, .nms_iou = 0.45F}).size() == 2);
}

TEST_CASE("a candidate with a NaN or infinite coordinate, size or score is dropped") {
    const auto info = frame_128x64();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    // Candidate 4 (free in the tensor): a box of class 0 scoring 0.95, one attribute bad.
    for (int attribute = 0; attribute < 5; ++attribute) {
        for (const float bad : {nan, inf, -inf}) {
            INFO("attribute " << attribute << " = " << bad);
            auto t = v8_tensor();
            auto* p = t.ptr<float>();
            const float good[] = {60, 30, 10, 10, 0.95F};
            for (int a = 0; a < 5; ++a) {
                p[a * rows + 4] = a == attribute ? bad : good[a];
            }
            const auto r = decode({t}, info);
            // A and C as ever; never a box that is not finite and inside the frame.
            for (const auto& d : r) {
                CHECK(std::isfinite(d.box.x));
                CHECK(std::isfinite(d.box.y));
                CHECK(std::isfinite(d.box.width));
                CHECK(std::isfinite(d.box.height));
                CHECK(std::isfinite(d.score));
                CHECK((d.box.x >= 0 && d.box.y >= 0 && d.box.x + d.box.width <= 128 &&
                       d.box.y + d.box.height <= 64));
            }
            CHECK(r.size() == 2);
        }
    }
}

TEST_CASE("decode refuses tensors it cannot read") {
    const auto info = frame_128x64();
    const int four_d[] = {1, 3, 1, 1};
    CHECK_THROWS_AS(decode({cv::Mat(4, four_d, CV_32F, cv::Scalar(0))}, info), std::invalid_argument);
    cv::Mat doubles;
    v8_tensor().convertTo(doubles, CV_64F);
    CHECK_THROWS_AS(decode({doubles}, info), std::invalid_argument);
    // Two tensors with different class counts.
    CHECK_THROWS_AS(decode({v8_tensor(), cv::Mat(10, 90, CV_32F, cv::Scalar(0))}, info),
                    std::invalid_argument);
}
