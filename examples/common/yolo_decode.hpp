// examples/common/yolo_decode.hpp - from a YOLO network's raw output to boxes on the frame.
//
// Pure functions on cv::Mat, no network: letterbox a frame into the network's square input,
// recognise the output layout from its shape, decode candidates above a confidence threshold,
// keep the best box per object per class (class-wise NMS), and map boxes back to frame pixels.
//
// Layouts (N candidates, C classes):
//   v5       [1, N, 5 + C]   rows cx, cy, w, h (input pixels), objectness, C class scores;
//                            score = objectness * best class score
//   v8       [1, 4 + C, N]   columns cx, cy, w, h (input pixels), C class scores (no
//                            objectness); score = best class score
//   darknet  [N, 5 + C]      what cv::dnn's Darknet [yolo] layers output, one Mat per layer:
//                            cx, cy, w, h as fractions of the input, objectness, C class scores
//                            already multiplied by the objectness; score = best class score
// A 3-D output [1, a, b] is v8 when a < b (attributes first; real exports have 84 x 8400) and v5
// otherwise (25200 x 85). A 2-D output is the Darknet layout.
//
// Thread safety: every function is pure (no shared state); call from any thread.
#pragma once

#include <opencv2/core.hpp>

#include <optional>
#include <string>
#include <vector>

namespace framepipe_examples::detection {

enum class yolo_layout { v5, v8, darknet };

[[nodiscard]] const char* to_string(yolo_layout l) noexcept;

// How a frame was fitted into the network input: scaled by `scale`, then padded by pad_x left
// and pad_y top (the rest of the padding is right and bottom).
struct letterbox_info {
    float scale = 1;
    float pad_x = 0;
    float pad_y = 0;
    cv::Size input{};    // the network's input size
    cv::Size original{}; // the frame's size
};

// Resizes `frame` to fit `input` keeping its aspect ratio, centred on grey (114) padding, into
// `out` (reused when it has the right size). Throws std::invalid_argument naming frame (empty)
// or input (not positive).
letterbox_info letterbox(const cv::Mat& frame, cv::Size input, cv::Mat& out);

// A box in network-input pixels mapped back to frame pixels, clipped to the frame.
[[nodiscard]] cv::Rect2f unletterbox(const cv::Rect2f& box, const letterbox_info& info) noexcept;

struct output_layout {
    yolo_layout layout = yolo_layout::v5;
    int candidates = 0; // N
    int classes = 0;    // C
};

// The layout of one output tensor, from its shape (see the file comment); nullopt when the shape
// fits none (for example fewer than 1 class, or a 4-D tensor).
[[nodiscard]] std::optional<output_layout> recognise_layout(const cv::Mat& output);

// The shape of a tensor as text, "[1, 84, 8400]", for messages.
[[nodiscard]] std::string shape_of(const cv::Mat& m);

struct detection {
    cv::Rect2f box;    // frame pixels
    int class_id = 0;
    float score = 0;
};

struct decode_options {
    float confidence = 0.25F; // candidates scoring below are discarded
    float nms_iou = 0.45F;    // of two boxes of one class overlapping more, the weaker goes
};

// Decodes the outputs of one forward pass (one tensor for ONNX exports, one per [yolo] layer for
// Darknet), applies the threshold and class-wise NMS, and maps the boxes to the frame (a
// candidate whose centre, size or score is NaN or infinite is dropped). Sorted by
// score, best first. Throws std::invalid_argument naming outputs when a tensor's layout is not
// recognised or the tensors disagree on the class count, or when a tensor is not CV_32F.
[[nodiscard]] std::vector<detection> decode(const std::vector<cv::Mat>& outputs,
                                            const letterbox_info& info,
                                            const decode_options& options = {});

} // namespace framepipe_examples::detection
