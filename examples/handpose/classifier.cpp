#include "classifier.hpp"

#include "estimator.hpp"

#include "common/program.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>

namespace handpose {
namespace {
constexpr std::size_t dims = joint_count * 2;
}

std::vector<float> normalise_trajectory(std::span<const hand_points> frames) {
    std::vector<float> out(frames.size() * dims);
    if (frames.empty()) {
        return out;
    }
    double mx = 0, my = 0, size = 0;
    for (const auto& f : frames) {
        double fx = 0, fy = 0;
        for (std::size_t j = 0; j < joint_count; ++j) {
            fx += f[3 * j];
            fy += f[3 * j + 1];
        }
        fx /= joint_count;
        fy /= joint_count;
        double ss = 0;
        for (std::size_t j = 0; j < joint_count; ++j) {
            const double dx = f[3 * j] - fx;
            const double dy = f[3 * j + 1] - fy;
            ss += dx * dx + dy * dy;
        }
        size += std::sqrt(ss / joint_count);
        mx += fx;
        my += fy;
    }
    const auto n = static_cast<double>(frames.size());
    mx /= n;
    my /= n;
    size /= n;
    if (!(size > 1e-9)) {
        size = 1e-9; // a degenerate hand (all points in one place): keep the numbers finite
    }
    for (std::size_t i = 0; i < frames.size(); ++i) {
        for (std::size_t j = 0; j < joint_count; ++j) {
            out[i * dims + 2 * j] = static_cast<float>((frames[i][3 * j] - mx) / size);
            out[i * dims + 2 * j + 1] = static_cast<float>((frames[i][3 * j + 1] - my) / size);
        }
    }
    return out;
}

std::vector<hand_points> synthetic_example(gesture g, std::uint64_t seed, std::size_t window,
                                           double fps, const synthetic_options& options,
                                           std::vector<frame_truth>* pixels,
                                           std::vector<double>* times) {
    synthetic_options o = options;
    const double span = static_cast<double>(window - 1) / fps;
    o.min_segment_s = std::max(o.min_segment_s, span + 0.5);
    o.max_segment_s = std::max(o.max_segment_s, o.min_segment_s + 0.5);
    const segment s = hand_generator::random_segment(g, seed, o);
    std::mt19937_64 rng(seed ^ 0x5DEECE66DULL);
    const double offset = std::uniform_real_distribution<double>(0, s.duration - span - 1e-6)(rng);
    std::vector<hand_points> out;
    out.reserve(window);
    for (std::size_t i = 0; i < window; ++i) {
        const double t = offset + static_cast<double>(i) / fps;
        const frame_truth ft = hand_generator::pose_of(s, t, seed * 131 + i);
        hand_points p{};
        for (std::size_t j = 0; j < joint_count; ++j) {
            p[3 * j] = ft.joints[3 * j] / static_cast<float>(o.width);
            p[3 * j + 1] = ft.joints[3 * j + 1] / static_cast<float>(o.height);
            p[3 * j + 2] = ft.joints[3 * j + 2];
        }
        out.push_back(p);
        if (pixels != nullptr) {
            pixels->push_back(ft);
        }
        if (times != nullptr) {
            times->push_back(t);
        }
    }
    return out;
}

std::vector<gesture_template> generate_templates(std::size_t per_gesture, std::size_t window,
                                                 double fps, std::uint64_t seed_base,
                                                 const synthetic_options& options) {
    std::vector<gesture_template> out;
    for (std::size_t g = 0; g < gesture_count; ++g) {
        for (std::size_t k = 0; k < per_gesture; ++k) {
            const std::uint64_t seed = seed_base + g * 100003 + k;
            out.push_back({static_cast<gesture>(g),
                           synthetic_example(static_cast<gesture>(g), seed, window, fps, options)});
        }
    }
    return out;
}

dtw_classifier::dtw_classifier(std::vector<gesture_template> templates, std::size_t band)
    : templates_(std::move(templates)), band_(band) {
    if (templates_.empty()) {
        throw std::invalid_argument("templates: need at least one");
    }
    if (band_ == 0) {
        throw std::invalid_argument("band: must be at least 1");
    }
    for (const auto& t : templates_) {
        if (t.frames.size() < 2) {
            throw std::invalid_argument("templates: each needs at least 2 frames");
        }
        prepared_.push_back({t.label, normalise_trajectory(t.frames)});
    }
}

double dtw_classifier::distance(std::span<const float> a, std::span<const float> b) const {
    const std::size_t n = a.size() / dims;
    const std::size_t m = b.size() / dims;
    constexpr double inf = std::numeric_limits<double>::infinity();
    // Two rows of the cost matrix; the band follows the diagonal from (0, 0) to (n-1, m-1).
    std::vector<double> prev(m + 1, inf), cur(m + 1, inf);
    prev[0] = 0;
    for (std::size_t i = 1; i <= n; ++i) {
        std::fill(cur.begin(), cur.end(), inf);
        const double centre = static_cast<double>(i) * static_cast<double>(m) / static_cast<double>(n);
        const auto lo = static_cast<std::size_t>(std::max(1.0, std::floor(centre - static_cast<double>(band_))));
        const auto hi = static_cast<std::size_t>(std::min(static_cast<double>(m), std::ceil(centre + static_cast<double>(band_))));
        const float* fa = a.data() + (i - 1) * dims;
        for (std::size_t j = lo; j <= hi; ++j) {
            const float* fb = b.data() + (j - 1) * dims;
            float ss = 0;
            for (std::size_t k = 0; k < dims; ++k) {
                const float d = fa[k] - fb[k];
                ss += d * d;
            }
            const double best = std::min({prev[j], cur[j - 1], prev[j - 1]});
            cur[j] = std::sqrt(static_cast<double>(ss)) + best;
        }
        std::swap(prev, cur);
    }
    return prev[m] / static_cast<double>(n + m);
}

classification dtw_classifier::classify(std::span<const hand_points> frames) const {
    if (frames.size() < 2) {
        throw std::invalid_argument("frames: need at least 2");
    }
    const auto f = normalise_trajectory(frames);
    std::array<double, gesture_count> best{};
    best.fill(std::numeric_limits<double>::infinity());
    for (const auto& t : prepared_) {
        auto& b = best[static_cast<std::size_t>(t.label)];
        b = std::min(b, distance(f, t.features));
    }
    const auto it = std::min_element(best.begin(), best.end());
    double other = std::numeric_limits<double>::infinity();
    for (std::size_t g = 0; g < gesture_count; ++g) {
        if (&best[g] != &*it) {
            other = std::min(other, best[g]);
        }
    }
    classification c;
    c.label = static_cast<gesture>(it - best.begin());
    c.confidence = std::isfinite(other) && other > 0
                       ? static_cast<float>(std::clamp(1.0 - *it / other, 0.0, 1.0))
                       : 1.0F;
    return c;
}

void dtw_classifier::save(const std::string& path) const {
    nlohmann::json j;
    j["format"] = "framepipe-handpose-templates";
    j["version"] = 1;
    auto& list = j["templates"];
    list = nlohmann::json::array();
    for (const auto& t : templates_) {
        nlohmann::json frames = nlohmann::json::array();
        for (const auto& f : t.frames) {
            frames.push_back(f);
        }
        list.push_back({{"label", std::string(name_of(t.label))}, {"frames", std::move(frames)}});
    }
    std::ofstream out(path);
    if (!out) {
        throw input_error("--write-templates " + path + ": cannot open for writing");
    }
    out << framepipe_examples::json_text(j) << '\n';
    if (!out.flush()) {
        throw input_error("--write-templates " + path + ": write failed");
    }
}

dtw_classifier dtw_classifier::load(const std::string& path, std::size_t band) {
    std::ifstream in(path);
    if (!in) {
        throw input_error("--templates " + path + ": cannot open");
    }
    const auto fail = [&](const std::string& why) {
        return input_error("--templates " + path + ": " + why);
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw fail(std::string("not JSON: ") + first_line(e.what()));
    }
    if (!j.is_object() || !j.contains("format") || j["format"] != "framepipe-handpose-templates" ||
        !j.contains("version") || j["version"] != 1) {
        throw fail("not a framepipe-handpose-templates file of version 1");
    }
    if (!j.contains("templates") || !j["templates"].is_array() || j["templates"].empty()) {
        throw fail("\"templates\" must be a non-empty array");
    }
    std::vector<gesture_template> templates;
    std::size_t index = 0;
    for (const auto& t : j["templates"]) {
        const std::string where = "template " + std::to_string(index++);
        if (!t.is_object() || !t.contains("label") || !t["label"].is_string()) {
            throw fail(where + ": needs a \"label\" string");
        }
        const auto label = gesture_from_name(t["label"].get<std::string>());
        if (!label) {
            throw fail(where + ": unknown gesture \"" + t["label"].get<std::string>() + "\"");
        }
        if (!t.contains("frames") || !t["frames"].is_array() || t["frames"].size() < 2) {
            throw fail(where + ": \"frames\" must be an array of at least 2 frames");
        }
        gesture_template gt;
        gt.label = *label;
        for (const auto& f : t["frames"]) {
            if (!f.is_array() || f.size() != joint_count * values_per_joint) {
                throw fail(where + ": each frame must be an array of 63 numbers");
            }
            hand_points p{};
            for (std::size_t k = 0; k < p.size(); ++k) {
                if (!f[k].is_number() || !std::isfinite(f[k].get<double>())) {
                    throw fail(where + ": each frame must be an array of 63 finite numbers");
                }
                p[k] = f[k].get<float>();
            }
            gt.frames.push_back(p);
        }
        templates.push_back(std::move(gt));
    }
    return dtw_classifier(std::move(templates), band);
}

onnx_classifier::onnx_classifier(const std::string& path, std::size_t window)
    : path_(path), window_(window) {
    if (!std::filesystem::is_regular_file(path)) {
        throw input_error("--classifier " + path + ": no such file");
    }
    try {
        net_ = cv::dnn::readNetFromONNX(path);
    } catch (const cv::Exception& e) {
        throw input_error("--classifier " + path + ": cannot load: " + first_line(e.err));
    }
    if (net_.empty()) {
        throw input_error("--classifier " + path + ": cannot load");
    }
    const std::vector<hand_points> zeros(window);
    cv::Mat out;
    try {
        out = run(zeros);
    } catch (const cv::Exception& e) {
        throw input_error("--classifier " + path + ": does not accept a 1x" + std::to_string(window) +
                          "x21x3 input: " + first_line(e.err));
    }
    if (out.total() != gesture_count) {
        throw input_error("--classifier " + path + ": returns " + std::to_string(out.total()) +
                          " values, expected " + std::to_string(gesture_count) +
                          " (one score per gesture)");
    }
}

cv::Mat onnx_classifier::run(std::span<const hand_points> frames) {
    const std::array<int, 4> shape{1, static_cast<int>(frames.size()), static_cast<int>(joint_count),
                                   static_cast<int>(values_per_joint)};
    cv::Mat blob(4, shape.data(), CV_32F);
    auto* dst = blob.ptr<float>();
    for (const auto& f : frames) {
        dst = std::copy(f.begin(), f.end(), dst);
    }
    net_.setInput(blob);
    return net_.forward().clone();
}

classification onnx_classifier::classify(std::span<const hand_points> frames) {
    cv::Mat out;
    try {
        out = run(frames);
    } catch (const cv::Exception& e) {
        throw input_error("--classifier " + path_ + ": " + first_line(e.err));
    }
    cv::Mat f32;
    out.reshape(1, 1).convertTo(f32, CV_32F);
    std::array<double, gesture_count> s{};
    bool distribution = true;
    double sum = 0;
    for (std::size_t i = 0; i < gesture_count; ++i) {
        s[i] = f32.at<float>(0, static_cast<int>(i));
        distribution = distribution && s[i] >= 0 && s[i] <= 1;
        sum += s[i];
    }
    if (!distribution || std::abs(sum - 1) > 1e-3) {
        const double mx = *std::max_element(s.begin(), s.end());
        sum = 0;
        for (auto& v : s) {
            v = std::exp(v - mx);
            sum += v;
        }
        for (auto& v : s) {
            v /= sum;
        }
    }
    const auto it = std::max_element(s.begin(), s.end());
    return {static_cast<gesture>(it - s.begin()), static_cast<float>(*it)};
}

} // namespace handpose
