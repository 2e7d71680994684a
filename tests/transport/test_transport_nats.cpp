// Tests of framepipe::nats (include/framepipe/transport/nats.hpp) against Debian's nats-server,
// started by each test on 127.0.0.1 on a port of its own choosing (support/nats_server.hpp), with
// the server's default config (max_payload 1 MB). Workers run as processes of their own
// (nats_peer.cpp) so that one can be killed, and the server restarted under them.
//
// No check depends on how fast the machine is: the tests assert counts, shares and the order of
// events, and print the timing figures (rates, ages) for the record; framepipe-transport-bench
// measures them (docs/transport.md). Waits that end on an event have a generous bound, to catch
// a hang.
// Seams in nats.hpp (before it is included): a send held until its receipt has come back.
#include "../support/thread_state.hpp"

#include <atomic>
#include <functional>
#include <thread>

namespace {
// Holds the armed send at FRAMEPIPE_DETAIL_NATS_PUBLISHED_HOOK until the delivery thread that
// handles the frame's receipt (FRAMEPIPE_DETAIL_NATS_RECEIPT_HOOK names it) sleeps in a futex
// wait. /proc silent counts as asleep: the send goes on rather than hangs.
struct receipt_race_seam {
    std::atomic<bool> armed{false};
    std::atomic<long> receipt_thread{0};
    std::atomic<unsigned> held{0};

    void arm() noexcept {
        receipt_thread.store(0);
        armed.store(true);
    }
    void published() {
        if (!armed.exchange(false)) {
            return;
        }
        held.fetch_add(1);
        for (;;) {
            const long tid = receipt_thread.load();
            if (tid != 0 && framepipe_test::in_futex_wait(tid).value_or(true)) {
                return;
            }
            std::this_thread::yield();
        }
    }
    void receipt() noexcept {
        long expected = 0;
        (void)receipt_thread.compare_exchange_strong(expected, framepipe_test::this_thread_id());
    }
};
receipt_race_seam receipt_race;

// Holds the armed receiver's stop() at FRAMEPIPE_DETAIL_NATS_STOP_HOOK (its push asked to stop,
// its subscription not yet ended) until `done` says so.
struct stop_seam {
    std::atomic<bool> armed{false};
    std::function<bool()> done; // set before arming

    void arm(std::function<bool()> until) {
        done = std::move(until);
        armed.store(true);
    }
    void run() {
        if (!armed.load() || !armed.exchange(false)) {
            return;
        }
        while (!done()) {
            std::this_thread::yield();
        }
    }
};
stop_seam stop_hold;
} // namespace
#define FRAMEPIPE_DETAIL_NATS_PUBLISHED_HOOK() receipt_race.published()
#define FRAMEPIPE_DETAIL_NATS_RECEIPT_HOOK() receipt_race.receipt()
#define FRAMEPIPE_DETAIL_NATS_STOP_HOOK() stop_hold.run()

#include "support/nats_server.hpp"

#include <framepipe/latest_slot.hpp>
#include <framepipe/exposition.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/stamped.hpp>
#include <framepipe/transport/nats.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace tp = framepipe::transport;
using namespace std::chrono_literals;
using bytes_handle = tp::received_ptr<std::span<const std::byte>>;
using framepipe_test::nats_server;
using worker = framepipe_examples::testing::child;
using clock_type = std::chrono::steady_clock;

std::vector<std::byte> payload(std::size_t n, std::uint8_t fill = 1) {
    return std::vector<std::byte>(n, static_cast<std::byte>(fill));
}

// A camera: `fps` frames of `size` bytes for `seconds`, stamped with seq from 0, epoch 1.
std::uint64_t run_camera(tp::nats_publisher<tp::bytes_codec>& pub, double fps,
                         std::chrono::milliseconds duration, std::size_t size = 32 * 1024) {
    const auto period =
        std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(1.0 / fps));
    const auto t0 = clock_type::now();
    std::uint64_t seq = 0;
    for (auto next = t0; clock_type::now() - t0 < duration; next += period) {
        std::this_thread::sleep_until(next);
        (void)pub.send(
            framepipe::stamped<std::vector<std::byte>>{payload(size), seq++, clock_type::now(), 1});
    }
    return seq;
}

std::unique_ptr<worker> start_worker(const std::string& servers, const std::string& name,
                                     int service_ms) {
    auto w = std::make_unique<worker>(std::vector<std::string>{
        FRAMEPIPE_NATS_PEER, servers, tp::frame_subject("test", "cam0"), "detectors", name,
        std::to_string(service_ms), tp::result_subject("test", "cam0"),
        "framepipe.test.cam0.receipts"});
    if (!w->wait_for("ready", 30s)) {
        FAIL("worker " << name << " did not start: " << w->err());
    }
    return w;
}

// Stops a worker with SIGTERM and returns its "stats ..." line as key -> value.
std::map<std::string, double> stop_worker(worker& w) {
    w.terminate();
    const auto line = w.wait_for("stats ", 30s);
    (void)w.wait();
    std::map<std::string, double> out;
    REQUIRE(line);
    std::size_t at = 0;
    while (at < line->size()) {
        const auto eq = line->find('=', at);
        const auto end = std::min(line->find(' ', at), line->size());
        if (eq == std::string::npos || eq > end) {
            break;
        }
        out[line->substr(at, eq - at)] = std::stod(line->substr(eq + 1, end - eq - 1));
        at = end + 1;
    }
    return out;
}

// Results as they come back: how many from each worker.
struct result_counter {
    explicit result_counter(tp::nats_connection& nc)
        : rx(nc,
             {.subject = tp::result_subject("test", "cam0"), .kind = tp::message_kind::result}) {
        rx.start(results);
        reader = std::jthread([this](std::stop_token stop) {
            while (auto r = results.pop(stop)) {
                const std::lock_guard<std::mutex> lock(mu);
                ++by_worker[(*r)->sender];
                ++total;
            }
        });
    }
    ~result_counter() {
        rx.stop();
        results.close();
    }
    std::uint64_t count() {
        const std::lock_guard<std::mutex> lock(mu);
        return total;
    }
    std::map<std::string, std::uint64_t> per_worker() {
        const std::lock_guard<std::mutex> lock(mu);
        return by_worker;
    }

    framepipe::ring<bytes_handle> results{4096};
    tp::nats_receiver<tp::bytes_codec> rx;
    std::mutex mu;
    std::map<std::string, std::uint64_t> by_worker;
    std::uint64_t total = 0;
    std::jthread reader;
};

// Polls `done` until it holds or `timeout` passes (events outside the process: a server that
// restarts, a connection that gives up, a worker's results); true if it held.
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = 30s) {
    const auto until = clock_type::now() + timeout;
    while (!done()) {
        if (clock_type::now() > until) {
            return false;
        }
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

// Checks that make() throws std::invalid_argument whose message starts with "field:".
template <class Make>
void refused(Make make, const std::string& field) {
    try {
        make();
        FAIL("accepted; expected std::invalid_argument naming " << field);
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).rfind(field + ":", 0) == 0);
    } catch (const std::exception& e) {
        FAIL_CHECK("expected std::invalid_argument naming " << field << ", got: " << e.what());
    }
}

// A receipt later than the horizon counts its frame as lost (and itself as late): generous here,
// for a loaded 2-core host running the workers under a sanitizer.
tp::nats_publisher_options camera_options() {
    return {.subject = tp::frame_subject("test", "cam0"),
            .sender_name = "cam0",
            .receipt_subject = "framepipe.test.cam0.receipts",
            .loss_horizon = 10s};
}

} // namespace

TEST_CASE("nats: each frame arrives with its seq, epoch, capture time and sender") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    CHECK(nc.max_payload() == 1048576);
    // Room for the whole burst in the client, whatever the default.
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.c.frames", .pending_messages = 100});
    framepipe::ring<bytes_handle> got(100);
    rx.start(got);
    tp::nats_publisher<tp::bytes_codec> pub(
        nc, {.subject = "framepipe.t.c.frames", .sender_name = "cam-a"});
    const auto captured = clock_type::now() - 5ms;
    for (std::uint64_t i = 0; i < 20; ++i) {
        REQUIRE(pub.send(framepipe::stamped<std::vector<std::byte>>{
                    payload(1000, static_cast<std::uint8_t>(i)), 100 + i, captured, 7}) ==
                tp::send_status::sent);
    }
    for (std::uint64_t i = 0; i < 20; ++i) {
        auto r = got.pop_for(5s);
        REQUIRE(r);
        const auto& m = **r;
        CHECK(m.seq == 100 + i);
        CHECK(m.link_seq == i);
        CHECK(m.epoch == 7);
        CHECK(m.sender == "cam-a");
        CHECK(m.sender_id == pub.sender_id());
        CHECK(m.captured == captured); // same host: the steady clock, exactly
        REQUIRE(m.value.size() == 1000);
        CHECK(m.value[0] == static_cast<std::byte>(i));
    }
    const auto s = rx.stats();
    CHECK(s.received == 20);
    CHECK(s.delivered == 20);
    CHECK(s.lost_in_transport == 0);
    CHECK(s.malformed == 0);
    CHECK(s.senders == 1);
    CHECK(s.state == framepipe::live_state::streaming);
    CHECK(pub.stats().sent == 20);
    rx.stop();
}

TEST_CASE("nats: pump sends what a framepipe channel holds until it is closed and drained") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.p.frames", .pending_messages = 100});
    framepipe::ring<bytes_handle> got(100);
    rx.start(got);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.p.frames"});
    framepipe::ring<framepipe::stamped<std::vector<std::byte>>> in(16);
    for (std::uint64_t i = 0; i < 10; ++i) {
        REQUIRE(in.try_push({payload(10, static_cast<std::uint8_t>(i)), i, clock_type::now(), 1}) ==
                framepipe::push_status::ok);
    }
    in.close();
    CHECK(pub.pump(in) == 10); // returns once the closed ring is drained
    for (std::uint64_t i = 0; i < 10; ++i) {
        auto r = got.pop_for(5s);
        REQUIRE(r);
        CHECK((*r)->seq == i);
    }
    CHECK(pub.stats().sent == 10);
    rx.stop();
}

