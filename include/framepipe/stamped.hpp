// framepipe/stamped.hpp - a value with its sequence number, capture time and epoch.
//
// A stamped<T> travels through channels in place of a bare T. Its sequence number shows, by its
// gaps, what was dropped upstream; its capture time lets a consumer measure freshness (age()) and
// lets a channel discard stale items (max_age in ring_options and subscription_options); its
// epoch says which connection of a live source produced it (live_source.hpp), so that a channel
// can refuse items from a connection older than one it has already seen (drop_older_epochs).
//
// Channels learn an item's capture time through timestamp_traits<T> and its epoch through
// epoch_traits<T>. Both are provided for stamped<T> and for shared_ptr / unique_ptr to stamped<T>;
// specialise them for a type of your own.
#pragma once

#include <framepipe/detail/config.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace framepipe {

namespace detail {
// a - b, clamped to the duration's range (duration::max() or min()) instead of overflowing.
// Never throws.
template <class Rep, class Period>
[[nodiscard]] constexpr std::chrono::duration<Rep, Period>
saturating_difference(std::chrono::duration<Rep, Period> a,
                      std::chrono::duration<Rep, Period> b) noexcept {
    using duration = std::chrono::duration<Rep, Period>;
    if constexpr (std::is_integral_v<Rep>) {
        static_assert(std::is_signed_v<Rep>, "a clock's duration has a signed count");
        constexpr Rep lowest = std::numeric_limits<Rep>::min();
        constexpr Rep highest = std::numeric_limits<Rep>::max();
        if (b.count() < 0 ? a.count() > highest + b.count() : a.count() < lowest + b.count()) {
            return b.count() < 0 ? duration::max() : duration::min();
        }
    }
    return a - b;
}
} // namespace detail

template <class T>
struct stamped {
    using value_type = T;
    using clock = std::chrono::steady_clock;

    T value{};
    std::uint64_t seq = 0;          // position in the source's output, counted from 0
    clock::time_point captured{};   // when the source produced the value
    std::uint64_t epoch = 0;        // the source's connection that produced it (0: not live)

    // Age of the value at `now`: now - captured, negative for a capture after `now`, clamped to
    // duration::max() or min() when the difference is out of the duration's range. Any thread;
    // never blocks; does not throw.
    [[nodiscard]] clock::duration age(clock::time_point now = clock::now()) const noexcept {
        return detail::saturating_difference(now.time_since_epoch(), captured.time_since_epoch());
    }

    T& operator*() noexcept { return value; }
    const T& operator*() const noexcept { return value; }
    T* operator->() noexcept { return &value; }
    const T* operator->() const noexcept { return &value; }
};

// Builds a stamped<T> (captured now unless given). May throw what T's constructor throws.
template <class T>
[[nodiscard]] stamped<std::decay_t<T>> stamp(T&& value, std::uint64_t seq,
                                             std::chrono::steady_clock::time_point captured =
                                                 std::chrono::steady_clock::now(),
                                             std::uint64_t epoch = 0) {
    return stamped<std::decay_t<T>>{std::forward<T>(value), seq, captured, epoch};
}

// How a channel reads an item's capture time. The primary template has no capture_time(), so
// such types are not `timestamped` and a max_age cannot be set on their channels.
template <class T>
struct timestamp_traits {};

template <class T>
struct timestamp_traits<stamped<T>> {
    static std::chrono::steady_clock::time_point capture_time(const stamped<T>& s) noexcept {
        return s.captured;
    }
};

// A type whose capture time a channel can read.
template <class T>
concept timestamped = requires(const T& t) {
    { timestamp_traits<T>::capture_time(t) } -> std::same_as<std::chrono::steady_clock::time_point>;
};

namespace detail {
// Smart pointers to timestamped values: a null pointer counts as infinitely fresh, never
// expired, so that a channel never drops a null on age grounds.
template <class P>
struct pointer_timestamp {
    static std::chrono::steady_clock::time_point capture_time(const P& p) noexcept {
        using pointee = std::remove_cv_t<typename P::element_type>;
        return p ? timestamp_traits<pointee>::capture_time(*p)
                 : std::chrono::steady_clock::time_point::max();
    }
};
} // namespace detail

template <class T>
    requires timestamped<std::remove_cv_t<T>>
