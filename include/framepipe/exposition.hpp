// framepipe/exposition.hpp - a pipeline snapshot as Prometheus text and as a Graphviz graph.
//
//     framepipe::pipeline p("seed-000");
//     ...
//     serve("/metrics", framepipe::to_prometheus(p.snapshot()));
//     std::ofstream("graph.dot") << framepipe::to_dot(p.snapshot());
#pragma once

#include <framepipe/detail/config.hpp>

#include <framepipe/snapshot.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace framepipe {
namespace detail {

// A sample value as Prometheus spells it: NaN, +Inf and -Inf for the non-finite ones (to_chars
// would write nan, -nan or inf, and a scraper refuses "-nan" and with it the whole page).
inline void append_number(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
        return;
    }
    if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
        return;
    }
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

inline void append_number(std::string& out, std::uint64_t v) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
}

// `s` with each ill-formed UTF-8 subsequence (a stray or missing continuation byte, an overlong
// form, a surrogate, a code point above U+10FFFF) replaced by U+FFFD, one per maximal subpart
// (as Unicode recommends). Both formats must be UTF-8; a Prometheus scraper refuses the whole page
// otherwise.
inline std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        const auto lead = static_cast<unsigned char>(s[i]);
        std::size_t need = 0;       // continuation bytes
        unsigned char lo = 0x80;    // range of the first continuation byte
        unsigned char hi = 0xBF;
        if (lead < 0x80) {
            out += s[i++];
            continue;
        }
        if (lead >= 0xC2 && lead <= 0xDF) {
            need = 1;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            need = 2;
            lo = lead == 0xE0 ? 0xA0 : 0x80; // E0: no overlong forms
            hi = lead == 0xED ? 0x9F : 0xBF; // ED: no surrogates
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            need = 3;
            lo = lead == 0xF0 ? 0x90 : 0x80; // F0: no overlong forms
            hi = lead == 0xF4 ? 0x8F : 0xBF; // F4: nothing above U+10FFFF
        }
        std::size_t len = 1; // the lead and the continuation bytes that fit so far
        while (need > 0 && len <= need && i + len < s.size()) {
            const auto c = static_cast<unsigned char>(s[i + len]);
            if (c < (len == 1 ? lo : 0x80) || c > (len == 1 ? hi : 0xBF)) {
                break;
            }
            ++len;
        }
        if (need > 0 && len == need + 1) {
            out.append(s.substr(i, len));
        } else {
            out += "\xEF\xBF\xBD"; // U+FFFD
        }
        i += len;
    }
    return out;
}

// Prometheus text escapes backslash and newline, label values also the double quote (HELP text
// does not), and both are UTF-8.
inline std::string prometheus_text(std::string_view s, bool label_value) {
    std::string out;
    for (const char c : valid_utf8(s)) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"' && label_value) {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

// A Prometheus label value.
inline std::string prometheus_escape(std::string_view s) { return prometheus_text(s, true); }

// Prometheus HELP text.
inline std::string help_escape(std::string_view s) { return prometheus_text(s, false); }

// A metric name's part from a free-form name: a character a metric name may not hold becomes
// '_'.
inline std::string metric_name_part(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == ':';
        c = ok ? c : '_';
    }
    return out;
}

// DOT quoted strings escape double quote and backslash, and are UTF-8; "\n" is kept as DOT's
// line break. A NUL, which ends a string for dot's scanner (the rest of the file then fails to
// parse), becomes U+FFFD like an ill-formed sequence.
inline std::string dot_escape(std::string_view s) {
    std::string out;
    for (const char c : valid_utf8(s)) {
        if (c == '\0') {
            out += "\xef\xbf\xbd"; // U+FFFD
            continue;
        }
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out;
}

// A supervised source's line in its DOT box: its state and the figures that tell a reconnect.
inline std::string source_line(const stage_snapshot& s) {
    if (!s.source) {
        return {};
    }
    std::string out = "\\n" + dot_escape(s.source->state);
    for (const auto* name : {"epoch", "reconnects", "stalls"}) {
        for (const auto* list : {&s.source->gauges, &s.source->counters}) {
            for (const auto& f : *list) {
                if (f.name == name) {
                    // As an integer (these figures are counts); one a hand-built snapshot gives
                    // outside the range of std::uint64_t (negative, NaN) is written as it is.
                    std::string value;
                    if (f.value >= 0 && f.value < 18446744073709551616.0) {
                        value = std::to_string(static_cast<std::uint64_t>(f.value));
                    } else {
                        append_number(value, f.value);
                    }
                    out += std::string(", ") + name + " " + value;
                }
            }
        }
    }
    return out;
}

} // namespace detail

