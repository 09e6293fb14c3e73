// The agent's loops. The poller runs deployments inline (one at a time); the reporter flushes the
// outbox independently, so reports queue while the coordinator is away and nothing else waits.
#include "nixfleet/agent/io/runtime.hpp"

#include "nixfleet/agent/io/control.hpp"
#include "nixfleet/agent/io/metrics.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nixfleet::agent::io {

namespace {
core::deployer_config deployer_config_for(const agent_config& cfg, health::gate_config gate,
                                          std::vector<health::gated_probe> probes) {
  core::deployer_config d;
  d.gate = gate;
  d.probes = std::move(probes);
  d.dry_run = cfg.dry_run;
  return d;
}
}  // namespace

agent_runtime::agent_runtime(const agent_config& cfg, runtime_seams seams, health::gate_config gate, std::uint64_t seed)
    : cfg_(cfg),
      seams_(seams),
      store_(cfg.state_dir),
      outbox_(cfg.outbox_limit),
      machine_(deployer_config_for(cfg, gate, seams.probes.probes())),
      driver_(machine_, {seams.nix, seams.activation, seams.probes, seams.time, seams.forensics}, store_, outbox_, cfg.machine_id,
              cfg.profile, std::string(nixfleet::version())),
      keys_(cfg.trusted_keys),
      trust_{&keys_, cfg.allow_unsigned, cfg.max_target_age},
      rng_(seed) {}

boost::asio::awaitable<void> agent_runtime::refresh_revocations(std::optional<std::uint64_t> announced) {
  const auto held = driver_.state().revocations ? driver_.state().revocations->sequence : 0;
  if (!announced || *announced <= held) co_return;
  auto res = co_await seams_.coordinator.get_revocations();
  if (!res.list) {
    log::warn("cannot fetch the revocation list", {{"error", res.error}, {"announced", *announced}});
    co_return;
  }
  if (auto why = co_await driver_.offer_revocations(std::move(*res.list), trust_); !why.empty())
    log::error("revocation list refused", {{"error", why}});
}

boost::asio::awaitable<void> agent_runtime::sleep_for(std::chrono::milliseconds d) {
  co_await seams_.time.sleep_until(seams_.time.now() + d);
}

boost::asio::awaitable<void> agent_runtime::run() {
  using namespace boost::asio::experimental::awaitable_operators;
  if (auto ec = store_.prepare()) log::error("cannot create the state directory", {{"dir", cfg_.state_dir}, {"error", ec.message()}});
  // Warned about, not refused: an agent without durable state still gates and rolls back within
  // this boot, while one that refuses to start leaves the host with no agent at all. The NixOS
  // module is where it is prevented (services.nixfleet-agent.persistence with impermanence).
  if (store_.volatile_storage())
    log::warn("state_dir is on a tmpfs: the in-flight record, anti-downgrade state and outbox are lost at reboot; "
              "persist it (services.nixfleet-agent.persistence with impermanence)",
              {{"dir", cfg_.state_dir}});
  auto box = store_.load_outbox(cfg_.outbox_limit);
  outbox_ = std::move(box.value);
  if (box.problem) log::error("outbox damaged", {{"problem", *box.problem}});
  co_await driver_.start();
  // Optional listeners: a control socket path and a metrics address.
  auto control = [this]() -> boost::asio::awaitable<void> {
    if (!cfg_.control_socket.empty()) co_await serve_control(cfg_.control_socket, *this, cfg_.control_deadline);
  };
  auto metrics = [this]() -> boost::asio::awaitable<void> {
    if (cfg_.metrics_listen) co_await serve_metrics(*cfg_.metrics_listen, *this);
  };
  co_await (poll_loop() && report_loop() && health_loop() && renew_loop() && control() && metrics());
}

