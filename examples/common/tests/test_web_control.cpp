// web_server.hpp's control requests: which Host and Origin values name the server, and each
// refusal (a preflight, a wrong content type, a foreign Origin, a rebinding Host, a missing
// token) answered before the control callback runs; the callback's answer otherwise.
#include "common/testing/http_client.hpp"
#include "common/web_server.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <map>
#include <stdexcept>
#include <string>

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
    // A callback that throws, with bytes that are not UTF-8 in its message: a 500 in JSON.
    res = t::http_request(port, http::verb::delete_, "/cameras/throw", "", ok);
    CHECK(res.status == 500);
    CHECK(nlohmann::json::parse(res.body, nullptr, false).contains("error"));
    // GET stays as it was: no checks, no callback.
    CHECK(t::http_get(port, "/").status == 200);
    server.stop();
}
