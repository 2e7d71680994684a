// framepipe/transport/iceoryx.hpp - frames between processes on one host through iceoryx's
// shared memory, copied once. An optional component: target framepipe::iceoryx, built when
// iceoryx (2.0: Debian's libiceoryx-posh-dev) is found. See docs/transport.md.
//
//     camera process                                   detector process
//     framepipe::transport::iceoryx_init("camera");    framepipe::transport::iceoryx_init("det");
//     iceoryx_publisher<raw_mat_codec> out(            iceoryx_receiver<raw_mat_codec> in(
//         {.service = {.instance = "cam0"}});              {.service = {.instance = "cam0"}});
//     // a sink that sends what a subscription holds:  latest_slot<received_ptr<cv::Mat>> newest;
//     p.sink("to-detector", det_sub,                   p.source("from-camera", newest, in);
//            [&](const auto& f) { (void)out.send(f); });  p.sink("detector", newest, detect);
//
// Zero copy: send() loans a chunk from RouDi's mempool, the codec writes the frame into it once
// (the only copy), and publish hands the chunk's address to every subscriber. The receiver hands
// out a std::shared_ptr<const received<View>> that releases the chunk: the chunk stays in use,
// and the view into it valid, until the last copy of that pointer is gone, on whichever thread
// that happens. The handles' memory is recycled: a steady stream allocates nothing.
//
// Loss: publisher and subscribers discard the oldest data when a subscriber's queue is full
// (never blocking the publisher), and the receiver counts what it missed from the link_seq gaps
// (lost_in_transport; in its output channel's stats too when that is a loss_counted); a copy
// older than one already received is counted out_of_order and skipped, or late_arrivals if its
// gap had been counted lost (detail::gap_counter). A
// subscriber that holds chunks can starve the mempool: the publisher then counts no_buffer and
// skips the frame (size the mempool, docs/transport.md).
//
// A process that dies holding chunks: RouDi notices within PROCESS_KEEP_ALIVE_TIMEOUT (1.5 s in
// iceoryx 2.0) with its monitoring on (the default) and returns the dead process's chunks and
// queues to the mempools; until then they stay in use. The publisher never waits for it.
//
// Threads: iceoryx_init once per process, before any publisher or receiver. A publisher's send()
// from any thread (one at a time is cheapest: a mutex guards the iceoryx port); a receiver runs
// a thread of its own. Handles may be released on any thread.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/transport/detail/common.hpp>
#include <framepipe/transport/detail/envelope.hpp>

#include <iceoryx_hoofs/cxx/string.hpp>
#include <iceoryx_posh/mepoo/chunk_header.hpp>
#include <iceoryx_posh/popo/untyped_publisher.hpp>
#include <iceoryx_posh/popo/untyped_subscriber.hpp>
#include <iceoryx_posh/popo/wait_set.hpp>
#include <iceoryx_posh/runtime/posh_runtime.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

// FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBE_HOOK(), FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBING_HOOK():
// test seams, not options, of the kind detail/config.hpp describes. Called on a receiving thread
// at stop: the first after it drained its queue and before it asks to unsubscribe, the second
// each time it finds the unsubscribe not yet taken by RouDi. tests/transport/
// test_transport_iceoryx.cpp stops RouDi at the first, and at the second has another thread
// publish, then resume RouDi: those chunks reach the queue before RouDi takes the unsubscribe,
// and must be counted dropped_at_stop.
#if !defined(FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBE_HOOK)
#define FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBE_HOOK() ((void)0)
#endif
#if !defined(FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBING_HOOK)
#define FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBING_HOOK() ((void)0)
#endif
// FRAMEPIPE_DETAIL_ICEORYX_START_HOOK(): a test seam of the same kind, called in a receiver's
// start() just before its thread is created; the test makes it throw as a thread that cannot start.
#if !defined(FRAMEPIPE_DETAIL_ICEORYX_START_HOOK)
#define FRAMEPIPE_DETAIL_ICEORYX_START_HOOK() ((void)0)
#endif

