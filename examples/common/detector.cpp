// examples/common/detector.cpp - see detector.hpp.
#include "detector.hpp"

#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace framepipe_examples::detection {

namespace {

// The useful part of an OpenCV error: its first line, without the source location, the error
// code and the function name ("...cpp:260: error: (-210:...) Failed to parse ONNX model: x in
// function 'ONNXImporter'" becomes "Failed to parse ONNX model: x").
std::string first_line(const std::string& s) {
    auto line = s.substr(0, s.find('\n'));
    if (const auto at = line.find("error: ("); at != std::string::npos) {
        if (const auto close = line.find(") ", at); close != std::string::npos) {
            line = line.substr(close + 2);
        }
    }
    if (const auto at = line.rfind(" in function '"); at != std::string::npos) {
        line.erase(at);
    }
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
        line.pop_back();
    }
    return line;
}

void require_readable(const std::string& path, const char* what) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const auto st = fs::status(path, ec);
    if (!fs::exists(st)) {
        throw model_error(std::string(what) + " '" + path + "': no such file");
    }
    if (!fs::is_regular_file(st) || !std::ifstream(path, std::ios::binary)) {
        throw model_error(std::string(what) + " '" + path + "': not a readable file");
    }
}

bool ends_with(const std::string& s, const std::string& tail) {
    if (s.size() < tail.size()) {
        return false;
    }
    auto a = s.substr(s.size() - tail.size());
    std::transform(a.begin(), a.end(), a.begin(), [](unsigned char c) { return std::tolower(c); });
    return a == tail;
}

class hog_detector final : public detector {
public:
    hog_detector() { hog_.setSVMDetector(cv::HOGDescriptor::getDefaultPeopleDetector()); }

    std::vector<labelled_detection> detect(const cv::Mat& frame) override {
        std::vector<labelled_detection> out;
        if (frame.cols < hog_.winSize.width || frame.rows < hog_.winSize.height) {
            return out; // smaller than one 64x128 window: nobody fits (and OpenCV 4.6 crashes)
        }
        std::vector<cv::Rect> found;
        std::vector<double> weights;
        // Default window stride (8 px) and 1.05 scale step: the classic OpenCV people demo.
        hog_.detectMultiScale(frame, found, weights, 0, cv::Size(8, 8), cv::Size(), 1.05, 2);
        for (std::size_t i = 0; i < found.size(); ++i) {
            const auto w = i < weights.size() ? weights[i] : 1.0;
            out.push_back({cv::Rect2f(found[i]), 0, static_cast<float>(w), "person"});
        }
        std::sort(out.begin(), out.end(),
                  [](const auto& a, const auto& b) { return a.score > b.score; });
        return out;
    }

    std::string description() const override { return "hog people detector"; }

private:
    cv::HOGDescriptor hog_;
};

// Plane i of a tensor [B, a, b] as a tensor [1, a, b] (no copy): what decode() takes for frame i.
cv::Mat plane(const cv::Mat& batch, int i) {
    const int sizes[] = {1, batch.size[1], batch.size[2]};
    auto* data = const_cast<float*>(batch.ptr<float>(i));
    return cv::Mat(3, sizes, CV_32F, data);
}

class yolo_detector final : public detector {
public:
    yolo_detector(cv::dnn::Net net, cv::Size input, std::vector<std::string> names,
                  decode_options decode, std::string kind, int batch)
        : net_(std::move(net)),
          input_(input),
          names_(std::move(names)),
          decode_(decode),
          kind_(std::move(kind)),
          batch_(batch) {
        net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
        net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
        out_names_ = net_.getUnconnectedOutLayersNames();
    }

    // Runs once on a blank frame; returns the layout found, or throws model_error.
    void check(const std::string& model) {
        try {
            const cv::Mat blank(input_, CV_8UC3, cv::Scalar::all(0));
            const auto info = forward(blank);
            if (outputs_.empty()) {
                throw model_error("model '" + model + "': produces no output");
            }
            std::string layouts;
            for (const auto& o : outputs_) {
                const auto l = recognise_layout(o);
                if (!l) {
                    throw model_error("model '" + model + "': output shape " + shape_of(o) +
                                      " is not a YOLOv5, YOLOv8 or Darknet layout");
                }
                classes_ = l->classes;
                layout_ = l->layout;
            }
            (void)decode(outputs_, info, decode_);
        } catch (const cv::Exception& e) {
            throw model_error("model '" + model + "': cannot run at input " +
                              std::to_string(input_.width) + "x" + std::to_string(input_.height) +
                              " (" + first_line(e.what()) + ")");
        } catch (const std::invalid_argument& e) {
            throw model_error("model '" + model + "': " + e.what());
        }
        if (batch_ > 1) {
            check_batch(model);
        }
        if (!names_.empty() && static_cast<int>(names_.size()) < classes_) {
            throw model_error("classes file has " + std::to_string(names_.size()) +
                              " names, the model has " + std::to_string(classes_) + " classes");
        }
        if (names_.empty() && classes_ == 80) {
            names_ = coco_names();
        }
    }

