// The coordinator over real HTTP on an ephemeral port: every route, the auth matrix, bad input,
// slow and idle clients, the poll path's independence from the store, TLS client certificates.
#include "test_client.hpp"

#include "nixfleet/agent/io/coordinator_client.hpp"
#include "nixfleet/coordinator/io/storage.hpp"
#include "nixfleet/protocol/audit.hpp"
#include "nixfleet/protocol/codec.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <future>
#include <thread>

using namespace nixfleet;
using namespace nixfleet::test;
namespace fs = std::filesystem;
namespace json = boost::json;
using http::verb;
using namespace std::chrono_literals;

namespace {

std::uint64_t next_sequence() {
  static std::uint64_t n = 0;  // each release numbered above the last, as the CLI does
  return ++n;
}

std::string release_body(const std::string& id, const std::string& path, const std::vector<std::string>& hosts) {
  json::array entries;
  for (const auto& h : hosts) entries.push_back(json::object{{"hostname", h}, {"store_path", path}, {"tags", json::array{"web"}}});
  return json::serialize(json::object{{"id", id},
                                      {"created_at", "2026-11-25T10:00:00.000Z"},
                                      {"sequence", next_sequence()},
                                      {"cache_urls", json::array{"http://127.0.0.1:1/cache"}},
                                      {"entries", entries}});
}

std::string report_body(std::uint64_t seq, const std::string& kind, const std::optional<std::string>& store_path,
                        const std::string& current) {
  json::object r{{"seq", seq},
                 {"at", "2026-11-25T10:00:0" + std::to_string(seq % 10) + ".000Z"},
                 {"kind", kind},
                 {"current_path", current},
                 {"agent_version", "test"},
                 {"uptime_s", 5}};
  if (store_path) r["store_path"] = *store_path;
  return json::serialize(json::object{{"reports", json::array{r}}});
}

struct coordinator_fixture {
  fs::path dir = temp_dir("coordinator");
  std::string db = (dir / "db.sqlite").string();
  std::string admin, deployer, reader;
  std::shared_ptr<std::atomic<std::int64_t>> now_ms = std::make_shared<std::atomic<std::int64_t>>(1'790'000'000'000);
  std::optional<running_coordinator> c;

  coordinator_fixture() {
    admin = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
    deployer = coordinator::io::create_key(db, "bob", protocol::role::deploy, "test");
    reader = coordinator::io::create_key(db, "carol", protocol::role::readonly, "test");
  }
  ~coordinator_fixture() {
    c.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  coordinator::io::service_options options() {
    coordinator::io::service_options o;
    o.db_path = db;
    o.insecure_http = true;
    o.reconcile_interval = std::chrono::hours(1);  // tests reconcile explicitly
    o.reconcile_promptly = false;
    auto clock = now_ms;
    o.clock = [clock] { return protocol::timestamp(std::chrono::milliseconds(clock->load())); };
    return o;
  }
  void start() { c.emplace(options()); }
  void start(coordinator::io::service_options o) { c.emplace(std::move(o)); }
  void advance(std::chrono::milliseconds d) { *now_ms += d.count(); }

  reply as(const std::string& key, verb m, const std::string& target, const std::string& body = {}) {
    request_spec s{m, target, body, {}};
    if (!key.empty()) s.headers["Authorization"] = "Bearer " + key;
    return send(c->endpoint(), s);
  }
  reply agent(verb m, const std::string& target, const std::string& body = {},
              std::map<std::string, std::string> headers = {}) {
    return send(c->endpoint(), {m, target, body, std::move(headers)});
  }
  bool healthy() { return agent(verb::get, "/healthz").status == 200; }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(coordinator_routes, coordinator_fixture)

BOOST_AUTO_TEST_CASE(a_release_for_a_large_fleet_is_accepted_from_a_deploy_key_only) {
  // 12,000 entries are more than the 1 MiB every other request may send.
  start();
  std::vector<std::string> hosts;
  for (int i = 0; i < 12000; ++i) hosts.push_back("host-" + std::to_string(i));
  const auto body = release_body("big", P1, hosts);
  BOOST_TEST_REQUIRE(body.size() > (1u << 20));
  auto refused = as(reader, verb::post, "/api/v1/releases", body);
  BOOST_TEST(refused.status == 413u);
  BOOST_TEST(as("", verb::post, "/api/v1/releases", body).status == 413u);
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", std::string(body.size(), ' ')).status == 413u,
             "only releases may be larger");
  auto made = as(deployer, verb::post, "/api/v1/releases", body);
  BOOST_TEST(made.status == 201u, made.body.substr(0, 200));
  BOOST_TEST(as(reader, verb::get, "/api/v1/releases/big").json().at("entries").as_array().size() == 12000u);
}

BOOST_AUTO_TEST_CASE(operator_routes_require_a_key_and_enough_role) {
  start();
  struct row {
    verb m;
    std::string target;
    protocol::role need;
  };
  const std::vector<row> routes = {
      {verb::get, "/api/v1/machines", protocol::role::readonly},
      {verb::get, "/api/v1/machines/web-1", protocol::role::readonly},
      {verb::put, "/api/v1/machines/web-1", protocol::role::admin},
      {verb::delete_, "/api/v1/machines/web-1/desired", protocol::role::admin},
      {verb::post, "/api/v1/machines/web-1/rollback", protocol::role::deploy},
      {verb::get, "/api/v1/releases", protocol::role::readonly},
      {verb::post, "/api/v1/releases", protocol::role::deploy},
      {verb::get, "/api/v1/releases/r1", protocol::role::readonly},
      {verb::delete_, "/api/v1/releases/r1", protocol::role::admin},
      {verb::get, "/api/v1/releases/r1/diff/r2", protocol::role::readonly},
      {verb::get, "/api/v1/rollouts", protocol::role::readonly},
      {verb::post, "/api/v1/rollouts", protocol::role::deploy},
      {verb::get, "/api/v1/rollouts/ro-1", protocol::role::readonly},
      {verb::post, "/api/v1/rollouts/ro-1/pause", protocol::role::deploy},
      {verb::post, "/api/v1/rollouts/ro-1/resume", protocol::role::deploy},
      {verb::post, "/api/v1/rollouts/ro-1/cancel", protocol::role::deploy},
      {verb::get, "/api/v1/audit", protocol::role::readonly},
      {verb::get, "/api/v1/audit/export?format=csv", protocol::role::readonly},
      {verb::get, "/api/v1/audit/verify", protocol::role::readonly},
      {verb::get, "/api/v1/keys", protocol::role::admin},
      {verb::post, "/api/v1/keys", protocol::role::admin},
      {verb::delete_, "/api/v1/keys/key-000000000000", protocol::role::admin},
  };
  const std::string unknown_key = "nfk_" + std::string(64, 'a');
  for (const auto& r : routes) {
    BOOST_TEST_CONTEXT(r.target << " " << r.m) {
      auto none = as("", r.m, r.target, "{}");
      BOOST_TEST(none.status == 401u);
      BOOST_TEST(none.json().at("error").as_string() == "unauthenticated");
      BOOST_TEST(none.headers["X-Nixfleet-Protocol"] == "1");
      BOOST_TEST(as(unknown_key, r.m, r.target, "{}").status == 401u);
      BOOST_TEST(as("not-a-key", r.m, r.target, "{}").status == 401u);
      if (r.need == protocol::role::deploy || r.need == protocol::role::admin)
        BOOST_TEST(as(reader, r.m, r.target, "{}").status == 403u);
      if (r.need == protocol::role::admin) BOOST_TEST(as(deployer, r.m, r.target, "{}").status == 403u);
      // Enough role gets past authorisation (to a 2xx, 400, 404 or 409 on these placeholder ids).
      auto ok = as(admin, r.m, r.target, "{}");
      BOOST_TEST((ok.status != 401u && ok.status != 403u));
    }
  }
  BOOST_TEST(healthy());
}

BOOST_AUTO_TEST_CASE(releases_are_immutable_listed_diffed_and_deleted) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1", "web-2"})).status == 201u);
  auto dup = as(deployer, verb::post, "/api/v1/releases", release_body("r1", P2, {"web-1"}));
  BOOST_TEST(dup.status == 409u);
  auto r2 = json::parse(release_body("r2", P2, {"web-1", "web-3"})).as_object();
  r2["entries"].as_array().push_back(json::object{{"hostname", "web-2"}, {"store_path", P1}, {"tags", json::array{}}});
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", json::serialize(r2)).status == 201u);

  auto one = as(reader, verb::get, "/api/v1/releases/r1");
  BOOST_TEST(one.status == 200u);
  BOOST_TEST(one.json().at("created_by").as_string() == "bob");
  BOOST_TEST(as(reader, verb::get, "/api/v1/releases").json().as_array().size() == 2u);
  BOOST_TEST(as(reader, verb::get, "/api/v1/releases/nope").status == 404u);

