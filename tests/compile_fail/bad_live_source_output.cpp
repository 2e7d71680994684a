// Must NOT compile: a live_source emits stamped<frame_type>, and this output takes int. The error
// must be one short message naming item_type (tests/compile_fail/check.cmake); it was 41 lines
// of "no matching function" (review).
#include <framepipe/broadcaster.hpp>
#include <framepipe/live_source.hpp>
#include <framepipe/pipeline.hpp>

#include <chrono>
#include <stop_token>

struct backend {
    using frame_type = int;
    framepipe::open_result open(std::stop_token, std::chrono::nanoseconds) { return {}; }
    framepipe::read_result<int> read(std::stop_token, std::chrono::nanoseconds) {
        return framepipe::read_result<int>::got(1);
    }
    void close() noexcept {}
};

int main() {
    framepipe::live_source<backend> camera([] { return backend{}; });
    framepipe::broadcaster<int> out; // takes int, not stamped<int>
    framepipe::pipeline p;
    p.source("camera", out, camera);
}
