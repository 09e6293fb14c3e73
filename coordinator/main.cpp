// nixfleet-coordinator: the coordinator: desired state, reports, releases, rollouts, audit.
#include "nixfleet/common/version.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"nixfleet-coordinator — the coordinator: desired state, reports, releases, rollouts, audit"};
  app.set_version_flag("--version", std::string(nixfleet::version()));
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
