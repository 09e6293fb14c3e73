// The deploy lifecycle against a simulated host (profile, running system, durable files) with
// mock time: scripted scenarios, an error injected at each step, and a crash injected before and
// after every action followed by a restart.
#include "nixfleet/agent/core/deployer.hpp"

#include <boost/test/unit_test.hpp>

#include <set>

using namespace nixfleet;
using namespace nixfleet::agent::core;
using namespace std::chrono_literals;
using protocol::report_kind;

namespace {

const std::string path_a = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";
const std::string path_b = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";
const std::string path_x = "/nix/store/7sw2ak7ijwbm5pjfzkvxnslbr7d2a9a3-nixos-system-web-01-x";

struct crash {};

// A host as the agent sees it. Fields marked durable survive a crash.
struct world {
  std::string running = path_a;
  std::string profile = path_a;
  std::optional<in_flight> record;           // durable
  std::vector<quarantine_entry> quarantine;  // durable
  std::optional<std::string> last_good;      // durable
  std::optional<high_water> accepted;        // durable
  std::optional<std::string> step_back;      // durable
  std::optional<std::string> staged_boot;    // durable
  std::vector<report_action> reports;        // durable (the outbox)
  std::vector<std::string> switches;         // every switch-to-configuration, in order

  std::set<std::string> unfetchable, switch_fails, set_fails, unhealthy, runs_other;
  int rollback_failures = 0;
  bool record_write_fails = false;
};

deployer_config config() {
  deployer_config c;
  c.gate.grace = 5s;
  c.gate.interval = 2s;
  c.gate.soak = 10s;
  c.gate.failure_threshold = 2;
  c.gate.timeout = 60s;
  c.probes = {{"web", true}};
  c.rollback_retry = 30s;
  return c;
}

struct sim {
  world w;
  deployer d{config()};
  time_point now{std::chrono::hours(1)};
  int executed = 0;
  std::optional<int> crash_before;  // crash instead of executing action number N (0-based)
  std::optional<int> crash_after;   // crash right after executing action number N
  std::optional<int> fail_at;       // action number N fails (when it can report failure)
  bool failed_once = false;         // whether fail_at hit an action that can fail

  protocol::desired_state desired(const std::string& path, std::uint32_t attempt = 0,
                                   protocol::activation_mode mode = protocol::activation_mode::switch_) const {
    protocol::desired_state ds;
    ds.machine_id = "web-01";
    ds.release_id = "r-1";
    ds.store_path = path;
    ds.cache_urls = {"https://cache.example.org"};
    ds.activation = mode;
    ds.attempt = attempt;
    return ds;
  }

  host_facts facts() const {
    host_facts f;
    f.machine_id = "web-01";
    f.current_path = w.running;
    f.quarantine = &w.quarantine;
    f.trust.allow_unsigned = true;  // the lifecycle, not the trust checks (decide_test has those)
    f.accepted = w.accepted;
    f.step_back = w.step_back;
    f.staged_boot = w.staged_boot;
    return f;
  }

  void switch_to(const std::string& path, protocol::activation_mode mode) {
    w.switches.push_back(path);
    if (mode != protocol::activation_mode::boot) w.running = w.runs_other.contains(path) ? path_x : path;
  }

  // Executes actions and feeds results back until the machine asks for nothing more.
  void drive(actions acts) {
    while (!acts.empty()) {
      actions next;
      for (auto& a : acts) {
        if (crash_before && executed == *crash_before) throw crash{};
        auto follow = execute(a);
        if (crash_after && executed == *crash_after) throw crash{};
        ++executed;
        if (follow) {
          next = std::move(*follow);
          break;  // a continuation is always the last action of a batch
        }
      }
      acts = std::move(next);
    }
  }

  bool inject() {
    if (!fail_at || executed != *fail_at) return false;
    failed_once = true;
    return true;
  }