// The snapshot in Prometheus text exposition format (version 0.0.4), ready to serve at /metrics:
// per stage, items in and out, rate, service time, busy share and running; per channel, items
// pushed, popped, dropped by reason, buffered, capacity and item age. Labels: pipeline, stage,
// channel, reason. Label values and help are escaped as the format requires, and an ill-formed
// UTF-8 sequence in them becomes U+FFFD. Every series appears once: what would repeat one (names
// equal once repaired, a name twice in a hand-built snapshot) is left out and named in a comment
// line. Any thread; allocates; throws std::bad_alloc.
[[nodiscard]] inline std::string to_prometheus(const pipeline_snapshot& snap) {
    std::string out;
    const std::string p = "pipeline=\"" + detail::prometheus_escape(snap.name) + "\"";
    auto family = [&out](std::string_view metric, std::string_view type, std::string_view help) {
        out += "# HELP ";
        out += metric;
        out += ' ';
        out += detail::help_escape(help);
        out += "\n# TYPE ";
        out += metric;
        out += ' ';
        out += type;
        out += '\n';
    };
    // Each series (metric and labels) once. Two stages or channels whose names become the same
    // once repaired to UTF-8, or a hand-built snapshot with a name twice, would give a second
    // sample of one series, and a scraper would refuse the page: it is left out, and named in a
    // comment line (which scrapers ignore) in its place. Every series names its stage or its
    // channel (a source's figures and states are kept apart below), so the samples are checked
    // one by one only when two stage or two channel names are spelled alike on the page, or a
    // channel lists a drop reason twice; a pipeline's own snapshot has neither, and its page
    // then costs no set.
    const bool names_repeat = [&snap] {
        const auto repeat = [](std::vector<std::string> names) {
            std::sort(names.begin(), names.end());
            return std::adjacent_find(names.begin(), names.end()) != names.end();
        };
        std::vector<std::string> stages;
        std::vector<std::string> channels;
        bool reasons_repeat = false;
        for (const auto& s : snap.stages) {
            stages.push_back(detail::prometheus_escape(s.name));
        }
        for (const auto& c : snap.channels) {
            channels.push_back(detail::prometheus_escape(c.name));
            std::vector<std::string> reasons;
            for (const auto& r : c.dropped_by_reason) {
                reasons.push_back(detail::prometheus_escape(r.first));
            }
            reasons_repeat = reasons_repeat || repeat(std::move(reasons));
        }
        return reasons_repeat || repeat(std::move(stages)) || repeat(std::move(channels));
    }();
    std::unordered_set<std::string> series; // when names_repeat: the series written
    auto sample = [&out, &series, names_repeat](std::string_view metric, const std::string& labels,
                                                auto value) {
        const std::size_t start = out.size();
        out += metric;
        out += '{';
        out += labels;
        out += '}';
        if (names_repeat && !series.insert(out.substr(start)).second) {
            const std::string key = out.substr(start);
            out.resize(start);
            out += "# framepipe: left out a second sample of ";
            out += key;
            out += '\n';
            return;
        }
        out += ' ';
        detail::append_number(out, value);
        out += '\n';
    };
    auto stage_labels = [&p](const stage_snapshot& s) {
        return p + ",stage=\"" + detail::prometheus_escape(s.name) + "\"";
    };
    auto channel_labels = [&p](const channel_snapshot& c) {
        return p + ",channel=\"" + detail::prometheus_escape(c.name) + "\"";
    };

    family("framepipe_stage_items_in_total", "counter", "Items a stage took from its input.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_in_total", stage_labels(s), s.items_in);
    }
    family("framepipe_stage_items_out_total", "counter", "Items a stage emitted to its output.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_out_total", stage_labels(s), s.items_out);
    }
    family("framepipe_stage_items_inline_total", "counter",
           "Items a stage took that ran on its upstream's thread (inline_when_idle).");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_inline_total", stage_labels(s), s.items_inline);
    }
    family("framepipe_stage_items_per_second", "gauge",
           "Items a stage completed per second over the last two seconds.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_items_per_second", stage_labels(s), s.fps);
    }
    family("framepipe_stage_service_seconds", "summary", "Time a stage spent on one item.");
    for (const auto& s : snap.stages) {
        const auto l = stage_labels(s);
        sample("framepipe_stage_service_seconds", l + ",quantile=\"0.5\"", s.service_p50_ms / 1e3);
        sample("framepipe_stage_service_seconds", l + ",quantile=\"0.95\"", s.service_p95_ms / 1e3);
        sample("framepipe_stage_service_seconds", l + ",quantile=\"0.99\"", s.service_p99_ms / 1e3);
        sample("framepipe_stage_service_seconds_sum", l, s.service_sum_s);
        sample("framepipe_stage_service_seconds_count", l, s.service_count);
    }
    family("framepipe_stage_busy_ratio", "gauge",
           "Share of the last 2 s a stage's workers spent on items rather than waiting for them.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_busy_ratio", stage_labels(s), s.busy_ratio);
    }
    family("framepipe_stage_busy_seconds_total", "counter",
           "Time a stage's workers spent on items, summed over the workers.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_busy_seconds_total", stage_labels(s), s.busy_s);
    }
    family("framepipe_stage_running", "gauge", "1 while the stage's thread runs, else 0.");
    for (const auto& s : snap.stages) {
        sample("framepipe_stage_running", stage_labels(s),
               std::uint64_t{s.state == stage_state::running ? 1U : 0U});
    }

    // A broadcaster counts publishes only; a user channel may keep no counters at all.
    auto buffered = [](const channel_snapshot& c) {
        return c.has_counts && c.kind != "broadcaster";
    };
    // Supervised sources (live_source): the state as one gauge per state (1 for the current),
    // then each counter and gauge they report, one family each, in the order first seen. A
    // figure's name becomes part of a metric name: a character not allowed there becomes '_'.
    // A metric name is used once: a figure whose name comes out as one already taken (by the
    // state family, by a counter's name with _total, or by an earlier figure of the same kind
    // once the characters are replaced) is left out of the page, which would be refused. Each
    // figure left out is named in a comment line after the source families (a scraper ignores
    // it), so that a reader of the page can tell.
    std::vector<std::string> source_metrics{"framepipe_source_state"};
    std::string left_out;
    const auto leave_out = [&](const stage_snapshot& s, const source_figure& f,
                               const std::string& metric) {
        left_out += "# framepipe: left out figure \"" + detail::prometheus_escape(f.name) +
                    "\" of stage \"" + detail::prometheus_escape(s.name) + "\": " + metric +
                    " is taken\n";
    };
    const auto figures = [&](auto member, std::string_view suffix, std::string_view type) {
        const auto metric_of = [&](const source_figure& f) {
            return "framepipe_source_" + detail::metric_name_part(f.name) + std::string(suffix);
        };
        const auto taken = [&](const std::string& metric) {
            return std::find(source_metrics.begin(), source_metrics.end(), metric) !=
                   source_metrics.end();
        };
        std::vector<std::pair<std::string, const source_figure*>> seen; // metric name, first
        for (const auto& s : snap.stages) {
            if (!s.source) {
                continue;
            }
            for (const auto& f : (*s.source).*member) {
                std::string metric = metric_of(f);
                if (taken(metric)) {
                    leave_out(s, f, metric); // by the state family or the other kind of figure
                    continue;
                }
                bool known = false;
                for (const auto& k : seen) {
                    known = known || k.first == metric;
                }
                if (!known) {
                    seen.emplace_back(std::move(metric), &f);
                }
            }
        }
        for (const auto& [metric, first] : seen) {
            family(metric, type, first->help);
            for (const auto& s : snap.stages) {
                if (!s.source) {
                    continue;
                }
                bool sampled = false; // one series per source: a second figure is left out
                for (const auto& f : (*s.source).*member) {
                    if (metric_of(f) == metric) {
                        if (sampled) {
                            leave_out(s, f, metric);
                        } else {
                            sample(metric, stage_labels(s), f.value);
                            sampled = true;
                        }
                    }
                }
            }
        }
        for (const auto& m : seen) {
            source_metrics.push_back(m.first);
        }
    };
    bool any_source = false;
    for (const auto& s : snap.stages) {
        any_source = any_source || s.source.has_value();
    }
    if (any_source) {
        family("framepipe_source_state", "gauge",
               "1 for the state a supervised source is in, 0 for its other states.");
        for (const auto& s : snap.stages) {
            if (s.source) {
                // One series per state as the page spells it: a state listed twice, or two
                // whose names are equal once repaired to UTF-8, give one, which is 1 if either
                // is the current state.
                std::vector<std::pair<std::string, bool>> spelled; // label value, current
                for (const std::string& st : s.source->states) {
                    std::string label = detail::prometheus_escape(st);
                    const bool current = st == s.source->state;
                    const auto same = std::find_if(spelled.begin(), spelled.end(),
                                                   [&](const auto& e) { return e.first == label; });
                    if (same != spelled.end()) {
                        same->second = same->second || current;
                    } else {
                        spelled.emplace_back(std::move(label), current);
                    }
                }
                for (const auto& [label, current] : spelled) {
                    sample("framepipe_source_state", stage_labels(s) + ",state=\"" + label + "\"",
                           std::uint64_t{current ? 1U : 0U});
                }
            }
        }
        figures(&source_status::counters, "_total", "counter");
        figures(&source_status::gauges, "", "gauge");
        out += left_out;
    }

    family("framepipe_channel_pushed_total", "counter",
           "Items offered to a channel (windows made ready, for a sliding window).");
    for (const auto& c : snap.channels) {
        if (c.has_counts) {
            sample("framepipe_channel_pushed_total", channel_labels(c), c.pushed);
        }
    }
    family("framepipe_channel_popped_total", "counter", "Items taken from a channel.");
    for (const auto& c : snap.channels) {
        if (buffered(c)) {
            sample("framepipe_channel_popped_total", channel_labels(c), c.popped);
        }
    }
    family("framepipe_channel_dropped_total", "counter", "Items a channel dropped, by reason.");
    for (const auto& c : snap.channels) {
        for (const auto& [reason, n] : c.dropped_by_reason) {
            sample("framepipe_channel_dropped_total",
                   channel_labels(c) + ",reason=\"" + detail::prometheus_escape(reason) + "\"", n);
        }
    }
    family("framepipe_channel_items", "gauge", "Items buffered in a channel now.");
    for (const auto& c : snap.channels) {
        if (buffered(c)) {
            sample("framepipe_channel_items", channel_labels(c), c.size);
        }
    }
    family("framepipe_channel_capacity_items", "gauge", "Most items a channel holds.");
    for (const auto& c : snap.channels) {
        if (c.kind != "broadcaster" && c.capacity > 0) {
            sample("framepipe_channel_capacity_items", channel_labels(c),
                   detail::to<std::uint64_t>(c.capacity));
        }
    }
    family("framepipe_channel_item_age_seconds", "summary",
           "Age of timestamped items when a stage took them from the channel.");
    for (const auto& c : snap.channels) {
        if (c.has_age) {
            const auto l = channel_labels(c);
            sample("framepipe_channel_item_age_seconds", l + ",quantile=\"0.5\"", c.age_p50_ms / 1e3);
            sample("framepipe_channel_item_age_seconds", l + ",quantile=\"0.99\"", c.age_p99_ms / 1e3);
            sample("framepipe_channel_item_age_seconds_sum", l, c.age_sum_s);
            sample("framepipe_channel_item_age_seconds_count", l, c.age_count);
        }
    }
    return out;
}

