// framepipe-detect on a live input, against the real RTSP server (common/testing/rtsp_server.py)
// that each test starts (and kills) itself on 127.0.0.1, on a free port: a server killed and
// restarted, a server that stalls, a URL nobody serves (backoff, --max-attempts), a camera that
// is down at start while the page serves, 50 reconnect cycles, bad flags; and, tagged [age] and
// run as a CTest of its own, a 60 fps stream read by a 5 fps detector for a long while.
//
// Nothing is ordered by a sleep: each step waits for a line the server or the program prints.
// The bounds catch a hang or a stale backlog (off by seconds) on a loaded 2-core machine; the
// precise figures are printed, and docs/live_sources.md gives them with their commands.
#include "common/testing/child_process.hpp"
#include "common/testing/http_client.hpp"
#include "common/testing/rtsp_server.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace t = framepipe_examples::testing;
using nlohmann::json;
using namespace std::chrono_literals;
using clk = std::chrono::steady_clock;

namespace {

const std::string exe = FRAMEPIPE_DETECT_EXE;

double seconds_since(clk::time_point t0) {
    return std::chrono::duration<double>(clk::now() - t0).count();
}

t::rtsp_server start_server(t::rtsp_server_options o = {}) {
    return t::rtsp_server(FRAMEPIPE_TEST_PYTHON, FRAMEPIPE_RTSP_SERVER, std::move(o));
}

using t::free_port;

// The program on `url`, headless, with its JSON summary at exit, plus `extra` flags.
std::vector<std::string> detect_args(const std::string& url, std::vector<std::string> extra) {
    std::vector<std::string> a{exe, "--video", url, "--no-ui", "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

// SIGTERM, exit 0, and the summary (stdout is exactly the JSON object under --json).
json stop_and_summary(t::child& prog) {
    prog.terminate();
    const int code = prog.wait();
    INFO("stderr: " << prog.err().substr(std::max<std::size_t>(prog.err().size(), 3000) - 3000));
    REQUIRE(code == 0);
    return json::parse(prog.out());
}

// The epochs of the frames the detector took, in order, from its inference lines.
std::vector<unsigned long> detector_epochs(const std::string& text) {
    static const std::regex line(R"(inference [0-9.]+ ms \(frame \d+, \d+ boxes, input age [0-9.]+ ms, epoch (\d+)\))");
    std::vector<unsigned long> out;
    for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it) {
        out.push_back(std::stoul((*it)[1]));
    }
    return out;
}

// A number from /proc/<pid>/status ("Threads:", "VmRSS:" in kB).
long proc_status(pid_t pid, const std::string& field) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string key;
    while (in >> key) {
        if (key == field) {
            long v = 0;
            in >> v;
            return v;
        }
        std::getline(in, key);
    }
    return -1;
}

void check_one_line_error(const t::run_result& r, const std::string& needle) {
    INFO("stderr: " << r.err << "stdout: " << r.out);
    CHECK(r.exit_code == 2);
    REQUIRE_FALSE(r.err.empty());
    CHECK(r.err.find('\n') == r.err.size() - 1); // exactly one line
    CHECK(r.err.rfind("framepipe-detect: ", 0) == 0);
    CHECK(r.err.find(needle) != std::string::npos);
}

} // namespace