  std::optional<actions> execute(const action& a) {
    if (auto* r = std::get_if<report_action>(&a)) {
      w.reports.push_back(*r);
      return std::nullopt;
    }
    if (auto* f = std::get_if<fetch_action>(&a)) {
      const bool ok = !w.unfetchable.contains(f->store_path) && !inject();
      return d.on_fetch_done(ok, ok ? "" : "nix copy: no cache has the path", now);
    }
    if (auto* wr = std::get_if<write_record_action>(&a)) {
      if (w.record_write_fails || (wr->notify && inject())) return wr->notify ? std::optional(d.on_record_written(false, "No space left", now)) : std::nullopt;
      w.record = wr->record;
      if (wr->notify) return d.on_record_written(true, "", now);
      return std::nullopt;
    }
    if (auto* act = std::get_if<activate_action>(&a)) {
      now += 3s;
      if (inject()) return d.on_activation_done(false, "switch-to-configuration: killed (injected)", w.running, now);
      if (act->mode != protocol::activation_mode::test) {
        if (w.set_fails.contains(act->store_path)) return d.on_activation_done(false, "nix-env --set: disk full", w.running, now);
        w.profile = act->store_path;
      }
      switch_to(act->store_path, act->mode);
      if (w.switch_fails.contains(act->store_path))
        return d.on_activation_done(false, "switch-to-configuration exited with code 4", w.running, now);
      return d.on_activation_done(true, "", w.running, now);
    }
    if (auto* p = std::get_if<probe_round_action>(&a)) {
      now = std::max(now, p->at);
      const bool healthy = !w.unhealthy.contains(w.running) && !inject();
      protocol::probe_result r{"web", "http", healthy ? protocol::probe_status::pass : protocol::probe_status::fail, 3,
                               healthy ? std::nullopt : std::optional<std::string>("status 502")};
      return d.on_probe_round(now, {r});
    }
    if (auto* rb = std::get_if<rollback_action>(&a)) {
      now += 3s;
      if (w.rollback_failures > 0 || inject()) {
        if (w.rollback_failures > 0) --w.rollback_failures;
        return d.on_rollback_done(false, "switch-to-configuration exited with code 1", w.running, now);
      }
      if (rb->mode != protocol::activation_mode::test) w.profile = rb->store_path;
      switch_to(rb->store_path, rb->mode);
      return d.on_rollback_done(true, "", w.running, now);
    }
    if (std::holds_alternative<clear_record_action>(a)) {
      w.record.reset();
      return std::nullopt;
    }
    if (auto* q = std::get_if<quarantine_action>(&a)) {
      w.quarantine.push_back(q->entry);
      return std::nullopt;
    }
    if (auto* lg = std::get_if<set_last_good_action>(&a)) {
      w.last_good = lg->store_path;
      return std::nullopt;
    }
    if (auto* acc = std::get_if<accept_action>(&a)) {
      w.accepted = acc->accepted;
      w.step_back = acc->step_back;
      w.staged_boot = acc->staged_boot;
      return std::nullopt;
    }
    if (auto* wt = std::get_if<wait_action>(&a)) {
      now = std::max(now, wt->until);
      return d.on_timer(now);
    }
    BOOST_FAIL("unknown action");
    return std::nullopt;
  }

  void poll(const protocol::desired_state& ds) { drive(d.on_desired(ds, facts(), now)); }

  // A crash loses the machine's memory; a new agent starts from the durable record.
  void restart() {
    d = deployer(config());
    crash_before.reset();
    crash_after.reset();
    drive(d.start(w.record, w.running, now));
  }

