// examples/common/process_stats.hpp - what the process costs the machine: memory and CPU.
#pragma once

#include <ctime>
#include <fstream>
#include <string>
#include <string_view>

namespace framepipe_examples {

// A memory field of /proc/self/status ("VmHWM:", "VmRSS:", ...) in MiB; 0 when absent.
inline double status_field_mb(std::string_view field) {
    std::ifstream status("/proc/self/status");
    std::string key;
    while (status >> key) {
        if (key == field) {
            double kib = 0;
            status >> kib;
            return kib / 1024.0;
        }
        std::getline(status, key);
    }
    return 0.0;
}

// Peak resident set size of this process, in MiB.
inline double peak_rss_mb() { return status_field_mb("VmHWM:"); }

// Current resident set size, in MiB.
inline double rss_mb() { return status_field_mb("VmRSS:"); }

// CPU time this process has used so far (all threads, user + system), in seconds.
inline double cpu_seconds() {
    timespec ts{};
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) {
        return 0.0;
    }
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

} // namespace framepipe_examples
