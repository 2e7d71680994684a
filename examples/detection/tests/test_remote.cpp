// framepipe-detect --publish / --worker (remote.cpp): the seed-000 graph split across processes,
// with the real HOG detector on vtest.avi (and the tiny YOLOv8 test model of make_models.py,
// for class labels that are not UTF-8). NATS runs against a nats-server this test starts on a
// free loopback port; iceoryx in a namespace of its own (tests/transport/isolated.sh), where the
// camera side starts RouDi itself (--roudi-config). Bounds catch hangs and gross failures on a
// loaded 2-core host; docs/transport.md has the precise figures.
#include "common/testing/child_process.hpp"
#include "common/testing/http_client.hpp"
#include "support/nats_server.hpp"

#if defined(FRAMEPIPE_TEST_NATS)
#include <framepipe/transport/nats.hpp>
#endif

#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

namespace {

using process = framepipe_examples::testing::child;
using namespace std::chrono_literals;

nlohmann::json last_json_line(const std::string& out) {
    const auto end = out.find_last_not_of('\n');
    const auto start = out.rfind('\n', end);
    return nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1));
}

std::vector<std::string> detect(std::vector<std::string> args) {
    args.insert(args.begin(), FRAMEPIPE_DETECT_EXE);
    args.insert(args.end(), {"--video", FRAMEPIPE_TEST_VIDEO});
    return args;
}

// A worker at a lower priority, as on a host that also runs the camera: two HOG workers would
// otherwise take both of this machine's cores from the camera and its UI.
std::vector<std::string> niced(std::vector<std::string> args) {
    args = detect(std::move(args));
    args.insert(args.begin(), {"/usr/bin/nice", "-n", "15"});
    return args;
}

} // namespace

#if defined(FRAMEPIPE_TEST_NATS)
TEST_CASE(
    "detect over NATS: two workers in a queue group share the frames; the UI holds its rate "
    "and names the worker of each result; every frame is accounted for") {
    framepipe_test::nats_server server;
    process w1(
        niced({"--worker", server.url(), "--worker-name", "w1", "--detect-fps", "0", "--json"}));
    process w2(
        niced({"--worker", server.url(), "--worker-name", "w2", "--detect-fps", "0", "--json"}));
    REQUIRE(w1.wait_for("worker w1 on", 60s));
    REQUIRE(w2.wait_for("worker w2 on", 60s));
    process cam(detect({"--publish", server.url(), "--no-ui", "--duration", "8", "--json"}));
    REQUIRE(cam.wait() == 0);
    w1.terminate();
    w2.terminate();
    REQUIRE(w1.wait() == 0);
    REQUIRE(w2.wait() == 0);
    const auto j = last_json_line(cam.out());
    INFO(j.dump(2));
    CHECK(j["ui_fps"].get<double>() >= 13.0); // 15 asked: the workers' HOG never holds it up
    CHECK(j["results_by_worker"].contains("w1"));
    CHECK(j["results_by_worker"].contains("w2"));
    const auto& t = j["transport_stats"];
    CHECK(t["sent"].get<std::uint64_t>() > 150);
    // Every frame sent: acknowledged by a worker, or lost in transport. None uncounted.
    CHECK(t["acknowledged"].get<std::uint64_t>() + t["lost_in_transport"].get<std::uint64_t>() ==
          t["sent"].get<std::uint64_t>());
    const auto a = last_json_line(w1.out());
    const auto b = last_json_line(w2.out());
    CHECK(a["frames_received"].get<std::uint64_t>() + b["frames_received"].get<std::uint64_t>() ==
          t["acknowledged"].get<std::uint64_t>());
}

