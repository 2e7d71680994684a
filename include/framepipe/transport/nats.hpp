// framepipe/transport/nats.hpp - frames and results between processes and hosts through a NATS
// server (or cluster). An optional component: target framepipe::nats, built when nats.c (Debian's
// libnats-dev, CMake package cnats) is found. See docs/transport.md.
//
//     framepipe::transport::nats_connection nc({.servers = {"nats://127.0.0.1:4222"}});
//     // camera side: frames out on framepipe.<pipeline>.<camera>.frames
//     nats_publisher<jpeg_mat_codec> frames(nc, {.subject = frame_subject("p", "cam0")});
//     // a worker: frames in, shared with the other workers of the queue group
//     nats_receiver<jpeg_mat_codec> in(nc, {.subject = frame_subject("p", "cam0"),
//                                          .queue_group = "detectors"});
//     latest_slot<received_ptr<cv::Mat>> newest;
//     p.source("frames-in", newest, in);   // a supervised source: state and counters in /metrics
//
// Subjects: framepipe.<pipeline>.<camera>.frames for frames, ....results for results (and the
// receipts of a queue group, see below: a receiver of results counts receipts and skips them).
// Subjects, queue groups and receipt subjects are checked when a publisher or receiver is made:
// dot-separated tokens without spaces or control characters, wildcards only to subscribe.
//
// Memory: a receiver's handles come from a recycler (nothing allocated per message in the steady
// state on framepipe's side); nats.c allocates each message it reads, and a handle gives it back.
//
// Bounded: a receiver's client buffers at most pending_messages / pending_bytes
// (natsSubscription_SetPendingLimits); beyond that nats.c drops the message and counts it
// (slow_consumer_dropped). nats.c drops the newest: while the receiver's callback is held up (an
// output channel whose push waits, a starved process), the oldest messages wait in the client
// and the new ones are dropped. Freshness first therefore needs an output channel whose push
// never waits: a latest_slot, or a ring with overflow::drop_oldest (the callback then returns at
// once and the client's backlog stays empty). A publisher drops a frame while disconnected
// instead of queueing it (disconnected), so that a reconnect does not deliver a burst of stale
// frames; nats.c's own reconnect buffer (reconnect_buffer_bytes) holds what was in flight.
//
// Connection loss: nats.c reconnects (to any server of the list or the cluster) with the backoff
// given here (exponential with jitter, as live_source's) and resubscribes; the connection's state
// reads like a live source's: connecting, streaming (connected), backoff (reconnecting), failed
// (gave up), stopped. epoch counts connections. A lost server is a state, not an error: a
// receiver started meanwhile subscribes when the connection comes back. A connection that gives
// up (max_reconnect) ends its receivers' wait() and makes their failure() say why.
//
// Loss accounting: every message carries the sender's link_seq. A receiver on a plain
// subscription sees the whole stream: its gaps are lost_in_transport (in its stats(), and in its
// output channel's when that is a loss_counted, detail/common.hpp). link_seq is not trusted
// (detail::gap_counter): a copy older than one already received is counted out_of_order and
// skipped (late_arrivals, if its gap had been counted lost: a reordered frame), a link_seq far
// from the expected one restarts the count (link_resets), never a loss.
// Members of a queue group each see part of it, so there the receivers send a receipt for each
// frame (receipt_subject) and the publisher counts a frame without one after loss_horizon as
// lost_in_transport (it died in a member's client over its pending limit, in flight to a member
// that died, or in a server).
//
// Threads: nats_connection, publishers and receivers from any thread; a publisher's send() is
// serialised by a mutex; a receiver's callback runs on nats.c's thread for the subscription.
// What nats.c's callbacks touch (counters, ledger, gap counts) lives in a block they own a share
// of, so a publisher or receiver may go while one of its callbacks still runs.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/transport/detail/common.hpp>
#include <framepipe/transport/detail/envelope.hpp>

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// FRAMEPIPE_DETAIL_NATS_PUBLISHED_HOOK(), FRAMEPIPE_DETAIL_NATS_RECEIPT_HOOK(): test seams, not
// options, of the kind detail/config.hpp describes. The first is called on a publisher's sending
// thread right after the connection took a frame, before the frame enters the receipt ledger
// (inside the ledger's lock when receipts are on); the second on the connection's delivery
// thread when a receipt for one of this publisher's frames arrives, before it looks in the
// ledger. tests/transport/test_transport_nats.cpp holds a send at the first until the receipt
// of its frame has come back, which must then wait for the ledger and not be counted late.
#if !defined(FRAMEPIPE_DETAIL_NATS_PUBLISHED_HOOK)
#define FRAMEPIPE_DETAIL_NATS_PUBLISHED_HOOK() ((void)0)
#endif
#if !defined(FRAMEPIPE_DETAIL_NATS_RECEIPT_HOOK)
#define FRAMEPIPE_DETAIL_NATS_RECEIPT_HOOK() ((void)0)
#endif
// FRAMEPIPE_DETAIL_NATS_STOP_HOOK(): a test seam of the same kind, called in a receiver's stop()
// after it asked a waiting push to stop and before it drains the subscription: the test holds
// stop() there while the delivery thread goes on to the messages queued behind that push, which
// it must drop and count (dropped_at_stop).
#if !defined(FRAMEPIPE_DETAIL_NATS_STOP_HOOK)
#define FRAMEPIPE_DETAIL_NATS_STOP_HOOK() ((void)0)
#endif

namespace framepipe::transport {

// framepipe.<pipeline>.<camera>.frames
[[nodiscard]] inline std::string frame_subject(std::string_view pipeline, std::string_view camera) {
    return "framepipe." + std::string(pipeline) + "." + std::string(camera) + ".frames";
}
// framepipe.<pipeline>.<camera>.results
[[nodiscard]] inline std::string result_subject(std::string_view pipeline,
                                                std::string_view camera) {
    return "framepipe." + std::string(pipeline) + "." + std::string(camera) + ".results";
}

// Thrown when NATS cannot be used: the servers unreachable within max_attempts, a subscription
// the server refused.
class nats_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct nats_options {
    std::vector<std::string> servers{"nats://127.0.0.1:4222"}; // the cluster's, any order
    std::string name{}; // the connection's name, as the server's monitoring shows it
    // Attempts at the first connect (each tries every server) before the constructor throws;
    // 0: keep trying for ever.
    std::uint32_t max_attempts = 3;
    // Per server and attempt. Positive; whole milliseconds, at most INT_MAX of them (24.8 days:
    // nats.c's limit; a longer one is taken as that).
    std::chrono::nanoseconds connect_timeout{std::chrono::seconds(2)};
    // The wait between connect attempts and between reconnect rounds: initial * multiplier^(n-1),
    // capped at max, with jitter (see live_source.hpp's backoff_options; reset_after is unused).
    backoff_options backoff{.initial = std::chrono::milliseconds(100),
                            .max = std::chrono::seconds(2),
                            .multiplier = 2.0,
                            .jitter = 0.5};
    int max_reconnect = -1; // reconnect rounds after a loss before giving up; -1: for ever
    // What nats.c keeps for the server while reconnecting; 0: nats.c's default (8 MB).
    int reconnect_buffer_bytes = 4 << 20;
    // A server that answers nothing is taken for lost (backoff, a reconnect) after about
    // ping_interval * (max_pings_out + 1): its PINGs go unanswered. One that stops reading (frozen,
    // a black-holed route) is taken for lost as soon as a write to it has waited write_deadline.
    std::chrono::nanoseconds ping_interval{std::chrono::seconds(2)};
    int max_pings_out = 2;
    // How long one write to the server's socket may wait for room (natsOptions_SetWriteDeadline;
    // nats.c then writes on a non-blocking socket). Without it a frozen server blocks a send(), a
    // receiver's stop() and a publisher's close() for as long as it stays frozen. A write that
    // times out drops the connection: send() returns failed (that frame) or disconnected (the
    // next ones, with drop_while_disconnected), and nats.c reconnects. Long enough for the
    // largest message at the link's slowest rate. Positive; at most INT_MAX ms, as
    // connect_timeout (ping_interval too).
    std::chrono::nanoseconds write_deadline{std::chrono::seconds(2)};
};

namespace detail {

[[nodiscard]] inline std::string nats_text(natsStatus s) {
    std::string out = natsStatus_GetText(s);
    if (!out.empty()) {
        out[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(out[0])));
    }
    return out;
}

// A connection's figures folded into a publisher's or receiver's.
inline void merge_connection(transport_stats& s, const transport_stats& c) {
    s.state = c.state;
    s.epoch = c.epoch;
    s.connects = c.connects;
    s.reconnects = c.reconnects;
    s.disconnects = c.disconnects;
    if (s.last_error.empty()) {
        s.last_error = c.last_error;
    }
}

inline std::int64_t backoff_ms(const backoff_options& b, int attempt, std::mt19937_64& rng) {
    const double base = std::chrono::duration<double, std::milli>(b.initial).count() *
                        std::pow(b.multiplier, std::max(0, attempt - 1));
    const double capped = std::min(base, std::chrono::duration<double, std::milli>(b.max).count());
    std::uniform_real_distribution<double> u(1.0 - std::clamp(b.jitter, 0.0, 1.0), 1.0);
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(capped * u(rng)));
}

