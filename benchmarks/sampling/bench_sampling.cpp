// framepipe-bench-sampling - every sampling strategy of framepipe-detect against a reference: the
// detector (OpenCV's HOG people detector, framepipe-detect's default) run on every frame, offline.
//
//     framepipe-bench-sampling --out DIR vtest.avi Megamind.avi tree.avi
//     (benchmarks/sampling/run.sh does this, then draws the plot and updates docs/sampling.md)
//
//   clip --gst_capture (all frames, with key flags)--> per frame:
//        reference: HOG on the frame (boxes, thread CPU time)
//        motion detector at each threshold (moving?, boxes, CPU)   scene distance (CPU)
//        cascade: HOG on the motion regions (boxes, CPU)
//   then, per strategy and setting: the frames it sends, scored against the reference.
//
// Offline and deterministic: frames are decoded one by one and every figure but the CPU times
// depends only on the pixels. A strategy that sends the whole frame gets exactly the reference's
// boxes on the frames it sends (HOG is deterministic), so those are not computed twice; its
// detector CPU is the sum of the reference's per-frame CPU over the frames it sends. The cascade
// runs its own detections on regions and is timed on its own.
//
// Measures (per clip and pooled over the clips), with t a frame's timestamp (its PTS):
// - sent: the share of frames that reach the detector; saving = 1 / sent.
// - event recall: of the reference frames with detections, the share for which the sampled run
//   has a detection within 1 s (|t' - t| <= 1 s, on a frame it sent) on the same object: one of
//   its boxes matches one of the reference frame's with IoU >= 0.3 (boxes matched one to one,
//   greedily by IoU).
// - box recall @0.5: the sampled run's boxes are held from each frame it sent until the next
//   one it sent, and on every frame compared with the reference's: matched one to one at IoU >=
//   0.5, over all reference boxes.
// - delay: the reference's boxes are linked into objects (IoU >= 0.3 with the object's box on
//   one of the previous 0.5 s of frames; an object is one that lasts >= 0.5 s, which leaves out
//   HOG's one-frame false alarms). An object's delay runs from its first reference frame to the
//   first frame the sampled run sent, from then until 1 s after its last, on which it has a box
//   with IoU >= 0.3 with the object's (nearest in time) box. Objects never found count as
//   missed; the delay quantiles are over the found ones.
// - detector CPU s, sampler CPU s (the motion or scene stage's own work), and for keyframes the
//   decode CPU s (the process's, GStreamer's threads included) with and without skipping delta
//   units before the decoder.
#include "sampling.hpp"

#include "common/gst_capture.hpp"
#include "common/motion_detector.hpp"
#include "common/program.hpp"
#include "common/scene_change.hpp"

#include <framepipe/sampling.hpp>

#include <nlohmann/json.hpp>
#include <opencv2/core/utility.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <vector>

