// examples/multicam/cameras.hpp - the cameras of framepipe-multicam: each one a live source with
// its own broadcaster, two subscriptions (a rate-limited one for the UI, a latest slot for the
// detector's batcher), added, removed, paused and resumed while the pipeline runs, and counted
// for its whole life.
//
//   camera "door" (live_camera: GStreamer, or synthetic frames)    pipeline source "camera/door"
//       |
//   broadcaster "door/frames" ---+--------------------------------+
//       |                        |                                |
//   subscription "door/ui"   subscription "door/detector"     (web clients never see raw frames)
//   capacity 1, --ui-fps     capacity 1: the newest frame
//       |                        |
//   selector "ui frames"     batcher "batches" (weight: --priority)
//   (round robin)            (max --batch, one frame per camera per batch)
//
// A camera is a record that lives from add() to remove(); while it is active it has a session:
// the live source, the broadcaster, the subscriptions and the inputs of the batcher and of the UI
// selector, all made when it becomes active and taken apart when it is paused or removed
// (pipeline::source() after start, pipeline::remove(); batcher::remove() and selector::remove()).
// What a session counted is added to the record when it ends, so every figure covers the
// camera's whole life.
//
// Pausing (--max-active K): at most K cameras have a session whose source still runs. Without
// --rotate the K of highest weight (then first added) are active and keep their slot: a camera
// added later waits, paused, until a slot frees (a camera removed, or one whose source gave up:
// failed after --max-attempts, which keeps its session to show why but no longer counts). With
// --rotate S, every S seconds the K cameras with the least active time per unit of weight are
// made active (a camera that stays among them keeps its session): over a long run each camera is
// decoded for a share of the time proportional to its weight. A paused camera is not connected
// at all (nothing is decoded, no network traffic); resuming it opens a new connection.
//
// Thread safety: add(), remove() and tick() from any thread, serialised by an internal lock (a
// session's stop waits for its source, up to remove_deadline); the lookups and figures from any
// thread, under a short lock that is never held across a source's start or stop.
#pragma once

#include "common/live_camera.hpp"
#include "common/video_frame.hpp"
#include "detector.hpp"

#include <framepipe/batcher.hpp>
#include <framepipe/broadcaster.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/pipeline.hpp>
#include <framepipe/select.hpp>
#include <framepipe/stamped.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace framepipe_examples::multicam {

using frame_ptr = std::shared_ptr<const video_frame>;
using frame_batcher = framepipe::batcher<frame_ptr>;
using frame_selector = framepipe::selector<frame_ptr>;

// What a camera is: its name (letters, digits, '-', '_', '.'; at most 64), where it reads from,
// and its weight for the detector (>= 1; see select.hpp's weighted policy).
struct camera_spec {
    std::string name;
    std::string url;
    std::uint32_t weight = 1;
};

// A camera's status for people: a live input's (live_camera.hpp), or paused (--max-active).
enum class camera_status { online, reconnecting, offline, paused };

[[nodiscard]] std::string_view to_string(camera_status s) noexcept;

// The newest detection result of a camera, with the frame it was computed on.
struct detection_result {
    std::vector<detection::labelled_detection> boxes;
    std::uint64_t seq = 0;
    std::chrono::steady_clock::time_point captured{};
};

// Drops of one consumer of a camera, by reason (channel_stats' reasons, plus the batcher's).
struct consumer_drops {
    framepipe::channel_stats subscription; // the camera's subscription for this consumer
    std::uint64_t superseded = 0; // taken by the selector, then replaced by a newer frame
    std::uint64_t expired = 0;    // older than --max-age (selector and batcher)
    // Held for this consumer when the camera's session ended (paused, rotated out, removed,
    // stopped): what its subscription still held, and what reached the consumer afterwards
    // (the batcher's pending frames of that session, a frame taken just before).
    std::uint64_t session_ended = 0;
};

