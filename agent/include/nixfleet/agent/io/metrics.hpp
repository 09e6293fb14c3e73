// Prometheus text exposition of the agent's state on an optional local address.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace nixfleet::agent::io {

class agent_runtime;

// Counters the driver and runtime keep; read by the metrics endpoint.
struct agent_metrics {
  std::uint64_t polls_ok = 0, polls_failed = 0;
  std::uint64_t reports_delivered = 0, reports_dropped = 0;
  std::uint64_t activations = 0, activation_failures = 0, rollbacks = 0, confirmations = 0;
  double last_activation_seconds = 0, last_rollback_seconds = 0;
  std::int64_t last_poll_unix = 0, last_report_unix = 0;
  // The fleet CA identity, when the host enrolled: its end and how renewals went.
  std::optional<std::int64_t> certificate_expiry_unix;
  double certificate_days_left = 0;
  std::uint64_t certificate_renewals = 0, certificate_renewal_failures = 0;
  // probe name → 1 pass / 0 fail, from the newest round
  std::map<std::string, int> probe_up;
};

// The exposition text for `rt` (exposed for tests).
std::string render_metrics(agent_runtime& rt);

// Serves GET /metrics on `listen` ("127.0.0.1:9101") until cancelled.
boost::asio::awaitable<void> serve_metrics(std::string listen, agent_runtime& rt);

}  // namespace nixfleet::agent::io
