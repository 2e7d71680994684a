// examples/handpose/landmarks_csv.hpp - recorded hand landmarks, one row per frame and point.
//
//     frame,point,x,y,z,label
//     0,0,0.512,0.734,0,wave
//     0,1,0.468,0.702,0.011,wave
//     ...                                  (21 rows per frame: points 0-20, any order)
//
// - The header line is required: `frame,point,x,y,z` or `frame,point,x,y,z,label`.
// - frame: a non-negative integer; the rows of one frame are consecutive, and frame numbers
//   increase from one frame to the next (gaps are allowed: they are frames without a hand).
// - point: 0-20 in MediaPipe's order (wrist, then thumb, index, middle, ring, pinky, four each);
//   each exactly once per frame.
// - x, y: normalised image coordinates (0-1, origin top left), as MediaPipe gives them; z:
//   relative depth (any finite number; MediaPipe's z works as it is).
// - label (optional column, may be empty): the true gesture of the frame, one of idle,
//   swipe_left, swipe_right, wave, circle, grab; the same on all 21 rows of a frame. With
//   labels, the program reports accuracy.
// - Blank lines and lines starting with '#' are ignored; a trailing '\r' is ignored.
#pragma once

#include "hand.hpp"

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace handpose {

struct recorded_frame {
    std::uint64_t frame = 0;
    landmarks hand;
};

// Reads the whole file. Throws input_error "PATH:LINE: what is wrong" (one line) when the file
// is missing, empty, or malformed.
[[nodiscard]] std::vector<recorded_frame> read_landmarks_csv(const std::string& path);

// Writes rows as above, with the label column. Numbers are written in their shortest exact form,
// so reading them back gives the same floats.
class landmarks_csv_writer {
public:
    // Throws input_error when the file cannot be created.
    explicit landmarks_csv_writer(const std::string& path);
    // One thread at a time. Throws input_error when the write fails.
    void write(std::uint64_t frame, const landmarks& hand);
    // Flushes; throws input_error when that fails.
    void close();

private:
    std::string path_;
    std::ofstream out_;
};

} // namespace handpose
