// examples/detection/sampled_pipeline.cpp - see sampled_pipeline.hpp.
#include "sampled_pipeline.hpp"

#include "common/program.hpp"
#include "common/uri_scheme.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace framepipe_examples::detection {

namespace {

using clock_type = std::chrono::steady_clock;

bool is_key(const candidate& c) { return c.key_frame; }
bool has_motion(const candidate& c) { return !c.motion.empty(); }
bool is_cut(const candidate& c) { return c.scene_cut; }

void add(std::atomic<double>& a, double v) {
    double old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
    }
}

} // namespace

frame_sampler::frame_sampler(const sampling_spec& spec, double max_hz) : kind_(spec.kind) {
    switch (kind_) {
    case sampling_kind::every_n: every_.emplace(spec.n); break;
    case sampling_kind::keyframes: gate_.emplace(&is_key); break;
    case sampling_kind::motion:
    case sampling_kind::cascade: gate_.emplace(&has_motion); break;
    case sampling_kind::scene: gate_.emplace(&is_cut); break;
    case sampling_kind::adaptive:
        // From 1 Hz (a quiet scene is still looked at once a second) to the source's rate, in
        // steps of 1 Hz; the busy band is the library's (0.7 .. 0.9).
        adaptive_.emplace(framepipe::adaptive_rate_options{
            .min_hz = 1, .max_hz = std::max(1.0, max_hz), .step_hz = 1});
        break;
    case sampling_kind::none: break;
    }
}

bool frame_sampler::admit(const candidate& c, clock_type::time_point now) {
    if (every_) {
        return every_->admit(c, now);
    }
    if (gate_) {
        return gate_->admit(c, now);
    }
    if (adaptive_) {
        return adaptive_->admit(c, now);
    }
    return true;
}

sampled_pipeline::sampled_pipeline(sampled_pipeline_options options, detector& d, meters& m,
                                   std::FILE* console)
    : o_(std::move(options)),
      d_(d),
      m_(m),
      console_(console),
      detector_name_(short_name(d)),
      to_detector_(ring_, frame_sampler(o_.spec, o_.max_hz)) {
    const auto kind = o_.spec.kind;
    if (kind == sampling_kind::keyframes && !o_.file.empty()) {
        keys_ = scan_key_frames(o_.file);
    }
    if (kind == sampling_kind::motion || kind == sampling_kind::cascade) {
        motion_.emplace(motion_options{.threshold = o_.spec.threshold, .mask = o_.mask});
    } else if (!o_.mask.empty()) {
        throw usage_error("--motion-mask: only with --sampling motion or cascade");
    }
    if (kind == sampling_kind::scene) {
        scene_.emplace(scene_options{.threshold = o_.spec.distance});
    }
}

std::unique_ptr<sampled_pipeline> sampled_pipeline::make(const sampling_spec& spec,
                                                         const settings& s,
                                                         const video_source* video,
                                                         const std::string& file, detector& d,
                                                         meters& m, std::FILE* console) {
    auto sampler = std::make_unique<sampled_pipeline>(
        sampled_pipeline_options{
            .spec = spec,
            .mask = parse_polygon(s.motion_mask),
            .file = file,
            .max_hz = s.detect_fps > 0 ? s.detect_fps : (video ? video->pace_hz() : 30.0)},
        d, m, console);
    if (video) {
        if (const auto note = sampler->mask_note(video->frame_size()); !note.empty()) {
            std::fprintf(console, "framepipe-detect: --motion-%s\n", note.c_str()); // "mask: ..."
        }
    }
    return sampler;
}

void sampled_pipeline::prepare_live(const sampling_spec& spec, const std::string& video,
                                    int camera, live_camera_options& options) {
    if (spec.kind != sampling_kind::keyframes) {
        return;
    }
    // Schemes in any case (RFC 3986 3.1).
    if (camera >= 0 || has_scheme_prefix(video, "v4l2://")) {
        throw usage_error("--sampling keyframes: a V4L2 camera gives raw or MJPEG frames, which "
                          "carry no key-frame information (every frame is a key frame)");
    }
    if (has_scheme_prefix(video, "http://") || has_scheme_prefix(video, "https://")) {
        throw usage_error("--sampling keyframes: an HTTP MJPEG stream carries no key-frame "
                          "information (every frame is a key frame)");
    }
    options.capture.key_frames_only = true;
}

std::string sampled_pipeline::mask_note(cv::Size size) const {
    if (o_.mask.empty()) {
        return {};
    }
    motion_detector probe({.mask = o_.mask});
    (void)probe.detect(cv::Mat(size, CV_8UC1, cv::Scalar(0)));
    return probe.mask_note();
}