    std::vector<labelled_detection> detect(const cv::Mat& frame) override {
        const auto info = forward(frame);
        return labelled(decode(outputs_, info, decode_));
    }

    std::vector<std::vector<labelled_detection>> detect_batch(
        const std::vector<cv::Mat>& frames) override {
        if (frames.size() <= 1 || batch_ <= 1) {
            return detector::detect_batch(frames);
        }
        if (frames.size() > static_cast<std::size_t>(batch_)) {
            throw std::invalid_argument("frames: " + std::to_string(frames.size()) +
                                        " in one batch, the detector takes at most " +
                                        std::to_string(batch_));
        }
        const auto infos = forward_batch(frames);
        std::vector<std::vector<labelled_detection>> out(frames.size());
        std::vector<cv::Mat> mine(outputs_.size());
        for (std::size_t i = 0; i < frames.size(); ++i) {
            for (std::size_t k = 0; k < outputs_.size(); ++k) {
                mine[k] = plane(outputs_[k], static_cast<int>(i));
            }
            out[i] = labelled(decode(mine, infos[i], decode_));
        }
        return out;
    }

    int max_batch() const noexcept override { return batch_; }

    std::string description() const override {
        return std::string(to_string(layout_)) + " " + kind_ + " (" + std::to_string(classes_) +
               " classes, " + std::to_string(input_.width) + "x" + std::to_string(input_.height) +
               (batch_ > 1 ? ", batch " + std::to_string(batch_) : std::string()) + ")";
    }

private:
    // A batch of batch_ blank frames must give outputs of shape [batch_, a, b].
    void check_batch(const std::string& model) {
        const std::string what = "model '" + model + "': cannot take a batch of " +
                                 std::to_string(batch_);
        if (kind_ != "onnx") {
            throw model_error(what + " (batching needs an ONNX model)");
        }
        try {
            const std::vector<cv::Mat> blanks(static_cast<std::size_t>(batch_),
                                              cv::Mat(input_, CV_8UC3, cv::Scalar::all(0)));
            (void)forward_batch(blanks);
        } catch (const cv::Exception& e) {
            throw model_error(what + " (" + first_line(e.what()) + ")");
        }
        for (const auto& o : outputs_) {
            if (o.dims != 3 || o.size[0] != batch_) {
                throw model_error(what + " (its output for " + std::to_string(batch_) +
                                  " frames has shape " + shape_of(o) +
                                  "; export it with a dynamic batch dimension)");
            }
        }
    }

    std::vector<labelled_detection> labelled(const std::vector<detection>& found) const {
        std::vector<labelled_detection> out;
        for (const auto& d : found) {
            const auto id = static_cast<std::size_t>(d.class_id);
            out.push_back({d.box, d.class_id, d.score,
                           id < names_.size() ? names_[id] : "class " + std::to_string(d.class_id)});
        }
        return out;
    }

    std::vector<letterbox_info> forward_batch(const std::vector<cv::Mat>& frames) {
        boxed_batch_.resize(frames.size());
        std::vector<letterbox_info> infos;
        infos.reserve(frames.size());
        for (std::size_t i = 0; i < frames.size(); ++i) {
            infos.push_back(letterbox(frames[i], input_, boxed_batch_[i]));
        }
        cv::dnn::blobFromImages(boxed_batch_, blob_, 1.0 / 255.0, cv::Size(), cv::Scalar(), true,
                                false, CV_32F);
        net_.setInput(blob_);
        net_.forward(outputs_, out_names_);
        return infos;
    }

    letterbox_info forward(const cv::Mat& frame) {
        const auto info = letterbox(frame, input_, boxed_);
        // RGB, 0..1, NCHW: what both Ultralytics exports and Darknet expect.
        cv::dnn::blobFromImage(boxed_, blob_, 1.0 / 255.0, cv::Size(), cv::Scalar(), true, false,
                               CV_32F);
        net_.setInput(blob_);
        net_.forward(outputs_, out_names_);
        return info;
    }

    cv::dnn::Net net_;
    cv::Size input_;
    std::vector<std::string> names_;
    decode_options decode_;
    std::string kind_;
    std::vector<std::string> out_names_;
    int batch_ = 1;
    cv::Mat boxed_;
    std::vector<cv::Mat> boxed_batch_;
    cv::Mat blob_;
    std::vector<cv::Mat> outputs_;
    int classes_ = 0;
    yolo_layout layout_ = yolo_layout::v5;
};

std::vector<std::string> read_names(const std::string& path) {
    require_readable(path, "classes file");
    std::ifstream in(path);
    std::vector<std::string> names;
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
            line.pop_back();
        }
        if (!line.empty()) {
            names.push_back(line);
        }
    }
    if (names.empty()) {
        throw model_error("classes file '" + path + "': no names in it");
    }
    return names;
}

