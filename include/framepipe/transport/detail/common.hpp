// framepipe/transport/detail/common.hpp - what the transport adapters share: the codec
// customization point, the handle a receiver hands out (received<V>), the figures every adapter
// keeps (transport_stats), the bookkeeping that counts losses exactly (gap_counter,
// delivery_ledger), and loss_counted, an output channel whose stats include those losses.
//
// Standard library and framepipe's core only. Included by iceoryx.hpp and nats.hpp.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/channel_wrapper.hpp>
#include <framepipe/detail/recycler.hpp>
#include <framepipe/exposition.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/snapshot.hpp>
#include <framepipe/stamped.hpp>
#include <framepipe/transport/detail/envelope.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace framepipe::transport {

// --- Serialisation: the codec customization point ---------------------------------------------
//
// A codec turns a value into bytes and bytes back into something to read. Write one per payload
// type (examples/common/mat_codecs.hpp has cv::Mat ones: raw for shared memory, raw or JPEG for
// NATS); bytes_codec below is the trivial one.
//
//     struct my_codec {
//         using value_type = Frame;       // what a publisher sends
//         using view_type = FrameView;    // what a receiver hands out (may point into the bytes)
//         void encode(const Frame& f, lender& lend) const;   // calls lend(n) once, writes n bytes
//         std::optional<FrameView> decode(std::span<const std::byte> b) const; // nullopt:
//         malformed
//     };
//
// encode asks the transport for exactly the bytes it needs (lend(n)) and writes them once: with
// iceoryx the span is the loaned shared-memory chunk itself, so the frame is copied once, into
// the chunk; with NATS it is the message buffer. lend throws send_failure when the transport has
// no room (no chunk left, over max_payload): let it propagate; the adapter counts it.
//
// decode must not throw on bad bytes (a message from another program is not trusted): return
// nullopt and the receiver counts the message as malformed and skips it. A view_type may point
// into `b`: the bytes stay valid as long as the handle the receiver hands out lives (the
// iceoryx chunk, the NATS message), and not a moment longer.

// Why a send did not go out.
enum class send_status {
    sent,         // handed to the transport
    no_buffer,    // iceoryx: no chunk could be loaned (mempool exhausted or too small)
    too_large,    // over the transport's limit (NATS max_payload, the largest iceoryx chunk)
    disconnected, // NATS: not connected; the item was dropped, not buffered
    failed,       // the transport refused it for another reason (see last_error in the stats)
    closed,       // the sender was closed
};

[[nodiscard]] constexpr std::string_view to_string(send_status s) noexcept {
    switch (s) {
    case send_status::sent: return "sent";
    case send_status::no_buffer: return "no_buffer";
    case send_status::too_large: return "too_large";
    case send_status::disconnected: return "disconnected";
    case send_status::failed: return "failed";
    case send_status::closed: return "closed";
    }
    return "unknown";
}

// Thrown by a lender that cannot give the bytes asked for; caught by the adapter's send().
class send_failure : public std::runtime_error {
public:
    send_failure(send_status s, const std::string& what) : std::runtime_error(what), status_(s) {}
    [[nodiscard]] send_status status() const noexcept { return status_; }

private:
    send_status status_;
};

// The buffer a transport lends a codec: lend(n) returns n writable bytes (once per encode).
// A non-owning reference to the transport's function, valid during encode() only.
class lender {
public:
    template <class F>
    requires std::is_invocable_r_v<std::span<std::byte>, F&, std::size_t> explicit lender(
        F& f) noexcept
        : object_(&f), call_([](void* o, std::size_t n) { return (*static_cast<F*>(o))(n); }) {}

    // n writable bytes. Throws send_failure when the transport cannot give them.
    [[nodiscard]] std::span<std::byte> operator()(std::size_t n) { return call_(object_, n); }

private:
    void* object_;
    std::span<std::byte> (*call_)(void*, std::size_t);
};

template <class C>
concept codec = requires(const C& c, const typename C::value_type& v, lender& lend,
                         std::span<const std::byte> bytes) {
    typename C::value_type;
    typename C::view_type;
    c.encode(v, lend);
    { c.decode(bytes) } -> std::same_as<std::optional<typename C::view_type>>;
};

// Bytes as they are: a std::vector<std::byte> out, a span over the received bytes back (no copy).
struct bytes_codec {
    using value_type = std::vector<std::byte>;
    using view_type = std::span<const std::byte>;

    void encode(const value_type& v, lender& lend) const {
        const auto out = lend(v.size());
        std::copy(v.begin(), v.end(), out.begin());
    }
    [[nodiscard]] std::optional<view_type> decode(std::span<const std::byte> b) const noexcept {
        return b;
    }
};

// --- What a receiver hands out
// --------------------------------------------------------------------

// One received message: its decoded value and the envelope's figures. The receivers hand it out
// as std::shared_ptr<const received<V>>: the last copy of that pointer to go releases the
// message (the iceoryx chunk back to its mempool, the NATS message back to the heap), so a view
// that points into the bytes stays valid exactly as long as someone holds the handle.
// Reads like a stamped<V> (value, seq, captured, epoch, age()), so code written for frames from
// a local source takes frames from a remote one.
template <class V>
struct received {
    using value_type = V;
    using clock = std::chrono::steady_clock;

