// framepipe/broadcaster.hpp - one producer's values, shared with every subscriber, each at its
// own buffer, drop policy and rate.
//
//     framepipe::broadcaster<Frame> frames;
//     auto ui  = frames.subscribe({.capacity = 1, .max_rate_hz = 15, .name = "ui"});
//     auto det = frames.subscribe({.capacity = 1, .name = "detector"});
//     frames.publish(std::move(frame));                  // or a std::shared_ptr<const Frame>
//     frames.publish(std::move(frame), stop);            // a wait for back-pressure ends on stop
//     std::optional<std::shared_ptr<const Frame>> f = det.pop();
//
// Zero copy: a published value is held by one shared_ptr<const T>; each subscriber gets a copy
// of the pointer, never of the value. Publishing a shared_ptr (for example one lent by a
// framepipe::pool) allocates nothing; publishing a T puts it in a block that the broadcaster
// recycles, so a steady stream allocates nothing after the first few (or none, after
// reserve()). The broadcaster keeps the latest value (for replay_last) until the next publish or
// close(): size a frame pool with one buffer for it.
//
// Isolation: a subscriber with a drop policy (drop_oldest, drop_newest) never makes publish wait,
// however slowly it reads; it drops instead, and its counters say so. A subscriber with
// overflow::block asks for back-pressure: publish waits for room in its buffer (up to its
// block_timeout, if one is set, then evicts its oldest item). Publish serves the drop-policy
// subscribers first and the blocking ones last, so a blocking subscriber delays the next value,
// never the other subscribers' copy of this one.
//
// Thread safety: publish, subscribe, unsubscribe (destroying a subscription), close and stats
// may all be called from any thread at any time, concurrently. Several threads may publish; each
// subscription then sees each publisher's values in order. A subscription's pop calls follow
// ring<T>'s rules (any number of consumer threads). Publish holds the broadcaster's mutex while
// it offers a value to the drop-policy subscribers (pushes that never wait), not while it waits
// for a blocking one; no value's last reference is released under it, so T's destructor or a
// pool's deleter may call into the broadcaster.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/recycler.hpp>
#include <framepipe/rate_limiter.hpp>
#include <framepipe/ring.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace framepipe {

// How one subscriber wants to be fed. An aggregate for designated initialisers.
struct subscription_options {
    std::size_t capacity = 1;                 // buffered values (1: a latest slot)
    overflow policy = overflow::drop_oldest;  // what a full buffer does with a new value
    std::optional<std::chrono::nanoseconds> block_timeout{}; // overflow::block only, see ring
    double max_rate_hz = 0;                   // values offered per second at most; 0: unlimited
    std::optional<std::chrono::nanoseconds> max_age{};       // discard older values at pop
    // Start with the latest value published before subscribing (none if that was a null pointer).
    bool replay_last = false;
    bool drop_older_epochs = false; // refuse values from an older epoch (see ring_options)
    std::string name{};       // for stats; "subscriber-N" when empty
};

// What one publish did, counted in subscriptions.
struct publish_result {
    std::size_t subscribers = 0;  // attached when the value was published
    std::size_t delivered = 0;    // took the value (whether or not they evicted to do so)
    std::size_t evicted = 0;      // took it by dropping their oldest value
    std::size_t rejected = 0;     // refused it: full under drop_newest, or an older epoch
                                  // under drop_older_epochs (any policy)
    std::size_t cancelled = 0;    // refused it: a wait for room (overflow::block) was stopped
    std::size_t rate_limited = 0; // skipped it: their max_rate_hz allowed no value now
    std::size_t closed = 0;       // their subscription (or the broadcaster) was closed
    bool broadcaster_closed = false; // the broadcaster itself was closed: nobody will get values

    // Subscriptions that dropped something because of this publish.
    [[nodiscard]] std::size_t dropped() const noexcept {
        return evicted + rejected + cancelled + rate_limited + closed;
    }
};

// One subscription's counters, by name.
struct subscription_stats {
    std::string name;
    channel_stats stats;
};

template <class T>
class broadcaster;

