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
// receipts of a queue group, see below: a receiver of results skips receipts).
//
// Memory: a receiver's handles come from a recycler (nothing allocated per message in the steady
// state on framepipe's side); nats.c allocates each message it reads, and a handle gives it back.
//
// Bounded: a receiver's client buffers at most pending_messages / pending_bytes
// (natsSubscription_SetPendingLimits); beyond that nats.c drops the message and counts it
// (slow_consumer_dropped). A publisher drops a frame while disconnected instead of queueing it
// (disconnected), so that a reconnect does not deliver a burst of stale frames; nats.c's own
// reconnect buffer (reconnect_buffer_bytes) holds what was in flight.
//
// Connection loss: nats.c reconnects (to any server of the list or the cluster) with the backoff
// given here (exponential with jitter, as live_source's) and resubscribes; the connection's state
// reads like a live source's: connecting, streaming (connected), backoff (reconnecting), failed
// (gave up), stopped. epoch counts connections.
//
// Loss accounting: every message carries the sender's link_seq. A receiver on a plain
// subscription sees the whole stream: its gaps are lost_in_transport (in its stats(), and in its
// output channel's when that is a loss_counted, detail/common.hpp). Members of a queue group
// each see part of it, so there the receivers send a receipt for each frame (receipt_subject) and
// the publisher counts a frame without one after loss_horizon as lost_in_transport (it died in a
// member's client over its pending limit, in flight to a member that died, or in a server).
//
// Threads: nats_connection, publishers and receivers from any thread; a publisher's send() is
// serialised by a mutex; a receiver's callback runs on nats.c's thread for the subscription.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/snapshot.hpp>
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
#include <functional>
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
#include <utility>
#include <vector>

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

// Thrown when NATS cannot be used: the servers unreachable within max_attempts, a bad option.
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
    std::chrono::nanoseconds connect_timeout{std::chrono::seconds(2)}; // per server and attempt
    // The wait between connect attempts and between reconnect rounds: initial * multiplier^(n-1),
    // capped at max, with jitter (see live_source.hpp's backoff_options).
    backoff_options backoff{.initial = std::chrono::milliseconds(100),
                            .max = std::chrono::seconds(2),
                            .multiplier = 2.0,
                            .jitter = 0.5};
    int max_reconnect = -1; // reconnect rounds after a loss before giving up; -1: for ever
    int reconnect_buffer_bytes = 4 << 20; // what nats.c keeps for the server while reconnecting
    std::chrono::nanoseconds ping_interval{std::chrono::seconds(2)}; // a silent server is noticed
    int max_pings_out = 2; // after about ping_interval * (max_pings_out + 1)
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

} // namespace detail

// One connection to a NATS server or cluster, shared by publishers and receivers.
class nats_connection {
public:
    // Connects, trying every server up to max_attempts times with the backoff between. Blocks.
    // Throws nats_error with one line ("cannot connect to nats://...: No server available (3
    // attempts)") when that fails, std::invalid_argument for an empty server list.
    explicit nats_connection(nats_options options) {
        auto owner = std::make_unique<shared>(); // ours until connected; then the callbacks'
        state_ = owner.get();
        state_->options = std::move(options);
        const auto& o = state_->options;
        if (o.servers.empty()) {
            throw std::invalid_argument("servers: at least one nats:// URL");
        }
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
        check(natsOptions_SetReconnectBufSize(opts, o.reconnect_buffer_bytes), "reconnect_buffer");
        check(natsOptions_SetPingInterval(opts, ms(o.ping_interval)), "ping_interval");
        check(natsOptions_SetMaxPingsOut(opts, o.max_pings_out), "max_pings_out");
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
        max_payload_ = natsConnection_GetMaxPayload(nc_);
        (void)owner.release(); // freed by the destructor, once the closed callback has run
    }

    nats_connection(const nats_connection&) = delete;
    nats_connection& operator=(const nats_connection&) = delete;

    // Flushes what is buffered (at most 1 s), closes and frees the connection. Receivers and
    // publishers on it must be gone (stopped) first.
    ~nats_connection() {
        if (nc_ == nullptr) {
            return;
        }
        (void)natsConnection_FlushTimeout(nc_, 1000);
        state_->closing.store(true);
        natsConnection_Close(nc_);
        // The closed callback runs on nats.c's thread and reads state_: wait for it (bounded),
        // and if it does not come, leave state_ to it rather than free it under its feet.
        bool done = false;
        {
            std::unique_lock<std::mutex> lock(state_->mu);
            done = state_->cv.wait_for(lock, std::chrono::seconds(2),
                                       [this] { return state_->closed; });
        }
        natsConnection_Destroy(nc_);
        if (done) {
            delete state_;
        }
    }

