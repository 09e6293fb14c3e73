// The deployer's hands.
#include "nixfleet/agent/io/deploy_driver.hpp"

#include "nixfleet/agent/core/forensics.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <algorithm>
#include <variant>

namespace nixfleet::agent::io {

deploy_driver::deploy_driver(core::deployer& machine, driver_seams seams, const state_store& store, core::outbox& box,
                             std::string machine_id, std::string profile, std::string agent_version)
    : machine_(machine),
      seams_(seams),
      store_(store),
      outbox_(box),
      machine_id_(std::move(machine_id)),
      profile_(std::move(profile)),
      agent_version_(std::move(agent_version)),
      started_(seams.time.now()) {}

core::host_facts deploy_driver::facts(const core::trust_policy& trust) {
  core::host_facts f;
  f.machine_id = machine_id_;
  f.current_path = seams_.activation.running();
  f.on_hold = state_.hold;
  f.trust = trust;
  f.now = seams_.time.wall_now();
  f.accepted = state_.accepted;
  f.step_back = state_.step_back;
  f.staged_boot = state_.staged_boot;
  f.revocations = state_.revocations ? &*state_.revocations : nullptr;
  f.quarantine = &state_.quarantine;
  return f;
}

protocol::report deploy_driver::stamp(const core::report_action& a) {
  protocol::report r;
  r.at = seams_.time.wall_now();
  r.kind = a.kind;
  r.store_path = a.store_path;
  r.release_id = a.release_id;
  r.rollout_id = a.rollout_id;
  r.message = a.message;
  r.health = a.health;
  if (auto running = seams_.activation.running(); !protocol::check_store_path(running)) r.current_path = running;
  r.agent_version = agent_version_;
  r.uptime_s = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(seams_.time.now() - started_).count());
  return r;
}

boost::asio::awaitable<void> deploy_driver::emit(protocol::report r) {
  const auto kind = r.kind;
  switch (kind) {
    case protocol::report_kind::activated: ++metrics_.activations; break;
    case protocol::report_kind::activation_failed: ++metrics_.activation_failures; break;
    case protocol::report_kind::rolled_back: ++metrics_.rollbacks; break;
    case protocol::report_kind::confirmed: ++metrics_.confirmations; break;
    default: break;
  }
  const auto seq = outbox_.push(std::move(r));
  if (auto ec = co_await store_.save_outbox(outbox_))
    log::error("cannot persist the outbox", {{"error", ec.message()}, {"seq", seq}});
  log::info("report", {{"kind", protocol::to_string(kind)}, {"seq", seq}});
}

boost::asio::awaitable<protocol::forensics_bundle> deploy_driver::investigate(const core::report_action& a) {
  protocol::forensics_bundle b;
  // After an agent restart the switch's output and start time are gone: the journal is then the
  // newest lines of the failed units.
  if (seams_.forensics != nullptr) {
    // (named: GCC 12 destroys braced temporaries inside co_await twice)
    forensics_request q{*a.store_path, *a.investigate_against, activation_began_, switch_output_, std::nullopt};
    if (failed_target_ == *a.store_path) q.failed = failed_before_rollback_;
    // Used up by the final outcome; a failed rollback's retries keep it.
    if (a.kind == protocol::report_kind::rolled_back) failed_target_.clear();
    b = co_await seams_.forensics->investigate(std::move(q));
  }
  if (!protocol::check_store_path(*a.store_path)) b.target = a.store_path;
  if (!protocol::check_store_path(*a.investigate_against)) b.previous = a.investigate_against;
  if (a.health)
    b.probes = core::evidence_of(*a.health, [this](const std::string& probe) { return seams_.probes.output_of(probe); });
  if (!switch_output_.empty())
    b.switch_output = protocol::printable_excerpt(switch_output_, protocol::limits::max_switch_output_bytes);
  co_return b;
}

boost::asio::awaitable<void> deploy_driver::save_state() {
  if (auto ec = co_await store_.save_state(state_)) log::error("cannot persist agent state", {{"error", ec.message()}});
}