void sampled_pipeline::add_to(framepipe::pipeline& p, framepipe::broadcaster<video_frame>& frames,
                              framepipe::latest_slot<result>& results, double detect_fps) {
    // Capacity 4: the sampler is cheap and should see every frame (the motion background learns
    // from each); it loses frames only when 4 behind.
    pipeline_ = &p;
    in_ = frames.subscribe({.capacity = 4, .drop_older_epochs = true, .name = "sampler"});
    p.channel(to_detector_, "detector");
    p.stage("sampler", *in_, to_detector_,
            [this](const std::shared_ptr<const video_frame>& f) { return look(f); });
    p.stage("detector", to_detector_, results, [this](const candidate& c) { return detect(c); },
            {.max_rate_hz = detect_fps});
}

candidate sampled_pipeline::look(const std::shared_ptr<const video_frame>& f) {
    candidate c;
    c.frame = f;
    switch (o_.spec.kind) {
    case sampling_kind::keyframes:
        // A file: its key frames by index. A live input decodes only key frames.
        c.key_frame = keys_ ? keys_->is_key(f->seq) : true;
        break;
    case sampling_kind::motion:
    case sampling_kind::cascade: {
        auto found = motion_->detect(f->value);
        if (!mask_noted_.load(std::memory_order_relaxed)) {
            mask_note_ = motion_->mask_note();
            if (!mask_note_.empty() && o_.file.empty()) { // a file's was printed at start
                std::fprintf(console_, "framepipe-detect: --motion-%s\n", mask_note_.c_str());
                std::fflush(console_);
            }
            mask_noted_.store(true, std::memory_order_release); // publishes mask_note_
        }
        c.motion = std::move(found.boxes);
        break;
    }
    case sampling_kind::scene: c.scene_cut = scene_->update(f->value).cut; break;
    case sampling_kind::adaptive: steer(clock_type::now()); break;
    case sampling_kind::every_n:
    case sampling_kind::none: break;
    }
    key_frames_.fetch_add(c.key_frame ? 1 : 0, std::memory_order_relaxed);
    motion_frames_.fetch_add(c.motion.empty() ? 0 : 1, std::memory_order_relaxed);
    scene_cuts_.fetch_add(c.scene_cut ? 1 : 0, std::memory_order_relaxed);
    return c;
}

// Once a second: the detector stage's busy share over the period, and the share of its results
// that had boxes (the activity), to adaptive_rate::update.
void sampled_pipeline::steer(clock_type::time_point now) {
    auto* rate = to_detector_.sampler().adaptive();
    double busy_total = 0;
    for (const auto& st : pipeline_->snapshot().stages) {
        if (st.name == "detector") {
            busy_total = st.busy_s; // one worker
        }
    }
    const auto detected = detected_.load(std::memory_order_relaxed);
    const auto with_boxes = with_boxes_.load(std::memory_order_relaxed);
    if (!period_start_) {
        period_start_ = now;
        busy_at_start_ = busy_total;
        detected_at_start_ = detected;
        with_boxes_at_start_ = with_boxes;
        rate_hz_.store(rate->rate(), std::memory_order_relaxed);
        ceiling_hz_.store(rate->ceiling(), std::memory_order_relaxed);
        return;
    }
    const double period = std::chrono::duration<double>(now - *period_start_).count();
    if (period < 1.0) {
        return;
    }
    framepipe::rate_signal signal;
    signal.busy = std::clamp((busy_total - busy_at_start_) / period, 0.0, 1.0);
    if (detected > detected_at_start_) {
        signal.activity = static_cast<double>(with_boxes - with_boxes_at_start_) /
                          static_cast<double>(detected - detected_at_start_);
        last_activity_.store(*signal.activity, std::memory_order_relaxed);
    }
    const double hz = rate->update(signal, now);
    rate_hz_.store(hz, std::memory_order_relaxed);
    ceiling_hz_.store(rate->ceiling(), std::memory_order_relaxed);
    last_busy_.store(*signal.busy, std::memory_order_relaxed);
    updates_.fetch_add(1, std::memory_order_relaxed);
    period_start_ = now;
    busy_at_start_ = busy_total;
    detected_at_start_ = detected;
    with_boxes_at_start_ = with_boxes;
}