    V value;
    std::uint64_t seq = 0;        // the item's own sequence number (the source's frame number)
    clock::time_point captured{}; // capture time, on this host's steady clock
    std::uint64_t epoch = 0;      // the source's connection epoch, as its sender numbered it
    std::uint64_t link_seq = 0;   // the sender's message number
    std::uint64_t sender_id = 0;  // which sender (random per sender object)
    std::string sender;           // its name
    clock::time_point arrived{};  // when the receiver took it from the transport
    // The epoch channels compare (drop_older_epochs): `epoch` plus a base per sender, so that a
    // sender's first epoch counts as at least as new as the newest the receiver saw before it
    // (gap_counter). A camera whose process restarted numbers its connections from 1
    // again, under a new sender id; by its own epoch, every frame of it would be older than the
    // last one of the process before.
    std::uint64_t receiver_epoch = 0;

    // now - captured, clamped to duration::max() or min() as stamped::age() is (a sender's
    // capture time may be anything).
    [[nodiscard]] clock::duration age(clock::time_point now = clock::now()) const noexcept {
        return framepipe::detail::saturating_difference(now.time_since_epoch(),
                                                        captured.time_since_epoch());
    }
    const V& operator*() const noexcept { return value; }
    const V* operator->() const noexcept { return &value; }
};

template <class V>
using received_ptr = std::shared_ptr<const received<V>>;

} // namespace framepipe::transport

// Channels read a received<V>'s capture time and epoch like a stamped<T>'s (max_age,
// drop_older_epochs, the pipeline's age histograms); smart pointers to it follow from stamped.hpp.
template <class V>
struct framepipe::timestamp_traits<framepipe::transport::received<V>> {
    static std::chrono::steady_clock::time_point capture_time(
        const framepipe::transport::received<V>& r) noexcept {
        return r.captured;
    }
};
template <class V>
struct framepipe::epoch_traits<framepipe::transport::received<V>> {
    static std::uint64_t epoch(const framepipe::transport::received<V>& r) noexcept {
        return r.receiver_epoch;
    }
};

namespace framepipe::transport {

// --- What a publisher sends: any framepipe item
// ---------------------------------------------------

namespace detail {

template <class T>
struct is_stamped : std::false_type {};
template <class T>
struct is_stamped<stamped<T>> : std::true_type {};
template <class T>
struct is_stamped<received<T>> : std::true_type {};

// An item's value and figures, whatever shape a channel handed it out in: a stamped<T>, a
// pointer to one (a subscription's shared_ptr<const stamped<T>>), or a bare value (no seq of its
// own: the publisher numbers it).
template <class V>
struct item_view {
    const V* value = nullptr;
    std::optional<std::uint64_t> seq;
    std::uint64_t epoch = 0;
    std::optional<std::chrono::steady_clock::time_point> captured;
};

template <class V, class Item>
[[nodiscard]] item_view<V> view_item(const Item& item) {
    if constexpr (std::is_convertible_v<const Item&, const V&>) {
        return {&static_cast<const V&>(item), std::nullopt, 0, std::nullopt};
    } else if constexpr (is_stamped<std::remove_cv_t<Item>>::value) {
        return {&item.value, item.seq, item.epoch, item.captured};
    } else if constexpr (requires {
                             *item;
                             item == nullptr;
                         }) {
        if (item == nullptr) {
            throw std::invalid_argument("framepipe transport: cannot send a null pointer");
        }
        return view_item<V>(*item);
    } else {
        static_assert(std::is_convertible_v<const Item&, const V&>,
                      "framepipe transport: send() takes the codec's value_type, a stamped one, "
                      "or a pointer to either");
        return {};
    }
}

} // namespace detail

// --- Figures ----------------------------------------------------------------------------------

// What an adapter counts. Losses are told apart by where they happened:
//   in the engine:  lost_in_transport (sequence gaps seen by a receiver that sees the whole
//                   stream; for a queue group, frames no member acknowledged, counted by the
//                   publisher from receipts), slow_consumer_dropped (the NATS client's own
//                   pending limit), send failures (no_buffer, too_large, disconnected, failed);
//   in framepipe:   the output channel's own stats (a latest_slot's evictions), shown in the
//                   pipeline's snapshot (with the gaps too, as lost_in_transport, when the
//                   output channel is a loss_counted);
//   in the consumer: its subscription's counters (rate_limited, expired).
struct transport_stats {
    live_state state =
        live_state::stopped; // connecting, streaming, stalled, backoff, failed, stopped
    std::uint64_t epoch = 0; // connections made (1 after the first connect)
    std::uint64_t connects = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t disconnects = 0;
    // Sending.
    std::uint64_t sent = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t no_buffer = 0;
    std::uint64_t too_large = 0;
    std::uint64_t disconnected = 0;
    std::uint64_t send_failed = 0;
    // Receiving.
    // Well-formed messages taken from the transport and read (not those dropped_at_stop).
    std::uint64_t received = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t malformed = 0; // counted and skipped
    std::uint64_t lost_in_transport = 0;
    // At most gap_counter::max_gap older than one already received from the same sender: a
    // duplicate, or a reordered message whose gap was not counted lost (more than
    // gap_counter::late_window behind, or a queue group member's). Counted and skipped, never
    // handed out.
    std::uint64_t out_of_order = 0;
    // Reordered messages that came after their gap had been counted in lost_in_transport (up to
    // gap_counter::late_window behind): skipped, never handed out, and not `received`, so the
    // frame stays counted once, as lost.
    std::uint64_t late_arrivals = 0;
    // A link_seq more than gap_counter::max_gap away from the one expected (forged, corrupt):
    // handed out, and the sender's count starts again there; nothing counted lost.
    std::uint64_t link_resets = 0;
    std::uint64_t slow_consumer_dropped = 0;
    std::uint64_t delivered = 0; // handed to the output channel
    // The output channel did not accept it: closed, rejected, a push cancelled by the
    // receiver's stop(); either receiver (iceoryx or NATS) also counts a push that threw
    // (last_error: why).
    std::uint64_t refused = 0;
    // Messages the transport had handed to this receiver that its stop() discarded unhanded:
    // those still queued in the client (the NATS subscription, the iceoryx subscriber's queue)
    // and those taken after stop() began. Neither received nor delivered: their envelopes are
    // read for the gaps (and a queue group's receipts), their payloads never decoded; the few
    // nats.c discards unread when stop() cannot drain the subscription are counted too.
    std::uint64_t dropped_at_stop = 0;
    std::uint64_t senders = 0;   // distinct senders seen
    // Receipts (queue groups): the publisher's side of the accounting.
    std::uint64_t acknowledged = 0;     // frames some receiver acknowledged
    // Receipts for frames no longer in the ledger: counted as lost (or, rarely, acknowledged
    // more than loss_horizon before, by another receiver).
    std::uint64_t late_receipts = 0;
    // Second receipts for a frame acknowledged already: several receivers (two queue groups, or
    // a plain subscriber beside one) answering on one receipt subject. Not a loss.
    std::uint64_t duplicate_receipts = 0;
    std::uint64_t pending_receipts = 0; // frames sent and not yet acknowledged nor lost
    std::string last_error;
};

namespace detail {

// Relaxed atomics: statistics; nothing else is ordered by them.
struct counters {
    std::atomic<live_state> state{live_state::stopped};
    std::atomic<std::uint64_t> epoch{0}, connects{0}, reconnects{0}, disconnects{0}, sent{0},
        bytes_sent{0}, no_buffer{0}, too_large{0}, disconnected{0}, send_failed{0}, received{0},
        bytes_received{0}, malformed{0}, lost_in_transport{0}, out_of_order{0}, late_arrivals{0},
        link_resets{0},
        slow_consumer_dropped{0}, delivered{0}, refused{0}, dropped_at_stop{0}, senders{0},
        acknowledged{0}, late_receipts{0}, duplicate_receipts{0}, pending_receipts{0};
    mutable std::mutex error_mu;
    std::string last_error; // guarded by error_mu

