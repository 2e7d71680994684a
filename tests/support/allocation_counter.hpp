// tests/support/allocation_counter.hpp - replaces the global allocation functions with counting
// ones, so that zero-allocation claims are measured, not assumed. Include it in exactly one
// translation unit of a test program (it defines operator new and delete).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace {

std::atomic<bool> g_counting{false};
std::atomic<std::uint64_t> g_allocations{0};
std::atomic<std::uint64_t> g_deallocations{0};

void* plain_alloc(std::size_t n) noexcept {
    if (g_counting.load(std::memory_order_relaxed)) {
        g_allocations.fetch_add(1, std::memory_order_relaxed);
    }
    return std::malloc(n == 0 ? 1 : n);
}

// Called before every aligned allocation when set (a test's seam: it may hold the allocating
// thread there).
std::atomic<void (*)()> g_aligned_hook{nullptr};
// When set to k > 0, the k-th aligned allocation from then on fails (once): the throwing forms
// throw std::bad_alloc.
std::atomic<long> g_aligned_fail_countdown{0};

void* aligned_alloc_counted(std::size_t n, std::align_val_t al) noexcept {
    if (const auto hook = g_aligned_hook.load(std::memory_order_acquire)) {
        hook();
    }
    if (g_aligned_fail_countdown.load(std::memory_order_relaxed) > 0 &&
        g_aligned_fail_countdown.fetch_sub(1, std::memory_order_relaxed) == 1) {
        return nullptr;
    }
    if (g_counting.load(std::memory_order_relaxed)) {
        g_allocations.fetch_add(1, std::memory_order_relaxed);
    }
    const auto a = std::max(static_cast<std::size_t>(al), sizeof(void*));
    const std::size_t rounded = (std::max<std::size_t>(n, 1) + a - 1) / a * a;
    return std::aligned_alloc(a, rounded);
}

void free_counted(void* p) noexcept {
    if (p == nullptr) {
        return;
    }
    if (g_counting.load(std::memory_order_relaxed)) {
        g_deallocations.fetch_add(1, std::memory_order_relaxed);
    }
    std::free(p);
}

void* or_throw(void* p) {
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

} // namespace

void* operator new(std::size_t n) { return or_throw(plain_alloc(n)); }
void* operator new[](std::size_t n) { return or_throw(plain_alloc(n)); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return plain_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return plain_alloc(n); }
void* operator new(std::size_t n, std::align_val_t al) {
    return or_throw(aligned_alloc_counted(n, al));
}
void* operator new[](std::size_t n, std::align_val_t al) {
    return or_throw(aligned_alloc_counted(n, al));
}
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
    return aligned_alloc_counted(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
    return aligned_alloc_counted(n, al);
}

void operator delete(void* p) noexcept { free_counted(p); }
void operator delete[](void* p) noexcept { free_counted(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { free_counted(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { free_counted(p); }
void operator delete(void* p, std::size_t) noexcept { free_counted(p); }
void operator delete[](void* p, std::size_t) noexcept { free_counted(p); }
void operator delete(void* p, std::align_val_t) noexcept { free_counted(p); }
void operator delete[](void* p, std::align_val_t) noexcept { free_counted(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { free_counted(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { free_counted(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    free_counted(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    free_counted(p);
}

namespace {

// Counts allocations between start() and stop(), on every thread. No Catch2 macro may run in
// between (Catch2 allocates).
struct allocation_window {
    void start() noexcept {
        g_allocations.store(0);
        g_deallocations.store(0);
        g_counting.store(true);
    }
    void stop() noexcept { g_counting.store(false); }
    [[nodiscard]] static std::uint64_t allocations() noexcept { return g_allocations.load(); }
    [[nodiscard]] static std::uint64_t deallocations() noexcept { return g_deallocations.load(); }
};

// Where allocated pointers escape to, so the compiler cannot elide new/delete pairs.
std::atomic<void*> g_sink{nullptr};

} // namespace
