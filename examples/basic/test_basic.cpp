// Runs framepipe-basic on short runs and checks the structure of what it prints (not timing).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace {

struct result {
    int exit_code = -1;
    std::string out;
};

// Runs the example with `args`; stdout is captured, stderr is folded into it when asked.
result run(const std::string& args, bool with_stderr = false) {
    const std::string cmd =
        std::string("'") + FRAMEPIPE_BASIC_EXE + "' " + args + (with_stderr ? " 2>&1" : "");
    result r;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::array<char, 4096> buf{};
    while (std::fgets(buf.data(), static_cast<int>(buf.size()), p) != nullptr) {
        r.out += buf.data();
    }
    const int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

} // namespace

TEST_CASE("framepipe-basic: --json prints one summary object with every field, per mode") {
    for (const std::string mode : {"inline", "unbounded", "framepipe"}) {
        INFO(mode);
        const auto r = run("--mode " + mode + " --seconds 1 --detector-ms 50 --json");
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
    const auto r = run("--compare --seconds 1 --detector-ms 50");
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
    for (const std::string args : {"--mode sideways", "--seconds 0", "--detector-ms -5", "--bogus"}) {
        INFO(args);
        const auto r = run(args, true);
        CHECK(r.exit_code == 2);
        REQUIRE(!r.out.empty());
        CHECK(r.out.find('\n') == r.out.size() - 1); // exactly one line
        CHECK(r.out.rfind("framepipe-basic: ", 0) == 0);
    }
}
