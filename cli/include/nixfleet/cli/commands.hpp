// The `nixfleet` command line: every subcommand, run to an exit code (0 success, 1 failure,
// 2 usage, 3 rollout did not complete); errors are one line on stderr.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace nixfleet::cli {

int run(int argc, char** argv);

// A completion script for `shell` (bash, zsh or fish) covering every subcommand and option of `app`.
std::string completion_script(const CLI::App& app, const std::string& shell);

}  // namespace nixfleet::cli
