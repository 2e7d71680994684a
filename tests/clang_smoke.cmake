# Builds tests/clang_smoke.cpp with COMPILER and -std=c++20 alone (the compiler's own defaults),
# runs it, and fails unless it returns 0. DEFINE, if given, is one more -D (the portable paths);
# FLAG one more flag.
#   cmake -DCOMPILER=... -DINCLUDE_DIR=... -DSOURCE=... -DWORK_DIR=... [-DDEFINE=...]
#         [-DFLAG=...] -P clang_smoke.cmake
file(MAKE_DIRECTORY "${WORK_DIR}")
set(extra "")
if(DEFINE)
    set(extra "-D${DEFINE}")
endif()
if(FLAG) # one more compiler flag (-fno-rtti)
    list(APPEND extra "${FLAG}")
endif()
execute_process(COMMAND "${COMPILER}" -std=c++20 -pthread ${extra} "-I${INCLUDE_DIR}" "${SOURCE}" -o
                        "${WORK_DIR}/clang_smoke"
                RESULT_VARIABLE built ERROR_VARIABLE log)
if(NOT built EQUAL 0)
    message(FATAL_ERROR "${SOURCE} does not build with ${COMPILER}:\n${log}")
endif()
execute_process(COMMAND "${WORK_DIR}/clang_smoke" RESULT_VARIABLE ran TIMEOUT 120)
if(NOT ran EQUAL 0)
    message(FATAL_ERROR "clang_smoke: ${ran} check(s) failed")
endif()
message(STATUS "every block builds and runs with ${COMPILER}'s defaults ${extra}")