    // The connection for nats.c calls of your own. Any thread.
    [[nodiscard]] natsConnection* get() const noexcept { return nc_; }

    // The server's max_payload (1 MB unless the server config says otherwise): the largest
    // message, envelope included. Any thread.
    [[nodiscard]] std::int64_t max_payload() const noexcept { return max_payload_; }

    [[nodiscard]] bool connected() const noexcept {
        return natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
    }

    // The connection's state and counters (connects, reconnects, disconnects). Any thread.
    [[nodiscard]] transport_stats stats() const { return state_->counters.snapshot(); }

    [[nodiscard]] std::string url() const {
        char buf[256] = {};
        if (natsConnection_GetConnectedUrl(nc_, buf, sizeof(buf)) == NATS_OK) {
            return buf;
        }
        return {};
    }

private:
    struct shared {
        nats_options options;
        detail::counters counters;
        std::mt19937_64 rng{std::random_device{}()}; // nats.c's reconnect thread, and the ctor
        std::atomic<bool> closing{false};
        std::mutex mu;
        std::condition_variable cv;
        bool closed = false; // guarded by mu

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
        static void on_closed(natsConnection*, void* self) {
            auto* s = static_cast<shared*>(self);
            s->counters.state.store(s->closing.load() ? live_state::stopped : live_state::failed,
                                    std::memory_order_relaxed);
            // Notified under the lock: the destructor, woken, frees this object (cv included) as
            // soon as it can take the lock, so the notify must be over by then.
            const std::lock_guard<std::mutex> lock(s->mu);
            s->closed = true;
            s->cv.notify_all();
        }
        static void on_error(natsConnection*, natsSubscription*, natsStatus err, void* self) {
            auto* s = static_cast<shared*>(self);
            if (err != NATS_SLOW_CONSUMER) { // counted per subscription (GetDropped)
                s->counters.error(natsStatus_GetText(err));
            }
        }
    };

