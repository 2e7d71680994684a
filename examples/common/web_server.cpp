// examples/common/web_server.cpp - see web_server.hpp. HTTP and websocket framing are Boost.Beast's.
#include "common/web_server.hpp"

#include "common/program.hpp"
#include "common/uri_scheme.hpp"

#include <framepipe/ring.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>
#include <utility>

namespace framepipe_examples {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {
class stream_session;
class http_session;
} // namespace

struct web_server::impl {
    impl(web_server_options o, framepipe::broadcaster<encoded_frame>& f)
        : options(std::move(o)), frames(f) {}

    web_server_options options;
    framepipe::broadcaster<encoded_frame>& frames;
    // Open connections (connection_count below). Declared before ioc: sessions still pending in
    // the io_context when it is destroyed decrement it then.
    std::atomic<std::uint64_t> connections_now{0};
    net::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    net::steady_timer accept_retry{ioc}; // after a failed accept (out of descriptors)
    std::thread io_thread;
    unsigned short bound_port = 0;
    bool started = false;
    bool stopped = false;

    // Counters touched by the I/O thread and read by stats(). Relaxed: statistics only.
    std::atomic<std::uint64_t> http_requests{0};
    std::atomic<std::uint64_t> http_errors{0};
    std::atomic<std::uint64_t> streams_rejected{0};
    std::atomic<std::uint64_t> streams_stalled{0};
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::uint64_t> connections_rejected{0};
    std::atomic<std::uint64_t> accept_errors{0};
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> client_bytes_read{0};
    std::atomic<std::uint64_t> reads_throttled{0};
    std::atomic<std::uint64_t> control_requests{0};
    std::atomic<std::uint64_t> control_refused{0};
    std::atomic<std::uint64_t> internal_errors{0};

    // HTTP sessions, so that stop() can close their sockets. Guarded by sessions_mu; expired
    // entries are pruned as the list grows.
    std::mutex sessions_mu;
    std::vector<std::weak_ptr<http_session>> http_sessions;
    std::size_t prune_at = 64;
    void add_http_session(const std::shared_ptr<http_session>& s);
    void close_everything() noexcept; // on the I/O thread, by stop()

    // Control requests wait here for the control thread (bounded: a full ring refuses, 503).
    framepipe::ring<std::function<void(std::stop_token)>> control_jobs{
        std::max<std::size_t>(1, options.max_control_pending), framepipe::overflow::drop_newest};
    std::jthread control_thread;

    // Stream clients. Guarded by mu.
    mutable std::mutex mu;
    std::condition_variable pumps_done;
    bool stopping = false;
    std::size_t pumps_running = 0;
    std::uint64_t next_client = 0;
    std::uint64_t streams_total = 0;
    std::uint64_t finished_sent = 0;    // by clients that have gone
    std::uint64_t finished_dropped = 0;
    std::uint64_t finished_abandoned = 0;
    std::vector<std::weak_ptr<stream_session>> streams;
    // stop() and the I/O thread: every socket closed (on the I/O thread); the I/O thread's
    // run() over.
    std::condition_variable io_cv;
    bool io_closed = false;
    bool io_done = false;

    void do_accept();

    // A stream client's pump is over (or never started): stop() may go on when none is left.
    void release_pump() noexcept {
        const std::lock_guard<std::mutex> lock(mu);
        --pumps_running;
        // Under the lock: once stop() sees 0 it may destroy this object, cv included.
        pumps_done.notify_all();
    }
    void log(const std::string& what) const {
        std::fprintf(stderr, "%s: %s\n", options.log_name.c_str(), what.c_str());
    }
};

namespace {

// One open connection in impl::connections_now, from its accept until the last session that
// owns its socket (the HTTP session, then the stream session it became) is destroyed.
class connection_count {
public:
    explicit connection_count(std::atomic<std::uint64_t>& now) noexcept : now_(&now) {
        now_->fetch_add(1, std::memory_order_relaxed); // relaxed: a statistic and a cap
    }
    connection_count(connection_count&& other) noexcept : now_(std::exchange(other.now_, nullptr)) {}
    connection_count& operator=(connection_count&&) = delete;
    connection_count(const connection_count&) = delete;
    connection_count& operator=(const connection_count&) = delete;
    ~connection_count() {
        if (now_ != nullptr) {
            now_->fetch_sub(1, std::memory_order_relaxed);
        }
    }

private:
    std::atomic<std::uint64_t>* now_;
};

// What a stream client may send. The pages send nothing the server needs, so a client that
// sends more than this (a flood) has its next read put off until it is back within the budget:
// its messages then wait in the TCP buffers, and TCP holds the client back. A message or read
// costs at least min_read_cost, so that a flood of tiny messages is held back too.
constexpr double client_bytes_per_second = 64 * 1024;
constexpr double client_burst_bytes = 64 * 1024;
constexpr double min_read_cost = 1024;

// Common part of the websocket and MJPEG clients: a framepipe subscription and the thread
// ("pump") that waits on it, hands each frame to the I/O thread, and waits for the write to
// finish before taking the next one. While a write is stalled, newer frames replace the one
// waiting in the subscription (capacity 1, drop_oldest): that is the only buffering.
class stream_session : public std::enable_shared_from_this<stream_session> {
public:
    stream_session(web_server::impl& srv, std::string name, connection_count count)
        : srv_(srv),
          count_(std::move(count)),
          name_(name),
          sub_(srv.frames.subscribe({.capacity = 1,
                                     .policy = framepipe::overflow::drop_oldest,
                                     .replay_last = true,
                                     .name = std::move(name)})) {}
    virtual ~stream_session() = default;
    stream_session(const stream_session&) = delete;
    stream_session& operator=(const stream_session&) = delete;

    // Lists the session with the server, after reserve_stream() succeeded for it. When the
    // server is stopping meanwhile, ends the session at once instead.
    void enrol() {
        bool stopping = false;
        {
            const std::lock_guard<std::mutex> lock(srv_.mu);
            stopping = srv_.stopping;
            if (!stopping) {
                srv_.streams.push_back(weak_from_this());
            }
        }
        if (stopping) {
            finish();
        }
    }

