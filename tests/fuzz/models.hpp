// tests/fuzz/models.hpp - plain single-threaded reference models of framepipe's channels, and of
// rate_limiter.
//
// Each model gives, for any sequence of calls, the exact result of every call and the exact
// counters (channel_stats of every reason, size; a sliding_window's window contents and
// item_stats; a pool's objects and pool_stats). They are written from the headers' documented
// contracts, not from their code: a deque, an optional, a stack, and a counter per reason. The
// fuzzers (tests/fuzz/fuzz_*.cpp) run the real channel and its model side by side and compare
// every result; the linearizability checker (tests/lin/) uses the same models as the sequential
// specification that concurrent histories must be explained by.
//
// Time is not modelled for the channels: an item is either "stale" (captured long before max_age)
// or "fresh" (captured in the future), so expiry never depends on when a call runs. A push that
// would wait for room under overflow::block is modelled by how its wait ends (wait_end_model),
// which the caller decides from deadlines far enough apart to be deterministic (see
// fuzz_ring.hpp). The rate limiter's model takes its time points as arguments, as the limiter's
// try_acquire(time_point) does.
#pragma once

#include <framepipe/broadcaster.hpp>
#include <framepipe/channel.hpp>
#include <framepipe/pool.hpp>
#include <framepipe/sliding_window.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace framepipe_model {

using framepipe::channel_stats;
using framepipe::overflow;
using framepipe::push_status;

// An item as the models see it: a value, its epoch, and whether it is older than any max_age.
// `null` stands for a null shared_ptr published to a broadcaster (never expired, epoch 0).
struct item {
    std::int64_t value = 0;
    std::uint64_t epoch = 0;
    bool stale = false;
    bool null = false;

    friend bool operator==(const item&, const item&) = default;
};

// drop_older_epochs: the newest epoch admitted so far. Raised by every push that reaches the
// check, whatever the push then returns (closed, rejected for room, cancelled).
struct epoch_gate {
    std::uint64_t newest = 0;

    [[nodiscard]] bool admit(std::uint64_t e) noexcept {
        if (e > newest) {
            newest = e;
            return true;
        }
        return e == newest;
    }
    friend bool operator==(const epoch_gate&, const epoch_gate&) = default;
};

// How a push's wait for room ends on a full ring under overflow::block (the ring is the only
// thread, so nobody makes room): the block_timeout passes first (evict the oldest), the caller's
// deadline passes first or the call may not wait (reject), or its stop token is requested
// (cancel). `forever` means the call would wait for ever: the driver must not make it.
enum class wait_end_model { forever, evict, reject, cancel };

// ring<T> and spsc_ring<T> (all three implementations), and a subscription's buffer.
class ring_model {
public:
    struct config {
        std::size_t capacity = 1;
        overflow policy = overflow::drop_oldest;
        bool max_age = false;           // stale items expire at pop and are skipped by peek
        bool drop_older_epochs = false;
    };

    explicit ring_model(const config& c) : cfg_(c) {}

    // push / try_push / push_for, with `full_block` saying how a wait for room would end.
    // A push that would wait for ever returns nullopt (and changes nothing).
    [[nodiscard]] std::optional<push_status> push(const item& it, wait_end_model full_block) {
        if (cfg_.drop_older_epochs && !gate_.admit(it.epoch)) {
            return refuse(stats_.rejected, push_status::rejected);
        }
        if (closed_) {
            return refuse(stats_.after_close, push_status::closed);
        }
        if (items_.size() < cfg_.capacity) {
            items_.push_back(it);
            ++stats_.pushed;
            return push_status::ok;
        }
        switch (cfg_.policy) {
        case overflow::drop_newest: return refuse(stats_.rejected, push_status::rejected);
        case overflow::drop_oldest: return evict_and_store(it);
        case overflow::block: break;
        }
        switch (full_block) {
        case wait_end_model::forever: return std::nullopt;
        case wait_end_model::evict: return evict_and_store(it);
        case wait_end_model::reject: return refuse(stats_.rejected, push_status::rejected);
        case wait_end_model::cancel: return refuse(stats_.cancelled, push_status::cancelled);
        }
        return std::nullopt;
    }

