// examples/multicam/cameras.cpp - see cameras.hpp.
#include "cameras.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace framepipe_examples::multicam {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::nanoseconds;

void add_to(framepipe::channel_stats& a, const framepipe::channel_stats& b) noexcept {
    a.pushed += b.pushed;
    a.popped += b.popped;
    a.dropped += b.dropped;
    a.evicted += b.evicted;
    a.rejected += b.rejected;
    a.cancelled += b.cancelled;
    a.expired += b.expired;
    a.after_close += b.after_close;
    a.rate_limited += b.rate_limited;
    a.sampled_out += b.sampled_out;
    a.lost_in_transport += b.lost_in_transport;
    // size: what a session holds now, not a total
}

void check_name(const std::string& name) {
    if (name.empty() || name.size() > 64) {
        throw std::invalid_argument("name: must be 1 to 64 characters");
    }
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '-' || c == '_' || c == '.';
        if (!ok) {
            throw std::invalid_argument("name: '" + name +
                                        "' may only hold letters, digits, '-', '_' and '.'");
        }
    }
}

double seconds(nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// The supervised source the pipeline runs for a session: the live camera, whose failure is
// reported (failing the pipeline: exit 2) only for a camera of the command line that never
// delivered a frame. Any other camera that gives up just goes offline.
struct camera_source {
    live_camera camera;
    bool fatal = false;

    void start(framepipe::broadcaster<video_frame>& out) { camera.start(out); }
    void stop() noexcept { camera.stop(); }
    bool wait(std::stop_token stop) { return camera.wait(std::move(stop)); }
    [[nodiscard]] framepipe::source_status status() const { return camera.status(); }
    [[nodiscard]] std::optional<std::string> failure() const {
        if (!fatal || camera.stats().live.frames != 0) {
            return std::nullopt;
        }
        return camera.failure();
    }
};

} // namespace

std::string_view to_string(camera_status s) noexcept {
    switch (s) {
    case camera_status::online: return "online";
    case camera_status::reconnecting: return "reconnecting";
    case camera_status::offline: return "offline";
    case camera_status::paused: return "paused";
    }
    return "unknown";
}

// What exists while a camera is active. Declaration order is construction order: the
// broadcaster before its subscriptions, the source last.
struct camera_set::session {
    session(const std::string& name, const live_camera_options& o, double ui_fps, bool fatal)
        : detector(frames.subscribe({.capacity = 1,
                                     .drop_older_epochs = true,
                                     .name = name + "/detector"})),
          source{live_camera(o), fatal},
          stage("camera/" + name),
          started(clock_type::now()) {
        if (ui_fps > 0) {
            ui.emplace(frames.subscribe({.capacity = 1,
                                         .max_rate_hz = ui_fps,
                                         .drop_older_epochs = true,
                                         .name = name + "/ui"}));
        }
    }

    framepipe::broadcaster<video_frame> frames;
    framepipe::subscription<video_frame> detector;
    std::optional<framepipe::subscription<video_frame>> ui;
    camera_source source;
    std::string stage;
    clock_type::time_point started;
    framepipe::input_id detector_id{};
    framepipe::input_id ui_id{};

    // Its source gave up (failed after --max-attempts, or ended). Not `stopped`: that is also
    // the state of a source the pipeline has not started yet.
    [[nodiscard]] bool gave_up() const { return gave_up(source.camera.stats().live.state); }
    [[nodiscard]] static bool gave_up(framepipe::live_state s) {
        return s == framepipe::live_state::failed || s == framepipe::live_state::ended;
    }
};

struct camera_set::camera {
    camera_spec spec;
    int number = 0;
    live_camera_options options; // made and checked once, by add()
    bool fatal = false;

    // Guarded by map_mu_ (written under ops_mu_ too).
    std::unique_ptr<session> s;
    camera_status parked = camera_status::paused; // the status while there is no session
    std::optional<std::chrono::system_clock::time_point> parked_since;
    clock_type::time_point parked_at = clock_type::now();
    // Totals of the sessions that ended.
    std::uint64_t frames = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t stalls = 0;
    std::uint64_t sessions = 0;
    nanoseconds active{0};
    consumer_drops detector_drops;
    consumer_drops ui_drops;
    // The rate over the last tick.
    std::uint64_t fps_frames = 0;
    double fps = 0;
    std::uint64_t in_detector = 0; // record_input() done, record_result() not yet