// `s` quoted for an error message, control characters as '?'.
[[nodiscard]] inline std::string quoted_subject(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        out += (u < 0x20 || u == 0x7f) ? '?' : c;
    }
    return out + "\"";
}

// Throws std::invalid_argument naming `field` unless `s` is a NATS subject: dot-separated,
// non-empty tokens without spaces or control characters. Wildcards (a token "*", a last token
// ">") only when `wildcards` (a subscription's subject; never one published to).
inline void check_subject(std::string_view s, const char* field, bool wildcards) {
    const auto bad = [&](const char* why) {
        throw std::invalid_argument(std::string(field) + ": " + why + ": " + quoted_subject(s));
    };
    if (s.empty()) {
        bad("must not be empty");
    }
    std::size_t start = 0;
    for (;;) {
        const auto dot = s.find('.', start);
        const auto token = s.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (token.empty()) {
            bad("a NATS subject is dot-separated non-empty tokens");
        }
        for (const char c : token) {
            const auto u = static_cast<unsigned char>(c);
            if (u <= 0x20 || u == 0x7f) {
                bad("no spaces or control characters in a NATS subject");
            }
            if (c == '*' || c == '>') {
                if (!wildcards) {
                    bad("no wildcards (* >) in a subject to publish to");
                }
                if (token.size() != 1 || (c == '>' && dot != std::string_view::npos)) {
                    bad("a wildcard is a whole token, and > only the last one");
                }
            }
        }
        if (dot == std::string_view::npos) {
            return;
        }
        start = dot + 1;
    }
}

// A queue group's name: empty (no group) or without spaces and control characters.
inline void check_queue_group(std::string_view s, const char* field) {
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f) {
            throw std::invalid_argument(std::string(field) +
                                        ": no spaces or control characters in a queue group: " +
                                        quoted_subject(s));
        }
    }
}

// What a receiver's stop() waits on, and what a connection that gives up ends: its wait().
struct nats_watch {
    std::mutex mu;
    std::condition_variable_any cv;
    bool ended = false; // guarded by mu: stopped, or the connection closed

    void end() {
        const std::lock_guard<std::mutex> lock(mu);
        ended = true;
        cv.notify_all();
    }
    [[nodiscard]] bool wait(std::stop_token stop) {
        std::unique_lock<std::mutex> lock(mu);
        return cv.wait(lock, stop, [this] { return ended; });
    }
};

// The end of a subscription's callbacks (nats.c's on-complete callback), and the wait for it.
struct completion {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false; // guarded by mu

    void complete() {
        // Under the lock: a waiter, woken, may free this object once it can take the lock.
        const std::lock_guard<std::mutex> lock(mu);
        done = true;
        cv.notify_all();
    }
    bool wait_for(std::chrono::nanoseconds timeout) {
        std::unique_lock<std::mutex> lock(mu);
        return cv.wait_for(lock, timeout, [this] { return done; });
    }
};

} // namespace detail

template <codec Codec>
class nats_receiver;

// One connection to a NATS server or cluster, shared by publishers and receivers.
class nats_connection {
public:
    // Connects, trying every server up to max_attempts times with the backoff between. Any
    // thread; blocks. Throws nats_error with one line when that fails, such as "cannot connect to
    // nats://127.0.0.1:4222: no server available for connection (3 attempts)";
    // std::invalid_argument naming the field for a bad option (an empty server list or URL, a URL
    // nats.c cannot read: "servers: ...", at once, without retries; a duration not positive, a
    // backoff as live_source refuses it, max_reconnect below -1, reconnect_buffer_bytes negative,
    // max_pings_out below 1). Strong guarantee: nothing is left behind when it throws.
    explicit nats_connection(nats_options options) {
        validate(options);
        auto owner = std::make_unique<shared>(); // ours until connected; then the callbacks'
        state_ = owner.get();
        state_->options = std::move(options);
        const auto& o = state_->options;
        natsOptions* opts = nullptr;
        check(natsOptions_Create(&opts), "options");
        std::unique_ptr<natsOptions, void (*)(natsOptions*)> guard(opts, natsOptions_Destroy);
        std::vector<const char*> urls;
        for (const auto& s : o.servers) {
            urls.push_back(s.c_str());
        }
        check(natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size())), "servers");
        if (!o.name.empty()) {
            check(natsOptions_SetName(opts, o.name.c_str()), "name");
        }
        check(natsOptions_SetTimeout(opts, ms(o.connect_timeout)), "connect_timeout");
        check(natsOptions_SetMaxReconnect(opts, o.max_reconnect), "max_reconnect");
        check(natsOptions_SetReconnectBufSize(opts, o.reconnect_buffer_bytes),
              "reconnect_buffer_bytes");
        check(natsOptions_SetPingInterval(opts, ms(o.ping_interval)), "ping_interval");
        check(natsOptions_SetMaxPingsOut(opts, o.max_pings_out), "max_pings_out");
        check(natsOptions_SetWriteDeadline(opts, ms(o.write_deadline)), "write_deadline");
        check(natsOptions_SetCustomReconnectDelay(opts, &shared::on_delay, state_), "backoff");
        check(natsOptions_SetDisconnectedCB(opts, &shared::on_disconnected, state_), "callbacks");
        check(natsOptions_SetReconnectedCB(opts, &shared::on_reconnected, state_), "callbacks");
        check(natsOptions_SetClosedCB(opts, &shared::on_closed, state_), "callbacks");
        check(natsOptions_SetErrorHandler(opts, &shared::on_error, state_), "callbacks");

        auto& c = state_->counters;
        c.state.store(live_state::connecting, std::memory_order_relaxed);
        std::string last;
        for (std::uint32_t attempt = 1;; ++attempt) {
            const natsStatus s = natsConnection_Connect(&nc_, opts);
            if (s == NATS_OK) {
                break;
            }
            last = detail::nats_text(s);
            if (s == NATS_INVALID_ARG) { // a URL nats.c cannot read: no attempt will do better
                const char* why = nats_GetLastError(nullptr);
                throw std::invalid_argument("servers: nats.c cannot use " + join(o.servers) +
                                            ": " + (why != nullptr && *why != '\0'
                                                        ? std::string(why) : last));
            }
            c.error(last);
            if (o.max_attempts != 0 && attempt >= o.max_attempts) {
                throw nats_error("cannot connect to " + join(o.servers) + ": " + last + " (" +
                                 std::to_string(attempt) +
                                 (attempt == 1 ? " attempt)" : " attempts)"));
            }
            c.state.store(live_state::backoff, std::memory_order_relaxed);
            std::this_thread::sleep_for(std::chrono::milliseconds(
                detail::backoff_ms(o.backoff, static_cast<int>(attempt), state_->rng)));
            c.state.store(live_state::connecting, std::memory_order_relaxed);
        }
        c.connects.store(1, std::memory_order_relaxed);
        c.epoch.store(1, std::memory_order_relaxed);
        c.state.store(live_state::streaming, std::memory_order_relaxed);
        (void)owner.release(); // freed by the destructor, once the closed callback has run
    }

    nats_connection(const nats_connection&) = delete;
    nats_connection& operator=(const nats_connection&) = delete;

    // Flushes what is buffered (at most 1 s, and only while connected), closes the connection,
    // then frees nats.c's handles of the subscriptions that ended on it (see retire()) and the
    // connection. Receivers and publishers on it must be gone (stopped) first. The thread that
    // destroys it; returns within about 3 s plus write_deadline, whatever the server does.
    ~nats_connection() {
        if (nc_ == nullptr) {
            return;
        }
        if (connected()) {
            (void)natsConnection_FlushTimeout(nc_, 1000);
        }
        state_->closing.store(true);
        natsConnection_Close(nc_); // joins nats.c's read loop: no message is handled after this
        // The closed callback runs on nats.c's thread and reads state_: wait for it (bounded),
        // and if it does not come, leave state_ to it rather than free it under its feet.
        bool done = false;
        {
            std::unique_lock<std::mutex> lock(state_->mu);
            done = state_->cv.wait_for(lock, std::chrono::seconds(2),
                                       [this] { return state_->closed; });
        }
        // The read loop is gone (natsConnection_Close joined it): every ended subscription may
        // go. Left (a few hundred bytes each) if the closed callback never came, as state_ is.
        if (done) {
            reap_before(std::numeric_limits<std::uint64_t>::max());
        }
        natsConnection_Destroy(nc_);
        if (done) {
            delete state_;
        }
    }

    // The connection for nats.c calls of your own. Any thread.
    [[nodiscard]] natsConnection* get() const noexcept { return nc_; }

    // The server's max_payload (1 MB unless the server config says otherwise): the largest
    // message, envelope included. The current server's (the last one's while disconnected): a
    // reconnect to a server with another max_payload changes it. Any thread.
    [[nodiscard]] std::int64_t max_payload() const noexcept {
        return natsConnection_GetMaxPayload(nc_);
    }

    // True while connected to a server. Any thread.
    [[nodiscard]] bool connected() const noexcept {
        return natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
    }

    // The connection's state and counters (connects, reconnects, disconnects); once it gave up
    // (failed), last_error says why. Any thread.
    [[nodiscard]] transport_stats stats() const { return state_->counters.snapshot(); }

    // The URL of the server connected to; empty while disconnected. Any thread.
    [[nodiscard]] std::string url() const {
        char buf[256] = {};
        if (natsConnection_GetConnectedUrl(nc_, buf, sizeof(buf)) == NATS_OK) {
            return buf;
        }
        return {};
    }

    // Subscriptions that ended (a receiver's stop(), a publisher's close()) and whose nats.c
    // handle is not freed yet (see retire()): fewer than max_retired after a retire() whose flush
    // succeeded; more while disconnected or the server is slow to answer. Any thread; never
    // blocks but for a mutex.
    [[nodiscard]] std::size_t retired_subscriptions() const {
        const std::lock_guard<std::mutex> lock(retired_mu_);
        return retired_.size();
    }

    // How many ended subscriptions wait before the one that ends next flushes to free them.
    static constexpr std::size_t max_retired = 16;

