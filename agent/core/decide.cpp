// The deploy decision: the agent's answer to a coordinator it does not trust.
#include "nixfleet/agent/core/decide.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <algorithm>

namespace nixfleet::agent::core {
namespace {

using protocol::report_kind;

decision refuse(verdict v, std::string message) { return {v, report_kind::rejected, std::move(message)}; }

std::string describe_release(std::string_view id, std::uint64_t sequence) {
  return "release " + std::string(id) + " (#" + std::to_string(sequence) + ")";
}

// Empty when the rollback statement lets this host go back to desired.store_path; else why not.
std::string rollback_statement_problem(const protocol::desired_state& desired, const host_facts& facts,
                                       const protocol::verify_options& opts) {
  if (!desired.rollback) return "no operator-signed rollback statement came with it";
  const auto& st = *desired.rollback;
  if (st.hostname != facts.machine_id) return "the rollback statement is for " + st.hostname;
  if (st.store_path != desired.store_path) return "the rollback statement is for another store path";
  if (auto ec = protocol::verify_rollback(*facts.trust.keys, st, opts))
    return "the rollback statement's signature is refused: " + ec.message();
  if (facts.now >= st.expires_at) return "the rollback statement expired at " + protocol::format_time(st.expires_at);
  if (facts.accepted && st.issued_at <= facts.accepted->at)
    return "the rollback statement (issued " + protocol::format_time(st.issued_at) +
           ") is not newer than what this host accepted since (" + protocol::format_time(facts.accepted->at) + ")";
  return {};
}

}  // namespace

bool is_quarantined(const std::vector<quarantine_entry>& q, const std::string& path, std::uint32_t attempt) {
  return std::any_of(q.begin(), q.end(),
                     [&](const quarantine_entry& e) { return e.store_path == path && e.attempt >= attempt; });
}

bool is_revoked(const protocol::revocation_list& list, std::string_view release_id, std::string_view store_path) {
  return std::find(list.releases.begin(), list.releases.end(), release_id) != list.releases.end() ||
         std::find(list.store_paths.begin(), list.store_paths.end(), store_path) != list.store_paths.end();
}

high_water raised(const std::optional<high_water>& before, const protocol::desired_state& desired) {
  high_water hw = before.value_or(high_water{});
  if (desired.release_sequence >= hw.sequence) {
    hw.sequence = desired.release_sequence;
    hw.release_id = desired.release_id;
  }
  hw.at = std::max(hw.at, desired.release_created_at);
  if (desired.rollback) hw.at = std::max(hw.at, desired.rollback->issued_at);
  return hw;
}

decision decide(const protocol::desired_state& desired, const host_facts& facts) {
  if (desired.machine_id != facts.machine_id)
    return refuse(verdict::wrong_host,
                  "desired state is addressed to " + desired.machine_id + ", this host is " + facts.machine_id);
  if (desired.store_path == facts.current_path) return {verdict::up_to_date, report_kind::up_to_date, {}};
  if (desired.activation == protocol::activation_mode::boot && facts.staged_boot == desired.store_path)
    return {verdict::staged, report_kind::heartbeat, "staged as the boot generation; it runs after the next reboot"};
  if (protocol::check_store_path(facts.current_path))
    return refuse(verdict::unknown_running,
                  "cannot tell which system runs (no store path behind the current-system link): nothing to roll back to");
  // A hold defers the target rather than refusing it: the report is a heartbeat, so that a rollout
  // does not count the host as failed and the deployment goes ahead after release-hold.
  if (facts.on_hold) return {verdict::on_hold, report_kind::heartbeat, "host is on hold: deployments wait for release-hold"};

  const bool no_keys = facts.trust.keys == nullptr || facts.trust.keys->empty();
  if (no_keys && !facts.trust.allow_unsigned)
    return refuse(verdict::unsigned_target, "this host has no trusted_keys and does not allow unsigned targets");
  const bool verified = !no_keys;
  protocol::verify_options opts{.now = facts.now};
  if (facts.revocations) opts.revoked_keys = facts.revocations->keys;
  if (verified) {
    if (!desired.entry_signature)
      return refuse(verdict::unsigned_target, "release entry is not signed and this host requires a trusted signature");
    const auto statement = protocol::entry_statement_of(desired);
    if (auto ec = protocol::verify_entry(*facts.trust.keys, statement, *desired.entry_signature, opts)) {
      if (protocol::is_v1_entry_signature(*facts.trust.keys, statement, *desired.entry_signature))
        return refuse(verdict::bad_signature,
                      "release entry carries a v1 signature, which covers neither activation, caches nor sequence: "
                      "re-sign the release with `nixfleet release create`");
      return refuse(verdict::bad_signature, "release entry signature refused: " + ec.message());
    }
  }
  if (facts.revocations && is_revoked(*facts.revocations, desired.release_id, desired.store_path))
    return refuse(verdict::revoked, describe_release(desired.release_id, desired.release_sequence) +
                                        " or its store path is revoked by the operator (revocation list #" +
                                        std::to_string(facts.revocations->sequence) + ")");

  // Going back: only one step, or with the operator's word for it.
  const bool step_back = facts.step_back == desired.store_path;
  bool by_statement = false;
  if (verified && facts.accepted && desired.release_sequence < facts.accepted->sequence && !step_back) {
    const auto problem = rollback_statement_problem(desired, facts, opts);
    if (!problem.empty())
      return refuse(verdict::downgrade, describe_release(desired.release_id, desired.release_sequence) +
                                            " is older than " +
                                            describe_release(facts.accepted->release_id, facts.accepted->sequence) +
                                            ", which this host accepted, and is not its one step back: " + problem);
    by_statement = true;
  }
  if (verified && facts.trust.max_target_age && !step_back && !by_statement &&
      facts.now - desired.release_created_at > *facts.trust.max_target_age)
    return refuse(verdict::stale, describe_release(desired.release_id, desired.release_sequence) + " was signed at " +
                                      protocol::format_time(desired.release_created_at) +
                                      ", longer ago than max_target_age_s allows");

  if (facts.quarantine != nullptr && is_quarantined(*facts.quarantine, desired.store_path, desired.attempt)) {
    std::string reason;
    for (const auto& e : *facts.quarantine)
      if (e.store_path == desired.store_path) reason = e.reason;
    return refuse(verdict::quarantined, "target failed here before (attempt " + std::to_string(desired.attempt) +
                                            "); waiting for a retry with a higher attempt" +
                                            (reason.empty() ? "" : ": " + reason));
  }
  return {verdict::deploy, std::nullopt, {}};
}

}  // namespace nixfleet::agent::core
