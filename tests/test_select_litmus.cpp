// tests/test_select_litmus.cpp - store-load litmus tests of two of the selector's pairings
// (select.hpp): add() against spsc_ring's push (the file comment, point 1,
// notify_one_asymmetric()), and remove() against a wait predicate's pin (probe_pinned()).
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the tests only check the outcome. Linux only (the
// membarrier call is what the first test is about).

// Before any framepipe header (detail/config.hpp): the test's seams. support/litmus_wake.hpp
// counts the notifications that found someone (here: the selector's listener).
#include "support/litmus_wake.hpp"
namespace framepipe_test {
void look_after_attach() noexcept;
void probe_after_gone_check() noexcept;
} // namespace framepipe_test
// selector::add(), once the listener is attached and its barriers made: look at the channel.
#define FRAMEPIPE_DETAIL_SELECT_ATTACHED_HOOK() ::framepipe_test::look_after_attach()
// A wait predicate that pinned an input and found it still there, before it reads the channel.
#define FRAMEPIPE_DETAIL_SELECT_PROBE_HOOK() ::framepipe_test::probe_after_gone_check()

#include <framepipe/ring.hpp>
#include <framepipe/select.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <atomic>
#include <chrono>
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

// The removal under way this round, and the predicates that read the channel after it returned.
std::atomic<bool> removing{false};
std::atomic<bool> removed{false};
std::atomic<int> read_after_remove{0};

} // namespace

namespace framepipe_test {
// The selector's own look (its wait predicate's probe), made at once: a later look would find a
// push's store long since visible, and the window closed.
void look_after_attach() noexcept {
    if (watched != nullptr) {
        looked_ready = watched->size() != 0 || watched->closed();
    }
}

// Once remove() has begun: holds the predicate (pinned, past its check of gone_) until remove()
// returned or 20 us passed, then counts a read of the channel after remove() returned. remove()
// waits for the pin, so on a correct header the hold always ends by its time.
void probe_after_gone_check() noexcept {
    if (!removing.load(std::memory_order_acquire)) {
        return;
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    while (!removed.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) {
    }
    if (removed.load(std::memory_order_acquire)) {
        read_after_remove.fetch_add(1, std::memory_order_relaxed);
    }
}
} // namespace framepipe_test

namespace {

// A new spsc_ring and a new selector for a round (the selector goes first: it refers to the ring).
void renew(std::optional<selector<int>>& sel, std::optional<spsc_ring<int>>& r) {
    sel.reset();
    r.emplace(4, overflow::drop_newest);
    sel.emplace();
}

} // namespace

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
// or the push's notification found the listener; neither side is held (race() with no seam
// calling litmus_hold()), since both outcomes are fixed once the two loads are made. add() reaches
// its attach some hundreds of nanoseconds after it is called, so this thread waits up to 32
// pauses before its call and the pusher at most one. Against a copy without the membarrier,
// 525-3,637 rounds in 20,000 went wrong (ten runs); a store to a cold line before the push (the
// other litmus tests' trick) made it fewer (53-211 at one setting of the offsets).
TEST_CASE("selector: a push racing add() is seen by add()'s look or reaches the listener "
          "(store-load litmus)") {
    std::optional<selector<int>> sel;
    std::optional<spsc_ring<int>> r;
    push_status pushed = push_status::closed;
    const framepipe_test::race_result res = framepipe_test::race(
        framepipe_test::litmus_rounds, false, {32, 2},
        [&] {
            renew(sel, r);
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

// remove() against a consumer's wait predicate (select.hpp, select_input: probe_pinned() and
// retire()). The predicate pins the input (a read-modify-write) and then reads gone_; remove()
// stores gone_ seq_cst (an exchange on x86) and then reads the pins, waiting for any. Made a
// release store, x86 could let that read pass it: remove() sees no pin and returns, while the
// predicate, pinned a moment later, still reads gone_ false and reads a channel its owner may
// already have destroyed. Each round: a new spsc_ring and selector with the ring added; the other
// thread waits for an item (pop_for, which spins 5 us evaluating its predicate before it parks)
// while this thread removes the input and then closes the selector (which ends that wait). The
// predicate is held at its seam once remove() has begun (see above); the round goes wrong when a
// predicate read the channel after remove() had returned.
TEST_CASE("selector: a wait predicate never reads a channel after remove() returned (store-load "
          "litmus)") {
    std::optional<selector<int>> sel;
    std::optional<spsc_ring<int>> r;
    framepipe::input_id id{};
    const framepipe_test::race_result res = framepipe_test::race(
        framepipe_test::litmus_rounds, false, {128, 2},
        [&] {
            renew(sel, r);
            id = sel->add(*r);
            removing.store(false, std::memory_order_relaxed);
            removed.store(false, std::memory_order_relaxed);
            read_after_remove.store(0, std::memory_order_relaxed);
        },
        [&] {
            removing.store(true, std::memory_order_release);
            (void)sel->remove(id);
            removed.store(true, std::memory_order_release);
            sel->close();
        },
        [&] { (void)sel->pop_for(std::chrono::seconds(10)); },
        [&] { return read_after_remove.load(std::memory_order_relaxed) == 0; });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}
#endif
