// examples/detection/page.hpp - the embedded web page (page.cpp).
#pragma once

namespace framepipe_examples::detection {

// The whole page, HTML with its script and style inline. Static storage; any thread.
extern const char* const page_html;

} // namespace framepipe_examples::detection
