// framepipe-membarrier-cost - what one asymmetric_barrier::heavy() costs on this machine, with
// the process's other thread parked and with it running; and what that costs a consumer that
// waits in spsc_ring::pop at a low rate. spsc_ring's waiter pays one barrier per park, and spins
// for as long as its last one took before the next park (see detail/wait.hpp, spin_for(), and
// docs/benchmarks.md, "spsc_ring's parked mode").
//
//   framepipe-membarrier-cost [N]       (N barriers per case; defaults to 20000)
//
// Prints, per barrier case, the mean, p50, p99 and max of N timed calls. The membarrier system
// call interrupts only the CPUs that are running one of the process's threads at that moment, so
// the running partner is what makes it expensive. Then, per low-rate case, the consumer thread's
// CPU time per item and each item's latency from push to pop's return, for spsc_ring and for ring
// (whose waiter spins a fixed 5 us and pays no barrier), fed 1,000 items a second by a producer
// that sleeps, or computes, between pushes.
// The two threads of each case are pinned to CPUs 0 and 1, so that the running partner never
// shares the measuring thread's CPU. Not run by scripts/bench.
#include "common.hpp"

#include <framepipe/detail/asymmetric_barrier.hpp>
#include <framepipe/ring.hpp>

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace {

using framepipe::detail::asymmetric_barrier;
using clock_type = std::chrono::steady_clock;

// "mean ... p50 ... p99 ... max ..." of what `ns` holds.
std::string summary(fpb::samples& ns) {
    if (ns.count() == 0) {
        return "no samples";
    }
    char line[160];
    std::snprintf(line, sizeof line, "mean %8.0f ns   p50 %8.0f ns   p99 %8.0f ns   max %9.0f ns",
                  ns.mean(), ns.pct(0.50), ns.pct(0.99), ns.max());
    return line;
}

// Times n calls of heavy() while `partner` runs, and prints one line for `label`.
template <class Partner>
void measure(const char* label, long n, Partner partner) {
    std::atomic<bool> stop{false};
    std::atomic<bool> started{false};
    std::thread t([&] {
        (void)fpb::pin_this_thread(1);
        partner(stop, started);
    });
    while (!started.load()) {
        std::this_thread::yield();
    }
    fpb::samples ns(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i) {
        const auto before = clock_type::now();
        asymmetric_barrier::heavy();
        ns.add(std::chrono::duration<double, std::nano>(clock_type::now() - before).count());
    }
    stop.store(true);
    stop.notify_one();
    t.join();
    std::printf("%-29s %s   (N=%ld)\n", label, summary(ns).c_str(), n);
}

// The calling thread's CPU time so far.
std::chrono::nanoseconds thread_cpu() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// `items` values pushed 1 ms apart into a Ring(16) whose consumer blocks in pop() until the ring
// is closed; the producer sleeps until each push, or (busy) spins until it. Each value is its
// push time. Prints the consumer's CPU time per item it received, and the latency from push to
// pop's return (a consumer that lost its CPU for 16 ms may have had some items evicted:
// drop_oldest; the line says how many it received).
template <class Ring>
void low_rate(const char* label, bool busy, int items) {
    Ring r(16);
    std::chrono::nanoseconds consumer_cpu{};
    fpb::samples latency_ns(static_cast<std::size_t>(items));
    std::thread consumer([&] {
        (void)fpb::pin_this_thread(1);
        const auto start = thread_cpu();
        while (const auto pushed = r.pop()) {
            latency_ns.add(
                static_cast<double>(clock_type::now().time_since_epoch().count() - *pushed));
        }
        consumer_cpu = thread_cpu() - start;
    });
    auto next = clock_type::now();
    for (int i = 0; i < items; ++i) {
        next += std::chrono::milliseconds(1);
        if (busy) {
            while (clock_type::now() < next) {
            }
        } else {
            std::this_thread::sleep_until(next);
        }
        (void)r.push(clock_type::now().time_since_epoch().count());
    }
    r.close();
    consumer.join();
    const auto received = static_cast<double>(latency_ns.count());
    std::printf("%-29s CPU per item %5.1f us   received %.0f of %d   latency %s\n", label,
                static_cast<double>(consumer_cpu.count()) / 1e3 / std::max(received, 1.0),
                received, items, summary(latency_ns).c_str());
}

} // namespace

int main(int argc, char** argv) {
    long n = 20'000;
    if (argc > 2 || (argc == 2 && (n = std::strtol(argv[1], nullptr, 10)) <= 0)) {
        std::fprintf(stderr, "usage: framepipe-membarrier-cost [N > 0]\n");
        return 2;
    }
    (void)fpb::pin_this_thread(0);
    if (!asymmetric_barrier::enable()) {
        std::fprintf(stderr, "framepipe-membarrier-cost: membarrier (private expedited) is not "
                             "available here: heavy() is a fence\n");
        return 2;
    }
    // Parked in the kernel: no CPU runs it, so the barrier interrupts nobody.
    measure("partner parked", n, [](std::atomic<bool>& stop, std::atomic<bool>& started) {
        started.store(true);
        stop.wait(false);
    });
    // Running on the other CPU (a relaxed poll): every barrier interrupts it.
    measure("partner running", n, [](std::atomic<bool>& stop, std::atomic<bool>& started) {
        started.store(true);
        while (!stop.load(std::memory_order_relaxed)) {
        }
    });
    using item = clock_type::rep; // a push time
    std::printf("a consumer blocked in pop(), fed 1,000 items a second:\n");
    low_rate<framepipe::spsc_ring<item>>("spsc_ring, producer sleeps", false, 2'000);
    low_rate<framepipe::ring<item>>("ring, producer sleeps", false, 2'000);
    low_rate<framepipe::spsc_ring<item>>("spsc_ring, producer computes", true, 2'000);
    low_rate<framepipe::ring<item>>("ring, producer computes", true, 2'000);
    return 0;
}
