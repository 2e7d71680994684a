// tests/fuzz/fuzz_common.hpp - what every fuzz target shares: reading the fuzzer's bytes, the
// item types (with a fake clock: captured an hour-scale before or after now), and the check that
// reports a disagreement between a channel and its model.
//
// A target reads its options from the first bytes and then one operation per byte (plus the
// bytes that operation needs); running out of bytes reads zeros and ends the loop. A mismatch
// prints the operation number and both sides, then aborts, so libFuzzer saves the input. To see
// the operations of a saved input: FRAMEPIPE_FUZZ_TRACE=1 ./fuzz_ring_mpmc crash-file.
#pragma once

#include <framepipe/stamped.hpp>

#include "models.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace framepipe_fuzz {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using framepipe_model::item;

class byte_reader {
public:
    byte_reader(const std::uint8_t* data, std::size_t size) noexcept : p_(data), end_(data + size) {}
    [[nodiscard]] bool empty() const noexcept { return p_ == end_; }
    [[nodiscard]] std::uint8_t byte() noexcept { return p_ == end_ ? 0 : *p_++; }

private:
    const std::uint8_t* p_;
    const std::uint8_t* end_;
};

inline bool tracing() {
    static const bool on = std::getenv("FRAMEPIPE_FUZZ_TRACE") != nullptr;
    return on;
}

// The operation being run, for messages.
struct op_log {
    std::size_t index = 0;
    std::string what;
    void begin(std::string w) {
        ++index;
        if (tracing()) {
            std::fprintf(stderr, "op %zu: %s\n", index, w.c_str());
        }
        what = std::move(w);
    }
};
inline op_log& current_op() {
    static op_log log;
    return log;
}

[[noreturn]] inline void mismatch(const char* file, int line, const std::string& msg) {
    std::fprintf(stderr, "\nframepipe fuzz: MISMATCH at %s:%d, operation %zu (%s): %s\n", file, line,
                 current_op().index, current_op().what.c_str(), msg.c_str());
    std::abort();
}

template <class A, class B>
std::string both(const A& real, const B& model) {
    std::ostringstream s;
    s << "real " << real << ", model " << model;
    return s.str();
}

#define FUZZ_CHECK_EQ(real, model)                                                                 \
    do {                                                                                           \
        const auto& fuzz_real_ = (real);                                                           \
        const auto& fuzz_model_ = (model);                                                         \
        if (!(fuzz_real_ == fuzz_model_)) {                                                        \
            ::framepipe_fuzz::mismatch(__FILE__, __LINE__,                                         \
                                       std::string(#real " == " #model ": ") +                    \
                                           ::framepipe_fuzz::both(fuzz_real_, fuzz_model_));       \
        }                                                                                          \
    } while (false)

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            ::framepipe_fuzz::mismatch(__FILE__, __LINE__, #cond);                                 \
        }                                                                                          \
    } while (false)

inline std::string str(framepipe::push_status s) { return std::string(framepipe::to_string(s)); }

inline std::string str(const framepipe::channel_stats& s) {
    std::ostringstream o;
    o << "{pushed " << s.pushed << " popped " << s.popped << " dropped " << s.dropped << " evicted "
      << s.evicted << " rejected " << s.rejected << " cancelled " << s.cancelled << " expired "
      << s.expired << " after_close " << s.after_close << " rate_limited " << s.rate_limited
      << " size " << s.size << "}";
    return o.str();
}

inline void check_stats(const framepipe::channel_stats& real, const framepipe::channel_stats& model,
                        const char* file, int line) {
    if (!framepipe_model::ring_model::same_counts(real, model)) {
        mismatch(file, line, "stats: real " + str(real) + ", model " + str(model));
    }
    // The identities every channel promises when no call is in flight.
    if (real.pushed != real.popped + real.dropped + real.size ||
        real.dropped != real.evicted + real.rejected + real.cancelled + real.expired +
                            real.after_close + real.rate_limited) {
        mismatch(file, line, "stats identities broken: " + str(real));
    }
}
#define FUZZ_CHECK_STATS(real, model) ::framepipe_fuzz::check_stats((real), (model), __FILE__, __LINE__)

// A value that counts the live objects of its type, so that a target can check at the end that
// the channel destroyed every item exactly once (ASan catches a use after destruction; this
// catches an item never destroyed or destroyed twice). Move cannot throw. A move leaves
// `moved_from` behind, as a moved-from string or handle is left empty, so that a channel that
// hands out an item it had moved away (a window that moves its items out while the next window
// still needs them) gives a value the model does not.
struct tracked {
    static constexpr std::int64_t moved_from = std::numeric_limits<std::int64_t>::min();
    std::int64_t value = 0;
    static inline std::int64_t alive = 0;