namespace framepipe::transport {

// The iceoryx service a stream is published as: (service, instance, event). The examples use
// ("framepipe", "<pipeline>.<camera>", "frames"). Each part: at most 100 characters.
struct iceoryx_service {
    std::string service = "framepipe";
    std::string instance = "default";
    std::string event = "frames";
};

// Thrown when iceoryx cannot be used: RouDi not running, a name too long.
class transport_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {

inline iox::capro::IdString_t iox_id(const std::string& s, const char* what) {
    if (s.empty() || s.size() > iox::capro::IdString_t::capacity()) {
        throw std::invalid_argument(std::string(what) + ": 1 to " +
                                    std::to_string(iox::capro::IdString_t::capacity()) +
                                    " characters, got '" + s + "'");
    }
    return {iox::cxx::TruncateToCapacity, s.c_str()};
}

inline iox::capro::ServiceDescription iox_description(const iceoryx_service& s) {
    return {iox_id(s.service, "service"), iox_id(s.instance, "instance"), iox_id(s.event, "event")};
}

} // namespace detail

// Why RouDi cannot be reached, or nullopt when it answers on its socket. Probes the socket
// iceoryx 2.0 uses (/tmp/roudi, fixed at iceoryx's build) without registering. Any thread.
[[nodiscard]] inline std::optional<std::string> roudi_unreachable() {
    const std::string path =
        std::string(iox::platform::IOX_UDS_SOCKET_PATH_PREFIX) + iox::roudi::IPC_CHANNEL_ROUDI_NAME;
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0) {
        return std::string("socket: ") + std::strerror(errno);
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    const int err = errno;
    ::close(fd);
    if (rc == 0) {
        return std::nullopt;
    }
    return "RouDi is not running (" + path + ": " + std::strerror(err) + ")";
}

// Registers this process with RouDi under `name` (made unique with the process id unless
// `exact`). Once per process, before any publisher or receiver: once a call has returned, later
// calls do nothing (they check neither RouDi nor `name`). Any thread; concurrent calls wait for
// the first. Throws std::invalid_argument (name: 1 to 100 characters, no '/'; checked first), and
// transport_error, saying so in one line, when RouDi does not answer: iceoryx itself would wait
// 60 s and then terminate the process. A call that throws registers nothing, and the next call
// tries again.
inline void iceoryx_init(std::string_view name, bool exact = false) {
    static std::once_flag once;
    // An exception leaves `once` unset (std::call_once's exceptional call): the next call runs.
    std::call_once(once, [&] {
        std::string n(name);
        if (!exact) {
            n += "-" + std::to_string(::getpid());
        }
        if (n.empty() || n.size() > iox::RuntimeName_t::capacity() ||
            n.find('/') != std::string::npos) {
            throw std::invalid_argument(
                "iceoryx_init: name: 1 to 100 characters without '/'");
        }
        if (auto why = roudi_unreachable()) {
            throw transport_error(*why);
        }
        iox::runtime::PoshRuntime::initRuntime(
            iox::RuntimeName_t(iox::cxx::TruncateToCapacity, n.c_str()));
    });
}

struct iceoryx_publisher_options {
    iceoryx_service service{};
    std::string sender_name{}; // in every envelope (the UI shows it); default: the instance
    message_kind kind = message_kind::frame; // what this publisher sends (frames, results)
    // Chunks the publisher keeps for late subscribers (historyRequest); 0: none. At most
    // iox::MAX_PUBLISHER_HISTORY (16 in iceoryx 2.0).
    std::uint64_t history = 0;
    // The `size` of the largest mempool in RouDi's config. iceoryx 2.0 terminates the process
    // when asked for a chunk larger than every mempool, and tells a client nothing of its
    // config, so send() refuses (too_large) what would not fit here. The default fits the
    // config in docs/transport.md (tests/transport/roudi.toml): 6 MiB, a 1080p BGR frame.
    // At most 4 GiB - 1 (iceoryx loans a chunk by a 32-bit size).
    std::size_t largest_chunk = 6291456;
};

// Sends items of Codec::value_type (or stamped ones, or pointers to either) as iceoryx chunks.
template <codec Codec>
class iceoryx_publisher {
public:
    using value_type = typename Codec::value_type;

