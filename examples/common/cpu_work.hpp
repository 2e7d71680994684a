// examples/common/cpu_work.hpp - real computation that stands in for a model.
//
// The examples need a "detector" whose service time is CPU work, not a sleep: a sleeping thread
// frees its core, a computing one does not, and that difference is the whole point on a small
// machine. busy_compute() runs a cheap image statistic over the frame again and again until
// `duration` has passed, and returns the statistic so the work cannot be optimised away.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace framepipe_examples {

inline std::uint64_t busy_compute(std::span<const std::uint8_t> pixels,
                                  std::chrono::nanoseconds duration) {
    using clock = std::chrono::steady_clock;
    const auto until = clock::now() + duration;
    std::uint64_t h = 1469598103934665603ULL; // FNV offset basis
    do {
        // One pass over a sparse grid of pixels (one in 16): about 0.3 ms for 640x480x3.
        for (std::size_t i = 0; i < pixels.size(); i += 16) {
            h = (h ^ pixels[i]) * 1099511628211ULL;
        }
    } while (clock::now() < until);
    return h;
}

} // namespace framepipe_examples
