// examples/common/testing/child_process.hpp - runs an example program from a test.
//
//     auto r = framepipe_examples::testing::run({exe, "--no-ui", "--json"});   // to completion
//     REQUIRE(r.exit_code == 0);  nlohmann::json::parse(r.out);
//
//     framepipe_examples::testing::child server({exe, "--port", "0"});        // in the background
//     auto line = server.wait_for("serving the live UI at ", std::chrono::seconds(60));
//     server.wait_for_count("online", 2, std::chrono::seconds(30));   // the second such line
//     ...; server.terminate(); int code = server.wait();
//
// Output is collected by a reader thread, so a chatty child never blocks on a full pipe, and a
// test waits for text with a condition variable (never a sleep). Header-only, POSIX.
// Thread safety: one test thread uses a child; the reader thread is internal.
#pragma once

#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace framepipe_examples::testing {

class child {
public:
    // Starts argv[0] with the arguments; its stdout and stderr are collected separately.
    explicit child(const std::vector<std::string>& argv) {
        if (argv.empty()) {
            throw std::invalid_argument("argv: empty");
        }
        int out[2];
        int err[2];
        if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
            throw std::runtime_error("pipe failed");
        }
        std::vector<char*> args;
        for (const auto& a : argv) {
            args.push_back(const_cast<char*>(a.c_str()));
        }
        args.push_back(nullptr);
        pid_ = fork();
        if (pid_ < 0) {
            throw std::runtime_error("fork failed");
        }
        if (pid_ == 0) {
            dup2(out[1], 1);
            dup2(err[1], 2);
            execv(args[0], args.data());
            _exit(127);
        }
        close(out[1]);
        close(err[1]);
        out_reader_ = std::thread([this, fd = out[0]] { drain(fd, out_); });
        err_reader_ = std::thread([this, fd = err[0]] { drain(fd, err_); });
    }

    child(const child&) = delete;
    child& operator=(const child&) = delete;

    // Kills the child if it still runs, and joins the readers.
    ~child() {
        if (!waited_) {
            kill(pid_, SIGKILL);
            (void)wait();
        }
    }

    // Waits until stdout or stderr contains `text` (or the child's output ends, or `timeout`);
    // returns the rest of the line after `text`, or nullopt.
    std::optional<std::string> wait_for(const std::string& text, std::chrono::seconds timeout) {
        std::unique_lock<std::mutex> lock(mu_);
        std::optional<std::string> found;
        cv_.wait_for(lock, timeout, [&] {
            for (const std::string* s : {&out_, &err_}) {
                if (const auto at = s->find(text); at != std::string::npos) {
                    const auto from = at + text.size();
                    const auto end = s->find('\n', from);
                    if (end != std::string::npos) {
                        found = s->substr(from, end - from);
                        return true;
                    }
                }
            }
            return closed_ == 2;
        });
        return found;
    }

    // Waits until stdout and stderr together contain `text` at least `n` times (or the output
    // ends, or `timeout`); returns the rest of the line after the n-th occurrence (looking at
    // stdout first, then stderr), or nullopt.
    std::optional<std::string> wait_for_count(const std::string& text, std::size_t n,
                                              std::chrono::seconds timeout) {
        std::unique_lock<std::mutex> lock(mu_);
        std::optional<std::string> found;
        cv_.wait_for(lock, timeout, [&] {
            std::size_t seen = 0;
            for (const std::string* s : {&out_, &err_}) {
                for (auto at = s->find(text); at != std::string::npos; at = s->find(text, at + 1)) {
                    const auto from = at + text.size();
                    const auto end = s->find('\n', from);
                    if (end == std::string::npos) {
                        break; // the line is not complete yet
                    }
                    if (++seen == n) {
                        found = s->substr(from, end - from);
                        return true;
                    }
                }
            }
            return closed_ == 2;
        });
        return found;
    }

    // The child's process id (for /proc/<pid>/status).
    [[nodiscard]] pid_t pid() const noexcept { return pid_; }

    // Sends SIGTERM (the examples stop in order and print their summary).
    void terminate() { kill(pid_, SIGTERM); }

    // Sends any signal (SIGKILL, SIGUSR1, ...) while the child has not been waited for.
    void send_signal(int signal_number) {
        if (!waited_) {
            kill(pid_, signal_number);
        }
    }

    // Waits for the child to exit; its exit code, or 128 + signal.
    int wait() {
        if (!waited_) {
            int status = 0;
            while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
            }
            waited_ = true;
            code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            if (out_reader_.joinable()) {
                out_reader_.join();
            }
            if (err_reader_.joinable()) {
                err_reader_.join();
            }
        }
        return code_;
    }

    [[nodiscard]] std::string out() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return out_;
    }
    [[nodiscard]] std::string err() const {
        const std::lock_guard<std::mutex> lock(mu_);
        return err_;
    }

private:
    void drain(int fd, std::string& into) {
        std::array<char, 4096> buf{};
        for (;;) {
            const auto n = read(fd, buf.data(), buf.size());
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            {
                const std::lock_guard<std::mutex> lock(mu_);
                into.append(buf.data(), static_cast<std::size_t>(n));
            }
            cv_.notify_all();
        }
        close(fd);
        {
            const std::lock_guard<std::mutex> lock(mu_);
            ++closed_;
        }
        cv_.notify_all();
    }

    pid_t pid_ = -1;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::string out_;
    std::string err_;
    int closed_ = 0;
    bool waited_ = false;
    int code_ = -1;
    std::thread out_reader_;
    std::thread err_reader_;
};

struct run_result {
    int exit_code = -1;
    std::string out;
    std::string err;
};

// Runs a program to completion.
inline run_result run(const std::vector<std::string>& argv) {
    child c(argv);
    run_result r;
    r.exit_code = c.wait();
    r.out = c.out();
    r.err = c.err();
    return r;
}

} // namespace framepipe_examples::testing