TEST_CASE("nats: a receiver is a supervised source; its figures show in the pipeline's metrics") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.c.frames"});
    framepipe::latest_slot<bytes_handle> newest;
    std::atomic<int> seen{0};
    framepipe::pipeline p("remote");
    p.source("from-nats", newest, rx);
    p.sink("detector", newest, [&](const bytes_handle&) { ++seen; });
    p.start();
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.c.frames"});
    const auto until = clock_type::now() + 10s;
    while (seen.load() == 0 && clock_type::now() < until) {
        (void)pub.send(payload(10));
        std::this_thread::sleep_for(10ms);
    }
    const auto text = framepipe::to_prometheus(p.snapshot());
    (void)p.request_stop(5s);
    p.wait();
    CHECK(seen.load() > 0);
    CHECK(text.find("framepipe_source_lost_in_transport_total{") != std::string::npos);
    CHECK(text.find("framepipe_source_slow_consumer_dropped_total{") != std::string::npos);
    CHECK(text.find("state=\"streaming\"} 1") != std::string::npos);
}

TEST_CASE("nats: sequence gaps show as lost_in_transport in a loss_counted output channel") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.g.frames"});
    framepipe::ring<bytes_handle> ring(16);
    tp::loss_counted frames(ring);
    framepipe::pipeline p("remote");
    p.channel(frames, "frames");
    rx.start(frames);
    // A queue group's member gets its share of a stream: its gaps are the other members' frames,
    // not losses (the publisher counts those from receipts). Here it is alone, and gets all five.
    framepipe::ring<bytes_handle> share(16);
    tp::nats_receiver<tp::bytes_codec> member(
        nc, {.subject = "framepipe.t.g.frames", .queue_group = "workers"});
    member.start(share);
    // One sender's frames 0, 1, 2, 7, 8: five arrive, 3 to 6 were lost on the way.
    const std::uint64_t sent[] = {0, 1, 2, 7, 8};
    for (const auto link_seq : sent) {
        std::vector<std::byte> msg(tp::envelope_size);
        tp::envelope e;
        e.link_seq = link_seq;
        e.seq = link_seq;
        tp::set_sender(e, 42, "gappy");
        tp::write_envelope(e, msg);
        REQUIRE(natsConnection_Publish(nc.get(), "framepipe.t.g.frames", msg.data(),
                                       static_cast<int>(msg.size())) == NATS_OK);
    }
    for (const auto link_seq : sent) {
        auto r = frames.pop_for(5s);
        REQUIRE(r);
        CHECK((*r)->seq == link_seq);
    }
    for (const auto link_seq : sent) {
        auto r = share.pop_for(5s);
        REQUIRE(r);
        CHECK((*r)->seq == link_seq);
    }
    member.stop();
    CHECK(member.stats().received == 5);
    CHECK(member.stats().lost_in_transport == 0);
    rx.stop(); // the callback has returned: the counts are final
    CHECK(rx.stats().lost_in_transport == 4);
    CHECK(frames.lost_in_transport() == 4);
    const auto s = frames.stats();
    CHECK(s.lost_in_transport == 4);
    CHECK(s.pushed == 9);
    CHECK(s.popped == 5);
    CHECK(s.dropped == 4);
    CHECK(s.pushed == s.popped + s.dropped + s.size);
    const auto text = framepipe::to_prometheus(p.snapshot());
    CHECK(text.find("reason=\"lost_in_transport\"} 4") != std::string::npos);
}

TEST_CASE("nats: a malformed message from another sender is counted and skipped") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.c.frames"});
    framepipe::ring<bytes_handle> got(100);
    rx.start(got);
    const std::string junk[] = {"", "hello", std::string(200, 'x'), std::string("FPT1\x02\x00", 6)};
    for (const auto& j : junk) {
        REQUIRE(natsConnection_Publish(nc.get(), "framepipe.t.c.frames", j.data(),
                                       static_cast<int>(j.size())) == NATS_OK);
    }
    // A well-formed header that claims more payload than there is.
    std::vector<std::byte> lying(tp::envelope_size + 10);
    tp::envelope e;
    e.payload_size = 1000;
    tp::write_envelope(e, lying);
    REQUIRE(natsConnection_Publish(nc.get(), "framepipe.t.c.frames", lying.data(),
                                   static_cast<int>(lying.size())) == NATS_OK);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.c.frames"});
    REQUIRE(pub.send(payload(10)) == tp::send_status::sent);
    auto r = got.pop_for(5s);
    REQUIRE(r); // the good one still comes, after the bad ones
    rx.stop();  // the callback has returned: its counts are final
    const auto s = rx.stats();
    CHECK(s.malformed == 5);
    CHECK(s.received == 1);
    CHECK(s.delivered == 1);
    CHECK_FALSE(s.last_error.empty());
    rx.stop();
}

TEST_CASE("nats: a payload over max_payload is refused, counted, and says so") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.c.frames"});
    // 1 MB with the 128-byte envelope: the largest payload is max_payload - 128.
    CHECK(pub.send(payload(1048576 - tp::envelope_size)) == tp::send_status::sent);
    CHECK(pub.send(payload(1048576 - tp::envelope_size + 1)) == tp::send_status::too_large);
    // pump() counts only what went out.
    framepipe::ring<std::vector<std::byte>> in(4);
    REQUIRE(in.try_push(payload(10)) == framepipe::push_status::ok);
    REQUIRE(in.try_push(payload(1048576)) == framepipe::push_status::ok);
    in.close();
    CHECK(pub.pump(in) == 1);
    const auto s = pub.stats();
    CHECK(s.sent == 2);
    CHECK(s.too_large == 2);
    CHECK(s.last_error.find("max_payload of 1048576") != std::string::npos);
}

TEST_CASE("nats: a codec that asks to lend nearly SIZE_MAX bytes is refused as too_large") {
    // The check added the envelope's size to the request first: near SIZE_MAX that wrapped, the
    // check passed, and the envelope was written past a buffer of the wrapped size.
    struct underflowed_codec { // its size computation went below zero (say, size - header)
        using value_type = int;
        using view_type = int;
        void encode(const int&, tp::lender& lend) const {
            (void)lend(std::numeric_limits<std::size_t>::max() - 100);
        }
        [[nodiscard]] std::optional<int> decode(std::span<const std::byte>) const { return 0; }
    };
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_publisher<underflowed_codec> pub(nc, {.subject = "framepipe.t.c.frames"});
    CHECK(pub.send(1) == tp::send_status::too_large);
    const auto s = pub.stats();
    CHECK(s.too_large == 1);
    CHECK(s.sent == 0);
    CHECK(s.last_error.find("max_payload of 1048576") != std::string::npos);
}

TEST_CASE("nats: unreachable at start: one line after max_attempts") {
    nats_server server; // for a port that is free once it is gone
    const auto url = server.url();
    server.kill();
    const auto t0 = clock_type::now();
    try {
        tp::nats_connection nc({.servers = {url}, .max_attempts = 3});
        FAIL("connected to a dead server");
    } catch (const tp::nats_error& e) {
        const std::string what = e.what();
        CHECK(what.find("cannot connect to " + url) == 0);
        CHECK(what.find("(3 attempts)") != std::string::npos);
        CHECK(what.find('\n') == std::string::npos);
    }
    // It gives up (the constructor returns): after the three attempts the message counts. How
    // long the backoff took is printed, not asserted.
    std::printf("nats unreachable: gave up after %.2f s\n",
                std::chrono::duration<double>(clock_type::now() - t0).count());
}

TEST_CASE("nats: the pending limit bounds the client's backlog; its drops are counted") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    // An output that holds the first push until released: the client's queue fills behind it.
    struct held_channel {
        std::mutex mu;
        std::condition_variable cv;
        bool entered = false;  // guarded by mu
        bool released = false; // guarded by mu
        void push(bytes_handle) {
            std::unique_lock<std::mutex> lock(mu);
            entered = true;
            cv.notify_all();
            cv.wait(lock, [this] { return released; });
        }
        void close() {}
        void wait_entered() {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [this] { return entered; });
        }
        void release() {
            const std::lock_guard<std::mutex> lock(mu);
            released = true;
            cv.notify_all();
        }
    } out;
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.c.frames", .pending_messages = 4});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.c.frames"});
    REQUIRE(pub.send(payload(1000)) == tp::send_status::sent);
    out.wait_entered(); // taken from the client's queue, held in the push
    for (int i = 1; i < 200; ++i) {
        REQUIRE(pub.send(payload(1000)) == tp::send_status::sent);
    }
    // One connection: once the flush returns, the other 199 have been read: at most 4 wait in
    // the client, it dropped the rest.
    REQUIRE(natsConnection_Flush(nc.get()) == NATS_OK);
    auto s = rx.stats();
    CHECK(s.received == 1);
    CHECK(s.slow_consumer_dropped == 195);
    // Gaps show a loss once a later message arrives: after one more, the gaps add up to exactly
    // what the client dropped.
    CHECK(s.lost_in_transport <= s.slow_consumer_dropped);
    out.release(); // the four kept come through, and the client's queue is empty
    REQUIRE(eventually([&] { return rx.stats().received == 5; }));
    REQUIRE(pub.send(payload(1000)) == tp::send_status::sent);
    REQUIRE(eventually([&] { return rx.stats().received == 6; }));
    s = rx.stats();
    CHECK(s.received + s.slow_consumer_dropped == 201);
    CHECK(s.lost_in_transport == s.slow_consumer_dropped);
    rx.stop();
}

