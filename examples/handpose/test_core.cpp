// The handpose building blocks: the estimator against the rendered truth, the DTW classifier on
// held-out seeds, the template and CSV formats, and the ONNX paths with tiny models made here.
#include "classifier.hpp"
#include "estimator.hpp"
#include "landmarks_csv.hpp"
#include "synthetic.hpp"

#include "common/testing/temp_dir.hpp"

#include <catch2/catch.hpp>
#include <opencv2/core/utils/logger.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace handpose;
namespace fs = std::filesystem;

namespace {

// cv::dnn logs refused shapes itself; the tests check the errors we raise instead.
const bool quiet_opencv = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    return true;
}();

constexpr double fps = 15.0;
constexpr std::size_t window = 30;

// A fresh directory under the system temp dir, removed at the end of the test.
struct temp_dir : framepipe_examples::testing::temp_dir {
    temp_dir() : framepipe_examples::testing::temp_dir("handpose-test") {}
};

// Renders an example's frames and runs the estimator on the pixels.
std::vector<hand_points> estimate_example(gesture g, std::uint64_t seed, std::vector<frame_truth>* truth,
                                          std::vector<std::uint8_t>* found = nullptr) {
    const synthetic_options o;
    std::vector<frame_truth> px;
    std::vector<double> times;
    (void)synthetic_example(g, seed, window, fps, o, &px, &times);
    renderer r(seed, o);
    marker_estimator est;
    cv::Mat image;
    std::vector<hand_points> out;
    for (std::size_t i = 0; i < px.size(); ++i) {
        r.render(px[i], times[i], image);
        const landmarks lm = est.estimate(image);
        CHECK(!lm.truth); // the estimator is given pixels only, so it cannot know the label
        out.push_back(lm.points);
        if (found != nullptr) {
            found->push_back(lm.joints_found);
        }
    }
    if (truth != nullptr) {
        *truth = px;
    }
    return out;
}

std::string make_models(const temp_dir& dir) {
    const std::string cmd = std::string(HANDPOSE_PYTHON) + " '" + HANDPOSE_MAKE_MODELS + "' '" +
                            dir.path.string() + "'";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return dir.path.string();
}

} // namespace

TEST_CASE("estimator: recovers the rendered joints within a few pixels, from the pixels alone") {
    const synthetic_options o;
    std::vector<double> errors;
    std::size_t found = 0, frames = 0;
    for (std::uint64_t k = 0; k < 24; ++k) {
        const auto g = static_cast<gesture>(k % gesture_count);
        INFO("gesture " << name_of(g) << ", seed " << 5000 + k);
        std::vector<frame_truth> truth;
        std::vector<std::uint8_t> seen;
        const auto points = estimate_example(g, 5000 + k, &truth, &seen);
        for (std::size_t i = 0; i < points.size(); ++i) {
            for (std::size_t j = 0; j < joint_count; ++j) {
                const double dx = points[i][3 * j] * static_cast<double>(o.width) - truth[i].joints[3 * j];
                const double dy = points[i][3 * j + 1] * static_cast<double>(o.height) - truth[i].joints[3 * j + 1];
                errors.push_back(std::hypot(dx, dy));
            }
            found += seen[i];
            ++frames;
        }
    }
    std::sort(errors.begin(), errors.end());
    const double median = errors[errors.size() / 2];
    const auto within_3px = static_cast<double>(std::count_if(errors.begin(), errors.end(),
                                                              [](double e) { return e <= 3.0; })) /
                            static_cast<double>(errors.size());
    INFO("median error " << median << " px, within 3 px: " << within_3px);
    CHECK(median < 0.5);
    CHECK(within_3px >= 0.98);
    // Markers hidden behind others (a closed fist) are the only ones missed.
    CHECK(static_cast<double>(found) / static_cast<double>(frames) >= 20.0);
}

TEST_CASE("estimator: depth comes from the markers' brightness") {
    // A grab bends the fingertips towards the camera: the estimated tip depth must follow.
    std::vector<frame_truth> truth;
    const auto points = estimate_example(gesture::grab, 777, &truth);
    double err = 0;
    for (std::size_t i = 0; i < points.size(); ++i) {
        err += std::abs(points[i][3 * 8 + 2] - truth[i].joints[3 * 8 + 2]); // index tip
    }
    CHECK(err / static_cast<double>(points.size()) < 0.05);
}

