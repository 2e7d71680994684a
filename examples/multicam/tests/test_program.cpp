// framepipe-multicam end to end: bad input at start (one line, exit 2); a file camera, three
// synthetic ones and an RTSP camera whose server (common/testing/rtsp_server.py, started here)
// is killed and restarted, while the others keep their rate and their detector share; cameras
// added and removed over HTTP; every refusal of the control endpoints (4xx, and nothing
// opened); --max-active with and without rotation; /metrics checked by promtool.
//
// Nothing is ordered by a sleep: a step waits for a line the program prints, or polls
// /stats.json until a condition holds (a generous deadline: a loaded 2-core machine). Bounds are
// derived from the run itself (rates and shares before and during an outage), never from
// wall-clock time.
#include "common/testing/child_process.hpp"
#include "common/testing/http_client.hpp"
#include "common/testing/rtsp_server.hpp"
#include "common/testing/ws_frames.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace t = framepipe_examples::testing;
namespace http = boost::beast::http;
using nlohmann::json;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

const std::string exe = FRAMEPIPE_MULTICAM_EXE;
const std::string models = FRAMEPIPE_TEST_MODELS;
const std::string video = FRAMEPIPE_TEST_VIDEO;

// Runs the program to completion with `args`; expects exit 2 and one line on stderr holding
// `says`.
void expect_refused(std::vector<std::string> args, const std::string& says) {
    args.insert(args.begin(), exe);
    const auto r = t::run(args);
    INFO("args: " << args.back() << "\nstderr: " << r.err << "\nstdout: " << r.out.substr(0, 2000));
    CHECK(r.exit_code == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("framepipe-multicam: ") == 0);
    CHECK(r.err.find(says) != std::string::npos);
}

// The program serving on a free port; its port once it says so.
struct program {
    explicit program(std::vector<std::string> args) {
        args.insert(args.begin(), exe);
        for (const char* a : {"--port", "0", "--ui-fps", "2", "--tile-width", "160"}) {
            args.emplace_back(a);
        }
        process = std::make_unique<t::child>(args);
        const auto line = process->wait_for("serving the live UI at http://127.0.0.1:", 60s);
        INFO("stderr: " << process->err());
        REQUIRE(line);
        port = static_cast<unsigned short>(std::stoi(line->substr(0, line->find('/'))));
    }
    ~program() {
        if (process) {
            process->terminate();
            (void)process->wait();
        }
    }
    program(const program&) = delete;
    program& operator=(const program&) = delete;

    json stats() const {
        const auto r = t::http_get(port, "/stats.json");
        REQUIRE(r.status == 200);
        return json::parse(r.body);
    }

    // Polls /stats.json until `ok` holds (true), or 90 s pass (false).
    bool until(const std::function<bool(const json&)>& ok) const {
        const auto deadline = clk::now() + 90s;
        while (clk::now() < deadline) {
            if (ok(stats())) {
                return true;
            }
            std::this_thread::sleep_for(100ms); // a poll interval, not an ordering
        }
        return false;
    }

    std::unique_ptr<t::child> process;
    unsigned short port = 0;
};

const json& camera(const json& stats, const std::string& name) {
    for (const auto& c : stats.at("cameras")) {
        if (c.at("name") == name) {
            return c;
        }
    }
    FAIL("no camera " << name << " in " << stats.dump());
    static const json none;
    return none;
}

bool has_camera(const json& stats, const std::string& name) {
    const auto& all = stats.at("cameras");
    return std::any_of(all.begin(), all.end(), [&](const json& c) { return c.at("name") == name; });
}

// promtool's verdict on a /metrics body ("" when it passes).
std::string promtool_check(const std::string& text) {
    const std::string path = "/tmp/framepipe-multicam-metrics-" + std::to_string(::getpid()) + ".txt";
    {
        std::FILE* f = std::fopen(path.c_str(), "w");
        REQUIRE(f != nullptr);
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
    }
    const auto r = t::run({"/bin/sh", "-c", std::string(FRAMEPIPE_PROMTOOL) + " check metrics < " + path});
    std::remove(path.c_str());
    return r.exit_code == 0 ? std::string() : "exit " + std::to_string(r.exit_code) + ": " + r.out + r.err;
}