namespace {

namespace fe = framepipe_examples;
namespace det = framepipe_examples::detection;
using boxes = std::vector<cv::Rect2f>;

double thread_cpu_s() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double process_cpu_s() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

const int motion_thresholds[] = {15, 30, 50};
const double scene_distances[] = {0.1, 0.3};
const int cascade_threshold = 30;

struct motion_record {
    bool moving = false;
    double cpu = 0;
};

struct frame_record {
    double t = 0; // seconds from the clip's start (its PTS: tree.avi's frames are not evenly spaced)
    bool key = false;
    boxes ref;
    double ref_cpu = 0;
    std::map<int, motion_record> motion;
    double scene_distance = 0;
    double scene_cpu = 0;
    bool cascade_ran = false;
    boxes cascade;
    double cascade_cpu = 0;
    double cascade_pixels = 0; // share of the frame's pixels the cascade's regions cover
};

struct clip {
    std::string name;
    double fps = 0;
    std::vector<frame_record> frames;
    double decode_all_cpu = 0;
    double decode_keys_cpu = 0;
};

boxes to_rects(const std::vector<det::labelled_detection>& d) {
    boxes out;
    for (const auto& b : d) {
        out.push_back(b.box);
    }
    return out;
}

// Decodes `path` through gst_capture (all frames, or only key frames) and calls fn on each.
void read_clip(const std::string& path, bool key_frames_only,
               const std::function<void(const fe::gst_frame&)>& fn) {
    fe::gst_capture cap({.uri = path, .key_frames_only = key_frames_only,
                         .memory = fe::frame_memory::copy});
    if (const auto err = cap.open({}, std::chrono::seconds(60)); !err.empty()) {
        throw std::runtime_error(path + ": " + err);
    }
    fe::gst_frame f;
    std::string err;
    for (;;) {
        const auto st = cap.read({}, std::chrono::seconds(60), f, err);
        if (st == fe::gst_capture::status::end) {
            return;
        }
        if (st != fe::gst_capture::status::frame) {
            throw std::runtime_error(path + ": " + (err.empty() ? "timeout" : err));
        }
        fn(f);
    }
}

clip measure(const std::string& path) {
    clip c;
    c.name = std::filesystem::path(path).stem().string();
    auto hog = det::make_detector({});
    std::map<int, fe::motion_detector> motion;
    for (const int t : motion_thresholds) {
        motion.emplace(t, fe::motion_detector({.threshold = t, .mask = {}}));
    }
    fe::scene_change_detector scenes({.threshold = 0.3});
    std::fprintf(stderr, "%s: measuring", c.name.c_str());
    read_clip(path, false, [&](const fe::gst_frame& f) {
        frame_record r;
        if (!f.pts) {
            throw std::runtime_error(path + ": a frame without a timestamp");
        }
        r.t = std::chrono::duration<double>(*f.pts).count();
        r.key = f.key_frame;
        double t0 = thread_cpu_s();
        r.ref = to_rects(hog->detect(f.image));
        r.ref_cpu = thread_cpu_s() - t0;
        fe::motion_result cascade_motion;
        for (auto& [threshold, m] : motion) {
            t0 = thread_cpu_s();
            auto res = m.detect(f.image);
            r.motion[threshold] = {res.moving(), thread_cpu_s() - t0};
            if (threshold == cascade_threshold) {
                cascade_motion = std::move(res);
            }
        }
        t0 = thread_cpu_s();
        r.scene_distance = scenes.update(f.image).distance;
        r.scene_cpu = thread_cpu_s() - t0;
        if (cascade_motion.moving()) {
            t0 = thread_cpu_s();
            const auto regions = det::cascade_regions(cascade_motion.boxes, f.image.size());
            r.cascade = to_rects(det::detect_in_regions(*hog, f.image, regions));
            r.cascade_cpu = thread_cpu_s() - t0;
            r.cascade_ran = true;
            double area = 0;
            for (const auto& g : regions) {
                area += g.area();
            }
            r.cascade_pixels = area / f.image.size().area();
        }
        c.frames.push_back(std::move(r));
        if (c.frames.size() % 50 == 0) {
            std::fprintf(stderr, " %zu", c.frames.size());
        }
    });
    std::fprintf(stderr, " frames\n");
    const double span = c.frames.back().t - c.frames.front().t;
    c.fps = span > 0 ? static_cast<double>(c.frames.size() - 1) / span : 0.0;
    for (const bool keys : {false, true}) {
        const double t0 = process_cpu_s();
        read_clip(path, keys, [](const fe::gst_frame&) {});
        (keys ? c.decode_keys_cpu : c.decode_all_cpu) = process_cpu_s() - t0;
    }
    return c;
}

// -- scoring -------------------------------------------------------------------------------------

double iou(const cv::Rect2f& a, const cv::Rect2f& b) {
    const float inter = (a & b).area();
    const float uni = a.area() + b.area() - inter;
    return uni > 0 ? inter / uni : 0.0;
}

// Pairs matched one to one, greedily by IoU, at IoU >= `at_least`.
std::size_t matched(const boxes& a, const boxes& b, double at_least) {
    std::vector<std::tuple<double, std::size_t, std::size_t>> pairs;
    for (std::size_t i = 0; i < a.size(); ++i) {
        for (std::size_t j = 0; j < b.size(); ++j) {
            if (const double v = iou(a[i], b[j]); v >= at_least) {
                pairs.emplace_back(v, i, j);
            }
        }
    }
    std::sort(pairs.begin(), pairs.end(), [](const auto& x, const auto& y) {
        return std::get<0>(x) > std::get<0>(y);
    });
    std::vector<bool> used_a(a.size()), used_b(b.size());
    std::size_t n = 0;
    for (const auto& [v, i, j] : pairs) {
        if (!used_a[i] && !used_b[j]) {
            used_a[i] = used_b[j] = true;
            ++n;
        }
    }
    return n;
}

struct object {
    std::map<std::size_t, cv::Rect2f> boxes; // frame -> box
    [[nodiscard]] std::size_t first() const { return boxes.begin()->first; }
    [[nodiscard]] std::size_t last() const { return boxes.rbegin()->first; }
    [[nodiscard]] cv::Rect2f nearest(std::size_t f) const {
        auto it = boxes.lower_bound(f);
        if (it == boxes.end()) {
            return std::prev(it)->second;
        }
        if (it == boxes.begin() || it->first == f) {
            return it->second;
        }
        const auto before = std::prev(it);
        return f - before->first <= it->first - f ? before->second : it->second;
    }
};

std::vector<object> objects_of(const clip& c) {
    std::vector<object> all;
    std::vector<std::size_t> active;
    for (std::size_t f = 0; f < c.frames.size(); ++f) {
        std::erase_if(active, [&](std::size_t o) { return c.frames[all[o].last()].t + 0.5 < c.frames[f].t; });
        std::vector<std::tuple<double, std::size_t, std::size_t>> pairs;
        const auto& ref = c.frames[f].ref;
        for (std::size_t i = 0; i < ref.size(); ++i) {
            for (const auto o : active) {
                if (const double v = iou(ref[i], all[o].boxes.rbegin()->second); v >= 0.3) {
                    pairs.emplace_back(v, i, o);
                }
            }
        }
        std::sort(pairs.begin(), pairs.end(),
                  [](const auto& x, const auto& y) { return std::get<0>(x) > std::get<0>(y); });
        std::vector<bool> used(ref.size());
        std::vector<std::size_t> taken;
        for (const auto& [v, i, o] : pairs) {
            if (!used[i] && std::find(taken.begin(), taken.end(), o) == taken.end()) {
                used[i] = true;
                taken.push_back(o);
                all[o].boxes[f] = ref[i];
            }
        }
        for (std::size_t i = 0; i < ref.size(); ++i) {
            if (!used[i]) {
                all.push_back({});
                all.back().boxes[f] = ref[i];
                active.push_back(all.size() - 1);
            }
        }
    }
    std::erase_if(all, [&](const object& o) {
        return c.frames[o.last()].t - c.frames[o.first()].t < 0.5;
    });
    return all;
}

// One strategy's run on one clip: the frames it sent and the boxes it had on them.
struct run {
    std::vector<bool> sent;
    std::vector<const boxes*> found; // per frame, null when not sent
    double detector_cpu = 0;
    double sampler_cpu = 0;
    double pixels = 0; // frames' worth of pixels sent to the detector
};

struct score {
    double frames = 0, sent = 0, pixels = 0;
    double event_hits = 0, event_frames = 0;
    double box_hits = 0, box_total = 0;
    double objects = 0, found = 0;
    std::vector<double> delays;
    double detector_cpu = 0, sampler_cpu = 0;

