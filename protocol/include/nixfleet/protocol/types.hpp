// The wire types of protocol version 1 (architecture §3), as plain structs.
#pragma once

#include "nixfleet/protocol/time.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::protocol {

inline constexpr std::string_view protocol_header = "X-Nixfleet-Protocol";
inline constexpr int protocol_version = 1;
// On every answer to a poll from a coordinator that holds long polls: the longest `wait` (seconds)
// it holds one for. An agent long-polls only while its coordinator says so.
inline constexpr std::string_view long_poll_header = "X-Nixfleet-Long-Poll";

// Limits every decoder enforces (HTTP bodies are capped separately, 1 MiB by default).
struct limits {
  static constexpr std::size_t max_body_bytes = 1 << 20;
  // A release (and a request for one) may hold max_entries entries: up to this many bytes.
  static constexpr std::size_t max_release_bytes = 64u << 20;
  static constexpr std::size_t max_message_bytes = 4096;
  static constexpr std::size_t max_short_text_bytes = 256;
  static constexpr std::size_t max_flake_ref_bytes = 1024;
  static constexpr std::size_t max_reports_per_batch = 1000;
  static constexpr std::size_t max_probe_results = 256;
  static constexpr std::size_t max_cache_urls = 16;
  static constexpr std::size_t max_tags = 64;
  static constexpr std::size_t max_entries = 100000;
  static constexpr std::size_t max_waves = 32;
  static constexpr std::size_t max_list_items = 100000;
  static constexpr std::size_t max_revocations = 4096;
  // A forensics bundle (what an agent saw when a target failed): at most about 110 KiB.
  static constexpr std::size_t max_evidence_probes = 16;
  static constexpr std::size_t max_evidence_message_bytes = 1024;
  static constexpr std::size_t max_evidence_output_bytes = 2048;
  static constexpr std::size_t max_failed_units = 64;
  static constexpr std::size_t max_journal_bytes = 16 * 1024;
  static constexpr std::size_t max_switch_output_bytes = 4096;
  static constexpr std::size_t max_closure_diff_lines = 64;
  static constexpr std::size_t max_forensics_notes = 8;
  // Sequences are signed as JSON numbers: exact only below 2^53.
  static constexpr std::uint64_t max_sequence = (std::uint64_t{1} << 53) - 1;
};

// --- enumerations (wire spelling in comments) ---------------------------------------------

enum class activation_mode { switch_, boot, test };  // "switch" | "boot" | "test"

enum class report_kind {
  heartbeat,
  up_to_date,
  fetching,
  fetched,
  fetch_failed,
  rejected,
  activating,
  activated,
  activation_failed,
  health,
  confirmed,
  rolled_back,
  rollback_failed,
};

enum class probe_status { pass, fail };
enum class lifecycle { active, maintenance, decommissioned };
enum class role { readonly, deploy, admin };
enum class failure_action { pause, revert, halt };  // on_failure
enum class rollout_status { running, paused, completed, cancelled, halted, reverted };
enum class wave_status { pending, active, soaking, done, failed };
// `left`: the host left the rollout (decommissioned, in maintenance before dispatch, or deleted);
// it counts neither as a success nor as a failure.
enum class host_state { pending, dispatched, activating, confirmed, soaked, failed, left };

std::string_view to_string(activation_mode v) noexcept;
std::string_view to_string(report_kind v) noexcept;
std::string_view to_string(probe_status v) noexcept;
std::string_view to_string(lifecycle v) noexcept;
std::string_view to_string(role v) noexcept;
std::string_view to_string(failure_action v) noexcept;
std::string_view to_string(rollout_status v) noexcept;
std::string_view to_string(wave_status v) noexcept;
std::string_view to_string(host_state v) noexcept;

// "3" (a count) or "10%" (a share of the hosts): wave sizes and failure thresholds.
struct size_spec {
  enum class unit { count, percent };
  unit kind = unit::count;
  std::uint32_t value = 0;

  std::string to_string() const;
  // Hosts this spec stands for out of `total` (percentages round up, so "1%" of 10 is 1).
  std::uint64_t resolve(std::uint64_t total) const noexcept;
  friend bool operator==(const size_spec&, const size_spec&) = default;
};
// Counts up to 1,000,000; percentages 0..100 (waves must be ≥ 1, checked by the decoder).
boost::system::result<size_spec> parse_size_spec(std::string_view s);

