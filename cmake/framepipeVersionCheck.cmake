include_guard(GLOBAL)

# framepipe_check_version_header(<path>)
#
# Reads FRAMEPIPE_VERSION_MAJOR/MINOR/PATCH from <path> and stops the configure
# step if they disagree with PROJECT_VERSION. Does nothing if <path> is absent.
function(framepipe_check_version_header header)
    if(NOT EXISTS "${header}")
        message(STATUS "framepipe: ${header} not found, skipping version check")
        return()
    endif()

    # Re-run the check whenever the header changes.
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${header}")

    file(READ "${header}" contents)
    foreach(part IN ITEMS MAJOR MINOR PATCH)
        if(NOT contents MATCHES "#[ \t]*define[ \t]+FRAMEPIPE_VERSION_${part}[ \t]+\\(?([0-9]+)")
            message(FATAL_ERROR "framepipe: ${header} does not define FRAMEPIPE_VERSION_${part}")
        endif()
        set(header_${part} "${CMAKE_MATCH_1}")
    endforeach()

    set(header_version "${header_MAJOR}.${header_MINOR}.${header_PATCH}")
    if(NOT header_version VERSION_EQUAL PROJECT_VERSION)
        message(FATAL_ERROR "framepipe: version mismatch: CMakeLists.txt says ${PROJECT_VERSION}, "
                            "${header} says ${header_version}")
    endif()
endfunction()