TEST_CASE("estimator: an image without a hand has no joints, distractors included") {
    synthetic_options o;
    renderer r(3, o);
    frame_truth off_screen; // a hand far outside the frame: only background and distractors
    for (std::size_t j = 0; j < joint_count; ++j) {
        off_screen.joints[3 * j] = -1000;
        off_screen.joints[3 * j + 1] = -1000;
    }
    cv::Mat image;
    marker_estimator est;
    for (int i = 0; i < 10; ++i) {
        r.render(off_screen, i * 0.5, image);
        CHECK(est.estimate(image).joints_found == 0);
    }
    CHECK_THROWS_AS(est.estimate(cv::Mat(10, 10, CV_8UC1)), std::invalid_argument);
    CHECK_THROWS_AS(marker_estimator(0), std::invalid_argument);
}

TEST_CASE("synthetic hand: the same seed gives the same video; every gesture appears") {
    hand_generator a(11), b(11);
    std::array<int, gesture_count> seen{};
    gesture previous = gesture::idle;
    for (int i = 0; i < 3000; ++i) {
        const double t = i / 15.0;
        const auto pa = a.pose_at(t);
        const auto pb = b.pose_at(t);
        REQUIRE(pa.joints == pb.joints);
        REQUIRE(pa.label == pb.label);
        ++seen[static_cast<std::size_t>(pa.label)];
        if (i > 0 && pa.label != previous) {
            CHECK(a.segment_at(t).start > 0); // a change of label is a new segment
        }
        previous = pa.label;
    }
    for (std::size_t g = 0; g < gesture_count; ++g) {
        INFO(name_of(static_cast<gesture>(g)));
        CHECK(seen[g] > 0);
    }
}

TEST_CASE("DTW classifier: >= 90% on 200 held-out synthetic sequences, estimated from pixels") {
    const synthetic_options o;
    const std::size_t per_gesture = 20;
    const dtw_classifier c(generate_templates(per_gesture, window, fps, template_seed_base, o));
    // Template seeds are seed_base + g * 100003 + k (k < per_gesture): all below 600000.
    const std::uint64_t held_out_base = 1'000'000;
    REQUIRE(template_seed_base + (gesture_count - 1) * 100003 + per_gesture < held_out_base);
    std::size_t correct = 0;
    std::array<std::array<int, gesture_count>, gesture_count> confusion{};
    for (std::uint64_t k = 0; k < 200; ++k) {
        const auto g = static_cast<gesture>(k % gesture_count);
        const auto points = estimate_example(g, held_out_base + k, nullptr);
        const auto r = c.classify(points);
        ++confusion[static_cast<std::size_t>(g)][static_cast<std::size_t>(r.label)];
        CHECK(r.confidence >= 0.0F);
        CHECK(r.confidence <= 1.0F);
        correct += r.label == g ? 1 : 0;
    }
    std::string table;
    for (const auto& row : confusion) {
        for (const int v : row) {
            table += std::to_string(v) + " ";
        }
        table += "\n";
    }
    INFO("confusion (rows: truth, columns: predicted, order idle swipe_left swipe_right wave circle grab):\n"
         << table);
    CHECK(correct >= 180);
}

TEST_CASE("DTW classifier: normalisation removes translation and scale") {
    const synthetic_options o;
    const auto a = synthetic_example(gesture::circle, 42, window, fps, o);
    auto b = a;
    for (auto& f : b) {
        for (std::size_t j = 0; j < joint_count; ++j) {
            f[3 * j] = f[3 * j] * 0.5F + 0.3F;
            f[3 * j + 1] = f[3 * j + 1] * 0.5F - 0.1F;
        }
    }
    const auto na = normalise_trajectory(a);
    const auto nb = normalise_trajectory(b);
    REQUIRE(na.size() == window * 42);
    for (std::size_t i = 0; i < na.size(); ++i) {
        REQUIRE(std::abs(na[i] - nb[i]) < 1e-4F);
    }
    const dtw_classifier c({{gesture::circle, a}, {gesture::wave, synthetic_example(gesture::wave, 43, window, fps, o)}});
    CHECK(c.distance(na, nb) < 1e-4);
    CHECK(c.classify(b).label == gesture::circle);
    CHECK_THROWS_AS(dtw_classifier({}), std::invalid_argument);
    CHECK_THROWS_AS(c.classify(std::vector<hand_points>(1)), std::invalid_argument);
}

TEST_CASE("DTW templates: written and loaded back, they classify the same") {
    temp_dir dir;
    const synthetic_options o;
    const dtw_classifier c(generate_templates(4, window, fps, template_seed_base, o));
    c.save(dir.file("t.json"));
    const auto loaded = dtw_classifier::load(dir.file("t.json"));
    REQUIRE(loaded.templates().size() == c.templates().size());
    for (std::size_t i = 0; i < c.templates().size(); ++i) {
        CHECK(loaded.templates()[i].label == c.templates()[i].label);
        CHECK(loaded.templates()[i].frames == c.templates()[i].frames);
    }
    for (std::uint64_t k = 0; k < 12; ++k) {
        const auto ex = synthetic_example(static_cast<gesture>(k % 6), 2'000'000 + k, window, fps, o);
        const auto a = c.classify(ex);
        const auto b = loaded.classify(ex);
        CHECK(a.label == b.label);
        CHECK(a.confidence == b.confidence);
    }
}

