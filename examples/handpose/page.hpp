// examples/handpose/page.hpp - the web page framepipe-handpose serves at "/".
#pragma once

namespace handpose {

// The whole page (HTML, CSS and script), served by common/web_server.
extern const char* const page_html;

} // namespace handpose
