// tests/fuzz/fuzz_pool.cpp - pool<T> against its sequential model: which object each acquire
// lends (the model is a stack: the last object returned is lent next, still holding what its
// last borrower wrote), when a slot comes back (the last shared_ptr AND the last weak_ptr gone),
// pool_stats and available(), and lent objects outliving the pool.
//
// Input: capacity (1-8), then operations on up to 8 shared_ptr handles and 4 weak_ptr handles:
// try_acquire, acquire (when an object is free), acquire(stop requested), acquire_for(0), copy,
// reset, make a weak_ptr, lock it, reset it, write the object, destroy the pool.
#include <framepipe/pool.hpp>

#include "fuzz_common.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

namespace {

using namespace framepipe_fuzz;
using framepipe_model::pool_model;

void check_pool_stats(const framepipe::pool_stats& r, const framepipe::pool_stats& m) {
    FUZZ_CHECK_EQ(r.acquired, m.acquired);
    FUZZ_CHECK_EQ(r.released, m.released);
    FUZZ_CHECK_EQ(r.exhausted, m.exhausted);
    FUZZ_CHECK_EQ(r.waited, m.waited);
    FUZZ_CHECK_EQ(r.in_use, m.in_use);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    byte_reader in(data, size);
    current_op() = {};
    const std::size_t capacity = 1 + in.byte() % 8u;
    pool_model model(capacity);
    std::int64_t next = 0;
    auto pool = std::make_optional<framepipe::pool<std::int64_t>>(capacity, [&next] { return next++; });

    // Each handle with the model slot it refers to.
    struct shared_handle {
        std::shared_ptr<std::int64_t> p;
        std::optional<std::size_t> slot;
    };
    struct weak_handle {
        std::weak_ptr<std::int64_t> p;
        std::optional<std::size_t> slot;
    };
    std::array<shared_handle, 8> handles;
    std::array<weak_handle, 4> weaks;
    std::vector<std::size_t> shared_refs(capacity, 0); // per slot: live shared_ptr handles
    std::stop_source stopped;
    stopped.request_stop();

    const auto drop = [&](shared_handle& h) {
        if (h.slot) {
            --shared_refs[*h.slot];
            model.drop_ref(*h.slot);
        }
        h.p.reset();
        h.slot.reset();
    };
    // Stores an acquired pointer (or nullptr) into h, as `h.p = acquire()` does: the new object
    // first, then the old one is let go.
    const auto store = [&](shared_handle& h, std::shared_ptr<std::int64_t> p,
                           std::optional<std::size_t> slot) {
        FUZZ_CHECK_EQ(p != nullptr, slot.has_value());
        if (p) {
            FUZZ_CHECK_EQ(*p, model.value(*slot)); // the object the model says, as last written
            ++shared_refs[*slot];
            model.add_ref(*slot);
        }
        shared_handle old = std::move(h);
        h = shared_handle{std::move(p), slot};
        drop(old);
    };

    while (!in.empty()) {
        const std::uint8_t op = in.byte();
        const std::uint8_t arg = in.byte();
        shared_handle& h = handles[arg % 8u];
        shared_handle& g = handles[(arg / 8u) % 8u];
        weak_handle& w = weaks[(arg / 64u) % 4u];
        switch (op % 12) {
        case 0:
            if (pool) {
                current_op().begin("try_acquire");
                auto p = pool->try_acquire();
                store(h, std::move(p), model.acquire());
            }
            break;
        case 1:
            if (pool) {
                if (model.available() > 0) {
                    current_op().begin("acquire");
                    auto p = pool->acquire();
                    store(h, std::move(p), model.acquire());
                } else {
                    current_op().begin("acquire (would wait: acquire_for(1 us))");
                    auto p = pool->acquire_for(1us);
                    store(h, std::move(p), model.acquire());
                }
            }
            break;
        case 2:
            if (pool) {
                current_op().begin("acquire(stop requested)");
                FUZZ_CHECK(pool->acquire(stopped.get_token()) == nullptr);
                model.acquire_stopped();
            }
            break;
        case 3:
            if (pool) {
                current_op().begin("acquire_for(0)");
                auto p = pool->acquire_for(0ns);
                store(h, std::move(p), model.acquire());
            }
            break;
        case 4:
            current_op().begin("reset");
            drop(h);
            break;
        case 5:
            current_op().begin("copy");
            if (&h != &g) {
                if (h.slot) {
                    ++shared_refs[*h.slot];
                    model.add_ref(*h.slot);
                }
                shared_handle old = std::move(g);
                g = h;
                drop(old);
            }
            break;
        case 6:
            current_op().begin("weak_ptr from a handle");
            if (h.slot) {
                model.add_ref(*h.slot); // the control block (and so the slot) stays while it lives
            }
            {
                weak_handle old = std::move(w);
                w = weak_handle{h.p, h.slot};
                if (old.slot) {
                    old.p.reset();
                    model.drop_ref(*old.slot);
                }
            }
            break;
        case 7:
            current_op().begin("reset a weak_ptr");
            w.p.reset();
            if (w.slot) {
                model.drop_ref(*w.slot);
            }
            w.slot.reset();
            break;
        case 8: {
            current_op().begin("lock a weak_ptr");
            auto p = w.p.lock();
            const bool expected = w.slot && shared_refs[*w.slot] > 0;
            FUZZ_CHECK_EQ(p != nullptr, expected);
            store(h, std::move(p), expected ? w.slot : std::nullopt);
            break;
        }
        case 9:
            if (h.p) {
                current_op().begin("write");
                *h.p = 1000 + ++next;
                model.value(*h.slot) = *h.p;
            }
            break;
        case 10:
            if (pool && (op / 12) % 4 == 0) {
                current_op().begin("destroy the pool");
                pool.reset(); // lent objects stay valid; the core goes with the last of them
            }
            break;
        default: break;
        }
        if (pool) {
            FUZZ_CHECK_EQ(pool->capacity(), capacity);
            FUZZ_CHECK_EQ(pool->available(), model.available());
            check_pool_stats(pool->stats(), model.stats());
        }
        for (const auto& x : handles) {
            if (x.p) {
                FUZZ_CHECK_EQ(*x.p, model.value(*x.slot)); // nobody else wrote it
            }
        }
    }
    // Let everything go; every slot comes back (checked while the pool lives) and ASan's leak
    // check sees the core freed.
    for (auto& x : handles) {
        drop(x);
    }
    for (auto& x : weaks) {
        x.p.reset();
        if (x.slot) {
            model.drop_ref(*x.slot);
        }
        x.slot.reset();
    }
    if (pool) {
        FUZZ_CHECK_EQ(pool->available(), capacity);
        check_pool_stats(pool->stats(), model.stats());
    }
    return 0;
}
