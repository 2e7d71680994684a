# Findcnats.cmake - finds nats.c (the NATS C client) as the imported target cnats::nats.
#
# nats.c installs a CMake config of its own (cnats-config.cmake), but Debian 12's (libnats-dev
# 3.4.1) names a static library the package does not ship, so loading it stops the configure step
# with an error. This module finds the header and the shared library directly instead, and is
# what framepipe's build and its installed framepipeConfig.cmake use. CMAKE_DISABLE_FIND_PACKAGE_cnats
# turns it off like any package.
#
# Result: cnats_FOUND, cnats_VERSION (from nats/version.h), the target cnats::nats.
find_path(cnats_INCLUDE_DIR nats/nats.h)
# The shared library only: a static one (nats_static, as vcpkg's static triplets build it) needs
# OpenSSL, libsodium and protobuf-c linked after it, which this imported target does not name.
find_library(cnats_LIBRARY NAMES nats)
if(cnats_INCLUDE_DIR AND EXISTS "${cnats_INCLUDE_DIR}/nats/version.h")
    file(STRINGS "${cnats_INCLUDE_DIR}/nats/version.h" _cnats_version_line
         REGEX "^#define NATS_VERSION_STRING +\"[^\"]+\"")
    string(REGEX REPLACE ".*\"([^\"]+)\".*" "\\1" cnats_VERSION "${_cnats_version_line}")
    unset(_cnats_version_line)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(cnats REQUIRED_VARS cnats_LIBRARY cnats_INCLUDE_DIR
                                  VERSION_VAR cnats_VERSION)
mark_as_advanced(cnats_INCLUDE_DIR cnats_LIBRARY)

if(cnats_FOUND AND NOT TARGET cnats::nats)
    add_library(cnats::nats UNKNOWN IMPORTED)
    set_target_properties(cnats::nats PROPERTIES IMPORTED_LOCATION "${cnats_LIBRARY}"
                                                 INTERFACE_INCLUDE_DIRECTORIES "${cnats_INCLUDE_DIR}")
endif()