TEST_CASE("nats: one publisher, three workers in a queue group share the frames") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}, .name = "camera"});
    constexpr int service_ms = 50; // each worker: at most 20 results per second
    constexpr double fps = 100;    // more than three workers take
    const auto run_for = 3000ms;

    auto measure = [&](int workers) {
        std::vector<std::unique_ptr<worker>> w;
        for (int i = 0; i < workers; ++i) {
            w.push_back(start_worker(server.url(), "worker-" + std::to_string(i + 1), service_ms));
        }
        result_counter results(nc);
        tp::nats_publisher<tp::bytes_codec> pub(nc, camera_options());
        const auto t0 = clock_type::now();
        const auto sent = run_camera(pub, fps, run_for);
        const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
        pub.settle(3s);
        const auto s = pub.stats();
        std::uint64_t received = 0;
        double age_p99 = 0;
        std::vector<std::map<std::string, double>> st;
        for (auto& x : w) {
            st.push_back(stop_worker(*x));
            received += static_cast<std::uint64_t>(st.back().at("received"));
            age_p99 = std::max(age_p99, st.back().at("age_p99_ms"));
        }
        const double rate = static_cast<double>(results.count()) / seconds;
        // The rate and the ages depend on the machine's load: printed, not asserted.
        std::printf(
            "nats queue group: %d worker(s): %.1f results/s, sent %llu, acknowledged %llu, "
            "lost %llu, age p99 %.1f ms, per worker (received/processed):",
            workers, rate, static_cast<unsigned long long>(s.sent),
            static_cast<unsigned long long>(s.acknowledged),
            static_cast<unsigned long long>(s.lost_in_transport), age_p99);
        for (std::size_t i = 0; i < st.size(); ++i) {
            std::printf(" worker-%zu=%.0f/%.0f", i + 1, st[i].at("received"),
                        st[i].at("processed"));
        }
        std::printf("\n");
        // The accounting identity, end to end: every frame sent was acknowledged by exactly one
        // worker or counted as lost in transport.
        CHECK(s.sent == sent);
        CHECK(s.acknowledged + s.lost_in_transport == s.sent);
        CHECK(s.acknowledged == received);
        CHECK(s.late_receipts == 0);
        CHECK(s.pending_receipts == 0);
        CHECK(results.per_worker().size() == static_cast<std::size_t>(workers));
        for (std::size_t i = 0; i < st.size(); ++i) {
            const auto& x = st[i];
            INFO("worker-" << i + 1);
            // The frames shared: the server gives each to one member at random, so each of
            // three gets about a third; at least a fifth (a quarter would fail by chance about
            // once in 300 runs of 300 frames).
            CHECK(x.at("received") * 5 >= static_cast<double>(s.acknowledged));
            // In the worker, every frame received went into its slot, and was processed,
            // replaced unread by a newer one, or is still there.
            CHECK(x.at("delivered") == x.at("received"));
            CHECK(x.at("delivered") == x.at("processed") + x.at("evicted") + x.at("left"));
            // The newest frame: the camera gives each worker frames faster than it serves them
            // (one per 50 ms), so a worker that takes the newest skips some, and never takes one
            // sent before one it took earlier. One that queued would skip none, and fall behind.
            CHECK(x.at("processed") > 0);
            CHECK(x.at("processed") < x.at("received"));
            CHECK(x.at("reordered") == 0);
        }
        return rate;
    };
    const double one = measure(1);
    const double three = measure(3);
    // Three workers serve about three times the results of one; a ratio of two rates in this
    // run, printed (framepipe-transport-bench and docs/transport.md measure it).
    std::printf("nats queue group: three workers against one: %.2fx the results\n", three / one);
}

TEST_CASE("nats: a worker killed mid-run: the others take over, nothing uncounted") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}, .name = "camera"});
    std::vector<std::unique_ptr<worker>> w;
    for (int i = 0; i < 3; ++i) {
        w.push_back(start_worker(server.url(), "worker-" + std::to_string(i + 1), 30));
    }
    result_counter results(nc);
    tp::nats_publisher<tp::bytes_codec> pub(nc, camera_options());
    // The camera runs until the other two have taken over; the kill comes once each of the three
    // has answered five times. Each step waits for an event, not a time.
    std::atomic<bool> done{false};
    std::uint64_t sent = 0;
    std::jthread camera([&] {
        while (!done.load()) {
            sent += run_camera(pub, 60, 100ms);
        }
    });
    const auto answers = [](const std::map<std::string, std::uint64_t>& per,
                            const std::string& name) {
        const auto it = per.find(name);
        return it == per.end() ? std::uint64_t{0} : it->second;
    };
    std::map<std::string, std::uint64_t> at_kill;
    std::uint64_t results_at_kill = 0;
    const bool all_answered = eventually([&] {
        const auto per = results.per_worker();
        return answers(per, "worker-1") >= 5 && answers(per, "worker-2") >= 5 &&
               answers(per, "worker-3") >= 5;
    });
    bool took_over = false;
    if (all_answered) {
        w[0]->send_signal(SIGKILL);
        (void)w[0]->wait();
        at_kill = results.per_worker();
        results_at_kill = results.count();
        // Both others go on answering: ten more results each.
        took_over = eventually([&] {
            const auto per = results.per_worker();
            return answers(per, "worker-2") >= answers(at_kill, "worker-2") + 10 &&
                   answers(per, "worker-3") >= answers(at_kill, "worker-3") + 10;
        });
    }
    done = true;
    camera.join();
    REQUIRE(all_answered);
    CHECK(took_over);
    pub.settle(3s);
    const auto lost_at_kill = pub.stats().lost_in_transport;
    // The dead worker took frames for a moment at most: once the server has seen its connection
    // close, the other two take every frame. A batch with no loss comes.
    bool clean_batch = false;
    for (int i = 0; i < 10 && !clean_batch; ++i) {
        const auto lost = pub.stats().lost_in_transport;
        sent += run_camera(pub, 60, 300ms);
        pub.settle(3s);
        clean_batch = pub.stats().lost_in_transport == lost;
    }
    CHECK(clean_batch);
    const auto s = pub.stats();
    std::uint64_t received = 0;
    for (std::size_t i = 1; i < w.size(); ++i) {
        received += static_cast<std::uint64_t>(stop_worker(*w[i]).at("received"));
    }
    std::printf(
        "nats killed worker: sent %llu, acknowledged %llu, lost %llu (%llu by the kill); "
        "results %llu at the kill, %llu at the end\n",
        static_cast<unsigned long long>(s.sent), static_cast<unsigned long long>(s.acknowledged),
        static_cast<unsigned long long>(s.lost_in_transport),
        static_cast<unsigned long long>(lost_at_kill),
        static_cast<unsigned long long>(results_at_kill),
        static_cast<unsigned long long>(results.count()));
    // Every frame: acknowledged by a worker (the dead one's before it died), or lost in
    // transport (in flight to it, or in its client when it died). None uncounted.
    CHECK(s.sent == sent);
    CHECK(s.acknowledged + s.lost_in_transport == s.sent);
    CHECK(s.acknowledged >= received);
    CHECK(s.pending_receipts == 0);
}

TEST_CASE(
    "nats: the server restarts: publisher and workers reconnect with backoff, frames flow again") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}, .name = "camera"});
    auto w = start_worker(server.url(), "worker-1", 10);
    result_counter results(nc);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = tp::frame_subject("test", "cam0")});
    // The camera runs through the outage. Each step waits for an event, not a time: results
    // flow, the server is killed, the publisher drops frames while it is down, the server comes
    // back, results flow again.
    std::atomic<bool> done{false};
    std::jthread camera([&] {
        while (!done.load()) {
            (void)run_camera(pub, 30, 100ms);
        }
    });
    std::uint64_t before = 0;
    bool dropped = false;
    bool flow_again = false;
    const bool flowed = eventually([&] { return results.count() > 10; });
    if (flowed) {
        server.kill();
        before = results.count();
        dropped = eventually([&] { return pub.stats().disconnected > 0; });
        server.start(); // same port
        flow_again = eventually([&] { return results.count() > before + 30; });
    }
    done = true;
    camera.join();
    REQUIRE(flowed);
    const auto s = pub.stats();
    const auto st = stop_worker(*w);
    std::printf(
        "nats restart: results %llu before the outage, %llu in all; publisher %s, "
        "reconnects %llu, disconnected drops %llu; worker reconnects %.0f\n",
        static_cast<unsigned long long>(before), static_cast<unsigned long long>(results.count()),
        std::string(framepipe::to_string(s.state)).c_str(),
        static_cast<unsigned long long>(s.reconnects),
        static_cast<unsigned long long>(s.disconnected), st.at("reconnects"));
    CHECK(before > 10);
    CHECK(dropped); // frames dropped while down, counted
    CHECK(flow_again); // after the restart, results flow again
    CHECK(s.state == framepipe::live_state::streaming);
    CHECK(s.reconnects >= 1);
    CHECK(s.disconnects >= 1);
    CHECK(s.disconnected > 0);
    CHECK(st.at("reconnects") >= 1);
}

TEST_CASE("nats: a three-node cluster on loopback: publisher on node 1, workers on nodes 2 and 3") {
    nats_server n1({.cluster = true, .name = "n1"});
    nats_server n2({.cluster = true, .routes = {n1.cluster_url()}, .name = "n2"});
    nats_server n3({.cluster = true, .routes = {n1.cluster_url()}, .name = "n3"});
    // Routes form in the background: wait until node 3 sees node 2's interest.
    REQUIRE(std::string(n3.log()).size() > 0);
    auto w2 = start_worker(n2.url(), "worker-n2", 20);
    auto w3 = start_worker(n3.url(), "worker-n3", 20);
    tp::nats_connection nc({.servers = {n1.url()}, .name = "camera"});
    result_counter results(nc);
    tp::nats_publisher<tp::bytes_codec> pub(nc, camera_options());
    // Interest crosses the routes asynchronously: send until both workers answered once.
    const auto until = clock_type::now() + 20s;
    while (results.per_worker().size() < 2 && clock_type::now() < until) {
        (void)run_camera(pub, 30, 200ms);
    }
    const auto sent_before = pub.stats().sent;
    (void)run_camera(pub, 30, 2000ms);
    pub.settle(3s);
    const auto s = pub.stats();
    const auto on_n2 = stop_worker(*w2).at("received");
    const auto on_n3 = stop_worker(*w3).at("received");
    const auto per = results.per_worker();
    std::printf(
        "nats cluster: sent %llu (%llu while routes formed), acknowledged %llu, lost %llu, "
        "received: n2 %.0f, n3 %.0f; results: n2 %llu, n3 %llu\n",
        static_cast<unsigned long long>(s.sent), static_cast<unsigned long long>(sent_before),
        static_cast<unsigned long long>(s.acknowledged),
        static_cast<unsigned long long>(s.lost_in_transport), on_n2, on_n3,
        static_cast<unsigned long long>(per.count("worker-n2") ? per.at("worker-n2") : 0),
        static_cast<unsigned long long>(per.count("worker-n3") ? per.at("worker-n3") : 0));
    REQUIRE(per.size() == 2);
    // Node 1 has no member: it gives each frame to one of the two on a route, about half each;
    // at least a fifth each.
    CHECK(on_n2 * 5 >= on_n2 + on_n3);
    CHECK(on_n3 * 5 >= on_n2 + on_n3);
    CHECK(s.acknowledged + s.lost_in_transport == s.sent);
}

