// tests/lin/test_findings.cpp - library bugs found while writing the specifications, each as a
// test that fails until the library is fixed (docs/verification.md, "Findings").
#include <framepipe/broadcaster.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

// broadcaster::close() sets `closed` under the core's mutex, then closes the subscriptions'
// buffers after unlocking. A publish that takes the mutex in between reports
// broadcaster_closed == true ("nobody will get values") and yet pushes into the buffers that are
// still open: subscribers receive a value published after close() had marked the broadcaster
// closed, and publish_result says both. Many subscribers widen the window (close() walks them
// one by one), so the race shows within a few rounds.
// Proposed fix: close the subscriptions' buffers inside the locked section of close() (a
// lock-free ring's close() is noexcept and never waits), so a publish that sees `closed` under
// the mutex finds every buffer closed.
TEST_CASE("broadcaster: a publish that reports broadcaster_closed delivers to nobody", "[broadcaster][finding]") {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int rounds = 0;
    while (std::chrono::steady_clock::now() < give_up && rounds < 200) {
        ++rounds;
        framepipe::broadcaster<int> b;
        std::vector<framepipe::subscription<int>> subs;
        for (int i = 0; i < 2000; ++i) {
            subs.push_back(b.subscribe({.capacity = 1}));
        }
        std::atomic<bool> go{false};
        std::thread closer([&] {
            while (!go.load()) {
            }
            b.close();
        });
        go.store(true);
        framepipe::publish_result r;
        do {
            r = b.publish(std::make_shared<const int>(1));
        } while (!r.broadcaster_closed);
        closer.join();
        INFO("round " << rounds << ": broadcaster_closed, delivered " << r.delivered << ", closed "
                      << r.closed << " of " << r.subscribers);
        REQUIRE(r.delivered == 0);
        REQUIRE(r.closed == r.subscribers);
    }
}