    // Written by the detector and UI threads: relaxed atomics and a meter (statistics).
    framepipe::latency_histogram age;
    std::atomic<std::uint64_t> detections{0};
    std::atomic<std::uint64_t> boxes{0};
    std::atomic<std::uint64_t> ui_frames{0};
    std::mutex result_mu;
    std::shared_ptr<const detection_result> result;

    [[nodiscard]] nanoseconds active_now(clock_type::time_point now) const {
        return active + (s ? now - s->started : nanoseconds(0));
    }
};

camera_set::camera_set(framepipe::pipeline& p, frame_batcher& batches, frame_selector* ui,
                       camera_set_options options)
    : p_(p), batches_(batches), ui_(ui), options_(std::move(options)) {
    if (!options_.make_options) {
        throw std::invalid_argument("make_options: a camera_set needs it");
    }
    if (!(options_.ui_fps >= 0 && options_.ui_fps <= 1000)) {
        throw std::invalid_argument("ui_fps: must be between 0 and 1000");
    }
    last_rotation_ = last_tick_ = clock_type::now();
}

camera_set::~camera_set() {
    stop_all();
    // A session whose source did not stop in time is still run by the pipeline: wait for it.
    for (auto& z : zombies_) {
        try {
            while (!p_.remove(z->stage, std::chrono::seconds(60)).clean) {
            }
        } catch (const std::exception&) {
            // no such stage any more: it ended
        }
    }
}

void camera_set::add(const camera_spec& spec, bool fatal) {
    check_name(spec.name);
    if (spec.weight == 0) {
        throw std::invalid_argument("weight: must be at least 1");
    }
    const std::lock_guard<std::mutex> ops(ops_mu_);
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        for (const auto& c : cameras_) {
            if (c->spec.name == spec.name) {
                throw std::invalid_argument("name: a camera '" + spec.name + "' exists already");
            }
        }
        if (cameras_.size() >= max_cameras) {
            throw std::length_error("at most " + std::to_string(max_cameras) + " cameras");
        }
    }
    auto c = std::make_shared<camera>();
    c->spec = spec;
    c->number = next_number_;
    c->options = options_.make_options(spec, c->number); // throws usage_error for the URL
    c->options.name = spec.name;
    c->fatal = fatal;
    c->parked_since = std::chrono::system_clock::now();
    ++next_number_;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        cameras_.push_back(c);
    }
    try {
        rebalance();
    } catch (...) {
        const std::lock_guard<std::mutex> lock(map_mu_);
        std::erase(cameras_, c);
        throw;
    }
}

std::optional<camera_figures> camera_set::remove(std::string_view name) {
    const std::lock_guard<std::mutex> ops(ops_mu_);
    std::shared_ptr<camera> c;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        for (const auto& x : cameras_) {
            if (x->spec.name == name) {
                c = x;
            }
        }
    }
    if (!c) {
        return std::nullopt;
    }
    if (c->s) {
        stop_session(*c, camera_status::offline);
    }
    const auto batch_stats = batches_.stats();
    camera_figures last;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        last = figures_of(*c);
        for (const auto& b : batch_stats.sources) {
            const auto it = retired_detector_.find(b.input.id.value);
            if (b.removed && it != retired_detector_.end() && it->second.c == c) {
                last.detector_in_flight += b.pending;
            }
        }
        std::erase(cameras_, c);
        removed_cameras_.push_back(c);
    }
    status_changed_.notify_all();
    rebalance(); // a slot may have freed
    return last;
}

void camera_set::tick() {
    const std::lock_guard<std::mutex> ops(ops_mu_);
    const auto now = clock_type::now();
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        const double dt = std::max(1e-3, seconds(now - last_tick_));
        for (auto& c : cameras_) {
            const auto frames = c->frames + (c->s ? c->s->source.camera.stats().live.frames : 0);
            c->fps = static_cast<double>(frames - std::min(frames, c->fps_frames)) / dt;
            c->fps_frames = frames;
        }
        last_tick_ = now;
    }
    prune_retired();
    rebalance();
}

