// examples/handpose/hand.hpp - the 21-point hand, the gesture vocabulary, the landmark record.
//
// The topology is MediaPipe's: point 0 is the wrist, then four points per finger from the palm
// outwards: thumb 1-4 (CMC, MCP, IP, tip), index 5-8, middle 9-12, ring 13-16, pinky 17-20.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace handpose {

inline constexpr std::size_t joint_count = 21;
inline constexpr std::size_t values_per_joint = 3; // x, y, z

// 21 points of x, y, z. x and y are normalised to the image ([0, 1], left/top = 0); z is a
// relative depth in hand-size units, larger = nearer the camera, 0 at the hand's plane.
using hand_points = std::array<float, joint_count * values_per_joint>;

// Bones drawn between points (MediaPipe's HAND_CONNECTIONS).
inline constexpr std::array<std::pair<int, int>, 21> bones{{
    {0, 1},   {1, 2},   {2, 3},   {3, 4},                  // thumb
    {0, 5},   {5, 6},   {6, 7},   {7, 8},                  // index
    {9, 10},  {10, 11}, {11, 12},                          // middle
    {13, 14}, {14, 15}, {15, 16},                          // ring
    {0, 17},  {17, 18}, {18, 19}, {19, 20},                // pinky
    {5, 9},   {9, 13},  {13, 17},                          // palm
}};

// The gesture vocabulary, in the order an ONNX classifier's outputs must follow.
enum class gesture : std::uint8_t { idle, swipe_left, swipe_right, wave, circle, grab };
inline constexpr std::size_t gesture_count = 6;
inline constexpr std::array<std::string_view, gesture_count> gesture_names{
    "idle", "swipe_left", "swipe_right", "wave", "circle", "grab"};

[[nodiscard]] constexpr std::string_view name_of(gesture g) noexcept {
    return gesture_names[static_cast<std::size_t>(g)];
}

[[nodiscard]] constexpr std::optional<gesture> gesture_from_name(std::string_view s) noexcept {
    for (std::size_t i = 0; i < gesture_count; ++i) {
        if (gesture_names[i] == s) {
            return static_cast<gesture>(i);
        }
    }
    return std::nullopt;
}

// One hand observation: what the estimator (or a landmark file) says about one frame, and, when
// the source knows it, the true gesture of that frame (for accuracy only; never used to estimate
// or classify).
struct landmarks {
    hand_points points{};
    std::uint8_t joints_found = 0;        // how many points were seen in this frame (<= 21)
    std::optional<gesture> truth;         // the generator's label, or the CSV's label column
};

} // namespace handpose
