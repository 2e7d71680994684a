// examples/common/video_frame.hpp - one frame as the video examples pass it around: a BGR
// cv::Mat stamped with its sequence number, capture time and epoch (framepipe::stamped), held in
// a framepipe::pool and published as std::shared_ptr<const video_frame>. Files (video_source.hpp)
// and live inputs (live_camera.hpp) both produce it.
#pragma once

#include <framepipe/stamped.hpp>
#include <opencv2/core.hpp>

namespace framepipe_examples {

using video_frame = framepipe::stamped<cv::Mat>;

}  // namespace framepipe_examples