namespace detail {

template <class T>
struct subscriber {
    subscriber(const subscription_options& o, std::string n)
        : name(std::move(n)),
          channel(ring_options{.capacity = o.capacity,
                               .policy = o.policy,
                               .block_timeout = o.block_timeout,
                               .max_age = o.max_age,
                               .drop_older_epochs = o.drop_older_epochs}),
          blocking(o.policy == overflow::block) {
        if (o.max_rate_hz > 0) {
            limiter.emplace(o.max_rate_hz);
        }
    }

    // Counters seen by the subscription: the ring's, plus values skipped by the rate limit,
    // which were offered (pushed) and dropped without reaching the ring.
    [[nodiscard]] channel_stats stats() const {
        channel_stats s = channel.stats();
        const auto limited = rate_limited.load(std::memory_order_relaxed);
        s.rate_limited = limited;
        s.pushed += limited;
        s.dropped += limited;
        return s;
    }

    const std::string name;
    ring<std::shared_ptr<const T>> channel;
    std::optional<rate_limiter> limiter;
    const bool blocking;
    // Relaxed: a statistics counter; readers need no ordering with the values themselves.
    std::atomic<std::uint64_t> rate_limited{0};
};

template <class T>
using subscriber_list = std::vector<std::shared_ptr<subscriber<T>>>;

// State shared by a broadcaster and its subscriptions, so either may go first.
template <class T>
struct broadcast_core {
    mutable std::mutex mu;
    // Where publish(T) puts each value and its shared_ptr control block (one block each):
    // released blocks come back here, so a steady stream allocates nothing. (Values still held
    // elsewhere when the broadcaster goes keep it alive.)
    recycler_handle recycler;
    // Copy-on-write: subscribe / unsubscribe build a new list. Drop-policy subscribers come
    // first; publish offers to them under mu, and copies this pointer (no allocation) to walk
    // the blocking ones unlocked.
    std::shared_ptr<const subscriber_list<T>> subscribers = std::make_shared<subscriber_list<T>>();
    std::shared_ptr<const T> last; // for replay_last
    std::uint64_t next_id = 0;
    bool closed = false;
    // Calls to publish; written under mu, read without it by broadcaster::published().
    std::atomic<std::uint64_t> published{0};

    void remove(const subscriber<T>* s) {
        std::shared_ptr<const subscriber_list<T>> old; // released after unlocking
        {
            const std::lock_guard<std::mutex> lock(mu);
            auto next = std::make_shared<subscriber_list<T>>();
            next->reserve(subscribers->size());
            for (const auto& p : *subscribers) {
                if (p.get() != s) {
                    next->push_back(p);
                }
            }
            old = std::exchange(subscribers, std::move(next));
        }
    }
};

} // namespace detail

// A subscriber's end: a channel of std::shared_ptr<const T> with the ring<T> contract.
// Movable, not copyable. Destroying it unsubscribes. A moved-from subscription is empty:
// valid() is false, it reads as closed and drained (the pops return nullopt at once, size() and
// capacity() are 0, name() is empty, stats() all zero), close() does nothing, and assigning a
// subscription to it makes it usable again.
template <class T>
class subscription {
public:
    using value_type = std::shared_ptr<const T>;

    subscription(subscription&& o) noexcept = default;
    subscription& operator=(subscription&& o) noexcept {
        if (this != &o) {
            reset();
            sub_ = std::move(o.sub_);
            core_ = std::move(o.core_);
        }
        return *this;
    }
    subscription(const subscription&) = delete;
    subscription& operator=(const subscription&) = delete;

    // Unsubscribes: closes this subscription's buffer and detaches it. A publish running
    // concurrently finishes safely (it sees closed). Any thread.
    ~subscription() { reset(); }

    // Whether this handle holds a subscription (false once moved from). Wait-free.
    [[nodiscard]] bool valid() const noexcept { return sub_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }

    // The next value if one is buffered. Any thread; never waits. See ring<T>::try_pop.
    [[nodiscard]] std::optional<value_type> try_pop() {
        return sub_ ? sub_->channel.try_pop() : std::nullopt;
    }

    // The next value, waiting for one (spins briefly, then parks). nullopt once closed and
    // drained.
    [[nodiscard]] std::optional<value_type> pop() {
        return sub_ ? sub_->channel.pop() : std::nullopt;
    }

