// synthetic_camera.hpp: the synthetic: URI, the reader's frames (views into one pattern, on a
// regular grid of capture times, moving), a stop that ends a wait, and a live_camera reading it;
// mask_passwords, and a live_camera whose errors quote a URL with a password.
#include "common/synthetic_camera.hpp"

#include <catch2/catch.hpp>

#include <framepipe/broadcaster.hpp>

#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <vector>

namespace fe = framepipe_examples;
using namespace std::chrono_literals;

TEST_CASE("synthetic: URIs") {
    const fe::synthetic_options d{.width = 64, .height = 48, .fps = 10, .number = 3};
    CHECK(fe::is_synthetic_uri("synthetic:"));
    CHECK_FALSE(fe::is_synthetic_uri("rtsp://host/x"));
    auto o = fe::parse_synthetic_uri("synthetic:", d);
    REQUIRE(o);
    CHECK((o->width == 64 && o->height == 48 && o->fps == 10 && o->number == 3));
    o = fe::parse_synthetic_uri("synthetic://320x240@15", d);
    REQUIRE(o);
    CHECK((o->width == 320 && o->height == 240 && o->fps == 15));
    o = fe::parse_synthetic_uri("synthetic://@2.5", d);
    REQUIRE(o);
    CHECK((o->width == 64 && o->fps == 2.5));
    std::string why;
    for (const char* bad : {"synthetic://9x9", "synthetic://abc", "synthetic://320x", "synthetic://@0",
                            "synthetic://64x48@15x", "rtsp://x"}) {
        INFO(bad);
        CHECK_FALSE(fe::parse_synthetic_uri(bad, d, &why));
        CHECK_FALSE(why.empty());
    }
    CHECK_THROWS_AS(fe::synthetic_reader({.width = 8}), std::invalid_argument);
}

TEST_CASE("synthetic: fps below 0.001, NaN or infinite is refused (its period would not fit)") {
    const fe::synthetic_options d{.width = 64, .height = 48, .fps = 10, .number = 3};
    std::string why;
    for (const char* bad : {"synthetic://64x48@1e-12", "synthetic://@0.0009", "synthetic://@1e-300",
                            "synthetic://@nan", "synthetic://@inf", "synthetic://@240.5"}) {
        INFO(bad);
        why.clear();
        CHECK_FALSE(fe::parse_synthetic_uri(bad, d, &why));
        CHECK(why.find("fps") != std::string::npos);
    }
    for (const double fps : {1e-12, 0.0009, std::nan(""), HUGE_VAL, -HUGE_VAL, -1.0}) {
        INFO(fps);
        CHECK_THROWS_WITH(fe::synthetic_reader({.width = 64, .height = 48, .fps = fps}),
                          "fps: must be between 0.001 and 240");
    }
    const auto slowest = fe::parse_synthetic_uri("synthetic://@0.001", d);
    REQUIRE(slowest);
    CHECK(slowest->fps == 0.001);
    // The slowest camera's first frame is due at open, the next 1000 s later: a read with a
    // short timeout after the first times out instead of returning a frame.
    auto reader = fe::synthetic_reader(*slowest)();
    CHECK(reader->open({}, std::chrono::seconds(1)).empty());
    fe::gst_frame f;
    std::string error;
    REQUIRE(reader->read({}, std::chrono::seconds(1), f, error) == fe::gst_capture::status::frame);
    CHECK(reader->read({}, std::chrono::milliseconds(1), f, error) == fe::gst_capture::status::timeout);
}

TEST_CASE("a synthetic reader: views into one pattern, due times one period apart, moving") {
    const auto make = fe::synthetic_reader({.width = 240, .height = 120, .fps = 50, .number = 7});
    auto r = make();
    std::stop_source stop;
    REQUIRE(r->open(stop.get_token(), 1s).empty());
    fe::gst_frame a;
    fe::gst_frame b;
    std::string error;
    REQUIRE(r->read(stop.get_token(), 5s, a, error) == fe::gst_capture::status::frame);
    REQUIRE(r->read(stop.get_token(), 5s, b, error) == fe::gst_capture::status::frame);
    CHECK(a.image.size() == cv::Size(240, 120));
    CHECK(a.image.type() == CV_8UC3);
    CHECK(a.image.datastart == b.image.datastart); // both views into the camera's pattern
    CHECK(b.index_in_connection > a.index_in_connection);
    // Capture times are due times: whole periods (20 ms) apart.
    const auto gap = b.captured - a.captured;
    CHECK(gap == (b.index_in_connection - a.index_in_connection) * std::chrono::nanoseconds(20ms));
    CHECK(cv::norm(a.image, b.image, cv::NORM_L1) > 0); // the pattern moved
    // A stop ends a wait at once, as a timeout.
    stop.request_stop();
    CHECK(r->read(stop.get_token(), 1h, a, error) == fe::gst_capture::status::timeout);
}

