// framepipe/select.hpp - one consumer over N channels: waits on all of them at once, without
// polling, and hands out the next item by policy (round robin, weighted, oldest first).
//
//     framepipe::ring<Frame> cam_a(4);
//     framepipe::spsc_ring<Frame> cam_b(4);
//     framepipe::latest_slot<Frame> cam_c;
//     framepipe::selector<Frame> frames;                       // round robin
//     const auto a = frames.add(cam_a);
//     frames.add(cam_b, {.max_age = 100ms});                   // older frames: expired
//     frames.add(cam_c, {.take = framepipe::input_take::oldest});
//     while (auto s = frames.pop()) process(s->item, s->input); // s->input: which camera
//
// Inputs: any framepipe channel (ring and spsc_ring of every kind, latest_slot, subscription,
// sliding_window) whose item type is T. Inputs may be added and removed at any time, also while
// consumers wait; the selector refers to each channel, which must stay where it is (not moved,
// not destroyed) until remove() returns for it or the input has finished (see below).
//
// Waking without polling. A selector parks on one detail::event_count of its own. add() attaches
// a detail::event_listener to the event count the channel's own consumers wait on ("readable":
// detail::readable_event); from then on every notification of that channel also notifies the
// selector's event count (event_count::wake calls listener.target->notify_one()). A consumer
// that finds nothing parks on the selector's event count with an exact predicate that looks at
// every input (size() != 0 or closed()).
//
// Why no push is missed (the argument the tests stress; see docs/select.md for more):
// 1. After add(). A push P is either visible to the selector's first look at the channel, or P's
//    notification reaches the listener. add() attaches (a seq_cst read-modify-write of the
//    channel's watcher count, W), then runs a full fence and asymmetric_barrier::heavy(), then
//    publishes the input under the selector's lock; every look at the channel happens after
//    that (under the lock, or in a wait predicate whose list was taken under it). By the
//    notifier's kind:
//    - notify_one()/notify_all() (locked ring, sliding_window, close()): the notifier reads W
//      with a read-modify-write. If it comes before the attach in W's modification order, the
//      attach reads from it (release -> acquire): P's state change happens before the look. If
//      after, it sees the listener.
//    - notify_*_after_seq_cst() (lock-free ring, latest_slot): P's state change is a seq_cst
//      store, then a seq_cst load of W. With the seq_cst fence after the attach, the single
//      total order forbids both "P's load misses the attach" and "the look misses P's store".
//    - notify_one_asymmetric() (spsc_ring): P's store is a plain release store, then a compiler
//      barrier, then a plain load of W. The heavy barrier (membarrier) makes every other running
//      thread pass a full barrier: either P's store came before it (visible to the look), or
//      P's load of W came after it (and sees the attach). That is why add() pays one heavy
//      barrier (a system call of a few microseconds); pushes pay nothing extra for it.
// 2. While attached: a push whose load of W sees the listener calls wake(), which (after the
//    push's state change, in program order) does a seq_cst read-modify-write on the selector's
//    own watcher count (its notify_one()). A parking consumer registers with a seq_cst
//    read-modify-write of that same count and then re-checks its predicate. Whichever comes
//    first in that count's modification order: the notifier's (the consumer's RMW reads from it,
//    so the push's state change happens before the re-check, whatever kind of store it was) or
//    the consumer's (the notifier sees a sleeper and bumps the futex word the consumer will
//    sleep on). This holds for the asymmetric and seq_cst notifiers too: the listener call is a
//    full read-modify-write on the selector's count, made after the notifier saw W != 0.
// Once a push's load of W has seen the listener, its later loads see it too (read-read
// coherence) until remove() detaches it.
//
// Taking. Consumers select under one internal lock; a take never waits for an item (try_pop on
// each channel), so the lock is held for a few channel calls. A channel found closed whose
// try_pop() finds nothing while its size() still counts an item (a ring position a push has
// claimed and not filled yet) is passed over: its fill notifies, and the next look takes it. A
// channel found closed and empty is drained with its own pop(), which then waits only for a push
// that read the channel open before the close and has not stored yet and that size() does not
// show (spsc_ring, latest_slot: a few instructions, unless that producer is preempted right
// there); then the input is detached: it has finished. A removal waits for a take in progress
// (the lock) and for wait predicates reading that channel right now (a pin count per input,
// checked against a `gone` flag, seq_cst on both sides), so once remove() returns nothing
// touches the channel.
//
// Per input, the selector takes either the newest item (input_take::newest, the default:
// freshness first; a ring holding several items is drained and the older ones are counted as
// dropped for that input) or the oldest (input_take::oldest: every item, in order).
//
// Accounting, per input, exact in every stats() snapshot (all counted under the lock):
//
//     taken == selected + expired + dropped + held
//
// taken: items the selector took out of the channel; selected: handed to a consumer; expired:
// older than the input's max_age when taken or when about to be handed out; dropped: superseded
// by a newer item of the same input (input_take::newest), held when the input was removed, or
// lost to an exception while being moved; held: taken and not yet handed out (0 or 1: the
// oldest_first policy compares one candidate per input).
//
// Ending. The selector never ends while it may get new inputs. close() forbids new inputs (add
// then throws); pop() returns nullopt once the selector is closed and every input has finished
// (closed and drained, nothing held) or been removed. close() does not close the inputs (they
// belong to their owners); to end a consumer at once, request its stop token.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>
#include <framepipe/detail/asymmetric_barrier.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace framepipe {

// How a selector picks the input the next item comes from.
enum class select_policy {
    // The inputs in turn, from the one after the last served (in order of addition); an input
    // with nothing ready loses its turn. Fairness: with N inputs that are always ready, each is
    // served once in every N consecutive selections.
    round_robin,
    // Deficit round robin with per-input weights (input_options::weight): each turn gives an
    // input w_i = weight / g selections in a row (g: the greatest common divisor of the
    // inputs' weights, so equal weights are round robin), ended early if it has nothing ready
    // (its credit is reset, as DRR does for an empty queue). With every input always ready and
    // W the sum of the w_i, input i gets exactly k * w_i of the first k * W selections, and
    // within w_i of n * w_i / W of the first n; over any n consecutive selections, within
    // 2 * w_i.
    weighted,
    // The input whose candidate item (its newest, or its oldest with input_take::oldest) was
    // captured first (timestamp_traits<T>); ties go to the next input in turn. Needs a
    // `timestamped` T. Fair in time, not in count: an input whose items are always newer than
    // another's waits.
    oldest_first,
};

