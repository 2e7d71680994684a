// examples/common/testing/temp_dir.hpp - a test's scratch directory, removed with its contents
// when the object goes.
//
//     framepipe_examples::testing::temp_dir dir("handpose-test");   // per test case
//     std::string csv = dir.file("landmarks.csv");
//
//     fs::path scratch() {                                           // per test process
//         static const framepipe_examples::testing::temp_dir dir("framepipe-detect-test");
//         return dir.path;
//     }
//
// The name is `<prefix>-<process id>-<random>` under the system temp directory, so test
// processes that ctest runs side by side never share one. A static one is removed at exit, so
// fixtures built once per process (videos, models) leave nothing behind either. Header-only;
// use each object from one thread.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <system_error>
#include <unistd.h>

namespace framepipe_examples::testing {

struct temp_dir {
    std::filesystem::path path;

    // Creates the directory. Throws std::filesystem::filesystem_error if it cannot.
    explicit temp_dir(const std::string& prefix) {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() /
               (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
        std::filesystem::create_directories(path);
    }
    // Removes the directory and what is in it; a failure is ignored (a test must not throw
    // from a destructor).
    ~temp_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    // The path of `name` inside the directory.
    [[nodiscard]] std::string file(const std::string& name) const { return (path / name).string(); }
};

} // namespace framepipe_examples::testing
