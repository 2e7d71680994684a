# Runs watchdog_selftest (a test case that hangs) with a 2 s watchdog and checks that it fails,
# naming the test case and its section and showing the threads' backtraces. A script, because
# ctest counts a test that dies of a signal as failed whatever its output says.
#   cmake -DSELFTEST=<path> -P watchdog_selftest.cmake
set(ENV{FRAMEPIPE_TEST_WATCHDOG_SECONDS} 2)
execute_process(
    COMMAND "${SELFTEST}" "[watchdog]"
    RESULT_VARIABLE result
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out
    TIMEOUT 80)
set(expect
    "watchdog: test case \"a lost wake-up\" still running after 2 s \\(section: \"waiting for a notify that never comes\"\\)")
if(result EQUAL 0)
    message(FATAL_ERROR "the hanging test case passed:\n${out}")
endif()
if(NOT out MATCHES "${expect}")
    message(FATAL_ERROR "no watchdog report naming the test case and its section:\n${out}")
endif()
if(NOT out MATCHES "[Tt]hread [0-9]+ \\(")
    message(FATAL_ERROR "no thread dump:\n${out}")
endif()
message(STATUS "the watchdog reported the hang and ended the test (${result})")