// --- operator statements (architecture §4) -----------------------------------------------

// An operator's approval for one host to go back to an older store path than the newest release
// it has accepted: signed with an operator key, valid until `expires_at`, and only once (its
// `issued_at` must be newer than anything the host accepted before).
struct rollback_statement {
  std::string hostname;
  std::string store_path;
  timestamp issued_at{};
  timestamp expires_at{};
  std::string reason;
  std::string signature;  // `name:base64` over rollback_signing_payload

  friend bool operator==(const rollback_statement&, const rollback_statement&) = default;
};

// The operator-signed revocation list: releases, store paths and operator key names that no agent
// may activate (or trust) any more. `sequence` only grows, so an older list cannot be replayed.
struct revocation_list {
  std::uint64_t sequence = 0;
  timestamp issued_at{};
  std::vector<std::string> releases;
  std::vector<std::string> store_paths;
  std::vector<std::string> keys;
  std::string signature;  // `name:base64` over revocations_signing_payload

  friend bool operator==(const revocation_list&, const revocation_list&) = default;
};

// --- agent routes ------------------------------------------------------------------------

struct desired_state {
  std::string machine_id;
  std::string release_id;
  std::string store_path;
  std::vector<std::string> cache_urls;
  activation_mode activation = activation_mode::switch_;
  std::optional<std::string> rollout_id;
  std::uint32_t attempt = 0;
  std::optional<std::string> entry_signature;
  timestamp release_created_at{};
  std::optional<std::uint32_t> poll_hint;  // seconds
  // The release's place in the fleet's signed order (0: not from a signed v2 release).
  std::uint64_t release_sequence = 0;
  // Present when an operator approved going back to an older path than the host accepted.
  std::optional<rollback_statement> rollback;
  // The sequence of the coordinator's current revocation list, so that agents fetch it when new.
  std::optional<std::uint64_t> revocations_sequence;

  friend bool operator==(const desired_state&, const desired_state&) = default;
};

struct probe_result {
  std::string probe;
  std::string type;
  probe_status status = probe_status::fail;
  std::uint64_t duration_ms = 0;
  std::optional<std::string> message;

  friend bool operator==(const probe_result&, const probe_result&) = default;
};

struct health_report {
  bool passed = false;
  std::vector<probe_result> results;

  friend bool operator==(const health_report&, const health_report&) = default;
};

// One probe's last result at the verdict, with what it printed or answered.
struct probe_evidence {
  std::string probe;
  std::string type;
  probe_status status = probe_status::fail;
  std::optional<std::string> message;
  // The end of an exec probe's stdout and stderr, an http probe's status line and body excerpt.
  std::optional<std::string> output;

  friend bool operator==(const probe_evidence&, const probe_evidence&) = default;
};

// What an agent saw when a target failed on it (rolled_back, rollback_failed, activation_failed),
// bounded: each part is cut to its limit by the agent and refused above it by the decoder.
struct forensics_bundle {
  std::optional<std::string> target;    // the generation that failed
  std::optional<std::string> previous;  // the one the host went back to (or kept)
  std::vector<probe_evidence> probes;   // failing ones first
  std::vector<std::string> failed_units;
  // `journalctl` of the failed units and those the switch started or restarted, since activation.
  std::optional<std::string> journal;
  std::optional<std::string> switch_output;  // the end of switch-to-configuration's output
  // `nix store diff-closures previous target`, one line per package ("nginx: 1.24.0 → 1.25.0, +12.1 KiB").
  std::vector<std::string> closure_diff;
  std::uint32_t closure_changes = 0;  // lines before the list was cut
  std::vector<std::string> notes;     // what could not be collected, and why

  friend bool operator==(const forensics_bundle&, const forensics_bundle&) = default;
};

