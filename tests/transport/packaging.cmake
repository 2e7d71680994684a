# The transport adapters as optional components of the installed package. Invoked by ctest as
#   cmake -DFRAMEPIPE_SOURCE_DIR=... -DWORK_DIR=... -DEXPECT_TRANSPORTS=iceoryx,nats|""
#         [-DDISABLE=ON] [-DCXX_COMPILER=...] [-DGENERATOR=...] -P packaging.cmake
#
# Configures framepipe (tests and examples off), with DISABLE=ON with the adapters' packages
# disabled (CMAKE_DISABLE_FIND_PACKAGE_iceoryx_posh, _cnats): the core must still configure,
# build and install, with nothing of the adapters installed. Then builds and runs
# consumer/ against the installed tree, asking for EXPECT_TRANSPORTS as required components and
# for the rest as optional ones (which must not be found). Any failure is a FATAL_ERROR.
cmake_minimum_required(VERSION 3.25)

function(run step)
    string(JOIN " " printable ${ARGN})
    message(STATUS "[transport packaging] ${step}: ${printable}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
    message("${out}")
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "[transport packaging] ${step} failed (${result})")
    endif()
    set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(build "${WORK_DIR}/build")
set(prefix "${WORK_DIR}/prefix")
set(args -S "${FRAMEPIPE_SOURCE_DIR}" -B "${build}" -DFRAMEPIPE_BUILD_TESTS=OFF
         -DFRAMEPIPE_BUILD_EXAMPLES=OFF "-DCMAKE_INSTALL_PREFIX=${prefix}")
if(GENERATOR)
    list(APPEND args -G "${GENERATOR}")
endif()
if(CXX_COMPILER)
    list(APPEND args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(DISABLE)
    list(APPEND args -DCMAKE_DISABLE_FIND_PACKAGE_iceoryx_posh=ON -DCMAKE_DISABLE_FIND_PACKAGE_cnats=ON)
endif()
run("configure" "${CMAKE_COMMAND}" ${args})
string(REPLACE "," ";" expected "${EXPECT_TRANSPORTS}")
if(NOT last_output MATCHES "framepipe: transport adapters: ([a-z;]*)")
    message(FATAL_ERROR "[transport packaging] the configure step did not list the adapters")
endif()
if(NOT "${CMAKE_MATCH_1}" STREQUAL "${expected}")
    message(FATAL_ERROR "[transport packaging] adapters '${CMAKE_MATCH_1}', expected '${expected}'")
endif()
run("build" "${CMAKE_COMMAND}" --build "${build}")
run("install" "${CMAKE_COMMAND}" --install "${build}")

foreach(t IN ITEMS iceoryx nats)
    set(header "${prefix}/include/framepipe/transport/${t}.hpp")
    set(targets "${prefix}/share/cmake/framepipe/framepipe_${t}Targets.cmake")
    if(t IN_LIST expected)
        if(NOT EXISTS "${header}" OR NOT EXISTS "${targets}")
            message(FATAL_ERROR "[transport packaging] ${t}: header or targets not installed")
        endif()
    elseif(EXISTS "${header}" OR EXISTS "${targets}")
        message(FATAL_ERROR "[transport packaging] ${t} installed although its package is absent")
    endif()
endforeach()

set(consumer_args -S "${CMAKE_CURRENT_LIST_DIR}/consumer" -B "${WORK_DIR}/consumer"
                  "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
                  "-DEXPECT_TRANSPORTS=${EXPECT_TRANSPORTS}")
if(GENERATOR)
    list(APPEND consumer_args -G "${GENERATOR}")
endif()
if(CXX_COMPILER)
    list(APPEND consumer_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
run("consumer configure" "${CMAKE_COMMAND}" ${consumer_args})
run("consumer build" "${CMAKE_COMMAND}" --build "${WORK_DIR}/consumer")
run("consumer run" "${CMAKE_CTEST_COMMAND}" --test-dir "${WORK_DIR}/consumer" --output-on-failure
    --no-tests=error)

# The same consumer configures (a) with CMAKE_FIND_PACKAGE_PREFER_CONFIG, and (b) against the
# build tree as a package (-Dframepipe_DIR=<build dir>): in both, cnats must come from
# Findcnats.cmake, never from Debian's cnats config, which stops the configure step (review).
list(REMOVE_ITEM consumer_args -S "${CMAKE_CURRENT_LIST_DIR}/consumer" -B "${WORK_DIR}/consumer")
set(source -S "${CMAKE_CURRENT_LIST_DIR}/consumer")
run("consumer configure, prefer config" "${CMAKE_COMMAND}" ${source} -B "${WORK_DIR}/prefer-config"
    ${consumer_args} -DCMAKE_FIND_PACKAGE_PREFER_CONFIG=ON)
list(FILTER consumer_args EXCLUDE REGEX "^-DCMAKE_PREFIX_PATH=")
run("consumer configure, build tree" "${CMAKE_COMMAND}" ${source} -B "${WORK_DIR}/build-tree"
    ${consumer_args} "-Dframepipe_DIR=${build}")
# A component framepipe does not have: one line naming it and the components there are.
execute_process(COMMAND "${CMAKE_COMMAND}" ${source} -B "${WORK_DIR}/no-such" ${consumer_args}
                        "-Dframepipe_DIR=${build}" -DEXPECT_TRANSPORTS=foo
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
set(why "framepipe has no component 'foo' \\(components: iceoryx, nats\\)")
if(result EQUAL 0 OR NOT out MATCHES "${why}")
    message(FATAL_ERROR "[transport packaging] component foo: expected a failure naming it, "
                        "got (${result}):\n${out}")
endif()
message(STATUS "[transport packaging] OK (${expected})")
