// Uses the core, and each transport adapter the package was built with (compiled in, not run:
// running one needs a RouDi or a nats-server).
#include <framepipe/latest_slot.hpp>
#if defined(CONSUMER_WITH_ICEORYX)
#include <framepipe/transport/iceoryx.hpp>
#endif
#if defined(CONSUMER_WITH_NATS)
#include <framepipe/transport/nats.hpp>
#endif

#include <cstdio>

int main() {
    framepipe::latest_slot<int> slot;
    (void)slot.push(1);
    (void)slot.push(2);
    const auto v = slot.try_pop();
#if defined(CONSUMER_WITH_NATS)
    std::printf("nats adapter: %s\n", framepipe::transport::frame_subject("p", "cam0").c_str());
#endif
#if defined(CONSUMER_WITH_ICEORYX)
    std::printf("iceoryx adapter: %s\n",
                framepipe::transport::roudi_unreachable() ? "no RouDi" : "RouDi");
#endif
    return v && *v == 2 ? 0 : 1;
}
