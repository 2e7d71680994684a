// Built with -fno-exceptions by the compile_fail_no_exceptions test: must be refused with
// framepipe's own message.
#include <framepipe/framepipe.hpp>

int main() { return 0; }
