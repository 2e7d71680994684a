// examples/common/program.hpp - what every example program does the same way: one-line errors
// with exit code 2, Ctrl-C as an orderly stop (run_loop.hpp waits for it), and the numbers of a
// JSON summary, from meters and from a pipeline snapshot.
//
//     int main(int argc, char** argv) {
//         return framepipe_examples::run_main("framepipe-detect", [&] { return run(argc, argv); });
//     }
//
// Header-only; needs nlohmann-json. Thread safety: stop_requested() from any thread; the rest
// from the main thread.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/pipeline.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>

namespace framepipe_examples {

// `j` as text: j.dump(indent), except that bytes of strings that are not valid UTF-8 (a file
// name, a header, a URL path) become U+FFFD instead of making dump() throw. Every JSON the
// examples print or serve goes through this.
[[nodiscard]] inline std::string json_text(const nlohmann::json& j, int indent = -1) {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Bad input found by the program itself: main prints "program: what()" and exits 2.
class usage_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {
// Written by the signal handler, read by the main loop: lock-free atomics are async-signal-safe.
inline std::atomic<bool> stop_signal{false};
inline std::atomic<std::int64_t> first_signal_ns{0}; // CLOCK_MONOTONIC; 0: none yet
// A second signal at least this long after the first ends the program; one sooner is the same
// request again (GNU timeout, for one, sends its signal to the program and then to its process
// group). A variable so that tests can change it.
inline std::atomic<std::int64_t> force_after_ns{1'000'000'000};
static_assert(std::atomic<bool>::is_always_lock_free &&
                  std::atomic<std::int64_t>::is_always_lock_free,
              "the signal handler needs lock-free atomics");
// The first signal asks for the orderly stop. A later one, while that stop is under way (a
// shutdown that hangs, a user who will not wait), gets the signal's default action: the program
// ends at once. clock_gettime(), signal() and raise() are async-signal-safe.
extern "C" inline void on_stop_signal(int sig) {
    timespec t{};
    (void)clock_gettime(CLOCK_MONOTONIC, &t);
    const std::int64_t now = std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec + 1; // never 0
    std::int64_t first = 0;
    if (first_signal_ns.compare_exchange_strong(first, now)) {
        stop_signal.store(true);
        return;
    }
    if (now - first >= force_after_ns.load()) {
        (void)std::signal(sig, SIG_DFL);
        (void)std::raise(sig);
    }
}
} // namespace detail

// Makes SIGINT and SIGTERM request an orderly stop (see stop_requested()) instead of killing;
// another one (either) a second or more after the first kills, as a signal does by default.
inline void install_stop_signals() {
    std::signal(SIGINT, detail::on_stop_signal);
    std::signal(SIGTERM, detail::on_stop_signal);
}

// Whether SIGINT or SIGTERM arrived. Any thread; wait-free.
[[nodiscard]] inline bool stop_requested() noexcept { return detail::stop_signal.load(); }

// Prints "program: message" as exactly one line on stderr (newlines in message become "; ").
inline void print_error(std::string_view program, std::string_view message) {
    std::string line(message);
    for (std::size_t at = 0; (at = line.find('\n', at)) != std::string::npos;) {
        line.replace(at, 1, "; ");
    }
    while (!line.empty() && (line.back() == ' ' || line.back() == ';')) {
        line.pop_back();
    }
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                 line.c_str());
}

// Runs `body`; any exception escaping it is printed as one line and turned into exit code 2.
template <class Body>
int run_main(std::string_view program, Body body) {
    try {
        return body();
    } catch (const std::exception& e) {
        print_error(program, e.what());
        return 2;
    } catch (...) {
        print_error(program, "unknown error");
        return 2;
    }
}

// A quantile of a latency histogram in milliseconds (0 when it is empty).
[[nodiscard]] inline double quantile_ms(const framepipe::latency_histogram& h, double q) {
    return h.count() == 0 ? 0.0
                          : std::chrono::duration<double, std::milli>(h.quantile(q)).count();
}

// A channel's drops by reason, as a JSON object of the non-zero reasons.
[[nodiscard]] inline nlohmann::json drops_by_reason(const framepipe::channel_stats& s) {
    nlohmann::json j = nlohmann::json::object();
    const std::pair<const char*, std::uint64_t> reasons[] = {
        {"evicted", s.evicted},     {"rejected", s.rejected},       {"cancelled", s.cancelled},
        {"expired", s.expired},     {"after_close", s.after_close}, {"rate_limited", s.rate_limited},
        {"sampled_out", s.sampled_out}, {"lost_in_transport", s.lost_in_transport}};
    for (const auto& [name, n] : reasons) {
        if (n != 0) {
            j[name] = n;
        }
    }
    return j;
}

// A channel's drops by reason in a pipeline snapshot (which also counts what a paced stage passed
// over, as rate_limited), as a JSON object of the non-zero reasons.
[[nodiscard]] inline nlohmann::json drops_by_reason(const framepipe::channel_snapshot& c) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [why, n] : c.dropped_by_reason) {
        if (n != 0) {
            j[why] = n;
        }
    }
    return j;
}

// The channel named `name` in a snapshot; std::out_of_range naming it when there is none.
[[nodiscard]] inline const framepipe::channel_snapshot& channel_named(
    const framepipe::pipeline_snapshot& snap, std::string_view name) {
    for (const auto& c : snap.channels) {
        if (c.name == name) {
            return c;
        }
    }
    throw std::out_of_range("no channel '" + std::string(name) + "' in pipeline '" + snap.name +
                            "'");
}

// Rounds for a readable summary (milliseconds to 0.01, rates to 0.01).
[[nodiscard]] inline double round2(double v) {
    return static_cast<double>(static_cast<long long>(v * 100.0 + (v < 0 ? -0.5 : 0.5))) / 100.0;
}

// The pipeline's live figures as the summaries and the pages show them: "stages" (rate, items,
// service time, busy share) and "channels" (counts, drops by non-zero reason, item age).
[[nodiscard]] inline nlohmann::json snapshot_json(const framepipe::pipeline_snapshot& snap) {
    nlohmann::json stages = nlohmann::json::array();
    for (const auto& st : snap.stages) {
        stages.push_back({{"name", st.name},
                          {"fps", round2(st.fps)},
                          {"items_in", st.items_in},
                          {"items_out", st.items_out},
                          {"service_p50_ms", round2(st.service_p50_ms)},
                          {"service_p99_ms", round2(st.service_p99_ms)},
                          {"busy_ratio", round2(st.busy_ratio)}});
    }
    nlohmann::json channels = nlohmann::json::array();
    for (const auto& c : snap.channels) {
        channels.push_back({{"name", c.name},
                            {"kind", c.kind},
                            {"pushed", c.pushed},
                            {"popped", c.popped},
                            {"dropped", c.dropped},
                            {"dropped_by_reason", drops_by_reason(c)},
                            {"age_p50_ms", round2(c.age_p50_ms)},
                            {"age_p99_ms", round2(c.age_p99_ms)}});
    }
    return {{"stages", std::move(stages)}, {"channels", std::move(channels)}};
}

} // namespace framepipe_examples
