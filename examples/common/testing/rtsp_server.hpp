// examples/common/testing/rtsp_server.hpp - the test RTSP server (rtsp_server.py) from a C++ test:
// started on 127.0.0.1 and waited for by its READY line, then stalled, resumed, made to drop its
// clients, or killed, each step waited for by the line the server prints.
//
//     framepipe_examples::testing::rtsp_server server(python, script, {.fps = 30});
//     run(program, "--video", server.url);
//     server.pause();    // SIGUSR1: no frames, connections kept (PAUSED)
//     server.resume();   // SIGUSR2 (RESUMED)
//     server.kick();     // SIGHUP: every client's connection closed, still serving (KICKED)
//     server.key_frame(); // SIGWINCH: the next frame is a key frame (KEYFRAME)
//     server.kill_now(); // SIGKILL, then reaped
//     framepipe_examples::testing::rtsp_server again(python, script, {.port = server.port});
//
// python: Debian's /usr/bin/python3 (python3-gst-1.0, the GstRtspServer typelib). Throws
// std::runtime_error with the server's stderr when it does not start within 30 s.
// Header-only, POSIX. One test thread.
#pragma once

#include "common/testing/child_process.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace framepipe_examples::testing {

// A loopback port nobody listens on right now (bound, then released). Throws std::runtime_error.
inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        throw std::runtime_error("free_port: socket() failed");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    ::close(fd);
    if (!ok) {
        throw std::runtime_error("free_port: no loopback port");
    }
    return ntohs(addr.sin_port);
}

struct rtsp_server_options {
    int port = 0; // 0: the kernel picks one (read back from the READY line)
    int fps = 30;
    int key_int = 15;
    int width = 384; // vtest.avi (768x576) at half size: less CPU for the tests
    int height = 288;
    std::vector<std::string> extra{}; // more rtsp_server.py flags
};

class rtsp_server {
public:
    rtsp_server(const std::string& python, const std::string& script, rtsp_server_options o = {}) {
        std::vector<std::string> argv{python,
                                      script,
                                      "--port",
                                      std::to_string(o.port),
                                      "--fps",
                                      std::to_string(o.fps),
                                      "--key-int",
                                      std::to_string(o.key_int),
                                      "--width",
                                      std::to_string(o.width),
                                      "--height",
                                      std::to_string(o.height)};
        argv.insert(argv.end(), o.extra.begin(), o.extra.end());
        process = std::make_unique<child>(argv);
        const auto line = process->wait_for("READY ", std::chrono::seconds(30));
        if (!line) {
            throw std::runtime_error("rtsp_server.py did not start: " + process->err());
        }
        url = *line;
        const auto colon = url.rfind(':');
        port = std::stoi(url.substr(colon + 1, url.find('/', colon) - colon - 1));
    }

    // SIGUSR1 / SIGUSR2 / SIGHUP, each waited for by the server's own line (the n-th one, so
    // that a second pause waits for a second PAUSED). False when it did not come within 10 s.
    bool pause() { return signal_and_wait(SIGUSR1, "PAUSED", ++pauses_); }
    bool resume() { return signal_and_wait(SIGUSR2, "RESUMED", ++resumes_); }
    bool kick() { return signal_and_wait(SIGHUP, "KICKED", ++kicks_); }
    // SIGWINCH: the shared media's next frame is encoded as a key frame (an IDR). Waits for the
    // server's KEYFRAME line (KEYFRAME NONE, when no client is playing, counts too).
    bool key_frame() { return signal_and_wait(SIGWINCH, "KEYFRAME", ++key_frames_); }

    // SIGKILL (a server that dies mid-stream), then reaped: the port is free again.
    void kill_now() {
        process->send_signal(SIGKILL);
        process->wait();
    }

    std::unique_ptr<child> process;
    std::string url;
    int port = 0;

private:
    bool signal_and_wait(int signal_number, const std::string& line, std::size_t n) {
        process->send_signal(signal_number);
        return process->wait_for_count(line, n, std::chrono::seconds(10)).has_value();
    }

    std::size_t pauses_ = 0;
    std::size_t resumes_ = 0;
    std::size_t kicks_ = 0;
    std::size_t key_frames_ = 0;
};

} // namespace framepipe_examples::testing
