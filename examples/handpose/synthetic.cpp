#include "synthetic.hpp"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <stdexcept>

namespace handpose {
namespace {

constexpr double pi = std::numbers::pi;
constexpr int noise_levels = 4;
constexpr int noise_per_level = 3;

double smoothstep(double a, double b, double x) {
    const double u = std::clamp((x - a) / (b - a), 0.0, 1.0);
    return u * u * (3 - 2 * u);
}

// The open right hand in hand units (wrist at the origin, fingers towards -y, x to the right as
// seen by the camera). Wrist to middle knuckle is 1.
struct finger_shape {
    double mx, my;              // knuckle (MCP) position
    double splay;               // direction, radians from -y towards +x
    std::array<double, 3> len;  // phalanges
};
constexpr std::array<finger_shape, 4> fingers{{
    {-0.28, -0.92, -0.12, {0.42, 0.26, 0.22}}, // index
    {-0.06, -1.00, -0.02, {0.47, 0.30, 0.24}}, // middle
    {0.15, -0.94, 0.08, {0.43, 0.28, 0.22}},   // ring
    {0.34, -0.83, 0.20, {0.33, 0.22, 0.19}},   // pinky
}};
constexpr std::array<double, 3> bend_max{1.2, 1.6, 1.1}; // radians per finger joint at full curl

// Hand-local joints (x, y, z) for a curl in [0, 1].
std::array<std::array<double, 3>, joint_count> local_hand(double curl) {
    std::array<std::array<double, 3>, joint_count> j{};
    j[0] = {0, 0, 0};
    // Thumb: CMC fixed near the wrist; the chain swings across the palm as the hand closes.
    j[1] = {-0.27, -0.20, 0.02};
    double a = -0.95 + curl * 0.55; // radians from -y
    double z = 0.02;
    const std::array<double, 3> thumb_len{0.33, 0.29, 0.24};
    for (std::size_t k = 0; k < 3; ++k) {
        const double ak = a + curl * 0.35 * static_cast<double>(k);
        z += thumb_len[k] * std::sin(curl * 0.5);
        j[2 + k] = {j[1 + k][0] + thumb_len[k] * std::sin(ak) * std::cos(curl * 0.5),
                    j[1 + k][1] - thumb_len[k] * std::cos(ak) * std::cos(curl * 0.5), z};
    }
    for (std::size_t f = 0; f < fingers.size(); ++f) {
        const auto& s = fingers[f];
        const std::size_t base = 5 + 4 * f;
        j[base] = {s.mx, s.my, 0};
        const double dx = std::sin(s.splay);
        const double dy = -std::cos(s.splay);
        double phi = 0;
        for (std::size_t k = 0; k < 3; ++k) {
            phi += curl * bend_max[k];
            const auto& p = j[base + k];
            j[base + k + 1] = {p[0] + s.len[k] * std::cos(phi) * dx,
                               p[1] + s.len[k] * std::cos(phi) * dy, p[2] + s.len[k] * std::sin(phi)};
        }
    }
    return j;
}

// HSV (OpenCV 8-bit units: h 0-179, s and v 0-255) to a BGR scalar.
cv::Scalar hsv_to_bgr(double h, double s, double v) {
    const double hd = h * 2.0 / 60.0; // sector 0-6
    const double c = v * s / 255.0;
    const double x = c * (1 - std::abs(std::fmod(hd, 2.0) - 1));
    const double m = v - c;
    double r = 0, g = 0, b = 0;
    switch (static_cast<int>(hd) % 6) {
    case 0: r = c, g = x; break;
    case 1: r = x, g = c; break;
    case 2: g = c, b = x; break;
    case 3: g = x, b = c; break;
    case 4: r = x, b = c; break;
    default: r = c, b = x; break;
    }
    return {b + m, g + m, r + m};
}

cv::Point sub_pixel(double x, double y) {
    return {static_cast<int>(std::lround(x * 16)), static_cast<int>(std::lround(y * 16))};
}

// Gaussian noise frames, a few per sigma (2, 4, 6, 8), made once per image size and shared by
// every renderer: drawing millions of normal samples per renderer would dominate start-up.
std::shared_ptr<const std::vector<cv::Mat>> noise_bank(int w, int h) {
    static std::mutex mu;
    static std::map<std::pair<int, int>, std::shared_ptr<const std::vector<cv::Mat>>> banks;
    const std::lock_guard<std::mutex> lock(mu);
    auto& bank = banks[{w, h}];
    if (!bank) {
        auto frames = std::make_shared<std::vector<cv::Mat>>();
        cv::RNG rng(0x5EED);
        for (int level = 0; level < noise_levels; ++level) {
            for (int k = 0; k < noise_per_level; ++k) {
                cv::Mat n(h, w, CV_16SC3);
                rng.fill(n, cv::RNG::NORMAL, cv::Scalar::all(0), cv::Scalar::all(2.0 * (level + 1)));
                frames->push_back(n);
            }
        }
        bank = std::move(frames);
    }
    return bank;
}

} // namespace

double marker_hue(std::size_t joint) noexcept {
    // Interleaved (slot = 8 j mod 21, 8 coprime with 21) so that neighbouring joints of a finger
    // get hues far apart on the wheel: a hue misread by a few units cannot turn one into the next.
    const auto slot = static_cast<double>((joint * 8) % joint_count);
    return (slot + 0.5) * 180.0 / static_cast<double>(joint_count);
}

double depth_to_value(double z) noexcept { return std::clamp(185.0 + 90.0 * z, 130.0, 255.0); }
double value_to_depth(double v) noexcept { return (v - 185.0) / 90.0; }
double marker_radius(double scale) noexcept { return std::max(3.5, 0.065 * scale); }

hand_generator::hand_generator(std::uint64_t seed, synthetic_options options)
    : seed_(seed), options_(options), rng_(seed) {}

segment hand_generator::random_segment(gesture g, std::uint64_t seed,
                                       const synthetic_options& o) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL);
    auto uni = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
    segment s;
    s.label = g;
    s.duration = uni(o.min_segment_s, o.max_segment_s);
    const double unit = std::min(o.width, o.height) / 480.0;
    s.scale = uni(50, 88) * unit;
    s.rotation = uni(-0.45, 0.45);
    s.mirror = uni(0, 1) < 0.5;
    s.speed = uni(0.75, 1.3);
    s.amplitude = uni(0.8, 1.2);
    s.direction = uni(0, 1) < 0.5 ? -1.0 : 1.0;
    s.phase = uni(0, 2 * pi);
    s.base_curl = uni(0, 0.35);
    s.noise_level = static_cast<int>(uni(0, noise_levels - 1e-9));
    // Keep the whole hand (about 2.1 units above the wrist, 0.6 around it) in the frame.
    double half_x = 0;
    double half_y = 0;
    if (g == gesture::swipe_left || g == gesture::swipe_right) {
        half_x = std::min(1.2 * s.scale * s.amplitude * s.speed, 0.5 * o.width - 1.4 * s.scale);
        half_x = std::max(half_x, 0.6 * s.scale);
    } else if (g == gesture::circle) {
        half_x = half_y = 0.55 * s.scale * s.amplitude;
    }
    const double m = 0.9 * s.scale;
    auto pick = [&](double lo, double hi) { return lo < hi ? uni(lo, hi) : 0.5 * (lo + hi); };
    s.cx = pick(m + half_x, o.width - m - half_x);
    s.cy = pick(2.2 * s.scale + half_y, o.height - 0.6 * s.scale - half_y);
    return s;
}

