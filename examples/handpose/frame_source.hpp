// examples/handpose/frame_source.hpp - the frames framepipe-handpose estimates: the synthetic
// hand drawn into pooled frames (with the generator's label of each frame kept aside, for
// accuracy only), or a video file through common/video_source. (A live input, --camera or an
// rtsp:// or http(s):// --video, is read by common/live_camera instead: see main.cpp.)
#pragma once

#include "hand.hpp"
#include "settings.hpp"
#include "synthetic.hpp"

#include "common/video_source.hpp"

#include <framepipe/pool.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

namespace handpose {

// The synthetic generator's label of recent frames, by sequence number, for accuracy only.
// The source writes a frame's entry before publishing the frame; the estimator reads it after
// taking the frame from the broadcaster, whose lock orders the two, so relaxed atomics suffice.
// An entry overwritten by a frame 256 later carries that frame's seq and is not mistaken for it.
class truth_table {
public:
    void put(std::uint64_t seq, gesture g) noexcept {
        slots_[seq % slots_.size()].store((seq << 8) | (static_cast<std::uint64_t>(g) + 1),
                                          std::memory_order_relaxed);
    }
    [[nodiscard]] std::optional<gesture> get(std::uint64_t seq) const noexcept {
        const auto v = slots_[seq % slots_.size()].load(std::memory_order_relaxed);
        if ((v >> 8) != seq || (v & 0xFF) == 0) {
            return std::nullopt;
        }
        return static_cast<gesture>((v & 0xFF) - 1);
    }

private:
    std::array<std::atomic<std::uint64_t>, 256> slots_{};
};

class frame_source {
public:
    // The synthetic hand (s.source == "synthetic"), else the file s.video_path. Throws
    // framepipe_examples::video_error for a video that cannot be opened.
    explicit frame_source(const settings& s);

    // The rate the source stage runs at.
    [[nodiscard]] double pace_hz() const { return video_ ? video_->pace_hz() : s_.source_fps; }
    [[nodiscard]] std::string description() const {
        return video_ ? video_->description() : "synthetic hand, seed " + std::to_string(s_.seed);
    }

    // The next frame: synthetic frame number `synthetic_seq` (the newest one, when the caller is
    // the single loop), or the video's next frame. nullptr at the end of the input or on stop.
    // One thread.
    [[nodiscard]] std::shared_ptr<framepipe_examples::video_frame> next(std::stop_token stop,
                                                                       std::uint64_t synthetic_seq);

    // The generator's label of frame `seq` (synthetic only; never given to the estimator).
    [[nodiscard]] std::optional<gesture> truth(std::uint64_t seq) const noexcept {
        return video_ ? std::nullopt : truth_.get(seq);
    }

private:
    const settings& s_;
    std::optional<hand_generator> generator_;
    std::optional<renderer> renderer_;
    std::unique_ptr<framepipe::pool<framepipe_examples::video_frame>> pool_;
    std::optional<framepipe_examples::video_source> video_;
    truth_table truth_;
};

} // namespace handpose
