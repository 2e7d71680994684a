// framepipe/snapshot.hpp - a pipeline's live figures as plain values: what pipeline::snapshot()
// returns, and what to_prometheus() and to_dot() (exposition.hpp) format.
#pragma once

#include <framepipe/detail/config.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace framepipe {

enum class stage_kind { source, stage, sink };
enum class stage_state { pending, running, finished, stopped, failed };

[[nodiscard]] constexpr std::string_view to_string(stage_kind k) noexcept {
    switch (k) {
    case stage_kind::source: return "source";
    case stage_kind::stage: return "stage";
    case stage_kind::sink: return "sink";
    }
    return "unknown";
}

[[nodiscard]] constexpr std::string_view to_string(stage_state s) noexcept {
    switch (s) {
    case stage_state::pending: return "pending";
    case stage_state::running: return "running";
    case stage_state::finished: return "finished";
    case stage_state::stopped: return "stopped";
    case stage_state::failed: return "failed";
    }
    return "unknown";
}

// One figure of a supervised source (a live_source): a name in snake_case, a line of help, and
// the value.
struct source_figure {
    std::string name;
    std::string help;
    double value = 0;
};

// What a supervised source (live_source.hpp) reports about itself: the state it is in, every
// state it can be in, counters (they only grow) and gauges.
struct source_status {
    std::string state;
    std::vector<std::string> states;
    std::vector<source_figure> counters;
    std::vector<source_figure> gauges;
};

// One stage's live figures.
struct stage_snapshot {
    std::string name;
    stage_kind kind = stage_kind::stage;
    stage_state state = stage_state::pending;
    std::size_t workers = 1;     // threads running the stage's function
    std::uint64_t items_in = 0;  // taken from the input (sources: 0)
    std::uint64_t items_out = 0; // emitted to the output (sinks: 0)
    std::uint64_t items_inline = 0; // of items_in, run on the upstream's thread (inline_when_idle)
    double fps = 0;              // items completed per second over the last 2 s (a supervised
                                 // source: its "fps" gauge, if any)
    double service_p50_ms = 0;   // time spent on one item (function + emit), quantiles
    double service_p95_ms = 0;
    double service_p99_ms = 0;
    std::uint64_t service_count = 0;
    double service_sum_s = 0;
    // The workers' share of the last 2 s spent on items rather than waiting for them (an item
    // under way counted from its start, or for an untimed one from the last timed item's end;
    // busy_meter), averaged over the workers.
    double busy_ratio = 0;
    double busy_s = 0; // time spent on items since start, summed over the workers
    std::vector<std::string> inputs;
    std::vector<std::string> outputs;
    std::optional<source_status> source; // a supervised source's own figures (live_source)
};

// One channel's live figures.
struct channel_snapshot {
    std::string name;
    std::string kind;   // ring, spsc_ring, latest_slot, subscription, sliding_window, broadcaster,
                        // selector, batcher, or a user channel's channel_traits<C>::kind
    std::string policy; // overflow policy, or "window N/S", "fan-out", ...
    std::string parent; // for a subscription: the broadcaster it hangs off, if registered
    std::string feeds;  // for a selector's or batcher's input: that selector or batcher, if
                        // registered (channel_traits<C>::inputs; the first, if several)
    std::size_t capacity = 0;
    bool has_counts = false;  // the channel reports channel_stats (the four below and the reasons)
    std::uint64_t pushed = 0; // windows for a sliding_window, publishes for a broadcaster
    std::uint64_t popped = 0;
    std::uint64_t dropped = 0;
    std::uint64_t size = 0;
    std::vector<std::pair<std::string, std::uint64_t>> dropped_by_reason;
    // Age of items when a stage took them (timestamped items only).
    bool has_age = false;
    std::uint64_t age_count = 0;
    double age_sum_s = 0;
    double age_p50_ms = 0;
    double age_p99_ms = 0;
};

struct pipeline_snapshot {
    std::string name;
    std::vector<stage_snapshot> stages;
    std::vector<channel_snapshot> channels;
};

} // namespace framepipe