    // Starts the pump thread. Called once on the I/O thread after the handshake; if it is
    // never called (handshake failed), finish() releases the pump count instead.
    void start_pump() {
        {
            const std::lock_guard<std::mutex> lock(mu_);
            if (closed_) {
                return;
            }
            pump_started_ = true;
        }
        // Detached: it holds the session alive, and stop() waits for pumps_running to reach 0.
        // The count drops only after the thread has let go of the session, so that a session
        // is never destroyed by this thread after the server (and its io_context) is gone.
        std::thread([self = shared_from_this()]() mutable {
            self->pump();
            web_server::impl& srv = self->srv_;
            self.reset();
            srv.release_pump();
        }).detach();
    }

    // Ends the session: wakes the pump, closes the socket (on the I/O thread). Any thread;
    // idempotent; does not throw.
    void finish() noexcept {
        bool release_pump = false;
        {
            const std::lock_guard<std::mutex> lock(mu_);
            if (closed_) {
                return;
            }
            closed_ = true;
            release_pump = !pump_started_;
        }
        cv_.notify_all();
        sub_.close();
        try {
            net::post(srv_.ioc, [self = shared_from_this()] { self->close_now(); });
        } catch (...) {
            // Out of memory: the socket closes when the session is destroyed with the io_context.
        }
        if (release_pump) {
            leave();
            srv_.release_pump();
        }
    }

    [[nodiscard]] web_server_stats::client stats() const {
        const auto s = sub_.stats();
        return {name_, sent_.load(std::memory_order_relaxed), s.dropped, s.size,
                abandoned_.load(std::memory_order_relaxed)};
    }

    [[nodiscard]] const std::string& name() const noexcept { return name_; }

protected:
    // On the I/O thread: write `texts` then the JPEG (none when `f` is null: a state message
    // alone), and call write_done() once.
    virtual void async_send(std::shared_ptr<const encoded_frame> f,
                            std::vector<std::string> texts) = 0;
    // On the I/O thread: close the socket, so that pending operations end.
    virtual void close_socket() noexcept = 0;
    // Whether the state message goes to this client (websocket yes, MJPEG no).
    [[nodiscard]] virtual bool wants_state() const noexcept { return false; }

    // On the I/O thread, when async_send's writes are done.
    void write_done(bool ok) {
        in_send_ = false;
        stall_timer_.cancel();
        {
            const std::lock_guard<std::mutex> lock(mu_);
            writing_ = false;
            write_ok_ = ok;
        }
        cv_.notify_all();
        if (!ok) {
            finish();
        }
    }

    // On the I/O thread, after `n` bytes (a message, or one read) came from the client: calls
    // `read` (which reads again) at once, or, when the client is over its budget, once it is
    // back within it.
    template <class Read>
    void read_again(std::size_t n, Read read) {
        srv_.client_bytes_read.fetch_add(n, std::memory_order_relaxed);
        const auto now = clock_type::now();
        const double elapsed = std::chrono::duration<double>(now - last_read_).count();
        last_read_ = now;
        read_credit_ = std::min(client_burst_bytes, read_credit_ + elapsed * client_bytes_per_second);
        read_credit_ -= std::max(static_cast<double>(n), min_read_cost);
        if (read_credit_ >= 0) {
            read();
            return;
        }
        srv_.reads_throttled.fetch_add(1, std::memory_order_relaxed);
        read_timer_.expires_after(std::chrono::duration_cast<clock_type::duration>(
            std::chrono::duration<double>(-read_credit_ / client_bytes_per_second)));
        read_timer_.async_wait([read = std::move(read)](beast::error_code ec) mutable {
            if (!ec) {
                read();
            }
        });
    }

    web_server::impl& srv_;

private:
    // On the I/O thread: sends one frame (and its texts), giving the client stall_timeout to
    // take it; a client that does not is closed, which ends the write and the session.
    void send(std::shared_ptr<const encoded_frame> f, std::vector<std::string> texts) {
        in_send_ = true;
        const auto send_number = ++sends_;
        stall_timer_.expires_after(srv_.options.stall_timeout);
        stall_timer_.async_wait([self = shared_from_this(), send_number](beast::error_code ec) {
            // The timer may have expired just as the write finished: only this send counts.
            if (ec || !self->in_send_ || self->sends_ != send_number) {
                return;
            }
            self->srv_.streams_stalled.fetch_add(1, std::memory_order_relaxed);
            self->close_now();
        });
        async_send(std::move(f), std::move(texts));
    }

    // On the I/O thread: ends pending timers and closes the socket (pending I/O then ends).
    void close_now() noexcept {
        stall_timer_.cancel();
        read_timer_.cancel();
        close_socket();
    }

    void pump() {
        auto last_state = clock_type::time_point{};
        const bool states = wants_state() && static_cast<bool>(srv_.options.state_json);
        bool frame_in_hand = false; // taken from the subscription, not known to be written
        try {
            for (;;) {
                // Frames as they come; while none come (a camera offline), the state alone once
                // per state_period, so that the page still learns what is going on.
                auto f = states ? sub_.pop_for(srv_.options.state_period) : sub_.pop();
                frame_in_hand = f.has_value();
                if (!f && (!states || sub_.closed())) {
                    break; // closed (and drained)
                }
                // The state first, so that the frame's own text comes just before its JPEG.
                std::vector<std::string> texts;
                const auto now = clock_type::now();
                if (states && now - last_state >= srv_.options.state_period) {
                    texts.push_back(srv_.options.state_json());
                    last_state = now;
                }
                if (!f && texts.empty()) {
                    continue;
                }
                std::shared_ptr<const encoded_frame> frame = f ? std::move(*f) : nullptr;
                if (frame && !frame->meta.empty()) {
                    texts.push_back(frame->meta);
                }
                std::unique_lock<std::mutex> lock(mu_);
                if (closed_) {
                    break;
                }
                writing_ = true;
                write_ok_ = false;
                lock.unlock();
                net::post(srv_.ioc, [self = shared_from_this(), frame = std::move(frame),
                                     t = std::move(texts)]() mutable {
                    self->send(std::move(frame), std::move(t));
                });
                lock.lock();
                cv_.wait(lock, [this] { return !writing_ || closed_; });
                // Written (even if the session was closed meanwhile): sent. Otherwise the frame
                // stays in hand and is counted as abandoned below.
                if (!writing_ && write_ok_ && frame_in_hand) {
                    sent_.fetch_add(1, std::memory_order_relaxed);
                    frame_in_hand = false;
                }
                if (closed_) {
                    break;
                }
            }
        } catch (const std::exception& e) {
            srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
            srv_.log(name_ + ": " + e.what());
        } catch (...) {
            srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
            srv_.log(name_ + ": unknown exception");
        }
        if (frame_in_hand) {
            abandoned_.fetch_add(1, std::memory_order_relaxed);
        }
        finish();
        leave();
    }