TEST_CASE("detect over NATS: a worker name, class labels and a video file name that are not "
          "UTF-8: both sides run and print their summary, with U+FFFD") {
    framepipe_test::nats_server server;
    // isolated.sh's own /tmp: removed with the namespace.
    const std::string names = "/tmp/framepipe-remote-latin1-names.txt";
    const std::string video = "/tmp/framepipe-remote-v\xff.avi";
    {
        std::FILE* f = std::fopen(names.c_str(), "w");
        REQUIRE(f != nullptr);
        std::fputs("cat\ncaf\xe9\nni\xf1o\n", f); // Latin-1
        std::fclose(f);
        std::remove(video.c_str());
        REQUIRE(symlink(FRAMEPIPE_TEST_VIDEO, video.c_str()) == 0);
    }
    // The YOLOv8 test model finds class 1 and class 2 in every frame (make_models.py). Before
    // the fix (json type_error 316) the worker's result encoder threw on its first result (stage
    // 'detector' failed), the camera's UI stage on the first result it drew (labels name the
    // worker), and each side's --json summary at exit (the worker's name, the file name).
    const std::string model = std::string(FRAMEPIPE_TEST_MODELS) + "/yolov8.onnx";
    process w({FRAMEPIPE_DETECT_EXE, "--worker", server.url(), "--worker-name", "w\xff",
               "--model", model, "--input-size", "64", "--classes", names, "--json"});
    REQUIRE(w.wait_for("worker w\xff on", 60s));
    process cam({FRAMEPIPE_DETECT_EXE, "--publish", server.url(), "--port", "0", "--duration",
                 "600", "--json", "--video", video});
    const auto where = cam.wait_for("serving the live UI at http://127.0.0.1:", 60s);
    REQUIRE(where);
    const auto port = static_cast<unsigned short>(std::stoi(*where));
    if (!w.wait_for_count("inference ", 5, 90s)) {
        w.terminate();
        const int code = w.wait();
        FAIL("the worker stopped: exit code " << code << ", stderr: " << w.err());
    }
    // Results back at the camera side (polled on /stats.json): its UI stage draws them, labels
    // naming the worker ("caf\xe9 @w\xff").
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    bool received = false;
    while (!received && std::chrono::steady_clock::now() < deadline) {
        const auto r = framepipe_examples::testing::http_get(port, "/stats.json");
        REQUIRE(r.status == 200);
        received = nlohmann::json::parse(r.body).at("results_received").get<std::uint64_t>() > 0;
        std::this_thread::sleep_for(100ms); // a poll interval, not an ordering
    }
    CHECK(received);
    cam.terminate();
    const int cam_code = cam.wait();
    INFO("camera stderr: " << cam.err());
    REQUIRE(cam_code == 0);
    w.terminate();
    const int w_code = w.wait();
    INFO("worker stderr: " << w.err());
    REQUIRE(w_code == 0);
    const std::string fffd = "\xef\xbf\xbd"; // U+FFFD
    const auto j = last_json_line(cam.out());
    INFO(j.dump(2));
    CHECK(j["video"].get<std::string>().find("v" + fffd + ".avi") != std::string::npos);
    CHECK(j["last_worker"] == "w" + fffd);
    CHECK(j["results_by_worker"].contains("w" + fffd));
    CHECK(j["results_received"].get<std::uint64_t>() > 0);
    const auto k = last_json_line(w.out());
    CHECK(k["name"] == "w" + fffd);
    CHECK(k["detections"].get<std::uint64_t>() >= 5);
}

TEST_CASE("detect over NATS: bad input is one line and exit 2; a malformed frame is counted") {
    framepipe_test::nats_server server;
    SECTION("unreachable at start, after --max-attempts") {
        const auto url = server.url();
        server.kill();
        process p(detect({"--publish", url, "--no-ui", "--max-attempts", "2"}));
        CHECK(p.wait() == 2);
        CHECK(p.err().find("framepipe-detect: cannot connect to " + url) != std::string::npos);
        CHECK(p.err().find("(2 attempts)") != std::string::npos);
    }
    SECTION("with --sampling (a worker detects what it is sent): refused before connecting") {
        process p(detect({"--publish", server.url(), "--no-ui", "--sampling", "every-n:3"}));
        CHECK(p.wait() == 2);
        CHECK(p.err() == "framepipe-detect: --publish / --worker: not with --sampling (a worker "
                         "detects what it is sent)\n");
    }
    SECTION("a live input, or a flag of the one-process run: refused before connecting") {
        // The camera side opened a live input once, so one that was down ended the run, and
        // these flags were taken and ignored.
        for (const auto& [extra, needle] : std::vector<std::pair<std::vector<std::string>,
                                                                 std::string>>{
                 {{"--video", "rtsp://127.0.0.1:9/none"}, "--publish: reads a video file"},
                 {{"--stall-timeout", "5"}, "--stall-timeout: only for live inputs, not with"},
                 {{"--motion-mask", "1,1 2,2 1,2"}, "--motion-mask: only with --sampling"},
                 {{"--dot", "/tmp/graph.dot"}, "--dot: not with --publish / --worker"}}) {
            std::vector<std::string> args{FRAMEPIPE_DETECT_EXE, "--publish", server.url(),
                                          "--no-ui"};
            args.insert(args.end(), extra.begin(), extra.end());
            if (extra.front() != "--video") {
                args.insert(args.end(), {"--video", FRAMEPIPE_TEST_VIDEO});
            }
            process p(args);
            CHECK(p.wait() == 2);
            const auto err = p.err();
            INFO(err);
            CHECK(err.find("framepipe-detect: " + needle) == 0);
            CHECK(std::count(err.begin(), err.end(), '\n') == 1);
        }
    }
    SECTION("raw frames over max_payload (768x576 BGR is 1.3 MB; the server takes 1 MB)") {
        process p(detect({"--publish", server.url(), "--no-ui", "--wire-codec", "raw"}));
        CHECK(p.wait() == 2);
        const auto err = p.err();
        CHECK(err.find("over the server's max_payload of 1048576: use --wire-codec jpeg") !=
              std::string::npos);
        CHECK(std::count(err.begin(), err.end(), '\n') == 1);
    }
    SECTION("JPEG frames over a small max_payload: the camera stops, one line, exit 2") {
        server.kill();
        const std::string config = "/tmp/framepipe-small-payload.conf"; // isolated.sh's own /tmp
        std::FILE* f = std::fopen(config.c_str(), "w");
        REQUIRE(f != nullptr);
        std::fputs("max_payload: 16384\n", f); // 16 KB: a vtest.avi JPEG is about 50 KB
        std::fclose(f);
        framepipe_test::nats_server small({.config = config});
        process p(detect({"--publish", small.url(), "--no-ui", "--duration", "10"}));
        CHECK(p.wait() == 2);
        const auto err = p.err();
        INFO(err);
        CHECK(err.find("framepipe-detect: stage 'to-workers' failed: message of ") != std::string::npos);
        CHECK(err.find("over the server's max_payload of 16384") != std::string::npos);
    }
    SECTION("malformed messages on the frames subject: counted, skipped, no crash") {
        process w(detect({"--worker", server.url(), "--worker-name", "w1", "--json"}));
        REQUIRE(w.wait_for("worker w1 on", 60s));
        framepipe::transport::nats_connection nc({.servers = {server.url()}});
        const std::string subject = framepipe::transport::frame_subject("detect", "cam0");
        // Not a framepipe message; and a framepipe envelope around a corrupt JPEG.
        const std::string junk = "GET / HTTP/1.1";
        REQUIRE(natsConnection_Publish(nc.get(), subject.c_str(), junk.data(),
                                       static_cast<int>(junk.size())) == NATS_OK);
        framepipe::transport::nats_publisher<framepipe::transport::bytes_codec> pub(
            nc, {.subject = subject});
        REQUIRE(pub.send(std::vector<std::byte>(1000, std::byte{0xFF})) ==
                framepipe::transport::send_status::sent);
        (void)natsConnection_FlushTimeout(nc.get(), 2000);
        std::this_thread::sleep_for(500ms);
        w.terminate();
        REQUIRE(w.wait() == 0);
        CHECK(last_json_line(w.out())["frames_malformed"].get<std::uint64_t>() == 2);
    }
}
#endif