result sampled_pipeline::detect(const candidate& c) {
    const auto& f = *c.frame;
    const auto start = clock_type::now();
    m_.detect_age.record(start - f.captured);
    m_.detector_epochs.see(f.epoch);
    detection_result r;
    std::size_t regions = 0;
    if (o_.spec.kind == sampling_kind::cascade) {
        const auto where = cascade_regions(c.motion, f.value.size());
        regions = where.size();
        double area = 0;
        for (const auto& w : where) {
            area += w.area();
        }
        regions_.fetch_add(regions, std::memory_order_relaxed);
        add(region_share_sum_, area / f.value.size().area());
        r.boxes = detect_in_regions(d_, f.value, where);
        r.stages = {"motion", detector_name_};
    } else {
        r.boxes = d_.detect(f.value);
        r.stages = {o_.spec.kind == sampling_kind::every_n ? "every-n" : o_.spec.text.substr(0, o_.spec.text.find(':')),
                    detector_name_};
    }
    const auto took = clock_type::now() - start;
    m_.inference.record(took);
    m_.detections.fetch_add(1, std::memory_order_relaxed);
    detected_.fetch_add(1, std::memory_order_relaxed);
    with_boxes_.fetch_add(r.boxes.empty() ? 0 : 1, std::memory_order_relaxed);
    r.inference_ms = std::chrono::duration<double, std::milli>(took).count();
    m_.last_inference_us.store(std::chrono::duration_cast<std::chrono::microseconds>(took).count(),
                               std::memory_order_relaxed);
    std::string where;
    if (o_.spec.kind == sampling_kind::cascade) {
        where = ", " + std::to_string(regions) + (regions == 1 ? " region" : " regions");
    }
    std::fprintf(console_,
                 "inference %.1f ms (frame %llu, %zu boxes, %s -> %s%s, input age %.1f ms, epoch "
                 "%llu)\n",
                 r.inference_ms, static_cast<unsigned long long>(f.seq), r.boxes.size(),
                 r.stages[0].c_str(), r.stages[1].c_str(), where.c_str(),
                 std::chrono::duration<double, std::milli>(start - f.captured).count(),
                 static_cast<unsigned long long>(f.epoch));
    return framepipe::stamp(std::move(r), f.seq, f.captured, f.epoch);
}

nlohmann::json sampled_pipeline::json(const framepipe::pipeline_snapshot& snap) const {
    std::uint64_t seen = 0;
    std::uint64_t detected = 0;
    for (const auto& st : snap.stages) {
        if (st.name == "sampler") {
            seen = st.items_in;
        } else if (st.name == "detector") {
            detected = st.items_in;
        }
    }
    const auto& to_detector = channel_named(snap, "detector");
    const auto sampled_out = to_detector_.sampled_out();
    const double share = seen > 0 ? static_cast<double>(detected) / static_cast<double>(seen) : 0.0;
    nlohmann::json j = {
        {"strategy", o_.spec.text},
        {"frames_seen", seen},
        {"frames_sent", to_detector.pushed - std::min(to_detector.pushed, sampled_out)},
        {"frames_detected", detected},
        {"detected_share", std::round(share * 1000) / 1000},
        {"compute_saved", std::round((1 - share) * 1000) / 1000},
        {"sampled_out", sampled_out},
        {"dropped_before_sampler_by_reason", drops_by_reason(channel_named(snap, "sampler"))},
        {"dropped_for_detector_by_reason", drops_by_reason(to_detector)},
        {"stages_ran", {{o_.spec.kind == sampling_kind::cascade ? "motion" : "sampler", seen},
                        {detector_name_, detected}}}};
    switch (o_.spec.kind) {
    case sampling_kind::keyframes:
        j["key_frames"] = key_frames_.load(std::memory_order_relaxed);
        j["key_frames_in_file"] = keys_ ? nlohmann::json(keys_->keys.size()) : nlohmann::json();
        // A file is decoded in full by OpenCV; a live input skips delta units before the
        // decoder, and its camera counts them (main.cpp fills the figure in).
        j["skipped_before_decode"] = keys_ ? nlohmann::json(0) : nlohmann::json();
        break;
    case sampling_kind::motion:
    case sampling_kind::cascade:
        j["motion_frames"] = motion_frames_.load(std::memory_order_relaxed);
        j["mask"] = mask_noted_.load(std::memory_order_acquire) ? mask_note_ : std::string();
        if (o_.spec.kind == sampling_kind::cascade) {
            const auto n = detected_.load(std::memory_order_relaxed);
            j["regions"] = regions_.load(std::memory_order_relaxed);
            j["region_pixel_share"] =
                n > 0 ? std::round(region_share_sum_.load(std::memory_order_relaxed) / static_cast<double>(n) * 1000) / 1000 : 0.0;
        }
        break;
    case sampling_kind::scene: j["scene_cuts"] = scene_cuts_.load(std::memory_order_relaxed); break;
    case sampling_kind::adaptive:
        j["rate_hz"] = rate_hz_.load(std::memory_order_relaxed);
        j["ceiling_hz"] = ceiling_hz_.load(std::memory_order_relaxed);
        j["updates"] = updates_.load(std::memory_order_relaxed);
        j["last_busy"] = round2(last_busy_.load(std::memory_order_relaxed));
        j["last_activity"] = round2(last_activity_.load(std::memory_order_relaxed));
        break;
    case sampling_kind::every_n: j["n"] = o_.spec.n; break;
    case sampling_kind::none: break;
    }
    return j;
}

} // namespace framepipe_examples::detection