namespace {

// An output channel whose push waits: until closed, or (with the stop token) until the receiver
// stops. Records how each push ended.
struct gated_channel {
    using value_type = bytes_handle;
    bool takes_stop_token = true;
    std::mutex mu;
    std::condition_variable_any cv;
    int entered = 0;      // guarded by mu
    int left = 0;         // guarded by mu
    bool closed = false;  // guarded by mu
    std::atomic<long> thread{0}; // the thread of the last push with a stop token

    framepipe::push_status push(bytes_handle) {
        std::unique_lock<std::mutex> lock(mu);
        ++entered;
        cv.notify_all();
        cv.wait(lock, [this] { return closed; });
        ++left;
        cv.notify_all();
        return framepipe::push_status::closed;
    }
    framepipe::push_status push(bytes_handle h, std::stop_token stop) {
        thread.store(framepipe_test::this_thread_id());
        if (!takes_stop_token) {
            return push(std::move(h));
        }
        std::unique_lock<std::mutex> lock(mu);
        ++entered;
        cv.notify_all();
        const bool c = cv.wait(lock, stop, [this] { return closed; });
        ++left;
        cv.notify_all();
        return c ? framepipe::push_status::closed : framepipe::push_status::cancelled;
    }
    void close() {
        const std::lock_guard<std::mutex> lock(mu);
        closed = true;
        cv.notify_all();
    }
    void wait_entered() {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [this] { return entered > 0; });
    }
    int left_count() {
        const std::lock_guard<std::mutex> lock(mu);
        return left;
    }
};

int port_of(const std::string& url) {
    return std::stoi(url.substr(url.rfind(':') + 1));
}

} // namespace

TEST_CASE("nats: stop() ends a push waiting in the output channel through its stop token") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    gated_channel out;
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.stop.frames"});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.stop.frames"});
    REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    out.wait_entered(); // the callback waits in push
    rx.stop();          // asks the push to stop, and waits for the callback to return
    CHECK(out.left_count() == 1);
    const auto s = rx.stats();
    CHECK(s.received == 1);
    CHECK(s.refused == 1); // cancelled: not handed over
    CHECK(s.delivered == 0);
    out.close();
}

TEST_CASE("nats: a receiver destroyed while its callback waits in a push frees nothing under it") {
    // The push ignores stop tokens: stop() gives up waiting for the callback (bounded), and the
    // receiver goes while the callback still runs. What the callback touches must outlive it
    // (ASan: a heap-use-after-free otherwise). Static: the channel outlives the callback's
    // thread, which the test cannot join.
    static gated_channel out;
    out.takes_stop_token = false;
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.uaf.frames"});
    {
        tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.uaf.frames"});
        rx.start(out);
        REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
        out.wait_entered();
    } // ~nats_receiver: stop() returns within its bound although the callback still runs
    out.close(); // the callback returns now: counts its message refused, nats.c completes it
    std::unique_lock<std::mutex> lock(out.mu);
    out.cv.wait(lock, [] { return out.left == 1; });
}

TEST_CASE("nats: a receiver started during a server outage subscribes when the server is back") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    server.kill();
    REQUIRE(eventually([&] {
        return !nc.connected() && nc.stats().state == framepipe::live_state::backoff;
    }));
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.outage.frames"});
    rx.start(got); // a lost server is a state: no error, and the subscription waits for it
    CHECK_THROWS_AS(rx.start(got), std::logic_error); // started: once
    server.start(); // same port
    tp::nats_connection other({.servers = {server.url()}});
    tp::nats_publisher<tp::bytes_codec> pub(other, {.subject = "framepipe.t.outage.frames"});
    // Until nats.c's reconnect has resubscribed: send until one arrives.
    std::optional<bytes_handle> r;
    const auto until = clock_type::now() + 30s;
    while (!r && clock_type::now() < until) {
        (void)pub.send(payload(8));
        r = got.pop_for(50ms);
    }
    REQUIRE(r);
    CHECK(rx.stats().received >= 1);
    rx.stop();
}

TEST_CASE("nats: a failed start() leaves the receiver as it was") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}, .max_reconnect = 0});
    server.kill();
    REQUIRE(eventually([&] { return nc.stats().state == framepipe::live_state::failed; }));
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.failed.frames"});
    CHECK_THROWS_AS(rx.start(got), tp::nats_error); // the connection is closed: a real failure
    CHECK_THROWS_AS(rx.start(got), tp::nats_error); // not "started twice": nothing was left
    rx.stop();
}

TEST_CASE("nats: a receipt that comes back while its frame is being sent is not counted late") {
    // The receipt can come back before send() returns. The seam holds each send right after the
    // connection took its frame until the frame's receipt has reached the publisher's delivery
    // thread and that thread waits: for the ledger (the frame's entry is on its way), or, if
    // the receipt found no entry and was counted late, for its next message.
    nats_server server;
    tp::nats_connection pnc({.servers = {server.url()}});
    tp::nats_connection rnc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> out(4); // drops: the consumer is not the point
    tp::nats_receiver<tp::bytes_codec> rx(rnc, {.subject = "framepipe.t.race.frames",
                                                .receipt_subject = "framepipe.t.race.receipts"});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(pnc, {.subject = "framepipe.t.race.frames",
                                                  .receipt_subject = "framepipe.t.race.receipts",
                                                  .loss_horizon = 600s});
    constexpr int frames = 20;
    for (int i = 0; i < frames; ++i) {
        receipt_race.arm();
        REQUIRE(pub.send(payload(256)) == tp::send_status::sent);
        REQUIRE(receipt_race.held == static_cast<unsigned>(i + 1)); // each send was held
        // The next send must not take the ledger's lock before this receipt is handled: the
        // next receipt would queue behind it on the same delivery thread, never to reach the seam.
        while (pub.stats().acknowledged + pub.stats().late_receipts < static_cast<unsigned>(i + 1)) {
            std::this_thread::yield();
        }
    }
    pub.settle(20s); // returns once every frame is acknowledged
    const auto s = pub.stats();
    CHECK(s.sent == frames);
    CHECK(s.late_receipts == 0);
    CHECK(s.acknowledged == s.sent);
    CHECK(s.pending_receipts == 0);
    CHECK(s.lost_in_transport == 0);
    rx.stop();
}

TEST_CASE("nats: a restarted camera's frames pass a channel that drops older epochs") {
    // The new process's epochs start at 1 again: by the sender's own epoch, every frame of it was
    // older than the last one of the process before, and refused for good.
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::latest_slot<bytes_handle> newest({.drop_older_epochs = true});
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.restart.frames"});
    rx.start(newest);
    using frame = framepipe::stamped<std::vector<std::byte>>;
    const auto send = [](auto& cam, std::uint64_t seq, std::uint64_t epoch) {
        REQUIRE(cam.send(frame{payload(8), seq, clock_type::now(), epoch}) ==
                tp::send_status::sent);
    };
    {
        tp::nats_publisher<tp::bytes_codec> old_cam(
            nc, {.subject = "framepipe.t.restart.frames", .sender_name = "cam0"});
        for (std::uint64_t i = 0; i < 5; ++i) {
            send(old_cam, i, 3); // its camera reconnected twice
        }
        REQUIRE(eventually([&] { return rx.stats().received == 5; }));
    }
    tp::nats_publisher<tp::bytes_codec> new_cam(
        nc, {.subject = "framepipe.t.restart.frames", .sender_name = "cam0"});
    for (std::uint64_t i = 0; i < 5; ++i) {
        send(new_cam, 100 + i, 1);
    }
    REQUIRE(eventually([&] { return rx.stats().received == 10; }));
    rx.stop();
    const auto s = rx.stats();
    CHECK(s.delivered == 10);
    CHECK(s.refused == 0);
    const auto last = newest.try_pop();
    REQUIRE(last);
    CHECK((*last)->seq == 104);
    CHECK((*last)->epoch == 1);          // the sender's own
    CHECK((*last)->receiver_epoch == 3); // what the channel compared: as new as the old one's
}

TEST_CASE("nats: a second receiver's receipts are counted as duplicates, not late") {
    // Two receivers answering on one receipt subject (two queue groups, or a subscriber beside
    // one): every frame's second receipt was counted in late_receipts, "receipts for frames
    // already counted as lost", though none was lost.
    nats_server server;
    tp::nats_connection pnc({.servers = {server.url()}});
    tp::nats_connection rnc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> out1(32);
    framepipe::ring<bytes_handle> out2(32);
    const tp::nats_receiver_options ro{.subject = "framepipe.t.dup.frames",
                                       .receipt_subject = "framepipe.t.dup.receipts"};
    tp::nats_receiver<tp::bytes_codec> rx1(rnc, ro);
    tp::nats_receiver<tp::bytes_codec> rx2(rnc, ro);
    rx1.start(out1);
    rx2.start(out2);
    tp::nats_publisher<tp::bytes_codec> pub(pnc, {.subject = "framepipe.t.dup.frames",
                                                  .receipt_subject = "framepipe.t.dup.receipts",
                                                  .loss_horizon = 600s});
    constexpr unsigned frames = 20;
    for (unsigned i = 0; i < frames; ++i) {
        REQUIRE(pub.send(payload(64)) == tp::send_status::sent);
    }
    REQUIRE(eventually([&] {
        const auto s = pub.stats();
        return s.acknowledged + s.duplicate_receipts + s.late_receipts == 2 * frames;
    }));
    const auto s = pub.stats();
    CHECK(s.acknowledged == frames);
    CHECK(s.duplicate_receipts == frames);
    CHECK(s.late_receipts == 0);
    CHECK(s.lost_in_transport == 0);
    rx1.stop();
    rx2.stop();
}

