// examples/multicam/control.cpp - see control.hpp.
#include "control.hpp"

#include "common/program.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <utility>

namespace framepipe_examples::multicam {

namespace {

control_response error(unsigned status, const std::string& why) {
    return {status, json_text(nlohmann::json{{"error", why}})};
}

std::string allowed_list(const std::set<std::string>& allowed) {
    std::string out;
    for (const auto& s : allowed) {
        out += (out.empty() ? "" : ",") + s;
    }
    return out;
}

// The first name cam<k> no camera has.
std::string free_name(const camera_set& cameras) {
    const auto all = cameras.figures();
    for (std::size_t k = all.size() + 1;; ++k) {
        const auto name = "cam" + std::to_string(k);
        if (std::none_of(all.begin(), all.end(), [&](const auto& f) { return f.name == name; })) {
            return name;
        }
    }
}

control_response add_camera(control_context& c, const std::string& text, std::stop_token stop) {
    const auto body = nlohmann::json::parse(text, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
        return error(400, "the body must be a JSON object {\"url\": ..., \"name\": ..., \"weight\": ...}");
    }
    for (const auto& [key, value] : body.items()) {
        if (key != "url" && key != "name" && key != "weight") {
            return error(400, "unknown field '" + key + "' (url, name, weight)");
        }
    }
    const auto url = body.find("url");
    if (url == body.end() || !url->is_string() || url->get<std::string>().empty()) {
        return error(400, "url: a non-empty string is required");
    }
    camera_spec spec{"", url->get<std::string>(), 1};
    if (const auto name = body.find("name"); name != body.end()) {
        if (!name->is_string()) {
            return error(400, "name: must be a string");
        }
        spec.name = name->get<std::string>();
    }
    if (const auto weight = body.find("weight"); weight != body.end()) {
        if (!weight->is_number_integer() || weight->get<long long>() < 1 ||
            weight->get<long long>() > 1000) {
            return error(400, "weight: must be a whole number from 1 to 1000, got " +
                                  json_text(*weight));
        }
        spec.weight = static_cast<std::uint32_t>(weight->get<long long>());
    }
    // The scheme before anything else: a refused source is never opened, nor even described.
    const auto scheme = scheme_of(spec.url);
    if (scheme.empty()) {
        return error(400, "url: unsupported scheme (rtsp, rtsps, http, https, v4l2, file, synthetic)");
    }
    if (c.allowed.count(scheme) == 0) {
        return error(403, "url: the scheme '" + scheme + "' is not allowed (--allow-sources " +
                              allowed_list(c.allowed) + ")");
    }
    if (spec.name.empty()) {
        spec.name = free_name(c.cameras);
    }
    try {
        c.cameras.add(spec);
    } catch (const std::exception& e) { // invalid_argument (name, weight), usage_error (url), ...
        return error(400, mask_passwords(e.what())); // it may quote the URL
    }
    const auto& live = c.s.live;
    if (live.max_attempts > 0) {
        // Answer once it is online, or remove it again when it gives up first.
        // In double seconds, clamped to a day before the conversion: a large --max-attempts
        // must not overflow the nanoseconds (a negative timeout refused cameras at once).
        const double per_attempt = live.open_timeout + live.reconnect_max;
        const double seconds =
            std::min(per_attempt * static_cast<double>(live.max_attempts) + 5.0, 86400.0);
        const auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(seconds));
        if (!c.cameras.wait_online(spec.name, timeout, stop)) {
            if (stop.stop_requested()) { // the server is stopping, not the camera giving up
                return error(503, "server stopping");
            }
            const auto all = c.cameras.figures();
            const auto it = std::find_if(all.begin(), all.end(),
                                         [&](const auto& f) { return f.name == spec.name; });
            if (it != all.end() && it->status != camera_status::paused) {
                const auto why = mask_passwords(it->last_error);
                (void)c.cameras.remove(spec.name);
                return error(400, "url '" + mask_passwords(spec.url) + "': no connection after " +
                                      std::to_string(live.max_attempts) +
                                      " attempts (--max-attempts); last error: " + why);
            }
        }
    }
    std::string status = "offline";
    for (const auto& f : c.cameras.figures()) {
        if (f.name == spec.name) {
            status = std::string(to_string(f.status));
        }
    }
    return {201, json_text(nlohmann::json{{"name", spec.name}, {"status", status}})};
}

} // namespace

control_response handle_control(control_context& c, const control_request& req,
                                std::stop_token stop) {
    constexpr std::string_view base = "/cameras";
    const std::string_view path = req.path;
    if (path == base) {
        if (req.method != "POST") {
            return error(405, "POST /cameras adds a camera; DELETE /cameras/NAME removes one");
        }
        return add_camera(c, req.body, std::move(stop));
    }
    if (path.substr(0, base.size() + 1) == "/cameras/" && path.size() > base.size() + 1) {
        if (req.method != "DELETE") {
            return error(405, "DELETE /cameras/NAME removes a camera");
        }
        const std::string name(path.substr(base.size() + 1));
        const auto last = c.cameras.remove(name);
        if (!last) {
            return error(404, "no camera '" + name + "'");
        }
        return {200, json_text(nlohmann::json{{"removed", last->name},
                                              {"frames", last->frames},
                                              {"detections", last->detections}})};
    }
    return error(404, "no such control path (POST /cameras, DELETE /cameras/NAME)");
}

} // namespace framepipe_examples::multicam
