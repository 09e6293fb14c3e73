// The systemd notification protocol (Type=notify, READY=1, WATCHDOG=1, STOPPING=1) without
// libsystemd: one datagram to $NOTIFY_SOCKET.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace nixfleet::systemd {

// Sends `state` ("READY=1", …) when $NOTIFY_SOCKET is set; false when not under systemd or on error.
bool notify(std::string_view state);

// Half of WATCHDOG_USEC when the watchdog is on for this process (WATCHDOG_PID absent or ours).
std::optional<std::chrono::milliseconds> watchdog_period();

// True when systemd is the init system (/run/systemd/system exists).
bool booted();

}  // namespace nixfleet::systemd
