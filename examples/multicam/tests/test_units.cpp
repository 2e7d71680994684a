// examples/multicam/tests/test_units.cpp - framepipe-multicam's parts without the program: the
// accounting identity over pauses, rotations and removals (a camera_set of synthetic cameras
// feeding a detector stage with a stand-in detector), the fairness index and its attainable
// shares, the rotation's clock, a POST /cameras cut short by the server's stop (handle_control
// with its stop token), and URL schemes in any case. No assertion depends on timing: the run
// only has to move some frames, and every figure is read once everything has drained.
#include "cameras.hpp"
#include "control.hpp"
#include "settings.hpp"
#include "stages.hpp"
#include "summary.hpp"

#include <catch2/catch.hpp>

#include <framepipe/pipeline.hpp>

#include <chrono>
#include <stop_token>
#include <thread>

namespace mc = framepipe_examples::multicam;
namespace det = framepipe_examples::detection;
using namespace std::chrono_literals;

namespace {

// Finds nothing, slowly enough that sessions end while their frames are pending or detected.
class slow_detector final : public det::detector {
public:
    std::vector<det::labelled_detection> detect(const cv::Mat&) override {
        std::this_thread::sleep_for(3ms);
        return {};
    }
    [[nodiscard]] std::string description() const override { return "test"; }
};

std::uint64_t dropped(const mc::consumer_drops& d) {
    return d.subscription.dropped + d.superseded + d.expired + d.session_ended;
}

// frames == detections + sum(drops) + in_flight (the detector's side).
void check_identity(const mc::camera_figures& f) {
    INFO(f.name << ": frames " << f.frames << ", detections " << f.detections << ", drops "
                << dropped(f.detector_drops) << ", in flight " << f.detector_in_flight);
    CHECK(f.frames == f.detections + dropped(f.detector_drops) + f.detector_in_flight);
}

mc::camera_figures cam(std::string name, mc::camera_status st, std::uint64_t frames,
                       std::uint64_t detections, std::uint32_t weight = 1) {
    mc::camera_figures f;
    f.name = std::move(name);
    f.status = st;
    f.frames = frames;
    f.detections = detections;
    f.weight = weight;
    return f;
}

} // namespace

TEST_CASE("every frame is detected or counted as dropped, across pauses, rotations and removals") {
    const std::size_t batch = GENERATE(std::size_t{1}, std::size_t{3});
    mc::settings s;
    s.size = "64x48";
    s.fps = 200;
    slow_detector d;
    mc::frame_batcher batches({.max_size = batch,
                               .max_delay = 2ms,
                               .max_per_source = 1,
                               .policy = framepipe::select_policy::weighted});
    framepipe::pipeline p("test");
    std::optional<mc::camera_figures> gone;
    std::uint64_t detected = 0;
    std::vector<mc::camera_figures> figures;
    mc::removed_totals removed;
    {
        mc::camera_set cameras(p, batches, nullptr,
                               {.ui_fps = 0,
                                .max_active = 2,
                                .rotate = 1ns, // every tick rotates
                                .make_options = [&s](const mc::camera_spec& spec, int number) {
                                    return mc::camera_options(s, spec, number);
                                }});
        mc::detect_step detect(d, cameras);
        p.channel(batches, "batches");
        p.sink("detector", batches, [&](const framepipe::batch<mc::frame_ptr>& b) { detect(b); });
        p.start();
        for (const char* name : {"a", "b", "c", "d"}) {
            cameras.add({name, "synthetic:", name[0] == 'a' ? 2u : 1u});
        }
        for (int i = 0; i < 12; ++i) {
            std::this_thread::sleep_for(40ms);
            cameras.tick();
            if (i == 6) {
                gone = cameras.remove("c");
                REQUIRE(gone);
            }
        }
        cameras.stop_all();
        batches.close();
        REQUIRE(p.request_stop(10s).clean);
        figures = cameras.figures();
        removed = cameras.removed();
        detected = detect.frames.load();
        CHECK(cameras.orphaned() == 0);
    }
    REQUIRE(figures.size() == 3);
    std::uint64_t detections = 0;
    std::uint64_t sessions = 0;
    for (const auto& f : figures) {
        check_identity(f);
        CHECK(f.detector_in_flight == 0); // all drained
        detections += f.detections;
        sessions += f.sessions;
    }
    CHECK(sessions > 3); // rotations happened
    // The removed camera's figures at its removal: the identity holds with what was in flight.
    check_identity(*gone);
    CHECK(removed.cameras == 1);
    CHECK(removed.frames == gone->frames);
    // Overall: every frame the detector ran on is some camera's detection.
    CHECK(detected == detections + removed.detections);
}