    void add(const score& o) {
        frames += o.frames;
        sent += o.sent;
        pixels += o.pixels;
        event_hits += o.event_hits;
        event_frames += o.event_frames;
        box_hits += o.box_hits;
        box_total += o.box_total;
        objects += o.objects;
        found += o.found;
        delays.insert(delays.end(), o.delays.begin(), o.delays.end());
        detector_cpu += o.detector_cpu;
        sampler_cpu += o.sampler_cpu;
    }
};

score score_run(const clip& c, const std::vector<object>& objects, const run& r) {
    score s;
    const auto n = c.frames.size();
    s.frames = static_cast<double>(n);
    s.detector_cpu = r.detector_cpu;
    s.sampler_cpu = r.sampler_cpu;
    s.pixels = r.pixels;
    std::vector<std::size_t> sent;
    std::vector<double> sent_t;
    for (std::size_t f = 0; f < n; ++f) {
        if (r.sent[f]) {
            sent.push_back(f);
            sent_t.push_back(c.frames[f].t);
        }
    }
    // The sent frames at or after time t.
    const auto from = [&](double t) {
        return sent.begin() + (std::lower_bound(sent_t.begin(), sent_t.end(), t - 1e-9) - sent_t.begin());
    };
    s.sent = static_cast<double>(sent.size());
    const boxes none;
    const boxes* held = &none;
    for (std::size_t f = 0; f < n; ++f) {
        if (r.sent[f]) {
            held = r.found[f];
        }
        const auto& ref = c.frames[f].ref;
        s.box_total += static_cast<double>(ref.size());
        s.box_hits += static_cast<double>(matched(ref, *held, 0.5));
        if (ref.empty()) {
            continue;
        }
        s.event_frames += 1;
        const double t = c.frames[f].t;
        for (auto it = from(t - 1.0); it != sent.end() && c.frames[*it].t <= t + 1.0 + 1e-9; ++it) {
            if (matched(ref, *r.found[*it], 0.3) > 0) {
                s.event_hits += 1;
                break;
            }
        }
    }
    for (const auto& o : objects) {
        s.objects += 1;
        const double first = c.frames[o.first()].t;
        const double last = c.frames[o.last()].t;
        for (auto it = from(first); it != sent.end() && c.frames[*it].t <= last + 1.0 + 1e-9; ++it) {
            const auto& b = *r.found[*it];
            const auto target = o.nearest(*it);
            if (std::any_of(b.begin(), b.end(), [&](const cv::Rect2f& x) { return iou(x, target) >= 0.3; })) {
                s.found += 1;
                s.delays.push_back(c.frames[*it].t - first);
                break;
            }
        }
    }
    return s;
}

double quantile(std::vector<double> v, double q) {
    if (v.empty()) {
        return std::nan("");
    }
    std::sort(v.begin(), v.end());
    const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
    return v[std::min(i, v.size() - 1)];
}

// -- the strategies ------------------------------------------------------------------------------

struct strategy {
    std::string name;    // as --sampling takes it
    std::string label;   // for the plot
    std::string claim;   // the seed's claimed saving
    std::function<run(const clip&)> make;
};

run full_frame_run(const clip& c, const std::function<bool(std::size_t)>& send,
                   const std::function<double(std::size_t)>& sampler_cpu = {}) {
    run r;
    r.sent.resize(c.frames.size());
    r.found.resize(c.frames.size());
    for (std::size_t f = 0; f < c.frames.size(); ++f) {
        if (sampler_cpu) {
            r.sampler_cpu += sampler_cpu(f);
        }
        if (send(f)) {
            r.sent[f] = true;
            r.found[f] = &c.frames[f].ref;
            r.detector_cpu += c.frames[f].ref_cpu;
            r.pixels += 1;
        }
    }
    return r;
}

// framepipe::adaptive_rate in virtual time (the frames' timestamps): once a virtual second it is told
// the activity, the share of the frames it sent in that second on which the detector found
// something. Offline there is no consumer to saturate, so the busy signal (which
// framepipe-detect also feeds) is left out: the rate follows the activity alone.
run adaptive_run(const clip& c, double max_hz) {
    framepipe::adaptive_rate rate({.min_hz = 1, .max_hz = max_hz, .step_hz = 1});
    const auto start = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    auto next_update = 1.0;
    int sent_in_period = 0;
    int with_boxes_in_period = 0;
    std::vector<bool> decided(c.frames.size());
    for (std::size_t f = 0; f < c.frames.size(); ++f) {
        const double t = c.frames[f].t;
        const auto now = start + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::duration<double>(t));
        while (t >= next_update) {
            const double activity = sent_in_period > 0
                                        ? static_cast<double>(with_boxes_in_period) / sent_in_period
                                        : 0.0;
            (void)rate.update({.activity = activity, .busy = {}, .occupancy = {}},
                              start + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::duration<double>(next_update)));
            sent_in_period = with_boxes_in_period = 0;
            next_update += 1.0;
        }
        if (rate.admit(f, now)) {
            decided[f] = true;
            ++sent_in_period;
            with_boxes_in_period += c.frames[f].ref.empty() ? 0 : 1;
        }
    }
    return full_frame_run(c, [&](std::size_t f) { return static_cast<bool>(decided[f]); });
}

