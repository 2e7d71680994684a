// examples/multicam/page.hpp - the page served at "/": a grid of every camera.
#pragma once

namespace framepipe_examples::multicam {

extern const char* const page_html;

} // namespace framepipe_examples::multicam
