// tests/fuzz/fuzz_subscription.cpp - a broadcaster and up to four subscriptions against their
// sequential model: every publish_result, every pop, each subscription's stats(), size() and
// closed(), the broadcaster's stats() (names and order: drop policies first, blocking last),
// subscriber_count() and published().
//
// Subscription options come from the input: capacity 1-4, policy, block_timeout (none, 0,
// 100 us), max_age (none, 0, 1 h), replay_last, drop_older_epochs, a name or none, and a rate of
// 0 (unlimited) or 0.001 Hz (the first value passes; no other within a run). A publish that would
// wait for ever (a full blocking subscriber without block_timeout) is made with a stop token
// already requested instead: that subscriber counts it as cancelled.
#include <framepipe/broadcaster.hpp>

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
using framepipe_model::broadcaster_model;
using value_ptr = std::shared_ptr<const stamped_item>;

void check_popped_ptr(const std::optional<value_ptr>& real, const std::optional<item>& model, int line) {
    bool same = real.has_value() == model.has_value();
    if (same && real) {
        same = (*real == nullptr) == model->null && (model->null || same_item(**real, *model));
    }
    if (!same) {
        mismatch(__FILE__, line,
                 std::string("popped ") +
                     (real ? (*real ? "item " + std::to_string((*real)->value.value) : "null")
                           : "nullopt") +
                     ", model " + describe(model));
    }
}

void check_result(const framepipe::publish_result& r, const framepipe::publish_result& m) {
    FUZZ_CHECK_EQ(r.subscribers, m.subscribers);
    FUZZ_CHECK_EQ(r.delivered, m.delivered);
    FUZZ_CHECK_EQ(r.evicted, m.evicted);
    FUZZ_CHECK_EQ(r.rejected, m.rejected);
    FUZZ_CHECK_EQ(r.cancelled, m.cancelled);
    FUZZ_CHECK_EQ(r.rate_limited, m.rate_limited);
    FUZZ_CHECK_EQ(r.closed, m.closed);
    FUZZ_CHECK_EQ(r.broadcaster_closed, m.broadcaster_closed);
    FUZZ_CHECK_EQ(r.dropped(), m.evicted + m.rejected + m.cancelled + m.rate_limited + m.closed);
}

