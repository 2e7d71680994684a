// The custom backend of docs/live_sources.md ("A backend of your own"), built and run by CTest
// (test_doc_live_backend) so that the example in the docs keeps compiling and working.
#include <framepipe/live_source.hpp>
#include <framepipe/ring.hpp>

// A "camera" that counts: put your device's connect, grab and release calls in the bodies.
struct counter_camera {
    using frame_type = int; // what one read() gives
    int next = 0;
    framepipe::open_result open(std::stop_token, std::chrono::nanoseconds) {
        return framepipe::open_result::success(); // or failure("one line: why")
    }
    framepipe::read_result<int> read(std::stop_token stop, std::chrono::nanoseconds) {
        if (stop.stop_requested()) return framepipe::read_result<int>::timed_out();
        if (next == 100) return framepipe::read_result<int>::ended(); // a file's end
        return framepipe::read_result<int>::got(next++);              // or failed("why")
    }
    void close() noexcept {}
};

int main() {
    using namespace std::chrono_literals;
    framepipe::live_source<counter_camera> camera([] { return counter_camera{}; },
                                                  {.stall_timeout = 1s});
    framepipe::ring<framepipe::stamped<int>> frames(128, framepipe::overflow::block);
    camera.start(frames); // its own threads: connect, read, reconnect with backoff
    const bool ended = camera.wait_for(10s) && camera.state() == framepipe::live_state::ended;
    std::size_t n = 0;
    while (auto f = frames.try_pop()) n += f->epoch == 1; // also f->value, f->seq, f->captured
    return ended && n == 100 ? 0 : 1;
}
