# Proves that packaging framepipe needs only a compiler and CMake. Invoked by ctest as
#   cmake -DFRAMEPIPE_SOURCE_DIR=... -DCONSUMER_WORK_DIR=... [-DCONSUMER_GENERATOR=...]
#         [-DCONSUMER_CXX_COMPILER=...] [-DCONSUMER_USR_INCLUDE_IS_DEFAULT=ON|OFF]
#         -P minimal_configure.cmake
#
# 1. Configures the source tree with tests and examples off while find_package() is disabled for
#    every third-party package the tests and examples use (a REQUIRED find of a disabled package
#    is a configure error), then builds and installs into a scratch prefix and checks the tree.
# 2. Installs again, staged with DESTDIR, for prefix /usr: framepipe.pc must then carry no
#    -isystem (see cmake/framepipe.pc.in).
# 3. Configures the dev and release presets with the examples off and the examples' packages
#    disabled: the presets must not pull the video packages in on their own.
# Any failure ends the script with FATAL_ERROR, which makes the test fail.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS FRAMEPIPE_SOURCE_DIR CONSUMER_WORK_DIR)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "minimal_configure.cmake: ${var} is not set")
    endif()
endforeach()

# run(<step> <command...>): echo and execute a command, fail loudly on error.
function(run step)
    string(JOIN " " printable ${ARGN})
    message(STATUS "[minimal] ${step}: ${printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "[minimal] ${step} failed (${result})")
    endif()
endfunction()

# Cflags line of an installed framepipe.pc, read as text so that the check does not depend on
# which pkg-config implementation is installed.
function(read_pc_cflags pc_file out_var)
    if(NOT EXISTS "${pc_file}")
        message(FATAL_ERROR "[minimal] ${pc_file} was not installed")
    endif()
    file(STRINGS "${pc_file}" cflags REGEX "^Cflags:")
    set(${out_var} "${cflags}" PARENT_SCOPE)
endfunction()

# Start from scratch every time so stale caches cannot hide problems.
file(REMOVE_RECURSE "${CONSUMER_WORK_DIR}")
file(MAKE_DIRECTORY "${CONSUMER_WORK_DIR}")

set(test_and_example_packages Catch2 CLI11 nlohmann_json OpenCV Boost)
set(example_packages CLI11 nlohmann_json OpenCV Boost)
set(compiler_args "")
if(CONSUMER_CXX_COMPILER)
    list(APPEND compiler_args "-DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}")
endif()

# --- 1. tests and examples off: compiler and CMake only ---------------------------------------
set(build "${CONSUMER_WORK_DIR}/build")
set(prefix "${CONSUMER_WORK_DIR}/prefix")
set(configure_args -S "${FRAMEPIPE_SOURCE_DIR}" -B "${build}" ${compiler_args}
                   -DFRAMEPIPE_BUILD_TESTS=OFF -DFRAMEPIPE_BUILD_EXAMPLES=OFF
                   "-DCMAKE_INSTALL_PREFIX=${prefix}")
if(CONSUMER_GENERATOR)
    list(APPEND configure_args -G "${CONSUMER_GENERATOR}")
endif()
foreach(package IN LISTS test_and_example_packages)
    list(APPEND configure_args "-DCMAKE_DISABLE_FIND_PACKAGE_${package}=ON")
endforeach()
run("configure" "${CMAKE_COMMAND}" ${configure_args})
run("build" "${CMAKE_COMMAND}" --build "${build}")
run("install" "${CMAKE_COMMAND}" --install "${build}")

# Every header of the library, detail/ included, installed unchanged.
file(GLOB headers RELATIVE "${FRAMEPIPE_SOURCE_DIR}/include"
     "${FRAMEPIPE_SOURCE_DIR}/include/framepipe/*.hpp"
     "${FRAMEPIPE_SOURCE_DIR}/include/framepipe/detail/*.hpp")
if(NOT headers)
    message(FATAL_ERROR "[minimal] no headers found under ${FRAMEPIPE_SOURCE_DIR}/include")
endif()
foreach(header IN LISTS headers)
    if(NOT EXISTS "${prefix}/include/${header}")
        message(FATAL_ERROR "[minimal] include/${header} was not installed")
    endif()
    file(SHA256 "${FRAMEPIPE_SOURCE_DIR}/include/${header}" source_hash)
    file(SHA256 "${prefix}/include/${header}" installed_hash)
    if(NOT source_hash STREQUAL installed_hash)
        message(FATAL_ERROR "[minimal] include/${header} differs from the source tree's")
    endif()
endforeach()
foreach(file IN ITEMS framepipeConfig.cmake framepipeConfigVersion.cmake framepipeTargets.cmake)
    if(NOT EXISTS "${prefix}/share/cmake/framepipe/${file}")
        message(FATAL_ERROR "[minimal] share/cmake/framepipe/${file} was not installed")
    endif()
endforeach()
read_pc_cflags("${prefix}/share/pkgconfig/framepipe.pc" cflags)
if(NOT cflags STREQUAL [[Cflags: -std=c++20 -isystem ${includedir}]])
    message(FATAL_ERROR "[minimal] framepipe.pc for a scratch prefix has '${cflags}', "
                        "expected 'Cflags: -std=c++20 -isystem \${includedir}'")
endif()
# Header-only and architecture independent: nothing may land outside include/ and share/.
file(STRINGS "${build}/install_manifest.txt" installed)
foreach(file IN LISTS installed)
    cmake_path(IS_PREFIX prefix "${file}" NORMALIZE inside)
    file(RELATIVE_PATH relative "${prefix}" "${file}")
    if(NOT inside OR NOT relative MATCHES "^(include|share)/")
        message(FATAL_ERROR "[minimal] unexpected installed file ${file}")
    endif()
endforeach()
list(LENGTH headers header_count)
list(LENGTH installed installed_count)
message(STATUS "[minimal] installed tree OK: ${header_count} headers, ${installed_count} files")

# --- 2. a staged install for /usr ---------------------------------------------------------------
if(CONSUMER_USR_INCLUDE_IS_DEFAULT)
    set(stage "${CONSUMER_WORK_DIR}/stage")
    run("staged install for /usr" "${CMAKE_COMMAND}" -E env "DESTDIR=${stage}"
        "${CMAKE_COMMAND}" --install "${build}" --prefix /usr)
    read_pc_cflags("${stage}/usr/share/pkgconfig/framepipe.pc" cflags)
    if(NOT cflags STREQUAL "Cflags: -std=c++20")
        message(FATAL_ERROR "[minimal] framepipe.pc for /usr has '${cflags}', expected "
                            "'Cflags: -std=c++20' (-isystem /usr/include breaks #include_next)")
    endif()
else()
    message(STATUS "[minimal] the compiler does not search /usr/include by default: "
                   "staged /usr install not checked")
endif()

# --- 3. the presets, examples off -----------------------------------------------------------------
foreach(preset IN ITEMS dev release)
    set(preset_args --preset "${preset}" -S "${FRAMEPIPE_SOURCE_DIR}"
                    -B "${CONSUMER_WORK_DIR}/preset-${preset}" ${compiler_args}
                    -DFRAMEPIPE_BUILD_EXAMPLES=OFF)
    foreach(package IN LISTS example_packages)
        list(APPEND preset_args "-DCMAKE_DISABLE_FIND_PACKAGE_${package}=ON")
    endforeach()
    run("configure preset ${preset}" "${CMAKE_COMMAND}" ${preset_args})
endforeach()

message(STATUS "[minimal] OK")