t::http_response post(unsigned short port, const std::string& body,
                      std::map<std::string, std::string> headers = {}) {
    headers.emplace("Content-Type", "application/json");
    return t::http_request(port, http::verb::post, "/cameras", body, headers);
}

} // namespace

TEST_CASE("bad input at start: one line on stderr and exit 2") {
    expect_refused({"--video", "a=synthetic:", "--video", "a=synthetic:"}, "duplicate camera name 'a'");
    expect_refused({"--synthetic", "2", "--priority", "cam1=0"}, "--priority 'cam1=0'");
    expect_refused({"--synthetic", "2", "--priority", "cam1=-3"}, "whole number from 1");
    expect_refused({"--synthetic", "2", "--priority", "cam9=2"}, "no camera named 'cam9'");
    expect_refused({"--synthetic", "2", "--max-active", "0"}, "--max-active: must be at least 1");
    expect_refused({"--synthetic", "2", "--batch", "2"}, "cannot take a batch of 2");
    expect_refused({"--synthetic", "2", "--model", models + "/yolov8.onnx", "--input-size", "64",
                    "--batch", "4"},
                   "cannot take a batch of 4");
    expect_refused({"--synthetic", "1", "--host", "0.0.0.0"}, "--control-token");
    expect_refused({"--synthetic", "1", "--allow-sources", "rtsp,gopher"}, "unknown scheme 'gopher'");
    expect_refused({"--video", "ftp://example/x"}, "unsupported scheme");
    expect_refused({}, "no camera");
    // Floating-point flags refuse NaN (CLI::Range lets it through), naming the flag; --batch is
    // checked as a flag too.
    for (const char* flag :
         {"--rotate", "--max-age", "--confidence", "--nms", "--batch-delay", "--ui-fps", "--fps"}) {
        expect_refused({"--synthetic", "1", "--no-ui", "--duration", "1", flag, "nan"},
                       std::string(flag) + ": Value nan");
    }
    expect_refused({"--synthetic", "1", "--no-ui", "--duration", "nan"}, "--duration: Value nan");
    expect_refused({"--synthetic", "1", "--no-ui", "--duration", "1", "--fps", "inf"},
                   "--fps: Value inf");
    expect_refused({"--synthetic", "1", "--batch", "0"}, "--batch: Value 0");
    // A URL nobody serves, with --max-attempts: the attempts fail fast (connection refused).
    const auto url = "rtsp://127.0.0.1:" + std::to_string(t::free_port()) + "/none";
    expect_refused({"--synthetic", "1", "--video", "gone=" + url, "--max-attempts", "2",
                    "--reconnect-initial", "0.05", "--reconnect-max", "0.1", "--no-ui"},
                   url + ": no connection after 2 attempts");
}

