// The health gate over scripted rounds in mock time: grace, soak, thresholds, optional probes,
// flapping and the overall timeout.
#include "nixfleet/health/gate.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet::health;
using nixfleet::protocol::probe_result;
using nixfleet::protocol::probe_status;
using namespace std::chrono_literals;

namespace {

const gate_clock::time_point t0{std::chrono::hours(1000)};

probe_result res(std::string name, bool pass) {
  return probe_result{std::move(name), "exec", pass ? probe_status::pass : probe_status::fail, 1,
                      pass ? std::nullopt : std::optional<std::string>("boom")};
}

gate_config config() {
  gate_config c;
  c.grace = 10s;
  c.interval = 5s;
  c.soak = 30s;
  c.failure_threshold = 3;
  c.success_threshold = 1;
  c.timeout = 120s;
  return c;
}

// Drives the gate the way the agent does: at each next_check(), one round from `script`
// (called with the round index), then a verdict; until decided or `limit`.
template <class Script>
verdict drive(gate& g, Script script, gate_clock::duration limit = 1h) {
  for (int round = 0;; ++round) {
    const auto at = g.next_check();
    if (at - t0 > limit) return g.evaluate(at);
    auto results = script(round);
    g.record(at, results);
    auto v = g.evaluate(at);
    if (v.state != gate_state::pending) return v;
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(health_gate)

BOOST_AUTO_TEST_CASE(no_check_before_the_grace_period) {
  gate g(config(), {{"web", true}}, t0);
  BOOST_TEST((g.next_check() == t0 + 10s));
  BOOST_TEST((g.evaluate(t0 + 9s).state == gate_state::pending));
}

BOOST_AUTO_TEST_CASE(passes_only_after_grace_plus_soak) {
  gate g(config(), {{"web", true}}, t0);
  gate_clock::time_point passed_at{};
  for (int i = 0; i < 20; ++i) {
    const auto at = g.next_check();
    g.record(at, std::vector{res("web", true)});
    if (g.evaluate(at).state == gate_state::pass) {
      passed_at = at;
      break;
    }
  }
  BOOST_TEST((passed_at == t0 + 40s));  // grace 10 + soak 30; rounds every 5 s from t0+10
  BOOST_TEST(g.rounds() == 7u);
}

BOOST_AUTO_TEST_CASE(required_probe_failing_threshold_times_in_a_row_fails) {
  gate g(config(), {{"web", true}}, t0);
  auto v = drive(g, [](int) { return std::vector{res("web", false)}; });
  BOOST_TEST((v.state == gate_state::fail));
  BOOST_TEST(g.rounds() == 3u);
  BOOST_TEST(v.reason.find("web failed 3 consecutive checks: boom") != std::string::npos, v.reason);
}

BOOST_AUTO_TEST_CASE(failures_below_the_threshold_then_recovery_pass) {
  gate g(config(), {{"web", true}}, t0);
  // fail, fail, pass, fail, fail, pass …: never three in a row.
  auto v = drive(g, [](int round) { return std::vector{res("web", round % 3 == 2)}; });
  BOOST_TEST((v.state == gate_state::pass), v.reason);
}

BOOST_AUTO_TEST_CASE(optional_probe_failing_does_not_fail_the_gate) {
  gate g(config(), {{"web", true}, {"extra", false}}, t0);
  auto v = drive(g, [](int) { return std::vector{res("web", true), res("extra", false)}; });
  BOOST_TEST((v.state == gate_state::pass));
  BOOST_TEST(v.reason.find("1 optional failing") != std::string::npos, v.reason);
}

BOOST_AUTO_TEST_CASE(missing_result_for_a_required_probe_counts_as_a_failure) {
  gate g(config(), {{"web", true}}, t0);
  auto v = drive(g, [](int) { return std::vector{res("other", true)}; });
  BOOST_TEST((v.state == gate_state::fail));
  BOOST_TEST(v.reason.find("no result") != std::string::npos, v.reason);
}

BOOST_AUTO_TEST_CASE(flapping_probe_never_stable_fails_at_the_timeout) {
  auto cfg = config();
  cfg.success_threshold = 2;  // a pass must hold for two rounds
  gate g(cfg, {{"web", true}}, t0);
  auto v = drive(g, [](int round) { return std::vector{res("web", round % 2 == 0)}; });
  BOOST_TEST((v.state == gate_state::fail));
  BOOST_TEST(v.reason.find("no verdict within 120 s") != std::string::npos, v.reason);
  BOOST_TEST(v.reason.find("web failed") != std::string::npos, v.reason);
}

BOOST_AUTO_TEST_CASE(failing_at_the_end_of_soak_waits_for_recovery_or_threshold) {
  gate g(config(), {{"web", true}}, t0);
  // Pass until the soak ends, then fail twice, then recover.
  std::vector<bool> script = {true, true, true, true, true, true, false, false, true};
  auto v = drive(g, [&](int round) { return std::vector{res("web", script.at(static_cast<std::size_t>(round)))}; });
  BOOST_TEST((v.state == gate_state::pass));
  BOOST_TEST(g.rounds() == 9u);
}

BOOST_AUTO_TEST_CASE(no_rounds_at_all_fail_at_the_timeout) {
  gate g(config(), {{"web", true}}, t0);
  BOOST_TEST((g.evaluate(t0 + 119s).state == gate_state::pending));
  auto v = g.evaluate(t0 + 120s);
  BOOST_TEST((v.state == gate_state::fail));
  BOOST_TEST(v.reason.find("no check completed") != std::string::npos, v.reason);
}

BOOST_AUTO_TEST_CASE(verdicts_are_sticky) {
  gate g(config(), {{"web", true}}, t0);
  auto v = drive(g, [](int) { return std::vector{res("web", false)}; });
  BOOST_REQUIRE((v.state == gate_state::fail));
  g.record(t0 + 100s, std::vector{res("web", true)});
  BOOST_TEST((g.evaluate(t0 + 500s).state == gate_state::fail));
}

BOOST_AUTO_TEST_CASE(no_probes_pass_after_the_soak) {
  gate g(config(), {}, t0);
  auto v = drive(g, [](int) { return std::vector<probe_result>{}; });
  BOOST_TEST((v.state == gate_state::pass));
  BOOST_TEST((g.next_check() <= t0 + 45s));
}

BOOST_AUTO_TEST_SUITE_END()
