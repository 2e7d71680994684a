// The detectors end to end through cv::dnn: tiny ONNX (YOLOv8 and YOLOv5 layouts) and Darknet
// models generated at test time by make_models.py (FRAMEPIPE_TEST_MODELS), and HOG on vtest.avi.
#include "detector.hpp"

#include <catch2/catch.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <string>
#include <vector>

using namespace framepipe_examples::detection;

namespace {

std::string model(const char* name) { return std::string(FRAMEPIPE_TEST_MODELS) + "/" + name; }

// The model_error message make_detector throws for `o`, or "" if it does not throw.
std::string error_of(const detector_options& o) {
    try {
        (void)make_detector(o);
    } catch (const model_error& e) {
        return e.what();
    }
    return "";
}

void check_box(const cv::Rect2f& b, float x, float y, float w, float h) {
    CHECK(b.x == Approx(x).margin(0.05));
    CHECK(b.y == Approx(y).margin(0.05));
    CHECK(b.width == Approx(w).margin(0.05));
    CHECK(b.height == Approx(h).margin(0.05));
}

} // namespace

TEST_CASE("ONNX models in the YOLOv8 and YOLOv5 layouts run through cv::dnn end to end") {
    for (const char* name : {"yolov8.onnx", "yolov5.onnx"}) {
        INFO(name);
        auto d = make_detector(
            {.model = model(name), .classes = model("names.txt"), .input_size = 64});
        CHECK(d->description().find(std::string(name).substr(0, 6)) != std::string::npos);
        CHECK(d->description().find("3 classes") != std::string::npos);
        // A 128x64 frame: letterboxed to 64x64 (scale 0.5, 16 px padding), boxes mapped back.
        const cv::Mat frame(64, 128, CV_8UC3, cv::Scalar(40, 80, 120));
        const auto boxes = d->detect(frame);
        REQUIRE(boxes.size() == 2);
        CHECK(boxes[0].label == "dog");
        CHECK(boxes[0].score == Approx(0.9F));
        check_box(boxes[0].box, 44, 22, 40, 20);
        CHECK(boxes[1].label == "bird");
        CHECK(boxes[1].score == Approx(0.7F));
        check_box(boxes[1].box, 46, 22, 40, 20);
    }
}

TEST_CASE("an ONNX model with a dynamic batch runs frames of different sizes in one pass") {
    auto d = make_detector({.model = model("yolov8_batch.onnx"),
                            .classes = model("names.txt"),
                            .input_size = 64,
                            .batch = 3});
    CHECK(d->max_batch() == 3);
    CHECK(d->description().find("batch 3") != std::string::npos);
    // Each frame letterboxed on its own: the same candidates map to each frame's pixels.
    const std::vector<cv::Mat> frames{cv::Mat(64, 128, CV_8UC3, cv::Scalar(1, 2, 3)),
                                      cv::Mat(64, 64, CV_8UC3, cv::Scalar(4, 5, 6)),
                                      cv::Mat(64, 128, CV_8UC3, cv::Scalar(7, 8, 9))};
    const auto per_frame = d->detect_batch(frames);
    REQUIRE(per_frame.size() == 3);
    for (std::size_t i : {0U, 2U}) {
        REQUIRE(per_frame[i].size() == 2);
        CHECK(per_frame[i][0].label == "dog");
        check_box(per_frame[i][0].box, 44, 22, 40, 20);
    }
    REQUIRE(per_frame[1].size() == 2);
    check_box(per_frame[1][0].box, 22, 27, 20, 10); // 64x64: no letterbox
    CHECK(d->detect_batch({frames[0]}).at(0).size() == 2); // fewer frames than the batch
    CHECK_THROWS_AS(d->detect_batch({frames[0], frames[1], frames[2], frames[0]}),
                    std::invalid_argument);
}

TEST_CASE("a batch the model cannot take is refused when the detector is made") {
    // A fixed batch of 1 in the ONNX graph (its Reshape).
    const auto fixed = error_of({.model = model("yolov8.onnx"), .input_size = 64, .batch = 4});
    CHECK(fixed.find("cannot take a batch of 4") != std::string::npos);
    CHECK(error_of({.batch = 2}).find("HOG") != std::string::npos);
    CHECK(error_of({.model = model("tiny.cfg"), .weights = model("tiny.weights"), .batch = 2})
              .find("batching needs an ONNX model") != std::string::npos);
    CHECK_THROWS_AS(make_detector({.batch = 0}), std::invalid_argument);
    CHECK(error_of({.model = model("yolov8.onnx"), .input_size = 64, .batch = 1}).empty());
}