[[nodiscard]] constexpr std::string_view to_string(select_policy p) noexcept {
    switch (p) {
    case select_policy::round_robin: return "round_robin";
    case select_policy::weighted: return "weighted";
    case select_policy::oldest_first: return "oldest_first";
    }
    return "unknown";
}

// Which item a selector takes from an input that holds several (a ring).
enum class input_take {
    newest, // drain to the newest; the older ones are counted as dropped for that input
    oldest, // the oldest: every item, in the channel's order
};

[[nodiscard]] constexpr std::string_view to_string(input_take t) noexcept {
    switch (t) {
    case input_take::newest: return "newest";
    case input_take::oldest: return "oldest";
    }
    return "unknown";
}

// Names one input of a selector (or a batcher). Ids start at 1 and are never reused by the same
// selector; a value-initialised id names no input.
struct input_id {
    std::uint64_t value = 0;

    friend constexpr bool operator==(input_id, input_id) noexcept = default;
    friend constexpr std::strong_ordering operator<=>(input_id, input_id) noexcept = default;
};

// How a selector treats one input. An aggregate for designated initialisers.
struct input_options {
    // select_policy::weighted: selections per turn (at least 1). Ignored by the other policies.
    std::uint32_t weight = 1;
    // Items older than this (by timestamp_traits<T>) are discarded, counted as expired. Needs a
    // `timestamped` T. Unset: no age limit.
    std::optional<std::chrono::nanoseconds> max_age{};
    // Which item to take from an input holding several.
    input_take take = input_take::newest;
    // For stats; "input-<id>" when empty.
    std::string name{};
};

// What a selector is configured with.
struct selector_options {
    select_policy policy = select_policy::round_robin;
};

// An item and the input it came from.
template <class T>
struct selected {
    T item;
    input_id input;
};

// One input's counters (see the file comment for the identity they satisfy).
struct input_stats {
    input_id id;
    std::string name;
    std::uint32_t weight = 1;
    std::uint64_t taken = 0;    // items the selector took out of the channel
    std::uint64_t selected = 0; // handed to a consumer
    std::uint64_t expired = 0;  // older than max_age
    std::uint64_t dropped = 0;  // superseded by a newer item, or held when removed
    std::uint64_t held = 0;     // taken, not yet handed out: 0 or 1
    bool finished = false;      // closed and drained, nothing held: the channel is let go
};

// The counters of every input a selector has had, removed ones included, summed: the first four
// only grow. The identity of the file comment holds for the sums.
struct selector_totals {
    std::uint64_t taken = 0;
    std::uint64_t selected = 0;
    std::uint64_t expired = 0;
    std::uint64_t dropped = 0;
    std::uint64_t held = 0;  // items held now (at most one per input)
    std::size_t inputs = 0;  // inputs now (finished ones included, removed ones not)
    std::uint64_t added = 0; // inputs ever added
};

// The item type of a channel's try_pop().
template <class C>
using try_pop_item_t = std::remove_cvref_t<decltype(*std::declval<C&>().try_pop())>;

// A channel a selector<T> can watch: a framepipe channel (it exposes its readable event to
// detail::readable_event) with try_pop(), a pop(std::stop_token) that on a closed channel waits
// only for pushes in flight, wait-free size() and closed(), and items of type T.
template <class C, class T>
concept selectable = input_channel<C> && requires(C& c, const C& cc) {
    { c.try_pop() } -> optional_like;
    { cc.size() } noexcept -> std::convertible_to<std::size_t>;
    { cc.closed() } noexcept -> std::convertible_to<bool>;
    { detail::readable_event(c) } noexcept -> std::same_as<detail::event_count&>;
} && std::same_as<try_pop_item_t<C>, T> && std::same_as<input_item_t<C>, T>;

template <class T>
class selector;

template <class T, class Time>
class batcher;

namespace detail {

// One input of a selector, whatever its channel type. The channel calls are virtual; the
// counters and the held item are guarded by the selector's lock; pins_ and gone_ are the
// handshake that keeps a wait predicate from touching a channel that was let go (see retire()).
template <class T>
class select_input {
public:
    select_input(event_count& readable, event_count& target, const void* channel_address,
                 input_options o)
        : address(channel_address), options(std::move(o)), readable_(readable),
          listener_{&target, nullptr} {}

    select_input(const select_input&) = delete;
    select_input& operator=(const select_input&) = delete;
    virtual ~select_input() = default;

    // Whether the channel has an item or is closed. Any thread, no lock; wait-free.
    [[nodiscard]] virtual bool probe() const noexcept = 0;
    // The channel's try_pop(). Under the selector's lock.
    [[nodiscard]] virtual std::optional<T> try_take() = 0;
    // The channel's pop() once it is closed and looks empty: an item of a push in flight that
    // size() does not show, or nullopt once drained. Under the selector's lock.
    [[nodiscard]] virtual std::optional<T> take_closed() = 0;
    [[nodiscard]] virtual bool channel_closed() const noexcept = 0;
    [[nodiscard]] virtual std::size_t channel_size() const noexcept = 0;

    // probe(), unless the channel has been let go. For wait predicates (no lock). The pin comes
    // first, then the check of gone_; retire() sets gone_, then waits for the pins to drop. Both
    // sides seq_cst: in their single total order either this check sees gone_ (and the channel
    // is not touched), or retire()'s load of the pins sees this pin (and waits for it).
    [[nodiscard]] bool probe_pinned() noexcept {
        return pinned([this]() noexcept { return probe(); });
    }

