// Wire timestamps: RFC 3339 in UTC with millisecond precision ("2026-11-25T18:26:21.123Z").
#pragma once

#include "nixfleet/protocol/error.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace nixfleet::protocol {

using timestamp = std::chrono::sys_time<std::chrono::milliseconds>;

// Always `YYYY-MM-DDTHH:MM:SS.mmmZ`, the one form the signatures cover.
std::string format_time(timestamp t);

// Accepts `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00|-00:00)` with years 1970..9999; fractions
// beyond milliseconds are truncated. Other offsets are refused: the wire is UTC.
boost::system::result<timestamp> parse_time(std::string_view s);

// A duration as operators write it: a whole number with s, m, h or d ("90s", "1h", "30d"); a bare
// number is seconds. Empty when it is not one (or is over 100 years).
std::optional<std::chrono::seconds> parse_duration(std::string_view s);

}  // namespace nixfleet::protocol
