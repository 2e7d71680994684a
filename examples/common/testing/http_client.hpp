// examples/common/testing/http_client.hpp - a test's view of web_server.hpp, on Boost.Beast.
//
//     auto r = framepipe_examples::testing::http_get(port, "/stats.json");
//     auto p = framepipe_examples::testing::http_request(port, http::verb::post, "/cameras", body,
//                                                        {{"Content-Type", "application/json"}});
//     auto raw = framepipe_examples::testing::raw_exchange(port, "GARBAGE\r\n\r\n");  // any bytes
//     framepipe_examples::testing::ws_client ws(port);   auto m = ws.read();   // text or binary
//     bool ok = framepipe_examples::testing::is_prometheus_text(body, &why);
//
// Sockets get a receive timeout, so a server that never answers fails the test instead of
// hanging it: the helpers here read and write through bounded_socket, which gives up after the
// timeout. Header-only; needs Boost (headers). Use each object from one thread.
#pragma once

#include <utility> // before Boost.Asio: 1.74 uses std::exchange without including it (C++20)

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace framepipe_examples::testing {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// SO_RCVTIMEO / SO_SNDTIMEO on a connected socket: a read or write through bounded_socket (every
// helper here) that waits `seconds` fails with error::timed_out. A bare tcp::socket's blocking
// read_some() or write_some() is not bounded by them: when recv() or send() gives up with EAGAIN,
// Asio waits in poll() with no timeout.
inline void set_timeouts(tcp::socket& socket, int seconds = 20) {
    timeval tv{};
    tv.tv_sec = seconds;
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

namespace detail {

// Waits until `socket` is ready for `events` (POLLIN or POLLOUT: something to read, end of
// stream or an error; room to write), at most the timeout `option` (SO_RCVTIMEO or SO_SNDTIMEO)
// holds, without a limit when it holds none. False, with `ec` = timed_out, when it passed.
inline bool wait_ready(tcp::socket& socket, short events, int option, boost::system::error_code& ec) {
    timeval tv{};
    socklen_t len = sizeof tv;
    if (getsockopt(socket.native_handle(), SOL_SOCKET, option, &tv, &len) != 0) {
        ec.assign(errno, boost::system::system_category());
        return false;
    }
    using clock = std::chrono::steady_clock;
    const auto limit = std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
    const auto deadline = clock::now() + limit;
    for (;;) {
        int ms = -1;
        if (limit.count() > 0) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
            ms = static_cast<int>(std::max<std::chrono::milliseconds::rep>(0, left.count()));
        }
        pollfd p{socket.native_handle(), events, 0};
        const int r = ::poll(&p, 1, ms);
        if (r > 0) {
            return true; // ready, or an error or hang-up that the read or write will report
        }
        if (r == 0) {
            ec = net::error::timed_out;
            return false;
        }
        if (errno != EINTR) {
            ec.assign(errno, boost::system::system_category());
            return false;
        }
    }
}

} // namespace detail

// A tcp::socket whose reads and writes give up with error::timed_out after its SO_RCVTIMEO /
// SO_SNDTIMEO (set_timeouts): each waits in poll() with that deadline first, so that the
// recv() or send() after it does not block. A SyncStream for Beast (http::read and write, a
// websocket::stream's next layer) and Asio (net::read, net::write).
class bounded_socket {
public:
    using executor_type = tcp::socket::executor_type;
    using next_layer_type = tcp::socket;
    using lowest_layer_type = tcp::socket;

    explicit bounded_socket(tcp::socket socket) : socket_(std::move(socket)) {}

    executor_type get_executor() { return socket_.get_executor(); }
    tcp::socket& next_layer() noexcept { return socket_; }
    tcp::socket& lowest_layer() noexcept { return socket_; }

    template <class MutableBuffers>
    std::size_t read_some(const MutableBuffers& buffers, boost::system::error_code& ec) {
        if (net::buffer_size(buffers) != 0 && !detail::wait_ready(socket_, POLLIN, SO_RCVTIMEO, ec)) {
            return 0;
        }
        return socket_.read_some(buffers, ec);
    }

    template <class MutableBuffers>
    std::size_t read_some(const MutableBuffers& buffers) {
        boost::system::error_code ec;
        const auto n = read_some(buffers, ec);
        if (ec) {
            throw boost::system::system_error(ec);
        }
        return n;
    }

    template <class ConstBuffers>
    std::size_t write_some(const ConstBuffers& buffers, boost::system::error_code& ec) {
        if (net::buffer_size(buffers) != 0 && !detail::wait_ready(socket_, POLLOUT, SO_SNDTIMEO, ec)) {
            return 0;
        }
        return socket_.write_some(buffers, ec);
    }

    template <class ConstBuffers>
    std::size_t write_some(const ConstBuffers& buffers) {
        boost::system::error_code ec;
        const auto n = write_some(buffers, ec);
        if (ec) {
            throw boost::system::system_error(ec);
        }
        return n;
    }

private:
    tcp::socket socket_;
};

// A websocket::stream<bounded_socket>'s end (found by argument-dependent lookup): closes the
// socket at once, rather than Beast's tcp teardown, which waits for the peer's end of stream
// with a blocking read that no timeout bounds.
inline void teardown(beast::role_type, bounded_socket& s, boost::system::error_code& ec) {
    boost::system::error_code ignored;
    s.next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    s.next_layer().close(ec);
}

inline tcp::socket connect(net::io_context& ioc, unsigned short port, int rcvbuf = 0) {
    tcp::socket s(ioc);
    s.open(tcp::v4());
    if (rcvbuf > 0) {
        s.set_option(net::socket_base::receive_buffer_size(rcvbuf));
    }
    s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    set_timeouts(s);
    return s;
}

struct http_response {
    unsigned status = 0;
    std::map<std::string, std::string> headers; // lower-case names
    std::string body;
};

// One request with any method, body and headers (`headers` may replace the default Host,
// "127.0.0.1"; a header with an empty value is left out); the whole response.
inline http_response http_request(unsigned short port, http::verb method, const std::string& target,
                                  const std::string& body = {},
                                  const std::map<std::string, std::string>& headers = {}) {
    net::io_context ioc;
    bounded_socket s(connect(ioc, port));
    http::request<http::string_body> req(method, target, 11);
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) {
        if (value.empty()) {
            req.erase(name);
        } else {
            req.set(name, value);
        }
    }
    req.keep_alive(false);
    if (!body.empty() || method == http::verb::post) {
        req.body() = body;
        req.prepare_payload();
    }
    http::write(s, req);
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (method == http::verb::head) {
        parser.skip(true);
    }
    http::read(s, buf, parser);
    http_response r;
    const auto& res = parser.get();
    r.status = res.result_int();
    for (const auto& f : res) {
        std::string name(f.name_string());
        for (auto& c : name) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        r.headers[name] = std::string(f.value());
    }
    r.body = res.body();
    return r;
}