segment hand_generator::draw_segment(double start) {
    // Never the same gesture twice in a row: every change of label is a change of gesture.
    auto g = static_cast<gesture>(rng_() % gesture_count);
    if (!segments_.empty() && g == segments_.back().label) {
        g = static_cast<gesture>((static_cast<std::size_t>(g) + 1 + rng_() % (gesture_count - 1)) %
                                 gesture_count);
    }
    segment s = random_segment(g, rng_(), options_);
    s.start = start;
    return s;
}

const segment& hand_generator::segment_at(double t) {
    if (t < 0) {
        throw std::invalid_argument("t: must be >= 0");
    }
    if (segments_.empty()) {
        segments_.push_back(draw_segment(0));
    }
    while (segments_.back().start + segments_.back().duration <= t) {
        const auto& b = segments_.back();
        segments_.push_back(draw_segment(b.start + b.duration));
    }
    while (segments_.size() > 1 && segments_.front().start + segments_.front().duration < t - 60) {
        segments_.pop_front();
    }
    for (const auto& s : segments_) {
        if (t >= s.start && t < s.start + s.duration) {
            return s;
        }
    }
    throw std::out_of_range("t: more than 60 s before the latest time asked for");
}

frame_truth hand_generator::pose_at(double t) {
    const segment& s = segment_at(t);
    return pose_of(s, t, seed_ ^ static_cast<std::uint64_t>(std::llround(t * 1000.0)));
}

