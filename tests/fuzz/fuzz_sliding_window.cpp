// tests/fuzz/fuzz_sliding_window.cpp - sliding_window<T> against its sequential model: every
// push status, every window handed out (first_seq, size, each item), stats() in windows and
// item_stats() in items.
//
// Input: size (1-8), stride (1-size), the item type (an epoched stamped value, or a plain value
// without an epoch, whose windows never restart), then operations: push, push(stop), try_push,
// try_pop, pop_for(0), pop() (when it would not wait for ever), pop(stop requested), close.
#include <framepipe/sliding_window.hpp>

#include "fuzz_common.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>

namespace {

using namespace framepipe_fuzz;
using framepipe_model::sliding_window_model;

// A value without an epoch or a capture time: a sliding_window of it never restarts.
struct plain {
    tracked value;
};

stamped_item make(const item& it, stamped_item*) { return make_stamped(it); }
plain make(const item& it, plain*) { return plain{tracked(it.value)}; }
bool same(const stamped_item& r, const item& m) { return same_item(r, m); }
bool same(const plain& r, const item& m) { return r.value.value == m.value; }

template <class T>
void check_window(const std::optional<framepipe::window<T>>& real,
                  const std::optional<sliding_window_model::window>& model, int line) {
    if (real.has_value() != model.has_value()) {
        mismatch(__FILE__, line, std::string("window: real ") + (real ? "a window" : "nullopt") +
                                     ", model " + (model ? "a window" : "nullopt"));
    }
    if (!real) {
        return;
    }
    if (real->first_seq() != model->first_seq || real->size() != model->items.size()) {
        mismatch(__FILE__, line,
                 "window: real first_seq " + std::to_string(real->first_seq()) + " size " +
                     std::to_string(real->size()) + ", model first_seq " +
                     std::to_string(model->first_seq) + " size " +
                     std::to_string(model->items.size()));
    }
    for (std::size_t i = 0; i < real->size(); ++i) {
        if (!same((*real)[i], model->items[i])) {
            mismatch(__FILE__, line, "window item " + std::to_string(i) + " differs");
        }
    }
    FUZZ_CHECK_EQ(real->last_seq(), model->first_seq + model->items.size() - 1);
}

void check_item_stats(const framepipe::window_item_stats& r, const framepipe::window_item_stats& m) {
    FUZZ_CHECK_EQ(r.pushed, m.pushed);
    FUZZ_CHECK_EQ(r.after_close, m.after_close);
    FUZZ_CHECK_EQ(r.stale_epoch, m.stale_epoch);
    FUZZ_CHECK_EQ(r.restarts, m.restarts);
}

template <class T>
int run(byte_reader& in, std::size_t size, std::size_t stride) {
    sliding_window_model model({.size = size, .stride = stride, .epoched = framepipe::epoched<T>});
    std::int64_t counter = 0;
    {
        framepipe::sliding_window<T> w(size, stride);
        FUZZ_CHECK_EQ(w.window_size(), size);
        FUZZ_CHECK_EQ(w.stride(), stride);
        FUZZ_CHECK_EQ(w.capacity(), std::size_t{1});
        std::stop_source stopped;
        stopped.request_stop();
        while (!in.empty()) {
            const std::uint8_t op = in.byte();
            switch (op % 8) {
            case 0:
            case 1: { // pushes are the common case: windows need size of them
                const item it = next_item(in, counter);
                current_op().begin("push " + str(it));
                FUZZ_CHECK_STATUS(w.push(make(it, static_cast<T*>(nullptr))), model.push(it));
                break;
            }
            case 2: {
                const item it = next_item(in, counter);
                if (op / 8 % 2 == 0) {
                    current_op().begin("push(stop requested) " + str(it));
                    FUZZ_CHECK_STATUS(w.push(make(it, static_cast<T*>(nullptr)), stopped.get_token()),
                                      model.push(it));
                } else {
                    current_op().begin("try_push " + str(it));
                    FUZZ_CHECK_STATUS(w.try_push(make(it, static_cast<T*>(nullptr))), model.push(it));
                }
                break;
            }
            case 3:
                current_op().begin("try_pop");
                check_window(w.try_pop(), model.pop(), __LINE__);
                break;
            case 4:
                current_op().begin("pop_for(0)");
                check_window(w.pop_for(0ns), model.pop(), __LINE__);
                break;
            case 5:
                if (model.pop_would_wait()) {
                    current_op().begin("pop (would wait: pop_for(1 us))");
                    check_window(w.pop_for(1us), model.pop(), __LINE__);
                } else {
                    current_op().begin("pop");
                    check_window(w.pop(), model.pop(), __LINE__);
                }
                break;
            case 6:
                current_op().begin("pop(stop requested) / pop_for(1 s, stop requested)");
                FUZZ_CHECK(!w.pop(stopped.get_token()).has_value());
                FUZZ_CHECK(!w.pop_for(1s, stopped.get_token()).has_value());
                break;
            case 7:
                if ((op / 8) % 3 == 0) {
                    current_op().begin("close");
                    w.close();
                    model.close();
                } else {
                    current_op().begin("stats");
                }
                break;
            default: break;
            }
            FUZZ_CHECK_EQ(w.size(), model.size());
            FUZZ_CHECK_EQ(w.closed(), model.closed());
            FUZZ_CHECK_STATS(w.stats(), model.stats());
            check_item_stats(w.item_stats(), model.item_stats());
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
    const std::size_t window = 1 + b0 % 8u;
    const std::size_t stride = 1 + (b0 / 8u) % window;
    return (b0 & 0x80) == 0 ? run<stamped_item>(in, window, stride) : run<plain>(in, window, stride);
}
