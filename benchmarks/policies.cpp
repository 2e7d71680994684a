// framepipe-policies - which drop policy gives a pipeline the freshest frames, the most
// frames, or every frame, at a given source rate and consumer speed?
//
// A live source (a camera) captures a frame every 1/F s (F = 30 and 60) and pushes it into a
// buffer; one consumer pops a frame, processes it for a service time, and pops again. Service
// times follow a distribution whose mean is r times the frame interval (r = 0.5, 1, 2, 10):
//   fixed      every frame takes r/F;
//   lognormal  r/F on average, lognormal jitter with sigma 0.3 (about +-30 %);
//   stalls     r/F, but 2 % of the frames take 10x as long (a GC pause, a disk hiccup).
// Buffers compared (the real framepipe containers; the unbounded queue is a std::deque):
//   latest_slot; ring drop_oldest capacity 2, 4, 8; ring drop_newest capacity 4;
//   ring block capacity 4; ring block-then-drop capacity 4 (block_timeout = half an interval);
//   unbounded queue.
// With overflow::block the camera thread waits in push; frames that the camera captures while
// its thread is blocked are lost at the source (a V4L2 / GigE driver overwrites them) and are
// counted as dropped.
//
// The simulation runs in virtual time: events (captures, pops, service completions) are
// processed in time order on one thread, and the buffers are the real framepipe objects called
// with their normal API (push, try_pop), so their policies decide what is kept. Virtual time
// makes every run exact and reproducible (same seed: same service times, in the same order, for
// every policy), independent of the machine's load, and lets an hour of a 30 fps pipeline run in
// milliseconds. What it leaves out is the cost of the calls themselves (tens of ns against
// frame intervals of 16-33 ms) and OS wake-up latency (microseconds), both measured by the
// Google Benchmark cases instead.
//
// Output: a table on stdout, and with --json PATH the rows as JSON (read by
// benchmarks/report.py for the plots and docs/benchmarks.md).
//
//   framepipe-policies [--duration SECONDS] [--seed N] [--json PATH]
#include <framepipe/latest_slot.hpp>
#include <framepipe/ring.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ns_t = std::int64_t;

struct frame {
    ns_t captured = 0;
    std::uint64_t seq = 0;
};

constexpr double frame_bytes = 1920.0 * 1080.0 * 3.0; // one 1080p RGB frame

// ------------------------------------------------------------------------------------ buffers

enum class kind { latest, ring, block, block_then_drop, unbounded };

struct policy {
    std::string name;
    kind k;
    std::size_t capacity; // 0: unbounded
    framepipe::overflow overflow = framepipe::overflow::drop_oldest;
};

// One interface over the containers, for the event loop.
class buffer {
public:
    buffer(const policy& p, ns_t /*interval*/) : p_(p) {
        using framepipe::overflow;
        switch (p.k) {
        case kind::latest: latest_ = std::make_unique<framepipe::latest_slot<frame>>(); break;
        case kind::ring:
            ring_ = std::make_unique<framepipe::ring<frame>>(p.capacity, p.overflow);
            break;
        case kind::block:
            // Only pushed into when there is room (the simulation advances virtual time first).
            ring_ = std::make_unique<framepipe::ring<frame>>(p.capacity, overflow::block);
            break;
        case kind::block_then_drop:
            // The wait itself happens in virtual time; when it has timed out the push is made
            // with a zero timeout, so the ring evicts its oldest item at once, as it would after
            // the real block_timeout.
            ring_ = std::make_unique<framepipe::ring<frame>>(p.capacity, overflow::block,
                                                             std::chrono::nanoseconds(0));
            break;
        case kind::unbounded: break;
        }
    }

    [[nodiscard]] std::size_t size() const {
        if (latest_) {
            return latest_->size();
        }
        if (ring_) {
            return ring_->size();
        }
        return deque_.size();
    }
    [[nodiscard]] bool full() const { return p_.capacity != 0 && size() >= p_.capacity; }
    [[nodiscard]] bool empty() const { return size() == 0; }

