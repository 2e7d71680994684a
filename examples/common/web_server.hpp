// examples/common/web_server.hpp - the examples' live web UI: one page, a websocket of JPEG
// frames, an MJPEG stream, Prometheus metrics and a JSON snapshot, on Boost.Beast.
//
//     framepipe::broadcaster<framepipe_examples::encoded_frame> jpegs;   // fed by the UI stage
//     framepipe_examples::web_server server({.port = 7001, .page_html = my_page,
//                                            .metrics_text = [&] { return framepipe::to_prometheus(p.snapshot()); },
//                                            .stats_json = [&] { return json_text(stats()); },
//                                            .state_json = [&] { return json_text(live_state()); }},
//                                           jpegs);          // binds now: throws if the port is taken
//     server.start();                                         // serves on its own thread
//
// (web_ui.hpp fills these options in the way the examples serve them, shared page script
// included. json_text, from program.hpp, is dump() that turns bytes that are not UTF-8, in a
// file or camera name, into U+FFFD instead of throwing.)
//
//   GET /            the page (options.page_html), plus options.assets by exact path
//                    (every GET and HEAD that would be served, /ws included: only with a Host
//                    header that names the server, as for control requests below; 403
//                    otherwise, so that DNS rebinding reads nothing. /ws also needs an Origin,
//                    when present, that is the server's own page: 403 otherwise)
//   GET /ws          websocket: per frame, about once a second a text message with
//                    options.state_json() (if set), then a text message with the frame's `meta`
//                    (if any), then the JPEG as a binary message. So the last text before a
//                    binary message is that frame's. While no frame comes (a camera offline),
//                    the state message alone, once per state_period. Messages from the page are
//                    read and ignored.
//   GET /video.mjpg  multipart/x-mixed-replace stream of the same JPEGs, for <img> and players
//   GET /metrics     options.metrics_text() as text/plain; version=0.0.4 (Prometheus)
//   GET /stats.json  options.stats_json() merged with the server's own counters ("server")
//   POST, PUT, PATCH, DELETE (any path): with options.control set, the run-time control
//                    requests (framepipe-multicam's POST /cameras, DELETE /cameras/NAME), after
//                    the checks of "Control requests" below; without it, 405
//   anything else    404; any other method 405 with an Allow header (GET, HEAD, and with
//                    options.control POST, PUT, PATCH, DELETE); a malformed request 400; a request
//                    whose header exceeds max_request_bytes 431 (so does a chunked body's
//                    extension or trailer beyond about twice that: the read buffer's cap), a
//                    body 413; too many streams 503. A request not complete within request_timeout has its connection
//                    closed. After an error response the connection is closed gracefully (the
//                    rest of the request is read and discarded). Never a crash: a callback that
//                    throws (anything, not only std::exception) gets a 500 (metrics_text,
//                    stats_json; control: {"error": what()} or {"error":"unknown exception"}),
//                    or ends that stream client (state_json); counted in internal_errors.
//
// Hostile clients. What one client can hold is bounded, so that many cannot grow the server:
//   - connections: at most max_connections open (streams included); one more gets a 503 written
//     without waiting (or only a reset) and is closed at once.
//   - a request or response: request_timeout to receive the request and to send the response;
//     a client that never reads its responses is closed then.
//   - a stream client that does not take a frame within stall_timeout is closed (its thread and
//     subscription go with it).
//   - what a stream client sends is read and discarded within a budget (64 KiB at once, then
//     64 KiB/s, each message or read counted as at least 1 KiB); beyond it the next read waits,
//     so a flood stays in the TCP buffers and TCP holds the client back.
//   - out of descriptors (EMFILE), the server retries its accept every 100 ms instead of spinning.
// stats() counts each of these (connections_rejected, timeouts, streams_stalled,
// reads_throttled, accept_errors). test_web_server_hostile puts the server under such clients.
//
// Fan-out: every websocket or MJPEG client gets its own framepipe subscription of the frames
// broadcaster: capacity 1, drop_oldest, named "ws-N" / "mjpeg-N". A client that reads slowly
// or not at all holds one frame being written and one waiting; newer frames replace the waiting
// one (counted as its drops), so it never slows the publisher or the other clients and never
// grows the server's memory. Every frame delivered to a client's subscription is counted once:
// sent (written whole), dropped (replaced while waiting), or abandoned (the client ended first:
// the frame being written when it was closed, the one still waiting). Each stream client has
// one thread that waits on its subscription; all socket I/O runs on the server's single I/O
// thread, asynchronously.
//
// Only the embedded page and assets are served: no file-system paths.
//
// Control requests. A control request may make the program open a URL on the caller's behalf,
// so a browser page from elsewhere must not be able to send one. Each check refuses with a JSON
// {"error": "..."} body, and the request goes no further (control is not called):
//   - OPTIONS (a CORS preflight): 403. No Access-Control-* header is ever sent, so a browser
//     never lets a foreign page send a request that needs a preflight.
//   - a Host header that does not name the bound address: 403. This stops DNS rebinding (a
//     foreign name that resolves to 127.0.0.1 carries that name in Host). Allowed: the bound
//     address itself, "localhost" when it is a loopback address, any IP literal when bound to
//     0.0.0.0 or ::; a port, when given, must be the bound port. (A host name other than
//     localhost is never allowed: bound to 0.0.0.0, open the page by IP address.)
//   - an Origin header that is present and is not http://<an allowed Host>: 403.
//   - with control_token set, no "Authorization: Bearer <control_token>": 401.
//   - POST, PUT, PATCH whose Content-Type is not application/json: 415. A foreign page can only
//     send text/plain, form or multipart bodies without a preflight.
// Then `control` runs on the server's control thread (one request at a time, so a slow one,
// like opening a camera, never holds up the I/O thread; at most max_control_pending wait, more
// get 503) and its response is sent.
//
// Thread safety: construct, start() and stop() from one thread; port(), stats() and
// stats_json_text() from any thread. The callbacks are called on the server's threads (the I/O
// thread and the clients' threads), possibly concurrently, and must be thread-safe.
#pragma once

