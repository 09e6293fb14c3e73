// What the coordinator knows, as plain values: machines, keys, and the change sets that carry a
// step of the fleet to the store. Shared by the pure fleet core and the storage drivers.
#pragma once

#include "nixfleet/protocol/types.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nixfleet::coordinator::core {

using protocol::timestamp;

// The latest lifecycle report of a machine, as the reconciler reads it.
struct lifecycle_event {
  protocol::report_kind kind = protocol::report_kind::heartbeat;
  std::optional<std::string> store_path;
  std::optional<std::string> message;
  timestamp received_at{};
  friend bool operator==(const lifecycle_event&, const lifecycle_event&) = default;
};

// A machine's last report, kept compact (a fleet holds one per machine): what the core reads of it
// (its time, kind and the path it is about) as fields, the rest as its JSON without what the machine
// record already holds — its health when that is the machine's, its current and booted paths when
// they are the machine's. Made by set_last_report, read whole with last_report_of.
struct last_report_record {
  timestamp at{};
  protocol::report_kind kind = protocol::report_kind::heartbeat;
  std::optional<std::string> store_path;
  std::string rest;             // JSON of its other fields, less those shared with the record
  std::uint8_t shares = 0;      // which parts are the machine's: bits of `shared`
  enum shared : std::uint8_t { health = 1, current = 2, booted = 4 };
  friend bool operator==(const last_report_record&, const last_report_record&) = default;
};

// Everything the coordinator knows about one machine.
struct machine_record {
  std::string id;
  std::vector<std::string> tags;
  protocol::lifecycle state = protocol::lifecycle::active;
  std::optional<protocol::desired_state> desired;  // poll_hint is added when served
  std::uint32_t attempt = 0;                        // last attempt handed out; never goes down
  std::optional<std::string> current_path;
  std::optional<std::string> booted_path;
  std::optional<timestamp> last_seen;
  std::optional<last_report_record> last_report;  // compact: see last_report_of
  std::optional<protocol::health_report> health;
  // The store path `health` was measured on (health_path_of): current_path when health_on_current
  // (kept once), else health_path.
  bool health_on_current = false;
  std::optional<std::string> health_path;
  std::optional<lifecycle_event> last_event;
  // The kind and path of the last outcome written to the audit log: a repeat of it is not
  // audited again (state transitions are; a host, or an attacker with its certificate, sending
  // the same failure a thousand times is not a thousand rows).
  std::optional<std::pair<protocol::report_kind, std::optional<std::string>>> last_audited;
  std::vector<protocol::confirmed_generation> history;  // newest first, capped
  std::uint64_t acked_seq = 0;
  // Cut off by `machines revoke` (or decommissioning): agent routes refuse it, whatever certificate
  // it shows, until an operator enrolls it again with a new token.
  std::optional<timestamp> revoked_at;

  friend bool operator==(const machine_record&, const machine_record&) = default;
};

std::optional<std::string> health_path_of(const machine_record& m);
// After current_path is set.
void set_health_path(machine_record& m, std::optional<std::string> path);

// Keeps `r` as the machine's last report; after its health and paths were applied to `m`, so that
// what they share is kept once.
void set_last_report(machine_record& m, const protocol::report& r);
// The machine's last report whole (it must have one).
protocol::report last_report_of(const machine_record& m);

struct stored_report {
  std::string machine_id;
  timestamp received_at{};
  protocol::report body;
  friend bool operator==(const stored_report&, const stored_report&) = default;
};

struct audit_entry {
  timestamp at{};
  std::string actor;
  std::string action;
  std::string target;
  boost::json::object detail;
  friend bool operator==(const audit_entry&, const audit_entry&) = default;
};

struct key_record {
  protocol::api_key_info info;
  std::string hash;  // sha256 hex of the whole key
  friend bool operator==(const key_record&, const key_record&) = default;
};

// A one-time enrollment token: only its hash is kept. Used once, or never after it expires.
struct enroll_token_record {
  std::string hash;  // sha256 hex of the whole token
  std::string machine_id;
  std::vector<std::string> tags;
  timestamp created_at{};
  timestamp expires_at{};
  std::string created_by;
  std::optional<timestamp> used_at;  // also set when the machine is revoked before it enrolled
  friend bool operator==(const enroll_token_record&, const enroll_token_record&) = default;
};

// A client certificate the fleet CA issued (never its key: that stays on the host).
struct certificate_record {
  std::string serial;  // lowercase hex
  std::string machine_id;
  timestamp not_before{};
  timestamp not_after{};
  std::optional<timestamp> revoked_at;
  friend bool operator==(const certificate_record&, const certificate_record&) = default;
};

// A webhook: where events go, and the secret its deliveries are signed with (never shown).
struct webhook_record {
  protocol::webhook_info info;  // `pending` is not kept
  std::optional<std::string> secret;
  friend bool operator==(const webhook_record&, const webhook_record&) = default;
};

// An event to send to one hook, queued in the same transaction as the change that made it. The
// store numbers it (the delivery id) and keeps it until delivered or given up.
struct delivery_new {
  std::string hook_id;
  std::string event;
  std::string body;  // JSON: {event, at, actor, target, detail}
  timestamp created_at{};
  friend bool operator==(const delivery_new&, const delivery_new&) = default;
};

// A rollout write: the rollout without hosts and events, the hosts that changed (by index),
// and the new timeline events.
struct rollout_write {
  protocol::rollout_detail head;  // hosts and events empty
  std::vector<std::pair<std::size_t, protocol::rollout_host>> hosts;
  std::vector<protocol::rollout_event> events;
  friend bool operator==(const rollout_write&, const rollout_write&) = default;
};

// One transaction: all of it lands, or none.
struct change_set {
  std::vector<machine_record> machines;  // upserts
  std::vector<stored_report> reports;  // a (machine, seq) already stored is kept, not doubled
  std::vector<protocol::release> releases;
  std::vector<std::string> deleted_releases;
  std::vector<rollout_write> rollouts;
  std::vector<key_record> keys;
  std::vector<std::string> deleted_keys;
  std::vector<audit_entry> audit;  // appended in order and chained
  std::optional<protocol::revocation_list> revocations;  // replaces the stored list
  std::vector<enroll_token_record> tokens;              // upserts
  std::vector<certificate_record> certificates;         // upserts
  std::vector<webhook_record> webhooks;                 // upserts
  std::vector<std::string> deleted_webhooks;            // with their deliveries
  std::vector<delivery_new> deliveries;                 // queued

  bool empty() const noexcept {
    return machines.empty() && reports.empty() && releases.empty() && !revocations && tokens.empty() &&
           certificates.empty() && webhooks.empty() && deleted_webhooks.empty() && deliveries.empty() &&
           deleted_releases.empty() && rollouts.empty() && keys.empty() && deleted_keys.empty() && audit.empty();
  }
  friend bool operator==(const change_set&, const change_set&) = default;
};

// What a store holds, as loaded at start.
struct loaded_state {
  std::vector<machine_record> machines;
  std::vector<protocol::release> releases;
  std::vector<protocol::rollout_detail> rollouts;
  std::vector<key_record> keys;
  std::optional<protocol::revocation_list> revocations;
  std::vector<enroll_token_record> tokens;
  std::vector<certificate_record> certificates;
  std::vector<webhook_record> webhooks;
};

}  // namespace nixfleet::coordinator::core