    void error(std::string why) {
        const std::lock_guard<std::mutex> lock(error_mu);
        last_error = std::move(why);
    }

    [[nodiscard]] transport_stats snapshot() const {
        transport_stats s;
        const auto r = [](const std::atomic<std::uint64_t>& a) {
            return a.load(std::memory_order_relaxed);
        };
        s.state = state.load(std::memory_order_relaxed);
        s.epoch = r(epoch);
        s.connects = r(connects);
        s.reconnects = r(reconnects);
        s.disconnects = r(disconnects);
        s.sent = r(sent);
        s.bytes_sent = r(bytes_sent);
        s.no_buffer = r(no_buffer);
        s.too_large = r(too_large);
        s.disconnected = r(disconnected);
        s.send_failed = r(send_failed);
        s.received = r(received);
        s.bytes_received = r(bytes_received);
        s.malformed = r(malformed);
        s.lost_in_transport = r(lost_in_transport);
        s.out_of_order = r(out_of_order);
        s.late_arrivals = r(late_arrivals);
        s.link_resets = r(link_resets);
        s.slow_consumer_dropped = r(slow_consumer_dropped);
        s.delivered = r(delivered);
        s.refused = r(refused);
        s.dropped_at_stop = r(dropped_at_stop);
        s.senders = r(senders);
        s.acknowledged = r(acknowledged);
        s.late_receipts = r(late_receipts);
        s.duplicate_receipts = r(duplicate_receipts);
        s.pending_receipts = r(pending_receipts);
        const std::lock_guard<std::mutex> lock(error_mu);
        s.last_error = last_error;
        return s;
    }