    // Leaves the server's list, adding this client's counts to the totals. The frames still in
    // its (closed) subscription are counted as abandoned first, so that every frame delivered
    // to the client is sent, dropped or abandoned.
    void leave() noexcept {
        try {
            while (sub_.try_pop()) {
                abandoned_.fetch_add(1, std::memory_order_relaxed);
            }
        } catch (...) {
        }
        const auto s = stats();
        {
            const std::lock_guard<std::mutex> lock(srv_.mu);
            srv_.finished_sent += s.sent;
            srv_.finished_dropped += s.dropped;
            srv_.finished_abandoned += s.abandoned;
            auto& v = srv_.streams;
            v.erase(std::remove_if(v.begin(), v.end(),
                                   [this](const std::weak_ptr<stream_session>& w) {
                                       const auto p = w.lock();
                                       return !p || p.get() == this;
                                   }),
                    v.end());
        }
    }

    connection_count count_;
    const std::string name_;
    framepipe::subscription<encoded_frame> sub_;
    // I/O thread only: the stall timer of the send in progress, and the read budget.
    net::steady_timer stall_timer_{srv_.ioc};
    net::steady_timer read_timer_{srv_.ioc};
    bool in_send_ = false;
    std::uint64_t sends_ = 0;
    double read_credit_ = client_burst_bytes;
    clock_type::time_point last_read_ = clock_type::now();
    std::mutex mu_;
    std::condition_variable cv_;
    bool writing_ = false;
    bool write_ok_ = false; // the last write_done's outcome
    bool closed_ = false;
    bool pump_started_ = false;
    // Relaxed: a statistics counter.
    std::atomic<std::uint64_t> sent_{0};
    std::atomic<std::uint64_t> abandoned_{0};
};

class ws_session final : public stream_session {
public:
    ws_session(web_server::impl& srv, std::string name, connection_count count, tcp::socket socket)
        : stream_session(srv, std::move(name), std::move(count)), ws_(std::move(socket)) {}

    void run(http::request<http::string_body> req) {
        beast::get_lowest_layer(ws_).expires_never(); // the websocket's own timeouts apply
        ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
        ws_.read_message_max(4096); // the page sends nothing we need
        ws_.async_accept(req, [self = shared(), this](beast::error_code ec) {
            if (ec) {
                finish();
                return;
            }
            start_pump();
            do_read();
        });
    }

private:
    std::shared_ptr<ws_session> shared() {
        return std::static_pointer_cast<ws_session>(shared_from_this());
    }

    // Reads and discards what the page sends, within the client's budget; notices the close.
    void do_read() {
        ws_.async_read(in_, [self = shared(), this](beast::error_code ec, std::size_t n) {
            if (ec) {
                finish();
                return;
            }
            in_.consume(n);
            read_again(n, [self] { self->do_read(); });
        });
    }

    void async_send(std::shared_ptr<const encoded_frame> f,
                    std::vector<std::string> texts) override {
        frame_ = std::move(f);
        texts_ = std::move(texts);
        next_text_ = 0;
        write_next();
    }

    void write_next() {
        if (next_text_ < texts_.size()) {
            ws_.text(true);
            ws_.async_write(net::buffer(texts_[next_text_]),
                            [self = shared(), this](beast::error_code ec, std::size_t) {
                                if (ec) {
                                    write_done(false);
                                    return;
                                }
                                ++next_text_;
                                write_next();
                            });
            return;
        }
        if (!frame_) {
            write_done(true); // a state message alone
            return;
        }
        ws_.binary(true);
        ws_.async_write(net::buffer(frame_->jpeg),
                        [self = shared(), this](beast::error_code ec, std::size_t) {
                            frame_.reset(); // back to its pool now, not at the next frame
                            write_done(!ec);
                        });
    }

    void close_socket() noexcept override {
        beast::error_code ec;
        auto& s = beast::get_lowest_layer(ws_).socket();
        s.shutdown(tcp::socket::shutdown_both, ec);
        s.close(ec);
    }

    [[nodiscard]] bool wants_state() const noexcept override { return true; }

    websocket::stream<beast::tcp_stream> ws_;
    beast::flat_buffer in_;
    std::shared_ptr<const encoded_frame> frame_;
    std::vector<std::string> texts_;
    std::size_t next_text_ = 0;
};

class mjpeg_session final : public stream_session {
public:
    mjpeg_session(web_server::impl& srv, std::string name, connection_count count, tcp::socket socket)
        : stream_session(srv, std::move(name), std::move(count)), stream_(std::move(socket)) {}

    void run(unsigned version) {
        stream_.expires_never();
        res_.version(version);
        res_.result(http::status::ok);
        res_.set(http::field::server, "framepipe");
        res_.set(http::field::content_type, "multipart/x-mixed-replace; boundary=frame");
        res_.set(http::field::cache_control, "no-cache, no-store");
        res_.keep_alive(false);
        serializer_.emplace(res_);
        http::async_write_header(stream_, *serializer_,
                                 [self = shared(), this](beast::error_code ec, std::size_t) {
                                     if (ec) {
                                         finish();
                                         return;
                                     }
                                     start_pump();
                                     do_read();
                                 });
    }

private:
    std::shared_ptr<mjpeg_session> shared() {
        return std::static_pointer_cast<mjpeg_session>(shared_from_this());
    }