    // Offers the service. After iceoryx_init. Throws std::invalid_argument for a bad name, a
    // history over iox::MAX_PUBLISHER_HISTORY, a largest_chunk over 4 GiB - 1 or a kind that is
    // not a message_kind (naming it).
    explicit iceoryx_publisher(iceoryx_publisher_options options, Codec c = {})
        : options_(std::move(options)),
          codec_(std::move(c)),
          publisher_(detail::iox_description(options_.service), publisher_options(options_)),
          sender_id_(new_sender_id()) {
        if (options_.sender_name.empty()) {
            options_.sender_name = options_.service.instance;
        }
        counters_.state.store(live_state::streaming, std::memory_order_relaxed);
        counters_.epoch.store(1, std::memory_order_relaxed);
        counters_.connects.store(1, std::memory_order_relaxed);
    }

    iceoryx_publisher(const iceoryx_publisher&) = delete;
    iceoryx_publisher& operator=(const iceoryx_publisher&) = delete;

    // Loans a chunk, lets the codec write the item into it (the one copy), and publishes it.
    // Any thread (serialised by a mutex). Never waits for a subscriber. Returns sent, no_buffer
    // (no chunk of that size left: counted, the item is skipped), too_large (over
    // largest_chunk, or no mempool for that size) or closed. Exceptions: what the codec throws
    // (the chunk is released).
    template <class Item>
    [[nodiscard]] send_status send(const Item& item) {
        const auto v = detail::view_item<value_type>(item);
        const std::lock_guard<std::mutex> lock(mu_);
        if (closed_) {
            counters_.count(send_status::closed);
            return send_status::closed;
        }
        void* chunk = nullptr;
        std::size_t payload = 0;
        auto lend = [&](std::size_t n) -> std::span<std::byte> {
            if (chunk != nullptr) {
                throw std::logic_error("codec: lend() called twice in one encode");
            }
            // The envelope, the payload and the payload's alignment (64) at most. largest_chunk
            // fits a 32-bit loan (the constructor checks), and so does what passes here.
            if (n > options_.largest_chunk || envelope_size + n + 64 > options_.largest_chunk ||
                envelope_size + n > max_loan) {
                throw send_failure(send_status::too_large,
                                   "message of " + std::to_string(envelope_size + n) +
                                       " bytes over the largest chunk, " +
                                       std::to_string(options_.largest_chunk) +
                                       " (largest_chunk; RouDi's config)");
            }
            auto r = publisher_.loan(static_cast<std::uint32_t>(envelope_size + n), 64);
            if (r.has_error()) {
                const auto e = r.get_error();
                if (e == iox::popo::AllocationError::NO_MEMPOOLS_AVAILABLE) {
                    throw send_failure(send_status::too_large,
                                       "no mempool has chunks of " +
                                           std::to_string(envelope_size + n) +
                                           " bytes (see the RouDi config)");
                }
                throw send_failure(send_status::no_buffer, std::string("no chunk to loan: ") +
                                                               iox::popo::asStringLiteral(e));
            }
            chunk = r.value();
            payload = n;
            return {static_cast<std::byte*>(chunk) + envelope_size, n};
        };
        try {
            lender l(lend);
            codec_.encode(*v.value, l);
            if (chunk == nullptr) { // an empty value the codec wrote nothing for: the header
                (void)lend(0);
            }
        } catch (const send_failure& f) {
            if (chunk != nullptr) {
                publisher_.release(chunk);
            }
            counters_.count(f.status());
            counters_.error(f.what());
            return f.status();
        } catch (...) {
            if (chunk != nullptr) {
                publisher_.release(chunk);
            }
            throw;
        }
        envelope e;
        e.kind = options_.kind;
        e.payload_size = static_cast<std::uint32_t>(payload);
        e.seq = v.seq ? *v.seq : own_seq_;
        ++own_seq_;
        e.epoch = v.epoch;
        e.link_seq = link_seq_++;
        set_capture_time(e, v.captured.value_or(std::chrono::steady_clock::now()));
        set_sender(e, sender_id_, options_.sender_name);
        write_envelope(e, {static_cast<std::byte*>(chunk), envelope_size});
        publisher_.publish(chunk);
        counters_.count(send_status::sent);
        counters_.bytes_sent.fetch_add(envelope_size + payload, std::memory_order_relaxed);
        return send_status::sent;
    }

