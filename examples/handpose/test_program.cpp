// Runs framepipe-handpose on short runs and checks what it prints and writes (never its timing):
// the JSON summary, the landmark CSV replay, templates, the ONNX paths, and every bad input.
#include "synthetic.hpp"

#include "common/testing/child_process.hpp"
#include "common/testing/rtsp_server.hpp"
#include "common/testing/temp_dir.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
namespace t = framepipe_examples::testing;

namespace {

using args = std::vector<std::string>;

// Runs the program with `a` to completion; its stdout and stderr apart.
t::run_result run(const args& a) {
    args argv{HANDPOSE_EXE};
    argv.insert(argv.end(), a.begin(), a.end());
    return t::run(argv);
}

nlohmann::json run_json(args a) {
    a.emplace_back("--json");
    const auto r = run(a);
    INFO(Catch::rangeToString(a) << "\n" << r.out << r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out);
}

// Exit code 2 and exactly one line, on stderr, naming the program (nothing on stdout).
void check_one_line_error(const t::run_result& r) {
    INFO("stderr: " << r.err << "stdout: " << r.out);
    CHECK(r.exit_code == 2);
    REQUIRE(!r.err.empty());
    CHECK(r.err.find('\n') == r.err.size() - 1); // exactly one line
    CHECK(r.err.rfind("framepipe-handpose: ", 0) == 0);
    CHECK(r.out.empty());
}

// A fresh directory under the system temp dir, removed at the end of the test.
struct temp_dir : framepipe_examples::testing::temp_dir {
    temp_dir() : framepipe_examples::testing::temp_dir("handpose-prog") {}
};

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string make_models(const temp_dir& dir) {
    const std::string cmd = std::string(HANDPOSE_PYTHON) + " '" + HANDPOSE_MAKE_MODELS + "' '" +
                            dir.path.string() + "'";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return dir.path.string();
}

void check_summary(const nlohmann::json& j, const std::string& mode) {
    CHECK(j.at("mode") == mode);
    for (const char* key : {"display_fps", "estimate_fps", "classify_per_s", "window_age_p50_ms",
                            "window_age_p99_ms", "seconds", "classify_ms_p50", "display_gap_p99_ms",
                            "display_gap_max_ms", "joints_found_mean", "peak_rss_mb"}) {
        INFO(key);
        REQUIRE(j.at(key).is_number());
        CHECK(j.at(key).get<double>() >= 0.0);
    }
    for (const char* key : {"windows_dropped", "windows_ready", "windows_classified",
                            "accuracy_windows", "source_frames"}) {
        INFO(key);
        REQUIRE(j.at(key).is_number_unsigned());
    }
    CHECK(j.at("window_age_p50_ms").get<double>() <= j.at("window_age_p99_ms").get<double>());
    CHECK(j.at("windows_classified").get<std::uint64_t>() + j.at("windows_dropped").get<std::uint64_t>() <=
          j.at("windows_ready").get<std::uint64_t>());
}

} // namespace

TEST_CASE("framepipe-handpose: --no-ui --duration 5 --json prints the summary, in both modes") {
    for (const std::string mode : {"pipelined", "single"}) {
        INFO(mode);
        const auto j = run_json({"--no-ui", "--duration", "5", "--mode", mode});
        check_summary(j, mode);
        CHECK(j.at("source") == "synthetic");
        CHECK(j.at("classifier") == "dtw");
        CHECK(j.at("display_fps").get<double>() > 0.0);
        CHECK(j.at("estimate_fps").get<double>() > 0.0);
        // 30 points-frames at 15 fps fill the first window after 2 s; then one every 5.
        CHECK(j.at("windows_classified").get<std::uint64_t>() >= 1);
        CHECK(j.at("classify_per_s").get<double>() > 0.0);
        // Scored windows are those inside one gesture. Gestures outlast a window, so there
        // usually are some, but a heavily loaded machine can stretch a window over two: the
        // structure is what is checked here (accuracy itself: test_example_handpose_core).
        if (j.at("accuracy_windows").get<std::uint64_t>() > 0) {
            REQUIRE(j.at("accuracy").is_number());
            CHECK(j.at("accuracy").get<double>() >= 0.0);
            CHECK(j.at("accuracy").get<double>() <= 1.0);
        } else {
            CHECK(j.at("accuracy").is_null());
        }
        CHECK(j.at("joints_found_mean").get<double>() > 15.0);
    }
}