    // The client should send nothing more (what it sends is discarded, within its budget); a
    // read ends when it goes away.
    void do_read() {
        stream_.async_read_some(net::buffer(discard_),
                                [self = shared(), this](beast::error_code ec, std::size_t n) {
                                    if (ec) {
                                        finish();
                                        return;
                                    }
                                    read_again(n, [self] { self->do_read(); });
                                });
    }

    void async_send(std::shared_ptr<const encoded_frame> f, std::vector<std::string>) override {
        frame_ = std::move(f);
        // One part of the multipart body (RFC 2046): boundary, part headers, the JPEG.
        part_head_ = "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " +
                     std::to_string(frame_->jpeg.size()) + "\r\n\r\n";
        const std::array<net::const_buffer, 3> parts{net::buffer(part_head_),
                                                     net::buffer(frame_->jpeg),
                                                     net::buffer(part_tail_)};
        net::async_write(stream_, parts,
                         [self = shared(), this](beast::error_code ec, std::size_t) {
                             frame_.reset();
                             write_done(!ec);
                         });
    }

    void close_socket() noexcept override {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.socket().close(ec);
    }

    beast::tcp_stream stream_;
    http::response<http::empty_body> res_;
    std::optional<http::response_serializer<http::empty_body>> serializer_;
    std::shared_ptr<const encoded_frame> frame_;
    std::string part_head_;
    static constexpr std::string_view part_tail_ = "\r\n";
    std::array<char, 512> discard_{};
};

// One HTTP connection: reads requests (bounded in size and time), answers them, and hands
// itself over to a stream session on /ws or /video.mjpg.
class http_session : public std::enable_shared_from_this<http_session> {
public:
    // The read buffer is capped: the parser's header and body limits do not cover a chunk's
    // extension or a chunked trailer, which would otherwise be buffered whole. (Saturating: a
    // max_request_bytes near SIZE_MAX means no cap, not a tiny one.)
    http_session(web_server::impl& srv, connection_count count, tcp::socket socket)
        : srv_(srv), count_(std::move(count)), stream_(std::move(socket)),
          buffer_(srv.options.max_request_bytes > (SIZE_MAX - 4096) / 2
                      ? SIZE_MAX
                      : 2 * srv.options.max_request_bytes + 4096) {}

    void run() { do_read(); }

    // On the I/O thread, by stop(): closes the socket (and its timer), so that the pending
    // operation ends and the session goes. Idempotent.
    void shut() noexcept {
        try {
            beast::error_code ec;
            stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
            stream_.close();
        } catch (...) {
        }
    }

private:
    void do_read() {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(
            std::min<std::size_t>(srv_.options.max_request_bytes, UINT32_MAX)));
        parser_->body_limit(srv_.options.max_request_bytes);
        stream_.expires_after(srv_.options.request_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) {
                             self->on_read(ec);
                         });
    }

