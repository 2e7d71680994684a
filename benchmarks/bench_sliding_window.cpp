// bench_sliding_window - framepipe::sliding_window<T> (stride 1) against a mutex-protected
// boost::circular_buffer that copies the last N items into a std::vector on demand.
//
// Scenarios, for N = 4, 30 and 64 (see window_case): a producer pushes one item per
// microsecond while a consumer on the other core takes a snapshot of every new window.
//   sliding_window.push_N<n>      one iteration = one push call (TSC-timed). Counters:
//                                 snapshot_ns, snapshots_per_push.
//   sliding_window.snapshot_N<n>  one iteration = one successful snapshot call (TSC-timed).
//                                 Counter: push_ns.
// Both implementations hand out a snapshot only when a new item arrived since the last one, and
// both offer a wait-free "new window ready" hint that the consumer polls instead of the lock.
// (A flat-out producer would turn both into a measure of mutex hand-over under contention.)
#include "common.hpp"

#include <framepipe/sliding_window.hpp>

#include <boost/circular_buffer.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace fpb {
namespace {

template <class T>
struct fp_window {
    framepipe::sliding_window<T> w;
    explicit fp_window(std::size_t n) : w(n, 1) {}
    void push(const T& v) { (void)w.push(v); }
    // Wait-free hint that a new window is ready (the consumer polls this, not the lock).
    [[nodiscard]] bool ready() const { return w.size() != 0; }
    bool snapshot(std::uint64_t& last_seq) {
        auto s = w.try_pop();
        if (!s) {
            return false;
        }
        last_seq = seq_of(s->back());
        return true;
    }
};

template <class T>
struct mutex_circular_window {
    std::mutex m;
    boost::circular_buffer<T> cb;
    std::uint64_t snapped = 0;
    std::atomic<std::uint64_t> pushed{0}; // the same kind of wait-free hint as framepipe's
    const std::uint64_t size;
    explicit mutex_circular_window(std::size_t n) : cb(n), size(n) {}
    void push(const T& v) {
        std::lock_guard<std::mutex> l(m);
        cb.push_back(v);
        pushed.store(pushed.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    [[nodiscard]] bool ready() const {
        const auto p = pushed.load(std::memory_order_relaxed);
        return p != snapped && p >= size;
    }
    bool snapshot(std::uint64_t& last_seq) {
        std::vector<T> copy;
        {
            std::lock_guard<std::mutex> l(m);
            const auto p = pushed.load(std::memory_order_relaxed);
            if (!cb.full() || p == snapped) {
                return false;
            }
            snapped = p;
            copy.assign(cb.begin(), cb.end());
        }
        last_seq = seq_of(copy.back());
        return true;
    }
};

constexpr double pace_ns = 1000.0; // the producer pushes one item per microsecond

// Both scenarios run the same two threads: a producer pushing one item every microsecond (a
// million items a second, far above any pose or detection rate), and a consumer that polls the
// wait-free "ready" hint and takes a snapshot as soon as a new window is ready. The scenario
// decides which side is timed: each push call, or each successful snapshot call (TSC around
// the call only; the pacing and polling are not timed).
template <class W, class T>
void window_case(benchmark::State& st, std::size_t window, bool time_snapshots) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    const auto& cal = calibration();
    const double pace_ticks = pace_ns / cal.ns_per_tick;
    W w(window);
    start_line line;
    pinned_scope pin(0);
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> snaps{0};
    double snap_ticks = 0;
    double push_ticks = 0;
    std::uint64_t pushes = 0;
    auto take_one = [&](std::uint64_t& last) {
        while (!w.ready()) {
            if (done.load(std::memory_order_relaxed)) {
                return false;
            }
            cpu_relax();
        }
        const auto a = ticks();
        const bool ok = w.snapshot(last);
        const auto b = ticks();
        if (ok) {
            snap_ticks += std::max(0.0, static_cast<double>(b - a) - cal.overhead_ticks);
            snaps.fetch_add(1, std::memory_order_relaxed);
        }
        return true;
    };
    auto push_paced = [&](std::uint64_t count) {
        double next = static_cast<double>(ticks());
        for (std::uint64_t i = 1; i <= count && !done.load(std::memory_order_relaxed); ++i) {
            while (static_cast<double>(ticks()) < next) {
            }
            next += pace_ticks;
            const auto a = ticks();
            w.push(make_item<T>(i));
            const auto b = ticks();
            push_ticks += std::max(0.0, static_cast<double>(b - a) - cal.overhead_ticks);
            ++pushes;
        }
    };
    // The helper thread runs the side that is not timed.
    std::thread helper([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        if (time_snapshots) {
            push_paced(UINT64_MAX);
        } else {
            std::uint64_t last = 0;
            while (take_one(last)) {
            }
            benchmark::DoNotOptimize(last);
        }
    });
    line.wait_for(1);
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        if (time_snapshots) {
            std::uint64_t last = 0;
            while (snaps.load(std::memory_order_relaxed) < n) {
                take_one(last);
            }
            benchmark::DoNotOptimize(last);
            st.SetIterationTime(snap_ticks * cal.ns_per_tick * 1e-9);
        } else {
            push_paced(n);
            st.SetIterationTime(push_ticks * cal.ns_per_tick * 1e-9);
        }
        done.store(true, std::memory_order_relaxed);
    }
    helper.join();
    if (time_snapshots) {
        st.counters["push_ns"] = pushes ? push_ticks * cal.ns_per_tick / static_cast<double>(pushes) : 0;
    } else {
        const auto s = snaps.load();
        st.counters["snapshot_ns"] = s ? snap_ticks * cal.ns_per_tick / static_cast<double>(s) : 0;
        st.counters["snapshots_per_push"] = static_cast<double>(s) / static_cast<double>(n);
    }
}

double scale() {
    const char* s = std::getenv("FPB_SCALE");
    const double v = s ? std::atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

template <class T>
void register_payload() {
    const std::string p = payload_name<T>();
    // Fixed counts: the producer is paced, so the run length is set by the pace (0.1 s).
    const auto iters = static_cast<benchmark::IterationCount>(100000 * scale());
    for (const std::size_t n : {std::size_t{4}, std::size_t{30}, std::size_t{64}}) {
        for (const bool snap : {false, true}) {
            const std::string s =
                std::string(snap ? "sliding_window.snapshot_N" : "sliding_window.push_N") +
                std::to_string(n);
            reg_manual(case_name(s, p, "framepipe.sliding_window"), [n, snap](benchmark::State& st) {
                window_case<fp_window<T>, T>(st, n, snap);
            })->Iterations(iters);
            reg_manual(case_name(s, p, "std.mutex+boost.circular_buffer"),
                       [n, snap](benchmark::State& st) {
                           window_case<mutex_circular_window<T>, T>(st, n, snap);
                       })
                ->Iterations(iters);
        }
    }
}

const bool registered = [] {
    register_payload<h8>();
    register_payload<p64>();
    return true;
}();

} // namespace
} // namespace fpb
