// Runs framepipe-basic on short runs and checks the structure of what it prints (not timing).
#include "common/testing/child_process.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

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
             {"--mode", "sideways"}, {"--seconds", "0"}, {"--detector-ms", "-5"}, {"--bogus"}}) {
        INFO(Catch::rangeToString(args));
        const auto r = run(args);
        INFO("stderr: " << r.err << "stdout: " << r.out);
        CHECK(r.exit_code == 2);
        REQUIRE(!r.err.empty());
        CHECK(r.err.find('\n') == r.err.size() - 1); // exactly one line
        CHECK(r.err.rfind("framepipe-basic: ", 0) == 0);
        CHECK(r.out.empty());
    }
}
