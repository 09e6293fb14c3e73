// Reconciler fixture triples: tests/fixtures/reconciler/<case>/{rollout,observed,expected}.json.
//
// rollout.json  — a rollout as GET /api/v1/rollouts/{id} shows it, or {"plan": {id, spec,
//                 candidates: [{hostname, store_path}], now}} to start from a fresh plan.
// observed.json — {"now", "hosts": [observation…], "command"?: "pause" | "resume" |
//                 "resume_retry" | "cancel"}; a command is applied before reconciling.
// expected.json — {"rollout": {…}, "changes": […], "events": [{kind, hostname?, wave?}…],
//                 "refused"?: true}. Objects match when every key given matches (keys left out
//                 are not checked); lists must have the same length and match item by item.
#include "nixfleet/coordinator/core/rollout.hpp"
#include "nixfleet/protocol/codec.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace nixfleet;
using namespace nixfleet::coordinator::core;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

fs::path fixtures() {
  const char* env = std::getenv("NIXFLEET_TEST_FIXTURES");
  BOOST_REQUIRE_MESSAGE(env != nullptr, "NIXFLEET_TEST_FIXTURES is not set (run through ctest)");
  return fs::path(env) / "reconciler";
}

json::value load(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  BOOST_REQUIRE_MESSAGE(in, "cannot open " << p);
  std::ostringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

// Empty when `actual` matches `expected`; else where and how it differs.
std::string mismatch(const json::value& expected, const json::value& actual, const std::string& at) {
  if (const auto* eo = expected.if_object()) {
    const auto* ao = actual.if_object();
    if (ao == nullptr) return at + ": expected an object, got " + json::serialize(actual);
    for (const auto& [k, v] : *eo) {
      const auto* a = ao->if_contains(k);
      const std::string here = at + "." + std::string(k);
      if (a == nullptr) {
        if (v.is_null()) continue;
        return here + ": missing, expected " + json::serialize(v);
      }
      if (auto m = mismatch(v, *a, here); !m.empty()) return m;
    }
    return {};
  }
  if (const auto* ea = expected.if_array()) {
    const auto* aa = actual.if_array();
    if (aa == nullptr || aa->size() != ea->size())
      return at + ": expected " + json::serialize(expected) + ", got " + json::serialize(actual);
    for (std::size_t i = 0; i < ea->size(); ++i)
      if (auto m = mismatch((*ea)[i], (*aa)[i], at + "[" + std::to_string(i) + "]"); !m.empty()) return m;
    return {};
  }
  if (expected != actual) return at + ": expected " + json::serialize(expected) + ", got " + json::serialize(actual);
  return {};
}

protocol::timestamp time_of(const json::value& v) {
  auto t = protocol::parse_time(v.as_string());
  BOOST_REQUIRE(t);
  return *t;
}

protocol::rollout_detail load_rollout(const json::value& v) {
  if (const auto* p = v.as_object().if_contains("plan")) {
    const auto& o = p->as_object();
    auto spec = protocol::from_json<protocol::rollout_request>(o.at("spec"));
    BOOST_REQUIRE_MESSAGE(spec, (spec ? "" : spec.error().what()));
    std::vector<candidate> cands;
    for (const auto& c : o.at("candidates").as_array())
      cands.push_back({std::string(c.at("hostname").as_string()), std::string(c.at("store_path").as_string())});
    return plan(std::string(o.at("id").as_string()), *spec, cands, "fixture", time_of(o.at("now")));
  }
  auto r = protocol::from_json<protocol::rollout_detail>(v);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
  return *r;
}

void run_case(const fs::path& dir) {
  BOOST_TEST_CONTEXT("case " << dir.filename().string()) {
    const auto rollout = load_rollout(load(dir / "rollout.json"));
    const auto observed_doc = load(dir / "observed.json").as_object();
    const auto expected = load(dir / "expected.json");
    const auto now = time_of(observed_doc.at("now"));
    std::vector<observation> observed;
    for (const auto& h : observed_doc.at("hosts").as_array()) {
      auto o = observation_from_json(h);
      BOOST_REQUIRE_MESSAGE(o, (o ? "" : o.error().what()));
      observed.push_back(*o);
    }

    json::object actual;
    std::optional<step> commanded;
    if (const auto* c = observed_doc.if_contains("command")) {
      const auto name = c->as_string();
      command_result res = name == "pause"          ? pause(rollout, now)
                           : name == "cancel"       ? cancel(rollout, now)
                           : name == "resume"       ? resume(rollout, false, now)
                           : name == "resume_retry" ? resume(rollout, true, now)
                                                    : command_result{std::nullopt, "unknown command in fixture"};
      BOOST_REQUIRE_MESSAGE(res.ok || !res.refused.empty(), "a refused command says why");
      actual["refused"] = !res.ok.has_value();
      if (res.ok) commanded = std::move(res.ok);
    }
    const auto& start = commanded ? commanded->rollout : rollout;
    step s = reconcile(start, observed, now);
    if (commanded) {
      s.events.insert(s.events.begin(), commanded->events.begin(), commanded->events.end());
      s.changes.insert(s.changes.begin(), commanded->changes.begin(), commanded->changes.end());
    }
    BOOST_TEST(s.rollout.events.size() == rollout.events.size() + s.events.size(), "new events are in the timeline");
    if (!actual.contains("refused")) actual["refused"] = false;
    actual["rollout"] = protocol::to_json(s.rollout);
    json::array changes, events;
    for (const auto& c : s.changes) changes.push_back(to_json(c));
    std::uint64_t seq = rollout.events.empty() ? 0 : rollout.events.back().seq;
    for (const auto& e : s.events) {
      BOOST_TEST(e.seq == ++seq, "event numbers continue the timeline");
      BOOST_TEST((e.at == now));
      events.push_back(protocol::to_json(e));
    }
    actual["changes"] = std::move(changes);
    actual["events"] = std::move(events);

    const auto m = mismatch(expected, actual, "");
    BOOST_TEST(m.empty(), m << "\n  whole result: " << json::serialize(actual));

    // Reconciling the result again at the same instant changes nothing more: decisions are taken once.
    step again = reconcile(s.rollout, observed, now);
    BOOST_TEST(again.changes.empty(), "a second reconcile at the same time makes no new changes");
    BOOST_TEST((again.rollout == s.rollout));
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reconciler)

BOOST_AUTO_TEST_CASE(fixture_triples) {
  std::vector<fs::path> cases;
  for (const auto& e : fs::directory_iterator(fixtures())) cases.push_back(e.path());
  std::sort(cases.begin(), cases.end());
  BOOST_TEST_REQUIRE(cases.size() >= 14u);
  for (const auto& c : cases) run_case(c);
}

BOOST_AUTO_TEST_CASE(plan_is_deterministic_cumulative_and_complete) {
  protocol::rollout_request spec;
  spec.release_id = "r1";
  spec.target.tags = {"web"};
  std::vector<candidate> cands;
  for (int i = 0; i < 100; ++i)
    cands.push_back({"web-" + std::to_string(i), "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-sys"});
  const auto now = protocol::timestamp{};
  auto a = plan("ro-1", spec, cands, "alice", now);
  auto b = plan("ro-1", spec, {cands.rbegin(), cands.rend()}, "alice", now);
  auto other = plan("ro-2", spec, cands, "alice", now);
  BOOST_TEST_REQUIRE(a.waves.size() == 3u);
  BOOST_TEST(a.waves[0].hosts.size() == 1u);
  BOOST_TEST(a.waves[1].hosts.size() == 9u);
  BOOST_TEST(a.waves[2].hosts.size() == 90u);
  BOOST_TEST((a.waves == b.waves), "input order does not matter");
  BOOST_TEST((a.waves[0].hosts != other.waves[0].hosts), "another rollout picks another canary");
  BOOST_TEST(a.hosts.size() == 100u);

  spec.waves = {{protocol::size_spec::unit::count, 1}, {protocol::size_spec::unit::count, 1},
                {protocol::size_spec::unit::percent, 50}};
  auto c = plan("ro-3", spec, cands, "alice", now);
  BOOST_TEST_REQUIRE(c.waves.size() == 2u, "a wave that reaches no new host is dropped");
  BOOST_TEST(c.waves[1].hosts.size() == 99u, "the last wave takes every remaining host");
  BOOST_TEST(c.waves[0].index == 1u, "waves are numbered from 1");
  BOOST_TEST(c.waves[1].index == 2u);
  BOOST_TEST(c.hosts.back().wave == 2u);
}

BOOST_AUTO_TEST_CASE(allowed_failures_round_percentages_down) {
  using protocol::size_spec;
  BOOST_TEST(allowed_failures({size_spec::unit::count, 2}, 10) == 2u);
  BOOST_TEST(allowed_failures({size_spec::unit::percent, 10}, 5) == 0u);
  BOOST_TEST(allowed_failures({size_spec::unit::percent, 10}, 30) == 3u);
  BOOST_TEST(allowed_failures({size_spec::unit::percent, 100}, 7) == 7u);
}

BOOST_AUTO_TEST_SUITE_END()
