// framepipe/metrics.hpp - allocation-free, lock-free meters for hot paths.
//
// latency_histogram records durations into a fixed set of log-linear buckets (relative error
// under 1/16) and answers quantiles. rate_meter remembers the times of the last completions and
// answers "events per second over the last two seconds". Recording takes a few relaxed atomic
// operations and never allocates or locks, so a stage can record every item; reading (a
// snapshot) may run concurrently on any thread and sees each counter at some recent value.
#pragma once

#include <framepipe/detail/config.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace framepipe {

// Durations in nanoseconds, bucketed by their top 5 significant bits: values below 16 ns get a
// bucket each; above that every power of two is split into 16 buckets.
class latency_histogram {
public:
    static constexpr std::size_t sub_buckets = 16;
    static constexpr std::size_t bucket_count = (64 - 4 + 1) * sub_buckets;

    // Records one duration (negative counts as 0). Any thread; lock-free (a compare-exchange
    // loop keeps the sum from wrapping); never throws.
    void record(std::chrono::nanoseconds d) noexcept {
        const auto v = d.count() < 0 ? std::uint64_t{0} : static_cast<std::uint64_t>(d.count());
        // Relaxed: the counters are statistics; nothing else is published through them.
        buckets_[index_of(v)].fetch_add(1, std::memory_order_relaxed);
        count_.fetch_add(1, std::memory_order_relaxed);
        auto sum = sum_ns_.load(std::memory_order_relaxed);
        std::uint64_t next = 0;
        do {
            next = v > max_sum - sum ? max_sum : sum + v;
        } while (next != sum && !sum_ns_.compare_exchange_weak(sum, next, std::memory_order_relaxed,
                                                              std::memory_order_relaxed));
    }

    // Durations recorded so far. Any thread; wait-free.
    [[nodiscard]] std::uint64_t count() const noexcept {
        return count_.load(std::memory_order_relaxed);
    }

    // Sum of the recorded durations, saturated at nanoseconds::max() (292 years) rather than
    // wrapping. Any thread; wait-free.
    [[nodiscard]] std::chrono::nanoseconds sum() const noexcept {
        return std::chrono::nanoseconds(
            static_cast<std::int64_t>(sum_ns_.load(std::memory_order_relaxed)));
    }

    // The q-quantile as the midpoint of its bucket; 0 when nothing was recorded. q is clamped to
    // [0, 1]; NaN counts as 0. The sample taken is the nearest rank, ceil(q * count) (at least
    // the first): with 33 samples, the 0.95-quantile is the 32nd. Any thread; lock-free; O(bucket_count). Concurrent records may or
    // may not be included.
    [[nodiscard]] std::chrono::nanoseconds quantile(double q) const noexcept {
        std::uint64_t total = 0;
        for (const auto& b : buckets_) {
            total += b.load(std::memory_order_relaxed);
        }
        if (total == 0) {
            return std::chrono::nanoseconds::zero();
        }
        q = q > 0 ? (q > 1 ? 1 : q) : 0; // NaN fails q > 0
        // The rank of the wanted sample, 1-based; at least 1. q is first moved one step down,
        // so that a product meant to be whole (0.95 * 100) cannot round above it and take the
        // next rank.
        const double at = std::ceil(std::nextafter(q, 0.0) * static_cast<double>(total));
        const std::uint64_t rank =
            at < 1 ? 1 : (at < static_cast<double>(total) ? static_cast<std::uint64_t>(at) : total);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += buckets_[i].load(std::memory_order_relaxed);
            if (seen >= rank) {
                return std::chrono::nanoseconds(static_cast<std::int64_t>(midpoint_of(i)));
            }
        }
        return std::chrono::nanoseconds(static_cast<std::int64_t>(midpoint_of(bucket_count - 1)));
    }

    // Bucket of a value, and the range a bucket covers; exposed for tests.
    [[nodiscard]] static constexpr std::size_t index_of(std::uint64_t v) noexcept {
        if (v < sub_buckets) {
            return detail::to<std::size_t>(v);
        }
        const auto top = static_cast<std::size_t>(63 - std::countl_zero(v)); // >= 4
        const auto mantissa = detail::to<std::size_t>((v >> (top - 4)) & (sub_buckets - 1));
        return (top - 3) * sub_buckets + mantissa;
    }
    [[nodiscard]] static constexpr std::uint64_t lower_bound_of(std::size_t i) noexcept {
        if (i < sub_buckets) {
            return i;
        }
        const std::size_t top = i / sub_buckets + 3;
        const std::uint64_t mantissa = i % sub_buckets;
        return (std::uint64_t{1} << top) | (mantissa << (top - 4));
    }
    [[nodiscard]] static constexpr std::uint64_t width_of(std::size_t i) noexcept {
        return i < sub_buckets ? 1 : std::uint64_t{1} << (i / sub_buckets + 3 - 4);
    }