private:
    template <codec C>
    friend class nats_receiver;
    template <codec C>
    friend class nats_publisher;

    // A subscription that ended (unsubscribed: out of nats.c's table) is handed here instead of
    // destroyed. nats.c 3.4's read loop takes a subscription from the table, lets go of the
    // table's lock and then locks the subscription (nats.c issue #637, fixed in 3.6 by PR #638):
    // one destroyed in between is used after it was freed, and the process crashes. The read loop
    // handles what the server sends in order, so once a flush started after the unsubscribe has
    // returned (its PONG handled by that same loop) the loop is past any message for it; and
    // natsConnection_Close joins the loop. So ended subscriptions are freed by the next flush
    // that succeeds (start() makes one while connected; when max_retired wait, retire() makes
    // one, at most 1 s) and, at the latest, in the destructor. Until then each keeps nats.c's
    // handle and its finished delivery thread, which nats.c detaches only when the handle is
    // freed: its stack (8 MB of address space, the few pages it used resident). While
    // disconnected no flush succeeds, and subscriptions ended meanwhile wait for the connection
    // to come back.
    // Never throws: a subscription it cannot keep is left to nats.c (not freed).
    void retire(natsSubscription* sub) noexcept {
        std::size_t waiting = 0;
        try {
            const std::lock_guard<std::mutex> lock(retired_mu_);
            retired_.push_back(sub);
            waiting = retired_.size();
        } catch (...) { // no memory to keep it: leaked, never freed under the read loop
            return;
        }
        if (waiting >= max_retired && connected()) {
            const auto mark = retired_mark();
            if (natsConnection_FlushTimeout(nc_, 1000) == NATS_OK) {
                reap_before(mark);
            }
        }
    }
    // The ticket of the next subscription to retire: a flush started after this call proves the
    // read loop past every subscription retired before it.
    [[nodiscard]] std::uint64_t retired_mark() const {
        const std::lock_guard<std::mutex> lock(retired_mu_);
        return retired_first_ + retired_.size();
    }
    // Frees the subscriptions retired before `mark`.
    void reap_before(std::uint64_t mark) noexcept {
        const std::lock_guard<std::mutex> lock(retired_mu_);
        while (!retired_.empty() && retired_first_ < mark) {
            natsSubscription_Destroy(retired_.front()); // closed already: frees it, no I/O
            retired_.pop_front();
            ++retired_first_;
        }
    }

    struct shared {
        nats_options options;
        detail::counters counters;
        std::mt19937_64 rng{std::random_device{}()}; // nats.c's reconnect thread, and the ctor
        std::atomic<bool> closing{false};
        std::mutex mu;
        std::condition_variable cv;
        bool closed = false;                               // guarded by mu
        std::vector<std::weak_ptr<detail::nats_watch>> watches; // guarded by mu: the receivers'

        static std::int64_t on_delay(natsConnection*, int attempts, void* self) {
            auto* s = static_cast<shared*>(self);
            return detail::backoff_ms(s->options.backoff, attempts, s->rng);
        }
        static void on_disconnected(natsConnection*, void* self) {
            auto* s = static_cast<shared*>(self);
            if (!s->closing.load()) {
                s->counters.disconnects.fetch_add(1, std::memory_order_relaxed);
                s->counters.state.store(live_state::backoff, std::memory_order_relaxed);
            }
        }
        static void on_reconnected(natsConnection*, void* self) {
            auto& c = static_cast<shared*>(self)->counters;
            c.connects.fetch_add(1, std::memory_order_relaxed);
            c.reconnects.fetch_add(1, std::memory_order_relaxed);
            c.epoch.fetch_add(1, std::memory_order_relaxed);
            c.state.store(live_state::streaming, std::memory_order_relaxed);
        }
        static void on_closed(natsConnection* nc, void* self) {
            auto* s = static_cast<shared*>(self);
            const bool by_us = s->closing.load();
            if (!by_us) { // nats.c gave up: say why, for the receivers' failure()
                const char* text = nullptr;
                const natsStatus st = natsConnection_GetLastError(nc, &text);
                std::string why = text != nullptr ? text : "";
                if (why.empty() && st != NATS_OK) {
                    why = detail::nats_text(st);
                }
                s->counters.error("gave up reconnecting after " +
                                  std::to_string(s->options.max_reconnect) +
                                  (s->options.max_reconnect == 1 ? " round" : " rounds") +
                                  (why.empty() ? std::string() : ": " + why));
            }
            s->counters.state.store(by_us ? live_state::stopped : live_state::failed,
                                    std::memory_order_relaxed);
            // Notified under the lock: the destructor, woken, frees this object (cv included) as
            // soon as it can take the lock, so the notify must be over by then.
            const std::lock_guard<std::mutex> lock(s->mu);
            s->closed = true;
            for (const auto& w : s->watches) {
                if (const auto watch = w.lock()) {
                    watch->end();
                }
            }
            s->cv.notify_all();
        }
        static void on_error(natsConnection*, natsSubscription*, natsStatus err, void* self) {
            auto* s = static_cast<shared*>(self);
            if (err != NATS_SLOW_CONSUMER) { // counted per subscription (GetDropped)
                s->counters.error(natsStatus_GetText(err));
            }
        }
    };

    // A receiver's wait() ends when the connection closes (at once if it has).
    void watch(const std::shared_ptr<detail::nats_watch>& w) {
        const std::lock_guard<std::mutex> lock(state_->mu);
        if (state_->closed) {
            w->end();
            return;
        }
        std::erase_if(state_->watches, [](const auto& x) { return x.expired(); });
        state_->watches.push_back(w);
    }

    static void validate(const nats_options& o) {
        if (o.servers.empty()) {
            throw std::invalid_argument("servers: at least one nats:// URL");
        }
        for (const auto& s : o.servers) {
            if (s.empty()) {
                throw std::invalid_argument("servers: a URL must not be empty");
            }
        }
        framepipe::detail::require_positive(o.connect_timeout, "connect_timeout");
        framepipe::detail::require_positive(o.ping_interval, "ping_interval");
        framepipe::detail::require_positive(o.write_deadline, "write_deadline");
        framepipe::detail::check_backoff(o.backoff);
        if (o.max_reconnect < -1) {
            throw std::invalid_argument("max_reconnect: must be -1 (for ever) or more");
        }
        if (o.reconnect_buffer_bytes < 0) {
            throw std::invalid_argument("reconnect_buffer_bytes: must not be negative");
        }
        if (o.max_pings_out < 1) {
            throw std::invalid_argument("max_pings_out: must be at least 1");
        }
    }
    static void check(natsStatus s, const char* what) {
        if (s != NATS_OK) {
            throw nats_error(std::string("nats options: ") + what + ": " + detail::nats_text(s));
        }
    }
    // Whole milliseconds, 1 to INT_MAX: nats.c keeps a deadline's time left in an int, so a
    // longer one (from 2^31 ms, 24.9 days) wrapped there and gave up at once. INT_MAX ms is
    // "no limit" for a connection.
    static std::int64_t ms(std::chrono::nanoseconds d) {
        return std::clamp<std::int64_t>(
            std::chrono::duration_cast<std::chrono::milliseconds>(d).count(), 1,
            std::numeric_limits<int>::max());
    }
    static std::string join(const std::vector<std::string>& v) {
        std::string out;
        for (const auto& s : v) {
            out += (out.empty() ? "" : ",") + s;
        }
        return out;
    }

    shared* state_ = nullptr; // the callbacks' closure: outlives nc_ (see the destructor)
    natsConnection* nc_ = nullptr;
    mutable std::mutex retired_mu_;
    std::deque<natsSubscription*> retired_; // guarded by retired_mu_: ended, not freed yet
    std::uint64_t retired_first_ = 0;       // guarded by retired_mu_: retired_.front()'s ticket
};