TEST_CASE("a Darknet cfg + weights runs through cv::dnn end to end") {
    auto d = make_detector({.model = model("tiny.cfg"), .weights = model("tiny.weights")});
    CHECK(d->description().find("darknet") != std::string::npos);
    CHECK(d->description().find("32x32") != std::string::npos); // the cfg's input size
    // A 64x64 frame on the 32x32 input: scale 0.5. Each of the 2x2 cells predicts an 8x8 box at
    // its centre (input pixels), 16x16 on the frame, class 0 at sigmoid(4)^2.
    const cv::Mat frame(64, 64, CV_8UC3, cv::Scalar(0, 0, 0));
    auto boxes = d->detect(frame);
    REQUIRE(boxes.size() == 4);
    std::sort(boxes.begin(), boxes.end(), [](const auto& a, const auto& b) {
        return std::pair(a.box.y, a.box.x) < std::pair(b.box.y, b.box.x);
    });
    const float expected[4][2] = {{8, 8}, {40, 8}, {8, 40}, {40, 40}};
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(boxes[i].class_id == 0);
        CHECK(boxes[i].label == "class 0"); // no names file, not 80 classes
        CHECK(boxes[i].score == Approx(0.9644F).epsilon(0.001));
        check_box(boxes[i].box, expected[i][0], expected[i][1], 16, 16);
    }
}

TEST_CASE("HOG finds people on a vtest.avi frame that has people") {
    cv::VideoCapture video(FRAMEPIPE_TEST_VIDEO);
    REQUIRE(video.isOpened());
    cv::Mat frame;
    for (int i = 0; i <= 100; ++i) { // frame 100: several pedestrians in the open
        REQUIRE(video.read(frame));
    }
    auto d = make_detector({});
    CHECK(d->description() == "hog people detector");
    const auto boxes = d->detect(frame);
    REQUIRE_FALSE(boxes.empty());
    const cv::Rect2f whole(0, 0, static_cast<float>(frame.cols), static_cast<float>(frame.rows));
    for (const auto& b : boxes) {
        CHECK(b.label == "person");
        CHECK((b.box & whole).area() > 0.5F * b.box.area()); // on the frame
        CHECK(b.box.height > b.box.width);                   // upright: people, not noise
    }
    // A frame smaller than one detection window (64x128) has nobody on it, and is no crash.
    CHECK(d->detect(cv::Mat(48, 64, CV_8UC3, cv::Scalar::all(128))).empty());
    // A blank frame has nobody on it.
    CHECK(d->detect(cv::Mat(frame.size(), frame.type(), cv::Scalar::all(128))).empty());
}

TEST_CASE("a missing, unparsable or unsupported model is a one-line model_error") {
    auto one_line = [](const std::string& m) {
        INFO(m);
        CHECK(m.find('\n') == std::string::npos);
        return m;
    };
    CHECK_THAT(one_line(error_of({.model = model("absent.onnx")})),
               Catch::Contains("no such file"));
    CHECK_THAT(one_line(error_of({.model = model("broken.onnx")})),
               Catch::Contains("cannot be parsed"));
    CHECK_THAT(one_line(error_of({.model = model("not_yolo.onnx"), .input_size = 64})),
               Catch::Contains("not a YOLOv5, YOLOv8 or Darknet layout"));
    CHECK_THAT(one_line(error_of({.model = model("tiny.cfg")})), Catch::Contains("needs --weights"));
    CHECK_THAT(one_line(error_of({.model = model("tiny.cfg"), .weights = model("absent.weights")})),
               Catch::Contains("no such file"));
    CHECK_THAT(one_line(error_of({.model = model("names.txt")})), Catch::Contains("unknown format"));
    CHECK_THAT(one_line(error_of({.model = FRAMEPIPE_TEST_MODELS})),
               Catch::Contains("not a readable file"));
    CHECK_THAT(one_line(error_of({.model = model("yolov8.onnx"), .classes = model("absent.txt")})),
               Catch::Contains("no such file"));
    CHECK_THROWS_AS(make_detector({.input_size = 8}), std::invalid_argument);
}