TEST_CASE("nats: stats() while stop() runs: the client's drops are read under the lock") {
    // ThreadSanitizer checks it: stats() on another thread, as /metrics reads it, during stop().
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> out(4);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.stats.frames"});
    rx.start(out);
    std::atomic<bool> stopped{false};
    std::uint64_t reads = 0;
    std::jthread reader([&] {
        while (!stopped.load()) {
            (void)rx.stats();
            ++reads;
        }
        (void)rx.stats();
    });
    rx.stop();
    stopped = true;
    reader.join();
    CHECK(rx.stats().slow_consumer_dropped == 0);
}

TEST_CASE("nats: subjects, queue groups and receipt subjects are checked") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    using pub_t = tp::nats_publisher<tp::bytes_codec>;
    using rx_t = tp::nats_receiver<tp::bytes_codec>;
    for (const std::string bad : {"", "a b", "a b c", "a\tb", "a\nb", ".a", "a.", "a..b", "a.*",
                                  "a.>", "*", "a*.b"}) {
        INFO("publisher subject " << bad);
        refused([&] { pub_t p(nc, {.subject = bad}); }, "subject");
    }
    for (const std::string bad : {"", "x y", "a..b", "a.>.b", "a*", "a.b>"}) {
        INFO("receiver subject " << bad);
        refused([&] { rx_t r(nc, {.subject = bad}); }, "subject");
    }
    refused([&] { rx_t r(nc, {.subject = "a", .queue_group = "g h"}); }, "queue_group");
    refused([&] { rx_t r(nc, {.subject = "a", .receipt_subject = "r s"}); }, "receipt_subject");
    refused([&] { rx_t r(nc, {.subject = "a", .receipt_subject = "r.*"}); }, "receipt_subject");
    refused([&] { pub_t p(nc, {.subject = "a", .receipt_subject = "r s"}); }, "receipt_subject");
    // Wildcards to subscribe: fine.
    rx_t any(nc, {.subject = "framepipe.*.cam0.>", .queue_group = "detectors"});
    pub_t ok(nc, {.subject = "framepipe.t.cam0.frames", .receipt_subject = "framepipe.t.*"});
    CHECK(ok.send(payload(4)) == tp::send_status::sent);
    CHECK(nc.stats().disconnects == 0);
}

TEST_CASE("nats: the default pending limit takes a burst that arrives at once") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    CHECK(tp::nats_receiver_options{}.pending_messages >= 64);
    framepipe::latest_slot<bytes_handle> newest; // a push that returns at once
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.burst.results", .kind = tp::message_kind::result});
    rx.start(newest);
    tp::nats_publisher<tp::bytes_codec> pub(
        nc, {.subject = "framepipe.t.burst.results", .kind = tp::message_kind::result});
    constexpr std::uint64_t burst = 60; // under the default: nothing can be dropped
    for (std::uint64_t i = 0; i < burst; ++i) {
        REQUIRE(pub.send(payload(100)) == tp::send_status::sent);
    }
    (void)natsConnection_FlushTimeout(nc.get(), 5000);
    REQUIRE(eventually([&] {
        const auto s = rx.stats();
        return s.received + s.slow_consumer_dropped == burst;
    }));
    const auto s = rx.stats();
    CHECK(s.slow_consumer_dropped == 0);
    CHECK(s.received == burst);
    rx.stop();
}

TEST_CASE("nats: receipts on a subject of another kind are counted as received and skipped") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.r.frames"});
    rx.start(got);
    for (std::uint64_t i = 0; i < 5; ++i) { // receipts for frames 10..14 of another sender
        std::vector<std::byte> msg(tp::envelope_size);
        tp::envelope e;
        e.kind = tp::message_kind::receipt;
        e.link_seq = 10 + 2 * i; // gaps, were they counted as a stream
        tp::set_sender(e, 77, "someone");
        tp::write_envelope(e, msg);
        REQUIRE(natsConnection_Publish(nc.get(), "framepipe.t.r.frames", msg.data(),
                                       static_cast<int>(msg.size())) == NATS_OK);
    }
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.r.frames"});
    REQUIRE(pub.send(payload(10)) == tp::send_status::sent);
    REQUIRE(got.pop_for(10s)); // the frame, after the receipts (one connection: in order)
    rx.stop();
    const auto s = rx.stats();
    CHECK(s.received == 6);
    CHECK(s.delivered == 1);
    CHECK(s.malformed == 0);
    CHECK(s.lost_in_transport == 0);
    CHECK(s.senders == 1);
}

TEST_CASE("nats: a connection that gives up ends the receiver's pipeline stage, saying why") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}, .max_reconnect = 1});
    framepipe::latest_slot<bytes_handle> newest;
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.x.frames"});
    framepipe::pipeline p("remote");
    p.source("from-nats", newest, rx);
    std::atomic<int> seen{0};
    p.sink("consumer", newest, [&](const bytes_handle&) { ++seen; });
    p.start();
    {
        // Running: a frame has come through the stage.
        tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.x.frames"});
        const auto until = clock_type::now() + 30s;
        while (seen.load() == 0 && clock_type::now() < until) {
            (void)pub.send(payload(8));
            std::this_thread::sleep_for(10ms);
        }
        REQUIRE(seen.load() > 0);
    }
    server.kill(); // and never back: nats.c gives up after one round
    const bool ended = p.wait_for(30s);
    if (!ended) {
        (void)p.request_stop(5s);
    }
    REQUIRE(ended);
    const auto why = rx.failure();
    REQUIRE(why);
    INFO(*why);
    CHECK(why->rfind("NATS connection closed: gave up reconnecting", 0) == 0);
    std::printf("nats gave up: %s\n", why->c_str());
    try {
        p.wait();
        FAIL("the stage ended without an error");
    } catch (const framepipe::stage_error& e) {
        CHECK(std::string(e.what()).find("NATS connection closed: gave up") != std::string::npos);
    }
}

TEST_CASE("nats: timeouts of 2^31 ms and more are no limit, not none") {
    // nats.c keeps a deadline's time left in an int: 2^32 ms wrapped, and a connect failed at
    // once ("timeout"), 19 times in 20 (review).
    nats_server server;
    int connected = 0;
    for (int i = 0; i < 5; ++i) {
        try {
            tp::nats_connection nc({.servers = {server.url()},
                                    .max_attempts = 1,
                                    .connect_timeout = std::chrono::milliseconds(1LL << 32),
                                    .write_deadline = std::chrono::hours(24 * 365)});
            ++connected;
        } catch (const std::exception& e) {
            UNSCOPED_INFO("connect " << i << ": " << e.what());
        }
    }
    CHECK(connected == 5);
}

TEST_CASE("nats: max_payload follows the server the connection is on") {
    nats_server first;
    const auto url = first.url();
    tp::nats_connection nc({.servers = {url}});
    tp::nats_publisher<tp::bytes_codec> pub(
        nc, {.subject = "framepipe.t.mp.frames", .drop_while_disconnected = false});
    CHECK(nc.max_payload() == 1048576);
    const auto config = std::filesystem::temp_directory_path() /
                        ("framepipe-nats-" + std::to_string(::getpid()) + "-2mb.conf");
    std::ofstream(config) << "max_payload: 2097152\n";
    first.kill();
    nats_server second({.port = port_of(url), .config = config.string()}); // restarted, bigger
    std::filesystem::remove(config);
    REQUIRE(eventually([&] { return nc.connected() && nc.stats().reconnects >= 1; }));
    CHECK(nc.max_payload() == 2097152);
    CHECK(pub.send(payload(1536 * 1024)) == tp::send_status::sent);
    CHECK(pub.stats().too_large == 0);
}

TEST_CASE("nats: bad options throw std::invalid_argument naming the field") {
    // Checked before connecting: no server needed (and none on port 1).
    const std::string nowhere = "nats://127.0.0.1:1";
    auto with = [&](auto change) {
        tp::nats_options o{.servers = {nowhere}, .max_attempts = 1};
        change(o);
        return [o] { tp::nats_connection nc(o); };
    };
    refused(with([](auto& o) { o.servers = {}; }), "servers");
    refused(with([](auto& o) { o.servers = {""}; }), "servers");
    refused(with([](auto& o) { o.reconnect_buffer_bytes = -5; }), "reconnect_buffer_bytes");
    refused(with([](auto& o) { o.backoff.multiplier = -1; }), "backoff.multiplier");
    refused(with([](auto& o) { o.backoff.multiplier = std::nan(""); }), "backoff.multiplier");
    refused(with([](auto& o) { o.backoff.jitter = 1.5; }), "backoff.jitter");
    refused(with([](auto& o) { o.backoff.initial = -1ms; }), "backoff.initial");
    refused(with([](auto& o) { o.backoff.max = 1ms; }), "backoff.max");
    refused(with([](auto& o) { o.connect_timeout = 0s; }), "connect_timeout");
    refused(with([](auto& o) { o.ping_interval = -1s; }), "ping_interval");
    refused(with([](auto& o) { o.max_pings_out = 0; }), "max_pings_out");
    refused(with([](auto& o) { o.max_reconnect = -2; }), "max_reconnect");

    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    using pub_t = tp::nats_publisher<tp::bytes_codec>;
    using rx_t = tp::nats_receiver<tp::bytes_codec>;
    refused([&] { pub_t p(nc, {.subject = "a", .receipt_subject = "r", .loss_horizon = -1s}); },
            "loss_horizon");
    refused([&] { pub_t p(nc, {.subject = "a", .loss_horizon = 0s}); }, "loss_horizon");
    refused([&] { rx_t r(nc, {.subject = "a", .stall_timeout = -1s}); }, "stall_timeout");
    refused([&] { rx_t r(nc, {.subject = "a", .pending_messages = 0}); }, "pending_messages");
    refused([&] { rx_t r(nc, {.subject = "a", .pending_bytes = -1}); }, "pending_bytes");
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "a"});
    CHECK_THROWS_AS(pub.settle(-1s), std::invalid_argument);
}

