# Compiles SOURCE, which must fail, and checks the compiler's output: it must contain EXPECT and
# at most MAX_ERRORS lines with "error" (a type that does not fit a pipeline gets a short message,
# not pages of template instantiation).
#   cmake -DCOMPILER=... -DINCLUDE_DIR=... -DSOURCE=... -DEXPECT=... -DMAX_ERRORS=... [-DFLAG=...]
#         -P check.cmake
execute_process(
    COMMAND "${COMPILER}" -std=c++20 ${FLAG} -fsyntax-only "-I${INCLUDE_DIR}" "${SOURCE}"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE out
    ERROR_VARIABLE err)
set(text "${out}${err}")
if(result EQUAL 0)
    message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
string(FIND "${text}" "${EXPECT}" at)
if(at EQUAL -1)
    message(FATAL_ERROR "the compiler's output lacks \"${EXPECT}\":\n${text}")
endif()
string(REGEX MATCHALL "[^\n]*error[^\n]*" errors "${text}")
list(LENGTH errors count)
if(count GREATER MAX_ERRORS)
    message(FATAL_ERROR "${count} error lines (at most ${MAX_ERRORS} expected):\n${text}")
endif()
message(STATUS "refused as expected with ${count} error line(s): ${EXPECT}")