TEST_CASE("live: a server killed mid-run and restarted on its port is reconnected within the "
          "backoff bound, and no frame of the old epoch follows the new one") {
    auto server = start_server();
    const int port = server.port;
    // The backoff step is at most 1 s (--reconnect-max): the server, once back, is tried within
    // 1 s, and the attempt gives its first frame within ~0.3 s here.
    t::child prog(detect_args(server.url, {"--reconnect-initial", "0.2", "--reconnect-max", "1"}));
    REQUIRE(prog.wait_for("camera: online (epoch ", 60s));
    REQUIRE(prog.wait_for_count("inference ", 3, 60s)); // frames reach the detector

    server.kill_now();
    const auto killed = clk::now();
    const auto lost = prog.wait_for("camera: reconnecting (", 30s);
    REQUIRE(lost);
    std::printf("killed server: noticed after %.2f s: %s\n", seconds_since(killed), lost->c_str());

    auto again = start_server({.port = port});
    const auto back = clk::now(); // the restarted server prints READY once it accepts
    const auto online = prog.wait_for("camera: online again (epoch ", 30s);
    REQUIRE(online);
    const double took = seconds_since(back);
    std::printf("restarted server: first frame of the new connection %.2f s after READY "
                "(bound: backoff step <= 1 s + 1 s): %s\n",
                took, online->c_str());
    CHECK(took < 1.0 + 4.0); // the bound plus slack for a loaded machine: a hang is far beyond
    // Frames flow again: the detector works on the new connection's frames.
    const auto new_epoch = std::stoul(*online);
    const auto n_before = detector_epochs(prog.err()).size();
    REQUIRE(prog.wait_for("epoch " + std::to_string(new_epoch) + ")", 30s));
    REQUIRE(prog.wait_for_count("inference ", n_before + 3, 30s));

    const auto j = stop_and_summary(prog);
    const auto& src = j.at("sources").at(0);
    INFO(src.dump());
    CHECK(src.at("reconnects") == 1);
    CHECK(src.at("connects") == 2);
    CHECK(src.at("status") == "online");
    CHECK(src.at("state") == "streaming");
    CHECK(src.at("frames_after_reconnect").get<std::uint64_t>() > 0);
    CHECK(src.at("first_frame_after_reconnect_ms").is_number());
    CHECK(src.at("max_gap_ms").get<double>() >= 1000 * took * 0.5);
    CHECK(j.at("epoch_regressions") == 0);
    // The detector's frames, in the order it took them: epochs never go back.
    const auto epochs = detector_epochs(prog.err());
    REQUIRE(epochs.size() >= 6);
    CHECK(std::is_sorted(epochs.begin(), epochs.end()));
    CHECK(epochs.front() == 1);
    CHECK(epochs.back() == new_epoch);
}

TEST_CASE("live: a server that stops sending but keeps the connection is a stall within "
          "stall_timeout + 1 s; frames flow again when it resumes") {
    auto server = start_server();
    t::child prog(detect_args(server.url, {"--stall-timeout", "1.5", "--reconnect-initial", "0.2",
                                           "--reconnect-max", "0.5", "--open-timeout", "2"}));
    REQUIRE(prog.wait_for("camera: online (epoch ", 60s));
    REQUIRE(prog.wait_for_count("inference ", 2, 60s));

    REQUIRE(server.pause()); // frames stop at once; the connection stays open
    const auto paused = clk::now();
    REQUIRE(prog.wait_for("camera: stalled (", 30s));
    const double detected = seconds_since(paused);
    std::printf("stall: detected %.2f s after the server paused (stall_timeout 1.5 s)\n", detected);
    CHECK(detected < 1.5 + 1.0);
    CHECK(detected > 1.0); // not before the timeout (the last frame came just before PAUSED)

    REQUIRE(server.resume());
    const auto resumed = clk::now();
    REQUIRE(prog.wait_for("camera: online again (epoch ", 30s));
    std::printf("stall: online again %.2f s after the server resumed\n", seconds_since(resumed));
    const auto n = detector_epochs(prog.err()).size();
    REQUIRE(prog.wait_for_count("inference ", n + 2, 30s));

    const auto j = stop_and_summary(prog);
    const auto& src = j.at("sources").at(0);
    INFO(src.dump());
    CHECK(src.at("stalls") == 1);
    CHECK(src.at("reconnects").get<std::uint64_t>() >= 1);
    CHECK(src.at("status") == "online");
    CHECK(j.at("epoch_regressions") == 0);
}

