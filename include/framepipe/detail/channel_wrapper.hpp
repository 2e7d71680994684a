// framepipe/detail/channel_wrapper.hpp - the consumer side and observers of a channel wrapped by
// another (sampling.hpp's sampled, transport's loss_counted): each call goes to the wrapped
// channel, and exists only when the channel has it. The wrapper adds its own push and stats(),
// and, for a channel its channel_traits describe, a description built from that one. A wrapped
// framepipe channel can be a selector's or a batcher's input, as the channel itself can.
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/channel.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <utility>

namespace framepipe::detail {

// Whether channel_traits<C> describes a C itself (a static describe(c)), rather than leaving the
// description to C's members (see channel_traits).
template <class C>
inline constexpr bool described_by_traits = requires(const C& c) {
    { channel_traits<C>::describe(c) } -> std::same_as<channel_description>;
};

template <class Channel>
class channel_wrapper {
public:
    using value_type = typename Channel::value_type;

    // Wraps `channel`, which must outlive this object.
    explicit channel_wrapper(Channel& channel) noexcept : channel_(channel) {}

    channel_wrapper(const channel_wrapper&) = delete;
    channel_wrapper& operator=(const channel_wrapper&) = delete;

    // The channel's consumer calls and observers (those it has): same threads, waits and
    // exceptions as the channel's.
    [[nodiscard]] auto try_pop()
        requires requires(Channel& c) { c.try_pop(); }
    {
        return channel_.try_pop();
    }
    [[nodiscard]] auto pop()
        requires requires(Channel& c) { c.pop(); }
    {
        return channel_.pop();
    }
    [[nodiscard]] auto pop(std::stop_token stop)
        requires requires(Channel& c, std::stop_token t) { c.pop(std::move(t)); }
    {
        return channel_.pop(std::move(stop));
    }
    template <class Rep, class Period>
    [[nodiscard]] auto pop_for(std::chrono::duration<Rep, Period> timeout)
        requires requires(Channel& c) { c.pop_for(timeout); }
    {
        return channel_.pop_for(timeout);
    }
    template <class Rep, class Period>
    [[nodiscard]] auto pop_for(std::chrono::duration<Rep, Period> timeout, std::stop_token stop)
        requires requires(Channel& c) { c.pop_for(timeout, std::move(stop)); }
    {
        return channel_.pop_for(timeout, std::move(stop));
    }
    [[nodiscard]] auto peek() const
        requires requires(const Channel& c) { c.peek(); }
    {
        return channel_.peek();
    }
    void close() { channel_.close(); }
    [[nodiscard]] bool closed() const noexcept(noexcept(std::declval<const Channel&>().closed()))
        requires requires(const Channel& c) { c.closed(); }
    {
        return channel_.closed();
    }
    [[nodiscard]] std::size_t size() const noexcept(noexcept(std::declval<const Channel&>().size()))
        requires requires(const Channel& c) { c.size(); }
    {
        return channel_.size();
    }
    [[nodiscard]] std::size_t capacity() const
        requires requires(const Channel& c) { c.capacity(); }
    {
        return channel_.capacity();
    }
    [[nodiscard]] overflow policy() const
        requires requires(const Channel& c) { c.policy(); }
    {
        return channel_.policy();
    }
    // Whether the channel is usable (a subscription: not moved from), so that a selector refuses
    // a wrapped empty one as it does the bare one.
    [[nodiscard]] bool valid() const noexcept
        requires requires(const Channel& c) {
            { c.valid() } noexcept -> std::convertible_to<bool>;
        }
    {
        return channel_.valid();
    }

    // The wrapped channel.
    [[nodiscard]] Channel& channel() noexcept { return channel_; }

private:
    friend struct readable_access;

    // The wrapped channel's readable event (a framepipe channel's only), so that a selector or a
    // batcher can watch the wrapper: the items it pops come out of that channel, and every push
    // that reaches the channel notifies it (see readable_access).
    // A template, so that a channel without one leaves the wrapper without one (a plain member's
    // return type would be formed with the class).
    template <class C = Channel>
    [[nodiscard]] auto readable_event() noexcept
        -> decltype(detail::readable_event(std::declval<C&>())) {
        return detail::readable_event(channel_);
    }

protected:
    ~channel_wrapper() = default;

    // Whether the wrapped channel keeps counters: the wrappers' stats() exist only then.
    static constexpr bool has_stats = requires(const Channel& c) {
        { c.stats() } -> std::convertible_to<channel_stats>;
    };

    // The channel's counters with `n` items that the wrapper kept from it added as pushed and
    // dropped for `reason`, so that pushed == popped + dropped + size still holds.
    [[nodiscard]] channel_stats stats_with(std::uint64_t channel_stats::*reason,
                                           std::uint64_t n) const {
        channel_stats s = channel_.stats();
        s.pushed += n;
        s.dropped += n;
        s.*reason += n;
        return s;
    }

    // The wrapped channel's description from its channel_traits (described_by_traits only), with
    // `n` items added to its counters as stats_with() adds them.
    [[nodiscard]] channel_description describe_with(std::uint64_t channel_stats::*reason,
                                                    std::uint64_t n) const {
        channel_description d = channel_traits<Channel>::describe(channel_);
        if (d.stats) {
            d.stats->pushed += n;
            d.stats->dropped += n;
            (*d.stats).*reason += n;
        }
        return d;
    }

    Channel& channel_;
};

} // namespace framepipe::detail