TEST_CASE("five cameras, one RTSP camera killed and restarted: the others keep rate and share",
          "[live]") {
    auto server = std::make_unique<t::rtsp_server>(FRAMEPIPE_TEST_PYTHON, FRAMEPIPE_RTSP_SERVER,
                                                   t::rtsp_server_options{.fps = 15});
    const int rtsp_port = server->port;
    program p({"--video", "file=" + video, "--video", "live=" + server->url, "--synthetic", "3",
               "--size", "320x240", "--fps", "15", "--model", models + "/yolov8_batch.onnx",
               "--input-size", "64", "--batch", "4", "--reconnect-initial", "0.2",
               "--reconnect-max", "0.5", "--stall-timeout", "2"});
    const std::vector<std::string> others{"file", "cam3", "cam4", "cam5"};
    REQUIRE(p.until([&](const json& s) {
        return std::all_of(s["cameras"].begin(), s["cameras"].end(), [](const json& c) {
            return c["status"] == "online" && c["detections"].get<int>() >= 10;
        });
    }));
    const json before = p.stats();
    CHECK(before["camera_count"] == 5);
    CHECK(before["batch_max"] == 4);
    CHECK(before["batches"].get<int>() > 0);
    const auto metrics = t::http_get(p.port, "/metrics");
    REQUIRE(metrics.status == 200);
    CHECK(promtool_check(metrics.body).empty());
    for (const auto& name : {"file", "live", "cam3"}) {
        CHECK(metrics.body.find(std::string("framepipe_multicam_camera_frames_total{camera=\"") +
                                name + "\"}") != std::string::npos);
    }

    // The RTSP camera's server dies: a status change, never an exit.
    server->kill_now();
    REQUIRE(p.until([](const json& s) { return camera(s, "live")["status"] != "online"; }));
    const json down = p.stats();
    // While it is down, the others go on: 20 more detections each.
    REQUIRE(p.until([&](const json& s) {
        return std::all_of(others.begin(), others.end(), [&](const std::string& n) {
            return camera(s, n)["detections"].get<int>() >= camera(down, n)["detections"].get<int>() + 20;
        });
    }));
    const json outage = p.stats();
    CHECK(camera(outage, "live")["status"] != "online");
    const double t0 = before["seconds"].get<double>();
    const double t1 = down["seconds"].get<double>();
    const double t2 = outage["seconds"].get<double>();
    REQUIRE(t1 > t0);
    REQUIRE(t2 > t1);
    double detected_before = 0;
    double detected_during = 0;
    for (const auto& n : others) {
        detected_before += camera(before, n)["detections"].get<double>();
        detected_during += camera(outage, n)["detections"].get<double>() -
                           camera(down, n)["detections"].get<double>();
    }
    for (const auto& n : others) {
        INFO(n << " before " << camera(before, n).dump() << "\nduring " << camera(outage, n).dump());
        // Its rate (frames per second of the program's own clock) holds up: within half and
        // twice the rate it had before (a loaded machine slows everyone a little).
        const double rate_before = camera(before, n)["frames"].get<double>() / t0;
        const double rate_during = (camera(outage, n)["frames"].get<double>() -
                                    camera(down, n)["frames"].get<double>()) /
                                   (t2 - t1);
        CHECK(rate_during > 0.5 * rate_before);
        CHECK(rate_during < 2.0 * rate_before);
        // Its share of the detector among the cameras still up does not shrink (the dead
        // camera's share goes to the others, or to nobody).
        const double share_before = camera(before, n)["detections"].get<double>() / detected_before;
        const double share_during = (camera(outage, n)["detections"].get<double>() -
                                     camera(down, n)["detections"].get<double>()) /
                                    detected_during;
        CHECK(share_during > 0.6 * share_before);
    }

    // The server comes back on the same port: the camera reconnects and is detected again.
    server = std::make_unique<t::rtsp_server>(FRAMEPIPE_TEST_PYTHON, FRAMEPIPE_RTSP_SERVER,
                                              t::rtsp_server_options{.port = rtsp_port, .fps = 15});
    REQUIRE(p.until([&](const json& s) {
        const auto& live = camera(s, "live");
        return live["status"] == "online" && live["reconnects"].get<int>() >= 1 &&
               live["detections"].get<int>() >= camera(outage, "live")["detections"].get<int>() + 5;
    }));
    const json after = p.stats();
    CHECK(after["camera_count"] == 5);
    CHECK(after["jain_index"].get<double>() > 0.5);
    for (const auto& c : after["cameras"]) {
        INFO(c.dump());
        CHECK(c["age_p99_ms"].get<double>() >= c["age_p50_ms"].get<double>());
        // Every frame detected or dropped for a reason, but the few in flight (the counters are
        // read one after the other while frames flow: a frame may be in two of them, or none).
        double dropped = 0;
        for (const auto& [reason, n] : c["drops"]["detector"].items()) {
            dropped += n.get<double>();
        }
        const double in_flight = c["frames"].get<double>() - c["detections"].get<double>() - dropped;
        CHECK(in_flight >= -10);
        CHECK(in_flight <= 10);
    }
    p.process->terminate();
    CHECK(p.process->wait() == 0);
    p.process.reset();
}