// Renews the certificate at two thirds of its life, backing off on failure (the old one keeps
// working meanwhile). An expired one cannot be renewed (the handshake refuses it): only a new
// token an operator put in enroll_token_file brings the host back.
boost::asio::awaitable<void> agent_runtime::renew_loop() {
  auto* keeper = seams_.identity;
  if (keeper == nullptr || !keeper->current()) co_return;
  unsigned failures = 0;
  for (;;) {
    const auto cur = *keeper->current();
    auto& m = driver_.metrics();
    const auto wall = seams_.time.wall_now();
    m.certificate_expiry_unix = std::chrono::duration_cast<std::chrono::seconds>(cur.not_after.time_since_epoch()).count();
    m.certificate_days_left = std::chrono::duration<double, std::ratio<86400>>(cur.not_after - wall).count();
    if (wall >= cur.not_after) {
      auto r = co_await keeper->enroll();
      if (r.ok) {
        log::info("enrolled again with a new token", {{"serial", keeper->current()->serial}});
        seams_.coordinator.reload_identity();
        failures = 0;
        continue;
      }
      log::error("the certificate has expired: this host needs a new enrollment token", {{"error", r.error}});
      co_await sleep_for(std::max<std::chrono::milliseconds>(cfg_.retry_interval, std::chrono::minutes(1)));
      continue;
    }
    const auto due = renewal_due(cur);
    if (failures == 0 && wall < due) {
      co_await sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(due - wall));
      continue;
    }
    auto r = co_await keeper->renew(seams_.coordinator);
    if (r.ok) {
      failures = 0;
      ++m.certificate_renewals;
      seams_.coordinator.reload_identity();
      log::info("certificate renewed", {{"serial", keeper->current()->serial},
                                        {"not_after", protocol::format_time(keeper->current()->not_after)}});
      continue;
    }
    ++failures;
    ++m.certificate_renewal_failures;
    log::warn("certificate renewal failed", {{"error", r.error}, {"failures", failures},
                                             {"days_left", m.certificate_days_left}});
    // Backoff doubling from the retry interval up to an hour, never sleeping past the expiry.
    auto wait = cfg_.retry_interval * (1u << std::min(failures - 1, 7u));
    wait = std::min<std::chrono::milliseconds>(wait, std::chrono::hours(1));
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(cur.not_after - wall);
    wait = std::max<std::chrono::milliseconds>(std::min(wait, left / 2), std::chrono::seconds(1));
    co_await sleep_for(wait);
  }
}

boost::asio::awaitable<void> agent_runtime::poll_loop() {
  core::poll_policy policy{cfg_.poll_interval, std::chrono::seconds(1), cfg_.retry_interval, cfg_.startup_jitter};
  policy.long_poll = cfg_.long_poll;
  policy.reconnect_jitter = cfg_.reconnect_jitter;
  core::poller machine(policy);
  auto next = machine.resume(core::poller::start{}, seams_.time.now(), rng_());
  for (;;) {
    core::poller::event outcome;
    if (auto* w = std::get_if<core::poller::wait_until>(&next)) {
      co_await seams_.time.sleep_until(w->at);
      outcome = core::poller::woke{};
    } else if (auto* p = std::get_if<core::poller::poll>(&next)) {
      auto res = co_await seams_.coordinator.get_desired(p->etag, p->wait_s);
      auto& m = driver_.metrics();
      const bool failed = res.what == poll_result::outcome::failed;
      (failed ? m.polls_failed : m.polls_ok)++;
      if (failed) log::warn("poll failed", {{"error", res.error}, {"failures", machine.consecutive_failures() + 1}});
      else
        m.last_poll_unix =
            std::chrono::duration_cast<std::chrono::seconds>(seams_.time.wall_now().time_since_epoch()).count();
      const auto& held = driver_.state().revocations;
      outcome = core::poller::answered{std::move(res), held ? held->sequence : 0};
    } else if (auto* f = std::get_if<core::poller::fetch_revocations>(&next)) {
      co_await refresh_revocations(f->announced);
      outcome = core::poller::done{};
    } else {
      co_await driver_.deliver(std::get<core::poller::deliver>(next).desired, trust_);
      outcome = core::poller::done{};
    }
    next = machine.resume(outcome, seams_.time.now(), rng_());
  }
}

