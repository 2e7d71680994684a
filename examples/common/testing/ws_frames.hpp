// examples/common/testing/ws_frames.hpp - reading the UI's frame messages from a program's
// websocket in the example programs' tests.
#pragma once

#include "common/testing/http_client.hpp"

#include <nlohmann/json.hpp>

#include <exception>
#include <string>

namespace framepipe_examples::testing {

// Reads `ws` until a frame's meta text carries a non-empty "boxes" array (at most `messages`
// messages) and returns that array. Returns an empty json, with `why` saying why, when the
// socket closed (the program stopped), a frame's "boxes" is not an array, or none came.
inline nlohmann::json first_frame_boxes(ws_client& ws, std::string& why, int messages = 2000) {
    try {
        for (int i = 0; i < messages; ++i) {
            const auto m = ws.read();
            const auto j = nlohmann::json::parse(m.data, nullptr, false);
            if (m.binary || !j.is_object() || j.value("type", "") != "frame") {
                continue;
            }
            const auto boxes = j.value("boxes", nlohmann::json());
            if (!boxes.is_array()) {
                why = "a frame's boxes is not an array: " + m.data;
                return {};
            }
            if (!boxes.empty()) {
                return boxes;
            }
        }
        why = "no frame with boxes in " + std::to_string(messages) + " messages";
    } catch (const std::exception& e) { // the socket closed: the program has stopped
        why = e.what();
    }
    return {};
}

} // namespace framepipe_examples::testing
