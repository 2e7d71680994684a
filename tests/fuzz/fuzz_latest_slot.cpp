// tests/fuzz/fuzz_latest_slot.cpp - latest_slot<T> against its sequential model.
//
// Input: max_age (none, 0, 1 h), drop_older_epochs, then operations: push, push(stop), try_push,
// try_pop, pop_for(0), pop() (when it would not wait for ever), pop(stop requested), peek, close.
// After each one, size(), closed() and stats() are compared with the model. The item type is
// chosen by the first byte too: a stamped value (move cannot throw) or one whose move may throw
// (the slot then takes its try/catch paths; the moves never actually throw here).
#include <framepipe/latest_slot.hpp>

#include "fuzz_common.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stop_token>

namespace {

using namespace framepipe_fuzz;
using framepipe_model::latest_slot_model;

template <class T>
int run(byte_reader& in, std::uint8_t b0) {
    framepipe::latest_slot_options opt;
    switch ((b0 / 2) % 3) {
    case 1: opt.max_age = 0ns; break;
    case 2: opt.max_age = 1h; break;
    default: break;
    }
    opt.drop_older_epochs = (b0 / 6) % 2 != 0;
    latest_slot_model model({.max_age = opt.max_age.has_value(),
                             .drop_older_epochs = opt.drop_older_epochs});
    std::int64_t counter = 0;
    {
        framepipe::latest_slot<T> slot(opt);
        FUZZ_CHECK_EQ(slot.capacity(), std::size_t{1});
        FUZZ_CHECK(slot.policy() == framepipe::overflow::drop_oldest);
        std::stop_source stopped;
        stopped.request_stop();
        while (!in.empty()) {
            const std::uint8_t op = in.byte();
            switch (op % 9) {
            case 0: {
                const item it = next_item(in, counter);
                current_op().begin("push " + str(it));
                FUZZ_CHECK_STATUS(slot.push(make_item<T>(it)), model.push(it));
                break;
            }
            case 1: {
                const item it = next_item(in, counter);
                current_op().begin("push(stop requested) " + str(it));
                FUZZ_CHECK_STATUS(slot.push(make_item<T>(it), stopped.get_token()), model.push(it));
                break;
            }
            case 2: {
                const item it = next_item(in, counter);
                current_op().begin("try_push " + str(it));
                FUZZ_CHECK_STATUS(slot.try_push(make_item<T>(it)), model.push(it));
                break;
            }
            case 3:
                current_op().begin("try_pop");
                FUZZ_CHECK_POPPED(slot.try_pop(), model.pop());
                break;
            case 4:
                current_op().begin("pop_for(0)");
                FUZZ_CHECK_POPPED(slot.pop_for(0ns), model.pop());
                break;
            case 5:
                if (model.pop_would_wait()) {
                    current_op().begin("pop (would wait: pop_for(1 us))");
                    FUZZ_CHECK_POPPED(slot.pop_for(1us), model.pop());
                } else {
                    current_op().begin("pop");
                    FUZZ_CHECK_POPPED(slot.pop(), model.pop());
                }
                break;
            case 6:
                current_op().begin("pop(stop requested) / pop_for(1 s, stop requested)");
                FUZZ_CHECK(!slot.pop(stopped.get_token()).has_value());
                FUZZ_CHECK(!slot.pop_for(1s, stopped.get_token()).has_value());
                break;
            case 7:
                current_op().begin("peek");
                FUZZ_CHECK_POPPED(slot.peek(), model.peek());
                break;
            case 8:
                if ((op / 9) % 2 == 0) {
                    current_op().begin("close");
                    slot.close();
                    model.close();
                } else {
                    current_op().begin("stats");
                }
                break;
            default: break;
            }
            FUZZ_CHECK_EQ(slot.size(), model.size());
            FUZZ_CHECK_EQ(slot.closed(), model.closed());
            FUZZ_CHECK_STATS(slot.stats(), model.stats());
        }
        // Leave a value for the destructor now and then.
        if (!slot.closed() && counter % 2 == 0) {
            (void)slot.push(make_item<T>(item{.value = ++counter, .epoch = 3}));
        }
    }
    FUZZ_CHECK_EQ(tracked::alive, std::int64_t{0});
    return 0;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    byte_reader in(data, size);
    current_op() = {};
    const std::uint8_t b0 = in.byte();
    return b0 % 2 == 0 ? run<stamped_item>(in, b0) : run<throwing_item>(in, b0);
}
