// framepipe/channel.hpp - vocabulary shared by every framepipe channel.
//
// The overflow policies, the result of a push, the counters every channel keeps, and the
// internal waiting helper that all blocking calls use. Users normally include a block's own
// header (ring.hpp, latest_slot.hpp, ...) and get this one with it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace framepipe {

// What a bounded channel does with a push that finds it full.
enum class overflow {
    drop_oldest, // evict the oldest item and accept the new one (freshness first)
    drop_newest, // refuse the new item; what is buffered stays (completeness of the backlog)
    block,       // wait for room (back-pressure); with a block_timeout, evict the oldest after it
};

// What happened to one push.
enum class push_status {
    ok,       // accepted; nothing was dropped
    evicted,  // accepted; the oldest buffered item was dropped to make room
    rejected, // not accepted: full under drop_newest, or a blocked push was cancelled by stop
    closed,   // not accepted: the channel was closed
};

// True when the pushed item is now in the channel.
[[nodiscard]] constexpr bool accepted(push_status s) noexcept {
    return s == push_status::ok || s == push_status::evicted;
}

[[nodiscard]] constexpr std::string_view to_string(overflow o) noexcept {
    switch (o) {
    case overflow::drop_oldest: return "drop_oldest";
    case overflow::drop_newest: return "drop_newest";
    case overflow::block: return "block";
    }
    return "unknown";
}

[[nodiscard]] constexpr std::string_view to_string(push_status s) noexcept {
    switch (s) {
    case push_status::ok: return "ok";
    case push_status::evicted: return "evicted";
    case push_status::rejected: return "rejected";
    case push_status::closed: return "closed";
    }
    return "unknown";
}

// Counters of a ring, a latest_slot or a subscription.
//
// Every call to push() that returns is counted in `pushed`, whatever its status (a push that
// throws is not counted; see the channel's exception guarantee), and every item that entered
// the channel's accounting leaves it exactly once: popped, or dropped under one reason. So, when
// no call is in flight:
//
//     pushed == popped + dropped + size()
//     dropped == evicted + rejected + cancelled + expired + after_close + rate_limited
//
// A snapshot returned by stats() is taken under the channel's lock, so the identities hold for
// the snapshot itself even while other threads push and pop (with size taken from the snapshot's
// own `size` field).
struct channel_stats {
    std::uint64_t pushed = 0;      // push() calls
    std::uint64_t popped = 0;      // items handed to a consumer
    std::uint64_t dropped = 0;     // sum of the reasons below
    std::uint64_t evicted = 0;     // oldest item dropped to make room (drop_oldest, block timeout)
    std::uint64_t rejected = 0;    // new item refused because the channel was full (drop_newest)
    std::uint64_t cancelled = 0;   // blocked push ended by its stop_token
    std::uint64_t expired = 0;     // discarded at pop because older than max_age
    std::uint64_t after_close = 0; // pushed after close(); not enqueued
    std::uint64_t rate_limited = 0; // subscriptions only: skipped by max_rate_hz (0 for a ring)
    std::uint64_t size = 0;        // items buffered when the snapshot was taken
};

namespace detail {

using clock = std::chrono::steady_clock;

// Throws std::invalid_argument naming `what` when a caller passes a negative duration.
inline void require_non_negative(std::chrono::nanoseconds d, const char* what) {
    if (d < std::chrono::nanoseconds::zero()) {
        throw std::invalid_argument(std::string(what) + ": must not be negative");
    }
}

// now + d, saturating instead of overflowing for very long timeouts.
[[nodiscard]] inline clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
    const auto now = clock::now();
    if (d >= clock::time_point::max() - now) {
        return clock::time_point::max();
    }
    return now + std::chrono::duration_cast<clock::duration>(d);
}

// Registered as a std::stop_callback while a thread parks with a stop token. It takes the
// channel's mutex before notifying: the waiter checks stop_requested() under that mutex and then
// parks atomically with releasing it, so the notification cannot fall between the check and the
// park (the classic lost wake-up).
//
// Because this callback takes the mutex, the waiter must construct and destroy the stop_callback
// while NOT holding the mutex (construction may run the callback inline; destruction waits for a
// callback running on another thread).
struct wake_all_on_stop {
    std::mutex* mu;
    std::condition_variable* cv;
    void operator()() const noexcept {
        { const std::lock_guard<std::mutex> guard(*mu); }
        cv->notify_all();
    }
};

enum class wait_end { ready, timed_out, stopped };

// Parks the calling thread on `cv` until `ready()` holds, the deadline passes, or a stop is
// requested. `lock` must hold the mutex that guards what `ready()` reads; `waiters` (guarded by
// the same mutex) counts parked threads so that the other side notifies only when someone waits.
//
// A stop request wins over readiness. A thread that leaves because of stop may have consumed a
// notify_one meant for the condition it was waiting on; it passes that notification on so no
// other waiter is left asleep with work available.
template <class Ready>
[[nodiscard]] wait_end park(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                            std::size_t& waiters, const std::stop_token* stop,
                            const std::optional<clock::time_point>& deadline, Ready ready) {
    for (;;) {
        if (stop != nullptr && stop->stop_requested()) {
            if (waiters > 0 && ready()) {
                cv.notify_one();
            }
            return wait_end::stopped;
        }
        if (ready()) {
            return wait_end::ready;
        }
        ++waiters;
        if (deadline) {
            const auto status = cv.wait_until(lock, *deadline);
            --waiters;
            if (status == std::cv_status::timeout && !ready()) {
                return wait_end::timed_out;
            }
        } else {
            cv.wait(lock);
            --waiters;
        }
    }
}

} // namespace detail
} // namespace framepipe
