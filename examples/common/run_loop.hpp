// examples/common/run_loop.hpp - how every example runs its pipeline: start it, let it run until
// the duration has passed, the pipeline ends by itself (its source ran out) or Ctrl-C / SIGTERM,
// then stop it in order within a deadline and join it.
//
//     framepipe_examples::run_loop run(p, {.duration_s = s.duration});  // catches SIGINT/SIGTERM
//     const auto r = run.run([&](framepipe_examples::run_end) {
//         summary = stats();      // the run's figures, before the orderly stop drains the graph
//     });
//     // r.end: duration, finished or signal; r.stop: stages still running at the deadline
//
// While it runs, seconds() is the time since the start (for rates on a live page); it stops
// counting when the run ends, so figures taken during the drain still cover the run only.
//
// Header-only. Thread safety: construct and run() on the main thread, once; seconds() from any
// thread.
#pragma once

#include "common/program.hpp"

#include <framepipe/pipeline.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>

namespace framepipe_examples {

// What ended a run.
enum class run_end {
    duration, // the requested duration passed
    finished, // every stage ended by itself (the source ran out, and the rest drained)
    signal,   // SIGINT or SIGTERM
};

[[nodiscard]] constexpr std::string_view to_string(run_end e) noexcept {
    switch (e) {
    case run_end::duration: return "duration";
    case run_end::finished: return "finished";
    case run_end::signal: return "signal";
    }
    return "unknown";
}

struct run_options {
    // Seconds to run; 0: until the pipeline ends by itself or a signal.
    double duration_s = 0;
    // How long the orderly stop may take before the stages still running are stopped at once.
    std::chrono::nanoseconds stop_deadline = std::chrono::seconds(10);
    // on_tick(k) is called on the main thread at start + k * tick_period (k = 1, 2, ...), with no
    // drift, while the run lasts; a tick due at the very end of the duration is still called.
    std::chrono::nanoseconds tick_period{0};
    std::function<void(std::uint64_t)> on_tick{};
};

struct run_result {
    run_end end = run_end::duration;
    double seconds = 0;          // from the start to the end of the run (before the stop)
    framepipe::stop_report stop; // unclean: stages were still running at the deadline
};

class run_loop {
public:
    using clock = std::chrono::steady_clock;

    // Installs the SIGINT/SIGTERM handlers (program.hpp) at once, so that a signal that comes
    // as soon as the program announces itself is an orderly stop too. Throws
    // std::invalid_argument naming duration_s when it is negative or not finite.
    explicit run_loop(framepipe::pipeline& p, run_options options = {})
        : p_(p), options_(std::move(options)) {
        if (!(options_.duration_s >= 0) || options_.duration_s > 1e9) {
            throw std::invalid_argument("duration_s: must be between 0 and 1e9 seconds");
        }
        install_stop_signals();
    }

    run_loop(const run_loop&) = delete;
    run_loop& operator=(const run_loop&) = delete;

    // Starts the pipeline and waits, in slices of at most `poll`, for the first of: the duration,
    // the pipeline's own end, a signal. Then calls at_end(end) (take the run's figures, stop a
    // server that reads the pipeline), stops the pipeline in order within stop_deadline and joins
    // it. Blocks. Rethrows what pipeline::start() throws, and a stage's failure as
    // framepipe::stage_error from pipeline::wait(). Once.
    template <class AtEnd>
    run_result run(AtEnd at_end) {
        run_result r;
        const auto t0 = clock::now();
        start_ns_.store(t0.time_since_epoch().count(), std::memory_order_relaxed);
        p_.start();
        const auto until = options_.duration_s > 0
                               ? t0 + std::chrono::duration_cast<clock::duration>(
                                          std::chrono::duration<double>(options_.duration_s))
                               : clock::time_point::max();
        const bool ticking = options_.tick_period.count() > 0 && options_.on_tick;
        auto next_tick = ticking ? t0 + options_.tick_period : clock::time_point::max();
        std::uint64_t ticks = 0;
        for (;;) {
            auto now = clock::now();
            while (now >= next_tick) { // late ticks are all called, in order
                options_.on_tick(++ticks);
                next_tick += options_.tick_period;
                now = clock::now();
            }
            if (stop_requested()) {
                r.end = run_end::signal;
                break;
            }
            if (now >= until) {
                r.end = run_end::duration;
                break;
            }
            // A signal handler cannot wake a wait: look for one every `poll`.
            const auto wake = std::min({until, next_tick, now + poll});
            if (p_.wait_for(wake - now)) {
                r.end = run_end::finished;
                break;
            }
        }
        const auto t1 = clock::now();
        r.seconds = std::chrono::duration<double>(t1 - t0).count();
        end_ns_.store(t1.time_since_epoch().count(), std::memory_order_relaxed);
        at_end(r.end);
        r.stop = p_.request_stop(options_.stop_deadline);
        p_.wait();
        return r;
    }

    run_result run() {
        return run([](run_end) {});
    }

    // Seconds since run() started the pipeline (0 before), frozen once the run has ended. Any
    // thread; wait-free.
    [[nodiscard]] double seconds() const noexcept {
        const auto start = start_ns_.load(std::memory_order_relaxed);
        if (start == 0) {
            return 0.0;
        }
        auto end = end_ns_.load(std::memory_order_relaxed);
        if (end == 0) {
            end = clock::now().time_since_epoch().count();
        }
        return std::chrono::duration<double>(clock::duration(end - start)).count();
    }

    // How often the loop looks for a signal.
    static constexpr std::chrono::milliseconds poll{100};

private:
    framepipe::pipeline& p_;
    run_options options_;
    // Relaxed: statistics for seconds(); they order nothing else.
    std::atomic<clock::rep> start_ns_{0};
    std::atomic<clock::rep> end_ns_{0};
};

} // namespace framepipe_examples