    // Pops items from `in` and sends each, until `in` is closed and drained or `stop` is
    // requested. One thread. Returns how many were sent.
    template <class In>
    requires input_channel<In> std::uint64_t pump(In& in, std::stop_token stop = {}) {
        return detail::pump(*this, in, stop);
    }

    // Stops offering: later sends return closed. Any thread.
    void close() {
        const std::lock_guard<std::mutex> lock(mu_);
        if (!closed_) {
            closed_ = true;
            publisher_.stopOffer();
            counters_.state.store(live_state::stopped, std::memory_order_relaxed);
        }
    }

    [[nodiscard]] transport_stats stats() const { return counters_.snapshot(); }
    [[nodiscard]] source_status status() const { return detail::to_source_status(stats()); }
    [[nodiscard]] std::uint64_t sender_id() const noexcept { return sender_id_; }
    [[nodiscard]] const iceoryx_publisher_options& options() const noexcept { return options_; }

private:
    // The largest chunk iceoryx can loan: its size argument is a std::uint32_t.
    static constexpr std::size_t max_loan = std::numeric_limits<std::uint32_t>::max();

    // Checks the options (before the port is made) and turns them into iceoryx's.
    static iox::popo::PublisherOptions publisher_options(const iceoryx_publisher_options& o) {
        detail::check_kind(o.kind, "iceoryx_publisher: kind");
        if (o.history > iox::MAX_PUBLISHER_HISTORY) {
            throw std::invalid_argument("iceoryx_publisher: history: at most " +
                                        std::to_string(iox::MAX_PUBLISHER_HISTORY) +
                                        " (iceoryx's MAX_PUBLISHER_HISTORY), got " +
                                        std::to_string(o.history));
        }
        if (o.largest_chunk > max_loan) {
            throw std::invalid_argument("iceoryx_publisher: largest_chunk: at most " +
                                        std::to_string(max_loan) +
                                        " bytes (iceoryx loans by a 32-bit size), got " +
                                        std::to_string(o.largest_chunk));
        }
        iox::popo::PublisherOptions p;
        p.historyCapacity = o.history;
        // Never wait for a slow (or dead) subscriber: its queue drops its oldest chunk.
        p.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::DISCARD_OLDEST_DATA;
        return p;
    }

    iceoryx_publisher_options options_;
    Codec codec_;
    std::mutex mu_; // guards publisher_ (an iceoryx port is not thread-safe) and the numbers
    iox::popo::UntypedPublisher publisher_;
    const std::uint64_t sender_id_;
    std::uint64_t link_seq_ = 0; // guarded by mu_
    std::uint64_t own_seq_ = 0;  // guarded by mu_: seq for items without one
    bool closed_ = false;        // guarded by mu_
    detail::counters counters_;
};

struct iceoryx_receiver_options {
    iceoryx_service service{};
    // Chunks queued for this receiver before the oldest is dropped (and counted by the gap it
    // leaves). Small: the consumer wants the newest frame; each queued chunk is one frame of the
    // mempool. 1 to iox::MAX_SUBSCRIBER_QUEUE_CAPACITY (256 in iceoryx 2.0).
    std::uint64_t queue_capacity = 2;
    // Chunks of the publisher's history to start with: 0 to iox::MAX_PUBLISHER_HISTORY (16).
    std::uint64_t history = 0;
    // No message for this long while a publisher is there: stalled (back to streaming on the
    // next message). Positive (std::invalid_argument otherwise).
    std::chrono::nanoseconds stall_timeout{std::chrono::seconds(2)};
    // Which message kinds to hand out; others are counted as received and skipped.
    message_kind kind = message_kind::frame;
};

// Receives a stream as handles into its chunks, on a thread of its own, and pushes each into an
// output channel (a latest_slot by default: the consumer takes the newest). A supervised source
// (pipeline::source(name, out, receiver)): its state and counters show in the pipeline's
// snapshot and /metrics.
template <codec Codec>
class iceoryx_receiver {
public:
    using view_type = typename Codec::view_type;
    using item_type = received_ptr<view_type>;

