# Header-only: one build is enough, there is nothing to build twice for debug.
set(VCPKG_BUILD_TYPE release)

if(DEFINED ENV{FRAMEPIPE_SOURCE_DIR})
    # A local checkout instead of the release tarball: lets the repository test this very port
    # offline (scripts/test-vcpkg). vcpkg does not hash these sources into the package ABI, so
    # after changing them use a fresh vcpkg_installed/ and no binary cache.
    set(SOURCE_PATH "$ENV{FRAMEPIPE_SOURCE_DIR}")
    if(NOT EXISTS "${SOURCE_PATH}/CMakeLists.txt")
        message(FATAL_ERROR "FRAMEPIPE_SOURCE_DIR=${SOURCE_PATH} is not a framepipe checkout")
    endif()
else()
    vcpkg_from_github(
        OUT_SOURCE_PATH SOURCE_PATH
        REPO framepipe/framepipe
        REF "v${VERSION}"
        # No release tag is published yet, so there is no tarball to hash. With 0, vcpkg downloads
        # the tarball, refuses it and prints its real SHA512 to paste here (`vcpkg hash` on the
        # downloaded file gives the same). A `git archive` of the tag hashes differently.
        SHA512 0
        HEAD_REF main)
endif()

# The optional transport adapters are port features: a feature asked for makes its package
# required (FRAMEPIPE_WITH_<ADAPTER>=ON), one not asked for is never built (OFF), so the port never
# picks up an iceoryx or nats.c that happens to be installed. Documented, not yet tested: the
# test machines install both from Debian, not vcpkg (scripts/test-vcpkg builds the default port).
set(FRAMEPIPE_WITH_ICEORYX OFF)
set(FRAMEPIPE_WITH_NATS OFF)
if("iceoryx" IN_LIST FEATURES)
    set(FRAMEPIPE_WITH_ICEORYX ON)
endif()
if("nats" IN_LIST FEATURES)
    set(FRAMEPIPE_WITH_NATS ON)
endif()
vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DFRAMEPIPE_WITH_ICEORYX=${FRAMEPIPE_WITH_ICEORYX}
        -DFRAMEPIPE_WITH_NATS=${FRAMEPIPE_WITH_NATS}
        -DFRAMEPIPE_BUILD_TESTS=OFF
        -DFRAMEPIPE_BUILD_EXAMPLES=OFF
        -DFRAMEPIPE_BUILD_BENCHMARKS=OFF)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME framepipe CONFIG_PATH share/cmake/framepipe)
vcpkg_fixup_pkgconfig()

vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
