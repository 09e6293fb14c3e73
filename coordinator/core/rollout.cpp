// The rollout state machine: planning, reconciliation and operator commands.
#include "nixfleet/coordinator/core/rollout.hpp"

#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace nixfleet::coordinator::core {

using protocol::host_state;
using protocol::report_kind;
using protocol::rollout_status;
using protocol::wave_status;

namespace {

// FNV-1a: a stable order that differs per rollout, so one host is not always the canary.
std::uint64_t shuffle_key(std::string_view rollout_id, std::string_view hostname) {
  std::uint64_t h = 14695981039346656037ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(rollout_id);
  mix("/");
  mix(hostname);
  return h;
}

bool settled(host_state s) {
  return s == host_state::confirmed || s == host_state::soaked || s == host_state::failed || s == host_state::left;
}

bool in_flight(host_state s) { return s == host_state::dispatched || s == host_state::activating; }

bool failure_kind(report_kind k) {
  return k == report_kind::fetch_failed || k == report_kind::rejected || k == report_kind::activation_failed ||
         k == report_kind::rolled_back || k == report_kind::rollback_failed;
}

// Builds one step: keeps the next rollout, the changes and the events with their numbers.
class stepper {
 public:
  stepper(const protocol::rollout_detail& r, timestamp now) : now_(now) {
    out_.rollout = r;
    next_seq_ = r.events.empty() ? 1 : r.events.back().seq + 1;
  }

  protocol::rollout_detail& rollout() { return out_.rollout; }
  timestamp now() const { return now_; }

  void event(std::string kind, std::string message, std::optional<std::string> host = std::nullopt,
             std::optional<std::uint32_t> wave = std::nullopt) {
    out_.events.push_back({next_seq_++, now_, std::move(kind), std::move(host), wave, std::move(message)});
    out_.rollout.events.push_back(out_.events.back());
  }

  void change(desired_change c) {
    changed_.insert(c.hostname);
    out_.changes.push_back(std::move(c));
  }
  bool changed(const std::string& hostname) const { return changed_.contains(hostname); }

  void set_state(protocol::rollout_host& h, host_state s, std::string message, std::string kind) {
    h.state = s;
    h.message = message;
    h.updated_at = now_;
    event(std::move(kind), std::move(message), h.hostname, h.wave);
  }

  step take() && { return std::move(out_); }