TEST_CASE("a synthetic reader counts the frames a late reader skipped as dropped before read") {
    // Every frame index up to the last one read was either read or counted as dropped, whatever
    // the reader's lateness (here a reader that comes back only after 5 periods have passed).
    const auto make = fe::synthetic_reader({.width = 120, .height = 60, .fps = 200, .number = 1});
    auto r = make();
    std::stop_source stop;
    REQUIRE(r->open(stop.get_token(), 1s).empty());
    fe::gst_frame f;
    std::string error;
    std::uint64_t reads = 0;
    for (int i = 0; i < 10; ++i) {
        REQUIRE(r->read(stop.get_token(), 5s, f, error) == fe::gst_capture::status::frame);
        ++reads;
        const auto back = f.captured + 25ms; // come back late: five frames due meanwhile
        while (std::chrono::steady_clock::now() < back) {
        }
    }
    CHECK(r->dropped_before_read() > 0);
    CHECK(reads + r->dropped_before_read() == f.index_in_connection + 1);
}

TEST_CASE("a live_camera reads a synthetic camera like any other") {
    fe::live_camera_options o;
    o.capture.uri = "synthetic:";
    o.reader = fe::synthetic_reader({.width = 64, .height = 48, .fps = 100});
    fe::live_camera camera(o);
    framepipe::broadcaster<fe::video_frame> frames;
    auto sub = frames.subscribe({.capacity = 8, .policy = framepipe::overflow::block});
    camera.start(frames);
    for (int i = 0; i < 5; ++i) {
        const auto f = sub.pop_for(10s);
        REQUIRE(f);
        CHECK((*f)->epoch == 1);
        CHECK((*f)->value.cols == 64);
    }
    CHECK(camera.stats().status == fe::stream_status::online);
    camera.stop();
    CHECK(camera.stats().live.frames >= 5);
    CHECK(camera.description() == "synthetic:");
}

namespace {

// A reader whose every connection reports frames skipped and dropped, counting more at close()
// (as gst_capture counts the frame its appsink still holds): connection 1 gives one frame, then
// fails; connection 2 fails to open.
class counting_reader final : public fe::frame_reader {
public:
    explicit counting_reader(int connection) : connection_(connection) {}
    std::string open(std::stop_token, std::chrono::nanoseconds) override {
        if (connection_ == 2) {
            skipped_ = 5; // delta units dropped waiting for a key frame that never came
            return "no key frame";
        }
        return {};
    }
    fe::gst_capture::status read(std::stop_token, std::chrono::nanoseconds, fe::gst_frame& out,
                                 std::string& error) override {
        if (reads_++ == 0) {
            out.image = cv::Mat(48, 64, CV_8UC3, cv::Scalar(1, 2, 3));
            out.captured = std::chrono::steady_clock::now();
            skipped_ = 1;
            dropped_ = 3;
            return fe::gst_capture::status::frame;
        }
        error = "gone";
        return fe::gst_capture::status::error;
    }
    void close() noexcept override {
        ++skipped_;
        ++dropped_;
    }
    [[nodiscard]] std::uint64_t skipped_before_decode() const noexcept override { return skipped_; }
    [[nodiscard]] std::uint64_t dropped_before_read() const noexcept override { return dropped_; }

private:
    int connection_;
    int reads_ = 0;
    std::uint64_t skipped_ = 0;
    std::uint64_t dropped_ = 0;
};

} // namespace

TEST_CASE("a live_camera adds up what its connections skipped and dropped, after each close") {
    fe::live_camera_options o;
    o.capture.uri = "counting:";
    auto connections = std::make_shared<int>(0);
    o.reader = [connections] { return std::make_unique<counting_reader>(++*connections); };
    o.live.max_attempts = 2;
    o.live.backoff.initial = 1ms;
    fe::live_camera camera(o);
    framepipe::broadcaster<fe::video_frame> frames;
    camera.start(frames);
    REQUIRE(camera.wait(std::stop_token{}));
    const auto st = camera.stats();
    CHECK(st.live.state == framepipe::live_state::failed);
    CHECK(st.live.frames == 1);
    // Connection 1: 1 + 1 skipped, 3 + 1 dropped; connection 2 (open failed): 5 + 1, 0 + 1.
    CHECK(st.skipped_before_decode == 8);
    CHECK(st.dropped_before_read == 5);
    double counter = -1;
    for (const auto& c : camera.status().counters) {
        if (c.name == "frames_dropped_before_read") {
            counter = c.value;
        }
    }
    CHECK(counter == 5);
}

TEST_CASE("mask_passwords: every scheme://user:password@ in a text, and nothing else") {
    CHECK(fe::mask_passwords("rtsp://cam.local/x") == "rtsp://cam.local/x");
    CHECK(fe::mask_passwords("rtsp://admin@cam.local/x") == "rtsp://admin@cam.local/x");
    CHECK(fe::mask_passwords("no url here: a@b:c") == "no url here: a@b:c");
    CHECK(fe::mask_passwords("") == "");
    CHECK(fe::mask_passwords("Could not open: rtsp://admin:hunter2@10.0.0.7:554/s "
                             "(http://u:p%40ss@h/?a=b@c)") ==
          "Could not open: rtsp://admin:***@10.0.0.7:554/s (http://u:***@h/?a=b@c)");
    CHECK(fe::mask_passwords("'rtsp://a:b@h'") == "'rtsp://a:***@h'");
    CHECK(fe::mask_passwords("rtsp://a:b@h") == "rtsp://a:***@h");
}

