// tests/fuzz/fuzz_rate_limiter.cpp - rate_limiter against its sequential model.
//
// Input: the period (2^k ns, k = b0 % 34: 1 ns to 8.6 s) and the burst (b1 % 8 picks 1, 2, 3, 4,
// 7, 64, 1000 or 2^32 - 1), then operations: try_acquire(t) at the same time point, after a step
// of whole periods and a fraction, right around the next boundary's widened edge, after a step
// back, or after a jump of seconds; set_rate(2^k ns); a switch of the calling thread; a move into
// a new limiter; rate() and burst(). After the last operation, calls at the last time point take
// every token left.
//
// Periods of a power of two nanoseconds keep the limiter's double arithmetic exact where the
// model's integer arithmetic decides (no time point is ever exactly on a widened boundary: that
// would need period/1000 to be whole), and time points stay within 2^38 ns of the base. A burst
// of 2^32 - 1 with a short period sends the limiter to its locked path for good (the packed slot
// index overflows its 31 bits). The calls run on two threads, one at a time, handed over through
// a mutex: the first to admit owns the limiter, and a switch makes the other take it over or
// change its rate from outside (rate_limiter.hpp, "One writer, or many"), with every decision
// still checked against the model.
#include <framepipe/rate_limiter.hpp>

#include "fuzz_common.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace {

using namespace framepipe_fuzz;
using framepipe::rate_limiter;
using framepipe_model::rate_limiter_model;

// A second thread that runs one job at a time for the fuzzer's thread, which waits for it: the
// calls never overlap, they only come from two threads.
class helper_thread {
public:
    helper_thread() : thread_([this] { loop(); }) {}
    helper_thread(const helper_thread&) = delete;
    helper_thread& operator=(const helper_thread&) = delete;
    ~helper_thread() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            quit_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }

    void run(const std::function<void()>& job) {
        std::unique_lock<std::mutex> lock(mu_);
        job_ = &job;
        cv_.notify_all();
        cv_.wait(lock, [&] { return job_ == nullptr; });
    }

private:
    void loop() {
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            cv_.wait(lock, [&] { return quit_ || job_ != nullptr; });
            if (quit_) {
                return;
            }
            (*job_)();
            job_ = nullptr;
            cv_.notify_all();
        }
    }

    std::mutex mu_;
    std::condition_variable cv_;
    const std::function<void()>* job_ = nullptr;
    bool quit_ = false;
    std::thread thread_; // last: starts once the members above exist
};

helper_thread& helper() {
    static helper_thread h;
    return h;
}

constexpr std::int64_t base_ns = std::int64_t{1} << 40;  // the time points' origin
constexpr std::int64_t max_offset = std::int64_t{1} << 38; // they stay within this of it

std::int64_t period_of_byte(std::uint8_t b) { return std::int64_t{1} << (b % 34); }
double hz_of(std::int64_t period) { return 1e9 / static_cast<double>(period); }

rate_limiter::clock::time_point at(std::int64_t offset) {
    return rate_limiter::clock::time_point(std::chrono::nanoseconds(base_ns + offset));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    byte_reader in(data, size);
    current_op() = {};
    static constexpr std::array<std::uint64_t, 8> bursts = {1, 2, 3, 4, 7, 64, 1000, 4294967295u};
    const std::int64_t period = period_of_byte(in.byte());
    const std::uint64_t burst = bursts[in.byte() % bursts.size()];
    double hz = hz_of(period);
    auto lim = std::make_unique<rate_limiter>(hz, burst);
    rate_limiter_model model(period, burst);
    std::int64_t now = 0;  // offset from base_ns
    bool on_helper = false;
    const auto call = [&](const std::function<void()>& f) {
        if (on_helper) {
            helper().run(f);
        } else {
            f();
        }
    };
    const auto acquire = [&](const std::string& how) {
        current_op().begin("try_acquire(" + std::to_string(now) + " ns, " + how + ")" +
                           (on_helper ? " on the helper thread" : ""));
        bool real = false;
        call([&] { real = lim->try_acquire(at(now)); });
        FUZZ_CHECK_EQ(real, model.try_acquire(now));
    };
    const auto clamp = [](std::int64_t t) { return std::clamp(t, -max_offset, max_offset); };
    while (!in.empty()) {
        const std::uint8_t op = in.byte();
        switch (op % 9) {
        case 0: acquire("same time point"); break;
        case 1: {
            // Whole periods (0-15) and a fraction of one (-1 to +1 period).
            const std::int64_t periods = in.byte() % 16;
            const std::int64_t fraction = static_cast<std::int64_t>(in.byte()) - 128;
            now = clamp(now + periods * model.period() + fraction * model.period() / 128);
            acquire("after a step forward");
            break;
        }
        case 2: {
            // Around the next boundary's widened edge: at it, a nanosecond before or after.
            if (model.started()) {
                const std::int64_t edge = model.next_boundary() - model.period() / 1000;
                now = clamp(edge + static_cast<std::int64_t>(in.byte() % 3) - 1);
            }
            acquire("at the next widened boundary");
            break;
        }
        case 3:
            now = clamp(now - static_cast<std::int64_t>(in.byte()) * model.period() / 16);
            acquire("after a step back");
            break;
        case 4: {
            const std::int64_t p = period_of_byte(in.byte());
            current_op().begin("set_rate(period " + std::to_string(p) + " ns, " + std::to_string(now) +
                               " ns)" + (on_helper ? " on the helper thread" : ""));
            hz = hz_of(p);
            call([&] { lim->set_rate(hz, at(now)); });
            model.set_rate(p, now);
            break;
        }
        case 5:
            current_op().begin("switch thread");
            on_helper = !on_helper;
            break;
        case 6:
            current_op().begin("move into a new limiter");
            lim = std::make_unique<rate_limiter>(std::move(*lim));
            break;
        case 7:
            current_op().begin("rate(), burst()");
            FUZZ_CHECK_EQ(lim->rate(), hz);
            FUZZ_CHECK_EQ(lim->burst(), static_cast<std::size_t>(burst));
            break;
        case 8:
            // A long jump, 1-256 times 2^30 ns: past 2^31 boundaries of a short period.
            now = clamp(now + (static_cast<std::int64_t>(in.byte()) + 1) * (std::int64_t{1} << 30));
            acquire("after a long jump");
            break;
        default: break;
        }
    }
    // Every token left at the last time point, and the refusal after them (the model says how
    // many; a bucket of more than 64 is checked for its first 64).
    for (int i = 0; i < 65; ++i) {
        current_op().begin("final try_acquire " + std::to_string(i));
        bool real = false;
        call([&] { real = lim->try_acquire(at(now)); });
        const bool expected = model.try_acquire(now);
        FUZZ_CHECK_EQ(real, expected);
        if (!expected) {
            break;
        }
    }
    return 0;
}