boost::asio::awaitable<void> deploy_driver::start() {
  auto st = store_.load_state();
  state_ = st.value;
  auto rec = store_.load_record();
  for (const auto* problem : {&st.problem, &rec.problem}) {
    if (!*problem) continue;
    log::error("durable state was damaged", {{"problem", **problem}});
    core::report_action a{protocol::report_kind::health, {}, {}, {}, "agent state damaged: " + **problem,
                          protocol::health_report{false, {}}};
    auto r = stamp(a);
    co_await emit(std::move(r));
  }
  // A switch started by the previous agent process may still be running: judge what runs after it.
  if (rec.value) co_await seams_.activation.wait_for_earlier_switch();
  co_await execute(machine_.start(rec.value, seams_.activation.running(), seams_.time.now()));
}

boost::asio::awaitable<void> deploy_driver::deliver(protocol::desired_state desired, const core::trust_policy& trust) {
  co_await execute(machine_.on_desired(desired, facts(trust), seams_.time.now()));
}

boost::asio::awaitable<std::string> deploy_driver::offer_revocations(protocol::revocation_list list,
                                                                     const core::trust_policy& trust) {
  const auto held = state_.revocations ? state_.revocations->sequence : 0;
  if (list.sequence <= held) co_return std::string();  // nothing new (or a replay of an older list)
  if (trust.keys == nullptr || trust.keys->empty()) co_return std::string("no trusted_keys to verify it with");
  protocol::verify_options opts{.now = seams_.time.wall_now()};
  if (state_.revocations) opts.revoked_keys = state_.revocations->keys;
  if (auto ec = protocol::verify_revocations(*trust.keys, list, opts))
    co_return "revocation list #" + std::to_string(list.sequence) + " refused: " + ec.message();
  state_.revocations = std::move(list);
  co_await save_state();
  const auto& kept = *state_.revocations;
  log::info("revocation list accepted", {{"sequence", kept.sequence}});
  const auto running = seams_.activation.running();
  if (std::find(kept.store_paths.begin(), kept.store_paths.end(), running) != kept.store_paths.end()) {
    core::report_action a{protocol::report_kind::rejected, running, {}, {},
                          "the running generation is revoked by the operator (revocation list #" +
                              std::to_string(kept.sequence) + "); it keeps running until a new target is deployed",
                          {}};
    auto r = stamp(a);
    co_await emit(std::move(r));
  }
  co_return std::string();
}

boost::asio::awaitable<void> deploy_driver::manual_rollback() {
  // The newest confirmed generation that is not the one running.
  const auto running = seams_.activation.running();
  std::string to;
  for (auto it = state_.confirmed.rbegin(); it != state_.confirmed.rend() && to.empty(); ++it)
    if (*it != running) to = *it;
  co_await execute(machine_.on_manual_rollback(running, to, seams_.time.now()));
}

boost::asio::awaitable<void> deploy_driver::set_hold(bool on) {
  state_.hold = on;
  co_await save_state();
  // (built before co_await: GCC 12 destroys braced temporaries inside co_await twice)
  core::report_action a{protocol::report_kind::heartbeat, {}, {}, {},
                        std::string(on ? "hold set locally: deployments wait" : "hold released locally"), {}};
  auto r = stamp(a);
  co_await emit(std::move(r));
}

boost::asio::awaitable<void> deploy_driver::execute(core::actions acts) {
  while (!acts.empty()) {
    core::actions next;
    for (const auto& a : acts) {
      if (auto follow = co_await perform(a)) {
        next = std::move(*follow);
        break;
      }
    }
    acts = std::move(next);
  }
}