 private:
  step out_;
  timestamp now_;
  std::uint64_t next_seq_ = 1;
  std::unordered_set<std::string> changed_;  // hosts with a desired change in this step
};

const observation* find(const std::unordered_map<std::string_view, const observation*>& by_host,
                        const std::string& hostname) {
  auto it = by_host.find(hostname);
  return it == by_host.end() ? nullptr : it->second;
}

// A failed host is told to run what it runs, so that the fleet view stays true and the agent
// stops being asked for a target it has quarantined.
void reset_failed(stepper& s, const protocol::rollout_host& h, const observation* o) {
  std::optional<std::string> path = o != nullptr && o->current_path ? o->current_path : h.previous_path;
  if (!path || !o || !o->exists) return;
  std::optional<std::string> release;
  if (path == h.previous_path) release = h.previous_release_id;
  if (o->desired_path == path) return;
  s.change({desired_change::reason::reset_failed, h.hostname, *path, release, o->attempt + 1});
}

// Follows what a dispatched host reported since its dispatch, about this rollout's path only.
void follow(stepper& s, protocol::rollout_host& h, const observation* o, std::uint32_t health_timeout_s) {
  if (o != nullptr && o->last_kind && o->last_at && h.dispatched_at && *o->last_at >= *h.dispatched_at &&
      o->last_path && o->last_path == h.target_path) {
    const report_kind k = *o->last_kind;
    std::string detail = o->last_message ? ": " + *o->last_message : std::string();
    if (k == report_kind::confirmed || k == report_kind::up_to_date) {
      s.set_state(h, host_state::confirmed, "health gate passed", "host_confirmed");
      return;
    }
    if (failure_kind(k)) {
      s.set_state(h, host_state::failed, std::string(protocol::to_string(k)) + detail, "host_failed");
      reset_failed(s, h, o);
      return;
    }
    if ((k == report_kind::fetching || k == report_kind::fetched || k == report_kind::activating ||
         k == report_kind::activated) &&
        h.state == host_state::dispatched) {
      s.set_state(h, host_state::activating, std::string(protocol::to_string(k)), "host_activating");
    }
  }
  if (h.dispatched_at && s.now() - *h.dispatched_at >= std::chrono::seconds(health_timeout_s)) {
    s.set_state(h, host_state::failed,
                "no confirmation within health_timeout_s (" + std::to_string(health_timeout_s) + " s)",
                "host_failed");
    reset_failed(s, h, o);
  }
}

void dispatch(stepper& s, protocol::rollout_host& h, const observation& o) {
  h.previous_path = o.current_path;
  h.previous_release_id = o.current_path && o.desired_path == o.current_path ? o.desired_release_id : std::nullopt;
  h.attempt = o.attempt + 1;
  h.dispatched_at = s.now();
  s.change({desired_change::reason::dispatch, h.hostname, *h.target_path, s.rollout().spec.release_id, *h.attempt});
  s.set_state(h, host_state::dispatched, "desired state set to " + *h.target_path, "host_dispatched");
}

void apply_failure_policy(stepper& s, const std::unordered_map<std::string_view, const observation*>& by_host,
                          std::uint32_t wave, std::uint64_t failures, std::uint64_t allowed) {
  auto& r = s.rollout();
  r.waves[wave - 1].status = wave_status::failed;
  r.waves[wave - 1].finished_at = s.now();
  s.event("threshold_exceeded",
          std::to_string(failures) + " failed, " + std::to_string(allowed) + " allowed (failure_threshold " +
              r.spec.failure_threshold.to_string() + ")",
          std::nullopt, wave);
  switch (r.spec.on_failure) {
    case protocol::failure_action::pause:
      r.status = rollout_status::paused;
      s.event("rollout_paused", "paused by on_failure; resume to continue");
      break;
    case protocol::failure_action::halt:
      r.status = rollout_status::halted;
      s.event("rollout_halted", "halted by on_failure; hosts are left as they are");
      break;
    case protocol::failure_action::revert:
      r.status = rollout_status::reverted;
      for (auto& h : r.hosts) {
        if (h.state == host_state::pending || h.state == host_state::left) continue;
        const observation* o = find(by_host, h.hostname);
        if (!h.previous_path) {
          s.event("host_not_reverted", "the path it ran before dispatch is unknown", h.hostname, h.wave);
          continue;
        }
        if (o == nullptr || !o->exists) continue;
        if (o->desired_path != h.previous_path && !s.changed(h.hostname))
          s.change({desired_change::reason::revert, h.hostname, *h.previous_path, h.previous_release_id,
                    o->attempt + 1});
        s.event("host_reverted", "desired state set back to " + *h.previous_path, h.hostname, h.wave);
      }
      s.event("rollout_reverted", "every dispatched host goes back to the path it ran before");
      break;
  }
}

}  // namespace

bool is_active(rollout_status s) noexcept { return s == rollout_status::running || s == rollout_status::paused; }

std::uint64_t allowed_failures(const protocol::size_spec& threshold, std::uint64_t hosts) noexcept {
  if (threshold.kind == protocol::size_spec::unit::count) return threshold.value;
  return hosts * threshold.value / 100;
}

protocol::rollout_detail plan(std::string id, protocol::rollout_request spec, std::vector<candidate> candidates,
                              std::string created_by, timestamp now) {
  std::sort(candidates.begin(), candidates.end(), [&id](const candidate& a, const candidate& b) {
    auto ka = shuffle_key(id, a.hostname), kb = shuffle_key(id, b.hostname);
    return ka != kb ? ka < kb : a.hostname < b.hostname;
  });
  protocol::rollout_detail r;
  r.id = std::move(id);
  r.spec = std::move(spec);
  r.status = rollout_status::running;
  r.created_at = now;
  r.created_by = std::move(created_by);
  const std::uint64_t total = candidates.size();
  std::uint64_t placed = 0;
  for (std::size_t i = 0; i < r.spec.waves.size() && placed < total; ++i) {
    const bool last = i + 1 == r.spec.waves.size();
    std::uint64_t reach = last ? total : std::min(total, r.spec.waves[i].resolve(total));
    if (reach <= placed) continue;
    protocol::rollout_wave w;
    w.index = static_cast<std::uint32_t>(r.waves.size() + 1);
    for (; placed < reach; ++placed) {
      auto& c = candidates[placed];
      w.hosts.push_back(c.hostname);
      protocol::rollout_host h;
      h.hostname = c.hostname;
      h.wave = w.index;
      h.target_path = c.store_path;
      r.hosts.push_back(std::move(h));
    }
    r.waves.push_back(std::move(w));
  }
  return r;
}