    // As push(), for a push that raced close() and takes effect after it (spsc_ring: it read
    // `closed` first; the MPMC ring: it claimed while full and learns afterwards whether it
    // evicts; tests/lin/specs.hpp): the channel is closed, the push is treated as if it were
    // still open.
    [[nodiscard]] std::optional<push_status> push_past_close(const item& it, wait_end_model full_block) {
        const bool was_closed = std::exchange(closed_, false);
        const auto st = push(it, full_block);
        closed_ = was_closed;
        return st;
    }

    // Whether a push of an item of epoch `e` would wait for room (overflow::block, full, open,
    // and the epoch admitted). Does not change the gate.
    [[nodiscard]] bool push_would_wait(std::uint64_t e) const noexcept {
        epoch_gate g = gate_;
        if (cfg_.drop_older_epochs && !g.admit(e)) {
            return false;
        }
        return !closed_ && cfg_.policy == overflow::block && items_.size() == cfg_.capacity;
    }

    // try_pop, pop_for(0), and pop() when it would not wait: the oldest fresh item; stale items
    // in front of it are discarded (expired).
    [[nodiscard]] std::optional<item> pop() {
        while (!items_.empty()) {
            item it = items_.front();
            items_.pop_front();
            if (cfg_.max_age && it.stale) {
                ++stats_.expired;
                ++stats_.dropped;
                continue;
            }
            ++stats_.popped;
            return it;
        }
        return std::nullopt;
    }

    // Whether pop() (the waiting one) would wait for ever: open, and nothing fresh buffered.
    [[nodiscard]] bool pop_would_wait() const noexcept {
        return !closed_ && !peek().has_value();
    }

    // The oldest fresh item, left in place.
    [[nodiscard]] std::optional<item> peek() const {
        for (const item& it : items_) {
            if (!(cfg_.max_age && it.stale)) {
                return it;
            }
        }
        return std::nullopt;
    }

    void close() noexcept { closed_ = true; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }
    [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
    [[nodiscard]] const config& cfg() const noexcept { return cfg_; }
    [[nodiscard]] const std::deque<item>& items() const noexcept { return items_; }

    [[nodiscard]] channel_stats stats() const noexcept {
        channel_stats s = stats_;
        s.size = items_.size();
        return s;
    }

    friend bool operator==(const ring_model& a, const ring_model& b) {
        return a.items_ == b.items_ && a.closed_ == b.closed_ && a.gate_ == b.gate_ &&
               same_counts(a.stats_, b.stats_);
    }

    // Appends the state (items, closed, gate, counters) to `out`, for memoization.
    void encode(std::vector<std::uint64_t>& out) const {
        out.push_back(items_.size());
        for (const item& it : items_) {
            out.push_back(static_cast<std::uint64_t>(it.value));
        }
        out.push_back(closed_ ? 1 : 0);
        out.push_back(gate_.newest);
        encode_counts(stats_, out);
    }

    static bool same_counts(const channel_stats& a, const channel_stats& b) noexcept {
        return a.pushed == b.pushed && a.popped == b.popped && a.dropped == b.dropped &&
               a.evicted == b.evicted && a.rejected == b.rejected && a.cancelled == b.cancelled &&
               a.expired == b.expired && a.after_close == b.after_close &&
               a.rate_limited == b.rate_limited && a.size == b.size;
    }
    static void encode_counts(const channel_stats& s, std::vector<std::uint64_t>& out) {
        out.insert(out.end(), {s.pushed, s.popped, s.dropped, s.evicted, s.rejected, s.cancelled,
                               s.expired, s.after_close, s.rate_limited});
    }

private:
    push_status refuse(std::uint64_t& reason, push_status s) noexcept {
        ++stats_.pushed;
        ++stats_.dropped;
        ++reason;
        return s;
    }
    push_status evict_and_store(const item& it) {
        items_.pop_front();
        ++stats_.evicted;
        ++stats_.dropped;
        items_.push_back(it);
        ++stats_.pushed;
        return push_status::evicted;
    }

    config cfg_;
    std::deque<item> items_;
    bool closed_ = false;
    epoch_gate gate_;
    channel_stats stats_{}; // size is derived
};

// latest_slot<T>.
class latest_slot_model {
public:
    struct config {
        bool max_age = false;
        bool drop_older_epochs = false;
    };
    explicit latest_slot_model(const config& c) : cfg_(c) {}