  auto diff = as(reader, verb::get, "/api/v1/releases/r1/diff/r2").json();
  BOOST_TEST(json::serialize(diff.at("added")) == R"(["web-3"])");
  BOOST_TEST(json::serialize(diff.at("removed")) == "[]");
  BOOST_TEST(diff.at("changed").as_array().size() == 1u);
  BOOST_TEST(diff.at("changed").at(0).at("hostname").as_string() == "web-1");
  BOOST_TEST(diff.at("changed").at(0).at("new").as_string() == P2);
  BOOST_TEST(json::serialize(diff.at("unchanged")) == R"(["web-2"])");

  auto ro = as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r2","target":{"hosts":["web-3"]}})");
  BOOST_TEST(ro.status == 201u);
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/releases/r2").status == 409u);
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/releases/r1").status == 204u);
  BOOST_TEST(as(reader, verb::get, "/api/v1/releases/r1").status == 404u);
}

BOOST_AUTO_TEST_CASE(releases_are_numbered_upwards_and_their_signed_fields_reach_the_desired_state) {
  start();
  auto body = json::parse(release_body("r1", P1, {"web-1"})).as_object();
  body["sequence"] = 0;
  auto zero = as(deployer, verb::post, "/api/v1/releases", json::serialize(body));
  BOOST_TEST(zero.status == 400u);
  BOOST_TEST(zero.body.find("sequence") != std::string::npos, zero.body);
  body["sequence"] = 40;
  body["activation"] = "boot";
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", json::serialize(body)).status == 201u);
  body["id"] = "r2";
  auto same = as(deployer, verb::post, "/api/v1/releases", json::serialize(body));
  BOOST_TEST(same.status == 409u, "a sequence must be above the newest: " << same.body);
  auto ro = as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]}})");
  BOOST_TEST_REQUIRE(ro.status == 201u);
  auto d = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-1/desired").body);
  BOOST_TEST_REQUIRE(d.has_value());
  BOOST_TEST(d->release_sequence == 40u);
  BOOST_TEST((d->activation == protocol::activation_mode::boot));
  BOOST_TEST(!d->revocations_sequence.has_value());
}

BOOST_AUTO_TEST_CASE(a_revocation_list_is_kept_as_signed_served_to_agents_and_announced) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]}})").status == 201u);
  BOOST_TEST(agent(verb::get, "/api/v1/revocations").status == 404u);
  const std::string list =
      R"({"sequence":3,"issued_at":"2026-11-25T10:00:00.000Z","releases":["r0"],"signature":"ops-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="})";
  BOOST_TEST(as(reader, verb::put, "/api/v1/revocations", list).status == 403u);
  BOOST_TEST(as(deployer, verb::put, "/api/v1/revocations", list).status == 200u);
  auto older = list;
  older.replace(older.find("\"sequence\":3"), 12, "\"sequence\":2");
  BOOST_TEST(as(deployer, verb::put, "/api/v1/revocations", older).status == 409u, "a list cannot be rolled back");
  auto served = protocol::parse<protocol::revocation_list>(agent(verb::get, "/api/v1/revocations").body);
  BOOST_TEST_REQUIRE(served.has_value());
  BOOST_TEST(served->sequence == 3u);
  BOOST_TEST(served->signature.starts_with("ops-1:"));
  BOOST_TEST(as(reader, verb::get, "/api/v1/revocations").status == 200u);
  auto d = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-1/desired").body);
  BOOST_TEST_REQUIRE(d.has_value());
  BOOST_TEST((d->revocations_sequence == 3u));
}

BOOST_AUTO_TEST_CASE(a_rollback_statement_travels_to_the_agent_unchanged) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "up_to_date", std::nullopt, P2)).status == 200u);
  const std::string st = R"({"hostname":"web-1","store_path":")" + P1 +
                         R"(","issued_at":"2026-11-25T10:00:00.000Z","expires_at":"2026-11-25T11:00:00.000Z","reason":"bad kernel",)"
                         R"("signature":"ops-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="})";
  auto other_host = st;
  other_host.replace(other_host.find("web-1"), 5, "web-2");
  BOOST_TEST(as(deployer, verb::post, "/api/v1/machines/web-1/rollback",
                R"({"store_path":")" + P1 + R"(","statement":)" + other_host + "}")
                 .status == 400u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/machines/web-1/rollback", R"({"store_path":")" + P1 + R"(","statement":)" + st + "}")
                 .status == 200u);
  auto d = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-1/desired").body);
  BOOST_TEST_REQUIRE(d.has_value());
  BOOST_TEST_REQUIRE(d->rollback.has_value());
  BOOST_TEST(d->rollback->reason == "bad kernel");
  BOOST_TEST(d->store_path == P1);
}

BOOST_AUTO_TEST_CASE(a_rollout_dispatches_in_waves_and_completes_on_confirmations) {
  start();
  BOOST_TEST(as(admin, verb::put, "/api/v1/machines/web-1", R"({"tags":["web","eu"]})").status == 200u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1", "web-2"})).status == 201u);
  auto ro = as(deployer, verb::post, "/api/v1/rollouts",
               R"({"release_id":"r1","target":{"tags":["web"]},"waves":"canary","soak_s":60})");
  BOOST_TEST_REQUIRE(ro.status == 201u);
  const auto id = std::string(ro.json().at("id").as_string());
  const auto canary = std::string(ro.json().at("waves").at(0).at("hosts").at(0).as_string());
  const auto second = canary == "web-1" ? std::string("web-2") : std::string("web-1");

  // The canary has a desired state with a poll hint; the second host has none yet.
  auto d = agent(verb::get, "/api/v1/machines/" + canary + "/desired");
  BOOST_TEST_REQUIRE(d.status == 200u);
  auto desired = protocol::parse<protocol::desired_state>(d.body);
  BOOST_TEST_REQUIRE(desired.has_value());
  BOOST_TEST(desired->store_path == P1);
  BOOST_TEST((desired->rollout_id == id));
  BOOST_TEST((desired->poll_hint == 5u));
  BOOST_TEST(desired->attempt == 1u);
  BOOST_TEST(agent(verb::get, "/api/v1/machines/" + second + "/desired").status == 204u);
  auto again = agent(verb::get, "/api/v1/machines/" + canary + "/desired", {}, {{"If-None-Match", d.headers["ETag"]}});
  BOOST_TEST(again.status == 304u);

  // The canary confirms; the wave soaks for 60 s, then the second host is dispatched.
  BOOST_TEST(agent(verb::post, "/api/v1/machines/" + canary + "/reports", report_body(1, "confirmed", P1, P1)).status == 200u);
  c->reconcile();
  auto st = as(reader, verb::get, "/api/v1/rollouts/" + id).json();
  BOOST_TEST(st.at("waves").at(0).at("status").as_string() == "soaking");
  advance(std::chrono::seconds(61));
  c->reconcile();
  BOOST_TEST(agent(verb::get, "/api/v1/machines/" + second + "/desired").status == 200u);
  BOOST_TEST(agent(verb::post, "/api/v1/machines/" + second + "/reports", report_body(1, "confirmed", P1, P1)).status == 200u);
  c->reconcile();
  advance(std::chrono::seconds(61));
  c->reconcile();
  st = as(reader, verb::get, "/api/v1/rollouts/" + id).json();
  BOOST_TEST(st.at("status").as_string() == "completed");
  BOOST_TEST(st.at("events").as_array().size() >= 8u);
  // Out of the rollout, the hint is gone (and the ETag changed with it).
  auto after = agent(verb::get, "/api/v1/machines/" + canary + "/desired", {}, {{"If-None-Match", d.headers["ETag"]}});
  BOOST_TEST(after.status == 200u);
  BOOST_TEST(!after.json().at("poll_hint").is_number());

  auto listed = as(reader, verb::get, "/api/v1/rollouts?status=completed").json().as_array();
  BOOST_TEST(listed.size() == 1u);
  BOOST_TEST(as(reader, verb::get, "/api/v1/rollouts?status=running").json().as_array().empty());

  auto m = as(reader, verb::get, "/api/v1/machines/" + canary).json();
  BOOST_TEST(m.at("current_path").as_string() == P1);
  BOOST_TEST(m.at("history").at(0).at("store_path").as_string() == P1);
  auto filtered = as(reader, verb::get, "/api/v1/machines?tag=eu").json().as_array();
  BOOST_TEST_REQUIRE(filtered.size() == 1u);
  BOOST_TEST(filtered[0].at("id").as_string() == "web-1");
  BOOST_TEST(as(reader, verb::get, "/api/v1/machines?state=maintenance").json().as_array().empty());
  BOOST_TEST(as(reader, verb::get, "/api/v1/machines?state=bogus").status == 400u);
}

BOOST_AUTO_TEST_CASE(failure_pauses_then_resume_with_retry_raises_the_attempt_and_cancel_ends_it) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1", "web-2", "web-3"})).status == 201u);
  auto ro = as(deployer, verb::post, "/api/v1/rollouts",
               R"({"release_id":"r1","target":{"hosts":["web-1","web-2","web-3"]},"waves":["100%"],"on_failure":"pause"})");
  BOOST_TEST_REQUIRE(ro.status == 201u);
  const auto id = std::string(ro.json().at("id").as_string());
  auto before = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-2/desired").body);
  BOOST_TEST_REQUIRE(before.has_value());
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-2/reports", report_body(1, "rolled_back", P1, P2)).status == 200u);
  c->reconcile();
  auto st = as(reader, verb::get, "/api/v1/rollouts/" + id).json();
  BOOST_TEST(st.at("status").as_string() == "paused");
  // The failed host is told to run what it runs.
  auto reset = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-2/desired").body);
  BOOST_TEST_REQUIRE(reset.has_value());
  BOOST_TEST(reset->store_path == P2);

  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts/" + id + "/pause").status == 409u);
  auto resumed = as(deployer, verb::post, "/api/v1/rollouts/" + id + "/resume", R"({"retry_failed":true})");
  BOOST_TEST(resumed.status == 200u);
  BOOST_TEST(resumed.json().at("status").as_string() == "running");
  auto retry = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-2/desired").body);
  BOOST_TEST_REQUIRE(retry.has_value());
  BOOST_TEST(retry->store_path == P1);
  BOOST_TEST(retry->attempt > reset->attempt);

  auto cancelled = as(deployer, verb::post, "/api/v1/rollouts/" + id + "/cancel");
  BOOST_TEST(cancelled.json().at("status").as_string() == "cancelled");
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts/" + id + "/resume").status == 409u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts/" + id + "/bogus").status == 404u);
  // Out of any active rollout, a host may join a new one.
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]}})").status == 201u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]}})").status == 409u);
}

