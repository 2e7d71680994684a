// tests/test_spsc_ring_litmus.cpp - store-load litmus tests of spsc_ring's two membarrier
// pairings (detail/spsc_lockfree_ring.hpp, the class comment): a consumer's claim without the
// compare-and-swap racing the producer's first eviction, and a consumer that finds the ring closed
// and empty racing a push that has not yet seen the close.
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the tests only check the outcome. Linux only (the
// membarrier calls are what is under test).

// Before any framepipe header (detail/config.hpp): the thread marked `holder` waits at its seam
// until the round's other call has returned (or 20 us have passed), so that once a pairing has
// failed, the other side always acts first. Test seams, as in test_ring.cpp; here they only
// stretch a window of a few instructions.
#include <atomic>
#include <chrono>

namespace spsc_litmus {
inline std::atomic<int> round_started{0}; // the round whose holder may be held
inline std::atomic<int> other_returned{0}; // the last round whose other call returned
inline thread_local bool holder = false;
inline void hold() noexcept {
    if (!holder) {
        return;
    }
    const int round = round_started.load(std::memory_order_relaxed);
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    while (other_returned.load(std::memory_order_acquire) < round &&
           std::chrono::steady_clock::now() < until) {
    }
}
} // namespace spsc_litmus
// The consumer, after it decided to claim without the CAS and before it moves the item out.
#define FRAMEPIPE_DETAIL_PLAIN_CLAIM_HOOK() ::spsc_litmus::hold()
// The producer, after it found the ring open with room and before it stores the item.
#define FRAMEPIPE_DETAIL_SPSC_PUSH_HOOK() ::spsc_litmus::hold()

#include <framepipe/ring.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <thread>
#include <vector>

#if defined(__linux__)
namespace {

using framepipe::overflow;
using framepipe::push_status;
using framepipe::spsc_ring;

struct race_result {
    int wrong = 0;
    int rounds = 0; // run
    int asked = 0;
};

// 16 MiB, stored to one line at a time, each on another page (a cache and TLB miss): a store
// that queues before a racing store in the same thread's store buffer, which delays it.
class cold_lines {
public:
    void touch() noexcept {
        next_ = (next_ + 4099U * 64U) % bytes_.size(); // 2^18 lines before one comes back
        bytes_[next_] = 1;
    }

private:
    std::vector<char> bytes_ = std::vector<char>(std::size_t{16} << 20);
    std::size_t next_ = 0;
};

// How many pauses each side makes before its call, at most: a different number each round, which
// sweeps the two calls' offset across the window. The side whose path to the racing store is
// shorter gets the wider range.
struct offsets {
    std::uint32_t mine;
    std::uint32_t theirs;
};

// Runs `rounds` rounds of a race between this thread and a second one: each round, setup() on
// this thread, then mine() here and theirs() there, each after a few pauses, then check() here
// once both have returned (true: the round went right). `theirs_holds`: whether the second
// thread is the one held at its seam (else this one is). Stops early when the time budget is
// spent (support/litmus.hpp).
template <class Setup, class Mine, class Theirs, class Check>
race_result race(int rounds, bool theirs_holds, offsets most, Setup setup, Mine mine,
                 Theirs theirs, Check check) {
    const framepipe_test::litmus_budget budget;
    std::atomic<int> go{0};
    std::atomic<int> theirs_returned{0};
    constexpr int end = std::numeric_limits<int>::max();
    std::thread other([&] {
        spsc_litmus::holder = theirs_holds;
        std::uint32_t x = 12345;
        for (int i = 1;; ++i) {
            framepipe_test::spin_until([&] { return go.load(std::memory_order_acquire) >= i; });
            if (go.load(std::memory_order_relaxed) == end) {
                break;
            }
            x = x * 1664525U + 1013904223U; // a fixed pseudo-random offset per round
            for (std::uint32_t d = (x >> 24) % most.theirs; d > 0; --d) {
                framepipe::detail::cpu_relax();
            }
            theirs();
            if (!theirs_holds) {
                spsc_litmus::other_returned.store(i, std::memory_order_release);
            }
            theirs_returned.store(i, std::memory_order_release);
        }
    });
    spsc_litmus::holder = !theirs_holds;
    race_result r;
    r.asked = rounds;
    std::uint32_t x = 777;
    for (int i = 1; i <= rounds && !budget.spent(); ++i) {
        r.rounds = i;
        setup();
        spsc_litmus::round_started.store(i, std::memory_order_relaxed);
        go.store(i, std::memory_order_release);
        x = x * 1664525U + 1013904223U;
        for (std::uint32_t d = (x >> 24) % most.mine; d > 0; --d) {
            framepipe::detail::cpu_relax();
        }
        mine();
        if (theirs_holds) {
            spsc_litmus::other_returned.store(i, std::memory_order_release);
        }
        framepipe_test::spin_until(
            [&] { return theirs_returned.load(std::memory_order_acquire) >= i; });
        r.wrong += check() ? 0 : 1;
    }
    go.store(end, std::memory_order_release);
    other.join();
    spsc_litmus::holder = false;
    return r;
}

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
// 438-1,125 rounds in 20,000 went wrong, 1-35 without the cold stores. Then this thread drains
// the ring: every item must be accounted for once, popped or evicted.
TEST_CASE("spsc_ring: a claim without the CAS racing the first eviction never shares an item "
          "(store-load litmus)") {
    std::optional<spsc_ring<int>> r;
    push_status pushed = push_status::ok;
    std::optional<int> popped;
    cold_lines producer_cold;
    cold_lines consumer_cold;
    const race_result res = race(
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
// waits (more cold stores, or other offsets, did not widen it). Against a copy without the
// membarrier 1-10 rounds in 20,000 went wrong, hence three times the rounds here: 3-10 in 60,000
// (six runs).
TEST_CASE("spsc_ring: a push racing close() is refused or delivered, never stranded (store-load "
          "litmus)") {
    std::optional<spsc_ring<int>> r;
    push_status pushed = push_status::ok;
    std::optional<int> popped;
    cold_lines producer_cold;
    const race_result res = race(
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