    // Subscribes at once (so a publisher's frames queue from now on). After iceoryx_init. Throws
    // std::invalid_argument for a bad name, a queue_capacity or history out of range, or a kind
    // that is not a message_kind (naming it).
    explicit iceoryx_receiver(iceoryx_receiver_options options, Codec c = {})
        : options_(std::move(options)),
          codec_(std::move(c)),
          core_(std::make_shared<core>(options_)) {}

    iceoryx_receiver(const iceoryx_receiver&) = delete;
    iceoryx_receiver& operator=(const iceoryx_receiver&) = delete;
    ~iceoryx_receiver() { stop(); }

    // Starts the receiving thread, pushing into `out` (which must outlive the run). Once: stop()
    // unsubscribes for good, so a start() after it throws too (make another receiver). The
    // thread pushes with its std::stop_token where `out` takes one (push(item, stop) or
    // publish(item, stop): the framepipe channels), so that stop() ends a push waiting for room.
    // A push (or a codec's decode) that throws is caught on that thread: the message is counted
    // as refused (malformed, for decode) with the exception's what() in last_error, and the
    // thread goes on. Throws std::logic_error when started already (stopped or not), and
    // std::system_error when the thread cannot start (the receiver is then stopped, as before
    // the call, and can be started again).
    template <class Out>
    requires output_channel<Out, item_type>
    void start(Out& out) {
        if (started_) {
            throw std::logic_error("iceoryx_receiver: started twice");
        }
        core_->counters.state.store(live_state::connecting, std::memory_order_relaxed);
        try {
            FRAMEPIPE_DETAIL_ICEORYX_START_HOOK();
            thread_ = std::jthread([this, &out](std::stop_token stop) { run(out, stop); });
        } catch (...) {
            core_->counters.state.store(live_state::stopped, std::memory_order_relaxed);
            throw;
        }
        started_ = true;
    }

    // Stops the thread and unsubscribes (handles already given out stay valid; a handle whose
    // push was cancelled is counted as refused). The chunks still queued for this receiver are
    // taken, their envelopes read (for the gaps), given back and counted dropped_at_stop, and so
    // are the chunks publishers deliver until RouDi has taken the unsubscribe (its discovery
    // loop, every 100 ms in iceoryx 2.0): the thread waits until RouDi marks the subscription
    // ended (1 s at most), then unsubscribe_grace (the many-to-many port that Debian's iceoryx
    // 2.0 builds is marked just before RouDi takes the queue off the publishers, in the same
    // step), and drains the queue again. Best effort: a chunk delivered after that drain goes
    // back with the receiver's port uncounted, which takes a RouDi held up between those two
    // acts for longer than the grace, or not answering within the second. Any thread but the
    // receiver's. Returns within about 210 ms (the thread's wait for chunks, RouDi's loop, the
    // grace) once the push in progress returns, 1.11 s if RouDi does not answer: a push that
    // takes the stop token returns at once; an output channel whose push blocks and takes no
    // std::stop_token must be closed, or make room, for stop() (and the destructor) to return.
    void stop() {
        if (thread_.joinable()) {
            thread_.request_stop();
            thread_.join();
        }
    }

    // Waits until the receiver has stopped (it only stops when told) or `stop` is requested.
    [[nodiscard]] bool wait(std::stop_token stop) {
        std::unique_lock<std::mutex> lock(ended_mu_);
        return ended_cv_.wait(lock, stop, [this] { return ended_; });
    }

