// web_server.hpp's control requests: which Host and Origin values name the server, and each
// refusal (a preflight, a wrong content type, a foreign Origin, a rebinding Host, a missing
// token) answered before the control callback runs; the callback's answer otherwise. Then the
// rest of web_server.hpp's promises that need the server in this process: the Host check of
// every request and the Origin check of /ws, 405 for other methods, callbacks that throw
// anything, the options refused, stop() closing every connection, and every frame accounted
// for.
#include "common/testing/http_client.hpp"
#include "common/web_server.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <sys/socket.h>

namespace fe = framepipe_examples;
namespace t = framepipe_examples::testing;
namespace http = boost::beast::http;

TEST_CASE("host_names_server: the bound address, loopback's name, IP literals on a wildcard") {
    CHECK(fe::host_names_server("127.0.0.1", "127.0.0.1", 7002));
    CHECK(fe::host_names_server("127.0.0.1:7002", "127.0.0.1", 7002));
    CHECK(fe::host_names_server("localhost:7002", "127.0.0.1", 7002));
    CHECK(fe::host_names_server("LocalHost", "127.0.0.1", 7002));
    CHECK_FALSE(fe::host_names_server("127.0.0.1:7003", "127.0.0.1", 7002));
    CHECK_FALSE(fe::host_names_server("evil.example", "127.0.0.1", 7002));
    CHECK_FALSE(fe::host_names_server("evil.example:7002", "127.0.0.1", 7002));
    CHECK_FALSE(fe::host_names_server("127.0.0.2", "127.0.0.1", 7002));
    CHECK_FALSE(fe::host_names_server("", "127.0.0.1", 7002));
    CHECK_FALSE(fe::host_names_server(":7002", "127.0.0.1", 7002));
    CHECK(fe::host_names_server("[::1]:7002", "::1", 7002));
    CHECK_FALSE(fe::host_names_server("::1", "::1", 7002)); // unbracketed
    CHECK(fe::host_names_server("10.1.2.3:7002", "0.0.0.0", 7002));
    CHECK(fe::host_names_server("localhost", "0.0.0.0", 7002));
    CHECK_FALSE(fe::host_names_server("camera.example:7002", "0.0.0.0", 7002));
    CHECK_FALSE(fe::host_names_server("localhost", "10.1.2.3", 7002));
    CHECK(fe::host_names_server("10.1.2.3", "10.1.2.3", 7002));
}

