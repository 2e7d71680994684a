// tests/test_live_source_litmus.cpp - store-load litmus tests of a live_source runner
// (live_source.hpp, detail::live_runner): its three wake-ups, end_push(), which ends a push that
// a newer runner or stop() may wait for, finish(), which stop() waits for before it joins the
// runner's thread, and wake_watchdog(), which asks the watchdog to look at a call due sooner than
// it planned (each stores its flag seq_cst, and its notify then reads the watchers with a plain
// load: event_count's notify_all_after_seq_cst() and notify_one_after_seq_cst()); and two Dekker
// pairs of seq_cst stores, each followed by a load of the other's: begin_push() against
// mark_abandoned(), and announce_call() against the watchdog's plan_watch().
//
// Built with -O2 in every preset (tests/CMakeLists.txt), for the reason test_wait_litmus.cpp
// gives: at -O0 every atomic store of the library is a full barrier. Under ThreadSanitizer the
// atomics are calls into its runtime, and the tests only check the outcome.
//
// They drive a runner's members directly, with the waits the source makes on them: a whole
// live_source per round would start two threads, and the rounds would rarely meet in the
// window. The waits here have no deadline (stop()'s on runner_done has abandon_after, the
// watchdog's has its planned look), so that no round can end by timing out: a waiter that parks
// for good is found by its park (see each test) and woken by this thread.

// Before any framepipe header (detail/config.hpp): count the parks and the wakes.
#include "support/litmus_wake.hpp"

#include <framepipe/live_source.hpp>

#include <catch2/catch.hpp>

#include "support/litmus.hpp"

#include <atomic>
#include <optional>

namespace {

using framepipe::detail::event_count;
using framepipe::detail::live_runner;
using framepipe::detail::no_deadline;
using framepipe::detail::wait_end;

// What the two wake-up tests share: a runner and an event count made new each round, the waiter's
// outcome, and the check on this thread once the waking call has returned: a round goes wrong when
// the call woke nobody and the waiter parked anyway (support/litmus_wake.hpp,
// lost_wake_rescued(), which then wakes it).
struct round_state {
    std::optional<live_runner> runner;
    std::optional<event_count> ev;
    std::atomic<bool> returned{false};
    wait_end end = wait_end::timed_out;
    bool lost = false;

    void setup() {
        runner.emplace();
        ev.emplace();
        returned.store(false, std::memory_order_relaxed);
        end = wait_end::timed_out;
        lost = false;
        framepipe_test::reset_wake_counts();
    }

    // On the waiter's thread, once its wait has returned.
    void waited(wait_end e) {
        end = e;
        returned.store(true, std::memory_order_release);
    }

    // On this thread, once the waking call has returned.
    void rescue_if_lost() { lost = framepipe_test::lost_wake_rescued(*ev, returned); }

    [[nodiscard]] bool right() const { return end == wait_end::ready && !lost; }
};

// The rounds of a one-shot wake-up: each round a new runner; the other thread parks at once on
// the round's event count until done() holds (as stop() and the watchdog do, without their
// deadlines, see the file comment), while this thread calls wake() (a flag's seq_cst store, then
// a notify) after a store to a cold line, which the flag's store queues behind, a different number
// of pauses after the round starts, which sweeps the two calls across each other.
template <class Wake, class Done>
void check_one_shot_wake(round_state& st, Wake wake, Done done) {
    framepipe_test::cold_lines cold;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {48, 16}, [&] { st.setup(); },
        [&] {
            cold.touch(); // the flag's store queues behind this one
            wake();
            st.rescue_if_lost();
        },
        [&] { st.waited(st.ev->park(nullptr, no_deadline, done)); },
        [&] { return st.right() && done(); });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}

} // namespace

// A runner's push ends in end_push(): it clears `pushing` (seq_cst) and then its notify reads the
// watchers. The runner that replaced an abandoned one waits with wait() (it spins, then parks) for
// that push to end before its own first push, and stop() waits for it with park(). The waiter
// registers (a read-modify-write of the watchers) and then reads the flag. Made a release store,
// the clear could sit in the store buffer while the notify's load goes ahead and sees nobody; the
// waiter reads the flag still set and sleeps for good: the new runner never pushes again, or
// stop() never returns. Each round: a runner inside a push; the other thread waits as the new
// runner does, while this thread ends the push late enough for the wait to have spun and parked
// (support/litmus.hpp, until_waiter_parks()), after a store to a cold line, which the clear queues
// behind.
TEST_CASE("live_source: a runner's end_push() wakes the runner parked waiting for that push "
          "(store-load litmus)") {
    round_state st;
    framepipe_test::cold_lines cold;
    unsigned round = 0;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {32, 2},
        [&] {
            st.setup();
            st.runner->pushing.store(true, std::memory_order_relaxed);
        },
        [&] {
            framepipe_test::until_waiter_parks(++round);
            cold.touch(); // the clear of the flag queues behind this store
            st.runner->end_push(*st.ev);
            st.rescue_if_lost();
        },
        [&] {
            st.waited(st.ev->wait(nullptr, no_deadline, [&] { return st.runner->push_over(); }));
        },
        [&] { return st.right() && st.runner->push_over(); });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}