    // The receiver's state (stopped before start() and after stop()) and counters. Any thread;
    // never blocks but for a mutex. Exceptions: std::bad_alloc (last_error's copy).
    [[nodiscard]] transport_stats stats() const { return core_->counters.snapshot(); }
    // The state and counters as a pipeline shows a supervised source's. Any thread; as stats().
    [[nodiscard]] source_status status() const { return detail::to_source_status(stats()); }
    // Why the receiver cannot go on: never (iceoryx tells a client nothing of RouDi's death).
    [[nodiscard]] std::optional<std::string> failure() const { return std::nullopt; }

private:
    // What the handles keep alive: the subscriber whose chunks they hold, and its mutex (an
    // iceoryx port is not thread-safe, and handles are released on any thread).
    struct core {
        // The port is made with RouDi here, once: the receiver's one connection (epoch 1), as
        // the publisher's.
        explicit core(const iceoryx_receiver_options& o)
            : subscriber(detail::iox_description(o.service), subscriber_options(o)) {
            counters.epoch.store(1, std::memory_order_relaxed);
            counters.connects.store(1, std::memory_order_relaxed);
        }
        std::mutex mu;
        iox::popo::UntypedSubscriber subscriber; // guarded by mu
        detail::counters counters;
    };

    // Checks the options (before the port is made) and turns them into iceoryx's.
    static iox::popo::SubscriberOptions subscriber_options(const iceoryx_receiver_options& o) {
        detail::check_kind(o.kind, "iceoryx_receiver: kind");
        framepipe::detail::require_positive(o.stall_timeout, "iceoryx_receiver: stall_timeout");
        if (o.queue_capacity == 0 || o.queue_capacity > iox::MAX_SUBSCRIBER_QUEUE_CAPACITY) {
            throw std::invalid_argument("iceoryx_receiver: queue_capacity: 1 to " +
                                        std::to_string(iox::MAX_SUBSCRIBER_QUEUE_CAPACITY) +
                                        " (iceoryx's MAX_SUBSCRIBER_QUEUE_CAPACITY), got " +
                                        std::to_string(o.queue_capacity));
        }
        if (o.history > iox::MAX_PUBLISHER_HISTORY) {
            throw std::invalid_argument("iceoryx_receiver: history: at most " +
                                        std::to_string(iox::MAX_PUBLISHER_HISTORY) +
                                        " (iceoryx's MAX_PUBLISHER_HISTORY), got " +
                                        std::to_string(o.history));
        }
        iox::popo::SubscriberOptions s;
        s.queueCapacity = o.queue_capacity;
        s.historyRequest = o.history;
        s.queueFullPolicy = iox::popo::QueueFullPolicy::DISCARD_OLDEST_DATA;
        return s;
    }

