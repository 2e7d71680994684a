// examples/handpose/frame_source.cpp - see frame_source.hpp.
#include "frame_source.hpp"

#include <chrono>
#include <utility>

namespace handpose {

namespace fe = framepipe_examples;

frame_source::frame_source(const settings& s) : s_(s) {
    if (s.source == "synthetic") {
        synthetic_options o;
        // A classifier window must fit inside one gesture for the truth to be clear.
        o.min_segment_s = static_cast<double>(s.window) / s.estimate_fps + 0.6;
        o.max_segment_s = o.min_segment_s + 1.0;
        generator_.emplace(s.seed, o);
        renderer_.emplace(s.seed, o);
        pool_ = std::make_unique<framepipe::pool<fe::video_frame>>(
            8, [o] { return fe::video_frame{cv::Mat(o.height, o.width, CV_8UC3), 0, {}}; });
    } else {
        // A file (live inputs are read by main's live_camera): its own rate.
        video_.emplace(fe::video_source_options{.path = s.video_path, .fps = std::nullopt});
    }
}

std::shared_ptr<fe::video_frame> frame_source::next(std::stop_token stop, std::uint64_t synthetic_seq) {
    if (video_) {
        return video_->next(std::move(stop));
    }
    auto f = pool_->acquire(std::move(stop));
    if (!f) {
        return nullptr;
    }
    const double t = static_cast<double>(synthetic_seq) / s_.source_fps;
    const frame_truth truth = generator_->pose_at(t);
    renderer_->render(truth, t, f->value);
    f->seq = synthetic_seq;
    f->captured = std::chrono::steady_clock::now();
    truth_.put(synthetic_seq, truth.label);
    return f;
}

} // namespace handpose