// Everything reported about one camera (--json, /stats.json, /metrics, the page).
struct camera_figures {
    std::string name;
    std::string input; // the URL, with any password masked
    std::uint32_t weight = 1;
    camera_status status = camera_status::offline;
    std::string state;      // the live source's state ("streaming", "backoff", ...; "paused")
    std::string last_error;
    std::optional<std::chrono::system_clock::time_point> offline_since; // or paused since
    double offline_for_s = 0;
    std::uint64_t frames = 0;       // frames the camera delivered, every session
    double fps = 0;                 // over the last tick
    std::uint64_t reconnects = 0;   // within sessions (a resume after a pause is not one)
    std::uint64_t stalls = 0;
    std::uint64_t sessions = 0;     // times it was made active
    double active_s = 0;            // time with a session whose source ran
    std::uint64_t detections = 0;   // frames the detector ran on
    std::uint64_t boxes = 0;
    double detector_share = 0;      // detections / all cameras' detections
    double age_p50_ms = 0;          // detector input age: inference start - capture
    double age_p99_ms = 0;
    double age_sum_s = 0;
    std::uint64_t age_count = 0;
    std::uint64_t ui_frames = 0;    // frames the UI stage drew
    consumer_drops detector_drops;
    consumer_drops ui_drops;
    // Frames on their way to a consumer when the figures were taken: in its subscription, held
    // by its selector, pending in the batcher, or being detected. The accounting identity, per
    // camera and per consumer (docs/examples/multicam.md, "Accounting"):
    //     frames == detections + sum(detector drops) + detector_in_flight
    //     frames == ui_frames + sum(ui drops) + ui_in_flight
    // exact once the camera has no session and the detector and UI finished its frames; a
    // snapshot of a running camera may be off by the frames moving while it is read.
    std::uint64_t detector_in_flight = 0;
    std::uint64_t ui_in_flight = 0;
};

// Totals of the cameras removed (their figures leave the list, not the run's totals).
struct removed_totals {
    std::uint64_t cameras = 0;
    std::uint64_t frames = 0;
    std::uint64_t detections = 0;
};

// The rotation's clock (--rotate): given the last rotation and now, whether a rotation is due,
// and the new "last rotation". Rotations keep to a grid of `period` from the first (no drift
// from a late tick); a tick more than one period late rotates once and restarts the grid at
// `now` (it never rotates several times to catch up).
struct rotation_step {
    bool due = false;
    std::chrono::steady_clock::time_point last{};
};
[[nodiscard]] rotation_step next_rotation(std::chrono::steady_clock::time_point last,
                                          std::chrono::steady_clock::time_point now,
                                          std::chrono::nanoseconds period) noexcept;

struct camera_set_options {
    double ui_fps = 5;                        // per camera; 0: no UI subscription
    std::size_t max_active = 0;               // 0: every camera
    std::chrono::nanoseconds rotate{0};       // 0: no rotation (see the file comment)
    std::chrono::nanoseconds remove_deadline = std::chrono::seconds(5);
    // A camera's live_camera_options from its spec and number (1, 2, ... in order of addition).
    // Throws usage_error (one line) for a URL that cannot be read.
    std::function<live_camera_options(const camera_spec&, int number)> make_options;
    // Status lines ("door: online (epoch 1; ...)"); any thread.
    std::function<void(const std::string&)> log{};
};

class camera_set {
public:
    // The cameras feed `batches` (the detector) and `ui` (nullptr: no UI), whose lifetime must
    // exceed this object's, as must the pipeline's. Throws std::invalid_argument naming
    // make_options when it is empty, ui_fps when negative or above 1000.
    camera_set(framepipe::pipeline& p, frame_batcher& batches, frame_selector* ui,
               camera_set_options options);
    // Stops every session (see stop_all()).
    ~camera_set();
    camera_set(const camera_set&) = delete;
    camera_set& operator=(const camera_set&) = delete;

    // Adds a camera, active at once unless --max-active says it waits (paused). With `fatal` set
    // (the cameras of the command line), a source that gives up before its first frame
    // (--max-attempts) fails the pipeline, so that the program exits 2. Throws
    // std::invalid_argument naming `name` (empty, not of [A-Za-z0-9._-], longer than 64, or
    // taken) or `weight` (0); usage_error from make_options (the URL); std::length_error past
    // max_cameras. Nothing changes on a throw. Any thread; blocks while a source starts.
    void add(const camera_spec& spec, bool fatal = false);

    // Removes a camera: its session's source is stopped (within remove_deadline), what its
    // channels hold is dropped and counted, and the camera leaves every figure. Its final
    // figures, or nullopt when there is no such camera. Any thread; blocks for the stop.
    std::optional<camera_figures> remove(std::string_view name);

    // Pauses and resumes cameras for --max-active and --rotate, takes over the slots of cameras
    // that gave up, and measures each camera's fps since the last call. Call about once a second
    // (any thread). Blocks while sources start and stop.
    void tick();

    // Stops every session, in order of addition. Idempotent. For the end of a run, before the
    // pipeline's own stop (so that the detector and UI inputs finish).
    void stop_all() noexcept;

