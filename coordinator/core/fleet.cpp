// The fleet core: make_fleet, the authorisation policy, views, and apply() for operator commands
// and the reconcile tick. Report ingestion is in ingest.cpp.
#include "nixfleet/coordinator/core/fleet.hpp"

#include "fleet_detail.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <algorithm>
#include <set>

namespace nixfleet::coordinator::core {

namespace json = boost::json;
using protocol::role;

namespace {

int rank(role r) noexcept {
  switch (r) {
    case role::readonly: return 0;
    case role::deploy: return 1;
    case role::admin: return 2;
  }
  return 0;
}

refusal unavailable_state(std::string code, std::string message) { return {409, std::move(code), std::move(message)}; }
refusal not_found(std::string what) { return {404, "not_found", "no such " + std::move(what)}; }
refusal invalid(std::string message) { return {400, "invalid_field", std::move(message)}; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Building

namespace {

void index_newest(fleet& f, const protocol::release& r) {
  for (const auto& e : r.entries) {
    auto& slot = f.newest_entry[{e.hostname, e.store_path}];
    if (slot.empty()) {
      slot = r.id;
      continue;
    }
    auto held = f.releases.find(slot);
    if (held == f.releases.end() || r.created_at > held->second.created_at) slot = r.id;
  }
}

}  // namespace

void index_release(fleet& f, const protocol::release& r) {
  std::vector<std::uint32_t> order(r.entries.size());
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return r.entries[a].hostname < r.entries[b].hostname; });
  f.entries_by_host.insert_or_assign(r.id, std::move(order));
  index_newest(f, r);
}

const protocol::release_entry* find_entry(const fleet& f, const protocol::release& r, std::string_view hostname) {
  auto order = f.entries_by_host.find(r.id);
  if (order == f.entries_by_host.end()) return nullptr;
  const auto& idx = order->second;
  auto at = std::lower_bound(idx.begin(), idx.end(), hostname,
                             [&](std::uint32_t i, std::string_view h) { return r.entries[i].hostname < h; });
  if (at == idx.end() || r.entries[*at].hostname != hostname) return nullptr;
  return &r.entries[*at];
}

fleet make_fleet(loaded_state state) {
  fleet f;
  for (auto& r : state.releases) {
    f.max_release_sequence = std::max(f.max_release_sequence, r.sequence);
    auto id = r.id;
    auto& kept = f.releases.emplace(id, std::move(r)).first->second;
    index_release(f, kept);
  }
  f.revocations = std::move(state.revocations);
  for (auto& r : state.rollouts) f.rollouts.emplace(r.id, std::move(r));
  for (auto& k : state.keys) f.keys.emplace(k.hash, std::move(k));
  for (auto& t : state.tokens) f.tokens.emplace(t.hash, std::move(t));
  for (auto& c : state.certificates) {
    f.serials_of[c.machine_id].push_back(c.serial);
    f.certificates.emplace(c.serial, std::move(c));
  }
  for (auto& m : state.machines) {
    auto id = m.id;
    f.machines.emplace(std::move(id), std::move(m));
  }
  for (auto& w : state.webhooks) {
    auto id = w.info.id;
    f.webhooks.emplace(std::move(id), std::move(w));
  }
  for (const auto& [id, r] : f.rollouts)
    if (is_active(r.status))
      for (std::size_t i = 0; i < r.hosts.size(); ++i) f.active_rollout_of[r.hosts[i].hostname] = {id, i};
  return f;
}

// ---------------------------------------------------------------------------------------------
// Policy

role required_role(operation op) noexcept {
  switch (op) {
    case operation::read: return role::readonly;
    case operation::create_release:
    case operation::create_rollout:
    case operation::steer_rollout:
    case operation::rollback_machine:
    case operation::publish_revocations:
    case operation::enroll_machine: return role::deploy;
    case operation::update_machine:
    case operation::clear_desired:
    case operation::delete_release:
    case operation::manage_keys:
    case operation::manage_webhooks:
    case operation::revoke_machine: return role::admin;
  }
  return role::admin;
}

std::optional<refusal> authorize(const principal& who, operation op) {
  const auto need = required_role(op);
  if (rank(who.level) >= rank(need)) return std::nullopt;
  return refusal{403, "forbidden",
                 "this needs the " + std::string(protocol::to_string(need)) + " role (the key has " +
                     std::string(protocol::to_string(who.level)) + ")"};
}

std::optional<refusal> authorize_agent(const std::optional<std::string>& client_id, std::string_view problem,
                                       std::string_view machine_id, bool insecure_http) {
  if (insecure_http) return std::nullopt;
  if (!problem.empty()) return refusal{403, "bad_client_certificate", std::string(problem)};
  if (!client_id) return refusal{401, "client_certificate_required", "agent routes need a client certificate"};
  if (protocol::check_machine_id(*client_id))
    return refusal{403, "bad_client_certificate", "the client certificate's name is not a valid machine id"};
  if (*client_id != machine_id) return refusal{403, "forbidden", "the client certificate is not for this machine"};
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Views

std::optional<std::uint32_t> poll_hint_for(const fleet& f, const std::string& machine_id, std::uint32_t hint) {
  auto it = f.active_rollout_of.find(machine_id);
  if (it == f.active_rollout_of.end()) return std::nullopt;
  const auto& r = f.rollouts.at(it->second.rollout);
  if (!is_active(r.status)) return std::nullopt;
  const auto state = r.hosts.at(it->second.host).state;
  if (state == protocol::host_state::soaked || state == protocol::host_state::failed ||
      state == protocol::host_state::left)
    return std::nullopt;
  return hint;
}

std::optional<protocol::desired_state> served(const fleet& f, const machine_record& m, std::uint32_t poll_hint_s) {
  if (!m.desired) return std::nullopt;
  auto d = *m.desired;
  d.poll_hint = poll_hint_for(f, m.id, poll_hint_s);
  if (f.revocations) d.revocations_sequence = f.revocations->sequence;
  return d;
}

protocol::machine_status status_of(const fleet& f, const machine_record& m) {
  protocol::machine_status s;
  s.id = m.id;
  s.tags = m.tags;
  s.state = m.state;
  s.current_path = m.current_path;
  if (m.desired) s.desired_path = m.desired->store_path;
  s.booted_path = m.booted_path;
  if (auto it = f.active_rollout_of.find(m.id); it != f.active_rollout_of.end()) s.rollout_id = it->second.rollout;
  s.last_seen = m.last_seen;
  if (m.last_report) s.last_report = last_report_of(m);
  s.health = m.health;
  s.history = m.history;
  s.revoked_at = m.revoked_at;
  s.certificate_expires_at = certificate_expiry(f, m.id);
  return s;
}

protocol::release_diff diff(const protocol::release& a, const protocol::release& b) {
  std::map<std::string, std::string> pa, pb;
  for (const auto& e : a.entries) pa[e.hostname] = e.store_path;
  for (const auto& e : b.entries) pb[e.hostname] = e.store_path;
  protocol::release_diff d;
  for (const auto& [h, p] : pa) {
    auto jt = pb.find(h);
    if (jt == pb.end()) d.removed.push_back(h);
    else if (jt->second != p) d.changed.push_back({h, p, jt->second});
    else d.unchanged.push_back(h);
  }
  for (const auto& [h, p] : pb)
    if (!pa.contains(h)) d.added.push_back(h);
  return d;
}

// ---------------------------------------------------------------------------------------------
// Desired states and rollout steps

protocol::desired_state make_desired(const fleet& f, const std::string& hostname, const std::string& path,
                                     const std::optional<std::string>& release_id, std::uint32_t attempt,
                                     const std::optional<std::string>& rollout_id) {
  protocol::desired_state d;
  d.machine_id = hostname;
  d.store_path = path;
  d.attempt = attempt;
  d.rollout_id = rollout_id;
  d.release_id = "unreleased";
  auto from = [&](const protocol::release& r) {
    const auto* e = find_entry(f, r, hostname);
    if (!e || e->store_path != path) return false;
    d.release_id = r.id;
    d.cache_urls = r.cache_urls;
    d.entry_signature = e->signature;
    d.release_created_at = r.created_at;
    d.release_sequence = r.sequence;
    d.activation = r.activation;
    return true;
  };
  if (release_id)
    if (auto it = f.releases.find(*release_id); it != f.releases.end() && from(it->second)) return d;
  if (auto it = f.newest_entry.find({hostname, path}); it != f.newest_entry.end())
    if (auto r = f.releases.find(it->second); r != f.releases.end()) from(r->second);
  return d;
}

std::vector<observation> observe(const fleet& f, const protocol::rollout_detail& r) {
  std::vector<observation> out;
  out.reserve(r.hosts.size());
  for (const auto& h : r.hosts) {
    observation o;
    o.hostname = h.hostname;
    auto it = f.machines.find(h.hostname);
    if (it == f.machines.end()) {
      o.exists = false;
      out.push_back(std::move(o));
      continue;
    }
    const auto& m = it->second;
    o.lifecycle = m.state;
    o.current_path = m.current_path;
    if (m.desired) {
      o.desired_path = m.desired->store_path;
      o.desired_release_id = m.desired->release_id;
    }
    o.attempt = m.attempt;
    if (m.last_event) {
      o.last_kind = m.last_event->kind;
      o.last_path = m.last_event->store_path;
      o.last_message = m.last_event->message;
      o.last_at = m.last_event->received_at;
    }
    out.push_back(std::move(o));
  }
  return out;
}

void apply_step(fleet& f, step s, effects& fx, const std::string& actor, timestamp now) {
  auto& current = f.rollouts[s.rollout.id];
  const bool existed = !current.id.empty();
  rollout_write w;
  w.head = s.rollout;
  w.head.hosts.clear();
  w.head.events.clear();
  const bool status_changed = !existed || current.status != s.rollout.status;
  for (std::size_t i = 0; i < s.rollout.hosts.size(); ++i) {
    const bool host_changed = !existed || i >= current.hosts.size() || !(current.hosts[i] == s.rollout.hosts[i]);
    if (host_changed) w.hosts.emplace_back(i, s.rollout.hosts[i]);
    if (host_changed || status_changed) fx.republish.push_back(s.rollout.hosts[i].hostname);
  }
  w.events = s.events;
  for (const auto& e : s.events) {
    json::object detail{{"rollout_id", s.rollout.id}, {"message", e.message}};
    if (e.wave) detail["wave"] = *e.wave;
    if (e.hostname) detail["hostname"] = *e.hostname;
    fx.changes.audit.push_back(
        {now, actor, "rollout." + e.kind, e.hostname ? *e.hostname : s.rollout.id, std::move(detail)});
  }
  for (const auto& c : s.changes) {
    auto it = f.machines.find(c.hostname);
    if (it == f.machines.end()) continue;
    auto& m = it->second;
    const bool dispatch = c.why == desired_change::reason::dispatch;
    m.desired = make_desired(f, c.hostname, c.store_path, c.release_id, c.attempt,
                             dispatch ? std::optional<std::string>(s.rollout.id) : std::nullopt);
    m.attempt = std::max(m.attempt, c.attempt);
    fx.changes.machines.push_back(m);
    fx.republish.push_back(c.hostname);
  }
  fx.changes.rollouts.push_back(std::move(w));
  const bool active = is_active(s.rollout.status);
  for (std::size_t i = 0; i < s.rollout.hosts.size(); ++i) {
    const auto& h = s.rollout.hosts[i];
    if (active) f.active_rollout_of[h.hostname] = {s.rollout.id, i};
    else if (auto it = f.active_rollout_of.find(h.hostname);
             it != f.active_rollout_of.end() && it->second.rollout == s.rollout.id)
      f.active_rollout_of.erase(it);
  }
  current = std::move(s.rollout);
}

// ---------------------------------------------------------------------------------------------
// Commands

namespace {

effects refuse(refusal r) {
  effects fx;
  fx.refused = std::move(r);
  return fx;
}

std::optional<refusal> in_rollout(const fleet& f, const std::string& id, std::string_view advice) {
  if (auto r = f.active_rollout_of.find(id); r != f.active_rollout_of.end())
    return unavailable_state("in_rollout", "the machine is in rollout " + r->second.rollout + "; " + std::string(advice));
  return std::nullopt;
}

effects on(fleet& f, const std::string& actor, const update_machine& e, timestamp now) {
  effects fx;
  auto [it, created] = f.machines.try_emplace(e.id);
  auto& m = it->second;
  if (created) m.id = e.id;
  json::object detail;
  if (e.update.tags) {
    m.tags = *e.update.tags;
    json::array tags;
    for (const auto& t : m.tags) tags.push_back(json::value(t));
    detail["tags"] = std::move(tags);
  }
  const bool decommissioning = e.update.state == protocol::lifecycle::decommissioned &&
                               m.state != protocol::lifecycle::decommissioned;
  if (e.update.state) {
    m.state = *e.update.state;
    detail["lifecycle"] = protocol::to_string(m.state);
  }
  // Set active again, a revoked machine is let back in by name: certificates of the operator's own
  // PKI work again, while those the fleet CA issued stay revoked (it needs a new token).
  if (e.update.state == protocol::lifecycle::active && m.revoked_at) {
    m.revoked_at.reset();
    detail["readmitted"] = true;
  }
  fx.changes.audit.push_back({now, actor, created ? "machine.created" : "machine.updated", e.id, std::move(detail)});
  // A decommissioned host keeps no access: its certificates and tokens go with it.
  if (decommissioning) revoke_into(f, m, fx, actor, now, "decommissioned");
  fx.changes.machines.push_back(m);
  fx.republish.push_back(e.id);
  fx.reply = status_of(f, m);
  return fx;
}

effects on(fleet& f, const std::string& actor, const clear_desired& e, timestamp now) {
  auto it = f.machines.find(e.id);
  if (it == f.machines.end()) return refuse(not_found("machine"));
  if (auto r = in_rollout(f, e.id, "cancel it first")) return refuse(*r);
  effects fx;
  auto& m = it->second;
  json::object detail;
  if (m.desired) detail["was"] = m.desired->store_path;
  m.desired.reset();
  fx.changes.machines.push_back(m);
  fx.changes.audit.push_back({now, actor, "machine.desired_cleared", e.id, std::move(detail)});
  fx.republish.push_back(e.id);
  fx.status = 204;
  return fx;
}

effects on(fleet& f, const std::string& actor, const rollback_machine& e, timestamp now) {
  auto it = f.machines.find(e.id);
  if (it == f.machines.end()) return refuse(not_found("machine"));
  if (auto r = in_rollout(f, e.id, "pause or cancel it first")) return refuse(*r);
  auto& m = it->second;
  // The default target: the newest confirmed generation that is not what runs now.
  std::optional<std::string> target = e.body.store_path;
  if (!target) {
    for (const auto& h : m.history)
      if (h.store_path != m.current_path) {
        target = h.store_path;
        break;
      }
    if (!target) return refuse(unavailable_state("no_previous", "the machine has no earlier confirmed generation"));
  }
  if (e.body.statement && e.body.statement->hostname != e.id)
    return refuse(invalid("statement.hostname: the rollback statement is for another machine"));
  auto d = make_desired(f, e.id, *target, std::nullopt, m.attempt + 1, std::nullopt);
  if (d.release_id == "unreleased")
    return refuse(unavailable_state("not_released",
                                    "no release has this path for this machine; agents with trusted keys would refuse it"));
  // Carried to the agent as signed; whether it is needed (and valid) is the agent's judgement.
  d.rollback = e.body.statement;
  effects fx;
  m.attempt += 1;
  m.desired = d;
  fx.changes.machines.push_back(m);
  json::object detail{{"store_path", *target}, {"release_id", d.release_id}};
  if (e.body.statement) {
    detail["statement_reason"] = e.body.statement->reason;
    detail["statement_expires_at"] = protocol::format_time(e.body.statement->expires_at);
  }
  fx.changes.audit.push_back({now, actor, "machine.rollback", e.id, std::move(detail)});
  fx.republish.push_back(e.id);
  fx.reply = status_of(f, m);
  return fx;
}

effects on(fleet& f, const std::string& actor, const publish_revocations& e, timestamp now) {
  const auto held = f.revocations ? f.revocations->sequence : 0;
  if (e.list.sequence <= held)
    return refuse(unavailable_state("stale_sequence", "sequence " + std::to_string(e.list.sequence) +
                                                          " is not above the current list's (" + std::to_string(held) +
                                                          ")"));
  effects fx;
  fx.changes.revocations = e.list;
  json::object detail{{"sequence", e.list.sequence},
                      {"releases", e.list.releases.size()},
                      {"store_paths", e.list.store_paths.size()},
                      {"keys", e.list.keys.size()}};
  fx.changes.audit.push_back({now, actor, "revocations.published", "revocations", std::move(detail)});
  f.revocations = e.list;
  fx.republish_all = true;  // every desired state now announces the new sequence
  fx.reply = e.list;
  return fx;
}

effects on(fleet& f, const std::string& actor, const create_release& e, timestamp now) {
  const auto& body = e.body;
  if (f.releases.contains(body.id))
    return refuse(unavailable_state("exists", "a release with this id exists; releases are immutable"));
  if (body.entries.empty()) return refuse(invalid("entries: at least one entry"));
  if (body.sequence == 0)
    return refuse(invalid("sequence: releases carry a signed sequence number (sign them with `nixfleet release create`)"));
  if (body.sequence <= f.max_release_sequence)
    return refuse(unavailable_state("stale_sequence", "sequence " + std::to_string(body.sequence) +
                                                          " is not above the newest release's (" +
                                                          std::to_string(f.max_release_sequence) +
                                                          "); sign it again with a higher one"));
  std::set<std::string> seen;
  for (std::size_t i = 0; i < body.entries.size(); ++i)
    if (!seen.insert(body.entries[i].hostname).second)
      return refuse(invalid("entries[" + std::to_string(i) + "].hostname: appears twice in the release"));
  protocol::release r{body.id,        body.created_at, body.sequence, body.activation, actor, body.flake_ref,
                      body.flake_rev, body.cache_urls, body.entries};
  effects fx;
  fx.changes.releases.push_back(r);
  json::object detail{{"entries", r.entries.size()}, {"sequence", r.sequence}};
  if (r.flake_ref) detail["flake_ref"] = *r.flake_ref;
  if (r.flake_rev) detail["flake_rev"] = *r.flake_rev;
  fx.changes.audit.push_back({now, actor, "release.created", r.id, std::move(detail)});
  index_release(f, f.releases.emplace(r.id, r).first->second);
  f.max_release_sequence = r.sequence;
  fx.status = 201;
  fx.reply = std::move(r);
  return fx;
}

effects on(fleet& f, const std::string& actor, const delete_release& e, timestamp now) {
  auto it = f.releases.find(e.id);
  if (it == f.releases.end()) return refuse(not_found("release"));
  for (const auto& [rid, r] : f.rollouts)
    if (r.spec.release_id == e.id) return refuse(unavailable_state("in_use", "rollout " + rid + " references this release"));
  f.releases.erase(it);
  f.entries_by_host.erase(e.id);
  f.newest_entry.clear();
  for (const auto& [id, r] : f.releases) index_newest(f, r);
  effects fx;
  fx.changes.deleted_releases.push_back(e.id);
  fx.changes.audit.push_back({now, actor, "release.deleted", e.id, json::object{}});
  fx.status = 204;
  return fx;
}

effects on(fleet& f, const std::string& actor, const create_rollout& e, timestamp now) {
  const auto& spec = e.spec;
  auto rel = f.releases.find(spec.release_id);
  if (rel == f.releases.end()) return refuse({400, "unknown_release", "no release " + spec.release_id});
  const auto targets = resolve_targets(f, rel->second, spec.target);
  if (auto* why = std::get_if<refusal>(&targets)) return refuse(*why);
  auto candidates = std::get<std::vector<candidate>>(targets);
  if (f.rollouts.contains(e.id)) return refuse(unavailable_state("exists", "a rollout with this id exists"));
  effects fx;
  // Hosts that have not reported yet are registered now, so that their desired state is
  // waiting when they first poll (and the rollout times them out if they never do).
  for (const auto& c : candidates) {
    auto [m, created] = f.machines.try_emplace(c.hostname);
    if (!created) continue;
    m->second.id = c.hostname;
    if (const auto* entry = find_entry(f, rel->second, c.hostname)) m->second.tags = entry->tags;
    fx.changes.machines.push_back(m->second);
    fx.changes.audit.push_back({now, actor, "machine.registered", c.hostname, json::object{{"by", "rollout"}}});
  }
  auto planned = plan(e.id, spec, std::move(candidates), actor, now);
  json::object detail{{"release_id", spec.release_id}, {"hosts", planned.hosts.size()}, {"waves", planned.waves.size()}};
  fx.changes.audit.push_back({now, actor, "rollout.created", e.id, std::move(detail)});
  auto first = reconcile(planned, observe(f, planned), now);
  apply_step(f, std::move(first), fx, actor, now);
  fx.status = 201;
  fx.reply = f.rollouts.at(e.id);
  return fx;
}

effects on(fleet& f, const std::string& actor, const steer_rollout& e, timestamp now) {
  auto it = f.rollouts.find(e.id);
  if (it == f.rollouts.end()) return refuse(not_found("rollout"));
  command_result res;
  switch (e.what) {
    case steer_rollout::verb::pause: res = pause(it->second, now); break;
    case steer_rollout::verb::cancel: res = cancel(it->second, now); break;
    case steer_rollout::verb::resume: res = resume(it->second, e.retry_failed, now); break;
  }
  if (!res.ok) return refuse(unavailable_state("invalid_state", res.refused));
  // Follow the command with a reconcile pass so a resume dispatches at once.
  auto s = std::move(*res.ok);
  auto next = reconcile(s.rollout, observe(f, s.rollout), now);
  s.rollout = std::move(next.rollout);
  s.events.insert(s.events.end(), next.events.begin(), next.events.end());
  s.changes.insert(s.changes.end(), next.changes.begin(), next.changes.end());
  effects fx;
  apply_step(f, std::move(s), fx, actor, now);
  fx.reply = f.rollouts.at(e.id);
  return fx;
}

effects on(fleet& f, const std::string& actor, const create_key& e, timestamp now) {
  if (!e.secret.starts_with("nfk_")) return refuse(invalid("key: not an API key"));
  key_record k{{e.key_id, e.body.name, e.body.role, now, std::nullopt}, protocol::sha256_hex(e.secret)};
  if (f.keys.contains(k.hash)) return refuse(unavailable_state("exists", "this key exists"));
  effects fx;
  fx.changes.keys.push_back(k);
  json::object detail{{"name", e.body.name}, {"role", protocol::to_string(e.body.role)}};
  fx.changes.audit.push_back({now, actor, "key.created", k.info.id, std::move(detail)});
  f.keys.emplace(k.hash, k);
  fx.status = 201;
  fx.reply = protocol::created_key{k.info, e.secret};
  return fx;
}

effects on(fleet& f, const std::string& actor, const delete_key& e, timestamp now) {
  auto it = std::find_if(f.keys.begin(), f.keys.end(), [&](const auto& kv) { return kv.second.info.id == e.id; });
  if (it == f.keys.end()) return refuse(not_found("key"));
  f.keys.erase(it);
  effects fx;
  fx.changes.deleted_keys.push_back(e.id);
  fx.changes.audit.push_back({now, actor, "key.deleted", e.id, json::object{}});
  fx.status = 204;
  return fx;
}

effects on(fleet& f, const std::string& actor, const tick&, timestamp now) {
  effects fx;
  std::vector<std::string> ids;
  for (const auto& [id, r] : f.rollouts)
    if (is_active(r.status)) ids.push_back(id);
  for (const auto& id : ids) {
    const auto& r = f.rollouts.at(id);
    auto s = reconcile(r, observe(f, r), now);
    if (s.changes.empty() && s.events.empty() && s.rollout == r) continue;
    apply_step(f, std::move(s), fx, actor, now);
  }
  return fx;
}

effects on(fleet& f, const std::string& actor, const ingest_reports& e, timestamp now) {
  return ingest(f, actor, e, now);
}

effects on(fleet& f, const std::string& actor, const create_enroll_token& e, timestamp now) {
  return on_create_enroll_token(f, actor, e, now);
}
effects on(fleet& f, const std::string& actor, const enroll_machine& e, timestamp now) {
  return on_enroll_machine(f, actor, e, now);
}
effects on(fleet& f, const std::string& actor, const renew_certificate& e, timestamp now) {
  return on_renew_certificate(f, actor, e, now);
}
effects on(fleet& f, const std::string& actor, const revoke_machine& e, timestamp now) {
  return on_revoke_machine(f, actor, e, now);
}
effects on(fleet& f, const std::string& actor, const add_webhook& e, timestamp now) {
  return on_add_webhook(f, actor, e, now);
}
effects on(fleet& f, const std::string& actor, const remove_webhook& e, timestamp now) {
  return on_remove_webhook(f, actor, e, now);
}

}  // namespace

effects apply(fleet& f, const event& e, timestamp now) {
  return std::visit([&](const auto& what) { return on(f, e.actor, what, now); }, e.what);
}

}  // namespace nixfleet::coordinator::core