TEST_CASE("attainable shares: proportional to the weights, within each camera's cap") {
    const auto equal = mc::attainable_shares({1, 1, 1, 1}, {1, 1, 1, 1});
    for (const double x : equal) {
        CHECK(x == Approx(0.25));
    }
    // Weights 3:1:1:1:1 with full batches of 4: camera 1 cannot pass 1/4; the others share the rest.
    const auto capped = mc::attainable_shares({3, 1, 1, 1, 1}, {0.25, 0.25, 0.25, 0.25, 0.25});
    CHECK(capped[0] == Approx(0.25));
    for (std::size_t i = 1; i < capped.size(); ++i) {
        CHECK(capped[i] == Approx(0.1875));
    }
    // Uncapped (--batch 1, the detector saturated): 3/7 and 1/7.
    const auto plain = mc::attainable_shares({3, 1, 1, 1, 1}, {1, 1, 1, 1, 1});
    CHECK(plain[0] == Approx(3.0 / 7));
    CHECK(plain[1] == Approx(1.0 / 7));
    // Caps that cannot hold the whole (every frame detected): their proportions.
    const auto few = mc::attainable_shares({5, 1}, {0.25, 0.25});
    CHECK(few[0] == Approx(0.5));
    CHECK(few[1] == Approx(0.5));
}

TEST_CASE("fairness: over the cameras online with frames, against their attainable shares") {
    using st = mc::camera_status;
    // Four synthetic cameras served equally (the detector saturated: 100 batches of 1, frames to
    // spare) and one RTSP camera that never came online (jain 0.7999 before).
    const std::vector<mc::camera_figures> down = {
        cam("rtsp", st::reconnecting, 0, 0), cam("a", st::online, 300, 26), cam("b", st::online, 300, 25),
        cam("c", st::online, 300, 25), cam("d", st::online, 300, 25)};
    CHECK(*mc::fairness(down, 101) > 0.999);
    // An offline camera that delivered before, and a paused one, are left out too.
    auto more = down;
    more.push_back(cam("gone", st::offline, 50, 3));
    more.push_back(cam("resting", st::paused, 50, 40));
    CHECK(*mc::fairness(more, 101) > 0.999);
    // Weights 3:1:1:1:1, 100 full batches of 4 (the detector saturated): 100 and 75 each is the
    // best there is (0.25 vs 3/7 for camera 1).
    const std::vector<mc::camera_figures> weighted = {
        cam("a", st::online, 1000, 100, 3), cam("b", st::online, 1000, 75), cam("c", st::online, 1000, 75),
        cam("d", st::online, 1000, 75), cam("e", st::online, 1000, 75)};
    CHECK(*mc::fairness(weighted, 100) == Approx(1.0));
    // The detector keeps up with every frame (weights cannot matter): equal detections are fair.
    const std::vector<mc::camera_figures> idle = {
        cam("a", st::online, 300, 300, 3), cam("b", st::online, 300, 300), cam("c", st::online, 300, 300)};
    CHECK(*mc::fairness(idle, 600) == Approx(1.0));
    // Unfair service still reads unfair.
    const std::vector<mc::camera_figures> unfair = {cam("a", st::online, 1000, 90),
                                                    cam("b", st::online, 1000, 10)};
    CHECK(*mc::fairness(unfair, 100) < 0.7);
    CHECK_FALSE(mc::fairness({cam("x", st::paused, 10, 1)}, 10).has_value());
}