TEST_CASE("nats: an output channel or codec that throws on nats.c's thread: counted, run goes on") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    struct throwing_channel {
        framepipe::ring<bytes_handle> inner{16};
        framepipe::push_status push(bytes_handle h) {
            if (h->value.size() == 1) {
                throw std::runtime_error("no room today");
            }
            return inner.push(std::move(h));
        }
        void close() { inner.close(); }
    } out;
    // A codec that throws on a one-byte payload of 0xff (decode should not throw; this one does).
    struct picky_codec : tp::bytes_codec {
        [[nodiscard]] std::optional<view_type> decode(std::span<const std::byte> b) const {
            if (b.size() == 1 && b[0] == std::byte{0xff}) {
                throw std::runtime_error("cannot read that");
            }
            return b;
        }
    };
    tp::nats_receiver<picky_codec> rx(nc, {.subject = "framepipe.t.throw.frames"});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.throw.frames"});
    REQUIRE(pub.send(payload(1, 0xff)) == tp::send_status::sent); // the codec throws
    REQUIRE(pub.send(payload(1, 1)) == tp::send_status::sent);    // the channel throws
    REQUIRE(pub.send(payload(2)) == tp::send_status::sent);       // goes in
    REQUIRE(out.inner.pop_for(10s));
    rx.stop();
    const auto s = rx.stats();
    CHECK(s.received == 3);
    CHECK(s.malformed == 1);
    CHECK(s.refused == 1);
    CHECK(s.delivered == 1);
    CHECK(s.last_error.find("no room today") != std::string::npos);
}

TEST_CASE("nats: a closed publisher sends nothing: each send returns closed and is counted") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.closed.frames"});
    rx.start(got);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.closed.frames"});
    REQUIRE(pub.send(payload(8, 1)) == tp::send_status::sent);
    pub.close();
    CHECK(pub.send(payload(8, 2)) == tp::send_status::closed);
    pub.close(); // idempotent
    CHECK(pub.send(payload(8, 3)) == tp::send_status::closed);
    framepipe::ring<std::vector<std::byte>> in(4);
    REQUIRE(in.try_push(payload(8, 4)) == framepipe::push_status::ok);
    REQUIRE(in.try_push(payload(8, 5)) == framepipe::push_status::ok);
    in.close();
    CHECK(pub.pump(in) == 0); // both taken and refused: none sent
    CHECK(in.size() == 0);
    // Another publisher's frame on the same connection arrives after all sent before it.
    tp::nats_publisher<tp::bytes_codec> marker(nc, {.subject = "framepipe.t.closed.frames"});
    REQUIRE(marker.send(payload(8, 9)) == tp::send_status::sent);
    std::vector<int> fills;
    while (fills.empty() || fills.back() != 9) {
        auto r = got.pop_for(10s);
        REQUIRE(r);
        fills.push_back(static_cast<int>((*r)->value[0]));
    }
    CHECK(fills == std::vector<int>{1, 9});
    const auto s = pub.stats();
    CHECK(s.sent == 1);
    CHECK(s.send_failed == 4); // closed is counted as failed
    rx.stop();
}

TEST_CASE("nats: sends the connection refuses leave no gap: a receiver counts only what was lost") {
    nats_server server;
    tp::nats_connection rx_nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(256);
    tp::nats_receiver<tp::bytes_codec> rx(
        rx_nc, {.subject = "framepipe.t.refused.frames", .pending_messages = 256});
    rx.start(got);
    // While the server is down nats.c keeps what is published, up to 4 KB here: a few 1 KB frames
    // fit, and it refuses the rest (NATS_INSUFFICIENT_BUFFER), which send() returns as failed.
    tp::nats_connection nc({.servers = {server.url()}, .reconnect_buffer_bytes = 4096});
    tp::nats_publisher<tp::bytes_codec> pub(
        nc, {.subject = "framepipe.t.refused.frames", .drop_while_disconnected = false});
    REQUIRE(pub.send(payload(1000, 1)) == tp::send_status::sent);
    REQUIRE(got.pop_for(10s));
    server.kill();
    REQUIRE(eventually([&] { return !nc.connected(); }));
    for (int i = 0; i < 20; ++i) {
        (void)pub.send(payload(1000, 2));
    }
    REQUIRE(pub.stats().sent > 1);      // some kept for the server
    REQUIRE(pub.stats().send_failed > 0); // some refused
    server.start(); // same port
    // nats.c reports the status connected before its reconnected callback has counted it.
    REQUIRE(eventually([&] {
        return nc.connected() && rx_nc.connected() && nc.stats().reconnects >= 1 &&
               nc.stats().epoch >= 2;
    }));
    CHECK(nc.stats().reconnects == 1);
    CHECK(nc.stats().epoch == 2); // a connection of its own: a new epoch
    // Frames until one sent now arrives (the receiver has resubscribed), then a last one: every
    // frame sent before it has arrived or left a gap.
    const auto until = clock_type::now() + 30s;
    bool live = false;
    while (!live && clock_type::now() < until) {
        REQUIRE(pub.send(payload(8, 3)) == tp::send_status::sent);
        while (auto r = got.pop_for(50ms)) {
            live = live || (*r)->value[0] == std::byte{3};
        }
    }
    REQUIRE(live);
    REQUIRE(pub.send(payload(8, 9)) == tp::send_status::sent);
    for (;;) {
        auto r = got.pop_for(10s);
        REQUIRE(r);
        if ((*r)->value[0] == std::byte{9}) {
            break;
        }
    }
    rx.stop();
    const auto ps = pub.stats();
    const auto rs = rx.stats();
    // Refused sends took no link_seq: no gap stands for them.
    CHECK(rs.received + rs.lost_in_transport == ps.sent);
}

TEST_CASE("nats: a receipt for a frame already counted lost is counted late, not acknowledged") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.late.frames",
                                                 .receipt_subject = "framepipe.t.late.receipts",
                                                 .loss_horizon = 10s});
    // Nobody takes the frames: settle() with no time to wait counts them lost.
    for (int i = 0; i < 3; ++i) {
        REQUIRE(pub.send(payload(8)) == tp::send_status::sent);
    }
    pub.settle(0s);
    auto s = pub.stats();
    CHECK(s.lost_in_transport == 3);
    CHECK(s.pending_receipts == 0);
    // Then a receipt for frame 1 comes back, and after it (one connection: in order) a message
    // that is no envelope, counted malformed: once it is, the receipt has been handled.
    std::vector<std::byte> receipt(tp::envelope_size);
    tp::envelope e;
    e.kind = tp::message_kind::receipt;
    e.link_seq = 1;
    tp::set_sender(e, pub.sender_id(), "member");
    tp::write_envelope(e, receipt);
    REQUIRE(natsConnection_Publish(nc.get(), "framepipe.t.late.receipts", receipt.data(),
                                   static_cast<int>(receipt.size())) == NATS_OK);
    REQUIRE(natsConnection_Publish(nc.get(), "framepipe.t.late.receipts", "junk", 4) == NATS_OK);
    REQUIRE(eventually([&] { return pub.stats().malformed == 1; }));
    s = pub.stats();
    CHECK(s.late_receipts == 1);
    CHECK(s.acknowledged == 0);
    CHECK(s.lost_in_transport == 3);
}

TEST_CASE("nats: stop() ends wait(), for a thread waiting and for a later call") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.wait.frames"});
    rx.start(got);
    std::atomic<long> waiter{0};
    std::atomic<int> ended_by_stop{-1};
    {
        std::jthread t([&](std::stop_token st) {
            waiter = framepipe_test::this_thread_id();
            ended_by_stop = rx.wait(st) ? 1 : 0;
        });
        while (!(waiter.load() != 0 &&
                 framepipe_test::in_futex_wait(waiter.load()).value_or(true))) {
            std::this_thread::yield();
        }
        rx.stop();
    } // joins; a wait that stop() did not end ends here, on the thread's stop request: false
    CHECK(ended_by_stop.load() == 1);
    std::stop_source requested;
    requested.request_stop();
    CHECK(rx.wait(requested.get_token())); // ended already: true at once
}

TEST_CASE("nats: messages queued behind a push that stop() ends are dropped and counted") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    gated_channel out;
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.skip.frames"});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.skip.frames"});
    for (int i = 0; i < 3; ++i) {
        REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    }
    // One connection: when the flush returns, the three have come back and wait in the
    // subscription's queue (its reader takes them before the flush's reply).
    REQUIRE(natsConnection_Flush(nc.get()) == NATS_OK);
    out.wait_entered(); // the first waits in push
    const long delivery = out.thread.load();
    // stop() asks that push to stop, then waits at the seam until the delivery thread has
    // gone past the other two and sleeps (or, not dropping them, has pushed them too).
    stop_hold.arm([&] {
        return out.left_count() >= 1 && framepipe_test::in_futex_wait(delivery).value_or(true);
    });
    rx.stop();
    CHECK(out.left_count() == 1);
    const auto s = rx.stats();
    CHECK(s.received == 1);
    CHECK(s.refused == 1);
    CHECK(s.dropped_at_stop == 2); // taken after stop() began: not handed out, not received
    CHECK(pub.stats().sent == s.delivered + s.refused + s.dropped_at_stop);
    out.close();
}