    // As pop(), but nullopt as soon as `stop` is requested (checked first).
    [[nodiscard]] std::optional<value_type> pop(std::stop_token stop) {
        return sub_ ? sub_->channel.pop(std::move(stop)) : std::nullopt;
    }

    // As pop(), waiting at most `timeout`, any std::chrono::duration (beyond nanoseconds' range,
    // say seconds::max(): no limit; negative or NaN: std::invalid_argument naming timeout).
    // A moved-from subscription checks the timeout too, then returns nullopt.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<value_type> pop_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return sub_ ? sub_->channel.pop_for(ns) : std::nullopt;
    }

    // As pop_for(), also ending when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<value_type> pop_for(std::chrono::duration<Rep, Period> timeout,
                                                    std::stop_token stop) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return sub_ ? sub_->channel.pop_for(ns, std::move(stop)) : std::nullopt;
    }

    // Closes this subscription only: the broadcaster's later values are counted as after_close
    // for it; what is buffered can still be popped. It stays attached until destroyed. Any
    // thread; never waits; idempotent.
    void close() noexcept {
        if (sub_) {
            sub_->channel.close();
        }
    }

    // The ring's figures, for any thread, wait-free: closed (a moved-from subscription is),
    // items buffered now (a snapshot), capacity, and the name given at subscribe() ("" when
    // moved from).
    [[nodiscard]] bool closed() const noexcept { return !sub_ || sub_->channel.closed(); }
    [[nodiscard]] std::size_t size() const noexcept { return sub_ ? sub_->channel.size() : 0; }
    [[nodiscard]] std::size_t capacity() const noexcept {
        return sub_ ? sub_->channel.capacity() : 0;
    }
    [[nodiscard]] const std::string& name() const noexcept {
        static const std::string none;
        return sub_ ? sub_->name : none;
    }
    // drop_oldest for a moved-from subscription (the broadcaster's default).
    [[nodiscard]] overflow policy() const noexcept {
        return sub_ ? sub_->channel.policy() : overflow::drop_oldest;
    }

    // Whether this subscription hangs off `b`. Any thread; wait-free. pipeline uses it to link
    // a subscription to its broadcaster in the graph (pipeline_snapshot, to_dot).
    [[nodiscard]] bool subscribed_to(const broadcaster<T>& b) const noexcept {
        return core_ != nullptr && core_ == b.core_;
    }

    // Counters. pushed counts every value offered to this subscription; values skipped by
    // max_rate_hz count as dropped (rate_limited). Identity: pushed == popped + dropped + size
    // when no call is in flight; a snapshot taken during traffic may count a push in flight
    // early (pushed >=, see channel.hpp). Any thread; lock-free; never waits.
    [[nodiscard]] channel_stats stats() const { return sub_ ? sub_->stats() : channel_stats{}; }

private:
    friend class broadcaster<T>;
    friend struct detail::readable_access;

    // The event count consumers wait on: its buffer's (see detail::readable_access).
    [[nodiscard]] detail::event_count& readable_event() noexcept {
        return detail::readable_event(sub_->channel);
    }

    subscription(std::shared_ptr<detail::subscriber<T>> sub,
                 std::shared_ptr<detail::broadcast_core<T>> core) noexcept
        : sub_(std::move(sub)), core_(std::move(core)) {}

    void reset() noexcept {
        if (sub_) {
            sub_->channel.close(); // wakes a publisher blocked on this subscriber
            try {
                core_->remove(sub_.get()); // allocates the new list
            } catch (...) {
                // Out of memory: it stays listed, closed, so each later publish counts it as
                // closed (and subscriber_count() includes it). Nothing else is affected.
            }
            sub_.reset();
            core_.reset();
        }
    }

    std::shared_ptr<detail::subscriber<T>> sub_;
    std::shared_ptr<detail::broadcast_core<T>> core_;
};

template <class T>
class broadcaster {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::broadcaster<T>: T must be an object type");

public:
    using value_type = T;

    broadcaster() : core_(std::make_shared<detail::broadcast_core<T>>()) {}
    broadcaster(const broadcaster&) = delete;
    broadcaster& operator=(const broadcaster&) = delete;

