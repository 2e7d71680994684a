// benchmarks/common.hpp - shared helpers of the framepipe benchmark suite.
//
// Conventions (see docs/benchmarks.md):
// - Benchmark names are "<scenario>/<payload>/<implementation>", e.g.
//   "ring.spsc_throughput/8B/framepipe.ring_spin". benchmarks/report.py parses them.
// - Payloads: an 8-byte handle (std::uint64_t) and a 64-byte struct. Sequence numbers start
//   at 1 because some peers (atomic_queue) reserve 0 as their "empty" value.
// - Multi-threaded cases report wall-clock time: either UseRealTime() or UseManualTime() with
//   a steady_clock / TSC interval measured by the benchmark itself.
// - Every case gets the "p99" aggregate next to Google Benchmark's mean/median/stddev/cv.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <x86intrin.h>
#define FPB_X86 1
#endif

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace fpb {

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

using h8 = std::uint64_t; // the 8-byte handle (a frame id, an index or a pointer)

struct p64 { // the 64-byte struct (frame metadata)
    std::uint64_t seq = 0;
    std::uint64_t data[7] = {};
};
static_assert(sizeof(h8) == 8);
static_assert(sizeof(p64) == 64);
static_assert(std::is_trivially_copyable_v<p64>);

template <class T>
[[nodiscard]] inline T make_item(std::uint64_t seq) noexcept {
    if constexpr (std::is_same_v<T, h8>) {
        return seq;
    } else {
        T v;
        v.seq = seq;
        v.data[0] = seq;
        return v;
    }
}

template <class T>
[[nodiscard]] inline std::uint64_t seq_of(const T& v) noexcept {
    if constexpr (std::is_same_v<T, h8>) {
        return v;
    } else {
        return v.seq;
    }
}

template <class T>
[[nodiscard]] inline const char* payload_name() noexcept {
    return std::is_same_v<T, h8> ? "8B" : "64B";
}

// ---------------------------------------------------------------------------------------------
// CPU and time helpers
// ---------------------------------------------------------------------------------------------

inline void cpu_relax() noexcept {
#ifdef FPB_X86
    _mm_pause();
#else
    std::this_thread::yield();
#endif
}

inline double steady_ns() noexcept {
    return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// The time-stamp counter (constant and invariant on current x86), read with fences so that the
// code being timed cannot move across the read. Falls back to steady_clock elsewhere.
inline std::uint64_t ticks() noexcept {
#ifdef FPB_X86
    _mm_lfence();
    const std::uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
#else
    return static_cast<std::uint64_t>(steady_ns());
#endif
}

struct tick_calibration {
    double ns_per_tick = 1.0;
    double overhead_ticks = 0.0; // cost of an empty ticks()..ticks() pair
};

// Measured once per process (about 30 ms).
inline const tick_calibration& calibration() {
    static const tick_calibration c = [] {
        tick_calibration r;
#ifdef FPB_X86
        const double n0 = steady_ns();
        const std::uint64_t t0 = ticks();
        while (steady_ns() - n0 < 25e6) {
        }
        const double n1 = steady_ns();
        const std::uint64_t t1 = ticks();
        r.ns_per_tick = (n1 - n0) / static_cast<double>(t1 - t0);
        std::vector<std::uint64_t> d(2001);
        for (auto& x : d) {
            const auto a = ticks();
            const auto b = ticks();
            x = b - a;
        }
        std::nth_element(d.begin(), d.begin() + 1000, d.end());
        r.overhead_ticks = static_cast<double>(d[1000]);
#endif
        return r;
    }();
    return c;
}

inline double ticks_to_ns(double t) noexcept { return t * calibration().ns_per_tick; }

// Busy-waits for about `ns` nanoseconds (simulated work that keeps the core busy).
inline void spin_for_ns(double ns) noexcept {
    const auto& c = calibration();
    const auto until = ticks() + static_cast<std::uint64_t>(ns / c.ns_per_tick);
    while (ticks() < until) {
    }
}

// Pins the calling thread to one CPU (cpu % number of CPUs). Two-thread spinning cases pin
// their threads to different cores so that the scheduler never stacks two spinners on one core.
// Returns false when pinning is not possible (then the case runs unpinned).
inline bool pin_this_thread(int cpu) noexcept {
#if defined(__linux__)
    const unsigned n = std::max(1u, std::thread::hardware_concurrency());
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<unsigned>(cpu) % n, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
#else
    (void)cpu;
    return false;
#endif
}

inline void unpin_this_thread() noexcept {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    const unsigned n = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) {
        CPU_SET(i, &set);
    }
    (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#endif
}

// Pins the benchmark thread for the scope of one run.
struct pinned_scope {
    explicit pinned_scope(int cpu) { pin_this_thread(cpu); }
    ~pinned_scope() { unpin_this_thread(); }
    pinned_scope(const pinned_scope&) = delete;
    pinned_scope& operator=(const pinned_scope&) = delete;
};

// A start line: the helper thread says it is ready; the benchmark thread records the start
// time and lets it go.
struct start_line {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    void arrive_and_wait() noexcept {
        ready.fetch_add(1, std::memory_order_acq_rel);
        while (!go.load(std::memory_order_acquire)) {
            cpu_relax();
        }
    }
    void wait_for(int helpers) noexcept {
        while (ready.load(std::memory_order_acquire) < helpers) {
            std::this_thread::yield();
        }
    }
    void release() noexcept { go.store(true, std::memory_order_release); }
};

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

// Nearest-rank percentile of a sample (0 < q <= 1). Reorders `v`.
template <class V>
[[nodiscard]] inline double percentile(std::vector<V>& v, double q) {
    if (v.empty()) {
        return 0.0;
    }
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    rank = std::clamp<std::size_t>(rank, 1, v.size()) - 1;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank), v.end());
    return static_cast<double>(v[rank]);
}