boost::asio::awaitable<void> agent_runtime::report_loop() {
  // The empty outbox is looked at rarely: a report pushed into it wakes the sender.
  core::reporter machine({100, std::chrono::seconds(30),
                          {std::chrono::milliseconds(500), std::chrono::seconds(1), cfg_.retry_interval,
                           std::chrono::milliseconds(0)}});
  auto next = machine.resume(core::reporter::ready{outbox_.size()}, seams_.time.now(), rng_());
  // A report queued while the outbox was empty goes at once, not at the next look: a confirmation
  // is what a rollout waits for. Waits after a failure (backoff) are not cut short.
  boost::asio::steady_timer pushed(co_await boost::asio::this_coro::executor);
  outbox_.on_push([&pushed] { pushed.cancel(); });
  struct unhook {
    core::outbox& o;
    ~unhook() { o.on_push(nullptr); }
  } hooked{outbox_};
  for (;;) {
    core::reporter::event outcome = core::reporter::ready{};
    if (auto* w = std::get_if<core::reporter::wait_until>(&next)) {
      if (outbox_.empty()) {
        using namespace boost::asio::experimental::awaitable_operators;
        pushed.expires_at(std::chrono::steady_clock::time_point::max());
        co_await (seams_.time.sleep_until(w->at) ||
                  pushed.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable)));
      } else {
        co_await seams_.time.sleep_until(w->at);
      }
    } else if (auto* send = std::get_if<core::reporter::send>(&next)) {
      auto batch = outbox_.batch(send->limit);
      const auto count = batch.size();
      auto res = co_await seams_.coordinator.post_reports(std::move(batch));
      if (!res.ok && !res.refused)
        log::warn("report delivery failed", {{"error", res.error}, {"pending", outbox_.size()}});
      outcome = core::reporter::sent{count, std::move(res)};
    } else if (auto* ack = std::get_if<core::reporter::acknowledge>(&next)) {
      const auto before = outbox_.size();
      outbox_.ack(ack->seq);
      driver_.metrics().reports_delivered += before - outbox_.size();
      driver_.metrics().last_report_unix =
          std::chrono::duration_cast<std::chrono::seconds>(seams_.time.wall_now().time_since_epoch()).count();
      if (auto ec = co_await store_.save_outbox(outbox_)) log::error("cannot persist the outbox", {{"error", ec.message()}});
    } else {
      const auto& bad = outbox_.items().front();
      log::error("coordinator refused a report; dropping it",
                 {{"seq", bad.seq},
                  {"kind", protocol::to_string(bad.kind)},
                  {"error", std::get<core::reporter::drop_oldest>(next).why}});
      outbox_.ack(bad.seq);
      ++driver_.metrics().reports_dropped;
    }
    if (auto* r = std::get_if<core::reporter::ready>(&outcome)) r->pending = outbox_.size();
    next = machine.resume(outcome, seams_.time.now(), rng_());
  }
}

boost::asio::awaitable<void> agent_runtime::health_loop() {
  // The first round runs at start: a host announces what it runs (and how healthy it is) at once.
  for (bool first = true;; first = false) {
    if (!first) co_await sleep_for(cfg_.health_interval);
    if (machine_.current() != core::deployer::stage::idle) continue;  // the gate is running probes
    auto results = co_await seams_.probes.round();
    for (const auto& r : results) driver_.metrics().probe_up[r.probe] = r.status == protocol::probe_status::pass ? 1 : 0;
    protocol::health_report h{true, results};
    for (const auto& p : seams_.probes.probes())
      for (const auto& r : results)
        if (r.probe == p.name && p.required && r.status != protocol::probe_status::pass) h.passed = false;
    core::report_action a{results.empty() ? protocol::report_kind::heartbeat : protocol::report_kind::health,
                          {}, {}, {}, {}, std::nullopt};
    if (!results.empty()) a.health = h;
    outbox_.push(driver_.stamp(a));
  }
}

}  // namespace nixfleet::agent::io
