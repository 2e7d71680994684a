// tests/test_spsc_ring_litmus.cpp - store-load litmus tests of spsc_ring's two membarrier
// pairings (detail/spsc_lockfree_ring.hpp, the class comment): a consumer's claim without the
// compare-and-swap racing the producer's first eviction, and a consumer that finds the ring closed
// and empty racing a push that has not yet seen the close.
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the tests only check the outcome. Linux only (the
// membarrier calls are what is under test).

// Before any framepipe header (detail/config.hpp): the held side of each race waits at its test
// seam until the other call has returned (support/litmus_hold.hpp).
#include "support/litmus_hold.hpp"
// The consumer, after it decided to claim without the CAS and before it moves the item out.
#define FRAMEPIPE_DETAIL_PLAIN_CLAIM_HOOK() ::framepipe_test::litmus_hold()
// The producer, after it found the ring open with room and before it stores the item.
#define FRAMEPIPE_DETAIL_SPSC_PUSH_HOOK() ::framepipe_test::litmus_hold()

#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <cstddef>
#include <optional>
#include <vector>

#if defined(__linux__)
namespace {

using framepipe::overflow;
using framepipe::push_status;
using framepipe::spsc_ring;

using framepipe_test::cold_lines;

} // namespace

// The first eviction against a claim without the CAS. The consumer stores claiming_ and then
// reads evicting_; the producer, about to evict for the first time, stores evicting_, makes its
// membarrier call and then reads claiming_. Without the call x86 lets each load pass its own
// store, so both can miss each other: the consumer moves out the item the producer evicts (or the
// producer's new item, stored in the same slot), and an item is delivered twice or lost. Each
// round: a new ring of capacity 1 under drop_oldest holding item 1; then the producer (this
// thread) pushes 2 while the consumer pops once, its plain claim held until the push returned.
// Each side first stores to a cold line (as in test_wait_litmus.cpp), so that its store of the
// flag queues behind a miss while its load goes ahead: against a copy without the membarrier,
// 414-1,125 rounds in 20,000 went wrong, 1-35 without the cold stores. Then this thread drains
// the ring: every item must be accounted for once, popped or evicted.
TEST_CASE("spsc_ring: a claim without the CAS racing the first eviction never shares an item "
          "(store-load litmus)") {
    std::optional<spsc_ring<int>> r;
    push_status pushed = push_status::ok;
    std::optional<int> popped;
    cold_lines producer_cold;
    cold_lines consumer_cold;
    const framepipe_test::race_result res = framepipe_test::race(
        framepipe_test::litmus_rounds, true, {32, 32},
        [&] {
            r.emplace(1, overflow::drop_oldest);
            REQUIRE(r->push(1) == push_status::ok);
        },
        [&] {
            producer_cold.touch(); // the store of evicting_ queues behind this one
            pushed = r->push(2);
        },
        [&] {
            consumer_cold.touch(); // the store of claiming_ queues behind this one
            popped = r->try_pop();
        },
        [&] {
            std::vector<int> seen;
            if (popped) {
                seen.push_back(*popped);
            }
            for (int n = 0; n < 4; ++n) { // at most one item is left; 4 bounds a broken ring
                auto more = r->try_pop();
                if (!more) {
                    break;
                }
                seen.push_back(*more);
            }
            const std::size_t evicted = pushed == push_status::evicted ? 1 : 0;
            const bool each_once = seen.size() + evicted == 2 &&
                                   (seen.size() < 2 || seen[0] != seen[1]);
            // drop_oldest evicts item 1, so then only item 2 may arrive.
            return each_once && (evicted == 0 || seen == std::vector<int>{2});
        });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}

// A consumer that finds the ring closed and empty, against a push that has not yet seen the
// close. The push stores pushing_ and then reads closed_; the consumer, after close() (a seq_cst
// store), finds the ring empty, makes its membarrier call and then reads pushing_, and waits for
// an announced push. Without the call the push's store may still sit in its store buffer (here
// behind a store to a cold line), the push reads closed_ false, and the consumer reads pushing_
// false: it reports the end of the stream, and then the push stores its item and returns ok, an
// item neither delivered nor refused. Each round: a new open ring; the producer (the other
// thread) pushes 1, held after its check of closed_ until the consumer's pop has returned; this
// thread closes the ring and pops (the blocking pop, which returns nullopt only when the ring is
// closed and drained). The window is narrow: the consumer's path from its close() to its read of
// pushing_ (two notifications and a look at the ring) takes about as long as the push's store
// waits (more cold stores, or other offsets, did not widen it much). Against a copy without the
// membarrier 1-10 rounds in 20,000 went wrong, hence three times the rounds here: 0-10 in 60,000
// (nine runs, one of them 0), so scripts/mutate does not count on catching that fault.
TEST_CASE("spsc_ring: a push racing close() is refused or delivered, never stranded (store-load "
          "litmus)") {
    std::optional<spsc_ring<int>> r;
    push_status pushed = push_status::ok;
    std::optional<int> popped;
    cold_lines producer_cold;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, true, {128, 16},
        [&] { r.emplace(4, overflow::drop_newest); },
        [&] {
            r->close();
            popped = r->pop();
        },
        [&] {
            producer_cold.touch(); // the push's store of pushing_ queues behind this one
            pushed = r->push(1);
        },
        [&] {
            if (pushed == push_status::ok) {
                return popped == 1; // delivered before the end of the stream
            }
            return pushed == push_status::closed && !popped && !r->try_pop();
        });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}
#endif