// The "p99" aggregate over repetitions (with 10 repetitions this is the worst one).
inline double p99_of_repetitions(const std::vector<double>& v) {
    std::vector<double> c(v);
    return percentile(c, 0.99);
}

// A bounded reservoir of per-operation samples (ns); keeps the first `cap` samples.
class samples {
public:
    explicit samples(std::size_t cap = 1u << 20) { v_.reserve(cap); }
    void add(double ns) {
        if (v_.size() < v_.capacity()) {
            v_.push_back(static_cast<float>(ns));
        }
        sum_ += ns;
        ++n_;
        max_ = std::max(max_, ns);
    }
    [[nodiscard]] double pct(double q) { return percentile(v_, q); }
    [[nodiscard]] double mean() const { return n_ ? sum_ / static_cast<double>(n_) : 0.0; }
    [[nodiscard]] double max() const { return max_; }
    [[nodiscard]] std::uint64_t count() const { return n_; }

private:
    std::vector<float> v_;
    double sum_ = 0;
    double max_ = 0;
    std::uint64_t n_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

using bench_fn = std::function<void(benchmark::State&)>;

// "<scenario>/<payload>/<impl>"
inline std::string case_name(const std::string& scenario, const std::string& payload,
                             const std::string& impl) {
    return scenario + "/" + payload + "/" + impl;
}

// Registers a case that measures its own wall-clock time (UseManualTime).
inline benchmark::internal::Benchmark* reg_manual(const std::string& name, bench_fn fn) {
    return benchmark::RegisterBenchmark(name.c_str(), std::move(fn))
        ->UseManualTime()
        ->ComputeStatistics("p99", p99_of_repetitions)
        ->Unit(benchmark::kNanosecond);
}

// Registers a case timed by Google Benchmark itself in wall-clock time (UseRealTime).
inline benchmark::internal::Benchmark* reg_real(const std::string& name, bench_fn fn) {
    return benchmark::RegisterBenchmark(name.c_str(), std::move(fn))
        ->UseRealTime()
        ->ComputeStatistics("p99", p99_of_repetitions)
        ->Unit(benchmark::kNanosecond);
}

inline double seconds_between(double t0_ns, double t1_ns) { return (t1_ns - t0_ns) * 1e-9; }

} // namespace fpb
