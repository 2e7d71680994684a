// examples/common/page_assets.hpp - the client code and style both example pages share, served
// by web_ui.hpp at /app.js and /app.css (page_assets.cpp has the protocol and the page's part).
#pragma once

namespace framepipe_examples {

// The page script: window.framepipePage. Static storage; any thread.
extern const char* const page_script;
// The pages' common style sheet. Static storage; any thread.
extern const char* const page_style;

} // namespace framepipe_examples
