// Runs framepipe-basic on short runs and checks the structure of what it prints (not timing).
#include "common/testing/child_process.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace t = framepipe_examples::testing;

namespace {

// Runs the example with `args` to completion; its stdout and stderr apart.
t::run_result run(const std::vector<std::string>& args) {
    std::vector<std::string> argv{FRAMEPIPE_BASIC_EXE};
    argv.insert(argv.end(), args.begin(), args.end());
    return t::run(argv);
}

} // namespace

TEST_CASE("framepipe-basic: --json prints one summary object with every field, per mode") {
    for (const std::string mode : {"inline", "unbounded", "framepipe"}) {
        INFO(mode);
        const auto r = run({"--mode", mode, "--seconds", "1", "--detector-ms", "50", "--json"});
        INFO("stderr: " << r.err);
        REQUIRE(r.exit_code == 0);
        const auto j = nlohmann::json::parse(r.out);
        REQUIRE(j.is_object());
        CHECK(j.at("mode") == mode);
        for (const char* key : {"source_fps", "ui_fps", "detector_fps", "detector_age_p50_ms",
                                "detector_age_p99_ms", "peak_rss_mb", "seconds"}) {
            INFO(key);
            REQUIRE(j.at(key).is_number());
            CHECK(j.at(key).get<double>() >= 0.0);
        }
        for (const char* key : {"dropped_for_detector", "dropped_for_ui", "detector_backlog"}) {
            INFO(key);
            REQUIRE(j.at(key).is_number_unsigned());
        }
        CHECK(j.at("source_fps").get<double>() > 0.0);
        CHECK(j.at("detector_age_p50_ms").get<double>() <= j.at("detector_age_p99_ms").get<double>());
        CHECK(j.at("peak_rss_mb").get<double>() > 0.0);
    }
}

TEST_CASE("framepipe-basic: --compare prints the three modes side by side") {
    const auto r = run({"--compare", "--seconds", "1", "--detector-ms", "50"});
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("inline") != std::string::npos);
    CHECK(r.out.find("unbounded") != std::string::npos);
    CHECK(r.out.find("framepipe") != std::string::npos);
    for (const char* row : {"source fps", "ui fps", "detector fps", "detector age p99 ms",
                            "dropped for detector", "peak RSS MB"}) {
        CHECK(r.out.find(row) != std::string::npos);
    }
}

TEST_CASE("framepipe-basic: bad arguments exit 2 with a one-line error") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--mode", "sideways"}, {"--seconds", "0"}, {"--detector-ms", "-5"}, {"--bogus"},
             // NaN passed CLI::Range, and was refused later as "duration_s" (three lines
             // under --compare); --compare ignored --json and --mode.
             {"--seconds", "nan"}, {"--compare", "--seconds", "nan"}, {"--compare", "--json"},
             {"--compare", "--mode", "inline"}}) {
        INFO(Catch::rangeToString(args));
        const auto r = run(args);
        INFO("stderr: " << r.err << "stdout: " << r.out);
        CHECK(r.exit_code == 2);
        REQUIRE(!r.err.empty());
        CHECK(r.err.find('\n') == r.err.size() - 1); // exactly one line
        CHECK(r.err.rfind("framepipe-basic: ", 0) == 0);
        const bool nan = std::find(args.begin(), args.end(), "nan") != args.end();
        CHECK(r.err.find(nan                     ? "--seconds: Value nan"
                         : args[0] == "--compare" ? "excludes"
                                                  : args[0].c_str()) != std::string::npos);
        CHECK(r.out.empty());
    }
}

namespace {
// The process `parent` started (its only child), or 0 while it has none.
pid_t only_child_of(pid_t parent) {
    std::ifstream in("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) +
                     "/children");
    pid_t pid = 0;
    in >> pid;
    return pid;
}
// Whether `pid` runs a mode (it has exec'd: between its fork and its exec it shows its parent's
// handlers) and catches SIGTERM now (its own handler installed), from /proc/<pid>.
bool catches_sigterm(pid_t pid) {
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
    const std::string args((std::istreambuf_iterator<char>(cmdline)),
                           std::istreambuf_iterator<char>());
    if (args.find("--mode") == std::string::npos) {
        return false;
    }
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("SigCgt:", 0) == 0) {
            const auto mask = std::stoull(line.substr(7), nullptr, 16);
            return (mask >> (SIGTERM - 1) & 1U) != 0;
        }
    }
    return false;
}
} // namespace

TEST_CASE("framepipe-basic: --compare passes SIGTERM on, prints the modes that ran, exits 0") {
    // The parent installed no handler: SIGTERM killed it (143) and left its child running,
    // re-parented, for the rest of --seconds; Ctrl-C lost the child's summary.
    t::child p({FRAMEPIPE_BASIC_EXE, "--compare", "--seconds", "30", "--detector-ms", "50"});
    REQUIRE(p.wait_for("running inline mode", std::chrono::seconds(60)));
    // Until the child runs and handles SIGTERM itself (a guard, not a timing: a parent that
    // runs it through a shell, whose child is the shell, never gets there).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    pid_t inline_run = 0;
    while ((inline_run = only_child_of(p.pid())) == 0 || !catches_sigterm(inline_run)) {
        REQUIRE(std::chrono::steady_clock::now() < give_up);
        std::this_thread::yield();
    }
    p.terminate(); // the parent alone
    CHECK(p.wait() == 0); // and, as wait() reads to the end, no process kept its output open
    INFO("stdout: " << p.out() << "stderr: " << p.err());
    CHECK(p.out().find("inline") != std::string::npos);
    CHECK(p.out().find("source fps") != std::string::npos);
    CHECK(p.out().find("unbounded") == std::string::npos); // no mode after the stop
    CHECK(p.err().find("running unbounded") == std::string::npos);
}
