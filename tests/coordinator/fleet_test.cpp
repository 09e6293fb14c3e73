// The fleet core without I/O: triples of {fleet before, event, expected effects} for report
// ingestion, operator commands, target resolution and rollback choice, and the auth policy as a
// table. Expected values are written out by hand; a refused event must leave the fleet as it was.
#include "nixfleet/coordinator/core/fleet.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>

using namespace nixfleet;
using namespace nixfleet::coordinator::core;
namespace json = boost::json;
using namespace std::chrono_literals;
using protocol::report_kind;
using protocol::role;

namespace {

const std::string A = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-a";
const std::string B = "/nix/store/1d3b7r5mckylg04wcr7hhd7im5h1vp5w-nixos-system-b";
const std::string C = "/nix/store/2e4c8s6ndlzmh15xds8iie8jn6i2wq6x-nixos-system-c";
const timestamp T0 = timestamp(1'790'000'000'000ms);
const timestamp NOW = T0 + 60s;

protocol::release release(std::string id, std::uint64_t seq, timestamp at,
                          std::vector<std::pair<std::string, std::string>> entries) {
  protocol::release r;
  r.id = std::move(id);
  r.sequence = seq;
  r.created_at = at;
  r.created_by = "bob";
  r.cache_urls = {"https://cache.example/" + r.id};
  for (auto& [h, p] : entries) {
    protocol::release_entry e;
    e.hostname = h;
    e.store_path = p;
    e.signature = "op-1:sig-of-" + r.id + "-" + h;
    e.tags = {"web"};
    r.entries.push_back(std::move(e));
  }
  return r;
}

protocol::report report(std::uint64_t seq, report_kind kind, std::optional<std::string> path, std::string current,
                        timestamp at) {
  protocol::report r;
  r.seq = seq;
  r.at = at;
  r.kind = kind;
  r.store_path = std::move(path);
  r.current_path = std::move(current);
  r.agent_version = "test";
  return r;
}

// web-01 runs A (confirmed, then B confirmed is not yet known), web-02 runs A; releases r1 (A on
// both) and r2 (B on both).
fleet base() {
  loaded_state s;
  s.releases.push_back(release("r1", 1, T0 - 1h, {{"web-01", A}, {"web-02", A}}));
  s.releases.push_back(release("r2", 2, T0, {{"web-01", B}, {"web-02", B}}));
  for (auto id : {"web-01", "web-02"}) {
    machine_record m;
    m.id = id;
    m.tags = {"web"};
    m.current_path = A;
    m.history = {{A, T0 - 30min}};
    m.acked_seq = 5;
    set_last_report(m, report(5, report_kind::heartbeat, std::nullopt, A, T0));
    m.last_seen = T0;
    s.machines.push_back(std::move(m));
  }
  return make_fleet(std::move(s));
}

struct triple {
  std::string name;
  std::function<fleet()> before;
  event e;
  std::function<effects(const fleet& before)> expected;
  // What the fleet must look like after (beyond the effects), when checked.
  std::function<void(const fleet& after)> after = {};
};

void run(const std::vector<triple>& rows) {
  for (const auto& t : rows) {
    BOOST_TEST_CONTEXT(t.name) {
      auto f = t.before();
      const auto was = f;
      const auto want = t.expected(was);
      const auto got = apply(f, t.e, NOW);
      BOOST_TEST((got.refused == want.refused));
      if (got.refused) BOOST_TEST_MESSAGE(got.refused->code << ": " << got.refused->message);
      BOOST_TEST((got.changes.machines == want.changes.machines));
      BOOST_TEST((got.changes.reports == want.changes.reports));
      BOOST_TEST((got.changes.audit == want.changes.audit), "audit: " << got.changes.audit.size() << " entries");
      for (const auto& a : got.changes.audit)
        BOOST_TEST_MESSAGE("  audit " << a.action << " " << a.target << " " << boost::json::serialize(a.detail));
      BOOST_TEST((got.changes == want.changes));
      BOOST_TEST((got.republish == want.republish));
      BOOST_TEST(got.republish_all == want.republish_all);
      BOOST_TEST(got.status == want.status);
      BOOST_TEST((got.reply == want.reply));
      if (got.refused) BOOST_TEST((f == was), "a refused event changed the fleet");
      if (t.after) t.after(f);
    }
  }
}

effects refused(unsigned status, std::string code, std::string message) {
  effects fx;
  fx.refused = refusal{status, std::move(code), std::move(message)};
  return fx;
}

audit_entry audit(std::string actor, std::string action, std::string target, json::object detail = {}) {
  return {NOW, std::move(actor), std::move(action), std::move(target), std::move(detail)};
}

event reports_from(std::string id, std::vector<protocol::report> rs) {
  return {"agent:" + id, ingest_reports{id, protocol::report_batch{std::move(rs)}}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fleet_core)

BOOST_AUTO_TEST_CASE(report_ingestion) {
  const auto confirmed_b = report(6, report_kind::confirmed, B, B, T0 + 10s);
  const auto replayed = report(4, report_kind::rolled_back, B, A, T0 - 10s);
  const auto restarted = report(1, report_kind::confirmed, B, B, T0 + 20s);
  const auto heartbeat = report(6, report_kind::heartbeat, std::nullopt, A, T0 + 10s);
  auto failed_gate = report(6, report_kind::rolled_back, B, A, T0 + 10s);
  failed_gate.message = "health gate failed";
  failed_gate.health = protocol::health_report{false, {}};
  failed_gate.forensics = protocol::forensics_bundle{};
  failed_gate.forensics->failed_units = {"api.service"};
  failed_gate.forensics->journal = "api[1]: cannot reach the database";

  run({
      {"a fresh confirmation moves the machine, its history and the record",
       base,
       reports_from("web-01", {confirmed_b}),
       [&](const fleet& f) {
         effects fx;
         auto m = f.machines.at("web-01");
         m.acked_seq = 6;
         m.last_seen = NOW;
         m.current_path = B;
         m.last_event = lifecycle_event{report_kind::confirmed, B, std::nullopt, NOW};
         m.last_audited.emplace(report_kind::confirmed, B);
         m.history.insert(m.history.begin(), {B, NOW});
         set_last_report(m, confirmed_b);
         fx.changes.reports = {{"web-01", NOW, confirmed_b}};
         fx.changes.audit = {audit("agent:web-01", "machine.current_changed", "web-01", {{"from", A}, {"to", B}}),
                             audit("agent:web-01", "machine.confirmed", "web-01",
                                   {{"kind", "confirmed"}, {"store_path", B}, {"report_seq", 6u}})};
         fx.changes.machines = {m};
         fx.republish = {"web-01"};
         fx.reply = protocol::report_ack{6};
         return fx;
       }},
      {"a replayed older report is stored but changes nothing and is not audited",
       base,
       reports_from("web-01", {replayed}),
       [&](const fleet& f) {
         effects fx;
         fx.changes.reports = {{"web-01", NOW, replayed}};
         fx.changes.machines = {f.machines.at("web-01")};
         fx.reply = protocol::report_ack{4};
         return fx;
       }},
      {"a lower sequence with a later time is an agent that started counting again",
       base,
       reports_from("web-01", {restarted}),
       [&](const fleet& f) {
         effects fx;
         auto m = f.machines.at("web-01");
         m.acked_seq = 1;
         m.last_seen = NOW;
         m.current_path = B;
         m.last_event = lifecycle_event{report_kind::confirmed, B, std::nullopt, NOW};
         m.last_audited.emplace(report_kind::confirmed, B);
         m.history.insert(m.history.begin(), {B, NOW});
         set_last_report(m, restarted);
         fx.changes.reports = {{"web-01", NOW, restarted}};
         fx.changes.audit = {audit("agent:web-01", "machine.current_changed", "web-01", {{"from", A}, {"to", B}}),
                             audit("agent:web-01", "machine.confirmed", "web-01",
                                   {{"kind", "confirmed"}, {"store_path", B}, {"report_seq", 1u}})};
         fx.changes.machines = {m};
         fx.republish = {"web-01"};
         fx.reply = protocol::report_ack{1};
         return fx;
       }},
      {"a heartbeat is applied but is neither a lifecycle event nor audited",
       base,
       reports_from("web-02", {heartbeat}),
       [&](const fleet& f) {
         effects fx;
         auto m = f.machines.at("web-02");
         m.acked_seq = 6;
         m.last_seen = NOW;
         set_last_report(m, heartbeat);
         fx.changes.reports = {{"web-02", NOW, heartbeat}};
         fx.changes.machines = {m};
         fx.republish = {"web-02"};
         fx.reply = protocol::report_ack{6};
         return fx;
       }},
      {"a failed gate's health is about the target, not what the machine runs",
       base,
       reports_from("web-01", {failed_gate}),
       [&](const fleet& f) {
         effects fx;
         auto m = f.machines.at("web-01");
         m.acked_seq = 6;
         m.last_seen = NOW;
         m.last_event = lifecycle_event{report_kind::rolled_back, B, std::string("health gate failed"), NOW};
         m.last_audited.emplace(report_kind::rolled_back, B);
         set_last_report(m, failed_gate);
         fx.changes.reports = {{"web-01", NOW, failed_gate}};
         fx.changes.audit = {audit("agent:web-01", "machine.rolled_back", "web-01",
                                   {{"kind", "rolled_back"}, {"store_path", B}, {"message", "health gate failed"},
                                    {"report_seq", 6u}, {"forensics", true}})};
         fx.changes.machines = {m};
         fx.republish = {"web-01"};
         fx.reply = protocol::report_ack{6};
         return fx;
       },
       [](const fleet& f) {
         BOOST_TEST(!f.machines.at("web-01").health.has_value());
         // The forensics are stored with the report, never kept in memory with the machine.
         BOOST_TEST(!last_report_of(f.machines.at("web-01")).forensics.has_value());
       }},
      {"a repeat of the last audited outcome is applied and stored but not audited again; another path is",
       +[] {
         auto f = base();
         f.machines.at("web-01").last_audited.emplace(report_kind::rejected, B);
         return f;
       },
       reports_from("web-01", {report(7, report_kind::rejected, B, A, T0 + 10s), report(8, report_kind::rejected, B, A, T0 + 11s),
                               report(9, report_kind::rejected, C, A, T0 + 12s)}),
       [&](const fleet& f) {
         effects fx;
         auto m = f.machines.at("web-01");
         m.acked_seq = 9;
         m.last_seen = NOW;
         m.last_event = lifecycle_event{report_kind::rejected, C, std::nullopt, NOW};
         m.last_audited.emplace(report_kind::rejected, C);
         set_last_report(m, report(9, report_kind::rejected, C, A, T0 + 12s));
         fx.changes.reports = {{"web-01", NOW, report(7, report_kind::rejected, B, A, T0 + 10s)},
                               {"web-01", NOW, report(8, report_kind::rejected, B, A, T0 + 11s)},
                               {"web-01", NOW, last_report_of(m)}};
         fx.changes.audit = {audit("agent:web-01", "machine.rejected", "web-01",
                                   {{"kind", "rejected"}, {"store_path", C}, {"report_seq", 9u}})};
         fx.changes.machines = {m};
         fx.republish = {"web-01"};
         fx.reply = protocol::report_ack{9};
         return fx;
       }},
      {"an unknown machine registers with its first report",
       base,
       reports_from("db-01", {heartbeat}),
       [&](const fleet&) {
         effects fx;
         machine_record m;
         m.id = "db-01";
         m.acked_seq = 6;
         m.last_seen = NOW;
         m.current_path = A;
         set_last_report(m, heartbeat);
         fx.changes.reports = {{"db-01", NOW, heartbeat}};
         fx.changes.audit = {audit("agent:db-01", "machine.registered", "db-01"),
                             audit("agent:db-01", "machine.current_changed", "db-01",
                                   {{"from", nullptr}, {"to", A}})};
         fx.changes.machines = {m};
         fx.republish = {"db-01"};
         fx.reply = protocol::report_ack{6};
         return fx;
       }},
  });
}

BOOST_AUTO_TEST_CASE(history_keeps_twenty_distinct_confirmations_newest_first) {
  auto f = base();
  for (std::uint64_t i = 0; i < 30; ++i) {
    const auto path = i % 2 ? A : B;
    apply(f, reports_from("web-01", {report(6 + i, report_kind::confirmed, path, path, T0 + std::chrono::seconds(i))}),
          NOW + std::chrono::seconds(i));
    // The same confirmation again adds nothing.
    apply(f, reports_from("web-01", {report(100 + 2 * i, report_kind::up_to_date, path, path, T0 + std::chrono::seconds(i))}),
          NOW);
  }
  const auto& h = f.machines.at("web-01").history;
  BOOST_TEST(h.size() == 20u);
  BOOST_TEST(h.front().store_path == A);  // i = 29 confirmed A
  BOOST_TEST((h.front().confirmed_at == NOW + 29s));
}

BOOST_AUTO_TEST_CASE(rollback_choice) {
  auto running_b = [] {
    auto f = base();
    auto& m = f.machines.at("web-01");
    m.current_path = B;
    m.history.insert(m.history.begin(), {B, T0});
    m.attempt = 3;
    return f;
  };
  auto expected_to_a = [](const fleet& f) {
    effects fx;
    auto m = f.machines.at("web-01");
    m.attempt = 4;
    protocol::desired_state d;
    d.machine_id = "web-01";
    d.store_path = A;
    d.attempt = 4;
    d.release_id = "r1";  // the release whose signed entry holds A for web-01
    d.cache_urls = {"https://cache.example/r1"};
    d.entry_signature = "op-1:sig-of-r1-web-01";
    d.release_created_at = T0 - 1h;
    d.release_sequence = 1;
    m.desired = d;
    fx.changes.machines = {m};
    fx.changes.audit = {audit("bob", "machine.rollback", "web-01", {{"store_path", A}, {"release_id", "r1"}})};
    fx.republish = {"web-01"};
    fx.reply = status_of(f, m);
    return fx;
  };
  protocol::rollback_statement foreign;
  foreign.hostname = "web-02";
  foreign.store_path = A;
  run({
      {"without a path: the newest confirmed generation that is not running", running_b,
       {"bob", rollback_machine{"web-01", {}}}, expected_to_a},
      {"with nothing earlier confirmed there is nothing to go back to", base, {"bob", rollback_machine{"web-01", {}}},
       [](const fleet&) { return refused(409, "no_previous", "the machine has no earlier confirmed generation"); }},
      {"a path no release holds for the machine is refused (agents would refuse it)", running_b,
       {"bob", rollback_machine{"web-01", {C, std::nullopt}}},
       [](const fleet&) {
         return refused(409, "not_released",
                        "no release has this path for this machine; agents with trusted keys would refuse it");
       }},
      {"a statement made for another machine is refused", running_b,
       {"bob", rollback_machine{"web-01", {A, foreign}}},
       [](const fleet&) {
         return refused(400, "invalid_field", "statement.hostname: the rollback statement is for another machine");
       }},
      {"an unknown machine", base, {"bob", rollback_machine{"db-9", {}}},
       [](const fleet&) { return refused(404, "not_found", "no such machine"); }},
  });
}

BOOST_AUTO_TEST_CASE(rollout_target_resolution) {
  protocol::rollout_request spec;
  spec.release_id = "r2";
  spec.waves = {{protocol::size_spec::unit::percent, 100}};
  auto with = [&](protocol::rollout_target t) {
    auto s = spec;
    s.target = std::move(t);
    return event{"bob", create_rollout{"ro-1", s}};
  };
  auto decommissioned_02 = [] {
    auto f = base();
    f.machines.at("web-02").state = protocol::lifecycle::decommissioned;
    return f;
  };
  auto web02_in_rollout = [] {
    auto f = base();
    f.active_rollout_of["web-02"] = {"ro-0", 0};
    return f;
  };
  run({
      {"a named host the release does not hold", base, with({{}, {"db-01"}}),
       [](const fleet&) { return refused(400, "invalid_field", "target.hosts: db-01 has no entry in the release"); }},
      {"a tag nothing carries", base, with({{"db"}, {}}),
       [](const fleet&) { return refused(400, "no_hosts", "no machine of the release matches the target"); }},
      {"a host already in an active rollout", web02_in_rollout, with({{"web"}, {}}),
       [](const fleet&) { return refused(409, "in_rollout", "web-02 is already in active rollout ro-0"); }},
      {"an unknown release", base, event{"bob", create_rollout{"ro-1", [&] {
                                                   auto s = spec;
                                                   s.release_id = "r9";
                                                   return s;
                                                 }()}},
       [](const fleet&) { return refused(400, "unknown_release", "no release r9"); }},
  });
  // Taken: named hosts and tagged ones; a decommissioned machine never.
  auto f = decommissioned_02();
  auto fx = apply(f, with({{"web"}, {}}), NOW);
  BOOST_TEST_REQUIRE(!fx.refused);
  const auto& r = f.rollouts.at("ro-1");
  BOOST_TEST_REQUIRE(r.hosts.size() == 1u);
  BOOST_TEST(r.hosts[0].hostname == "web-01");
  BOOST_TEST(fx.status == 201u);
  BOOST_TEST(f.active_rollout_of.at("web-01").rollout == "ro-1");
  // The first wave is dispatched in the same step: web-01 is asked for B, signed by r2.
  const auto& d = f.machines.at("web-01").desired;
  BOOST_TEST_REQUIRE(d.has_value());
  BOOST_TEST(d->store_path == B);
  BOOST_TEST(d->release_id == "r2");
  BOOST_TEST(*d->rollout_id == "ro-1");
  BOOST_TEST((fx.republish == std::vector<std::string>{"web-01", "web-01"}));
  BOOST_TEST(fx.changes.audit.front().action == "rollout.created");
  // A host the fleet has never seen is registered so its desired state waits for it.
  auto g = [] {
    loaded_state s;
    s.releases.push_back(release("r2", 2, T0, {{"web-01", B}, {"web-02", B}, {"web-03", B}}));
    return make_fleet(std::move(s));
  }();
  auto fx2 = apply(g, with({{}, {"web-03"}}), NOW);
  BOOST_TEST_REQUIRE(!fx2.refused);
  BOOST_TEST(g.machines.contains("web-03"));
  BOOST_TEST(fx2.changes.audit.front().action == "machine.registered");
  BOOST_TEST((g.machines.at("web-03").tags == std::vector<std::string>{"web"}));
}

// A release's entries are found by hostname whatever their order: each host of a rollout gets its
// own entry's path, signature and tags, a host outside the release is refused, and a deleted
// release's index goes with it.
BOOST_AUTO_TEST_CASE(a_large_release_in_any_order_gives_each_host_its_own_entry) {
  std::vector<std::pair<std::string, std::string>> entries;
  for (int i = 2999; i >= 0; --i) entries.emplace_back("h" + std::to_string(i * 7919 % 3000), i % 2 ? A : B);
  loaded_state s;
  s.releases.push_back(release("r1", 1, T0, entries));
  auto& held = s.releases.back();
  for (auto& e : held.entries) e.tags = {"t-" + e.hostname};
  auto f = make_fleet(std::move(s));
  protocol::rollout_request spec;
  spec.release_id = "r1";
  spec.waves = {{protocol::size_spec::unit::percent, 100}};
  for (int i = 0; i < 3000; i += 2) spec.target.hosts.push_back("h" + std::to_string(i));
  auto fx = apply(f, event{"bob", create_rollout{"ro-1", spec}}, NOW);
  BOOST_TEST_REQUIRE(!fx.refused);
  const auto& rel = f.releases.at("r1");
  std::size_t checked = 0;
  for (const auto& e : rel.entries) {
    auto m = f.machines.find(e.hostname);
    const bool wanted = std::stoi(e.hostname.substr(1)) % 2 == 0;
    BOOST_TEST_REQUIRE((m != f.machines.end()) == wanted);
    if (!wanted) continue;
    BOOST_TEST_REQUIRE(m->second.desired.has_value());
    BOOST_TEST(m->second.desired->store_path == e.store_path);
    BOOST_TEST(*m->second.desired->entry_signature == "op-1:sig-of-r1-" + e.hostname);
    BOOST_TEST((m->second.tags == std::vector<std::string>{"t-" + e.hostname}));
    ++checked;
  }
  BOOST_TEST(checked == 1500u);
  // A host the release does not hold is still refused by name.
  auto bad = spec;
  bad.target.hosts = {"h3000"};
  auto refusedfx = apply(f, event{"bob", create_rollout{"ro-2", bad}}, NOW);
  BOOST_TEST_REQUIRE(refusedfx.refused.has_value());
  BOOST_TEST(refusedfx.refused->message == "target.hosts: h3000 has no entry in the release");
  // A deleted release's index goes with it.
  auto g = make_fleet([] {
    loaded_state t;
    t.releases.push_back(release("r1", 1, T0, {{"web-01", A}}));
    t.releases.push_back(release("r2", 2, T0 + 1s, {{"web-01", B}}));
    return t;
  }());
  BOOST_TEST(g.entries_by_host.size() == 2u);
  apply(g, {"alice", delete_release{"r2"}}, NOW);
  BOOST_TEST(g.entries_by_host.size() == 1u);
  BOOST_TEST(g.entries_by_host.contains("r1"));
}

BOOST_AUTO_TEST_CASE(release_revocation_and_key_rules) {
  auto req = [](std::string id, std::uint64_t seq, std::vector<std::string> hosts) {
    protocol::release_request r;
    r.id = std::move(id);
    r.sequence = seq;
    r.created_at = NOW;
    for (auto& h : hosts) {
      protocol::release_entry e;
      e.hostname = h;
      e.store_path = C;
      r.entries.push_back(e);
    }
    return event{"bob", create_release{r}};
  };
  protocol::revocation_list list;
  list.sequence = 1;
  list.releases = {"r1"};
  run({
      {"a release id is never reused", base, req("r1", 3, {"web-01"}),
       [](const fleet&) { return refused(409, "exists", "a release with this id exists; releases are immutable"); }},
      {"a sequence not above the newest", base, req("r3", 2, {"web-01"}),
       [](const fleet&) {
         return refused(409, "stale_sequence",
                        "sequence 2 is not above the newest release's (2); sign it again with a higher one");
       }},
      {"a host twice", base, req("r3", 3, {"web-01", "web-01"}),
       [](const fleet&) { return refused(400, "invalid_field", "entries[1].hostname: appears twice in the release"); }},
      {"a release in use by a rollout is not deleted",
       [] {
         auto f = base();
         f.rollouts["ro-0"].id = "ro-0";
         f.rollouts["ro-0"].spec.release_id = "r1";
         return f;
       },
       {"alice", delete_release{"r1"}},
       [](const fleet&) { return refused(409, "in_use", "rollout ro-0 references this release"); }},
      {"a revocation list republishes every machine's desired state", base, {"bob", publish_revocations{list}},
       [&](const fleet&) {
         effects fx;
         fx.changes.revocations = list;
         fx.changes.audit = {audit("bob", "revocations.published", "revocations",
                                   {{"sequence", 1}, {"releases", 1}, {"store_paths", 0}, {"keys", 0}})};
         fx.republish_all = true;
         fx.reply = list;
         return fx;
       }},
      {"a key keeps only the hash of its secret", base,
       {"alice", create_key{"key-1", "nfk_" + std::string(64, 'a'), {"ci", role::deploy}}},
       [](const fleet&) {
         effects fx;
         key_record k{{"key-1", "ci", role::deploy, NOW, std::nullopt},
                      protocol::sha256_hex("nfk_" + std::string(64, 'a'))};
         fx.changes.keys = {k};
         fx.changes.audit = {audit("alice", "key.created", "key-1", {{"name", "ci"}, {"role", "deploy"}})};
         fx.status = 201;
         fx.reply = protocol::created_key{k.info, "nfk_" + std::string(64, 'a')};
         return fx;
       }},
      {"the reconcile tick with no active rollout does nothing", base, {"coordinator", tick{}},
       [](const fleet&) { return effects{}; }},
  });
  // A newer release's entry signs a path that an older one also holds.
  auto f = base();
  auto fx = apply(f, req("r3", 3, {"web-01"}), NOW);
  BOOST_TEST(fx.status == 201u);
  BOOST_TEST(f.newest_entry.at({"web-01", C}) == "r3");
  BOOST_TEST(std::get<protocol::release>(fx.reply).created_by == "bob");
  apply(f, {"alice", delete_release{"r3"}}, NOW);
  BOOST_TEST(!f.newest_entry.contains({"web-01", C}));
  BOOST_TEST(f.newest_entry.at({"web-01", B}) == "r2");
  // Stale revocations are refused.
  apply(f, {"bob", publish_revocations{list}}, NOW);
  auto again = apply(f, {"bob", publish_revocations{list}}, NOW);
  BOOST_TEST_REQUIRE(again.refused.has_value());
  BOOST_TEST(again.refused->code == "stale_sequence");
  // What is served carries the list's sequence and no poll hint outside a rollout.
  f.machines.at("web-01").desired = protocol::desired_state{};
  auto served_now = served(f, f.machines.at("web-01"), 5);
  BOOST_TEST_REQUIRE(served_now.has_value());
  BOOST_TEST((served_now->revocations_sequence == std::optional<std::uint64_t>(1)));
  BOOST_TEST(!served_now->poll_hint.has_value());
}

BOOST_AUTO_TEST_CASE(auth_policy_is_principal_by_operation) {
  struct row {
    operation op;
    role need;
  };
  const std::vector<row> table = {
      {operation::read, role::readonly},
      {operation::create_release, role::deploy},
      {operation::create_rollout, role::deploy},
      {operation::steer_rollout, role::deploy},
      {operation::rollback_machine, role::deploy},
      {operation::publish_revocations, role::deploy},
      {operation::update_machine, role::admin},
      {operation::clear_desired, role::admin},
      {operation::delete_release, role::admin},
      {operation::manage_keys, role::admin},
      {operation::enroll_machine, role::deploy},
      {operation::revoke_machine, role::admin},
  };
  const auto rank = [](role r) { return r == role::readonly ? 0 : r == role::deploy ? 1 : 2; };
  for (const auto& r : table) {
    BOOST_TEST((required_role(r.op) == r.need));
    for (auto level : {role::readonly, role::deploy, role::admin}) {
      auto verdict = authorize({"someone", level}, r.op);
      BOOST_TEST(verdict.has_value() == (rank(level) < rank(r.need)));
      if (verdict) {
        BOOST_TEST(verdict->status == 403u);
        BOOST_TEST(verdict->message.find(std::string(protocol::to_string(r.need))) != std::string::npos);
      }
    }
  }
  BOOST_TEST(!authorize_agent(std::string("web-01"), "", "web-01", false).has_value());
  BOOST_TEST(authorize_agent(std::string("web-02"), "", "web-01", false)->status == 403u);
  BOOST_TEST(authorize_agent(std::nullopt, "", "web-01", false)->status == 401u);
  BOOST_TEST(!authorize_agent(std::nullopt, "", "web-01", true).has_value());
  // A certificate that names no one, or something that is not a machine id, is refused with why.
  auto ambiguous = authorize_agent(std::nullopt, "the client certificate's subject has 2 CNs", "web-01", false);
  BOOST_TEST(ambiguous->status == 403u);
  BOOST_TEST(ambiguous->code == "bad_client_certificate");
  BOOST_TEST(ambiguous->message == "the client certificate's subject has 2 CNs");
  BOOST_TEST(authorize_agent(std::string("web 01/../x"), "", "web-01", false)->code == "bad_client_certificate");
}

// Tokens are spent once and only for their machine; revocation refuses every certificate of a
// machine, a new token brings it back with a new one, and `active` readmits an own-PKI host by name.
BOOST_AUTO_TEST_CASE(enrollment_tokens_certificates_and_revocation) {
  auto f = base();
  const std::string secret = "nfe_" + std::string(64, 'a');
  const auto hash = protocol::sha256_hex(secret);
  auto made = apply(f, {"ci", create_enroll_token{"web-09", secret, {{"db"}, 600}}}, NOW);
  BOOST_REQUIRE(!made.refused);
  BOOST_TEST(made.status == 201u);
  BOOST_TEST(made.changes.tokens.size() == 1u);
  BOOST_TEST(made.changes.tokens[0].hash == hash);
  BOOST_TEST((made.changes.tokens[0].expires_at == NOW + 600s));
  BOOST_TEST(made.changes.audit.at(0).action == "machine.enroll_token_created");
  BOOST_TEST(apply(f, {"ci", create_enroll_token{"web-09", "nfk_" + std::string(64, 'a'), {}}}, NOW).refused->code ==
             "invalid_field");
  BOOST_TEST(apply(f, {"ci", create_enroll_token{"web-09", secret + "b", {{}, 30}}}, NOW).refused.has_value());

  BOOST_TEST(!enrollment_refusal(f, hash, "web-09", NOW).has_value());
  BOOST_TEST(enrollment_refusal(f, hash, "web-01", NOW)->code == "invalid_token");
  BOOST_TEST(enrollment_refusal(f, hash, "web-09", NOW + 600s)->code == "invalid_token");
  BOOST_TEST(enrollment_refusal(f, protocol::sha256_hex("x"), "web-09", NOW)->code == "invalid_token");

  auto cert = [](std::string serial, std::string id) {
    protocol::issued_certificate c;
    c.machine_id = std::move(id);
    c.serial = std::move(serial);
    c.certificate = "PEM";
    c.ca_chain = "CA";
    c.not_before = NOW - 1min;
    c.not_after = NOW + 24h;
    return c;
  };
  auto enrolled = apply(f, {"enroll:web-09", enroll_machine{hash, cert("a1", "web-09")}}, NOW);
  BOOST_REQUIRE(!enrolled.refused);
  BOOST_TEST(enrolled.status == 201u);
  BOOST_TEST(f.machines.at("web-09").tags == std::vector<std::string>{"db"});
  BOOST_TEST(f.tokens.at(hash).used_at.has_value());
  BOOST_TEST(enrolled.changes.certificates.size() == 1u);
  BOOST_TEST(apply(f, {"enroll:web-09", enroll_machine{hash, cert("a2", "web-09")}}, NOW).refused->code ==
             "invalid_token", "a spent token");
  BOOST_TEST((status_of(f, f.machines.at("web-09")).certificate_expires_at == NOW + 24h));

  BOOST_TEST(!certificate_refusal(f, "web-09", "a1", NOW).has_value());
  BOOST_TEST(certificate_refusal(f, "web-01", "a1", NOW)->code == "bad_client_certificate", "another machine's serial");
  BOOST_TEST(!certificate_refusal(f, "web-01", "ffff", NOW).has_value(), "not ours: an operator's own PKI");
  BOOST_TEST(certificate_refusal(f, "web-09", "a1", NOW + 24h)->code == "certificate_expired");
  auto renewed = apply(f, {"agent:web-09", renew_certificate{"a1", cert("a3", "web-09")}}, NOW);
  BOOST_REQUIRE(!renewed.refused);
  BOOST_TEST(renewed.changes.audit.at(0).action == "machine.certificate_renewed");
  // A holder renewing in a loop stops at eight live certificates.
  for (int i = 0; i < 6; ++i)
    BOOST_REQUIRE(!apply(f, {"agent:web-09", renew_certificate{"a3", cert("b" + std::to_string(i), "web-09")}}, NOW).refused);
  auto looping = apply(f, {"agent:web-09", renew_certificate{"a3", cert("b9", "web-09")}}, NOW);
  BOOST_REQUIRE(looping.refused.has_value());
  BOOST_TEST(looping.refused->status == 429u);

  // A token still out when the machine is revoked is spent with it.
  const std::string spare = "nfe_" + std::string(64, 'c');
  BOOST_REQUIRE(!apply(f, {"ci", create_enroll_token{"web-09", spare, {}}}, NOW).refused);
  auto revoked = apply(f, {"alice", revoke_machine{"web-09"}}, NOW);
  BOOST_REQUIRE(!revoked.refused);
  BOOST_TEST(revoked.changes.certificates.size() == 8u);
  BOOST_TEST(revoked.changes.tokens.size() == 1u);
  BOOST_TEST(revoked.changes.audit.at(0).action == "machine.revoked");
  for (auto serial : {"a1", "a3", ""}) BOOST_TEST(certificate_refusal(f, "web-09", serial, NOW)->code == "revoked");
  BOOST_TEST(apply(f, {"agent:web-09", renew_certificate{"a3", cert("a4", "web-09")}}, NOW).refused->code == "revoked");
  BOOST_TEST(enrollment_refusal(f, protocol::sha256_hex(spare), "web-09", NOW).has_value());
  BOOST_TEST(apply(f, {"alice", revoke_machine{"nobody"}}, NOW).refused->status == 404u);

  // A new token: back in with a new certificate; the revoked ones stay revoked.
  const std::string again = "nfe_" + std::string(64, 'd');
  BOOST_REQUIRE(!apply(f, {"ci", create_enroll_token{"web-09", again, {}}}, NOW).refused);
  BOOST_REQUIRE(!apply(f, {"enroll:web-09", enroll_machine{protocol::sha256_hex(again), cert("a5", "web-09")}}, NOW).refused);
  BOOST_TEST(!certificate_refusal(f, "web-09", "a5", NOW).has_value());
  BOOST_TEST(certificate_refusal(f, "web-09", "a1", NOW)->code == "revoked");

  // An own-PKI host, revoked by name, is readmitted by setting it active; decommissioning revokes.
  BOOST_REQUIRE(!apply(f, {"alice", revoke_machine{"web-01"}}, NOW).refused);
  BOOST_TEST(certificate_refusal(f, "web-01", "ffff", NOW)->code == "revoked");
  protocol::machine_update active;
  active.state = protocol::lifecycle::active;
  auto back = apply(f, {"alice", update_machine{"web-01", active}}, NOW);
  BOOST_TEST(back.changes.audit.at(0).detail.at("readmitted").as_bool());
  BOOST_TEST(!certificate_refusal(f, "web-01", "ffff", NOW).has_value());
  protocol::machine_update gone;
  gone.state = protocol::lifecycle::decommissioned;
  auto out = apply(f, {"alice", update_machine{"web-09", gone}}, NOW);
  BOOST_TEST(out.changes.audit.size() == 2u);
  BOOST_TEST(out.changes.audit.at(1).action == "machine.revoked");
  BOOST_TEST(certificate_refusal(f, "web-09", "a5", NOW)->code == "revoked");
  BOOST_TEST(apply(f, {"ci", create_enroll_token{"web-09", "nfe_" + std::string(64, 'e'), {}}}, NOW).refused->code ==
             "decommissioned");
}


BOOST_AUTO_TEST_CASE(the_dashboard_s_view_of_where_each_machine_stands) {
  fleet f;
  auto add = [&](const std::string& id, std::optional<std::string> current, std::optional<std::string> desired) -> machine_record& {
    auto& m = f.machines[id];
    m.id = id;
    m.current_path = std::move(current);
    if (desired) {
      m.desired.emplace();
      m.desired->store_path = *desired;
    }
    m.last_seen = NOW - 10s;
    return m;
  };
  add("a-synced", A, A);
  add("b-behind", A, B);
  auto& failing = add("c-failing", A, B);
  failing.last_report.emplace();
  failing.last_report->kind = report_kind::activation_failed;
  failing.last_report->store_path = B;
  auto& old_failure = add("d-behind-again", A, C);  // failed on B; C is new: behind, not failing
  old_failure.last_report.emplace();
  old_failure.last_report->kind = report_kind::fetch_failed;
  old_failure.last_report->store_path = B;
  add("e-unmanaged", A, std::nullopt);
  auto& silent = add("f-unknown", std::nullopt, A);
  silent.last_seen.reset();
  auto& sick = add("g-sick", A, A);
  sick.health = protocol::health_report{false, {}};
  sick.tags = {"db"};
  sick.state = protocol::lifecycle::maintenance;

  BOOST_TEST(to_string(sync_of(f.machines["a-synced"])) == "in_sync");
  BOOST_TEST(to_string(sync_of(f.machines["b-behind"])) == "behind");
  BOOST_TEST(to_string(sync_of(failing)) == "failing");
  BOOST_TEST(to_string(sync_of(old_failure)) == "behind");
  BOOST_TEST(to_string(sync_of(f.machines["e-unmanaged"])) == "unmanaged");
  BOOST_TEST(to_string(sync_of(silent)) == "unknown");
  BOOST_TEST(health_of(sick) == "failing");
  BOOST_TEST(health_of(f.machines["a-synced"]) == "unknown");

  fleet_filter all;
  all.limit = 3;
  auto p = page_of(f, all, NOW);
  BOOST_TEST(p.total == 7u);
  BOOST_TEST(p.matched == 7u);
  BOOST_REQUIRE_EQUAL(p.rows.size(), 3u);
  BOOST_TEST(p.rows[0].machine->id == "a-synced");  // by id
  BOOST_TEST(p.rows[2].machine->id == "c-failing");
  BOOST_TEST(p.by_sync[static_cast<std::size_t>(sync_state::behind)] == 2u);
  BOOST_TEST(p.by_sync[static_cast<std::size_t>(sync_state::failing)] == 1u);
  BOOST_TEST(p.by_health[1] == 1u);  // failing
  BOOST_TEST(p.by_health[2] == 6u);  // unknown
  BOOST_TEST(p.by_lifecycle[static_cast<std::size_t>(protocol::lifecycle::maintenance)] == 1u);
  BOOST_TEST(p.stale == 1u);  // never seen

  fleet_filter behind;
  behind.sync = sync_state::behind;
  behind.offset = 1;
  auto b = page_of(f, behind, NOW);
  BOOST_TEST(b.matched == 2u);
  BOOST_REQUIRE_EQUAL(b.rows.size(), 1u);
  BOOST_TEST(b.rows[0].machine->id == "d-behind-again");
  BOOST_TEST(b.total == 7u);  // counts stay the fleet's

  fleet_filter text;
  text.text = "system-c";  // a store path's name
  BOOST_TEST(page_of(f, text, NOW).matched == 1u);
  text.text = "db";  // a tag
  BOOST_TEST(page_of(f, text, NOW).rows.at(0).machine->id == "g-sick");
  fleet_filter stale;
  stale.stale_only = true;
  BOOST_TEST(page_of(f, stale, NOW).rows.at(0).machine->id == "f-unknown");
  stale.stale_after = 5s;  // seen 10 s ago: stale now too
  BOOST_TEST(page_of(f, stale, NOW).matched == 7u);
  fleet_filter past_end;
  past_end.offset = 100;
  BOOST_TEST(page_of(f, past_end, NOW).rows.empty());
}

BOOST_AUTO_TEST_CASE(a_last_report_is_kept_compact_and_reads_back_whole) {
  // What the record holds already is kept once; what differs is kept with the report.
  protocol::health_report good{true, {{"nginx", "systemd_unit", protocol::probe_status::pass, 3, std::nullopt}}};
  protocol::health_report bad{false, {{"api", "http", protocol::probe_status::fail, 12, std::string("status 500")}}};
  auto r = report(7, report_kind::rolled_back, B, A, T0);
  r.release_id = "r2";
  r.rollout_id = "ro-1";
  r.message = "health gate failed";
  r.booted_path = C;
  r.uptime_s = 42;
  r.health = bad;

  machine_record m;
  m.current_path = A;
  m.booted_path = A;
  m.health = good;
  set_last_report(m, r);
  BOOST_TEST(m.last_report->shares == last_report_record::current);
  BOOST_TEST((last_report_of(m) == r));
  BOOST_TEST((m.last_report->kind == report_kind::rolled_back));
  BOOST_TEST(*m.last_report->store_path == B);

  m.booted_path = C;
  m.health = bad;
  set_last_report(m, r);
  BOOST_TEST(m.last_report->shares == (last_report_record::current | last_report_record::booted | last_report_record::health));
  BOOST_TEST(m.last_report->rest.find(A) == std::string::npos, "the shared path is not kept twice");
  BOOST_TEST(m.last_report->rest.find("status 500") == std::string::npos, "the shared health is not kept twice");
  BOOST_TEST((last_report_of(m) == r));

  auto beat = report(8, report_kind::heartbeat, std::nullopt, A, T0 + 1s);
  beat.current_path.reset();
  set_last_report(m, beat);
  BOOST_TEST(m.last_report->shares == 0);
  BOOST_TEST((last_report_of(m) == beat));
}

BOOST_AUTO_TEST_SUITE_END()
