// Tests of framepipe/detail/unique_function.hpp: the move-only function wrapper behind a
// pipeline stage's function.
#include <framepipe/detail/unique_function.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

using framepipe::detail::unique_function;

namespace {

int answer() { return 42; }

struct [[nodiscard]] must_use {
    int v;
};

} // namespace

static_assert(!std::is_copy_constructible_v<unique_function<void()>>);
static_assert(std::is_nothrow_move_constructible_v<unique_function<void()>>);
static_assert(std::is_constructible_v<unique_function<void()>, int (*)()>);
static_assert(!std::is_constructible_v<unique_function<int()>, void (*)()>);
static_assert(!std::is_constructible_v<unique_function<std::string()>, int (*)()>);

TEST_CASE("unique_function: a void signature takes a callable that returns a value and drops it") {
    // The constraint admitted such a callable, but the call did `return std::invoke(...)` in a
    // function returning void: it did not compile.
    int calls = 0;
    unique_function<void()> f = [&calls] { return ++calls; };
    f();
    f();
    CHECK(calls == 2);
    unique_function<void()> g = answer;
    g();
    unique_function<void(int)> h = [](int v) { return must_use{v}; };
    h(1);
    CHECK(static_cast<bool>(h));
}

TEST_CASE("unique_function: holds move-only state, converts the result, and moves") {
    unique_function<long(int)> f = [p = std::make_unique<int>(40)](int v) { return *p + v; };
    CHECK(f(2) == 42);
    unique_function<long(int)> g = std::move(f);
    CHECK(g(3) == 43);
    unique_function<long(int)> empty;
    CHECK_FALSE(empty);
    empty = std::move(g);
    REQUIRE(empty);
    CHECK(empty(0) == 40);
}

TEST_CASE("unique_function: the call passes the function's exception on") {
    unique_function<void()> f = [] { throw std::runtime_error("boom"); };
    CHECK_THROWS_WITH(f(), "boom");
}
