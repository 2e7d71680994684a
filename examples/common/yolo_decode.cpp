// examples/common/yolo_decode.cpp - see yolo_decode.hpp.
#include "yolo_decode.hpp"

#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>

namespace framepipe_examples::detection {

const char* to_string(yolo_layout l) noexcept {
    switch (l) {
    case yolo_layout::v5:
        return "yolov5";
    case yolo_layout::v8:
        return "yolov8";
    case yolo_layout::darknet:
        return "darknet";
    }
    return "?";
}

letterbox_info letterbox(const cv::Mat& frame, cv::Size input, cv::Mat& out) {
    if (frame.empty()) {
        throw std::invalid_argument("frame: empty");
    }
    if (input.width <= 0 || input.height <= 0) {
        throw std::invalid_argument("input: size must be positive");
    }
    letterbox_info info;
    info.input = input;
    info.original = frame.size();
    info.scale = std::min(static_cast<float>(input.width) / static_cast<float>(frame.cols),
                          static_cast<float>(input.height) / static_cast<float>(frame.rows));
    const int w = std::max(1, static_cast<int>(std::lround(static_cast<float>(frame.cols) * info.scale)));
    const int h = std::max(1, static_cast<int>(std::lround(static_cast<float>(frame.rows) * info.scale)));
    const int left = (input.width - w) / 2;
    const int top = (input.height - h) / 2;
    info.pad_x = static_cast<float>(left);
    info.pad_y = static_cast<float>(top);
    out.create(input, frame.type());
    out.setTo(cv::Scalar::all(114));
    cv::resize(frame, out(cv::Rect(left, top, w, h)), cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
    return info;
}

cv::Rect2f unletterbox(const cv::Rect2f& box, const letterbox_info& info) noexcept {
    const float s = info.scale > 0 ? info.scale : 1.0F;
    float x0 = (box.x - info.pad_x) / s;
    float y0 = (box.y - info.pad_y) / s;
    float x1 = (box.x + box.width - info.pad_x) / s;
    float y1 = (box.y + box.height - info.pad_y) / s;
    const auto w = static_cast<float>(info.original.width);
    const auto h = static_cast<float>(info.original.height);
    x0 = std::clamp(x0, 0.0F, w);
    x1 = std::clamp(x1, 0.0F, w);
    y0 = std::clamp(y0, 0.0F, h);
    y1 = std::clamp(y1, 0.0F, h);
    return {x0, y0, x1 - x0, y1 - y0};
}

std::string shape_of(const cv::Mat& m) {
    std::string s = "[";
    for (int i = 0; i < m.dims; ++i) {
        s += (i != 0 ? ", " : "") + std::to_string(m.size[i]);
    }
    return s + "]";
}

std::optional<output_layout> recognise_layout(const cv::Mat& output) {
    if (output.dims == 3 && output.size[0] == 1) {
        const int a = output.size[1];
        const int b = output.size[2];
        if (a < b && a >= 5) {
            return output_layout{yolo_layout::v8, b, a - 4};
        }
        if (a >= b && b >= 6) {
            return output_layout{yolo_layout::v5, a, b - 5};
        }
        return std::nullopt;
    }
    if (output.dims == 2 && output.cols >= 6 && output.rows >= 1) {
        return output_layout{yolo_layout::darknet, output.rows, output.cols - 5};
    }
    return std::nullopt;
}

namespace {

struct candidate {
    cv::Rect2d box; // input pixels
    int class_id;
    float score;
};

// Best class of `n` scores read with a stride.
std::pair<int, float> best_class(const float* p, int n, std::ptrdiff_t stride) {
    int best = 0;
    float score = p[0];
    for (int c = 1; c < n; ++c) {
        const float v = p[c * stride];
        if (v > score) {
            score = v;
            best = c;
        }
    }
    return {best, score};
}

void collect(const cv::Mat& out, const output_layout& l, const letterbox_info& info,
             float confidence, std::vector<candidate>& into) {
    const cv::Mat m = out.isContinuous() ? out : out.clone();
    const auto* data = m.ptr<float>();
    const int n = l.candidates;
    const int nc = l.classes;
    for (int i = 0; i < n; ++i) {
        float cx = 0;
        float cy = 0;
        float w = 0;
        float h = 0;
        float score = 0;
        int cls = 0;
        switch (l.layout) {
        case yolo_layout::v5: {
            const float* r = data + static_cast<std::ptrdiff_t>(i) * (5 + nc);
            if (r[4] < confidence) {
                continue; // the objectness bounds the score: skip the class scan
            }
            const auto [c, s] = best_class(r + 5, nc, 1);
            cls = c;
            score = r[4] * s;
            cx = r[0];
            cy = r[1];
            w = r[2];
            h = r[3];
            break;
        }
        case yolo_layout::v8: {
            // Attribute-major: attribute a of candidate i is at a * n + i.
            const float* col = data + i;
            const auto [c, s] = best_class(col + 4 * static_cast<std::ptrdiff_t>(n), nc, n);
            cls = c;
            score = s;
            cx = col[0];
            cy = col[n];
            w = col[2 * static_cast<std::ptrdiff_t>(n)];
            h = col[3 * static_cast<std::ptrdiff_t>(n)];
            break;
        }
        case yolo_layout::darknet: {
            const float* r = data + static_cast<std::ptrdiff_t>(i) * (5 + nc);
            const auto [c, s] = best_class(r + 5, nc, 1);
            cls = c;
            score = s;
            const auto iw = static_cast<float>(info.input.width);
            const auto ih = static_cast<float>(info.input.height);
            cx = r[0] * iw;
            cy = r[1] * ih;
            w = r[2] * iw;
            h = r[3] * ih;
            break;
        }
        }
        // Finite numbers only: a NaN centre would survive the clip to the frame (std::clamp
        // passes NaN through), an infinite size would make a NaN box.
        if (!std::isfinite(cx) || !std::isfinite(cy) || !std::isfinite(w) || !std::isfinite(h) ||
            !std::isfinite(score) || !(score >= confidence) || !(w > 0) || !(h > 0)) {
            continue;
        }
        into.push_back({cv::Rect2d(cx - w / 2.0, cy - h / 2.0, w, h), cls, score});
    }
}

} // namespace

std::vector<detection> decode(const std::vector<cv::Mat>& outputs, const letterbox_info& info,
                              const decode_options& options) {
    std::vector<candidate> all;
    int classes = -1;
    for (const auto& out : outputs) {
        if (out.depth() != CV_32F) {
            throw std::invalid_argument("outputs: tensors must be CV_32F");
        }
        const auto l = recognise_layout(out);
        if (!l) {
            throw std::invalid_argument("outputs: shape " + shape_of(out) +
                                        " is not a YOLOv5, YOLOv8 or Darknet layout");
        }
        if (classes >= 0 && l->classes != classes) {
            throw std::invalid_argument("outputs: tensors disagree on the number of classes");
        }
        classes = l->classes;
        collect(out, *l, info, options.confidence, all);
    }
    // Class-wise NMS: boxes of different classes never suppress each other.
    std::map<int, std::vector<std::size_t>> by_class;
    for (std::size_t i = 0; i < all.size(); ++i) {
        by_class[all[i].class_id].push_back(i);
    }
    std::vector<detection> kept;
    for (const auto& [cls, members] : by_class) {
        std::vector<cv::Rect2d> boxes;
        std::vector<float> scores;
        for (const auto i : members) {
            boxes.push_back(all[i].box);
            scores.push_back(all[i].score);
        }
        std::vector<int> keep;
        // collect() applied the threshold (a score equal to it stays); NMSBoxes keeps only scores
        // above its own, so it gets the float just below (and never below 0, which it refuses).
        const float below = std::max(0.0F, std::nextafter(options.confidence, -HUGE_VALF));
        cv::dnn::NMSBoxes(boxes, scores, below, options.nms_iou, keep);
        for (const int k : keep) {
            const auto& c = all[members[static_cast<std::size_t>(k)]];
            kept.push_back({unletterbox(cv::Rect2f(c.box), info), c.class_id, c.score});
        }
    }
    std::sort(kept.begin(), kept.end(),
              [](const detection& a, const detection& b) { return a.score > b.score; });
    return kept;
}

} // namespace framepipe_examples::detection