value_ptr make_ptr(const item& it) {
    return it.null ? nullptr : std::make_shared<const stamped_item>(make_stamped(it));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using framepipe::overflow;
    byte_reader in(data, size);
    current_op() = {};
    broadcaster_model model;
    std::int64_t counter = 0;
    std::size_t next_handle = 0;
    {
        framepipe::broadcaster<stamped_item> b;
        std::array<std::optional<framepipe::subscription<stamped_item>>, 4> subs;
        std::array<std::size_t, 4> ids{};
        std::stop_source stopped;
        stopped.request_stop();

        const auto publish = [&](const item& it, bool by_value, bool stop) {
            auto expected = model.publish(it, stop);
            if (expected.would_wait) {
                stop = true;
                expected = model.publish(it, true);
            }
            current_op().begin(std::string("publish") + (by_value ? "(value) " : "(ptr) ") +
                               (it.null ? "null" : str(it)) + (stop ? " (stop requested)" : ""));
            framepipe::publish_result r;
            if (stop) {
                r = b.publish(make_ptr(it), stopped.get_token());
            } else if (by_value) {
                r = b.publish(make_stamped(it));
            } else {
                r = b.publish(make_ptr(it));
            }
            check_result(r, expected.result);
        };

        while (!in.empty()) {
            const std::uint8_t op = in.byte();
            const std::size_t k = (op / 16u) % 4u; // the subscription an operation is about
            switch (op % 16) {
            case 0:
            case 1: { // subscribe into handle k (destroying the one there: an unsubscribe)
                const std::uint8_t o1 = in.byte();
                const std::uint8_t o2 = in.byte();
                framepipe::subscription_options so;
                so.capacity = 1 + o1 % 4u;
                so.policy = static_cast<overflow>((o1 / 4) % 3);
                if (so.policy == overflow::block) {
                    switch ((o1 / 12) % 3) {
                    case 1: so.block_timeout = 0ns; break;
                    case 2: so.block_timeout = 100us; break;
                    default: break;
                    }
                }
                switch (o2 % 3) {
                case 1: so.max_age = 0ns; break;
                case 2: so.max_age = 1h; break;
                default: break;
                }
                so.replay_last = (o2 & 0x04) != 0;
                so.drop_older_epochs = (o2 & 0x08) != 0;
                so.max_rate_hz = (o2 & 0x10) != 0 ? 0.001 : 0.0;
                if ((o2 & 0x20) != 0) {
                    so.name = "s" + std::to_string(next_handle);
                }
                current_op().begin("subscribe into " + std::to_string(k));
                if (subs[k]) {
                    subs[k].reset();
                    model.unsubscribe(ids[k]);
                }
                ids[k] = next_handle++;
                (void)model.subscribe(
                    ids[k], {.ring = {.capacity = so.capacity,
                                      .policy = so.policy,
                                      .max_age = so.max_age.has_value(),
                                      .drop_older_epochs = so.drop_older_epochs},
                             .blocking_evicts = so.block_timeout.has_value(),
                             .rate_limited = so.max_rate_hz > 0,
                             .replay_last = so.replay_last,
                             .name = so.name});
                subs[k].emplace(b.subscribe(so));
                FUZZ_CHECK(subs[k]->valid());
                FUZZ_CHECK(subs[k]->subscribed_to(b));
                FUZZ_CHECK_EQ(subs[k]->name(), model.find(ids[k])->name);
                break;
            }
            case 2:
            case 3:
            case 4:
                publish(next_item(in, counter), op % 16 != 4, false);
                break;
            case 5: {
                const item it{.value = 0, .null = true};
                publish(it, false, (op / 16) % 2 != 0);
                break;
            }
            case 6:
                publish(next_item(in, counter), false, true);
                break;
            case 7:
            case 8:
            case 9:
                if (subs[k]) {
                    auto* m = model.find(ids[k]);
                    if (op % 16 == 7) {
                        current_op().begin("try_pop " + std::to_string(k));
                        check_popped_ptr(subs[k]->try_pop(), m->ring.pop(), __LINE__);
                    } else if (op % 16 == 8) {
                        current_op().begin("pop_for(0) " + std::to_string(k));
                        check_popped_ptr(subs[k]->pop_for(0ns), m->ring.pop(), __LINE__);
                    } else if (!m->ring.pop_would_wait()) {
                        current_op().begin("pop " + std::to_string(k));
                        check_popped_ptr(subs[k]->pop(), m->ring.pop(), __LINE__);
                    } else {
                        current_op().begin("pop(stop requested) " + std::to_string(k));
                        FUZZ_CHECK(!subs[k]->pop(stopped.get_token()).has_value());
                        FUZZ_CHECK(!subs[k]->pop_for(1s, stopped.get_token()).has_value());
                    }
                }
                break;
            case 10:
                if (subs[k]) {
                    current_op().begin("close subscription " + std::to_string(k));
                    subs[k]->close();
                    model.find(ids[k])->ring.close();
                }
                break;
            case 11:
                if (subs[k]) {
                    current_op().begin("unsubscribe " + std::to_string(k));
                    if ((op / 64) % 2 == 0) {
                        subs[k].reset();
                    } else { // by move-assigning an empty (moved-from) handle over it
                        auto moved = std::move(*subs[k]);
                        FUZZ_CHECK(!subs[k]->valid());
                        *subs[k] = std::move(moved);
                        FUZZ_CHECK(subs[k]->valid());
                        framepipe::subscription<stamped_item> gone = std::move(*subs[k]);
                        subs[k].reset();
                    }
                    model.unsubscribe(ids[k]);
                }
                break;
            case 12:
                if ((op / 16) % 4 == 0) {
                    current_op().begin("close broadcaster");
                    b.close();
                    model.close();
                }
                break;
            default: current_op().begin("stats"); break;
            }
            // Every subscription, and the broadcaster's view of them.
            for (std::size_t i = 0; i < subs.size(); ++i) {
                if (!subs[i]) {
                    continue;
                }
                const auto* m = model.find(ids[i]);
                FUZZ_CHECK(m != nullptr);
                FUZZ_CHECK_EQ(subs[i]->size(), m->ring.size());
                FUZZ_CHECK_EQ(subs[i]->closed(), m->ring.closed());
                FUZZ_CHECK_EQ(subs[i]->capacity(), m->ring.cfg().capacity);
                FUZZ_CHECK(subs[i]->policy() == m->ring.cfg().policy);
                FUZZ_CHECK_STATS(subs[i]->stats(), m->stats());
            }
            const auto all = b.stats();
            FUZZ_CHECK_EQ(all.size(), model.subs().size());
            FUZZ_CHECK_EQ(b.subscriber_count(), model.subs().size());
            for (std::size_t i = 0; i < all.size(); ++i) {
                FUZZ_CHECK_EQ(all[i].name, model.subs()[i].name);
                FUZZ_CHECK_STATS(all[i].stats, model.subs()[i].stats());
            }
            FUZZ_CHECK_EQ(b.published(), model.published());
            FUZZ_CHECK_EQ(b.closed(), model.closed());
        }
    }
    FUZZ_CHECK_EQ(tracked::alive, std::int64_t{0});
    return 0;
}
