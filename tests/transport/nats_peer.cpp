// tests/transport/nats_peer.cpp - a detector worker for the NATS tests, in a process of its own
// (so that a test can kill it, or restart the server under it).
//
//     nats_peer <servers> <frames subject> <queue group> <name> <service ms> <results subject>
//               <receipts subject>
//
// Takes the newest frame (a nats_receiver in the queue group, into a latest_slot), "detects" for
// <service ms> (a sleep: a detector bound by an accelerator or another host, not by this
// machine's two cores), and publishes a result with the frame's seq. Prints "ready" once
// subscribed, and on SIGTERM one line "stats key=value ..." then exits 0: the receiver's counts,
// the slot's (evicted: frames replaced unread; left: the one still in it), the frames processed,
// how many of those the sender had sent before one processed earlier (reordered, by link_seq),
// and the frames' ages when taken (printed, for the record; no test asserts a time).
#include <framepipe/latest_slot.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/stamped.hpp>
#include <framepipe/transport/nats.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> stop_requested{false};

extern "C" void on_signal(int) {
    stop_requested.store(true);
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ',')) {
        out.push_back(item);
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(stderr,
                     "usage: nats_peer servers subject group name service_ms results receipts\n");
        return 2;
    }
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    namespace tp = framepipe::transport;
    using namespace std::chrono;
    const std::string name = argv[4];
    const auto service = milliseconds(std::atoi(argv[5]));
    try {
        tp::nats_connection nc({.servers = split(argv[1]), .name = name, .max_attempts = 20});
        tp::nats_publisher<tp::bytes_codec> results(nc, {.subject = argv[6],
                                                         .sender_name = name,
                                                         .kind = tp::message_kind::result,
                                                         .drop_while_disconnected = false});
        framepipe::latest_slot<tp::received_ptr<std::span<const std::byte>>> newest;
        tp::nats_receiver<tp::bytes_codec> frames(
            nc,
            {.subject = argv[2], .queue_group = argv[3], .receipt_subject = argv[7], .name = name});
        frames.start(newest);
        std::printf("ready\n");
        std::fflush(stdout);
        framepipe::latency_histogram age;
        std::uint64_t processed = 0;
        std::uint64_t reordered = 0;
        std::uint64_t last_link = 0; // the sender's numbering (a test's seq may start again)
        while (!stop_requested.load()) {
            auto f = newest.pop_for(milliseconds(50));
            if (!f) {
                continue;
            }
            age.record(steady_clock::now() - (*f)->captured);
            reordered += processed > 0 && (*f)->link_seq <= last_link ? 1U : 0U;
            last_link = (*f)->link_seq;
            std::this_thread::sleep_for(service);
            const std::string text = name;
            std::vector<std::byte> payload(text.size());
            std::transform(text.begin(), text.end(), payload.begin(),
                           [](char c) { return static_cast<std::byte>(c); });
            (void)results.send(framepipe::stamped<std::vector<std::byte>>{
                std::move(payload), (*f)->seq, (*f)->captured, (*f)->epoch});
            ++processed;
        }
        frames.stop();
        const auto s = frames.stats();
        const auto slot = newest.stats();
        std::printf(
            "stats received=%llu delivered=%llu processed=%llu evicted=%llu left=%llu "
            "reordered=%llu slow=%llu reconnects=%llu age_p99_ms=%.2f age_count=%llu\n",
            static_cast<unsigned long long>(s.received),
            static_cast<unsigned long long>(s.delivered),
            static_cast<unsigned long long>(processed),
            static_cast<unsigned long long>(slot.evicted),
            static_cast<unsigned long long>(slot.size),
            static_cast<unsigned long long>(reordered),
            static_cast<unsigned long long>(s.slow_consumer_dropped),
            static_cast<unsigned long long>(s.reconnects),
            duration<double, std::milli>(age.quantile(0.99)).count(),
            static_cast<unsigned long long>(age.count()));
        std::fflush(stdout);
        results.close();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "nats_peer: %s\n", e.what());
        return 2;
    }
    return 0;
}
