// nixfleet-agent: command-line parsing and one call per subcommand.
#include "nixfleet/agent/probe_command.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/health/config.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"nixfleet-agent — pulls, verifies, activates, health-gates and rolls back this host's NixOS generation"};
  app.set_version_flag("--version", std::string(nixfleet::version()));
  app.require_subcommand(1);

  nixfleet::agent::probe_command_options probe_opts;
  probe_opts.health_config = std::string(nixfleet::health::default_health_config_path);
  auto* probe = app.add_subcommand("probe", "Run every configured health probe once and print the results "
                                            "(exit 0: required probes pass, 1: one fails, 78: bad configuration)");
  probe->add_option("--health-config", probe_opts.health_config, "health configuration (JSON)")
      ->capture_default_str();
  probe->add_flag("--json", probe_opts.json, "print the results as JSON (a health report)");
  probe->add_option("--plugin-host", probe_opts.plugin_host,
                    "nixfleet-probe-host to run plugins with (default: beside this program, else PATH)");
  probe->add_option("--systemctl", probe_opts.systemctl, "systemctl to query")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  nixfleet::log::init({.min_level = nixfleet::log::level::warn});
  if (probe->parsed()) return nixfleet::agent::run_probe_command(probe_opts, std::cout, std::cerr);
  return 0;
}
