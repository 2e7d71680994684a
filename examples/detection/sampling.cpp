// examples/detection/sampling.cpp - see sampling.hpp.
#include "sampling.hpp"

#include "common/program.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

namespace framepipe_examples::detection {

namespace {

[[noreturn]] void bad_spec(std::string_view text) {
    throw usage_error("--sampling '" + std::string(text) + "': expected one of " + sampling_forms);
}

template <class T>
bool parse_number(std::string_view s, T& out) {
    if (s.empty()) {
        return false;
    }
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if constexpr (std::is_floating_point_v<T>) {
        if (!std::isfinite(out)) {
            return false;
        }
    }
    return ec == std::errc() && end == s.data() + s.size();
}

} // namespace

sampling_spec parse_sampling(std::string_view text) {
    sampling_spec spec;
    const auto colon = text.find(':');
    const auto name = text.substr(0, colon);
    const bool has_arg = colon != std::string_view::npos;
    const auto arg = has_arg ? text.substr(colon + 1) : std::string_view();
    if (name == "none" && !has_arg) {
        spec.kind = sampling_kind::none;
    } else if (name == "every-n") {
        spec.kind = sampling_kind::every_n;
        if (!has_arg || !parse_number(arg, spec.n) || spec.n < 1) {
            bad_spec(text);
        }
    } else if (name == "keyframes" && !has_arg) {
        spec.kind = sampling_kind::keyframes;
    } else if (name == "motion" || name == "cascade") {
        spec.kind = name == "motion" ? sampling_kind::motion : sampling_kind::cascade;
        if (has_arg && (!parse_number(arg, spec.threshold) || spec.threshold < 1 ||
                        spec.threshold > 255)) {
            bad_spec(text);
        }
    } else if (name == "scene") {
        spec.kind = sampling_kind::scene;
        if (has_arg && (!parse_number(arg, spec.distance) || !(spec.distance > 0) ||
                        !(spec.distance < 1))) {
            bad_spec(text);
        }
    } else if (name == "adaptive" && !has_arg) {
        spec.kind = sampling_kind::adaptive;
    } else {
        bad_spec(text);
    }
    switch (spec.kind) {
    case sampling_kind::every_n: spec.text = "every-n:" + std::to_string(spec.n); break;
    case sampling_kind::motion: spec.text = "motion:" + std::to_string(spec.threshold); break;
    case sampling_kind::cascade: spec.text = "cascade:" + std::to_string(spec.threshold); break;
    case sampling_kind::scene: {
        std::ostringstream os;
        os << "scene:" << spec.distance;
        spec.text = os.str();
        break;
    }
    default: spec.text = std::string(name); break;
    }
    return spec;
}

std::vector<cv::Point> parse_polygon(std::string_view text) {
    std::vector<cv::Point> points;
    std::istringstream in{std::string(text)};
    std::string pair;
    while (in >> pair) {
        const auto comma = pair.find(',');
        int x = 0;
        int y = 0;
        if (comma == std::string::npos ||
            !parse_number(std::string_view(pair).substr(0, comma), x) ||
            !parse_number(std::string_view(pair).substr(comma + 1), y)) {
            throw usage_error("--motion-mask: expected points 'x,y x,y x,y ...' in frame pixels, "
                              "got '" + pair + "'");
        }
        points.emplace_back(x, y);
    }
    if (!points.empty() && points.size() < 3) {
        throw usage_error("--motion-mask: a polygon needs at least 3 points");
    }
    return points;
}

std::vector<cv::Rect> cascade_regions(const std::vector<cv::Rect>& motion_boxes, cv::Size frame,
                                      const cascade_options& o) {
    const cv::Rect whole(cv::Point(0, 0), frame);
    std::vector<cv::Rect> regions;
    for (const auto& b : motion_boxes) {
        const int w = std::max(static_cast<int>(std::lround(b.width * (1 + 2 * o.grow))),
                               o.min_region.width);
        const int h = std::max(static_cast<int>(std::lround(b.height * (1 + 2 * o.grow))),
                               o.min_region.height);
        const cv::Point centre(b.x + b.width / 2, b.y + b.height / 2);
        // Shifted into the frame rather than cut by its edge, so that it keeps its size.
        cv::Rect r(centre.x - w / 2, centre.y - h / 2, std::min(w, frame.width),
                   std::min(h, frame.height));
        r.x = std::clamp(r.x, 0, frame.width - r.width);
        r.y = std::clamp(r.y, 0, frame.height - r.height);
        regions.push_back(r & whole);
    }
    // Merge until no two overlap: a person in two regions would be cut in half in both.
    for (bool merged = true; merged;) {
        merged = false;
        for (std::size_t i = 0; i < regions.size() && !merged; ++i) {
            for (std::size_t j = i + 1; j < regions.size(); ++j) {
                if ((regions[i] & regions[j]).area() > 0) {
                    regions[i] |= regions[j];
                    regions.erase(regions.begin() + static_cast<std::ptrdiff_t>(j));
                    merged = true;
                    break;
                }
            }
        }
    }
    double area = 0;
    for (const auto& r : regions) {
        area += r.area();
    }
    if (area > o.full_frame_share * whole.area()) {
        return {whole};
    }
    return regions;
}

std::vector<labelled_detection> detect_in_regions(detector& d, const cv::Mat& frame,
                                                  const std::vector<cv::Rect>& regions) {
    std::vector<labelled_detection> out;
    for (const auto& r : regions) {
        auto boxes = d.detect(frame(r));
        for (auto& b : boxes) {
            b.box.x += static_cast<float>(r.x);
            b.box.y += static_cast<float>(r.y);
            out.push_back(std::move(b));
        }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    return out;
}

std::string short_name(const detector& d) {
    const auto text = d.description();
    return text.substr(0, text.find(' '));
}

} // namespace framepipe_examples::detection
