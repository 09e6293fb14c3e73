// Health probes and the health gate (filled in by the health issue; the library exists so
// that the agent links against its final shape).
#pragma once

#include <string_view>

namespace nixfleet::health {

// Probe types the registry will know.
std::string_view builtin_probe_types() noexcept;

}  // namespace nixfleet::health
