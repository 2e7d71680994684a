// tests/support/rounds_after_end.hpp - the counting side of the tests of a blocking call that
// must end on its stop token or deadline while every look it makes loses (stale items, one a
// look; other threads taking what each wait saw). The waiting thread plays those others itself,
// from the seams after its wait and before it waits again, and calls next() once a round: it
// counts the rounds that came after the stop or the deadline, and requests the stop at a given
// round. A call that ends at its next look has at most one such round.
#pragma once

#include <chrono>
#include <optional>
#include <stop_token>

namespace framepipe_test {

struct rounds_after_end {
    using clock = std::chrono::steady_clock;

    unsigned limit = 200000;           // the rounds the test feeds, at most
    unsigned stop_at = 0;              // the round whose end requests `stop` (0: none)
    std::stop_source* stop = nullptr;  // the call's stop, when it has one
    std::chrono::nanoseconds timeout{}; // the call's timeout, when it has one

    unsigned rounds = 0;
    unsigned after_stop = 0;     // rounds begun once the stop was requested
    unsigned after_deadline = 0; // rounds begun once the deadline had surely passed

    // One round, on the waiting thread. The call set its deadline before its first round, so
    // the deadline has passed by the first round's time + timeout. True while the test should
    // go on feeding (fewer than `limit` rounds).
    bool next() {
        ++rounds;
        const auto now = clock::now();
        if (stop != nullptr && stop->stop_requested()) {
            ++after_stop;
        }
        if (!deadline_by_) {
            deadline_by_ = now + timeout;
        } else if (now > *deadline_by_) {
            ++after_deadline;
        }
        if (stop != nullptr && rounds == stop_at) {
            stop->request_stop();
        }
        return rounds < limit;
    }

private:
    std::optional<clock::time_point> deadline_by_;
};

} // namespace framepipe_test