    tracked() noexcept { ++alive; }
    explicit tracked(std::int64_t v) noexcept : value(v) { ++alive; }
    tracked(const tracked& o) noexcept : value(o.value) { ++alive; }
    tracked(tracked&& o) noexcept : value(std::exchange(o.value, moved_from)) { ++alive; }
    tracked& operator=(const tracked&) = default;
    tracked& operator=(tracked&& o) noexcept {
        value = std::exchange(o.value, moved_from);
        return *this;
    }
    ~tracked() { --alive; }
};

// The items of the lock-free channels: a stamped value.
using stamped_item = framepipe::stamped<tracked>;

// The same, with a move constructor that may throw (it never does): a ring of it uses the mutex
// implementation (detail::locked_ring).
struct throwing_item {
    stamped_item s;
    explicit throwing_item(stamped_item x) noexcept : s(std::move(x)) {}
    throwing_item(const throwing_item&) = default;
    throwing_item(throwing_item&& o) noexcept(false) : s(std::move(o.s)) {}
    throwing_item& operator=(const throwing_item&) = default;
    throwing_item& operator=(throwing_item&&) = default;
    ~throwing_item() = default;
};

// The fake clock: a stale item was captured 1000 hours ago (older than any max_age a target
// sets), a fresh one 1000 hours from now (never older than max_age, whatever the machine's
// speed). So whether an item expires is the fuzzer's choice, not the scheduler's.
inline steady::time_point captured_for(bool stale) {
    return stale ? steady::now() - 1000h : steady::now() + 1000h;
}

inline stamped_item make_stamped(const item& it) {
    stamped_item s;
    s.value = tracked(it.value);
    s.captured = captured_for(it.stale);
    s.epoch = it.epoch;
    return s;
}

template <class T>
T make_item(const item& it);
template <>
inline stamped_item make_item<stamped_item>(const item& it) {
    return make_stamped(it);
}
template <>
inline throwing_item make_item<throwing_item>(const item& it) {
    return throwing_item(make_stamped(it));
}

inline const stamped_item& as_stamped(const stamped_item& s) { return s; }
inline const stamped_item& as_stamped(const throwing_item& t) { return t.s; }

// Whether a real item is the model's item (value and epoch; the capture time follows from the
// item's "stale" bit and is checked by expiry itself).
template <class T>
bool same_item(const T& real, const item& model) {
    const stamped_item& s = as_stamped(real);
    return s.value.value == model.value && s.epoch == model.epoch;
}

template <class T>
std::string describe(const std::optional<T>& real) {
    return real ? "item " + std::to_string(as_stamped(*real).value.value) + " epoch " +
                      std::to_string(as_stamped(*real).epoch)
                : std::string("nullopt");
}
inline std::string describe(const std::optional<item>& model) {
    return model ? "item " + std::to_string(model->value) + " epoch " +
                       std::to_string(model->epoch) + (model->stale ? " (stale)" : "")
                 : std::string("nullopt");
}

template <class T>
void check_popped(const std::optional<T>& real, const std::optional<item>& model, const char* file,
                  int line) {
    const bool same = real.has_value() == model.has_value() && (!real || same_item(*real, *model));
    if (!same) {
        mismatch(file, line, "popped " + describe(real) + ", model " + describe(model));
    }
}
#define FUZZ_CHECK_POPPED(real, model) ::framepipe_fuzz::check_popped((real), (model), __FILE__, __LINE__)

inline void check_status(framepipe::push_status real, framepipe::push_status model, const char* file,
                         int line) {
    if (real != model) {
        mismatch(file, line, "push returned " + str(real) + ", model " + str(model));
    }
}
#define FUZZ_CHECK_STATUS(real, model) ::framepipe_fuzz::check_status((real), (model), __FILE__, __LINE__)

// One item from the fuzzer: a fresh value (counted up), with an epoch 0-3 and a stale bit.
inline item next_item(byte_reader& in, std::int64_t& counter) {
    const std::uint8_t b = in.byte();
    return item{.value = ++counter,
                .epoch = static_cast<std::uint64_t>((b >> 1) & 3),
                .stale = (b & 1) != 0};
}

inline std::string str(const item& it) {
    return std::to_string(it.value) + "/e" + std::to_string(it.epoch) + (it.stale ? "/stale" : "");
}

} // namespace framepipe_fuzz

template <>
struct framepipe::timestamp_traits<framepipe_fuzz::throwing_item> {
    static std::chrono::steady_clock::time_point capture_time(
        const framepipe_fuzz::throwing_item& t) noexcept {
        return t.s.captured;
    }
};
template <>
struct framepipe::epoch_traits<framepipe_fuzz::throwing_item> {
    static std::uint64_t epoch(const framepipe_fuzz::throwing_item& t) noexcept { return t.s.epoch; }
};