    template <class Out>
    void run(Out& out, std::stop_token stop) {
        auto& c = *core_;
        detail::gap_counter gaps;
        {
            iox::popo::WaitSet<1> waitset;
            {
                const std::lock_guard<std::mutex> lock(c.mu);
                if (waitset.attachState(c.subscriber, iox::popo::SubscriberState::HAS_DATA)
                        .has_error()) {
                    c.counters.error("iceoryx: cannot attach the subscriber to a waitset");
                }
            }
            auto last = std::chrono::steady_clock::now();
            bool any = false;
            while (!stop.stop_requested()) {
                (void)waitset.timedWait(iox::units::Duration::fromMilliseconds(100));
                bool got = false;
                while (!stop.stop_requested()) { // chunks left at stop: dropped below
                    const void* payload = take_chunk();
                    if (payload == nullptr) {
                        break;
                    }
                    got = true;
                    handle(out, payload, gaps, stop);
                }
                const auto now = std::chrono::steady_clock::now();
                if (got) {
                    last = now;
                    any = true;
                    c.counters.state.store(live_state::streaming, std::memory_order_relaxed);
                } else if (any && now - last > options_.stall_timeout) {
                    c.counters.state.store(live_state::stalled, std::memory_order_relaxed);
                } else if (!any) {
                    // Connected to RouDi and subscribed: waiting for a publisher or its first
                    // frame.
                    c.counters.state.store(live_state::connecting, std::memory_order_relaxed);
                }
            }
            const std::lock_guard<std::mutex> lock(c.mu);
            waitset.detachState(c.subscriber, iox::popo::SubscriberState::HAS_DATA);
        }
        // The chunks queued at stop: handle() counts each dropped_at_stop (the stop is requested)
        // and gives it back. Publishers go on delivering into the queue until RouDi has taken the
        // unsubscribe (its discovery loop runs every 100 ms in iceoryx 2.0): so the queue is
        // drained, then unsubscribed, then drained again once RouDi has marked the subscription
        // ended and had unsubscribe_grace to take the queue off the publishers (or after
        // unsubscribe_wait if it does not mark it), and what came meanwhile is counted too.
        drain_at_stop(out, gaps, stop);
        FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBE_HOOK();
        {
            const std::lock_guard<std::mutex> lock(c.mu);
            c.subscriber.unsubscribe();
        }
        const auto given_up = std::chrono::steady_clock::now() + unsubscribe_wait;
        for (;;) {
            {
                const std::lock_guard<std::mutex> lock(c.mu);
                if (c.subscriber.getSubscriptionState() == iox::SubscribeState::NOT_SUBSCRIBED) {
                    break;
                }
            }
            if (std::chrono::steady_clock::now() >= given_up) {
                break;
            }
            FRAMEPIPE_DETAIL_ICEORYX_UNSUBSCRIBING_HOOK();
            // Polled: iceoryx 2.0 has no event for a change of the subscription state to wait on.
            std::this_thread::sleep_for(std::chrono::milliseconds(1)); // RouDi: 100 ms at most
        }
        // The many-to-many port (Debian's iceoryx 2.0) says NOT_SUBSCRIBED as RouDi builds the
        // UNSUB message, before RouDi hands it to the publishers' ports, which then stop
        // delivering: give it that moment. (No test shows the grace's effect: it takes a RouDi
        // held between the two.)
        std::this_thread::sleep_for(unsubscribe_grace);
        drain_at_stop(out, gaps, stop);
        c.counters.state.store(live_state::stopped, std::memory_order_relaxed);
        const std::lock_guard<std::mutex> lock(ended_mu_);
        ended_ = true;
        ended_cv_.notify_all();
    }

    // The next chunk in the queue, or nullptr when it is empty. The lock is held for the take
    // alone: handle() takes it again to give a chunk back.
    const void* take_chunk() noexcept {
        const std::lock_guard<std::mutex> lock(core_->mu);
        auto r = core_->subscriber.take();
        return r.has_error() ? nullptr : r.value();
    }

    // Takes every chunk in the queue now and counts each dropped_at_stop (handle() does, the
    // stop being requested).
    template <class Out>
    void drain_at_stop(Out& out, detail::gap_counter& gaps, const std::stop_token& stop) noexcept {
        while (const void* payload = take_chunk()) {
            handle(out, payload, gaps, stop);
        }
    }

