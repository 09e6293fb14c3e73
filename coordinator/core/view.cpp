// Views of the fleet for the dashboard: where each machine stands, and a page of the fleet.
#include "nixfleet/coordinator/core/fleet.hpp"

#include <algorithm>

namespace nixfleet::coordinator::core {

std::string_view to_string(sync_state s) noexcept {
  switch (s) {
    case sync_state::in_sync: return "in_sync";
    case sync_state::behind: return "behind";
    case sync_state::failing: return "failing";
    case sync_state::unmanaged: return "unmanaged";
    case sync_state::unknown: return "unknown";
  }
  return "unknown";
}

sync_state sync_of(const machine_record& m) noexcept {
  if (!m.desired) return sync_state::unmanaged;
  if (!m.current_path) return sync_state::unknown;
  if (*m.current_path == m.desired->store_path) return sync_state::in_sync;
  if (m.last_report) {
    using k = protocol::report_kind;
    const auto kind = m.last_report->kind;
    const bool failed = kind == k::fetch_failed || kind == k::rejected || kind == k::activation_failed ||
                        kind == k::rolled_back || kind == k::rollback_failed;
    const auto& about = m.last_report->store_path;
    if (failed && (!about || *about == m.desired->store_path || kind == k::rolled_back)) return sync_state::failing;
  }
  return sync_state::behind;
}

std::string_view health_of(const machine_record& m) noexcept {
  if (!m.health) return "unknown";
  return m.health->passed ? "passing" : "failing";
}

namespace {

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

bool text_matches(const machine_record& m, std::string_view t) {
  if (t.empty() || contains(m.id, t)) return true;
  if (std::any_of(m.tags.begin(), m.tags.end(), [&](const std::string& tag) { return contains(tag, t); })) return true;
  if (m.current_path && contains(*m.current_path, t)) return true;
  return m.desired && contains(m.desired->store_path, t);
}

}  // namespace

fleet_page page_of(const fleet& f, const fleet_filter& q, timestamp now) {
  fleet_page p;
  p.total = f.machines.size();
  std::vector<fleet_row> matched;
  matched.reserve(f.machines.size());
  for (const auto& [id, m] : f.machines) {
    fleet_row row{&m, sync_of(m), health_of(m), !m.last_seen || now - *m.last_seen > q.stale_after, nullptr};
    ++p.by_sync[static_cast<std::size_t>(row.sync)];
    ++p.by_health[!m.health ? 2 : m.health->passed ? 0 : 1];
    ++p.by_lifecycle[static_cast<std::size_t>(m.state)];
    if (row.stale) ++p.stale;
    if (q.state && m.state != *q.state) continue;
    if (q.sync && row.sync != *q.sync) continue;
    if (q.health && row.health != *q.health) continue;
    if (q.stale_only && !row.stale) continue;
    if (q.tag && std::find(m.tags.begin(), m.tags.end(), *q.tag) == m.tags.end()) continue;
    if (!text_matches(m, q.text)) continue;
    if (auto r = f.active_rollout_of.find(id); r != f.active_rollout_of.end()) row.rollout = &r->second.rollout;
    matched.push_back(row);
  }
  p.matched = matched.size();
  const auto begin = std::min(q.offset, matched.size());
  const auto end = std::min(matched.size(), begin + q.limit);
  auto by_id = [](const fleet_row& a, const fleet_row& b) { return a.machine->id < b.machine->id; };
  // Only what the page needs is put in order.
  std::partial_sort(matched.begin(), matched.begin() + static_cast<std::ptrdiff_t>(end), matched.end(), by_id);
  p.rows.assign(matched.begin() + static_cast<std::ptrdiff_t>(begin), matched.begin() + static_cast<std::ptrdiff_t>(end));
  return p;
}

}  // namespace nixfleet::coordinator::core
