// Must NOT compile: a pipeline stage's input has close() but no pop(std::stop_token). The error
// must be one short message naming the missing member (tests/compile_fail/check.cmake).
#include <framepipe/pipeline.hpp>
#include <framepipe/ring.hpp>

struct no_pop {
    void close() {}
};

int main() {
    no_pop in;
    framepipe::ring<int> out(1);
    framepipe::pipeline p;
    p.stage("stage", in, out, [](int v) { return v; });
}