void camera_set::prune_retired() {
    // A retired detector input goes once the batcher no longer lists it (its pending frames have
    // gone in a batch) and the detector has finished a batch since: with one detector thread, at
    // most the batch it was running could still hold frames of it. A retired UI input goes two
    // ticks after its session ended (the UI draws what it took within a refresh).
    const auto batch_stats = batches_.stats();
    const auto done = batches_done_.load();
    const std::lock_guard<std::mutex> lock(map_mu_);
    for (auto it = retired_detector_.begin(); it != retired_detector_.end();) {
        auto& r = it->second;
        if (r.gone_at && done > *r.gone_at) {
            it = retired_detector_.erase(it);
            continue;
        }
        if (!r.gone_at) {
            const bool listed = std::any_of(batch_stats.sources.begin(), batch_stats.sources.end(),
                                            [&](const auto& b) { return b.input.id.value == it->first; });
            if (!listed) {
                r.gone_at = done;
            }
        }
        ++it;
    }
    for (auto it = retired_ui_.begin(); it != retired_ui_.end();) {
        it = ++it->second.ticks > 2 ? retired_ui_.erase(it) : std::next(it);
    }
    // A removed camera whose inputs all went: its figures are final, folded into the totals.
    std::erase_if(removed_cameras_, [&](const std::shared_ptr<camera>& c) {
        const auto refers = [&](const auto& m) {
            return std::any_of(m.begin(), m.end(), [&](const auto& e) { return e.second.c == c; });
        };
        if (refers(retired_detector_) || refers(retired_ui_)) {
            return false;
        }
        ++removed_totals_.cameras;
        removed_totals_.frames += c->frames;
        removed_totals_.detections += c->detections.load(std::memory_order_relaxed);
        return true;
    });
}

removed_totals camera_set::removed() const {
    const std::lock_guard<std::mutex> lock(map_mu_);
    removed_totals t = removed_totals_;
    for (const auto& c : removed_cameras_) {
        ++t.cameras;
        t.frames += c->frames;
        t.detections += c->detections.load(std::memory_order_relaxed);
    }
    return t;
}

rotation_step next_rotation(clock_type::time_point last, clock_type::time_point now,
                            nanoseconds period) noexcept {
    if (period <= nanoseconds(0) || now - last < period) {
        return {false, last};
    }
    const auto next = last + period;
    return {true, now - next >= period ? now : next};
}

void camera_set::stop_all() noexcept {
    const std::lock_guard<std::mutex> ops(ops_mu_);
    stopped_ = true;
    std::vector<std::shared_ptr<camera>> all;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        all = cameras_;
    }
    for (auto& c : all) {
        if (c->s) {
            try {
                stop_session(*c, camera_status::offline);
            } catch (const std::exception& e) {
                if (options_.log) {
                    options_.log(c->spec.name + ": stopping: " + e.what());
                }
            }
        }
    }
}

void camera_set::rebalance() {
    if (stopped_) {
        return;
    }
    const auto now = clock_type::now();
    std::vector<std::shared_ptr<camera>> candidates;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        for (const auto& c : cameras_) {
            if (!(c->s && c->s->gave_up())) {
                candidates.push_back(c); // a camera whose source gave up holds no slot
            }
        }
    }
    std::vector<std::shared_ptr<camera>> wanted = candidates;
    const std::size_t k = options_.max_active == 0 ? candidates.size() : options_.max_active;
    if (k < candidates.size()) {
        const bool rotating = options_.rotate > nanoseconds(0);
        const bool rotate_now = rotating && next_rotation(last_rotation_, now, options_.rotate).due;
        // Weighted active time: the rotation's measure of how much a camera has had.
        const auto served = [&](const camera& c) {
            return seconds(c.active_now(now)) / static_cast<double>(c.spec.weight);
        };
        std::stable_sort(wanted.begin(), wanted.end(), [&](const auto& a, const auto& b) {
            if (!rotate_now && (a->s != nullptr) != (b->s != nullptr)) {
                return a->s != nullptr; // between rotations an active camera keeps its slot
            }
            if (rotating) {
                return served(*a) < served(*b);
            }
            return a->spec.weight > b->spec.weight; // then in order of addition (stable)
        });
        if (rotate_now) {
            last_rotation_ = next_rotation(last_rotation_, now, options_.rotate).last;
        }
        wanted.resize(k);
    }
    // Pause first, then resume: never more than K running at once.
    for (const auto& c : candidates) {
        if (c->s && std::find(wanted.begin(), wanted.end(), c) == wanted.end()) {
            stop_session(*c, camera_status::paused);
        }
    }
    for (const auto& c : wanted) {
        if (!c->s) {
            start_session(*c);
        }
    }
}