    [[nodiscard]] push_status push(const item& it) {
        if (cfg_.drop_older_epochs && !gate_.admit(it.epoch)) {
            ++s_.pushed;
            ++s_.rejected;
            ++s_.dropped;
            return push_status::rejected;
        }
        ++s_.pushed;
        if (closed_) {
            ++s_.after_close;
            ++s_.dropped;
            return push_status::closed;
        }
        const bool replaced = value_.has_value();
        value_ = it;
        if (replaced) {
            ++s_.evicted;
            ++s_.dropped;
            return push_status::evicted;
        }
        return push_status::ok;
    }

    // As push(), for a push that read `closed` before close() stored it and publishes after it
    // (latest_slot allows this race; tests/lin/specs.hpp): as if the slot were still open.
    [[nodiscard]] push_status push_past_close(const item& it) {
        const bool was_closed = std::exchange(closed_, false);
        const push_status st = push(it);
        closed_ = was_closed;
        return st;
    }

    // try_pop, pop_for(0), and pop() when it would not wait.
    [[nodiscard]] std::optional<item> pop() {
        if (!value_) {
            return std::nullopt;
        }
        const item it = *value_;
        value_.reset();
        if (cfg_.max_age && it.stale) {
            ++s_.expired;
            ++s_.dropped;
            return std::nullopt;
        }
        ++s_.popped;
        return it;
    }

    [[nodiscard]] bool pop_would_wait() const noexcept {
        return !closed_ && !(value_ && !(cfg_.max_age && value_->stale));
    }

    [[nodiscard]] std::optional<item> peek() const {
        if (value_ && !(cfg_.max_age && value_->stale)) {
            return value_;
        }
        return std::nullopt;
    }

    void close() noexcept { closed_ = true; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }
    [[nodiscard]] std::size_t size() const noexcept { return value_ ? 1 : 0; }
    [[nodiscard]] const std::optional<item>& value() const noexcept { return value_; }

    [[nodiscard]] channel_stats stats() const noexcept {
        channel_stats s = s_;
        s.size = size();
        return s;
    }

    void encode(std::vector<std::uint64_t>& out) const {
        out.push_back(value_ ? 1 : 0);
        out.push_back(value_ ? static_cast<std::uint64_t>(value_->value) : 0);
        out.push_back(closed_ ? 1 : 0);
        out.push_back(gate_.newest);
        ring_model::encode_counts(s_, out);
    }

private:
    config cfg_;
    std::optional<item> value_;
    bool closed_ = false;
    epoch_gate gate_;
    channel_stats s_{};
};

// sliding_window<T>: windows of `size` items, one every `stride`; a channel of windows.
class sliding_window_model {
public:
    struct config {
        std::size_t size = 1;
        std::size_t stride = 1;
        bool epoched = false; // T carries an epoch (restart on a newer one, refuse an older one)
    };
    struct window {
        std::uint64_t first_seq = 0;
        std::vector<item> items;
    };

    explicit sliding_window_model(const config& c) : cfg_(c) {}

    [[nodiscard]] push_status push(const item& it) {
        if (closed_) {
            ++items_.after_close;
            return push_status::closed;
        }
        bool restart = false;
        if (cfg_.epoched) {
            if (it.epoch < epoch_) {
                ++items_.stale_epoch;
                return push_status::rejected;
            }
            restart = it.epoch > epoch_ && next_seq_ > 0;
            epoch_ = it.epoch;
        }
        const std::uint64_t seq = next_seq_++;
        ++items_.pushed;
        if (restart) {
            history_.clear();
            window_start_ = seq;
            last_ready_.reset();
            if (pending_) {
                pending_.reset();
                ++windows_.evicted;
                ++windows_.dropped;
            }
            ++items_.restarts;
        }
        history_.emplace_back(seq, it);
        while (history_.size() > cfg_.size + cfg_.stride) {
            history_.pop_front();
        }
        if (seq - window_start_ + 1 < cfg_.size || (last_ready_ && seq - *last_ready_ < cfg_.stride)) {
            return push_status::ok;
        }
        push_status status = push_status::ok;
        if (pending_) {
            ++windows_.evicted;
            ++windows_.dropped;
            status = push_status::evicted;
        }
        pending_ = seq;
        last_ready_ = seq;
        ++windows_.pushed;
        return status;
    }

