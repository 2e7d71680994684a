#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): a few short inputs
per target that reach every policy and the interesting edges at once (a full ring, a close, a
stale item, an older epoch). Run it after changing how a target decodes its input:

    python3 tests/fuzz/make_seeds.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# fuzz_ring.hpp: capacity, policy byte, epochs byte, then ops (0 push, 1 push(stop), 2 try_push,
# 3 push_for short, 4 push_for long, 5 push_for(stop), 6 try_pop, 7 pop_for(0), 8 pop,
# 9 pop(stop), 10 peek, 11 close, 23 stats); pushes take an item byte (bit 0 stale, bits 1-2 epoch).
FRESH, STALE = 0, 1
def epoch(e, stale=False):
    return (e << 1) | (1 if stale else 0)
PUSH3 = [0, FRESH, 0, FRESH, 0, FRESH]
RING = {
    "drop_oldest": [1, 0, 0] + PUSH3 + [10, 8, 6, 7, 11, 0, FRESH, 8, 9],
    "drop_newest": [1, 1, 0] + PUSH3 + [2, FRESH, 6, 6, 6, 23],
    "block": [1, 2, 0] + PUSH3 + [1, FRESH, 3, FRESH, 4, FRESH, 5, FRESH, 8, 8, 8, 11, 8],
    "block_timeout_0": [1, 5, 0] + PUSH3 + [3, FRESH, 4, FRESH, 1, FRESH, 6, 6],
    "block_timeout_100us": [1, 8, 0] + PUSH3 + [3, FRESH, 4, FRESH, 6, 6],
    "max_age": [2, 9, 0, 0, STALE, 0, FRESH, 0, STALE, 10, 6, 6, 8, 11, 8],
    "epochs": [3, 18, 1, 0, epoch(2), 0, epoch(1), 0, epoch(2), 0, epoch(3), 11, 0, epoch(3), 6, 6],
    "wide": [245, 0, 0] + PUSH3 * 30 + [6] * 70,
}
# fuzz_latest_slot.cpp: b0 (bit 0 throwing move, max_age (b0/2)%3, epochs (b0/6)%2), then ops
# 0 push, 1 push(stop), 2 try_push, 3 try_pop, 4 pop_for(0), 5 pop, 6 pop(stop), 7 peek, 8 close.
LATEST = {
    "plain": [0, 0, FRESH, 0, FRESH, 7, 3, 3, 5, 8, 0, FRESH, 5],
    "throwing": [1, 2, FRESH, 1, FRESH, 4, 6, 7],
    "max_age": [2, 0, STALE, 7, 3, 0, FRESH, 4, 8, 5],
    "epochs": [6, 0, epoch(2), 0, epoch(1), 0, epoch(3), 3, 8, 0, epoch(3)],
}
# fuzz_sliding_window.cpp: b0 (size 1 + b0 % 8, stride 1 + (b0 / 8) % size, bit 7 plain), then
# ops 0/1 push, 2 push(stop), 10 try_push, 3 try_pop, 4 pop_for(0), 5 pop, 6 pop(stop), 7 close.
def pushes(n, e=0):
    return [0, epoch(e)] * n
WINDOW = {
    "overlapping_3_1": [2] + pushes(4) + [3, 3] + pushes(2) + [5, 7, 5],
    "tumbling_3_3": [2 + 8 * 2] + pushes(7) + [4, 10, FRESH, 3],
    "restart": [3 + 8 * 1] + pushes(5, 1) + pushes(2, 2) + pushes(1, 1) + [3] + pushes(4, 2) + [3],
    "plain": [0x80 | 2] + pushes(5) + [3, 6, 7, 3],
}
# fuzz_subscription.cpp: ops (op % 16): 0/1 subscribe into k = (op / 16) % 4 with two option bytes
# (o1: capacity 1 + o1 % 4, policy (o1 / 4) % 3, block_timeout (o1 / 12) % 3; o2: max_age o2 % 3,
# 0x04 replay_last, 0x08 drop_older_epochs, 0x10 rate, 0x20 name), 2-4 publish + item byte,
# 5 publish null, 6 publish(stop) + item byte, 7 try_pop k, 8 pop_for(0) k, 9 pop k,
# 10 close k, 11 unsubscribe k, 12 close the broadcaster, 13 stats.
def sub(k, o1, o2):
    return [16 * k, o1, o2]
