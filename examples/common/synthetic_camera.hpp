// examples/common/synthetic_camera.hpp - generated cameras for tests and benchmarks: a moving
// pattern with the camera's number on it, at a given size and rate, for almost no CPU per frame.
//
//     live_camera_options o;
//     o.capture.uri = "synthetic://640x480@30";
//     o.reader = synthetic_reader({.width = 640, .height = 480, .fps = 30, .number = 3});
//     live_camera camera(o);     // supervised, pooled and published like a real camera
//
// The pattern is drawn once per camera: a strip twice the frame's width whose content repeats
// every `width` columns (diagonal stripes on a gradient, "cam N" twice per period so that one
// copy is always whole in a frame). Frame k is the window starting at column (k * step) % width:
// a cv::Mat view into the strip (no copy, no allocation). So a synthetic camera costs its
// strip's memory once (2 x width x height x 3 bytes) and, per frame, a wake-up at the frame's
// due time and a Mat header. The view is read-only by convention (every frame of the camera
// shares the strip): clone() before drawing, as with any frame.
//
// Timing: frame k is due at open + k / fps, and its `captured` is that due time (a camera's
// clock). A reader that comes late (a busy machine) skips to the newest due frame, like a camera
// that does not queue: frames are never delivered in a burst. The frames it skipped are counted
// as dropped before read (frame_reader::dropped_before_read()).
//
// Thread safety: synthetic_reader() from any thread; each reader it makes is used by one thread
// (the live source's runner), as frame_reader requires.
#pragma once

#include "common/live_camera.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace framepipe_examples {

struct synthetic_options {
    int width = 640;
    int height = 480;
    double fps = 30;
    int number = 1; // drawn on the frames ("cam 1")
};

// Whether `uri` names a synthetic camera ("synthetic:" or "synthetic://...", the scheme in any
// case).
[[nodiscard]] bool is_synthetic_uri(std::string_view uri) noexcept;

// The options of "synthetic://WIDTHxHEIGHT@FPS" (each part optional: "synthetic:",
// "synthetic://320x240", "synthetic://@15") over `defaults`; nullopt with `error` set (one
// line) when the text is not of that form or a value is out of range (width and height 16..4096,
// fps 0.001..240).
[[nodiscard]] std::optional<synthetic_options> parse_synthetic_uri(std::string_view uri,
                                                                   const synthetic_options& defaults,
                                                                   std::string* error = nullptr);

// A reader factory for live_camera_options::reader: every reader it makes (one per connection)
// shares the camera's pattern, drawn here once. Throws std::invalid_argument naming width,
// height or fps when out of the range above.
[[nodiscard]] std::function<std::unique_ptr<frame_reader>()> synthetic_reader(
    const synthetic_options& options);

} // namespace framepipe_examples
