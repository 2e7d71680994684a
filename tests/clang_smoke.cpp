// tests/clang_smoke.cpp - every block instantiated and run once, built by clang with its default
// flags (tests/clang_smoke.cmake): templates that only fail when instantiated under another
// compiler's defaults show up here (clang before 19 declares no sized deallocation, say).
#include <framepipe/framepipe.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

namespace {

struct may_throw {
    int v = 0;
    may_throw() = default;
    explicit may_throw(int x) : v(x) {}
    may_throw(may_throw&& o) noexcept(false) : v(o.v) {}
    may_throw(const may_throw&) = default;
};

struct one_frame {
    using frame_type = int;
    int n = 0;
    framepipe::open_result open(std::stop_token, std::chrono::nanoseconds) {
        return framepipe::open_result::success();
    }
    framepipe::read_result<int> read(std::stop_token, std::chrono::nanoseconds) {
        return n++ < 3 ? framepipe::read_result<int>::got(n) : framepipe::read_result<int>::ended();
    }
    void close() noexcept {}
};

} // namespace

int main() {
    int failures = 0;
    const auto check = [&](bool ok) { failures += ok ? 0 : 1; };

    framepipe::ring<int> mpmc(4);
    check(framepipe::accepted(mpmc.push(1)) && mpmc.pop() == 1);
    framepipe::spsc_ring<int> spsc(4, framepipe::overflow::block);
    check(spsc.try_push(2) == framepipe::push_status::ok && spsc.try_pop() == 2);
    framepipe::ring<may_throw> locked(2);
    check(locked.push(may_throw(3)) == framepipe::push_status::ok && locked.try_pop()->v == 3);

    framepipe::latest_slot<framepipe::stamped<int>> slot({.drop_older_epochs = true});
    check(slot.push(framepipe::stamp(4, 0)) == framepipe::push_status::ok && slot.pop()->value == 4);

    framepipe::sliding_window<int> window(3, 1);
    for (int i = 0; i < 3; ++i) {
        (void)window.push(i);
    }
    check(window.try_pop()->size() == 3);

    framepipe::pool<std::string> strings(2);
    auto lent = strings.acquire_for(std::chrono::milliseconds(1));
    check(lent != nullptr && strings.available() == 1);
    lent.reset();

    framepipe::broadcaster<int> frames;
    frames.reserve(4);
    auto sub = frames.subscribe({.capacity = 2, .name = "sub"});
    check(frames.publish(5).delivered == 1 && **sub.try_pop() == 5);

    framepipe::ring<int> cam_a(2);
    framepipe::latest_slot<int> cam_b;
    framepipe::selector<int> select;
    const auto a = select.add(cam_a);
    (void)select.add(cam_b);
    (void)cam_a.push(6);
    check(select.try_pop()->input == a);

    framepipe::ring<framepipe::stamped<int>> cam_c(4);
    framepipe::batcher<framepipe::stamped<int>> batches({.max_size = 2});
    (void)batches.add(cam_c, {.take = framepipe::input_take::oldest});
    (void)cam_c.push(framepipe::stamp(7, 0));
    (void)cam_c.push(framepipe::stamp(8, 1));
    check(batches.try_pop()->items.size() == 2);

    framepipe::rate_limiter limiter(1000.0);
    check(limiter.try_acquire());

    framepipe::ring<framepipe::stamped<int>> out(16, framepipe::overflow::block);
    framepipe::live_source<one_frame> camera([] { return one_frame{}; });
    framepipe::ring<int> sampled_ring(8);
    framepipe::sampled one_in_two(sampled_ring, framepipe::every_n(2));
    int seen = 0;
    framepipe::pipeline p("smoke");
    p.source("camera", out, camera);
    p.sink("sink", out, [&](const framepipe::stamped<int>&) { ++seen; }, {.max_rate_hz = 1000});
    p.start();
    check(p.wait_for(std::chrono::seconds(30)));
    p.wait();
    check(seen >= 1 && seen <= 3);
    check(!framepipe::to_prometheus(p.snapshot()).empty());
    check(!framepipe::to_dot(p.snapshot()).empty());
    (void)one_in_two.push(1);
    (void)one_in_two.push(2);
    check(one_in_two.stats().sampled_out == 1);
    return failures;
}