    void on_read(beast::error_code ec) {
        if (ec == beast::error::timeout) {
            srv_.timeouts.fetch_add(1, std::memory_order_relaxed);
        }
        if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
            ec == net::error::operation_aborted) {
            close(); // the peer went away, or was too slow (tcp_stream closed the socket)
            return;
        }
        if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            respond_error(http::status::request_header_fields_too_large, "request header too large");
            return;
        }
        if (ec == http::error::body_limit) {
            respond_error(http::status::payload_too_large, "request body too large");
            return;
        }
        if (ec) {
            if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
                respond_error(http::status::bad_request, "malformed request");
            } else {
                close(); // a socket error: nobody to answer
            }
            return;
        }
        srv_.http_requests.fetch_add(1, std::memory_order_relaxed);
        try {
            handle(parser_->release());
        } catch (const std::exception& e) {
            internal_error(e.what());
        } catch (...) {
            internal_error("unknown exception");
        }
    }

    // A callback (metrics_text, stats_json) or the handling of a request threw: 500.
    void internal_error(const std::string& what) {
        srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
        srv_.log("request: " + what);
        respond_error(http::status::internal_server_error, "internal error");
    }

    void handle(http::request<http::string_body> req) {
        const std::string_view target(req.target().data(), req.target().size());
        const std::string_view path = target.substr(0, target.find('?'));
        const auto method = req.method();
        if (websocket::is_upgrade(req)) {
            if (path != "/ws") {
                respond_error(http::status::not_found, "no websocket here", req.version());
                return;
            }
            // A page from elsewhere may open a websocket to any address (browsers apply no
            // same-origin rule to it): the Host and the Origin must be this server's.
            if (!from_this_server(req, true)) {
                return;
            }
            open_stream<ws_session>("ws", [&req](ws_session& s) { s.run(std::move(req)); });
            return;
        }
        if (method != http::verb::get && method != http::verb::head) {
            const bool control_method = method == http::verb::post || method == http::verb::put ||
                                        method == http::verb::patch ||
                                        method == http::verb::delete_ ||
                                        method == http::verb::options;
            if (srv_.options.control && control_method) {
                control(std::move(req), std::string(path));
                return;
            }
            const bool control = static_cast<bool>(srv_.options.control);
            auto res = make_response(http::status::method_not_allowed, "text/plain",
                                     control ? "only GET, HEAD, POST, PUT, PATCH and DELETE\n"
                                             : "only GET and HEAD\n",
                                     req);
            res->set(http::field::allow, control ? "GET, HEAD, POST, PUT, PATCH, DELETE" : "GET, HEAD");
            send(std::move(res));
            return;
        }
        const auto asset = srv_.options.assets.find(std::string(path));
        const bool served = path == "/" || path == "/index.html" ||
                            asset != srv_.options.assets.end() ||
                            (path == "/metrics" && srv_.options.metrics_text) ||
                            path == "/stats.json" || path == "/video.mjpg";
        if (!served) {
            respond_error(http::status::not_found, "not found", req.version());
            return;
        }
        // DNS rebinding: a foreign name resolved to this address carries that name in Host.
        if (!from_this_server(req, false)) {
            return;
        }
        if (path == "/" || path == "/index.html") {
            send(make_response(http::status::ok, "text/html; charset=utf-8",
                               srv_.options.page_html, req));
        } else if (asset != srv_.options.assets.end()) {
            send(make_response(http::status::ok, asset->second.content_type, asset->second.body,
                               req));
        } else if (path == "/metrics") {
            send(make_response(http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                               srv_.options.metrics_text(), req));
        } else if (path == "/stats.json") {
            send(make_response(http::status::ok, "application/json", stats_body(), req));
        } else if (method == http::verb::head) { // /video.mjpg
            // The stream's headers without the stream.
            send(make_response(http::status::ok, "multipart/x-mixed-replace; boundary=frame", "",
                               req));
        } else {
            const auto version = req.version();
            open_stream<mjpeg_session>("mjpeg", [version](mjpeg_session& s) { s.run(version); });
        }
    }

    // Whether the request's Host (and, with `check_origin`, its Origin when present) names this
    // server (see web_server.hpp); if not, answers 403 and returns false.
    bool from_this_server(const http::request<http::string_body>& req, bool check_origin) {
        const auto& o = srv_.options;
        const auto host = req[http::field::host];
        if (!host_names_server(std::string_view(host.data(), host.size()), o.host, srv_.bound_port)) {
            respond_error(http::status::forbidden, "the Host header does not name this server",
                          req.version());
            return false;
        }
        if (const auto origin = req.find(http::field::origin);
            check_origin && origin != req.end() &&
            !origin_names_server(std::string_view(origin->value().data(), origin->value().size()))) {
            respond_error(http::status::forbidden, "the Origin is not this server's page",
                          req.version());
            return false;
        }
        return true;
    }

    // "http://" (in any case, RFC 3986 3.1) and a Host value that names this server.
    [[nodiscard]] bool origin_names_server(std::string_view value) const {
        constexpr std::string_view http_scheme = "http://";
        return has_scheme_prefix(value, http_scheme) &&
               host_names_server(value.substr(http_scheme.size()), srv_.options.host,
                                 srv_.bound_port);
    }

    // Hands the connection over to a new stream session (after reserve_stream()), and `run`s
    // it. What fails on the way ends the session and gives its reservation back.
    template <class Session, class Run>
    void open_stream(const char* kind, Run run) {
        if (!reserve_stream()) {
            return;
        }
        std::shared_ptr<Session> s;
        try {
            s = std::make_shared<Session>(srv_, client_name(kind), std::move(count_),
                                          stream_.release_socket());
        } catch (...) {
            srv_.release_pump(); // no session: the socket went with the exception
            srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
            srv_.log(std::string(kind) + " client: could not be set up");
            return;
        }
        try {
            s->enrol();
            run(*s);
        } catch (...) {
            srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
            srv_.log(s->name() + ": could not be started");
            s->finish(); // gives the reservation back (the pump never started)
        }
    }

    // A control request: the checks of web_server.hpp's "Control requests", in that order,
    // then the callback on the control thread; its response is sent from the I/O thread.
    void control(http::request<http::string_body> req, std::string path) {
        const auto& o = srv_.options;
        const auto refuse = [&](http::status status, const std::string& why) {
            srv_.control_refused.fetch_add(1, std::memory_order_relaxed);
            auto res = make_response(status, "application/json",
                                     json_text(nlohmann::json{{"error", why}}), req);
            if (status == http::status::unauthorized) {
                res->set(http::field::www_authenticate, "Bearer");
            }
            send(std::move(res));
        };
        const auto method = req.method();
        if (method == http::verb::options) {
            refuse(http::status::forbidden,
                   "cross-origin requests are refused: no CORS preflight is answered");
            return;
        }
        const auto port = srv_.bound_port;
        const std::string host(req[http::field::host]);
        if (!host_names_server(host, o.host, port)) {
            refuse(http::status::forbidden, "Host '" + host + "' does not name this server (" +
                                                o.host + ":" + std::to_string(port) + ")");
            return;
        }
        if (const auto origin = req.find(http::field::origin); origin != req.end()) {
            const std::string_view value(origin->value().data(), origin->value().size());
            if (!origin_names_server(value)) {
                refuse(http::status::forbidden,
                       "Origin '" + std::string(value) + "' is not this server's page");
                return;
            }
        }
        if (!o.control_token.empty() &&
            !same_secret(std::string(req[http::field::authorization]), "Bearer " + o.control_token)) {
            refuse(http::status::unauthorized, "a control token is required "
                                               "(Authorization: Bearer <--control-token>)");
            return;
        }
        if ((method == http::verb::post || method == http::verb::put ||
             method == http::verb::patch) &&
            !is_json(std::string(req[http::field::content_type]))) {
            refuse(http::status::unsupported_media_type,
                   "Content-Type must be application/json");
            return;
        }
        control_request creq{std::string(req.method_string()), std::move(path),
                             std::move(req.body())};
        auto job = [self = shared_from_this(), creq = std::move(creq), version = req.version(),
                    keep = req.keep_alive()](std::stop_token stop) {
            control_response r;
            try {
                r = self->srv_.options.control(creq, stop);
            } catch (const std::exception& e) {
                self->srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
                r = {500, json_text(nlohmann::json{{"error", e.what()}})};
            } catch (...) {
                self->srv_.internal_errors.fetch_add(1, std::memory_order_relaxed);
                r = {500, json_text(nlohmann::json{{"error", "unknown exception"}})};
            }
            net::post(self->srv_.ioc, [self, r = std::move(r), version, keep] {
                http::request<http::string_body> like(http::verb::post, "/", version);
                like.keep_alive(keep);
                self->send(self->make_response(static_cast<http::status>(r.status),
                                               "application/json", r.body, like));
            });
        };
        if (!framepipe::accepted(srv_.control_jobs.try_push(std::move(job)))) {
            refuse(http::status::service_unavailable, "too many control requests at once");
            return;
        }
        srv_.control_requests.fetch_add(1, std::memory_order_relaxed);
    }

    // Compares in time that does not depend on where they differ (a token).
    static bool same_secret(std::string_view given, std::string_view expected) noexcept {
        std::size_t diff = given.size() ^ expected.size();
        for (std::size_t i = 0; i < expected.size(); ++i) {
            const char g = i < given.size() ? given[i] : '\0';
            diff |= static_cast<unsigned char>(g ^ expected[i]);
        }
        return diff == 0 && !expected.empty();
    }

    // "application/json", any case, with parameters ("; charset=utf-8") allowed.
    static bool is_json(std::string_view type) noexcept {
        const auto end = type.find(';');
        auto media = type.substr(0, end);
        while (!media.empty() && media.back() == ' ') {
            media.remove_suffix(1);
        }
        constexpr std::string_view json = "application/json";
        if (media.size() != json.size()) {
            return false;
        }
        for (std::size_t i = 0; i < json.size(); ++i) {
            if (std::tolower(static_cast<unsigned char>(media[i])) != json[i]) {
                return false;
            }
        }
        return true;
    }

    std::string client_name(const char* kind) {
        const std::lock_guard<std::mutex> lock(srv_.mu);
        return std::string(kind) + "-" + std::to_string(srv_.next_client++);
    }

    // Counts a new stream client in (its pump, from now until it ends), or answers 503 when
    // max_streams are connected or the server is stopping, and returns false.
    bool reserve_stream() {
        {
            const std::lock_guard<std::mutex> lock(srv_.mu);
            if (!srv_.stopping && srv_.pumps_running < srv_.options.max_streams) {
                ++srv_.pumps_running;
                ++srv_.streams_total;
                return true;
            }
        }
        srv_.streams_rejected.fetch_add(1, std::memory_order_relaxed);
        respond_error(http::status::service_unavailable, "too many streams");
        return false;
    }

    std::string stats_body() {
        nlohmann::json j = nlohmann::json::object();
        if (srv_.options.stats_json) {
            j = nlohmann::json::parse(srv_.options.stats_json(), nullptr, false);
            if (!j.is_object()) {
                j = nlohmann::json{{"error", "stats_json did not return a JSON object"}};
            }
        }
        j["server"] = nlohmann::json::parse(web_server_stats_json(), nullptr, false);
        return json_text(j);
    }

    std::string web_server_stats_json();

    std::shared_ptr<http::response<http::string_body>>
    make_response(http::status status, std::string_view type, std::string body,
                  const http::request<http::string_body>& req) {
        auto res = std::make_shared<http::response<http::string_body>>(status, req.version());
        res->set(http::field::server, "framepipe");
        res->set(http::field::content_type, std::string(type));
        res->set(http::field::cache_control, "no-store");
        res->set("X-Content-Type-Options", "nosniff");
        res->keep_alive(req.keep_alive());
        const auto size = body.size();
        if (req.method() != http::verb::head) {
            res->body() = std::move(body);
        }
        res->content_length(size);
        if (static_cast<unsigned>(status) >= 400) {
            srv_.http_errors.fetch_add(1, std::memory_order_relaxed);
        }
        return res;
    }

    void respond_error(http::status status, std::string_view why, unsigned version = 11) {
        auto res = std::make_shared<http::response<http::string_body>>(status, version);
        res->set(http::field::server, "framepipe");
        res->set(http::field::content_type, "text/plain; charset=utf-8");
        res->body() = std::string(why) + "\n";
        res->keep_alive(false);
        res->prepare_payload();
        srv_.http_errors.fetch_add(1, std::memory_order_relaxed);
        send(std::move(res));
    }

    void send(std::shared_ptr<http::response<http::string_body>> res) {
        stream_.expires_after(srv_.options.request_timeout);
        const bool keep = res->keep_alive();
        http::async_write(stream_, *res,
                          [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                              if (ec == beast::error::timeout) {
                                  self->srv_.timeouts.fetch_add(1, std::memory_order_relaxed);
                              }
                              if (ec || !keep) {
                                  self->close();
                                  return;
                              }
                              self->do_read();
                          });
    }

    // Ends the connection gracefully: FIN first, then read and discard what the client still
    // sends until it closes (or request_timeout), so that closing with unread request bytes does
    // not reset the connection and destroy the response on its way ("lingering close").
    void close() {
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        if (ec) {
            stream_.socket().close(ec);
            return;
        }
        stream_.expires_after(srv_.options.request_timeout);
        linger();
    }

    void linger() {
        stream_.async_read_some(net::buffer(discard_),
                                [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                    if (ec) {
                                        if (ec == beast::error::timeout) {
                                            self->srv_.timeouts.fetch_add(1, std::memory_order_relaxed);
                                        }
                                        beast::error_code ignored;
                                        self->stream_.socket().close(ignored);
                                        return;
                                    }
                                    self->linger();
                                });
    }

    std::array<char, 4096> discard_{};
    web_server::impl& srv_;
    connection_count count_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
};

} // namespace

