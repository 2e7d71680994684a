// tests/lin/harness.hpp - records histories of short concurrent runs on a channel.
//
// A pool of worker threads lives for the whole test (creating threads per history would cost
// more than the history). For each history the main thread builds a channel and one script per
// worker, releases the workers through a barrier, waits for them at a second barrier, and then
// appends calls of its own while nothing else runs (the final stats() and a drain), which the
// checker sees as operations after all the others.
//
// Time is a global counter ticked (seq_cst fetch_add) just before each call and just after it
// returns: cheaper than a clock, totally ordered, and a source of happens-before between a call
// that returned and one invoked later (see checker.hpp).
#pragma once

#include "checker.hpp"
#include "specs.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace framepipe_lin {

class ticker {
public:
    std::uint64_t tick() noexcept { return now_.fetch_add(1, std::memory_order_seq_cst) + 1; }

private:
    std::atomic<std::uint64_t> now_{0};
};

// One planned call: what to do, and how long to spin before it (to vary interleavings).
struct planned {
    kind k = kind::pop;
    std::int64_t value = 0;
    unsigned spin_before = 0;
    std::chrono::microseconds sleep_before{0}; // for hand-made schedules (mutant tests)
};
using script = std::vector<planned>;

// A reusable barrier on a mutex and a condition variable. Not std::barrier: libstdc++ 12's
// (the tree barrier) was seen to leave a thread waiting for a phase that had already completed
// (under ASan, after a few hundred phases: the main thread at the start barrier, every worker
// already at the end barrier), and this harness needs none of its speed.
class simple_barrier {
public:
    explicit simple_barrier(unsigned count) : count_(count) {}
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mu_);
        const std::uint64_t generation = generation_;
        if (++arrived_ == count_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
            return;
        }
        cv_.wait(lock, [&] { return generation_ != generation; });
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    const unsigned count_;
    unsigned arrived_ = 0;
    std::uint64_t generation_ = 0;
};

class worker_pool {
public:
    explicit worker_pool(unsigned workers)
        : start_(workers + 1), done_(workers + 1) {
        for (unsigned i = 0; i < workers; ++i) {
            threads_.emplace_back([this, i] { loop(i); });
        }
    }
    worker_pool(const worker_pool&) = delete;
    worker_pool& operator=(const worker_pool&) = delete;
    ~worker_pool() {
        quit_ = true;
        start_.arrive_and_wait();
        for (auto& t : threads_) {
            t.join();
        }
    }

    [[nodiscard]] unsigned size() const noexcept { return static_cast<unsigned>(threads_.size()); }

    // Runs job(i) on every worker i at once; returns when all have finished. The barriers order
    // the job (and whatever the caller built for it) before the workers' calls, and their calls
    // before whatever the caller does next.
    void run(std::function<void(unsigned)> job) {
        job_ = std::move(job);
        start_.arrive_and_wait();
        done_.arrive_and_wait();
    }

private:
    void loop(unsigned i) {
        for (;;) {
            start_.arrive_and_wait();
            if (quit_) {
                return;
            }
            job_(i);
            done_.arrive_and_wait();
        }
    }

    simple_barrier start_;
    simple_barrier done_;
    std::function<void(unsigned)> job_;
    bool quit_ = false; // written before the start barrier, read after it
    std::vector<std::thread> threads_;
};

// Runs the scripts (script i on worker i; workers without one do nothing) against an object
// through `perform(plan) -> Op`, and returns the history of the calls made. A plan is `planned`
// for the channels; any type with spin_before and sleep_before will do.
template <class Plan, class Perform, class Op = std::decay_t<std::invoke_result_t<Perform&, const Plan&>>>
history<Op> record(worker_pool& pool, ticker& clock, const std::vector<std::vector<Plan>>& scripts,
                   Perform perform) {
    std::vector<history<Op>> per_thread(pool.size());
    const auto active = static_cast<unsigned>(std::min<std::size_t>(scripts.size(), pool.size()));
    std::atomic<unsigned> arrived{0};
    pool.run([&](unsigned w) {
        if (w >= active) {
            return;
        }
        // The barrier wakes the workers one after the other (a futex wake each), and a script
        // takes microseconds: without this, the first worker would often finish before the
        // last one starts, and the calls would hardly overlap. Spin until all have arrived
        // (yielding after a while: there may be more workers than cores).
        arrived.fetch_add(1, std::memory_order_acq_rel);
        for (unsigned n = 0; arrived.load(std::memory_order_acquire) < active; ++n) {
            if (n > 1000) {
                std::this_thread::yield();
            }
        }
        for (const Plan& p : scripts[w]) {
            if (p.sleep_before.count() > 0) {
                std::this_thread::sleep_for(p.sleep_before);
            }
            for (unsigned s = 0; s < p.spin_before; ++s) {
                std::atomic_signal_fence(std::memory_order_seq_cst); // a delay the compiler keeps
            }
            event<Op> e;
            e.thread = w;
            e.invoked = clock.tick();
            e.op = perform(p);
            e.responded = clock.tick();
            per_thread[w].push_back(e);
        }
    });
    history<Op> h;
    for (auto& t : per_thread) {
        h.insert(h.end(), t.begin(), t.end());
    }
    return h;
}

// A call made by the main thread after the workers finished (the final stats, the drain).
template <class Op, class Call>
void append(history<Op>& h, ticker& clock, Call call) {
    event<Op> e;
    e.thread = 99;
    e.invoked = clock.tick();
    e.op = call();
    e.responded = clock.tick();
    h.push_back(e);
}

// Random scripts: `threads` scripts with `per_thread` calls each, drawn by `pick(rng, thread)`,
// with unique values for the pushes (so a pop names the push it took from).
template <class Pick>
std::vector<script> random_scripts(std::mt19937& rng, unsigned threads, unsigned per_thread, Pick pick) {
    std::vector<script> s(threads);
    std::int64_t next_value = 0;
    std::uniform_int_distribution<unsigned> spin(0, 3);
    for (unsigned t = 0; t < threads; ++t) {
        for (unsigned i = 0; i < per_thread; ++i) {
            planned p;
            p.k = pick(rng, t);
            p.value = ++next_value;
            // Mostly back to back; sometimes a short pause, so that calls on different threads
            // overlap in different ways.
            const unsigned r = spin(rng);
            p.spin_before = r == 0 ? 0 : r == 1 ? 20u : r == 2 ? 200u : 0u;
            s[t].push_back(p);
        }
    }
    return s;
}

} // namespace framepipe_lin