    // Closes every subscription (consumers drain, then end). Subscriptions may outlive it.
    ~broadcaster() { close(); }

    // Attaches a new subscriber. Any thread, at any time, also while others publish.
    // After close(), the subscription is created closed.
    // Throws std::invalid_argument naming the field: capacity 0 or above 2^61; a policy that is
    // none of overflow's values; max_rate_hz negative, NaN, infinite, above 1e9 or so small that
    // its period overflows; a block_timeout
    // without overflow::block; a negative block_timeout or max_age; a max_age when T is not
    // `timestamped`; drop_older_epochs when T is not `epoched`. std::bad_alloc.
    [[nodiscard]] subscription<T> subscribe(subscription_options options = {}) {
        if (!(options.max_rate_hz >= 0.0) || !std::isfinite(options.max_rate_hz) ||
            options.max_rate_hz > 1e9 ||
            (options.max_rate_hz > 0 && !std::isfinite(1e9 / options.max_rate_hz))) {
            throw std::invalid_argument("max_rate_hz: must be 0 (unlimited) or a finite rate "
                                        "up to 1e9");
        }
        if (options.block_timeout && options.policy != overflow::block) {
            throw std::invalid_argument("block_timeout: needs policy overflow::block");
        }
        std::shared_ptr<const detail::subscriber_list<T>> old; // released after unlocking
        std::shared_ptr<detail::subscriber<T>> sub;
        {
            const std::lock_guard<std::mutex> lock(core_->mu);
            std::string name = options.name.empty()
                                   ? "subscriber-" + std::to_string(core_->next_id)
                                   : options.name;
            sub = std::make_shared<detail::subscriber<T>>(options, std::move(name));
            ++core_->next_id; // after the ring's own checks: a refused subscribe takes no N
            if (core_->closed) {
                sub->channel.close();
            } else {
                if (options.replay_last && core_->last) {
                    // Under the lock, so no publish can slip in between the replay and the
                    // first live value: the subscriber sees values in order.
                    (void)sub->channel.push(core_->last);
                }
                auto next = std::make_shared<detail::subscriber_list<T>>(*core_->subscribers);
                // Blocking subscribers go last (see the file comment on isolation).
                auto at = next->end();
                if (!sub->blocking) {
                    at = next->begin();
                    while (at != next->end() && !(*at)->blocking) {
                        ++at;
                    }
                }
                next->insert(at, sub);
                old = std::exchange(core_->subscribers, std::move(next));
            }
        }
        return subscription<T>(std::move(sub), core_);
    }

    // Publishes a value: moves it into a shared_ptr and offers it to every subscriber. The
    // value and its control block take one block from the broadcaster's recycler, which
    // released values return to, so a steady stream allocates nothing after warm-up. Any
    // thread. Waits only for blocking subscribers (see the file comment), and, once, while the
    // first publish(T) makes the blocks of reserve() (a racing publish(T) waits for them rather
    // than take one from the heap; a stop token does not end that wait: it lasts as long as the
    // reserve's allocations). Exceptions: std::bad_alloc, or what T's move constructor throws,
    // before any subscriber was offered the value.
    publish_result publish(T value) {
        return publish_impl(std::allocate_shared<const T>(
                                detail::recycling_allocator<T>(core_->recycler.get()), std::move(value)),
                            nullptr);
    }

    // As publish(T), but a wait for a blocking subscriber ends when `stop` is requested (at once
    // if it already was and that subscriber's buffer is full); that subscriber then counts the
    // value as cancelled, in its stats and in the result, and publish goes on to the next one.
    // Any thread. Waits only for blocking subscribers, until there is room, its block_timeout
    // passes, it or the broadcaster is closed, or `stop`; never for drop-policy subscribers.
    // Exceptions: as publish(T) (std::bad_alloc, or what T's move constructor throws, before any
    // subscriber was offered the value).
    publish_result publish(T value, std::stop_token stop) {
        return publish_impl(std::allocate_shared<const T>(
                                detail::recycling_allocator<T>(core_->recycler.get()), std::move(value)),
                            &stop);
    }