    // Reads one chunk and hands it out (once `stop` is requested, counts it dropped_at_stop
    // instead). Never throws: what goes wrong is counted (and the chunk given back), the thread
    // goes on.
    template <class Out>
    void handle(Out& out, const void* payload, detail::gap_counter& gaps,
                const std::stop_token& stop) noexcept {
        auto& c = *core_;
        // The chunk goes back to the mempool when the last handle goes, or now if it is skipped.
        auto release = [core = core_](const void* p) noexcept {
            const std::lock_guard<std::mutex> lock(core->mu);
            core->subscriber.release(p);
        };
        // Gives the chunk back on every way out until a handle owns it.
        struct chunk_guard {
            decltype(release)& give_back;
            const void* chunk;
            ~chunk_guard() {
                if (chunk != nullptr) {
                    give_back(chunk);
                }
            }
        } guard{release, payload};
        const auto note = [&c](const char* what, const std::exception* ex) noexcept {
            try {
                c.counters.error(std::string(what) +
                                 (ex != nullptr ? ex->what() : "unknown exception"));
            } catch (...) { // no memory for the message: the count stands alone
            }
        };
        try {
            const auto* header = iox::mepoo::ChunkHeader::fromUserPayload(payload);
            const std::span<const std::byte> bytes(static_cast<const std::byte*>(payload),
                                                   header->userPayloadSize());
            const auto d = read_envelope(bytes);
            if (!d.header) {
                c.counters.malformed.fetch_add(1, std::memory_order_relaxed);
                c.counters.error(std::string("malformed message: ") +
                                 std::string(to_string(d.error)));
                return;
            }
            const envelope& e = *d.header;
            const auto g = gaps.see(e.sender_id, e.link_seq, e.epoch);
            if (g.late) { // counted lost already, when a later message left its gap: skipped
                c.counters.late_arrivals.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            // Once stop() has begun, a chunk that would be handed out is given back instead
            // (dropped_at_stop, not received), its envelope read so that its gap counts.
            const bool at_stop =
                !g.out_of_order && e.kind == options_.kind && stop.stop_requested();
            if (!at_stop) {
                c.counters.received.fetch_add(1, std::memory_order_relaxed);
                c.counters.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
            }
            if (stop.stop_requested()) {
                // The queue overflowed while stop() was not taking from it (it waits up to
                // unsubscribe_wait for RouDi between its two drains, and publishers go on
                // delivering): handed to this receiver and discarded by its stop, not lost in the
                // engine. (A gap that began before the stop request counts here too.)
                c.counters.dropped_at_stop.fetch_add(g.lost, std::memory_order_relaxed);
            } else {
                c.counters.lost_in_transport.fetch_add(g.lost, std::memory_order_relaxed);
                detail::note_lost(out, g.lost);
            }
            if (g.new_sender) {
                c.counters.senders.fetch_add(1, std::memory_order_relaxed);
            }
            if (g.reset) {
                c.counters.link_resets.fetch_add(1, std::memory_order_relaxed);
            }
            if (g.out_of_order) { // older than one handed out already: skipped, never handed out
                c.counters.out_of_order.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            if (e.kind != options_.kind) {
                return;
            }
            if (at_stop) {
                c.counters.dropped_at_stop.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            bool threw = false; // decode must not throw; one that does is counted as malformed
            auto view = [&]() noexcept -> std::optional<view_type> {
                try {
                    return codec_.decode(d.payload);
                } catch (const std::exception& ex) {
                    note("codec: decode threw: ", &ex);
                } catch (...) {
                    note("codec: decode threw: ", nullptr);
                }
                threw = true;
                return std::nullopt;
            }();
            if (!view) {
                c.counters.malformed.fetch_add(1, std::memory_order_relaxed);
                if (!threw) {
                    c.counters.error("malformed payload from " + std::string(e.sender_name()));
                }
                return;
            }
            guard.chunk = nullptr; // the handle gives it back (make_received: if it cannot be made)
            auto handle =
                detail::make_received(recycler_.get(), std::move(*view), e, g.epoch,
                                      [release, payload]() noexcept { release(payload); });
            detail::deliver(out, std::move(handle), c.counters, stop);
        } catch (const std::exception& ex) { // the push threw (or bad_alloc): the item is not in
            c.counters.refused.fetch_add(1, std::memory_order_relaxed);
            note("iceoryx_receiver: a message not handed out: ", &ex);
        } catch (...) {
            c.counters.refused.fetch_add(1, std::memory_order_relaxed);
            note("iceoryx_receiver: a message not handed out: ", nullptr);
        }
    }

    // How long a stopping receiver waits for RouDi to mark its unsubscribe done (RouDi's loop
    // takes 100 ms at most; a RouDi gone or stalled would never mark it), and then for RouDi to
    // take the queue off the publishers (microseconds, in the same step, unless RouDi is held
    // up there).
    static constexpr std::chrono::seconds unsubscribe_wait{1};
    static constexpr std::chrono::milliseconds unsubscribe_grace{10};

    iceoryx_receiver_options options_;
    Codec codec_;
    std::shared_ptr<core> core_;
    // The handles' blocks, recycled (handles that outlive the receiver keep it alive).
    framepipe::detail::recycler_handle recycler_;
    std::mutex ended_mu_;
    std::condition_variable_any ended_cv_;
    bool ended_ = false;  // guarded by ended_mu_
    bool started_ = false; // start()'s thread began: the port is used once (start()'s caller's)
    std::jthread thread_; // last: joined before the rest goes
};

} // namespace framepipe::transport
