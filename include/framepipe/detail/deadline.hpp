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

// now + d, saturating instead of overflowing for very long timeouts.
[[nodiscard]] inline clock::time_point deadline_after(std::chrono::nanoseconds d) noexcept {
    const auto now = clock::now();
    if (d >= clock::time_point::max() - now) {
        return clock::time_point::max();
    }
    return now + std::chrono::duration_cast<clock::duration>(d);
}

} // namespace framepipe::detail