BOOST_AUTO_TEST_CASE(reports_are_acknowledged_once_and_replays_are_not_doubled) {
  start();
  json::array batch;
  for (std::uint64_t seq = 1; seq <= 5; ++seq)
    batch.push_back(json::parse(report_body(seq, seq == 5 ? "confirmed" : "heartbeat", P1, P1)).at("reports").at(0));
  const auto body = json::serialize(json::object{{"reports", batch}});
  auto first = agent(verb::post, "/api/v1/machines/web-9/reports", body);
  BOOST_TEST(first.status == 200u);
  BOOST_TEST(first.body == R"({"acked_seq":5})");
  auto replay = agent(verb::post, "/api/v1/machines/web-9/reports", body);
  BOOST_TEST(replay.body == R"({"acked_seq":5})");
  c->stop();
  auto store = coordinator::io::open_sqlite(db);
  BOOST_TEST(store->report_count() == 5u);
  BOOST_TEST(store->reports("web-9", 10).front().body.seq == 5u);
  auto loaded = store->load();
  BOOST_TEST_REQUIRE(loaded.machines.size() == 1u);
  BOOST_TEST(loaded.machines[0].acked_seq == 5u);
  BOOST_TEST((loaded.machines[0].current_path == P1));
}

BOOST_AUTO_TEST_CASE(a_rollback_s_forensics_are_stored_with_its_report_found_by_kind_and_linked_from_the_audit) {
  start();
  json::array batch;
  for (std::uint64_t seq = 1; seq <= 4; ++seq)
    batch.push_back(json::parse(report_body(seq, seq == 3 ? "rolled_back" : "heartbeat", P2, P1)).at("reports").at(0));
  batch[2].as_object()["message"] = "health gate failed: required probe api failed 2 consecutive checks";
  batch[2].as_object()["forensics"] = json::parse(R"({"target":")" + P2 + R"(","previous":")" + P1 + R"(",
      "probes":[{"probe":"api","type":"http","status":"fail","message":"unexpected status 500",
                 "output":"HTTP 500\ndatabase connection refused"}],
      "failed_units":["api.service"],"journal":"api[1]: cannot reach db\n",
      "closure_diff":["api: 1.4.0 → 1.5.0"],"closure_changes":1})");
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", json::serialize(json::object{{"reports", batch}})).status ==
             200u);

  auto failures = as(reader, verb::get, "/api/v1/machines/web-1/reports?kind=rolled_back,rollback_failed&limit=5");
  BOOST_TEST_REQUIRE(failures.status == 200u, failures.body);
  const auto list = json::parse(failures.body).as_array();
  BOOST_TEST_REQUIRE(list.size() == 1u, failures.body);
  const auto& fx = list[0].at("forensics").as_object();
  BOOST_TEST(list[0].at("seq").to_number<std::uint64_t>() == 3u);
  BOOST_TEST(fx.at("probes").at(0).at("output").as_string() == "HTTP 500\ndatabase connection refused");
  BOOST_TEST(fx.at("failed_units").at(0).as_string() == "api.service");
  BOOST_TEST(fx.at("closure_diff").at(0).as_string() == "api: 1.4.0 → 1.5.0");
  // Without a filter every report comes back; an unknown kind is refused, naming the choices.
  BOOST_TEST(json::parse(as(reader, verb::get, "/api/v1/machines/web-1/reports").body).as_array().size() == 4u);
  auto bad = as(reader, verb::get, "/api/v1/machines/web-1/reports?kind=rolled_back,exploded");
  BOOST_TEST(bad.status == 400u);
  BOOST_TEST(bad.body.find("rolled_back, rollback_failed") != std::string::npos, bad.body);
  BOOST_TEST(as(reader, verb::get, "/api/v1/machines/web-1/reports?kind=").status == 400u);
  // The audit entry points at the report.
  auto audit = json::parse(as(reader, verb::get, "/api/v1/audit?action=machine.rolled_back").body).as_array();
  BOOST_TEST_REQUIRE(audit.size() == 1u);
  BOOST_TEST(audit[0].at("detail").at("report_seq").to_number<std::uint64_t>() == 3u);
  BOOST_TEST(audit[0].at("detail").at("forensics").as_bool());

  // A bundle beyond its bounds is refused whole, and nothing of the batch is kept.
  auto big = json::parse(report_body(5, "rolled_back", P2, P1)).at("reports").at(0);
  big.as_object()["forensics"] = json::object{{"journal", std::string(16 * 1024 + 1, 'j')}};
  auto refused = agent(verb::post, "/api/v1/machines/web-1/reports", json::serialize(json::object{{"reports", json::array{big}}}));
  BOOST_TEST(refused.status == 400u);
  BOOST_TEST(refused.body.find("reports[0].forensics.journal") != std::string::npos, refused.body);
  BOOST_TEST(json::parse(as(reader, verb::get, "/api/v1/machines/web-1/reports").body).as_array().size() == 4u);
}

BOOST_AUTO_TEST_CASE(machine_update_rollback_and_clearing_desired) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r2", P2, {"web-1"})).status == 201u);
  // The machine ran P1 (confirmed), then P2 (confirmed).
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "confirmed", P1, P1)).status == 200u);
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(2, "confirmed", P2, P2)).status == 200u);
  auto rb = as(deployer, verb::post, "/api/v1/machines/web-1/rollback");
  BOOST_TEST(rb.status == 200u);
  auto d = protocol::parse<protocol::desired_state>(agent(verb::get, "/api/v1/machines/web-1/desired").body);
  BOOST_TEST_REQUIRE(d.has_value());
  BOOST_TEST(d->store_path == P1);
  BOOST_TEST(d->release_id == "r1");
  auto given = as(deployer, verb::post, "/api/v1/machines/web-1/rollback", R"({"store_path":")" + P2 + R"("})");
  BOOST_TEST(given.status == 200u);
  auto unknown = as(deployer, verb::post, "/api/v1/machines/web-1/rollback",
                    R"({"store_path":"/nix/store/2f4c8s6nd0zmh15xds8iijf8jn6i2wq6-x"})");
  BOOST_TEST(unknown.status == 409u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/machines/nobody/rollback").status == 404u);

  auto put = as(admin, verb::put, "/api/v1/machines/web-1", R"({"lifecycle":"maintenance","tags":["db"]})");
  BOOST_TEST(put.status == 200u);
  BOOST_TEST(put.json().at("lifecycle").as_string() == "maintenance");
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/machines/web-1/desired").status == 204u);
  BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired").status == 204u);
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/machines/nobody/desired").status == 404u);
}