TEST_CASE("framepipe-handpose: landmarks written as CSV replay to the same CSV") {
    temp_dir dir;
    (void)run_json({"--no-ui", "--duration", "3", "--write-landmarks", dir.file("a.csv")});
    const std::string first = slurp(dir.file("a.csv"));
    REQUIRE(first.rfind("frame,point,x,y,z,label\n", 0) == 0);
    const auto rows = static_cast<std::size_t>(std::count(first.begin(), first.end(), '\n')) - 1;
    REQUIRE(rows % 21 == 0);
    const std::size_t frames = rows / 21;
    REQUIRE(frames >= 20);
    for (const std::string mode : {"pipelined", "single"}) {
        INFO(mode);
        const auto out = dir.file("b-" + mode + ".csv");
        const auto b = run_json({"--no-ui", "--mode", mode, "--estimate-fps", "60", "--landmarks",
                                 dir.file("a.csv"), "--write-landmarks", out});
        check_summary(b, mode);
        CHECK(b.at("source") == "landmarks");
        CHECK(b.at("source_frames").get<std::size_t>() == frames);
        CHECK(slurp(out) == first);
        // The CSV carries the generator's labels, so the replay is scored too.
        CHECK((b.at("accuracy").is_number() || b.at("accuracy_windows") == 0));
    }
}

TEST_CASE("framepipe-handpose: a file name that is not UTF-8: --json still prints the summary") {
    temp_dir dir;
    const auto csv = dir.file("l\xff.csv");
    (void)run_json({"--no-ui", "--duration", "1", "--write-landmarks", csv});
    const auto j = run_json({"--no-ui", "--landmarks", csv});
    CHECK(j.at("source") == "landmarks");
    CHECK(j.at("input").get<std::string>().find("\xef\xbf\xbd") != std::string::npos); // U+FFFD
}

TEST_CASE("framepipe-handpose: DTW templates are written, then loaded") {
    temp_dir dir;
    const auto w = run({"--write-templates", dir.file("t.json"), "--templates-per-gesture", "3"});
    REQUIRE(w.exit_code == 0);
    const auto t = nlohmann::json::parse(slurp(dir.file("t.json")));
    CHECK(t.at("format") == "framepipe-handpose-templates");
    CHECK(t.at("templates").size() == 3 * handpose::gesture_count);
    // DTW compares windows and templates of different lengths: a 10-frame window fills fast.
    const auto j = run_json({"--no-ui", "--duration", "3", "--window", "10", "--templates", dir.file("t.json")});
    CHECK(j.at("classifier") == "dtw");
    CHECK(j.at("windows_classified").get<std::uint64_t>() >= 1);
}

TEST_CASE("framepipe-handpose: --classifier runs an ONNX model made with python3-onnx") {
    temp_dir dir;
    const auto models = make_models(dir);
    for (const std::string mode : {"pipelined", "single"}) {
        INFO(mode);
        const auto j = run_json({"--no-ui", "--duration", "3", "--source-fps", "60", "--estimate-fps", "30",
                                 "--mode", mode, "--classifier", models + "/classifier.onnx"});
        check_summary(j, mode);
        CHECK(j.at("classifier") == "onnx");
        CHECK(j.at("windows_classified").get<std::uint64_t>() >= 1);
    }
}

