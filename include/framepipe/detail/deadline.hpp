// framepipe/detail/deadline.hpp - the clock every wait uses, timeouts turned into deadlines, and
// the check that names a negative duration.
#pragma once

#include <framepipe/detail/config.hpp>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>

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

// now + d, saturating instead of overflowing for very long timeouts.
[[nodiscard]] inline clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
    return saturating_add(clock::now(), d);
}

} // namespace framepipe::detail
