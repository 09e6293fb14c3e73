// Health configuration (/etc/nixfleet/health.json): the gate's timing and the probes.
#pragma once

#include "nixfleet/health/gate.hpp"
#include "nixfleet/health/probe.hpp"
#include "nixfleet/protocol/error.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::health {

inline constexpr std::string_view default_health_config_path = "/etc/nixfleet/health.json";

struct health_setup {
  gate_config gate;
  std::vector<probe_ptr> probes;

  std::vector<gated_probe> gated() const;
};

// Parses and validates the whole configuration, building every probe. Errors name the field
// (`probes[2].url`) and, for a probe, its name.
protocol::decoded<health_setup> parse_health_config(std::string_view text, const probe_env& env = {},
                                                    const registry& types = registry::builtin());

// Reads `path` (at most 1 MiB) and parses it.
protocol::decoded<health_setup> load_health_config(const std::string& path, const probe_env& env = {},
                                                   const registry& types = registry::builtin());

}  // namespace nixfleet::health