TEST_CASE("cameras added and removed over HTTP; every refusal is a 4xx and opens nothing") {
    const std::string token = "s3cret-token";
    program p({"--synthetic", "2", "--size", "160x120", "--fps", "10", "--max-active", "3",
               "--control-token", token, "--max-attempts", "2", "--reconnect-initial", "0.05",
               "--reconnect-max", "0.1"});
    const std::map<std::string, std::string> auth{{"Authorization", "Bearer " + token}};
    const auto host = "127.0.0.1:" + std::to_string(p.port);
    REQUIRE(p.until([](const json& s) { return s["active"] == 2; }));
    const json base = p.stats();
    const auto opened = base["cameras_opened"].get<int>();
    CHECK(opened == 2);
    const std::string body = R"({"url": "synthetic://160x120@10", "name": "extra", "weight": 2})";

    struct refusal {
        const char* what;
        unsigned status;
        http::verb method;
        std::string body;
        std::map<std::string, std::string> headers;
    };
    auto with = [&](std::map<std::string, std::string> h) {
        h.insert(auth.begin(), auth.end());
        return h;
    };
    const std::vector<refusal> refusals{
        {"a CORS preflight", 403, http::verb::options, "",
         with({{"Origin", "http://evil.example"}, {"Access-Control-Request-Method", "POST"}})},
        {"a wrong content type", 415, http::verb::post, body, with({{"Content-Type", "text/plain"}})},
        {"a form body", 415, http::verb::post, body,
         with({{"Content-Type", "application/x-www-form-urlencoded"}})},
        {"a foreign Origin", 403, http::verb::post, body,
         with({{"Content-Type", "application/json"}, {"Origin", "http://evil.example"}})},
        {"a rebinding Host", 403, http::verb::post, body,
         with({{"Content-Type", "application/json"}, {"Host", "evil.example:" + std::to_string(p.port)}})},
        {"a Host on another port", 403, http::verb::post, body,
         with({{"Content-Type", "application/json"}, {"Host", "127.0.0.1:1"}})},
        {"no token", 401, http::verb::post, body, {{"Content-Type", "application/json"}}},
        {"a wrong token", 401, http::verb::post, body,
         {{"Content-Type", "application/json"}, {"Authorization", "Bearer nope"}}},
        {"a file URL (not in --allow-sources)", 403, http::verb::post,
         R"({"url": ")" + video + R"(", "name": "f"})", with({{"Content-Type", "application/json"}})},
        {"a device", 403, http::verb::post, R"({"url": "v4l2:///dev/video0"})",
         with({{"Content-Type", "application/json"}})},
        {"not JSON", 400, http::verb::post, "url=x", with({{"Content-Type", "application/json"}})},
        {"no url", 400, http::verb::post, R"({"name": "x"})", with({{"Content-Type", "application/json"}})},
        {"weight 0", 400, http::verb::post, R"({"url": "synthetic:", "weight": 0})",
         with({{"Content-Type", "application/json"}})},
        {"weight -2", 400, http::verb::post, R"({"url": "synthetic:", "weight": -2})",
         with({{"Content-Type", "application/json"}})},
        {"weight 1.5", 400, http::verb::post, R"({"url": "synthetic:", "weight": 1.5})",
         with({{"Content-Type", "application/json"}})},
        {"a duplicate name", 400, http::verb::post, R"({"url": "synthetic:", "name": "cam1"})",
         with({{"Content-Type", "application/json"}})},
        {"a bad name", 400, http::verb::post, R"({"url": "synthetic:", "name": "a/b"})",
         with({{"Content-Type", "application/json"}})},
        {"an unknown field", 400, http::verb::post, R"({"url": "synthetic:", "colour": 1})",
         with({{"Content-Type", "application/json"}})},
        {"a bad synthetic size", 400, http::verb::post, R"({"url": "synthetic://9x9"})",
         with({{"Content-Type", "application/json"}})},
        {"DELETE of no camera", 404, http::verb::delete_, "", auth},
        {"PUT", 405, http::verb::put, body, with({{"Content-Type", "application/json"}})},
    };
    for (const auto& r : refusals) {
        INFO(r.what);
        const auto target = r.method == http::verb::delete_ ? "/cameras/nobody" : "/cameras";
        const auto res = t::http_request(p.port, r.method, target, r.body, r.headers);
        CHECK(res.status == r.status);
        CHECK(json::parse(res.body, nullptr, false).contains("error"));
        CHECK(res.headers.count("access-control-allow-origin") == 0);
    }
    const json after_refusals = p.stats();
    CHECK(after_refusals["cameras_opened"] == opened); // nothing was opened
    CHECK(after_refusals["camera_count"] == 2);
    CHECK(after_refusals["server"]["control_refused"].get<int>() == 8); // the server's own checks

    // Added at run time (the page's own Origin is fine), detected, then removed.
    const auto added = post(p.port, body, with({{"Origin", "http://" + host}}));
    INFO(added.body);
    REQUIRE(added.status == 201);
    CHECK(json::parse(added.body)["name"] == "extra");
    REQUIRE(p.until([](const json& s) {
        return has_camera(s, "extra") && camera(s, "extra")["status"] == "online" &&
               camera(s, "extra")["detections"].get<int>() > 0;
    }));
    CHECK(camera(p.stats(), "extra")["weight"] == 2);
    CHECK(p.stats()["cameras_opened"] == opened + 1);
    // --max-active 3: a fourth camera waits, paused, and takes the slot of one removed.
    REQUIRE(post(p.port, R"({"url": "synthetic:", "name": "fourth"})", auth).status == 201);
    CHECK(camera(p.stats(), "fourth")["status"] == "paused");
    const auto removed = t::http_request(p.port, http::verb::delete_, "/cameras/extra", "", auth);
    REQUIRE(removed.status == 200);
    CHECK(json::parse(removed.body)["removed"] == "extra");
    REQUIRE(p.until([](const json& s) {
        return !has_camera(s, "extra") && camera(s, "fourth")["status"] == "online";
    }));
    CHECK(t::http_request(p.port, http::verb::delete_, "/cameras/extra", "", auth).status == 404);

    // A URL nobody serves, with --max-attempts 2: 400 once it gave up, and it is gone again (a
    // slot is free for it: "fourth" leaves first).
    REQUIRE(t::http_request(p.port, http::verb::delete_, "/cameras/fourth", "", auth).status == 200);
    const auto url = "rtsp://127.0.0.1:" + std::to_string(t::free_port()) + "/none";
    const auto gone = post(p.port, R"({"url": ")" + url + R"(", "name": "gone"})", auth);
    INFO(gone.body);
    CHECK(gone.status == 400);
    CHECK(gone.body.find("no connection after 2 attempts") != std::string::npos);
    const json end = p.stats();
    CHECK(end["camera_count"] == 2);
    CHECK_FALSE(has_camera(end, "gone"));
    CHECK(promtool_check(t::http_get(p.port, "/metrics").body).empty());
    p.process->terminate();
    CHECK(p.process->wait() == 0);
    p.process.reset();
}

