// The deploy decision.
#include "nixfleet/agent/core/decide.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <algorithm>

namespace nixfleet::agent::core {

bool is_quarantined(const std::vector<quarantine_entry>& q, const std::string& path, std::uint32_t attempt) {
  return std::any_of(q.begin(), q.end(),
                     [&](const quarantine_entry& e) { return e.store_path == path && e.attempt >= attempt; });
}

decision decide(const protocol::desired_state& desired, const host_facts& facts) {
  using protocol::report_kind;
  if (desired.machine_id != facts.machine_id)
    return {verdict::wrong_host, report_kind::rejected,
            "desired state is addressed to " + desired.machine_id + ", this host is " + facts.machine_id};
  if (desired.store_path == facts.current_path) return {verdict::up_to_date, report_kind::up_to_date, {}};
  if (protocol::check_store_path(facts.current_path))
    return {verdict::unknown_running, report_kind::rejected,
            "cannot tell which system runs (no store path behind the current-system link): nothing to roll back to"};
  // A hold defers the target rather than refusing it: the report is a heartbeat, so that a rollout
  // does not count the host as failed and the deployment goes ahead after release-hold.
  if (facts.on_hold)
    return {verdict::on_hold, report_kind::heartbeat, "host is on hold: deployments wait for release-hold"};
  if (facts.keys != nullptr && !facts.keys->empty()) {
    if (!desired.entry_signature)
      return {verdict::unsigned_target, report_kind::rejected,
              "release entry is not signed and this host requires a trusted signature"};
    const auto ec = protocol::verify_entry(*facts.keys, desired.release_id, facts.machine_id, desired.store_path,
                                           desired.release_created_at, *desired.entry_signature);
    if (ec) return {verdict::bad_signature, report_kind::rejected, "release entry signature refused: " + ec.message()};
  }
  if (facts.quarantine != nullptr && is_quarantined(*facts.quarantine, desired.store_path, desired.attempt)) {
    std::string reason;
    for (const auto& e : *facts.quarantine)
      if (e.store_path == desired.store_path) reason = e.reason;
    return {verdict::quarantined, report_kind::rejected,
            "target failed here before (attempt " + std::to_string(desired.attempt) +
                "); waiting for a retry with a higher attempt" + (reason.empty() ? "" : ": " + reason)};
  }
  return {verdict::deploy, std::nullopt, {}};
}

}  // namespace nixfleet::agent::core