struct report {
  std::uint64_t seq = 0;
  timestamp at{};
  report_kind kind = report_kind::heartbeat;
  std::optional<std::string> store_path;
  std::optional<std::string> release_id;
  std::optional<std::string> rollout_id;
  std::optional<std::string> message;
  std::optional<health_report> health;  // about store_path (or current_path when absent)
  // What runs; absent when the host cannot tell (no store path behind /run/current-system).
  std::optional<std::string> current_path;
  std::optional<std::string> booted_path;
  std::string agent_version;
  std::uint64_t uptime_s = 0;
  std::optional<forensics_bundle> forensics;

  friend bool operator==(const report&, const report&) = default;
};

struct report_batch {
  std::vector<report> reports;
  friend bool operator==(const report_batch&, const report_batch&) = default;
};

struct report_ack {
  std::uint64_t acked_seq = 0;
  friend bool operator==(const report_ack&, const report_ack&) = default;
};

// --- releases ----------------------------------------------------------------------------

struct release_entry {
  std::string hostname;
  std::string store_path;
  std::optional<std::string> platform;
  std::vector<std::string> tags;
  std::optional<std::string> signature;

  friend bool operator==(const release_entry&, const release_entry&) = default;
};

// POST /api/v1/releases: the operator picks id and created_at because the signatures cover them.
struct release_request {
  std::string id;
  timestamp created_at{};
  std::uint64_t sequence = 0;  // monotonic per fleet, covered by the signatures
  activation_mode activation = activation_mode::switch_;  // covered by the signatures
  std::optional<std::string> flake_ref;
  std::optional<std::string> flake_rev;
  std::vector<std::string> cache_urls;
  std::vector<release_entry> entries;

  friend bool operator==(const release_request&, const release_request&) = default;
};

struct release {
  std::string id;
  timestamp created_at{};
  std::uint64_t sequence = 0;
  activation_mode activation = activation_mode::switch_;
  std::string created_by;
  std::optional<std::string> flake_ref;
  std::optional<std::string> flake_rev;
  std::vector<std::string> cache_urls;
  std::vector<release_entry> entries;

  friend bool operator==(const release&, const release&) = default;
};

struct release_change {
  std::string hostname;
  std::string old_path;  // "old"
  std::string new_path;  // "new"
  friend bool operator==(const release_change&, const release_change&) = default;
};

struct release_diff {
  std::vector<std::string> added;    // hostnames only in b
  std::vector<std::string> removed;  // hostnames only in a
  std::vector<release_change> changed;
  std::vector<std::string> unchanged;

  friend bool operator==(const release_diff&, const release_diff&) = default;
};

// --- rollouts ----------------------------------------------------------------------------

// Exactly one of tags or hosts is non-empty.
struct rollout_target {
  std::vector<std::string> tags;
  std::vector<std::string> hosts;
  friend bool operator==(const rollout_target&, const rollout_target&) = default;
};

struct rollout_request {
  std::string release_id;
  rollout_target target;
  std::vector<size_spec> waves = {{size_spec::unit::count, 1}, {size_spec::unit::percent, 10},
                                  {size_spec::unit::percent, 100}};
  std::uint32_t soak_s = 300;
  size_spec failure_threshold{size_spec::unit::count, 0};
  std::uint32_t health_timeout_s = 600;
  failure_action on_failure = failure_action::pause;

  friend bool operator==(const rollout_request&, const rollout_request&) = default;
};

// Waves are numbered from 1, everywhere: here, in the API, the CLI, the timeline and the docs.
struct rollout_host {
  std::string hostname;
  std::uint32_t wave = 1;
  host_state state = host_state::pending;
  std::optional<std::string> target_path;     // what this rollout puts on it
  std::optional<std::string> previous_path;   // what it ran when dispatched: the revert target
  std::optional<std::string> previous_release_id;  // the release it was told to run before
  std::optional<std::uint32_t> attempt;       // the attempt number it was dispatched with
  std::optional<timestamp> dispatched_at;
  std::optional<std::string> message;
  std::optional<timestamp> updated_at;

  friend bool operator==(const rollout_host&, const rollout_host&) = default;
};

struct rollout_wave {
  std::uint32_t index = 1;  // its number, from 1
  wave_status status = wave_status::pending;
  std::vector<std::string> hosts;
  std::optional<timestamp> started_at;
  std::optional<timestamp> soak_until;   // set once every host is confirmed or failed
  std::optional<timestamp> finished_at;
  // Failures an operator accepted by resuming without retry: not held against the threshold again.
  std::uint32_t tolerated_failures = 0;