TEST_CASE("--max-active with --rotate: every camera gets its turn, the others are paused") {
    program p({"--synthetic", "3", "--size", "160x120", "--fps", "10", "--max-active", "1",
               "--rotate", "1"});
    REQUIRE(p.until([](const json& s) {
        return std::all_of(s["cameras"].begin(), s["cameras"].end(), [](const json& c) {
            return c["sessions"].get<int>() >= 1 && c["detections"].get<int>() > 0;
        });
    }));
    const json s = p.stats();
    CHECK(s["active"].get<int>() <= 1);
    CHECK(s["paused"].get<int>() >= 2);
    CHECK(s["cameras_opened"].get<int>() >= 3);
}

namespace {

// A link to the test video whose name is not valid UTF-8 (a byte 0xFF), removed at the end.
struct non_utf8_video {
    non_utf8_video()
        : path("/tmp/framepipe-multicam-" + std::to_string(::getpid()) + "-\xff.avi") {
        std::filesystem::remove(path);
        std::filesystem::create_symlink(video, path);
    }
    ~non_utf8_video() { std::filesystem::remove(path); }
    non_utf8_video(const non_utf8_video&) = delete;
    non_utf8_video& operator=(const non_utf8_video&) = delete;
    std::string path;
};

} // namespace

TEST_CASE("a file name that is not UTF-8: --json still prints the summary") {
    const non_utf8_video v;
    const auto r = t::run({exe, "--video", v.path, "--no-ui", "--json", "--duration", "1"});
    INFO("stderr: " << r.err);
    CHECK(r.exit_code == 0);
    const auto j = json::parse(r.out, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j["camera_count"] == 1);
}

