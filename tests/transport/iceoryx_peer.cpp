// tests/transport/iceoryx_peer.cpp - the other process of the iceoryx tests.
//
//     iceoryx_peer detect <instance> <work ms>   takes the newest frame, works on it for <work ms>
//                                                of CPU (a spin, like HOG), repeats; on SIGTERM
//                                                prints "stats key=value ..." and exits 0
//                                                (below)
//     iceoryx_peer hold <instance> <n>           takes n frames and holds their chunks for ever
//                                                (the test kills it)
//
// Prints "ready" once subscribed. RouDi not running: one line on stderr, exit 2.
//
// detect's stats: the receiver's counts; first_link, the link_seq of the first frame it got (the
// ones sent before were not meant for it); the slot's (evicted: frames replaced unread; left: the
// one still in it); the frames processed, and how many of those the camera had sent before one
// processed earlier (reordered); the frames' ages when taken (printed, for the record).
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

using handle = framepipe::transport::received_ptr<std::span<const std::byte>>;

// The receiver's output: into the slot, noting the first frame's link_seq on the way.
struct first_noted {
    framepipe::latest_slot<handle>& slot;
    std::atomic<bool> any{false};
    std::atomic<std::uint64_t> first_link{0};

    framepipe::push_status push(handle h) {
        if (!any.exchange(true)) {
            first_link.store(h->link_seq);
        }
        return slot.push(std::move(h));
    }
    void close() { slot.close(); }
};

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
        framepipe::latest_slot<handle> newest;
        first_noted into{newest};
        tp::iceoryx_receiver<tp::bytes_codec> rx({.service = {.instance = argv[2]}});
        rx.start(into);
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
        std::uint64_t reordered = 0;
        std::uint64_t last_link = 0;
        std::uint64_t checksum = 0;
        while (!stop_requested.load()) {
            auto f = newest.pop_for(milliseconds(50));
            if (!f) {
                continue;
            }
            age.record(steady_clock::now() - (*f)->captured);
            reordered += processed > 0 && (*f)->link_seq <= last_link ? 1U : 0U;
            last_link = (*f)->link_seq;
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
        const auto slot = newest.stats();
        std::printf(
            "stats received=%llu lost=%llu dropped_at_stop=%llu out_of_order=%llu "
            "first_link=%llu delivered=%llu processed=%llu evicted=%llu left=%llu "
            "reordered=%llu age_p50_ms=%.2f age_p99_ms=%.2f malformed=%llu checksum=%llu\n",
            static_cast<unsigned long long>(s.received),
            static_cast<unsigned long long>(s.lost_in_transport),
            static_cast<unsigned long long>(s.dropped_at_stop),
            static_cast<unsigned long long>(s.out_of_order),
            static_cast<unsigned long long>(into.first_link.load()),
            static_cast<unsigned long long>(s.delivered),
            static_cast<unsigned long long>(processed),
            static_cast<unsigned long long>(slot.evicted),
            static_cast<unsigned long long>(slot.size),
            static_cast<unsigned long long>(reordered),
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
