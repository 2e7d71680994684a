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
//   4. close:     the batcher is closed and every source has finished -> everything pending;
//                 then pop() returns nullopt. (A source at its cap whose channel has closed and
//                 emptied finishes too: see pop_impl.)
// Otherwise it waits for an item from a source that may still contribute, until the oldest
// pending item's deadline (or, with nothing pending, as long as the call allows).
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
// - Items older than `staleness` when taken (by timestamp_traits<T>, on the batcher's clock) are
//   dropped before batching, counted as expired for their source. An item then waits at most
//   max_delay more, so none in a batch is older than staleness + max_delay.
// - A dead or slow source never extends the wait: the deadline depends only on the items
//   pending, and a source is only ever asked with try_pop.
//
// Time: the batcher reads arrivals, ages and deadlines from `Time::now()` (steady_clock by
// default). A test gives a virtual clock and drives the batcher with try_pop(), which never
// waits: each decision depends only on what the sources hold and on now(). The waiting calls
// (pop, pop_for) wait on the real steady clock for the virtual time remaining.
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
    close,     // the batcher was closed and every source had finished
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
    std::size_t max_per_source = 0;             // items from one source per batch; 0: max_size
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

// A clock a batcher can read.
template <class Time>
concept batch_time = requires(const Time& t) {
    { t.now() } -> std::same_as<std::chrono::steady_clock::time_point>;
};

