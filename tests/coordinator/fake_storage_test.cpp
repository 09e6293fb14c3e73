// The service over a fake store: what it writes for a request, that the poll path publishes only
// what is durable, and that a commit that fails is fatal — answered 503, on_fatal called once,
// nothing further accepted, the failed state never served.
#include "fake_storage.hpp"
#include "test_client.hpp"

#include "nixfleet/protocol/signing.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <thread>

using namespace nixfleet;
using namespace nixfleet::test;
namespace json = boost::json;
using http::verb;
using namespace std::chrono_literals;

namespace {

const std::string KEY = "nfk_" + std::string(64, 'b');

struct fake_fixture {
  std::shared_ptr<fake_store_state> state = std::make_shared<fake_store_state>();
  std::optional<running_coordinator> c;

  fake_fixture() {
    coordinator::io::key_record k{{"key-1", "alice", protocol::role::admin, {}, std::nullopt}, protocol::sha256_hex(KEY)};
    state->initial.keys.push_back(k);
    coordinator::io::service_options o;
    o.open_store = [s = state] { return std::make_unique<fake_storage>(s); };
    o.insecure_http = true;
    o.reconcile_interval = std::chrono::hours(1);
    o.reconcile_promptly = false;
    c.emplace(std::move(o));
  }

  reply op(verb m, const std::string& target, const std::string& body = {}) {
    return send(c->endpoint(), {m, target, body, {{"Authorization", "Bearer " + KEY}}});
  }
  reply agent(verb m, const std::string& target, const std::string& body = {}) {
    return send(c->endpoint(), {m, target, body, {}});
  }
};

std::string release_body(const std::string& id, std::uint64_t seq) {
  json::array entries{json::object{{"hostname", "web-1"}, {"store_path", P1}}};
  return json::serialize(json::object{
      {"id", id}, {"created_at", "2026-11-25T10:00:00.000Z"}, {"sequence", seq}, {"entries", entries}});
}

std::string heartbeat(std::uint64_t seq) {
  json::object r{{"seq", seq},          {"at", "2026-11-25T10:00:00.000Z"}, {"kind", "heartbeat"},
                 {"current_path", P1}, {"agent_version", "test"},          {"uptime_s", 5}};
  return json::serialize(json::object{{"reports", json::array{r}}});
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(coordinator_fake_storage, fake_fixture)

BOOST_AUTO_TEST_CASE(each_request_is_one_change_set_and_the_poll_path_reads_none) {
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", heartbeat(1)).status == 200u);
  BOOST_TEST(op(verb::put, "/api/v1/machines/web-1", R"({"tags":["web"]})").status == 200u);
  auto commits = state->commits();
  BOOST_TEST_REQUIRE(commits.size() == 2u);
  BOOST_TEST(commits[0].reports.size() == 1u);
  BOOST_TEST(commits[0].audit.at(0).action == "machine.registered");
  BOOST_TEST(commits[1].machines.at(0).tags == std::vector<std::string>{"web"});
  BOOST_TEST(commits[1].audit.at(0).actor == "alice");
  const auto before = state->operations.load();
  for (int i = 0; i < 50; ++i) BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired").status == 204u);
  BOOST_TEST(state->operations.load() == before);
}

BOOST_AUTO_TEST_CASE(a_keys_last_use_is_written_in_the_background_once_per_interval) {
  c.reset();
  coordinator::io::service_options o;
  o.open_store = [s = state] { return std::make_unique<fake_storage>(s); };
  o.insecure_http = true;
  o.reconcile_interval = std::chrono::hours(1);
  o.reconcile_promptly = false;
  o.key_sync_interval = std::chrono::milliseconds(100);
  c.emplace(std::move(o));
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) BOOST_TEST(op(verb::get, "/api/v1/releases").status == 200u);
  const auto intervals = (std::chrono::steady_clock::now() - started) / std::chrono::milliseconds(100);
  auto written = [&] {
    for (const auto& cs : state->commits())
      for (const auto& k : cs.keys)
        if (k.info.id == "key-1" && k.info.last_used_at) return true;
    return false;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!written() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  BOOST_TEST_REQUIRE(written());
  // Twenty uses, at most one write per interval that passed while they were made (+1 for the
  // interval they ended in), and none while the key is not used.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::size_t writes = 0;
  for (const auto& cs : state->commits()) writes += cs.keys.size();
  BOOST_TEST(writes >= 1u);
  BOOST_TEST(writes <= static_cast<std::size_t>(intervals) + 2, writes << " writes over " << intervals << " intervals");
}

BOOST_AUTO_TEST_CASE(a_commit_that_fails_is_fatal_and_nothing_after_it_is_accepted) {
  BOOST_TEST(op(verb::post, "/api/v1/releases", release_body("r1", 1)).status == 201u);
  state->fail_commits = true;
  auto r = op(verb::post, "/api/v1/releases", release_body("r2", 2));
  BOOST_TEST(r.status == 503u);
  BOOST_TEST(r.json().at("error").as_string() == "unavailable");
  BOOST_TEST(c->fatal_calls() == 1);
  BOOST_TEST(c->fatal().find("disk I/O error") != std::string::npos);
  // Even once the store works again the process must restart from it: it refuses every change.
  state->fail_commits = false;
  auto after = agent(verb::post, "/api/v1/machines/web-1/reports", heartbeat(1));
  BOOST_TEST(after.status == 503u);
  BOOST_TEST(after.body.find("stopping") != std::string::npos);
  BOOST_TEST(state->commits().size() == 1u);
  BOOST_TEST(c->fatal_calls() == 1);
}

BOOST_AUTO_TEST_CASE(a_failed_commit_never_publishes_the_desired_state_it_carried) {
  BOOST_TEST(op(verb::post, "/api/v1/releases", release_body("r1", 1)).status == 201u);
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", heartbeat(1)).status == 200u);
  state->fail_commits = true;
  auto r = op(verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]},"waves":["100%"]})");
  BOOST_TEST(r.status == 503u);
  BOOST_TEST(c->fatal_calls() == 1);
  // The rollout's dispatch never became durable: neither the poller nor an operator is shown it,
  // and the health check says the process is done.
  BOOST_TEST(agent(verb::get, "/api/v1/machines/web-1/desired").status == 503u);
  BOOST_TEST(op(verb::get, "/api/v1/machines/web-1").status == 503u);
  BOOST_TEST(agent(verb::get, "/healthz").status == 503u);
}

