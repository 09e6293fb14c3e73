// Carries out the deployer's actions through the seams and feeds the outcomes back, keeping the
// durable state (record, last known good, quarantine, outbox) on disk as it goes.
#pragma once

#include "nixfleet/agent/core/deployer.hpp"
#include "nixfleet/agent/core/outbox.hpp"
#include "nixfleet/agent/io/metrics.hpp"
#include "nixfleet/agent/io/seams.hpp"
#include "nixfleet/agent/io/state_store.hpp"

#include <boost/asio/awaitable.hpp>

namespace nixfleet::agent::io {

struct driver_seams {
  nix_runner& nix;
  activator& activation;
  prober& probes;
  clock& time;
  investigator* forensics = nullptr;
};

class deploy_driver {
 public:
  deploy_driver(core::deployer& machine, driver_seams seams, const state_store& store, core::outbox& box,
                std::string machine_id, std::string profile, std::string agent_version);

  // Loads the durable state and resumes an interrupted activation or rollback. Completes when the
  // machine is idle again. Problems with corrupt files are logged and reported.
  boost::asio::awaitable<void> start();

  // One desired state from the poller (ignored while a deployment runs). Completes when idle.
  // `trust` (and the keys it points to) must outlive the call.
  boost::asio::awaitable<void> deliver(protocol::desired_state desired, const core::trust_policy& trust);

  // A revocation list fetched from the coordinator: kept (durably) when its signature verifies
  // with the trusted keys and it is newer than the one held; a running generation it revokes is
  // reported. Returns why it was refused, or empty.
  boost::asio::awaitable<std::string> offer_revocations(protocol::revocation_list list, const core::trust_policy& trust);

  // Break-glass rollback to the newest confirmed path that is not running.
  boost::asio::awaitable<void> manual_rollback();

  // Local hold: no deployment starts while set. Durable; reported as a heartbeat message.
  boost::asio::awaitable<void> set_hold(bool on);

  persistent_state& state() noexcept { return state_; }
  agent_metrics& metrics() noexcept { return metrics_; }
  const std::string& machine_id() const noexcept { return machine_id_; }
  core::host_facts facts(const core::trust_policy& trust);

  // Builds a full report from an action (seq is assigned by the outbox).
  protocol::report stamp(const core::report_action& a);

 private:
  boost::asio::awaitable<void> execute(core::actions acts);
  boost::asio::awaitable<std::optional<core::actions>> perform(const core::action& a);
  boost::asio::awaitable<void> emit(protocol::report r);
  // The forensics of a target that failed here (see report_action::investigate_against).
  boost::asio::awaitable<protocol::forensics_bundle> investigate(const core::report_action& a);
  boost::asio::awaitable<void> save_state();

  core::deployer& machine_;
  driver_seams seams_;
  const state_store& store_;
  core::outbox& outbox_;
  std::string machine_id_;
  std::string profile_;
  std::string agent_version_;
  core::time_point started_;
  persistent_state state_;
  agent_metrics metrics_;
  // Of the last activation: when it began (wall time) and what the switch printed.
  std::optional<protocol::timestamp> activation_began_;
  std::string switch_output_;
  // The failed units listed just before rolling back from `failed_target_`.
  std::string failed_target_;
  std::optional<failed_units_snapshot> failed_before_rollback_;
};

}  // namespace nixfleet::agent::io