BOOST_AUTO_TEST_CASE(keys_are_created_listed_and_revoked) {
  start();
  auto made = as(admin, verb::post, "/api/v1/keys", R"({"name":"ci","role":"deploy"})");
  BOOST_TEST_REQUIRE(made.status == 201u);
  const auto key = std::string(made.json().at("key").as_string());
  const auto id = std::string(made.json().at("id").as_string());
  BOOST_TEST(as(key, verb::get, "/api/v1/releases").status == 200u);
  auto listed = as(admin, verb::get, "/api/v1/keys");
  BOOST_TEST(listed.json().as_array().size() == 4u);
  BOOST_TEST(listed.body.find("nfk_") == std::string::npos, "secrets are never listed");
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/keys/" + id).status == 204u);
  BOOST_TEST(as(key, verb::get, "/api/v1/releases").status == 401u);
  // A key made on the host while the coordinator runs is found in the store.
  auto late = coordinator::io::create_key(db, "dave", protocol::role::readonly, "test");
  BOOST_TEST(as(late, verb::get, "/api/v1/releases").status == 200u);
  BOOST_TEST(as(admin, verb::post, "/api/v1/keys", R"({"name":"x","role":"root"})").status == 400u);
}

// The flood: batches of 1,000 `rejected` reports of one path from one machine. Each repeat is
// stored but not audited; past the machine's budget the batches are refused with Retry-After
// before anything is stored.
BOOST_AUTO_TEST_CASE(a_report_flood_is_neither_an_audit_flood_nor_unbounded) {
  auto flood = [](std::uint64_t first_seq) {
    json::array reports;
    for (std::uint64_t i = 0; i < 1000; ++i)
      reports.push_back(json::object{{"seq", first_seq + i},
                                     {"at", "2026-11-25T10:00:00.000Z"},
                                     {"kind", "rejected"},
                                     {"store_path", P1},
                                     {"current_path", P2},
                                     {"message", "entry signature does not verify"},
                                     {"agent_version", "test"},
                                     {"uptime_s", 5}});
    return json::serialize(json::object{{"reports", reports}});
  };
  auto audit_rows = [&] { return as(reader, verb::get, "/api/v1/audit?limit=1000").json().as_array().size(); };
  {
    auto o = options();
    o.report_budget_count = 0;  // no budget: the dedupe alone
    o.report_budget_bytes = 0;
    start(std::move(o));
    const auto before = audit_rows();
    for (int i = 0; i < 10; ++i)
      BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", flood(1 + 1000 * i)).status == 200u);
    // Registered, its current path, one rejection: three rows for 10,000 reports.
    BOOST_TEST(audit_rows() - before == 3u);
  }
  c.reset();
  start();  // the default budget: 1,200 reports per 10 minutes
  unsigned accepted = 0, over = 0;
  std::string retry_after;
  for (int i = 0; i < 50; ++i) {
    auto r = agent(verb::post, "/api/v1/machines/web-2/reports", flood(1 + 1000 * i));
    if (r.status == 200u) ++accepted;
    if (r.status == 429u) {
      ++over;
      retry_after = r.headers["Retry-After"];
      BOOST_TEST(r.json().at("error").as_string() == "over_budget");
    }
  }
  BOOST_TEST(accepted == 1u);
  BOOST_TEST(over == 49u);
  BOOST_TEST(std::stoi(retry_after) > 0);
  // What was stored is the one accepted batch.
  BOOST_TEST(c->on_thread([this] { return c->service().store_operations(); }) > 0u);
  auto stored = coordinator::io::open_sqlite(db)->reports("web-2", 5000);
  BOOST_TEST(stored.size() == 1000u);
  // Another machine's budget is its own.
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-3/reports", report_body(1, "heartbeat", std::nullopt, P1)).status == 200u);
}

BOOST_AUTO_TEST_CASE(the_audit_export_is_streamed_in_pages_and_whole) {
  {
    auto store = coordinator::io::open_sqlite(db);
    coordinator::io::change_set cs;
    for (int i = 0; i < 2500; ++i)
      cs.audit.push_back({protocol::timestamp(std::chrono::milliseconds(1'790'000'000'000 + i)), "alice", "machine.updated",
                          "web-" + std::to_string(i), json::object{}});
    BOOST_TEST_REQUIRE(store->commit({&cs})[0].empty());
  }
  start();
  auto jsonl = as(reader, verb::get, "/api/v1/audit/export?format=jsonl");
  BOOST_TEST(jsonl.status == 200u);
  // Chunked: no Content-Length, the log never held in one piece.
  BOOST_TEST(jsonl.headers["Transfer-Encoding"] == "chunked");
  BOOST_TEST(!jsonl.headers.contains("Content-Length"));
  const auto v = protocol::verify_audit_export(jsonl.body, std::nullopt);
  BOOST_TEST(v.ok, v.reason.value_or(""));
  BOOST_TEST(v.rows == 2503u);  // the fixture's three keys, then 2,500 rows across three pages
  auto csv = as(reader, verb::get, "/api/v1/audit/export?format=csv");
  std::size_t lines = 0;
  for (char ch : csv.body) lines += ch == '\n';
  BOOST_TEST(lines == 2504u);
  BOOST_TEST(csv.body.starts_with("seq,at,actor"));
}

BOOST_AUTO_TEST_CASE(keys_made_offline_are_listed_and_revocable_before_first_use_and_last_use_is_kept) {
  auto o = options();
  o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  o.key_sync_interval = std::chrono::hours(1);  // only the routes and stop write last uses here
  start(std::move(o));
  // Made on the host while the coordinator runs, never used: listed, and revocable by id.
  const auto offline = coordinator::io::create_key(db, "erin", protocol::role::deploy, "local:keys-create");
  auto listed = as(admin, verb::get, "/api/v1/keys").json().as_array();
  std::string id;
  for (const auto& k : listed)
    if (k.at("name").as_string() == "erin") id = std::string(k.at("id").as_string());
  BOOST_TEST_REQUIRE(!id.empty(), "the offline key is listed");
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/keys/" + id).status == 204u);
  BOOST_TEST(as(offline, verb::get, "/api/v1/releases").status == 401u, "and revoked");
  // An offline key made later and never listed is revocable too.
  const auto later = coordinator::io::create_key(db, "frank", protocol::role::readonly, "local:keys-create");
  {
    sqlite3* raw = nullptr;
    BOOST_REQUIRE(sqlite3_open(db.c_str(), &raw) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(raw, "SELECT id FROM api_keys WHERE body LIKE '%\"frank\"%'", -1, &st, nullptr);
    BOOST_REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    id = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(raw);
  }
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/keys/" + id).status == 204u);
  BOOST_TEST(as(later, verb::get, "/api/v1/releases").status == 401u);

  // An unknown key is looked up in the store once, then answered from the negative cache.
  const std::string stranger = "nfk_" + std::string(64, '7');
  for (int i = 0; i < 5; ++i) BOOST_TEST(as(stranger, verb::get, "/api/v1/releases").status == 401u);
  const auto metrics = c->on_thread([this] { return *c->service().metrics_endpoint(); });
  const auto text = send(metrics, {verb::get, "/metrics", {}, {}}).body;
  // Three lookups found nothing: the two revoked keys' first tries, then the stranger's.
  BOOST_TEST(text.find("nixfleet_coordinator_api_key_lookups_total{result=\"unknown\"} 3\n") != std::string::npos, text);
  BOOST_TEST(text.find("nixfleet_coordinator_api_key_lookups_total{result=\"cached\"} 4\n") != std::string::npos, text);

  // Last use: written at the latest when the coordinator stops, and read back after a restart.
  advance(5s);
  BOOST_TEST(as(reader, verb::get, "/api/v1/releases").status == 200u);
  const auto used_at = protocol::format_time(protocol::timestamp(std::chrono::milliseconds(now_ms->load())));
  c.reset();
  start();
  auto again = as(admin, verb::get, "/api/v1/keys").json().as_array();
  bool seen = false;
  for (const auto& k : again)
    if (k.at("name").as_string() == "carol") {
      seen = true;
      BOOST_TEST(k.at("last_used_at").as_string() == used_at);
    }
  BOOST_TEST(seen);
}

BOOST_AUTO_TEST_CASE(audit_log_lists_exports_verifies_and_names_a_tampered_row) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
  // A key whose name a spreadsheet would run as a formula acts; its name lands in the actor column.
  auto formula = as(admin, verb::post, "/api/v1/keys", R"({"name":"-2+3","role":"admin"})");
  BOOST_TEST_REQUIRE(formula.status == 201u);
  BOOST_TEST(as(std::string(formula.json().at("key").as_string()), verb::put, "/api/v1/machines/web-1",
                R"({"tags":["web"]})").status == 200u);
  auto rows = as(reader, verb::get, "/api/v1/audit?actor=bob").json().as_array();
  BOOST_TEST_REQUIRE(rows.size() == 1u);
  BOOST_TEST(rows[0].at("action").as_string() == "release.created");
  BOOST_TEST(as(reader, verb::get, "/api/v1/audit?limit=2").json().as_array().size() == 2u);
  BOOST_TEST(as(reader, verb::get, "/api/v1/audit?limit=5000").status == 400u);
  BOOST_TEST(as(reader, verb::get, "/api/v1/audit?since=yesterday").status == 400u);

  auto csv = as(reader, verb::get, "/api/v1/audit/export?format=csv");
  BOOST_TEST(csv.headers["Content-Type"].starts_with("text/csv"));
  BOOST_TEST(csv.body.starts_with("seq,at,actor,action,target,detail,prev_hash,hash\n"));
  BOOST_TEST(csv.body.find(",\"=") == std::string::npos, "no cell starts a formula");
  BOOST_TEST(csv.body.find(",\"-") == std::string::npos, "no cell starts a formula");
  BOOST_TEST(csv.body.find(",\"'-2+3\",") != std::string::npos, "the name is kept, defused");
  auto jsonl = as(reader, verb::get, "/api/v1/audit/export?format=jsonl");
  std::size_t lines = 0;
  for (std::size_t pos = 0; (pos = jsonl.body.find('\n', pos)) != std::string::npos; ++pos) ++lines;
  BOOST_TEST(lines == 6u);  // three keys, a release, a key, a machine created
  BOOST_TEST(as(reader, verb::get, "/api/v1/audit/export?format=xml").status == 400u);

  auto verdict = as(reader, verb::get, "/api/v1/audit/verify").json();
  BOOST_TEST(verdict.at("ok").as_bool());
  BOOST_TEST(verdict.at("rows").as_int64() == 6);

  c->stop();
  sqlite3* raw = nullptr;
  BOOST_TEST_REQUIRE(sqlite3_open(db.c_str(), &raw) == SQLITE_OK);
  BOOST_TEST(sqlite3_exec(raw, "UPDATE audit SET actor = 'mallory' WHERE seq = 4", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  auto v = coordinator::io::open_sqlite(db)->verify_audit();
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 4u));
  start();
  auto over_http = as(reader, verb::get, "/api/v1/audit/verify").json();
  BOOST_TEST(!over_http.at("ok").as_bool());
  BOOST_TEST(over_http.at("bad_seq").as_int64() == 4);
}