TEST_CASE("live: a URL nobody serves is retried with the configured backoff; --max-attempts "
          "gives exit 2 with one line naming the URL and the last error") {
    const std::string url = "rtsp://127.0.0.1:" + std::to_string(free_port()) + "/nobody";
    // No jitter: the waits are the steps exactly, 0.1 s doubling to the 0.8 s cap.
    t::child prog({exe, "--video", url, "--no-ui", "--reconnect-initial", "0.1", "--reconnect-max",
                   "0.8", "--reconnect-jitter", "0", "--max-attempts", "6"});
    std::vector<double> arrived;
    const auto t0 = clk::now();
    for (std::size_t n = 1; n <= 5; ++n) {
        REQUIRE(prog.wait_for_count("camera: offline (attempt ", n, 60s));
        arrived.push_back(seconds_since(t0));
    }
    const int code = prog.wait();
    INFO("stdout: " << prog.out() << "stderr: " << prog.err());
    CHECK(code == 2);
    const std::string err = prog.err();
    CHECK(err.find('\n') == err.size() - 1); // exactly one line
    CHECK(err.rfind("framepipe-detect: " + url + ": no connection after 6 attempts in a row; "
                    "last error: rtspsrc: ",
                    0) == 0);

    static const std::regex waits(R"(next attempt in ([0-9.]+) s of a ([0-9.]+) s step)");
    const std::string out = prog.out();
    std::vector<double> delay;
    std::vector<double> step;
    for (std::sregex_iterator it(out.begin(), out.end(), waits), end; it != end; ++it) {
        delay.push_back(std::stod((*it)[1]));
        step.push_back(std::stod((*it)[2]));
    }
    REQUIRE(step.size() == 5); // a wait after each failed attempt but the last
    const std::vector<double> expected{0.1, 0.2, 0.4, 0.8, 0.8};
    for (std::size_t i = 0; i < step.size(); ++i) {
        INFO("wait " << i);
        CHECK(step[i] == Approx(expected[i]).margin(0.006));
        CHECK(delay[i] == Approx(expected[i]).margin(0.006)); // no jitter
    }
    // The attempts are that far apart (the lines come as each attempt fails: the gap between
    // two is the wait plus the next attempt's refused connect).
    std::printf("unserved: attempts failed at");
    for (const double a : arrived) {
        std::printf(" %.2f", a);
    }
    std::printf(" s\n");
    for (std::size_t i = 1; i < arrived.size(); ++i) {
        CHECK(arrived[i] - arrived[i - 1] >= delay[i - 1] - 0.02);
        CHECK(arrived[i] - arrived[i - 1] < delay[i - 1] + 5);
    }

    // With jitter 0.5 (the default) each wait lies in (step / 2, step].
    const auto r = t::run({exe, "--video", url, "--no-ui", "--reconnect-initial", "0.1",
                           "--reconnect-max", "0.4", "--max-attempts", "5"});
    CHECK(r.exit_code == 2);
    delay.clear();
    step.clear();
    for (std::sregex_iterator it(r.out.begin(), r.out.end(), waits), end; it != end; ++it) {
        delay.push_back(std::stod((*it)[1]));
        step.push_back(std::stod((*it)[2]));
    }
    REQUIRE(step.size() == 4);
    const std::vector<double> expected_jittered{0.1, 0.2, 0.4, 0.4};
    for (std::size_t i = 0; i < step.size(); ++i) {
        CHECK(step[i] == Approx(expected_jittered[i]).margin(0.006));
        CHECK(delay[i] > step[i] / 2 - 0.006);
        CHECK(delay[i] <= step[i] + 0.006);
    }
}

