// framepipe-transport-bench: what a frame costs on each transport adapter, for docs/transport.md.
//
//     framepipe-transport-bench iceoryx raw 640 480          (inside a RouDi's namespace)
//     framepipe-transport-bench nats://127.0.0.1:4222 jpeg 1920 1080
//
// Forks an echo process (this program, "echo" mode) that takes each frame, decodes it (a raw view
// in place; a JPEG decode) and answers with a small result carrying the frame's seq. Then:
//   1. ping-pong: one frame in flight for 3 s: round-trip latency p50/p99 (send -> result back,
//      encode and decode included) and the frames per second that allows;
//   2. paced 30 fps for 3 s: CPU time per frame on each side (getrusage), and frames lost.
// Frames are vtest.avi's first frame, resized: JPEG sizes are a real picture's. Prints one JSON
// object per line. Runs on the machine as it is: on a shared 2-core host, repeat and take the
// median.
#include "common/mat_codecs.hpp"
#include "common/program.hpp"

#include <framepipe/latest_slot.hpp>
#include <framepipe/metrics.hpp>
#include <framepipe/ring.hpp>
#include <framepipe/transport/iceoryx.hpp>
#include <framepipe/transport/nats.hpp>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <variant>

namespace {

namespace tp = framepipe::transport;
namespace fe = framepipe_examples;
using namespace std::chrono;
using bytes_handle = tp::received_ptr<std::span<const std::byte>>;
using mat_handle = tp::received_ptr<cv::Mat>;

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct empty_codec { // results: the envelope alone (seq, sender)
    using value_type = std::vector<std::byte>;
    using view_type = std::span<const std::byte>;
    void encode(const value_type&, tp::lender&) const {}
    std::optional<view_type> decode(std::span<const std::byte> b) const { return b; }
};

volatile std::sig_atomic_t echo_stop = 0;
extern "C" void on_term(int) {
    echo_stop = 1;
}

// The echo side: frames in, a result per frame out, until SIGTERM; prints its CPU per frame.
template <class In, class Out>
int echo(In& in, Out& out) {
    framepipe::ring<mat_handle> q(64);
    in.start(q);
    std::printf("ready\n");
    std::fflush(stdout);
    std::uint64_t n = 0;
    double cpu0 = -1;
    while (echo_stop == 0) {
        auto f = q.pop_for(milliseconds(100));
        if (!f) {
            continue;
        }
        if (cpu0 < 0) {
            cpu0 = cpu_seconds();
        }
        volatile auto touch = (*f)->value.at<cv::Vec3b>(0, 0)[0]; // read the pixels in place
        (void)touch;
        (void)out.send(
            framepipe::stamped<std::vector<std::byte>>{{}, (*f)->seq, (*f)->captured, 0});
        ++n;
    }
    in.stop();
    std::printf("echo {\"frames\": %llu, \"cpu_ms_per_frame\": %.3f, \"lost\": %llu}\n",
                static_cast<unsigned long long>(n),
                n ? (cpu_seconds() - cpu0) * 1000.0 / static_cast<double>(n) : 0.0,
                static_cast<unsigned long long>(in.stats().lost_in_transport));
    std::fflush(stdout);
    return 0;
}

template <class Pub, class Rx>
nlohmann::json drive(Pub& pub, Rx& results, const cv::Mat& image, pid_t echo_pid) {
    framepipe::ring<bytes_handle> back(1024);
    results.start(back);
    std::this_thread::sleep_for(milliseconds(500)); // discovery, subscriptions
    // 1. Ping-pong.
    framepipe::latency_histogram rtt;
    std::uint64_t seq = 0;
    auto t0 = steady_clock::now();
    while (steady_clock::now() - t0 < seconds(3)) {
        const auto s0 = steady_clock::now();
        if (pub.send(framepipe::stamped<cv::Mat>{image, seq, s0, 0}) != tp::send_status::sent) {
            std::this_thread::sleep_for(milliseconds(1));
            continue;
        }
        for (;;) {
            auto r = back.pop_for(seconds(2));
            if (!r) {
                break; // lost: go on with the next
            }
            if ((*r)->seq == seq) {
                rtt.record(steady_clock::now() - s0);
                break;
            }
        }
        ++seq;
    }
    const double pingpong_fps =
        static_cast<double>(rtt.count()) / duration<double>(steady_clock::now() - t0).count();
    // 2. Paced at 30 fps.
    std::this_thread::sleep_for(milliseconds(200));
    while (back.try_pop()) {
    }
    const double cpu0 = cpu_seconds();
    std::uint64_t sent = 0;
    t0 = steady_clock::now();
    for (auto next = t0; steady_clock::now() - t0 < seconds(3); next += microseconds(33333)) {
        std::this_thread::sleep_until(next);
        sent += pub.send(framepipe::stamped<cv::Mat>{image, seq++, steady_clock::now(), 0}) ==
                        tp::send_status::sent
                    ? 1U
                    : 0U;
    }
    const double cpu = cpu_seconds() - cpu0;
    std::this_thread::sleep_for(milliseconds(500));
    std::uint64_t answered = 0;
    while (back.try_pop()) {
        ++answered;
    }
    results.stop();
    ::kill(echo_pid, SIGTERM);
    return {
        {"rtt_p50_ms",
         std::round(duration<double, std::milli>(rtt.quantile(0.5)).count() * 100) / 100},
        {"rtt_p99_ms",
         std::round(duration<double, std::milli>(rtt.quantile(0.99)).count() * 100) / 100},
        {"pingpong_fps", std::round(pingpong_fps * 10) / 10},
        {"paced_sent", sent},
        {"paced_answered", answered},
        {"sender_cpu_ms_per_frame",
         std::round(cpu * 1000.0 / static_cast<double>(std::max<std::uint64_t>(sent, 1)) * 1000) /
             1000}};
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr,
                     "usage: framepipe-transport-bench iceoryx|nats://... raw|jpeg WIDTH HEIGHT\n");
        return 2;
    }
    const std::string where = argv[1];
    const std::string codec = argv[2];
    const bool is_echo = argc == 6 && std::string(argv[5]) == "echo";
    const bool iceoryx = where == "iceoryx";
    std::signal(SIGTERM, on_term);
    try {
        if (is_echo) {
            if (iceoryx) {
                tp::iceoryx_init("bench-echo");
                tp::iceoryx_receiver<fe::raw_mat_codec> in(
                    {.service = {.instance = "bench"}, .queue_capacity = 8});
                tp::iceoryx_publisher<empty_codec> out(
                    {.service = {.instance = "bench", .event = "results"},
                     .kind = tp::message_kind::result});
                return echo(in, out);
            }
            tp::nats_connection nc({.servers = {where}});
            tp::nats_publisher<empty_codec> out(nc, {.subject = "bench.results",
                                                     .kind = tp::message_kind::result,
                                                     .drop_while_disconnected = false});
            if (codec == "jpeg") {
                tp::nats_receiver<fe::jpeg_mat_codec> in(
                    nc, {.subject = "bench.frames", .pending_messages = 64});
                return echo(in, out);
            }
            tp::nats_receiver<fe::raw_mat_codec> in(
                nc, {.subject = "bench.frames", .pending_messages = 64});
            return echo(in, out);
        }
        cv::Mat first;
        cv::VideoCapture cap("/usr/share/doc/opencv-doc/examples/data/vtest.avi");
        if (!cap.read(first)) {
            first = cv::Mat(576, 768, CV_8UC3, cv::Scalar(90, 120, 150));
        }
        cv::Mat image;
        cv::resize(first, image, cv::Size(std::atoi(argv[3]), std::atoi(argv[4])));
        const pid_t child = fork();
        if (child == 0) {
            execl("/proc/self/exe", argv[0], argv[1], argv[2], argv[3], argv[4], "echo",
                  static_cast<char*>(nullptr));
            _exit(127);
        }
        std::this_thread::sleep_for(seconds(1));
        nlohmann::json j;
        if (iceoryx) {
            tp::iceoryx_init("bench");
            tp::iceoryx_publisher<fe::raw_mat_codec> pub({.service = {.instance = "bench"}});
            tp::iceoryx_receiver<empty_codec> back(
                {.service = {.instance = "bench", .event = "results"},
                 .queue_capacity = 64,
                 .kind = tp::message_kind::result});
            j = drive(pub, back, image, child);
        } else {
            tp::nats_connection nc({.servers = {where}});
            tp::nats_receiver<empty_codec> back(nc, {.subject = "bench.results",
                                                     .pending_messages = 1024,
                                                     .kind = tp::message_kind::result});
            if (codec == "jpeg") {
                tp::nats_publisher<fe::jpeg_mat_codec> pub(nc, {.subject = "bench.frames"});
                j = drive(pub, back, image, child);
            } else {
                tp::nats_publisher<fe::raw_mat_codec> pub(nc, {.subject = "bench.frames"});
                j = drive(pub, back, image, child);
            }
        }
        int status = 0;
        (void)waitpid(child, &status, 0);
        j["engine"] = iceoryx ? "iceoryx" : "nats";
        j["codec"] = codec;
        j["size"] = std::to_string(image.cols) + "x" + std::to_string(image.rows);
        std::printf("%s\n", fe::json_text(j).c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "framepipe-transport-bench: %s\n", e.what());
        return 2;
    }
    return 0;
}
