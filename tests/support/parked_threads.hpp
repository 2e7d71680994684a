// tests/support/parked_threads.hpp - threads a test parks one at a time on a waiting call, each
// with a stop source of its own: its way out, for a hang guard and for the end of the test.
// Linux only (it tells a parked thread from /proc, see thread_state.hpp).
#pragma once

#include "thread_state.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

namespace framepipe_test {

template <std::size_t N>
class parked_threads {
public:
    parked_threads() = default;
    parked_threads(const parked_threads&) = delete;
    parked_threads& operator=(const parked_threads&) = delete;
    ~parked_threads() { finish(); }

    // Starts thread i, which runs body(its stop source), and waits (yielding) until it sleeps in
    // a futex wait inside `object`. Start them in order, each after the one before has parked, so
    // that the only futex inside `object` a thread can sleep on is the one it waits on. False
    // when /proc cannot tell a parked thread (the caller then skips its test).
    template <class Object, class Body>
    bool start_parked_in(std::size_t i, const Object& object, Body body) {
        threads_.emplace_back([this, i, body = std::move(body)]() mutable {
            tids_[i] = this_thread_id();
            body(stops[i]);
        });
        return wait_until_parked_in(tids_[i], object);
    }

    // Requests every thread's stop, then joins them. Any number of times.
    void finish() {
        for (auto& s : stops) {
            s.request_stop();
        }
        for (auto& t : threads_) {
            if (t.joinable()) {
                t.join();
            }
        }
    }

    std::array<std::stop_source, N> stops;

private:
    std::array<std::atomic<long>, N> tids_{};
    std::vector<std::thread> threads_;
};

} // namespace framepipe_test