TEST_CASE("DTW templates: missing or malformed files are input errors naming the file") {
    temp_dir dir;
    auto write = [&](const std::string& name, const std::string& text) {
        std::ofstream(dir.file(name)) << text;
        return dir.file(name);
    };
    const std::vector<std::string> bad{
        dir.file("missing.json"),
        write("text.json", "not json"),
        write("format.json", R"({"format":"other","version":1,"templates":[]})"),
        write("empty.json", R"({"format":"framepipe-handpose-templates","version":1,"templates":[]})"),
        write("label.json",
              R"({"format":"framepipe-handpose-templates","version":1,"templates":[{"label":"jump","frames":[]}]})"),
        write("frames.json",
              R"({"format":"framepipe-handpose-templates","version":1,"templates":[{"label":"wave","frames":[[1,2],[3,4]]}]})"),
    };
    for (const auto& path : bad) {
        INFO(path);
        try {
            (void)dtw_classifier::load(path);
            FAIL("no error");
        } catch (const input_error& e) {
            const std::string what = e.what();
            CHECK(what.find(path) != std::string::npos);
            CHECK(what.find('\n') == std::string::npos);
        }
    }
}

TEST_CASE("landmarks CSV: written and read back exactly") {
    temp_dir dir;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> any(-2.0F, 2.0F);
    std::vector<recorded_frame> frames;
    for (std::uint64_t f = 0; f < 50; ++f) {
        recorded_frame r;
        r.frame = f * 3 + 1; // gaps are allowed
        for (auto& v : r.hand.points) {
            v = any(rng);
        }
        r.hand.points[0] = 1e-7F;   // tiny
        r.hand.points[1] = 12345.678F; // large
        if (f % 4 != 0) {
            r.hand.truth = static_cast<gesture>(f % gesture_count);
        }
        frames.push_back(r);
    }
    {
        landmarks_csv_writer w(dir.file("a.csv"));
        for (const auto& r : frames) {
            w.write(r.frame, r.hand);
        }
        w.close();
    }
    const auto back = read_landmarks_csv(dir.file("a.csv"));
    REQUIRE(back.size() == frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
        CHECK(back[i].frame == frames[i].frame);
        CHECK(back[i].hand.points == frames[i].hand.points);
        CHECK(back[i].hand.truth == frames[i].hand.truth);
        CHECK(back[i].hand.joints_found == joint_count);
    }
}

TEST_CASE("landmarks CSV: MediaPipe-style rows without labels, in any point order") {
    temp_dir dir;
    {
        std::ofstream out(dir.file("mp.csv"));
        out << "# exported from MediaPipe\r\nframe,point,x,y,z\r\n";
        for (int p = 20; p >= 0; --p) {
            out << "7," << p << "," << 0.01 * p << "," << 0.5 << "," << -0.02 * p << "\r\n";
        }
        out << "\n";
    }
    const auto r = read_landmarks_csv(dir.file("mp.csv"));
    REQUIRE(r.size() == 1);
    CHECK(r[0].frame == 7);
    CHECK(!r[0].hand.truth);
    CHECK(r[0].hand.points[3 * 20] == Approx(0.2));
    CHECK(r[0].hand.points[3 * 20 + 2] == Approx(-0.4));
}