// A runner's thread ends in finish(): it sets `finished` (seq_cst) and then its notify reads the
// watchers. stop() parks at once on runner_done until the flag is set, then joins the thread.
// Made a release store, the flag could sit in the store buffer while the notify's load sees
// nobody; stop() reads the flag clear and sleeps until its deadline (abandon_after), and then
// abandons a runner that had ended: an error and an abandoned runner reported for nothing.
TEST_CASE("live_source: a runner's finish() wakes stop() parked waiting for it "
          "(store-load litmus)") {
    round_state st;
    check_one_shot_wake(
        st, [&] { st.runner->finish(*st.ev); }, [&] { return st.runner->has_finished(); });
}

// A runner whose next call is overdue before the watchdog's planned look calls wake_watchdog():
// it sets `watch_again` (seq_cst) and then its notify reads the watchers. The watchdog parks on
// watchdog_wait until that flag is set or its planned look comes. Made a release store, the flag
// could sit in the store buffer while the notify's load sees nobody; the watchdog reads the flag
// clear and sleeps until its planned look, long after the call it should abandon was overdue.
TEST_CASE("live_source: a runner's wake_watchdog() wakes the parked watchdog "
          "(store-load litmus)") {
    round_state st;
    check_one_shot_wake(
        st, [&] { st.runner->wake_watchdog(*st.ev); },
        [&] { return st.runner->watch_requested(); });
}

// A runner about to push calls begin_push(): it sets `pushing` (seq_cst) and then reads whether
// it was abandoned. Whoever abandons it (the watchdog, stop()) calls mark_abandoned() and then
// reads `pushing` (the wait on push_ended above). One of the two must see the other: then the
// runner drops its frame, or its abandoner waits for the push. Made a release store, the set
// could sit in the store buffer while the runner's read goes ahead: the runner pushes, and stop()
// returns at once and lets its caller destroy the output the runner is pushing into. Each round:
// a new runner; this thread begins a push after a store to a cold line, which the set queues
// behind, while the other thread abandons the runner and reads the flag, each after a different
// number of pauses. Wrong: the runner may push while its abandoner saw no push.
TEST_CASE("live_source: a runner that begins a push and the thread that abandons it see each "
          "other (store-load litmus)") {
    std::optional<live_runner> runner;
    framepipe_test::cold_lines cold;
    bool may_push = false;
    bool saw_no_push = false;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {16, 64},
        [&] {
            runner.emplace();
            may_push = false;
            saw_no_push = false;
        },
        [&] {
            cold.touch(); // the set of the flag queues behind this store
            may_push = runner->begin_push();
        },
        [&] {
            runner->mark_abandoned();
            saw_no_push = runner->push_over();
        },
        [&] { return !(may_push && saw_no_push) && runner->gone(); });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}

// A runner about to make a backend call announces it (announce_call()): it stores the call's
// deadline (seq_cst) and then reads when the watchdog will next look. The watchdog, before it
// parks, stores that time and then reads the deadline again (plan_watch()). One of the two must
// see the other: then the watchdog plans for the new call, or the runner, seeing a look later
// than its call's overdue time, wakes it. Made a release store on either side, a store could sit
// in the store buffer while its thread's read goes ahead: the runner reads the watchdog's earlier
// look and does not wake it, and the watchdog reads the old deadline and sleeps until the look it
// planned for that one, so that an overrunning call is abandoned late (its own overdue time is
// earlier). Each round: a runner whose last call had deadline 100 and whose watchdog last
// planned a look at 0 (past); this thread announces a call due at 200, overdue at 300, while the
// other thread plans a look at 1,000 for the deadline 100, each after a store to a cold line of
// its own and a different number of pauses. Wrong: the runner does not wake the watchdog while
// the watchdog keeps its plan.
TEST_CASE("live_source: a runner that announces a call and the watchdog that plans its next look "
          "see each other (store-load litmus)") {
    constexpr std::int64_t old_deadline = 100;
    std::optional<live_runner> runner;
    framepipe_test::cold_lines mine_cold;
    framepipe_test::cold_lines theirs_cold;
    bool wakes_watchdog = false;
    bool keeps_plan = false;
    const framepipe_test::race_result res = framepipe_test::race(
        3 * framepipe_test::litmus_rounds, false, {32, 32},
        [&] {
            runner.emplace();
            runner->call_deadline_ns.store(old_deadline, std::memory_order_relaxed);
            runner->watch_at_ns.store(0, std::memory_order_relaxed);
            wakes_watchdog = false;
            keeps_plan = false;
        },
        [&] {
            mine_cold.touch(); // the deadline's store queues behind this one
            wakes_watchdog = runner->announce_call(200, 300);
        },
        [&] {
            theirs_cold.touch(); // the look's store queues behind this one
            keeps_plan = runner->plan_watch(1000, old_deadline);
        },
        [&] {
            return (wakes_watchdog || !keeps_plan) &&
                   runner->call_deadline_ns.load(std::memory_order_relaxed) == 200 &&
                   runner->watch_at_ns.load(std::memory_order_relaxed) == 1000;
        });
    framepipe_test::note_rounds(res.rounds, res.asked);
    CHECK(res.wrong == 0);
}
