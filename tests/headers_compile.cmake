# Compiles every header under include/framepipe alone with COMPILER (-std=c++20 and nothing else),
# so that each one is self-contained under another compiler's defaults too (clang before 19, say,
# declares no sized deallocation by default).
#   cmake -DCOMPILER=... -DINCLUDE_DIR=... -DWORK_DIR=... -P headers_compile.cmake
file(GLOB headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/framepipe/*.hpp"
     "${INCLUDE_DIR}/framepipe/detail/*.hpp")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(failed "")
foreach(header IN LISTS headers)
    string(MAKE_C_IDENTIFIER "${header}" id)
    file(WRITE "${WORK_DIR}/${id}.cpp" "#include <${header}>\n")
    execute_process(COMMAND "${COMPILER}" -std=c++20 -fsyntax-only "-I${INCLUDE_DIR}"
                            "${WORK_DIR}/${id}.cpp"
                    RESULT_VARIABLE result ERROR_VARIABLE err OUTPUT_QUIET)
    if(NOT result EQUAL 0)
        string(APPEND failed "${header}:\n${err}\n")
    endif()
endforeach()
if(failed)
    message(FATAL_ERROR "headers that do not compile alone with ${COMPILER}:\n${failed}")
endif()
list(LENGTH headers n)
message(STATUS "${n} headers compile alone with ${COMPILER}")