TEST_CASE("landmarks CSV: malformed files are input errors with the line number") {
    temp_dir dir;
    auto rows = [](int frame, int points, const std::string& label = "") {
        std::string s;
        for (int p = 0; p < points; ++p) {
            s += std::to_string(frame) + "," + std::to_string(p) + ",0.5,0.5,0" +
                 (label.empty() ? "" : "," + label) + "\n";
        }
        return s;
    };
    struct bad_case {
        std::string name, text, expect;
    };
    const std::vector<bad_case> cases{
        {"empty", "", ":0: empty file"},
        {"header", "f,p,x,y,z\n" + rows(0, 21), ":1: expected the header"},
        {"columns", "frame,point,x,y,z\n0,0,0.5,0.5\n", ":2: expected 5 columns"},
        {"number", "frame,point,x,y,z\n0,0,abc,0.5,0\n", ":2: x: not a finite number"},
        {"nan", "frame,point,x,y,z\n0,0,0.5,nan,0\n", ":2: y: not a finite number"},
        {"point", "frame,point,x,y,z\n0,21,0.5,0.5,0\n", ":2: point: must be an integer 0-20"},
        {"frame", "frame,point,x,y,z\n-1,0,0.5,0.5,0\n", ":2: frame: not a non-negative integer"},
        {"short", "frame,point,x,y,z\n" + rows(0, 20) + rows(1, 21), ":22: frame 0 has 20 points"},
        {"short_last", "frame,point,x,y,z\n" + rows(0, 21) + rows(1, 3), "frame 1 has 3 points"},
        {"twice", "frame,point,x,y,z\n0,0,0.5,0.5,0\n0,0,0.5,0.5,0\n", ":3: point 0 appears twice"},
        {"order", "frame,point,x,y,z\n" + rows(5, 21) + rows(2, 21), ":23: frame numbers must increase"},
        {"label", "frame,point,x,y,z,label\n" + rows(0, 21, "jump"), ":2: label: unknown gesture"},
        {"mixed", "frame,point,x,y,z,label\n" + rows(0, 20, "wave") + "0,20,0.5,0.5,0,grab\n",
         ":22: label: differs"},
        {"no_frames", "frame,point,x,y,z\n", "no frames"},
    };
    for (const auto& c : cases) {
        INFO(c.name);
        const auto path = dir.file(c.name + ".csv");
        std::ofstream(path) << c.text;
        try {
            (void)read_landmarks_csv(path);
            FAIL("no error");
        } catch (const input_error& e) {
            const std::string what = e.what();
            INFO(what);
            CHECK(what.find(path) != std::string::npos);
            CHECK(what.find(c.expect) != std::string::npos);
            CHECK(what.find('\n') == std::string::npos);
        }
    }
    CHECK_THROWS_AS(read_landmarks_csv(dir.file("missing.csv")), input_error);
}

TEST_CASE("ONNX classifier: a tiny model made with python3-onnx runs through cv::dnn") {
    temp_dir dir;
    const auto models = make_models(dir);
    onnx_classifier c(models + "/classifier.onnx", window);
    // score = (0.1, 0.2, 0.3, 0, 0, 0) + mean(input) on "wave".
    const std::vector<hand_points> zeros(window);
    const auto a = c.classify(zeros);
    CHECK(a.label == gesture::swipe_right);
    CHECK(a.confidence == Approx(std::exp(0.3) / (std::exp(0.1) + std::exp(0.2) + std::exp(0.3) + 3)));
    hand_points half{};
    half.fill(0.5F);
    const auto b = c.classify(std::vector<hand_points>(window, half));
    CHECK(b.label == gesture::wave);

    auto fails = [&](const std::string& file, std::size_t w, const std::string& expect) {
        INFO(file);
        try {
            onnx_classifier bad(models + "/" + file, w);
            FAIL("no error");
        } catch (const input_error& e) {
            const std::string what = e.what();
            INFO(what);
            CHECK(what.find(expect) != std::string::npos);
            CHECK(what.find('\n') == std::string::npos);
        }
    };
    fails("classifier_wrong_input.onnx", window, "does not accept a 1x30x21x3 input");
    fails("classifier.onnx", 20, "does not accept a 1x20x21x3 input");
    fails("classifier_wrong_output.onnx", window, "returns 5 values, expected 6");
    fails("not_a_model.onnx", window, "cannot load");
    fails("missing.onnx", window, "no such file");
}

TEST_CASE("ONNX landmark model: a tiny model made with python3-onnx runs through cv::dnn") {
    temp_dir dir;
    const auto models = make_models(dir);
    onnx_landmark_model m(models + "/landmarks.onnx", 64);
    // points = bias + 0.1 * (mean R + mean G + mean B); a black frame gives the bias.
    const auto lm = m.estimate(cv::Mat(480, 640, CV_8UC3, cv::Scalar::all(0)));
    CHECK(lm.joints_found == joint_count);
    for (std::size_t j = 0; j < joint_count; ++j) {
        CHECK(lm.points[3 * j] == Approx(0.2 + 0.03 * static_cast<double>(j)).margin(1e-5));
        CHECK(lm.points[3 * j + 1] == Approx(0.3 + 0.02 * static_cast<double>(j)).margin(1e-5));
        CHECK(lm.points[3 * j + 2] == Approx(0.01 * static_cast<double>(j)).margin(1e-5));
    }
    const auto grey = m.estimate(cv::Mat(480, 640, CV_8UC3, cv::Scalar::all(255)));
    CHECK(grey.points[0] == Approx(0.2 + 0.3).margin(1e-4)); // 0.1 * (1 + 1 + 1)
    CHECK_THROWS_AS(onnx_landmark_model(models + "/landmarks.onnx", 32), input_error);
    CHECK_THROWS_AS(onnx_landmark_model(models + "/landmarks_wrong_output.onnx", 64), input_error);
    CHECK_THROWS_AS(onnx_landmark_model(models + "/missing.onnx", 64), input_error);
}