    // try_pop, pop_for(0), and pop() when it would not wait.
    [[nodiscard]] std::optional<window> pop() {
        if (!pending_) {
            return std::nullopt;
        }
        window w;
        w.first_seq = *pending_ + 1 - cfg_.size;
        for (const auto& [seq, it] : history_) {
            if (seq >= w.first_seq && seq <= *pending_) {
                w.items.push_back(it);
            }
        }
        pending_.reset();
        ++windows_.popped;
        return w;
    }

    [[nodiscard]] bool pop_would_wait() const noexcept { return !closed_ && !pending_; }
    void close() noexcept { closed_ = true; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }
    [[nodiscard]] std::size_t size() const noexcept { return pending_ ? 1 : 0; }

    [[nodiscard]] channel_stats stats() const noexcept {
        channel_stats s = windows_;
        s.size = size();
        return s;
    }
    [[nodiscard]] framepipe::window_item_stats item_stats() const noexcept { return items_; }

private:
    config cfg_;
    std::deque<std::pair<std::uint64_t, item>> history_; // (seq, item), newest last
    std::uint64_t next_seq_ = 0;
    std::uint64_t window_start_ = 0;
    std::uint64_t epoch_ = 0;
    std::optional<std::uint64_t> pending_;
    std::optional<std::uint64_t> last_ready_;
    bool closed_ = false;
    channel_stats windows_{};
    framepipe::window_item_stats items_{};
};

// A broadcaster and its subscriptions. Each subscription is a ring_model plus a rate limit that
// admits the first value and no other (the fuzzers use a rate so low, one value per 1000 s,
// that nothing else is admitted within a run).
class broadcaster_model {
public:
    struct sub_config {
        ring_model::config ring;
        bool blocking_evicts = false; // overflow::block with a block_timeout
        bool rate_limited = false;
        bool replay_last = false;
        std::string name;
    };
    struct subscriber {
        std::size_t id = 0; // the handle's index in the driver
        std::string name;
        ring_model ring;
        bool blocking = false;
        bool blocking_evicts = false;
        bool rate_limited = false;
        bool limiter_used = false;
        std::uint64_t skipped = 0;

        [[nodiscard]] channel_stats stats() const {
            channel_stats s = ring.stats();
            s.rate_limited = skipped;
            s.pushed += skipped;
            s.dropped += skipped;
            return s;
        }
    };
    struct publish_outcome {
        framepipe::publish_result result;
        bool would_wait = false; // a blocking subscriber without block_timeout was full: the
                                 // publish would wait for ever (nothing was changed)
    };

    // Returns the index of the new subscriber in subs().
    std::size_t subscribe(std::size_t id, const sub_config& c) {
        subscriber s{.id = id,
                     .name = c.name.empty() ? "subscriber-" + std::to_string(next_id_) : c.name,
                     .ring = ring_model(c.ring),
                     .blocking = c.ring.policy == overflow::block,
                     .blocking_evicts = c.blocking_evicts,
                     .rate_limited = c.rate_limited};
        ++next_id_;
        if (closed_) {
            s.ring.close();
            detached_.push_back(std::move(s));
            return npos;
        }
        // The broadcaster keeps the latest value as a shared_ptr and replays it only when that
        // pointer is non-null: a published null is not replayed (see docs/verification.md).
        if (c.replay_last && last_ && !last_->null) {
            (void)s.ring.push(*last_, wait_end_model::forever); // empty: never waits
        }
        auto at = subs_.end();
        if (!s.blocking) {
            at = std::find_if(subs_.begin(), subs_.end(),
                              [](const subscriber& x) { return x.blocking; });
        }
        subs_.insert(at, std::move(s));
        return 0;
    }