TEST_CASE("rotation: on a grid of the period, no drift, no burst after a late tick") {
    const std::chrono::steady_clock::time_point t0{};
    const auto period = std::chrono::nanoseconds(250ms);
    // Not yet due.
    CHECK_FALSE(mc::next_rotation(t0, t0 + 249ms, period).due);
    // Due a little late: the next one stays on the grid (t0 + 500 ms), no drift.
    auto step = mc::next_rotation(t0, t0 + 260ms, period);
    CHECK(step.due);
    CHECK(step.last == t0 + 250ms);
    CHECK(mc::next_rotation(step.last, t0 + 500ms, period).due);
    // Ticks every 250 ms for 10 s: 40 rotations (--rotate 0.25 over 10 s).
    auto last = t0;
    int rotations = 0;
    for (int i = 1; i <= 40; ++i) {
        const auto s = mc::next_rotation(last, t0 + i * 250ms + 3ms, period);
        rotations += s.due ? 1 : 0;
        last = s.last;
    }
    CHECK(rotations == 40);
    // A tick three periods late rotates once and restarts the grid at now.
    step = mc::next_rotation(t0, t0 + 760ms, period);
    CHECK(step.due);
    CHECK(step.last == t0 + 760ms);
    CHECK_FALSE(mc::next_rotation(step.last, t0 + 800ms, period).due);
    // No rotation without a period.
    CHECK_FALSE(mc::next_rotation(t0, t0 + 10s, std::chrono::nanoseconds(0)).due);
}

// POST /cameras with --max-attempts waits for the new camera to come online; a stop of the
// server (the control callback's stop token) ends that wait with 503, not with the camera's
// "no connection after N attempts" 400. The camera (an unserved port) can never come online,
// and with 1000 attempts it does not give up within the test: only the stop ends the wait. The
// stop comes once the camera was added, while the request waits for it or just before; either
// way the answer must be 503.
TEST_CASE("POST /cameras: a wait cut short by the server's stop answers 503") {
    const bool stop_first = GENERATE(false, true);
    mc::settings s;
    s.live.max_attempts = 1000;
    s.live.open_timeout = 1;
    framepipe::pipeline p("test");
    mc::frame_batcher batches({.max_size = 1, .max_delay = 2ms, .max_per_source = 1});
    framepipe_examples::control_response res;
    {
        mc::camera_set cameras(p, batches, nullptr,
                               {.ui_fps = 0,
                                .max_active = 0,
                                .make_options = [&s](const mc::camera_spec& spec, int number) {
                                    return mc::camera_options(s, spec, number);
                                }});
        p.channel(batches, "batches");
        p.sink("detector", batches, [](const framepipe::batch<mc::frame_ptr>&) {});
        p.start();
        mc::control_context control{s, cameras, {"rtsp"}};
        const framepipe_examples::control_request req{
            "POST", "/cameras", R"({"url": "rtsp://127.0.0.1:1/x", "name": "door"})"};
        std::stop_source stop;
        if (stop_first) {
            stop.request_stop();
            res = mc::handle_control(control, req, stop.get_token());
        } else {
            std::jthread server([&] { res = mc::handle_control(control, req, stop.get_token()); });
            // Once the camera is in the set, the request waits for it (or is about to).
            const auto added = [&] {
                const auto all = cameras.figures();
                return std::any_of(all.begin(), all.end(),
                                   [](const auto& f) { return f.name == "door"; });
            };
            while (!added()) {
                std::this_thread::yield();
            }
            stop.request_stop();
        }
        CHECK(cameras.figures().size() == 1); // not removed: the server is stopping
        cameras.stop_all();
        batches.close();
        REQUIRE(p.request_stop(10s).clean);
    }
    INFO(res.body);
    CHECK(res.status == 503);
    CHECK(res.body.find("server stopping") != std::string::npos);
}

TEST_CASE("scheme_of: URL schemes in any case (RFC 3986 3.1)") {
    CHECK(mc::scheme_of("RTSP://cam.local/x") == "rtsp");
    CHECK(mc::scheme_of("Rtsps://cam.local/x") == "rtsp");
    CHECK(mc::scheme_of("Http://cam.local/x") == "http");
    CHECK(mc::scheme_of("HTTPS://cam.local/x") == "https");
    CHECK(mc::scheme_of("V4L2:///dev/video0") == "v4l2");
    CHECK(mc::scheme_of("File:///tmp/a.avi") == "file");
    CHECK(mc::scheme_of("SYNTHETIC://64x48@5") == "synthetic");
    CHECK(mc::scheme_of("Gopher://x/y").empty());
    mc::settings s;
    s.size = "64x48";
    // The upper-case URL is read as the lower-case one: no usage_error.
    const auto o = mc::camera_options(s, {"a", "RTSP://127.0.0.1:1/x", 1}, 1);
    CHECK(o.capture.uri == "RTSP://127.0.0.1:1/x");
    CHECK_NOTHROW(mc::camera_options(s, {"b", "Synthetic://64x48@5", 1}, 2));
}