  std::vector<report_kind> kinds() const {
    std::vector<report_kind> out;
    for (const auto& r : w.reports) out.push_back(r.kind);
    return out;
  }
  bool reported(report_kind k) const {
    return std::any_of(w.reports.begin(), w.reports.end(), [&](const report_action& r) { return r.kind == k; });
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(deployer_lifecycle)

BOOST_AUTO_TEST_CASE(good_target_is_fetched_activated_gated_and_confirmed) {
  sim s;
  s.poll(s.desired(path_b));
  BOOST_TEST((s.kinds() == std::vector{report_kind::fetching, report_kind::fetched, report_kind::activating,
                                       report_kind::activated, report_kind::confirmed}));
  BOOST_TEST(s.w.running == path_b);
  BOOST_TEST(s.w.profile == path_b);
  BOOST_TEST(*s.w.last_good == path_b);
  BOOST_TEST(!s.w.record.has_value());
  BOOST_TEST((s.d.current() == deployer::stage::idle));
  BOOST_TEST(s.w.reports.back().health->passed);
  // The gate took grace + soak at least.
  s.poll(s.desired(path_b));
  BOOST_TEST((s.w.reports.back().kind == report_kind::up_to_date));
}

BOOST_AUTO_TEST_CASE(probe_failing_after_switch_triggers_rollback_and_quarantine) {
  sim s;
  s.w.unhealthy = {path_b};
  s.poll(s.desired(path_b));
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST(s.w.profile == path_a);
  BOOST_TEST((s.w.switches == std::vector{path_b, path_a}));
  BOOST_TEST(!s.w.record.has_value());
  BOOST_REQUIRE(s.w.quarantine.size() == 1u);
  BOOST_TEST(s.w.quarantine[0].store_path == path_b);
  const auto& last = s.w.reports.back();
  BOOST_TEST((last.kind == report_kind::rolled_back));
  BOOST_TEST(*last.store_path == path_b);  // the bad target
  BOOST_TEST(last.message->find("health gate failed") != std::string::npos, *last.message);
  BOOST_TEST(!last.health->passed);
  BOOST_TEST(!s.w.last_good.has_value());
  // The report asks for forensics, comparing the bad target with what the host went back to.
  BOOST_TEST(last.investigate_against.value_or("") == path_a);
  for (std::size_t i = 0; i + 1 < s.w.reports.size(); ++i) BOOST_TEST(!s.w.reports[i].investigate_against);
}

BOOST_AUTO_TEST_CASE(quarantined_target_is_not_reapplied_over_many_polls) {
  sim s;
  s.w.unhealthy = {path_b};
  s.poll(s.desired(path_b));
  const auto switches = s.w.switches.size();
  const auto reports = s.w.reports.size();
  for (int i = 0; i < 500; ++i) s.poll(s.desired(path_b));
  BOOST_TEST(s.w.switches.size() == switches);
  // Not one report per poll, and not even one `rejected`: the `rolled_back` with the gate's reason
  // stays the host's last word on this target.
  BOOST_TEST(s.w.reports.size() == reports);
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
  // After a restart (the memory of what was reported is gone) the refusal is reported once.
  s.restart();
  for (int i = 0; i < 5; ++i) s.poll(s.desired(path_b));
  BOOST_TEST(s.w.reports.size() == reports + 1);
  BOOST_TEST((s.w.reports.back().kind == report_kind::rejected));

  // The operator fixed the service and asked for a retry: attempt 1 deploys again.
  s.w.unhealthy.clear();
  s.poll(s.desired(path_b, 1));
  BOOST_TEST(s.w.running == path_b);
  BOOST_TEST((s.w.reports.back().kind == report_kind::confirmed));
}

BOOST_AUTO_TEST_CASE(failed_switch_rolls_back_to_the_running_path) {
  sim s;
  s.w.switch_fails = {path_b};
  s.poll(s.desired(path_b));
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST(s.w.profile == path_a);
  BOOST_TEST(s.w.reports.back().message->find("activation failed: switch-to-configuration exited with code 4") !=
             std::string::npos);
}

BOOST_AUTO_TEST_CASE(rollback_targets_what_ran_not_generation_minus_one_when_nix_env_set_fails) {
  sim s;
  // The profile's newest generation (x) is not what runs (a): someone set it without switching.
  s.w.profile = path_x;
  s.w.set_fails = {path_b};
  s.poll(s.desired(path_b));
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST(s.w.profile == path_a);  // back to what ran, not to x
  BOOST_TEST((s.w.switches == std::vector{path_a}));  // only the rollback switch ran
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
}

BOOST_AUTO_TEST_CASE(switch_that_leaves_another_system_running_is_rolled_back) {
  sim s;
  s.w.runs_other = {path_b};
  s.poll(s.desired(path_b));
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
}

BOOST_AUTO_TEST_CASE(fetch_failure_touches_nothing_and_retries_next_poll) {
  sim s;
  s.w.unfetchable = {path_b};
  s.poll(s.desired(path_b));
  BOOST_TEST((s.kinds() == std::vector{report_kind::fetching, report_kind::fetch_failed}));
  BOOST_TEST(s.w.switches.empty());
  BOOST_TEST(s.w.quarantine.empty());
  s.w.unfetchable.clear();
  s.poll(s.desired(path_b));
  BOOST_TEST(s.w.running == path_b);
}

BOOST_AUTO_TEST_CASE(record_write_failure_refuses_to_activate) {
  sim s;
  s.w.record_write_fails = true;
  s.poll(s.desired(path_b));
  BOOST_TEST((s.w.reports.back().kind == report_kind::activation_failed));
  BOOST_TEST(s.w.switches.empty());
  BOOST_TEST(s.w.profile == path_a);
  BOOST_TEST((s.d.current() == deployer::stage::idle));
}

BOOST_AUTO_TEST_CASE(failed_rollback_is_reported_and_retried) {
  sim s;
  s.w.unhealthy = {path_b};
  s.w.rollback_failures = 2;
  const auto start = s.now;
  s.poll(s.desired(path_b));
  const auto kinds = s.kinds();
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), report_kind::rollback_failed) == 2);
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
  BOOST_TEST((s.now - start >= 60s));  // two retry waits
  // Forensics with the first failed rollback, not with every retry, and with the final outcome.
  std::vector<bool> asked;
  for (const auto& r : s.w.reports)
    if (r.kind == report_kind::rollback_failed || r.kind == report_kind::rolled_back) asked.push_back(r.investigate_against.has_value());
  BOOST_TEST((asked == std::vector<bool>{true, false, true}));
}