    // Whether the channel is closed, unless it has been let go: the same handshake. For wait
    // predicates that pass the input over (no lock).
    [[nodiscard]] bool closed_pinned() noexcept {
        return pinned([this]() noexcept { return channel_closed(); });
    }

    // From now on, every notification of the channel's readable event notifies the selector.
    void attach() noexcept { readable_.attach(listener_); }

    // Lets the channel go: no wait predicate reads it once this returns, and no notification of
    // the channel touches the selector. Under the selector's lock.
    void retire() noexcept {
        attached = false;
        // seq_cst, both: the other half of probe_pinned()'s handshake.
        gone_.store(true, std::memory_order_seq_cst);
        unsigned spins = 0;
        while (pins_.load(std::memory_order_seq_cst) != 0) {
            backoff(spins); // a predicate between its pin and its unpin: a few instructions
        }
        readable_.detach(listener_);
    }

    [[nodiscard]] input_stats stats() const {
        return {.id = id,
                .name = options.name,
                .weight = options.weight,
                .taken = taken,
                .selected = selected,
                .expired = expired,
                .dropped = dropped,
                .held = held ? 1U : 0U,
                .finished = finished};
    }

    // Guarded by the selector's lock (id and options are set before the input is published and
    // never change after; wait predicates read id without the lock).
    const void* const address; // the channel's, for selector::input_channels()
    input_id id{};
    input_options options;
    std::optional<T> held;     // the candidate taken from the channel, not yet handed out
    std::uint32_t credit = 0;  // selections left in this input's turn
    bool attached = false;     // the listener is attached and the channel may be used
    bool finished = false;     // let go, nothing held
    std::uint64_t taken = 0;
    std::uint64_t selected = 0;
    std::uint64_t expired = 0;
    std::uint64_t dropped = 0;

private:
    // check() under a pin, unless the channel has been let go (see probe_pinned()).
    template <class Check>
    [[nodiscard]] bool pinned(Check check) noexcept {
        pins_.fetch_add(1, std::memory_order_seq_cst);
        const bool r =
            !gone_.load(std::memory_order_seq_cst) && (FRAMEPIPE_DETAIL_SELECT_PROBE_HOOK(), check());
        // Release: retire() (acquire) sees the channel calls above finished before it lets go.
        pins_.fetch_sub(1, std::memory_order_release);
        return r;
    }

    event_count& readable_;
    event_listener listener_;
    // A line of its own: written by every wait predicate's probe, read by retire().
    alignas(cache_line) std::atomic<std::uint32_t> pins_{0};
    std::atomic<bool> gone_{false};
};

template <class T, class C>
class select_input_of final : public select_input<T> {
public:
    select_input_of(C& channel, event_count& target, input_options o)
        : select_input<T>(readable_event(channel), target, &channel, std::move(o)),
          c_(channel) {}

    [[nodiscard]] bool probe() const noexcept override { return c_.size() != 0 || c_.closed(); }
    [[nodiscard]] std::optional<T> try_take() override { return c_.try_pop(); }
    [[nodiscard]] std::optional<T> take_closed() override { return c_.pop(std::stop_token{}); }
    [[nodiscard]] bool channel_closed() const noexcept override { return c_.closed(); }
    [[nodiscard]] std::size_t channel_size() const noexcept override { return c_.size(); }

private:
    C& c_;
};

} // namespace detail

// Waits on N channels at once and hands out the next item by policy, with the input it came
// from. See the file comment for the wake-up design, the accounting and how it ends.
//
// Thread safety: every member may be called from any thread, concurrently, except the
// destructor. Any number of consumer threads may pop; their selections are serialised by an
// internal lock (held for a few channel calls per selection, never while waiting), which also
// makes the selector the one consumer an spsc_ring input admits at a time. Items it drops
// (superseded, expired, held at remove()) are destroyed under that lock, which a pipeline's
// snapshot() and request_stop() take too: T's destructor must not call into this selector or
// such a pipeline.
//
// Cost: a push into a watched channel takes the notifier's slow path (its listener-list lock
// and a read-modify-write on the selector's event count; a futex wake when a consumer is
// parked). A selection costs one try_pop per input visited.
template <class T>
class selector {
    static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                  "framepipe::selector<T>: T must be an object type (not a reference or array)");
    static_assert(std::is_move_constructible_v<T>,
                  "framepipe::selector<T>: T must be move-constructible");
    static_assert(std::is_nothrow_destructible_v<T>,
                  "framepipe::selector<T>: T's destructor must not throw");

    using input = detail::select_input<T>;
    using input_list = std::vector<std::shared_ptr<input>>;

