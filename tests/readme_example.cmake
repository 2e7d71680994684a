# Compiles and runs the first C++ block of README.md, which must end by itself: the block's
# #include lines, then the few names it leaves to the reader (Frame, grab, detect, show), then
# the rest of the block as main's body. Built at -O2 with -Wall -Wextra -Werror, as a user might.
#   cmake -DCOMPILER=... -DSOURCE_DIR=... -DWORK_DIR=... -P readme_example.cmake
file(READ "${SOURCE_DIR}/README.md" readme)
string(FIND "${readme}" "```cpp\n" start)
if(start EQUAL -1)
    message(FATAL_ERROR "README.md has no ```cpp block")
endif()
math(EXPR start "${start} + 7")
string(SUBSTRING "${readme}" ${start} -1 rest)
string(FIND "${rest}" "```" end)
string(SUBSTRING "${rest}" 0 ${end} block)

string(REGEX MATCHALL "#include[^\n]*\n" includes "${block}")
string(REGEX REPLACE "#include[^\n]*\n" "" body "${block}")
string(JOIN "" includes ${includes})
file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/readme_example.cpp"
"${includes}
#include <thread>
// What the README leaves to the reader: a frame, a camera, a detector and a display.
struct Frame { int n = 0; };
inline Frame grab() { static int n = 0; return Frame{n++}; }
inline void detect(const Frame& f) { volatile int x = f.n; (void)x; }
inline void show(const Frame& f) { volatile int x = f.n; (void)x; }

int main() {
${body}
    return 0;
}
")
execute_process(
    COMMAND "${COMPILER}" -std=c++20 -O2 -pthread "-I${SOURCE_DIR}/include" -Wall -Wextra -Werror
            "${WORK_DIR}/readme_example.cpp" -o "${WORK_DIR}/readme_example"
    RESULT_VARIABLE built
    ERROR_VARIABLE build_log)
if(NOT built EQUAL 0)
    message(FATAL_ERROR "README.md's example does not compile:\n${build_log}")
endif()
execute_process(COMMAND "${WORK_DIR}/readme_example" RESULT_VARIABLE ran TIMEOUT 60)
if(NOT ran EQUAL 0)
    message(FATAL_ERROR "README.md's example did not end with 0: ${ran}")
endif()
message(STATUS "README.md's example compiled, ran and ended")
