// examples/detection/sampled_pipeline.hpp - framepipe-detect's graph with --sampling other
// than none: a cheap sampler stage decides which frames the detector gets.
//
//   broadcaster "frames"
//       |
//   subscription "sampler" (capacity 4, drop_older_epochs: it should see every frame)
//       |
//   [sampler] looks at every frame it gets: the key-frame flag, the motion detector (motion,
//       |     cascade), the scene-change detector (scene); adaptive: once a second, feeds
//       |     framepipe::adaptive_rate the detector stage's busy share and the share of its
//       |     results with boxes (activity)
//   sampled "detector" = framepipe::sampled(ring, capacity 1, drop_oldest) with the strategy's
//       |     sampler in front: every_n, framepipe::gate (key frame / motion / cut), or
//       |     adaptive_rate; what it refuses is counted as sampled_out on this channel
//   [detector] HOG / YOLO on the frame, or (cascade) on the motion regions only, paced to
//       |      --detect-fps (0 by default with --sampling: the sampler decides)
//   latest_slot "results" (the boxes, and which stages ran: {"motion", "hog"})
//
// Keyframes: a file is read through OpenCV, which decodes every frame and gives no key-frame
// flag: its key frames are found at start from GStreamer's flags (common/key_frames.hpp; an
// intra-only or raw file is an error), and the sampler keeps those. A live RTSP input is read
// with gst_capture's key_frames_only: delta units are dropped before the decoder, so every frame
// that arrives is a key frame (the ones skipped are not counted: gst_capture keeps that count to
// itself). HTTP MJPEG and V4L2 cameras are refused: every frame of theirs is a key frame.
//
// Thread safety: construct and add_to() on the main thread before start; the stages run on
// the pipeline's threads; json() from any thread.
#pragma once

#include "detector.hpp"
#include "sampling.hpp"
#include "settings.hpp"
#include "stages.hpp"

#include "common/key_frames.hpp"
#include "common/live_camera.hpp"
#include "common/motion_detector.hpp"
#include "common/scene_change.hpp"
#include "common/video_source.hpp"
#include "common/video_frame.hpp"

#include <framepipe/broadcaster.hpp>
#include <framepipe/latest_slot.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/sampling.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace framepipe_examples::detection {

// What the sampler stage hands on: the frame and what the first stage found on it.
struct candidate {
    std::shared_ptr<const video_frame> frame;
    bool key_frame = false;
    std::vector<cv::Rect> motion; // motion boxes (motion, cascade), frame pixels
    bool scene_cut = false;
};

// The strategy's decision, as a framepipe sampler (admit(item, now)).
class frame_sampler {
public:
    frame_sampler(const sampling_spec& spec, double max_hz);

    [[nodiscard]] bool admit(const candidate& c, std::chrono::steady_clock::time_point now);
    // The controller (adaptive only, else nullptr): from the pushing thread (the sampler stage).
    [[nodiscard]] framepipe::adaptive_rate* adaptive() noexcept {
        return adaptive_ ? &*adaptive_ : nullptr;
    }

private:
    using predicate = bool (*)(const candidate&);
    sampling_kind kind_;
    std::optional<framepipe::every_n> every_;
    std::optional<framepipe::gate<predicate>> gate_;
    std::optional<framepipe::adaptive_rate> adaptive_;
};

struct sampled_pipeline_options {
    sampling_spec spec;
    std::vector<cv::Point> mask;       // --motion-mask
    std::string file;                  // a file input (keyframes: scanned at start), or ""
    double max_hz = 30;                // adaptive: the highest rate (the source's, or --detect-fps)
};

class sampled_pipeline {
public:
    // Checks and prepares the strategy. Throws key_frame_error (keyframes on a file without key-
    // frame information), std::invalid_argument from the samplers.
    sampled_pipeline(sampled_pipeline_options options, detector& d, meters& m, std::FILE* console);

    // framepipe-detect's sampler from its flags (--sampling, --motion-mask, --detect-fps) for a
    // file input (`video`, its path `file`) or a live one (nullptr, ""). A mask that does not fit
    // a file's frames is reported on `console` now. Throws as the constructor.
    static std::unique_ptr<sampled_pipeline> make(const sampling_spec& spec, const settings& s,
                                                  const video_source* video,
                                                  const std::string& file, detector& d, meters& m,
                                                  std::FILE* console);

    // keyframes on a live input: decode only key frames (gst_capture's key_frames_only). Throws
    // usage_error for inputs whose every frame is a key frame (http(s):// MJPEG, --camera).
    static void prepare_live(const sampling_spec& spec, const std::string& video, int camera,
                             live_camera_options& options);

    // What the mask becomes on a frame of `size` ("" when it fits): printed at start for a file.
    [[nodiscard]] std::string mask_note(cv::Size size) const;

    // Adds subscription "sampler", stages "sampler" and "detector" and channel "detector"
    // (module comment); adaptive reads the detector stage's busy time from `p`'s snapshots.
    // `frames`, `results` and this object must outlive the pipeline's run.
    void add_to(framepipe::pipeline& p, framepipe::broadcaster<video_frame>& frames,
                framepipe::latest_slot<result>& results, double detect_fps);

    // The "sampling" object of the summary: frames seen, sent and detected, the share saved,
    // drops by reason, and the strategy's own figures. Any thread.
    [[nodiscard]] nlohmann::json json(const framepipe::pipeline_snapshot& snap) const;

private:
    candidate look(const std::shared_ptr<const video_frame>& f);
    result detect(const candidate& c);
    void steer(std::chrono::steady_clock::time_point now);

    sampled_pipeline_options o_;
    const framepipe::pipeline* pipeline_ = nullptr; // set by add_to
    detector& d_;
    meters& m_;
    std::FILE* console_;
    std::string detector_name_;
    std::optional<key_frame_index> keys_;
    std::optional<motion_detector> motion_;
    std::optional<scene_change_detector> scene_;
    std::optional<framepipe::subscription<video_frame>> in_;
    framepipe::ring<candidate> ring_{1, framepipe::overflow::drop_oldest};
    framepipe::sampled<framepipe::ring<candidate>, frame_sampler> to_detector_;

    // adaptive: the previous control period (sampler thread only).
    std::optional<std::chrono::steady_clock::time_point> period_start_;
    double busy_at_start_ = 0;
    std::uint64_t detected_at_start_ = 0;
    std::uint64_t with_boxes_at_start_ = 0;

    // Relaxed: statistics for json(); they order nothing.
    std::atomic<std::uint64_t> key_frames_{0}, motion_frames_{0}, scene_cuts_{0};
    std::atomic<std::uint64_t> detected_{0}, with_boxes_{0}, regions_{0};
    std::atomic<double> region_share_sum_{0};
    std::atomic<std::uint64_t> updates_{0};
    std::atomic<double> rate_hz_{0}, ceiling_hz_{0}, last_busy_{0}, last_activity_{0};
    std::string mask_note_; // written by the sampler at its first frame (live), or at start
    std::atomic<bool> mask_noted_{false};
};

} // namespace framepipe_examples::detection
