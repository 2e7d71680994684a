// framepipe/version.hpp - the library's version, as macros and as constants.
//
// Kept in step with project(VERSION) in CMakeLists.txt; the build checks that they agree.
#pragma once

#include <framepipe/detail/config.hpp>

#define FRAMEPIPE_VERSION_MAJOR 0
#define FRAMEPIPE_VERSION_MINOR 1
#define FRAMEPIPE_VERSION_PATCH 0

// One integer that orders releases: major * 10000 + minor * 100 + patch.
#define FRAMEPIPE_VERSION                                                                          \
    (FRAMEPIPE_VERSION_MAJOR * 10000 + FRAMEPIPE_VERSION_MINOR * 100 + FRAMEPIPE_VERSION_PATCH)

namespace framepipe {

inline constexpr int version_major = FRAMEPIPE_VERSION_MAJOR;
inline constexpr int version_minor = FRAMEPIPE_VERSION_MINOR;
inline constexpr int version_patch = FRAMEPIPE_VERSION_PATCH;

} // namespace framepipe