struct nats_publisher_options {
    std::string subject{};     // e.g. frame_subject("detect", "cam0"); no wildcards
    std::string sender_name{}; // in every envelope; default: the subject
    message_kind kind = message_kind::frame;
    // While disconnected, drop (counted as disconnected) instead of letting nats.c buffer: a
    // frame that arrives late is worth less than none. Off for results you want kept.
    bool drop_while_disconnected = true;
    // Queue groups: the subject the members' receipts come on (empty: no receipts, and
    // lost_in_transport is counted by the receivers from gaps instead).
    std::string receipt_subject{};
    std::chrono::nanoseconds loss_horizon{std::chrono::seconds(2)}; // no receipt by then: lost
};

// Sends items of Codec::value_type (or stamped ones, or pointers to either) on one subject.
template <codec Codec>
class nats_publisher {
public:
    using value_type = typename Codec::value_type;

    // With a receipt_subject, subscribes to it (the receipts come on nats.c's thread). Any
    // thread; does not wait for the server. Throws std::invalid_argument naming the field for a
    // subject or receipt_subject that is not a NATS subject (a subject with wildcards), a kind
    // that is not a message_kind or a loss_horizon not positive; nats_error when the receipts'
    // subscription fails.
    nats_publisher(nats_connection& nc, nats_publisher_options options, Codec c = {})
        : nc_(nc),
          options_(validated(std::move(options))),
          codec_(std::move(c)),
          state_(std::make_shared<state>(options_.loss_horizon, new_sender_id())) {
        if (options_.sender_name.empty()) {
            options_.sender_name = options_.subject;
        }
        if (!options_.receipt_subject.empty()) {
            with_receipts_ = true;
            // The receipts' callbacks own a share of state_, given back in on_complete.
            auto* closure = new std::shared_ptr<state>(state_);
            const natsStatus s =
                natsConnection_Subscribe(&receipts_, nc_.get(), options_.receipt_subject.c_str(),
                                         &nats_publisher::on_receipt, closure);
            if (s != NATS_OK) {
                delete closure; // no subscription: nothing calls back
                throw nats_error("subscribe " + options_.receipt_subject + ": " +
                                 detail::nats_text(s));
            }
            // Fails only for a subscription already closed (the connection closed): the closure
            // is then left to it (a few bytes), as a callback may still hold it.
            completes_ = natsSubscription_SetOnCompleteCB(receipts_, &nats_publisher::on_complete,
                                                          closure) == NATS_OK;
        }
    }

    nats_publisher(const nats_publisher&) = delete;
    nats_publisher& operator=(const nats_publisher&) = delete;
    ~nats_publisher() { close(); }