    void count(send_status s) noexcept {
        switch (s) {
        case send_status::sent: sent.fetch_add(1, std::memory_order_relaxed); break;
        case send_status::no_buffer: no_buffer.fetch_add(1, std::memory_order_relaxed); break;
        case send_status::too_large: too_large.fetch_add(1, std::memory_order_relaxed); break;
        case send_status::disconnected: disconnected.fetch_add(1, std::memory_order_relaxed); break;
        case send_status::failed:
        case send_status::closed: send_failed.fetch_add(1, std::memory_order_relaxed); break;
        }
    }
};

// Throws std::invalid_argument naming `field` unless `k` is one of message_kind's values (an
// option set from an integer: static_cast<message_kind>(7)).
inline void check_kind(message_kind k, const char* field) {
    if (k != message_kind::frame && k != message_kind::result && k != message_kind::receipt) {
        throw std::invalid_argument(std::string(field) + ": not a message_kind (frame, result, "
                                    "receipt): " + std::to_string(static_cast<std::uint32_t>(k)));
    }
}

// Counts losses from link_seq gaps, per sender. One thread (the receiver's).
//
// link_seq comes from the wire and is not trusted: it is compared modulo 2^64 (a sender's count
// wraps from UINT64_MAX to 0 without a gap), and only within max_gap of the link_seq expected next.
// A message up to max_gap ahead of it is the next one, the messages skipped over lost; up to
// max_gap behind it (a duplicate, or reordered), out_of_order: the receivers count it and skip it,
// so an old message never replaces a newer one; but one of the late_window messages just before the
// newest whose gap was counted lost is `late` instead (each sender's gaps among them are kept in a
// bit mask), so that a reordered frame is counted once, as lost. Further away either way (a forged
// or corrupt link_seq, a gap no real stream has), a reset: the sender's count starts again at this
// message, as for a new sender, and nothing is counted lost; a forged jump so costs a reset, and
// the real sender's next message another, instead of 2^62 phantom losses and a stream read as old.
//
// Remembers the max_senders senders seen most recently: a sender not seen since max_senders
// others were is forgotten (a dead or restarted sender: each sender object has a random id), and
// counts as a new sender if it shows up again. O(1) per message; allocates nothing per message
// once max_senders senders have been seen (a forgotten sender's entry is reused for the next).
class gap_counter {
public:
    struct result {
        std::uint64_t lost = 0;    // messages skipped over by this one
        bool out_of_order = false; // at most max_gap older than expected: a duplicate or reordered
        // Reordered, and its gap already counted in the `lost` of a later message (at most
        // late_window behind): now remembered as arrived, so a second copy is out_of_order.
        bool late = false;
        bool reset = false;        // more than max_gap from the link_seq expected: counted afresh
        bool new_sender = false;
        std::uint64_t epoch = 0;   // the receiver's epoch of the message (received::receiver_epoch)
    };

    // Records message `link_seq` from `sender`, of the sender's connection epoch `epoch`. A new
    // sender starts its count at the first message seen: what it sent before this receiver was
    // there was not meant for it. Any link_seq is accepted (see the class comment). The result's
    // epoch is `epoch` plus the sender's base, set when the sender is first seen so that its
    // first epoch counts as at least as new as the newest seen before (from any sender):
    // a restarted sender's epochs, which start at 1 again, are then not older than its
    // predecessor's, and senders that start together at one epoch stay equal (saturating at
    // UINT64_MAX). Exceptions: std::bad_alloc (a new sender, while fewer than max_senders are
    // known), with nothing changed.
    [[nodiscard]] result see(std::uint64_t sender, std::uint64_t link_seq,
                             std::uint64_t epoch = 0) {
        result r;
        const auto found = index_.find(sender);
        if (found == index_.end()) {
            r.new_sender = true;
            const std::uint64_t base = epoch < top_epoch_ ? top_epoch_ - epoch : 0;
            remember(sender, link_seq + 1, base); // wraps to 0 after UINT64_MAX: modulo 2^64
            r.epoch = raised(base, epoch);
            return r;
        }
        const auto it = found->second;
        order_.splice(order_.begin(), order_, it); // the most recently seen, first
        r.epoch = raised(it->epoch_base, epoch);
        const std::uint64_t ahead = link_seq - it->next; // modulo 2^64, as the link_seq wraps
        const std::uint64_t behind = it->next - link_seq;
        if (ahead <= max_gap) {
            r.lost = ahead;
            // Bit i stands for link_seq next - 1 - i: the older bits move up by ahead + 1, and
            // the `ahead` skipped over (bits 1 to ahead) are gaps; bit 0, this one, arrived.
            const std::uint64_t gaps = ahead >= late_window - 1
                                           ? ~std::uint64_t{1}
                                           : ((std::uint64_t{1} << ahead) - 1) << 1;
            it->gaps = (ahead + 1 >= late_window ? 0 : it->gaps << (ahead + 1)) | gaps;
        } else if (behind <= max_gap) {
            // `next` stays: the stream goes on where it was.
            const std::uint64_t bit =
                behind <= late_window ? std::uint64_t{1} << (behind - 1) : 0;
            if ((it->gaps & bit) != 0) {
                it->gaps &= ~bit;
                r.late = true;
            } else {
                r.out_of_order = true;
            }
            return r;
        } else {
            r.reset = true;
            it->gaps = 0;
        }
        it->next = link_seq + 1;
        return r;
    }

    // Senders remembered now (at most max_senders).
    [[nodiscard]] std::size_t senders() const noexcept { return index_.size(); }

    static constexpr std::size_t max_senders = 1024;
    // The largest gap counted as lost, and the furthest back a message counts as out of order:
    // 2^20 (9.7 hours of a 30 fps stream). A real gap beyond it (a receiver cut off for longer)
    // is a reset, not counted lost.
    static constexpr std::uint64_t max_gap = std::uint64_t{1} << 20;
    // How far back a sender's gaps are remembered: a message up to this many before the one
    // expected next whose gap was counted lost is `late`, not out_of_order.
    static constexpr std::uint64_t late_window = 64;

private:
    struct entry {
        std::uint64_t sender;
        std::uint64_t next;       // the link_seq expected next
        std::uint64_t epoch_base; // added to the sender's epochs
        // Bit i: link_seq next - 1 - i was counted lost and has not arrived (late_window bits).
        std::uint64_t gaps = 0;
    };
    using list = std::list<entry>;