private:
    [[nodiscard]] static constexpr std::uint64_t midpoint_of(std::size_t i) noexcept {
        return lower_bound_of(i) + width_of(i) / 2;
    }

    static constexpr auto max_sum =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

    std::array<std::atomic<std::uint64_t>, bucket_count> buckets_{};
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> sum_ns_{0}; // at most max_sum
};

// Events per second over a sliding window of two seconds (a record may stand for several events:
// record(now, n)). While at most `history` records fall in the window, the rate is their events
// over the window; when more do, it is the events of the last `history` of them over the time from
// the oldest of those to the end of the window. One thread records (the stage that owns it); any
// thread may read.
class rate_meter {
public:
    using clock = std::chrono::steady_clock;
    static constexpr std::size_t history = 256;
    static constexpr std::chrono::seconds window{2};

    // Records `events` events (1 by default) that ended at `now`, which should not be earlier
    // than the previous record's: a reader, going back from the newest record, takes a time
    // later than the one after it for a slot the writer reused, and stops there. Single writer;
    // wait-free; never throws.
    void record(clock::time_point now = clock::now(), std::uint32_t events = 1) noexcept {
        const auto n = count_.load(std::memory_order_relaxed);
        times_[n % slots].store(now.time_since_epoch().count(), std::memory_order_relaxed);
        weights_[n % slots].store(events, std::memory_order_relaxed);
        // Release: a reader that sees the new count also sees the time stored for it.
        count_.store(n + 1, std::memory_order_release);
        events_.store(events_.load(std::memory_order_relaxed) + events, std::memory_order_relaxed);
    }

    // Events per second over the `window` ending at `now` (records later than `now` are not in
    // it), as the class comment says; 0 when more than `history` records fell in the window and
    // the last `history` of them are all at `now`. A read during which the writer recorded
    // `history` times (the reading thread was preempted) counts only the records it read before
    // it met a slot the writer reused, over the window. Any thread; wait-free (O(history));
    // never throws.
    [[nodiscard]] double per_second(clock::time_point now = clock::now()) const noexcept {
        const auto n = count_.load(std::memory_order_acquire);
        const auto held = n < slots ? n : slots;
        const auto to = now.time_since_epoch().count();
        // The window starts at min() for a `now` less than `window` after it (no overflow).
        constexpr auto span = std::chrono::duration_cast<clock::duration>(window).count();
        constexpr auto lowest = std::numeric_limits<clock::rep>::min();
        const auto from = to < lowest + span ? lowest : to - span;
        std::uint64_t records = 0; // of the window's, newest first; at most `history`
        std::uint64_t events = 0;  // theirs
        clock::rep oldest = to;    // of them
        bool more = false;         // a record older than those is in the window too
        // Newest first. The writer reuses the slots from the oldest on; it stores a time no
        // earlier than any other, so a time later than the one read before it is a reused slot.
        clock::rep newer = std::numeric_limits<clock::rep>::max();
        for (std::uint64_t k = 0; k < held; ++k) {
            const auto at = (n - 1 - k) % slots;
            const auto t = times_[at].load(std::memory_order_relaxed);
            if (t > newer) {
                break;
            }
            newer = t;
            if (t > to) {
                continue;
            }
            if (t <= from) {
                break;
            }
            if (records == history) {
                more = true;
                break;
            }
            ++records;
            events += weights_[at].load(std::memory_order_relaxed);
            oldest = t;
        }
        if (more) {
            const double span_s = static_cast<double>(to - oldest) / 1e9;
            return span_s > 0 ? static_cast<double>(events) / span_s : 0.0;
        }
        return static_cast<double>(events) / std::chrono::duration<double>(window).count();
    }