BOOST_AUTO_TEST_CASE(bad_input_gets_the_right_status_and_the_server_stays_healthy) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
  struct row {
    std::string name;
    verb m;
    std::string target;
    std::string body;
    std::map<std::string, std::string> headers;
    unsigned status;
  };
  const std::string two_mib(2 << 20, 'x');
  const std::string key = "Bearer " + deployer;
  const std::vector<row> rows = {
      {"malformed json", verb::post, "/api/v1/releases", "{\"id\": ", {{"Authorization", key}}, 400},
      {"wrong type", verb::post, "/api/v1/releases", R"({"id": 7, "created_at": "2026-11-25T10:00:00Z", "entries": []})",
       {{"Authorization", key}}, 400},
      {"unknown fields accepted", verb::post, "/api/v1/releases",
       R"({"id":"r9","created_at":"2026-11-25T10:00:00Z","sequence":1000,"cache_urls":[],"colour":"blue","entries":[{"hostname":"h","store_path":")" +
           P1 + R"(","shoe_size":44}]})",
       {{"Authorization", key}}, 201},
      {"two MiB body", verb::post, "/api/v1/rollouts", two_mib, {{"Authorization", key}}, 413},
      {"two MiB release that is not JSON (read whole: releases may be large)", verb::post, "/api/v1/releases", two_mib,
       {{"Authorization", key}}, 400},
      {"invalid store path", verb::post, "/api/v1/releases",
       R"({"id":"r8","created_at":"2026-11-25T10:00:00Z","cache_urls":[],"entries":[{"hostname":"h","store_path":"/nix/store/../etc/passwd"}]})",
       {{"Authorization", key}}, 400},
      {"invalid machine id in path", verb::get, "/api/v1/machines/..%2Fetc/desired", "", {}, 400},
      {"invalid machine id in body", verb::post, "/api/v1/rollouts",
       R"({"release_id":"r1","target":{"hosts":["bad host"]}})", {{"Authorization", key}}, 400},
      {"wrong protocol major", verb::get, "/api/v1/machines/web-1/desired", "", {{"X-Nixfleet-Protocol", "2"}}, 426},
      {"same major, newer minor", verb::get, "/api/v1/machines/web-1/desired", "", {{"X-Nixfleet-Protocol", "1.3"}}, 204},
      {"unknown route", verb::get, "/api/v2/everything", "", {}, 404},
      {"wrong method", verb::patch, "/api/v1/releases", "", {{"Authorization", key}}, 405},
      {"report batch with a bad kind", verb::post, "/api/v1/machines/web-1/reports",
       R"({"reports":[{"seq":1,"at":"2026-11-25T10:00:00Z","kind":"exploded","agent_version":"x","uptime_s":1}]})", {}, 400},
      {"negative sequence", verb::post, "/api/v1/machines/web-1/reports",
       R"({"reports":[{"seq":-1,"at":"2026-11-25T10:00:00Z","kind":"heartbeat","agent_version":"x","uptime_s":1}]})", {}, 400},
  };
  for (const auto& r : rows) {
    BOOST_TEST_CONTEXT(r.name) {
      auto res = send(c->endpoint(), {r.m, r.target, r.body, r.headers});
      BOOST_TEST(res.status == r.status, res.status << " " << res.body);
      if (res.status >= 400) {
        auto j = res.json();
        BOOST_TEST(j.at("error").is_string());
        BOOST_TEST(j.at("message").is_string());
        BOOST_TEST(res.body.find("sqlite") == std::string::npos);
      }
      BOOST_TEST(healthy());
    }
  }
}

