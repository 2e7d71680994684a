# Compiles one translation unit that includes every public header (transport/ too, where its
# package is there) with the strictest warnings a user's build may turn on, as -I, not as system
# headers: a warning in a header is a user's -Werror build broken (review: -Wuseless-cast).
#   cmake -DCOMPILER=... -DINCLUDE_DIR=... -DWORK_DIR=... [-DTRANSPORTS=iceoryx;nats]
#         [-DEXTRA_INCLUDES=...] -P header_warnings.cmake
file(MAKE_DIRECTORY "${WORK_DIR}")
file(GLOB headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/framepipe/*.hpp"
     "${INCLUDE_DIR}/framepipe/detail/*.hpp" "${INCLUDE_DIR}/framepipe/transport/detail/*.hpp")
foreach(t IN LISTS TRANSPORTS)
    list(APPEND headers "framepipe/transport/${t}.hpp")
endforeach()
set(source "${WORK_DIR}/all_headers.cpp")
set(text "")
foreach(h IN LISTS headers)
    string(APPEND text "#include <${h}>\n")
endforeach()
string(APPEND text "int main() { return 0; }\n")
file(WRITE "${source}" "${text}")
set(flags -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Wshadow -Wconversion
          -Wsign-conversion -Wold-style-cast -Wnon-virtual-dtor -Wundef -Werror)
execute_process(COMMAND "${COMPILER}" --version OUTPUT_VARIABLE version)
if(version MATCHES "Free Software Foundation") # GCC's own
    list(APPEND flags -Wuseless-cast)
endif()
set(includes "-I${INCLUDE_DIR}")
foreach(d IN LISTS EXTRA_INCLUDES)
    list(APPEND includes "-isystem${d}")
endforeach()
execute_process(COMMAND "${COMPILER}" ${flags} ${includes} "${source}"
                RESULT_VARIABLE result ERROR_VARIABLE log OUTPUT_VARIABLE log)
if(NOT result EQUAL 0)
    message(FATAL_ERROR "the headers warn under ${flags}:\n${log}")
endif()
list(LENGTH headers count)
message(STATUS "${count} headers compile warning-free under ${flags}")