#include "common/encoded_frame.hpp"

#include <framepipe/broadcaster.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace framepipe_examples {

// A static asset of the page (a script, a stylesheet), served by exact path.
struct web_asset {
    std::string content_type;
    std::string body;
};

// A control request that passed the checks (see "Control requests").
struct control_request {
    std::string method; // "POST", "DELETE", ...
    std::string path;   // the target without its query ("/cameras/door")
    std::string body;   // as received
};

// What the control callback answers: a status and a JSON text.
struct control_response {
    unsigned status = 200;
    std::string body = "{}";
};

struct web_server_options {
    std::string host = "127.0.0.1"; // the address to bind; 0.0.0.0 exposes the UI to the network
    unsigned short port = 7001;      // 0: any free port (read it back with port())
    std::string page_html;           // served at "/" and "/index.html"
    std::map<std::string, web_asset> assets{}; // more embedded files, by path ("/app.js")
    std::function<std::string()> metrics_text{}; // /metrics body; 404 when unset
    std::function<std::string()> stats_json{};   // /stats.json: a JSON object; {} when unset
    std::function<std::string()> state_json{};   // sent to each websocket about once a second
    std::chrono::milliseconds state_period{1000}; // > 0
    std::size_t max_streams = 16;          // websocket + MJPEG clients at once; more get 503
    std::size_t max_connections = 128;     // connections at once, streams included; more get 503
    std::size_t max_request_bytes = 8192;  // request header limit (431 beyond), body limit (413)
    std::chrono::seconds request_timeout{10}; // to receive a request or send a response (closed beyond); > 0
    std::chrono::seconds stall_timeout{30};   // for a stream client to take one frame (closed beyond); > 0
    std::string log_name = "web";          // prefix of the server's rare stderr messages
    // Run-time control (see "Control requests"). Called on the control thread, one request at a
    // time; the stop token is requested by stop(): a handler that waits must watch it.
    std::function<control_response(const control_request&, std::stop_token)> control{};
    std::string control_token{};           // non-empty: control requests must carry it
    std::size_t max_control_pending = 8;   // control requests waiting for the thread; more: 503
};