BOOST_AUTO_TEST_CASE(slow_and_idle_clients_are_dropped_and_do_not_starve_others) {
  auto o = options();
  o.api.request_timeout = std::chrono::milliseconds(300);
  o.api.idle_timeout = std::chrono::milliseconds(500);
  start(o);
  asio::io_context ctx;
  // Slowloris: half a header, then nothing.
  asio::ip::tcp::socket slow(ctx);
  slow.connect(c->endpoint());
  asio::write(slow, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")));
  // Many idle connections.
  std::vector<asio::ip::tcp::socket> idle;
  for (int i = 0; i < 200; ++i) {
    idle.emplace_back(ctx);
    idle.back().connect(c->endpoint());
  }
  BOOST_TEST(healthy(), "others are served while slow and idle clients hold connections");
  // Each read blocks until the coordinator drops the connection (a bound, so a server that never
  // does fails the test instead of hanging it).
  for (auto* s : {&slow, &idle.front()}) {
    timeval bound{10, 0};
    ::setsockopt(s->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  }
  char byte;
  boost::system::error_code ec;
  slow.read_some(asio::buffer(&byte, 1), ec);
  BOOST_TEST((ec == asio::error::eof || ec == asio::error::connection_reset), "the slow client was dropped: " << ec.message());
  idle.front().read_some(asio::buffer(&byte, 1), ec);
  BOOST_TEST((ec == asio::error::eof || ec == asio::error::connection_reset), "idle clients were dropped");
  BOOST_TEST(healthy());
}

BOOST_AUTO_TEST_CASE(one_address_holding_its_share_of_sockets_does_not_lock_out_another) {
  auto o = options();
  o.api.max_connections_per_address = 8;
  o.api.first_request_timeout = std::chrono::seconds(30);  // the held sockets stay for the test
  start(o);
  asio::io_context ctx;
  auto from = [&](const char* source) {
    asio::ip::tcp::socket s(ctx);
    s.open(asio::ip::tcp::v4());
    s.bind(asio::ip::tcp::endpoint(asio::ip::make_address(source), 0));
    s.connect(c->endpoint());
    return s;
  };
  std::vector<asio::ip::tcp::socket> held;
  for (int i = 0; i < 8; ++i) held.push_back(from("127.0.0.1"));
  // The ninth from that address is closed at once, unanswered…
  auto ninth = from("127.0.0.1");
  timeval bound{5, 0};
  ::setsockopt(ninth.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  asio::write(ninth, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")));
  char byte;
  boost::system::error_code ec;
  ninth.read_some(asio::buffer(&byte, 1), ec);
  BOOST_TEST((ec == asio::error::eof || ec == asio::error::connection_reset), ec.message());
  // …while another loopback address is answered within a second.
  auto other = from("127.0.0.2");
  const auto started = std::chrono::steady_clock::now();
  asio::write(other, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
  std::string answer;
  char buf[512];
  for (;;) {
    auto n = other.read_some(asio::buffer(buf), ec);
    answer.append(buf, n);
    if (ec) break;
  }
  const auto took = std::chrono::steady_clock::now() - started;
  BOOST_TEST(answer.starts_with("HTTP/1.1 200"), answer);
  BOOST_TEST(took < std::chrono::seconds(1), std::chrono::duration<double>(took).count() << " s");
  // A held socket closed frees its share: the address is served again.
  held.pop_back();
  bool served = false;
  for (int attempt = 0; attempt < 100 && !served; ++attempt) {
    auto again = from("127.0.0.1");
    ::setsockopt(again.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
    asio::write(again, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
    served = again.read_some(asio::buffer(buf), ec) > 0 && std::string_view(buf, 12) == "HTTP/1.1 200";
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the close is seen asynchronously
  }
  BOOST_TEST(served);
}

BOOST_AUTO_TEST_CASE(a_new_connection_that_sends_nothing_is_closed_sooner_than_an_idle_kept_alive_one) {
  auto o = options();
  o.api.first_request_timeout = std::chrono::milliseconds(300);
  o.api.idle_timeout = std::chrono::seconds(30);
  start(o);
  asio::io_context ctx;
  asio::ip::tcp::socket silent(ctx), kept(ctx);
  silent.connect(c->endpoint());
  kept.connect(c->endpoint());
  asio::write(kept, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")));
  char buf[512];
  boost::system::error_code ec;
  BOOST_TEST_REQUIRE(kept.read_some(asio::buffer(buf), ec) > 0);
  timeval bound{10, 0};
  ::setsockopt(silent.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  const auto started = std::chrono::steady_clock::now();
  silent.read_some(asio::buffer(buf), ec);
  const auto took = std::chrono::steady_clock::now() - started;
  BOOST_TEST((ec == asio::error::eof || ec == asio::error::connection_reset), ec.message());
  BOOST_TEST(took < std::chrono::seconds(5), "closed after " << std::chrono::duration<double>(took).count() << " s");
  // The kept-alive connection, idle for longer than that, still serves its next request.
  asio::write(kept, asio::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")));
  BOOST_TEST(kept.read_some(asio::buffer(buf), ec) > 0, ec.message());
  BOOST_TEST(std::string_view(buf, 12) == "HTTP/1.1 200");
}

BOOST_AUTO_TEST_CASE(the_poll_path_never_reaches_the_store) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1", "web-2"})).status == 201u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]}})").status == 201u);
  auto first = agent(verb::get, "/api/v1/machines/web-1/desired");
  BOOST_TEST_REQUIRE(first.status == 200u);
  const auto before = c->on_thread([this] { return c->service().store_operations(); });
  unsigned not_modified = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = agent(verb::get, "/api/v1/machines/web-1/desired", {}, {{"If-None-Match", first.headers["ETag"]}});
    not_modified += r.status == 304u;
    BOOST_TEST(agent(verb::get, "/api/v1/machines/web-2/desired").status == 204u);
    BOOST_TEST(agent(verb::get, "/api/v1/machines/never-seen/desired").status == 204u);
  }
  BOOST_TEST(not_modified == 200u);
  const auto after = c->on_thread([this] { return c->service().store_operations(); });
  BOOST_TEST(after == before, "600 polls ran " << after - before << " store statements");
  // A report does reach the store: the counter does count.
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "heartbeat", std::nullopt, P2)).status == 200u);
  BOOST_TEST(c->on_thread([this] { return c->service().store_operations(); }) > after);
}

BOOST_AUTO_TEST_CASE(an_operator_read_shows_nothing_that_is_not_yet_durable) {
  auto o = options();
  o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  start(o);
  const auto metrics = c->on_thread([this] { return *c->service().metrics_endpoint(); });
  // Store operations queued or running, from the coordinator's metrics.
  auto backlog = [&]() -> std::uint64_t {
    const auto body = send(metrics, {verb::get, "/metrics", {}, {}}).body;
    const std::string key = "\nnixfleet_coordinator_store_backlog ";
    const auto at = body.find(key);
    return at == std::string::npos ? 0 : std::stoull(body.substr(at + key.size()));
  };
  // Waits (without sleeping: each check is a metrics request) until `n` operations are queued.
  auto queued = [&](std::uint64_t n) {
    for (int tries = 0; tries < 5000; ++tries)
      if (backlog() >= n) return true;
    return false;
  };
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "heartbeat", std::nullopt, P1)).status == 200u);
  // Another writer holds the database's write lock: the coordinator's next commit waits for it.
  sqlite3* raw = nullptr;
  BOOST_TEST_REQUIRE(sqlite3_open(db.c_str(), &raw) == SQLITE_OK);
  BOOST_TEST_REQUIRE(sqlite3_exec(raw, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto posted = std::async(std::launch::async, [&] {
    return agent(verb::post, "/api/v1/machines/web-1/reports", report_body(2, "heartbeat", std::nullopt, P2));
  });
  // The report is in memory (the commit is queued) but not on disk; a read must wait for it:
  // it queues a barrier behind the commit (a second store operation) and does not answer.
  BOOST_TEST_REQUIRE(queued(1), "the report's commit is waiting for the lock");
  auto read = std::async(std::launch::async, [&] { return as(reader, verb::get, "/api/v1/machines/web-1"); });
  BOOST_TEST_REQUIRE(queued(2), "the read did not wait behind the commit");
  BOOST_TEST((read.wait_for(0ms) == std::future_status::timeout), "the read answered while the report was not durable");
  BOOST_TEST((posted.wait_for(0ms) == std::future_status::timeout), "the report was acknowledged before it was durable");
  BOOST_TEST(sqlite3_exec(raw, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(raw);
  BOOST_TEST(posted.get().status == 200u);
  auto m = read.get();
  BOOST_TEST_REQUIRE(m.status == 200u);
  BOOST_TEST(m.json().at("current_path").as_string() == P2);
  BOOST_TEST(healthy());
}

BOOST_AUTO_TEST_CASE(metrics_are_served_on_their_own_address) {
  auto o = options();
  o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  start(o);
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "heartbeat", std::nullopt, P1)).status == 200u);
  auto ep = c->on_thread([this] { return *c->service().metrics_endpoint(); });
  auto m = send(ep, {verb::get, "/metrics", {}, {}});
  BOOST_TEST(m.status == 200u);
  BOOST_TEST(m.body.find("nixfleet_coordinator_machines{lifecycle=\"active\"} 1") != std::string::npos);
  BOOST_TEST(m.body.find("nixfleet_coordinator_reports_ingested_total 1") != std::string::npos);
  BOOST_TEST(m.body.find("route=\"/api/v1/machines/{id}/reports\",status=\"200\"") != std::string::npos);
  BOOST_TEST(m.body.find("nixfleet_coordinator_build_info") != std::string::npos);
  BOOST_TEST(m.body.find("nixfleet_coordinator_store_write_seconds_total") != std::string::npos);
  BOOST_TEST(send(ep, {verb::get, "/api/v1/machines", {}, {}}).status == 404u);
}

BOOST_AUTO_TEST_CASE(a_poll_answered_from_its_head_is_byte_for_byte_the_full_path_s_answer) {
  start();
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]}})").status == 201u);
  const std::string etag = agent(verb::get, "/api/v1/machines/web-1/desired").headers["ETag"];
  BOOST_TEST_REQUIRE(!etag.empty());
  c.reset();
  // Every kind of plain poll, pipelined on one connection; the last closes it.
  auto poll = [](const std::string& target, const std::string& fields = {}, const std::string& version = "1.1") {
    return "GET " + target + " HTTP/" + version + "\r\nHost: c\r\n" + fields + "\r\n";
  };
  const std::string desired = "/api/v1/machines/web-1/desired";
  const std::string requests =
      poll(desired) + poll(desired, "If-None-Match: " + etag + "\r\n") +
      poll(desired + "?wait=0", "If-None-Match: " + etag + "\r\nX-Nixfleet-Protocol: 1\r\n") +
      poll(desired + "?wait=30", "If-None-Match: \"stale\"\r\n") + poll("/api/v1/machines/web-2/desired") +
      poll("/api/v1/machines/web-2/desired", "If-None-Match: \"none\"\r\n") +
      poll(desired, "X-Nixfleet-Protocol: 2\r\n") + poll("/api/v1/machines/-bad/desired") +
      poll(desired, "Connection: keep-alive\r\n", "1.0") + poll(desired, "Connection: close\r\n");
  auto exchange = [&](bool quick) {
    auto o = options();
    o.quick_polls = quick;
    o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
    start(o);
    asio::io_context ctx;
    asio::ip::tcp::socket sock(ctx);
    sock.connect(c->endpoint());
    asio::write(sock, asio::buffer(requests));
    std::string answers;
    boost::system::error_code ec;
    asio::read(sock, asio::dynamic_buffer(answers), ec);  // to the close
    BOOST_TEST(ec == asio::error::eof);
    auto ep = c->on_thread([this] { return *c->service().metrics_endpoint(); });
    const auto metrics = send(ep, {verb::get, "/metrics", {}, {}}).body;
    const std::string sample = "\nnixfleet_coordinator_quick_answers_total ";
    const auto at = metrics.find(sample);
    BOOST_TEST_REQUIRE(at != std::string::npos);
    const auto quick_answers = std::stoul(metrics.substr(at + sample.size()));
    // Requests by the route's metrics, whichever path answered them.
    BOOST_TEST(metrics.find("route=\"/api/v1/machines/{id}/desired\",status=\"200\"} 4") != std::string::npos, metrics);
    c.reset();
    return std::make_pair(answers, quick_answers);
  };
  const auto [quick, answered_quick] = exchange(true);
  const auto [full, answered_full] = exchange(false);
  // All but the protocol version 2 and the bad id; none when the suite runs on several threads.
  const char* threads = std::getenv("NIXFLEET_TEST_THREADS");
  const bool one_thread = threads == nullptr || std::strtoul(threads, nullptr, 10) <= 1;
  BOOST_TEST(answered_quick == (one_thread ? 8u : 0u));
  BOOST_TEST(answered_full == 0u);
  BOOST_TEST(quick == full);
  BOOST_TEST(quick.find("HTTP/1.1 426 ") != std::string::npos);
  BOOST_TEST(quick.find("HTTP/1.1 400 ") != std::string::npos);
  BOOST_TEST(quick.find("HTTP/1.1 304 ") != std::string::npos);
  BOOST_TEST(quick.find("HTTP/1.1 204 ") != std::string::npos);
  BOOST_TEST(quick.find("HTTP/1.0 200 ") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// One kept-alive connection that writes requests and reads answers in order (pipelining allowed).
struct raw_connection {
  asio::io_context ctx;
  beast::tcp_stream s{ctx};
  beast::flat_buffer buf;

  explicit raw_connection(const asio::ip::tcp::endpoint& ep) { s.connect(ep); }
  void write(const std::string& target, std::map<std::string, std::string> headers = {}, http::verb m = verb::get,
             const std::string& body = {}) {
    http::request<http::string_body> req{m, target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (m == verb::post) {
      req.body() = body;
      req.prepare_payload();
    }
    s.expires_after(10s);
    http::write(s, req);
  }
  http::response<http::string_body> read() {
    http::response<http::string_body> res;
    s.expires_after(20s);
    http::read(s, buf, res);
    return res;
  }
};

// A rollback (a desired-state change) for web-1, which has confirmed P1 and then P2.
struct two_generations {
  coordinator_fixture& f;
  explicit two_generations(coordinator_fixture& fx) : f(fx) {
    BOOST_REQUIRE(f.as(f.deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1"})).status == 201u);
    BOOST_REQUIRE(f.as(f.deployer, verb::post, "/api/v1/releases", release_body("r2", P2, {"web-1"})).status == 201u);
    BOOST_REQUIRE(f.agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "confirmed", P1, P1)).status == 200u);
    BOOST_REQUIRE(f.agent(verb::post, "/api/v1/machines/web-1/reports", report_body(2, "confirmed", P2, P2)).status == 200u);
  }
  void roll_to(const std::string& path) {
    BOOST_REQUIRE(f.as(f.deployer, verb::post, "/api/v1/machines/web-1/rollback", R"({"store_path":")" + path + R"("})")
                      .status == 200u);
  }
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(long_polls, coordinator_fixture)

BOOST_AUTO_TEST_CASE(a_rollout_moves_on_the_report_that_completes_a_wave_and_the_moment_its_soak_ends) {
  // No periodic pass in the test's time (an hour): what moves the rollout is the confirming report
  // and the end of the soak.
  auto o = options();
  o.clock = {};
  o.reconcile_promptly = true;
  start(o);
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1", "web-2"})).status == 201u);
  auto ro = as(deployer, verb::post, "/api/v1/rollouts",
               R"({"release_id":"r1","target":{"tags":["web"]},"waves":"canary","soak_s":1})");
  BOOST_TEST_REQUIRE(ro.status == 201u);
  const auto id = std::string(ro.json().at("id").as_string());
  const auto canary = std::string(ro.json().at("waves").at(0).at("hosts").at(0).as_string());
  const auto second = canary == "web-1" ? std::string("web-2") : std::string("web-1");
  auto held = std::async(std::launch::async, [&] {
    return agent(verb::get, "/api/v1/machines/" + second + "/desired?wait=30", {}, {{"If-None-Match", "\"none\""}});
  });
  auto wave_status = [&](int wave) {
    return std::string(as(reader, verb::get, "/api/v1/rollouts/" + id).json().at("waves").at(wave).at("status").as_string());
  };

  const auto confirmed = std::chrono::steady_clock::now();
  BOOST_TEST(agent(verb::post, "/api/v1/machines/" + canary + "/reports", report_body(1, "confirmed", P1, P1)).status == 200u);
  auto soon = [&](int wave) {
    std::string st = wave_status(wave);
    for (int i = 0; i < 20 && st != "soaking"; ++i) {
      std::this_thread::sleep_for(25ms);
      st = wave_status(wave);
    }
    return st;
  };
  BOOST_TEST(soon(0) == "soaking", "the confirming report did not move the wave on");
  BOOST_TEST_REQUIRE((held.wait_for(3s) == std::future_status::ready), "the second wave was not dispatched after the soak");
  const double dispatched = seconds_since(confirmed);
  BOOST_TEST(held.get().status == 200u);
  BOOST_TEST(dispatched >= 0.95, "dispatched before the 1 s soak ended: " << dispatched);
  BOOST_TEST(dispatched < 1.6, "the soak's end waited for a periodic pass: " << dispatched);

  BOOST_TEST(agent(verb::post, "/api/v1/machines/" + second + "/reports", report_body(1, "confirmed", P1, P1)).status == 200u);
  BOOST_TEST(soon(1) == "soaking");
  std::string status;
  for (int i = 0; i < 80 && status != "completed"; ++i) {
    std::this_thread::sleep_for(25ms);
    status = std::string(as(reader, verb::get, "/api/v1/rollouts/" + id).json().at("status").as_string());
  }
  BOOST_TEST(status == "completed");
  BOOST_TEST(seconds_since(confirmed) < 3.2);
}


BOOST_AUTO_TEST_CASE(a_held_poll_is_answered_the_moment_its_desired_state_changes) {
  auto o = options();
  o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  start(o);
  two_generations g(*this);
  g.roll_to(P1);
  auto first = agent(verb::get, "/api/v1/machines/web-1/desired");
  BOOST_TEST_REQUIRE(first.status == 200u);
  BOOST_TEST(first.headers["X-Nixfleet-Long-Poll"] == "300");
  const auto etag = first.headers["ETag"];

  const auto began = std::chrono::steady_clock::now();
  auto held = std::async(std::launch::async, [&] {
    return agent(verb::get, "/api/v1/machines/web-1/desired?wait=60", {}, {{"If-None-Match", etag}});
  });
  // Held: not answered, and counted as held.
  const auto metrics = c->on_thread([this] { return *c->service().metrics_endpoint(); });
  bool seen_held = false;
  for (int i = 0; i < 100 && !seen_held; ++i) {
    seen_held = send(metrics, {verb::get, "/metrics", {}, {}}).body.find("nixfleet_coordinator_long_polls_held 1") !=
                std::string::npos;
    if (!seen_held) std::this_thread::sleep_for(20ms);
  }
  BOOST_TEST_REQUIRE(seen_held);
  BOOST_TEST((held.wait_for(300ms) == std::future_status::timeout), "the poll was answered with nothing changed");

  g.roll_to(P2);
  BOOST_TEST_REQUIRE((held.wait_for(2s) == std::future_status::ready), "the held poll was not answered on the change");
  auto answer = held.get();
  BOOST_TEST(seconds_since(began) < 10.0);
  BOOST_TEST_REQUIRE(answer.status == 200u);
  BOOST_TEST(answer.headers["ETag"] != etag);
  BOOST_TEST(protocol::parse<protocol::desired_state>(answer.body)->store_path == P2);
  BOOST_TEST(answer.headers["X-Nixfleet-Protocol"] == "1");
  auto m = send(metrics, {verb::get, "/metrics", {}, {}}).body;
  BOOST_TEST(m.find("nixfleet_coordinator_long_polls_total{outcome=\"changed\"} 1") != std::string::npos);
  BOOST_TEST(m.find("nixfleet_coordinator_long_polls_held 0") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_held_poll_expires_with_304_a_little_before_its_wait) {
  start();
  two_generations g(*this);
  g.roll_to(P1);
  const auto etag = agent(verb::get, "/api/v1/machines/web-1/desired").headers["ETag"];
  const auto began = std::chrono::steady_clock::now();
  auto r = agent(verb::get, "/api/v1/machines/web-1/desired?wait=2", {}, {{"If-None-Match", etag}});
  const double took = seconds_since(began);
  BOOST_TEST(r.status == 304u);
  BOOST_TEST(r.headers["ETag"] == etag);
  // Jittered down by at most a fifth: between 1.6 and 2 s (and a little for the round trip).
  BOOST_TEST(took >= 1.55);
  BOOST_TEST(took < 2.5);
  // A poll whose ETag is stale is answered at once, wait or not.
  auto stale = agent(verb::get, "/api/v1/machines/web-1/desired?wait=60", {}, {{"If-None-Match", "\"old\""}});
  BOOST_TEST(stale.status == 200u);
}

BOOST_AUTO_TEST_CASE(a_machine_with_nothing_assigned_is_held_until_something_is) {
  start();
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", report_body(1, "heartbeat", std::nullopt, P1)).status == 200u);
  auto none = agent(verb::get, "/api/v1/machines/web-1/desired");
  BOOST_TEST_REQUIRE(none.status == 204u);
  BOOST_TEST(none.headers["ETag"] == "\"none\"");
  BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired", {}, {{"If-None-Match", "\"none\""}}).status == 304u);
  // A machine the coordinator has never heard of is held as well (its first release wakes it).
  auto stranger = std::async(std::launch::async, [&] {
    return agent(verb::get, "/api/v1/machines/web-9/desired?wait=60", {}, {{"If-None-Match", "\"none\""}});
  });
  auto held = std::async(std::launch::async, [&] {
    return agent(verb::get, "/api/v1/machines/web-1/desired?wait=60", {}, {{"If-None-Match", "\"none\""}});
  });
  BOOST_TEST((held.wait_for(300ms) == std::future_status::timeout));
  BOOST_TEST(as(deployer, verb::post, "/api/v1/releases", release_body("r1", P1, {"web-1", "web-9"})).status == 201u);
  auto ro = as(deployer, verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]},"waves":"canary"})");
  BOOST_TEST_REQUIRE(ro.status == 201u);
  BOOST_TEST_REQUIRE((held.wait_for(2s) == std::future_status::ready));
  auto answer = held.get();
  BOOST_TEST(answer.status == 200u);
  BOOST_TEST(protocol::parse<protocol::desired_state>(answer.body)->store_path == P1);
  BOOST_TEST((stranger.wait_for(0ms) == std::future_status::timeout), "a machine outside the rollout was woken");
  c->stop();  // the held stranger is let go at once, not after its minute
  BOOST_TEST_REQUIRE((stranger.wait_for(3s) == std::future_status::ready));
}