// One GET (or another method without a body); the whole response.
inline http_response http_get(unsigned short port, const std::string& target,
                              http::verb method = http::verb::get) {
    return http_request(port, method, target);
}

// Sends `bytes` as they are and reads until the server closes (or `max` bytes).
inline std::string raw_exchange(unsigned short port, const std::string& bytes,
                                std::size_t max = 1 << 20) {
    net::io_context ioc;
    bounded_socket s(connect(ioc, port));
    boost::system::error_code ec;
    net::write(s, net::buffer(bytes), ec);
    std::string out;
    std::array<char, 4096> buf{};
    while (out.size() < max) {
        const auto n = s.read_some(net::buffer(buf), ec);
        if (ec) {
            break;
        }
        out.append(buf.data(), n);
    }
    return out;
}

// The status code of a raw HTTP response ("HTTP/1.1 400 Bad Request" -> 400); 0 if none.
inline unsigned status_of(const std::string& raw) {
    if (raw.rfind("HTTP/1.", 0) != 0 || raw.size() < 12) {
        return 0;
    }
    return static_cast<unsigned>(std::stoul(raw.substr(9, 3)));
}

// A websocket client of /ws.
class ws_client {
public:
    // rcvbuf > 0 shrinks the socket's receive buffer (a client that stalls early).
    explicit ws_client(unsigned short port, int rcvbuf = 0, const std::string& path = "/ws")
        : ws_(connect(ioc_, port, rcvbuf)) {
        ws_.handshake("127.0.0.1:" + std::to_string(port), path);
    }

    struct message {
        bool binary = false;
        std::string data;
    };

    // The next message (blocks, up to the socket timeout: then throws).
    message read() {
        beast::flat_buffer buf;
        ws_.read(buf);
        return {ws_.got_binary(), beast::buffers_to_string(buf.data())};
    }

    // Reads until a binary message (a frame); the text messages before it are in `texts`.
    std::string read_frame(std::vector<std::string>* texts = nullptr) {
        for (;;) {
            auto m = read();
            if (m.binary) {
                return m.data;
            }
            if (texts != nullptr) {
                texts->push_back(std::move(m.data));
            }
        }
    }

private:
    net::io_context ioc_;
    beast::websocket::stream<bounded_socket> ws_;
};

// Whether `text` is Prometheus text exposition format 0.0.4: # HELP / # TYPE lines, samples
// `name{label="value",...} number`, each sample's family declared by a # TYPE line first.
inline bool is_prometheus_text(const std::string& text, std::string* why = nullptr) {
    static const std::regex type_line(
        R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram|untyped)$)");
    static const std::regex help_line(R"(^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
    static const std::regex sample(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|NaN|\+Inf|-Inf)$)");
    auto fail = [&](const std::string& w) {
        if (why != nullptr) {
            *why = w;
        }
        return false;
    };
    std::set<std::string> families;
    std::istringstream in(text);
    std::string line;
    std::size_t samples = 0;
    while (std::getline(in, line)) {
        std::smatch m;
        if (line.empty()) {
            continue;
        }
        if (std::regex_match(line, m, type_line)) {
            families.insert(m[1]);
        } else if (std::regex_match(line, help_line)) {
        } else if (std::regex_match(line, m, sample)) {
            std::string family = m[1];
            for (const char* suffix : {"_sum", "_count", "_bucket"}) {
                const std::string s(suffix);
                if (!families.count(family) && family.size() > s.size() &&
                    family.compare(family.size() - s.size(), s.size(), s) == 0) {
                    family.erase(family.size() - s.size());
                }
            }
            if (!families.count(family)) {
                return fail("sample before its # TYPE: " + line);
            }
            ++samples;
        } else {
            return fail("not a Prometheus line: " + line);
        }
    }
    if (samples == 0) {
        return fail("no samples");
    }
    return true;
}

} // namespace framepipe_examples::testing
