// nixfleet-agent: command-line parsing and one call per subcommand.
#include "nixfleet/agent/config.hpp"
#include "nixfleet/agent/io/control.hpp"
#include "nixfleet/agent/probe_command.hpp"
#include "nixfleet/agent/run_command.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/health/config.hpp"

#include <CLI/CLI.hpp>

#include <boost/json/serialize.hpp>

#include <iostream>
#include <unistd.h>

namespace {

std::string system_hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

// check-config: 0 and the effective configuration, or 78 and the field at fault.
int check_config(const std::string& path) {
  auto cfg = nixfleet::agent::load_agent_config(path, system_hostname());
  if (!cfg) {
    std::cerr << "nixfleet-agent: bad configuration " << path << ": " << cfg.error().what() << "\n";
    return nixfleet::agent::exit_config_error;
  }
  std::cout << boost::json::serialize(nixfleet::agent::to_json(*cfg)) << "\n";
  return 0;
}

}  // namespace

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

  std::string config_path = "/etc/nixfleet/agent.json";
  auto* check = app.add_subcommand("check-config", "Validate the agent configuration and print it with every default "
                                                   "(exit 0, or 78 naming the field at fault)");
  check->add_option("--config", config_path, "agent configuration (JSON)")->capture_default_str();

  struct {
    std::optional<std::string> machine_id, coordinator, log_level;
    bool dry_run = false;
  } over;
  auto* run = app.add_subcommand("run", "Run the agent: poll, verify, fetch, activate, health-gate, roll back, report");
  run->add_option("--config", config_path, "agent configuration (JSON)")->capture_default_str();
  run->add_option("--machine-id", over.machine_id, "override machine_id");
  run->add_option("--coordinator", over.coordinator, "override coordinator_url");
  run->add_flag("--dry-run", over.dry_run, "verify and fetch, report what would be activated, never activate");
  run->add_option("--log-level", over.log_level, "override log_level (trace, debug, info, warn, error)");

  // Break-glass commands, through the running agent's control socket.
  std::string socket_path;
  std::vector<std::pair<CLI::App*, std::string>> controls;
  for (auto [name, help] : {std::pair{"status", "Show current, last known good, hold, quarantine, in-flight and outbox"},
                            std::pair{"hold", "Stop starting deployments until release-hold"},
                            std::pair{"release-hold", "Allow deployments again"},
                            std::pair{"rollback", "Roll back to the previous confirmed generation now (and hold)"}}) {
    auto* sub = app.add_subcommand(name, help);
    sub->add_option("--socket", socket_path, "control socket (default: control_socket from --config)");
    sub->add_option("--config", config_path, "agent configuration (JSON)")->capture_default_str();
    controls.emplace_back(sub, name);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  nixfleet::log::init({.min_level = nixfleet::log::level::warn});
  if (probe->parsed()) return nixfleet::agent::run_probe_command(probe_opts, std::cout, std::cerr);
  if (check->parsed()) return check_config(config_path);
  for (const auto& [sub, name] : controls) {
    if (!sub->parsed()) continue;
    if (socket_path.empty()) {
      auto cfg = nixfleet::agent::load_agent_config(config_path, system_hostname());
      socket_path = cfg ? cfg->control_socket : nixfleet::agent::agent_config{}.control_socket;
    }
    try {
      auto answer = nixfleet::agent::io::control_request(socket_path, name);
      std::cout << boost::json::serialize(answer) << "\n";
      const auto* ok = answer.is_object() ? answer.as_object().if_contains("ok") : nullptr;
      return ok && ok->is_bool() && ok->as_bool() ? 0 : 1;
    } catch (const boost::system::system_error& e) {
      std::cerr << "nixfleet-agent: cannot reach the agent at " << socket_path << ": " << e.code().message() << "\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "nixfleet-agent: bad answer from the agent at " << socket_path << ": " << e.what() << "\n";
      return 1;
    }
  }
  if (run->parsed()) {
    auto cfg = nixfleet::agent::load_agent_config(config_path, system_hostname());
    if (!cfg) {
      std::cerr << "nixfleet-agent: bad configuration " << config_path << ": " << cfg.error().what() << "\n";
      return nixfleet::agent::exit_config_error;
    }
    // Flags override the file; the result is validated as a whole again.
    auto merged = nixfleet::agent::to_json(*cfg).as_object();
    if (over.machine_id) merged["machine_id"] = *over.machine_id;
    if (over.coordinator) merged["coordinator_url"] = *over.coordinator;
    if (over.log_level) merged["log_level"] = *over.log_level;
    if (over.dry_run) merged["dry_run"] = true;
    auto final_cfg = nixfleet::agent::parse_agent_config(boost::json::serialize(merged), system_hostname());
    if (!final_cfg) {
      std::cerr << "nixfleet-agent: bad option: " << final_cfg.error().what() << "\n";
      return nixfleet::agent::exit_config_error;
    }
    nixfleet::log::init({.min_level = nixfleet::log::parse_level(final_cfg->log_level, nixfleet::log::level::info)});
    return nixfleet::agent::run_agent(*final_cfg);
  }
  return 0;
}
