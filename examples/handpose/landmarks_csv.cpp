#include "landmarks_csv.hpp"

#include "estimator.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <string_view>
#include <system_error>

namespace handpose {
namespace {

std::vector<std::string_view> split(std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (;;) {
        const auto comma = line.find(',', start);
        out.push_back(line.substr(start, comma == std::string_view::npos ? comma : comma - start));
        if (comma == std::string_view::npos) {
            return out;
        }
        start = comma + 1;
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
        s.remove_suffix(1);
    }
    return s;
}

template <class T>
bool parse(std::string_view s, T& v) {
    s = trim(s);
    if (s.empty()) {
        return false;
    }
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

} // namespace

std::vector<recorded_frame> read_landmarks_csv(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        throw input_error("--landmarks " + path + ": cannot open");
    }
    std::size_t line_no = 0;
    const auto fail = [&](const std::string& why) {
        return input_error("--landmarks " + path + ":" + std::to_string(line_no) + ": " + why);
    };
    std::string line;
    bool has_label = false;
    bool header = false;
    std::vector<recorded_frame> out;
    std::array<bool, joint_count> seen{};
    std::size_t rows_in_frame = 0;
    auto finish_frame = [&] {
        if (!out.empty() && rows_in_frame != joint_count) {
            throw fail("frame " + std::to_string(out.back().frame) + " has " +
                       std::to_string(rows_in_frame) + " points, expected 21");
        }
    };
    while (std::getline(in, line)) {
        ++line_no;
        const auto t = trim(line);
        if (t.empty() || t.front() == '#') {
            continue;
        }
        const auto cols = split(t);
        if (!header) {
            std::string h;
            for (const auto c : cols) {
                h += std::string(trim(c)) + ",";
            }
            if (h == "frame,point,x,y,z,") {
                has_label = false;
            } else if (h == "frame,point,x,y,z,label,") {
                has_label = true;
            } else {
                throw fail("expected the header frame,point,x,y,z[,label]");
            }
            header = true;
            continue;
        }
        if (cols.size() != (has_label ? 6U : 5U)) {
            throw fail("expected " + std::to_string(has_label ? 6 : 5) + " columns, found " +
                       std::to_string(cols.size()));
        }
        std::uint64_t frame = 0;
        int point = 0;
        std::array<float, 3> xyz{};
        if (!parse(cols[0], frame)) {
            throw fail("frame: not a non-negative integer");
        }
        if (!parse(cols[1], point) || point < 0 || point >= static_cast<int>(joint_count)) {
            throw fail("point: must be an integer 0-20");
        }
        for (std::size_t k = 0; k < 3; ++k) {
            if (!parse(cols[2 + k], xyz[k]) || !std::isfinite(xyz[k])) {
                throw fail(std::string(1, "xyz"[k]) + ": not a finite number");
            }
        }
        std::optional<gesture> label;
        if (has_label && !trim(cols[5]).empty()) {
            label = gesture_from_name(trim(cols[5]));
            if (!label) {
                throw fail("label: unknown gesture \"" + std::string(trim(cols[5])) + "\"");
            }
        }
        if (out.empty() || frame != out.back().frame) {
            if (!out.empty() && frame < out.back().frame) {
                throw fail("frame numbers must increase (frame " + std::to_string(frame) +
                           " after frame " + std::to_string(out.back().frame) + ")");
            }
            finish_frame();
            out.push_back({frame, {}});
            out.back().hand.truth = label;
            seen.fill(false);
            rows_in_frame = 0;
        } else if (out.back().hand.truth != label) {
            throw fail("label: differs from the frame's other rows");
        }
        const auto p = static_cast<std::size_t>(point);
        if (seen[p]) {
            throw fail("point " + std::to_string(point) + " appears twice in frame " +
                       std::to_string(frame));
        }
        seen[p] = true;
        ++rows_in_frame;
        for (std::size_t k = 0; k < 3; ++k) {
            out.back().hand.points[3 * p + k] = xyz[k];
        }
        out.back().hand.joints_found = static_cast<std::uint8_t>(rows_in_frame);
    }
    if (!header) {
        throw fail("empty file (expected the header frame,point,x,y,z[,label])");
    }
    finish_frame();
    if (out.empty()) {
        throw fail("no frames");
    }
    return out;
}

landmarks_csv_writer::landmarks_csv_writer(const std::string& path) : path_(path), out_(path) {
    if (!out_) {
        throw input_error("--write-landmarks " + path + ": cannot open for writing");
    }
    out_ << "frame,point,x,y,z,label\n";
}

void landmarks_csv_writer::write(std::uint64_t frame, const landmarks& hand) {
    std::string rows;
    std::array<char, 64> buf{};
    const std::string label = hand.truth ? std::string(name_of(*hand.truth)) : std::string();
    for (std::size_t j = 0; j < joint_count; ++j) {
        rows += std::to_string(frame) + "," + std::to_string(j);
        for (std::size_t k = 0; k < 3; ++k) {
            // Shortest form that reads back as the same float.
            const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), hand.points[3 * j + k]);
            rows += ',';
            rows.append(buf.data(), r.ptr);
        }
        rows += "," + label + "\n";
    }
    out_ << rows;
    if (!out_) {
        throw input_error("--write-landmarks " + path_ + ": write failed");
    }
}

void landmarks_csv_writer::close() {
    out_.flush();
    if (!out_) {
        throw input_error("--write-landmarks " + path_ + ": write failed");
    }
    out_.close();
}

} // namespace handpose