  friend bool operator==(const rollout_wave&, const rollout_wave&) = default;
};

struct rollout_event {
  std::uint64_t seq = 0;
  timestamp at{};
  std::string kind;
  std::optional<std::string> hostname;
  std::optional<std::uint32_t> wave;  // the wave's number, from 1
  std::string message;

  friend bool operator==(const rollout_event&, const rollout_event&) = default;
};

struct rollout_detail {
  std::string id;
  rollout_request spec;
  rollout_status status = rollout_status::running;
  timestamp created_at{};
  std::string created_by;
  std::uint32_t current_wave = 1;  // the number of the wave in progress (the last one once ended)
  std::vector<rollout_wave> waves;
  std::vector<rollout_host> hosts;
  std::vector<rollout_event> events;

  friend bool operator==(const rollout_detail&, const rollout_detail&) = default;
};

struct resume_request {
  bool retry_failed = false;
  friend bool operator==(const resume_request&, const resume_request&) = default;
};

// --- machines ----------------------------------------------------------------------------

struct confirmed_generation {
  std::string store_path;
  timestamp confirmed_at{};
  friend bool operator==(const confirmed_generation&, const confirmed_generation&) = default;
};

struct machine_status {
  std::string id;
  std::vector<std::string> tags;
  lifecycle state = lifecycle::active;  // "lifecycle"
  std::optional<std::string> current_path;
  std::optional<std::string> desired_path;
  std::optional<std::string> booted_path;
  std::optional<std::string> rollout_id;
  std::optional<timestamp> last_seen;
  std::optional<report> last_report;
  std::optional<health_report> health;
  std::vector<confirmed_generation> history;  // newest first
  std::optional<timestamp> revoked_at;               // cut off: its certificates are refused
  std::optional<timestamp> certificate_expires_at;   // of its newest fleet-CA certificate

  friend bool operator==(const machine_status&, const machine_status&) = default;
};

// PUT /api/v1/machines/{id}: fields present are changed.
struct machine_update {
  std::optional<std::vector<std::string>> tags;
  std::optional<lifecycle> state;  // "lifecycle"
  friend bool operator==(const machine_update&, const machine_update&) = default;
};

// POST /api/v1/machines/{id}/rollback: to the given path, or the previous confirmed one.
struct rollback_request {
  std::optional<std::string> store_path;
  // Needed by agents when store_path is older than the newest release the host accepted.
  std::optional<rollback_statement> statement;
  friend bool operator==(const rollback_request&, const rollback_request&) = default;
};

// --- audit, keys, errors -----------------------------------------------------------------

struct audit_event {
  std::uint64_t seq = 0;
  timestamp at{};
  std::string actor;
  std::string action;
  std::string target;
  boost::json::object detail;
  std::string prev_hash;  // hex sha256, 64 zeros for the first event
  std::string hash;

  friend bool operator==(const audit_event&, const audit_event&) = default;
};

struct key_request {
  std::string name;
  protocol::role role = role::readonly;
  friend bool operator==(const key_request&, const key_request&) = default;
};

struct api_key_info {
  std::string id;
  std::string name;
  protocol::role role = role::readonly;
  timestamp created_at{};
  std::optional<timestamp> last_used_at;
  friend bool operator==(const api_key_info&, const api_key_info&) = default;
};

// A signed statement by the coordinator: at `at`, the audit chain's row `seq` had hash `hash`.
// Whoever holds the coordinator's public key can then tell a rewritten or truncated chain from the
// one that was signed, even when the rows were re-chained to hash correctly.
struct audit_checkpoint {
  std::uint64_t seq = 0;
  std::string hash;
  timestamp at{};
  std::string signature;  // name:base64 over audit_checkpoint_payload
  friend bool operator==(const audit_checkpoint&, const audit_checkpoint&) = default;
};

