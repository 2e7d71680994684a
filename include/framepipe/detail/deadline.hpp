// framepipe/detail/deadline.hpp - the clock every wait uses, timeouts turned into deadlines, and
// the check that names a negative duration.
#pragma once

#include <framepipe/detail/config.hpp>

#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <ratio>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace framepipe::detail {

using clock = std::chrono::steady_clock;

// "No deadline", for the waits that take an optional deadline by reference. A constant rather
// than a std::nullopt temporary: at -O2 GCC 12 warns (-Wmaybe-uninitialized, falsely) in the
// caller's code about the temporary's payload on paths it cannot prove dead; a constant's
// emptiness folds away.
inline constexpr std::optional<clock::time_point> no_deadline{};

// Throws std::invalid_argument naming `what` when a caller passes a negative duration.
inline void require_non_negative(std::chrono::nanoseconds d, const char* what) {
    if (d < std::chrono::nanoseconds::zero()) {
        throw std::invalid_argument(std::string(what) + ": must not be negative");
    }
}

// Throws std::invalid_argument naming `what` when a caller passes a duration that is not
// positive.
inline void require_positive(std::chrono::nanoseconds d, const char* what) {
    if (d <= std::chrono::nanoseconds::zero()) {
        throw std::invalid_argument(std::string(what) + ": must be positive");
    }
}

// t + d, saturating at time_point::max() instead of overflowing: a timeout of
// nanoseconds::max() means "no limit", not "already past". For d >= 0 and t at or after the
// clock's epoch (any time the clock gives), or d <= 0 (then t + d must not underflow).
[[nodiscard]] inline clock::time_point saturating_add(clock::time_point t,
                                                      std::chrono::nanoseconds d) noexcept {
    if (d > std::chrono::nanoseconds::zero() && t.time_since_epoch() >= clock::duration::zero() &&
        d >= clock::time_point::max() - t) {
        return clock::time_point::max();
    }
    return t + std::chrono::duration_cast<clock::duration>(d);
}

// Any std::chrono::duration as nanoseconds, for the public calls that take a timeout or deadline
// in whatever unit the caller has. Exact when the value fits (a unit finer than a nanosecond is
// truncated toward zero, as duration_cast does, except that a negative value above -1 ns becomes
// -1 ns, not zero: it stays negative, so require_non_negative names the argument); a value above
// nanoseconds::max() becomes nanoseconds::max() ("no limit"), one below nanoseconds::min()
// becomes nanoseconds::min() (so require_non_negative still names the argument). Works on the
// source's own count (the limits in its ticks, dividing before multiplying, or long double for a
// floating Rep), so nothing overflows for any input. A floating-point NaN throws
// std::invalid_argument naming `what`; nothing else throws (noexcept for an integral Rep).
template <class Rep, class Period>
[[nodiscard]] std::chrono::nanoseconds
to_nanoseconds(std::chrono::duration<Rep, Period> d,
               const char* what) noexcept(!std::is_floating_point_v<Rep>) {
    using ns = std::chrono::nanoseconds;
    using src = std::chrono::duration<Rep, Period>;
    if constexpr (std::is_same_v<src, ns>) {
        (void)what;
        return d;
    } else if constexpr (std::is_floating_point_v<Rep>) {
        if (std::isnan(d.count())) {
            throw std::invalid_argument(std::string(what) + ": must be a number");
        }
        // The count in nanoseconds, as long double (count * num / den). Beyond long double's
        // range it becomes an infinity, which compares beyond both limits like any huge value.
        using r = std::ratio_divide<Period, std::nano>;
        const long double n = static_cast<long double>(d.count()) *
                              static_cast<long double>(r::num) / static_cast<long double>(r::den);
        if (n >= static_cast<long double>(ns::max().count())) {
            return ns::max();
        }
        if (n <= static_cast<long double>(ns::min().count())) {
            return ns::min();
        }
        if (n < 0 && n > -1) {
            return ns(-1); // negative, however little: refused like any negative timeout
        }
        return ns(static_cast<ns::rep>(n));
    } else {
        (void)what;
        static_assert(std::is_integral_v<Rep>, "to_nanoseconds: an integral or floating Rep");
        using r = std::ratio_divide<Period, std::nano>; // one source tick in nanoseconds
        constexpr auto ns_max = std::numeric_limits<ns::rep>::max();
        constexpr auto ns_min = std::numeric_limits<ns::rep>::min();
        const Rep c = d.count();
        if constexpr (r::den == 1) {
            // Coarser than (or equal to) a nanosecond: a tick is r::num ns. The limits in source
            // ticks, rounded toward zero, computed in ns::rep where they cannot overflow.
            constexpr ns::rep hi_ticks = ns_max / r::num;
            constexpr ns::rep lo_ticks = ns_min / r::num;
            if constexpr (std::is_signed_v<Rep>) {
                using common = std::common_type_t<Rep, ns::rep>;
                if (static_cast<common>(c) < static_cast<common>(lo_ticks)) {
                    return ns::min();
                }
                if (static_cast<common>(c) > static_cast<common>(hi_ticks)) {
                    return ns::max();
                }
                return ns(static_cast<ns::rep>(c) * static_cast<ns::rep>(r::num));
            } else {
                // At least 64 bits, and as wide as Rep (GNU's unsigned __int128 is integral).
                using wide = std::common_type_t<Rep, unsigned long long>;
                if (static_cast<wide>(c) > static_cast<wide>(hi_ticks)) {
                    return ns::max();
                }
                return ns(static_cast<ns::rep>(c) * static_cast<ns::rep>(r::num));
            }
        } else {
            // Finer than a nanosecond, or a period that is no whole number of nanoseconds:
            // ns = c * num / den, truncating toward zero like duration_cast. Divide first so
            // nothing overflows: c = q * den + m with |m| < den, ns = q * num + m * num / den.
            // At least 64 bits, and as wide as Rep: a count cut to 64 bits first (GNU's
            // __int128 is integral) would turn a timeout of years into 0, or into a negative one.
            using wide = std::conditional_t<std::is_signed_v<Rep>,
                                            std::common_type_t<Rep, long long>,
                                            std::common_type_t<Rep, unsigned long long>>;
            const wide w = static_cast<wide>(c);
            const wide q = w / static_cast<wide>(r::den);
            const wide m = w % static_cast<wide>(r::den);
            constexpr wide hi_q = static_cast<wide>(ns_max / r::num);
            if (q > hi_q) {
                return ns::max();
            }
            if constexpr (std::is_signed_v<Rep>) {
                constexpr wide lo_q = static_cast<wide>(ns_min / r::num);
                if (q < lo_q) {
                    return ns::min();
                }
            }
            // |q * num| <= ns::max() now. The remainder's share is below num in magnitude; it is
            // exact in long double while m * num stays below 2^64.
            const auto whole = static_cast<ns::rep>(q) * static_cast<ns::rep>(r::num);
            const auto part = static_cast<ns::rep>(static_cast<long double>(m) *
                                                   static_cast<long double>(r::num) /
                                                   static_cast<long double>(r::den));
            if (part > 0 && whole > ns_max - part) {
                return ns::max();
            }
            if (part < 0 && whole < ns_min - part) {
                return ns::min();
            }
            if constexpr (std::is_signed_v<Rep>) {
                if (c < 0 && whole + part == 0) {
                    return ns(-1); // negative, however little (see above)
                }
            }
            return ns(whole + part);
        }
    }
}

// now + d, saturating instead of overflowing for very long timeouts.
[[nodiscard]] inline clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
    return saturating_add(clock::now(), d);
}

} // namespace framepipe::detail