TEST_CASE("nats: stop() drains the client's queue: each message counted, each frame acknowledged") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    gated_channel out; // its push waits until the receiver stops
    const std::string subject = "framepipe.t.drain.frames";
    const std::string receipts = "framepipe.t.drain.receipts";
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = subject,
                                               .queue_group = "g",
                                               .pending_messages = 64,
                                               .receipt_subject = receipts});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(
        nc, {.subject = subject, .receipt_subject = receipts, .loss_horizon = 60s});
    constexpr std::uint64_t n = 20;
    for (std::uint64_t i = 0; i < n; ++i) {
        REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    }
    // One connection: when the flush returns, all twenty are in the subscription's queue or
    // taken; the first waits in push, so the other nineteen wait in nats.c behind it.
    REQUIRE(natsConnection_Flush(nc.get()) == NATS_OK);
    out.wait_entered();
    rx.stop(); // cancels that push, then drains the nineteen through the callback
    const auto s = rx.stats();
    CHECK(s.refused == 1);
    CHECK(s.delivered == 0);
    CHECK(s.received == 1);
    CHECK(s.dropped_at_stop == n - 1);
    CHECK(s.lost_in_transport == 0);
    CHECK(s.slow_consumer_dropped == 0);
    CHECK(pub.stats().sent == s.delivered + s.refused + s.dropped_at_stop);
    // Each dropped frame was read as far as its envelope, so each reached the publisher's
    // ledger as acknowledged (it reached a member), none as lost.
    pub.settle(60s);
    const auto p = pub.stats();
    CHECK(p.acknowledged == n);
    CHECK(p.lost_in_transport == 0);
    out.close();
}

TEST_CASE("nats: what nats.c discards when stop() cannot drain is counted dropped_at_stop") {
    // The push ignores stop tokens: the drain cannot end while it waits, so stop() gives up
    // after its 2 s and unsubscribes, and nats.c discards the nineteen messages queued behind
    // the push, unread. on_complete counts them once the push has returned. Static: the channel
    // outlives the callback's thread, which the test cannot join.
    static gated_channel out;
    out.takes_stop_token = false;
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    const std::string subject = "framepipe.t.undrained.frames";
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = subject, .pending_messages = 64});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = subject});
    constexpr std::uint64_t n = 20;
    for (std::uint64_t i = 0; i < n; ++i) {
        REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    }
    REQUIRE(natsConnection_Flush(nc.get()) == NATS_OK); // one connection: all twenty are in
    out.wait_entered();
    rx.stop(); // returns within its bound, the push still waiting
    CHECK(rx.stats().dropped_at_stop == 0); // the subscription has not completed yet
    out.close();                            // the push returns (closed: refused)
    CHECK(eventually([&] { return rx.stats().dropped_at_stop == n - 1; }));
    const auto s = rx.stats();
    CHECK(s.refused == 1);
    CHECK(s.delivered == 0);
    CHECK(s.received == 1);
    CHECK(s.dropped_at_stop == n - 1);
    CHECK(pub.stats().sent == s.delivered + s.refused + s.dropped_at_stop);
}

TEST_CASE("nats: a second stop() returns only once the first has ended the subscription") {
    // The first stop() is held at its seam, before it drains. A second stop() on another thread
    // returned at once (it found nothing left to end), and a caller could free the output
    // channel while the first's drain still handed messages to it.
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.twostops.frames"});
    rx.start(got);
    std::atomic<long> second_thread{0};
    std::atomic<bool> second_returned{false};
    bool returned_while_held = true;
    std::jthread second;
    stop_hold.arm([&] {
        if (!second.joinable()) {
            second = std::jthread([&] {
                second_thread = framepipe_test::this_thread_id();
                rx.stop();
                second_returned = true;
            });
        }
        const long tid = second_thread.load();
        // Released once the second has returned, or is parked (waiting for this one).
        if (tid == 0) {
            return false;
        }
        const bool back = second_returned.load();
        if (back || framepipe_test::in_futex_wait(tid).value_or(false)) {
            returned_while_held = back;
            return true;
        }
        return false;
    });
    rx.stop();
    second.join();
    CHECK_FALSE(returned_while_held);
    CHECK(second_returned.load());
}

TEST_CASE("nats: the client's drops while stop() waits for a drain that cannot end are counted") {
    // The push ignores stop tokens, so the drain cannot end, and stop() falls back after its
    // 2 s. The messages sent once stop() has begun (in its seam) overflow the client's pending
    // limit of 4: nats.c drops them as a slow consumer, and no message callback comes to read
    // that count. stop() read it only as it began, so 96 frames went uncounted. Static: the
    // channel outlives the callback's thread, which the test cannot join.
    static gated_channel out;
    out.takes_stop_token = false;
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    const std::string subject = "framepipe.t.fallback_drops.frames";
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = subject, .pending_messages = 4});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = subject});
    REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    REQUIRE(natsConnection_Flush(nc.get()) == NATS_OK);
    out.wait_entered(); // the first holds the delivery thread
    constexpr std::uint64_t more = 100;
    bool sent_more = false;
    stop_hold.arm([&] { // in stop(), once it has begun: 4 queue up, 96 are dropped
        if (!sent_more) {
            sent_more = true;
            for (std::uint64_t i = 0; i < more; ++i) {
                (void)pub.send(payload(16));
            }
            (void)natsConnection_Flush(nc.get()); // one connection: all are in, or dropped
        }
        return true;
    });
    rx.stop();
    CHECK(rx.stats().slow_consumer_dropped == more - 4);
    out.close(); // the push returns (closed: refused); on_complete counts the 4 discarded
    CHECK(eventually([&] { return rx.stats().dropped_at_stop == 4; }));
    const auto s = rx.stats();
    CHECK(pub.stats().sent == more + 1);
    CHECK(s.refused == 1);
    CHECK(pub.stats().sent ==
          s.delivered + s.refused + s.dropped_at_stop + s.slow_consumer_dropped);
}

TEST_CASE("nats: a connected receiver that gets nothing for stall_timeout says stalled") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.stall.frames", .stall_timeout = 1ms});
    rx.start(got);
    CHECK(eventually([&] { return rx.stats().state == framepipe::live_state::stalled; }));
    CHECK(rx.status().state == "stalled");
    CHECK(nc.stats().state == framepipe::live_state::streaming); // the connection is up
    CHECK_FALSE(rx.failure());
    rx.stop();
}

TEST_CASE("nats: receivers and receipt publishers ended while messages arrive: no crash, bounded") {
    // nats.c 3.4's read loop can lock a subscription the application has just destroyed (nats.c
    // issue #637): a receiver stopped, or a publisher with receipts closed, while its messages
    // arrive crashed the process (here within the first few rounds, 5 runs of 5; ASan:
    // heap-use-after-free). The connection now frees an ended subscription only once nats.c's
    // read loop is past it.
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    // The camera on a connection of its own, sending as fast as it can: the receivers'
    // connection reads a flood, and its own writes (subscribe, flush) do not queue behind it.
    tp::nats_connection camera_nc({.servers = {server.url()}});
    const std::string frames = "framepipe.t.churn.frames";
    const std::string receipts = "framepipe.t.churn.receipts";
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> sent{0};
    std::jthread camera([&] {
        tp::nats_publisher<tp::bytes_codec> pub(camera_nc, {.subject = frames});
        while (!done.load()) {
            if (pub.send(payload(1000)) == tp::send_status::sent) {
                sent.fetch_add(1);
            }
        }
    });
    constexpr int rounds = 300;
    int got_one = 0;
    for (int i = 0; i < rounds; ++i) {
        framepipe::ring<bytes_handle> out(8, framepipe::overflow::drop_oldest);
        tp::nats_receiver<tp::bytes_codec> plain(nc, {.subject = frames, .pending_messages = 4});
        tp::nats_receiver<tp::bytes_codec> member(
            nc, {.subject = frames, .queue_group = "g", .receipt_subject = receipts});
        tp::nats_publisher<tp::bytes_codec> acks(
            nc, {.subject = "framepipe.t.churn.other", .receipt_subject = receipts});
        plain.start(out);
        member.start(out);
        // Messages flow into both when they stop: one has arrived since they started.
        got_one += out.pop_for(10s) ? 1 : 0;
        member.stop();
        plain.stop();
        acks.close();
        // Bounded: each start() frees what ended before it, and every max_retired-th ending
        // flushes to free the rest (at most 1 s, and the server answers at once here).
        REQUIRE(nc.retired_subscriptions() <= tp::nats_connection::max_retired);
    }
    done = true;
    camera.join();
    CHECK(got_one == rounds);
    CHECK(sent.load() > 0);
}

TEST_CASE("nats: publishers with receipts made and closed, never a start(): ended ones are freed") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    std::size_t most = 0;
    for (int i = 0; i < 100; ++i) {
        tp::nats_publisher<tp::bytes_codec> p(
            nc, {.subject = "framepipe.t.free.frames", .receipt_subject = "framepipe.t.free.r"});
        p.close();
        most = std::max(most, nc.retired_subscriptions());
    }
    CHECK(most <= tp::nats_connection::max_retired);
    CHECK(nc.retired_subscriptions() < tp::nats_connection::max_retired);
}

