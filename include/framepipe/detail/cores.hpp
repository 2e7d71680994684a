// framepipe/detail/cores.hpp - how many cores the calling thread's process may really use: the
// fewest of std::thread::hardware_concurrency(), the thread's CPU affinity (taskset, cpusets)
// and the cgroup CPU quota of its process (a container's --cpus, Kubernetes' CPU limit).
// pipeline_options::spin's automatic choice counts stage threads against it.
//
// The quota is read from the cgroup files (v2 cpu.max; v1 cpu.cfs_quota_us and
// cpu.cfs_period_us), at every level from the process's own group up to the hierarchy's mount
// point, and rounded up: a quota of 1.5 cores counts as 2. Where a file is missing or unreadable
// (not Linux, no cgroup mounted, no limit set) it simply does not count.
#pragma once

#include <framepipe/detail/config.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#if FRAMEPIPE_DETAIL_LINUX
#include <sched.h>
#endif

namespace framepipe::detail {

// Cores a quota of `quota` per `period` (any unit, both > 0) allows, rounded up. Never throws.
[[nodiscard]] inline std::size_t quota_cores(std::uint64_t quota, std::uint64_t period) noexcept {
    const std::uint64_t whole = quota / period + (quota % period != 0 ? 1 : 0);
    return static_cast<std::size_t>(std::max<std::uint64_t>(1, whole));
}

// The cores a cgroup v2 cpu.max line allows ("200000 100000" -> 2); nullopt for "max ..." (no
// limit), a v1 quota of -1, or a line that does not parse. Never throws in practice.
[[nodiscard]] inline std::optional<std::size_t> cpu_max_cores(std::string_view line) {
    std::uint64_t quota = 0;
    std::uint64_t period = 0;
    const char* const end = line.data() + line.size();
    const auto q = std::from_chars(line.data(), end, quota);
    if (q.ec != std::errc{} || q.ptr == end || *q.ptr != ' ') {
        return std::nullopt;
    }
    const auto p = std::from_chars(q.ptr + 1, end, period);
    if (p.ec != std::errc{} || quota == 0 || period == 0) {
        return std::nullopt;
    }
    return quota_cores(quota, period);
}

struct cgroup_mount {
    std::string mount_point; // where the hierarchy is mounted
    std::string root;        // which group of the hierarchy that mount shows as its top
};

// The first mount in a /proc/self/mountinfo text of the cgroup v2 hierarchy (v2 true) or of the
// v1 hierarchy with the cpu controller (v2 false). Never throws in practice.
[[nodiscard]] inline std::optional<cgroup_mount> find_cgroup_mount(std::istream& mountinfo,
                                                                   bool v2) {
    std::string line;
    while (std::getline(mountinfo, line)) {
        // id parent major:minor root mount-point options [optional fields] - fstype source super
        std::istringstream in(line);
        std::string id, parent, dev, root, point;
        if (!(in >> id >> parent >> dev >> root >> point)) {
            continue;
        }
        const auto dash = line.find(" - ");
        if (dash == std::string::npos) {
            continue;
        }
        std::istringstream tail(line.substr(dash + 3));
        std::string fstype, source, super;
        if (!(tail >> fstype >> source >> super)) {
            continue;
        }
        if (v2 && fstype == "cgroup2") {
            return cgroup_mount{point, root};
        }
        if (!v2 && fstype == "cgroup" && ("," + super + ",").find(",cpu,") != std::string::npos) {
            return cgroup_mount{point, root};
        }
    }
    return std::nullopt;
}

// The process's group in a /proc/self/cgroup text: the v2 line ("0::/path") or the v1 line whose
// controllers include cpu ("4:cpu,cpuacct:/path"). Never throws in practice.
[[nodiscard]] inline std::optional<std::string> find_cgroup_path(std::istream& cgroups, bool v2) {
    std::string line;
    while (std::getline(cgroups, line)) {
        const auto a = line.find(':');
        const auto b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) {
            continue;
        }
        const std::string controllers = line.substr(a + 1, b - a - 1);
        const bool match = v2 ? (line.compare(0, a, "0") == 0 && controllers.empty())
                              : ("," + controllers + ",").find(",cpu,") != std::string::npos;
        if (match) {
            return line.substr(b + 1);
        }
    }
    return std::nullopt;
}

