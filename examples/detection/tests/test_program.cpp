// framepipe-detect as a program: its JSON summary, its end of file and --loop, corrupt frames,
// bad input (one line, exit 2), and its web endpoints under good and bad requests, with a
// stalled websocket client. Structure and accounting only: no wall-clock assertion (rates are
// compared with a peer measured in the same run).
#include "common/testing/child_process.hpp"
#include "common/testing/http_client.hpp"
#include "common/testing/temp_dir.hpp"
#include "common/testing/ws_frames.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace t = framepipe_examples::testing;
using nlohmann::json;

namespace {

const std::string exe = FRAMEPIPE_DETECT_EXE;
const std::string vtest = FRAMEPIPE_TEST_VIDEO;
std::string model(const char* name) { return std::string(FRAMEPIPE_TEST_MODELS) + "/" + name; }

// Removed when the test process exits.
fs::path scratch() {
    static const framepipe_examples::testing::temp_dir dir("framepipe-detect-test");
    return dir.path;
}

// A 30-frame 64x48 MJPEG AVI at 30 fps, numbered frames.
fs::path short_video() {
    const auto path = scratch() / "short.avi";
    if (!fs::exists(path)) {
        cv::VideoWriter w(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 30,
                          cv::Size(64, 48));
        REQUIRE(w.isOpened());
        for (int i = 0; i < 30; ++i) {
            cv::Mat m(48, 64, CV_8UC3, cv::Scalar(i * 8, 100, 50));
            cv::putText(m, std::to_string(i), {5, 30}, cv::FONT_HERSHEY_SIMPLEX, 1, {255, 255, 255});
            w.write(m);
        }
    }
    return path;
}

// short_video() with the JPEG data of frames 10, 11 and 12 overwritten by garbage.
fs::path corrupt_video() {
    const auto path = scratch() / "corrupt.avi";
    std::ifstream in(short_video(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    // AVI frame chunks: "00dc", a 32-bit size, then the JPEG. The index at the end repeats the
    // tag, so only chunks followed by a JPEG start (FF D8) are frames.
    int frame = 0;
    for (std::size_t at = bytes.find("00dc"); at != std::string::npos;
         at = bytes.find("00dc", at + 4)) {
        if (at + 10 > bytes.size() || static_cast<unsigned char>(bytes[at + 8]) != 0xFF ||
            static_cast<unsigned char>(bytes[at + 9]) != 0xD8) {
            continue;
        }
        std::uint32_t size = 0;
        std::memcpy(&size, bytes.data() + at + 4, 4);
        if (frame >= 10 && frame <= 12) {
            for (std::size_t i = at + 8; i < at + 8 + size && i < bytes.size(); ++i) {
                bytes[i] = static_cast<char>(0xAB);
            }
        }
        ++frame;
    }
    REQUIRE(frame == 30);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
}

json parse_summary(const t::run_result& r) {
    INFO("stderr: " << r.err.substr(0, 2000));
    REQUIRE(r.exit_code == 0);
    return json::parse(r.out); // stdout is exactly the summary under --json
}

// The channel named `name` in a summary's "channels".
json channel(const json& j, const std::string& name) {
    for (const auto& c : j.at("channels")) {
        if (c.at("name") == name) {
            return c;
        }
    }
    FAIL("no channel " << name);
    return {};
}

// `before_start`: the error came before anything ran, so nothing is on stdout either (a live
// input that gives up has printed its banner and status lines there).
void check_one_line_error(const t::run_result& r, const std::string& needle,
                          bool before_start = true) {
    INFO("stderr: " << r.err << "stdout: " << r.out);
    CHECK(r.exit_code == 2);
    REQUIRE_FALSE(r.err.empty());
    CHECK(r.err.find('\n') == r.err.size() - 1); // exactly one line
    CHECK(r.err.rfind("framepipe-detect: ", 0) == 0);
    CHECK(r.err.find(needle) != std::string::npos);
    if (before_start) {
        CHECK(r.out.empty());
    }
}

} // namespace

TEST_CASE("--no-ui --duration 5 --json on vtest.avi: one summary object, every field, sane") {
    const auto j = parse_summary(t::run({exe, "--no-ui", "--duration", "5", "--json"}));
    CHECK(j.at("mode") == "pipelined");
    for (const char* key : {"source_fps", "ui_fps", "detect_fps", "detect_age_p50_ms",
                            "detect_age_p99_ms", "inference_ms_p50", "peak_rss_mb", "seconds"}) {
        INFO(key);
        REQUIRE(j.at(key).is_number());
        CHECK(j.at(key).get<double>() >= 0.0);
    }
    for (const char* key : {"frames_read", "dropped_for_detector", "dropped_for_ui",
                            "corrupt_frames", "detections", "ui_frames"}) {
        INFO(key);
        REQUIRE(j.at(key).is_number_unsigned());
    }
    CHECK(j.at("source_fps").get<double>() > 0);
    CHECK(j.at("ui_fps").get<double>() > 0);
    CHECK(j.at("detect_fps").get<double>() > 0);
    CHECK(j.at("inference_ms_p50").get<double>() > 0);
    CHECK(j.at("detect_age_p50_ms").get<double>() <= j.at("detect_age_p99_ms").get<double>());
    CHECK(j.at("peak_rss_mb").get<double>() > 0);
    CHECK(j.at("corrupt_frames") == 0);
    CHECK(j.at("end_reason") == "duration");
    CHECK(j.at("detector") == "hog people detector");
    // Every frame accounted for, per subscriber: pushed == popped + dropped + buffered.
    const auto frames = j.at("frames_read").get<std::uint64_t>();
    CHECK(channel(j, "frames").at("pushed") == frames);
    for (const char* sub : {"ui", "detector"}) {
        INFO(sub);
        const auto c = channel(j, sub);
        const auto pushed = c.at("pushed").get<std::uint64_t>();
        const auto accounted = c.at("popped").get<std::uint64_t>() + c.at("dropped").get<std::uint64_t>();
        CHECK(pushed == frames);
        CHECK(accounted <= pushed);
        CHECK(pushed - accounted <= 1); // at most one buffered
    }
    // The UI takes one frame in two (15 of 30 fps): its drops are the rate limit.
    CHECK(j.at("dropped_for_ui_by_reason").at("rate_limited").get<std::uint64_t>() > 0);
    CHECK(j.at("dropped_for_ui") == channel(j, "ui").at("dropped"));
    // The detector is slower than the source: it skips frames, by eviction from its latest slot.
    CHECK(j.at("dropped_for_detector").get<std::uint64_t>() > 0);
    CHECK(j.at("detections").get<std::uint64_t>() + j.at("dropped_for_detector").get<std::uint64_t>() <= frames);
    // The UI encoded at least as many frames as the detector finished (it never waits for it).
    CHECK(j.at("ui_frames").get<std::uint64_t>() > j.at("detections").get<std::uint64_t>());
    // --no-ui: the encoded frames went to the sink.
    CHECK(channel(j, "ui-sink").at("pushed") == j.at("ui_frames"));
}

TEST_CASE("a file name that is not UTF-8: --json still prints the summary") {
    const auto link = scratch() / "v\xff.avi";
    fs::remove(link);
    fs::create_symlink(vtest, link);
    const auto j = parse_summary(
        t::run({exe, "--no-ui", "--duration", "1", "--json", "--video", link.string()}));
    CHECK(j.at("frames_read").get<int>() > 0);
}

TEST_CASE("class labels that are not UTF-8 (a Latin-1 --classes file): the UI stage sends them "
          "with U+FFFD") {
    // The YOLOv8 test model always finds class 1 and class 2 (make_models.py).
    const auto names = scratch() / "latin1-names.txt";
    std::ofstream(names, std::ios::binary) << "cat\ncaf\xe9\nni\xf1o\n";
    t::child server({exe, "--port", "0", "--ui-fps", "15", "--duration", "300", "--model",
                     model("yolov8.onnx"), "--input-size", "64", "--classes", names.string()});
    const auto where =
        server.wait_for("serving the live UI at http://127.0.0.1:", std::chrono::seconds(60));
    INFO("stderr: " << server.err());
    REQUIRE(where);
    t::ws_client ws(static_cast<unsigned short>(std::stoi(*where)));
    // The meta text of the first frame drawn with boxes. Before the fix the UI stage threw
    // (json type_error 316) on that frame: the program stopped (exit 1) and the socket closed.
    std::string why;
    const json boxes = t::first_frame_boxes(ws, why);
    if (boxes.empty()) {
        server.terminate();
        const int code = server.wait();
        FAIL("no frame with boxes (" << why << "); exit code " << code
                                     << ", stderr: " << server.err());
    }
    REQUIRE(boxes.size() == 2);
    std::vector<std::string> labels;
    for (const auto& b : boxes) {
        labels.push_back(b.at("label").get<std::string>());
    }
    std::sort(labels.begin(), labels.end());
    CHECK(labels == std::vector<std::string>{"caf\xef\xbf\xbd", "ni\xef\xbf\xbdo"}); // U+FFFD
    server.terminate();
    CHECK(server.wait() == 0);
}

TEST_CASE("--mode inline: one thread; the UI only gets frames between detections") {
    const auto j = parse_summary(
        t::run({exe, "--no-ui", "--duration", "3", "--json", "--mode", "inline", "--detect-fps", "0"}));
    CHECK(j.at("mode") == "inline");
    const auto frames = j.at("frames_read").get<std::uint64_t>();
    REQUIRE(frames > 0);
    // With --detect-fps 0 every frame is detected, and the UI can show at most one per frame.
    CHECK(j.at("detections") == frames);
    CHECK(j.at("dropped_for_detector") == 0);
    CHECK(j.at("ui_frames").get<std::uint64_t>() <= frames);
    CHECK(j.at("dropped_for_ui") == frames - j.at("ui_frames").get<std::uint64_t>());
    // No thread between the camera and the detector: one stage, plus the --no-ui sink.
    std::vector<std::string> stages;
    for (const auto& s : j.at("stages")) {
        stages.push_back(s.at("name"));
    }
    std::sort(stages.begin(), stages.end());
    CHECK(stages == std::vector<std::string>{"inline", "ui-sink"});
}

TEST_CASE("--ui-fps caps the UI stage; --jpeg-quality sets the JPEG size; --detector-threads") {
    // The rate limiter's bound, whatever the machine's speed: at most hz * seconds + 2 frames.
    const auto slow = parse_summary(t::run({exe, "--no-ui", "--duration", "3", "--json", "--ui-fps", "5",
                                            "--jpeg-quality", "20", "--detector-threads", "2"}));
    CHECK(slow.at("ui_frames").get<std::uint64_t>() <= 5 * 3 + 2);
    CHECK(slow.at("ui_frames").get<std::uint64_t>() > 0);
    CHECK(slow.at("dropped_for_ui_by_reason").at("rate_limited").get<std::uint64_t>() > 0);
    CHECK(slow.at("ui_fps_target") == 5.0);
    const auto fine = parse_summary(t::run({exe, "--no-ui", "--duration", "2", "--json", "--jpeg-quality", "95"}));
    CHECK(slow.at("jpeg_kb_mean").get<double>() > 0);
    CHECK(slow.at("jpeg_kb_mean").get<double>() * 2 < fine.at("jpeg_kb_mean").get<double>());
    check_one_line_error(t::run({exe, "--no-ui", "--detector-threads", "0"}), "--detector-threads");
    check_one_line_error(t::run({exe, "--no-ui", "--jpeg-quality", "101"}), "--jpeg-quality");
}

TEST_CASE("--detect-fps paces the detector stage; the frames it passes over are counted by reason") {
    // A tiny YOLOv8 model takes milliseconds, so the detector is faster than its cap of 2 fps:
    // it waits its turn, then takes the newest frame, and the ones it passed over are counted as
    // rate_limited on its subscription (next to the frames a newer one evicted meanwhile).
    const auto j = parse_summary(t::run({exe, "--no-ui", "--duration", "3", "--json", "--detect-fps", "2",
                                         "--model", model("yolov8.onnx"), "--input-size", "64"}));
    CHECK(j.at("detect_fps_target") == 2.0);
    const auto detections = j.at("detections").get<std::uint64_t>();
    CHECK(detections > 0);
    CHECK(detections <= 2 * 3 + 2); // the rate limiter's bound, whatever the machine's speed
    const auto& reasons = j.at("dropped_for_detector_by_reason");
    CHECK(reasons.at("rate_limited").get<std::uint64_t>() > 0);
    // The breakdown is the detector subscription's own, and adds up.
    const auto c = channel(j, "detector");
    CHECK(j.at("dropped_for_detector") == c.at("dropped"));
    CHECK(reasons == c.at("dropped_by_reason"));
    std::uint64_t sum = 0;
    for (const auto& [why, n] : reasons.items()) {
        INFO(why);
        sum += n.get<std::uint64_t>();
    }
    CHECK(sum == j.at("dropped_for_detector").get<std::uint64_t>());
    CHECK(c.at("popped") == detections); // every frame it took was detected
}

TEST_CASE("--model: YOLOv8 and YOLOv5 ONNX and Darknet models drive the program") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--model", model("yolov8.onnx"), "--input-size", "64", "--classes", model("names.txt")},
             {"--model", model("yolov5.onnx"), "--input-size", "64"},
             {"--model", model("tiny.cfg"), "--weights", model("tiny.weights")}}) {
        INFO(args[1]);
        std::vector<std::string> argv{exe, "--no-ui", "--duration", "2", "--json"};
        argv.insert(argv.end(), args.begin(), args.end());
        const auto r = t::run(argv);
        const auto j = parse_summary(r);
        CHECK(j.at("detections").get<std::uint64_t>() > 0);
        // The console prints each inference time (on stderr under --json).
        CHECK(r.err.find("inference ") != std::string::npos);
        CHECK(r.err.find(" ms (frame ") != std::string::npos);
    }
}

