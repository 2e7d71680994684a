// Minimal consumer of framepipe; returns nonzero if anything is off.
#include <framepipe/framepipe.hpp>
#include <framepipe/version.hpp>
#include <iostream>

int main() {
    std::cout << "framepipe " << FRAMEPIPE_VERSION_MAJOR << '.' << FRAMEPIPE_VERSION_MINOR << '.'
              << FRAMEPIPE_VERSION_PATCH << '\n';

    framepipe::ring<int> r(4);
    r.push(1);
    auto v = r.try_pop();
    if (!(v && *v == 1)) {
        std::cerr << "ring: expected to pop 1\n";
        return 1;
    }

    framepipe::latest_slot<int> s;
    s.push(1);
    s.push(2);
    auto w = s.try_pop();
    if (!(w && *w == 2)) {
        std::cerr << "latest_slot: expected to pop the latest value 2\n";
        return 1;
    }

    std::cout << "consumer OK\n";
    return 0;
}
