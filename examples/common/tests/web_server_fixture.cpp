// examples/common/tests/web_server_fixture.cpp - web_server.hpp alone, fed by a synthetic camera,
// for test_web_server_hostile: the server under test runs in its own process, so that its RSS,
// threads and open descriptors (read by the test from /proc/<pid>) are the server's alone, and a
// crash is an exit status instead of a dead test.
//
//     web_server_fixture [--fps 30] [--frame-bytes 30000] [--max-streams 16]
//                        [--max-connections 128] [--request-timeout 10] [--stall-timeout 30]
//                        [--max-fds N]   (RLIMIT_NOFILE, to run the server out of descriptors)
//     PORT 40123                      <- printed once it serves
//     ... SIGTERM: stops the server, prints "PUBLISHED n" and exits 0
//
// The camera publishes a new frame every 1/fps s into the broadcaster the server fans out: a
// fresh shared buffer of frame-bytes (FF D8 ... FF D9, like a JPEG) with the text message
// {"type":"frame","seq":N} before it, N counting from 0. A frame is allocated per publish (no
// pool), so that a frame held by a client shows in the RSS as it would with pool misses.
//
// Served: "/" (a small page), "/app.js" (64 KiB, so that a client that never reads its
// responses stalls the server's writes early), /metrics, /stats.json (the server's counters
// plus "publisher": what every publish returned, summed), /ws, /video.mjpg.
#include "common/web_server.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/resource.h>

namespace fe = framepipe_examples;

namespace {

// The publishes' results, summed. Guarded by mu.
struct publish_totals {
    std::uint64_t published = 0;
    std::uint64_t delivered = 0;
    std::uint64_t evicted = 0;
    std::uint64_t rejected = 0;
    std::uint64_t cancelled = 0;
    std::uint64_t closed = 0;
    std::uint64_t rate_limited = 0;
    std::uint64_t subscribers_max = 0; // the most subscribers one publish met
    std::uint64_t open_subscribers_max = 0; // the most of them not closed (ended streams stay
                                            // subscribed, closed, until their session is gone)
};

long flag(int argc, char** argv, const std::string& name, long fallback) {
    for (int i = 1; i + 1 < argc; ++i) {
        if (argv[i] == name) {
            return std::stol(argv[i + 1]);
        }
    }
    return fallback;
}

} // namespace

int main(int argc, char** argv) {
    // SIGTERM and SIGINT are taken by sigwait below; blocked before any thread starts, so that
    // every thread inherits the mask and none of them dies of the signal.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    const auto fps = flag(argc, argv, "--fps", 30);
    const auto frame_bytes = static_cast<std::size_t>(flag(argc, argv, "--frame-bytes", 30000));
    if (fps <= 0 || frame_bytes < 4) {
        std::fprintf(stderr, "web_server_fixture: --fps must be > 0, --frame-bytes >= 4\n");
        return 2;
    }

    std::mutex mu;
    publish_totals totals;
    auto totals_json = [&] {
        const std::lock_guard<std::mutex> lock(mu);
        return nlohmann::json{{"published", totals.published},
                              {"delivered", totals.delivered},
                              {"evicted", totals.evicted},
                              {"rejected", totals.rejected},
                              {"cancelled", totals.cancelled},
                              {"closed", totals.closed},
                              {"rate_limited", totals.rate_limited},
                              {"subscribers_max", totals.subscribers_max},
                              {"open_subscribers_max", totals.open_subscribers_max}};
    };

    fe::web_server_options o;
    o.port = 0;
    o.page_html = "<!doctype html><title>fixture</title><p>web_server_fixture</p>\n";
    o.assets.emplace("/app.js", fe::web_asset{"text/javascript", std::string(64 * 1024, '/')});
    o.metrics_text = [] { return std::string("# TYPE fixture_up gauge\nfixture_up 1\n"); };
    o.stats_json = [&] { return nlohmann::json{{"publisher", totals_json()}}.dump(); };
    o.state_json = [] { return std::string(R"({"type":"state"})"); };
    o.max_streams = static_cast<std::size_t>(flag(argc, argv, "--max-streams", 16));
    o.max_connections = static_cast<std::size_t>(flag(argc, argv, "--max-connections", 128));
    o.request_timeout = std::chrono::seconds(flag(argc, argv, "--request-timeout", 10));
    o.stall_timeout = std::chrono::seconds(flag(argc, argv, "--stall-timeout", 30));
    if (const auto fds = flag(argc, argv, "--max-fds", 0); fds > 0) {
        const rlimit limit{static_cast<rlim_t>(fds), static_cast<rlim_t>(fds)};
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
            std::perror("web_server_fixture: setrlimit");
            return 2;
        }
    }
    o.log_name = "fixture";

    framepipe::broadcaster<fe::encoded_frame> frames;
    fe::web_server server(std::move(o), frames);
    server.start();

    // The frame's bytes: a JPEG's start and end markers around noise that does not compress.
    std::vector<unsigned char> image(frame_bytes);
    std::mt19937 noise(42);
    std::generate(image.begin(), image.end(), [&] { return static_cast<unsigned char>(noise()); });
    image[0] = 0xFF;
    image[1] = 0xD8;
    image[frame_bytes - 2] = 0xFF;
    image[frame_bytes - 1] = 0xD9;

    std::atomic<bool> stop{false};
    std::thread camera([&] {
        const auto period = std::chrono::nanoseconds(1'000'000'000 / fps);
        auto next = std::chrono::steady_clock::now();
        for (std::uint64_t seq = 0; !stop.load(std::memory_order_relaxed); ++seq) {
            auto f = std::make_shared<fe::encoded_frame>();
            f->jpeg = image;
            f->seq = seq;
            f->captured = std::chrono::steady_clock::now();
            f->meta = R"({"type":"frame","seq":)" + std::to_string(seq) + "}";
            const auto r = frames.publish(std::shared_ptr<const fe::encoded_frame>(std::move(f)));
            {
                const std::lock_guard<std::mutex> lock(mu);
                ++totals.published;
                totals.delivered += r.delivered;
                totals.evicted += r.evicted;
                totals.rejected += r.rejected;
                totals.cancelled += r.cancelled;
                totals.closed += r.closed;
                totals.rate_limited += r.rate_limited;
                totals.subscribers_max = std::max<std::uint64_t>(totals.subscribers_max, r.subscribers);
                totals.open_subscribers_max =
                    std::max<std::uint64_t>(totals.open_subscribers_max, r.subscribers - r.closed);
            }
            // The camera's clock: a frame every period; a late frame is not made up for.
            next = std::max(next + period, std::chrono::steady_clock::now());
            std::this_thread::sleep_until(next);
        }
    });

    std::printf("PORT %u\n", static_cast<unsigned>(server.port()));
    std::fflush(stdout);

    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    stop = true;
    camera.join();
    server.stop();
    frames.close();
    std::printf("PUBLISHED %s\n", totals_json().dump().c_str());
    std::fflush(stdout);
    return 0;
}