step reconcile(const protocol::rollout_detail& rollout, const std::vector<observation>& observed, timestamp now) {
  stepper s(rollout, now);
  auto& r = s.rollout();
  if (!is_active(r.status)) return std::move(s).take();

  std::unordered_map<std::string_view, const observation*> by_host;
  for (const auto& o : observed) by_host.emplace(o.hostname, &o);

  // Hosts: leaving, reports, timeouts.
  for (auto& h : r.hosts) {
    const observation* o = find(by_host, h.hostname);
    const bool gone = o == nullptr || !o->exists || o->lifecycle == protocol::lifecycle::decommissioned;
    if (gone && !settled(h.state)) {
      s.set_state(h, host_state::left, o == nullptr || !o->exists ? "machine deleted" : "decommissioned",
                  "host_left");
      continue;
    }
    if (in_flight(h.state)) follow(s, h, o, r.spec.health_timeout_s);
  }

  // Waves: start, dispatch, judge, soak, promote; several in one step when nothing holds them.
  while (r.current_wave >= 1 && r.current_wave <= r.waves.size()) {
    auto& w = r.waves[r.current_wave - 1];
    const std::uint32_t wi = r.current_wave;
    if (r.status == rollout_status::running && w.status == wave_status::pending) {
      w.status = wave_status::active;
      w.started_at = now;
      s.event("wave_started", std::to_string(w.hosts.size()) + " hosts", std::nullopt, wi);
    }
    if (r.status == rollout_status::running) {
      for (auto& h : r.hosts) {
        if (h.wave > wi || h.state != host_state::pending) continue;
        const observation* o = find(by_host, h.hostname);
        if (o == nullptr) continue;
        if (o->lifecycle == protocol::lifecycle::maintenance) {
          s.set_state(h, host_state::left, "in maintenance", "host_left");
          continue;
        }
        dispatch(s, h, *o);
      }
    }

    std::uint64_t members = 0, failures = 0, open = 0;
    for (const auto& h : r.hosts) {
      if (h.wave != wi || h.state == host_state::left) continue;
      ++members;
      if (h.state == host_state::failed) ++failures;
      if (!settled(h.state)) ++open;
    }
    const std::uint64_t counted = failures > w.tolerated_failures ? failures - w.tolerated_failures : 0;
    const std::uint64_t allowed = allowed_failures(r.spec.failure_threshold, members);
    if (r.status == rollout_status::running && counted > allowed) {
      apply_failure_policy(s, by_host, wi, counted, allowed);
      break;
    }
    if (open > 0) break;
    if (w.status == wave_status::active) {
      w.status = wave_status::soaking;
      w.soak_until = now + std::chrono::seconds(r.spec.soak_s);
      s.event("wave_soaking", "every host confirmed or failed; soaking " + std::to_string(r.spec.soak_s) + " s",
              std::nullopt, wi);
    }
    if (r.status != rollout_status::running || w.status != wave_status::soaking || now < *w.soak_until) break;
    for (auto& h : r.hosts)
      if (h.wave == wi && h.state == host_state::confirmed) s.set_state(h, host_state::soaked, "soaked", "host_soaked");
    w.status = wave_status::done;
    w.finished_at = now;
    s.event("wave_done", std::to_string(failures) + " of " + std::to_string(members) + " failed", std::nullopt, wi);
    if (wi == r.waves.size()) {
      r.status = rollout_status::completed;
      s.event("rollout_completed", "every wave done");
      break;
    }
    ++r.current_wave;
  }
  return std::move(s).take();
}