TEST_CASE("live: a camera down at start does not block start-up: the page serves, offline, "
          "and the camera is picked up when it comes") {
    const int port = free_port();
    const std::string url = "rtsp://127.0.0.1:" + std::to_string(port) + "/test";
    t::child prog({exe, "--video", url, "--port", "0", "--reconnect-initial", "0.2",
                   "--reconnect-max", "0.5", "--duration", "300"});
    const auto where = prog.wait_for("serving the live UI at http://127.0.0.1:", 60s);
    INFO("stderr: " << prog.err());
    REQUIRE(where);
    const auto web = static_cast<unsigned short>(std::stoi(*where));
    REQUIRE(prog.wait_for("camera: offline (attempt 1 failed: ", 30s)); // and still serving

    const auto stats = json::parse(t::http_get(web, "/stats.json").body);
    const auto& src = stats.at("sources").at(0);
    INFO(src.dump());
    CHECK(src.at("status") == "offline");
    CHECK(src.at("input") == url);
    CHECK(src.at("offline_since_ms").is_number());
    CHECK(src.at("frames") == 0);
    CHECK_THAT(src.at("last_error").get<std::string>(), Catch::Contains("rtspsrc"));
    const auto metrics = t::http_get(web, "/metrics").body;
    std::string why;
    CHECK(t::is_prometheus_text(metrics, &why));
    INFO(why);
    CHECK_THAT(metrics, Catch::Contains("framepipe_source_offline{pipeline=\"detect-pipelined\","
                                        "stage=\"camera\"} 1"));
    CHECK_THAT(metrics, Catch::Contains("framepipe_source_online{pipeline=\"detect-pipelined\","
                                        "stage=\"camera\"} 0"));
    CHECK_THAT(metrics, Catch::Contains("framepipe_source_open_failures_total"));

    auto server = start_server({.port = port});
    REQUIRE(prog.wait_for("camera: online (epoch ", 30s));
    const auto live = json::parse(t::http_get(web, "/stats.json").body);
    CHECK(live.at("sources").at(0).at("status") == "online");
    CHECK(live.at("sources").at(0).at("offline_since_ms").is_null());
    CHECK_THAT(t::http_get(web, "/metrics").body,
               Catch::Contains("framepipe_source_online{pipeline=\"detect-pipelined\","
                               "stage=\"camera\"} 1"));
    prog.terminate();
    CHECK(prog.wait() == 0);
}

TEST_CASE("live: 50 reconnect cycles in a row leave threads and memory flat") {
    auto server = start_server();
    t::child prog(detect_args(server.url, {"--reconnect-initial", "0.05", "--reconnect-max", "0.05",
                                           "--reconnect-jitter", "0", "--detect-fps", "2"}));
    REQUIRE(prog.wait_for("camera: online (epoch ", 60s));
    std::size_t cycles = 0;
    auto cycle = [&] {
        REQUIRE(server.kick()); // the server closes the connection: the source reconnects
        ++cycles;
        REQUIRE(prog.wait_for_count("camera: online again (epoch ", cycles, 30s));
    };
    for (int i = 0; i < 5; ++i) { // warm up: plugins loaded, pools filled
        cycle();
    }
    const long threads0 = proc_status(prog.pid(), "Threads:");
    const long rss0 = proc_status(prog.pid(), "VmRSS:");
    const auto t0 = clk::now();
    for (int i = 0; i < 50; ++i) {
        cycle();
    }
    const double took = seconds_since(t0);
    const long threads1 = proc_status(prog.pid(), "Threads:");
    const long rss1 = proc_status(prog.pid(), "VmRSS:");
    std::printf("50 reconnect cycles in %.1f s: threads %ld -> %ld, RSS %.1f -> %.1f MiB\n", took,
                threads0, threads1, static_cast<double>(rss0) / 1024,
                static_cast<double>(rss1) / 1024);
    CHECK(std::abs(threads1 - threads0) <= 2);
    CHECK(rss1 - rss0 < 20 * 1024);

    const auto j = stop_and_summary(prog);
    const auto& src = j.at("sources").at(0);
    INFO(src.dump());
    CHECK(src.at("reconnects") == 55);
    CHECK(src.at("abandoned_calls") == 0);
    CHECK(j.at("epoch_regressions") == 0);
}

