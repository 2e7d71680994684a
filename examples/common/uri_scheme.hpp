// examples/common/uri_scheme.hpp - a URI's scheme, matched as RFC 3986 (section 3.1) says:
// without regard to case, so "RTSP://host/x" and "Http://host/x" name what "rtsp://host/x" and
// "http://host/x" do. Every check of an input's scheme in the examples goes through here.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace framepipe_examples {

// Whether `uri` starts with `prefix` (a scheme and what follows it: "rtsp://", "synthetic:"),
// ASCII letters compared without regard to case. `prefix` must be in lower case. Never throws.
[[nodiscard]] constexpr bool has_scheme_prefix(std::string_view uri,
                                               std::string_view prefix) noexcept {
    if (uri.size() < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = uri[i];
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
        if (c != prefix[i]) {
            return false;
        }
    }
    return true;
}

// `uri` with its scheme in lower case, the canonical form (RFC 3986 3.1), for the elements and
// libraries that compare it exactly (rtspsrc, souphttpsrc, g_filename_from_uri). The scheme is
// what precedes the first ':' when it has a scheme's form (a letter, then letters, digits, '+',
// '-' or '.'); anything else (a plain path) comes back unchanged. Throws only std::bad_alloc.
[[nodiscard]] inline std::string with_lower_case_scheme(std::string_view uri) {
    std::string out(uri);
    const auto colon = out.find(':');
    if (colon == std::string::npos || colon == 0) {
        return out;
    }
    for (std::size_t i = 0; i < colon; ++i) {
        const char c = out[i];
        const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        const bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
        if (!letter && (i == 0 || !other)) {
            return out; // not a scheme: a path such as "./a:b" or "/x:y"
        }
    }
    for (std::size_t i = 0; i < colon; ++i) {
        if (out[i] >= 'A' && out[i] <= 'Z') {
            out[i] = static_cast<char>(out[i] - 'A' + 'a');
        }
    }
    return out;
}

} // namespace framepipe_examples
