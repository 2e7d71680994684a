// tests/test_pipeline_litmus.cpp - a store-load litmus test of the inline gate of a stage that
// runs inline_when_idle (pipeline.hpp, detail::inline_gate): release() stores the gate's state
// seq_cst, and its notify then reads the watchers with a plain load
// (event_count::notify_one_after_seq_cst()).
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the test only checks the outcome.

// Before any framepipe header (detail/config.hpp): count the parks and the wakes.
#include "support/litmus_wake.hpp"

#include <framepipe/pipeline.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <atomic>
#include <optional>

namespace {

using framepipe::detail::inline_gate;

} // namespace

// The stage's thread, waiting for an inline run to end, registers (a read-modify-write of the
// watchers) and then reads the gate's state; the upstream thread's release() stores the state and
// then its notify reads the watchers. The store is seq_cst (an exchange on x86), so that load
// cannot pass it. Made a release store, it could: the notify sees nobody while the state still sits
// in the store buffer, and the stage's thread reads the gate held and sleeps for good (hold() has
// no deadline, and only release() notifies the gate), holding an item it took, and the pipeline's
// stop(), which joins that thread, never returns. Each round: a new gate, held as by an inline run;
// the other thread calls hold() while this thread releases the gate, late enough for hold() to have
// spun and parked (support/litmus.hpp, until_waiter_parks()), and after a store to a cold line,
// which the store of the state queues behind while the notify's load goes ahead. Against a copy
// whose release() stores the state release, 2,180-5,528 of 60,000 rounds went wrong in five runs;
// without the cold store, 0-3 at any timing tried. A round goes wrong when release() woke nobody
// and hold() parked anyway (support/litmus_wake.hpp, lost_wake_rescued(), which then wakes it). No
// deadline is involved: hold() cannot time out and leave the watchers before release() reads them.
TEST_CASE("pipeline: an inline run's release() wakes the stage's thread parked on the gate "
          "(store-load litmus)") {
    std::optional<inline_gate> gate;
    framepipe_test::cold_lines cold;
    std::atomic<bool> returned{false};
    bool held = false;
    bool lost = false;
    unsigned round = 0;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {32, 2},
        [&] {
            gate.emplace();
            gate->state.store(inline_gate::held, std::memory_order_relaxed);
            returned.store(false, std::memory_order_relaxed);
            lost = false;
            framepipe_test::reset_wake_counts();
        },
        [&] {
            framepipe_test::until_waiter_parks(++round);
            cold.touch(); // the store of the state queues behind this one
            gate->release();
            lost = framepipe_test::lost_wake_rescued(gate->released, returned);
        },
        [&] {
            held = gate->hold();
            returned.store(true, std::memory_order_release);
        },
        [&] {
            return held && !lost &&
                   gate->state.load(std::memory_order_relaxed) == inline_gate::held;
        });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}
