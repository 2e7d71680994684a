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
    # The installed framepipe.pc must be usable on its own: its `--cflags --libs` are all a
    # Makefile user adds to the compile line.
    if(NOT PKG_CONFIG_EXECUTABLE)
        find_program(PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf REQUIRED)
    endif()
    set(ENV{PKG_CONFIG_PATH} "${prefix}/share/pkgconfig")
    # pkg_config(<out-var> <args...>): run pkg-config, fail the test if it fails.
    function(pkg_config out_var)
        string(JOIN " " printable ${ARGN})
        execute_process(
            COMMAND "${PKG_CONFIG_EXECUTABLE}" ${ARGN}
            RESULT_VARIABLE result
            OUTPUT_VARIABLE out
            OUTPUT_STRIP_TRAILING_WHITESPACE)
        if(NOT result EQUAL 0)
            message(FATAL_ERROR "[find_package] pkg-config ${printable} failed (${result})")
        endif()
        message(STATUS "[find_package] pkg-config ${printable}: ${out}")
        set(${out_var} "${out}" PARENT_SCOPE)
    endfunction()
    pkg_config(pc_version --modversion framepipe)
    pkg_config(pc_flags --cflags --libs framepipe)
    if(FRAMEPIPE_VERSION AND NOT pc_version VERSION_EQUAL FRAMEPIPE_VERSION)
        message(FATAL_ERROR "[find_package] pkg-config reports version '${pc_version}', "
                            "expected '${FRAMEPIPE_VERSION}'")
    endif()
    # The prefix is a scratch dir, never one the compiler searches by default, so the headers
    # must come in as system headers (see cmake/framepipe.pc.in for why).
    foreach(flag IN ITEMS "-std=c++20" "-isystem")
        string(REPLACE "+" "\\+" flag_regex "${flag}")
        if(NOT pc_flags MATCHES "(^| )${flag_regex}( |$)")
            message(FATAL_ERROR "[find_package] pkg-config --cflags lacks ${flag}: '${pc_flags}'")
        endif()
    endforeach()
    if(CONSUMER_CXX_COMPILER)
        separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
        set(pc_source "${CONSUMER_SOURCE_DIR}/main.cpp")
        # Nothing but the .pc's flags: GCC 12 defaults to gnu++17, so this builds only if the
        # .pc hands out -std=c++20.
        set(pc_exe "${CONSUMER_WORK_DIR}/pkg-config-consumer")
        run("pkg-config compile" "${CONSUMER_CXX_COMPILER}" "${pc_source}" -o "${pc_exe}" ${pc_flags})
        run("pkg-config run" "${pc_exe}")

        # A project that forces C++17 after our flags must get framepipe's own message rather
        # than pages of template errors.
        message(STATUS "[find_package] pkg-config compile with -std=c++17 (must fail)")
        execute_process(
            COMMAND "${CONSUMER_CXX_COMPILER}" ${pc_flags} -std=c++17 -fsyntax-only "${pc_source}"
            RESULT_VARIABLE result
            OUTPUT_VARIABLE out
            ERROR_VARIABLE out)
        if(result EQUAL 0)
            message(FATAL_ERROR "[find_package] framepipe compiled with -std=c++17; it must refuse")
        endif()
        if(NOT out MATCHES "framepipe needs C\\+\\+20")
            string(SUBSTRING "${out}" 0 2000 excerpt)
            message(FATAL_ERROR "[find_package] -std=c++17 failed, but without the message "
                                "'framepipe needs C++20'. Compiler output begins:\n${excerpt}")
        endif()
    endif()
endif()

message(STATUS "[${CONSUMER_KIND}] consumer OK")