#if defined(FRAMEPIPE_TEST_ICEORYX)
TEST_CASE(
    "detect over iceoryx: the UI holds its rate while the worker runs HOG; the worker takes "
    "fresh frames, read in the chunk the camera wrote") {
    // The camera starts RouDi (--roudi-config); the worker waits for it.
    process cam(detect({"--publish", "iceoryx", "--no-ui", "--duration", "120", "--json",
                        "--roudi-config", FRAMEPIPE_ROUDI_CONFIG}));
    REQUIRE(cam.wait_for("publishing frames on iceoryx", 60s));
    process w(
        niced({"--worker", "iceoryx", "--worker-name", "w1", "--detect-fps", "0", "--json"}));
    REQUIRE(w.wait_for("worker w1 on", 60s));
    // Three inferences, however long HOG at nice 15 takes on a loaded host; then an orderly
    // stop of both (SIGTERM), the worker first (before the camera and its RouDi go).
    CHECK(w.wait_for_count("inference ", 3, 90s));
    w.terminate();
    REQUIRE(w.wait() == 0);
    cam.terminate();
    REQUIRE(cam.wait() == 0);
    const auto j = last_json_line(cam.out());
    const auto k = last_json_line(w.out());
    INFO(j.dump(2));
    INFO(k.dump(2));
    CHECK(j["ui_fps"].get<double>() >= 13.0);
    CHECK(j["results_by_worker"].contains("w1"));
    CHECK(j["transport_stats"]["no_buffer"].get<std::uint64_t>() == 0);
    CHECK(k["detections"].get<std::uint64_t>() >= 3);
    // Frames dropped from the worker's iceoryx queue (2 deep) while its receiving thread was
    // starved count as lost in transport: a few on a loaded host, none on an idle one.
    CHECK(k["lost_in_transport"].get<std::uint64_t>() * 10 <= k["frames_received"].get<std::uint64_t>());
    // The same gaps show on the worker's frames channel (a loss_counted slot), as a drop reason.
    const auto frames = std::find_if(k["channels"].begin(), k["channels"].end(),
                                     [](const auto& c) { return c["name"] == "frames"; });
    REQUIRE(frames != k["channels"].end());
    CHECK((*frames)["dropped_by_reason"].value("lost_in_transport", std::uint64_t{0}) ==
          k["lost_in_transport"].get<std::uint64_t>());
    // The bar is one frame interval (33 ms at 30 fps) + 5 ms; a loaded host gets slack.
    CHECK(k["detect_age_p50_ms"].get<double>() <= 33.3 + 30);
    CHECK(k["detect_age_p99_ms"].get<double>() <= 33.3 + 5 + 120);
}

TEST_CASE("detect over iceoryx: RouDi not running: one line, exit 2") {
    process p(detect({"--worker", "iceoryx", "--json"}));
    CHECK(p.wait() == 2);
    const auto err = p.err();
    CHECK(err.rfind("framepipe-detect: RouDi is not running (/tmp/roudi: ", 0) == 0);
    CHECK(std::count(err.begin(), err.end(), '\n') == 1);
}
#endif
