// Reading what a failed target left behind.
#include "nixfleet/agent/core/forensics.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <algorithm>
#include <array>

namespace nixfleet::agent::core {
namespace {

constexpr std::array unit_suffixes = {".service", ".socket", ".target", ".timer", ".mount", ".automount", ".path",
                                      ".swap",    ".slice",  ".scope",  ".device"};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '.')) s.remove_suffix(1);
  return s;
}

template <class F>
void each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const auto nl = text.find('\n');
    f(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

void add_once(std::vector<std::string>& out, std::string_view unit) {
  if (is_unit_name(unit) && std::find(out.begin(), out.end(), unit) == out.end()) out.emplace_back(unit);
}

}  // namespace

bool is_unit_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 256 || name.front() == '-' || name.front() == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' || c == '_' ||
                    c == '.' || c == '@' || c == '-' || c == '\\';
    if (!ok) return false;
  }
  return std::any_of(unit_suffixes.begin(), unit_suffixes.end(),
                     [&](std::string_view s) { return name.size() > s.size() && name.ends_with(s); });
}

std::vector<std::string> units_in_switch_output(std::string_view output) {
  std::vector<std::string> units;
  each_line(output, [&](std::string_view line) {
    // "stopping the following units: …", "the following new units were started: …",
    // "warning: the following units failed: …", "NOT restarting the following changed units: …"
    if (line.find("the following") == std::string_view::npos || line.find("units") == std::string_view::npos) return;
    const auto colon = line.find(": ", line.find("the following"));
    if (colon == std::string_view::npos) return;
    auto rest = line.substr(colon + 2);
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      add_once(units, trim(rest.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  });
  return units;
}

std::vector<std::string> failed_units_in(std::string_view listing) {
  std::vector<std::string> units;
  each_line(listing, [&](std::string_view line) {
    line = trim(line);
    // A bullet ("●") may precede the name when the listing is not plain.
    if (line.starts_with("\u25cf")) line = trim(line.substr(std::string_view("\u25cf").size()));
    add_once(units, line.substr(0, line.find_first_of(" \t")));
  });
  if (units.size() > protocol::limits::max_failed_units) units.resize(protocol::limits::max_failed_units);
  return units;
}

closure_lines closure_diff_lines(std::string_view output, std::size_t max) {
  closure_lines out;
  each_line(output, [&](std::string_view line) {
    // One line each: an overlong one is cut (marked) and its marker's line break becomes a space.
    auto text = protocol::printable_excerpt(line, protocol::limits::max_short_text_bytes, protocol::keep::head);
    std::replace(text.begin(), text.end(), '\n', ' ');
    while (!text.empty() && text.back() == ' ') text.pop_back();
    if (text.empty()) return;
    ++out.total;
    if (out.lines.size() < max) out.lines.push_back(std::move(text));
  });
  return out;
}

std::vector<protocol::probe_evidence> evidence_of(const protocol::health_report& health,
                                                  const std::function<std::string(const std::string&)>& output_of) {
  std::vector<const protocol::probe_result*> order;
  for (const auto& r : health.results) order.push_back(&r);
  std::stable_partition(order.begin(), order.end(),
                        [](const auto* r) { return r->status == protocol::probe_status::fail; });
  if (order.size() > protocol::limits::max_evidence_probes) order.resize(protocol::limits::max_evidence_probes);
  std::vector<protocol::probe_evidence> out;
  for (const auto* r : order) {
    protocol::probe_evidence e{r->probe, r->type, r->status, {}, {}};
    if (r->message)
      e.message = protocol::printable_excerpt(*r->message, protocol::limits::max_evidence_message_bytes, protocol::keep::head);
    if (auto text = output_of ? output_of(r->probe) : std::string(); !text.empty())
      e.output = protocol::printable_excerpt(text, protocol::limits::max_evidence_output_bytes);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace nixfleet::agent::core
