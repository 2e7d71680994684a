// tests/lin/mutants.hpp - deliberately broken channels and a broken rate limiter, to prove that
// the linearizability checker rejects what it should. Each has the API the harness drives (the
// ring's push, try_push, push_for, try_pop, pop_for, peek, close, stats, size; the limiter's
// try_acquire and set_rate) and one planted bug.
#pragma once

#include "rate_limiter_spec.hpp"

#include <framepipe/channel.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

namespace framepipe_lin {

// A mutex ring whose flaw is chosen at construction.
class mutant_ring {
public:
    enum class flaw {
        // drop_oldest that evicts the newest buffered item instead of the oldest.
        evicts_newest,
        // try_pop and peek report "empty" whenever any push is in flight, even when the oldest
        // item's push returned long ago: a looser version of the MPMC ring's documented
        // trade-off, which allows it only while the push of the oldest item is in flight.
        empty_while_any_push_in_flight,
    };

    mutant_ring(std::size_t capacity, flaw f,
                std::chrono::microseconds push_takes = std::chrono::microseconds(0))
        : capacity_(capacity), flaw_(f), push_takes_(push_takes) {}

    framepipe::push_status push(std::int64_t v) {
        in_flight_.fetch_add(1, std::memory_order_seq_cst);
        if (push_takes_.count() > 0) {
            std::this_thread::sleep_for(push_takes_); // a slow push: the window the flaw needs
        }
        framepipe::push_status s = framepipe::push_status::ok;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            ++stats_.pushed;
            if (closed_) {
                ++stats_.after_close;
                ++stats_.dropped;
                s = framepipe::push_status::closed;
            } else {
                if (items_.size() == capacity_) {
                    if (flaw_ == flaw::evicts_newest) {
                        items_.pop_back();
                    } else {
                        items_.pop_front();
                    }
                    ++stats_.evicted;
                    ++stats_.dropped;
                    s = framepipe::push_status::evicted;
                }
                items_.push_back(v);
            }
        }
        in_flight_.fetch_sub(1, std::memory_order_seq_cst);
        return s;
    }
    framepipe::push_status try_push(std::int64_t v) { return push(v); }
    framepipe::push_status push_for(std::int64_t v, std::chrono::nanoseconds) { return push(v); }

    std::optional<std::int64_t> try_pop() {
        if (flaw_ == flaw::empty_while_any_push_in_flight &&
            in_flight_.load(std::memory_order_seq_cst) != 0) {
            return std::nullopt;
        }
        const std::lock_guard<std::mutex> lock(mu_);
        if (items_.empty()) {
            return std::nullopt;
        }
        const std::int64_t v = items_.front();
        items_.pop_front();
        ++stats_.popped;
        return v;
    }
    std::optional<std::int64_t> pop_for(std::chrono::nanoseconds) { return try_pop(); }

    [[nodiscard]] std::optional<std::int64_t> peek() const {
        if (flaw_ == flaw::empty_while_any_push_in_flight &&
            in_flight_.load(std::memory_order_seq_cst) != 0) {
            return std::nullopt;
        }
        const std::lock_guard<std::mutex> lock(mu_);
        return items_.empty() ? std::nullopt : std::optional<std::int64_t>(items_.front());
    }

    void close() {
        const std::lock_guard<std::mutex> lock(mu_);
        closed_ = true;
    }

    [[nodiscard]] framepipe::channel_stats stats() const {
        const std::lock_guard<std::mutex> lock(mu_);
        framepipe::channel_stats s = stats_;
        s.size = items_.size();
        return s;
    }
    [[nodiscard]] std::size_t size() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return items_.size();
    }

private:
    const std::size_t capacity_;
    const flaw flaw_;
    const std::chrono::microseconds push_takes_;
    mutable std::mutex mu_;
    std::deque<std::int64_t> items_;
    bool closed_ = false;
    framepipe::channel_stats stats_{};
    std::atomic<int> in_flight_{0};
};

// A rate limiter that decides on a copy of its state taken under its lock and stores the copy
// back afterwards: a call that overlaps another's decision uses the same token again. The bug a
// takeover of rate_limiter's owner would have if it did not wait for the owner's section. To show
// it without luck, a call holds its copy until a second call has taken one too (or 1 s passed).
class mutant_limiter {
public:
    using clock = std::chrono::steady_clock;

    mutant_limiter(std::int64_t period_ns, std::uint64_t burst) : model_(period_ns, burst) {}

    bool try_acquire(clock::time_point t) {
        rate_limiter_model copy = [&] {
            const std::lock_guard<std::mutex> lock(mu_);
            return model_;
        }();
        copies_.fetch_add(1, std::memory_order_seq_cst);
        const auto give_up = clock::now() + std::chrono::seconds(1);
        while (copies_.load(std::memory_order_seq_cst) < 2 && clock::now() < give_up) {
            std::this_thread::yield();
        }
        const bool admitted = copy.try_acquire(ns(t));
        const std::lock_guard<std::mutex> lock(mu_);
        model_ = copy;
        return admitted;
    }

    void set_rate(double hz, clock::time_point t) {
        const std::lock_guard<std::mutex> lock(mu_);
        model_.set_rate(static_cast<std::int64_t>(std::llround(1e9 / hz)), ns(t));
    }

private:
    static std::int64_t ns(clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }

    std::mutex mu_;
    rate_limiter_model model_;
    std::atomic<int> copies_{0};
};

} // namespace framepipe_lin
