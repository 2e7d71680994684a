// tests/fuzz/fuzz_ring.hpp - the ring fuzz driver, shared by fuzz_ring_mpmc (lock-free MPMC),
// fuzz_ring_spsc (lock-free SPSC) and fuzz_ring_locked (the mutex ring).
//
// Input: capacity, policy, block_timeout, max_age, drop_older_epochs, then operations: every push
// variant, every pop variant, peek, close; after each one, size(), closed() and stats() are
// compared with the model.
//
// Waits are made deterministic by keeping deadlines far apart. On a full block ring (one thread:
// nobody makes room):
//   block_timeout   push()     push_for(short)   push_for(long)    push(stop) / push_for(stop)
//   none            try_push   0: rejected       1 us: rejected    cancelled (stop requested)
//   0               evicted    1 s: evicted      1 s: evicted      cancelled
//   100 us          evicted    0: rejected       1 s: evicted      cancelled
// (push() without a block_timeout would wait for ever: the brief's "pushes that would wait are
// modelled as try_push", so the driver makes a try_push instead.) A push_for's deadline is taken
// before the ring's block_timeout deadline: 0 against 0 would be a race, so it is never asked.
#pragma once

#include <framepipe/ring.hpp>

#include "fuzz_common.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stop_token>

namespace framepipe_fuzz {

using framepipe_model::ring_model;
using framepipe_model::wait_end_model;

enum class block_timeout_choice { none, zero, short_wait };

template <class Ring>
int run_ring(const std::uint8_t* data, std::size_t size) {
    using T = typename Ring::value_type;
    using framepipe::overflow;
    using framepipe::push_status;

    byte_reader in(data, size);
    current_op() = {};
    const std::uint8_t b0 = in.byte();
    const std::uint8_t b1 = in.byte();
    const std::uint8_t b2 = in.byte();

    framepipe::ring_options opt;
    opt.capacity = b0 < 240 ? 1 + b0 % 9u : std::size_t{1} << (b0 % 7u); // 1-9, or 1-64
    opt.policy = static_cast<overflow>(b1 % 3);
    auto bt = block_timeout_choice::none;
    if (opt.policy == overflow::block) {
        bt = static_cast<block_timeout_choice>((b1 / 3) % 3);
        if (bt == block_timeout_choice::zero) {
            opt.block_timeout = 0ns;
        } else if (bt == block_timeout_choice::short_wait) {
            opt.block_timeout = 100us;
        }
    }
    switch ((b1 / 9) % 3) {
    case 1: opt.max_age = 0ns; break;
    case 2: opt.max_age = 1h; break;
    default: break;
    }
    opt.drop_older_epochs = (b2 & 1) != 0;

    ring_model model({.capacity = opt.capacity,
                      .policy = opt.policy,
                      .max_age = opt.max_age.has_value(),
                      .drop_older_epochs = opt.drop_older_epochs});
    std::int64_t counter = 0;
    {
        Ring q(opt);
        FUZZ_CHECK_EQ(q.capacity(), opt.capacity);
        FUZZ_CHECK(q.policy() == opt.policy);
        std::stop_source stopped;
        stopped.request_stop();

        // How a wait for room on a full block ring ends, for each push variant (the table above).
        const auto after_push = bt == block_timeout_choice::none ? wait_end_model::reject
                                                                  : wait_end_model::evict;
        const auto short_end = bt == block_timeout_choice::zero ? wait_end_model::evict
                                                                 : wait_end_model::reject;
        const auto long_end = bt == block_timeout_choice::none ? wait_end_model::reject
                                                                : wait_end_model::evict;
        const auto short_timeout = bt == block_timeout_choice::zero ? std::chrono::nanoseconds(1s)
                                                                     : std::chrono::nanoseconds(0);
        const auto long_timeout = bt == block_timeout_choice::none ? std::chrono::nanoseconds(1us)
                                                                    : std::chrono::nanoseconds(1s);

        while (!in.empty()) {
            const std::uint8_t op = in.byte();
            switch (op % 12) {
            case 0: { // push(item): a try_push when it would wait for ever
                const item it = next_item(in, counter);
                if (bt == block_timeout_choice::none && model.push_would_wait(it.epoch)) {
                    current_op().begin("push " + str(it) + " (would wait: try_push)");
                    FUZZ_CHECK_STATUS(q.try_push(make_item<T>(it)),
                                      *model.push(it, wait_end_model::reject));
                } else {
                    current_op().begin("push " + str(it));
                    FUZZ_CHECK_STATUS(q.push(make_item<T>(it)), *model.push(it, after_push));
                }
                break;
            }
            case 1: { // push(item, stop) with the stop requested
                const item it = next_item(in, counter);
                current_op().begin("push(stop requested) " + str(it));
                FUZZ_CHECK_STATUS(q.push(make_item<T>(it), stopped.get_token()),
                                  *model.push(it, wait_end_model::cancel));
                break;
            }
            case 2: {
                const item it = next_item(in, counter);
                current_op().begin("try_push " + str(it));
                FUZZ_CHECK_STATUS(q.try_push(make_item<T>(it)), *model.push(it, wait_end_model::reject));
                break;
            }
            case 3: {
                const item it = next_item(in, counter);
                current_op().begin("push_for(short) " + str(it));
                FUZZ_CHECK_STATUS(q.push_for(make_item<T>(it), short_timeout), *model.push(it, short_end));
                break;
            }
            case 4: {
                const item it = next_item(in, counter);
                current_op().begin("push_for(long) " + str(it));
                FUZZ_CHECK_STATUS(q.push_for(make_item<T>(it), long_timeout), *model.push(it, long_end));
                break;
            }
            case 5: {
                const item it = next_item(in, counter);
                current_op().begin("push_for(1 s, stop requested) " + str(it));
                FUZZ_CHECK_STATUS(q.push_for(make_item<T>(it), 1s, stopped.get_token()),
                                  *model.push(it, wait_end_model::cancel));
                break;
            }
            case 6: {
                current_op().begin("try_pop");
                FUZZ_CHECK_POPPED(q.try_pop(), model.pop());
                break;
            }
            case 7: {
                current_op().begin("pop_for(0)");
                FUZZ_CHECK_POPPED(q.pop_for(0ns), model.pop());
                break;
            }
            case 8: { // pop(): only when it would not wait for ever
                if (model.pop_would_wait()) {
                    current_op().begin("pop (would wait: pop_for(1 us))");
                    FUZZ_CHECK_POPPED(q.pop_for(1us), model.pop());
                } else {
                    current_op().begin("pop");
                    FUZZ_CHECK_POPPED(q.pop(), model.pop());
                }
                break;
            }
            case 9: { // a stopped consumer leaves at once, even when items remain
                current_op().begin("pop(stop requested) / pop_for(1 s, stop requested)");
                FUZZ_CHECK(!q.pop(stopped.get_token()).has_value());
                FUZZ_CHECK(!q.pop_for(1s, stopped.get_token()).has_value());
                break;
            }
            case 10: {
                current_op().begin("peek");
                FUZZ_CHECK_POPPED(q.peek(), model.peek());
                break;
            }
            case 11: {
                // Rarer than the others: half of these bytes close, the rest read the counters.
                if ((op / 12) % 2 == 0) {
                    current_op().begin("close");
                    q.close();
                    model.close();
                } else {
                    current_op().begin("stats");
                }
                break;
            }
            default: break;
            }
            FUZZ_CHECK_EQ(q.size(), model.size());
            FUZZ_CHECK_EQ(q.closed(), model.closed());
            FUZZ_CHECK_STATS(q.stats(), model.stats());
        }
        // Drain: what is left comes out in the model's order.
        current_op().begin("drain");
        for (;;) {
            auto real = q.try_pop();
            auto expected = model.pop();
            FUZZ_CHECK_POPPED(real, expected);
            if (!real) {
                break;
            }
        }
        FUZZ_CHECK_STATS(q.stats(), model.stats());
        // Leave items in a second round for the destructor: refill (when open) and destroy.
        for (std::size_t i = 0; i < opt.capacity && !q.closed(); ++i) {
            (void)q.try_push(make_item<T>(item{.value = ++counter}));
        }
    }
    FUZZ_CHECK_EQ(tracked::alive, std::int64_t{0});
    return 0;
}

} // namespace framepipe_fuzz