    // Waits until camera `name` is online (true) or gave up, was removed or `stop` came (false),
    // at most `timeout`. Any thread.
    bool wait_online(std::string_view name, std::chrono::nanoseconds timeout, std::stop_token stop);

    // For the detector stage: records a frame's input age for the camera it came from (its
    // batcher input), then, once detected, its result. false when that camera is gone.
    // A frame of a session that ended is not detected: record_input() counts it for its camera
    // (drops, session_ended) and returns false. record_result() counts the detection even when
    // the session ended in the meantime. batch_done() after each batch (lets the records of
    // ended sessions go once no batch can hold their frames). A frame of no camera known
    // (none expected) is counted in orphaned().
    bool record_input(framepipe::input_id source, const video_frame& f,
                      std::chrono::steady_clock::time_point now);
    void record_result(framepipe::input_id source, detection_result r);
    void batch_done() noexcept { batches_done_.fetch_add(1); }
    [[nodiscard]] std::uint64_t orphaned() const noexcept { return orphaned_.load(); }

    // For the UI stage: the name and newest result of the camera behind a UI selector input
    // (nullopt when it is gone), and the count of frames drawn.
    struct ui_view {
        std::string name;
        int number = 0;
        std::shared_ptr<const detection_result> result;
    };
    [[nodiscard]] std::optional<ui_view> for_ui(framepipe::input_id source);

    // Figures of every camera (in order of addition), detector shares filled in.
    [[nodiscard]] std::vector<camera_figures> figures() const;
    [[nodiscard]] removed_totals removed() const;
    [[nodiscard]] std::size_t size() const;
    [[nodiscard]] std::size_t active() const; // sessions whose source still runs
    // Sessions ever started (each is a connection opened or a generator started): how a test
    // tells that a refused request opened nothing.
    [[nodiscard]] std::uint64_t opened() const noexcept { return opened_.load(); }
    [[nodiscard]] const camera_set_options& options() const noexcept { return options_; }

    static constexpr std::size_t max_cameras = 1024;

private:
    struct camera;
    struct session;

    void start_session(camera& c);                      // requires ops_mu_
    void stop_session(camera& c, camera_status then);   // requires ops_mu_
    void rebalance();                                   // requires ops_mu_
    void prune_retired();                               // requires ops_mu_
    [[nodiscard]] camera_figures figures_of(const camera& c) const; // requires map_mu_

    framepipe::pipeline& p_;
    frame_batcher& batches_;
    frame_selector* ui_;
    camera_set_options options_;

    std::mutex ops_mu_;         // add, remove, tick, stop_all: one at a time
    mutable std::mutex map_mu_; // the lists and each camera's session pointer
    std::condition_variable_any status_changed_; // wait_online; notified under map_mu_
    std::vector<std::shared_ptr<camera>> cameras_; // in order of addition
    std::map<std::uint64_t, std::shared_ptr<camera>> by_detector_input_;
    std::map<std::uint64_t, std::shared_ptr<camera>> by_ui_input_;
    // The inputs of sessions that ended, kept until no frame of theirs can reach the detector
    // (or the UI) any more, so that such a frame is counted for its camera (see prune_retired).
    struct retired {
        std::shared_ptr<camera> c;
        std::optional<std::uint64_t> gone_at; // batches_done_ when the batcher no longer had it
        std::uint64_t ticks = 0;              // ticks since the session ended (UI)
    };
    std::map<std::uint64_t, retired> retired_detector_;
    std::map<std::uint64_t, retired> retired_ui_;
    std::vector<std::shared_ptr<camera>> removed_cameras_; // removed, some input still retired
    removed_totals removed_totals_;                        // removed, all inputs let go
    std::atomic<std::uint64_t> batches_done_{0};
    std::atomic<std::uint64_t> orphaned_{0};
    std::vector<std::unique_ptr<session>> zombies_; // sessions whose source did not stop in time
    int next_number_ = 1;
    std::chrono::steady_clock::time_point last_rotation_{};
    std::chrono::steady_clock::time_point last_tick_{};
    std::atomic<std::uint64_t> opened_{0};
    bool stopped_ = false;
};

// Jain's fairness index of `x`: (sum x)^2 / (n * sum x^2), in [1/n, 1]; 1 when all are equal
// (also when all are 0), nullopt for an empty list.
[[nodiscard]] std::optional<double> jain_index(const std::vector<double>& x);

} // namespace framepipe_examples::multicam
