// tests/test_latest_slot_litmus.cpp - a store-load litmus test of latest_slot's close() against
// a consumer parking on the empty slot (latest_slot.hpp): close() stores closed_ seq_cst, and its
// notify then reads the watchers with a plain load (event_count::notify_all_after_seq_cst()).
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the test only checks the outcome.

// Before any framepipe header (detail/config.hpp): count the parks and the wakes.
#include "support/litmus_wake.hpp"

#include <framepipe/latest_slot.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <chrono>
#include <optional>

// A consumer parking on the empty slot registers (a read-modify-write of the watchers) and then
// reads closed_; close() stores closed_ and then its notify reads the watchers. The store is
// seq_cst (an exchange on x86), so that load cannot pass it. Made a release store, it could: the
// notify sees nobody while closed_ still sits in the store buffer, and the consumer reads it
// false and sleeps on a closed slot (until its deadline; pop() without one, for good). Each round:
// a new empty slot; the other thread pops with pop_for (5 ms) while this thread closes, late
// enough for the pop to have spun and parked (support/litmus.hpp, until_waiter_parks()). The round
// goes wrong when the consumer parked (support/litmus_wake.hpp) and close(), once it returned
// before the pop's deadline, had woken nobody; the pop must end with nothing either way.
TEST_CASE("latest_slot: close() wakes a consumer parked on the empty slot (store-load litmus)") {
    std::optional<framepipe::latest_slot<int>> slot;
    std::optional<int> popped{-1};
    framepipe_test::timed_wake_rounds rounds(std::chrono::milliseconds(5));
    unsigned round = 0;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {32, 2},
        [&] {
            slot.emplace();
            rounds.start();
        },
        [&] {
            framepipe_test::until_waiter_parks(++round);
            slot->close();
            rounds.call_returned();
        },
        [&] { popped = slot->pop_for(rounds.timeout()); },
        [&] { return !popped && !rounds.lost(); });
    framepipe_test::note_rounds(res.rounds, res.asked);
    framepipe_test::note_late(rounds.late_rounds(), res.rounds);
    CHECK(res.wrong == 0);
}
