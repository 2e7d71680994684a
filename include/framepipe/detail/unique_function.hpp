// framepipe/detail/unique_function.hpp - a move-only std::function, so that a pipeline stage's
// function may own move-only state (a rate_limiter, a std::unique_ptr). C++23's
// std::move_only_function does this job; framepipe targets C++20.
#pragma once

#include <framepipe/detail/config.hpp>

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace framepipe::detail {

template <class Signature>
class unique_function;

template <class R, class... Args>
class unique_function<R(Args...)> {
public:
    unique_function() noexcept = default;

    // Takes `f` (moved or copied in): any callable whose result converts to R (for R = void, any
    // result, discarded). Throws std::bad_alloc, or what F's constructor throws.
    template <class F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, unique_function> &&
                 std::is_invocable_r_v<R, std::decay_t<F>&, Args...>)
    unique_function(F&& f) // NOLINT(google-explicit-constructor): a function wrapper converts
        : impl_(std::make_unique<model<std::decay_t<F>>>(std::forward<F>(f))) {}

    unique_function(unique_function&&) noexcept = default;
    unique_function& operator=(unique_function&&) noexcept = default;

    // Calls the function; must not be empty. Throws what the function throws.
    R operator()(Args... args) { return impl_->call(std::forward<Args>(args)...); }

    explicit operator bool() const noexcept { return impl_ != nullptr; }

private:
    struct callable {
        virtual ~callable() = default;
        virtual R call(Args... args) = 0;
    };

    template <class F>
    struct model final : callable {
        template <class G>
        explicit model(G&& g) : f(std::forward<G>(g)) {}
        R call(Args... args) override {
            if constexpr (std::is_void_v<R>) {
                static_cast<void>(std::invoke(f, std::forward<Args>(args)...)); // any result
            } else {
                return std::invoke(f, std::forward<Args>(args)...);
            }
        }
        F f;
    };

    std::unique_ptr<callable> impl_;
};

} // namespace framepipe::detail