// width= and height= of a Darknet cfg's [net] section.
cv::Size darknet_input(const std::string& cfg) {
    std::ifstream in(cfg);
    std::string line;
    bool in_net = false;
    int w = 0;
    int h = 0;
    while (std::getline(in, line)) {
        line.erase(std::remove_if(line.begin(), line.end(),
                                  [](unsigned char c) { return std::isspace(c) != 0; }),
                   line.end());
        if (line.empty() || line[0] == '#') {
            continue;
        }
        if (line[0] == '[') {
            in_net = line == "[net]" || line == "[network]";
            continue;
        }
        if (in_net && line.rfind("width=", 0) == 0) {
            w = std::atoi(line.c_str() + 6);
        } else if (in_net && line.rfind("height=", 0) == 0) {
            h = std::atoi(line.c_str() + 7);
        }
    }
    if (w <= 0 || h <= 0) {
        throw model_error("model '" + cfg + "': no [net] width and height (not a Darknet cfg)");
    }
    return {w, h};
}

} // namespace

std::vector<std::vector<labelled_detection>> detector::detect_batch(
    const std::vector<cv::Mat>& frames) {
    std::vector<std::vector<labelled_detection>> out;
    out.reserve(frames.size());
    for (const auto& f : frames) {
        out.push_back(detect(f));
    }
    return out;
}

std::unique_ptr<detector> make_detector(const detector_options& o) {
    if (o.input_size < 32 || o.input_size > 4096) {
        throw std::invalid_argument("input_size: must be between 32 and 4096");
    }
    if (o.batch < 1 || o.batch > 64) {
        throw std::invalid_argument("batch: must be between 1 and 64");
    }
    if (o.model.empty()) {
        if (!o.weights.empty()) {
            throw model_error("--weights needs --model (a Darknet .cfg)");
        }
        if (!o.classes.empty()) {
            throw model_error("--classes needs --model (the HOG people detector has one class)");
        }
        if (o.batch > 1) {
            throw model_error("the HOG people detector cannot take a batch of " +
                              std::to_string(o.batch) +
                              " (it runs frame by frame; batching needs an ONNX model)");
        }
        return std::make_unique<hog_detector>();
    }
    require_readable(o.model, "model");
    std::vector<std::string> names;
    if (!o.classes.empty()) {
        names = read_names(o.classes);
    }
    // OpenCV's importer logs an ERROR line of its own before it throws: with the program's own
    // line, two lines for one bad model. Silent while the model loads and is probed, unless the
    // user asked for OpenCV's logs (OPENCV_LOG_LEVEL).
    struct quiet_opencv_logs {
        bool quiet = std::getenv("OPENCV_LOG_LEVEL") == nullptr;
        cv::utils::logging::LogLevel before = cv::utils::logging::getLogLevel();
        quiet_opencv_logs() {
            if (quiet) {
                cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
            }
        }
        ~quiet_opencv_logs() {
            if (quiet) {
                cv::utils::logging::setLogLevel(before);
            }
        }
        quiet_opencv_logs(const quiet_opencv_logs&) = delete;
        quiet_opencv_logs& operator=(const quiet_opencv_logs&) = delete;
    } quiet;
    cv::dnn::Net net;
    cv::Size input(o.input_size, o.input_size);
    std::string kind;
    try {
        if (ends_with(o.model, ".onnx")) {
            if (!o.weights.empty()) {
                throw model_error("model '" + o.model + "': an ONNX model takes no --weights");
            }
            net = cv::dnn::readNetFromONNX(o.model);
            kind = "onnx";
        } else if (ends_with(o.model, ".cfg")) {
            if (o.weights.empty()) {
                throw model_error("model '" + o.model + "': a Darknet cfg needs --weights");
            }
            require_readable(o.weights, "weights");
            input = darknet_input(o.model);
            net = cv::dnn::readNetFromDarknet(o.model, o.weights);
            kind = "darknet";
        } else {
            throw model_error("model '" + o.model +
                              "': unknown format (expected .onnx, or .cfg with --weights)");
        }
    } catch (const cv::Exception& e) {
        // e.err is OpenCV's reason; what() starts with where it was thrown.
        throw model_error("model '" + o.model + "': cannot be parsed (" +
                          first_line(e.err.empty() ? e.what() : e.err) + ")");
    }
    if (net.empty()) {
        throw model_error("model '" + o.model + "': cannot be parsed (empty network)");
    }
    auto d = std::make_unique<yolo_detector>(std::move(net), input, std::move(names), o.decode,
                                             kind, o.batch);
    d->check(o.model);
    return d;
}

const std::vector<std::string>& coco_names() {
    static const std::vector<std::string> names = [] {
        std::istringstream in(
            "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,"
            "fire hydrant,stop sign,parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,"
            "bear,zebra,giraffe,backpack,umbrella,handbag,tie,suitcase,frisbee,skis,snowboard,"
            "sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,tennis racket,"
            "bottle,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,"
            "carrot,hot dog,pizza,donut,cake,chair,couch,potted plant,bed,dining table,toilet,tv,"
            "laptop,mouse,remote,keyboard,cell phone,microwave,oven,toaster,sink,refrigerator,"
            "book,clock,vase,scissors,teddy bear,hair drier,toothbrush");
        std::vector<std::string> v;
        std::string s;
        while (std::getline(in, s, ',')) {
            v.push_back(s);
        }
        return v;
    }();
    return names;
}

} // namespace framepipe_examples::detection