TEST_CASE("control requests: every refusal before the callback, then the callback's answer") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    std::atomic<int> calls{0};
    fe::web_server server({.port = 0,
                           .page_html = "<html></html>",
                           .control = [&](const fe::control_request& r, std::stop_token) {
                               ++calls;
                               if (r.path == "/cameras/throw") {
                                   throw std::runtime_error("no camera 'v\xff'"); // not UTF-8
                               }
                               return fe::control_response{r.method == "POST" ? 201U : 200U,
                                                           nlohmann::json{{"path", r.path},
                                                                          {"body", r.body}}
                                                               .dump()};
                           },
                           .control_token = "tok"},
                          frames);
    server.start();
    const auto port = server.port();
    const std::string self = "127.0.0.1:" + std::to_string(port);
    const std::map<std::string, std::string> ok{{"Content-Type", "application/json; charset=utf-8"},
                                                {"Authorization", "Bearer tok"},
                                                {"Host", self},
                                                {"Origin", "http://" + self}};
    const auto with = [&](std::map<std::string, std::string> change) {
        auto h = ok;
        for (auto& [k, v] : change) {
            h[k] = v;
        }
        return h;
    };
    struct refusal {
        const char* what;
        unsigned status;
        http::verb method;
        std::map<std::string, std::string> headers;
    };
    for (const auto& r : std::vector<refusal>{
             {"preflight", 403, http::verb::options, with({})},
             {"text/plain", 415, http::verb::post, with({{"Content-Type", "text/plain"}})},
             {"no content type", 415, http::verb::post, with({{"Content-Type", ""}})},
             {"multipart", 415, http::verb::post, with({{"Content-Type", "multipart/form-data; boundary=x"}})},
             {"foreign origin", 403, http::verb::post, with({{"Origin", "http://evil.example"}})},
             {"null origin", 403, http::verb::post, with({{"Origin", "null"}})},
             {"https origin", 403, http::verb::delete_, with({{"Origin", "https://" + self}})},
             {"rebinding host", 403, http::verb::post, with({{"Host", "evil.example:" + std::to_string(port)}})},
             {"no host", 403, http::verb::delete_, with({{"Host", ""}})},
             {"no token", 401, http::verb::post, with({{"Authorization", ""}})},
             {"a wrong token", 401, http::verb::delete_, with({{"Authorization", "Bearer tok2"}})},
             {"a token without Bearer", 401, http::verb::post, with({{"Authorization", "tok"}})},
             // Bytes that are not UTF-8, quoted in the error: a 403 all the same.
             {"a host not UTF-8", 403, http::verb::post,
              with({{"Host", "\xff:" + std::to_string(port)}})},
             {"an origin not UTF-8", 403, http::verb::post, with({{"Origin", "http://\xff"}})},
         }) {
        INFO(r.what);
        const auto res = t::http_request(port, r.method, "/cameras", "{}", r.headers);
        CHECK(res.status == r.status);
        CHECK(nlohmann::json::parse(res.body, nullptr, false).contains("error"));
        CHECK(res.headers.count("access-control-allow-origin") == 0);
    }
    CHECK(calls == 0);
    CHECK(server.stats().control_refused == 14);
    auto res = t::http_request(port, http::verb::post, "/cameras?x=1", R"({"a":1})", ok);
    CHECK(res.status == 201);
    CHECK(nlohmann::json::parse(res.body) == nlohmann::json{{"path", "/cameras"}, {"body", R"({"a":1})"}});
    res = t::http_request(port, http::verb::delete_, "/cameras/x", "", with({{"Origin", ""}}));
    CHECK(res.status == 200);
    CHECK(calls == 2);
    CHECK(server.stats().control_requests == 2);
    // The Origin's scheme in any case (RFC 3986 3.1) is this server's page all the same.
    res = t::http_request(port, http::verb::delete_, "/cameras/x", "",
                          with({{"Origin", "HTTP://" + self}}));
    CHECK(res.status == 200);
    // A callback that throws, with bytes that are not UTF-8 in its message: a 500 in JSON.
    res = t::http_request(port, http::verb::delete_, "/cameras/throw", "", ok);
    CHECK(res.status == 500);
    CHECK(nlohmann::json::parse(res.body, nullptr, false).contains("error"));
    // GET stays as it was: no checks, no callback.
    CHECK(t::http_get(port, "/").status == 200);
    server.stop();
}

namespace {

using std::chrono_literals::operator""s;
using clock_type = std::chrono::steady_clock;

// Hang guards only (a working server answers at once): a test never waits this long unless
// what it checks is broken. set_timeouts does not bound Asio's blocking reads, so reads are
// poll()ed first.
constexpr auto guard = 20s;

int ms_left(clock_type::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
    return static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, left.count()));
}

// Reads what the peer sends until it closes (EOF or reset): true; false if it is still open at
// the deadline.
bool closed_by_peer(int fd, clock_type::time_point deadline) {
    std::array<char, 65536> buf{};
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) <= 0) {
            return false;
        }
        const auto n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n <= 0) {
            return true;
        }
    }
}

// Sends `request` and reads until the end of the response's header (or the close, or the
// deadline): the bytes read.
std::string head_of(t::tcp::socket& s, const std::string& request) {
    t::net::write(s, t::net::buffer(request));
    const auto deadline = clock_type::now() + guard;
    std::string got;
    std::array<char, 4096> buf{};
    while (got.find("\r\n\r\n") == std::string::npos) {
        pollfd p{s.native_handle(), POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) <= 0) {
            break;
        }
        const auto n = ::recv(s.native_handle(), buf.data(), buf.size(), 0);
        if (n <= 0) {
            break;
        }
        got.append(buf.data(), static_cast<std::size_t>(n));
    }
    return got;
}