TEST_CASE("live: bad flag values exit 2 with one line naming the flag") {
    const std::string url = "rtsp://127.0.0.1:1/x"; // never contacted: the checks come first
    using args = std::vector<std::string>;
    const std::vector<std::pair<args, std::string>> cases{
        {{"--video", url, "--stall-timeout", "-1"}, "--stall-timeout"},
        {{"--video", url, "--stall-timeout", "0"}, "--stall-timeout"},
        {{"--video", url, "--stall-timeout", "soon"}, "--stall-timeout"},
        {{"--video", url, "--stall-timeout", "nan"}, "--stall-timeout"},
        {{"--video", url, "--reconnect-initial", "2", "--reconnect-max", "1"}, "--reconnect-max"},
        {{"--video", url, "--reconnect-jitter", "1.5"}, "--reconnect-jitter"},
        {{"--video", url, "--open-timeout", "1e9"}, "--open-timeout"},
        {{"--video", url, "--max-attempts", "-3"}, "--max-attempts"},
        {{"--video", url, "--rtsp-transport", "sctp"}, "--rtsp-transport"},
        {{"--video", url, "--rtsp-latency", "-0.1"}, "--rtsp-latency"},
        {{"--video", url, "--source-fps", "10"}, "--source-fps: only for files"},
        {{"--video", url, "--loop"}, "--loop: only for files"},
        {{"--stall-timeout", "2"}, "--stall-timeout: only for live inputs"},
        {{"--video", "gopher://127.0.0.1/x"}, "unsupported scheme"},
    };
    for (const auto& [extra, needle] : cases) {
        args a{exe, "--no-ui", "--duration", "1"};
        a.insert(a.end(), extra.begin(), extra.end());
        INFO(Catch::rangeToString(a));
        const auto r = t::run(a);
        check_one_line_error(r, needle);
    }
}

// A 60 fps stream read by a detector paced to 5 fps: the age of the detector's input (the
// moment it starts on a frame, against the frame's capture time from the PTS) must not grow.
// FRAMEPIPE_LIVE_AGE_SECONDS sets the length (the CTest runs 20 s; docs: 60 s).
TEST_CASE("live: a 60 fps stream read by a 5 fps detector: its input's age does not grow",
          "[.age]") {
    const char* env = std::getenv("FRAMEPIPE_LIVE_AGE_SECONDS");
    const double seconds = env != nullptr ? std::stod(env) : 20.0;
    auto server = start_server({.fps = 60, .key_int = 60});
    t::child prog(detect_args(server.url, {"--detect-fps", "5", "--duration",
                                           std::to_string(seconds)}));
    REQUIRE(prog.wait_for("camera: online (epoch ", 60s));
    const int code = prog.wait();
    INFO("stderr tail: " << prog.err().substr(std::max<std::size_t>(prog.err().size(), 3000) - 3000));
    REQUIRE(code == 0);
    const auto j = json::parse(prog.out());
    static const std::regex line(R"(input age ([0-9.]+) ms)");
    const std::string err = prog.err();
    std::vector<double> ages;
    for (std::sregex_iterator it(err.begin(), err.end(), line), end; it != end; ++it) {
        ages.push_back(std::stod((*it)[1]));
    }
    // The first and the last 5 s of detections (25 at 5 fps), the very first 3 left out (the
    // decoder starting).
    REQUIRE(ages.size() >= 40);
    const std::size_t n = std::min<std::size_t>(25, (ages.size() - 3) / 2);
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    const double start = median({ages.begin() + 3, ages.begin() + 3 + static_cast<long>(n)});
    const double end = median({ages.end() - static_cast<long>(n), ages.end()});
    const auto& src = j.at("sources").at(0);
    std::printf("60 fps stream, 5 fps detector, %.0f s: input age median %.1f ms at the start, "
                "%.1f ms at the end; p50 %.1f ms, p99 %.1f ms; source %.1f fps, detector %.2f "
                "fps; %llu frames, max gap %.0f ms\n",
                seconds, start, end, j.at("detect_age_p50_ms").get<double>(),
                j.at("detect_age_p99_ms").get<double>(), j.at("source_fps").get<double>(),
                j.at("detect_fps").get<double>(),
                static_cast<unsigned long long>(src.at("frames").get<std::uint64_t>()),
                src.at("max_gap_ms").get<double>());
    // A backlog would grow by seconds; the age stays within a few frame intervals.
    CHECK(end < start + 100);
    CHECK(end < 500);
    CHECK(j.at("source_fps").get<double>() > 30); // read as fast as the camera delivers
    CHECK(src.at("reconnects") == 0);
}
