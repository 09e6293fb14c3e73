// The fleet core's rules for what arrives from agents (which reports apply, what is kept and what
// is audited) and for which hosts a rollout takes.
#include "fleet_detail.hpp"

#include "nixfleet/protocol/codec.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <set>
#include <stdexcept>

namespace nixfleet::coordinator::core {

namespace json = boost::json;
using k = protocol::report_kind;

namespace {

constexpr std::size_t max_history = 20;

// Heartbeats and periodic health are not steps of a deployment.
bool lifecycle_kind(k kind) noexcept { return kind != k::heartbeat && kind != k::health; }

// Outcomes an operator would want in the record.
bool audited(k kind) noexcept {
  return kind == k::confirmed || kind == k::rolled_back || kind == k::rollback_failed || kind == k::activation_failed ||
         kind == k::rejected || kind == k::fetch_failed;
}

}  // namespace

std::optional<std::string> health_path_of(const machine_record& m) {
  return m.health_on_current ? m.current_path : m.health_path;
}

void set_health_path(machine_record& m, std::optional<std::string> path) {
  m.health_on_current = path && path == m.current_path;
  m.health_path = m.health_on_current ? std::nullopt : std::move(path);
}

void set_last_report(machine_record& m, const protocol::report& r) {
  last_report_record kept;
  kept.at = r.at;
  kept.kind = r.kind;
  kept.store_path = r.store_path;
  json::object rest{{"seq", r.seq}, {"agent_version", r.agent_version}, {"uptime_s", r.uptime_s}};
  if (r.release_id) rest["release_id"] = *r.release_id;
  if (r.rollout_id) rest["rollout_id"] = *r.rollout_id;
  if (r.message) rest["message"] = *r.message;
  if (r.health && r.health == m.health) kept.shares |= last_report_record::health;
  else if (r.health) rest["health"] = protocol::to_json(*r.health);
  if (r.current_path && r.current_path == m.current_path) kept.shares |= last_report_record::current;
  else if (r.current_path) rest["current_path"] = *r.current_path;
  if (r.booted_path && r.booted_path == m.booted_path) kept.shares |= last_report_record::booted;
  else if (r.booted_path) rest["booted_path"] = *r.booted_path;
  kept.rest = json::serialize(rest);
  m.last_report = std::move(kept);
}

protocol::report last_report_of(const machine_record& m) {
  const auto& kept = m.last_report.value();
  // Written by set_last_report from a report that was valid: it reads back.
  const auto rest = json::parse(kept.rest).as_object();
  auto text = [&](const char* name) -> std::optional<std::string> {
    if (const auto* v = rest.if_contains(name)) return std::string(v->as_string());
    return std::nullopt;
  };
  protocol::report r;
  r.seq = rest.at("seq").to_number<std::uint64_t>();
  r.at = kept.at;
  r.kind = kept.kind;
  r.store_path = kept.store_path;
  r.release_id = text("release_id");
  r.rollout_id = text("rollout_id");
  r.message = text("message");
  if (kept.shares & last_report_record::health) {
    r.health = m.health;
  } else if (const auto* h = rest.if_contains("health")) {
    auto health = protocol::from_json<protocol::health_report>(*h);
    if (!health) throw std::logic_error("a machine's last report does not read back: " + health.error().what());
    r.health = std::move(*health);
  }
  r.current_path = kept.shares & last_report_record::current ? m.current_path : text("current_path");
  r.booted_path = kept.shares & last_report_record::booted ? m.booted_path : text("booted_path");
  r.agent_version = std::string(rest.at("agent_version").as_string());
  r.uptime_s = rest.at("uptime_s").to_number<std::uint64_t>();
  return r;
}

effects ingest(fleet& f, const std::string& actor, const ingest_reports& e, timestamp now) {
  effects fx;
  if (e.batch.reports.empty()) {
    fx.reply = protocol::report_ack{0};
    return fx;
  }
  const auto& id = e.machine_id;
  auto [it, created] = f.machines.try_emplace(id);
  auto& m = it->second;
  if (created) {
    m.id = id;
    fx.changes.audit.push_back({now, actor, "machine.registered", id, json::object{}});
  }
  // In sequence order, without copying the batch.
  std::vector<const protocol::report*> in_order;
  in_order.reserve(e.batch.reports.size());
  for (const auto& r : e.batch.reports) in_order.push_back(&r);
  std::stable_sort(in_order.begin(), in_order.end(), [](const auto* a, const auto* b) { return a->seq < b->seq; });
  std::uint64_t max_seq = 0;
  bool changed = created;
  for (const auto* each : in_order) {
    const auto& r = *each;
    max_seq = std::max(max_seq, r.seq);
    // Every report is kept (a (machine, seq) already stored is not doubled).
    fx.changes.reports.push_back({id, now, r});
    // A report older than what was applied is a replay; one with a lower sequence but a later
    // time means the agent started its numbering again (its state was wiped).
    const bool fresh = r.seq > m.acked_seq || (m.last_report && r.at > m.last_report->at && r.seq < m.acked_seq);
    if (!fresh) continue;
    m.acked_seq = r.seq;
    m.last_seen = now;
    if (r.current_path && r.current_path != m.current_path) {
      json::object detail{{"from", m.current_path ? json::value(*m.current_path) : json::value(nullptr)},
                          {"to", *r.current_path}};
      fx.changes.audit.push_back({now, actor, "machine.current_changed", id, std::move(detail)});
      // Health measured on what ran until now stays about that path.
      if (m.health_on_current) set_health_path(m, m.current_path);
      m.current_path = r.current_path;
    }
    if (r.booted_path) m.booted_path = r.booted_path;
    // The machine's health is that of what it runs: a failed gate's results are about the target
    // it rolled back from, and stay in that report.
    if (r.health && (!r.store_path || r.store_path == r.current_path)) {
      m.health = r.health;
      set_health_path(m, r.current_path);
    }
    if (lifecycle_kind(r.kind)) {
      m.last_event = lifecycle_event{r.kind, r.store_path, r.message, now};
      // What the rollout waits for: it should not wait for the next tick to see it.
      fx.reconcile = fx.reconcile || f.active_rollout_of.contains(id);
      if (audited(r.kind) && m.last_audited != std::pair(r.kind, r.store_path)) {
        m.last_audited.emplace(r.kind, r.store_path);
        json::object detail{{"kind", protocol::to_string(r.kind)}};
        if (r.store_path) detail["store_path"] = *r.store_path;
        if (r.message) detail["message"] = *r.message;
        // The report it came from, kept with its forensics: GET …/reports?kind=… finds it by seq.
        detail["report_seq"] = r.seq;
        if (r.forensics) detail["forensics"] = true;
        fx.changes.audit.push_back(
            {now, actor, "machine." + std::string(protocol::to_string(r.kind)), id, std::move(detail)});
      }
      // `up_to_date`: the host runs, and has confirmed, the path it was asked for.
      if ((r.kind == k::confirmed || r.kind == k::up_to_date) && r.store_path &&
          (m.history.empty() || m.history.front().store_path != *r.store_path)) {
        m.history.insert(m.history.begin(), protocol::confirmed_generation{*r.store_path, now});
        if (m.history.size() > max_history) m.history.resize(max_history);
      }
    }
    set_last_report(m, r);
    changed = true;
  }
  fx.changes.machines.push_back(m);
  if (changed) fx.republish.push_back(id);
  fx.reply = protocol::report_ack{max_seq};
  return fx;
}

std::variant<std::vector<candidate>, refusal> resolve_targets(const fleet& f, const protocol::release& release,
                                                              const protocol::rollout_target& target) {
  const std::set<std::string> wanted(target.hosts.begin(), target.hosts.end());
  for (const auto& h : wanted) {
    if (!find_entry(f, release, h)) return refusal{400, "invalid_field", "target.hosts: " + h + " has no entry in the release"};
  }
  auto has = [](const std::vector<std::string>& tags, const std::string& t) {
    return std::find(tags.begin(), tags.end(), t) != tags.end();
  };
  // A host is taken when named, or when it carries a wanted tag in the release or in the fleet;
  // decommissioned machines never are.
  std::vector<candidate> out;
  for (const auto& e : release.entries) {
    auto m = f.machines.find(e.hostname);
    if (m != f.machines.end() && m->second.state == protocol::lifecycle::decommissioned) continue;
    bool in = wanted.contains(e.hostname);
    for (const auto& t : target.tags) in = in || has(e.tags, t) || (m != f.machines.end() && has(m->second.tags, t));
    if (in) out.push_back({e.hostname, e.store_path});
  }
  if (out.empty()) return refusal{400, "no_hosts", "no machine of the release matches the target"};
  for (const auto& c : out)
    if (auto a = f.active_rollout_of.find(c.hostname); a != f.active_rollout_of.end())
      return refusal{409, "in_rollout", c.hostname + " is already in active rollout " + a->second.rollout};
  return out;
}

}  // namespace nixfleet::coordinator::core
