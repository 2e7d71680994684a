// framepipe/batcher.hpp - deadline batching over several sources, in the manner of Triton's
// dynamic batcher: a batch goes when it is full, when it reaches a preferred size, or when its
// oldest item has waited max_delay.
//
//     framepipe::batcher<Frame> frames({.max_size = 8, .preferred_sizes = {4, 8},
//                                       .max_delay = 5ms, .max_per_source = 1});
//     for (auto& cam : cameras) frames.add(cam);          // any selectable channel of Frame
//     while (auto b = frames.pop()) infer(b->items);      // b->sources[i]: items[i]'s camera
//
// A batcher reads its sources through a selector<T> of its own (select.hpp: the same wake-up
// design, policies, per-input options and counters), and forms one batch at a time. A consumer
// asks for a batch when it is ready for one (Triton: when a model instance is free); the batcher
// then takes what its sources have ready and decides, by this rule, checked each time items
// have been taken and nothing more is ready at once:
//
//   1. full:      max_size items -> a batch of max_size.
//   2. preferred: at least the smallest preferred size -> a batch of the largest preferred size
//                 not above the count; the rest stay, first in line for the next batch. It does
//                 not wait for a larger preferred size: a batch that can go at an efficient size
//                 goes now (Triton's "largest preferred size available").
//   3. deadline:  the oldest item has waited max_delay -> everything pending (fewer than the
//                 smallest preferred size, and than max_size).
//   4. close:     the batcher is closed and no source can add to the batch: each has finished,
//                 or is at its cap with its channel closed -> everything pending. What a capped
//                 source still has goes in the batches after (cause close too, not waiting for
//                 their deadline); once every source has finished and nothing is pending, pop()
//                 returns nullopt.
// Otherwise it waits for an item from a source that may still contribute (or, once the batcher
// is closed, for a source at its cap to close), until the oldest pending item's deadline (or,
// with nothing pending, as long as the call allows).
//
// Waiting is measured from the moment the batcher takes an item from its source (its arrival).
// Items are taken only inside a pop call: what arrives while the consumer processes a batch waits
// in its channel (whose own policy applies) and arrives when the consumer asks again.
//
// Guarantees:
// - At most max_per_source items from one source in a batch: a source at its cap is passed over
//   (its items stay in its channel) until the batch goes.
// - Per-source order is kept: within a batch, across batches, and for items left over by a
//   preferred-size split (they go first in the next batch).
// - With a `staleness`, ages are read by timestamp_traits<T> on the batcher's clock. An item
//   older than staleness when taken is dropped before batching, counted as expired for its
//   source. Items pending (left over by a preferred-size split, or by a call that returned
//   without a batch) are looked at again before each decision: one older than staleness +
//   max_delay is dropped then, counted the same way. So none in a batch is older than
//   staleness + max_delay when the batch goes.
// - A dead or slow source never extends the wait: the deadline depends only on the items
//   pending. A source is asked with try_pop; a push into it that is still in flight is not
//   waited for when the channel shows it in size() (a ring's claimed position: the batcher
//   comes back on its notification). A source whose channel is closed and looks empty is drained
//   with its own pop(), which waits for a push that read the channel open before the close and
//   has not stored yet: with spsc_ring and latest_slot such a push does not show in size(), and
//   that wait (a few instructions) lasts longer only if that producer is preempted right there
//   (see select.hpp, "Taking").
//
// Time: the batcher reads arrivals, ages and deadlines from `Time::now()` (steady_clock by
// default; it must be noexcept: a clock that throws after an item was taken would lose it). A
// test gives a virtual clock and drives the batcher with try_pop(), which never waits: each
// decision depends only on what the sources hold and on now(). The waiting calls (pop, pop_for)
// wait on the real steady clock for the virtual time remaining.
//
// Accounting, per source, exact in every stats() snapshot:
//
//     input.selected == batched + expired + pending
//
// where `input` is the source's selector counters (taken == selected + expired + dropped + held,
// see select.hpp).
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/select.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace framepipe {

// Why a batch went.
enum class flush_cause {
    full,      // it reached max_size
    preferred, // it reached a preferred size (the largest one available)
    deadline,  // its oldest item had waited max_delay
    close,     // the batcher was closed and no source could add to it (see batcher.hpp)
};

[[nodiscard]] constexpr std::string_view to_string(flush_cause c) noexcept {
    switch (c) {
    case flush_cause::full: return "full";
    case flush_cause::preferred: return "preferred";
    case flush_cause::deadline: return "deadline";
    case flush_cause::close: return "close";
    }
    return "unknown";
}

// What a batcher is configured with. An aggregate for designated initialisers.
struct batcher_options {
    std::size_t max_size = 8;                   // items per batch at most (at least 1)
    std::vector<std::size_t> preferred_sizes{}; // each in [1, max_size]; any order
    std::chrono::nanoseconds max_delay{0};      // how long the oldest pending item may wait
    std::size_t max_per_source = 0;             // per source per batch, <= max_size; 0: max_size
    std::optional<std::chrono::nanoseconds> staleness{}; // drop older items (timestamped T)
    select_policy policy = select_policy::round_robin;   // how sources take turns
};

// A batch: items[i] came from sources[i]. Items of one source are in their order.
template <class T>
struct batch {
    std::vector<T> items;
    std::vector<input_id> sources;
    flush_cause cause = flush_cause::full;
    std::chrono::nanoseconds queue_delay{0}; // how long its oldest item waited in the batcher
};

// Flushes by cause.
struct flush_counts {
    std::uint64_t full = 0;
    std::uint64_t preferred = 0;
    std::uint64_t deadline = 0;
    std::uint64_t close = 0;
};

// One source's counters: input.selected == batched + expired + pending.
struct batch_source_stats {
    input_stats input;         // the batcher's selector's counters for this source
    std::uint64_t batched = 0; // items of this source emitted in batches
    std::uint64_t expired = 0; // dropped before batching: older than staleness
    std::uint64_t pending = 0; // in the batch being formed
    bool removed = false;      // removed, with items still pending (listed until they go)
};

struct batcher_stats {
    std::uint64_t batches = 0; // batches emitted
    std::uint64_t items = 0;   // items in them
    std::uint64_t expired = 0; // dropped before batching (staleness), all sources
    flush_counts flushes;      // batches by cause
    // size_histogram[n]: batches of n items, for n in [0, max_size] ([0] stays 0).
    std::vector<std::uint64_t> size_histogram;
    // The queue delay of each batch's oldest item: the last one, the largest, and the sum (for
    // the mean: total_queue_delay / batches).
    std::chrono::nanoseconds last_queue_delay{0};
    std::chrono::nanoseconds max_queue_delay{0};
    std::chrono::nanoseconds total_queue_delay{0};
    std::size_t pending = 0; // items in the batch being formed
    std::vector<batch_source_stats> sources; // in order of addition
    // The selector counters of every source it has had, removed ones included, summed (they
    // only grow): input_totals.selected == items + expired + pending.
    selector_totals input_totals;
};

namespace detail {

// A queue of at most `capacity` items in slots allocated once: pushing never allocates, and
// neither side needs U to be assignable. Not thread-safe (the batcher guards it).
template <class U>
class fixed_queue {
public:
    explicit fixed_queue(std::size_t capacity)
        : slots_(std::make_unique<std::optional<U>[]>(capacity)), capacity_(capacity) {}

    [[nodiscard]] std::size_t size() const noexcept { return count_; }
    [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
    [[nodiscard]] U& operator[](std::size_t i) noexcept { return *slots_[index(i)]; }
    [[nodiscard]] const U& front() const noexcept { return *slots_[head_]; }

    // Requires size() < capacity.
    void push_back(U&& u) noexcept {
        slots_[index(count_)].emplace(std::move(u));
        ++count_;
    }

    void pop_front() noexcept {
        slots_[head_].reset();
        head_ = head_ + 1 == capacity_ ? 0 : head_ + 1;
        --count_;
    }

private:
    [[nodiscard]] std::size_t index(std::size_t i) const noexcept {
        const std::size_t at = head_ + i;
        return at >= capacity_ ? at - capacity_ : at;
    }

    std::unique_ptr<std::optional<U>[]> slots_;
    std::size_t capacity_;
    std::size_t head_ = 0;
    std::size_t count_ = 0;
};

} // namespace detail

// The clock of a batcher: steady_clock. A test passes a type with the same now() to run in
// virtual time.
struct steady_batch_time {
    [[nodiscard]] std::chrono::steady_clock::time_point now() const noexcept {
        return std::chrono::steady_clock::now();
    }
};

// A clock a batcher can read: a noexcept now() (the batcher reads it with an item in hand).
template <class Time>
concept batch_time = requires(const Time& t) {
    { t.now() } noexcept -> std::same_as<std::chrono::steady_clock::time_point>;
};

// Forms batches from the items of its sources; see the file comment for the rule and the
// guarantees.
//
// Thread safety: add, remove, close, closed, finished and stats from any thread at any time.
// pop, try_pop and pop_for from any thread. One call at a time forms a batch; another waits for
// its turn within its own limits: try_pop does not wait (nullopt while another call forms a
// batch), pop_for waits at most its timeout, pop(stop) ends when stop is requested, pop() waits
// as long as it takes. One consumer thread is the natural use.
template <class T, class Time = steady_batch_time>
class batcher {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "framepipe::batcher<T>: T's move constructor must be noexcept (items are moved "
                  "into batches; hold a T whose move may throw by std::shared_ptr)");
    static_assert(batch_time<Time>, "framepipe::batcher<T, Time>: Time needs a noexcept now() "
                                    "returning std::chrono::steady_clock::time_point");

    struct pending_item {
        T item;
        input_id source;
        std::chrono::steady_clock::time_point arrival;
    };

    struct source_counters {
        std::uint64_t batched = 0;
        std::uint64_t expired = 0;
        std::uint64_t pending = 0;
        std::optional<input_stats> removed; // the final counters, once removed
    };

public:
    using value_type = batch<T>;
    using time_point = std::chrono::steady_clock::time_point;

    // Throws std::invalid_argument naming the field: max_size 0; a preferred size 0 or above
    // max_size; max_per_source above max_size; a negative max_delay or staleness; a staleness
    // when T carries no capture time; policy oldest_first when T carries no capture time.
    // std::bad_alloc.
    explicit batcher(batcher_options options = {}, Time time = {})
        : options_(validated(std::move(options))), time_(std::move(time)),
          sel_(selector_options{.policy = options_.policy}),
          cap_(options_.max_per_source == 0 ? options_.max_size : options_.max_per_source),
          pending_(options_.max_size) {
        capped_.reserve(options_.max_size);
        histogram_.assign(options_.max_size + 1, 0);
    }

    batcher(const batcher&) = delete;
    batcher& operator=(const batcher&) = delete;

    // Adds a source (see selector::add: same options, same rules: the channel stays where it is
    // until remove() returns or it has finished). Any thread, also while a consumer waits.
    // Throws what selector::add throws (std::logic_error after close()); std::bad_alloc. On a
    // throw nothing changed.
    template <class C>
        requires selectable<C, T>
    input_id add(C& channel, input_options options = {}) {
        const std::optional<input_id> id = try_add(channel, std::move(options));
        if (!id) {
            throw std::logic_error("framepipe::batcher: add() after close()");
        }
        return *id;
    }

    // As add(), but nullopt after close() instead of a throw (selector::try_add).
    template <class C>
        requires selectable<C, T>
    [[nodiscard]] std::optional<input_id> try_add(C& channel, input_options options = {}) {
        // The source's counters first, as a node of their own: once the selector has the input,
        // nothing may fail (a rollback through selector::remove could throw in turn and leave an
        // input without counters). Inserting a node into a std::map allocates nothing.
        auto node = [] {
            decltype(sources_) made;
            made.emplace(0, source_counters{});
            return made.extract(made.begin());
        }();
        const std::lock_guard<std::mutex> lock(stats_mu_);
        // Under stats_mu_: no consumer can take from the new source before its counters exist.
        const std::optional<input_id> id = sel_.try_add(channel, std::move(options));
        if (id) {
            node.key() = id->value;
            sources_.insert(std::move(node)); // ids are never reused: the key is free
        }
        return id;
    }

    // Stops reading source `id` (see selector::remove) and returns its counters; nullopt if
    // there is no such source. Its items already pending stay in the batch being formed (they
    // are listed under the source, removed, until they go). Any thread; takes the internal
    // locks briefly. Never throws but std::bad_alloc (copying the name), and then nothing has
    // changed: the source is still there.
    std::optional<batch_source_stats> remove(input_id id) {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        const auto it = sources_.find(id.value);
        if (it == sources_.end() || it->second.removed) {
            return std::nullopt; // never added, or removed already
        }
        source_counters& c = it->second;
        // What allocates comes first, while nothing has changed: the copy of the name the
        // batcher keeps while the source's items are pending (selector::remove copies the one
        // it returns before it lets the input go).
        std::string kept_name;
        if (c.pending != 0) {
            std::optional<input_stats> now = sel_.stats(id);
            if (!now) {
                return std::nullopt; // not reached: sources_ follows the selector under stats_mu_
            }
            kept_name = std::move(now->name);
        }
        std::optional<input_stats> input = sel_.remove(id);
        if (!input) {
            return std::nullopt; // not reached, as above
        }
        // From here on nothing allocates or throws.
        batch_source_stats out{.input = {}, .batched = c.batched, .expired = c.expired,
                               .pending = c.pending};
        if (c.pending != 0) {
            c.removed.emplace(renamed(*input, std::move(kept_name)));
            out.removed = true;
        }
        out.input = std::move(*input);
        if (it->second.pending == 0) {
            sources_.erase(it); // nothing pending: its counters go now
        }
        return out;
    }

    // The next batch if one is due now (see the rule in the file comment). Never waits for an
    // item (it takes what the sources hold now), nor for the deadline, nor for another call
    // forming a batch. nullopt when no batch is due (the items taken stay pending; their
    // deadline runs on), while another call forms a batch, or after the last batch. Any thread.
    // Exceptions: std::bad_alloc, or what a source's channel throws; nothing is lost.
    [[nodiscard]] std::optional<batch<T>> try_pop() { return pop_impl(nullptr, detail::no_deadline, false); }

    // The next batch, waiting for items and for the deadline as the rule says, and for another
    // call forming a batch to return. Blocks (parks while nothing is ready). nullopt only after
    // the last batch: closed, every source finished. Any thread. Exceptions: as try_pop().
    [[nodiscard]] std::optional<batch<T>> pop() { return pop_impl(nullptr, detail::no_deadline, true); }

    // As pop(), but nullopt as soon as `stop` is requested, also while it waits for another
    // call forming a batch; what is pending stays pending.
    [[nodiscard]] std::optional<batch<T>> pop(std::stop_token stop) {
        return pop_impl(&stop, detail::no_deadline, true);
    }

    // As pop(), waiting at most `timeout` (real time), also for another call forming a batch.
    // Once it has its turn, it looks once more when the timeout ends, so a batch due by then
    // goes. Any std::chrono::duration; one beyond nanoseconds' range (say seconds::max()) means
    // no limit. Throws std::invalid_argument naming timeout when it is negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<batch<T>> pop_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return pop_impl(nullptr, detail::deadline_after(ns), true);
    }

    // As pop_for(), also ending when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<batch<T>> pop_for(std::chrono::duration<Rep, Period> timeout,
                                                  std::stop_token stop) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return pop_impl(&stop, detail::deadline_after(ns), true);
    }

    // No more sources may be added. Once every source has finished (closed and drained) or been
    // removed, the pending items go as a last batch (cause close) and then pop() returns
    // nullopt. Does not close the sources. Wakes a waiting consumer. Any thread; idempotent;
    // brief lock. Never throws in practice (std::mutex::lock).
    void close() { sel_.close(); }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return sel_.closed(); }

    // Whether the batcher has ended: closed, every source finished, nothing pending. A source is
    // seen to finish by a pop call, so after the last batch this may turn true only when the
    // next pop returns nullopt. Any thread; takes the internal locks briefly.
    [[nodiscard]] bool finished() const {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        return pending_.empty() && sel_.ended();
    }

    // The options given at construction. Any thread; wait-free.
    [[nodiscard]] const batcher_options& options() const noexcept { return options_; }

    // The addresses of the channels it reads now (sources added, not removed, not finished):
    // selector::input_channels(). Any thread; takes a lock briefly; throws std::bad_alloc.
    [[nodiscard]] std::vector<const void*> input_channels() const { return sel_.input_channels(); }

    // A snapshot of the counters; the per-source identity (file comment) holds exactly. Any
    // thread; takes the internal locks briefly; allocates.
    [[nodiscard]] batcher_stats stats() const {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        batcher_stats s = totals_;
        s.size_histogram = histogram_;
        s.pending = pending_.size();
        s.input_totals = sel_.totals();
        const std::vector<input_stats> inputs = sel_.stats();
        s.sources.reserve(sources_.size());
        for (const auto& in : inputs) {
            const auto it = sources_.find(in.id.value);
            if (it != sources_.end()) {
                s.sources.push_back(stats_of(in, it->second));
            }
        }
        for (const auto& [id, c] : sources_) {
            if (c.removed) {
                batch_source_stats r = stats_of(*c.removed, c);
                r.removed = true;
                s.sources.push_back(std::move(r));
            }
        }
        return s;
    }

