// Tests for detail/cores.hpp: the cores a process may use, from its affinity and cgroup quota.
#include <framepipe/detail/cores.hpp>

#if defined(__linux__)
#include "support/one_cpu.hpp"
#endif

#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#if defined(__linux__)
#include <sched.h>
#endif

using framepipe::detail::cgroup_quota_cores;
using framepipe::detail::cpu_max_cores;
using framepipe::detail::usable_cores;

namespace {

// A throw-away directory standing for "/": proc/self/{mountinfo,cgroup} and cgroup files.
class fake_root {
public:
    fake_root() {
        static std::atomic<int> n{0};
        dir_ = std::filesystem::temp_directory_path() /
               ("framepipe-cores-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_ / "proc/self");
    }
    ~fake_root() {
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    fake_root(const fake_root&) = delete;
    fake_root& operator=(const fake_root&) = delete;

    void write(const std::string& path, const std::string& text) const {
        const auto file = dir_ / path;
        std::filesystem::create_directories(file.parent_path());
        std::ofstream(file) << text;
    }
    [[nodiscard]] std::string path() const { return dir_.string(); }

private:
    std::filesystem::path dir_;
};

constexpr const char* v2_mount = "41 31 0:38 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw\n";

} // namespace

TEST_CASE("cores: a cpu.max line gives the quota in cores, rounded up") {
    CHECK(cpu_max_cores("200000 100000") == std::optional<std::size_t>(2));
    CHECK(cpu_max_cores("150000 100000") == std::optional<std::size_t>(2));
    CHECK(cpu_max_cores("50000 100000") == std::optional<std::size_t>(1));
    CHECK(cpu_max_cores("100000 100000") == std::optional<std::size_t>(1));
    CHECK(cpu_max_cores("18446744073709551615 1") ==
          std::optional<std::size_t>(static_cast<std::size_t>(18446744073709551615ULL)));
    // No limit, or nothing that parses: no figure.
    for (const char* line : {"max 100000", "-1 100000", "", "abc", "0 100000", "100000 0",
                             "100000", "100000 x", "99999999999999999999 1"}) {
        INFO('"' << line << '"');
        CHECK_FALSE(cpu_max_cores(line).has_value());
    }
}

TEST_CASE("cores: the cgroup v2 quota is the fewest of the group's and its parents'") {
    fake_root root;
    root.write("proc/self/mountinfo",
               std::string("22 1 0:20 / / rw - ext4 /dev/vda1 rw\n") + v2_mount);
    root.write("proc/self/cgroup", "0::/a/b\n");
    root.write("sys/fs/cgroup/a/b/cpu.max", "max 100000\n");
    SECTION("no limit anywhere") {
        CHECK_FALSE(cgroup_quota_cores(root.path()).has_value());
    }
    SECTION("the parent's limit holds for the child") {
        root.write("sys/fs/cgroup/a/cpu.max", "250000 100000\n");
        CHECK(cgroup_quota_cores(root.path()) == std::optional<std::size_t>(3));
        root.write("sys/fs/cgroup/a/b/cpu.max", "120000 100000\n");
        CHECK(cgroup_quota_cores(root.path()) == std::optional<std::size_t>(2));
        root.write("sys/fs/cgroup/cpu.max", "100000 100000\n"); // the mount's top counts too
        CHECK(cgroup_quota_cores(root.path()) == std::optional<std::size_t>(1));
    }
    SECTION("a quota on another group does not count") {
        root.write("proc/self/cgroup", "0::/elsewhere\n");
        root.write("sys/fs/cgroup/a/cpu.max", "100000 100000\n");
        CHECK_FALSE(cgroup_quota_cores(root.path()).has_value());
    }
}

TEST_CASE("cores: a cgroup v1 cpu quota counts, seen from inside a container's mount") {
    fake_root root;
    // A container: the hierarchy's group /docker/x is the top of its mount.
    root.write("proc/self/mountinfo",
               std::string(v2_mount) +
                   "32 31 0:29 /docker/x /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup "
                   "rw,cpu,cpuacct\n"
                   "35 31 0:32 /docker/x /sys/fs/cgroup/memory rw,relatime - cgroup cgroup "
                   "rw,memory\n");
    root.write("proc/self/cgroup",
               "4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n0::/docker/x\n");
    root.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    SECTION("-1: no limit") {
        root.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
        CHECK_FALSE(cgroup_quota_cores(root.path()).has_value());
    }
    SECTION("a quota of two cores") {
        root.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
        CHECK(cgroup_quota_cores(root.path()) == std::optional<std::size_t>(2));
        CHECK(usable_cores(root.path()) <= 2);
        CHECK(usable_cores(root.path()) >= 1);
    }
    SECTION("a group whose name only starts like the mount's root is not taken for it") {
        root.write("proc/self/cgroup", "3:cpu,cpuacct:/docker/xy\n");
        root.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
        CHECK_FALSE(cgroup_quota_cores(root.path()).has_value());
    }
    SECTION("the memory controller's files are not taken for the cpu one") {
        root.write("sys/fs/cgroup/memory/cpu.cfs_quota_us", "100000\n");
        root.write("sys/fs/cgroup/memory/cpu.cfs_period_us", "100000\n");
        CHECK_FALSE(cgroup_quota_cores(root.path()).has_value());
    }
}

TEST_CASE("cores: without the files there is no quota, and the machine's count stands") {
    fake_root root;
    CHECK_FALSE(cgroup_quota_cores(root.path()).has_value());
    const std::size_t hw = std::thread::hardware_concurrency();
    if (hw != 0) {
        CHECK(usable_cores(root.path()) <= hw);
    }
    CHECK(usable_cores(root.path()) >= 1);
}

#if defined(__linux__)
TEST_CASE("cores: a thread limited to one CPU by its affinity counts one core") {
    std::size_t seen_affinity = 0;
    std::size_t seen_usable = 0;
    REQUIRE(framepipe_test::run_on_one_cpu([&] {
        seen_affinity = framepipe::detail::affinity_cores().value_or(0);
        seen_usable = usable_cores();
    }));
    CHECK(seen_affinity == 1);
    CHECK(seen_usable == 1);
    // The caller's own affinity was left alone.
    cpu_set_t mine;
    CPU_ZERO(&mine);
    REQUIRE(::sched_getaffinity(0, sizeof mine, &mine) == 0);
    CHECK(framepipe::detail::affinity_cores().value_or(0) ==
          static_cast<std::size_t>(CPU_COUNT(&mine)));
}
#endif

#if defined(__linux__)
TEST_CASE("cores: a real cgroup quota is found (root with a writable cpu hierarchy only)") {
    // Makes a group with a quota of half a core, runs a child process in it, and asks the child
    // what usable_cores() says. Skipped (with a warning) where groups cannot be made.
    std::ifstream mountinfo("/proc/self/mountinfo");
    const auto v1 = framepipe::detail::find_cgroup_mount(mountinfo, false);
    mountinfo.clear();
    mountinfo.seekg(0);
    const auto v2 = framepipe::detail::find_cgroup_mount(mountinfo, true);
    std::string group;
    std::vector<std::pair<std::string, std::string>> quota_files;
    if (v1 && v1->root == "/") {
        group = v1->mount_point + "/framepipe-test-" + std::to_string(::getpid());
        quota_files = {{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "50000"}};
    } else if (v2 && v2->root == "/") {
        group = v2->mount_point + "/framepipe-test-" + std::to_string(::getpid());
        quota_files = {{"cpu.max", "50000 100000"}};
    }
    std::error_code ec;
    if (group.empty() || ::geteuid() != 0 || !std::filesystem::create_directory(group, ec)) {
        WARN("skipped: no writable cgroup cpu hierarchy here");
        return;
    }
    bool written = true;
    for (const auto& [file, value] : quota_files) {
        std::ofstream out(group + "/" + file);
        out << value << '\n';
        out.flush();
        written = written && static_cast<bool>(out);
    }
    int fds[2] = {-1, -1};
    std::size_t child_saw = 0;
    if (written && ::pipe(fds) == 0) {
        const pid_t child = ::fork();
        if (child == 0) {
            std::size_t n = 0;
            std::ofstream procs(group + "/cgroup.procs");
            procs << ::getpid() << '\n';
            procs.flush();
            if (procs) {
                n = usable_cores();
            }
            (void)!::write(fds[1], &n, sizeof n);
            ::_exit(0);
        }
        ::close(fds[1]);
        if (child > 0) {
            (void)!::read(fds[0], &child_saw, sizeof child_saw);
            int status = 0;
            (void)::waitpid(child, &status, 0);
        }
        ::close(fds[0]);
    }
    std::filesystem::remove(group, ec); // empty again: the child has exited
    if (!written || child_saw == 0) {
        WARN("skipped: the quota could not be set or the child could not join the group");
        return;
    }
    CHECK(child_saw == 1);
}
#endif