    // Returns the number of frames this push dropped (evicted, or the new one rejected).
    std::size_t push(const frame& f) {
        if (latest_) {
            return latest_->push(f) == framepipe::push_status::evicted ? 1 : 0;
        }
        if (ring_) {
            const auto s = ring_->push(f);
            return s == framepipe::push_status::ok ? 0 : 1;
        }
        deque_.push_back(f);
        return 0;
    }

    std::optional<frame> pop() {
        if (latest_) {
            return latest_->try_pop();
        }
        if (ring_) {
            return ring_->try_pop();
        }
        if (deque_.empty()) {
            return std::nullopt;
        }
        frame f = deque_.front();
        deque_.pop_front();
        return f;
    }

private:
    policy p_;
    std::unique_ptr<framepipe::latest_slot<frame>> latest_;
    std::unique_ptr<framepipe::ring<frame>> ring_;
    std::deque<frame> deque_;
};

// --------------------------------------------------------------------------- service times

enum class dist { fixed, lognormal, stalls };

const char* dist_name(dist d) {
    switch (d) {
    case dist::fixed: return "fixed";
    case dist::lognormal: return "lognormal";
    case dist::stalls: return "stalls";
    }
    return "?";
}

class service_times {
public:
    service_times(dist d, double mean_ns, std::uint64_t seed) : d_(d), mean_(mean_ns), rng_(seed) {}
    ns_t next() {
        double s = mean_;
        switch (d_) {
        case dist::fixed: break;
        case dist::lognormal: {
            constexpr double sigma = 0.3;
            std::lognormal_distribution<double> ln(std::log(mean_) - sigma * sigma / 2, sigma);
            s = ln(rng_);
            break;
        }
        case dist::stalls: {
            std::uniform_real_distribution<double> u(0.0, 1.0);
            if (u(rng_) < 0.02) {
                s = 10 * mean_;
            }
            break;
        }
        }
        return std::max<ns_t>(1, static_cast<ns_t>(std::llround(s)));
    }

private:
    dist d_;
    double mean_;
    std::mt19937_64 rng_;
};

// ------------------------------------------------------------------------------ simulation

struct result {
    double fps = 0;
    dist d = dist::fixed;
    double ratio = 0;
    std::string policy;
    std::uint64_t captured = 0;
    std::uint64_t processed = 0;
    std::uint64_t dropped = 0;       // evicted + rejected + lost at the source
    std::uint64_t lost_at_source = 0; // captured while the camera thread was blocked
    std::uint64_t left = 0;          // buffered or in service at the end
    std::size_t peak_buffered = 0;
    double processed_fps = 0;
    double drop_ratio = 0;
    double age_p50_ms = 0; // capture -> end of processing
    double age_p99_ms = 0;
    double age_max_ms = 0;
    double wait_p50_ms = 0; // capture -> start of processing
    double wait_p99_ms = 0;
    double peak_mib = 0;
};

double pct(std::vector<ns_t>& v, double q) {
    if (v.empty()) {
        return 0;
    }
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    rank = std::clamp<std::size_t>(rank, 1, v.size()) - 1;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank), v.end());
    return static_cast<double>(v[rank]);
}