// Forms batches from the items of its sources; see the file comment for the rule and the
// guarantees.
//
// Thread safety: add, remove, close, closed, finished and stats from any thread at any time.
// pop, try_pop and pop_for from any thread; calls forming a batch are serialised (a second
// caller waits for the first to return), so one consumer thread is the natural use.
template <class T, class Time = steady_batch_time>
class batcher {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "framepipe::batcher<T>: T's move constructor must be noexcept (items are moved "
                  "into batches; hold a T whose move may throw by std::shared_ptr)");
    static_assert(batch_time<Time>, "framepipe::batcher<T, Time>: Time needs now() returning "
                                    "std::chrono::steady_clock::time_point");

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
    // max_size; a negative max_delay or staleness; a staleness when T carries no capture time;
    // policy oldest_first when T carries no capture time. std::bad_alloc.
    explicit batcher(batcher_options options = {}, Time time = {})
        : options_(validated(std::move(options))), time_(std::move(time)),
          sel_(selector_options{.policy = options_.policy}),
          cap_(options_.max_per_source == 0 ? options_.max_size
                                            : std::min(options_.max_per_source, options_.max_size)),
          pending_(options_.max_size) {
        capped_.reserve(options_.max_size);
        histogram_.assign(options_.max_size + 1, 0);
    }

    batcher(const batcher&) = delete;
    batcher& operator=(const batcher&) = delete;

    // Adds a source (see selector::add: same options, same rules: the channel stays where it is
    // until remove() returns or it has finished). Any thread, also while a consumer waits.
    // Throws what selector::add throws; std::bad_alloc. On a throw nothing changed.
    template <class C>
        requires selectable<C, T>
    input_id add(C& channel, input_options options = {}) {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        // Under stats_mu_: no consumer can take from the new source before its counters exist.
        const input_id id = sel_.add(channel, std::move(options));
        try {
            sources_.emplace(id.value, source_counters{});
        } catch (...) {
            (void)sel_.remove(id);
            throw;
        }
        return id;
    }

    // Stops reading source `id` (see selector::remove) and returns its counters; nullopt if
    // there is no such source. Its items already pending stay in the batch being formed (they
    // are listed under the source, removed, until they go). Any thread. Never throws but
    // std::bad_alloc (copying the name).
    std::optional<batch_source_stats> remove(input_id id) {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        auto input = sel_.remove(id);
        const auto it = sources_.find(id.value);
        if (!input || it == sources_.end()) {
            return std::nullopt;
        }
        batch_source_stats out = stats_of(*input, it->second);
        if (it->second.pending == 0) {
            sources_.erase(it);
        } else {
            it->second.removed = std::move(*input);
            out.removed = true;
        }
        return out;
    }

    // The next batch if one is due now (see the rule in the file comment). Never waits for an
    // item (it takes what the sources hold now), nor for the deadline. nullopt when no batch is
    // due (the items taken stay pending; their deadline runs on), or after the last batch.
    // Exceptions: std::bad_alloc, or what a source's channel throws; nothing is lost.
    [[nodiscard]] std::optional<batch<T>> try_pop() { return pop_impl(nullptr, detail::no_deadline, false); }

    // The next batch, waiting for items and for the deadline as the rule says. Blocks (parks
    // while nothing is ready). nullopt only after the last batch: closed, every source finished.
    [[nodiscard]] std::optional<batch<T>> pop() { return pop_impl(nullptr, detail::no_deadline, true); }

    // As pop(), but nullopt as soon as `stop` is requested; what is pending stays pending.
    [[nodiscard]] std::optional<batch<T>> pop(std::stop_token stop) {
        return pop_impl(&stop, detail::no_deadline, true);
    }

    // As pop(), waiting at most `timeout` (real time). Any std::chrono::duration; one beyond
    // nanoseconds' range (say seconds::max()) means no limit. Throws std::invalid_argument naming
    // timeout when it is negative or NaN.
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
    // nullopt. Does not close the sources. Wakes a waiting consumer. Any thread; idempotent.
    void close() { sel_.close(); }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return sel_.closed(); }

    // Whether the last batch has been delivered: closed, every source finished, nothing
    // pending. Any thread; takes the internal locks briefly.
    [[nodiscard]] bool finished() const {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        return pending_.empty() && sel_.ended();
    }

    [[nodiscard]] const batcher_options& options() const noexcept { return options_; }

    // A snapshot of the counters; the per-source identity (file comment) holds exactly. Any
    // thread; takes the internal locks briefly; allocates.
    [[nodiscard]] batcher_stats stats() const {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        batcher_stats s = totals_;
        s.size_histogram = histogram_;
        s.pending = pending_.size();
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

    // Takes what the sources hold now, up to max_size pending, passing over capped sources.
    // True when it took anything (an item, or a stale one it dropped).
    bool take_ready() {
        bool took = false;
        while (pending_.size() < options_.max_size) {
            const std::lock_guard<std::mutex> lock(stats_mu_);
            std::optional<selected<T>> s = sel_.try_select(capped_);
            if (!s) {
                break;
            }
            took = true;
            const time_point now = time_.now();
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

    // The first n pending items as a batch. Requires stats_mu_.
    batch<T> flush_locked(flush_cause cause, std::size_t n, time_point now) {
        batch<T> b;
        b.items.reserve(n); // may throw: nothing has changed yet
        b.sources.reserve(n);
        b.cause = cause;
        b.queue_delay = std::chrono::duration_cast<std::chrono::nanoseconds>(
            now - pending_.front().arrival);
        for (std::size_t i = 0; i < n; ++i) {
            b.items.push_back(std::move(pending_[i].item));
            b.sources.push_back(pending_[i].source);
            const auto it = sources_.find(pending_[i].source.value);
            source_counters& c = it->second;
            --c.pending;
            ++c.batched;
            if (c.removed && c.pending == 0) {
                sources_.erase(it); // its last pending item has gone
            }
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
        totals_.total_queue_delay += b.queue_delay;
        return b;
    }

    // The rule of the file comment, once nothing more is ready at once. `ended`: the selector
    // has ended (closed, every source finished).
    std::optional<batch<T>> decide(time_point now, bool ended) {
        const std::lock_guard<std::mutex> lock(stats_mu_);
        const std::size_t n = pending_.size();
        if (n == 0) {
            return std::nullopt;
        }
        if (n == options_.max_size) {
            return flush_locked(flush_cause::full, n, now);
        }
        if (const auto p = largest_preferred(n)) {
            return flush_locked(flush_cause::preferred, *p, now);
        }
        if (now - pending_.front().arrival >= options_.max_delay) {
            return flush_locked(flush_cause::deadline, n, now);
        }
        if (ended) {
            return flush_locked(flush_cause::close, n, now);
        }
        return std::nullopt;
    }

    std::optional<batch<T>> pop_impl(const std::stop_token* stop,
                                     const std::optional<detail::clock::time_point>& deadline,
                                     bool wait) {
        const std::lock_guard<std::mutex> forming(form_mu_);
        unsigned spins = 0;
        bool woke = false;
        for (;;) {
            if (stop != nullptr && stop->stop_requested()) {
                return std::nullopt;
            }
            const bool took = take_ready();
            {
                // A source at its cap is passed over, so the selector would not see it finish:
                // let go of those whose channels are closed and empty, so that the close rule
                // does not wait for the batch's deadline (nor the wait below for their close).
                const std::lock_guard<std::mutex> lock(stats_mu_);
                if (!capped_.empty()) {
                    sel_.settle_excluded(capped_);
                }
            }
            // After take_ready(): an ended selector then has nothing more (its sources have
            // finished, and only this call takes from them).
            const bool ended = sel_.ended();
            const time_point now = time_.now();
            if (auto b = decide(now, ended)) {
                return b;
            }
            if (ended || !wait) {
                return std::nullopt; // after the last batch, or not due yet
            }
            if (woke && !took) {
                // Woken, and nothing was there (see selector::pop_impl): back off, and honour
                // the call's deadline, which a ready predicate would skip.
                if (deadline && detail::clock::now() >= *deadline) {
                    return std::nullopt;
                }
                detail::backoff(spins);
            }
            // Wait for an item from a source below its cap, until the batch's deadline (real
            // time for the clock's remaining time) or the call's.
            std::optional<detail::clock::time_point> until = deadline;
            std::vector<input_id> capped;
            {
                const std::lock_guard<std::mutex> lock(stats_mu_);
                if (!pending_.empty()) {
                    // What is left of max_delay, without forming arrival + max_delay (which
                    // overflows for a max_delay of nanoseconds::max(): "never by deadline").
                    const auto waited = std::max(
                        std::chrono::duration_cast<std::chrono::nanoseconds>(
                            now - pending_.front().arrival),
                        std::chrono::nanoseconds{0});
                    const auto left = waited >= options_.max_delay
                                          ? std::chrono::nanoseconds{0}
                                          : options_.max_delay - waited;
                    const auto at = detail::deadline_after(left); // saturates
                    until = until ? std::min(*until, at) : at;
                }
                capped = capped_;
            }
            const detail::wait_end end = sel_.wait_ready(capped, stop, until);
            if (end == detail::wait_end::stopped) {
                return std::nullopt;
            }
            if (end == detail::wait_end::timed_out && deadline &&
                detail::clock::now() >= *deadline) {
                return std::nullopt; // the call's deadline (the batch's is checked above)
            }
            woke = end == detail::wait_end::ready;
        }
    }

    const batcher_options options_;
    const Time time_;
    selector<T> sel_;
    const std::size_t cap_; // max_per_source, 0 meaning max_size

    std::mutex form_mu_; // one batch formed at a time (held across waits)
    // Guards the pending items and every counter below; taken around each take from the
    // selector, so a snapshot never sees an item between the selector and the batch.
    mutable std::mutex stats_mu_;
    detail::fixed_queue<pending_item> pending_;   // in order of arrival; at most max_size
    std::vector<input_id> capped_;                // sources at their cap
    std::map<std::uint64_t, source_counters> sources_;
    batcher_stats totals_;                        // batches, items, flushes, delays, expired
    std::vector<std::uint64_t> histogram_;
};

// How a pipeline shows a batcher (see channel_traits): a channel of batches.
template <class T, class Time>
struct channel_traits<batcher<T, Time>> {
    static constexpr std::string_view kind = "batcher";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
};

} // namespace framepipe