command_result pause(const protocol::rollout_detail& rollout, timestamp now) {
  if (rollout.status != rollout_status::running)
    return {std::nullopt, "only a running rollout can be paused (it is " +
                              std::string(protocol::to_string(rollout.status)) + ")"};
  stepper s(rollout, now);
  s.rollout().status = rollout_status::paused;
  s.event("rollout_paused", "paused by an operator; hosts already dispatched carry on");
  return {std::move(s).take(), {}};
}

command_result resume(const protocol::rollout_detail& rollout, bool retry_failed, timestamp now) {
  if (rollout.status != rollout_status::paused)
    return {std::nullopt, "only a paused rollout can be resumed (it is " +
                              std::string(protocol::to_string(rollout.status)) + ")"};
  stepper s(rollout, now);
  auto& r = s.rollout();
  r.status = rollout_status::running;
  if (r.current_wave >= 1 && r.current_wave <= r.waves.size()) {
    auto& w = r.waves[r.current_wave - 1];
    std::uint32_t failures = 0;
    for (auto& h : r.hosts) {
      if (h.state != host_state::failed || h.wave > r.current_wave) continue;
      if (retry_failed) {
        s.set_state(h, host_state::pending, "retrying with a raised attempt", "host_retry");
      } else if (h.wave == r.current_wave) {
        ++failures;
      }
    }
    w.tolerated_failures = retry_failed ? 0 : failures;
    if (w.status == wave_status::failed || (retry_failed && w.status == wave_status::soaking)) {
      w.status = wave_status::active;
      w.soak_until.reset();
      w.finished_at.reset();
    }
  }
  s.event("rollout_resumed", retry_failed ? "resumed; failed hosts are retried"
                                          : "resumed; the failures so far are accepted");
  return {std::move(s).take(), {}};
}

command_result cancel(const protocol::rollout_detail& rollout, timestamp now) {
  if (!is_active(rollout.status))
    return {std::nullopt,
            "the rollout has already ended (" + std::string(protocol::to_string(rollout.status)) + ")"};
  stepper s(rollout, now);
  s.rollout().status = rollout_status::cancelled;
  s.event("rollout_cancelled", "cancelled by an operator; hosts keep their desired state");
  return {std::move(s).take(), {}};
}

// ---------------------------------------------------------------------------------------
// JSON

namespace {
using namespace protocol::fields;
constexpr spec path_spec{.fn = protocol::check_store_path};
constexpr spec id_spec{.fn = protocol::check_identifier};
}  // namespace

// Found by argument-dependent lookup from the field encoder and decoder.
template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, observation>
void describe(V& v, X& x) {
  v.req("hostname", x.hostname, id_spec);
  v.def("exists", x.exists);
  v.def("lifecycle", x.lifecycle);
  v.opt("current_path", x.current_path, path_spec);
  v.opt("desired_path", x.desired_path, path_spec);
  v.opt("desired_release_id", x.desired_release_id, id_spec);
  v.def("attempt", x.attempt);
  v.opt("last_kind", x.last_kind);
  v.opt("last_path", x.last_path, path_spec);
  v.opt("last_message", x.last_message);
  v.opt("last_at", x.last_at);
}

namespace {
std::string_view reason_name(desired_change::reason r) {
  switch (r) {
    case desired_change::reason::dispatch: return "dispatch";
    case desired_change::reason::reset_failed: return "reset_failed";
    case desired_change::reason::revert: return "revert";
  }
  return "unknown";
}
}  // namespace

boost::json::value to_json(const observation& o) { return encoder::write(o); }

protocol::decoded<observation> observation_from_json(const boost::json::value& v) {
  std::optional<protocol::decode_error> err;
  observation o;
  decoder d(v, nullptr, err);
  if (d.ok()) describe(d, o);
  if (err) return *err;
  return o;
}

boost::json::value to_json(const desired_change& c) {
  boost::json::object o;
  o["reason"] = reason_name(c.why);
  o["hostname"] = c.hostname;
  o["store_path"] = c.store_path;
  if (c.release_id) o["release_id"] = *c.release_id;
  o["attempt"] = c.attempt;
  return o;
}

}  // namespace nixfleet::coordinator::core