result simulate(const policy& pol, double fps, dist d, double ratio, double duration_s,
                std::uint64_t seed) {
    const auto interval = static_cast<ns_t>(std::llround(1e9 / fps));
    const auto end = static_cast<ns_t>(std::llround(duration_s * 1e9));
    const ns_t block_timeout = interval / 2;
    buffer buf(pol, interval);
    service_times service(d, ratio * static_cast<double>(interval), seed);

    result r;
    r.fps = fps;
    r.d = d;
    r.ratio = ratio;
    r.policy = pol.name;
    std::vector<ns_t> ages;
    std::vector<ns_t> waits;
    ns_t free_at = 0;      // when the consumer finishes its current frame (idle if <= now)
    std::uint64_t tail = 0; // frames taken that finish after `end` (a blocked camera can
                           // push after `end`, so there may be more than one)

    // The consumer pops at `at` (it is idle then and the buffer holds a frame).
    auto start_one = [&](ns_t at) {
        auto f = buf.pop();
        if (!f) {
            return false;
        }
        const ns_t done = at + service.next();
        free_at = done;
        if (done <= end) {
            ++r.processed;
            ages.push_back(done - f->captured);
            waits.push_back(at - f->captured);
        } else {
            ++tail;
        }
        return true;
    };
    // Lets the consumer run up to time t: each time it finishes, it takes the next frame.
    auto advance = [&](ns_t t) {
        while (free_at <= t && !buf.empty()) {
            if (!start_one(free_at)) {
                break;
            }
        }
    };
    auto push_at = [&](ns_t at, const frame& f) {
        r.dropped += buf.push(f);
        r.peak_buffered = std::max(r.peak_buffered, buf.size());
        if (free_at <= at) {
            start_one(at); // the consumer was idle, parked in pop(): it takes the frame now
        }
    };

    ns_t camera_free_at = 0; // the camera thread is blocked in push until then
    for (std::uint64_t k = 0;; ++k) {
        const ns_t t = static_cast<ns_t>(k) * interval;
        if (t >= end) {
            break;
        }
        ++r.captured;
        if (t < camera_free_at) {
            ++r.lost_at_source;
            ++r.dropped;
            continue;
        }
        advance(t);
        const frame f{t, k};
        if (buf.full() && (pol.k == kind::block || pol.k == kind::block_then_drop)) {
            // The consumer is busy (the buffer is full); room appears when it next pops.
            const ns_t room_at = free_at;
            if (pol.k == kind::block || room_at <= t + block_timeout) {
                advance(room_at);
                push_at(room_at, f);
                camera_free_at = room_at;
            } else {
                advance(t + block_timeout);
                push_at(t + block_timeout, f); // evicts the oldest (timed out)
                camera_free_at = t + block_timeout;
            }
            continue;
        }
        push_at(t, f);
    }
    advance(end);
    r.left = buf.size() + tail;
    r.processed_fps = static_cast<double>(r.processed) / duration_s;
    r.drop_ratio = static_cast<double>(r.dropped) / static_cast<double>(r.captured);
    r.age_p50_ms = pct(ages, 0.50) * 1e-6;
    r.age_p99_ms = pct(ages, 0.99) * 1e-6;
    r.age_max_ms = ages.empty() ? 0 : static_cast<double>(*std::max_element(ages.begin(), ages.end())) * 1e-6;
    r.wait_p50_ms = pct(waits, 0.50) * 1e-6;
    r.wait_p99_ms = pct(waits, 0.99) * 1e-6;
    r.peak_mib = static_cast<double>(r.peak_buffered) * frame_bytes / (1024.0 * 1024.0);
    if (r.captured != r.processed + r.dropped + r.left) {
        std::fprintf(stderr, "framepipe-policies: accounting error in %s\n", pol.name.c_str());
        std::exit(1);
    }
    return r;
}

// ---------------------------------------------------------------------------------- output

std::string json_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
        }
        o += c;
    }
    return o;
}

std::string fmt(double v, int prec = 3) {
    std::ostringstream os;
    os.precision(prec);
    os << std::fixed << v;
    return os.str();
}

// Policies within `tol` (relative) of the best value.
template <class Better>
std::vector<std::string> winners(const std::vector<const result*>& rows, double (*get)(const result&),
                                 Better better, double tol) {
    double best = get(*rows.front());
    for (const auto* r : rows) {
        if (better(get(*r), best)) {
            best = get(*r);
        }
    }
    std::vector<std::string> w;
    for (const auto* r : rows) {
        const double v = get(*r);
        if (std::abs(v - best) <= tol * std::max(std::abs(best), 1e-9)) {
            w.push_back(r->policy);
        }
    }
    return w;
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) {
        s += (s.empty() ? "" : ", ") + x;
    }
    return s;
}

} // namespace