// Implemented here, where web_server::impl is complete for both.
namespace {
web_server_stats collect(const web_server::impl& srv) {
    web_server_stats s;
    s.http_requests = srv.http_requests.load(std::memory_order_relaxed);
    s.http_errors = srv.http_errors.load(std::memory_order_relaxed);
    s.streams_rejected = srv.streams_rejected.load(std::memory_order_relaxed);
    s.streams_stalled = srv.streams_stalled.load(std::memory_order_relaxed);
    s.connections_now = srv.connections_now.load(std::memory_order_relaxed);
    s.connections_total = srv.connections_total.load(std::memory_order_relaxed);
    s.connections_rejected = srv.connections_rejected.load(std::memory_order_relaxed);
    s.accept_errors = srv.accept_errors.load(std::memory_order_relaxed);
    s.timeouts = srv.timeouts.load(std::memory_order_relaxed);
    s.client_bytes_read = srv.client_bytes_read.load(std::memory_order_relaxed);
    s.reads_throttled = srv.reads_throttled.load(std::memory_order_relaxed);
    s.control_requests = srv.control_requests.load(std::memory_order_relaxed);
    s.control_refused = srv.control_refused.load(std::memory_order_relaxed);
    s.internal_errors = srv.internal_errors.load(std::memory_order_relaxed);
    std::vector<std::shared_ptr<stream_session>> live;
    {
        const std::lock_guard<std::mutex> lock(srv.mu);
        s.streams_total = srv.streams_total;
        s.frames_sent = srv.finished_sent;
        s.frames_dropped = srv.finished_dropped;
        s.frames_abandoned = srv.finished_abandoned;
        for (const auto& w : srv.streams) {
            if (auto p = w.lock()) {
                live.push_back(std::move(p));
            }
        }
    }
    for (const auto& p : live) {
        auto c = p->stats();
        s.frames_sent += c.sent;
        s.frames_dropped += c.dropped;
        s.frames_abandoned += c.abandoned;
        s.clients.push_back(std::move(c));
    }
    s.streams_now = s.clients.size();
    return s;
}

nlohmann::json to_json(const web_server_stats& s) {
    nlohmann::json clients = nlohmann::json::array();
    for (const auto& c : s.clients) {
        clients.push_back({{"name", c.name}, {"sent", c.sent}, {"dropped", c.dropped},
                           {"queued", c.queued}, {"abandoned", c.abandoned}});
    }
    return {{"http_requests", s.http_requests},   {"http_errors", s.http_errors},
            {"streams_now", s.streams_now},       {"streams_total", s.streams_total},
            {"streams_rejected", s.streams_rejected}, {"streams_stalled", s.streams_stalled},
            {"connections_now", s.connections_now}, {"connections_total", s.connections_total},
            {"connections_rejected", s.connections_rejected}, {"accept_errors", s.accept_errors},
            {"timeouts", s.timeouts},
            {"client_bytes_read", s.client_bytes_read}, {"reads_throttled", s.reads_throttled},
            {"frames_sent", s.frames_sent},
            {"frames_dropped", s.frames_dropped}, {"frames_abandoned", s.frames_abandoned},
            {"control_requests", s.control_requests},
            {"control_refused", s.control_refused},   {"internal_errors", s.internal_errors},
            {"clients", clients}};
}

std::string http_session::web_server_stats_json() { return json_text(to_json(collect(srv_))); }
} // namespace