TEST_CASE("nats: a frozen server: send() fails within write_deadline, stop() and close() return") {
    // SIGSTOP: the server neither reads nor answers (a paused VM, a black-holed route). Without a
    // write deadline nats.c writes on a blocking socket under its connection lock: send(), the
    // receiver's stop() and the publisher's close() waited as long as the server stayed frozen.
    nats_server server;
    struct resume_guard {
        nats_server& s;
        ~resume_guard() { s.signal(SIGCONT); } // whatever happens, the server resumes
    } resume{server};
    tp::nats_connection nc({.servers = {server.url()}, .write_deadline = 500ms});
    tp::nats_publisher<tp::bytes_codec> pub(
        nc, {.subject = "framepipe.t.frozen.frames", .receipt_subject = "framepipe.t.frozen.r"});
    framepipe::ring<bytes_handle> got(4, framepipe::overflow::drop_oldest);
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = "framepipe.t.frozen.other"});
    rx.start(got);
    server.signal(SIGSTOP);
    // Frames of 100 KB fill the socket's buffers within a few dozen; the next write times out.
    // The watchdog: 60 s instead of for ever (the server resumes then, and the test fails).
    std::atomic<int> first_not_sent{-1};
    std::atomic<std::uint64_t> sends{0};
    std::atomic<bool> give_up{false};
    auto sender = std::async(std::launch::async, [&] {
        const auto frame = payload(100 * 1024);
        while (!give_up.load()) {
            const auto st = pub.send(frame);
            sends.fetch_add(1);
            if (st != tp::send_status::sent) {
                first_not_sent = static_cast<int>(st);
                return;
            }
        }
    });
    if (sender.wait_for(60s) != std::future_status::ready) {
        give_up = true;
        server.signal(SIGCONT); // the send in progress returns
        sender.wait();
        FAIL("send() into a frozen server did not fail within 60 s (" << sends.load()
                                                                       << " sends)");
    }
    const auto st = static_cast<tp::send_status>(first_not_sent.load());
    INFO("first send not sent: " << tp::to_string(st) << ", after " << sends.load() << " sends");
    CHECK((st == tp::send_status::failed || st == tp::send_status::disconnected));
    // The write that timed out dropped the connection: nats.c is reconnecting.
    CHECK(eventually([&] { return !nc.connected(); }));
    auto ended = std::async(std::launch::async, [&] {
        rx.stop();
        pub.close();
    });
    if (ended.wait_for(60s) != std::future_status::ready) {
        server.signal(SIGCONT);
        ended.wait();
        FAIL("stop() and close() with a frozen server did not return within 60 s");
    }
    CHECK(rx.stats().state == framepipe::live_state::stopped);
    CHECK(pub.send(payload(8)) == tp::send_status::closed);
}

TEST_CASE("nats: link_seq is not trusted: old copies are skipped, far jumps are no loss") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> ring(64);
    tp::loss_counted out(ring);
    const std::string subject = "framepipe.t.seq.frames";
    tp::nats_receiver<tp::bytes_codec> rx(nc, {.subject = subject, .pending_messages = 64});
    rx.start(out);
    // One connection: the messages arrive in the order they were published.
    const auto forge = [&](std::uint64_t sender, std::uint64_t link_seq, std::uint8_t tag) {
        std::vector<std::byte> msg(tp::envelope_size + 1);
        tp::envelope e;
        e.link_seq = link_seq;
        e.seq = tag;
        e.payload_size = 1;
        tp::set_sender(e, sender, "forged");
        tp::write_envelope(e, msg);
        msg[tp::envelope_size] = std::byte{tag};
        REQUIRE(natsConnection_Publish(nc.get(), subject.c_str(), msg.data(),
                                       static_cast<int>(msg.size())) == NATS_OK);
    };
    constexpr auto top = std::numeric_limits<std::uint64_t>::max();
    forge(7, 0, 1);
    forge(7, 1, 2);
    forge(7, 2, 3);
    forge(7, 0, 90);                     // a replay of the first: an old frame, never handed out
    forge(7, 1, 91);                     // and of the second
    forge(7, std::uint64_t{1} << 62, 4); // a forged jump: no 2^62 losses
    forge(7, 3, 5);                      // the real sender goes on: a reset back, handed out
    forge(7, 4, 6);
    forge(8, 0, 7);   // another sender
    forge(8, top, 92); // just behind it, modulo 2^64: out of order, not a wrap to a loss
    forge(8, 1, 8);
    forge(8, 3, 9); // one real loss: link_seq 2
    forge(8, 2, 93); // which arrives late: counted once, as lost; skipped
    forge(8, 2, 94); // and a copy of it: an old copy
    std::vector<int> tags;
    while (tags.size() < 9) {
        auto r = ring.pop_for(10s);
        REQUIRE(r);
        tags.push_back(static_cast<int>((*r)->value[0]));
    }
    CHECK(tags == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9});
    rx.stop(); // the callback has returned: the counts are final
    CHECK_FALSE(ring.try_pop());
    const auto s = rx.stats();
    CHECK(s.received == 13);
    CHECK(s.delivered == 9);
    CHECK(s.out_of_order == 4);
    CHECK(s.late_arrivals == 1);
    CHECK(s.link_resets == 2);
    CHECK(s.lost_in_transport == 1);
    CHECK(out.lost_in_transport() == 1);
    CHECK(s.senders == 2);
    // Every message received is accounted for once, and sender 8's four frames (0 to 3) once
    // each: delivered, or lost (the late one too).
    CHECK(s.received == s.delivered + s.refused + s.out_of_order + s.malformed);
    CHECK(3 + s.lost_in_transport == 4); // tags 7, 8 and 9 delivered, link_seq 2 lost
}

TEST_CASE("nats: a queue group member's reordered frame is an old copy, not a late loss") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> ring(8);
    const std::string subject = "framepipe.t.qseq.frames";
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = subject, .queue_group = "workers", .pending_messages = 64});
    rx.start(ring);
    const auto forge = [&](std::uint64_t link_seq, std::uint8_t tag) {
        std::vector<std::byte> msg(tp::envelope_size + 1);
        tp::envelope e;
        e.link_seq = link_seq;
        e.payload_size = 1;
        tp::set_sender(e, 7, "forged");
        tp::write_envelope(e, msg);
        msg[tp::envelope_size] = std::byte{tag};
        REQUIRE(natsConnection_Publish(nc.get(), subject.c_str(), msg.data(),
                                       static_cast<int>(msg.size())) == NATS_OK);
    };
    forge(0, 1);
    forge(2, 2); // a member's gap: another member's frame, never counted lost here
    forge(1, 3); // behind: skipped as an old copy (the publisher's ledger counts it)
    forge(3, 4);
    std::vector<int> tags;
    while (tags.size() < 3) {
        auto r = ring.pop_for(10s);
        REQUIRE(r);
        tags.push_back(static_cast<int>((*r)->value[0]));
    }
    CHECK(tags == std::vector<int>{1, 2, 4});
    rx.stop();
    const auto s = rx.stats();
    CHECK(s.received == 4);
    CHECK(s.out_of_order == 1);
    CHECK(s.late_arrivals == 0);
    CHECK(s.lost_in_transport == 0);
}

TEST_CASE("nats: slow_consumer_dropped stays counted after the connection closed") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}, .max_reconnect = 0});
    gated_channel out; // the callback waits in the first push: the client's backlog fills
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.drops.frames", .pending_messages = 2});
    rx.start(out);
    tp::nats_publisher<tp::bytes_codec> pub(nc, {.subject = "framepipe.t.drops.frames"});
    REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    out.wait_entered(); // taken from the client's queue, waiting in the push
    for (int i = 0; i < 19; ++i) {
        REQUIRE(pub.send(payload(16)) == tp::send_status::sent);
    }
    // One connection: once the flush returns, all 19 have been read: two pending, the rest
    // dropped by nats.c.
    REQUIRE(natsConnection_Flush(nc.get()) == NATS_OK);
    const auto dropped = rx.stats().slow_consumer_dropped;
    CHECK(dropped == 17);
    server.kill();
    REQUIRE(eventually([&] { return nc.stats().state == framepipe::live_state::failed; }));
    CHECK(rx.stats().slow_consumer_dropped == dropped); // nats.c reads 0 now: the count is kept
    out.close();
    rx.stop();
    CHECK(rx.stats().slow_consumer_dropped == dropped);
}

TEST_CASE("nats: a receiver's state is stopped before start() and from stop() on") {
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    framepipe::ring<bytes_handle> got(16);
    tp::nats_receiver<tp::bytes_codec> rx(
        nc, {.subject = "framepipe.t.states.frames", .stall_timeout = 1h});
    CHECK(rx.stats().state == framepipe::live_state::stopped);
    CHECK(rx.status().state == "stopped");
    rx.start(got);
    CHECK(rx.stats().state == framepipe::live_state::streaming); // just started: not stalled
    rx.stop();
    CHECK(rx.stats().state == framepipe::live_state::stopped);
    CHECK(nc.stats().state == framepipe::live_state::streaming); // the connection is still up
    // Stopped stays stopped, however long nothing comes.
    tp::nats_receiver<tp::bytes_codec> quick(
        nc, {.subject = "framepipe.t.states.frames", .stall_timeout = 1ns});
    quick.start(got);
    REQUIRE(eventually([&] { return quick.stats().state == framepipe::live_state::stalled; }));
    quick.stop();
    CHECK(quick.stats().state == framepipe::live_state::stopped);
}

TEST_CASE("nats: kinds out of range, a bad write_deadline, an unreadable URL: invalid_argument") {
    refused(
        [] { tp::nats_connection nc({.servers = {"nats://127.0.0.1:1"}, .write_deadline = 0s}); },
        "write_deadline");
    // nats.c cannot read the port: at once, without the max_attempts retries and their backoff.
    refused([] { tp::nats_connection nc({.servers = {"nats://127.0.0.1:notaport"},
                                         .max_attempts = 3}); },
            "servers");
    nats_server server;
    tp::nats_connection nc({.servers = {server.url()}});
    using pub_t = tp::nats_publisher<tp::bytes_codec>;
    using rx_t = tp::nats_receiver<tp::bytes_codec>;
    refused([&] { pub_t p(nc, {.subject = "a", .kind = static_cast<tp::message_kind>(7)}); },
            "kind");
    refused([&] { rx_t r(nc, {.subject = "a", .kind = static_cast<tp::message_kind>(0)}); },
            "kind");
    pub_t pub(nc, {.subject = "a"});
    const std::shared_ptr<std::vector<std::byte>> none;
    CHECK_THROWS_AS((void)pub.send(none), std::invalid_argument);
    CHECK(pub.stats().sent == 0);
    CHECK(pub.stats().send_failed == 0);
}