TEST_CASE("framepipe-handpose: --video with --landmark-model runs through cv::dnn to the end") {
    temp_dir dir;
    const auto models = make_models(dir);
    {
        // A short video of the synthetic hand.
        cv::VideoWriter writer(dir.file("hand.avi"), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 30,
                               cv::Size(640, 480));
        REQUIRE(writer.isOpened());
        handpose::hand_generator gen(3);
        handpose::renderer r(3);
        cv::Mat image;
        for (int i = 0; i < 45; ++i) {
            r.render(gen.pose_at(i / 30.0), i / 30.0, image);
            writer.write(image);
        }
    }
    for (const std::string mode : {"pipelined", "single"}) {
        INFO(mode);
        const auto csv = dir.file("video-" + mode + ".csv");
        const auto j = run_json({"--no-ui", "--window", "10", "--stride", "5", "--mode", mode, "--video",
                                 dir.file("hand.avi"), "--landmark-model", models + "/landmarks.onnx",
                                 "--landmark-input-size", "64", "--write-landmarks", csv});
        check_summary(j, mode);
        CHECK(j.at("source") == "video");
        CHECK(j.at("source_frames") == 45); // ran to the end of the file, then stopped by itself
        CHECK(j.at("accuracy").is_null());  // a video has no truth
        const auto rows = slurp(csv);
        const auto lines = static_cast<std::size_t>(std::count(rows.begin(), rows.end(), '\n'));
        CHECK(lines >= 1 + 21);
        // Point 0 is the model's: x = 0.2 + 0.1 * (sum of channel means) > 0.2.
        const auto first_row = rows.substr(rows.find('\n') + 1);
        CHECK(first_row.rfind("0,0,0.", 0) == 0);
    }
}

TEST_CASE("framepipe-handpose: an rtsp:// --video is a live camera, reconnected, in both modes") {
    temp_dir dir;
    const auto models = make_models(dir);
    t::rtsp_server server(HANDPOSE_PYTHON, HANDPOSE_RTSP_SERVER);
    for (const std::string mode : {"pipelined", "single"}) {
        INFO(mode);
        t::child prog({HANDPOSE_EXE, "--no-ui", "--json", "--mode", mode, "--video", server.url,
                       "--landmark-model", models + "/landmarks.onnx", "--landmark-input-size",
                       "64", "--reconnect-initial", "0.05"});
        REQUIRE(prog.wait_for("camera: online (epoch ", std::chrono::seconds(60)));
        REQUIRE(server.kick()); // the server drops the connection: a reconnect, not the end
        REQUIRE(prog.wait_for("camera: online again (epoch ", std::chrono::seconds(60)));
        prog.terminate();
        REQUIRE(prog.wait() == 0);
        const auto j = nlohmann::json::parse(prog.out());
        check_summary(j, mode);
        CHECK(j.at("source") == "video");
        CHECK(j.at("input") == server.url);
        CHECK(j.at("source_frames").get<std::uint64_t>() > 0);
        const auto& src = j.at("sources").at(0);
        CHECK(src.at("reconnects") == 1);
        CHECK(src.at("status") == "online");
        CHECK(j.at("epoch_regressions") == 0);
    }
    // Never connecting: --max-attempts gives up, exit 2, one line naming the input.
    const auto r = run({"--no-ui", "--camera", "63", "--landmark-model", models + "/landmarks.onnx",
                        "--landmark-input-size", "64", "--max-attempts", "1"});
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(r.err.rfind("framepipe-handpose: camera 63 (/dev/video63): no connection after 1 "
                      "attempt; last error: v4l2src: ",
                      0) == 0);
}