namespace detail {

// The DOT node ids of a snapshot's stages and channels. A node's id is its kind and its name as
// the graph shows it ("stage:" or "channel:" and the escaped name), so that two names equal once
// repaired to UTF-8 would make one node of two. The second and later of those get the kind and
// their index instead ("stage#3", "channel#7"), which no shown name spells: each starts with
// "stage:" or "channel:". Channels are looked up by their own name (an edge names its channel).
class dot_ids {
public:
    explicit dot_ids(const pipeline_snapshot& snap) {
        std::unordered_set<std::string> taken;
        stages_.reserve(snap.stages.size());
        for (std::size_t i = 0; i < snap.stages.size(); ++i) {
            stages_.push_back(unique(taken, "stage", snap.stages[i].name, i));
        }
        channels_.reserve(snap.channels.size());
        for (std::size_t i = 0; i < snap.channels.size(); ++i) {
            // A name given twice (a hand-built snapshot) keeps the first one's node.
            channels_.try_emplace(snap.channels[i].name,
                                  unique(taken, "channel", snap.channels[i].name, i));
        }
    }
    [[nodiscard]] const std::string& stage(std::size_t i) const { return stages_[i]; }
    // A channel not in the snapshot gets the id its name spells.
    [[nodiscard]] std::string channel(const std::string& name) const {
        const auto it = channels_.find(name);
        return it != channels_.end() ? it->second : "channel:" + dot_escape(name);
    }

private:
    static std::string unique(std::unordered_set<std::string>& taken, const char* kind,
                              std::string_view name, std::size_t index) {
        std::string id = std::string(kind) + ":" + dot_escape(name);
        if (!taken.insert(id).second) {
            id = std::string(kind) + "#" + std::to_string(index);
        }
        return id;
    }

