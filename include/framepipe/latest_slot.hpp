// framepipe/latest_slot.hpp - holds only the newest value; each push replaces an unread one.
//
//     framepipe::latest_slot<Frame> newest;
//     camera thread:   newest.push(grab());           // never waits; overwrites an unread frame
//     detector thread: while (auto f = newest.pop()) detect(*f);   // always the freshest frame
//
// This is the "queue of size 1 that is always overwritten": the producer never waits for the
// consumer, and a consumer that falls behind skips straight to the newest value. Overwritten
// values are counted as evicted. It has the same thread-safety and cost as ring<T> (it is a
// ring of capacity 1 with overflow::drop_oldest), plus peek().
#pragma once

#include <framepipe/channel.hpp>
#include <framepipe/ring.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <stop_token>
#include <type_traits>

namespace framepipe {

template <class T>
class latest_slot {
public:
    using value_type = T;

    // An empty, open slot without an age limit. Throws std::bad_alloc.
    latest_slot() : ring_(ring_options{.capacity = 1, .policy = overflow::drop_oldest}) {}

    // A slot whose value is discarded at pop (counted as expired) once older than `max_age`.
    // Needs a `timestamped` T. Throws std::invalid_argument naming max_age when it is negative
    // or T carries no capture time.
    explicit latest_slot(std::chrono::nanoseconds max_age)
        : ring_(ring_options{.capacity = 1, .policy = overflow::drop_oldest, .max_age = max_age}) {}

    latest_slot(const latest_slot&) = delete;
    latest_slot& operator=(const latest_slot&) = delete;

    // Stores `value`, replacing an unread one. Any thread; never waits. Returns ok, evicted (an
    // unread value was replaced and counted as evicted), or closed (nothing stored).
    // Exceptions: as ring<T>::push (basic guarantee on replacement; counts stay exact).
    push_status push(T value) { return ring_.push(std::move(value)); }

    // Same as push(T): a latest_slot never waits for room, so the token is never consulted.
    push_status push(T value, std::stop_token stop) {
        return ring_.push(std::move(value), std::move(stop));
    }

    // Takes the value if there is an unread one. Any thread; never waits. Strong guarantee.
    [[nodiscard]] std::optional<T> try_pop() { return ring_.try_pop(); }

    // Takes the value, waiting until one arrives. Any thread; blocks (parked). nullopt only once
    // the slot is closed and its last value taken. Strong guarantee.
    [[nodiscard]] std::optional<T> pop() { return ring_.pop(); }

    // As pop(), but nullopt as soon as `stop` is requested (checked first).
    [[nodiscard]] std::optional<T> pop(std::stop_token stop) { return ring_.pop(std::move(stop)); }

    // As pop(), waiting at most `timeout`. Throws std::invalid_argument naming timeout when it is
    // negative.
    [[nodiscard]] std::optional<T> pop_for(std::chrono::nanoseconds timeout) {
        return ring_.pop_for(timeout);
    }

    // As pop_for(), also ending when `stop` is requested.
    [[nodiscard]] std::optional<T> pop_for(std::chrono::nanoseconds timeout, std::stop_token stop) {
        return ring_.pop_for(timeout, std::move(stop));
    }

    // A copy of the unread value without consuming it; nullopt if there is none (or it has
    // expired). Any thread; never waits. Needs a copyable T. Strong guarantee.
    [[nodiscard]] std::optional<T> peek() const
        requires std::is_copy_constructible_v<T>
    {
        return ring_.peek();
    }

    // Closes the slot; see ring<T>::close(). Any thread; idempotent.
    void close() { ring_.close(); }

    // Whether close() has been called. Any thread; wait-free.
    [[nodiscard]] bool closed() const noexcept { return ring_.closed(); }

    // 1 when an unread value is present, else 0 (a hint). Any thread; wait-free.
    [[nodiscard]] std::size_t size() const noexcept { return ring_.size(); }

    // Always 1. Any thread; wait-free.
    [[nodiscard]] std::size_t capacity() const noexcept { return 1; }

    // Counters; replaced values are counted as evicted. Any thread; takes the lock briefly.
    [[nodiscard]] channel_stats stats() const { return ring_.stats(); }

private:
    ring<T> ring_;
};

} // namespace framepipe