BOOST_AUTO_TEST_CASE(desired_state_during_a_deployment_is_ignored) {
  sim s;
  auto acts = s.d.on_desired(s.desired(path_b), s.facts(), s.now);
  BOOST_TEST((s.d.current() == deployer::stage::fetching));
  BOOST_TEST(s.d.on_desired(s.desired(path_x), s.facts(), s.now).empty());
  s.drive(acts);
  BOOST_TEST(s.w.running == path_b);
}

BOOST_AUTO_TEST_CASE(boot_mode_sets_the_profile_without_switching_the_running_system) {
  sim s;
  s.poll(s.desired(path_b, 0, protocol::activation_mode::boot));
  BOOST_TEST(s.w.profile == path_b);
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST(!s.w.record.has_value());
  BOOST_TEST((s.w.reports.back().kind == report_kind::activated));
  BOOST_TEST(s.w.reports.back().message->find("staged") != std::string::npos);
  BOOST_TEST(*s.w.staged_boot == path_b);
  BOOST_TEST(!s.w.last_good.has_value(), "staged, not proven: never the last known good");
}

BOOST_AUTO_TEST_CASE(a_staged_boot_target_is_applied_once_not_on_every_poll) {
  sim s;
  auto boot = s.desired(path_b, 0, protocol::activation_mode::boot);
  boot.release_sequence = 4;
  s.poll(boot);
  BOOST_TEST(s.w.switches.size() == 1u);
  BOOST_TEST(s.w.accepted->sequence == 4u);
  BOOST_TEST(*s.w.step_back == path_a);
  const auto reports = s.w.reports.size();
  for (int poll = 0; poll < 12; ++poll) s.poll(boot);
  BOOST_TEST(s.w.switches.size() == 1u, "switch-to-configuration boot ran once, not on every poll");
  BOOST_TEST(s.w.reports.size() == reports + 1, "one heartbeat saying it is staged, not one per poll");
  BOOST_TEST((s.w.reports.back().kind == report_kind::heartbeat));
  // After the reboot the host runs it: up to date.
  s.w.running = path_b;
  s.poll(boot);
  BOOST_TEST((s.w.reports.back().kind == report_kind::up_to_date));
}

BOOST_AUTO_TEST_CASE(confirmation_raises_the_high_water_mark_and_remembers_the_step_back) {
  sim s;
  auto t = s.desired(path_b);
  t.release_sequence = 7;
  t.release_created_at = protocol::parse_time("2026-11-25T18:00:00Z").value();
  s.poll(t);
  BOOST_TEST((s.w.reports.back().kind == report_kind::confirmed));
  BOOST_TEST(s.w.accepted->sequence == 7u);
  BOOST_TEST((s.w.accepted->at == t.release_created_at));
  BOOST_TEST(*s.w.step_back == path_a);
  // A target that is rolled back raises nothing.
  s.w.unhealthy.insert(path_x);
  auto bad = s.desired(path_x);
  bad.release_sequence = 9;
  s.poll(bad);
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
  BOOST_TEST(s.w.accepted->sequence == 7u);
}

