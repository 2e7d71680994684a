// examples/common/mask_passwords.hpp - hides the passwords of the URLs in a text, for every
// message, log line and summary that may quote a camera's URL.
#pragma once

#include <algorithm>
#include <string>
#include <cstddef>
#include <string_view>

namespace framepipe_examples {

// `text` with the password of every URL in it ("scheme://user:password@host") replaced by
// "***": GStreamer's error messages quote the URL they failed on, and they become last_error,
// event lines and summaries. Text without such a URL comes back unchanged. It errs on the side of
// masking: when a URL's authority (up to its first '/', '?', '#', space or quote) holds no '@',
// the password may hold one of those characters unencoded, so the user info runs to the last '@'
// before the next line break or URL ("rtsp://admin:pa#ss@host/x" -> "rtsp://admin:***@host/x";
// "rtsp://host:554/x, mail ops@site" -> "rtsp://host:***@site").
[[nodiscard]] inline std::string mask_passwords(std::string_view text) {
    std::string out(text);
    // Each "://": the authority runs to the next '/', '?', '#', whitespace or quote; its last
    // '@' ends the user info. When the authority holds no '@', a password with an unencoded '/',
    // '?', '#', space or quote may have cut it short: err on the side of masking, and take the
    // last '@' before the next line break, the next "://" or the end. The first ':' after "://"
    // and before that '@' starts the password.
    for (std::size_t at = out.find("://"); at != std::string::npos; at = out.find("://", at)) {
        const auto start = at + 3;
        auto end = out.find_first_of("/?#\"' \t\r\n<>", start);
        if (end == std::string::npos) {
            end = out.size();
        }
        auto sign = out.find_last_of('@', end - 1);
        if (sign == std::string::npos || sign < start) {
            auto stop = std::min(out.find_first_of("\r\n", start), out.find("://", start));
            if (stop == std::string::npos) {
                stop = out.size();
            }
            sign = stop > start ? out.find_last_of('@', stop - 1) : std::string::npos;
        }
        if (sign == std::string::npos || sign < start) {
            at = start;
            continue;
        }
        const auto colon = out.find(':', start);
        if (colon == std::string::npos || colon > sign) {
            at = start;
            continue;
        }
        out.replace(colon + 1, sign - colon - 1, "***");
        at = colon + 1 + 3;
    }
    return out;
}

} // namespace framepipe_examples