public:
    using value_type = selected<T>;
    using clock = std::chrono::steady_clock;

    // A selector without inputs. Throws std::invalid_argument naming policy for a value that is
    // no select_policy, or for oldest_first when T carries no capture time (timestamp_traits).
    explicit selector(selector_options options = {}) : policy_(options.policy) {
        if (to_string(policy_) == "unknown") {
            throw std::invalid_argument("policy: not a select_policy");
        }
        if constexpr (!timestamped<T>) {
            if (policy_ == select_policy::oldest_first) {
                throw std::invalid_argument("policy: oldest_first needs a timestamped T "
                                            "(specialise framepipe::timestamp_traits)");
            }
        }
    }

    selector(const selector&) = delete;
    selector& operator=(const selector&) = delete;

    // Detaches every input. No thread may be inside a call on this selector.
    ~selector() {
        const std::lock_guard<std::mutex> lock(mu_);
        for (const auto& in : inputs_) {
            if (in->attached) {
                in->retire();
            }
        }
    }

    // Watches `channel` from now on; returns its id. `channel` must stay where it is until
    // remove(id) returns or the input has finished. Any thread, also while consumers wait (they
    // see the new input at once). Blocks briefly: the internal lock and one process-wide memory
    // barrier (membarrier(2); see the file comment). Throws std::invalid_argument naming weight
    // (0), take (no input_take), max_age (negative, or T not `timestamped`) or channel (a
    // moved-from subscription);
    // std::logic_error after close(); std::bad_alloc. On a throw nothing changed.
    template <class C>
        requires selectable<C, T>
    input_id add(C& channel, input_options options = {}) {
        const std::optional<input_id> id = try_add(channel, std::move(options));
        if (!id) {
            throw std::logic_error("framepipe::selector: add() after close()");
        }
        return *id;
    }

    // As add(), but nullopt after close() instead of a throw: for a camera that may join while
    // the selector's pipeline stops (request_stop() closes the selector). The other throws are
    // add()'s.
    template <class C>
        requires selectable<C, T>
    [[nodiscard]] std::optional<input_id> try_add(C& channel, input_options options = {}) {
        validate(options);
        if constexpr (requires { channel.valid(); }) {
            if (!channel.valid()) {
                throw std::invalid_argument("channel: an empty (moved-from) subscription");
            }
        }
        auto in = std::make_shared<detail::select_input_of<T, C>>(channel, ev_, std::move(options));
        const std::lock_guard<std::mutex> lock(mu_);
        if (closed_) {
            return std::nullopt;
        }
        // Everything that may throw comes before the attach. Nobody else sees `in` yet.
        in->id = input_id{next_id_};
        if (in->options.name.empty()) {
            in->options.name = "input-" + std::to_string(in->id.value);
        }
        auto list = std::make_shared<input_list>();
        list->reserve(inputs_.size() + 1);
        list->assign(inputs_.begin(), inputs_.end());
        list->push_back(in);
        inputs_.reserve(inputs_.size() + 1);

        // Attach, then the barriers, then publish: every look at the channel comes after these
        // (see the file comment, point 1).
        in->attach();
        in->attached = true;
        detail::asymmetric_barrier::full_fence(); // pairs with seq_cst notifiers
        detail::asymmetric_barrier::heavy();      // pairs with asymmetric notifiers (spsc_ring)
        FRAMEPIPE_DETAIL_SELECT_ATTACHED_HOOK();  // a test seam (detail/config.hpp)
        ++next_id_;
        inputs_.push_back(in); // reserved: no throw
        probe_list_ = std::move(list);
        update_weights_locked();
        if (in->options.max_age) {
            ++aged_inputs_;
        }
        changed_locked();
        return in->id;
    }

    // Stops watching input `id` and returns its final counters (an item it held is counted as
    // dropped, and destroyed under the internal lock: its destructor must not call into this
    // selector, nor into a pipeline that has it as a channel); nullopt if there is no such input
    // (never added, or removed already). Once this returns, the selector never touches that
    // channel again. Any thread, also while consumers
    // wait or take: waits for a selection in progress (the internal lock) and for wait
    // predicates reading the channel at this moment (a few instructions). Throws std::bad_alloc
    // (copying the input's name into the counters returned), and then nothing has changed: the
    // input is still there; or what std::mutex::lock may throw.
    std::optional<input_stats> remove(input_id id) {
        std::shared_ptr<input> gone; // destroyed after the lock is released (its held item not)
        std::optional<input_stats> out;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            const auto it = find_locked(id);
            if (it == inputs_.end()) {
                return std::nullopt;
            }
            gone = *it;
            out = gone->stats(); // first: it allocates (the name); nothing has changed yet
            if (gone->attached) {
                gone->retire();
            }
            if (gone->held) {
                gone->held.reset();
                ++gone->dropped;
                out->held = 0;
                out->dropped = gone->dropped;
            }
            gone->finished = true;
            out->finished = true;
            removed_.taken += gone->taken;
            removed_.selected += gone->selected;
            removed_.expired += gone->expired;
            removed_.dropped += gone->dropped;
            inputs_.erase(it);
            update_weights_locked();
            if (gone->options.max_age) {
                --aged_inputs_;
            }
            // A new probe list without it, if memory allows; otherwise it stays listed and gone
            // (probe_pinned() skips it) until the next add.
            try {
                auto list = std::make_shared<input_list>(inputs_.begin(), inputs_.end());
                probe_list_ = std::move(list);
            } catch (...) { // NOLINT(bugprone-empty-catch): the old list stays, as said above
                (void)0;
            }
            changed_locked();
        }
        return out;
    }

    // The next item by policy, if one is ready now. Any thread. Never waits for an item. It may
    // wait for the internal lock, and, on a channel found closed and empty, for a push that read
    // it open before the close and has not stored yet (spsc_ring, latest_slot: a few
    // instructions; see the file comment, "Taking"). nullopt when nothing is ready.
    // Exceptions: what a channel's try_pop() or pop() throws (the item stays in the channel, or
    // is dropped and counted there, by the channel's guarantee: latest_slot's, say), or what T's
    // move constructor throws: while handing the item out (it stays held by the selector and is
    // offered again), or while taking it into the selector (counted as dropped; one move more
    // for the last item of a channel closed while a push was in flight). Counters stay exact.
    [[nodiscard]] std::optional<selected<T>> try_pop() {
        return pop_impl(nullptr, detail::no_deadline, false, {});
    }

    // The next item by policy, waiting for one: spins a few microseconds, then parks on the
    // selector's event count (no CPU) until an input has an item, closes, or the inputs change.
    // nullopt only once the selector is closed and every input has finished or been removed.
    // Exceptions: as try_pop().
    [[nodiscard]] std::optional<selected<T>> pop() { return pop_impl(nullptr, detail::no_deadline, true, {}); }

    // As pop(), but nullopt once `stop` is requested: checked first (a stopped consumer leaves
    // even when items are ready; they stay in their channels), then while waiting. A stop that
    // lands just after the wait saw an item does not end the call: the consumer selects (it may
    // have been the one woken for that item, which another consumer would otherwise miss).
    [[nodiscard]] std::optional<selected<T>> pop(std::stop_token stop) {
        return pop_impl(&stop, detail::no_deadline, true, {});
    }

    // As pop(), waiting at most `timeout`. Any std::chrono::duration; one beyond nanoseconds' range
    // (say seconds::max()) means no limit. Throws std::invalid_argument naming timeout when it is
    // negative or NaN.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<selected<T>> pop_for(std::chrono::duration<Rep, Period> timeout) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return pop_impl(nullptr, detail::deadline_after(ns), true, {});
    }

    // As pop_for(), also ending when `stop` is requested.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<selected<T>> pop_for(std::chrono::duration<Rep, Period> timeout,
                                                     std::stop_token stop) {
        const std::chrono::nanoseconds ns = detail::to_nanoseconds(timeout, "timeout");
        detail::require_non_negative(ns, "timeout");
        return pop_impl(&stop, detail::deadline_after(ns), true, {});
    }

    // No more inputs may be added; consumers go on until every input has finished or been
    // removed, then get nullopt. Does not close the inputs. Wakes every waiting consumer. Any
    // thread; idempotent; brief lock. Never throws in practice (std::mutex::lock).
    void close() {
        const std::lock_guard<std::mutex> lock(mu_);
        if (!closed_) {
            closed_ = true;
            // Relaxed: closed() is a hint for callers; whatever depends on the close reads
            // closed_ under mu_.
            closed_flag_.store(true, std::memory_order_relaxed);
            changed_locked();
        }
    }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return closed_flag_.load(std::memory_order_relaxed); }

    // Inputs added and not removed (finished ones included). Any thread; takes the lock briefly.
    // Never throws in practice (std::mutex::lock).
    [[nodiscard]] std::size_t inputs() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return inputs_.size();
    }

    // The policy. Any thread; wait-free.
    [[nodiscard]] select_policy policy() const noexcept { return policy_; }

    // Each input's counters, in order of addition (finished ones included, removed ones not).
    // Every snapshot satisfies the identity of the file comment exactly. Any thread; takes the
    // lock briefly; allocates. Throws std::bad_alloc; the selector is unchanged.
    [[nodiscard]] std::vector<input_stats> stats() const {
        std::vector<input_stats> out;
        const std::lock_guard<std::mutex> lock(mu_);
        out.reserve(inputs_.size());
        for (const auto& in : inputs_) {
            out.push_back(in->stats());
        }
        return out;
    }

    // One input's counters; nullopt if there is no such input. Any thread; takes the lock.
    [[nodiscard]] std::optional<input_stats> stats(input_id id) const {
        const std::lock_guard<std::mutex> lock(mu_);
        const auto it = find_locked(id);
        if (it == inputs_.end()) {
            return std::nullopt;
        }
        return (*it)->stats();
    }

    // The counters of every input it has had, removed ones included, summed (the file comment's
    // identity holds for the sums): what a pipeline's snapshot shows for the selector. Any
    // thread; takes the lock briefly; does not allocate. Never throws in practice
    // (std::mutex::lock).
    [[nodiscard]] selector_totals totals() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return totals_locked();
    }

    // The addresses of the channels it reads now: its inputs added, not removed and not finished
    // (a finished input's channel may be gone, and another one made at its address). The
    // pipeline draws an edge from each of them that it knows to the selector. Any thread; takes
    // the lock briefly; allocates. Throws std::bad_alloc.
    [[nodiscard]] std::vector<const void*> input_channels() const {
        std::vector<const void*> out;
        const std::lock_guard<std::mutex> lock(mu_);
        out.reserve(inputs_.size());
        for (const auto& in : inputs_) {
            if (!in->finished) {
                out.push_back(in->address);
            }
        }
        return out;
    }