private:
    static batcher_options validated(batcher_options o) {
        if (o.max_size == 0) {
            throw std::invalid_argument("max_size: must be at least 1");
        }
        if (o.max_per_source > o.max_size) {
            throw std::invalid_argument("max_per_source: must be at most max_size (0: max_size)");
        }
        for (const std::size_t p : o.preferred_sizes) {
            if (p == 0 || p > o.max_size) {
                throw std::invalid_argument("preferred_sizes: each must be in [1, max_size]");
            }
        }
        std::sort(o.preferred_sizes.begin(), o.preferred_sizes.end());
        o.preferred_sizes.erase(std::unique(o.preferred_sizes.begin(), o.preferred_sizes.end()),
                                o.preferred_sizes.end());
        detail::require_non_negative(o.max_delay, "max_delay");
        if (o.staleness) {
            detail::require_non_negative(*o.staleness, "staleness");
            if constexpr (!timestamped<T>) {
                throw std::invalid_argument(
                    "staleness: T carries no capture time (specialise framepipe::timestamp_traits)");
            }
        }
        return o;
    }

    static batch_source_stats stats_of(const input_stats& in, const source_counters& c) {
        return {.input = in, .batched = c.batched, .expired = c.expired, .pending = c.pending};
    }

    // `in` with `name` for its name: every other field copied, nothing allocated.
    static input_stats renamed(const input_stats& in, std::string&& name) noexcept {
        return {.id = in.id,
                .name = std::move(name),
                .weight = in.weight,
                .taken = in.taken,
                .selected = in.selected,
                .expired = in.expired,
                .dropped = in.dropped,
                .held = in.held,
                .finished = in.finished};
    }

    // The age beyond which a pending item is dropped (see the file comment): staleness +
    // max_delay, saturating (a max_delay of nanoseconds::max() means never).
    static std::optional<std::chrono::nanoseconds> pending_limit(
        const batcher_options& o) noexcept {
        if (!o.staleness) {
            return std::nullopt;
        }
        constexpr auto most = std::chrono::nanoseconds::max();
        return *o.staleness > most - o.max_delay ? most : *o.staleness + o.max_delay;
    }

    [[nodiscard]] bool stale(const T& item, time_point now) const noexcept {
        return detail::older_than(item, options_.staleness, now);
    }

    // The sources at their cap in the batch being formed. Requires stats_mu_. Found from the
    // pending items (a source at its cap has some), not from every source: called after each
    // take that caps a source, it must not cost O(sources) per item (with max_per_source 1 that
    // is every take: 256 cameras made each batch of 8 walk the map of 256 sources 8 times).
    void update_capped_locked() {
        capped_.clear();
        for (std::size_t i = 0; i < pending_.size(); ++i) {
            const input_id id = pending_[i].source;
            if (sources_.at(id.value).pending >= cap_ &&
                std::find(capped_.begin(), capped_.end(), id) == capped_.end()) {
                capped_.push_back(id); // reserved: at most max_size sources are capped
            }
        }
    }

    // One pending item fewer from the source `it` names (it went in a batch, or expired); a
    // removed source's counters go with its last pending item. Requires stats_mu_.
    void unpend_locked(typename std::map<std::uint64_t, source_counters>::iterator it) noexcept {
        if (--it->second.pending == 0 && it->second.removed) {
            sources_.erase(it);
        }
    }

    // Drops the pending items older than staleness + max_delay at `now`, counted as expired for
    // their sources; the others keep their order. Requires stats_mu_. O(max_size) with a
    // staleness, nothing without.
    void drop_stale_pending_locked(time_point now) {
        if (!pending_limit_) {
            return;
        }
        const std::size_t n = pending_.size();
        bool dropped = false;
        for (std::size_t i = 0; i < n; ++i) {
            // The front goes out, and back in unless stale: pending_ never holds more than n.
            pending_item p = std::move(pending_[0]);
            pending_.pop_front();
            if (detail::older_than(p.item, pending_limit_, now)) {
                const auto it = sources_.find(p.source.value); // there while it has items pending
                ++it->second.expired;
                ++totals_.expired;
                unpend_locked(it);
                dropped = true;
            } else {
                pending_.push_back(std::move(p));
            }
        }
        if (dropped) {
            update_capped_locked();
        }
    }

    void drop_stale_pending(time_point now) {
        if (pending_limit_) {
            const std::lock_guard<std::mutex> lock(stats_mu_);
            drop_stale_pending_locked(now);
        }
    }

    // Takes what the sources hold now, up to max_size pending, passing over capped sources,
    // after dropping the pending items grown too old (so that sources they uncap are taken
    // from). True when it took anything (an item, or a stale one it dropped).
    bool take_ready() {
        drop_stale_pending(time_.now());
        bool took = false;
        while (pending_.size() < options_.max_size) {
            const std::lock_guard<std::mutex> lock(stats_mu_);
            std::optional<selected<T>> s = sel_.try_select(capped_);
            if (!s) {
                break;
            }
            took = true;
            const time_point now = time_.now(); // noexcept (batch_time): the item is not lost
            source_counters& c = sources_.at(s->input.value); // created by add()
            if (stale(s->item, now)) {
                ++c.expired;
                ++totals_.expired;
                continue;
            }
            pending_.push_back(pending_item{std::move(s->item), s->input, now}); // below max_size
            if (++c.pending >= cap_) {
                update_capped_locked();
            }
        }
        return took;
    }

    [[nodiscard]] std::optional<std::size_t> largest_preferred(std::size_t count) const noexcept {
        const auto& p = options_.preferred_sizes; // sorted
        const auto it = std::upper_bound(p.begin(), p.end(), count);
        if (it == p.begin()) {
            return std::nullopt;
        }
        return *(it - 1);
    }

    // How long the oldest pending item has waited at `now`, saturating (a clock of the caller's
    // may go from time_point::min() to max()). Requires stats_mu_ and an item pending.
    [[nodiscard]] time_point::duration waited_locked(time_point now) const noexcept {
        return detail::saturating_difference(now.time_since_epoch(),
                                             pending_.front().arrival.time_since_epoch());
    }

    // waited_locked(now) in nanoseconds, 0 at least (a clock of the caller's that went back) and
    // nanoseconds::max() at most (one whose duration is coarser or finer: no overflow in the
    // conversion). Requires stats_mu_.
    [[nodiscard]] std::chrono::nanoseconds queue_delay_locked(time_point now) const noexcept {
        const auto waited = waited_locked(now);
        if (waited <= time_point::duration::zero()) {
            return std::chrono::nanoseconds{0};
        }
        constexpr auto ceiling = std::chrono::nanoseconds::max();
        if (std::chrono::duration<long double, std::nano>(waited).count() >=
            static_cast<long double>(ceiling.count())) {
            return ceiling;
        }
        return std::chrono::duration_cast<std::chrono::nanoseconds>(waited);
    }

    // The first n pending items as a batch. Requires stats_mu_.
    batch<T> flush_locked(flush_cause cause, std::size_t n, time_point now) {
        batch<T> b;
        b.items.reserve(n); // may throw: nothing has changed yet
        b.sources.reserve(n);
        b.cause = cause;
        b.queue_delay = queue_delay_locked(now);
        for (std::size_t i = 0; i < n; ++i) {
            b.items.push_back(std::move(pending_[i].item));
            b.sources.push_back(pending_[i].source);
            const auto it = sources_.find(pending_[i].source.value);
            ++it->second.batched;
            unpend_locked(it); // a removed source's counters go with its last pending item
        }
        for (std::size_t i = 0; i < n; ++i) {
            pending_.pop_front();
        }
        update_capped_locked();
        ++totals_.batches;
        totals_.items += n;
        ++histogram_[n];
        switch (cause) {
        case flush_cause::full: ++totals_.flushes.full; break;
        case flush_cause::preferred: ++totals_.flushes.preferred; break;
        case flush_cause::deadline: ++totals_.flushes.deadline; break;
        case flush_cause::close: ++totals_.flushes.close; break;
        }
        totals_.last_queue_delay = b.queue_delay;
        totals_.max_queue_delay = std::max(totals_.max_queue_delay, b.queue_delay);
        // Saturating: a delay can be nanoseconds::max() (a clock of the caller's, see
        // waited_locked), and is never negative (queue_delay_locked).
        totals_.total_queue_delay =
            b.queue_delay > std::chrono::nanoseconds::max() - totals_.total_queue_delay
                ? std::chrono::nanoseconds::max()
                : totals_.total_queue_delay + b.queue_delay;
        return b;
    }

    // The rule of the file comment, once nothing more is ready at once, after dropping the
    // pending items that have grown too old (at this `now`, the one the batch goes with).
    // `over` is set when the batcher has ended: closed, every source finished, nothing pending.
    std::optional<batch<T>> decide(time_point now, bool& over) {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        drop_stale_pending_locked(now);
        // Closed, and no source can add to the batch. After take_ready() (and the drop, which
        // may uncap sources): no source outside capped_ has anything now, and only this call
        // takes from them.
        const bool ended = sel_.ended_except(capped_);
        const std::size_t n = pending_.size();
        if (n == 0) {
            over = ended; // nothing pending: nothing capped, so every source has finished
            return std::nullopt;
        }
        if (n == options_.max_size) {
            return flush_locked(flush_cause::full, n, now);
        }
        if (const auto p = largest_preferred(n)) {
            return flush_locked(flush_cause::preferred, *p, now);
        }
        if (waited_locked(now) >= options_.max_delay) {
            return flush_locked(flush_cause::deadline, n, now);
        }
        if (ended) {
            return flush_locked(flush_cause::close, n, now);
        }
        return std::nullopt;
    }

    // The turn to form a batch: one call at a time. A flag and an event count rather than a
    // mutex, so that a call waiting for its turn keeps its own limits (stop token, deadline),
    // and try_pop does not wait at all.
    class forming_turn {
    public:
        forming_turn(batcher& b, const std::stop_token* stop,
                     const std::optional<detail::clock::time_point>& deadline, bool wait) noexcept
            : b_(b) {
            // Acquire: pairs with the release of the previous turn's end, so this call sees
            // everything that one did (pending_ itself is guarded by stats_mu_ as well).
            const auto free = [&b]() noexcept {
                return !b.forming_.load(std::memory_order_acquire);
            };
            for (;;) {
                if (!b.forming_.exchange(true, std::memory_order_acquire)) {
                    held_ = true;
                    return;
                }
                if (!wait || b.form_ev_.wait(stop, deadline, free) != detail::wait_end::ready) {
                    return; // try_pop, or the call's stop or deadline came first
                }
            }
        }

        ~forming_turn() {
            if (held_) {
                // Release: see the constructor. Then notify_one (a read-modify-write, so any
                // kind of store before it is seen by a waiter's re-check; see event_count).
                b_.forming_.store(false, std::memory_order_release);
                b_.form_ev_.notify_one();
            }
        }

        forming_turn(const forming_turn&) = delete;
        forming_turn& operator=(const forming_turn&) = delete;

        [[nodiscard]] bool held() const noexcept { return held_; }

    private:
        batcher& b_;
        bool held_ = false;
    };

    std::optional<batch<T>> pop_impl(const std::stop_token* stop,
                                     const std::optional<detail::clock::time_point>& deadline,
                                     bool wait) {
        const forming_turn turn(*this, stop, deadline, wait);
        if (!turn.held()) {
            return std::nullopt; // another call forms a batch (try_pop), or stop or deadline
        }
        unsigned spins = 0;
        bool woke = false;
        std::uint64_t seen = 0; // the selector's progress at the last look
        for (;;) {
            if (stop != nullptr && stop->stop_requested()) {
                return std::nullopt;
            }
            const bool took = take_ready();
            // Relaxed: a hint (see selector::moved_locked()); take_ready() took the lock after
            // any change it could see.
            const std::uint64_t now_seen = sel_.progress_.load(std::memory_order_relaxed);
            const bool moved = took || now_seen != seen;
            seen = now_seen;
            bool over = false;
            if (auto b = decide(time_.now(), over)) {
                return b;
            }
            // The call's deadline is checked after a look, so a batch due by then goes.
            if (over || !wait || (deadline && detail::clock::now() >= *deadline)) {
                return std::nullopt; // after the last batch, not due yet, or the call's deadline
            }
            // Wait for an item from a source below its cap, until the batch's deadline (real
            // time for the clock's remaining time) or the call's.
            std::optional<detail::clock::time_point> until = deadline;
            std::vector<input_id> capped;
            {
                const time_point now = time_.now();
                const std::lock_guard<std::mutex> lock(stats_mu_);
                if (!pending_.empty()) {
                    // What is left of max_delay, without forming arrival + max_delay (which
                    // overflows for a max_delay of nanoseconds::max(): "never by deadline").
                    const std::chrono::nanoseconds waited = queue_delay_locked(now);
                    const auto left = waited >= options_.max_delay
                                          ? std::chrono::nanoseconds{0}
                                          : options_.max_delay - waited;
                    const auto at = detail::deadline_after(left); // saturates
                    until = until ? std::min(*until, at) : at;
                }
                capped = capped_;
            }
            if (moved) {
                // Wait again at once, without a back-off step; the steps taken so far stay (see
                // selector::pop_impl).
            } else if (woke) {
                // Woken, and nothing was there and nothing moved (a push has claimed a ring's
                // position and not filled it yet, see selector::pop_impl): back off, but not past
                // `until`.
                detail::backoff_until(spins, until);
            }
            const detail::wait_end end = sel_.wait_ready(capped, stop, until);
            if (end == detail::wait_end::stopped) {
                return std::nullopt;
            }
            woke = end == detail::wait_end::ready; // timed out: look again (the batch may be due)
            if (woke) {
                FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK(); // a test seam (detail/config.hpp)
            }
        }
    }

    const batcher_options options_;
    const Time time_;
    selector<T> sel_;
    const std::size_t cap_; // max_per_source, 0 meaning max_size
    const std::optional<std::chrono::nanoseconds> pending_limit_ = pending_limit(options_);

    // The turn to form a batch (see forming_turn): set while a call forms one.
    std::atomic<bool> forming_{false};
    detail::event_count form_ev_; // calls waiting for their turn park here
    // Guards the pending items and every counter below; taken around each take from the
    // selector, so a snapshot never sees an item between the selector and the batch.
    mutable std::mutex stats_mu_;
    detail::fixed_queue<pending_item> pending_;   // in order of arrival; at most max_size
    std::vector<input_id> capped_;                // sources at their cap
    std::map<std::uint64_t, source_counters> sources_;
    batcher_stats totals_;                        // batches, items, flushes, delays, expired
    std::vector<std::uint64_t> histogram_;
};

