// The fleet as a value, and every change to it as `apply(fleet, event, now) → effects`: report
// ingestion, operator commands and the reconcile tick. Pure: no I/O, no clock, no randomness (ids
// and secrets arrive in the event). What must be written, republished to pollers and answered is
// in the effects; the io layer makes it durable and only then publishes and answers.
#pragma once

#include "nixfleet/coordinator/core/records.hpp"
#include "nixfleet/coordinator/core/rollout.hpp"
#include "nixfleet/protocol/types.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace nixfleet::coordinator::core {

// Which active rollout a machine is in, and its index among that rollout's hosts.
struct membership {
  std::string rollout;
  std::size_t host = 0;
  friend bool operator==(const membership&, const membership&) = default;
};

struct fleet {
  std::unordered_map<std::string, machine_record> machines;
  std::map<std::string, protocol::release> releases;
  std::uint64_t max_release_sequence = 0;  // a new release must be numbered above it
  std::optional<protocol::revocation_list> revocations;  // stored as signed; agents verify it
  std::map<std::string, protocol::rollout_detail> rollouts;
  std::unordered_map<std::string, membership> active_rollout_of;
  std::unordered_map<std::string, key_record> keys;  // by hash of the secret
  std::unordered_map<std::string, enroll_token_record> tokens;  // by hash of the token
  std::map<std::string, certificate_record> certificates;       // by serial
  std::unordered_map<std::string, std::vector<std::string>> serials_of;  // machine → its serials
  // (hostname, store path) → the newest release holding that entry, for its signature.
  std::map<std::pair<std::string, std::string>, std::string> newest_entry;
  // Release id → its entries' indexes in hostname order, to find a host's entry without a scan.
  std::map<std::string, std::vector<std::uint32_t>, std::less<>> entries_by_host;
  std::map<std::string, webhook_record> webhooks;  // by id

  friend bool operator==(const fleet&, const fleet&) = default;
};

fleet make_fleet(loaded_state state);

// ---------------------------------------------------------------------------------------------
// Authorisation policy: who may do what.

enum class operation {
  read,                 // machines, releases, rollouts, diffs, audit, revocations
  create_release,
  create_rollout,
  steer_rollout,        // pause, resume, cancel
  rollback_machine,
  publish_revocations,
  update_machine,       // tags, lifecycle
  clear_desired,
  delete_release,
  manage_keys,
  enroll_machine,       // make a one-time enrollment token
  revoke_machine,
  manage_webhooks,      // add, list (their URLs may hold secrets), remove, read deliveries
};

struct principal {
  std::string actor;
  protocol::role level = protocol::role::readonly;
};

struct refusal {
  unsigned status = 400;
  std::string code;
  std::string message;
  friend bool operator==(const refusal&, const refusal&) = default;
};

protocol::role required_role(operation op) noexcept;
// Empty when allowed.
std::optional<refusal> authorize(const principal& who, operation op);
// Agent routes: the name the client certificate gives (its one CN or nixfleet://machine/ URI) is a
// valid machine id and the machine's (or plain HTTP was chosen). `problem` is why a verified
// certificate names no one (two CNs, disagreeing names): refused, with that reason.
std::optional<refusal> authorize_agent(const std::optional<std::string>& client_id, std::string_view problem,
                                       std::string_view machine_id, bool insecure_http);

// A certificate the fleet CA issued (found by its serial) must be this machine's, not revoked and
// not expired (a resumed TLS session skips the handshake's own check), and a revoked machine is
// refused whatever it shows (a certificate of the operator's own PKI too).
std::optional<refusal> certificate_refusal(const fleet& f, std::string_view machine_id, std::string_view serial,
                                           timestamp now);
// Why this token cannot enroll `machine_id` now: unknown, used, expired, bound to another machine.
std::optional<refusal> enrollment_refusal(const fleet& f, const std::string& token_hash, std::string_view machine_id,
                                          timestamp now);
// Tokens are "nfe_" and 64 lowercase hex digits.
bool is_enroll_token_text(std::string_view t) noexcept;

// ---------------------------------------------------------------------------------------------
// Events

struct ingest_reports {
  std::string machine_id;
  protocol::report_batch batch;
};
struct update_machine {
  std::string id;
  protocol::machine_update update;
};
struct clear_desired {
  std::string id;
};
struct rollback_machine {
  std::string id;
  protocol::rollback_request body;
};
struct publish_revocations {
  protocol::revocation_list list;
};
struct create_release {
  protocol::release_request body;
};
struct delete_release {
  std::string id;
};
struct create_rollout {
  std::string id;  // chosen by the caller (unique, random)
  protocol::rollout_request spec;
};
struct steer_rollout {
  enum class verb { pause, resume, cancel };
  std::string id;
  verb what = verb::pause;
  bool retry_failed = false;
};
struct create_key {
  std::string key_id;  // chosen by the caller
  std::string secret;  // nfk_…, chosen by the caller; only its hash is kept
  protocol::key_request body;
};
struct delete_key {
  std::string id;
};
struct create_enroll_token {
  std::string machine_id;
  std::string secret;  // nfe_…, chosen by the caller; only its hash is kept
  protocol::enroll_token_request body;
};
// The route checked the token (enrollment_refusal), verified the request and had the CA sign;
// the token is spent here, with the same checks again.
struct enroll_machine {
  std::string token_hash;
  protocol::issued_certificate issued;
};
struct renew_certificate {
  std::string presented_serial;  // of the certificate the request came with
  protocol::issued_certificate issued;
};
struct revoke_machine {
  std::string id;
  std::string why = "revoked";
};
struct add_webhook {
  std::string id;  // chosen by the caller
  protocol::webhook_request body;
};
struct remove_webhook {
  std::string id;
};
// Time passed: every active rollout is reconciled.
struct tick {};