boost::asio::awaitable<std::optional<core::actions>> deploy_driver::perform(const core::action& a) {
  auto& t = seams_.time;
  if (const auto* r = std::get_if<core::report_action>(&a)) {
    auto full = stamp(*r);
    if (r->investigate_against && r->store_path) full.forensics = co_await investigate(*r);
    co_await emit(std::move(full));
    co_return std::nullopt;
  }
  if (const auto* f = std::get_if<core::fetch_action>(&a)) {
    log::info("fetching", {{"store_path", f->store_path}});
    auto res = co_await seams_.nix.fetch(f->store_path, f->cache_urls);
    co_return machine_.on_fetch_done(res.ok, res.error, t.now());
  }
  if (const auto* w = std::get_if<core::write_record_action>(&a)) {
    const auto ec = co_await store_.save_record(w->record);
    if (ec) log::error("cannot write the in-flight record", {{"error", ec.message()}});
    if (w->notify) co_return machine_.on_record_written(!ec, ec ? ec.message() : "", t.now());
    co_return std::nullopt;
  }
  if (const auto* act = std::get_if<core::activate_action>(&a)) {
    log::info("activating", {{"store_path", act->store_path}, {"mode", protocol::to_string(act->mode)}});
    if (act->mode != protocol::activation_mode::test) {
      auto set = co_await seams_.nix.set_profile(profile_, act->store_path);
      if (!set.ok) co_return machine_.on_activation_done(false, set.error, seams_.activation.running(), t.now());
    }
    const auto began = t.now();
    activation_began_ = t.wall_now();
    auto sw = co_await seams_.activation.switch_to(act->store_path, act->mode);
    metrics_.last_activation_seconds = std::chrono::duration<double>(t.now() - began).count();
    switch_output_ = std::move(sw.output);
    co_return machine_.on_activation_done(sw.ok, sw.error, seams_.activation.running(), t.now());
  }
  if (const auto* p = std::get_if<core::probe_round_action>(&a)) {
    co_await t.sleep_until(p->at);
    auto results = co_await seams_.probes.round();
    for (const auto& r : results) metrics_.probe_up[r.probe] = r.status == protocol::probe_status::pass ? 1 : 0;
    co_return machine_.on_probe_round(t.now(), results);
  }
  if (const auto* rb = std::get_if<core::rollback_action>(&a)) {
    log::warn("rolling back", {{"to", rb->store_path}});
    // The switch back restarts what failed: list it first (once per failed target).
    if (const auto& rec = machine_.record();
        seams_.forensics != nullptr && rec && !rec->manual && failed_target_ != rec->target) {
      failed_before_rollback_ = co_await seams_.forensics->failed_units();
      failed_target_ = rec->target;
    }
    std::string error;
    if (rb->mode != protocol::activation_mode::test) {
      auto set = co_await seams_.nix.set_profile(profile_, rb->store_path);
      if (!set.ok) error = set.error;  // still switch: the running system matters most
    }
    const auto began = t.now();
    auto sw = co_await seams_.activation.switch_to(rb->store_path, rb->mode);
    metrics_.last_rollback_seconds = std::chrono::duration<double>(t.now() - began).count();
    if (!sw.ok) error += (error.empty() ? "" : "; ") + sw.error;
    co_return machine_.on_rollback_done(sw.ok, error, seams_.activation.running(), t.now());
  }
  if (std::holds_alternative<core::clear_record_action>(a)) {
    if (auto ec = store_.clear_record()) log::error("cannot remove the in-flight record", {{"error", ec.message()}});
    co_return std::nullopt;
  }
  if (const auto* q = std::get_if<core::quarantine_action>(&a)) {
    state_.quarantine.push_back(q->entry);
    co_await save_state();
    co_return std::nullopt;
  }
  if (const auto* lg = std::get_if<core::set_last_good_action>(&a)) {
    state_.last_good = lg->store_path;
    std::erase(state_.confirmed, lg->store_path);
    state_.confirmed.push_back(lg->store_path);
    co_await save_state();
    co_return std::nullopt;
  }
  if (const auto* acc = std::get_if<core::accept_action>(&a)) {
    // Already the maximum of what was held and the target (core::raised): one deployment at a
    // time, so the state it was computed from is the state here.
    state_.accepted = acc->accepted;
    state_.step_back = acc->step_back;
    state_.staged_boot = acc->staged_boot;
    co_await save_state();
    co_return std::nullopt;
  }
  if (const auto* w = std::get_if<core::wait_action>(&a)) {
    co_await t.sleep_until(w->until);
    co_return machine_.on_timer(t.now());
  }
  co_return std::nullopt;
}

}  // namespace nixfleet::agent::io