namespace {
// A connection beyond max_connections: 503 if the socket takes it at once (a new socket's send
// buffer does), then closed. Request bytes already received make the close a reset, which may
// overtake the response: the client then sees only the reset.
void refuse_connection(tcp::socket socket) {
    http::response<http::string_body> res(http::status::service_unavailable, 11);
    res.set(http::field::server, "framepipe");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = "too many connections\n";
    res.keep_alive(false);
    res.prepare_payload();
    beast::error_code ec;
    socket.non_blocking(true, ec);
    http::write(socket, res, ec);
    socket.shutdown(tcp::socket::shutdown_both, ec);
    socket.close(ec);
}
} // namespace

void web_server::impl::do_accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || !acceptor.is_open()) {
            return;
        }
        if (ec) {
            accept_errors.fetch_add(1, std::memory_order_relaxed);
        }
        if (ec == net::error::connection_aborted) {
            do_accept(); // reset by the client before it was accepted: take the next one
            return;
        }
        if (ec) {
            // Out of descriptors (EMFILE) or memory: the connection stays in the backlog, and
            // accepting again at once would spin. Try again a little later.
            accept_retry.expires_after(std::chrono::milliseconds(100));
            accept_retry.async_wait([this](beast::error_code e) {
                if (!e && acceptor.is_open()) {
                    do_accept();
                }
            });
            return;
        }
        // connections_now only grows here, on the I/O thread: the check holds until the add.
        if (connections_now.load(std::memory_order_relaxed) >= options.max_connections) {
            connections_rejected.fetch_add(1, std::memory_order_relaxed);
            refuse_connection(std::move(socket));
        } else {
            connections_total.fetch_add(1, std::memory_order_relaxed);
            auto session = std::make_shared<http_session>(*this, connection_count(connections_now),
                                                          std::move(socket));
            add_http_session(session);
            session->run();
        }
        do_accept();
    });
}

void web_server::impl::add_http_session(const std::shared_ptr<http_session>& s) {
    const std::lock_guard<std::mutex> lock(sessions_mu);
    if (http_sessions.size() >= prune_at) {
        std::erase_if(http_sessions, [](const std::weak_ptr<http_session>& w) { return w.expired(); });
        prune_at = std::max<std::size_t>(64, 2 * http_sessions.size());
    }
    http_sessions.push_back(s);
}

void web_server::impl::close_everything() noexcept {
    beast::error_code ec;
    acceptor.close(ec);
    try {
        accept_retry.cancel();
    } catch (...) {
    }
    std::vector<std::weak_ptr<http_session>> sessions;
    {
        const std::lock_guard<std::mutex> lock(sessions_mu);
        sessions.swap(http_sessions);
    }
    for (const auto& w : sessions) {
        if (const auto p = w.lock()) {
            p->shut();
        }
    }
}

