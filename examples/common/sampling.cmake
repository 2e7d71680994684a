# The video samplers (included from CMakeLists.txt once the video examples' packages are found):
# motion_detector.hpp (Frigate-style motion), scene_change.hpp (histogram distance),
# key_frames.hpp (which frames of a file are key frames, from GStreamer's flags). See
# docs/sampling.md.
add_library(framepipe_examples_sampling STATIC motion_detector.cpp scene_change.cpp key_frames.cpp)
target_include_directories(framepipe_examples_sampling PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_include_directories(framepipe_examples_sampling SYSTEM PUBLIC ${OpenCV_INCLUDE_DIRS})
target_link_libraries(framepipe_examples_sampling PUBLIC framepipe_examples_gst opencv_core opencv_imgproc
                                                         opencv_videoio
                                                  PRIVATE framepipe_warnings)

if(FRAMEPIPE_BUILD_TESTS)
    # test_video_samplers: each sampler on short real clips with an expected outcome (a moving
    # clip passes the motion gate, a static one does not; a cut made by joining two clips fires;
    # vtest.avi's key frames; an MJPEG clip has no key-frame information).
    find_package(Catch2 2 REQUIRED)
    set(FRAMEPIPE_SAMPLING_TEST_DATA "/usr/share/doc/opencv-doc/examples/data"
        CACHE PATH "opencv-doc's example videos (vtest.avi, tree.avi), used by the samplers' tests")
    add_executable(test_video_samplers tests/test_video_samplers.cpp)
    target_compile_definitions(test_video_samplers PRIVATE
                               FRAMEPIPE_SAMPLING_TEST_DATA="${FRAMEPIPE_SAMPLING_TEST_DATA}")
    target_link_libraries(test_video_samplers PRIVATE framepipe_examples_sampling framepipe::framepipe
                                                      framepipe_catch_main Catch2::Catch2 framepipe_warnings)
    add_test(NAME test_video_samplers COMMAND test_video_samplers)
    set_tests_properties(test_video_samplers PROPERTIES TIMEOUT 120)
endif()
