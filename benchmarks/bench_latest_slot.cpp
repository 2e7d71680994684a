// bench_latest_slot - framepipe::latest_slot<T> against a reference triple buffer (the floor
// for a "newest value" hand-off), a mutex-protected value and TBB's overwrite_node.
//
// Scenarios (one iteration = one publish; the time per iteration is the publish cost while a
// consumer takes flat out on the other core, and reads every value it takes; everything the
// consumer touches during the run, except the slot, is on cache lines of its own):
//   latest_slot.publish  publish and take, both sides flat out. Counters: taken_ratio (values
//                        the consumer saw / values published), take_call_ns (cost of one take
//                        call, successful or not).
//   latest_slot.age      the same, every value stamped with the TSC at publish; the consumer
//                        records the age of each value it takes (age_p50_ns, age_p99_ns).
// The wake-up latency of a consumer blocked in pop() is measured in bench_wakeup.
#include "common.hpp"
#include "peers.hpp"

#include <framepipe/latest_slot.hpp>

#include <oneapi/tbb/flow_graph.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

namespace fpb {
namespace {

// ---------------------------------------------------------------------------------- adapters

template <class T>
struct fp_latest {
    framepipe::latest_slot<T> s;
    void publish(const T& v) { (void)s.push(v); }
    bool take(T& out) {
        auto o = s.try_pop();
        if (!o) {
            return false;
        }
        out = *o;
        return true;
    }
};

// The reference triple buffer: three slots; the producer writes its back slot and swaps it with
// the middle one (marking it fresh); the consumer swaps its front slot with a fresh middle one.
// One atomic exchange per publish and per successful take; wait-free on both sides.
template <class T>
class triple_buffer {
public:
    void publish(const T& v) {
        buf_[back_].v = v;
        back_ = middle_.exchange(back_ | fresh, std::memory_order_acq_rel) & index_mask;
    }
    bool take(T& out) {
        if ((middle_.load(std::memory_order_relaxed) & fresh) == 0) {
            return false;
        }
        front_ = middle_.exchange(front_, std::memory_order_acq_rel) & index_mask;
        out = buf_[front_].v;
        return true;
    }

private:
    static constexpr unsigned fresh = 4;
    static constexpr unsigned index_mask = 3;
    struct alignas(64) slot {
        T v{};
    };
    slot buf_[3];
    alignas(64) std::atomic<unsigned> middle_{1};
    alignas(64) unsigned back_ = 0; // producer only
    alignas(64) unsigned front_ = 2; // consumer only
};

template <class T>
struct mutex_value {
    std::mutex m;
    std::optional<T> v;
    void publish(const T& x) {
        std::lock_guard<std::mutex> l(m);
        v = x;
    }
    bool take(T& out) {
        std::lock_guard<std::mutex> l(m);
        if (!v) {
            return false;
        }
        out = *v;
        v.reset();
        return true;
    }
};

// overwrite_node keeps the last value; try_get reads it without consuming, so a consumer tells
// a new value by its sequence number.
template <class T>
struct tbb_overwrite {
    tbb::flow::graph g;
    tbb::flow::overwrite_node<T> node{g};
    std::uint64_t last = 0;
    void publish(const T& v) { (void)node.try_put(v); }
    bool take(T& out) {
        T x{};
        if (!node.try_get(x) || seq_of(x) == last) {
            return false;
        }
        last = seq_of(x);
        out = x;
        return true;
    }
};

// --------------------------------------------------------------------------------- scenarios

// What the consumer thread reads or writes while the publisher runs, on cache lines of its own.
// The publisher's frame holds these variables, and a publish may spill to that frame (a by-value
// argument whose address is taken, say): a flag the consumer polls on every call, or a counter
// it bumps, sharing a line with such a spill costs the publisher a cache miss per publish, a
// cost of the harness that hits only the implementations that spill.
template <bool Stamped>
struct alignas(64) consumer_state {
    std::atomic<bool> done{false};
    std::uint64_t taken = 0;
    std::uint64_t calls = 0;
    std::uint64_t checksum = 0; // the sum of the values taken, so that they are read
    double consumer_ns = 0;
    samples age{Stamped ? (1u << 20) : 1};
};

template <class S, class T, bool Stamped>
void publish_take(benchmark::State& st) {
    const auto n = static_cast<std::uint64_t>(st.max_iterations);
    const auto& cal = calibration();
    S slot;
    start_line line;
    pinned_scope pin(0);
    consumer_state<Stamped> c;
    std::thread consumer([&] {
        pin_this_thread(1);
        line.arrive_and_wait();
        const double t0 = steady_ns();
        T v{};
        std::uint64_t taken = 0;
        std::uint64_t calls = 0;
        std::uint64_t checksum = 0;
        while (!c.done.load(std::memory_order_relaxed)) {
            ++calls;
            if (slot.take(v)) {
                if constexpr (Stamped) {
                    const auto now = ticks();
                    c.age.add(static_cast<double>(now - seq_of(v)) * cal.ns_per_tick);
                }
                // The value is used, as a real consumer would use it. Otherwise the compiler
                // drops the load of a value nobody reads, and an implementation whose take
                // inlines completely (the reference triple buffer) never touches the buffer it
                // takes, which spares its producer the transfer of that line on the next publish.
                // (benchmark::DoNotOptimize(v) does not prevent that with GCC 12 and Debian's
                // libbenchmark 1.7.1: checked in the disassembly.)
                checksum += seq_of(v);
                ++taken;
            } else {
                cpu_relax();
            }
        }
        c.consumer_ns = steady_ns() - t0;
        c.taken = taken;
        c.calls = calls;
        c.checksum = checksum;
    });
    line.wait_for(1);
    while (st.KeepRunningBatch(static_cast<benchmark::IterationCount>(n))) {
        line.release();
        const double t0 = steady_ns();
        for (std::uint64_t i = 1; i <= n; ++i) {
            if constexpr (Stamped) {
                slot.publish(make_item<T>(ticks()));
            } else {
                slot.publish(make_item<T>(i));
            }
        }
        const double t1 = steady_ns();
        st.SetIterationTime(seconds_between(t0, t1));
    }
    c.done.store(true, std::memory_order_relaxed);
    consumer.join();
    st.counters["taken_ratio"] = static_cast<double>(c.taken) / static_cast<double>(n);
    st.counters["take_call_ns"] = c.calls ? c.consumer_ns / static_cast<double>(c.calls) : 0;
    if constexpr (Stamped) {
        st.counters["age_p50_ns"] = c.age.pct(0.50);
        st.counters["age_p99_ns"] = c.age.pct(0.99);
    }
}

template <class T>
void register_payload() {
    const std::string p = payload_name<T>();
    for (const bool stamped : {false, true}) {
        const std::string s = stamped ? "latest_slot.age" : "latest_slot.publish";
        auto add = [&](const std::string& impl, auto plain, auto with_stamps) {
            if (stamped) {
                reg_manual(case_name(s, p, impl), with_stamps);
            } else {
                reg_manual(case_name(s, p, impl), plain);
            }
        };
        add("framepipe.latest_slot", publish_take<fp_latest<T>, T, false>,
            publish_take<fp_latest<T>, T, true>);
        add("ref.triple_buffer", publish_take<triple_buffer<T>, T, false>,
            publish_take<triple_buffer<T>, T, true>);
        add("std.mutex+value", publish_take<mutex_value<T>, T, false>,
            publish_take<mutex_value<T>, T, true>);
        add("tbb.overwrite_node", publish_take<tbb_overwrite<T>, T, false>,
            publish_take<tbb_overwrite<T>, T, true>);
    }
}

const bool registered = [] {
    register_payload<h8>();
    register_payload<p64>();
    return true;
}();

} // namespace
} // namespace fpb