    // publish(value) or publish(value, stop) with the stop already requested.
    [[nodiscard]] publish_outcome publish(const item& it, bool stop_requested) {
        publish_outcome out;
        if (!stop_requested && would_wait(it)) {
            out.would_wait = true;
            return out;
        }
        framepipe::publish_result& r = out.result;
        if (!closed_) {
            last_ = it;
        }
        r.broadcaster_closed = closed_;
        ++published_;
        r.subscribers = subs_.size();
        for (subscriber& s : subs_) {
            if (s.rate_limited && !s.ring.closed()) {
                if (s.limiter_used) {
                    ++s.skipped;
                    ++r.rate_limited;
                    continue;
                }
                s.limiter_used = true;
            }
            const wait_end_model end = stop_requested ? wait_end_model::cancel
                                       : s.blocking_evicts ? wait_end_model::evict
                                                           : wait_end_model::forever;
            const auto st = s.ring.push(it, end);
            switch (st.value_or(push_status::closed)) {
            case push_status::ok: ++r.delivered; break;
            case push_status::evicted:
                ++r.delivered;
                ++r.evicted;
                break;
            case push_status::rejected: ++r.rejected; break;
            case push_status::cancelled: ++r.cancelled; break;
            case push_status::closed: ++r.closed; break;
            }
        }
        return out;
    }

    void close() {
        closed_ = true;
        last_.reset();
        for (subscriber& s : subs_) {
            s.ring.close();
        }
    }

    // The subscriber with handle `id`, attached or created closed; nullptr once unsubscribed.
    [[nodiscard]] subscriber* find(std::size_t id) {
        for (auto* list : {&subs_, &detached_}) {
            for (subscriber& s : *list) {
                if (s.id == id) {
                    return &s;
                }
            }
        }
        return nullptr;
    }

    void unsubscribe(std::size_t id) {
        for (auto* list : {&subs_, &detached_}) {
            list->erase(std::remove_if(list->begin(), list->end(),
                                       [id](const subscriber& s) { return s.id == id; }),
                        list->end());
        }
    }

    [[nodiscard]] const std::vector<subscriber>& subs() const noexcept { return subs_; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }
    [[nodiscard]] std::uint64_t published() const noexcept { return published_; }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

private:
    [[nodiscard]] bool would_wait(const item& it) const {
        for (const subscriber& s : subs_) {
            if (s.rate_limited && !s.ring.closed() && s.limiter_used) {
                continue; // skipped: never reaches the ring
            }
            if (!s.blocking_evicts && s.ring.push_would_wait(it.epoch)) {
                return true;
            }
        }
        return false;
    }

    std::vector<subscriber> subs_;     // publish order: drop policies first, blocking last
    std::vector<subscriber> detached_; // created after close(): closed, never offered values
    std::optional<item> last_;
    bool closed_ = false;
    std::uint64_t published_ = 0;
    std::size_t next_id_ = 0;
};

// pool<T>: a stack of free objects (the last one returned is lent next), each keeping what its
// last borrower wrote.
class pool_model {
public:
    explicit pool_model(std::size_t capacity) {
        values_.resize(capacity);
        // The pool builds its objects in order and stacks them: the last built is lent first.
        for (std::size_t i = 0; i < capacity; ++i) {
            values_[i] = static_cast<std::int64_t>(i);
            free_.push_back(i);
        }
        refs_.assign(capacity, 0);
    }

    // try_acquire (wait = false), acquire_for(0) (wait = true; an exhausted wait counts once).
    [[nodiscard]] std::optional<std::size_t> acquire() {
        if (free_.empty()) {
            ++s_.exhausted;
            return std::nullopt;
        }
        const std::size_t slot = free_.back();
        free_.pop_back();
        ++s_.acquired;
        return slot;
    }
    // acquire(stop) with the stop requested: refused first, counted as exhausted.
    void acquire_stopped() noexcept { ++s_.exhausted; }

    // One more reference (shared or weak) to the control block of `slot`.
    void add_ref(std::size_t slot) noexcept { ++refs_[slot]; }
    // One reference fewer; the last one returns the slot.
    void drop_ref(std::size_t slot) {
        if (--refs_[slot] == 0) {
            free_.push_back(slot);
            ++s_.released;
        }
    }

