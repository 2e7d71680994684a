// examples/multicam/control.hpp - POST /cameras and DELETE /cameras/NAME: cameras added and
// removed while the program runs. The web server has already refused what a foreign page could
// send (web_server.hpp, "Control requests"); this checks what the request asks for.
//
//   POST /cameras {"url": "rtsp://...", "name": "door", "weight": 2}   (name, weight optional)
//     201 {"name", "status"}: added (paused when --max-active cameras are active). With
//         --max-attempts it answers once the camera is online; a camera that gives up first is
//         removed again: 400 with why.
//     400 {"error"}: a body that is not a JSON object, no url, a bad name or weight (<= 0, not a
//         whole number), a name taken, a URL that cannot be read, too many cameras.
//     403 {"error"}: a URL scheme --allow-sources does not list (nothing is opened).
//   DELETE /cameras/NAME
//     200 {"removed", "frames", "detections"}: stopped and gone; 404 for no such camera.
//   anything else: 404 (another path) or 405 (another method).
#pragma once

#include "cameras.hpp"
#include "settings.hpp"

#include "common/web_server.hpp"

#include <set>
#include <stop_token>
#include <string>

namespace framepipe_examples::multicam {

struct control_context {
    const settings& s;
    camera_set& cameras;
    std::set<std::string> allowed; // --allow-sources
};

// Answers one control request (web_server_options::control). Runs on the server's control
// thread; waits (with --max-attempts) for a new camera to connect, until `stop`.
[[nodiscard]] control_response handle_control(control_context& c, const control_request& req,
                                              std::stop_token stop);

} // namespace framepipe_examples::multicam
