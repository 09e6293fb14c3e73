// Internal to the fleet core: the helpers fleet.cpp and ingest.cpp share.
#pragma once

#include "nixfleet/coordinator/core/fleet.hpp"

#include <variant>

namespace nixfleet::coordinator::core {

// Keeps `f.newest_entry` and `f.entries_by_host` current for a release just added.
void index_release(fleet& f, const protocol::release& r);

// `hostname`'s entry in release `r` (one of `f`'s), if it has one: a binary search, not a scan.
const protocol::release_entry* find_entry(const fleet& f, const protocol::release& r, std::string_view hostname);

// The desired state for `path` on `hostname` from release `release_id` when it has that entry,
// else from the newest release that does, else unsigned ("unreleased").
protocol::desired_state make_desired(const fleet& f, const std::string& hostname, const std::string& path,
                                     const std::optional<std::string>& release_id, std::uint32_t attempt,
                                     const std::optional<std::string>& rollout_id);

std::vector<observation> observe(const fleet& f, const protocol::rollout_detail& r);

// Puts a reconciler step into `f` and into `fx` (its writes, audit entries and republishes).
void apply_step(fleet& f, step s, effects& fx, const std::string& actor, timestamp now);

// The hosts a rollout of `release` to `target` takes, or why there are none to take.
std::variant<std::vector<candidate>, refusal> resolve_targets(const fleet& f, const protocol::release& release,
                                                              const protocol::rollout_target& target);

effects ingest(fleet& f, const std::string& actor, const ingest_reports& e, timestamp now);

// enrollment.cpp
effects on_create_enroll_token(fleet& f, const std::string& actor, const create_enroll_token& e, timestamp now);
effects on_enroll_machine(fleet& f, const std::string& actor, const enroll_machine& e, timestamp now);
effects on_renew_certificate(fleet& f, const std::string& actor, const renew_certificate& e, timestamp now);
effects on_revoke_machine(fleet& f, const std::string& actor, const revoke_machine& e, timestamp now);
// Revokes every certificate and unused token of `m` and marks it revoked, into `fx` (the machine
// record itself is the caller's to write).
void revoke_into(fleet& f, machine_record& m, effects& fx, const std::string& actor, timestamp now,
                 const std::string& why);
// webhooks.cpp
effects on_add_webhook(fleet& f, const std::string& actor, const add_webhook& e, timestamp now);
effects on_remove_webhook(fleet& f, const std::string& actor, const remove_webhook& e, timestamp now);

// The newest unrevoked fleet-CA certificate's end, if any.
std::optional<timestamp> certificate_expiry(const fleet& f, const std::string& machine_id);

}  // namespace nixfleet::coordinator::core