TEST_CASE("the end of the file ends the run cleanly; --loop restarts it") {
    const auto end = parse_summary(t::run({exe, "--no-ui", "--json", "--video",
                                           short_video().string(), "--source-fps", "200"}));
    CHECK(end.at("frames_read") == 30);
    CHECK(end.at("end_reason") == "end of file");
    CHECK(end.at("corrupt_frames") == 0);
    CHECK(end.at("loops") == 0);

    const auto loop = parse_summary(t::run({exe, "--no-ui", "--json", "--video",
                                            short_video().string(), "--source-fps", "200",
                                            "--loop", "--duration", "1"}));
    CHECK(loop.at("loops").get<std::uint64_t>() >= 1);
    CHECK(loop.at("frames_read").get<std::uint64_t>() > 30);
    CHECK(loop.at("end_reason") == "duration");

    // --mode inline: its source publishes the JPEGs itself, and closes them at the end, which
    // ends the --no-ui sink (it waited for ever, and the stop for its 10 s).
    const auto inline_end = t::run({exe, "--no-ui", "--json", "--mode", "inline", "--video",
                                    short_video().string(), "--source-fps", "200", "--duration",
                                    "60"});
    const auto in = parse_summary(inline_end);
    CHECK(in.at("frames_read") == 30);
    CHECK(in.at("end_reason") == "end of file");
    CHECK(inline_end.err.find("did not stop") == std::string::npos);

    // --source-fps native: the file's own 30 fps.
    const auto native = parse_summary(t::run({exe, "--no-ui", "--json", "--video",
                                              short_video().string(), "--source-fps", "native"}));
    CHECK(native.at("source_fps_target") == 30.0);
    CHECK(native.at("frames_read") == 30);
}

