// tests/fuzz/pool_with_clang_defaults.cpp - pool<T> must compile with clang's default flags.
// clang before version 19 does not enable sized deallocation by default, and libstdc++'s <new>
// then declares no sized operator delete: slot_allocator::deallocate's
// ::operator delete(p, size, align_val_t) does not compile. (g++ enables it in C++14 and later.)
#include <framepipe/pool.hpp>

int main() {
    framepipe::pool<int> p(2);
    auto x = p.try_acquire();
    return x ? 0 : 1;
}