struct timestamp_traits<std::shared_ptr<T>> : detail::pointer_timestamp<std::shared_ptr<T>> {};

template <class T, class D>
    requires timestamped<std::remove_cv_t<T>>
struct timestamp_traits<std::unique_ptr<T, D>>
    : detail::pointer_timestamp<std::unique_ptr<T, D>> {};

// How a channel reads an item's epoch. As timestamp_traits: provided for stamped<T> and smart
// pointers to it; a type without it is not `epoched`, and drop_older_epochs cannot be set on its
// channels.
template <class T>
struct epoch_traits {};

template <class T>
struct epoch_traits<stamped<T>> {
    static std::uint64_t epoch(const stamped<T>& s) noexcept { return s.epoch; }
};

// A type whose epoch a channel can read.
template <class T>
concept epoched = requires(const T& t) {
    { epoch_traits<T>::epoch(t) } -> std::same_as<std::uint64_t>;
};

namespace detail {
// Smart pointers to epoched values: a null pointer has epoch 0 (never newer than anything).
template <class P>
struct pointer_epoch {
    static std::uint64_t epoch(const P& p) noexcept {
        using pointee = std::remove_cv_t<typename P::element_type>;
        return p ? epoch_traits<pointee>::epoch(*p) : 0;
    }
};
} // namespace detail

template <class T>
    requires epoched<std::remove_cv_t<T>>
struct epoch_traits<std::shared_ptr<T>> : detail::pointer_epoch<std::shared_ptr<T>> {};

template <class T, class D>
    requires epoched<std::remove_cv_t<T>>
struct epoch_traits<std::unique_ptr<T, D>> : detail::pointer_epoch<std::unique_ptr<T, D>> {};

namespace detail {
// The newest epoch a channel has accepted, for drop_older_epochs. Any thread; lock-free.
class epoch_gate {
public:
    // Whether `item` may enter: false for an item from an epoch older than one already admitted.
    // Always true for a T that is not epoched. Costs one load, plus a compare-and-swap when the
    // epoch rises.
    template <class T>
    [[nodiscard]] bool admit(const T& item) noexcept {
        if constexpr (epoched<T>) {
            const std::uint64_t e = epoch_traits<T>::epoch(item);
            // Relaxed: the gate orders nothing else; the channel's own push publishes the item.
            std::uint64_t newest = newest_.load(std::memory_order_relaxed);
            while (e > newest) {
                if (newest_.compare_exchange_weak(newest, e, std::memory_order_relaxed)) {
                    return true;
                }
            }
            return e == newest;
        } else {
            (void)item;
            return true;
        }
    }

    // The mark (the newest epoch admitted), for restore(). Any thread; relaxed.
    [[nodiscard]] std::uint64_t newest() const noexcept {
        return newest_.load(std::memory_order_relaxed);
    }

    // Puts the mark back to `before` (read by newest() before an admit() that raised it to
    // `raised`) when the push it admitted stored nothing (its move threw), so that the older
    // epoch's items that follow are not refused. Exact with one pushing thread at a time, as the
    // gate is.
    void restore(std::uint64_t before, std::uint64_t raised) noexcept {
        if (raised > before) {
            (void)newest_.compare_exchange_strong(raised, before, std::memory_order_relaxed);
        }
    }

private:
    std::atomic<std::uint64_t> newest_{0};
};

// The age check of every channel with a max_age: whether `item`, looked at `now`, is older than
// `max_age`. False without a max_age, for a T without a capture time, and for an item whose
// capture time is time_point::max() (unknown, e.g. a null pointer). An age out of the clock
// duration's range counts as that range's end (see stamped::age), so any two time points
// compare without overflow. noexcept: a capture_time that throws terminates (channels document
// it).
template <class T>
[[nodiscard]] bool older_than(const T& item, const std::optional<std::chrono::nanoseconds>& max_age,
                              std::chrono::steady_clock::time_point now) noexcept {
    if constexpr (timestamped<T>) {
        if (max_age) {
            const auto captured = timestamp_traits<T>::capture_time(item);
            return captured != std::chrono::steady_clock::time_point::max() &&
                   saturating_difference(now.time_since_epoch(), captured.time_since_epoch()) >
                       *max_age;
        }
    }
    (void)item;
    (void)max_age;
    (void)now;
    return false;
}
} // namespace detail

} // namespace framepipe
