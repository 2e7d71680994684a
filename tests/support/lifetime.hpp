// tests/support/lifetime.hpp - a value type that counts its lives, and can be told to throw.
//
// Every construction (default, value, copy, move) increments `constructed`; every destruction
// increments `destroyed`. A test checks `alive() == 0` at the end to prove that each object's
// destructor ran exactly once. Setting `throw_on_copy` / `throw_on_move` makes the next copies or
// moves throw, to exercise a channel's exception guarantee.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>

namespace framepipe_test {

struct lifetime_counters {
    std::atomic<std::int64_t> constructed{0};
    std::atomic<std::int64_t> destroyed{0};
    std::atomic<std::int64_t> copies{0};
    std::atomic<std::int64_t> moves{0};
    std::atomic<bool> throw_on_copy{false};
    std::atomic<bool> throw_on_move{false};

    [[nodiscard]] std::int64_t alive() const noexcept { return constructed - destroyed; }
};

// One set of counters per test: construct a lifetime_scope at the top of a TEST_CASE.
inline lifetime_counters*& current_counters() noexcept {
    static lifetime_counters* current = nullptr;
    return current;
}

struct lifetime_scope {
    lifetime_counters counters;
    lifetime_scope() noexcept { current_counters() = &counters; }
    ~lifetime_scope() { current_counters() = nullptr; }
    lifetime_scope(const lifetime_scope&) = delete;
    lifetime_scope& operator=(const lifetime_scope&) = delete;
};

struct counted_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class counted {
public:
    explicit counted(int v = 0) : value_(v) { ++c().constructed; }
    counted(const counted& o) : value_(o.value_) {
        if (c().throw_on_copy) {
            throw counted_error("copy");
        }
        ++c().constructed;
        ++c().copies;
    }
    counted(counted&& o) noexcept(false) : value_(o.value_) {
        if (c().throw_on_move) {
            throw counted_error("move");
        }
        o.value_ = -1;
        ++c().constructed;
        ++c().moves;
    }
    counted& operator=(const counted&) = delete;
    counted& operator=(counted&&) = delete;
    ~counted() { ++c().destroyed; }

    [[nodiscard]] int value() const noexcept { return value_; }

private:
    static lifetime_counters& c() noexcept { return *current_counters(); }
    int value_;
};

} // namespace framepipe_test