frame_truth hand_generator::pose_of(const segment& s, double t, std::uint64_t jitter_seed) {
    const double tau = std::max(0.0, t - s.start);
    const double u = std::clamp(tau / s.duration, 0.0, 1.0);
    double cx = s.cx;
    double cy = s.cy;
    double rot = s.rotation;
    double curl = s.base_curl;
    switch (s.label) {
    case gesture::idle:
        cx += 0.05 * s.scale * std::sin(0.7 * tau + s.phase);
        cy += 0.04 * s.scale * std::sin(0.9 * tau + 2 * s.phase);
        rot += 0.03 * std::sin(0.5 * tau + s.phase);
        break;
    case gesture::swipe_left:
    case gesture::swipe_right: {
        const double half = std::max(0.6 * s.scale, std::min(1.2 * s.scale * s.amplitude * s.speed,
                                                             s.cx - 0.9 * s.scale));
        // Mostly constant speed, easing in and out at the ends of the segment.
        const double e = (u + 0.5 * smoothstep(0, 1, u)) / 1.5;
        const double dir = s.label == gesture::swipe_left ? -1.0 : 1.0;
        cx += dir * half * (2 * e - 1);
        cy -= 0.15 * s.scale * std::sin(pi * u);
        break;
    }
    case gesture::wave:
        rot += 0.45 * s.amplitude * std::sin(2 * pi * 1.3 * s.speed * tau + s.phase);
        curl = std::min(curl, 0.15);
        break;
    case gesture::circle: {
        const double r = 0.55 * s.scale * s.amplitude;
        const double a = s.direction * 2 * pi * 0.6 * s.speed * tau + s.phase;
        cx += r * std::cos(a);
        cy += r * std::sin(a);
        break;
    }
    case gesture::grab:
        curl = smoothstep(0.1, 0.1 + 0.6 / s.speed, u);
        break;
    }
    const auto local = local_hand(curl);
    std::mt19937_64 jitter_rng(jitter_seed);
    std::normal_distribution<double> jitter(0.0, 0.25);
    const double c = std::cos(rot);
    const double sn = std::sin(rot);
    const double mx = s.mirror ? -1.0 : 1.0;
    frame_truth out;
    out.label = s.label;
    out.scale = static_cast<float>(s.scale);
    out.noise_level = s.noise_level;
    for (std::size_t i = 0; i < joint_count; ++i) {
        const double lx = mx * local[i][0] * s.scale;
        const double ly = local[i][1] * s.scale;
        out.joints[3 * i] = static_cast<float>(cx + c * lx - sn * ly + jitter(jitter_rng));
        out.joints[3 * i + 1] = static_cast<float>(cy + sn * lx + c * ly + jitter(jitter_rng));
        out.joints[3 * i + 2] = static_cast<float>(local[i][2]);
    }
    return out;
}

renderer::renderer(std::uint64_t seed, synthetic_options options)
    : options_(options), rng_(seed ^ 0xA5A5A5A5DEADBEEFULL) {
    if (options_.width < 64) {
        throw std::invalid_argument("width: must be at least 64");
    }
    if (options_.height < 64) {
        throw std::invalid_argument("height: must be at least 64");
    }
    const int w = options_.width;
    const int h = options_.height;
    auto uni = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng_); };
    // Background: a vertical gradient with faint low-saturation stripes (a wall and a shelf).
    background_.create(h, w, CV_8UC3);
    for (int y = 0; y < h; ++y) {
        const double k = static_cast<double>(y) / h;
        background_.row(y).setTo(cv::Scalar(70 + 40 * k, 80 + 35 * k, 90 + 30 * k));
    }
    for (int i = 0; i < 6; ++i) {
        const int y = static_cast<int>(uni(0, h));
        cv::line(background_, {0, y}, {w, y + static_cast<int>(uni(-40, 40))},
                 cv::Scalar(uni(90, 130), uni(90, 130), uni(90, 130)), static_cast<int>(uni(1, 4)));
    }
    noise_ = noise_bank(w, h);
    noise_offset_ = static_cast<std::size_t>(rng_() % noise_per_level);
    if (options_.distractors) {
        // Large shapes of low saturation (below the markers' threshold) that wander across the
        // frame, and small specks of fully saturated colour (smaller than any marker).
        for (int i = 0; i < 5; ++i) {
            distractor d;
            d.kind = i % 2;
            d.p0 = {uni(0, w), uni(0, h)};
            d.v = {uni(-60, 60), uni(-40, 40)};
            d.size = {uni(20, 70), uni(15, 50)};
            d.angle = uni(0, 180);
            const double grey = uni(60, 200);
            d.colour = cv::Scalar(grey + uni(-25, 25), grey + uni(-25, 25), grey + uni(-25, 25));
            distractors_.push_back(d);
        }
        for (int i = 0; i < 24; ++i) {
            distractor d;
            d.kind = 2;
            d.p0 = {uni(0, w), uni(0, h)};
            d.v = {uni(-90, 90), uni(-90, 90)};
            d.colour = hsv_to_bgr(uni(0, 180), 255, uni(150, 255));
            distractors_.push_back(d);
        }
    }
}