BOOST_AUTO_TEST_CASE(a_request_pipelined_behind_a_held_poll_releases_it_and_is_answered_after) {
  start();
  two_generations g(*this);
  g.roll_to(P1);
  const auto etag = agent(verb::get, "/api/v1/machines/web-1/desired").headers["ETag"];
  raw_connection conn(c->endpoint());
  conn.write("/api/v1/machines/web-1/desired?wait=60", {{"If-None-Match", etag}});
  std::this_thread::sleep_for(200ms);  // held by now
  const auto began = std::chrono::steady_clock::now();
  conn.write("/api/v1/machines/web-1/reports", {{"Content-Type", "application/json"}}, verb::post,
             report_body(3, "heartbeat", std::nullopt, P1));
  auto poll = conn.read();
  auto report = conn.read();
  BOOST_TEST(seconds_since(began) < 2.0);
  BOOST_TEST(poll.result_int() == 304u);
  BOOST_TEST(report.result_int() == 200u);
  BOOST_TEST(report.body().find("\"acked_seq\":3") != std::string::npos);
  // The connection goes on: the next long poll on it is held again, and a change answers it.
  conn.write("/api/v1/machines/web-1/desired?wait=60", {{"If-None-Match", etag}});
  std::this_thread::sleep_for(200ms);
  g.roll_to(P2);
  auto changed = conn.read();
  BOOST_TEST(changed.result_int() == 200u);
}