    // Events recorded in total. Any thread; wait-free.
    [[nodiscard]] std::uint64_t count() const noexcept {
        return events_.load(std::memory_order_relaxed);
    }

private:
    // Twice the history: the writer must record `history` times during a read before it reuses a
    // slot of the newest history + 1, the ones a read needs (unless records are later than the
    // read's `now`).
    static constexpr std::size_t slots = 2 * history;

    std::array<std::atomic<clock::rep>, slots> times_{};
    std::array<std::atomic<std::uint32_t>, slots> weights_{};
    std::atomic<std::uint64_t> count_{0};  // records
    std::atomic<std::uint64_t> events_{0}; // events (the sum of the records' weights)
};

// The share of its time a worker spent on items over the last `rate_meter::window` (two
// seconds): the records of the items' busy time, each counted when the item ends (a rate_meter
// whose events are nanoseconds of work), plus the item under way, marked begun (begin_item())
// and counted from its start until it ends, so that a long item reads as busy while it runs
// rather than only once it has ended. A busy time longer than the window counts as the window.
// When more than `rate_meter::history` records fell in the window (a record may stand for
// several items, as the pipeline's sampled timing makes them), the share is over the time from
// the oldest of the last `history` to the end of the window. One thread records (the worker
// that owns it); any thread may read.
class busy_meter {
public:
    using clock = rate_meter::clock;

    // Records an item that ended at `end` after `busy` of work (negative: none); the item begun
    // last (begin_item()) ends too, this record counting it from now on. Single writer;
    // wait-free; never throws.
    void record(clock::time_point end, clock::duration busy) noexcept {
        constexpr std::int64_t cap =
            std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
        static_assert(cap <= std::numeric_limits<std::uint32_t>::max(),
                      "busy_meter: a window's nanoseconds must fit a record's weight");
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(busy).count();
        // Relaxed, both: a figure. The item stops counting as begun first, so a share() read
        // between the two stores misses it for that instant rather than counting it twice.
        started_.store(idle, std::memory_order_relaxed);
        meter_.record(end, static_cast<std::uint32_t>(std::clamp<std::int64_t>(ns, 0, cap)));
    }

    // Marks an item begun at `start` (time_point::min() marks none): share() counts the time
    // from `start` on as busy until record() or abandon_item(). Single writer; wait-free; never
    // throws.
    void begin_item(clock::time_point start) noexcept {
        started_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           start.time_since_epoch()).count(),
                       std::memory_order_relaxed);
    }

    // The item begun last ends without a record (it failed). Single writer; wait-free; never
    // throws.
    void abandon_item() noexcept { started_.store(idle, std::memory_order_relaxed); }

    // The busy share of the window ending at `now`, in [0, 1]: the items recorded in it, plus
    // the part of it that an item begun and not yet ended has run. Any thread; wait-free (as
    // rate_meter::per_second); never throws.
    [[nodiscard]] double share(clock::time_point now = clock::now()) const noexcept {
        double busy = meter_.per_second(now) / 1e9;
        const std::int64_t start = started_.load(std::memory_order_relaxed);
        const std::int64_t at =
            std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
        if (start != idle && at > start) {
            // Unsigned: the difference of any two int64 values fits (no overflow).
            const std::uint64_t running =
                static_cast<std::uint64_t>(at) - static_cast<std::uint64_t>(start);
            const std::uint64_t span = static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(window).count());
            busy += static_cast<double>(std::min(running, span)) / static_cast<double>(span);
        }
        return std::clamp(busy, 0.0, 1.0);
    }

private:
    static constexpr auto window = rate_meter::window;
    static constexpr std::int64_t idle = std::numeric_limits<std::int64_t>::min();

    rate_meter meter_;
    std::atomic<std::int64_t> started_{idle}; // nanoseconds since the clock's epoch, or idle
};

} // namespace framepipe