namespace {

// Fails every open with the kind of message GStreamer gives: the URL, password included.
class refusing_reader final : public fe::frame_reader {
public:
    std::string open(std::stop_token, std::chrono::nanoseconds) override {
        return "Could not open resource for reading: rtsp://admin:hunter2@10.0.0.7:554/stream";
    }
    fe::gst_capture::status read(std::stop_token, std::chrono::nanoseconds, fe::gst_frame&,
                                 std::string& error) override {
        error = "unreachable";
        return fe::gst_capture::status::error;
    }
    void close() noexcept override {}
};

} // namespace

TEST_CASE("mask_passwords: a password holding an unencoded '#', '?', '/', space or quote is masked") {
    for (const std::string pw : {"pa#ss", "pa?ss", "pa/ss", "pa ss", "pa'ss", "pa\"ss", "p/a?s#s"}) {
        INFO(pw);
        CHECK(fe::mask_passwords("rtsp://admin:" + pw + "@10.0.0.7/stream") ==
              "rtsp://admin:***@10.0.0.7/stream");
        CHECK(fe::mask_passwords("Could not open 'rtsp://admin:" + pw + "@10.0.0.7/stream'.") ==
              "Could not open 'rtsp://admin:***@10.0.0.7/stream'.");
        // Two URLs in one message: each masked, the first one's text kept.
        CHECK(fe::mask_passwords("rtsp://cam:554/a failed, then rtsp://admin:" + pw +
                                 "@10.0.0.7/b\nrtsp://u:p@h") ==
              "rtsp://cam:554/a failed, then rtsp://admin:***@10.0.0.7/b\nrtsp://u:***@h");
        // A camera's description() is the URI, masked.
        fe::live_camera_options o;
        o.capture.uri = "rtsp://admin:" + pw + "@10.0.0.7:554/stream";
        o.reader = [] { return std::make_unique<refusing_reader>(); };
        const fe::live_camera camera(o);
        CHECK(camera.description() == "rtsp://admin:***@10.0.0.7:554/stream");
    }
    // IPv6 hosts, with and without a password; no password; masking twice changes nothing.
    CHECK(fe::mask_passwords("rtsp://u:p@[fe80::1]:554/x") == "rtsp://u:***@[fe80::1]:554/x");
    CHECK(fe::mask_passwords("rtsp://[fe80::1]:554/x") == "rtsp://[fe80::1]:554/x");
    CHECK(fe::mask_passwords("rtsp://u@[::1]/x?y=z#w") == "rtsp://u@[::1]/x?y=z#w");
    CHECK(fe::mask_passwords("rtsp://cam.local:554/x?y=z#w") == "rtsp://cam.local:554/x?y=z#w");
    CHECK(fe::mask_passwords("rtsp://admin:***@h/x") == "rtsp://admin:***@h/x");
    // The price of erring on the side of masking (live_camera.hpp): a URL with a port and no
    // user, then an '@' later on the line.
    CHECK(fe::mask_passwords("rtsp://host:554/x, mail ops@site") == "rtsp://host:***@site");
}

TEST_CASE("a live_camera's last_error, failure() and event lines carry no URL password") {
    fe::live_camera_options o;
    o.capture.uri = "rtsp://admin:hunter2@10.0.0.7:554/stream";
    o.reader = [] { return std::make_unique<refusing_reader>(); };
    o.live.max_attempts = 2;
    o.live.backoff.initial = 1ms;
    fe::live_camera camera(o);
    std::vector<std::string> lines;
    std::mutex mu;
    camera.on_event([&](const std::string& line) {
        const std::lock_guard<std::mutex> lock(mu);
        lines.push_back(line);
    });
    framepipe::broadcaster<fe::video_frame> frames;
    camera.start(frames);
    REQUIRE(camera.wait(std::stop_token{}));
    const auto st = camera.stats();
    REQUIRE(st.live.state == framepipe::live_state::failed);
    INFO(st.live.last_error);
    CHECK(st.live.last_error.find("hunter2") == std::string::npos);
    CHECK(st.live.last_error.find("rtsp://admin:***@10.0.0.7:554/stream") != std::string::npos);
    const auto failure = camera.failure();
    REQUIRE(failure);
    CHECK(failure->find("hunter2") == std::string::npos);
    CHECK(camera.description() == "rtsp://admin:***@10.0.0.7:554/stream");
    const std::lock_guard<std::mutex> lock(mu);
    CHECK_FALSE(lines.empty());
    for (const auto& line : lines) {
        INFO(line);
        CHECK(line.find("hunter2") == std::string::npos);
    }
}