void camera_set::start_session(camera& c) {
    const std::string& name = c.spec.name;
    auto s = std::make_unique<session>(name, c.options, ui_ ? options_.ui_fps : 0.0, c.fatal);
    s->source.camera.on_event([this](const std::string& line) {
        if (options_.log) {
            options_.log(line);
        }
        { const std::lock_guard<std::mutex> lock(map_mu_); } // no wait_online misses it
        status_changed_.notify_all();
    });
    s->detector_id = batches_.add(s->detector, {.weight = c.spec.weight, .name = name});
    if (ui_ != nullptr && s->ui) {
        s->ui_id = ui_->add(*s->ui, {.name = name});
    }
    std::shared_ptr<camera> self;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        for (const auto& x : cameras_) {
            if (x.get() == &c) {
                self = x;
            }
        }
        by_detector_input_[s->detector_id.value] = self;
        if (s->ui) {
            by_ui_input_[s->ui_id.value] = self;
        }
        c.s = std::move(s);
        c.parked_since.reset();
        ++c.sessions;
    }
    try {
        p_.channel(c.s->frames, name + "/frames");
        p_.source(c.s->stage, c.s->frames, c.s->source); // starts at once while the pipeline runs
    } catch (...) {
        std::unique_ptr<session> undo;
        (void)batches_.remove(c.s->detector_id);
        if (ui_ != nullptr && c.s->ui) {
            (void)ui_->remove(c.s->ui_id);
        }
        const std::lock_guard<std::mutex> lock(map_mu_);
        by_detector_input_.erase(c.s->detector_id.value);
        by_ui_input_.erase(c.s->ui_id.value);
        undo = std::move(c.s);
        --c.sessions;
        c.parked_since = std::chrono::system_clock::now();
        throw;
    }
    opened_.fetch_add(1);
    if (options_.log && c.sessions > 1) {
        options_.log(name + ": resumed");
    }
}

void camera_set::stop_session(camera& c, camera_status then) {
    session& s = *c.s;
    const auto report = p_.remove(s.stage, options_.remove_deadline);
    const auto detector_final = batches_.remove(s.detector_id);
    std::optional<framepipe::input_stats> ui_final;
    if (ui_ != nullptr && s.ui) {
        ui_final = ui_->remove(s.ui_id);
    }
    std::unique_ptr<session> gone;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        const auto live = s.source.camera.stats().live;
        c.frames += live.frames;
        c.reconnects += live.reconnects;
        c.stalls += live.stalls;
        c.active += clock_type::now() - s.started;
        // What the subscriptions still hold goes with the session (nothing pops them any more:
        // the batcher and the selector let them go above).
        const auto detector_sub = s.detector.stats();
        add_to(c.detector_drops.subscription, detector_sub);
        c.detector_drops.session_ended += detector_sub.size;
        if (detector_final) {
            c.detector_drops.superseded += detector_final->input.dropped;
            c.detector_drops.expired += detector_final->input.expired + detector_final->expired;
        }
        if (s.ui) {
            const auto ui_sub = s.ui->stats();
            add_to(c.ui_drops.subscription, ui_sub);
            c.ui_drops.session_ended += ui_sub.size;
        }
        if (ui_final) {
            c.ui_drops.superseded += ui_final->dropped;
            c.ui_drops.expired += ui_final->expired;
        }
        // Frames of the session may still reach the detector (pending in the batcher, or in the
        // batch it runs) or the UI: they are counted for the camera until prune_retired().
        if (const auto it = by_detector_input_.find(s.detector_id.value); it != by_detector_input_.end()) {
            retired_detector_[s.detector_id.value] = retired{it->second, std::nullopt, 0};
            by_detector_input_.erase(it);
        }
        if (s.ui) {
            if (const auto it = by_ui_input_.find(s.ui_id.value); it != by_ui_input_.end()) {
                retired_ui_[s.ui_id.value] = retired{it->second, std::nullopt, 0};
                by_ui_input_.erase(it);
            }
        }
        c.parked = then;
        c.parked_since = std::chrono::system_clock::now();
        c.parked_at = clock_type::now();
        gone = std::move(c.s);
    }
    status_changed_.notify_all();
    if (!report.clean) {
        if (options_.log) {
            options_.log(c.spec.name + ": its source did not stop within the deadline; left to end");
        }
        zombies_.push_back(std::move(gone));
        return;
    }
    if (options_.log && then == camera_status::paused) {
        options_.log(c.spec.name + ": paused (--max-active " + std::to_string(options_.max_active) +
                     ")");
    }
}

