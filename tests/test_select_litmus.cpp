// tests/test_select_litmus.cpp - a store-load litmus test of the pairing between selector::add()
// and spsc_ring's push (select.hpp, the file comment, point 1, notify_one_asymmetric()).
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the test only checks the outcome. Linux only (the
// membarrier call is what is under test).

// Before any framepipe header (detail/config.hpp): the test's seams. support/litmus_wake.hpp
// counts the notifications that found someone (here: the selector's listener).
#include "support/litmus_wake.hpp"
namespace framepipe_test {
void look_after_attach() noexcept;
} // namespace framepipe_test
// selector::add(), once the listener is attached and its barriers made: look at the channel.
#define FRAMEPIPE_DETAIL_SELECT_ATTACHED_HOOK() ::framepipe_test::look_after_attach()

#include <framepipe/ring.hpp>
#include <framepipe/select.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <optional>

#if defined(__linux__)
namespace {

using framepipe::overflow;
using framepipe::push_status;
using framepipe::selector;
using framepipe::spsc_ring;

// The channel add() attaches to this round, and what its look found.
spsc_ring<int>* watched = nullptr;
bool looked_ready = false;

} // namespace

namespace framepipe_test {
// The selector's own look (its wait predicate's probe), made at once: a later look would find a
// push's store long since visible, and the window closed.
void look_after_attach() noexcept {
    if (watched != nullptr) {
        looked_ready = watched->size() != 0 || watched->closed();
    }
}
} // namespace framepipe_test

// add() attaches its listener (a read-modify-write of the channel's watcher count), makes a full
// fence and its membarrier call, and only then looks at the channel; spsc_ring's push stores its
// item with a plain release store and then reads the watcher count with a plain load. Without the
// membarrier x86 lets the push's load pass its own store: the push reads no listener (so it
// notifies nobody) while its item still sits in its store buffer, and add()'s look finds the ring
// empty. A consumer that then parks on the selector sleeps beside the item. Each round: a new
// spsc_ring and selector; this thread adds the ring while the other pushes one item. The look is
// made at the seam right after the barriers (the selector's own first look comes later, when the
// push's store has long been visible: a copy without the membarrier lost nothing in 5,000 rounds
// per setting that way, docs/verification.md). The round goes right when that look saw the item
// or the push's notification found the listener; neither side is held (race() with no seam calling
// litmus_hold()), since both outcomes are fixed once the two loads are made. add() reaches its attach some hundreds of
// nanoseconds after it is called, so this thread waits up to 32 pauses before its call and the
// pusher at most one. Against a copy without the membarrier, 548-2,429 rounds in 20,000 went
// wrong with these offsets; a store to a cold line before the push (the other litmus tests'
// trick) made it fewer (53-211).
TEST_CASE("selector: a push racing add() is seen by add()'s look or reaches the listener "
          "(store-load litmus)") {
    std::optional<selector<int>> sel;
    std::optional<spsc_ring<int>> r;
    push_status pushed = push_status::closed;
    const framepipe_test::race_result res = framepipe_test::race(
        framepipe_test::litmus_rounds, false, {32, 2},
        [&] {
            sel.reset(); // before its channel
            r.emplace(4, overflow::drop_newest);
            sel.emplace();
            watched = &*r;
            looked_ready = false;
            framepipe_test::reset_wake_counts();
        },
        [&] { (void)sel->add(*r); },
        [&] { pushed = r->push(1); },
        [&] {
            watched = nullptr;
            return pushed == push_status::ok &&
                   (looked_ready ||
                    framepipe_test::litmus_wakes.load(std::memory_order_relaxed) != 0);
        });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}
#endif