TEST_CASE("bytes that are not UTF-8 in a URL path, a Host, an Origin or /stats.json; a huge "
          "--max-attempts; an IPv6 --host") {
    const non_utf8_video v;
    program p({"--video", v.path, "--size", "160x120", "--fps", "10", "--max-attempts",
               "1000000000"});
    // /stats.json holds the file name, with U+FFFD for the byte.
    CHECK(t::http_get(p.port, "/stats.json").status == 200);
    const json s = p.stats();
    CHECK(s["camera_count"] == 1);
    // DELETE /cameras/<0xFF>: no such camera, said in valid JSON (not a 500).
    const auto del = t::http_request(p.port, http::verb::delete_, "/cameras/\xff");
    INFO(del.body);
    CHECK(del.status == 404);
    CHECK(json::parse(del.body, nullptr, false).contains("error"));
    // A Host or Origin with a byte 0xFF: refused with a 403, not a dropped connection.
    const std::string request_head = "POST /cameras HTTP/1.1\r\nContent-Type: application/json\r\n"
                                     "Content-Length: 2\r\nConnection: close\r\n";
    CHECK(t::status_of(t::raw_exchange(p.port, request_head + "Host: \xff\r\n\r\n{}")) == 403);
    CHECK(t::status_of(t::raw_exchange(p.port, request_head + "Host: 127.0.0.1:" +
                                                   std::to_string(p.port) +
                                                   "\r\nOrigin: http://\xff\r\n\r\n{}")) == 403);
    // --max-attempts 10^9: the wait for a new camera's first frame does not overflow (a
    // negative timeout refused working cameras at once).
    const auto added = post(p.port, R"({"url": "synthetic:", "name": "more"})");
    INFO(added.body);
    CHECK(added.status == 201);
    p.process->terminate();
    CHECK(p.process->wait() == 0);
    p.process.reset();

    // An IPv6 literal is bracketed in the announced URL.
    t::child six({exe, "--synthetic", "1", "--size", "160x120", "--host", "::1", "--port", "0"});
    CHECK(six.wait_for("serving the live UI at http://[::1]:", 60s));
    six.terminate();
    CHECK(six.wait() == 0);
}

TEST_CASE("class labels that are not UTF-8 (a Latin-1 --classes file): the UI stage sends them "
          "with U+FFFD") {
    // The YOLOv8 test model always finds class 1 and class 2 (make_models.py).
    const std::string names =
        "/tmp/framepipe-multicam-" + std::to_string(::getpid()) + "-names.txt";
    {
        std::FILE* f = std::fopen(names.c_str(), "w");
        REQUIRE(f != nullptr);
        std::fputs("cat\ncaf\xe9\nni\xf1o\n", f);
        std::fclose(f);
    }
    struct remove_at_end {
        std::string path;
        ~remove_at_end() { std::remove(path.c_str()); }
    } cleanup{names};
    program p({"--synthetic", "1", "--size", "160x120", "--fps", "10", "--model",
               models + "/yolov8_batch.onnx", "--input-size", "64", "--classes", names});
    t::ws_client ws(p.port);
    // The meta text of the first tile drawn with boxes. Before the fix the UI stage threw (json
    // type_error 316) on that tile: the program stopped (exit 1) and the socket closed.
    std::string why;
    const json boxes = t::first_frame_boxes(ws, why);
    if (boxes.empty()) {
        p.process->terminate();
        const int code = p.process->wait();
        const auto err = p.process->err();
        p.process.reset();
        FAIL("no frame with boxes (" << why << "); exit code " << code << ", stderr: " << err);
    }
    REQUIRE(boxes.size() == 2);
    std::vector<std::string> labels;
    for (const auto& b : boxes) {
        labels.push_back(b.at("label").get<std::string>());
    }
    std::sort(labels.begin(), labels.end());
    CHECK(labels == std::vector<std::string>{"caf\xef\xbf\xbd", "ni\xef\xbf\xbdo"}); // U+FFFD
    p.process->terminate();
    CHECK(p.process->wait() == 0);
    p.process.reset();
}