    // Encodes the item into the message buffer (one copy; nats.c copies it once more into its
    // socket buffer) and publishes it. Any thread (a mutex serialises sends). Never waits for a
    // receiver itself; a write to the server's socket waits at most write_deadline
    // (nats_options), and the server may throttle this connection while a subscriber that does
    // not read holds it back, until it drops that subscriber (docs/transport.md: its own
    // write_deadline, 10 s by default).
    // Returns sent, too_large (envelope + payload over the server's max_payload), disconnected
    // (dropped while reconnecting, with drop_while_disconnected), failed (nats.c refused it, a
    // write that timed out among others: last_error says why) or closed. Throws
    // std::invalid_argument for a null pointer item (nothing counted), and what the codec throws;
    // either way nothing was sent and link_seq did not advance.
    template <class Item>
    [[nodiscard]] send_status send(const Item& item) {
        const auto v = detail::view_item<value_type>(item);
        const std::lock_guard<std::mutex> lock(mu_);
        auto& counters = state_->counters;
        if (closed_) {
            counters.count(send_status::closed);
            return send_status::closed;
        }
        if (options_.drop_while_disconnected && !nc_.connected()) {
            counters.count(send_status::disconnected);
            return send_status::disconnected;
        }
        std::size_t payload = 0;
        bool lent = false;
        auto lend = [&](std::size_t n) -> std::span<std::byte> {
            if (lent) {
                throw std::logic_error("codec: lend() called twice in one encode");
            }
            const auto limit =
                static_cast<std::uint64_t>(std::max<std::int64_t>(0, nc_.max_payload()));
            // Compared without adding: envelope_size + n wraps for an n near SIZE_MAX (a codec
            // whose size underflowed), and would pass.
            if (n > limit || envelope_size > limit - n) {
                constexpr auto most = std::numeric_limits<std::size_t>::max();
                throw send_failure(send_status::too_large,
                                   "message of " +
                                       (n <= most - envelope_size
                                            ? std::to_string(envelope_size + n)
                                            : "more than " + std::to_string(most)) +
                                       " bytes over the server's max_payload of " +
                                       std::to_string(limit));
            }
            lent = true;
            payload = n;
            buffer_.resize(envelope_size + n);
            return {buffer_.data() + envelope_size, n};
        };
        try {
            lender l(lend);
            codec_.encode(*v.value, l);
            if (!lent) {
                (void)lend(0);
            }
        } catch (const send_failure& f) {
            counters.count(f.status());
            counters.error(f.what());
            return f.status();
        }
        envelope e;
        e.kind = options_.kind;
        e.payload_size = static_cast<std::uint32_t>(payload);
        e.seq = v.seq ? *v.seq : own_seq_;
        ++own_seq_;
        e.epoch = v.epoch;
        e.link_seq = link_seq_;
        set_capture_time(e, v.captured.value_or(std::chrono::steady_clock::now()));
        set_sender(e, state_->sender_id, options_.sender_name);
        write_envelope(e, buffer_);
        {
            // With receipts, the frame enters the ledger before on_receipt (which takes this
            // lock too) can see its receipt: one that comes back while Publish is still
            // returning waits for it, instead of finding nothing and counting itself late.
            std::unique_lock<std::mutex> order;
            if (with_receipts_) {
                order = std::unique_lock<std::mutex>(state_->order_mu);
            }
            const natsStatus s =
                natsConnection_Publish(nc_.get(), options_.subject.c_str(), buffer_.data(),
                                       static_cast<int>(buffer_.size()));
            if (s != NATS_OK) {
                const auto st =
                    s == NATS_MAX_PAYLOAD ? send_status::too_large : send_status::failed;
                counters.count(st);
                counters.error("publish " + options_.subject + ": " + detail::nats_text(s));
                return st;
            }
            FRAMEPIPE_DETAIL_NATS_PUBLISHED_HOOK();
            if (with_receipts_) {
                state_->ledger.sent(e.link_seq, std::chrono::steady_clock::now());
            }
        }
        // link_seq only advances for messages handed to the connection, so a receiver's gaps are
        // the transport's losses and nothing else.
        ++link_seq_;
        counters.count(send_status::sent);
        counters.bytes_sent.fetch_add(buffer_.size(), std::memory_order_relaxed);
        if (with_receipts_) {
            expire();
        }
        return send_status::sent;
    }

    // Pops items from `in` and sends each until `in` is closed and drained or `stop` is
    // requested. One thread. Returns how many were sent.
    template <class In>
    requires input_channel<In> std::uint64_t pump(In& in, std::stop_token stop = {}) {
        return detail::pump(*this, in, stop);
    }

    // The end-of-run accounting, within `timeout` in all: flushes what is buffered (while
    // connected), parks for the receipts still outstanding, then counts the rest as lost. Any
    // thread. Any std::chrono::duration; one beyond nanoseconds' range (say seconds::max()) means
    // no limit. Throws std::invalid_argument for a negative or NaN timeout.
    template <class Rep, class Period>
    void settle(std::chrono::duration<Rep, Period> timeout_in) {
        const std::chrono::nanoseconds timeout =
            ::framepipe::detail::to_nanoseconds(timeout_in, "timeout");
        if (timeout < std::chrono::nanoseconds::zero()) {
            throw std::invalid_argument("timeout: must not be negative");
        }
        const auto deadline = ::framepipe::detail::deadline_after(timeout);
        const auto flush_ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
        if (flush_ms.count() > 0 && nc_.connected()) {
            (void)natsConnection_FlushTimeout(nc_.get(), flush_ms.count());
        }
        if (with_receipts_) {
            (void)state_->ledger.wait_settled_until(deadline);
            state_->ledger.expire(std::chrono::steady_clock::time_point::max(),
                                  &state_->counters.lost_in_transport);
        }
    }

    // Later sends return closed; stops taking receipts: unsubscribes and waits (at most 2 s) for
    // a receipt callback in progress; the subscription's handle goes to the connection, which
    // frees it later (nats_connection::retire: then, every max_retired-th time, a flush of at
    // most 1 s). Waits for a send() in progress, itself bounded by write_deadline. Any thread but
    // nats.c's; idempotent; never throws.
    void close() noexcept {
        natsSubscription* r = nullptr;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            closed_ = true;
            r = std::exchange(receipts_, nullptr);
        }
        if (r != nullptr) {
            // Fails when the connection closed, which closed the subscription already.
            (void)natsSubscription_Unsubscribe(r);
            if (completes_) {
                (void)state_->done.wait_for(std::chrono::seconds(2));
            }
            nc_.retire(r); // never destroyed here: nats.c 3.4's read loop may still reach it
        }
    }

    // Figures: the connection's state and counters, this publisher's sends and, with receipts,
    // its end-to-end losses (frames past loss_horizon are counted lost first). Any thread; never
    // blocks but for mutexes. Exceptions: std::bad_alloc (last_error's copy).
    [[nodiscard]] transport_stats stats() {
        if (with_receipts_) {
            expire();
        }
        auto s = state_->counters.snapshot();
        detail::merge_connection(s, nc_.stats());
        s.pending_receipts = state_->ledger.waiting();
        return s;
    }
    // The random id every envelope of this publisher carries (receipts are addressed to it).
    // Any thread.
    [[nodiscard]] std::uint64_t sender_id() const noexcept { return state_->sender_id; }
    // The options as checked (sender_name filled in). Any thread.
    [[nodiscard]] const nats_publisher_options& options() const noexcept { return options_; }

private:
    // What the receipts' callback touches: shared by the publisher and the subscription.
    struct state {
        state(std::chrono::nanoseconds horizon, std::uint64_t id)
            : ledger(horizon), sender_id(id) {}
        detail::counters counters;
        detail::delivery_ledger ledger;
        const std::uint64_t sender_id;
        std::mutex order_mu; // a frame's Publish and its entry in the ledger, against receipts
        detail::completion done;
    };

    static nats_publisher_options validated(nats_publisher_options o) {
        detail::check_subject(o.subject, "subject", false);
        detail::check_kind(o.kind, "kind");
        if (!o.receipt_subject.empty()) {
            detail::check_subject(o.receipt_subject, "receipt_subject", true);
        }
        framepipe::detail::require_positive(o.loss_horizon, "loss_horizon");
        return o;
    }

    void expire() {
        state_->ledger.expire(std::chrono::steady_clock::now(),
                              &state_->counters.lost_in_transport);
    }

    static void on_receipt(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
        auto& p = **static_cast<std::shared_ptr<state>*>(closure);
        const std::span<const std::byte> bytes(
            reinterpret_cast<const std::byte*>(natsMsg_GetData(msg)),
            static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
        const auto d = read_envelope(bytes);
        if (!d.header) {
            p.counters.malformed.fetch_add(1, std::memory_order_relaxed);
        } else if (d.header->kind == message_kind::receipt &&
                   d.header->sender_id == p.sender_id) { // a receipt for one of ours
            FRAMEPIPE_DETAIL_NATS_RECEIPT_HOOK();
            using result = detail::delivery_ledger::receipt_result;
            result r = result::late;
            {
                const std::lock_guard<std::mutex> lock(p.order_mu);
                r = p.ledger.receipt(d.header->link_seq, &p.counters.acknowledged);
            }
            if (r == result::late) {
                p.counters.late_receipts.fetch_add(1, std::memory_order_relaxed);
            } else if (r == result::duplicate) {
                p.counters.duplicate_receipts.fetch_add(1, std::memory_order_relaxed);
            }
        }
        natsMsg_Destroy(msg);
    }
    static void on_complete(void* closure) {
        auto* owner = static_cast<std::shared_ptr<state>*>(closure);
        (*owner)->done.complete();
        delete owner; // the last callback of the subscription has returned
    }

    nats_connection& nc_;
    nats_publisher_options options_;
    Codec codec_;
    std::shared_ptr<state> state_;
    std::mutex mu_;
    std::vector<std::byte> buffer_; // guarded by mu_: the message being built
    std::uint64_t link_seq_ = 0;    // guarded by mu_
    std::uint64_t own_seq_ = 0;     // guarded by mu_
    bool closed_ = false;           // guarded by mu_
    bool with_receipts_ = false;    // set once in the constructor
    bool completes_ = false;        // set once in the constructor: on_complete will come
    natsSubscription* receipts_ = nullptr; // guarded by mu_ after the constructor
};