using event_body = std::variant<ingest_reports, update_machine, clear_desired, rollback_machine, publish_revocations,
                                create_release, delete_release, create_rollout, steer_rollout, create_key, delete_key,
                                create_enroll_token, enroll_machine, renew_certificate, revoke_machine, add_webhook,
                                remove_webhook, tick>;

struct event {
  std::string actor;  // "agent:ID", an API key's name, or "coordinator"
  event_body what;
};

// What to answer once the change set is durable.
using answer = std::variant<std::monostate, protocol::report_ack, protocol::machine_status, protocol::revocation_list,
                            protocol::release, protocol::rollout_detail, protocol::created_key, protocol::enroll_token,
                            protocol::issued_certificate, protocol::webhook_info>;

struct effects {
  change_set changes;
  std::vector<std::string> republish;  // machines whose served desired state changed
  bool republish_all = false;          // every machine's (a new revocation sequence)
  bool reconcile = false;              // a host of an active rollout reported a step: reconcile soon
  std::optional<refusal> refused;      // nothing changed, nothing to write
  unsigned status = 200;               // of the answer when not refused
  answer reply;

  friend bool operator==(const effects&, const effects&) = default;
};

// Applies `e` to `f`. A refused event leaves `f` as it was.
effects apply(fleet& f, const event& e, timestamp now);

// ---------------------------------------------------------------------------------------------
// Webhooks

inline constexpr std::size_t max_webhooks = 64;

// The webhook event an audit action is: the action itself, with "rollout.rollout_" shortened to
// "rollout." ("rollout.rollout_paused" → "rollout.paused").
std::string webhook_event_of(std::string_view audit_action);

// The deliveries `audit` makes: one per entry and hook whose patterns match its event.
std::vector<delivery_new> deliveries_for(const fleet& f, const std::vector<audit_entry>& audit);

// ---------------------------------------------------------------------------------------------
// Views

// The desired state a machine is served, with the poll hint of an active rollout and the
// revocation list's sequence; empty when nothing is assigned.
std::optional<protocol::desired_state> served(const fleet& f, const machine_record& m, std::uint32_t poll_hint_s);
protocol::machine_status status_of(const fleet& f, const machine_record& m);
protocol::release_diff diff(const protocol::release& a, const protocol::release& b);

// Where a machine stands against what it is told to run: running it; behind (not yet); failing
// (its last outcome about the desired path was a failure: fetch, activation, health or rejection);
// unmanaged (nothing assigned); unknown (it has never said what it runs).
enum class sync_state { in_sync, behind, failing, unmanaged, unknown };
std::string_view to_string(sync_state s) noexcept;
sync_state sync_of(const machine_record& m) noexcept;
// "passing", "failing" or "unknown" (no health report yet).
std::string_view health_of(const machine_record& m) noexcept;

// The dashboard's fleet page: counts over the whole fleet, and one page (by id) of the machines
// that match every given filter. `text` matches a substring of the id, a tag or the paths.
struct fleet_filter {
  std::optional<std::string> tag;
  std::optional<protocol::lifecycle> state;
  std::optional<sync_state> sync;
  std::optional<std::string> health;
  bool stale_only = false;
  std::string text;
  std::size_t offset = 0;
  std::size_t limit = 50;
  std::chrono::seconds stale_after{std::chrono::minutes(5)};
};

struct fleet_row {
  const machine_record* machine = nullptr;
  sync_state sync = sync_state::unknown;
  std::string_view health;
  bool stale = false;
  const std::string* rollout = nullptr;  // the active rollout it is in
};

struct fleet_page {
  std::uint64_t total = 0, matched = 0, stale = 0;
  std::array<std::uint64_t, 5> by_sync{};       // indexed by sync_state
  std::array<std::uint64_t, 3> by_health{};     // passing, failing, unknown
  std::array<std::uint64_t, 3> by_lifecycle{};  // indexed by protocol::lifecycle
  std::vector<fleet_row> rows;  // valid while the fleet is not changed
};
inline constexpr std::array<std::string_view, 3> health_names = {"passing", "failing", "unknown"};

fleet_page page_of(const fleet& f, const fleet_filter& q, timestamp now);

}  // namespace nixfleet::coordinator::core
