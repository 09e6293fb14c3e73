// The rollout state machine (architecture §7), pure: it is handed the rollout, what the
// coordinator knows about each host and the time, and answers with the next rollout, the changes
// to desired state to make and the timeline events to record. No I/O, no clock of its own.
#pragma once

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nixfleet::coordinator::core {

using protocol::timestamp;

// What the coordinator knows about one host of a rollout.
struct observation {
  std::string hostname;
  bool exists = true;  // false once the machine was deleted
  protocol::lifecycle lifecycle = protocol::lifecycle::active;
  std::optional<std::string> current_path;
  std::optional<std::string> desired_path;
  std::optional<std::string> desired_release_id;
  std::uint32_t attempt = 0;  // of its current desired state; every new desired state raises it
  // The latest lifecycle report (not heartbeats or periodic health), stamped with the
  // coordinator's receive time so that agent clocks do not matter.
  std::optional<protocol::report_kind> last_kind;
  std::optional<std::string> last_path;
  std::optional<std::string> last_message;
  std::optional<timestamp> last_at;
};

// A change to one machine's desired state.
struct desired_change {
  enum class reason { dispatch, reset_failed, revert };
  reason why = reason::dispatch;
  std::string hostname;
  std::string store_path;
  std::optional<std::string> release_id;  // the release whose signed entry it is, when known
  std::uint32_t attempt = 0;
};

struct step {
  protocol::rollout_detail rollout;       // the next state, new events appended
  std::vector<desired_change> changes;
  std::vector<protocol::rollout_event> events;  // the new events alone, seq continuing the timeline
};

// One host the release has an entry for, with the path the rollout will put on it.
struct candidate {
  std::string hostname;
  std::string store_path;
};

// Cuts `candidates` into waves: shuffled deterministically by rollout id, each wave size the
// cumulative share of the fleet reached by the end of that wave ("1", "10%", "100%" on 100 hosts
// gives 1, 9 and 90). Waves that would be empty are dropped; the last wave takes every remaining
// host. The rollout starts `running` with its first wave pending.
protocol::rollout_detail plan(std::string id, protocol::rollout_request spec, std::vector<candidate> candidates,
                              std::string created_by, timestamp now);

// Advances the rollout: follows host reports, times hosts out, dispatches the current wave,
// soaks and promotes, or applies `on_failure` when the wave's failures pass the threshold.
step reconcile(const protocol::rollout_detail& rollout, const std::vector<observation>& observed, timestamp now);

// Operator commands. They refuse (returning an error message) when the status does not allow them.
struct command_result {
  std::optional<step> ok;
  std::string refused;  // why, when !ok
};
command_result pause(const protocol::rollout_detail& rollout, timestamp now);
// retry_failed: failed hosts go back to pending and are dispatched again with a raised attempt;
// otherwise the failures so far are accepted and no longer count against the threshold.
command_result resume(const protocol::rollout_detail& rollout, bool retry_failed, timestamp now);
command_result cancel(const protocol::rollout_detail& rollout, timestamp now);

// Failures a wave of `hosts` hosts may have before `on_failure` applies: counts as given,
// percentages rounded down (so "10%" of 5 hosts is 0: any failure trips it).
std::uint64_t allowed_failures(const protocol::size_spec& threshold, std::uint64_t hosts) noexcept;

// True while the rollout still acts on its hosts (running or paused).
bool is_active(protocol::rollout_status s) noexcept;

// JSON for the fixture files and the store.
boost::json::value to_json(const observation& o);
protocol::decoded<observation> observation_from_json(const boost::json::value& v);
boost::json::value to_json(const desired_change& c);

}  // namespace nixfleet::coordinator::core
