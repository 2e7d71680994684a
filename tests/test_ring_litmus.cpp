// tests/test_ring_litmus.cpp - a store-load litmus test of the lock-free MPMC ring's wake-up of a
// producer parked under overflow::block (detail/lockfree_ring.hpp, take_one()): a pop that frees
// a slot stores head_ seq_cst, and its notify then reads the watchers with a plain load
// (event_count::notify_one_after_seq_cst()).
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the test only checks the outcome.

// Before any framepipe header (detail/config.hpp): count the parks and the wakes.
#include "support/litmus_wake.hpp"

#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <chrono>
#include <optional>

namespace {

using framepipe::overflow;
using framepipe::push_status;
using framepipe::ring;

} // namespace

// A producer parked on a full ring registers (a read-modify-write of the watchers) and then reads
// head_; a pop stores head_ and then its notify reads the watchers. The pop's store is seq_cst
// (an exchange on x86), so that load cannot pass it. Made a release store, it could: the notify
// sees nobody while head_ still sits in the store buffer, the producer reads the old head_, finds
// the ring full and sleeps beside a free slot. Each round: a new ring of capacity 1 under block,
// holding item 1; the other thread pushes 2 with push_for (5 ms) while this thread pops once,
// late enough for the push to have spun its 5 us and parked. The round goes wrong when the
// producer parked (support/litmus_wake.hpp) and the pop, once it returned before the push's
// deadline, had woken nobody; then both items must arrive, too. A late round (the pop returned
// after that deadline) must only account for both items: delivered, or the push rejected.
TEST_CASE("ring: a pop that frees a slot wakes a producer parked on it (store-load litmus)") {
    std::optional<ring<int>> r;
    std::optional<int> popped;
    push_status pushed = push_status::closed;
    framepipe_test::timed_wake_rounds rounds(std::chrono::milliseconds(5));
    unsigned round = 0;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {32, 2},
        [&] {
            r.emplace(1, overflow::block);
            REQUIRE(r->try_push(1) == push_status::ok);
            rounds.start();
        },
        [&] {
            framepipe_test::until_waiter_parks(++round);
            popped = r->try_pop();
            rounds.call_returned();
        },
        [&] { pushed = r->push_for(2, rounds.timeout()); },
        [&] {
            const auto second = r->try_pop();
            if (rounds.late()) {
                return popped == 1 && (pushed == push_status::ok
                                           ? second == 2
                                           : pushed == push_status::rejected && !second);
            }
            return pushed == push_status::ok && popped == 1 && second == 2 && !rounds.lost();
        });
    framepipe_test::note_rounds(res.rounds, res.asked);
    framepipe_test::note_late(rounds.late_rounds(), res.rounds);
    CHECK(res.wrong == 0);
}