// The status of the response to `request` on a new connection (0: none), and its header (each
// line ending with CRLF).
std::pair<unsigned, std::string> status_for(unsigned short port, const std::string& request) {
    t::net::io_context ioc;
    auto s = t::connect(ioc, port);
    const auto head = head_of(s, request);
    const auto end = head.find("\r\n\r\n");
    return {t::status_of(head), end == std::string::npos ? head : head.substr(0, end + 2)};
}

// Waits (bounded) until `pred` holds.
template <class Pred>
bool eventually(Pred pred) {
    const auto deadline = clock_type::now() + guard;
    while (!pred()) {
        if (clock_type::now() > deadline) {
            return false;
        }
        std::this_thread::yield();
    }
    return true;
}

std::string upgrade(const std::string& host, const std::string& origin) {
    return "GET /ws HTTP/1.1\r\n" + (host.empty() ? "" : "Host: " + host + "\r\n") +
           (origin.empty() ? "" : "Origin: " + origin + "\r\n") +
           "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
}

} // namespace

TEST_CASE("every request needs a Host naming the server; /ws also an Origin from its page") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    fe::web_server server({.port = 0,
                           .page_html = "<html></html>",
                           .assets = {{"/app.js", {"text/javascript", "//"}}},
                           .metrics_text = [] { return std::string("up 1\n"); },
                           .state_json = [] { return std::string(R"({"camera":"rtsp://secret"})"); }},
                          frames);
    server.start();
    const auto port = server.port();
    const std::string self = "127.0.0.1:" + std::to_string(port);
    const std::string evil = "evil.example:" + std::to_string(port);
    // A page elsewhere opening ws://127.0.0.1:PORT/ws, or a rebinding name.
    for (const auto& [host, origin] : std::vector<std::pair<std::string, std::string>>{
             {self, "http://evil.example"},
             {self, "null"},
             {self, "https://" + self},
             {self, "http://127.0.0.1:1"},
             {evil, "http://" + evil},
             {evil, ""},
             {"", ""}}) {
        INFO("Host '" << host << "', Origin '" << origin << "'");
        CHECK(status_for(port, upgrade(host, origin)).first == 403);
    }
    // The page's own websocket (same origin; by name or by address), and a client that is not
    // a browser (no Origin).
    for (const auto& [host, origin] : std::vector<std::pair<std::string, std::string>>{
             {self, "http://" + self},
             {"localhost:" + std::to_string(port), "http://localhost:" + std::to_string(port)},
             {self, ""}}) {
        INFO("Host '" << host << "', Origin '" << origin << "'");
        CHECK(status_for(port, upgrade(host, origin)).first == 101);
    }
    // DNS rebinding: what would be served is refused with a foreign Host, or none.
    for (const char* path : {"/", "/index.html", "/app.js", "/metrics", "/stats.json", "/video.mjpg"}) {
        INFO(path);
        CHECK(status_for(port, std::string("GET ") + path + " HTTP/1.1\r\nHost: " + evil + "\r\n\r\n").first == 403);
        CHECK(status_for(port, std::string("GET ") + path + " HTTP/1.0\r\n\r\n").first == 403);
        CHECK(status_for(port, std::string("HEAD ") + path + " HTTP/1.1\r\nHost: " + self + "\r\n\r\n").first == 200);
    }
    CHECK(t::http_get(port, "/stats.json").status == 200); // Host: 127.0.0.1
    // What is not served stays a 404, whatever the Host.
    CHECK(status_for(port, "GET /nope HTTP/1.1\r\nHost: " + evil + "\r\n\r\n").first == 404);
    server.stop();
}

TEST_CASE("a method other than GET, HEAD and the control ones: 405 with Allow, control not called") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    std::atomic<int> calls{0};
    fe::web_server server({.port = 0,
                           .page_html = "<html></html>",
                           .control = [&](const fe::control_request&, std::stop_token) {
                               ++calls;
                               return fe::control_response{};
                           }},
                          frames);
    server.start();
    const auto port = server.port();
    for (const char* method : {"PROPFIND", "TRACE", "FOO", "CONNECT", "MKCOL", "LOCK"}) {
        INFO(method);
        const auto [status, head] = status_for(
            port, std::string(method) + " /cameras HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                      "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        CHECK(status == 405);
        CHECK(head.find("\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE\r\n") != std::string::npos);
    }
    CHECK(calls == 0);
    server.stop();
    // Without control: GET and HEAD only.
    fe::web_server plain({.port = 0, .page_html = "<html></html>"}, frames);
    plain.start();
    const auto [status, head] = status_for(
        plain.port(), "TRACE / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    CHECK(status == 405);
    CHECK(head.find("\r\nAllow: GET, HEAD\r\n") != std::string::npos);
    plain.stop();
}

TEST_CASE("callbacks that throw something else than a std::exception: a 500 or an ended stream, "
          "counted; the server keeps serving") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    fe::web_server server({.port = 0,
                           .page_html = "<html></html>",
                           .metrics_text = []() -> std::string { throw 42; },
                           .stats_json = []() -> std::string { throw "no stats"; },
                           .state_json = []() -> std::string { throw 7; },
                           .control = [](const fe::control_request&, std::stop_token) -> fe::control_response {
                               throw 42;
                           }},
                          frames);
    server.start();
    const auto port = server.port();
    const std::string self = "127.0.0.1:" + std::to_string(port);
    const auto res = t::http_request(port, t::http::verb::delete_, "/cameras/x", "", {{"Host", self}});
    CHECK(res.status == 500);
    CHECK(nlohmann::json::parse(res.body, nullptr, false) == nlohmann::json{{"error", "unknown exception"}});
    CHECK(status_for(port, "GET /metrics HTTP/1.1\r\nHost: " + self + "\r\n\r\n").first == 500);
    CHECK(status_for(port, "GET /stats.json HTTP/1.1\r\nHost: " + self + "\r\n\r\n").first == 500);
    {
        // The websocket's first state message throws: that client is closed.
        t::net::io_context ioc;
        auto s = t::connect(ioc, port);
        CHECK(t::status_of(head_of(s, upgrade(self, ""))) == 101);
        CHECK(closed_by_peer(s.native_handle(), clock_type::now() + guard));
    }
    CHECK(t::http_get(port, "/").status == 200); // still serving
    CHECK(eventually([&] { return server.stats().internal_errors == 4; }));
    server.stop();
}

TEST_CASE("state_period, request_timeout and stall_timeout must be positive") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    using ms = std::chrono::milliseconds;
    using sec = std::chrono::seconds;
    const auto refused = [&](auto change, const std::string& field) {
        fe::web_server_options o;
        o.port = 0;
        change(o);
        try {
            fe::web_server server(std::move(o), frames);
        } catch (const std::invalid_argument& e) {
            return std::string(e.what()).find(field) != std::string::npos;
        }
        return false;
    };
    CHECK(refused([](auto& o) { o.state_period = ms(0); }, "state_period"));
    CHECK(refused([](auto& o) { o.state_period = ms(-5); }, "state_period"));
    CHECK(refused([](auto& o) { o.request_timeout = sec(0); }, "request_timeout"));
    CHECK(refused([](auto& o) { o.request_timeout = sec(-1); }, "request_timeout"));
    CHECK(refused([](auto& o) { o.stall_timeout = sec(0); }, "stall_timeout"));
    CHECK(refused([](auto& o) { o.stall_timeout = sec(-1); }, "stall_timeout"));
    CHECK_FALSE(refused([](auto& o) { o.state_period = ms(1); }, ""));
}

TEST_CASE("stop() closes the listener and every connection, also clients that never read") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    std::promise<void> entered;
    std::atomic<int> calls{0};
    fe::web_server server(
        {.port = 0,
         .page_html = "<html></html>",
         .assets = {{"/big", {"application/octet-stream", std::string(8 << 20, 'b')}}},
         .control = [&](const fe::control_request&, std::stop_token stop) {
             if (calls++ == 0) {
                 entered.set_value();
             }
             // A slow handler (opening a camera): until stop() asks it to return.
             std::mutex m;
             std::condition_variable_any cv;
             std::unique_lock<std::mutex> lock(m);
             cv.wait(lock, stop, [] { return false; });
             return fe::control_response{};
         }},
        frames);
    server.start();
    const auto port = server.port();
    const std::string self = "127.0.0.1:" + std::to_string(port);
    t::net::io_context ioc;
    std::vector<t::tcp::socket> clients;
    // An idle keep-alive connection that had one response.
    clients.push_back(t::connect(ioc, port));
    CHECK(t::status_of(head_of(clients.back(), "GET /index.html HTTP/1.1\r\nHost: " + self + "\r\n\r\n")) == 200);
    // A connection that sent nothing, and one half-way through a request.
    clients.push_back(t::connect(ioc, port));
    clients.push_back(t::connect(ioc, port));
    t::net::write(clients.back(), t::net::buffer(std::string("GET / HTTP/1.1\r\nHost: 127")));
    // Two waiting for a control reply: one running, one queued behind it.
    const std::string post = "POST /cameras HTTP/1.1\r\nHost: " + self +
                             "\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    clients.push_back(t::connect(ioc, port));
    t::net::write(clients.back(), t::net::buffer(post));
    REQUIRE(entered.get_future().wait_for(guard) == std::future_status::ready);
    clients.push_back(t::connect(ioc, port));
    t::net::write(clients.back(), t::net::buffer(post));
    // One that asks for 8 MiB, many times, and reads nothing (the server's write stalls).
    clients.push_back(t::connect(ioc, port, 4096));
    std::string pipelined;
    for (int i = 0; i < 4; ++i) {
        pipelined += "GET /big HTTP/1.1\r\nHost: " + self + "\r\n\r\n";
    }
    t::net::write(clients.back(), t::net::buffer(pipelined));
    // A websocket client.
    clients.push_back(t::connect(ioc, port));
    CHECK(t::status_of(head_of(clients.back(), upgrade(self, ""))) == 101);
    REQUIRE(eventually([&] {
        const auto s = server.stats();
        return s.connections_now == clients.size() && s.control_requests == 2 && s.streams_now == 1;
    }));

    server.stop();
    const auto deadline = clock_type::now() + guard;
    for (std::size_t i = 0; i < clients.size(); ++i) {
        INFO("client " << i);
        CHECK(closed_by_peer(clients[i].native_handle(), deadline));
    }
    // The listener is closed: a new connection is refused, not left hanging.
    t::tcp::socket late(ioc);
    boost::system::error_code ec;
    late.connect(t::tcp::endpoint(t::net::ip::make_address("127.0.0.1"), port), ec);
    CHECK(ec == t::net::error::connection_refused);
    const auto st = server.stats();
    CHECK(st.connections_now == 0);
    CHECK(st.streams_now == 0);
    CHECK(calls == 1); // the queued request never ran
}