// The fewest cores any cgroup CPU quota on the process allows, reading the files under
// `fs_root` ("" for the real ones; tests give a directory holding proc/self/mountinfo,
// proc/self/cgroup and the hierarchy). nullopt: no quota found. Never throws in practice.
[[nodiscard]] inline std::optional<std::size_t> cgroup_quota_cores(const std::string& fs_root = "") {
    std::optional<std::size_t> fewest;
    const auto consider = [&](std::optional<std::size_t> n) {
        if (n) {
            fewest = fewest ? std::min(*fewest, *n) : *n;
        }
    };
    const auto first_line = [](const std::string& file) -> std::optional<std::string> {
        std::ifstream in(file);
        std::string line;
        if (!in || !std::getline(in, line)) {
            return std::nullopt;
        }
        return line;
    };
    for (const bool v2 : {true, false}) {
        std::ifstream mountinfo(fs_root + "/proc/self/mountinfo");
        std::ifstream cgroups(fs_root + "/proc/self/cgroup");
        const auto mount = find_cgroup_mount(mountinfo, v2);
        const auto path = find_cgroup_path(cgroups, v2);
        if (!mount || !path) {
            continue;
        }
        // The group as seen under the mount: its path less the mount's own root (a container
        // sees its group as the mount's top). A group outside what the mount shows: not here.
        std::string rel = *path;
        const std::size_t n = mount->root.size();
        if (mount->root != "/") {
            if (rel.compare(0, n, mount->root) != 0 || (rel.size() != n && rel[n] != '/')) {
                continue;
            }
            rel = rel.substr(n);
        }
        // Every level from the group up to the mount point: a parent's limit holds as well.
        for (;;) {
            const std::string dir = fs_root + mount->mount_point + (rel == "/" ? "" : rel);
            if (v2) {
                if (const auto line = first_line(dir + "/cpu.max")) {
                    consider(cpu_max_cores(*line));
                }
            } else {
                const auto quota = first_line(dir + "/cpu.cfs_quota_us");
                const auto period = first_line(dir + "/cpu.cfs_period_us");
                if (quota && period) {
                    consider(cpu_max_cores(*quota + " " + *period)); // "-1": no limit
                }
            }
            const auto slash = rel.find_last_of('/');
            if (rel.empty() || rel == "/" || slash == std::string::npos) {
                break;
            }
            rel = slash == 0 ? "/" : rel.substr(0, slash);
        }
    }
    return fewest;
}

// The cores of the machine the calling thread may run on (its affinity mask), or nullopt where
// that cannot be asked. Never throws in practice.
[[nodiscard]] inline std::optional<std::size_t> affinity_cores() {
#if FRAMEPIPE_DETAIL_LINUX
    for (std::size_t cpus = CPU_SETSIZE; cpus <= (std::size_t{1} << 20); cpus *= 2) {
        cpu_set_t* set = CPU_ALLOC(cpus);
        if (set == nullptr) {
            return std::nullopt;
        }
        const std::size_t bytes = CPU_ALLOC_SIZE(cpus);
        CPU_ZERO_S(bytes, set);
        const int rc = ::sched_getaffinity(0, bytes, set);
        const int n = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
        CPU_FREE(set);
        if (rc == 0) {
            return n > 0 ? std::optional<std::size_t>(static_cast<std::size_t>(n)) : std::nullopt;
        }
        if (errno != EINVAL) {
            return std::nullopt; // EINVAL: the kernel's mask is larger; try a larger set
        }
    }
#endif
    return std::nullopt;
}

// The fewest of hardware_concurrency(), affinity_cores() and cgroup_quota_cores(); 0 when none
// is known. Reads a few small files (Linux). Any thread. Never throws: should reading the files
// fail to allocate, the quota does not count.
[[nodiscard]] inline std::size_t usable_cores(const std::string& fs_root = "") noexcept {
    std::size_t n = std::thread::hardware_concurrency(); // 0: unknown
    const auto limit_to = [&n](std::optional<std::size_t> limit) noexcept {
        if (limit) {
            n = n == 0 ? *limit : std::min(n, *limit);
        }
    };
    try {
        limit_to(affinity_cores());
        limit_to(cgroup_quota_cores(fs_root));
    } catch (...) { // std::bad_alloc from the strings and streams: go by what is known
    }
    return n;
}

} // namespace framepipe::detail