// The answer to `GET /api/v1/audit/verify`: whether the hash chain holds, and where it breaks;
// with a public key, whether every checkpoint verifies and matches the row it names.
struct audit_verification {
  bool ok = true;
  std::uint64_t rows = 0;
  std::optional<std::uint64_t> bad_seq;  // the first row whose hash does not match
  std::optional<std::string> reason;
  std::uint64_t checkpoints = 0;              // checkpoints that matched their rows
  bool checkpoints_verified = false;          // their signatures were checked against a key
  std::optional<std::uint64_t> anchored_seq;  // the newest row a checkpoint covers
  friend bool operator==(const audit_verification&, const audit_verification&) = default;
};

// The answer to key creation: the only time the secret is shown.
struct created_key {
  api_key_info info;  // flattened on the wire
  std::string key;    // nfk_…
  friend bool operator==(const created_key&, const created_key&) = default;
};

// --- webhooks -------------------------------------------------------------------------------

// POST /api/v1/webhooks (admin): where to send which events. The events are audit actions
// ("machine.rolled_back"), with "rollout.rollout_" shortened to "rollout." ("rollout.paused"), and
// alerts ("alert.machine_stale"); a pattern may end in `*` ("rollout.*"). With a secret, every
// delivery is signed (HMAC-SHA256); the secret is never shown again.
struct webhook_request {
  std::string url;
  std::vector<std::string> events;
  std::optional<std::string> secret;
  std::optional<std::string> description;
  friend bool operator==(const webhook_request&, const webhook_request&) = default;
};

struct webhook_info {
  std::string id;
  std::string url;
  std::vector<std::string> events;
  std::optional<std::string> description;
  bool signed_ = false;  // "signed": it has a secret
  timestamp created_at{};
  std::string created_by;
  std::uint64_t pending = 0;  // deliveries waiting to be (re)tried, when listed
  friend bool operator==(const webhook_info&, const webhook_info&) = default;
};

enum class delivery_state { pending, delivered, failed };  // failed: given up
std::string_view to_string(delivery_state v) noexcept;

// One event for one hook, retried until the receiver answers 2xx or the coordinator gives up.
struct webhook_delivery {
  std::uint64_t id = 0;  // the receiver's deduplication key (X-Nixfleet-Delivery)
  std::string hook_id;
  std::string event;
  timestamp created_at{};
  delivery_state state = delivery_state::pending;
  std::uint32_t attempts = 0;
  std::optional<timestamp> next_at;       // pending: when it is tried again
  std::optional<timestamp> delivered_at;  // delivered
  std::optional<std::uint32_t> last_status;
  std::optional<std::string> last_error;
  friend bool operator==(const webhook_delivery&, const webhook_delivery&) = default;
};

// Enrollment (the fleet CA). An operator asks for a one-time token bound to a machine id…
struct enroll_token_request {
  std::vector<std::string> tags;  // given to the machine when it enrolls
  std::uint32_t ttl_s = 3600;     // how long the token may be used
  friend bool operator==(const enroll_token_request&, const enroll_token_request&) = default;
};

// …the only time the token is shown (the coordinator keeps its hash).
struct enroll_token {
  std::string machine_id;
  std::string token;  // nfe_…
  timestamp expires_at{};
  friend bool operator==(const enroll_token&, const enroll_token&) = default;
};

// The host, with the token and a request over a key it made and keeps: `POST /api/v1/enroll`.
struct enroll_request {
  std::string machine_id;
  std::string token;
  std::string csr;  // PEM; its CN must be the machine id
  friend bool operator==(const enroll_request&, const enroll_request&) = default;
};

// Renewal over the current certificate: `POST /api/v1/machines/{id}/certificate`.
struct certificate_request {
  std::string csr;
  friend bool operator==(const certificate_request&, const certificate_request&) = default;
};

// A certificate the fleet CA issued, with the CA chain to verify it.
struct issued_certificate {
  std::string machine_id;
  std::string serial;       // lowercase hex
  std::string certificate;  // PEM
  std::string ca_chain;     // PEM
  timestamp not_before{};
  timestamp not_after{};
  friend bool operator==(const issued_certificate&, const issued_certificate&) = default;
};

struct error_body {
  std::string error;    // machine-readable code, snake_case
  std::string message;  // for humans
  friend bool operator==(const error_body&, const error_body&) = default;
};

}  // namespace nixfleet::protocol
