// The coordinator's durable memory, behind an interface: SQLite by default, room for PostgreSQL.
// Everything the coordinator serves lives in memory (loaded once at start); the store is written
// through, in transactions of change sets, and read back only for the audit log and at start.
#pragma once

#include "nixfleet/coordinator/core/records.hpp"
#include "nixfleet/protocol/audit.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nixfleet::coordinator::io {

using protocol::timestamp;

using core::audit_entry;
using core::change_set;
using core::key_record;
using core::lifecycle_event;
using core::machine_record;
using core::rollout_write;
using core::stored_report;

using core::loaded_state;

struct audit_query {
  std::optional<std::string> actor;
  std::optional<std::string> action;
  std::optional<std::string> target;
  std::optional<timestamp> since;
  std::uint64_t after_seq = 0;
  std::uint32_t limit = 100;
};

// A queued delivery, due to be tried.
struct delivery_job {
  std::uint64_t id = 0;
  std::string hook_id;
  std::string event;
  std::string body;
  std::uint32_t attempts = 0;  // before this one
  timestamp created_at{};
};

// What became of one attempt: delivered, to be tried again at `next_at`, or given up (failed).
struct delivery_outcome {
  std::uint64_t id = 0;
  protocol::delivery_state state = protocol::delivery_state::pending;
  std::uint32_t attempts = 0;  // with this one
  std::optional<timestamp> next_at;
  std::optional<timestamp> delivered_at;
  std::optional<std::uint32_t> status;
  std::optional<std::string> error;
};

using protocol::audit_checkpoint;
using protocol::audit_verification;

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
  // The chain, and every checkpoint against the row it names (signatures checked with `key`).
  virtual audit_verification verify_audit(const std::optional<protocol::public_key>& key = std::nullopt) = 0;
  // Signs the chain head as it is now and stores the checkpoint; nothing when the newest
  // checkpoint already covers it (or the log is empty).
  virtual std::optional<audit_checkpoint> checkpoint_audit(const protocol::secret_key& key, timestamp now) = 0;
  // Checkpoints of rows after `after_seq`, oldest first, at most `limit`.
  virtual std::vector<audit_checkpoint> audit_checkpoints(std::uint64_t after_seq, std::uint32_t limit) = 0;
  // Deletes reports received before `before`, then the oldest until their bodies take at most
  // `max_bytes`; returns how many went.
  virtual std::uint64_t prune_reports(timestamp before, std::uint64_t max_bytes) = 0;
  // A machine's reports, newest first; only those of `kinds` when it is not empty.
  virtual std::vector<stored_report> reports(const std::string& machine_id, std::uint32_t limit,
                                             const std::vector<protocol::report_kind>& kinds = {}) = 0;
  virtual std::uint64_t report_count() = 0;
  // Webhook deliveries: pending ones due by `now`, oldest first; an attempt's outcome; a hook's
  // log, newest first; how many wait per hook; settled ones (delivered or failed) made before
  // `before` forgotten.
  virtual std::vector<delivery_job> due_deliveries(timestamp now, std::uint32_t limit) = 0;
  virtual void record_delivery(const delivery_outcome& outcome) = 0;
  virtual std::vector<protocol::webhook_delivery> deliveries(const std::string& hook_id, std::uint32_t limit) = 0;
  virtual std::map<std::string, std::uint64_t> pending_deliveries() = 0;
  virtual std::uint64_t prune_deliveries(timestamp before) = 0;
  // A key by the hash of its secret (keys made by another process after this one loaded).
  virtual std::optional<key_record> find_key(const std::string& hash) = 0;
  // Every key, as stored (with its last use as last written).
  virtual std::vector<key_record> list_keys() = 0;
  // Statements run since open: tests use it to show the poll path never reaches the store.
  virtual std::uint64_t operations() const noexcept = 0;
};

// Opens (creating when missing) an SQLite database: WAL, foreign keys, migrations applied.
std::unique_ptr<storage> open_sqlite(const std::string& path);

// The audit hash of one event: sha256(prev_hash ‖ canonical JSON of {seq, at, actor, action,
// target, detail}), hex.
using protocol::audit_row_hash;

// JSON of a machine record as stored (and loaded back).
boost::json::value to_json(const machine_record& m);
machine_record machine_from_json(const boost::json::value& v);
boost::json::value to_json(const core::enroll_token_record& t);
core::enroll_token_record token_from_json(const boost::json::value& v);
boost::json::value to_json(const core::certificate_record& c);
core::certificate_record certificate_from_json(const boost::json::value& v);
boost::json::value to_json(const core::webhook_record& w);
core::webhook_record webhook_from_json(const boost::json::value& v);

}  // namespace nixfleet::coordinator::io
