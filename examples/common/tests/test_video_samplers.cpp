// The video samplers on short real clips, each with an expected outcome: the motion gate passes
// a moving clip (vtest.avi's pedestrians) and suppresses a static one (one of its frames
// repeated, written to a temp file); the mask silences what it covers and is clipped to the
// frame; scene change fires at the cut made by joining vtest.avi and tree.avi, and nowhere else;
// vtest.avi's key frames are found and an MJPEG clip is refused. Counts only, no clock.
#include "common/key_frames.hpp"
#include "common/motion_detector.hpp"
#include "common/scene_change.hpp"
#include "common/testing/child_process.hpp"
#include "common/testing/temp_dir.hpp"

#include <framepipe/ring.hpp>
#include <framepipe/sampling.hpp>

#include <catch2/catch.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

namespace fs = std::filesystem;
namespace fe = framepipe_examples;

namespace {

const std::string data = FRAMEPIPE_SAMPLING_TEST_DATA;

// Removed when the test process exits.
fs::path scratch() {
    static const framepipe_examples::testing::temp_dir dir("framepipe-samplers");
    return dir.path;
}

// The first `n` frames of a file (resized when `size` is given).
std::vector<cv::Mat> frames_of(const std::string& path, int n, cv::Size size = {}) {
    cv::VideoCapture in(path, cv::CAP_FFMPEG);
    REQUIRE(in.isOpened());
    std::vector<cv::Mat> out;
    cv::Mat f;
    while (static_cast<int>(out.size()) < n && in.read(f)) {
        if (size.area() > 0) {
            cv::resize(f, f, size);
        }
        out.push_back(f.clone());
    }
    REQUIRE(static_cast<int>(out.size()) == n);
    return out;
}

// Writes frames to an MJPEG AVI in the scratch directory and reads it back (what a file source
// would see: JPEG-compressed, so "static" means the same frame encoded again each time).
std::vector<cv::Mat> through_file(const std::vector<cv::Mat>& frames, const std::string& name) {
    const auto path = (scratch() / name).string();
    {
        cv::VideoWriter w(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, frames[0].size());
        REQUIRE(w.isOpened());
        for (const auto& f : frames) {
            w.write(f);
        }
    }
    return frames_of(path, static_cast<int>(frames.size()));
}

std::vector<fe::motion_result> motion_of(const std::vector<cv::Mat>& clip,
                                         fe::motion_options o = {}) {
    fe::motion_detector m(std::move(o));
    std::vector<fe::motion_result> r;
    for (const auto& f : clip) {
        r.push_back(m.detect(f));
    }
    return r;
}

// How many frames a motion gate (framepipe::gate in front of a ring, as framepipe-detect uses
// it) lets through, and how many it counts as sampled_out.
std::pair<std::uint64_t, std::uint64_t> through_gate(const std::vector<fe::motion_result>& motion) {
    framepipe::ring<fe::motion_result> to_detector(motion.size() + 1);
    framepipe::sampled gated(to_detector,
                             framepipe::gate([](const fe::motion_result& m) { return m.moving(); }));
    for (const auto& m : motion) {
        (void)gated.push(m);
    }
    const auto st = gated.stats();
    CHECK(st.pushed == st.popped + st.dropped + to_detector.size()); // the accounting identity
    return {to_detector.size(), gated.sampled_out()};
}

} // namespace

TEST_CASE("motion: the gate passes a moving clip (vtest.avi) and suppresses a static one") {
    const auto moving = frames_of(data + "/vtest.avi", 40);
    const auto still = through_file(std::vector<cv::Mat>(40, moving[20]), "static.avi");

    const auto m = motion_of(moving);
    CHECK(m[0].calibrating);
    int with_boxes = 0;
    for (std::size_t i = 1; i < m.size(); ++i) {
        with_boxes += m[i].moving() ? 1 : 0;
        CHECK(m[i].score < 0.8); // walking people, never a "lightning" reset
        for (const auto& b : m[i].boxes) {
            CHECK((b & cv::Rect(0, 0, 768, 576)) == b);
        }
    }
    CHECK(with_boxes >= 35); // people walk through every frame of it
    const auto [moving_kept, moving_out] = through_gate(m);
    CHECK(moving_kept == static_cast<std::uint64_t>(with_boxes));
    CHECK(moving_out == 40 - moving_kept);

    const auto s = motion_of(still);
    for (const auto& r : s) {
        CHECK_FALSE(r.moving());
        CHECK(r.score == 0);
    }
    const auto [still_kept, still_out] = through_gate(s);
    CHECK(still_kept == 0);
    CHECK(still_out == 40);
}

