# --sampling for framepipe-detect, and the benchmark that scores every strategy (included from
# CMakeLists.txt). sampling.hpp: the spec and the cascade's regions, shared with the benchmark;
# sampled_pipeline.hpp: the sampler stage and the detector stage behind it (the program only).
add_library(framepipe_detection_sampling STATIC sampling.cpp)
target_link_libraries(framepipe_detection_sampling PUBLIC framepipe_detection framepipe_examples_sampling
                                                          framepipe_examples_common
                                                   PRIVATE nlohmann_json::nlohmann_json framepipe_warnings)

target_sources(framepipe-detect PRIVATE sampled_pipeline.cpp)
target_link_libraries(framepipe-detect PRIVATE framepipe_detection_sampling)

# benchmarks/sampling/run.sh builds and runs it (docs/sampling.md, "Measured").
add_executable(framepipe-bench-sampling ${PROJECT_SOURCE_DIR}/benchmarks/sampling/bench_sampling.cpp)
target_include_directories(framepipe-bench-sampling PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}")
target_link_libraries(framepipe-bench-sampling PRIVATE framepipe_detection_sampling
                                                       nlohmann_json::nlohmann_json framepipe_warnings)

if(FRAMEPIPE_BUILD_TESTS)
    # test_detection_sampling: the program with each --sampling strategy on a tiny clip (bad
    # specs, accounting on channel "detector", keyframes refused on MJPEG, the mask, the cascade);
    # test_detection_sampling_live: keyframes on an RTSP stream.
    find_package(Catch2 2 REQUIRED)
    # [live] needs Debian's python3 with python3-gst-1.0 and GstRtspServer (scripts/test).
    find_program(FRAMEPIPE_SAMPLING_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
    if(NOT FRAMEPIPE_SAMPLING_PYTHON)
        set(FRAMEPIPE_SAMPLING_PYTHON /usr/bin/python3)
    endif()
    add_executable(test_detection_sampling tests/test_sampling.cpp)
    target_compile_definitions(test_detection_sampling PRIVATE
                               FRAMEPIPE_DETECT_EXE="$<TARGET_FILE:framepipe-detect>"
                               FRAMEPIPE_TEST_PYTHON="${FRAMEPIPE_SAMPLING_PYTHON}"
                               FRAMEPIPE_RTSP_SERVER="${CMAKE_CURRENT_SOURCE_DIR}/../common/testing/rtsp_server.py"
                               FRAMEPIPE_TEST_MODELS="${CMAKE_CURRENT_BINARY_DIR}/test-models")
    target_include_directories(test_detection_sampling PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
    target_link_libraries(test_detection_sampling PRIVATE framepipe_examples_video
                                                          nlohmann_json::nlohmann_json
                                                          framepipe_catch_main Catch2::Catch2 framepipe_warnings)
    add_dependencies(test_detection_sampling framepipe-detect)
    add_test(NAME test_detection_sampling COMMAND test_detection_sampling "~[live]")
    # The cascade with --model needs the tiny models that test_detection_make_models writes.
    set_tests_properties(test_detection_sampling PROPERTIES TIMEOUT 300 FIXTURES_REQUIRED detection_models)
    # keyframes on a live RTSP stream (the test RTSP server, x264 with a key frame every 15).
    add_test(NAME test_detection_sampling_live COMMAND test_detection_sampling "[live]")
    set_tests_properties(test_detection_sampling_live PROPERTIES TIMEOUT 120 LABELS live)
endif()