int main(int argc, char** argv) {
    double duration = 600;
    std::uint64_t seed = 20240601;
    std::string json_path;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--duration" && i + 1 < argc) {
            duration = std::atof(argv[++i]);
        } else if (a == "--seed" && i + 1 < argc) {
            seed = std::strtoull(argv[++i], nullptr, 10);
        } else if (a == "--json" && i + 1 < argc) {
            json_path = argv[++i];
        } else {
            std::fprintf(stderr, "usage: framepipe-policies [--duration S] [--seed N] [--json PATH]\n");
            return a == "-h" || a == "--help" ? 0 : 2;
        }
    }
    if (!(duration > 0)) {
        std::fprintf(stderr, "framepipe-policies: --duration must be > 0\n");
        return 2;
    }

    using framepipe::overflow;
    const std::vector<policy> policies = {
        {"latest_slot", kind::latest, 1},
        {"drop_oldest/2", kind::ring, 2, overflow::drop_oldest},
        {"drop_oldest/4", kind::ring, 4, overflow::drop_oldest},
        {"drop_oldest/8", kind::ring, 8, overflow::drop_oldest},
        {"drop_newest/4", kind::ring, 4, overflow::drop_newest},
        {"block/4", kind::block, 4, overflow::block},
        {"block_then_drop/4", kind::block_then_drop, 4, overflow::block},
        {"unbounded", kind::unbounded, 0},
    };
    const std::vector<double> rates = {30, 60};
    const std::vector<dist> dists = {dist::fixed, dist::lognormal, dist::stalls};
    const std::vector<double> ratios = {0.5, 1, 2, 10};

    std::vector<result> results;
    for (double f : rates) {
        for (dist d : dists) {
            for (double r : ratios) {
                for (const auto& p : policies) {
                    results.push_back(simulate(p, f, d, r, duration, seed));
                }
            }
        }
    }

    // Table.
    std::printf("framepipe-policies: %.0f s of virtual time per run, seed %llu\n", duration,
                static_cast<unsigned long long>(seed));
    std::printf("age = capture -> end of processing; memory = peak buffered 1080p RGB frames\n\n");
    std::printf("%-4s %-10s %-6s %-18s %9s %9s %9s %9s %7s %5s %9s\n", "fps", "service", "load",
                "policy", "proc_fps", "age_p50", "age_p99", "age_max", "drop%", "peak", "mem_MiB");
    for (const auto& r : results) {
        std::printf("%-4.0f %-10s %-6s %-18s %9.2f %9.1f %9.1f %9.1f %7.2f %5zu %9.1f\n", r.fps,
                    dist_name(r.d), (fmt(r.ratio, 1) + "x").c_str(), r.policy.c_str(),
                    r.processed_fps, r.age_p50_ms, r.age_p99_ms, r.age_max_ms, 100 * r.drop_ratio,
                    r.peak_buffered, r.peak_mib);
    }

    // Winners per configuration, and a tally.
    struct verdict {
        double fps;
        dist d;
        double ratio;
        std::vector<std::string> fresh, thru, complete, complete_bounded;
    };
    std::vector<verdict> verdicts;
    std::map<std::string, int> fresh_wins, thru_wins, complete_wins, complete_bounded_wins;
    for (std::size_t i = 0; i < results.size(); i += policies.size()) {
        std::vector<const result*> rows;
        std::vector<const result*> bounded;
        for (std::size_t j = 0; j < policies.size(); ++j) {
            rows.push_back(&results[i + j]);
            if (results[i + j].policy != "unbounded") {
                bounded.push_back(&results[i + j]);
            }
        }
        verdict v{results[i].fps, results[i].d, results[i].ratio, {}, {}, {}, {}};
        v.fresh = winners(rows, [](const result& r) { return r.age_p50_ms; }, std::less<>(), 0.01);
        v.thru = winners(rows, [](const result& r) { return r.processed_fps; }, std::greater<>(), 0.005);
        v.complete = winners(rows, [](const result& r) { return r.drop_ratio; }, std::less<>(), 0.01);
        v.complete_bounded =
            winners(bounded, [](const result& r) { return r.drop_ratio; }, std::less<>(), 0.01);
        for (const auto& w : v.fresh) ++fresh_wins[w];
        for (const auto& w : v.thru) ++thru_wins[w];
        for (const auto& w : v.complete) ++complete_wins[w];
        for (const auto& w : v.complete_bounded) ++complete_bounded_wins[w];
        verdicts.push_back(std::move(v));
    }
    std::printf("\nWinners per configuration (ties within 1 %% / 0.5 %% for fps are all listed):\n");
    for (const auto& v : verdicts) {
        std::printf("%2.0f fps %-9s %4sx  freshest: %s | most fps: %s | fewest drops: %s\n", v.fps,
                    dist_name(v.d), fmt(v.ratio, 1).c_str(), join(v.fresh).c_str(),
                    join(v.thru).c_str(), join(v.complete).c_str());
    }
    auto tally = [&](const char* what, std::map<std::string, int>& m) {
        std::printf("%-26s", what);
        for (const auto& p : policies) {
            std::printf(" %s=%d", p.name.c_str(), m[p.name]);
        }
        std::printf("   (of %zu configurations)\n", verdicts.size());
    };
    std::printf("\nWins:\n");
    tally("freshness (age p50)", fresh_wins);
    tally("throughput (fps)", thru_wins);
    tally("completeness (drops)", complete_wins);
    tally("completeness, bounded", complete_bounded_wins);

    if (!json_path.empty()) {
        std::ofstream out(json_path);
        out << "{\n  \"duration_s\": " << duration << ",\n  \"seed\": " << seed
            << ",\n  \"frame_bytes\": " << frame_bytes << ",\n  \"results\": [\n";
        for (std::size_t i = 0; i < results.size(); ++i) {
            const auto& r = results[i];
            out << "    {\"fps\": " << r.fps << ", \"service\": \"" << dist_name(r.d)
                << "\", \"load\": " << r.ratio << ", \"policy\": \"" << json_escape(r.policy)
                << "\", \"processed_fps\": " << fmt(r.processed_fps, 4)
                << ", \"age_p50_ms\": " << fmt(r.age_p50_ms) << ", \"age_p99_ms\": "
                << fmt(r.age_p99_ms) << ", \"age_max_ms\": " << fmt(r.age_max_ms)
                << ", \"wait_p50_ms\": " << fmt(r.wait_p50_ms) << ", \"wait_p99_ms\": "
                << fmt(r.wait_p99_ms) << ", \"drop_ratio\": " << fmt(r.drop_ratio, 5)
                << ", \"lost_at_source\": " << r.lost_at_source << ", \"peak_buffered\": "
                << r.peak_buffered << ", \"peak_memory_mib\": " << fmt(r.peak_mib, 1)
                << ", \"captured\": " << r.captured << ", \"processed\": " << r.processed
                << ", \"dropped\": " << r.dropped << ", \"left\": " << r.left << "}"
                << (i + 1 < results.size() ? "," : "") << "\n";
        }
        out << "  ],\n  \"winners\": [\n";
        auto arr = [](const std::vector<std::string>& v) {
            std::string s = "[";
            for (std::size_t i = 0; i < v.size(); ++i) {
                s += (i ? ", \"" : "\"") + json_escape(v[i]) + "\"";
            }
            return s + "]";
        };
        for (std::size_t i = 0; i < verdicts.size(); ++i) {
            const auto& v = verdicts[i];
            out << "    {\"fps\": " << v.fps << ", \"service\": \"" << dist_name(v.d)
                << "\", \"load\": " << v.ratio << ", \"freshness\": " << arr(v.fresh)
                << ", \"throughput\": " << arr(v.thru) << ", \"completeness\": "
                << arr(v.complete) << ", \"completeness_bounded\": " << arr(v.complete_bounded)
                << "}" << (i + 1 < verdicts.size() ? "," : "") << "\n";
        }
        out << "  ]\n}\n";
        if (!out) {
            std::fprintf(stderr, "framepipe-policies: cannot write %s\n", json_path.c_str());
            return 1;
        }
    }
    return 0;
}