std::vector<strategy> strategies() {
    std::vector<strategy> s;
    s.push_back({"none", "none", "1x", [](const clip& c) {
                     return full_frame_run(c, [](std::size_t) { return true; });
                 }});
    for (const std::uint64_t n : {std::uint64_t{2}, std::uint64_t{5}, std::uint64_t{10}, std::uint64_t{30}}) {
        s.push_back({"every-n:" + std::to_string(n), "every " + std::to_string(n),
                     std::to_string(n) + "x", [n](const clip& c) {
                         framepipe::every_n every(n);
                         return full_frame_run(c, [&](std::size_t f) { return every.admit(f, {}); });
                     }});
    }
    s.push_back({"keyframes", "keyframes", "30x", [](const clip& c) {
                     return full_frame_run(c, [&](std::size_t f) { return c.frames[f].key; });
                 }});
    for (const int t : motion_thresholds) {
        s.push_back({"motion:" + std::to_string(t), "motion " + std::to_string(t), "50-100x",
                     [t](const clip& c) {
                         return full_frame_run(
                             c, [&](std::size_t f) { return c.frames[f].motion.at(t).moving; },
                             [&](std::size_t f) { return c.frames[f].motion.at(t).cpu; });
                     }});
    }
    for (const double d : scene_distances) {
        std::ostringstream name;
        name << "scene:" << d;
        s.push_back({name.str(), "scene " + name.str().substr(6), "variable", [d](const clip& c) {
                         return full_frame_run(
                             c,
                             [&](std::size_t f) { return f == 0 || c.frames[f].scene_distance > d; },
                             [&](std::size_t f) { return c.frames[f].scene_cpu; });
                     }});
    }
    s.push_back({"adaptive", "adaptive", "10-50x", [](const clip& c) { return adaptive_run(c, std::ceil(c.fps)); }});
    s.push_back({"adaptive (max 2 Hz)", "adaptive 2Hz", "10-50x",
                 [](const clip& c) { return adaptive_run(c, 2); }});
    s.push_back({"cascade:" + std::to_string(cascade_threshold), "cascade", "20x (95% dropped)",
                 [](const clip& c) {
                     run r;
                     r.sent.resize(c.frames.size());
                     r.found.resize(c.frames.size());
                     for (std::size_t f = 0; f < c.frames.size(); ++f) {
                         const auto& fr = c.frames[f];
                         r.sampler_cpu += fr.motion.at(cascade_threshold).cpu;
                         if (fr.cascade_ran) {
                             r.sent[f] = true;
                             r.found[f] = &fr.cascade;
                             r.detector_cpu += fr.cascade_cpu;
                             r.pixels += fr.cascade_pixels;
                         }
                     }
                     return r;
                 }});
    return s;
}