    // base + epoch, saturating; and the highest epoch seen follows it.
    std::uint64_t raised(std::uint64_t base, std::uint64_t epoch) noexcept {
        const std::uint64_t e =
            epoch > std::numeric_limits<std::uint64_t>::max() - base
                ? std::numeric_limits<std::uint64_t>::max()
                : base + epoch;
        top_epoch_ = std::max(top_epoch_, e);
        return e;
    }

    void remember(std::uint64_t sender, std::uint64_t next, std::uint64_t epoch_base) {
        if (index_.size() < max_senders) {
            order_.push_front({sender, next, epoch_base});
            try {
                index_.emplace(sender, order_.begin());
            } catch (...) {
                order_.pop_front();
                throw;
            }
            return;
        }
        // Full: the least recently seen sender's entry, and its map node, become the new one's.
        const auto lru = std::prev(order_.end());
        auto node = index_.extract(lru->sender);
        node.key() = sender;
        lru->sender = sender;
        lru->next = next;
        lru->epoch_base = epoch_base;
        lru->gaps = 0;
        order_.splice(order_.begin(), order_, lru);
        index_.insert(std::move(node));
    }

    list order_; // most recently seen first
    std::uint64_t top_epoch_ = 0; // the highest epoch seen (the result's, of any message)
    std::unordered_map<std::uint64_t, list::iterator> index_;
};

// The publisher's side of a queue group's accounting: every frame sent waits for a receipt from
// whichever member got it; a frame without one after `horizon` is lost in transport (never
// delivered, dropped by a member's client for a slow consumer, or in flight to a member that
// died). Any thread; one short mutex.
class delivery_ledger {
public:
    explicit delivery_ledger(std::chrono::nanoseconds horizon) : horizon_(horizon) {}

    void sent(std::uint64_t link_seq, std::chrono::steady_clock::time_point now) {
        const std::lock_guard<std::mutex> lock(mu_);
        if (pending_.empty()) {
            first_ = link_seq;
        }
        // link_seq is contiguous per sender: the index is link_seq - first_.
        while (first_ + pending_.size() < link_seq) { // never sent (cannot happen): not lost
            pending_.push_back({now, true});
        }
        pending_.push_back({now, false});
        ++waiting_;
    }

    enum class receipt_result {
        acknowledged, // the frame was waiting for it
        duplicate,    // the frame is in the ledger, acknowledged already (another receiver's)
        late,         // the frame has left the ledger: counted lost, or acknowledged over the
                      // horizon ago (or never sent: a forged link_seq)
    };
    // A receipt for `link_seq`. An acknowledged one is added to `acknowledged` (when given) under
    // the lock, before the ledger can look settled, so that a settle() that sees nothing waiting
    // also sees it.
    [[nodiscard]] receipt_result receipt(std::uint64_t link_seq,
                                         std::atomic<std::uint64_t>* acknowledged = nullptr) {
        const std::lock_guard<std::mutex> lock(mu_);
        if (link_seq < first_ || link_seq >= first_ + pending_.size()) {
            return receipt_result::late;
        }
        auto& e = pending_[framepipe::detail::to<std::size_t>(link_seq - first_)];
        if (e.acknowledged) {
            return receipt_result::duplicate;
        }
        e.acknowledged = true;
        if (acknowledged != nullptr) {
            acknowledged->fetch_add(1, std::memory_order_relaxed);
        }
        if (--waiting_ == 0) {
            settled_.notify_all(); // under the lock: a settle() may free the ledger on return
        }
        return receipt_result::acknowledged;
    }

    // Parks until no frame waits for its receipt, or until `deadline`: true if none waits.
    // Any thread.
    [[nodiscard]] bool wait_settled_until(std::chrono::steady_clock::time_point deadline) {
        std::unique_lock<std::mutex> lock(mu_);
        return settled_.wait_until(lock, deadline, [this] { return waiting_ == 0; });
    }

    // Frames older than the horizon still without a receipt: returns how many are now lost.
    // They are added to `lost_counter` (when given) under the lock, as receipt() adds to its own.
    std::uint64_t expire(std::chrono::steady_clock::time_point now,
                         std::atomic<std::uint64_t>* lost_counter = nullptr) {
        const std::lock_guard<std::mutex> lock(mu_);
        std::uint64_t lost = 0;
        while (!pending_.empty() &&
               (now - pending_.front().sent > horizon_ || pending_.size() > max_pending)) {
            if (!pending_.front().acknowledged) {
                ++lost;
                --waiting_;
            }
            pending_.pop_front();
            ++first_;
        }
        if (lost_counter != nullptr) {
            lost_counter->fetch_add(lost, std::memory_order_relaxed);
        }
        if (lost != 0 && waiting_ == 0) {
            settled_.notify_all();
        }
        return lost;
    }

