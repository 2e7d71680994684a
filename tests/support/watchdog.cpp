// tests/support/watchdog.cpp - a hang fails fast: a Catch2 listener that gives every test case a
// deadline (FRAMEPIPE_TEST_WATCHDOG_SECONDS, default 60; 0 turns it off). A test case still
// running at its deadline (a lost wake-up, a deadlock) is reported with its name, the section it
// was in, and a backtrace of every thread of the process (gdb -batch, when gdb is installed;
// otherwise each thread's name, state and kernel wait channel from /proc/self/task), and the
// process aborts: ctest sees a failure within a minute instead of its own timeout.
//
// Cost: one thread per test process, asleep on a condition variable; arming and disarming it is
// a mutex and a notify per test case and per section.
//
// Linked into every Catch2 test executable with the shared main (tests/CMakeLists.txt).
// The listener interface of the single-header Catch2 v2.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace {

std::chrono::seconds watchdog_limit() {
    if (const char* env = std::getenv("FRAMEPIPE_TEST_WATCHDOG_SECONDS")) {
        return std::chrono::seconds(std::strtol(env, nullptr, 10));
    }
    return std::chrono::seconds(60);
}

std::string read_small_file(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    std::string text = s.str();
    while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) {
        text.pop_back();
    }
    return text;
}

// What every thread is doing: gdb's backtraces if it can attach, else /proc's view.
void dump_threads() {
    const pid_t self = getpid();
    std::fflush(stderr);
    const pid_t child = fork();
    if (child == 0) {
        // stdout to stderr, so that the dump sits next to the message in ctest's output.
        dup2(STDERR_FILENO, STDOUT_FILENO);
        const std::string pid = std::to_string(self);
        execlp("gdb", "gdb", "-batch", "-nx", "-p", pid.c_str(), "-ex", "set print thread-events off",
               "-ex", "thread apply all bt", static_cast<char*>(nullptr));
        _exit(127); // no gdb
    }
    int status = 0;
    bool gdb_worked = false;
    if (child > 0) {
        // gdb may hang on a wedged process: give it 30 s.
        for (int i = 0; i < 300; ++i) {
            const pid_t r = waitpid(child, &status, WNOHANG);
            if (r == child) {
                gdb_worked = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (i == 299) {
                kill(child, SIGKILL);
                waitpid(child, &status, 0);
            }
        }
    }
    if (gdb_worked) {
        return;
    }
    std::fprintf(stderr, "watchdog: gdb unavailable; threads from /proc/self/task:\n");
    if (DIR* d = opendir("/proc/self/task")) {
        while (const dirent* e = readdir(d)) {
            const std::string tid = e->d_name;
            if (tid == "." || tid == "..") {
                continue;
            }
            const std::string base = "/proc/self/task/" + tid + "/";
            const std::string stat = read_small_file(base + "stat");
            const auto close_paren = stat.rfind(')');
            const char state = close_paren != std::string::npos && close_paren + 2 < stat.size()
                                   ? stat[close_paren + 2]
                                   : '?';
            std::fprintf(stderr, "  thread %s (%s) state %c wchan %s syscall %s\n", tid.c_str(),
                         read_small_file(base + "comm").c_str(), state,
                         read_small_file(base + "wchan").c_str(),
                         read_small_file(base + "syscall").c_str());
            const std::string stack = read_small_file(base + "stack");
            if (!stack.empty()) {
                std::fprintf(stderr, "%s\n", stack.c_str());
            }
        }
        closedir(d);
    }
}

class watchdog {
public:
    static watchdog& instance() {
        // Never destroyed: its thread waits on it until the process ends.
        static watchdog* const w = new watchdog;
        return *w;
    }

    void arm(const std::string& test) {
        if (limit_.count() <= 0) {
            return;
        }
        {
            const std::lock_guard<std::mutex> lock(mu_);
            test_ = test;
            section_.clear();
            deadline_ = std::chrono::steady_clock::now() + limit_;
            if (!thread_started_) {
                thread_started_ = true;
                std::thread([this] { run(); }).detach();
            }
        }
        cv_.notify_one();
    }

    void stage(const std::string& section) {
        const std::lock_guard<std::mutex> lock(mu_);
        section_ = section;
    }

    void disarm() {
        {
            std::unique_lock<std::mutex> lock(mu_);
            // A test case that ran past its deadline has failed, even if it then ended: the
            // dump's ptrace attach interrupts every futex wait, and a wait that re-checks its
            // word on the way back can be rescued from a lost wake-up. Wait for the abort.
            while (fired_) {
                cv_.wait(lock);
            }
            deadline_.reset();
        }
        cv_.notify_one();
    }

private:
    watchdog() : limit_(watchdog_limit()) {}

    [[noreturn]] void run() {
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            if (!deadline_) {
                cv_.wait(lock);
                continue;
            }
            const auto deadline = *deadline_;
            if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && deadline_ &&
                *deadline_ == deadline) {
                std::fprintf(stderr,
                             "\nwatchdog: test case \"%s\" still running after %lld s (section: "
                             "\"%s\"): a hang (a lost wake-up? a deadlock?). Threads:\n",
                             test_.c_str(), static_cast<long long>(limit_.count()),
                             section_.c_str());
                fired_ = true;
                lock.unlock();
                dump_threads();
                std::fprintf(stderr, "watchdog: aborting \"%s\"\n", test_.c_str());
                std::fflush(stderr);
                // Not through Catch's handler for SIGABRT, which would report the abort again
                // from this thread (and allocate inside a signal handler).
                std::signal(SIGABRT, SIG_DFL);
                std::abort();
            }
        }
    }

    const std::chrono::seconds limit_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::optional<std::chrono::steady_clock::time_point> deadline_;
    std::string test_;
    std::string section_;
    bool thread_started_ = false;
    bool fired_ = false; // a deadline passed: the process is being aborted
};

struct watchdog_listener : Catch::TestEventListenerBase {
    using TestEventListenerBase::TestEventListenerBase;

    // Each override calls the base first: it keeps the stacks of test cases and sections that
    // its own *Ended members pop.
    void testCaseStarting(const Catch::TestCaseInfo& info) override {
        TestEventListenerBase::testCaseStarting(info);
        watchdog::instance().arm(info.name);
    }
    void sectionStarting(const Catch::SectionInfo& info) override {
        TestEventListenerBase::sectionStarting(info);
        watchdog::instance().stage(info.name);
    }
    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        watchdog::instance().disarm();
        TestEventListenerBase::testCaseEnded(stats);
    }
};

} // namespace

CATCH_REGISTER_LISTENER(watchdog_listener)
