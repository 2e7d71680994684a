# Runs each test case of watchdog_selftest (test cases that hang) with a 2 s watchdog and checks
# that it fails, naming the test case and its section and showing the threads' backtraces. A
# script, because ctest counts a test that dies of a signal as failed whatever its output says.
#   cmake -DSELFTEST=<path> -P watchdog_selftest.cmake
set(ENV{FRAMEPIPE_TEST_WATCHDOG_SECONDS} 2)
# Each entry: test case|section. The second is a hang that the dump itself rescues (Linux).
set(cases "a lost wake-up|waiting for a notify that never comes")
if(CMAKE_HOST_SYSTEM_NAME STREQUAL "Linux")
    list(APPEND cases
         "a lost wake-up that the thread dump rescues|a futex wait whose word changed without a wake-up")
endif()
foreach(case IN LISTS cases)
    string(REPLACE "|" ";" parts "${case}")
    list(GET parts 0 name)
    list(GET parts 1 section)
    execute_process(
        COMMAND "${SELFTEST}" "${name}"
        RESULT_VARIABLE result
        OUTPUT_VARIABLE out
        ERROR_VARIABLE out
        TIMEOUT 80)
    set(expect "watchdog: test case \"${name}\" still running after 2 s \\(section: \"${section}\"\\)")
    if(result EQUAL 0)
        message(FATAL_ERROR "the hanging test case \"${name}\" passed:\n${out}")
    endif()
    if(NOT out MATCHES "${expect}")
        message(FATAL_ERROR "no watchdog report naming \"${name}\" and its section:\n${out}")
    endif()
    if(NOT out MATCHES "[Tt]hread [0-9]+ \\(")
        message(FATAL_ERROR "no thread dump for \"${name}\":\n${out}")
    endif()
    message(STATUS "the watchdog reported the hang of \"${name}\" and ended it (${result})")
endforeach()
