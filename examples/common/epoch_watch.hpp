// examples/common/epoch_watch.hpp - what a consumer checks of the epoch rule: once it has seen a
// frame of a live source's newer connection, no frame of an older one may follow
// (docs/live_sources.md, "Epochs"). The examples' stages call see() with every frame they take
// and report regressions() (always 0: the channels refuse older epochs, drop_older_epochs, and
// the live source never emits one after a newer one; the counter is the proof, in the summary).
//
// Thread safety: see() from one thread (the stage's); the counters from any thread.
#pragma once

#include <atomic>
#include <cstdint>

namespace framepipe_examples {

class epoch_watch {
public:
    void see(std::uint64_t epoch) noexcept {
        // Relaxed: single writer; readers only report the figures.
        const auto newest = newest_.load(std::memory_order_relaxed);
        if (epoch < newest) {
            regressions_.fetch_add(1, std::memory_order_relaxed);
        } else if (epoch > newest) {
            newest_.store(epoch, std::memory_order_relaxed);
        }
    }
    // Frames seen from an older epoch after a newer one.
    [[nodiscard]] std::uint64_t regressions() const noexcept {
        return regressions_.load(std::memory_order_relaxed);
    }
    // The newest epoch seen (0: none, or not a live source).
    [[nodiscard]] std::uint64_t newest() const noexcept {
        return newest_.load(std::memory_order_relaxed);
    }

private:
    std::atomic<std::uint64_t> newest_{0};
    std::atomic<std::uint64_t> regressions_{0};
};

}  // namespace framepipe_examples
