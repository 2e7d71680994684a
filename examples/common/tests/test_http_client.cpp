// testing/http_client.hpp: its reads are bounded. A server that accepts a connection (the
// kernel's backlog does) and never answers makes them fail with timed_out after the socket's
// timeout, instead of hanging the test.
#include "common/testing/http_client.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace t = framepipe_examples::testing;

namespace {

// A hang guard, not a clock the test reads: unless finish() comes first, after `limit` it runs
// `fire` (which must unblock the call under test) and remembers that it had to.
class hang_guard {
public:
    hang_guard(std::chrono::seconds limit, std::function<void()> fire)
        : thread_([this, limit, fire = std::move(fire)] {
              std::unique_lock<std::mutex> lock(mu_);
              if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
                  fired_ = true;
                  lock.unlock();
                  fire();
              }
          }) {}
    hang_guard(const hang_guard&) = delete;
    hang_guard& operator=(const hang_guard&) = delete;
    ~hang_guard() { (void)finish(); }

    // Ends the guard; whether it fired.
    bool finish() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            done_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
        return fired_;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    bool fired_ = false;
    std::thread thread_; // last: starts once the members it uses exist
};

// A listening socket that never accepts: connections complete in its backlog and hear nothing.
struct silent_server {
    boost::asio::io_context ioc;
    t::tcp::acceptor acceptor{ioc, t::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)};
    unsigned short port = acceptor.local_endpoint().port();

    // Closing it resets the connections waiting in its backlog: a blocked read then fails.
    void close() {
        boost::system::error_code ignored;
        acceptor.close(ignored);
    }
};

} // namespace

TEST_CASE("http_get fails with timed_out when the server never answers (connect()'s 20 s)") {
    silent_server server;
    hang_guard guard(std::chrono::seconds(120), [&] { server.close(); });
    boost::system::error_code code;
    try {
        (void)t::http_get(server.port, "/stats.json");
    } catch (const boost::system::system_error& e) {
        code = e.code();
    }
    CHECK_FALSE(guard.finish());
    CHECK(code == boost::asio::error::timed_out);
}

TEST_CASE("bounded_socket: a read and a websocket handshake time out after set_timeouts") {
    silent_server server;
    hang_guard guard(std::chrono::seconds(60), [&] { server.close(); });
    {
        auto s = t::connect(server.ioc, server.port);
        t::set_timeouts(s, 1);
        t::bounded_socket b(std::move(s));
        std::array<char, 16> buf{};
        boost::system::error_code ec;
        CHECK(b.read_some(boost::asio::buffer(buf), ec) == 0);
        CHECK(ec == boost::asio::error::timed_out);
        CHECK_THROWS_AS(b.read_some(boost::asio::buffer(buf)), boost::system::system_error);
    }
    {
        boost::beast::websocket::stream<t::bounded_socket> ws(t::connect(server.ioc, server.port));
        t::set_timeouts(ws.next_layer().next_layer(), 1);
        boost::system::error_code ec;
        ws.handshake("127.0.0.1", "/ws", ec);
        CHECK(ec == boost::asio::error::timed_out);
    }
    CHECK_FALSE(guard.finish());
}
