# Tests of framepipe-multicam (included from CMakeLists.txt when FRAMEPIPE_BUILD_TESTS is ON).
#
# - test_multicam_program: the program end to end (tests/test_program.cpp): bad input at start;
#   a file, three synthetic and an RTSP camera whose server is killed and restarted (label
#   live); cameras added and removed over HTTP and every refusal of the control endpoints;
#   --max-active with --rotate; /metrics through promtool.
# The tiny ONNX models come from framepipe-detect's fixture (detection_models).
find_package(Catch2 2 REQUIRED)
find_package(Boost 1.74 REQUIRED)

# promtool (Debian's prometheus package; scripts/test installs it). Missing, the metrics checks
# fail saying so.
find_program(FRAMEPIPE_PROMTOOL promtool)
if(NOT FRAMEPIPE_PROMTOOL)
    set(FRAMEPIPE_PROMTOOL "promtool-is-missing")
endif()
find_program(FRAMEPIPE_MULTICAM_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT FRAMEPIPE_MULTICAM_PYTHON)
    set(FRAMEPIPE_MULTICAM_PYTHON /usr/bin/python3)
endif()

add_executable(test_multicam_program tests/test_program.cpp)
target_compile_definitions(test_multicam_program PRIVATE
    FRAMEPIPE_MULTICAM_EXE="$<TARGET_FILE:framepipe-multicam>"
    FRAMEPIPE_TEST_MODELS="${CMAKE_BINARY_DIR}/examples/detection/test-models"
    FRAMEPIPE_TEST_VIDEO="/usr/share/doc/opencv-doc/examples/data/vtest.avi"
    FRAMEPIPE_TEST_PYTHON="${FRAMEPIPE_MULTICAM_PYTHON}"
    FRAMEPIPE_RTSP_SERVER="${CMAKE_CURRENT_SOURCE_DIR}/../common/testing/rtsp_server.py"
    FRAMEPIPE_PROMTOOL="${FRAMEPIPE_PROMTOOL}")
target_include_directories(test_multicam_program PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_link_libraries(test_multicam_program PRIVATE Boost::headers nlohmann_json::nlohmann_json
                                                    framepipe_catch_main Catch2::Catch2
                                                    framepipe_warnings)
target_compile_features(test_multicam_program PRIVATE cxx_std_20)
add_dependencies(test_multicam_program framepipe-multicam)
add_test(NAME test_multicam_program COMMAND test_multicam_program)
set_tests_properties(test_multicam_program PROPERTIES FIXTURES_REQUIRED detection_models
                                                      TIMEOUT 600 LABELS live)

# - test_multicam_units: the parts without the program (tests/test_units.cpp): the accounting
#   identity across pauses, rotations and removals (synthetic cameras, a stand-in detector), the
#   fairness index and its attainable shares, the rotation's clock, a POST /cameras cut short by
#   the server's stop (503), URL schemes in any case. Deterministic assertions.
add_executable(test_multicam_units tests/test_units.cpp)
target_link_libraries(test_multicam_units PRIVATE framepipe_multicam framepipe_catch_main
                                                  Catch2::Catch2 framepipe_warnings)
add_test(NAME test_multicam_units COMMAND test_multicam_units)
set_tests_properties(test_multicam_units PROPERTIES TIMEOUT 120)
