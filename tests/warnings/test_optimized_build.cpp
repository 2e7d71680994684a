// The public headers compile without warnings at -O2 (GCC's -Wmaybe-uninitialized and the other
// flow-sensitive warnings only run when optimising; the dev preset builds at -O0). This file is
// built at -O2 with the project's warning set (-Werror in the dev preset) and calls the blocking
// and paced paths of each block from a thread of its own, as user code does: those are where GCC
// 12 found "uses" of an empty std::optional deadline or a nested optional (docs/verification.md,
// finding 5).
#include <framepipe/framepipe.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using framepipe::overflow;

TEST_CASE("optimized build: the blocking pops of each channel hand over a value") {
    framepipe::ring<std::shared_ptr<std::string>> mpmc(4);
    framepipe::spsc_ring<std::string> spsc(4);
    framepipe::latest_slot<std::string> newest;
    framepipe::sliding_window<std::string> window(2, 1);
    framepipe::pool<std::vector<int>> buffers(1, [] { return std::vector<int>(16); });
    framepipe::broadcaster<std::string> frames;
    auto subscription = frames.subscribe({.capacity = 2});

    // One thread per call, each a loop of its own, as in a consumer thread.
    std::vector<std::string> got;
    std::vector<std::thread> consumers;
    std::mutex mu;
    const auto keep = [&](std::string s) {
        const std::lock_guard<std::mutex> lock(mu);
        got.push_back(std::move(s));
    };
    consumers.emplace_back([&] {
        while (auto s = mpmc.pop()) {
            keep(**s);
        }
    });
    consumers.emplace_back([&] {
        while (auto s = spsc.pop()) {
            keep(*s);
        }
    });
    consumers.emplace_back([&] {
        while (auto s = newest.pop()) {
            keep(*s);
        }
    });
    consumers.emplace_back([&] {
        while (auto w = window.pop()) {
            keep((*w)[1]);
        }
    });
    consumers.emplace_back([&] {
        while (auto s = subscription.pop()) {
            keep(**s);
        }
    });
    consumers.emplace_back([&] {
        const auto b = buffers.acquire();
        keep(std::to_string(b->size()));
    });
    CHECK(mpmc.push(std::make_shared<std::string>("mpmc")) == framepipe::push_status::ok);
    CHECK(spsc.push("spsc") == framepipe::push_status::ok);
    newest.push("newest");
    window.push("w0");
    window.push("w1");
    frames.publish(std::string("broadcast"));
    mpmc.close();
    spsc.close();
    newest.close();
    window.close();
    frames.close();
    for (auto& t : consumers) {
        t.join();
    }
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<std::string>{"16", "broadcast", "mpmc", "newest", "spsc", "w1"});
}

TEST_CASE("optimized build: a paced sink skips to the newest item") {
    framepipe::ring<std::string> a(8, overflow::drop_oldest);
    std::vector<std::string> got;
    int next = 0;
    framepipe::pipeline p("optimized");
    p.source("count", a, [&]() -> std::optional<std::string> {
        return next < 1000 ? std::optional<std::string>(std::to_string(next++)) : std::nullopt;
    });
    p.sink("paced", a, [&](const std::string& s) { got.push_back(s); }, {.max_rate_hz = 5000});
    p.start();
    p.wait();
    REQUIRE_FALSE(got.empty());
    CHECK(got.back() == "999"); // the source's end drains: the last item is never skipped
}
