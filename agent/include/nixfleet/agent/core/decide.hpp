// Whether a desired state should be deployed here: the agent's trust and safety checks, pure.
#pragma once

#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/types.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace nixfleet::agent::core {

// A target that failed here, refused until the coordinator raises `attempt` past this one.
struct quarantine_entry {
  std::string store_path;
  std::uint32_t attempt = 0;
  std::string reason;
};

struct host_facts {
  std::string machine_id;
  std::string current_path;  // what is running now
  bool on_hold = false;      // local break-glass hold
  const protocol::trusted_keys* keys = nullptr;  // nullptr or empty: signatures are not required
  const std::vector<quarantine_entry>* quarantine = nullptr;
};

enum class verdict { deploy, up_to_date, wrong_host, unknown_running, unsigned_target, bad_signature, quarantined, on_hold };

struct decision {
  verdict what = verdict::deploy;
  // What to report: up_to_date, rejected, heartbeat (held: deferred), or nothing yet (deploy: the
  // lifecycle reports).
  std::optional<protocol::report_kind> report;
  std::string message;
};

// The checks, in order: addressed to this host; already running; what runs is known (a store
// path, so that there is something to roll back to); on hold; signed by a trusted key for this
// hostname (when keys are configured); not quarantined at this attempt.
decision decide(const protocol::desired_state& desired, const host_facts& facts);

// True when `path` failed here at `attempt` or a later one.
bool is_quarantined(const std::vector<quarantine_entry>& q, const std::string& path, std::uint32_t attempt);

}  // namespace nixfleet::agent::core