BOOST_AUTO_TEST_CASE(test_mode_switches_without_touching_the_profile) {
  sim s;
  s.poll(s.desired(path_b, 0, protocol::activation_mode::test));
  BOOST_TEST(s.w.running == path_b);
  BOOST_TEST(s.w.profile == path_a);
  BOOST_TEST((s.w.reports.back().kind == report_kind::confirmed));
}

BOOST_AUTO_TEST_CASE(dry_run_fetches_and_reports_but_never_activates) {
  sim s;
  auto cfg = config();
  cfg.dry_run = true;
  s.d = deployer(cfg);
  s.poll(s.desired(path_b));
  BOOST_TEST((s.kinds() == std::vector{report_kind::fetching, report_kind::fetched}));
  BOOST_TEST(s.w.reports.back().message->find("dry run") != std::string::npos);
  BOOST_TEST(s.w.switches.empty());
  BOOST_TEST(!s.w.record.has_value());
  s.poll(s.desired(path_b));
  BOOST_TEST(s.w.reports.size() == 2u);  // reported once
}

BOOST_AUTO_TEST_CASE(manual_rollback_goes_to_last_known_good_without_quarantine) {
  sim s;
  s.poll(s.desired(path_b));
  BOOST_REQUIRE(s.w.running == path_b);
  s.drive(s.d.on_manual_rollback(s.w.running, path_a, s.now));
  BOOST_TEST(s.w.running == path_a);
  BOOST_TEST(s.w.quarantine.empty());
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
  // No release is behind a break-glass rollback: no release_id (an empty one is not a valid id).
  for (const auto& r : s.w.reports)
    if (r.release_id) BOOST_TEST(!r.release_id->empty());
  BOOST_TEST(!s.w.reports.back().release_id.has_value());
  BOOST_TEST(!s.w.reports.back().investigate_against.has_value());  // the operator asked: nothing failed
  BOOST_TEST(s.d.on_manual_rollback(s.w.running, path_a, s.now).size() == 1u);  // nothing to do: rejected
}

BOOST_AUTO_TEST_CASE(no_coordinator_during_the_gate_changes_nothing) {
  // The gate needs only probe rounds: with no polls at all (coordinator unreachable) it completes.
  sim s;
  auto acts = s.d.on_desired(s.desired(path_b), s.facts(), s.now);
  s.drive(acts);
  BOOST_TEST((s.w.reports.back().kind == report_kind::confirmed));
  // And a healthy host whose coordinator vanishes is never rolled back: nothing but a poll result or
  // a probe can start a deployment or a rollback.
  BOOST_TEST(s.d.on_timer(s.now + 1h).empty());
  BOOST_TEST(s.w.running == path_b);
}

// An interruption at every step, before and after each action, then a restart: the host ends
// confirmed on the target or back on the previous path with the target quarantined; never stuck.
BOOST_AUTO_TEST_CASE(crash_at_every_step_ends_confirmed_or_rolled_back) {
  for (bool healthy : {true, false}) {
    // How many actions a run without crash executes.
    sim clean;
    if (!healthy) clean.w.unhealthy = {path_b};
    clean.poll(clean.desired(path_b));
    const int total = clean.executed;
    BOOST_TEST_REQUIRE(total > 8);

    for (int point = 0; point < total; ++point) {
      for (bool after : {false, true}) {
        BOOST_TEST_CONTEXT((healthy ? "healthy" : "unhealthy") << " target, crash " << (after ? "after" : "before")
                                                               << " action " << point) {
          sim s;
          if (!healthy) s.w.unhealthy = {path_b};
          (after ? s.crash_after : s.crash_before) = point;
          bool crashed = false;
          try {
            s.poll(s.desired(path_b));
          } catch (const crash&) {
            crashed = true;
          }
          BOOST_TEST_REQUIRE(crashed);
          s.restart();
          // The poller keeps delivering the same desired state.
          for (int i = 0; i < 3; ++i) s.poll(s.desired(path_b));

          BOOST_TEST((s.d.current() == deployer::stage::idle));
          BOOST_TEST(!s.w.record.has_value());
          const bool confirmed = s.w.running == path_b && s.w.last_good == path_b;
          const bool rolled_back = s.w.running == path_a && s.w.profile == path_a && !s.w.quarantine.empty();
          BOOST_TEST((confirmed || rolled_back), "running " << s.w.running);
          if (!healthy) BOOST_TEST(rolled_back);
          if (confirmed) BOOST_TEST(s.reported(report_kind::confirmed));
          if (rolled_back) BOOST_TEST(s.reported(report_kind::rolled_back));
        }
      }
    }
  }
}

