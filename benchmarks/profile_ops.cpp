// framepipe-profile-ops - runs one operation N times on one thread, for instruction-level
// profiles (valgrind --tool=callgrind, perf) of where framepipe's time goes against a peer's.
//
//   framepipe-profile-ops <op> [N]          (N defaults to 1000000; `list` prints the ops)
//   valgrind --tool=callgrind --callgrind-out-file=cg.out framepipe-profile-ops ring_push_pop 100000
//   callgrind_annotate cg.out | head -40
//
// Instructions per operation = (Ir of <op> - Ir of `empty`) / N. These are single-threaded and
// uncontended: they show the path length of a call, not the cache-line traffic between cores
// (the Google Benchmark cases measure that).
#include "common.hpp"
#include "peers.hpp"

#include <framepipe/broadcaster.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/rate_limiter.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/sliding_window.hpp>

#include <boost/circular_buffer.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace {

using fpb::h8;

template <class T>
struct triple_buffer {
    struct alignas(64) slot {
        T v{};
    };
    slot buf[3];
    alignas(64) std::atomic<unsigned> middle{1};
    unsigned back = 0;
    unsigned front = 2;
    void publish(const T& v) {
        buf[back].v = v;
        back = middle.exchange(back | 4u, std::memory_order_acq_rel) & 3u;
    }
    bool take(T& out) {
        if ((middle.load(std::memory_order_relaxed) & 4u) == 0) {
            return false;
        }
        front = middle.exchange(front, std::memory_order_acq_rel) & 3u;
        out = buf[front].v;
        return true;
    }
};

using op_fn = std::function<void(std::uint64_t)>;

std::map<std::string, op_fn> ops() {
    std::map<std::string, op_fn> m;
    m["empty"] = [](std::uint64_t n) {
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(i);
        }
    };
    m["ring_push_pop"] = [](std::uint64_t n) {
        framepipe::ring<h8> r(1024);
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)r.push(i);
            auto v = r.try_pop();
            benchmark::DoNotOptimize(v);
        }
    };
    m["spsc_ring_push_pop"] = [](std::uint64_t n) {
        framepipe::spsc_ring<h8> r(1024);
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)r.push(i);
            auto v = r.try_pop();
            benchmark::DoNotOptimize(v);
        }
    };
    m["spsc_ring_push_full"] = [](std::uint64_t n) {
        framepipe::spsc_ring<h8> r(8);
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(r.push(i)); // evicts once full
        }
    };
    m["boost_spsc_push_pop"] = [](std::uint64_t n) {
        fpb::boost_spsc<h8, 1024> q(1024);
        h8 v = 0;
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)q.try_push(i);
            (void)q.try_pop(v);
            benchmark::DoNotOptimize(v);
        }
    };
    m["rwq_push_pop"] = [](std::uint64_t n) {
        fpb::mc_rwq<h8> q(1024);
        h8 v = 0;
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)q.try_push(i);
            (void)q.try_pop(v);
            benchmark::DoNotOptimize(v);
        }
    };
    m["ring_push_full"] = [](std::uint64_t n) {
        framepipe::ring<h8> r(8);
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(r.push(i)); // evicts once full
        }
    };
    m["mutex_circular_buffer_push_full"] = [](std::uint64_t n) {
        fpb::mutex_circular_buffer<h8> q(8);
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(q.push_drop_oldest(i));
        }
    };
    m["latest_publish"] = [](std::uint64_t n) {
        framepipe::latest_slot<h8> s;
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(s.push(i));
        }
    };
    m["latest_publish_take"] = [](std::uint64_t n) {
        framepipe::latest_slot<h8> s;
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)s.push(i);
            auto v = s.try_pop();
            benchmark::DoNotOptimize(v);
        }
    };
    m["triple_publish"] = [](std::uint64_t n) {
        triple_buffer<h8> t;
        for (std::uint64_t i = 1; i <= n; ++i) {
            t.publish(i);
        }
        benchmark::DoNotOptimize(t.buf[0].v);
    };
    m["triple_publish_take"] = [](std::uint64_t n) {
        triple_buffer<h8> t;
        h8 v = 0;
        for (std::uint64_t i = 1; i <= n; ++i) {
            t.publish(i);
            (void)t.take(v);
            benchmark::DoNotOptimize(v);
        }
    };
    m["now"] = [](std::uint64_t n) {
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(std::chrono::steady_clock::now());
        }
    };
    m["rate_admit"] = [](std::uint64_t n) {
        framepipe::rate_limiter l(1e9, 1000);
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(l.try_acquire());
        }
    };
    m["rate_reject"] = [](std::uint64_t n) {
        framepipe::rate_limiter l(1e-3, 1);
        (void)l.try_acquire();
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(l.try_acquire());
        }
    };
    m["bcast_publish_K1"] = [](std::uint64_t n) {
        framepipe::broadcaster<h8> b;
        auto s = b.subscribe({.capacity = 1024});
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)b.publish(i);
            auto v = s.try_pop();
            benchmark::DoNotOptimize(v);
        }
    };
    m["rwq_shared_ptr_push_pop"] = [](std::uint64_t n) {
        fpb::mc_rwq<std::shared_ptr<const h8>> q(1024);
        std::shared_ptr<const h8> v;
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)q.try_push(std::make_shared<const h8>(i));
            (void)q.try_pop(v);
            benchmark::DoNotOptimize(v);
        }
    };
    m["window_push_N30"] = [](std::uint64_t n) {
        framepipe::sliding_window<h8> w(30, 1);
        for (std::uint64_t i = 1; i <= n; ++i) {
            benchmark::DoNotOptimize(w.push(i));
        }
    };
    m["window_push_snapshot_N30"] = [](std::uint64_t n) {
        framepipe::sliding_window<h8> w(30, 1);
        for (std::uint64_t i = 1; i <= n; ++i) {
            (void)w.push(i);
            auto s = w.try_pop();
            benchmark::DoNotOptimize(s);
        }
    };
    m["mutex_circular_window_push_snapshot_N30"] = [](std::uint64_t n) {
        std::mutex mu;
        boost::circular_buffer<h8> cb(30);
        for (std::uint64_t i = 1; i <= n; ++i) {
            {
                std::lock_guard<std::mutex> l(mu);
                cb.push_back(i);
            }
            std::vector<h8> copy;
            {
                std::lock_guard<std::mutex> l(mu);
                copy.assign(cb.begin(), cb.end());
            }
            benchmark::DoNotOptimize(copy.data());
        }
    };
    return m;
}

} // namespace

int main(int argc, char** argv) {
    const auto all = ops();
    if (argc < 2 || all.find(argv[1]) == all.end()) {
        std::fprintf(stderr, "usage: framepipe-profile-ops <op> [N]\nops:");
        for (const auto& [name, fn] : all) {
            std::fprintf(stderr, " %s", name.c_str());
        }
        std::fprintf(stderr, "\n");
        return argc >= 2 && std::string(argv[1]) == "list" ? 0 : 2;
    }
    const std::uint64_t n = argc >= 3 ? std::strtoull(argv[2], nullptr, 10) : 1000000;
    const auto t0 = std::chrono::steady_clock::now();
    all.at(argv[1])(n);
    const auto t1 = std::chrono::steady_clock::now();
    std::printf("%s: %.1f ns per op (N=%llu)\n", argv[1],
                std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n),
                static_cast<unsigned long long>(n));
    return 0;
}
