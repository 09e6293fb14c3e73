// Internal to the fleet core: the helpers fleet.cpp and ingest.cpp share.
#pragma once

#include "nixfleet/coordinator/core/fleet.hpp"

#include <variant>

namespace nixfleet::coordinator::core {

// Keeps `f.newest_entry` current for a release just added.
void index_release(fleet& f, const protocol::release& r);

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

}  // namespace nixfleet::coordinator::core