TEST_CASE("framepipe-handpose: bad input exits 2 with a one-line error") {
    temp_dir dir;
    const auto models = make_models(dir);
    std::ofstream(dir.file("bad.csv")) << "frame,point,x,y,z\n0,0,0.5,oops,0\n";
    std::ofstream(dir.file("short.csv")) << "frame,point,x,y,z\n0,0,0.5,0.5,0\n";
    std::ofstream(dir.file("bad.json")) << "{\"format\": 3}";
    const std::string m = models + "/";
    const std::vector<std::pair<args, std::string>> cases{
        {{"--landmarks", dir.file("bad.csv")}, "bad.csv:2: y: not a finite number"},
        {{"--landmarks", dir.file("short.csv")}, "frame 0 has 1 points"},
        {{"--landmarks", dir.file("missing.csv")}, "cannot open"},
        {{"--classifier", m + "missing.onnx"}, "no such file"},
        {{"--classifier", m + "not_a_model.onnx"}, "cannot load"},
        {{"--classifier", m + "classifier_wrong_input.onnx"}, "does not accept a 1x30x21x3 input"},
        {{"--classifier", m + "classifier_wrong_output.onnx"}, "returns 5 values, expected 6"},
        {{"--classifier", m + "classifier.onnx", "--window", "20"}, "does not accept a 1x20x21x3 input"},
        {{"--video", dir.file("missing.avi"), "--landmark-model", m + "landmarks.onnx",
          "--landmark-input-size", "64"},
         "missing.avi': no such file"},
        {{"--video", "x.avi", "--landmark-model", m + "missing.onnx"}, "no such file"},
        {{"--video", "x.avi", "--landmark-model", m + "landmarks_wrong_output.onnx", "--landmark-input-size", "64"},
         "returns 10 values, expected 63"},
        {{"--video", "x.avi", "--landmark-model", m + "landmarks.onnx", "--landmark-input-size", "32"},
         "does not accept a 1x3x32x32 input"},
        {{"--stall-timeout", "2"}, "--stall-timeout: only for live inputs"},
        {{"--video", "rtsp://127.0.0.1:1/x", "--landmark-model", m + "landmarks.onnx",
          "--landmark-input-size", "64", "--reconnect-jitter", "2"},
         "--reconnect-jitter"},
        {{"--video", "x.avi"}, "needs --landmark-model"},
        {{"--landmark-model", m + "landmarks.onnx"}, "only with --video or --camera"},
        {{"--landmarks", "a.csv", "--video", "b.avi"}, "exclude each other"},
        {{"--source", "camera"}, "needs --camera"},
        {{"--source", "synthetic", "--landmarks", "a.csv"}, "conflicts with the --landmarks flag"},
        {{"--templates", dir.file("missing.json")}, "cannot open"},
        {{"--templates", dir.file("bad.json")}, "not a framepipe-handpose-templates file"},
        {{"--templates", "t.json", "--classifier", "c.onnx"}, "exclude each other"},
        {{"--write-templates", "/nonexistent-dir/t.json"}, "cannot open for writing"},
        {{"--write-landmarks", "/nonexistent-dir/l.csv"}, "cannot open for writing"},
        {{"--mode", "sideways"}, "--mode"},
        {{"--window", "1"}, "--window"},
        {{"--stride", "0"}, "--stride"},
        {{"--stride", "31"}, "--stride: must be between 1 and --window"},
        {{"--estimate-fps", "0"}, "--estimate-fps"},
        {{"--duration", "-1"}, "--duration"},
        {{"--classifier-extra-ms", "-5"}, "--classifier-extra-ms"},
        {{"--seed", "-1"}, "--seed: Value '-1' is not a whole number"},
        {{"--seed", ""}, "--seed: Value '' is not a whole number"},
        {{"--write-templates", ""}, "--write-templates: Value must not be empty"},
        {{"--landmarks", ""}, "--landmarks: Value must not be empty"},
        {{"--source-fps", "nan"}, "--source-fps: Value nan"},
        {{"--estimate-fps", "nan"}, "--estimate-fps: Value nan"},
        {{"--duration", "nan"}, "--duration: Value nan"},
        {{"--bogus"}, "bogus"},
    };
    for (const auto& [extra, expect] : cases) {
        args a{"--no-ui", "--duration", "1"};
        a.insert(a.end(), extra.begin(), extra.end());
        INFO(Catch::rangeToString(a));
        const auto r = run(a);
        check_one_line_error(r);
        CHECK(r.err.find(expect) != std::string::npos);
    }
}

TEST_CASE("framepipe-handpose: a taken port exits 2 with a one-line error, before running") {
    // Hold a listening socket on a free port of 127.0.0.1.
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 1) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const auto port = std::to_string(ntohs(addr.sin_port));
    const auto r = run({"--duration", "30", "--port", port});
    ::close(fd);
    check_one_line_error(r);
    CHECK(r.err.find("framepipe-handpose: cannot listen on 127.0.0.1:" + port) == 0);
}
