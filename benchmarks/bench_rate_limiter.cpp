// bench_rate_limiter - framepipe::rate_limiter::try_acquire() against its floor (one
// steady_clock::now() call: try_acquire() must read the clock) and a mutex token bucket.
//
// Scenarios (one iteration = one call; 1 and 2 threads sharing one limiter, wall-clock time):
//   rate_limiter.admit   every call is admitted (1e9 Hz, burst 1000).
//   rate_limiter.reject  every call is rejected (1e-3 Hz, its one token taken before timing).
// Counter: admitted (fraction of calls admitted), to show that the intended path was measured.
// With 2 threads Google Benchmark reports wall time / total calls of both threads.
#include "common.hpp"

#include <framepipe/rate_limiter.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>

namespace fpb {
namespace {

using clock_type = std::chrono::steady_clock;

// The classic token bucket: tokens refill continuously at `hz`, capped at `burst`.
class mutex_token_bucket {
public:
    mutex_token_bucket(double hz, double burst)
        : per_ns_(hz * 1e-9), burst_(burst), tokens_(burst), last_(clock_type::now()) {}
    bool try_acquire() {
        const auto now = clock_type::now();
        std::lock_guard<std::mutex> l(m_);
        const double elapsed =
            static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_)
                                    .count());
        last_ = std::max(last_, now);
        tokens_ = std::min(burst_, tokens_ + std::max(0.0, elapsed) * per_ns_);
        if (tokens_ < 1.0) {
            return false;
        }
        tokens_ -= 1.0;
        return true;
    }

private:
    std::mutex m_;
    double per_ns_;
    double burst_;
    double tokens_;
    clock_type::time_point last_;
};

struct now_floor {
    bool try_acquire() {
        benchmark::DoNotOptimize(clock_type::now());
        return true;
    }
};

struct fp_limiter {
    framepipe::rate_limiter l;
    fp_limiter(double hz, std::size_t burst) : l(hz, burst) {}
    bool try_acquire() { return l.try_acquire(); }
};

struct fp_bucket {
    mutex_token_bucket b;
    fp_bucket(double hz, std::size_t burst) : b(hz, static_cast<double>(burst)) {}
    bool try_acquire() { return b.try_acquire(); }
};

template <class L>
std::unique_ptr<L> make_limiter(bool admit) {
    if constexpr (std::is_same_v<L, now_floor>) {
        (void)admit;
        return std::make_unique<L>();
    } else {
        auto l = admit ? std::make_unique<L>(1e9, 1000) : std::make_unique<L>(1e-3, 1);
        if (!admit) {
            (void)l->try_acquire(); // the one token; every later call is rejected
        }
        return l;
    }
}

template <class L>
void try_acquire_case(benchmark::State& st, bool admit) {
    // One limiter shared by all threads of the case; thread 0 builds it before the loop (the
    // loop starts with a barrier, so the other threads see it).
    static std::unique_ptr<L> shared;
    if (st.thread_index() == 0) {
        shared = make_limiter<L>(admit);
    }
    std::uint64_t mine = 0;
    std::uint64_t n = 0;
    for (auto _ : st) {
        mine += shared->try_acquire();
        ++n;
    }
    st.counters["admitted"] = benchmark::Counter(
        static_cast<double>(mine) / static_cast<double>(std::max<std::uint64_t>(n, 1)),
        benchmark::Counter::kAvgThreads);
}

void register_all() {
    for (const bool admit : {true, false}) {
        const std::string s = admit ? "rate_limiter.admit" : "rate_limiter.reject";
        for (const int threads : {1, 2}) {
            const std::string sc = s + (threads == 1 ? "_1t" : "_2t");
            reg_real(case_name(sc, "any", "framepipe.rate_limiter"),
                     [admit](benchmark::State& st) { try_acquire_case<fp_limiter>(st, admit); })
                ->Threads(threads);
            reg_real(case_name(sc, "any", "std.mutex+token_bucket"),
                     [admit](benchmark::State& st) { try_acquire_case<fp_bucket>(st, admit); })
                ->Threads(threads);
            reg_real(case_name(sc, "any", "floor.steady_clock_now"),
                     [admit](benchmark::State& st) { try_acquire_case<now_floor>(st, admit); })
                ->Threads(threads);
        }
    }
}

const bool registered = [] {
    register_all();
    return true;
}();

} // namespace
} // namespace fpb
