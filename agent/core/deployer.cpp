// The deploy lifecycle: decide → fetch → record → activate → gate → confirm, or roll back to the
// recorded previous path and quarantine the target; and recovery from an interrupted run.
#include "nixfleet/agent/core/deployer.hpp"

#include <algorithm>

namespace nixfleet::agent::core {

using protocol::report_kind;

std::string_view to_string(deployer::stage s) noexcept {
  switch (s) {
    case deployer::stage::idle: return "idle";
    case deployer::stage::fetching: return "fetching";
    case deployer::stage::recording: return "recording";
    case deployer::stage::activating: return "activating";
    case deployer::stage::gating: return "gating";
    case deployer::stage::rolling_back: return "rolling_back";
    case deployer::stage::rollback_pending: return "rollback_pending";
  }
  return "unknown";
}

report_action deployer::report_for(report_kind kind, std::optional<std::string> message) const {
  report_action r{kind, {}, {}, {}, std::move(message), {}};
  if (record_) {
    r.store_path = record_->target;
    // A break-glass rollback has no release behind it: leave the field out rather than send "".
    if (!record_->release_id.empty()) r.release_id = record_->release_id;
    r.rollout_id = record_->rollout_id;
  } else if (target_) {
    r.store_path = target_->store_path;
    r.release_id = target_->release_id;
    r.rollout_id = target_->rollout_id;
  }
  return r;
}

actions deployer::start(std::optional<in_flight> record, const std::string& running, time_point now) {
  running_ = running;
  if (!record) {
    stage_ = stage::idle;
    return {};
  }
  record_ = std::move(record);
  if (record_->stage == in_flight::phase::rolling_back) {
    if (running == record_->previous) return finish_rollback(record_->reason + " (completed after a restart)");
    stage_ = stage::rolling_back;
    return {report_for(report_kind::activating, "agent restarted during a rollback; rolling back again"),
            rollback_action{record_->previous, record_->mode}};
  }
  // Interrupted during activation: finish the gate if the target runs, else roll back. A "boot"
  // activation cannot be proven before the reboot, so it is undone.
  if (running == record_->target && record_->mode != protocol::activation_mode::boot) {
    auto acts = actions{report_for(report_kind::activated, "agent restarted during activation; resuming the health gate")};
    auto gate_acts = start_gate(now);
    acts.insert(acts.end(), gate_acts.begin(), gate_acts.end());
    return acts;
  }
  return begin_rollback("activation was interrupted by an agent restart", now);
}

actions deployer::on_desired(const protocol::desired_state& desired, const host_facts& facts, time_point) {
  if (stage_ != stage::idle) return {};
  running_ = facts.current_path;
  const auto d = decide(desired, facts);
  if (d.what != verdict::deploy) {
    const auto key = std::tuple{d.what, desired.store_path, desired.attempt};
    if (last_refusal_ == key) return {};
    last_refusal_ = key;
    return {report_action{*d.report, desired.store_path, desired.release_id, desired.rollout_id,
                          d.message.empty() ? std::nullopt : std::optional(d.message), {}}};
  }
  target_accepts_ = raised(facts.accepted, desired);
  if (cfg_.dry_run) {
    const auto done = std::pair{desired.store_path, desired.attempt};
    if (std::find(dry_run_done_.begin(), dry_run_done_.end(), done) != dry_run_done_.end()) return {};
  }
  last_refusal_.reset();
  target_ = desired;
  stage_ = stage::fetching;
  return {report_for(report_kind::fetching), fetch_action{desired.store_path, desired.cache_urls}};
}

actions deployer::on_fetch_done(bool ok, const std::string& error, time_point) {
  if (stage_ != stage::fetching || !target_) return {};
  if (!ok) {
    auto r = report_for(report_kind::fetch_failed, error);
    stage_ = stage::idle;
    target_.reset();
    return {r};
  }
  if (cfg_.dry_run) {
    dry_run_done_.emplace_back(target_->store_path, target_->attempt);
    auto r = report_for(report_kind::fetched, "dry run: would activate with " +
                                                  std::string(protocol::to_string(target_->activation)));
    stage_ = stage::idle;
    target_.reset();
    return {r};
  }
  record_ = in_flight{target_->store_path, running_,        target_->release_id,           target_->rollout_id,
                      target_->attempt,    target_->activation, in_flight::phase::activating, {},
                      false,               target_accepts_};
  stage_ = stage::recording;
  return {report_for(report_kind::fetched), write_record_action{*record_, true}};
}

actions deployer::on_record_written(bool ok, const std::string& error, time_point) {
  if (stage_ != stage::recording || !record_) return {};
  if (!ok) {
    // Nothing was touched: refuse to activate without a durable record to recover from.
    auto r = report_for(report_kind::activation_failed, "cannot record the in-flight state: " + error);
    record_.reset();
    target_.reset();
    stage_ = stage::idle;
    return {r};
  }
  stage_ = stage::activating;
  return {report_for(report_kind::activating), activate_action{record_->target, record_->mode}};
}

actions deployer::on_activation_done(bool ok, const std::string& error, const std::string& running, time_point now) {
  if (stage_ != stage::activating || !record_) return {};
  running_ = running;
  if (!ok) return begin_rollback("activation failed: " + error, now);
  if (record_->mode == protocol::activation_mode::boot) {
    // Staged once: accepted (the high-water mark moves, the next poll of the same state is not
    // applied again) but not proven, so it never becomes the last known good.
    auto r = report_for(report_kind::activated, "staged as the boot generation; it runs after the next reboot");
    actions acts;
    if (record_->accepts) acts.push_back(accept_action{*record_->accepts, record_->previous, record_->target});
    acts.push_back(r);
    acts.push_back(clear_record_action{});
    record_.reset();
    target_.reset();
    stage_ = stage::idle;
    return acts;
  }
  if (running != record_->target)
    return begin_rollback("the switch finished but " + running + " runs instead of the target", now);
  auto acts = actions{report_for(report_kind::activated)};
  auto gate_acts = start_gate(now);
  acts.insert(acts.end(), gate_acts.begin(), gate_acts.end());
  return acts;
}

actions deployer::start_gate(time_point now) {
  gate_.emplace(cfg_.gate, cfg_.probes, now);
  last_health_.reset();
  stage_ = stage::gating;
  return {probe_round_action{gate_->next_check()}};
}

actions deployer::on_probe_round(time_point at, const std::vector<protocol::probe_result>& results) {
  if (stage_ != stage::gating || !gate_ || !record_) return {};
  gate_->record(at, results);
  protocol::health_report health{true, results};
  for (const auto& p : cfg_.probes) {
    const auto it = std::find_if(results.begin(), results.end(),
                                 [&](const protocol::probe_result& r) { return r.probe == p.name; });
    if (p.required && (it == results.end() || it->status != protocol::probe_status::pass)) health.passed = false;
  }
  last_health_ = health;
  const auto v = gate_->evaluate(at);
  if (v.state == health::gate_state::pending) return {probe_round_action{gate_->next_check()}};
  if (v.state == health::gate_state::fail) return begin_rollback("health gate failed: " + v.reason, at);

  auto confirmed = report_for(report_kind::confirmed, v.reason);
  confirmed.health = health;
  const auto path = record_->target;
  actions acts{set_last_good_action{path}};
  if (record_->accepts) acts.push_back(accept_action{*record_->accepts, record_->previous, std::nullopt});
  record_.reset();
  target_.reset();
  gate_.reset();
  stage_ = stage::idle;
  // The new last known good, the high-water mark and the report are durable before the record
  // goes: a crash in between re-runs the gate and reports again (at least once, never lost).
  acts.push_back(confirmed);
  acts.push_back(clear_record_action{});
  return acts;
}

actions deployer::begin_rollback(std::string reason, time_point) {
  record_->stage = in_flight::phase::rolling_back;
  record_->reason = std::move(reason);
  gate_.reset();
  stage_ = stage::rolling_back;
  rollback_failures_ = 0;
  return {write_record_action{*record_}, rollback_action{record_->previous, record_->mode}};
}

actions deployer::on_rollback_done(bool ok, const std::string& error, const std::string& running, time_point now) {
  if (stage_ != stage::rolling_back || !record_) return {};
  running_ = running;
  const bool back = ok && (record_->mode == protocol::activation_mode::boot || running == record_->previous);
  if (back) return finish_rollback(record_->reason);
  stage_ = stage::rollback_pending;
  auto r = report_for(report_kind::rollback_failed,
                      "rolling back to " + record_->previous + " failed: " +
                          (ok ? running + " runs instead" : error) + "; retrying");
  if (rollback_failures_++ == 0 && !record_->manual) {
    r.health = last_health_;
    r.investigate_against = record_->previous;
  }
  return {r, wait_action{now + cfg_.rollback_retry}};
}

actions deployer::on_timer(time_point) {
  if (stage_ != stage::rollback_pending || !record_) return {};
  stage_ = stage::rolling_back;
  return {rollback_action{record_->previous, record_->mode}};
}

actions deployer::finish_rollback(const std::string& message) {
  actions acts;
  if (!record_->manual) {
    acts.push_back(quarantine_action{{record_->target, record_->attempt, record_->reason}});
    // The `rolled_back` report is the refusal of this target at this attempt: the next poll of
    // it is not reported again as a quarantine `rejected` (which would bury the real reason).
    last_refusal_ = std::tuple{verdict::quarantined, record_->target, record_->attempt};
  }
  auto r = report_for(report_kind::rolled_back, message);
  r.health = last_health_;
  if (!record_->manual) r.investigate_against = record_->previous;
  // Reported before the record goes, as for confirmation.
  acts.push_back(r);
  acts.push_back(clear_record_action{});
  record_.reset();
  target_.reset();
  gate_.reset();
  last_health_.reset();
  stage_ = stage::idle;
  return acts;
}

actions deployer::on_manual_rollback(const std::string& running, const std::string& to, time_point) {
  if (stage_ != stage::idle)
    return {report_action{report_kind::rejected, {}, {}, {}, std::string("manual rollback refused: a deployment is in progress (") +
                                                                  std::string(to_string(stage_)) + ")", {}}};
  if (to.empty() || to == running)
    return {report_action{report_kind::rejected, {}, {}, {}, std::string("manual rollback: nothing to roll back to"), {}}};
  running_ = running;
  record_ = in_flight{running, to, {}, {}, 0, protocol::activation_mode::switch_, in_flight::phase::rolling_back,
                      "manual rollback from " + running, true, std::nullopt};
  stage_ = stage::rolling_back;
  return {write_record_action{*record_}, rollback_action{to, protocol::activation_mode::switch_}};
}

}  // namespace nixfleet::agent::core
