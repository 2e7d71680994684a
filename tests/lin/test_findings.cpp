// tests/lin/test_findings.cpp - library bugs found while writing the specifications, each as a
// test that fails until the library is fixed (docs/verification.md, "Findings").
#include <framepipe/broadcaster.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <thread>

#if defined(__linux__) && defined(__GLIBC__)
#include <dlfcn.h>
#include <pthread.h>

// To make a race window deterministic, this executable interposes pthread_mutex_unlock (which
// std::mutex::unlock calls): a thread that sets `pause_after_next_unlock` sleeps right after
// its next unlock, while every other thread runs on. The real function comes from the next
// object in the lookup order (libc, or a sanitizer's interceptor of it).
namespace {
thread_local bool pause_after_next_unlock = false;
using unlock_fn = int (*)(pthread_mutex_t*);
unlock_fn real_unlock() {
    static const auto fn = reinterpret_cast<unlock_fn>(dlsym(RTLD_NEXT, "pthread_mutex_unlock"));
    return fn;
}
} // namespace

extern "C" int pthread_mutex_unlock(pthread_mutex_t* m) {
    const int r = real_unlock()(m);
    if (pause_after_next_unlock) {
        pause_after_next_unlock = false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return r;
}
#define FRAMEPIPE_TEST_PAUSE_AFTER_UNLOCK 1
#endif

// broadcaster::close() sets `closed` under the core's mutex, then closes the subscriptions'
// buffers after unlocking. A publish that takes the mutex in between reports
// broadcaster_closed == true ("nobody will get values") and yet pushes into the buffers that are
// still open: subscribers receive a value published after close() had marked the broadcaster
// closed, and publish_result says both. Here close() is paused for 50 ms right after its unlock
// (see above), so the publish lands in that window every time.
// Proposed fix: close the subscriptions' buffers inside the locked section of close() (a
// lock-free ring's close() is noexcept and never waits), so a publish that sees `closed` under
// the mutex finds every buffer closed.
TEST_CASE("broadcaster: a publish that reports broadcaster_closed delivers to nobody", "[broadcaster][finding]") {
#if FRAMEPIPE_TEST_PAUSE_AFTER_UNLOCK
    framepipe::broadcaster<int> b;
    auto sub = b.subscribe({.capacity = 4});
    std::thread closer([&] {
        pause_after_next_unlock = true;
        b.close();
    });
    // Values are numbered, so the one published after close() can be told from those published
    // before it, which the subscription legitimately still holds (up to its capacity).
    framepipe::publish_result r;
    int last = 0;
    std::size_t refused = 0; // publishes that found the subscription's buffer closed
    do {
        r = b.publish(std::make_shared<const int>(++last));
        refused += r.closed;
    } while (!r.broadcaster_closed);
    closer.join();
    INFO("a publish saw the broadcaster closed: delivered " << r.delivered << ", closed " << r.closed
                                                            << " of " << r.subscribers);
    CHECK(r.delivered == 0);
    CHECK(r.closed == r.subscribers);
    // The subscription counts that publish as refused after close (with any publish that took
    // the mutex before close() and pushed after it: those report closed, not broadcaster_closed),
    // and holds nothing from it.
    CHECK(sub.stats().after_close == refused);
    int newest_held = 0;
    while (auto v = sub.try_pop()) {
        newest_held = **v;
    }
    CHECK(newest_held < last);
#else
    SUCCEED("needs glibc to interpose pthread_mutex_unlock");
#endif
}
