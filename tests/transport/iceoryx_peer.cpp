// tests/transport/iceoryx_peer.cpp - the other process of the iceoryx tests.
//
//     iceoryx_peer detect <instance> <work ms>   takes the newest frame, works on it for <work ms>
//                                                of CPU (a spin, like HOG), repeats; on SIGTERM
//                                                prints "stats key=value ..." and exits 0
//     iceoryx_peer hold <instance> <n>           takes n frames and holds their chunks for ever
//                                                (the test kills it)
//
// Prints "ready" once subscribed. RouDi not running: one line on stderr, exit 2.
#include <framepipe/latest_slot.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/transport/iceoryx.hpp>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> stop_requested{false};
extern "C" void on_signal(int) {
    stop_requested.store(true);
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: iceoryx_peer detect|hold instance n\n");
        return 2;
    }
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    namespace tp = framepipe::transport;
    using namespace std::chrono;
    const std::string mode = argv[1];
    const int n = std::atoi(argv[3]);
    try {
        tp::iceoryx_init("iceoryx-peer");
        using handle = tp::received_ptr<std::span<const std::byte>>;
        framepipe::latest_slot<handle> newest;
        tp::iceoryx_receiver<tp::bytes_codec> rx({.service = {.instance = argv[2]}});
        rx.start(newest);
        std::printf("ready\n");
        std::fflush(stdout);
        if (mode == "hold") {
            std::vector<handle> held;
            while (static_cast<int>(held.size()) < n) {
                if (auto f = newest.pop_for(milliseconds(100))) {
                    held.push_back(std::move(*f));
                }
            }
            std::printf("holding %zu\n", held.size());
            std::fflush(stdout);
            while (!stop_requested.load()) {
                std::this_thread::sleep_for(milliseconds(50));
            }
            return 0;
        }
        // The detector at nice 10, as framepipe-detect's stage_options{.nice} would: its spin
        // must not starve this process's receiving thread (started above, at the default).
        (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
        framepipe::latency_histogram age;
        std::uint64_t processed = 0;
        std::uint64_t checksum = 0;
        while (!stop_requested.load()) {
            auto f = newest.pop_for(milliseconds(50));
            if (!f) {
                continue;
            }
            age.record(steady_clock::now() - (*f)->captured);
            // Reads the frame in place (in the chunk) and spins like a detector would.
            const auto until = steady_clock::now() + milliseconds(n);
            const auto& bytes = (*f)->value;
            for (std::size_t i = 0; steady_clock::now() < until; i = (i + 4093) % bytes.size()) {
                checksum += std::to_integer<unsigned>(bytes[i]);
            }
            ++processed;
        }
        rx.stop();
        const auto s = rx.stats();
        std::printf(
            "stats received=%llu lost=%llu processed=%llu evicted=%llu age_p50_ms=%.2f "
            "age_p99_ms=%.2f malformed=%llu checksum=%llu\n",
            static_cast<unsigned long long>(s.received),
            static_cast<unsigned long long>(s.lost_in_transport),
            static_cast<unsigned long long>(processed),
            static_cast<unsigned long long>(newest.stats().evicted),
            duration<double, std::milli>(age.quantile(0.5)).count(),
            duration<double, std::milli>(age.quantile(0.99)).count(),
            static_cast<unsigned long long>(s.malformed),
            static_cast<unsigned long long>(checksum % 2));
        std::fflush(stdout);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "iceoryx_peer: %s\n", e.what());
        return 2;
    }
    return 0;
}