bool camera_set::wait_online(std::string_view name, nanoseconds timeout, std::stop_token stop) {
    std::unique_lock<std::mutex> lock(map_mu_);
    bool online = false;
    (void)status_changed_.wait_for(lock, stop, timeout, [&] {
        for (const auto& c : cameras_) {
            if (c->spec.name != name) {
                continue;
            }
            if (!c->s) {
                return true; // paused or removed: nothing to wait for
            }
            const auto st = c->s->source.camera.stats();
            online = st.status == stream_status::online;
            return online || session::gave_up(st.live.state);
        }
        return true; // removed
    });
    return online;
}

bool camera_set::record_input(framepipe::input_id source, const video_frame& f,
                              clock_type::time_point now) {
    const std::lock_guard<std::mutex> lock(map_mu_);
    const auto it = by_detector_input_.find(source.value);
    if (it == by_detector_input_.end()) {
        if (const auto r = retired_detector_.find(source.value); r != retired_detector_.end()) {
            ++r->second.c->detector_drops.session_ended; // its session ended: not detected
        } else {
            orphaned_.fetch_add(1);
        }
        return false;
    }
    it->second->age.record(now - f.captured);
    ++it->second->in_detector;
    return true;
}

void camera_set::record_result(framepipe::input_id source, detection_result r) {
    std::shared_ptr<camera> c;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        if (const auto it = by_detector_input_.find(source.value); it != by_detector_input_.end()) {
            c = it->second;
        } else if (const auto old = retired_detector_.find(source.value); old != retired_detector_.end()) {
            c = old->second.c; // the session ended while its frame was being detected: still counts
        } else {
            orphaned_.fetch_add(1);
            return;
        }
        if (c->in_detector == 0) {
            orphaned_.fetch_add(1); // no record_input() for it: not a detection
            return;
        }
        --c->in_detector;
    }
    c->detections.fetch_add(1, std::memory_order_relaxed);
    c->boxes.fetch_add(r.boxes.size(), std::memory_order_relaxed);
    auto shared = std::make_shared<const detection_result>(std::move(r));
    const std::lock_guard<std::mutex> lock(c->result_mu);
    c->result = std::move(shared);
}

std::optional<camera_set::ui_view> camera_set::for_ui(framepipe::input_id source) {
    std::shared_ptr<camera> c;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        const auto it = by_ui_input_.find(source.value);
        if (it == by_ui_input_.end()) {
            if (const auto r = retired_ui_.find(source.value); r != retired_ui_.end()) {
                ++r->second.c->ui_drops.session_ended; // taken just before its session ended
            }
            return std::nullopt;
        }
        c = it->second;
    }
    c->ui_frames.fetch_add(1, std::memory_order_relaxed);
    const std::lock_guard<std::mutex> lock(c->result_mu);
    return ui_view{c->spec.name, c->number, c->result};
}