    // Makes room for `values` published values alive at once (buffered in subscriptions, held
    // by consumers, the latest one) before the first publish(T) returns, so that publish(T)
    // allocates nothing from the start, as long as no more than that many are held. The first
    // publish(T) makes them: if they do not fit in memory it throws std::bad_alloc and keeps
    // none (or the system's out-of-memory handling ends the process first, as for any
    // allocation). Before the first publish(T); any thread. Throws std::invalid_argument naming
    // values when their bytes (at least a cache line, and sizeof(T), each) exceed what one
    // process can address (PTRDIFF_MAX).
    void reserve(std::size_t values) {
        const std::size_t each = std::max(sizeof(T), std::size_t{detail::cache_line});
        if (values > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / each) {
            throw std::invalid_argument("values: more than one process can address");
        }
        core_->recycler.get()->reserve(values);
    }

    // Publishes a shared value without copying or allocating. Any thread. Waits only for
    // blocking subscribers. Allocates nothing. Never throws in practice (std::mutex::lock, and
    // the subscribers' rate limiters on their rare path).
    publish_result publish(std::shared_ptr<const T> value) {
        return publish_impl(std::move(value), nullptr);
    }

    // As publish(shared_ptr), but a wait for a blocking subscriber ends when `stop` is
    // requested; that subscriber then counts the value as cancelled (see publish(T, stop)).
    // Allocates nothing; never throws in practice, as publish(shared_ptr).
    publish_result publish(std::shared_ptr<const T> value, std::stop_token stop) {
        return publish_impl(std::move(value), &stop);
    }

    // Closes every subscription: consumers drain what is buffered, then end. Later publishes
    // reach nobody. New subscriptions are created closed. Any thread; idempotent; brief lock.
    // Never throws in practice (std::mutex::lock).
    void close() {
        std::shared_ptr<const T> last; // released after unlocking
        const std::lock_guard<std::mutex> lock(core_->mu);
        core_->closed = true;
        last = std::move(core_->last);
        // Under the lock (the buffers are lock-free rings: their close never waits), so that a
        // publish that sees the broadcaster closed also finds every buffer closed: its result
        // says broadcaster_closed and delivered nothing, never both.
        for (const auto& s : *core_->subscribers) {
            s->channel.close();
        }
    }

    // Whether close() has been called. Any thread; brief lock. Never throws in practice
    // (std::mutex::lock).
    [[nodiscard]] bool closed() const {
        const std::lock_guard<std::mutex> lock(core_->mu);
        return core_->closed;
    }

    // Subscriptions attached now. Any thread; brief lock. Never throws in practice
    // (std::mutex::lock).
    [[nodiscard]] std::size_t subscriber_count() const {
        const std::lock_guard<std::mutex> lock(core_->mu);
        return core_->subscribers->size();
    }

    // Values published so far (calls to publish). Any thread; wait-free.
    [[nodiscard]] std::uint64_t published() const noexcept {
        return core_->published.load(std::memory_order_relaxed);
    }

    // Each attached subscription's counters by name, in publish order. Any thread; allocates.
    [[nodiscard]] std::vector<subscription_stats> stats() const {
        std::shared_ptr<const detail::subscriber_list<T>> subs;
        {
            const std::lock_guard<std::mutex> lock(core_->mu);
            subs = core_->subscribers;
        }
        std::vector<subscription_stats> out;
        out.reserve(subs->size());
        for (const auto& s : *subs) {
            out.push_back({s->name, s->stats()});
        }
        return out;
    }

private:
    friend class subscription<T>;

    // Values evicted by one publish's offers under the lock wait in publish_impl's locals, to be
    // released after it; a publish that fills them offers to the remaining subscribers unlocked.
    static constexpr std::size_t victims_under_lock = 8;