std::string fixed(double v, int digits) {
    if (std::isnan(v)) {
        return "-";
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

nlohmann::json to_json(const score& s) {
    return {{"frames", s.frames},
            {"sent", s.sent},
            {"sent_share", s.sent / s.frames},
            {"saving", s.sent > 0 ? s.frames / s.sent : 0.0},
            {"pixel_share", s.pixels / s.frames},
            {"event_recall", s.event_frames > 0 ? s.event_hits / s.event_frames : 0.0},
            {"box_recall_50", s.box_total > 0 ? s.box_hits / s.box_total : 0.0},
            {"objects", s.objects},
            {"objects_found", s.found},
            {"delay_p50_s", s.delays.empty() ? nlohmann::json() : nlohmann::json(quantile(s.delays, 0.5))},
            {"delay_p99_s", s.delays.empty() ? nlohmann::json() : nlohmann::json(quantile(s.delays, 0.99))},
            {"detector_cpu_s", s.detector_cpu},
            {"sampler_cpu_s", s.sampler_cpu}};
}

// `all_cpu`: the reference's detector CPU on the same frames (for the CPU saving).
std::string table_row(const std::string& name, const std::string& claim, const score& s,
                      double all_cpu) {
    const double saving = s.sent > 0 ? s.frames / s.sent : 0.0;
    std::ostringstream os;
    os << "| `" << name << "` | " << claim << " | " << fixed(100.0 * s.sent / s.frames, 1) << "% | **"
       << fixed(saving, 1) << "x** | " << fixed(s.event_frames > 0 ? s.event_hits / s.event_frames : std::nan(""), 3)
       << " | " << fixed(s.box_total > 0 ? s.box_hits / s.box_total : std::nan(""), 3) << " | "
       << fixed(s.found, 0) << "/" << fixed(s.objects, 0) << " | " << fixed(quantile(s.delays, 0.5), 2)
       << " / " << fixed(quantile(s.delays, 0.99), 2) << " | " << fixed(s.detector_cpu, 1) << " ("
       << fixed(s.detector_cpu > 0 ? all_cpu / s.detector_cpu : std::nan(""), 1) << "x less) | "
       << fixed(s.sampler_cpu, 2) << " |\n";
    return os.str();
}

const char* table_head =
    "| `--sampling` | seed's claim | frames sent | saving | event recall | box recall @0.5 | "
    "objects found | delay p50 / p99 s | detector CPU s (saving) | sampler CPU s |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n";

} // namespace

int main(int argc, char** argv) {
    std::string out_dir = ".";
    std::vector<std::string> videos;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--out" && i + 1 < argc) {
            out_dir = argv[++i];
        } else {
            videos.push_back(a);
        }
    }
    if (videos.empty()) {
        std::fprintf(stderr, "usage: framepipe-bench-sampling [--out DIR] VIDEO...\n");
        return 2;
    }
    cv::setNumThreads(1); // one thread: per-frame CPU times that add up, and a quiet neighbour
    std::filesystem::create_directories(out_dir);
    const auto all = strategies();
    std::vector<score> pooled(all.size());
    nlohmann::json j = {{"clips", nlohmann::json::array()}, {"pooled", nlohmann::json::array()}};
    std::ostringstream per_clip;
    for (const auto& path : videos) {
        const auto c = measure(path);
        const auto objects = objects_of(c);
        std::size_t keys = 0;
        std::size_t with_boxes = 0;
        for (const auto& f : c.frames) {
            keys += f.key ? 1U : 0U;
            with_boxes += f.ref.empty() ? 0U : 1U;
        }
        nlohmann::json jc = {{"clip", c.name},
                             {"frames", c.frames.size()},
                             {"fps", c.fps},
                             {"key_frames", keys},
                             {"frames_with_detections", with_boxes},
                             {"objects", objects.size()},
                             {"decode_cpu_s_all", c.decode_all_cpu},
                             {"decode_cpu_s_key_frames_only", c.decode_keys_cpu},
                             {"strategies", nlohmann::json::array()}};
        per_clip << "\n**" << c.name << "** (" << c.frames.size() << " frames at "
                 << fixed(c.fps, 2) << " fps, " << keys << " key frames, " << with_boxes
                 << " frames with reference detections, " << objects.size()
                 << " objects; decode CPU " << fixed(c.decode_all_cpu, 2) << " s for every frame, "
                 << fixed(c.decode_keys_cpu, 2) << " s for the key frames only)\n\n"
                 << table_head;
        double reference_cpu = 0;
        for (const auto& f : c.frames) {
            reference_cpu += f.ref_cpu;
        }
        for (std::size_t i = 0; i < all.size(); ++i) {
            const auto s = score_run(c, objects, all[i].make(c));
            pooled[i].add(s);
            auto js = to_json(s);
            js["strategy"] = all[i].name;
            jc["strategies"].push_back(js);
            per_clip << table_row(all[i].name, all[i].claim, s, reference_cpu);
        }
        j["clips"].push_back(jc);
    }
    std::ofstream md(out_dir + "/table.md");
    md << table_head;
    // The plot's points: label, saving, event recall, box recall, and where the label goes (a
    // y shift, alternating for neighbours; the points at about 1x share one label).
    struct point {
        std::string label;
        double saving, event, box;
    };
    std::vector<point> points;
    for (std::size_t i = 0; i < all.size(); ++i) {
        auto js = to_json(pooled[i]);
        js["strategy"] = all[i].name;
        js["seed_claim"] = all[i].claim;
        j["pooled"].push_back(js);
        md << table_row(all[i].name, all[i].claim, pooled[i], pooled[0].detector_cpu);
        points.push_back({all[i].label, js["saving"].get<double>(), js["event_recall"].get<double>(),
                          js["box_recall_50"].get<double>()});
        if (all[i].name.rfind("cascade", 0) == 0) {
            // The cascade sends nearly every frame but only its motion regions: its saving is in
            // the detector's CPU, plotted as a point of its own.
            points.push_back({"cascade (detector CPU)", pooled[0].detector_cpu / pooled[i].detector_cpu,
                              js["event_recall"].get<double>(), js["box_recall_50"].get<double>()});
        }
    }
    std::sort(points.begin(), points.end(),
              [](const point& x, const point& y) { return x.saving < y.saving; });
    std::ofstream dat(out_dir + "/sampling.dat");
    dat << "# label saving event_recall box_recall label_shift\n";
    std::string near_one;
    double shift = 0.03;
    const point* previous = nullptr;
    for (const auto& p : points) {
        std::string label = p.label;
        if (p.saving < 1.25) {
            near_one += (near_one.empty() ? "" : ", ") + p.label;
            label.clear();
        } else {
            const bool crowded = previous != nullptr &&
                                 std::log10(p.saving / previous->saving) < 0.15 &&
                                 std::abs(p.event - previous->event) < 0.05;
            shift = crowded && shift > 0 ? -0.045 : 0.03;
            previous = &p;
        }
        dat << '"' << label << "\" " << fixed(p.saving, 3) << ' ' << fixed(p.event, 4) << ' '
            << fixed(p.box, 4) << ' ' << fixed(shift, 3) << '\n';
    }
    std::ofstream(out_dir + "/sampling_labels.dat")
        << "1.0 0.86 \"about 1x: " << near_one << "\"\n";
    std::ofstream(out_dir + "/per_clip.md") << per_clip.str();
    std::ofstream(out_dir + "/sampling.json") << fe::json_text(j, 2) << '\n';
    std::printf("%s", md.good() ? "" : "cannot write the table\n");
    return 0;
}
