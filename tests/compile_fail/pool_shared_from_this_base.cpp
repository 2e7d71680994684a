// Must NOT compile: a pooled T whose base derives from std::enable_shared_from_this of the base
// (not of T). Lending would set the base's weak_ptr, which keeps the slot lent for ever.
#include <framepipe/pool.hpp>

#include <memory>

struct base : std::enable_shared_from_this<base> {};
struct frame : base {};

int main() {
    framepipe::pool<frame> frames(2, [] { return frame(); });
    (void)frames.try_acquire();
}