TEST_CASE("every frame published to a stream client is sent, dropped or abandoned") {
    framepipe::broadcaster<fe::encoded_frame> frames;
    fe::web_server server({.port = 0, .page_html = "<html></html>"}, frames);
    server.start();
    const auto port = server.port();
    // A websocket client that never reads: the first frame's write stalls (16 MiB does not fit
    // in the socket buffers), the next waits in its subscription, the others replace it.
    t::net::io_context ioc;
    auto s = t::connect(ioc, port, 4096);
    REQUIRE(t::status_of(head_of(s, upgrade("127.0.0.1:" + std::to_string(port), ""))) == 101);
    std::uint64_t delivered = 0;
    for (int i = 0; i < 5; ++i) {
        fe::encoded_frame f;
        f.jpeg.assign(16 << 20, static_cast<unsigned char>(i));
        f.seq = static_cast<std::uint64_t>(i);
        delivered += frames.publish(std::move(f)).delivered;
    }
    REQUIRE(delivered == 5); // the client was subscribed to every one
    server.stop(); // closes the client mid-write
    const auto st = server.stats();
    INFO("sent " << st.frames_sent << ", dropped " << st.frames_dropped << ", abandoned "
                 << st.frames_abandoned);
    CHECK(st.frames_sent + st.frames_dropped + st.frames_abandoned == delivered);
    CHECK(st.frames_abandoned >= 1); // the one waiting, at least
    const auto j = nlohmann::json::parse(server.stats_json_text());
    CHECK(j.at("frames_abandoned") == st.frames_abandoned);
    CHECK(j.at("internal_errors") == 0);
}
