// tests/fuzz/fuzz_ring_mpmc.cpp - the lock-free MPMC ring (detail/lockfree_ring.hpp) against
// its sequential model (see fuzz_ring.hpp for the input and the operations).
#include "fuzz_ring.hpp"

static_assert(framepipe::ring<framepipe_fuzz::stamped_item>::is_lock_free);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using framepipe_fuzz::stamped_item;
    using framepipe_fuzz::throwing_item;
    return framepipe_fuzz::run_ring<framepipe::ring<stamped_item>>(data, size);
}
