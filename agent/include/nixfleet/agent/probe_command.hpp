// `nixfleet-agent probe`: run every configured probe once and print the results.
#pragma once

#include <iosfwd>
#include <string>

namespace nixfleet::agent {

struct probe_command_options {
  std::string health_config;
  bool json = false;
  // Empty: next to this executable, else PATH.
  std::string plugin_host;
  std::string systemctl = "systemctl";
};

// Exit codes: 0 all required probes pass, 1 one fails, 78 (EX_CONFIG) the configuration is bad.
int run_probe_command(const probe_command_options& opts, std::ostream& out, std::ostream& err);

// nixfleet-probe-host beside the running executable when present, else the bare name (PATH).
std::string default_plugin_host();

}  // namespace nixfleet::agent
