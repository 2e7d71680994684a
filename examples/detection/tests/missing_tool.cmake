# Stands in for a test tool that was not found at configure time: fails, naming it.
#   cmake -P missing_tool.cmake <tool> [the test's arguments...]
message(FATAL_ERROR "${CMAKE_ARGV3} was not found when configuring; scripts/test installs it "
                    "(then re-run cmake)")