struct nats_receiver_options {
    std::string subject{};     // wildcards allowed (a token "*", a last token ">")
    std::string queue_group{}; // non-empty: share the subject's messages with the group's members
    // The client's backlog for this subscription, beyond which it drops (slow_consumer_dropped):
    // room for a burst (several messages in one read from the socket, results a publisher kept
    // while disconnected) while the callback hands each on; pending_bytes bounds it for big
    // frames (64 MB: ten raw 1080p frames).
    int pending_messages = 128;
    int pending_bytes = 64 << 20;
    // Send a receipt for each frame here (queue groups: the publisher's loss accounting).
    std::string receipt_subject{};
    std::string name{}; // this receiver's name in its receipts
    // What it hands out; messages of another kind are counted (received) and skipped.
    message_kind kind = message_kind::frame;
    // No message for this long while connected: stalled (back to streaming on the next one).
    std::chrono::nanoseconds stall_timeout{std::chrono::seconds(2)};
};

// Receives a subject's messages as handles that own the NATS message (no copy beyond nats.c's
// read), and pushes each into an output channel (a latest_slot by default). A supervised source:
// pipeline::source(name, out, receiver) shows its state and counters.
template <codec Codec>
class nats_receiver {
public:
    using view_type = typename Codec::view_type;
    using item_type = received_ptr<view_type>;

    // Any thread; does not subscribe yet (start() does). Throws std::invalid_argument naming the
    // field for a subject, queue_group or receipt_subject that is not one (a receipt_subject with
    // wildcards), a kind that is not a message_kind, pending limits or a stall_timeout not
    // positive.
    nats_receiver(nats_connection& nc, nats_receiver_options options, Codec c = {})
        : nc_(nc),
          state_(std::make_shared<state>(validated(std::move(options)), std::move(c), nc.get())),
          watch_(std::make_shared<detail::nats_watch>()) {
        nc_.watch(watch_);
    }

    nats_receiver(const nats_receiver&) = delete;
    nats_receiver& operator=(const nats_receiver&) = delete;
    ~nats_receiver() { stop(); }

    // Subscribes; each message goes into `out` from nats.c's thread, through out.push(item,
    // stop_token) where `out` has it (stop() then ends a push that waits) and out.push(item)
    // otherwise. `out` must outlive the receiver's callbacks: stop() ends them (see there). Once;
    // nothing after stop(). Blocks for the server's answer (at most 2 s) while connected; while
    // disconnected, returns at once and nats.c subscribes when the connection comes back.
    // Throws std::logic_error when started twice, nats_error when the subscription fails (the
    // connection closed, the server refused it): the receiver is then as before (start() may be
    // called again).
    template <class Out>
    requires output_channel<Out, item_type>
    void start(Out& out) {
        const std::lock_guard<std::mutex> ending(end_mu_); // a stop() meanwhile waits for this
        {
            const std::lock_guard<std::mutex> lock(mu_);
            if (started_) {
                throw std::logic_error("nats_receiver: started twice");
            }
            if (stop_called_) {
                return;
            }
            started_ = true;
        }
        auto& s = *state_;
        s.output = &out;
        s.handler = &state::template handle<Out>;
        s.last_ns.store(now_ns(), std::memory_order_relaxed);
        // The subscription's callbacks own a share of the state, given back in on_complete.
        auto done = std::make_shared<detail::completion>();
        auto* closure = new closure_type{state_, done};
        const auto& o = s.options;
        natsSubscription* sub = nullptr;
        natsStatus st = o.queue_group.empty()
                            ? natsConnection_Subscribe(&sub, nc_.get(), o.subject.c_str(),
                                                       &nats_receiver::on_message, closure)
                            : natsConnection_QueueSubscribe(&sub, nc_.get(), o.subject.c_str(),
                                                            o.queue_group.c_str(),
                                                            &nats_receiver::on_message, closure);
        if (st == NATS_OK) {
            st = natsSubscription_SetOnCompleteCB(sub, &nats_receiver::on_complete, closure);
            if (st != NATS_OK) {
                done = nullptr; // no on_complete: the closure is left to nats.c (a few bytes)
            }
        }
        if (st == NATS_OK) {
            st = natsSubscription_SetPendingLimits(sub, o.pending_messages, o.pending_bytes);
        }
        if (st == NATS_OK && nc_.connected()) {
            // The subscription is on the server once this returns: frames sent from now on come.
            // A connection lost meanwhile is no error: nats.c resubscribes on the reconnect.
            // The flush also proves nats.c's read loop past the subscriptions that ended before
            // it: the connection frees them (nats_connection::retire).
            const auto mark = nc_.retired_mark();
            st = natsConnection_FlushTimeout(nc_.get(), 2000);
            if (st == NATS_OK) {
                nc_.reap_before(mark);
            } else if (!nc_.connected() && !closed(nc_.get())) {
                st = NATS_OK;
            }
        }
        if (st != NATS_OK) {
            const auto why = "subscribe " + o.subject + ": " + detail::nats_text(st);
            if (sub == nullptr) {
                delete closure; // no subscription: nothing calls back
            } else {
                end(sub, done);
            }
            {
                const std::lock_guard<std::mutex> lock(mu_);
                started_ = false;
            }
            s.counters.error(why);
            throw nats_error(why);
        }
        // No stop() meanwhile: it waits for end_mu_, and ends this subscription once it has it.
        const std::lock_guard<std::mutex> lock(mu_);
        sub_ = sub;
        done_ = done;
    }

    // Ends the run: a push waiting in the output channel is asked to stop (its stop_token) and
    // counts its message refused; the messages after it, those still queued in the client
    // included, are discarded and counted (dropped_at_stop: end_at_stop() says how, and which
    // few may not be). stop() waits at most 2 s in all for the last callback to return; one that
    // does not (a push that ignores stop tokens) keeps running on nats.c's thread, on state it
    // owns a share of: `out` must then outlive it. The subscription's handle goes to the
    // connection, which frees it later (nats_connection::retire: then, every max_retired-th
    // time, a flush of at most 1 s); the drain's and the unsubscribe's writes each wait at most
    // write_deadline. Handles already given out stay valid. The state is stopped from now on.
    // Any thread but nats.c's; idempotent, and a second call returns only once the first is
    // done (a start() under way is waited for too); ends wait(); never throws.
    void stop() noexcept {
        // A start() under way, or another stop(), is waited for: when any stop() returns, the
        // subscription has been ended and counted (within the bounds above).
        const std::lock_guard<std::mutex> ending(end_mu_);
        natsSubscription* sub = nullptr;
        std::shared_ptr<detail::completion> done;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            stop_called_ = true;
            sub = std::exchange(sub_, nullptr);
            done = std::exchange(done_, nullptr);
            if (sub != nullptr) {
                state_->note_dropped(sub);
            }
        }
        state_->stop.request_stop();
        FRAMEPIPE_DETAIL_NATS_STOP_HOOK();
        if (sub != nullptr) {
            end_at_stop(sub, done);
        }
        watch_->end();
    }

    // Waits until stop(), the connection gave up (failed: failure() says why), or `stop` is
    // requested; true unless `stop` ended it. A lost connection that nats.c is restoring does not
    // end it (the backoff state meanwhile). Any thread; parks.
    [[nodiscard]] bool wait(std::stop_token stop) { return watch_->wait(std::move(stop)); }

    // Figures: this receiver's counters and the connection's. The state: stopped before start()
    // and from stop() on; in between the connection's (connecting, backoff, failed), streaming
    // while connected and a message came within stall_timeout (or start() was that recent),
    // stalled when connected and none did. slow_consumer_dropped is the highest count nats.c
    // gave (it reads 0 for a subscription the connection closed: the count is kept). Any thread;
    // never blocks but for a mutex. Exceptions: std::bad_alloc (last_error's copy).
    [[nodiscard]] transport_stats stats() const {
        auto s = state_->counters.snapshot();
        detail::merge_connection(s, nc_.stats());
        bool running = false;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            running = started_ && !stop_called_;
            if (sub_ != nullptr) {
                state_->note_dropped(sub_);
            }
        }
        s.slow_consumer_dropped = state_->dropped.load(std::memory_order_relaxed);
        if (!running) {
            s.state = live_state::stopped;
        } else if (s.state == live_state::streaming &&
                   now_ns() - state_->last_ns.load(std::memory_order_relaxed) >
                       std::chrono::duration_cast<std::chrono::nanoseconds>(
                           state_->options.stall_timeout)
                           .count()) {
            s.state = live_state::stalled;
        }
        return s;
    }
    // The state and counters as a pipeline shows a supervised source's. Any thread; as stats().
    [[nodiscard]] source_status status() const { return detail::to_source_status(stats()); }
    // Why the receiver cannot go on: the connection gave up ("NATS connection closed: gave up
    // reconnecting after 1 round: ..."); nullopt otherwise. Any thread.
    [[nodiscard]] std::optional<std::string> failure() const {
        const auto s = nc_.stats();
        if (s.state == live_state::failed) {
            return "NATS connection closed: " +
                   (s.last_error.empty() ? std::string("gave up reconnecting") : s.last_error);
        }
        return std::nullopt;
    }
    // The options as checked. Any thread.
    [[nodiscard]] const nats_receiver_options& options() const noexcept {
        return state_->options;
    }

