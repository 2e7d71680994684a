// examples/common/encoded_frame.hpp - one frame as the browsers get it: what the examples' UI
// stages publish (jpeg_encoder.hpp) and the web server sends (web_server.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace framepipe_examples {

struct encoded_frame {
    std::vector<unsigned char> jpeg; // the image, JPEG-encoded
    std::string meta;                // text message sent just before the JPEG ("" for none)
    std::uint64_t seq = 0;           // the source frame's sequence number
    std::chrono::steady_clock::time_point captured{}; // the source frame's capture time
};

} // namespace framepipe_examples