TEST_CASE("--dot writes the graph at exit; a path it cannot write is one line, exit 2") {
    // It was written at exit with no check: a path that could not be opened or written gave
    // exit 0, no line and no graph.
    const framepipe_examples::testing::temp_dir dir("framepipe-detect-dot");
    const auto graph = dir.file("graph.dot");
    const auto ok = t::run({exe, "--no-ui", "--json", "--video", short_video().string(),
                            "--source-fps", "200", "--dot", graph});
    CHECK(ok.exit_code == 0);
    std::ifstream in(graph);
    const std::string dot((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(dot.rfind("digraph", 0) == 0);
    check_one_line_error(t::run({exe, "--no-ui", "--video", short_video().string(), "--dot",
                                 dir.file("no-such-dir/graph.dot")}),
                         "--dot: '");
    // Opened, then full: the run happened, the write at exit failed.
    check_one_line_error(t::run({exe, "--no-ui", "--video", short_video().string(),
                                 "--source-fps", "200", "--dot", "/dev/full"}),
                         "write failed", false);
}

TEST_CASE("a file:// URI is a file: read to its end, which ends the run cleanly") {
    // (A live stream that ends is reconnected instead: test_live.cpp.)
    const auto j = parse_summary(t::run({exe, "--no-ui", "--json", "--source-fps", "200", "--video",
                                         "file://" + short_video().string()}));
    CHECK(j.at("frames_read") == 30);
    CHECK(j.at("end_reason") == "end of file");
    CHECK(j.at("live") == false);
    CHECK(j.at("sources").empty());
}

TEST_CASE("corrupt frames are read past and counted, not crashed on") {
    const auto r = t::run({exe, "--no-ui", "--json", "--video", corrupt_video().string(),
                           "--source-fps", "200"});
    const auto j = parse_summary(r);
    CHECK(j.at("end_reason") == "end of file");
    CHECK(j.at("corrupt_frames").get<std::uint64_t>() >= 1);
    CHECK(j.at("frames_read").get<std::uint64_t>() >= 20);
    // Every frame of the file is either delivered or counted as corrupt.
    CHECK(j.at("frames_read").get<std::uint64_t>() + j.at("corrupt_frames").get<std::uint64_t>() == 30);
}

TEST_CASE("bad input: a one-line error naming the problem, exit code 2") {
    const auto text = scratch() / "notes.txt";
    std::ofstream(text) << "this is not a video\n";
    const auto noise = scratch() / "noise.avi";
    {
        std::ofstream f(noise, std::ios::binary);
        for (int i = 0; i < 100000; ++i) {
            f.put(static_cast<char>((i * 7919) % 251));
        }
    }
    check_one_line_error(t::run({exe, "--no-ui", "--video", (scratch() / "absent.avi").string()}),
                         "no such file");
    check_one_line_error(t::run({exe, "--no-ui", "--video", scratch().string()}),
                         "not a readable file");
    check_one_line_error(t::run({exe, "--no-ui", "--video", text.string()}), "not a video");
    check_one_line_error(t::run({exe, "--no-ui", "--video", noise.string()}), "not a video");
    // A live input that never connects is retried for ever, unless --max-attempts says when to
    // give up: then exit 2, one line naming it and its last error.
    check_one_line_error(t::run({exe, "--no-ui", "--camera", "9", "--max-attempts", "1"}),
                         "camera 9 (/dev/video9): no connection after 1 attempt; last error: "
                         "v4l2src: Cannot identify device '/dev/video9'",
                         false);
    check_one_line_error(t::run({exe, "--no-ui", "--video", "rtsp://127.0.0.1:1/none",
                                 "--max-attempts", "2", "--reconnect-initial", "0.01"}),
                         "rtsp://127.0.0.1:1/none: no connection after 2 attempts in a row; "
                         "last error: rtspsrc: ", false);
    check_one_line_error(t::run({exe, "--no-ui", "--model", model("absent.onnx")}), "no such file");
    check_one_line_error(t::run({exe, "--no-ui", "--model", model("broken.onnx")}),
                         "cannot be parsed");
    check_one_line_error(t::run({exe, "--no-ui", "--model", model("not_yolo.onnx"), "--input-size", "64"}),
                         "not a YOLOv5, YOLOv8 or Darknet layout");
    check_one_line_error(t::run({exe, "--no-ui", "--model", model("tiny.cfg")}), "needs --weights");
    // OpenCV's importer logged an error line of its own before the program's: two lines.
    check_one_line_error(t::run({exe, "--no-ui", "--model", model("unknown_op.onnx")}),
                         "cannot be parsed");
    // A file named on the command line that the HOG detector would never read.
    check_one_line_error(t::run({exe, "--no-ui", "--classes", model("absent.txt")}),
                         "--classes needs --model");
    // Two inputs: the camera won, and --video was dropped without a word.
    check_one_line_error(t::run({exe, "--no-ui", "--camera", "9", "--video",
                                 short_video().string()}),
                         "--camera and --video exclude each other");
    check_one_line_error(t::run({exe, "--no-ui", "--mode", "sideways"}), "--mode");
    check_one_line_error(t::run({exe, "--no-ui", "--source-fps", "fast"}), "--source-fps");
    check_one_line_error(t::run({exe, "--no-ui", "--bogus"}), "bogus");
    check_one_line_error(t::run({exe, "--host", "not-an-address"}), "not an IP address");
    // Floating-point flags refuse NaN (CLI::Range lets it through), naming the flag.
    for (const std::string flag : {"--confidence", "--nms", "--ui-fps", "--detect-fps"}) {
        check_one_line_error(t::run({exe, "--no-ui", "--duration", "1", flag, "nan"}),
                             flag + ": Value nan");
    }
    check_one_line_error(t::run({exe, "--no-ui", "--duration", "nan"}), "--duration: Value nan");
    // A live input's timing flag too small to be a whole nanosecond: refused naming the flag
    // (not the library's field), and the camera's password is not printed.
    for (const std::string flag : {"--stall-timeout", "--reconnect-initial"}) {
        const auto r = t::run({exe, "--no-ui", "--video", "rtsp://admin:s3cret@127.0.0.1:1/x",
                               flag, "1e-10"});
        check_one_line_error(r, flag + ": expected seconds above 0");
        CHECK(r.err.find("s3cret") == std::string::npos);
    }
    {
        // A scheme this program does not read: named, the password masked.
        const auto r = t::run({exe, "--no-ui", "--video", "ftp://admin:s3cret@127.0.0.1:1/x"});
        check_one_line_error(r, "unsupported scheme");
        CHECK(r.err.find("s3cret") == std::string::npos);
    }
    {
        // Schemes in any case (RFC 3986 3.1): RTSP:// is read as rtsp://, a live input.
        const auto r = t::run({exe, "--no-ui", "--video", "RTSP://admin:s3cret@127.0.0.1:1/x",
                               "--max-attempts", "1", "--reconnect-initial", "0.01"});
        check_one_line_error(r, "no connection after 1 attempt", false);
        CHECK(r.err.find("s3cret") == std::string::npos);
    }

    // A port already in use.
    t::net::io_context ioc;
    t::tcp::acceptor taken(ioc, t::tcp::endpoint(t::net::ip::make_address("127.0.0.1"), 0));
    const auto port = std::to_string(taken.local_endpoint().port());
    check_one_line_error(t::run({exe, "--port", port}), "already in use");
}

TEST_CASE("the web endpoints, robust against bad requests, and a stalled client") {
    t::child server({exe, "--port", "0", "--ui-fps", "15", "--duration", "300"});
    const auto where = server.wait_for("serving the live UI at http://127.0.0.1:", std::chrono::seconds(60));
    INFO("stderr: " << server.err());
    REQUIRE(where);
    const auto port = static_cast<unsigned short>(std::stoi(*where));

    SECTION("/ is the page; /metrics is Prometheus text; /stats.json is the summary") {
        const auto page = t::http_get(port, "/");
        CHECK(page.status == 200);
        CHECK(page.headers.at("content-type").find("text/html") == 0);
        CHECK(page.body.find("<canvas") != std::string::npos);
        // The client code both examples' pages share, served once.
        CHECK(page.body.find("<script src=\"/app.js\"></script>") != std::string::npos);
        const auto script = t::http_get(port, "/app.js");
        CHECK(script.status == 200);
        CHECK(script.headers.at("content-type").find("text/javascript") == 0);
        CHECK(script.body.find("window.framepipePage") != std::string::npos);
        const auto style = t::http_get(port, "/app.css");
        CHECK(style.status == 200);
        CHECK(style.headers.at("content-type").find("text/css") == 0);
        CHECK(t::http_get(port, "/", t::http::verb::head).status == 200);

        const auto metrics = t::http_get(port, "/metrics");
        CHECK(metrics.status == 200);
        CHECK(metrics.headers.at("content-type").find("text/plain; version=0.0.4") == 0);
        std::string why;
        CHECK(t::is_prometheus_text(metrics.body, &why));
        INFO(why);
        CHECK(metrics.body.find("framepipe_stage_items_per_second{pipeline=\"detect-pipelined\",stage=\"detector\"}") !=
              std::string::npos);
        CHECK(metrics.body.find("framepipe_channel_dropped_total{") != std::string::npos);
        CHECK_FALSE(t::is_prometheus_text("framepipe_x 1\n")); // the checker can fail

        const auto stats = t::http_get(port, "/stats.json");
        CHECK(stats.status == 200);
        CHECK(stats.headers.at("content-type") == "application/json");
        const auto j = json::parse(stats.body);
        CHECK(j.at("mode") == "pipelined");
        CHECK(j.at("frames_read").is_number_unsigned());
        CHECK(j.at("server").at("http_requests").get<std::uint64_t>() >= 3);
    }

    SECTION("/video.mjpg is multipart JPEG") {
        t::net::io_context ioc;
        auto s = t::connect(ioc, port);
        t::net::write(s, t::net::buffer(std::string("GET /video.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")));
        std::string got;
        std::array<char, 65536> buf{};
        auto parts_in = [&] {
            std::size_t n = 0;
            for (auto at = got.find("--frame\r\n"); at != std::string::npos; at = got.find("--frame\r\n", at + 1)) {
                ++n;
            }
            return n;
        };
        while (parts_in() < 4) {
            got.append(buf.data(), s.read_some(t::net::buffer(buf)));
        }
        const auto head_end = got.find("\r\n\r\n");
        REQUIRE(head_end != std::string::npos);
        const auto head = got.substr(0, head_end);
        CHECK(head.rfind("HTTP/1.1 200", 0) == 0);
        CHECK(head.find("multipart/x-mixed-replace; boundary=frame") != std::string::npos);
        const auto head_only = t::http_get(port, "/video.mjpg", t::http::verb::head);
        CHECK(head_only.status == 200);
        CHECK(head_only.headers.at("content-type") == "multipart/x-mixed-replace; boundary=frame");
        // Three whole parts: headers, Content-Length bytes of JPEG (FF D8 ... FF D9).
        std::size_t at = got.find("--frame\r\n");
        for (int part = 0; part < 3; ++part) {
            INFO("part " << part);
            const auto hdr_end = got.find("\r\n\r\n", at);
            REQUIRE(hdr_end != std::string::npos);
            const auto hdr = got.substr(at, hdr_end - at);
            CHECK(hdr.find("Content-Type: image/jpeg") != std::string::npos);
            const auto cl = hdr.find("Content-Length: ");
            REQUIRE(cl != std::string::npos);
            const auto len = std::stoul(hdr.substr(cl + 16));
            const auto data = got.substr(hdr_end + 4, len);
            REQUIRE(data.size() == len);
            CHECK(static_cast<unsigned char>(data[0]) == 0xFF);
            CHECK(static_cast<unsigned char>(data[1]) == 0xD8);
            CHECK(static_cast<unsigned char>(data[len - 2]) == 0xFF);
            CHECK(static_cast<unsigned char>(data[len - 1]) == 0xD9);
            at = got.find("--frame\r\n", hdr_end + 4 + len);
            REQUIRE(at == hdr_end + 4 + len + 2); // "\r\n" then the next boundary
        }
    }

    SECTION("malformed, oversized, unknown and wrong-method requests get an error response") {
        CHECK(t::status_of(t::raw_exchange(port, "GARBAGE\r\n\r\n")) == 400);
        CHECK(t::status_of(t::raw_exchange(port, "GET / HTTP/9.9\r\n\r\n")) == 400);
        CHECK(t::status_of(t::raw_exchange(port, "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")) == 400);
        CHECK(t::status_of(t::raw_exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " +
                                                     std::string(20000, 'a') + "\r\n\r\n")) == 431);
        CHECK(t::status_of(t::raw_exchange(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                                                     std::string(10000, 'b'))) == 413);
        CHECK(t::http_get(port, "/no/such/path").status == 404);
        CHECK(t::http_get(port, "/../../etc/passwd").status == 404); // no file system behind it
        CHECK(t::http_get(port, "/", t::http::verb::post).status == 405);
        CHECK(t::status_of(t::raw_exchange(port, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                                                 "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")) == 404);
        // A connection closed half-way through a request.
        (void)t::raw_exchange(port, "GET / HTTP/1.1\r\nHost:");
        // Still serving.
        CHECK(t::http_get(port, "/").status == 200);
        const auto j = json::parse(t::http_get(port, "/stats.json").body);
        CHECK(j.at("server").at("http_errors").get<std::uint64_t>() >= 8);
    }

    SECTION("websocket clients each get frames; a stalled one slows nobody and stays bounded") {
        t::ws_client fast(port);
        t::ws_client second(port);
        // Frames come as a text message describing them, then the JPEG.
        std::vector<std::string> texts;
        const auto jpeg = fast.read_frame(&texts);
        CHECK(static_cast<unsigned char>(jpeg[0]) == 0xFF);
        CHECK(static_cast<unsigned char>(jpeg[1]) == 0xD8);
        // The text just before the JPEG describes it (a state message may come before that).
        REQUIRE_FALSE(texts.empty());
        const auto meta = json::parse(texts.back());
        CHECK(meta.at("type") == "frame");
        CHECK(meta.at("seq").is_number_unsigned());
        CHECK(meta.at("boxes").is_array());
        for (int i = 0; i < 5; ++i) {
            CHECK(second.read_frame().size() > 100); // the second client is fed too
        }

        // A client that never reads, with a tiny receive buffer so that it stalls early.
        t::ws_client stalled(port, 4096);
        auto server_stats = [&] { return json::parse(t::http_get(port, "/stats.json").body); };
        auto stalled_entry = [](const json& j) {
            json worst;
            for (const auto& c : j.at("server").at("clients")) {
                if (worst.is_null() || c.at("dropped") > worst.at("dropped")) {
                    worst = c;
                }
            }
            return worst;
        };
        // Read on the fast client until the stalled one has provably fallen behind.
        int frames = 0;
        json before;
        for (; frames < 900; ++frames) {
            (void)fast.read_frame();
            (void)second.read_frame();
            if (frames % 15 == 14) {
                before = server_stats();
                if (stalled_entry(before).at("dropped").get<std::uint64_t>() >= 10) {
                    break;
                }
            }
        }
        REQUIRE(stalled_entry(before).at("dropped").get<std::uint64_t>() >= 10);

        // Now 60 more frames on the fast client, against the UI stage's own count meanwhile.
        const auto ui_before = before.at("ui_frames").get<std::uint64_t>();
        for (int i = 0; i < 60; ++i) {
            (void)fast.read_frame();
            (void)second.read_frame();
        }
        const auto after = server_stats();
        const auto ui_after = after.at("ui_frames").get<std::uint64_t>();
        // The fast client kept pace with the UI stage: it received (nearly) every frame encoded
        // meanwhile (10% slack for the stats requests and scheduling on a busy machine).
        CHECK(ui_after - ui_before <= 60 + 6);
        // The stalled client holds at most one frame waiting, and keeps dropping.
        const auto s = stalled_entry(after);
        CHECK(s.at("queued").get<std::uint64_t>() <= 1);
        CHECK(s.at("dropped").get<std::uint64_t>() > stalled_entry(before).at("dropped").get<std::uint64_t>());
        // No memory growth beyond noise while the stalled client is attached.
        CHECK(after.at("rss_mb").get<double>() < before.at("rss_mb").get<double>() + 20.0);
        CHECK(after.at("jpeg_pool_misses") == 0);
    }

    server.terminate();
    CHECK(server.wait() == 0);
    CHECK(server.out().find("\"frames_read\"") != std::string::npos); // the summary at exit
}