// Whether a Host header value (or the host part of an Origin) names a server bound to
// `bound_host`:`bound_port` (see "Control requests"). Pure; any thread.
[[nodiscard]] bool host_names_server(std::string_view host, const std::string& bound_host,
                                     unsigned short bound_port);

// The server's own counters.
struct web_server_stats {
    std::uint64_t http_requests = 0;   // requests parsed (any path)
    std::uint64_t http_errors = 0;     // responses with a 4xx / 5xx status
    std::uint64_t streams_now = 0;     // websocket + MJPEG clients connected now
    std::uint64_t streams_total = 0;   // ever accepted
    std::uint64_t streams_rejected = 0; // refused with 503 (max_streams)
    std::uint64_t streams_stalled = 0; // closed because a frame took longer than stall_timeout
    std::uint64_t connections_now = 0; // open connections, streams included
    std::uint64_t connections_total = 0;    // ever accepted (the refused ones not included)
    std::uint64_t connections_rejected = 0; // refused with 503 (max_connections)
    std::uint64_t accept_errors = 0;   // failed accepts (out of descriptors; reset before accepted)
    std::uint64_t timeouts = 0;        // connections closed by request_timeout
    std::uint64_t client_bytes_read = 0; // what stream clients sent (read and discarded)
    std::uint64_t reads_throttled = 0; // reads of a stream client's messages put off (a flood)
    std::uint64_t frames_sent = 0;     // JPEGs written to stream clients (all clients)
    std::uint64_t frames_dropped = 0;  // JPEGs skipped by slow clients (all clients, ever)
    std::uint64_t frames_abandoned = 0; // JPEGs a client still held when it ended (all, ever)
    std::uint64_t control_requests = 0; // control requests handed to the control callback
    std::uint64_t control_refused = 0;  // control requests refused by the checks (or 503)
    std::uint64_t internal_errors = 0;  // exceptions caught: a callback that threw, out of memory
    struct client {
        std::string name;              // ws-N / mjpeg-N
        std::uint64_t sent = 0;
        std::uint64_t dropped = 0;     // its subscription's drops
        std::uint64_t queued = 0;      // its subscription's size now (at most 1)
        std::uint64_t abandoned = 0;   // frames it held when it ended (the one being written,
                                       // the one waiting). Once it has ended, sent + dropped +
                                       // abandoned = the frames delivered to it
    };
    std::vector<client> clients;       // the ones connected now
};

// Thrown by the constructor when the address cannot be bound; what() is one line naming the
// address and the reason ("cannot listen on 127.0.0.1:7001: Address already in use").
class web_server_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class web_server {
public:
    // Binds and listens at once, so that a taken port is reported before anything else runs.
    // Does not serve until start(). Throws web_server_error (bind / listen / bad host) or
    // std::invalid_argument naming the field: max_streams, max_connections or
    // max_request_bytes when 0, max_connections below max_streams, state_period,
    // request_timeout or stall_timeout not positive. `frames` must outlive the server.
    web_server(web_server_options options, framepipe::broadcaster<encoded_frame>& frames);

    // Stops and joins (see stop()).
    ~web_server();

    web_server(const web_server&) = delete;
    web_server& operator=(const web_server&) = delete;

    // Starts the I/O thread. Once; std::logic_error on a second call. Never blocks.
    void start();

    // Closes the listener and every connection (idle keep-alive ones, those waiting for a
    // control reply, streams), on the I/O thread, ends the clients' threads and joins them.
    // Blocks until then (a client stalled in a write is cut off, not waited for; what the
    // closed sockets' operations still do is given at most 5 s, then cut off too). Once it
    // returns, a new connection is refused and stats().connections_now is 0. Idempotent.
    // Does not throw.
    void stop() noexcept;

    // The bound port (useful with port 0). Any thread; never blocks.
    [[nodiscard]] unsigned short port() const noexcept;

    // The server's counters now. Any thread; takes a lock briefly.
    [[nodiscard]] web_server_stats stats() const;

    // stats() as a JSON object text. Any thread.
    [[nodiscard]] std::string stats_json_text() const;

    struct impl;

private:
    std::shared_ptr<impl> impl_;
};

} // namespace framepipe_examples