SUBSCRIPTION = {
    "two_policies": sub(0, 1, 0) + sub(1, 1 + 4, 0) + [2, FRESH] * 3 + [7, 7 + 16, 7, 7 + 16, 13],
    "blocking": sub(0, 0 + 8, 0) + sub(1, 0 + 8 + 12, 0) + [2, FRESH] * 2 + [6, FRESH, 7, 9 + 16],
    "replay_rate_age": [2, FRESH] + sub(0, 2, 0x04 | 0x10 | 0x20 | 1) + [2, STALE, 2, FRESH, 7, 7, 8],
    "close_unsubscribe": sub(0, 1, 0x08) + [2, epoch(2), 2, epoch(1), 10, 2, FRESH, 11, 12, 2, FRESH]
    + sub(1, 1, 0) + [9 + 16, 5, 13],
}
# fuzz_pool.cpp: capacity byte, then (op, arg) pairs: 0 try_acquire, 1 acquire, 2 acquire(stop),
# 3 acquire_for(0), 4 reset, 5 copy, 6 weak_ptr, 7 reset weak, 8 lock weak, 9 write, 10 destroy.
POOL = {
    "lend_and_return": [1, 0, 0, 0, 1, 0, 2, 9, 0, 4, 0, 1, 3, 3, 0],
    "weak_keeps_slot": [0, 0, 0, 6, 0, 4, 0, 8, 1, 0, 2, 7, 0, 0, 2, 2, 0],
    "copies_outlive_pool": [2, 0, 0, 5, 8, 10, 0, 4, 0, 9, 1, 4, 1],
}

# fuzz_rate_limiter.cpp: period 2^(b0 % 34) ns, burst byte (b1 % 8: 1, 2, 3, 4, 7, 64, 1000,
# 2^32 - 1), then ops (op % 9): 0 try_acquire at the same time, 1 after a step (whole periods
# byte % 16, fraction byte - 128 of 128ths), 2 at the next widened boundary (byte % 3 - 1 ns off),
# 3 after a step back (byte 16ths of a period), 4 set_rate(2^(byte % 34) ns), 5 switch thread,
# 6 move into a new limiter, 7 rate() and burst(), 8 after a jump of (byte + 1) * 2^30 ns.
RATE = {
    "owner_takeover": [20, 2, 0, 0, 0, 0, 5, 0, 1, 1, 128, 2, 1, 5, 1, 2, 128, 7],
    "set_rate_from_outside": [20, 0, 0, 5, 4, 21, 5, 1, 1, 128, 2, 1, 2, 0, 2, 2, 7],
    "locked_forever": [0, 7, 0, 8, 3, 0, 0, 1, 5, 128, 8, 0, 7],
    "backwards_and_move": [10, 1, 0, 1, 4, 128, 3, 255, 0, 6, 0, 1, 2, 100, 5, 6, 0],
    "many_rates": [30, 4, 4, 25, 0, 4, 20, 1, 0, 64, 2, 0, 2, 2, 4, 33, 8, 5, 0, 7],
}

def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(bytes(data))

for t in ("fuzz_ring_mpmc", "fuzz_ring_spsc", "fuzz_ring_locked"):
    write(t, RING)
write("fuzz_latest_slot", LATEST)
write("fuzz_sliding_window", WINDOW)
write("fuzz_subscription", SUBSCRIPTION)
write("fuzz_pool", POOL)
write("fuzz_rate_limiter", RATE)
