// Consumer of the vcpkg-installed framepipe: one producer thread feeds a ring, main drains it;
// a latest_slot keeps only the newest value. Returns nonzero if anything is off.
#include <framepipe/latest_slot.hpp>
#include <framepipe/ring.hpp>
#include <iostream>
#include <thread>

int main() {
    constexpr int count = 1000;
    // Room for every item, so no overflow policy can drop one and the sum is exact.
    framepipe::ring<int> ring(count);
    std::thread producer([&ring] {
        for (int i = 1; i <= count; ++i) {
            (void)ring.push(i);
        }
        ring.close();
    });
    long long sum = 0;
    while (auto item = ring.pop()) {  // nullopt once closed and drained
        sum += *item;
    }
    producer.join();
    if (sum != static_cast<long long>(count) * (count + 1) / 2) {
        std::cerr << "ring: expected sum " << count * (count + 1) / 2 << ", got " << sum << '\n';
        return 1;
    }

    framepipe::latest_slot<int> slot;
    (void)slot.push(1);
    (void)slot.push(2);
    auto latest = slot.try_pop();
    if (!(latest && *latest == 2)) {
        std::cerr << "latest_slot: expected the latest value 2\n";
        return 1;
    }

    std::cout << "vcpkg consumer OK\n";
    return 0;
}