web_server::web_server(web_server_options options, framepipe::broadcaster<encoded_frame>& frames) {
    if (options.state_period <= std::chrono::milliseconds::zero()) {
        throw std::invalid_argument("state_period: must be positive");
    }
    if (options.request_timeout <= std::chrono::seconds::zero()) {
        throw std::invalid_argument("request_timeout: must be positive");
    }
    if (options.stall_timeout <= std::chrono::seconds::zero()) {
        throw std::invalid_argument("stall_timeout: must be positive");
    }
    if (options.max_streams == 0) {
        throw std::invalid_argument("max_streams: must be at least 1");
    }
    if (options.max_request_bytes == 0) {
        throw std::invalid_argument("max_request_bytes: must be at least 1");
    }
    if (options.max_connections < options.max_streams) {
        throw std::invalid_argument("max_connections: must be at least max_streams (streams are connections)");
    }
    impl_ = std::make_shared<impl>(std::move(options), frames);
    auto& a = impl_->acceptor;
    const auto& o = impl_->options;
    beast::error_code ec;
    const auto address = net::ip::make_address(o.host, ec);
    if (ec) {
        throw web_server_error("cannot listen on '" + o.host + "': not an IP address");
    }
    const tcp::endpoint endpoint(address, o.port);
    const auto where = "cannot listen on " + o.host + ":" + std::to_string(o.port) + ": ";
    a.open(endpoint.protocol(), ec);
    if (!ec) {
        a.set_option(net::socket_base::reuse_address(true), ec);
    }
    if (!ec) {
        // A connection reset before it was accepted is reported (and counted in accept_errors)
        // instead of skipped silently, so that the counters account for every connection.
        a.set_option(net::socket_base::enable_connection_aborted(true), ec);
    }
    if (!ec) {
        a.bind(endpoint, ec);
    }
    if (!ec) {
        a.listen(net::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        throw web_server_error(where + ec.message());
    }
    impl_->bound_port = a.local_endpoint().port();
}

web_server::~web_server() { stop(); }

void web_server::start() {
    auto& s = *impl_;
    if (s.started) {
        throw std::logic_error("web_server::start: already started");
    }
    s.started = true;
    if (s.options.control) {
        // One request at a time, off the I/O thread; ends when stop() closes the queue.
        s.control_thread = std::jthread([&s](std::stop_token stop) {
            while (auto job = s.control_jobs.pop(stop)) {
                try {
                    (*job)(stop);
                } catch (...) {
                    s.internal_errors.fetch_add(1, std::memory_order_relaxed); // out of memory
                }
            }
        });
    }
    s.do_accept();
    s.io_thread = std::thread([&s] {
        for (;;) {
            try {
                s.ioc.run();
                break;
            } catch (const std::exception& e) {
                s.internal_errors.fetch_add(1, std::memory_order_relaxed);
                s.log(std::string("I/O thread: ") + e.what()); // keep serving
            } catch (...) {
                s.internal_errors.fetch_add(1, std::memory_order_relaxed);
                s.log("I/O thread: unknown exception"); // keep serving
            }
        }
        const std::lock_guard<std::mutex> lock(s.mu);
        s.io_done = true;
        s.io_cv.notify_all();
    });
}

void web_server::stop() noexcept {
    if (!impl_ || impl_->stopped) {
        return;
    }
    auto& s = *impl_;
    s.stopped = true;
    // The control thread first: a handler in progress sees the stop and returns; its response
    // is posted to the I/O thread, which is stopped below.
    s.control_thread.request_stop();
    s.control_jobs.close();
    if (s.control_thread.joinable()) {
        s.control_thread.join();
    }
    // Control requests that never ran: each holds its session (waiting for the reply). They
    // are destroyed on the I/O thread below, which closes their connections.
    std::vector<std::function<void(std::stop_token)>> unrun;
    try {
        while (auto job = s.control_jobs.try_pop()) {
            unrun.push_back(std::move(*job));
        }
    } catch (...) {
    }
    if (!s.started) {
        beast::error_code ec;
        s.acceptor.close(ec);
        return;
    }
    std::vector<std::shared_ptr<stream_session>> live;
    {
        const std::lock_guard<std::mutex> lock(s.mu);
        s.stopping = true; // no new stream session enrols from now on
        for (const auto& w : s.streams) {
            if (auto p = w.lock()) {
                live.push_back(std::move(p));
            }
        }
    }
    // On the I/O thread, which owns the sockets: the listener, then every HTTP connection
    // (idle keep-alive, mid-request, waiting for a control reply, lingering).
    auto close_all = [&s, unrun = std::move(unrun)]() mutable {
        unrun.clear();
        s.close_everything();
        const std::lock_guard<std::mutex> lock(s.mu);
        s.io_closed = true;
        s.io_cv.notify_all();
    };
    bool posted = false;
    try {
        net::post(s.ioc, std::move(close_all));
        posted = true;
    } catch (...) {
    }
    for (const auto& p : live) {
        p->finish(); // closes the stream's socket on the I/O thread
    }
    live.clear();
    {
        // Every pump is either waiting on its subscription (closed by finish) or on its write
        // (woken by finish), so this wait ends. The I/O thread never blocks (all its socket
        // I/O is asynchronous), so it runs close_all soon; if its run() is over (out of work
        // after an exception), nobody else touches the sockets and they are closed here.
        std::unique_lock<std::mutex> lock(s.mu);
        s.pumps_done.wait(lock, [&s] { return s.pumps_running == 0; });
        s.io_cv.wait(lock, [&s, posted] { return !posted || s.io_closed || s.io_done; });
        if (!s.io_closed && s.io_done) {
            lock.unlock();
            s.close_everything();
            lock.lock();
        }
        // With every socket closed, their operations end at once and the io_context runs out
        // of work: the sessions are gone, connections_now is 0. Bounded all the same: what is
        // left after that is cut off by ioc.stop().
        s.io_cv.wait_for(lock, std::chrono::seconds(5), [&s] { return s.io_done; });
    }
    s.ioc.stop();
    if (s.io_thread.joinable()) {
        s.io_thread.join();
    }
}

unsigned short web_server::port() const noexcept { return impl_->bound_port; }

bool host_names_server(std::string_view host, const std::string& bound_host,
                       unsigned short bound_port) {
    // Split "name", "name:port", "[v6]", "[v6]:port".
    std::string_view name = host;
    std::string_view port;
    if (!host.empty() && host.front() == '[') {
        const auto close = host.find(']');
        if (close == std::string_view::npos) {
            return false;
        }
        name = host.substr(1, close - 1);
        const auto rest = host.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') {
                return false;
            }
            port = rest.substr(1);
        }
    } else if (const auto colon = host.rfind(':'); colon != std::string_view::npos) {
        name = host.substr(0, colon);
        port = host.substr(colon + 1);
        if (name.find(':') != std::string_view::npos) {
            return false; // a bare IPv6 literal must be bracketed
        }
    }
    if (name.empty()) {
        return false;
    }
    if (!port.empty() && port != std::to_string(bound_port)) {
        return false;
    }
    std::string lower(name);
    for (auto& c : lower) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    beast::error_code ec;
    const auto bound = net::ip::make_address(bound_host, ec);
    if (ec) {
        return false;
    }
    const auto literal = net::ip::make_address(lower, ec);
    const bool is_literal = !ec;
    if (bound.is_unspecified()) { // 0.0.0.0 or ::: any address of this machine, never a name
        return is_literal || lower == "localhost";
    }
    if (lower == "localhost") {
        return bound.is_loopback();
    }
    return is_literal && literal == bound;
}

web_server_stats web_server::stats() const { return collect(*impl_); }

std::string web_server::stats_json_text() const { return json_text(to_json(collect(*impl_))); }

} // namespace framepipe_examples