// How a pipeline shows a batcher (see channel_traits): a channel of batches, counted in items
// over every source it has had (stats().input_totals and the batcher's own counters): pushed is
// taken from the sources, popped is items in batches emitted, expired is the selector's max_age
// and staleness together, evicted is the selector's dropped, size is held and pending. Its
// policy reads "batch max_size 8, 3 sources". No capacity is shown: besides max_size pending
// items, each source may hold one (oldest_first compares a candidate per source).
template <class T, class Time>
struct channel_traits<batcher<T, Time>> {
    static constexpr std::string_view kind = "batcher";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
    // request_stop() closes it: its close() forbids new inputs, and its consumer still gets every
    // item of the inputs it has.
    static constexpr bool close_on_stop = true;

    [[nodiscard]] static channel_description describe(const batcher<T, Time>& b) {
        const batcher_stats s = b.stats();
        const selector_totals& t = s.input_totals;
        channel_description d;
        d.kind = std::string(kind);
        d.policy = "batch max_size " + std::to_string(b.options().max_size) + ", " +
                   std::to_string(t.inputs) + (t.inputs == 1 ? " source" : " sources");
        channel_stats st;
        st.pushed = t.taken;
        st.popped = s.items;
        st.expired = t.expired + s.expired;
        st.evicted = t.dropped;
        st.dropped = st.expired + st.evicted;
        st.size = t.held + s.pending;
        d.stats = st;
        return d;
    }

    // The channels it reads: the pipeline's edges from them.
    [[nodiscard]] static std::vector<const void*> inputs(const batcher<T, Time>& b) {
        return b.input_channels();
    }
};

// A batch counts as its items in a batcher's counters (what a paced stage passes over, too).
namespace detail {
template <class T>
struct item_weight<batch<T>> {
    [[nodiscard]] static std::uint64_t of(const batch<T>& b) noexcept { return b.items.size(); }
};
} // namespace detail

// A batch's capture time is its oldest item's, so that a pipeline's age histogram (and a channel
// of batches' max_age) reads the age of the stalest frame in it. An empty batch has
// time_point::max(), like a null pointer: never expired.
template <class T>
    requires timestamped<T>
struct timestamp_traits<batch<T>> {
    static std::chrono::steady_clock::time_point capture_time(const batch<T>& b) noexcept {
        auto oldest = std::chrono::steady_clock::time_point::max();
        for (const T& item : b.items) {
            oldest = std::min(oldest, timestamp_traits<T>::capture_time(item));
        }
        return oldest;
    }
};

} // namespace framepipe