    [[nodiscard]] std::uint64_t waiting() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return waiting_;
    }

    static constexpr std::size_t max_pending = 1 << 16;

private:
    struct entry {
        std::chrono::steady_clock::time_point sent;
        bool acknowledged = false;
    };
    const std::chrono::nanoseconds horizon_;
    mutable std::mutex mu_;
    std::condition_variable settled_; // waiting_ reached 0
    std::deque<entry> pending_; // guarded by mu_
    std::uint64_t first_ = 0;   // link_seq of pending_.front()
    std::uint64_t waiting_ = 0;
};

// Tells a receiver's output channel of `lost` messages that never arrived, when it keeps count
// of them (loss_counted); other channels are not told (the receiver's stats() have them).
template <class Out>
void note_lost(Out& out, std::uint64_t lost) noexcept {
    if constexpr (requires { out.count_lost(lost); }) {
        if (lost != 0) {
            out.count_lost(lost);
        }
    }
}

// Pushes a receiver's handle into its output channel (push or publish); true if it went in.
// With `stop`, the channel's push(item, stop) (or publish(item, stop)) where it has one, so that
// a push waiting for room ends when `stop` is requested (and the item is not in); a channel
// without one is pushed as without `stop`.
template <class Out, class H>
bool push_item(Out& out, H&& h, const std::stop_token* stop = nullptr) {
    if (stop != nullptr) {
        if constexpr (requires {
                          { out.push(std::forward<H>(h), *stop) } -> std::same_as<push_status>;
                      }) {
            return accepted(out.push(std::forward<H>(h), *stop));
        } else if constexpr (requires { out.push(std::forward<H>(h), *stop); }) {
            out.push(std::forward<H>(h), *stop);
            return true;
        } else if constexpr (requires { out.publish(std::forward<H>(h), *stop); }) {
            const auto r = out.publish(std::forward<H>(h), *stop);
            return r.delivered > 0 || r.subscribers == 0;
        }
    }
    if constexpr (requires {
                      { out.push(std::forward<H>(h)) } -> std::same_as<push_status>;
                  }) {
        return accepted(out.push(std::forward<H>(h)));
    } else if constexpr (requires { out.push(std::forward<H>(h)); }) {
        out.push(std::forward<H>(h));
        return true;
    } else {
        const auto r = out.publish(std::forward<H>(h));
        return r.delivered > 0 || r.subscribers == 0;
    }
}

// deliver()'s body: `stop` may be null.
template <class Out, class H>
void deliver_counted(Out& out, H&& h, counters& c, const std::stop_token* stop) {
    c.delivered.fetch_add(1, std::memory_order_relaxed);
    bool in = false;
    try {
        in = push_item(out, std::forward<H>(h), stop);
    } catch (...) {
        c.delivered.fetch_sub(1, std::memory_order_relaxed); // nothing was handed over
        throw;
    }
    if (!in) {
        c.refused.fetch_add(1, std::memory_order_relaxed);
        c.delivered.fetch_sub(1, std::memory_order_relaxed);
    }
}

// Hands a receiver's handle to its output channel and counts it. It is counted as delivered
// before the push, so that a consumer that has popped it, and then reads stats(), finds it
// counted (the push's release orders the increment before the pop); a push that refuses it
// moves it to refused. A snapshot taken during that push may count it in both, for that moment.
// Exceptions: what the push throws (counted as neither, and passed on).
template <class Out, class H>
void deliver(Out& out, H&& h, counters& c) {
    deliver_counted(out, std::forward<H>(h), c, nullptr);
}

// As deliver(out, h, c), through push_item's `stop` form: a push waiting for room ends when
// `stop` is requested, and the handle is counted as refused.
template <class Out, class H>
void deliver(Out& out, H&& h, counters& c, const std::stop_token& stop) {
    deliver_counted(out, std::forward<H>(h), c, &stop);
}

// An adapter's figures as a pipeline shows a supervised source's (snapshot, Prometheus text as
// framepipe_source_*, DOT).
[[nodiscard]] inline source_status to_source_status(const transport_stats& st) {
    source_status out;
    out.state = std::string(to_string(st.state));
    for (const live_state s : all_live_states) {
        out.states.emplace_back(to_string(s));
    }
    const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
    out.counters = {
        {"connects", "Connections the transport made.", n(st.connects)},
        {"reconnects", "Connections made after the first.", n(st.reconnects)},
        {"disconnects", "Connections lost.", n(st.disconnects)},
        {"transport_received", "Well-formed messages taken from the transport.", n(st.received)},
        {"transport_bytes_received", "Bytes of those messages.", n(st.bytes_received)},
        {"transport_malformed", "Messages that could not be read (counted and skipped).",
         n(st.malformed)},
        {"lost_in_transport", "Messages the transport lost (sequence gaps, or no receipt).",
         n(st.lost_in_transport)},
        {"transport_out_of_order", "Messages older than one already received (skipped).",
         n(st.out_of_order)},
        {"transport_late_arrivals", "Reordered messages already counted lost (skipped).",
         n(st.late_arrivals)},
        {"transport_link_resets", "Messages whose link_seq restarted their sender's count.",
         n(st.link_resets)},
        {"slow_consumer_dropped", "Messages the client dropped over its pending limit.",
         n(st.slow_consumer_dropped)},
        {"transport_delivered", "Messages handed to the output channel.", n(st.delivered)},
        {"transport_refused", "Messages the output channel did not accept.", n(st.refused)},
        {"transport_dropped_at_stop", "Messages the receiver's stop() discarded unhanded.",
         n(st.dropped_at_stop)},
    };
    out.gauges = {
        {"epoch", "The transport's current connection number.", n(st.epoch)},
        {"transport_senders", "Distinct senders seen.", n(st.senders)},
    };
    return out;
}

// A received item and what gives its message back (the iceoryx chunk to its mempool, the NATS
// message to nats.c), in one block: the handle's last copy to go runs `release`.
template <class V, class Release>
struct received_block {
    received<V> item;
    Release release;