private:
    template <class, class>
    friend class batcher;

    // totals(), under mu_.
    [[nodiscard]] selector_totals totals_locked() const noexcept {
        selector_totals t = removed_;
        for (const auto& in : inputs_) {
            t.taken += in->taken;
            t.selected += in->selected;
            t.expired += in->expired;
            t.dropped += in->dropped;
            t.held += in->held ? 1U : 0U;
        }
        t.inputs = inputs_.size();
        t.added = next_id_ - 1;
        return t;
    }

    using excluded_ids = std::span<const input_id>;

    static void validate(const input_options& o) {
        if (o.weight == 0) {
            throw std::invalid_argument("weight: must be at least 1");
        }
        if (o.take != input_take::newest && o.take != input_take::oldest) {
            throw std::invalid_argument("take: not an input_take");
        }
        if (o.max_age) {
            detail::require_non_negative(*o.max_age, "max_age");
            if constexpr (!timestamped<T>) {
                throw std::invalid_argument(
                    "max_age: T carries no capture time (specialise framepipe::timestamp_traits)");
            }
        }
    }

    // weight_gcd_ = the greatest common divisor of the inputs' weights (1 without inputs).
    void update_weights_locked() noexcept {
        std::uint32_t g = 0;
        for (const auto& in : inputs_) {
            g = std::gcd(g, in->options.weight);
        }
        weight_gcd_ = g == 0 ? 1 : g;
    }

    // The first input whose id is at least `v`: inputs_ is in order of id (added in order,
    // erased in place).
    [[nodiscard]] typename input_list::const_iterator first_from_locked(
        std::uint64_t v) const noexcept {
        return std::lower_bound(
            inputs_.begin(), inputs_.end(), v,
            [](const std::shared_ptr<input>& in, std::uint64_t c) { return in->id.value < c; });
    }

    [[nodiscard]] typename input_list::const_iterator find_locked(input_id id) const noexcept {
        const auto it = first_from_locked(id.value);
        return it != inputs_.end() && (*it)->id == id ? it : inputs_.end();
    }

    [[nodiscard]] static bool is_excluded(input_id id, excluded_ids excluded) noexcept {
        return std::find(excluded.begin(), excluded.end(), id) != excluded.end();
    }

    // The inputs changed (added, removed, finished) or the selector closed: tell the waiters.
    // Release: a predicate that reads the new version sees the change; notify_all's
    // read-modify-write publishes it to a parking consumer (event_count's protocol).
    // The load is relaxed: every write of version_ is made under mu_, which we hold.
    void changed_locked() noexcept {
        version_.store(version_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        moved_locked();
        ev_.notify_all();
    }

    // Something happened that a consumer woken for nothing may have been woken by: an item taken
    // from a channel (kept, expired or superseded), a held item expired or handed out, the inputs
    // changed. A consumer backs off only when nothing did since its last look (see pop_impl).
    // Relaxed: written under mu_, read as a hint.
    void moved_locked() noexcept {
        progress_.store(progress_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    [[nodiscard]] bool ended_locked() const noexcept {
        return closed_ && std::all_of(inputs_.begin(), inputs_.end(),
                                      [](const std::shared_ptr<input>& in) { return in->finished; });
    }

    // See ended_except(). O(inputs * excluded).
    [[nodiscard]] bool ended_except_locked(excluded_ids excluded) const noexcept {
        return closed_ &&
               std::all_of(inputs_.begin(), inputs_.end(), [&](const std::shared_ptr<input>& in) {
                   // !attached: the channel was let go (closed and drained), an item still held
                   return in->finished || (is_excluded(in->id, excluded) &&
                                           (!in->attached || in->channel_closed()));
               });
    }

    [[nodiscard]] bool is_expired(const input& in, const T& item, clock::time_point now) const noexcept {
        return detail::older_than(item, in.options.max_age, now);
    }

    // The input has let its channel go and holds nothing: it has finished.
    void settle_locked(input& in) noexcept {
        if (!in.attached && !in.held && !in.finished) {
            in.finished = true;
            changed_locked();
        }
    }

    // Makes in.held the input's current candidate: drops an expired one, then takes from the
    // channel (to the newest, or one item when taking the oldest and none is held); lets the
    // channel go once it is closed and drained. True when a fresh item is held.
    bool refresh_locked(input& in, clock::time_point now) {
        if (in.held && is_expired(in, *in.held, now)) {
            in.held.reset();
            ++in.expired;
            moved_locked();
        }
        const bool newest = in.options.take == input_take::newest;
        if (in.attached && (newest || !in.held)) {
            // At most the items there now (at least one look): a producer faster than this loop
            // cannot keep it going.
            const std::size_t there = in.channel_size();
            std::size_t budget = std::max<std::size_t>(1, there);
            std::size_t took = 0;
            while (budget-- > 0) {
                std::optional<T> x = in.try_take();
                if (!x) {
                    if (!in.channel_closed()) {
                        // Fewer items there than before, and not by our takes: the channel
                        // dropped some itself (its own max_age). That moved, as an expiry here
                        // does; a push still filling leaves the count as it was.
                        if (in.channel_size() + took < there) {
                            moved_locked();
                        }
                        break;
                    }
                    // Closed, with a push in flight that size() counts (a ring position claimed,
                    // not filled): not waited for here, which would hold up every other input
                    // and consumer. Its fill notifies; the next look takes it.
                    if (in.channel_size() != 0) {
                        break;
                    }
                    // Closed and empty: waits only for a push that size() does not show (see the
                    // file comment, "Taking").
                    std::optional<T> last = in.take_closed();
                    if (!last) {
                        in.retire(); // closed and drained
                        break;
                    }
                    try {
                        x.emplace(std::move(*last)); // (emplace: T need not be assignable)
                    } catch (...) {
                        ++in.taken; // out of the channel, and lost to the throwing move
                        ++in.dropped;
                        throw;
                    }
                }
                ++in.taken;
                ++took;
                moved_locked();
                if (is_expired(in, *x, now)) {
                    ++in.expired;
                    continue;
                }
                if (in.held) {
                    in.held.reset();
                    ++in.dropped; // superseded by a newer item of the same input
                }
                try {
                    in.held.emplace(std::move(*x));
                } catch (...) {
                    ++in.dropped; // lost to the throwing move
                    throw;
                }
                if (!newest) {
                    break;
                }
            }
        }
        settle_locked(in);
        return in.held.has_value();
    }

    // Counts a hand-out once the caller's result is built: its destructor runs after the return
    // object of hand_out_locked() is initialised, or during the unwinding when that threw.
    struct hand_out_commit {
        selector& self;
        input& in;
        bool left_held; // the item had left in.held before the last move (clang before 16)
        const int exceptions = std::uncaught_exceptions();
        ~hand_out_commit() {
            if (std::uncaught_exceptions() == exceptions) {
                in.held.reset();
                ++in.selected;
                self.moved_locked();
            } else if (left_held) {
                ++in.dropped; // lost to the throwing move
            } else {
                // The item stays held, and no channel shows it: a change, so that the consumers
                // parked meanwhile (whose wait looks at the channels) look again.
                self.changed_locked();
            }
            self.settle_locked(in);
        }
    };

    // Hands in.held out. T is moved once, straight into the caller's result: this returns a
    // prvalue, as does every function between here and the public call (try_select(),
    // pop_impl(), try_pop() ...), so C++17's guaranteed elision builds the caller's object here
    // and no later move of T can throw after the item is counted. If that move throws, the item
    // stays held and nothing is counted.
    std::optional<selected<T>> hand_out_locked(input& in) {
#if defined(__cpp_aggregate_paren_init)
        const hand_out_commit commit{*this, in, false};
        return std::optional<selected<T>>(std::in_place, std::move(*in.held), in.id);
#else
        // Without parenthesised aggregate initialisation (clang before 16): through a
        // temporary. If the second move throws, the item is lost: counted as dropped.
        selected<T> s{std::move(*in.held), in.id};
        in.held.reset();
        const hand_out_commit commit{*this, in, true};
        return std::optional<selected<T>>(std::in_place, std::move(s));
#endif
    }

    // The index of the first input whose id is at least cursor_ (wrapping to 0).
    [[nodiscard]] std::size_t cursor_index_locked() const noexcept {
        const auto it = first_from_locked(cursor_);
        return it == inputs_.end() ? 0 : static_cast<std::size_t>(it - inputs_.begin());
    }

    // round_robin (every credit 1) and weighted (credit = weight): the inputs in turn from the
    // cursor; the current input keeps the turn while it has credit and an item. The input whose
    // held item goes out next (its turn counted), or null.
    input* select_turns_locked(clock::time_point now, excluded_ids excluded) {
        const std::size_t n = inputs_.size();
        std::size_t at = cursor_index_locked();
        for (std::size_t visited = 0; visited < n; ++visited, at = at + 1 == n ? 0 : at + 1) {
            input& in = *inputs_[at];
            if (in.finished) {
                continue;
            }
            if (in.credit == 0) {
                // A new turn.
                in.credit = policy_ == select_policy::weighted ? in.options.weight / weight_gcd_ : 1;
            }
            if (!is_excluded(in.id, excluded) && refresh_locked(in, now)) {
                --in.credit;
                cursor_ = in.credit == 0 ? in.id.value + 1 : in.id.value;
                return &in;
            }
            in.credit = 0; // nothing ready: the turn is lost (DRR resets an empty queue's deficit)
            cursor_ = in.id.value + 1;
        }
        return nullptr;
    }

    // oldest_first: every input's candidate, then the one captured first; ties to the first in
    // turn from the cursor. That input, or null.
    input* select_oldest_locked(clock::time_point now, excluded_ids excluded) {
        if constexpr (timestamped<T>) {
            const std::size_t n = inputs_.size();
            std::size_t at = cursor_index_locked();
            input* best = nullptr;
            clock::time_point best_time{};
            for (std::size_t visited = 0; visited < n; ++visited, at = at + 1 == n ? 0 : at + 1) {
                input& in = *inputs_[at];
                if (in.finished || is_excluded(in.id, excluded) || !refresh_locked(in, now)) {
                    continue;
                }
                const auto t = timestamp_traits<T>::capture_time(*in.held);
                if (best == nullptr || t < best_time) {
                    best = &in;
                    best_time = t;
                }
            }
            if (best != nullptr) {
                cursor_ = best->id.value + 1;
            }
            return best;
        } else {
            (void)now;
            (void)excluded;
            return nullptr; // refused by the constructor
        }
    }

    // The input whose held item goes out next by policy (inputs in `excluded` passed over), or
    // null. Under mu_.
    input* choose_locked(excluded_ids excluded) {
        // The clock is read only when an input has an age limit.
        const clock::time_point now = aged_inputs_ != 0 ? clock::now() : clock::time_point{};
        return policy_ == select_policy::oldest_first ? select_oldest_locked(now, excluded)
                                                      : select_turns_locked(now, excluded);
    }

    // One selection (inputs in `excluded` are passed over). Any thread; takes the lock. The
    // item is built in the caller's result (see hand_out_locked()): initialise the result from
    // this call, or return its value as it is, never through a named variable.
    std::optional<selected<T>> try_select(excluded_ids excluded) {
        const std::lock_guard<std::mutex> lock(mu_);
        input* in = choose_locked(excluded);
        if (in == nullptr) {
            return std::nullopt;
        }
        return hand_out_locked(*in);
    }

    // Closed, and every input has finished or been removed: nothing more will come.
    [[nodiscard]] bool ended() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return ended_locked();
    }

    // Closed, and no input can hand out anything more now except those in `excluded` (a
    // batcher's sources at their cap), and these get no new items: every input has finished or
    // been removed, or is in `excluded` with its channel closed. What they still hold (in the
    // channel, or taken) comes out once they are no longer excluded. ended() with no exclusions.
    // Any thread; takes the lock; never waits for a channel.
    [[nodiscard]] bool ended_except(excluded_ids excluded) const {
        const std::lock_guard<std::mutex> lock(mu_);
        return ended_except_locked(excluded);
    }

    // Waits until an input not in `excluded` may have an item (or has closed), the inputs
    // change, the selector has ended (ended_except(excluded)), or, on a closed selector, an input
    // in `excluded` closes its channel; or `*stop` / `deadline`. ready may be spurious: the caller
    // selects, and comes back if it found nothing.
    detail::wait_end wait_ready(excluded_ids excluded, const std::stop_token* stop,
                                const std::optional<clock::time_point>& deadline) {
        std::shared_ptr<const input_list> list;
        std::uint64_t seen = 0;
        // The excluded inputs watched for their close (which can make ended_except() true): on
        // a closed selector, those whose channels are still open. One already closed is not
        // watched: it would keep the wait ready.
        std::vector<input*> watched;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            list = probe_list_; // holds every input of inputs_ (a removal's new list may fail)
            // ended_except_locked() and the watched inputs in one pass, with one look at each
            // excluded channel: with two, a close landing between them would be in neither
            // (not ended at the first, not watched at the second), and nothing would wake us.
            bool ended = closed_;
            for (const auto& in : inputs_) {
                if (in->finished) {
                    continue;
                }
                if (!is_excluded(in->id, excluded)) {
                    if (in->held) {
                        return detail::wait_end::ready; // oldest_first holds candidates
                    }
                    ended = false;
                    continue;
                }
                // attached: the channel may be used (under mu_, held here).
                if (in->attached && !in->channel_closed()) {
                    ended = false;
                    if (closed_) {
                        watched.push_back(in.get()); // kept alive by `list`
                    }
                }
            }
            if (ended) {
                return detail::wait_end::ready;
            }
            seen = version_.load(std::memory_order_relaxed); // written only under mu_, held here
        }
        // The exact predicate (event_count: atomics only, no lock). Acquire on version_: pairs
        // with changed_locked().
        const auto ready = [&]() noexcept {
            if (version_.load(std::memory_order_acquire) != seen) {
                return true;
            }
            if (list) {
                for (const auto& in : *list) {
                    if (!is_excluded(in->id, excluded) && in->probe_pinned()) {
                        return true;
                    }
                }
            }
            return std::any_of(watched.begin(), watched.end(),
                               [](input* in) { return in->closed_pinned(); });
        };
        // wait_costly: ready() probes every input, so the clock is read after each call.
        return ev_.wait_costly(stop, deadline, ready);
    }

    std::optional<selected<T>> pop_impl(const std::stop_token* stop,
                                        const std::optional<clock::time_point>& deadline,
                                        bool wait, excluded_ids excluded) {
        // The stop token is checked first (a stopped consumer takes nothing), then only after a
        // look that found nothing, and by the wait. Never between a wait that returned ready and
        // the look that follows it: that wait may have absorbed the notify_one of the push it
        // saw, so a consumer leaving there would strand another consumer parked beside the item.
        // It selects instead (its stop raced with the push).
        if (stop != nullptr && stop->stop_requested()) {
            return std::nullopt;
        }
        unsigned spins = 0;
        bool woke = false;
        std::uint64_t seen = 0; // progress_ at the last look
        for (;;) {
            bool moved = false; // since the last look, this one included
            try {
                // As try_select(), inline: the hand-out builds this call's result.
                const std::lock_guard<std::mutex> lock(mu_);
                if (input* in = choose_locked(excluded)) {
                    return hand_out_locked(*in);
                }
                const std::uint64_t now_seen = progress_.load(std::memory_order_relaxed);
                moved = now_seen != seen;
                seen = now_seen;
            } catch (...) {
                // A take or the hand-out threw (T's move or copy): the item stays, in its channel
                // or held here. A wake-up this call took is passed on (the lock is released by
                // now), or another consumer would stay parked beside that item.
                if (woke) {
                    ev_.notify_one();
                }
                throw;
            }
            if (!wait) {
                return std::nullopt;
            }
            if (ended()) {
                return std::nullopt;
            }
            if (woke) {
                // Woken, and the look found nothing. The stop token and the deadline are
                // honoured here, since a ready predicate returns from the wait without looking
                // at them: a push half done, or a run of stale arrivals, would otherwise keep a
                // stopped or timed-out pop going. Leaving, pass the wake-up on: a ring's head
                // position may be claimed and not filled while a later one holds an item, whose
                // push's wake-up this consumer may have taken from another one parked.
                if ((stop != nullptr && stop->stop_requested()) ||
                    (deadline && clock::now() >= *deadline)) {
                    ev_.notify_one();
                    return std::nullopt;
                }
            }
            if (moved) {
                // Items were taken (expired, superseded, or by another consumer) or the inputs
                // changed since the last look: wait again at once, without a back-off step, so
                // that a run of stale arrivals never slows the wait down to sleeps (a fresh item
                // could expire during one). The steps taken so far stay: a push still filling
                // on one input while items come and go on another must not reset them, or the
                // consumers would never get past the pauses to the sleeps (a hot spin).
            } else if (woke) {
                // Nothing moved either: a push has claimed a ring's position and not filled it
                // yet (its size() counts it). Back off (pause, then yield or sleep for the
                // thread that is finishing its push); a sleep ends at the deadline at the
                // latest (backoff_until), so a pop_for does not overrun it by a step's sleep (up
                // to 1 ms).
                detail::backoff_until(spins, deadline);
            }
            if (wait_ready(excluded, stop, deadline) != detail::wait_end::ready) {
                if (woke) {
                    ev_.notify_one(); // as above: a wake-up taken earlier is passed on
                }
                return std::nullopt;
            }
            FRAMEPIPE_DETAIL_AFTER_WAIT_HOOK();
            woke = true;
        }
    }

    const select_policy policy_;
    mutable std::mutex mu_;
    // Guarded by mu_.
    input_list inputs_;                        // in order of addition (ascending ids)
    std::shared_ptr<const input_list> probe_list_; // what wait predicates look at
    std::uint64_t next_id_ = 1;
    std::uint64_t cursor_ = 1;     // the id whose turn is next (or the first one after it)
    std::size_t aged_inputs_ = 0;  // inputs with a max_age
    selector_totals removed_;      // the removed inputs' counters, summed
    std::uint32_t weight_gcd_ = 1; // see select_policy::weighted
    bool closed_ = false;

    std::atomic<bool> closed_flag_{false}; // closed_, for closed() without the lock
    // Bumped (under mu_) whenever the inputs change or the selector closes; read by predicates.
    std::atomic<std::uint64_t> version_{0};
    std::atomic<std::uint64_t> progress_{0}; // see moved_locked()
    // Consumers park here; every watched channel notifies it (see the file comment).
    alignas(detail::cache_line) detail::event_count ev_;
};

