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

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace framepipe_examples {

// The check of a floating-point flag: a finite number from `min` to `max`, inclusive. Use it
// instead of CLI::Range, which lets "nan" through (every comparison with NaN is false). A bad
// value fails the parse with one line naming the flag, as CLI11's own checks do:
// "--rotate: Value nan not in range 0 to 86400".
//
//     app.add_option("--rotate", s.rotate, "...")->check(finite_range(0.0, 86400.0));
[[nodiscard]] inline CLI::Validator finite_range(double min, double max) {
    const auto text = [](double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", v);
        return std::string(buf);
    };
    return CLI::Validator(
        [min, max, text](std::string& input) -> std::string {
            double v = 0;
            if (!CLI::detail::lexical_cast(input, v) || !std::isfinite(v) || v < min || v > max) {
                return "Value " + input + " not in range " + text(min) + " to " + text(max);
            }
            return {};
        },
        "FLOAT in [" + text(min) + " - " + text(max) + "]");
}

// The check of a string flag that must not be empty (a path): "--write-templates ''" is refused
// instead of meaning "not given".
[[nodiscard]] inline CLI::Validator non_empty() {
    return CLI::Validator(
        [](std::string& input) -> std::string {
            return input.empty() ? std::string("Value must not be empty") : std::string();
        },
        "TEXT (not empty)");
}

// The check of an unsigned whole-number flag (a seed): decimal digits only, so that "-1" is
// refused instead of wrapping around to 2^64 - 1, and "" instead of meaning 0.
[[nodiscard]] inline CLI::Validator whole_number() {
    return CLI::Validator(
        [](std::string& input) -> std::string {
            const bool digits = !input.empty() && input.find_first_not_of("0123456789") ==
                                                      std::string::npos;
            return digits ? std::string()
                          : "Value '" + input + "' is not a whole number (0 or more)";
        },
        "UINT");
}

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