    publish_result publish_impl(std::shared_ptr<const T> value, const std::stop_token* stop) {
        // Declared before the lock, so released after it: no value's last release (T's
        // destructor, a pool's deleter) runs under the broadcaster's lock.
        std::shared_ptr<const T> previous; // the replay_last value this one replaces
        std::array<std::optional<std::shared_ptr<const T>>, victims_under_lock> victims;
        std::size_t victim_count = 0;
        // The list, held only when some subscribers are left to offer to after unlocking.
        std::shared_ptr<const detail::subscriber_list<T>> rest;
        std::size_t first_unlocked = 0;
        std::optional<rate_limiter::clock::time_point> now; // one clock read per publish
        publish_result r;
        {
            const std::lock_guard<std::mutex> lock(core_->mu);
            const detail::subscriber_list<T>& subs = *core_->subscribers;
            if (!core_->closed) {
                previous = std::exchange(core_->last, value); // kept for replay_last
            }
            r.broadcaster_closed = core_->closed;
            // Counted under the lock that publishes already take, so no atomic read-modify-write
            // is needed: a load and a store. Relaxed: published() is a statistics counter.
            core_->published.store(core_->published.load(std::memory_order_relaxed) + 1,
                                   std::memory_order_relaxed);
            r.subscribers = subs.size();
            // The drop-policy subscribers (first in the list) are offered the value under the
            // lock: their pushes never wait, and the list then needs no reference of its own (a
            // reference count taken and dropped, two locked instructions, per publish).
            while (first_unlocked < subs.size() && !subs[first_unlocked]->blocking &&
                   victim_count < victims.size()) {
                if (offer(*subs[first_unlocked], first_unlocked + 1 == subs.size(), value,
                          victims[victim_count], stop, now, r)) {
                    ++victim_count;
                }
                ++first_unlocked;
            }
            if (first_unlocked < subs.size()) {
                rest = core_->subscribers;
            }
        }
        // The blocking subscribers (and any left after the victims filled up), unlocked: a wait
        // for room must not hold up subscribe, close or other publishers.
        if (rest) {
            const detail::subscriber_list<T>& subs = *rest;
            for (std::size_t i = first_unlocked; i < subs.size(); ++i) {
                std::optional<std::shared_ptr<const T>> victim; // released here, unlocked
                offer(*subs[i], i + 1 == subs.size(), value, victim, stop, now, r);
            }
        }
        return r;
    }

    // Offers `value` to one subscriber and counts the outcome in r. An item the subscriber's
    // buffer evicts is moved into `victim`; returns whether one was. `last`: the final
    // subscriber of this publish takes `value` itself (a move: one reference-count increment
    // and decrement fewer per publish), and gives it back if it refuses it.
    static bool offer(detail::subscriber<T>& s, bool last, std::shared_ptr<const T>& value,
                      std::optional<std::shared_ptr<const T>>& victim, const std::stop_token* stop,
                      std::optional<rate_limiter::clock::time_point>& now, publish_result& r) {
        // A closed subscription counts the value as after_close, whatever its rate.
        if (s.limiter && !s.channel.closed()) {
            if (!now) {
                now = rate_limiter::clock::now();
            }
            if (!s.limiter->try_acquire(*now)) {
                s.rate_limited.fetch_add(1, std::memory_order_relaxed);
                ++r.rate_limited;
                return false;
            }
        }
        std::shared_ptr<const T> copy = last ? std::move(value) : value;
        const push_status st =
            detail::ring_access::push_keeping_victim(s.channel, copy, victim, stop);
        if (last && copy) {
            value = std::move(copy); // refused: released with `value`, after the lock
        }
        switch (st) {
        case push_status::ok: ++r.delivered; break;
        case push_status::evicted:
            ++r.delivered;
            ++r.evicted;
            break;
        case push_status::rejected: ++r.rejected; break;
        case push_status::cancelled: ++r.cancelled; break;
        case push_status::closed: ++r.closed; break;
        }
        return victim.has_value();
    }

    std::shared_ptr<detail::broadcast_core<T>> core_;
};

// How a pipeline shows a subscription and a broadcaster (see channel_traits). A broadcaster
// keeps no buffer: its counter is the number of values published.
template <class T>
struct channel_traits<subscription<T>> {
    static constexpr std::string_view kind = "subscription";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
};

template <class T>
struct channel_traits<broadcaster<T>> {
    static constexpr std::string_view kind = "broadcaster";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
    static channel_description describe(const broadcaster<T>& b) {
        channel_stats s;
        s.pushed = b.published();
        return {.kind = std::string(kind), .policy = "fan-out", .capacity = 0, .stats = s};
    }
};

} // namespace framepipe