TEST_CASE("motion: a mask over the whole picture silences it; a polygon outside the frame is "
          "clipped and reported") {
    const auto moving = frames_of(data + "/vtest.avi", 15);
    const auto covered =
        motion_of(moving, {.mask = {{-50, -50}, {900, -50}, {900, 700}, {-50, 700}}});
    for (const auto& r : covered) {
        CHECK_FALSE(r.moving());
    }
    fe::motion_detector m({.mask = {{-50, -50}, {900, -50}, {900, 700}, {-50, 700}}});
    (void)m.detect(moving[0]);
    CHECK(m.mask_note() == "mask: 4 of 4 points lie outside the 768x576 frame; clipped to it");
    REQUIRE(m.clipped_mask().size() == 4);
    CHECK(std::abs(cv::contourArea(m.clipped_mask()) - 768.0 * 576.0) < 1);

    fe::motion_detector away({.mask = {{1000, 1000}, {1100, 1000}, {1100, 1100}}});
    (void)away.detect(moving[0]);
    CHECK(away.mask_note() == "mask: the polygon lies entirely outside the 768x576 frame; no mask");

    fe::motion_detector inside({.mask = {{0, 0}, {100, 0}, {100, 100}}});
    (void)inside.detect(moving[0]);
    CHECK(inside.mask_note().empty());

    // A triangle with one corner outside: cut along the frame's edge into a quadrilateral.
    const auto q = fe::clip_polygon({{10, 10}, {100, 10}, {10, -80}}, {768, 576});
    CHECK(q.size() == 4);
    CHECK(cv::contourArea(q) == Approx(850)); // (10,10) (100,10) (90,0) (10,0)

    CHECK_THROWS_WITH(fe::motion_detector({.threshold = 0, .mask = {}}), "threshold: must be in 1..255");
    CHECK_THROWS_WITH(fe::motion_detector({.mask = {{0, 0}, {1, 1}}}),
                      "mask: a polygon needs at least 3 points");
}

TEST_CASE("motion: a self-crossing or flat mask is refused, not taken for one outside the frame") {
    // A bow-tie inside a 200x200 frame (its shoelace area cancels out to 0).
    CHECK_THROWS_WITH(fe::motion_detector({.mask = {{0, 0}, {200, 200}, {200, 0}, {0, 200}}}),
                      "mask: edges 1 and 3 of the polygon cross or touch; list its points in order "
                      "around it");
    // Two lobes meeting at one corner, wound opposite ways.
    CHECK_THROWS_WITH(
        fe::motion_detector({.mask = {{0, 0}, {50, 50}, {100, 100}, {100, 0}, {50, 50}, {0, 100}}}),
        Catch::StartsWith("mask: edges "));
    // All points on one line; a repeated point does not make a triangle.
    CHECK_THROWS_WITH(fe::motion_detector({.mask = {{0, 0}, {10, 10}, {20, 20}}}),
                      "mask: the polygon encloses no area");
    CHECK_THROWS_WITH(fe::motion_detector({.mask = {{0, 0}, {10, 10}, {10, 10}}}),
                      "mask: the polygon encloses no area");
    // Accepted: the same four corners in order, a closing repeat of the first point, a concave
    // polygon, a polygon touching the frame's edge.
    for (const std::vector<cv::Point>& ok :
         {std::vector<cv::Point>{{0, 0}, {200, 0}, {200, 200}, {0, 200}},
          std::vector<cv::Point>{{0, 0}, {200, 0}, {200, 200}, {0, 0}},
          std::vector<cv::Point>{{0, 0}, {200, 0}, {100, 50}, {200, 200}, {0, 200}},
          std::vector<cv::Point>{{0, 0}, {100, 0}, {100, 100}, {100, 100}}}) {
        fe::motion_detector m({.mask = ok});
        (void)m.detect(cv::Mat(200, 200, CV_8UC3, cv::Scalar(0, 0, 0)));
        CHECK(m.mask_note().empty());
        CHECK_FALSE(m.clipped_mask().empty());
    }
    // A square inside the frame masks motion inside it: the mask works (the bow-tie's four
    // corners, in order).
    fe::motion_detector m({.mask = {{0, 0}, {200, 0}, {200, 200}, {0, 200}}});
    cv::Mat still(200, 200, CV_8UC3, cv::Scalar(0, 0, 0));
    CHECK(m.detect(still).calibrating);
    cv::Mat moved = still.clone();
    cv::rectangle(moved, cv::Rect(5, 80, 30, 40), cv::Scalar(255, 255, 255), cv::FILLED);
    CHECK(m.detect(moved).boxes.empty());
}