void renderer::render(const frame_truth& truth, double t, cv::Mat& out) {
    background_.copyTo(out);
    const double w = options_.width;
    const double h = options_.height;
    auto where = [&](const distractor& d) {
        // Wrap round a margin outside the frame so shapes enter and leave smoothly.
        const double mx = std::fmod(d.p0.x + d.v.x * t, w + 160.0);
        const double my = std::fmod(d.p0.y + d.v.y * t, h + 160.0);
        return cv::Point2d((mx < 0 ? mx + w + 160 : mx) - 80, (my < 0 ? my + h + 160 : my) - 80);
    };
    for (const auto& d : distractors_) {
        const auto p = where(d);
        if (d.kind == 0) {
            cv::ellipse(out, sub_pixel(p.x, p.y), cv::Size(static_cast<int>(d.size.width * 16),
                                                           static_cast<int>(d.size.height * 16)),
                        d.angle, 0, 360, d.colour, cv::FILLED, cv::LINE_8, 4);
        } else if (d.kind == 1) {
            cv::rectangle(out, cv::Rect(static_cast<int>(p.x), static_cast<int>(p.y),
                                        static_cast<int>(d.size.width), static_cast<int>(d.size.height)),
                          d.colour, cv::FILLED);
        }
    }
    const auto& j = truth.joints;
    auto pt = [&](std::size_t i) { return sub_pixel(j[3 * i], j[3 * i + 1]); };
    // Palm in a skin tone (saturation about 85 of 255), then the bones in light grey.
    const std::array<std::size_t, 6> palm{0, 1, 5, 9, 13, 17};
    std::array<cv::Point, palm.size()> poly;
    for (std::size_t k = 0; k < palm.size(); ++k) {
        poly[k] = pt(palm[k]);
    }
    cv::fillConvexPoly(out, poly.data(), static_cast<int>(poly.size()), cv::Scalar(140, 170, 210),
                       cv::LINE_8, 4);
    const int bone_width = std::max(2, static_cast<int>(std::lround(truth.scale * 0.05)));
    for (const auto& [a, b] : bones) {
        cv::line(out, pt(static_cast<std::size_t>(a)), pt(static_cast<std::size_t>(b)),
                 cv::Scalar(205, 205, 205), bone_width, cv::LINE_8, 4);
    }
    // Markers, far ones first so that near ones cover them.
    std::array<std::size_t, joint_count> order{};
    for (std::size_t i = 0; i < joint_count; ++i) {
        order[i] = i;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return j[3 * a + 2] < j[3 * b + 2]; });
    const double r = marker_radius(truth.scale);
    for (const std::size_t i : order) {
        cv::circle(out, pt(i), static_cast<int>(std::lround(r * 16)),
                   hsv_to_bgr(marker_hue(i), 255, depth_to_value(j[3 * i + 2])), cv::FILLED,
                   cv::LINE_8, 4);
    }
    // Specks fly in front of everything.
    for (const auto& d : distractors_) {
        if (d.kind == 2) {
            const auto p = where(d);
            cv::circle(out, sub_pixel(p.x, p.y), 16, d.colour, cv::FILLED, cv::LINE_8, 4);
        }
    }
    if (options_.noise) {
        const auto frame_no = static_cast<std::size_t>(std::llround(t * 30.0));
        const auto& n = (*noise_)[static_cast<std::size_t>(truth.noise_level) * noise_per_level +
                                  (frame_no + noise_offset_) % noise_per_level];
        cv::add(out, n, out, cv::noArray(), CV_8U);
    }
}

} // namespace handpose
