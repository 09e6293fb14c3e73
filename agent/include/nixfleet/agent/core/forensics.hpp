// Reading what a failed target left behind: the units a switch touched, a closure difference, the
// probes' last word. Pure: the commands that produce the text run in io/forensics.cpp.
#pragma once

#include "nixfleet/protocol/types.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::agent::core {

// A systemd unit name that may go into argv: unit characters only ([A-Za-z0-9:_.@\-]), a known
// type suffix, never a leading dash, at most 256 bytes.
bool is_unit_name(std::string_view name) noexcept;

// The units switch-to-configuration names as stopped, started, restarted, reloaded or failed
// ("starting the following units: a.service, b.socket"), each once, in order of appearance.
std::vector<std::string> units_in_switch_output(std::string_view output);

// The first column of `systemctl list-units --failed --plain --no-legend`: the failed units.
std::vector<std::string> failed_units_in(std::string_view listing);

struct closure_lines {
  std::vector<std::string> lines;  // at most `max`, each printable and at most 256 bytes
  std::uint32_t total = 0;         // lines before the list was cut
};
// `nix store diff-closures` output, one line per package that changed.
closure_lines closure_diff_lines(std::string_view output, std::size_t max);

// The probes' last results as evidence with their outputs: failing ones first, then in order, at
// most protocol::limits::max_evidence_probes, every text within the wire's bounds.
std::vector<protocol::probe_evidence> evidence_of(const protocol::health_report& health,
                                                  const std::function<std::string(const std::string&)>& output_of);

}  // namespace nixfleet::agent::core
