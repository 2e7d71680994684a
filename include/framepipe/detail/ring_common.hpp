// framepipe/detail/ring_common.hpp - what the three ring implementations share: how a push may
// wait for room, the lock-free rings' drop counters, and their pop fast path.
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/detail/config.hpp>
#include <framepipe/detail/deadline.hpp>
#include <framepipe/detail/wait.hpp>
#include <framepipe/stamped.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <tuple>
#include <utility>

namespace framepipe::detail {

// How a push may wait for room under overflow::block (ring::push, try_push, push_for).
struct push_wait {
    const std::stop_token* stop = nullptr;      // a stop request ends the wait: cancelled
    std::optional<clock::time_point> give_up{}; // the caller's deadline: rejected after it
    bool allowed = true;                        // false (try_push): full means rejected at once
};

// One push's wait for room under overflow::block: the deadline to wait until, and what the end
// of a wait means. Two deadlines may apply: the ring's block_timeout (after it the push evicts
// the oldest item) and the caller's (after it the push gives up); the earlier one wins.
class block_wait {
public:
    enum class next { retry, evict, reject, cancel };

    block_wait(const push_wait& w, const std::optional<std::chrono::nanoseconds>& block_timeout) noexcept
        : w_(w), block_timeout_(block_timeout) {}

    // Before a wait, the ring found full: reject (try_push), cancel (stop already requested),
    // evict or reject (a deadline has passed, as after()) or retry (go and wait). The deadlines
    // are looked at here, since a wait returns at once while there is room, without looking at
    // them: producers that keep taking the room would otherwise keep a timed-out push going.
    [[nodiscard]] next before() noexcept {
        if (!w_.allowed) {
            return next::reject;
        }
        if (w_.stop != nullptr && w_.stop->stop_requested()) {
            return next::cancel;
        }
        if (block_timeout_ && !evict_at_) {
            evict_at_ = deadline_after(*block_timeout_); // from the first time the ring was full
        }
        if (const auto d = deadline(); d && clock::now() >= *d) {
            return after(wait_end::timed_out);
        }
        return next::retry;
    }

    // The deadline to pass to the wait.
    [[nodiscard]] std::optional<clock::time_point> deadline() const noexcept {
        if (evict_at_ && w_.give_up) {
            return std::min(*evict_at_, *w_.give_up);
        }
        return evict_at_ ? evict_at_ : w_.give_up;
    }

    // After a wait that ended with `end`: retry (room, or closed), evict (the block_timeout has
    // passed), reject (the caller's deadline has passed first) or cancel (stop).
    [[nodiscard]] next after(wait_end end) const noexcept {
        switch (end) {
        case wait_end::ready: return next::retry;
        case wait_end::stopped: return next::cancel;
        case wait_end::timed_out: break;
        }
        if (evict_at_ && (!w_.give_up || *evict_at_ <= *w_.give_up)) {
            return next::evict;
        }
        return next::reject;
    }

    [[nodiscard]] const std::stop_token* stop() const noexcept { return w_.stop; }

private:
    const push_wait& w_;
    const std::optional<std::chrono::nanoseconds>& block_timeout_;
    std::optional<clock::time_point> evict_at_;
};

// The pop() of both lock-free rings: take an item now (take()), and only if there was none, the
// caller waits and stop is not requested, wait for one (wait_for_item()). One named result is
// returned on every path and the takes return prvalues, so the optional is built in the caller's
// slot and, inlined, stays in registers for a small T (see FRAMEPIPE_ALWAYS_INLINE). The result
// is emplaced, not assigned: T need not be assignable.
template <class T, class Take, class Wait>
FRAMEPIPE_ALWAYS_INLINE std::optional<T> pop_or_wait(const std::stop_token* stop, bool wait,
                                                     Take take, Wait wait_for_item) noexcept {
    std::optional<T> out =
        stop != nullptr && stop->stop_requested() ? std::optional<T>() : take();
    if (!out && wait && (stop == nullptr || !stop->stop_requested())) {
        if (std::optional<T> waited = wait_for_item()) {
            out.emplace(std::move(*waited));
        }
    }
    return out;
}

// take(), discarding the items older than max_age (count_expired() counts each); with no
// max_age, take() itself, without a clock read.
template <class T, class Take, class CountExpired>
FRAMEPIPE_ALWAYS_INLINE std::optional<T> take_unexpired(
    const std::optional<std::chrono::nanoseconds>& max_age, Take take,
    CountExpired count_expired) noexcept {
    if (!max_age) {
        return take();
    }
    const auto now = clock::now();
    for (;;) {
        std::optional<T> out = take();
        if (!out || !older_than(*out, max_age, now)) {
            return out;
        }
        count_expired();
    }
}

// The drop counters of a lock-free ring, and the snapshot derived from them and the ring's
// positions (pushed and popped are not counted: they follow from the positions). Each counter is
// written, release, on its own slow path after the head moved for the item it counts; expired
// (the consumers' counter) sits on a line of its own, apart from the producers' four.
struct drop_counters {
    alignas(cache_line) std::atomic<std::uint64_t> evicted{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> cancelled{0};
    std::atomic<std::uint64_t> after_close{0};
    alignas(cache_line) std::atomic<std::uint64_t> expired{0};

    // Counters first, then `positions()` ({head, tail}, read in that order), then the derived
    // fields. A counter is incremented after the head moved for it, so the head read afterwards
    // already includes every eviction and expiry counted: popped never underflows. popped is the
    // head minus those two counters, so an eviction or expiry whose head move the positions see
    // but the counters read before them do not makes it read one too high; while traffic goes
    // on, a reader preempted between the two reads would see thousands. So the two counters are
    // read again after the positions, and the whole read retried (up to 16 times) until neither
    // moved: popped then reads high only by the evictions and expiries in flight when the
    // counters were read again (each between its head move and its increment: at most one per
    // thread pushing or popping). Every snapshot satisfies dropped == sum of reasons and
    // pushed >= popped + dropped + size, with equality when no call is in flight. noexcept.
    template <class Positions>
    [[nodiscard]] channel_stats snapshot(std::uint64_t capacity, Positions positions) const noexcept {
        channel_stats s;
        std::uint64_t h = 0;
        std::uint64_t t = 0;
        for (int attempt = 1;; ++attempt) {
            s.evicted = evicted.load(std::memory_order_acquire);
            s.expired = expired.load(std::memory_order_acquire);
            s.rejected = rejected.load(std::memory_order_acquire);
            s.cancelled = cancelled.load(std::memory_order_acquire);
            s.after_close = after_close.load(std::memory_order_acquire);
            std::tie(h, t) = positions();
            // Acquire, as above (the positions' loads are acquire, so these are not hoisted).
            if ((evicted.load(std::memory_order_acquire) == s.evicted &&
                 expired.load(std::memory_order_acquire) == s.expired) ||
                attempt == 16) {
                break;
            }
        }
        s.size = std::min<std::uint64_t>(t - h, capacity); // an evicting push may run ahead
        s.popped = h - s.evicted - s.expired;
        s.dropped = s.evicted + s.rejected + s.cancelled + s.expired + s.after_close;
        s.pushed = t + s.rejected + s.cancelled + s.after_close;
        return s;
    }
};

} // namespace framepipe::detail