    [[nodiscard]] std::int64_t& value(std::size_t slot) noexcept { return values_[slot]; }
    [[nodiscard]] std::size_t available() const noexcept { return free_.size(); }
    [[nodiscard]] std::size_t capacity() const noexcept { return values_.size(); }
    [[nodiscard]] framepipe::pool_stats stats() const noexcept {
        framepipe::pool_stats s = s_;
        s.in_use = s.acquired - s.released;
        return s;
    }

private:
    std::vector<std::int64_t> values_;
    std::vector<std::size_t> free_; // top of the stack last
    std::vector<std::size_t> refs_;
    framepipe::pool_stats s_{};
};

// rate_limiter (rate_limiter.hpp's header comment) in integer nanoseconds: slots of one period
// anchored at the first call, the bucket full (`burst` tokens) at the start, a token at each slot
// boundary up to `burst`, a boundary passed from period/1000 before it (compared exactly, in
// thousandths of a nanosecond), a time point behind the slot under way falling in it, and a new
// period from the next boundary (at once before the first call; a later set_rate() before that
// boundary replaces it). The limiter computes with doubles: the two agree where its arithmetic is
// exact, which the fuzzer and the linearizability test arrange (periods of a power of two
// nanoseconds or of whole microseconds, time points within 2^40 ns of each other).
class rate_limiter_model {
public:
    rate_limiter_model(std::int64_t period_ns, std::uint64_t burst)
        : burst_(burst), period_(period_ns), tokens_(burst) {}

    // Admits when a token is there after the boundaries passed by `now` have added theirs.
    bool try_acquire(std::int64_t now) {
        settle(now);
        if (tokens_ == 0) {
            return false;
        }
        --tokens_;
        return true;
    }

    // The slot under way at `now` keeps its length; the new period starts at its end.
    void set_rate(std::int64_t period_ns, std::int64_t now) {
        if (!started_) {
            period_ = period_ns;
            return;
        }
        settle(now);
        pending_ = period_ns;
    }

    // When the next boundary falls (before widening), once started: for a caller that wants to
    // probe time points around it.
    [[nodiscard]] std::int64_t next_boundary() const noexcept { return anchor_ + (passed_ + 1) * period_; }
    [[nodiscard]] std::int64_t period() const noexcept { return period_; }
    [[nodiscard]] bool started() const noexcept { return started_; }

    void encode(std::vector<std::uint64_t>& out) const {
        out.push_back(started_ ? 1 : 0);
        out.push_back(static_cast<std::uint64_t>(anchor_));
        out.push_back(static_cast<std::uint64_t>(period_));
        out.push_back(static_cast<std::uint64_t>(passed_));
        out.push_back(tokens_);
        out.push_back(pending_ ? static_cast<std::uint64_t>(*pending_) : 0);
    }

private:
    // Adds the tokens of the boundaries passed by `now`. Boundary j (j >= 1) of the current
    // period is at anchor_ + j * period_ and counts as passed from period_/1000 before it:
    // 1000 * (now - anchor_) + period_ >= 1000 * j * period_.
    void settle(std::int64_t now) {
        if (!started_) {
            started_ = true; // the first call anchors slot 0
            anchor_ = now;
            passed_ = 0;
            return;
        }
        for (;;) {
            const std::int64_t since = 1000 * (now - anchor_) + period_; // thousandths of a ns
            const std::int64_t next = passed_ + 1;
            if (since < 1000 * next * period_) {
                return; // still in the current slot (or time went backwards)
            }
            if (pending_) {
                // The new period starts at the first boundary crossed, which adds its token.
                anchor_ += next * period_;
                period_ = *pending_;
                pending_.reset();
                passed_ = 0;
                tokens_ = std::min(burst_, tokens_ + 1);
                continue;
            }
            const std::int64_t last = since / (1000 * period_);
            tokens_ = std::min(burst_, tokens_ + static_cast<std::uint64_t>(last - passed_));
            passed_ = last;
            return;
        }
    }

    std::uint64_t burst_;
    bool started_ = false;
    std::int64_t anchor_ = 0;
    std::int64_t period_;
    std::int64_t passed_ = 0; // boundaries passed since the anchor
    std::uint64_t tokens_;
    std::optional<std::int64_t> pending_;
};

} // namespace framepipe_model