    static void check(natsStatus s, const char* what) {
        if (s != NATS_OK) {
            throw nats_error(std::string("nats options: ") + what + ": " + detail::nats_text(s));
        }
    }
    static std::int64_t ms(std::chrono::nanoseconds d) {
        return std::max<std::int64_t>(
            1, std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
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
    std::int64_t max_payload_ = 0;
};

struct nats_publisher_options {
    std::string subject{};     // e.g. frame_subject("detect", "cam0")
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

    nats_publisher(nats_connection& nc, nats_publisher_options options, Codec c = {})
        : nc_(nc),
          options_(std::move(options)),
          codec_(std::move(c)),
          sender_id_(new_sender_id()),
          ledger_(options_.loss_horizon) {
        if (options_.subject.empty()) {
            throw std::invalid_argument("subject: must not be empty");
        }
        if (options_.sender_name.empty()) {
            options_.sender_name = options_.subject;
        }
        if (!options_.receipt_subject.empty()) {
            with_receipts_ = true;
            const natsStatus s =
                natsConnection_Subscribe(&receipts_, nc_.get(), options_.receipt_subject.c_str(),
                                         &nats_publisher::on_receipt, this);
            if (s != NATS_OK) {
                throw nats_error("subscribe " + options_.receipt_subject + ": " +
                                 detail::nats_text(s));
            }
            (void)natsSubscription_SetOnCompleteCB(receipts_, &nats_publisher::on_complete, this);
        }
    }

    nats_publisher(const nats_publisher&) = delete;
    nats_publisher& operator=(const nats_publisher&) = delete;
    ~nats_publisher() { close(); }

    // Encodes the item into the message buffer (one copy; nats.c copies it once more into its
    // socket buffer) and publishes it. Any thread (a mutex serialises sends). Never waits for a
    // receiver. Returns sent, too_large (envelope + payload over the server's max_payload),
    // disconnected (dropped while reconnecting, with drop_while_disconnected), failed (nats.c
    // refused it: last_error says why) or closed. Exceptions: what the codec throws.
    template <class Item>
    [[nodiscard]] send_status send(const Item& item) {
        const auto v = detail::view_item<value_type>(item);
        const std::lock_guard<std::mutex> lock(mu_);
        if (closed_) {
            counters_.count(send_status::closed);
            return send_status::closed;
        }
        if (options_.drop_while_disconnected && !nc_.connected()) {
            counters_.count(send_status::disconnected);
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
            if (envelope_size + n > limit) {
                throw send_failure(send_status::too_large,
                                   "message of " + std::to_string(envelope_size + n) +
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
            counters_.count(f.status());
            counters_.error(f.what());
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
        set_sender(e, sender_id_, options_.sender_name);
        write_envelope(e, buffer_);
        const natsStatus s = natsConnection_Publish(
            nc_.get(), options_.subject.c_str(), buffer_.data(), static_cast<int>(buffer_.size()));
        if (s != NATS_OK) {
            const auto st = s == NATS_MAX_PAYLOAD ? send_status::too_large : send_status::failed;
            counters_.count(st);
            counters_.error("publish " + options_.subject + ": " + detail::nats_text(s));
            return st;
        }
        // link_seq only advances for messages handed to the connection, so a receiver's gaps are
        // the transport's losses and nothing else.
        ++link_seq_;
        counters_.count(send_status::sent);
        counters_.bytes_sent.fetch_add(buffer_.size(), std::memory_order_relaxed);
        if (with_receipts_) {
            ledger_.sent(e.link_seq, std::chrono::steady_clock::now());
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

    // Parks up to `timeout` for the receipts still outstanding, then counts the rest as lost:
    // the end-of-run accounting. Any thread.
    void settle(std::chrono::nanoseconds timeout) {
        (void)natsConnection_FlushTimeout(nc_.get(), 1000);
        if (with_receipts_) {
            (void)ledger_.wait_settled_until(std::chrono::steady_clock::now() + timeout);
            ledger_.expire(std::chrono::steady_clock::time_point::max(),
                           &counters_.lost_in_transport);
        }
    }

    // Later sends return closed; stops taking receipts. Any thread but nats.c's.
    void close() {
        natsSubscription* r = nullptr;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            closed_ = true;
            r = std::exchange(receipts_, nullptr);
        }
        if (r != nullptr) {
            if (natsSubscription_Unsubscribe(r) == NATS_OK) {
                std::unique_lock<std::mutex> lock(done_mu_);
                done_cv_.wait_for(lock, std::chrono::seconds(2), [this] { return done_; });
            }
            natsSubscription_Destroy(r);
        }
    }

    // Figures: the connection's state and counters, this publisher's sends and, with receipts,
    // its end-to-end losses. Any thread.
    [[nodiscard]] transport_stats stats() {
        if (with_receipts_) {
            expire();
        }
        auto s = counters_.snapshot();
        detail::merge_connection(s, nc_.stats());
        s.pending_receipts = ledger_.waiting();
        return s;
    }
    [[nodiscard]] std::uint64_t sender_id() const noexcept { return sender_id_; }
    [[nodiscard]] const nats_publisher_options& options() const noexcept { return options_; }

private:
    void expire() {
        ledger_.expire(std::chrono::steady_clock::now(), &counters_.lost_in_transport);
    }

    static void on_receipt(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
        auto* p = static_cast<nats_publisher*>(self);
        const std::span<const std::byte> bytes(
            reinterpret_cast<const std::byte*>(natsMsg_GetData(msg)),
            static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
        const auto d = read_envelope(bytes);
        if (!d.header) {
            p->counters_.malformed.fetch_add(1, std::memory_order_relaxed);
        } else if (d.header->kind == message_kind::receipt &&
                   d.header->sender_id == p->sender_id_) { // a receipt for one of ours
            if (!p->ledger_.receipt(d.header->link_seq, &p->counters_.acknowledged)) {
                p->counters_.late_receipts.fetch_add(1, std::memory_order_relaxed);
            }
        }
        natsMsg_Destroy(msg);
    }
    static void on_complete(void* self) {
        auto* p = static_cast<nats_publisher*>(self);
        // Under the lock: close() returns, and the publisher may go, once it can take the lock.
        const std::lock_guard<std::mutex> lock(p->done_mu_);
        p->done_ = true;
        p->done_cv_.notify_all();
    }

    nats_connection& nc_;
    nats_publisher_options options_;
    Codec codec_;
    const std::uint64_t sender_id_;
    std::mutex mu_;
    std::vector<std::byte> buffer_; // guarded by mu_: the message being built
    std::uint64_t link_seq_ = 0;    // guarded by mu_
    std::uint64_t own_seq_ = 0;     // guarded by mu_
    bool closed_ = false;           // guarded by mu_
    detail::counters counters_;
    detail::delivery_ledger ledger_;
    bool with_receipts_ = false;           // set once in the constructor
    natsSubscription* receipts_ = nullptr; // guarded by mu_ after the constructor
    std::mutex done_mu_;
    std::condition_variable done_cv_;
    bool done_ = false; // guarded by done_mu_
};

struct nats_receiver_options {
    std::string subject{};
    std::string queue_group{}; // non-empty: share the subject's messages with the group's members
    // The client's backlog for this subscription, beyond which it drops (slow_consumer_dropped).
    int pending_messages = 8;
    int pending_bytes = 64 << 20;
    // Send a receipt for each frame here (queue groups: the publisher's loss accounting).
    std::string receipt_subject{};
    std::string name{};                      // this receiver's name in its receipts
    message_kind kind = message_kind::frame; // others are counted and skipped
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

    nats_receiver(nats_connection& nc, nats_receiver_options options, Codec c = {})
        : nc_(nc), options_(std::move(options)), codec_(std::move(c)) {
        if (options_.subject.empty()) {
            throw std::invalid_argument("subject: must not be empty");
        }
        if (options_.pending_messages <= 0 || options_.pending_bytes <= 0) {
            throw std::invalid_argument("pending_messages, pending_bytes: must be positive");
        }
    }

    nats_receiver(const nats_receiver&) = delete;
    nats_receiver& operator=(const nats_receiver&) = delete;
    ~nats_receiver() { stop(); }

    // Subscribes; each message goes into `out` (which must outlive the run) from nats.c's
    // thread. Once. Throws nats_error when the subscription fails.
    template <class Out>
    requires output_channel<Out, item_type>
    void start(Out& out) {
        const std::lock_guard<std::mutex> lock(mu_);
        if (sub_ != nullptr || started_) {
            throw std::logic_error("nats_receiver: started twice");
        }
        started_ = true;
        deliver_ = [this, &out](natsMsg* msg) { handle(out, msg); };
        natsStatus s = options_.queue_group.empty()
                           ? natsConnection_Subscribe(&sub_, nc_.get(), options_.subject.c_str(),
                                                      &nats_receiver::on_message, this)
                           : natsConnection_QueueSubscribe(
                                 &sub_, nc_.get(), options_.subject.c_str(),
                                 options_.queue_group.c_str(), &nats_receiver::on_message, this);
        if (s == NATS_OK) {
            s = natsSubscription_SetPendingLimits(sub_, options_.pending_messages,
                                                  options_.pending_bytes);
        }
        if (s == NATS_OK) {
            s = natsSubscription_SetOnCompleteCB(sub_, &nats_receiver::on_complete, this);
        }
        if (s == NATS_OK) {
            // The subscription is on the server once this returns: frames sent from now on come.
            s = natsConnection_FlushTimeout(nc_.get(), 2000);
        }
        if (s != NATS_OK) {
            const auto why = "subscribe " + options_.subject + ": " + detail::nats_text(s);
            counters_.error(why);
            throw nats_error(why);
        }
        last_ns_.store(now_ns(), std::memory_order_relaxed);
    }

    // Unsubscribes and waits for a callback in progress to finish. Handles already given out
    // stay valid. Any thread but nats.c's.
    void stop() {
        natsSubscription* sub = nullptr;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            sub = std::exchange(sub_, nullptr);
        }
        if (sub != nullptr) {
            dropped_at_stop_ = dropped(sub);
            if (natsSubscription_Unsubscribe(sub) == NATS_OK) {
                std::unique_lock<std::mutex> lock(done_mu_);
                done_cv_.wait_for(lock, std::chrono::seconds(2), [this] { return done_; });
            }
            natsSubscription_Destroy(sub);
        }
        const std::lock_guard<std::mutex> lock(done_mu_);
        stopped_ = true;
        done_cv_.notify_all();
    }

    // Waits until stop() (or `stop` is requested). A receiver does not end by itself: a lost
    // connection is nats.c's to restore, and shows as the backoff state meanwhile.
    bool wait(std::stop_token stop) {
        std::unique_lock<std::mutex> lock(done_mu_);
        return done_cv_.wait(lock, stop, [this] { return stopped_; });
    }

    // Figures: the connection's state (stalled when connected and nothing came for
    // stall_timeout) and counters, and this receiver's. Any thread.
    [[nodiscard]] transport_stats stats() const {
        auto s = counters_.snapshot();
        detail::merge_connection(s, nc_.stats());
        {
            const std::lock_guard<std::mutex> lock(mu_);
            s.slow_consumer_dropped = sub_ != nullptr ? dropped(sub_) : dropped_at_stop_;
        }
        if (s.state == live_state::streaming &&
            now_ns() - last_ns_.load(std::memory_order_relaxed) >
                std::chrono::duration_cast<std::chrono::nanoseconds>(options_.stall_timeout)
                    .count()) {
            s.state = live_state::stalled;
        }
        return s;
    }
    [[nodiscard]] source_status status() const { return detail::to_source_status(stats()); }
    [[nodiscard]] std::optional<std::string> failure() const {
        const auto s = nc_.stats();
        if (s.state == live_state::failed) {
            return "NATS connection closed: " + s.last_error;
        }
        return std::nullopt;
    }

private:
    static std::int64_t now_ns() noexcept {
        return std::chrono::steady_clock::now().time_since_epoch().count();
    }
    static std::uint64_t dropped(natsSubscription* sub) {
        int64_t n = 0;
        return natsSubscription_GetDropped(sub, &n) == NATS_OK ? static_cast<std::uint64_t>(n) : 0;
    }

    static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
        static_cast<nats_receiver*>(self)->deliver_(msg);
    }
    static void on_complete(void* self) {
        auto* r = static_cast<nats_receiver*>(self);
        // Under the lock: stop() returns, and the receiver may go, once it can take the lock.
        const std::lock_guard<std::mutex> lock(r->done_mu_);
        r->done_ = true;
        r->done_cv_.notify_all();
    }

    template <class Out>
    void handle(Out& out, natsMsg* msg) {
        auto& c = counters_;
        last_ns_.store(now_ns(), std::memory_order_relaxed);
        const std::span<const std::byte> bytes(
            reinterpret_cast<const std::byte*>(natsMsg_GetData(msg)),
            static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
        const auto d = read_envelope(bytes);
        if (!d.header) {
            c.malformed.fetch_add(1, std::memory_order_relaxed);
            c.error(std::string("malformed message on ") + options_.subject + ": " +
                    std::string(to_string(d.error)));
            natsMsg_Destroy(msg);
            return;
        }
        const envelope& e = *d.header;
        if (e.kind == message_kind::receipt && options_.kind != message_kind::receipt) {
            // Receipts share a subject with results (....results): not this receiver's business,
            // and their link_seq is the acknowledged frame's, not a stream of their own.
            natsMsg_Destroy(msg);
            return;
        }
        c.received.fetch_add(1, std::memory_order_relaxed);
        c.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
        const auto g = gaps_.see(e.sender_id, e.link_seq);
        if (g.new_sender) {
            c.senders.fetch_add(1, std::memory_order_relaxed);
        }
        if (options_.queue_group.empty()) { // the whole stream: a gap is a loss
            c.lost_in_transport.fetch_add(g.lost, std::memory_order_relaxed);
            detail::note_lost(out, g.lost);
            if (g.out_of_order) {
                c.out_of_order.fetch_add(1, std::memory_order_relaxed);
            }
        }
        if (!options_.receipt_subject.empty() && e.kind == message_kind::frame) {
            send_receipt(e);
        }
        if (e.kind != options_.kind) {
            natsMsg_Destroy(msg);
            return;
        }
        auto view = codec_.decode(d.payload);
        if (!view) {
            c.malformed.fetch_add(1, std::memory_order_relaxed);
            c.error("malformed payload from " + std::string(e.sender_name()));
            natsMsg_Destroy(msg);
            return;
        }
        auto h = detail::make_received(recycler_.get(), std::move(*view), e,
                                       [msg]() noexcept { natsMsg_Destroy(msg); });
        detail::deliver(out, std::move(h), c);
    }

    void send_receipt(const envelope& frame) {
        envelope r = frame;
        r.kind = message_kind::receipt;
        r.payload_size = 0;
        // sender_id stays the frame sender's: the receipt is addressed to it. The name is ours.
        set_sender(r, frame.sender_id, options_.name.empty() ? options_.subject : options_.name);
        std::byte buf[envelope_size];
        write_envelope(r, buf);
        (void)natsConnection_Publish(nc_.get(), options_.receipt_subject.c_str(), buf,
                                     static_cast<int>(envelope_size));
    }

    nats_connection& nc_;
    nats_receiver_options options_;
    Codec codec_;
    detail::counters counters_;
    detail::gap_counter gaps_; // nats.c's thread only (one per subscription)
    // The handles' blocks, recycled (handles that outlive the receiver keep it alive).
    framepipe::detail::recycler_handle recycler_;
    std::function<void(natsMsg*)> deliver_;
    mutable std::mutex mu_;
    natsSubscription* sub_ = nullptr; // guarded by mu_
    bool started_ = false;            // guarded by mu_
    std::uint64_t dropped_at_stop_ = 0;
    std::atomic<std::int64_t> last_ns_{0};
    std::mutex done_mu_;
    std::condition_variable_any done_cv_;
    bool done_ = false;    // guarded by done_mu_: the subscription's last callback returned
    bool stopped_ = false; // guarded by done_mu_
};

} // namespace framepipe::transport