private:
    // Everything the subscription's callbacks touch: shared by the receiver and the
    // subscription (its share given back in on_complete), so that neither frees it under the
    // other.
    struct state {
        state(nats_receiver_options o, Codec c, natsConnection* connection)
            : options(std::move(o)), codec(std::move(c)), nc(connection) {}

        const nats_receiver_options options;
        const Codec codec;
        natsConnection* const nc; // for the receipts
        detail::counters counters;
        detail::gap_counter gaps; // nats.c's thread only (one per subscription)
        // The handles' blocks, recycled (handles that outlive the receiver keep it alive).
        framepipe::detail::recycler_handle recycler;
        std::atomic<std::int64_t> last_ns{0};
        // The highest slow-consumer drop count nats.c gave: natsSubscription_GetDropped fails
        // once the connection has closed the subscription, so the count is kept here.
        std::atomic<std::uint64_t> dropped{0};
        std::stop_source stop; // stop(): ends a waiting push, drops later messages
        // Messages nats.c handed to on_message: written and read on nats.c's thread only.
        std::atomic<std::int64_t> taken{0};
        // What nats.c held for the subscription (delivered + pending) just before stop()
        // unsubscribed it without a drain; -1: it did not. on_complete counts the difference.
        std::atomic<std::int64_t> held_at_unsubscribe{-1};
        // Set by start() before the subscription exists, then read by its callbacks only.
        void* output = nullptr;
        void (*handler)(state&, void*, natsMsg*) = nullptr;

        // The messages nats.c discarded unread when stop() unsubscribed: those it held then,
        // less those on_message has had since the subscription began. nats.c's thread, in
        // on_complete: after the last message callback, so none is counted twice.
        void count_discarded() noexcept {
            // Acquire: pairs with end_at_stop()'s release (also ordered by nats.c's lock on the
            // subscription, which the unsubscribe and the delivery thread's exit both take).
            const auto held = held_at_unsubscribe.load(std::memory_order_acquire);
            const auto had = taken.load(std::memory_order_relaxed); // this thread's own count
            if (held > had) {
                counters.dropped_at_stop.fetch_add(static_cast<std::uint64_t>(held - had),
                                                   std::memory_order_relaxed);
            }
        }

        // Reads the subscription's drop count into `dropped` (a high-water mark). Any thread.
        void note_dropped(natsSubscription* sub) noexcept {
            int64_t n = 0;
            if (natsSubscription_GetDropped(sub, &n) != NATS_OK) {
                return; // closed: the count read before stands
            }
            note_dropped(n);
        }
        // Keeps `n`, a drop count nats.c gave, if it is the highest yet. Any thread.
        void note_dropped(std::int64_t n) noexcept {
            if (n <= 0) {
                return;
            }
            auto seen = dropped.load(std::memory_order_relaxed);
            // Relaxed: a statistic; the CAS only keeps the maximum.
            while (static_cast<std::uint64_t>(n) > seen &&
                   !dropped.compare_exchange_weak(seen, static_cast<std::uint64_t>(n),
                                                  std::memory_order_relaxed)) {
            }
        }

        template <class Out>
        static void handle(state& s, void* output_channel, natsMsg* msg) noexcept {
            s.take(*static_cast<Out*>(output_channel), msg);
        }

        struct msg_deleter {
            void operator()(natsMsg* m) const noexcept { natsMsg_Destroy(m); }
        };

        // One message: counted, checked, decoded and handed to `out` (once stop() has begun,
        // counted dropped_at_stop instead of decoded). Nothing escapes to nats.c: a codec that
        // throws counts the message malformed, an output that throws (or an allocation that
        // fails) counts it refused; last_error says which, and the next message is taken as
        // usual.
        template <class Out>
        void take(Out& out, natsMsg* raw) noexcept {
            std::unique_ptr<natsMsg, msg_deleter> msg(raw);
            auto& c = counters;
            last_ns.store(now_ns(), std::memory_order_relaxed);
            try {
                const std::span<const std::byte> bytes(
                    reinterpret_cast<const std::byte*>(natsMsg_GetData(raw)),
                    static_cast<std::size_t>(natsMsg_GetDataLength(raw)));
                const auto d = read_envelope(bytes);
                if (!d.header) {
                    c.malformed.fetch_add(1, std::memory_order_relaxed);
                    c.error(std::string("malformed message on ") + options.subject + ": " +
                            std::string(to_string(d.error)));
                    return;
                }
                const envelope& e = *d.header;
                const auto count_received = [&] {
                    c.received.fetch_add(1, std::memory_order_relaxed);
                    c.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
                };
                if (e.kind == message_kind::receipt && options.kind != message_kind::receipt) {
                    // Receipts share a subject with results (....results): counted, skipped, and
                    // kept out of the gaps (their link_seq is the acknowledged frame's).
                    count_received();
                    return;
                }
                auto g = gaps.see(e.sender_id, e.link_seq, e.epoch);
                if (g.late && !options.queue_group.empty()) {
                    // A member's gaps are the other members' frames, never counted lost: a
                    // reordered one is an old copy.
                    g.late = false;
                    g.out_of_order = true;
                }
                if (g.late) { // counted lost already, when a later message left its gap
                    c.late_arrivals.fetch_add(1, std::memory_order_relaxed);
                    return;
                }
                // Once stop() has begun, a message that would be handed out is discarded
                // (dropped_at_stop, not received): read as far as its envelope, so that its gap
                // counts and a queue group's publisher gets its receipt (it reached a member).
                const bool at_stop =
                    !g.out_of_order && e.kind == options.kind && stop.stop_requested();
                if (!at_stop) {
                    count_received();
                }
                if (g.new_sender) {
                    c.senders.fetch_add(1, std::memory_order_relaxed);
                }
                if (g.reset) {
                    c.link_resets.fetch_add(1, std::memory_order_relaxed);
                }
                if (options.queue_group.empty()) { // the whole stream: a gap is a loss
                    c.lost_in_transport.fetch_add(g.lost, std::memory_order_relaxed);
                    detail::note_lost(out, g.lost);
                }
                if (g.out_of_order) {
                    // Older than one handed out already (a member's share is in order too):
                    // skipped, and no receipt (the first copy had one, or the frame counts lost).
                    c.out_of_order.fetch_add(1, std::memory_order_relaxed);
                    return;
                }
                if (!options.receipt_subject.empty() && e.kind == message_kind::frame) {
                    send_receipt(e);
                }
                if (e.kind != options.kind) {
                    return;
                }
                if (at_stop) {
                    c.dropped_at_stop.fetch_add(1, std::memory_order_relaxed);
                    return;
                }
                std::optional<view_type> view;
                std::string why = "malformed payload from " + std::string(e.sender_name());
                try {
                    view = codec.decode(d.payload);
                } catch (const std::exception& x) {
                    why += ": the codec threw: " + std::string(x.what());
                } catch (...) {
                    why += ": the codec threw";
                }
                if (!view) {
                    c.malformed.fetch_add(1, std::memory_order_relaxed);
                    c.error(std::move(why));
                    return;
                }
                c.delivered.fetch_add(1, std::memory_order_relaxed); // see detail::deliver
                try {
                    natsMsg* m = msg.release();
                    auto h = detail::make_received(recycler.get(), std::move(*view), e, g.epoch,
                                                   [m]() noexcept { natsMsg_Destroy(m); });
                    if (!push(out, std::move(h))) {
                        c.refused.fetch_add(1, std::memory_order_relaxed);
                        c.delivered.fetch_sub(1, std::memory_order_relaxed);
                    }
                } catch (const std::exception& x) {
                    c.delivered.fetch_sub(1, std::memory_order_relaxed);
                    c.refused.fetch_add(1, std::memory_order_relaxed);
                    c.error(std::string("output channel threw: ") + x.what());
                } catch (...) {
                    c.delivered.fetch_sub(1, std::memory_order_relaxed);
                    c.refused.fetch_add(1, std::memory_order_relaxed);
                    c.error("output channel threw");
                }
            } catch (...) { // std::bad_alloc in the bookkeeping: the message is dropped
                c.refused.fetch_add(1, std::memory_order_relaxed);
            }
        }

        // Pushes with the receiver's stop token where the channel takes one; true if it went in.
        template <class Out>
        bool push(Out& out, item_type&& h) {
            const std::stop_token token = stop.get_token();
            return detail::push_item(out, std::move(h), &token);
        }

        void send_receipt(const envelope& frame) {
            envelope r = frame;
            r.kind = message_kind::receipt;
            r.payload_size = 0;
            // sender_id stays the frame sender's: the receipt is addressed to it. The name is
            // ours.
            set_sender(r, frame.sender_id, options.name.empty() ? options.subject : options.name);
            std::byte buf[envelope_size];
            write_envelope(r, buf);
            (void)natsConnection_Publish(nc, options.receipt_subject.c_str(), buf,
                                         static_cast<int>(envelope_size));
        }
    };

    static nats_receiver_options validated(nats_receiver_options o) {
        detail::check_subject(o.subject, "subject", true);
        detail::check_kind(o.kind, "kind");
        detail::check_queue_group(o.queue_group, "queue_group");
        if (!o.receipt_subject.empty()) {
            detail::check_subject(o.receipt_subject, "receipt_subject", false);
        }
        if (o.pending_messages <= 0) {
            throw std::invalid_argument("pending_messages: must be positive");
        }
        if (o.pending_bytes <= 0) {
            throw std::invalid_argument("pending_bytes: must be positive");
        }
        framepipe::detail::require_positive(o.stall_timeout, "stall_timeout");
        return o;
    }

    static std::int64_t now_ns() noexcept {
        return std::chrono::steady_clock::now().time_since_epoch().count();
    }
    static bool closed(natsConnection* nc) {
        return natsConnection_Status(nc) == NATS_CONN_STATUS_CLOSED;
    }

    // Unsubscribes (a closed connection has closed the subscription already), waits (bounded)
    // for the last callback when on_complete will come (`done` not null), and hands nats.c's
    // handle to the connection, never destroying it here (nats_connection::retire says why).
    void end(natsSubscription* sub, const std::shared_ptr<detail::completion>& done) noexcept {
        (void)natsSubscription_Unsubscribe(sub);
        if (done != nullptr) {
            (void)done->wait_for(std::chrono::seconds(2));
        }
        nc_.retire(sub);
    }

    // stop()'s end of the subscription. Connected, it drains it (natsSubscription_DrainTimeout):
    // nats.c goes on handing on_message what it holds, and what the server sends until it has
    // the unsubscribe, and take() counts each dropped_at_stop (the stop is requested), reading
    // its envelope (gaps, receipts); on_complete follows the last. When the drain cannot start,
    // is not tried (disconnected: its flush would wait for the server) or does not end within
    // the 2 s (a callback held in a push that ignores stop tokens, a server slow to answer), it
    // unsubscribes instead, after one read of what nats.c holds (delivered + pending, under its
    // lock), which also reads the client's slow-consumer drops so far (no callback may come to
    // read them later); on_complete counts what nats.c then discarded unread (count_discarded).
    // Uncounted: messages that reach the subscription, or that the client drops, between that
    // read and the unsubscribe (none while disconnected, nor after a drain's flush: the server
    // sends nothing more), and what a connection that closed (or a subscription without
    // on_complete) discarded.
    void end_at_stop(natsSubscription* sub,
                     const std::shared_ptr<detail::completion>& done) noexcept {
        if (done == nullptr) {
            end(sub, done);
            return;
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        const auto left = [&] {
            return std::max(std::chrono::steady_clock::duration::zero(),
                            deadline - std::chrono::steady_clock::now());
        };
        // nats.c's own drain timeout is longer than the wait: nats.c never closes the
        // subscription (discarding what it holds, uncounted) before the fallback has read it.
        if (nc_.connected() && natsSubscription_DrainTimeout(sub, 4000) == NATS_OK &&
            done->wait_for(left())) {
            nc_.retire(sub);
            return;
        }
        int pending = 0;
        std::int64_t delivered = 0;
        std::int64_t dropped = 0;
        if (natsSubscription_GetStats(sub, &pending, nullptr, nullptr, nullptr, &delivered,
                                      &dropped) == NATS_OK) {
            // The client's slow-consumer drops up to now: no message callback may come to read
            // them again, and the count cannot be read once the subscription is closed.
            state_->note_dropped(dropped);
            // Release: on_complete reads it (see count_discarded).
            state_->held_at_unsubscribe.store(delivered + pending, std::memory_order_release);
        }
        (void)natsSubscription_Unsubscribe(sub); // fails if closed: on_complete came, or comes
        (void)done->wait_for(left());
        nc_.retire(sub);
    }

    // A subscription's share: given to nats.c with it, deleted by its on_complete.
    struct closure_type {
        std::shared_ptr<state> s;
        std::shared_ptr<detail::completion> done; // this subscription's end
    };

    static void on_message(natsConnection*, natsSubscription* sub, natsMsg* msg, void* closure) {
        state& s = *static_cast<closure_type*>(closure)->s;
        // Relaxed: read on this same thread only (on_complete).
        s.taken.fetch_add(1, std::memory_order_relaxed);
        s.note_dropped(sub); // while the subscription is open: its drops outlive a closed one
        s.handler(s, s.output, msg); // after stop() began, take() counts it dropped_at_stop
    }
    static void on_complete(void* closure) {
        auto* owner = static_cast<closure_type*>(closure);
        owner->s->count_discarded(); // before complete(): stop() returns with it counted
        owner->done->complete();
        delete owner; // the last callback of the subscription has returned
    }

    nats_connection& nc_;
    std::shared_ptr<state> state_;
    std::shared_ptr<detail::nats_watch> watch_;
    mutable std::mutex mu_;
    natsSubscription* sub_ = nullptr;   // guarded by mu_
    std::shared_ptr<detail::completion> done_; // guarded by mu_: sub_'s on_complete, if it comes
    bool started_ = false;              // guarded by mu_
    bool stop_called_ = false;          // guarded by mu_
    // Held by stop() throughout, and by start(): a stop() returns only once the subscription it
    // (or a concurrent stop()) ends is over, and never beside a start() still subscribing.
    std::mutex end_mu_;
};

} // namespace framepipe::transport