BOOST_AUTO_TEST_CASE(a_poll_while_a_change_is_being_written_is_answered_with_what_is_durable) {
  // No bodies kept: every 200 is made again from the fleet, and must be the one published.
  c.reset();
  coordinator::io::service_options o;
  o.open_store = [s = state] { return std::make_unique<fake_storage>(s); };
  o.insecure_http = true;
  o.reconcile_interval = std::chrono::hours(1);
  o.hot_bodies_max = 0;
  c.emplace(std::move(o));
  BOOST_TEST(agent(verb::post, "/api/v1/machines/web-1/reports", heartbeat(1)).status == 200u);
  BOOST_TEST(op(verb::post, "/api/v1/releases", release_body("r1", 1)).status == 201u);
  auto ro = op(verb::post, "/api/v1/rollouts", R"({"release_id":"r1","target":{"hosts":["web-1"]},"waves":["100%"]})");
  BOOST_TEST_REQUIRE(ro.status == 201u);
  const std::string id(ro.json().at("id").as_string());
  auto first = send(c->endpoint(), {verb::get, "/api/v1/machines/web-1/desired", {}, {}});
  BOOST_TEST_REQUIRE(first.status == 200u);
  BOOST_TEST(first.body.find(P1) != std::string::npos);
  const auto etag = first.headers["ETag"];
  auto again = send(c->endpoint(), {verb::get, "/api/v1/machines/web-1/desired", {}, {{"If-None-Match", "\"x\""}}});
  BOOST_TEST(again.status == 200u);
  BOOST_TEST(again.body == first.body, "made again, the body is the published one");
  BOOST_TEST(again.headers["ETag"] == etag);

  // The rollout is cancelled on a slow disk: in memory at once (its poll hint leaves the desired
  // state), durable 600 ms later.
  state->commit_delay_ms = 600;
  const auto began = std::chrono::steady_clock::now();
  auto cancelled = std::async(std::launch::async, [&] { return op(verb::post, "/api/v1/rollouts/" + id + "/cancel"); });
  std::this_thread::sleep_for(150ms);
  // Nothing published changed yet: the agent that has it is told so at once.
  auto same = send(c->endpoint(), {verb::get, "/api/v1/machines/web-1/desired", {}, {{"If-None-Match", etag}}});
  BOOST_TEST(same.status == 304u);
  BOOST_TEST((std::chrono::steady_clock::now() - began < 500ms));
  // One that needs the body waits for the store, and gets what is durable then.
  auto fresh = send(c->endpoint(), {verb::get, "/api/v1/machines/web-1/desired", {}, {{"If-None-Match", "\"x\""}}});
  BOOST_TEST((std::chrono::steady_clock::now() - began >= 550ms), "answered before the change was durable");
  BOOST_TEST_REQUIRE(fresh.status == 200u);
  BOOST_TEST(fresh.headers["ETag"] != etag);
  BOOST_TEST(first.body.find("\"poll_hint\":5") != std::string::npos);
  BOOST_TEST(fresh.body.find("\"poll_hint\":5") == std::string::npos, fresh.body);
  BOOST_TEST(cancelled.get().status == 200u);
  state->commit_delay_ms = 0;
}

BOOST_AUTO_TEST_SUITE_END()