    received_block(received<V> r, Release rel) : item(std::move(r)), release(std::move(rel)) {}
    received_block(const received_block&) = delete;
    received_block& operator=(const received_block&) = delete;
    ~received_block() { release(); }
};

// The handle of a received message: its envelope's fields (the capture time on this host's
// clock, as local_capture_time gives it; now as its arrival) and its decoded view, in one block
// that comes from the receiver's recycler and goes back to it, so that a receiver allocates
// nothing per message in the steady state (a sender's name longer than std::string's inline
// buffer, 15 bytes in libstdc++, is the exception). `release` gives the message back when the
// last copy of the handle goes; it runs at once if the handle cannot be made (and the exception
// is passed on).
template <class V, class Release>
[[nodiscard]] received_ptr<V> make_received(framepipe::detail::block_recycler* recycler, V value,
                                            const envelope& e, std::uint64_t receiver_epoch,
                                            Release release) {
    using block = received_block<V, Release>;
    std::shared_ptr<block> b;
    try {
        const auto arrived = std::chrono::steady_clock::now();
        b = std::allocate_shared<block>(
            framepipe::detail::recycling_allocator<block>(recycler),
            received<V>{std::move(value), e.seq, local_capture_time(e, arrived), e.epoch,
                        e.link_seq, e.sender_id, std::string(e.sender_name()), arrived,
                        receiver_epoch},
            release);
    } catch (...) {
        release(); // no block was made: nothing else will give the message back
        throw;
    }
    const received<V>* item = &b->item;
    return received_ptr<V>(std::move(b), item); // shares the block's count: no second allocation
}

// A publisher's pump(): pops items from `in` and sends each through `out`, until `in` is closed
// and drained or `stop` is requested. Returns how many were sent.
template <class Publisher, class In>
std::uint64_t pump(Publisher& out, In& in, std::stop_token stop) {
    std::uint64_t n = 0;
    while (auto item = in.pop(stop)) {
        if (out.send(*item) == send_status::sent) {
            ++n;
        }
    }
    return n;
}

} // namespace detail

// A publisher's (or receiver's) figures as Prometheus text, for a /metrics that also shows what
// is not a pipeline stage (a publisher is called from a sink): framepipe_transport_*{pipeline,
// link} counters and a state gauge per state. `pipeline` and `link` are label values (escaped as
// to_prometheus(pipeline_snapshot) does: quotes, backslashes, newlines; ill-formed UTF-8 becomes
// U+FFFD). One link per /metrics body: each call writes the families' HELP and
// TYPE lines, which Prometheus accepts once. May throw std::bad_alloc.
[[nodiscard]] inline std::string to_prometheus(const transport_stats& s, std::string_view pipeline,
                                               std::string_view link) {
    const auto esc = [](std::string_view v) { return framepipe::detail::prometheus_escape(v); };
    const std::string labels = "pipeline=\"" + esc(pipeline) + "\",link=\"" + esc(link) + "\"";
    std::string out;
    const auto counter = [&](const char* name, const char* help, std::uint64_t v) {
        out += std::string("# HELP framepipe_transport_") + name + "_total " + help + "\n";
        out += std::string("# TYPE framepipe_transport_") + name + "_total counter\n";
        out += std::string("framepipe_transport_") + name + "_total{" + labels + "} " +
               std::to_string(v) + "\n";
    };
    counter("sent", "Messages handed to the transport.", s.sent);
    counter("bytes_sent", "Bytes of those messages, envelopes included.", s.bytes_sent);
    counter("no_buffer", "Sends skipped: no iceoryx chunk to loan.", s.no_buffer);
    counter("too_large", "Sends refused: over max_payload or the largest chunk.", s.too_large);
    counter("disconnected", "Sends dropped while the connection was down.", s.disconnected);
    counter("send_failed", "Sends the transport refused for another reason.", s.send_failed);
    counter("acknowledged", "Frames a queue group member acknowledged (receipts).", s.acknowledged);
    counter("lost_in_transport", "Messages the transport lost (gaps, or no receipt in time).",
            s.lost_in_transport);
    counter("late_receipts", "Receipts for frames no longer in the ledger (counted lost).",
            s.late_receipts);
    counter("duplicate_receipts", "Second receipts for frames acknowledged already.",
            s.duplicate_receipts);
    counter("received", "Well-formed messages received.", s.received);
    counter("delivered", "Received messages handed to the output channel.", s.delivered);
    counter("refused", "Received messages the output channel did not accept.", s.refused);
    counter("out_of_order", "Messages older than one already received (counted, skipped).",
            s.out_of_order);
    counter("late_arrivals", "Reordered messages already counted lost (skipped).",
            s.late_arrivals);
    counter("link_resets", "Link sequence numbers far from the one expected (count restarted).",
            s.link_resets);
    counter("malformed", "Messages that could not be read (counted and skipped).", s.malformed);
    counter("slow_consumer_dropped", "Messages the client dropped over its pending limit.",
            s.slow_consumer_dropped);
    counter("dropped_at_stop", "Messages a receiver's stop() discarded unhanded.",
            s.dropped_at_stop);
    counter("reconnects", "Connections made after the first.", s.reconnects);
    // Not a counter: frames in the ledger now, so that sent == acknowledged + lost_in_transport
    // + pending_receipts can be checked before settle().
    out += "# HELP framepipe_transport_pending_receipts Frames sent, not yet acknowledged nor "
           "counted lost.\n";
    out += "# TYPE framepipe_transport_pending_receipts gauge\n";
    out += "framepipe_transport_pending_receipts{" + labels + "} " +
           std::to_string(s.pending_receipts) + "\n";
    out += "# HELP framepipe_transport_state 1 for the link's state, 0 for the others.\n";
    out += "# TYPE framepipe_transport_state gauge\n";
    for (const live_state st : all_live_states) {
        out += "framepipe_transport_state{" + labels + ",state=\"" + std::string(to_string(st)) +
               "\"} " + (st == s.state ? "1" : "0") + "\n";
    }
    return out;
}

