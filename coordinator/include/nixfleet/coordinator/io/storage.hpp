// The coordinator's durable memory, behind an interface: SQLite by default, room for PostgreSQL.
// Everything the coordinator serves lives in memory (loaded once at start); the store is written
// through, in transactions of change sets, and read back only for the audit log and at start.
#pragma once

#include "nixfleet/protocol/types.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nixfleet::coordinator::io {

using protocol::timestamp;

// The latest lifecycle report of a machine, as the reconciler reads it.
struct lifecycle_event {
  protocol::report_kind kind = protocol::report_kind::heartbeat;
  std::optional<std::string> store_path;
  std::optional<std::string> message;
  timestamp received_at{};
  friend bool operator==(const lifecycle_event&, const lifecycle_event&) = default;
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
  std::optional<protocol::report> last_report;
  std::optional<protocol::health_report> health;
  std::optional<std::string> health_path;  // the store path `health` was measured on
  std::optional<lifecycle_event> last_event;
  std::vector<protocol::confirmed_generation> history;  // newest first, capped
  std::uint64_t acked_seq = 0;

  friend bool operator==(const machine_record&, const machine_record&) = default;
};

struct stored_report {
  std::string machine_id;
  timestamp received_at{};
  protocol::report body;
};

struct audit_entry {
  timestamp at{};
  std::string actor;
  std::string action;
  std::string target;
  boost::json::object detail;
};

struct key_record {
  protocol::api_key_info info;
  std::string hash;  // sha256 hex of the whole key
};

// A rollout write: the rollout without hosts and events, the hosts that changed (by index),
// and the new timeline events.
struct rollout_write {
  protocol::rollout_detail head;  // hosts and events empty
  std::vector<std::pair<std::size_t, protocol::rollout_host>> hosts;
  std::vector<protocol::rollout_event> events;
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

  bool empty() const noexcept {
    return machines.empty() && reports.empty() && releases.empty() && !revocations &&
           deleted_releases.empty() && rollouts.empty() && keys.empty() && deleted_keys.empty() && audit.empty();
  }
};

struct loaded_state {
  std::vector<machine_record> machines;
  std::vector<protocol::release> releases;
  std::vector<protocol::rollout_detail> rollouts;
  std::vector<key_record> keys;
  std::optional<protocol::revocation_list> revocations;
};

struct audit_query {
  std::optional<std::string> actor;
  std::optional<std::string> action;
  std::optional<std::string> target;
  std::optional<timestamp> since;
  std::uint64_t after_seq = 0;
  std::uint32_t limit = 100;
};

struct audit_verdict {
  bool ok = true;
  std::uint64_t rows = 0;
  std::optional<std::uint64_t> bad_seq;  // the first row whose hash does not match
  std::string reason;
};

// Thrown by a store when the database cannot do what was asked. The message is for the log,
// never for a response.
struct storage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class storage {
 public:
  virtual ~storage() = default;

  virtual loaded_state load() = 0;
  // Commits each set in its own savepoint of one transaction; the result per set says whether it
  // landed (an empty string) or why not.
  virtual std::vector<std::string> commit(const std::vector<const change_set*>& sets) = 0;
  virtual std::vector<protocol::audit_event> audit(const audit_query& q) = 0;
  virtual audit_verdict verify_audit() = 0;
  virtual std::uint64_t prune_reports(timestamp before) = 0;
  virtual std::vector<stored_report> reports(const std::string& machine_id, std::uint32_t limit) = 0;
  virtual std::uint64_t report_count() = 0;
  // A key by the hash of its secret (keys made by another process after this one loaded).
  virtual std::optional<key_record> find_key(const std::string& hash) = 0;
  // Statements run since open: tests use it to show the poll path never reaches the store.
  virtual std::uint64_t operations() const noexcept = 0;
};

// Opens (creating when missing) an SQLite database: WAL, foreign keys, migrations applied.
std::unique_ptr<storage> open_sqlite(const std::string& path);

// The audit hash of one event: sha256(prev_hash ‖ canonical JSON of {seq, at, actor, action,
// target, detail}), hex.
std::string audit_hash(const protocol::audit_event& e);

// JSON of a machine record as stored (and loaded back).
boost::json::value to_json(const machine_record& m);
machine_record machine_from_json(const boost::json::value& v);

}  // namespace nixfleet::coordinator::io
