// `nixfleet-agent run`: the agent daemon.
#pragma once

#include "nixfleet/agent/config.hpp"

namespace nixfleet::agent {

// Runs until SIGTERM/SIGINT (exit 0). Exit 78 when the health configuration is bad.
int run_agent(const agent_config& cfg);

}  // namespace nixfleet::agent