// How a pipeline shows a selector (see channel_traits): several inputs, one consumer side. Its
// counters are totals() over every input it has had: pushed is taken, popped is selected,
// expired is expired, evicted is dropped (superseded, held when removed, or lost to a throw),
// size is held. Its policy reads "round_robin, N inputs".
template <class T>
struct channel_traits<selector<T>> {
    static constexpr std::string_view kind = "selector";
    static constexpr bool one_producer = false;
    static constexpr bool one_consumer = false;
    // request_stop() closes it: its close() forbids new inputs, and its consumer still gets every
    // item of the inputs it has.
    static constexpr bool close_on_stop = true;

    [[nodiscard]] static channel_description describe(const selector<T>& s) {
        const selector_totals t = s.totals();
        channel_description d;
        d.kind = std::string(kind);
        d.policy = std::string(to_string(s.policy())) + ", " + std::to_string(t.inputs) +
                   (t.inputs == 1 ? " input" : " inputs");
        channel_stats st;
        st.pushed = t.taken;
        st.popped = t.selected;
        st.expired = t.expired;
        st.evicted = t.dropped;
        st.dropped = t.expired + t.dropped;
        st.size = t.held;
        d.stats = st;
        return d;
    }

    // The channels it reads: the pipeline's edges from them.
    [[nodiscard]] static std::vector<const void*> inputs(const selector<T>& s) {
        return s.input_channels();
    }
};

// A selected item's capture time is its item's, so that channels of selected<T> and a pipeline's
// age histograms read it as they read T (when T is timestamped).
template <class T>
    requires timestamped<T>
struct timestamp_traits<selected<T>> {
    static std::chrono::steady_clock::time_point capture_time(const selected<T>& s) noexcept {
        return timestamp_traits<T>::capture_time(s.item);
    }
};

} // namespace framepipe