camera_figures camera_set::figures_of(const camera& c) const {
    camera_figures f;
    f.name = c.spec.name;
    f.input = mask_passwords(c.spec.url);
    f.weight = c.spec.weight;
    f.frames = c.frames;
    f.reconnects = c.reconnects;
    f.stalls = c.stalls;
    f.sessions = c.sessions;
    f.fps = c.fps;
    const auto now = clock_type::now();
    f.active_s = seconds(c.active_now(now));
    f.detector_drops = c.detector_drops;
    f.ui_drops = c.ui_drops;
    if (c.s) {
        const auto st = c.s->source.camera.stats();
        f.status = st.status == stream_status::online         ? camera_status::online
                   : st.status == stream_status::reconnecting ? camera_status::reconnecting
                                                              : camera_status::offline;
        f.state = std::string(framepipe::to_string(st.live.state));
        f.last_error = st.live.last_error;
        f.offline_since = st.offline_since;
        f.offline_for_s = st.offline_for_s;
        f.frames += st.live.frames;
        f.reconnects += st.live.reconnects;
        f.stalls += st.live.stalls;
        const auto detector_sub = c.s->detector.stats();
        add_to(f.detector_drops.subscription, detector_sub);
        f.detector_in_flight += detector_sub.size;
        if (c.s->ui) {
            const auto ui_sub = c.s->ui->stats();
            add_to(f.ui_drops.subscription, ui_sub);
            f.ui_in_flight += ui_sub.size;
        }
    } else {
        f.status = c.parked;
        f.state = c.parked == camera_status::paused ? "paused" : "stopped";
        f.offline_since = c.parked_since;
        f.offline_for_s = seconds(now - c.parked_at);
    }
    f.detector_in_flight += c.in_detector;
    f.detections = c.detections.load(std::memory_order_relaxed);
    f.boxes = c.boxes.load(std::memory_order_relaxed);
    f.ui_frames = c.ui_frames.load(std::memory_order_relaxed);
    f.age_count = c.age.count();
    if (f.age_count > 0) {
        f.age_p50_ms = std::chrono::duration<double, std::milli>(c.age.quantile(0.5)).count();
        f.age_p99_ms = std::chrono::duration<double, std::milli>(c.age.quantile(0.99)).count();
        f.age_sum_s = seconds(c.age.sum());
    }
    return f;
}

std::vector<camera_figures> camera_set::figures() const {
    // The selectors' counters first, outside map_mu_ (each takes its own lock).
    const auto batch_stats = batches_.stats();
    const auto ui_stats = ui_ != nullptr ? ui_->stats() : std::vector<framepipe::input_stats>{};
    std::map<std::uint64_t, const framepipe::batch_source_stats*> det;
    std::map<std::uint64_t, std::uint64_t> retired_pending; // removed sources, frames still pending
    for (const auto& b : batch_stats.sources) {
        if (!b.removed) {
            det[b.input.id.value] = &b;
        } else {
            retired_pending[b.input.id.value] = b.pending;
        }
    }
    std::map<std::uint64_t, const framepipe::input_stats*> ui;
    for (const auto& u : ui_stats) {
        ui[u.id.value] = &u;
    }
    std::vector<camera_figures> out;
    std::uint64_t all = 0;
    {
        const std::lock_guard<std::mutex> lock(map_mu_);
        for (const auto& c : cameras_) {
            auto f = figures_of(*c);
            if (c->s) {
                if (const auto it = det.find(c->s->detector_id.value); it != det.end()) {
                    f.detector_drops.superseded += it->second->input.dropped;
                    f.detector_drops.expired += it->second->input.expired + it->second->expired;
                    f.detector_in_flight += it->second->input.held + it->second->pending;
                }
                if (const auto it = ui.find(c->s->ui_id.value); c->s->ui && it != ui.end()) {
                    f.ui_drops.superseded += it->second->dropped;
                    f.ui_drops.expired += it->second->expired;
                    f.ui_in_flight += it->second->held;
                }
            }
            for (const auto& [id, n] : retired_pending) {
                if (const auto r = retired_detector_.find(id); r != retired_detector_.end() && r->second.c == c) {
                    f.detector_in_flight += n;
                }
            }
            all += f.detections;
            out.push_back(std::move(f));
        }
    }
    for (auto& f : out) {
        f.detector_share = all == 0 ? 0.0 : static_cast<double>(f.detections) / static_cast<double>(all);
    }
    return out;
}

std::size_t camera_set::size() const {
    const std::lock_guard<std::mutex> lock(map_mu_);
    return cameras_.size();
}

std::size_t camera_set::active() const {
    const std::lock_guard<std::mutex> lock(map_mu_);
    return static_cast<std::size_t>(std::count_if(cameras_.begin(), cameras_.end(), [](const auto& c) {
        return c->s && !c->s->gave_up();
    }));
}

std::optional<double> jain_index(const std::vector<double>& x) {
    if (x.empty()) {
        return std::nullopt;
    }
    double sum = 0;
    double squares = 0;
    for (const double v : x) {
        sum += v;
        squares += v * v;
    }
    if (squares == 0) {
        return 1.0;
    }
    return sum * sum / (static_cast<double>(x.size()) * squares);
}

} // namespace framepipe_examples::multicam
