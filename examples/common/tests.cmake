# Tests of examples/common (included from CMakeLists.txt when FRAMEPIPE_BUILD_TESTS is ON and
# the video examples' packages were found).
#
# - test_gst_capture: the backend against testing/rtsp_server.py (started by the test on a free
#   port), files, a missing camera, unserved and silent servers; 50 open/close cycles; frames
#   that cannot be converted; URI schemes in any case; an HTTP MJPEG part that never ends.
# - test_doc_live_backend: the custom backend example of docs/live_sources.md, compiled and run.
# - test_synthetic_camera: synthetic_camera.hpp's URIs and frames, and a live_camera reading them.
# - test_web_control: web_server.hpp's control requests: Host/Origin checks and every refusal.
# - test_web_server_fuzz, test_web_server_clients, test_web_server_descriptors: web_server.hpp
#   under hostile clients (10^4 malformed requests; non-reading, looping and flooding clients
#   beside a well-behaved one; running out of descriptors), against tests/web_server_fixture.cpp,
#   the server alone in its own process.
# - test_http_client: testing/http_client.hpp's reads give up on a server that never answers.
# - test_program: program.hpp's stop signals (the first asks for an orderly stop, a second kills).
# - test_mat_codecs: mat_codecs.hpp's JPEG codec refuses a frame over max_side before decoding it.
find_package(Catch2 2 REQUIRED)

# Debian's python (python3-gst-1.0 and the GstRtspServer typelib are installed for it), not a
# pyenv or venv one on PATH. Missing, the test fails saying so (scripts/test installs it).
find_program(FRAMEPIPE_GST_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT FRAMEPIPE_GST_PYTHON)
    set(FRAMEPIPE_GST_PYTHON /usr/bin/python3)
endif()
set(FRAMEPIPE_GST_TEST_VIDEO "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
    CACHE FILEPATH "vtest.avi from Debian's opencv-doc, used by gst_capture's tests")

add_executable(test_gst_capture tests/test_gst_capture.cpp)
target_compile_definitions(test_gst_capture PRIVATE
                           FRAMEPIPE_TEST_PYTHON="${FRAMEPIPE_GST_PYTHON}"
                           FRAMEPIPE_RTSP_SERVER="${CMAKE_CURRENT_SOURCE_DIR}/testing/rtsp_server.py"
                           FRAMEPIPE_TEST_VIDEO="${FRAMEPIPE_GST_TEST_VIDEO}")
target_link_libraries(test_gst_capture PRIVATE framepipe_examples_gst framepipe_catch_main
                                               Catch2::Catch2 framepipe_warnings)
add_test(NAME test_gst_capture COMMAND test_gst_capture)
set_tests_properties(test_gst_capture PROPERTIES TIMEOUT 240)

# The custom backend example of docs/live_sources.md: it compiles, and it runs.
add_executable(test_doc_live_backend tests/doc_live_backend.cpp)
target_link_libraries(test_doc_live_backend PRIVATE framepipe::framepipe framepipe_warnings)
add_test(NAME test_doc_live_backend COMMAND test_doc_live_backend)
set_tests_properties(test_doc_live_backend PROPERTIES TIMEOUT 60)

add_executable(test_synthetic_camera tests/test_synthetic_camera.cpp)
target_link_libraries(test_synthetic_camera PRIVATE framepipe_examples_gst framepipe_catch_main
                                                    Catch2::Catch2 framepipe_warnings)
add_test(NAME test_synthetic_camera COMMAND test_synthetic_camera)
set_tests_properties(test_synthetic_camera PROPERTIES TIMEOUT 60)

find_package(Boost 1.74 REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
add_executable(test_web_control tests/test_web_control.cpp)
target_include_directories(test_web_control PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_link_libraries(test_web_control PRIVATE framepipe_examples_web Boost::headers
                                               nlohmann_json::nlohmann_json framepipe_catch_main
                                               Catch2::Catch2 framepipe_warnings)
add_test(NAME test_web_control COMMAND test_web_control)
set_tests_properties(test_web_control PROPERTIES TIMEOUT 60)

# web_server.hpp under hostile clients. The server under test runs in its own process
# (web_server_fixture: the server fed by a synthetic camera), so that its RSS, threads and
# descriptors are its own and a crash is an exit status; one test program, three tests (about 5,
# 20 and 2 s here), label `hostile` (`ctest -L hostile`). The clients test runs alone
# (RUN_SERIAL): it measures a frame rate against itself, and its 10^5 connections in 10 s would
# load the tests beside it.
add_executable(web_server_fixture tests/web_server_fixture.cpp)
target_link_libraries(web_server_fixture PRIVATE framepipe_examples_web nlohmann_json::nlohmann_json
                                                 framepipe_warnings)
add_executable(test_web_server_hostile tests/test_web_server_hostile.cpp)
target_compile_definitions(test_web_server_hostile PRIVATE
                           FRAMEPIPE_WEB_FIXTURE="$<TARGET_FILE:web_server_fixture>")
target_include_directories(test_web_server_hostile PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_link_libraries(test_web_server_hostile PRIVATE Boost::headers nlohmann_json::nlohmann_json
                                                      framepipe_catch_main Catch2::Catch2
                                                      framepipe_warnings)
add_dependencies(test_web_server_hostile web_server_fixture)
add_test(NAME test_web_server_fuzz COMMAND test_web_server_hostile "[fuzz]")
add_test(NAME test_web_server_clients COMMAND test_web_server_hostile "[clients]")
add_test(NAME test_web_server_descriptors COMMAND test_web_server_hostile "[fds]")
set_tests_properties(test_web_server_fuzz test_web_server_clients PROPERTIES TIMEOUT 180
                                                                            LABELS hostile)
set_tests_properties(test_web_server_clients PROPERTIES RUN_SERIAL TRUE)
set_tests_properties(test_web_server_descriptors PROPERTIES TIMEOUT 120 LABELS hostile)

# testing/http_client.hpp's reads time out: a server that never answers fails the request (about
# 20 + 2 s here: connect()'s timeout, then two of 1 s).
add_executable(test_http_client tests/test_http_client.cpp)
target_include_directories(test_http_client PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/..")
target_link_libraries(test_http_client PRIVATE Boost::headers framepipe_catch_main Catch2::Catch2
                                               framepipe_warnings)
add_test(NAME test_http_client COMMAND test_http_client)
set_tests_properties(test_http_client PROPERTIES TIMEOUT 300)

# mat_codecs.hpp's JPEG codec: the frame size read from the header, and what is refused.
add_executable(test_mat_codecs tests/test_mat_codecs.cpp)
target_link_libraries(test_mat_codecs PRIVATE framepipe_examples_video framepipe_catch_main
                                              Catch2::Catch2 framepipe_warnings)
add_test(NAME test_mat_codecs COMMAND test_mat_codecs)
set_tests_properties(test_mat_codecs PROPERTIES TIMEOUT 60)

add_executable(test_program tests/test_program.cpp)
target_link_libraries(test_program PRIVATE framepipe::framepipe nlohmann_json::nlohmann_json
                                           framepipe_catch_main Catch2::Catch2
                                           framepipe_warnings)
add_test(NAME test_program COMMAND test_program)
set_tests_properties(test_program PROPERTIES TIMEOUT 60)
