// examples/common/detector.hpp - the detectors behind one small interface (framepipe-detect,
// framepipe-multicam).
//
//     auto d = make_detector({.model = "yolov8n.onnx", .input_size = 640});  // or {} for HOG
//     std::vector<labelled_detection> boxes = d->detect(frame);              // frame pixels
//     auto per_frame = d->detect_batch(frames);   // one forward pass for frames of several cameras
//
// - HOG (default): OpenCV's built-in people detector (cv::HOGDescriptor), no download.
// - ONNX (--model x.onnx): YOLOv5 / YOLOv8 exports through cv::dnn; the output layout is
//   recognised from its shape (yolo_decode.hpp). The network runs at input_size x input_size.
// - Darknet (--model x.cfg --weights x.weights): Tiny-YOLO v3 / v4-tiny through cv::dnn; the
//   input size is the cfg's [net] width and height.
// make_detector() loads the model and runs one forward pass on a blank frame (on `batch` blank
// frames with a batch), so that a missing, unparsable or unsupported model, or a batch size the
// model cannot take, is reported before the pipeline starts.
//
// Batches: an ONNX model whose batch dimension is dynamic runs detect_batch() as one forward pass
// over up to `batch` frames (blobFromImages, an output of shape [B, ...] decoded per frame). HOG
// and Darknet models run frame by frame and take no batch above 1.
//
// Thread safety: a detector is used by one thread at a time (cv::dnn::Net is not thread-safe).
// make_detector() may be called from any thread.
#pragma once

#include "yolo_decode.hpp"

#include <opencv2/core.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace framepipe_examples::detection {

struct labelled_detection {
    cv::Rect2f box; // frame pixels
    int class_id = 0;
    float score = 0;
    std::string label;
};

class detector {
public:
    virtual ~detector() = default;
    detector() = default;
    detector(const detector&) = delete;
    detector& operator=(const detector&) = delete;

    // Boxes found on a BGR frame, best first. One thread at a time; blocks for the inference.
    // Throws cv::Exception on an OpenCV failure (the pipeline then stops with that error).
    [[nodiscard]] virtual std::vector<labelled_detection> detect(const cv::Mat& frame) = 0;

    // Boxes for each of `frames` (result i for frames[i]), in one forward pass when the detector
    // was made with a batch (at most max_batch() frames; more throws std::invalid_argument naming
    // frames), else frame by frame. One thread at a time; blocks. Throws as detect() does.
    [[nodiscard]] virtual std::vector<std::vector<labelled_detection>> detect_batch(
        const std::vector<cv::Mat>& frames);

    // The most frames one detect_batch() call takes in one forward pass (1: frame by frame).
    [[nodiscard]] virtual int max_batch() const noexcept { return 1; }

    // "hog", "yolov8 onnx (80 classes, 640x640)", ... for logs and the page.
    [[nodiscard]] virtual std::string description() const = 0;
};

struct detector_options {
    std::string model{};      // "" for HOG, else a .onnx or Darknet .cfg file
    std::string weights{};    // Darknet .weights (needed with a .cfg)
    std::string classes{};    // a names file, one label per line ("" : COCO for 80 classes)
    int input_size = 640;     // ONNX input (square); Darknet reads its cfg
    int batch = 1;            // frames per forward pass (ONNX with a dynamic batch only)
    decode_options decode{};  // thresholds
};

// Bad input: one line naming the file and the problem.
class model_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Builds and checks a detector (see the file comment). Throws model_error for a missing,
// unreadable, unparsable or unsupported model or classes file, or a batch above 1 that the
// model cannot take (HOG, Darknet, an ONNX model with a fixed batch of 1);
// std::invalid_argument naming input_size when it is not in 32..4096, batch when it is not in
// 1..64.
[[nodiscard]] std::unique_ptr<detector> make_detector(const detector_options& options);

// The 80 COCO class names, in the order YOLO exports use.
[[nodiscard]] const std::vector<std::string>& coco_names();

} // namespace framepipe_examples::detection
