// examples/common/cli.hpp - the command line, parsed the same way by every example.
//
//     CLI::App app{"framepipe-detect: ..."};
//     add_options(app, s);
//     if (const auto code = framepipe_examples::parse_command_line(app, argc, argv, program)) {
//         return *code;                 // --help printed (0), or a bad flag (2, one line)
//     }
//
// Header-only; needs CLI11 and nlohmann-json (program.hpp). Main thread.
#pragma once

#include "common/program.hpp"

#include <CLI/CLI.hpp>

#include <optional>
#include <string_view>

namespace framepipe_examples {

// Parses argv into app's options. nullopt: go on. Else the code main returns: 0 after --help
// (printed on stdout), 2 after a bad flag (one line "program: what" on stderr).
[[nodiscard]] inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                                           std::string_view program) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(program, e.what());
        return 2;
    }
    return std::nullopt;
}

} // namespace framepipe_examples
