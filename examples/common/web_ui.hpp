// examples/common/web_ui.hpp - the live web UI of a video example, set up in one call.
//
//     std::optional<fe::web_server> server;
//     if (!s.no_ui) {
//         server.emplace(fe::web_ui_options({.host = s.host, .port = port, .page_html = my_page,
//                                            .log_name = program},
//                                           p, [&] { return summary(); }),
//                        jpegs);                              // binds: throws if the port is taken
//         server->start();
//         fe::announce(console, program, s.host, *server);    // "serving the live UI at ..."
//     }
//
// web_ui_options() fills in what every example serves the same way: the shared page script and
// style at /app.js and /app.css (page_assets.hpp), /metrics as the pipeline's Prometheus text,
// /stats.json as stats(), and stats() with "type": "state" as the page's state message, about
// once a second. The example gives its page, address, limits and log name in `base`.
//
// Header-only (the web server itself is framepipe_examples_web); needs nlohmann-json.
#pragma once

#include "common/page_assets.hpp"
#include "common/program.hpp"
#include "common/web_server.hpp"

#include <framepipe/exposition.hpp>
#include <framepipe/pipeline.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace framepipe_examples {

// `base` with the shared assets and the callbacks filled in. `p` must outlive the server, and
// `stats` must be callable from the server's threads concurrently (it is called per request
// and per state message).
[[nodiscard]] inline web_server_options web_ui_options(web_server_options base,
                                                       const framepipe::pipeline& p,
                                                       std::function<nlohmann::json()> stats) {
    base.assets.emplace("/app.js", web_asset{"text/javascript; charset=utf-8", page_script});
    base.assets.emplace("/app.css", web_asset{"text/css; charset=utf-8", page_style});
    base.metrics_text = [&p] { return framepipe::to_prometheus(p.snapshot()); };
    base.stats_json = [stats] { return json_text(stats()); };
    base.state_json = [stats = std::move(stats)] {
        auto j = stats();
        j["type"] = "state";
        return json_text(j);
    };
    return base;
}

// Prints "program: serving the live UI at http://host:port/ (also ...)" on `console`: the line
// users (and the tests, which read the port from it) look for.
// An IPv6 literal host ("::1") is bracketed, as a URL needs it: http://[::1]:port/.
inline void announce(std::FILE* console, std::string_view program, const std::string& host,
                     const web_server& server) {
    const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
    const std::string shown = ipv6 ? "[" + host + "]" : host;
    std::fprintf(console,
                 "%.*s: serving the live UI at http://%s:%u/ "
                 "(also /video.mjpg, /metrics, /stats.json)\n",
                 static_cast<int>(program.size()), program.data(), shown.c_str(),
                 static_cast<unsigned>(server.port()));
    std::fflush(console);
}

} // namespace framepipe_examples
