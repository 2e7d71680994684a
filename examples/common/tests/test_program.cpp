// examples/common/tests/test_program.cpp - program.hpp's stop signals: the first SIGINT or
// SIGTERM asks for the orderly stop and the program goes on; one more, force_after_ns or longer
// after it, ends it at once. Each case runs in a child process (fork), which calls only
// async-signal-safe functions.

#include "../program.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdint>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>

namespace {

// Runs `body` in a child process and returns its wait status.
template <class Body>
int in_child(Body body) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        body();
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return status;
}

} // namespace

TEST_CASE("stop signals: the first asks for the orderly stop, and the program goes on") {
    for (const int sig : {SIGINT, SIGTERM}) {
        const int status = in_child([sig] {
            framepipe_examples::install_stop_signals();
            if (framepipe_examples::stop_requested()) {
                _exit(3);
            }
            (void)std::raise(sig);
            _exit(framepipe_examples::stop_requested() ? 0 : 4);
        });
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
}

TEST_CASE("stop signals: the same request again within force_after is not a second one") {
    // GNU timeout sends its signal to the program and then to its process group: two signals,
    // one request. An hour's window here, so that nothing depends on the machine's speed.
    for (const int sig : {SIGINT, SIGTERM}) {
        const int status = in_child([sig] {
            framepipe_examples::detail::force_after_ns.store(std::int64_t{3600} * 1'000'000'000);
            framepipe_examples::install_stop_signals();
            (void)std::raise(sig);
            (void)std::raise(sig);
            _exit(framepipe_examples::stop_requested() ? 0 : 4);
        });
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
}

TEST_CASE("stop signals: a later one, of either kind, ends the program at once") {
    // The second signal used to set the flag again, and a shutdown that hung could not be cut
    // short but by SIGKILL. A window of 0 here: any second signal is a later one.
    for (const auto& [first, second] : {std::pair{SIGINT, SIGINT}, std::pair{SIGTERM, SIGINT},
                                        std::pair{SIGINT, SIGTERM}}) {
        const int status = in_child([first = first, second = second] {
            framepipe_examples::detail::force_after_ns.store(0);
            framepipe_examples::install_stop_signals();
            (void)std::raise(first);
            if (!framepipe_examples::stop_requested()) {
                _exit(3);
            }
            (void)std::raise(second); // the default action: not back here
            _exit(5);
        });
        REQUIRE(WIFSIGNALED(status));
        CHECK(WTERMSIG(status) == second);
    }
}
