// The deploy lifecycle as a pure state machine: fed events (desired state, fetch and activation
// outcomes, probe rounds, timers, a restart's recovered record), it returns the actions the I/O
// layer must carry out, in order. No clocks, files, processes or sockets here.
#pragma once

#include "nixfleet/agent/core/decide.hpp"
#include "nixfleet/health/gate.hpp"
#include "nixfleet/protocol/types.hpp"

#include <optional>
#include <tuple>
#include <string>
#include <variant>
#include <vector>

namespace nixfleet::agent::core {

using time_point = health::gate_clock::time_point;

// Written durably before the system is touched; its presence at start means an activation or a
// rollback was interrupted.
struct in_flight {
  enum class phase { activating, rolling_back };
  std::string target;
  std::string previous;  // the path actually running before activation: the rollback target
  std::string release_id;
  std::optional<std::string> rollout_id;
  std::uint32_t attempt = 0;
  protocol::activation_mode mode = protocol::activation_mode::switch_;
  phase stage = phase::activating;
  std::string reason;   // why a rollback started
  bool manual = false;  // a break-glass rollback: nothing to quarantine
  // The high-water mark once this target is accepted (absent for a break-glass rollback).
  std::optional<high_water> accepts;
  friend bool operator==(const in_flight&, const in_flight&) = default;
};

// --- actions ---------------------------------------------------------------------------------

struct report_action {
  protocol::report_kind kind;
  std::optional<std::string> store_path;
  std::optional<std::string> release_id;
  std::optional<std::string> rollout_id;
  std::optional<std::string> message;
  std::optional<protocol::health_report> health;
  // Attach forensics: the target (store_path) failed on this host, and this is the generation it
  // is compared with (the one it went back to, or tried to).
  std::optional<std::string> investigate_against;
};
struct fetch_action {
  std::string store_path;
  std::vector<std::string> cache_urls;
};
struct write_record_action {
  in_flight record;
  bool notify = false;  // feed on_record_written once it is durable (or failed)
};
struct activate_action {  // nix-env --set (not for "test") + switch-to-configuration <mode>
  std::string store_path;
  protocol::activation_mode mode;
};
struct probe_round_action {  // run every probe at `at` and feed on_probe_round
  time_point at;
};
struct rollback_action {  // nix-env --set previous + previous/bin/switch-to-configuration <mode>
  std::string store_path;
  protocol::activation_mode mode;
};
struct clear_record_action {};
struct quarantine_action {
  quarantine_entry entry;
};
struct set_last_good_action {
  std::string store_path;
};
struct wait_action {  // call on_timer at `until`
  time_point until;
};
// A target was accepted (confirmed, or staged for boot): the high-water mark becomes `accepted`
// (computed by `raised`, never below the one held), the one step back and what is staged for boot
// are remembered.
struct accept_action {
  high_water accepted;
  std::string step_back;
  std::optional<std::string> staged_boot;
};

using action = std::variant<report_action, fetch_action, write_record_action, activate_action, probe_round_action,
                            rollback_action, clear_record_action, quarantine_action, set_last_good_action, wait_action,
                            accept_action>;
using actions = std::vector<action>;

// --- the machine -----------------------------------------------------------------------------

struct deployer_config {
  health::gate_config gate;
  std::vector<health::gated_probe> probes;
  bool dry_run = false;
  std::chrono::milliseconds rollback_retry{std::chrono::seconds(30)};
};

class deployer {
 public:
  enum class stage { idle, fetching, recording, activating, gating, rolling_back, rollback_pending };

  explicit deployer(deployer_config cfg) : cfg_(std::move(cfg)) {}

  // On agent start. `record` is the durable in-flight record, if any; `running` the path running now.
  actions start(std::optional<in_flight> record, const std::string& running, time_point now);

  // A desired state from the poller. Ignored unless idle (one deployment at a time).
  actions on_desired(const protocol::desired_state& desired, const host_facts& facts, time_point now);

  actions on_fetch_done(bool ok, const std::string& error, time_point now);
  // The in-flight record is durable (or could not be written: nothing has been touched yet).
  actions on_record_written(bool ok, const std::string& error, time_point now);
  // `running` is the path running after the switch (what /run/current-system points to).
  actions on_activation_done(bool ok, const std::string& error, const std::string& running, time_point now);
  actions on_probe_round(time_point at, const std::vector<protocol::probe_result>& results);
  actions on_rollback_done(bool ok, const std::string& error, const std::string& running, time_point now);
  actions on_timer(time_point now);

  // Break-glass: roll back to `to` (the last known good when empty). Only when idle.
  actions on_manual_rollback(const std::string& running, const std::string& to, time_point now);

  stage current() const noexcept { return stage_; }
  const std::optional<in_flight>& record() const noexcept { return record_; }

 private:
  actions begin_rollback(std::string reason, time_point now);
  actions finish_rollback(const std::string& message);
  actions start_gate(time_point now);
  report_action report_for(protocol::report_kind kind, std::optional<std::string> message = {}) const;

  deployer_config cfg_;
  stage stage_ = stage::idle;
  std::optional<protocol::desired_state> target_;
  std::optional<high_water> target_accepts_;  // the high-water mark once target_ is accepted
  std::optional<in_flight> record_;
  std::optional<health::gate> gate_;
  std::string running_;
  std::optional<protocol::health_report> last_health_;
  // The last refusal reported, so that every poll of the same state is not reported again.
  std::optional<std::tuple<verdict, std::string, std::uint32_t>> last_refusal_;
  std::vector<std::pair<std::string, std::uint32_t>> dry_run_done_;
  std::uint32_t rollback_failures_ = 0;  // of the rollback under way: forensics go with the first
};

std::string_view to_string(deployer::stage s) noexcept;

}  // namespace nixfleet::agent::core