// --- An output channel that counts the transport's losses ---------------------------------------

// A receiver's output channel that also counts the messages lost on their way to it (sequence
// gaps: a receiver that sees the whole stream, an iceoryx receiver or a NATS subscription outside
// a queue group, calls count_lost()). Its stats() are the channel's with those added to pushed,
// dropped and lost_in_transport, so the accounting identity of channel.hpp holds and a pipeline's
// snapshot and /metrics show the loss on the channel, beside its own evictions:
//
//     framepipe::latest_slot<item> newest;
//     framepipe::transport::loss_counted frames(newest);
//     receiver.start(frames);  p.channel(frames, "frames");  p.sink("detector", frames, ...);
//
// A queue group's losses are not seen by its members (the publisher counts them from receipts).
template <class Channel>
class loss_counted : public framepipe::detail::channel_wrapper<Channel> {
    using base = framepipe::detail::channel_wrapper<Channel>;

public:
    using value_type = typename Channel::value_type;

    // Wraps `channel`, which must outlive this object.
    explicit loss_counted(Channel& channel) noexcept : base(channel) {}

    // The channel's push: same threads, waits and exceptions.
    push_status push(value_type item) { return this->channel_.push(std::move(item)); }
    push_status push(value_type item, std::stop_token stop) {
        return this->channel_.push(std::move(item), std::move(stop));
    }
    push_status try_push(value_type item)
        requires requires(Channel& c, value_type v) { c.try_push(std::move(v)); }
    {
        return this->channel_.try_push(std::move(item));
    }

    // Counts `n` messages that never arrived. Any thread; wait-free.
    void count_lost(std::uint64_t n) noexcept {
        // Relaxed: a statistics counter; nothing is ordered by it.
        lost_.fetch_add(n, std::memory_order_relaxed);
    }

    // The channel's counters, with the lost messages added to pushed, dropped and
    // lost_in_transport; only for a channel that keeps counters. Any thread.
    [[nodiscard]] channel_stats stats() const
        requires framepipe::detail::channel_wrapper<Channel>::has_stats
    {
        return this->stats_with(&channel_stats::lost_in_transport,
                                lost_.load(std::memory_order_relaxed));
    }

    // The description of the wrapped channel that its channel_traits give (only for a channel
    // they describe; see channel_traits::describe), with the lost messages added to its counters
    // as in stats() (a sliding_window counts windows: the figures then mix its windows with the
    // messages lost). A pipeline shows it. Any thread; throws what the channel's description
    // throws (std::bad_alloc).
    [[nodiscard]] channel_description description() const
        requires framepipe::detail::described_by_traits<Channel>
    {
        return this->describe_with(&channel_stats::lost_in_transport,
                                   lost_.load(std::memory_order_relaxed));
    }

    // The messages counted lost so far. Any thread.
    [[nodiscard]] std::uint64_t lost_in_transport() const noexcept {
        return lost_.load(std::memory_order_relaxed);
    }

private:
    std::atomic<std::uint64_t> lost_{0};
};

} // namespace framepipe::transport

// How a pipeline shows a loss_counted channel: as the channel it wraps, with its own stats(), or
// with the description the wrapped channel's traits give, the losses added.
template <class Channel>
struct framepipe::channel_traits<framepipe::transport::loss_counted<Channel>> {
    static constexpr std::string_view kind = channel_traits<Channel>::kind;
    static constexpr bool one_producer = channel_traits<Channel>::one_producer;
    static constexpr bool one_consumer = channel_traits<Channel>::one_consumer;
    static channel_description describe(const framepipe::transport::loss_counted<Channel>& c)
        requires framepipe::detail::described_by_traits<Channel>
    {
        return c.description();
    }
};