BOOST_AUTO_TEST_CASE(an_agent_long_polls_over_one_connection_and_reports_on_it_meanwhile) {
  auto o = options();
  o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  start(o);
  two_generations g(*this);
  g.roll_to(P1);
  agent::agent_config cfg;
  cfg.machine_id = "web-1";
  cfg.coordinator_url = "http://127.0.0.1:" + std::to_string(c->endpoint().port());
  cfg.allow_insecure_http = true;
  cfg.request_timeout = 5s;
  // The context first: a kept-alive client's connection belongs to it and must go before it does.
  asio::io_context ctx;
  auto client = agent::io::make_http_client(cfg);
  using outcome = agent::io::poll_result::outcome;
  std::vector<std::pair<outcome, double>> polls;  // what came back, and when (s from the start)
  std::atomic<int> stage{0};
  bool acked = false;
  const auto began = std::chrono::steady_clock::now();
  asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    auto first = co_await client->get_desired("", 0);
    polls.emplace_back(first.what, seconds_since(began));
    if (first.long_poll_s != 300u) co_return;
    // Held; a report goes out on the same connection meanwhile, which lets the poll go (304).
    auto report = [&]() -> asio::awaitable<void> {
      asio::steady_timer t(co_await asio::this_coro::executor, 300ms);
      co_await t.async_wait(asio::use_awaitable);
      protocol::report r;
      r.seq = 7;
      r.at = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
      r.kind = protocol::report_kind::heartbeat;
      r.agent_version = "t";
      std::vector<protocol::report> batch{r};
      acked = (co_await client->post_reports(std::move(batch))).ok;
    };
    auto poll = [&]() -> asio::awaitable<void> {
      auto held = co_await client->get_desired(first.etag, 30);
      polls.emplace_back(held.what, seconds_since(began));
    };
    using namespace asio::experimental::awaitable_operators;
    co_await (report() && poll());
    // Held again; this time the desired state changes.
    stage = 1;
    auto changed = co_await client->get_desired(first.etag, 30);
    polls.emplace_back(changed.what, seconds_since(began));
  }, asio::detached);
  std::thread t([&] { ctx.run(); });
  for (int i = 0; i < 500 && stage == 0; ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(300ms);
  const double changed_at = seconds_since(began);
  g.roll_to(P2);
  t.join();
  BOOST_TEST_REQUIRE(polls.size() == 3u);
  BOOST_TEST((polls[0].first == outcome::desired));
  BOOST_TEST((polls[1].first == outcome::not_modified), "released by the report behind it");
  BOOST_TEST(polls[1].second < 2.0);
  BOOST_TEST(acked);
  BOOST_TEST((polls[2].first == outcome::desired));
  BOOST_TEST(polls[2].second - changed_at < 1.0, "the change reached the held poll within a second");
  auto ep = c->on_thread([this] { return *c->service().metrics_endpoint(); });
  auto m = send(ep, {verb::get, "/metrics", {}, {}}).body;
  // The fixture's own requests each took a connection; the agent's four exchanges took one.
  const std::string accepted_metric = "\nnixfleet_coordinator_connections_accepted_total ";
  const auto accepted = m.find(accepted_metric);
  BOOST_TEST_REQUIRE(accepted != std::string::npos);
  BOOST_TEST(m.find("nixfleet_coordinator_long_polls_total{outcome=\"released\"} 1") != std::string::npos);
  BOOST_TEST(m.find("nixfleet_coordinator_long_polls_total{outcome=\"changed\"} 1") != std::string::npos);
  const int fixture_requests = 4 /* two_generations */ + 2 /* roll_to */;
  BOOST_TEST(std::stoi(m.substr(accepted + accepted_metric.size())) == fixture_requests + 1);
}

BOOST_AUTO_TEST_CASE(wait_is_checked_and_capped_and_zero_turns_long_polls_off) {
  auto o = options();
  o.long_poll_max = 1s;
  start(o);
  two_generations g(*this);
  g.roll_to(P1);
  const auto etag = agent(verb::get, "/api/v1/machines/web-1/desired").headers["ETag"];
  BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired?wait=soon").status == 400u);
  BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired?wait=3601").status == 400u);
  BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired?wait=-1").status == 400u);
  const auto began = std::chrono::steady_clock::now();
  auto capped = agent(verb::get, "/api/v1/machines/web-1/desired?wait=3600", {}, {{"If-None-Match", etag}});
  BOOST_TEST(capped.status == 304u);
  BOOST_TEST(seconds_since(began) < 1.5);
  BOOST_TEST(capped.headers["X-Nixfleet-Long-Poll"] == "1");
  c.reset();

  auto off = options();
  off.long_poll_max = 0s;
  start(off);
  const auto at = std::chrono::steady_clock::now();
  auto r = agent(verb::get, "/api/v1/machines/web-1/desired?wait=60", {}, {{"If-None-Match", etag}});
  BOOST_TEST(r.status == 304u);
  BOOST_TEST(seconds_since(at) < 0.5);
  BOOST_TEST(r.headers.count("X-Nixfleet-Long-Poll") == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
