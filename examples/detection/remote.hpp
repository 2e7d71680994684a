// examples/detection/remote.hpp - framepipe-detect split across processes (docs/transport.md):
//
//   framepipe-detect --publish iceoryx|nats://host:port[,nats://...]   the camera and UI side
//   framepipe-detect --worker  iceoryx|nats://host:port[,nats://...]   a detector worker
//
//   camera side                                           worker (one or many)
//   [camera] -> broadcaster "frames" -+- "ui" -> [ui] -> jpeg -> web UI
//                                     |          ^ peek: newest result (boxes, seq, worker)
//                                     |   latest_slot "results" <- [from-workers] <- results
//                                     +- "transport" (capacity 1) -> [to-workers] -- frames -->
//                                                                    [frames-in] -> latest_slot
//                                                                    -> [detector] -> [results]
//
// Frames go to framepipe.detect.<stream>.frames (NATS; iceoryx: service framepipe /
// detect.<stream> / frames), results come back on ....results with the frame's seq and the
// worker's name, and the UI draws them exactly as in one process, naming the worker. NATS workers
// share the frames in a queue group (--queue-group) and send receipts, so the camera side counts
// the frames no worker got (lost_in_transport). Codecs: iceoryx raw (one copy, into the chunk);
// NATS JPEG or raw (--wire-codec), raw only while a frame fits max_payload.
//
// Bad input, one line and exit 2: RouDi not running and not startable (--roudi-config), NATS
// unreachable after --max-attempts, frames over max_payload. A malformed message from another
// sender is counted and skipped.
#pragma once

#include "settings.hpp"

#include <CLI/CLI.hpp>

#include <string>

namespace framepipe_examples::detection {

struct remote_settings {
    std::string publish;             // iceoryx | nats://...: run the camera and UI side
    std::string worker;              // iceoryx | nats://...: run a detector worker
    std::string stream = "cam0";     // the camera's name in subjects and services
    std::string group = "detectors"; // NATS queue group of the workers
    std::string name;                // this process's name in messages (default: worker-<pid>)
    std::string wire_codec = "jpeg"; // NATS frames: jpeg or raw (iceoryx is always raw)
    std::string roudi_config;        // start iox-roudi with this config if RouDi is not running

    [[nodiscard]] bool active() const { return !publish.empty() || !worker.empty(); }
};

// Declares --publish, --worker and their flags on `app`.
void add_remote_options(CLI::App& app, remote_settings& r);

// Runs the mode r asks for (r.active()) with the common settings `s`; the exit code. Throws
// what run_main() reports in one line (exit 2): bad input found before anything runs.
int run_remote(const settings& s, const remote_settings& r, const CLI::App& app);

} // namespace framepipe_examples::detection
