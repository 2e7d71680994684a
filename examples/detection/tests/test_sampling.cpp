// framepipe-detect --sampling as a program: bad specs (exit 2, one line listing the forms), the
// accounting of every-n on channel "detector" (sampled_out, the identity), keyframes on a file
// without key-frame information (exit 2 at start), a motion mask outside the frame (reported,
// clipped), the cascade's stages, scene cuts; [live]: keyframes on an RTSP stream decodes only
// its key frames. Counts and structure only: no wall-clock assertion; the clips are short and
// tiny (64x48: HOG finds nobody and costs nothing).
#include "common/testing/child_process.hpp"
#include "common/testing/rtsp_server.hpp"
#include "common/testing/temp_dir.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace t = framepipe_examples::testing;
using nlohmann::json;

namespace {

const std::string exe = FRAMEPIPE_DETECT_EXE;

// Removed when the test process exits.
fs::path scratch() {
    static const framepipe_examples::testing::temp_dir dir("framepipe-detect-sampling");
    return dir.path;
}

// A 40-frame 64x48 MJPEG clip at 30 fps: a white square moving across a grey field, which turns
// from grey to green at frame 20 (a cut).
fs::path clip() {
    const auto path = scratch() / "moving.avi";
    if (!fs::exists(path)) {
        cv::VideoWriter w(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 30,
                          cv::Size(64, 48));
        REQUIRE(w.isOpened());
        for (int i = 0; i < 40; ++i) {
            cv::Mat m(48, 64, CV_8UC3, i < 20 ? cv::Scalar(128, 128, 128) : cv::Scalar(30, 200, 30));
            cv::rectangle(m, cv::Rect(2 + i, 16, 12, 12), cv::Scalar(255, 255, 255), cv::FILLED);
            w.write(m);
        }
    }
    return path;
}

json summary_of(const std::vector<std::string>& args) {
    std::vector<std::string> argv{exe, "--no-ui", "--json", "--video", clip().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = t::run(argv);
    INFO("stderr: " << r.err.substr(0, 3000));
    REQUIRE(r.exit_code == 0);
    return json::parse(r.out);
}

json channel(const json& j, const std::string& name) {
    for (const auto& c : j.at("channels")) {
        if (c.at("name") == name) {
            return c;
        }
    }
    FAIL("no channel " << name);
    return {};
}

std::uint64_t reason(const json& c, const char* why) {
    const auto& r = c.at("dropped_by_reason");
    return r.contains(why) ? r.at(why).get<std::uint64_t>() : 0;
}

// The identities every sampled run keeps: the source's frames are the sampler's plus what its
// subscription dropped; the sampler pushes each one into "detector", where pushed = popped +
// dropped (nothing is left at the end), and the detector took what was popped.
void check_accounting(const json& j) {
    const auto& s = j.at("sampling");
    const auto det = channel(j, "detector");
    const auto in = channel(j, "sampler");
    CHECK(det.at("kind") == "sampled");
    CHECK(in.at("pushed") == j.at("frames_read"));
    CHECK(in.at("pushed").get<std::uint64_t>() ==
          in.at("popped").get<std::uint64_t>() + in.at("dropped").get<std::uint64_t>());
    CHECK(s.at("frames_seen") == in.at("popped"));
    CHECK(det.at("pushed") == s.at("frames_seen"));
    CHECK(det.at("pushed").get<std::uint64_t>() ==
          det.at("popped").get<std::uint64_t>() + det.at("dropped").get<std::uint64_t>());
    CHECK(reason(det, "sampled_out") == s.at("sampled_out").get<std::uint64_t>());
    CHECK(s.at("frames_detected") == det.at("popped"));
    CHECK(s.at("frames_detected") == j.at("detections"));
    CHECK(s.at("frames_sent").get<std::uint64_t>() ==
          s.at("frames_detected").get<std::uint64_t>() + reason(det, "evicted") +
              reason(det, "rate_limited"));
    CHECK(j.at("dropped_for_detector_by_reason") == det.at("dropped_by_reason"));
}

void check_one_line_error(const t::run_result& r, const std::string& needle) {
    INFO("stderr: " << r.err << "stdout: " << r.out);
    CHECK(r.exit_code == 2);
    REQUIRE_FALSE(r.err.empty());
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(r.err.rfind("framepipe-detect: ", 0) == 0);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(r.out.empty());
}

} // namespace

TEST_CASE("--sampling: a bad spec exits 2 with one line that lists the valid forms") {
    for (const char* bad : {"bogus", "every-n", "every-n:0", "every-n:x", "every-n:-3",
                            "motion:0", "motion:256", "motion:", "scene:1", "scene:abc",
                            "keyframes:2", "none:1", "adaptive:5", "cascade:999", ""}) {
        INFO("--sampling '" << bad << "'");
        const auto r = t::run({exe, "--no-ui", "--sampling", bad});
        check_one_line_error(r, "--sampling '" + std::string(bad) + "': expected one of none, "
                                "every-n:N (N >= 1), keyframes, motion[:THRESHOLD]");
        CHECK(r.err.find("adaptive, cascade[:THRESHOLD]") != std::string::npos);
    }
    check_one_line_error(t::run({exe, "--no-ui", "--sampling", "every-n:2", "--mode", "inline"}),
                         "--sampling: only with --mode pipelined");
    check_one_line_error(t::run({exe, "--no-ui", "--motion-mask", "0,0 10,0 10,10"}),
                         "--motion-mask: only with --sampling motion or cascade");
    check_one_line_error(
        t::run({exe, "--no-ui", "--sampling", "motion", "--motion-mask", "0,0 10;0 10,10"}),
        "--motion-mask: expected points 'x,y x,y x,y ...'");
}

TEST_CASE("--sampling every-n:3: one frame in three reaches the detector's channel; the rest "
          "are sampled_out there, and every count adds up") {
    const auto j = summary_of({"--sampling", "every-n:3"});
    const auto& s = j.at("sampling");
    CHECK(s.at("strategy") == "every-n:3");
    CHECK(j.at("detect_fps_target") == 0); // the sampler decides
    const auto seen = s.at("frames_seen").get<std::uint64_t>();
    CHECK(seen >= 30); // capacity 4: the sampler sees (nearly) every one of the 40
    CHECK(s.at("frames_sent") == (seen + 2) / 3);
    CHECK(s.at("sampled_out") == seen - (seen + 2) / 3);
    CHECK(s.at("compute_saved").get<double>() > 0.6);
    CHECK(s.at("stages_ran").at("sampler") == seen);
    check_accounting(j);
}

TEST_CASE("--sampling keyframes: a file without key-frame information is an error at start") {
    const auto r = t::run({exe, "--no-ui", "--video", clip().string(), "--sampling", "keyframes"});
    check_one_line_error(r, "carries no key-frame information");
    check_one_line_error(t::run({exe, "--no-ui", "--video", "http://127.0.0.1:9/x.mjpg",
                                 "--sampling", "keyframes"}),
                         "--sampling keyframes: an HTTP MJPEG stream carries no key-frame");
}

TEST_CASE("--sampling motion with a mask reaching outside the frame: reported, clipped, and the "
          "moving square passes") {
    const auto j = summary_of({"--sampling", "motion:20", "--motion-mask", "-20,-20 20,-20 20,10 -20,10"});
    const auto& s = j.at("sampling");
    CHECK(s.at("strategy") == "motion:20");
    CHECK(s.at("mask") == "mask: 3 of 4 points lie outside the 64x48 frame; clipped to it");
    CHECK(s.at("motion_frames").get<std::uint64_t>() >= 20); // the square moves in every frame
    check_accounting(j);
}

TEST_CASE("--sampling cascade: the detector runs on motion regions; results say which stages "
          "ran") {
    const auto j = summary_of({"--sampling", "cascade:20"});
    const auto& s = j.at("sampling");
    CHECK(s.at("stages_ran").at("motion") == s.at("frames_seen"));
    CHECK(s.at("stages_ran").at("hog") == s.at("frames_detected"));
    CHECK(s.at("frames_detected").get<std::uint64_t>() >= 1);
    CHECK(s.at("regions").get<std::uint64_t>() >= s.at("frames_detected").get<std::uint64_t>());
    check_accounting(j);
}

TEST_CASE("--sampling cascade with --model: motion, then YOLO, on the motion regions") {
    const auto j = summary_of({"--sampling", "cascade:20", "--model",
                               std::string(FRAMEPIPE_TEST_MODELS) + "/yolov8.onnx", "--input-size",
                               "64"});
    const auto& s = j.at("sampling");
    const auto& ran = s.at("stages_ran");
    REQUIRE(ran.contains("yolov8"));
    CHECK_FALSE(ran.contains("hog"));
    CHECK(ran.at("motion") == s.at("frames_seen"));
    CHECK(ran.at("yolov8") == s.at("frames_detected"));
    CHECK(s.at("frames_detected").get<std::uint64_t>() >= 1);
    check_accounting(j);
}

TEST_CASE("--sampling scene and adaptive: cuts reach the detector; adaptive is steered") {
    const auto scene = summary_of({"--sampling", "scene"});
    CHECK(scene.at("sampling").at("scene_cuts").get<std::uint64_t>() >= 1); // the first frame
    CHECK(scene.at("sampling").at("scene_cuts").get<std::uint64_t>() <= 2); // and grey -> green
    CHECK(scene.at("sampling").at("frames_detected").get<std::uint64_t>() <= 2);
    check_accounting(scene);

    const auto adaptive = summary_of({"--sampling", "adaptive", "--source-fps", "20"});
    const auto& a = adaptive.at("sampling");
    CHECK(a.at("rate_hz").get<double>() >= 1);
    CHECK(a.at("rate_hz").get<double>() <= 20);
    check_accounting(adaptive);
}

TEST_CASE("--sampling keyframes on a live RTSP stream: only its key frames are decoded", "[live]") {
    // x264 at 30 fps with a key frame every 15: about 2 key frames a second reach the program.
    t::rtsp_server server(FRAMEPIPE_TEST_PYTHON, FRAMEPIPE_RTSP_SERVER, {.fps = 30, .key_int = 15});
    const auto r = t::run({exe, "--no-ui", "--json", "--video", server.url, "--sampling",
                           "keyframes", "--duration", "5"});
    INFO("stderr: " << r.err.substr(0, 3000));
    REQUIRE(r.exit_code == 0);
    const auto j = json::parse(r.out);
    const auto& s = j.at("sampling");
    const auto seen = s.at("frames_seen").get<std::uint64_t>();
    CHECK(seen >= 1);
    CHECK(s.at("key_frames") == seen);  // every frame that arrives is a key frame
    CHECK(s.at("sampled_out") == 0);
    CHECK(s.at("key_frames_in_file").is_null());
    // Every delta frame was skipped before the decoder, and counted: at GOP 15, 14 between two
    // key frames (fewer if x264 puts in a key frame of its own at a scene cut, hence the slack).
    const auto skipped = s.at("skipped_before_decode").get<std::uint64_t>();
    CHECK(skipped >= 5 * (seen - 1));
    CHECK(skipped >= 1);
    // Delta frames never reach the program: far fewer frames than 30 a second (2 are expected;
    // the bound is loose enough for any load, and 15 times too small if deltas were decoded).
    CHECK(static_cast<double>(j.at("frames_read").get<std::uint64_t>()) <=
          j.at("seconds").get<double>() * 30 / 5);
    check_accounting(j);
}