// An error (not a crash) at every step that reports an outcome — fetch, record write, activation,
// a probe round, the rollback — once, then the poller keeps offering the target: the host ends
// confirmed on it or back on the previous path with it quarantined; never stuck, never half-way.
BOOST_AUTO_TEST_CASE(an_error_at_every_step_ends_confirmed_or_rolled_back) {
  for (bool healthy : {true, false}) {
    sim clean;
    if (!healthy) clean.w.unhealthy = {path_b};
    clean.poll(clean.desired(path_b));
    const int total = clean.executed;
    int injected = 0;
    for (int point = 0; point < total; ++point) {
      BOOST_TEST_CONTEXT((healthy ? "healthy" : "unhealthy") << " target, error at action " << point) {
        sim s;
        if (!healthy) s.w.unhealthy = {path_b};
        s.fail_at = point;
        s.poll(s.desired(path_b));
        for (int i = 0; i < 3; ++i) {
          s.poll(s.desired(path_b));
          s.drive(s.d.on_timer(s.now += 60s));  // a pending rollback retry is due
        }
        if (!s.failed_once) continue;  // that action cannot fail (a report, a state write)
        ++injected;
        BOOST_TEST((s.d.current() == deployer::stage::idle));
        BOOST_TEST(!s.w.record.has_value());
        const bool confirmed = s.w.running == path_b && s.w.last_good == path_b && s.reported(report_kind::confirmed);
        const bool rolled_back = s.w.running == path_a && s.w.profile == path_a && !s.w.quarantine.empty() &&
                                 s.reported(report_kind::rolled_back);
        BOOST_TEST((confirmed || rolled_back), "running " << s.w.running);
        if (!healthy) BOOST_TEST(rolled_back);
        // The failure itself is in the record, whatever it was.
        const bool told = s.reported(report_kind::fetch_failed) || s.reported(report_kind::activation_failed) ||
                          s.reported(report_kind::rollback_failed) || s.reported(report_kind::rolled_back) ||
                          s.reported(report_kind::confirmed);
        BOOST_TEST(told);
      }
    }
    BOOST_TEST(injected >= 4, "fallible steps exercised: " << injected);
  }
}

BOOST_AUTO_TEST_CASE(restart_with_target_running_resumes_the_gate) {
  sim s;
  s.w.running = path_b;
  s.w.profile = path_b;
  s.w.record = in_flight{path_b, path_a, "r-1", {}, 0, protocol::activation_mode::switch_, in_flight::phase::activating, {}, false};
  s.restart();
  BOOST_TEST(s.w.reports.front().message->find("resuming the health gate") != std::string::npos);
  BOOST_TEST((s.w.reports.back().kind == report_kind::confirmed));
  BOOST_TEST(s.w.switches.empty());  // no second switch
}

BOOST_AUTO_TEST_CASE(restart_with_target_not_running_rolls_back) {
  sim s;
  s.w.profile = path_b;  // nix-env --set happened, the switch did not
  s.w.record = in_flight{path_b, path_a, "r-1", {}, 0, protocol::activation_mode::switch_, in_flight::phase::activating, {}, false};
  s.restart();
  BOOST_TEST(s.w.profile == path_a);
  BOOST_TEST((s.w.reports.back().kind == report_kind::rolled_back));
  BOOST_TEST(s.w.reports.back().message->find("interrupted") != std::string::npos);
  BOOST_TEST(s.w.quarantine.size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
