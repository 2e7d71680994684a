// Must NOT compile: a pipeline stage's output cannot take the item type its function returns.
// The error must be one short message naming push(U) (tests/compile_fail/check.cmake).
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>

#include <string>

int main() {
    framepipe::ring<int> in(1);
    framepipe::ring<std::string> out(1);
    framepipe::pipeline p;
    p.stage("stage", in, out, [](int v) { return v; }); // emits int; out takes std::string
}
