// Whether a desired state should be deployed here: the agent's trust and safety checks, pure.
#pragma once

#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/types.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nixfleet::agent::core {

// A target that failed here, refused until the coordinator raises `attempt` past this one.
struct quarantine_entry {
  std::string store_path;
  std::uint32_t attempt = 0;
  std::string reason;
};

// The newest signed release this host accepted (confirmed, or staged for boot): anything with a
// lower sequence is a downgrade. `at` is the newest signed time it accepted — that release's
// created_at or a later rollback statement's issued_at — which a new rollback statement must pass.
struct high_water {
  std::uint64_t sequence = 0;
  protocol::timestamp at{};
  std::string release_id;
  friend bool operator==(const high_water&, const high_water&) = default;
};

// What the operator configured the host to trust.
struct trust_policy {
  const protocol::trusted_keys* keys = nullptr;  // operator keys; none means nothing is deployable
  bool allow_unsigned = false;                   // explicitly opted out of signatures (no keys)
  // Refuse to newly activate a release signed longer ago than this (off when absent).
  std::optional<std::chrono::milliseconds> max_target_age;
};

struct host_facts {
  std::string machine_id;
  std::string current_path;  // what is running now
  bool on_hold = false;      // local break-glass hold
  trust_policy trust;
  protocol::timestamp now{};  // wall time, for key expiry, statement expiry and freshness
  std::optional<high_water> accepted;
  // The path that ran before the last accepted activation: the one step back that a coordinator's
  // revert or rollback may ask for without an operator's statement.
  std::optional<std::string> step_back;
  std::optional<std::string> staged_boot;  // set as the boot generation, not running yet
  const protocol::revocation_list* revocations = nullptr;  // verified, newest held
  const std::vector<quarantine_entry>* quarantine = nullptr;
};

enum class verdict {
  deploy,
  up_to_date,
  staged,
  wrong_host,
  unknown_running,
  unsigned_target,
  bad_signature,
  revoked,
  downgrade,
  stale,
  quarantined,
  on_hold
};

struct decision {
  verdict what = verdict::deploy;
  // What to report: up_to_date, rejected, heartbeat (held: deferred; staged), or nothing yet
  // (deploy: the lifecycle reports).
  std::optional<protocol::report_kind> report;
  std::string message;
};

// The checks, in order: addressed to this host; already running; already staged for boot; what
// runs is known (a store path, so that there is something to roll back to); on hold; signed (v2
// statement) by a trusted, unexpired, unrevoked key for this hostname; not revoked; not older
// than what the host accepted (unless the one step back, or with a valid rollback statement);
// fresh enough (when configured); not quarantined at this attempt.
decision decide(const protocol::desired_state& desired, const host_facts& facts);

// True when `path` failed here at `attempt` or a later one.
bool is_quarantined(const std::vector<quarantine_entry>& q, const std::string& path, std::uint32_t attempt);

// True when the list withdraws this release or store path.
bool is_revoked(const protocol::revocation_list& list, std::string_view release_id, std::string_view store_path);

// The high-water mark after accepting `desired` (never lower than `before`).
high_water raised(const std::optional<high_water>& before, const protocol::desired_state& desired);

}  // namespace nixfleet::agent::core
