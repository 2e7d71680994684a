# Tests of framepipe-detect (included from CMakeLists.txt when FRAMEPIPE_BUILD_TESTS is ON).
#
# - test_detection_decode:   YOLO decoding on hand-made tensors (no model files)
# - test_detection_models:   tiny ONNX / Darknet models made at test time by tests/make_models.py
#                            (Debian's python3-onnx + python3-numpy), HOG on vtest.avi
# - test_detection_program:  the program itself: JSON summary, bad input, the web endpoints,
#                            HTTP robustness, a stalled websocket client
# - test_detection_live:     the program on a live input against the test RTSP server
#                            (common/testing/rtsp_server.py): a killed and restarted server, a
#                            stall, an unserved URL (backoff, --max-attempts), a camera down at
#                            start, 50 reconnect cycles, bad flags
# - test_detection_live_age: (label long) a 60 fps stream read by a 5 fps detector for 20 s:
#                            the detector's input age does not grow
# - test_detection_browser:  the page in headless Debian chromium (playwright-core from npm)
# - test_detection_browser_live: the page's "offline since" marker while the server is down
find_package(Catch2 2 REQUIRED)
find_package(Boost 1.74 REQUIRED)

# Tools the tests run. Missing ones do not stop the configure step (scripts/demo builds the
# release preset without them); the tests that need them then fail, saying what is missing.
# scripts/test installs them all.
function(framepipe_detect_tool var name)
    find_program(${var} ${name} ${ARGN})
    if(NOT ${var})
        set(${var} "${CMAKE_COMMAND}" -P "${CMAKE_CURRENT_SOURCE_DIR}/tests/missing_tool.cmake" ${name} PARENT_SCOPE)
    endif()
endfunction()
# Debian's python (python3-onnx is installed for it), not a pyenv or venv one on PATH.
framepipe_detect_tool(FRAMEPIPE_DEBIAN_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
set(FRAMEPIPE_DETECT_TEST_VIDEO "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
    CACHE FILEPATH "vtest.avi from Debian's opencv-doc, used by framepipe-detect's tests")
set(_models "${CMAKE_CURRENT_BINARY_DIR}/test-models")

add_test(NAME test_detection_make_models
         COMMAND ${FRAMEPIPE_DEBIAN_PYTHON} "${CMAKE_CURRENT_SOURCE_DIR}/tests/make_models.py" "${_models}")
set_tests_properties(test_detection_make_models PROPERTIES FIXTURES_SETUP detection_models TIMEOUT 120)

add_executable(test_detection_decode tests/test_yolo_decode.cpp)
target_link_libraries(test_detection_decode PRIVATE framepipe_detection framepipe_catch_main
                                                    Catch2::Catch2 framepipe_warnings)
add_test(NAME test_detection_decode COMMAND test_detection_decode)

add_executable(test_detection_models tests/test_detectors.cpp)
target_compile_definitions(test_detection_models PRIVATE FRAMEPIPE_TEST_MODELS="${_models}"
                                                         FRAMEPIPE_TEST_VIDEO="${FRAMEPIPE_DETECT_TEST_VIDEO}")
target_link_libraries(test_detection_models PRIVATE framepipe_detection framepipe_catch_main
                                                    Catch2::Catch2 framepipe_warnings)
add_test(NAME test_detection_models COMMAND test_detection_models)
set_tests_properties(test_detection_models PROPERTIES FIXTURES_REQUIRED detection_models TIMEOUT 300)

add_executable(test_detection_program tests/test_program.cpp)
target_compile_definitions(test_detection_program PRIVATE
                           FRAMEPIPE_DETECT_EXE="$<TARGET_FILE:framepipe-detect>"
                           FRAMEPIPE_TEST_MODELS="${_models}"
                           FRAMEPIPE_TEST_VIDEO="${FRAMEPIPE_DETECT_TEST_VIDEO}")
target_include_directories(test_detection_program PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_link_libraries(test_detection_program PRIVATE framepipe_examples_video Boost::headers
                                                     nlohmann_json::nlohmann_json framepipe_catch_main
                                                     Catch2::Catch2 framepipe_warnings)
add_dependencies(test_detection_program framepipe-detect)
add_test(NAME test_detection_program COMMAND test_detection_program)
set_tests_properties(test_detection_program PROPERTIES FIXTURES_REQUIRED detection_models TIMEOUT 600)

# The program on a live input, against the test RTSP server (Debian's python3 with
# python3-gst-1.0 and the GstRtspServer typelib; scripts/test installs them).
add_executable(test_detection_live tests/test_live.cpp)
target_compile_definitions(test_detection_live PRIVATE
                           FRAMEPIPE_DETECT_EXE="$<TARGET_FILE:framepipe-detect>"
                           FRAMEPIPE_TEST_PYTHON="${FRAMEPIPE_DEBIAN_PYTHON}"
                           FRAMEPIPE_RTSP_SERVER="${CMAKE_CURRENT_SOURCE_DIR}/../common/testing/rtsp_server.py")
target_include_directories(test_detection_live PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_link_libraries(test_detection_live PRIVATE Boost::headers nlohmann_json::nlohmann_json
                                                  framepipe_catch_main Catch2::Catch2 framepipe_warnings)
target_compile_features(test_detection_live PRIVATE cxx_std_20)
add_dependencies(test_detection_live framepipe-detect)
add_test(NAME test_detection_live COMMAND test_detection_live)
set_tests_properties(test_detection_live PROPERTIES TIMEOUT 600 LABELS live)
# The long one: 20 s of a 60 fps stream (FRAMEPIPE_LIVE_AGE_SECONDS=60 for the documented run).
add_test(NAME test_detection_live_age COMMAND test_detection_live "[age]")
set_tests_properties(test_detection_live_age PROPERTIES TIMEOUT 300 LABELS "live;long")

# The page in headless chromium. Needs Debian's chromium and node, and `npm ci` in
# examples/common/browser (scripts/test does both); without node_modules the test fails, it is
# not skipped.
framepipe_detect_tool(FRAMEPIPE_NODE node)
find_program(FRAMEPIPE_CHROMIUM chromium PATHS /usr/bin)
if(NOT FRAMEPIPE_CHROMIUM)
    set(FRAMEPIPE_CHROMIUM /usr/bin/chromium) # the test fails to launch it, naming the path
endif()
add_test(NAME test_detection_browser
         COMMAND ${FRAMEPIPE_NODE} "${CMAKE_CURRENT_SOURCE_DIR}/tests/test_browser.mjs"
                 --exe "$<TARGET_FILE:framepipe-detect>"
                 --artifacts "${CMAKE_CURRENT_BINARY_DIR}/artifacts"
                 --chromium "${FRAMEPIPE_CHROMIUM}")
set_tests_properties(test_detection_browser PROPERTIES TIMEOUT 300)
add_test(NAME test_detection_browser_live
         COMMAND ${FRAMEPIPE_NODE} "${CMAKE_CURRENT_SOURCE_DIR}/tests/test_browser_live.mjs"
                 --exe "$<TARGET_FILE:framepipe-detect>"
                 --artifacts "${CMAKE_CURRENT_BINARY_DIR}/artifacts"
                 --chromium "${FRAMEPIPE_CHROMIUM}"
                 --rtsp-server "${CMAKE_CURRENT_SOURCE_DIR}/../common/testing/rtsp_server.py"
                 --python "${FRAMEPIPE_DEBIAN_PYTHON}")
set_tests_properties(test_detection_browser_live PROPERTIES TIMEOUT 300 LABELS live)
