# Builds and runs one consumer project. Invoked by ctest as
#   cmake -DCONSUMER_KIND=subdirectory|find_package -DCONSUMER_SOURCE_DIR=...
#         -DCONSUMER_WORK_DIR=... -DFRAMEPIPE_SOURCE_DIR=... -DFRAMEPIPE_BINARY_DIR=...
#         [-DCONSUMER_GENERATOR=...] [-DCONSUMER_CXX_COMPILER=...] [-DCONSUMER_CONFIG=...]
#         [-DFRAMEPIPE_VERSION=...] [-DPKG_CONFIG_EXECUTABLE=...] -P run_consumer.cmake
# Any failure ends the script with FATAL_ERROR, which makes the test fail.
cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS CONSUMER_KIND CONSUMER_SOURCE_DIR CONSUMER_WORK_DIR FRAMEPIPE_SOURCE_DIR)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
    endif()
endforeach()
if(NOT CONSUMER_CONFIG)
    set(CONSUMER_CONFIG Release)
endif()

# run(<step> <command...>): echo and execute a command, fail loudly on error.
function(run step)
    string(JOIN " " printable ${ARGN})
    message(STATUS "[${CONSUMER_KIND}] ${step}: ${printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "[${CONSUMER_KIND}] ${step} failed (${result})")
    endif()
endfunction()

# Start from scratch every time so stale caches cannot hide problems.
file(REMOVE_RECURSE "${CONSUMER_WORK_DIR}")
file(MAKE_DIRECTORY "${CONSUMER_WORK_DIR}")
set(consumer_build "${CONSUMER_WORK_DIR}/build")

set(configure_args -S "${CONSUMER_SOURCE_DIR}" -B "${consumer_build}"
                   "-DCMAKE_BUILD_TYPE=${CONSUMER_CONFIG}")
if(CONSUMER_GENERATOR)
    list(APPEND configure_args -G "${CONSUMER_GENERATOR}")
endif()
if(CONSUMER_CXX_COMPILER)
    list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}")
endif()

if(CONSUMER_KIND STREQUAL "subdirectory")
    list(APPEND configure_args "-DFRAMEPIPE_SOURCE_DIR=${FRAMEPIPE_SOURCE_DIR}")

elseif(CONSUMER_KIND STREQUAL "find_package")
    if(NOT FRAMEPIPE_BINARY_DIR)
        message(FATAL_ERROR "run_consumer.cmake: FRAMEPIPE_BINARY_DIR is not set")
    endif()
    set(prefix "${CONSUMER_WORK_DIR}/prefix")
    run("install" "${CMAKE_COMMAND}" --install "${FRAMEPIPE_BINARY_DIR}" --prefix "${prefix}"
        --config "${CONSUMER_CONFIG}")
    list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${prefix}" "-DFRAMEPIPE_EXPECTED_PREFIX=${prefix}"
         -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)

else()
    message(FATAL_ERROR "run_consumer.cmake: unknown CONSUMER_KIND '${CONSUMER_KIND}'")
endif()

run("configure" "${CMAKE_COMMAND}" ${configure_args})
run("build" "${CMAKE_COMMAND}" --build "${consumer_build}" --config "${CONSUMER_CONFIG}")
# Each consumer registers its executable as a test; this runs it generator-agnostically.
run("run" "${CMAKE_CTEST_COMMAND}" --test-dir "${consumer_build}" -C "${CONSUMER_CONFIG}"
    --output-on-failure --no-tests=error)

if(CONSUMER_KIND STREQUAL "find_package")
    # The installed framepipe.pc must be usable on its own: query it, then
    # compile the same consumer with nothing but the flags it hands out.
    if(NOT PKG_CONFIG_EXECUTABLE)
        find_program(PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf REQUIRED)
    endif()
    set(ENV{PKG_CONFIG_PATH} "${prefix}/share/pkgconfig")
    foreach(query IN ITEMS --cflags --libs --modversion)
        execute_process(
            COMMAND "${PKG_CONFIG_EXECUTABLE}" ${query} framepipe
            RESULT_VARIABLE result
            OUTPUT_VARIABLE out
            OUTPUT_STRIP_TRAILING_WHITESPACE)
        if(NOT result EQUAL 0)
            message(FATAL_ERROR "[find_package] pkg-config ${query} framepipe failed (${result})")
        endif()
        message(STATUS "[find_package] pkg-config ${query} framepipe: ${out}")
        set(pc${query} "${out}")
    endforeach()
    if(FRAMEPIPE_VERSION AND NOT pc--modversion VERSION_EQUAL FRAMEPIPE_VERSION)
        message(FATAL_ERROR "[find_package] pkg-config reports version '${pc--modversion}', "
                            "expected '${FRAMEPIPE_VERSION}'")
    endif()
    if(CONSUMER_CXX_COMPILER)
        separate_arguments(pc_cflags UNIX_COMMAND "${pc--cflags}")
        separate_arguments(pc_libs UNIX_COMMAND "${pc--libs}")
        set(pc_exe "${CONSUMER_WORK_DIR}/pkg-config-consumer")
        run("pkg-config compile" "${CONSUMER_CXX_COMPILER}" -std=c++20 ${pc_cflags}
            "${CONSUMER_SOURCE_DIR}/main.cpp" -o "${pc_exe}" ${pc_libs})
        run("pkg-config run" "${pc_exe}")
    endif()
endif()

message(STATUS "[${CONSUMER_KIND}] consumer OK")