TEST_CASE("scene change: fires at the cut between two joined clips, and nowhere else") {
    const cv::Size size(384, 288);
    auto joined = frames_of(data + "/vtest.avi", 30, size);
    const auto tree = frames_of(data + "/tree.avi", 30, size);
    joined.insert(joined.end(), tree.begin(), tree.end());
    const auto clip = through_file(joined, "cut.avi");

    fe::scene_change_detector scenes;
    std::vector<std::size_t> cuts;
    double worst_inside = 0;
    for (std::size_t i = 0; i < clip.size(); ++i) {
        const auto r = scenes.update(clip[i]);
        if (r.cut) {
            cuts.push_back(i);
        } else {
            worst_inside = std::max(worst_inside, r.distance);
        }
    }
    INFO("largest distance within a scene: " << worst_inside);
    CHECK(cuts == std::vector<std::size_t>{0, 30});
    CHECK(worst_inside < 0.15); // far from the 0.3 threshold: not a lucky margin
}

TEST_CASE("key frames: vtest.avi's are found from GStreamer's flags; an MJPEG clip has none") {
    const auto keys = fe::scan_key_frames(data + "/vtest.avi");
    CHECK(keys.frames == 795);
    CHECK(keys.fps == Approx(10));
    REQUIRE(keys.keys.size() == 4); // DivX 3 with a key frame about every 20 s
    CHECK(keys.keys.front() == 0);
    CHECK(keys.is_key(0));
    CHECK_FALSE(keys.is_key(1));
    CHECK(keys.is_key(795)); // a looped file's second pass
    for (const auto k : keys.keys) {
        CHECK(k < 795);
    }

    const auto mjpeg = (scratch() / "intra.avi").string();
    (void)through_file(frames_of(data + "/vtest.avi", 10), "intra.avi");
    CHECK_THROWS_WITH(fe::scan_key_frames(mjpeg),
                      Catch::Contains("carries no key-frame information"));
    CHECK_THROWS_AS(fe::scan_key_frames((scratch() / "missing.avi").string()),
                    fe::key_frame_error);
}

TEST_CASE("key frames: numbered from the first frame when the first PTS is not 0") {
    // GOP 30 in MPEG-TS (the first PTS is the muxer's start, 0.125 s or so) and in MP4 with
    // B-frames and no edit list (the first PTS is the reordering delay): key frames 0, 30, 60,
    // ... as OpenCV numbers the frames, not shifted by that first PTS.
    for (const auto& [name, tune, mux] : {std::tuple{"gop30.ts", "tune=zerolatency", "mpegtsmux"},
                                          std::tuple{"bframes.mp4", "bframes=2", "mp4mux"}}) {
        const auto path = (scratch() / name).string();
        const auto made = framepipe_examples::testing::run(
            {"/usr/bin/gst-launch-1.0", "-q", "videotestsrc", "num-buffers=150", "pattern=ball", "!",
             "video/x-raw,width=160,height=120,framerate=30/1", "!", "x264enc", "key-int-max=30",
             tune, "!", "h264parse", "!", mux, "!", "filesink", "location=" + path});
        INFO(name << ": " << made.err);
        REQUIRE(made.exit_code == 0);
        const auto keys = fe::scan_key_frames(path);
        CHECK(keys.fps == Approx(30));
        CHECK(keys.keys == std::vector<std::uint64_t>{0, 30, 60, 90, 120});
    }
}
