// tests/transport/support/nats_server.hpp - a nats-server (Debian's nats-server 2.9) started by a
// test on 127.0.0.1, on a port the server picks (or a given one, to restart it in place), stopped
// when the object goes.
//
//     nats_server s;                       // waits until it listens; throws if it does not
//     nats_connection nc({.servers = {s.url()}});
//     s.stop();  s.start();                // a restart on the same port
//
// Cluster nodes: nats_server(routes) with the route URLs of the others (see cluster_url()).
// The config the tests use is the server's default: max_payload 1 MB (1048576 bytes), no auth.
#pragma once

#include "common/testing/child_process.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace framepipe_test {

class nats_server {
public:
    struct options {
        std::optional<int> port{};         // unset: a free one, chosen by the server
        bool cluster = false;              // listen for routes (on a free port)
        std::vector<std::string> routes{}; // nats://127.0.0.1:<route port> of other nodes
        std::string name{};
        std::string config{};                // a config file (-c), e.g. with max_payload
    };

    nats_server() : nats_server(options{}) {}
    explicit nats_server(options o) : options_(std::move(o)) { start(); }

    void start() {
        std::vector<std::string> argv{
            FRAMEPIPE_NATS_SERVER, "-a", "127.0.0.1", "-p",
            port_ ? std::to_string(*port_)
                  : (options_.port ? std::to_string(*options_.port) : "-1")};
        if (!options_.name.empty()) {
            argv.insert(argv.end(), {"-n", options_.name});
        }
        if (!options_.config.empty()) {
            argv.insert(argv.end(), {"-c", options_.config});
        }
        if (options_.cluster) {
            argv.insert(argv.end(), {"--cluster_name", "framepipe-test", "--cluster",
                                     "nats://127.0.0.1:" +
                                         (route_port_ ? std::to_string(*route_port_) : "-1")});
            if (!options_.routes.empty()) {
                std::string r;
                for (const auto& u : options_.routes) {
                    r += (r.empty() ? "" : ",") + u;
                }
                argv.insert(argv.end(), {"--routes", r});
            }
        }
        process_ = std::make_unique<framepipe_examples::testing::child>(argv);
        const auto listen = process_->wait_for("Listening for client connections on 127.0.0.1:",
                                               std::chrono::seconds(20));
        if (!listen) {
            throw std::runtime_error("nats-server did not start: " + process_->err());
        }
        port_ = std::stoi(*listen);
        if (options_.cluster) {
            const auto routes = process_->wait_for("Listening for route connections on 127.0.0.1:",
                                                   std::chrono::seconds(20));
            if (!routes) {
                throw std::runtime_error("nats-server cluster did not start: " + process_->err());
            }
            route_port_ = std::stoi(*routes);
        }
        if (!process_->wait_for("Server is ready", std::chrono::seconds(20))) {
            throw std::runtime_error("nats-server not ready: " + process_->err());
        }
    }

    // Kills the server at once (SIGKILL: no goodbye to the clients, like a crash).
    void kill() {
        if (process_) {
            process_->send_signal(SIGKILL);
            (void)process_->wait();
            process_.reset();
        }
    }

    // Sends `signal_number` to the server (SIGSTOP freezes it: it neither reads nor answers,
    // as a paused VM or a black-holed route; SIGCONT resumes it).
    void signal(int signal_number) {
        if (process_) {
            process_->send_signal(signal_number);
        }
    }

    [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(*port_); }
    [[nodiscard]] std::string cluster_url() const {
        return "nats://127.0.0.1:" + std::to_string(*route_port_);
    }
    [[nodiscard]] std::string log() const { return process_ ? process_->err() : std::string(); }

private:
    options options_;
    std::optional<int> port_;
    std::optional<int> route_port_;
    std::unique_ptr<framepipe_examples::testing::child> process_;
};

} // namespace framepipe_test
