// Placeholder translation unit of nixfleet::health until the probes land.
#include "nixfleet/health/health.hpp"

namespace nixfleet::health {

std::string_view builtin_probe_types() noexcept { return "systemd_unit systemd_failed http tcp exec plugin"; }

}  // namespace nixfleet::health