    std::vector<std::string> stages_;
    std::unordered_map<std::string, std::string> channels_;
};

} // namespace detail

// The graph in Graphviz DOT: stages as boxes, channels as ellipses (broadcasters as diamonds)
// with their policy and live counters. Every name is escaped for a DOT string, and an ill-formed
// UTF-8 sequence in it becomes U+FFFD. A node's id is "stage:" or "channel:" and its name as
// shown; a name shown like an earlier one of its kind gets "stage#N" or "channel#N" (N its index
// in the snapshot), so that each stays a node of its own. Any thread; allocates; throws
// std::bad_alloc.
[[nodiscard]] inline std::string to_dot(const pipeline_snapshot& snap) {
    const detail::dot_ids ids(snap);
    std::string out = "digraph \"" + detail::dot_escape(snap.name) + "\" {\n";
    out += "  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n";
    char buf[160];
    for (std::size_t i = 0; i < snap.stages.size(); ++i) {
        const auto& s = snap.stages[i];
        std::snprintf(buf, sizeof buf, "%.1f fps, p50 %.2f ms, busy %.0f%%", s.fps,
                      s.service_p50_ms, s.busy_ratio * 100.0);
        out += "  \"" + ids.stage(i) + "\" [shape=box, style=rounded, label=\"" +
               detail::dot_escape(s.name) + "\\n" + std::string(to_string(s.kind)) + ", " +
               std::string(to_string(s.state)) + "\\nin " + std::to_string(s.items_in) +
               (s.items_inline > 0 ? " (inline " + std::to_string(s.items_inline) + ")" : "") +
               ", out " + std::to_string(s.items_out) + "\\n" + buf + detail::source_line(s) +
               "\"];\n";
    }
    for (const auto& c : snap.channels) {
        std::string label = detail::dot_escape(c.name) + "\\n" + detail::dot_escape(c.kind);
        if (c.kind == "broadcaster") {
            label += "\\npublished " + std::to_string(c.pushed);
        } else {
            std::string details = detail::dot_escape(c.policy);
            if (c.capacity > 0) {
                details += (details.empty() ? "cap " : ", cap ") + std::to_string(c.capacity);
            }
            if (!details.empty()) {
                label += " (" + details + ")";
            }
            if (c.has_counts) {
                label += "\\npushed " + std::to_string(c.pushed) + ", popped " +
                         std::to_string(c.popped) + ", dropped " + std::to_string(c.dropped) +
                         ", held " + std::to_string(c.size);
            }
            if (c.has_age && c.age_count > 0) {
                std::snprintf(buf, sizeof buf, "\\nage p50 %.1f ms, p99 %.1f ms", c.age_p50_ms,
                              c.age_p99_ms);
                label += buf;
            }
        }
        out += "  \"" + ids.channel(c.name) + "\" [shape=" +
               (c.kind == "broadcaster" ? "diamond" : "ellipse") + ", label=\"" + label + "\"];\n";
        if (!c.parent.empty()) {
            out += "  \"" + ids.channel(c.parent) + "\" -> \"" + ids.channel(c.name) + "\";\n";
        }
        if (!c.feeds.empty()) {
            out += "  \"" + ids.channel(c.name) + "\" -> \"" + ids.channel(c.feeds) + "\";\n";
        }
    }
    for (std::size_t i = 0; i < snap.stages.size(); ++i) {
        for (const auto& in : snap.stages[i].inputs) {
            out += "  \"" + ids.channel(in) + "\" -> \"" + ids.stage(i) + "\";\n";
        }
        for (const auto& o : snap.stages[i].outputs) {
            out += "  \"" + ids.stage(i) + "\" -> \"" + ids.channel(o) + "\";\n";
        }
    }
    out += "}\n";
    return out;
}

} // namespace framepipe
