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
