// The HTTP coordinator client against a local server: desired state with ETag, 204, 304, errors,
// report batches and their acknowledgement, and a server that never answers.
#include "nixfleet/agent/io/coordinator_client.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "run_sync.hpp"
#include "../health/test_http_server.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet;
using namespace nixfleet::agent;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

const std::string desired_json =
    R"({"machine_id":"web-01","release_id":"r-1","store_path":"/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b",)"
    R"("cache_urls":["https://cache.example.org"],"activation":"switch","rollout_id":"ro-1","attempt":0,)"
    R"("entry_signature":null,"release_created_at":"2026-11-25T18:00:00.000Z","poll_hint":5})";

std::string reply(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nX-Nixfleet-Protocol: 1\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n" + extra + "\r\n" + body;
}

struct fixture {
  fixture() : server(ctx) {
    cfg.machine_id = "web-01";
    cfg.coordinator_url = "http://127.0.0.1:" + std::to_string(server.port());
    cfg.allow_insecure_http = true;
    cfg.request_timeout = 500ms;
  }
  template <class T>
  T call(asio::awaitable<T> op) {
    return test::run_sync(ctx, [&]() -> asio::awaitable<T> {
      auto r = co_await std::move(op);
      server.stop();
      co_return r;
    }());
  }
  // A 429 with `header`: the wait the client reads from it (the batch not refused).
  std::chrono::seconds over_budget(const std::string& header) {
    server.handler = [header](const std::string&) {
      return reply(429, R"({"error":"over_budget","message":"retry later"})", header);
    };
    protocol::report rep;
    rep.seq = 1;
    rep.at = protocol::parse_time("2026-11-25T18:00:00Z").value();
    rep.kind = protocol::report_kind::heartbeat;
    rep.agent_version = "0.1.0";
    auto a = call(io::make_http_client(cfg)->post_reports({rep}));
    BOOST_TEST(!a.ok);
    BOOST_TEST(!a.refused, "the batch is kept and sent again");
    BOOST_TEST(a.error.find("429") != std::string::npos, a.error);
    return a.retry_after.value_or(std::chrono::seconds(-1));
  }
  asio::io_context ctx;
  test::test_http_server server;
  agent_config cfg;
  std::vector<std::string> requests;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(coordinator_client_tests, fixture)

BOOST_AUTO_TEST_CASE(desired_state_with_etag_then_not_modified) {
  server.handler = [&](const std::string& req) {
    requests.push_back(req);
    if (req.find("If-None-Match: \"v1\"") != std::string::npos) return reply(304, "");
    return reply(200, desired_json, "ETag: \"v1\"\r\n");
  };
  auto client = io::make_http_client(cfg);
  auto r = call(client->get_desired(""));
  BOOST_TEST((r.what == io::poll_result::outcome::desired), r.error);
  BOOST_TEST(r.etag == "\"v1\"");
  BOOST_TEST(*r.desired->poll_hint == 5u);
  BOOST_TEST(requests.at(0).starts_with("GET /api/v1/machines/web-01/desired HTTP/1.1"));
  BOOST_TEST(requests.at(0).find("X-Nixfleet-Protocol: 1") != std::string::npos);

  fixture again;
  again.server.handler = server.handler;
  auto client2 = io::make_http_client(again.cfg);
  auto r2 = again.call(client2->get_desired("\"v1\""));
  BOOST_TEST((r2.what == io::poll_result::outcome::not_modified));
}

BOOST_AUTO_TEST_CASE(nothing_assigned_is_204) {
  server.handler = [](const std::string&) { return reply(204, ""); };
  auto r = call(io::make_http_client(cfg)->get_desired(""));
  BOOST_TEST((r.what == io::poll_result::outcome::nothing_assigned));
}

BOOST_AUTO_TEST_CASE(invalid_desired_state_is_a_failure_naming_the_field) {
  server.handler = [](const std::string&) {
    auto bad = desired_json;
    bad.replace(bad.find("/nix/store/1m9g"), 15, "/nix/store/../e");
    return reply(200, bad);
  };
  auto r = call(io::make_http_client(cfg)->get_desired(""));
  BOOST_TEST((r.what == io::poll_result::outcome::failed));
  BOOST_TEST(r.error.find("store_path") != std::string::npos, r.error);
}

BOOST_AUTO_TEST_CASE(error_bodies_and_version_mismatch_are_described) {
  server.handler = [](const std::string&) { return reply(403, R"({"error":"forbidden","message":"certificate CN is web-02"})"); };
  auto r = call(io::make_http_client(cfg)->get_desired(""));
  BOOST_TEST((r.what == io::poll_result::outcome::failed));
  BOOST_TEST(r.error == "coordinator answered 403: forbidden: certificate CN is web-02");

  fixture other;
  other.server.handler = [](const std::string&) { return reply(426, ""); };
  auto r2 = other.call(io::make_http_client(other.cfg)->get_desired(""));
  BOOST_TEST(r2.error.find("426") != std::string::npos, r2.error);
}

BOOST_AUTO_TEST_CASE(reports_are_posted_as_a_batch_and_acknowledged) {
  server.handler = [&](const std::string& req) {
    requests.push_back(req);
    return reply(200, R"({"acked_seq": 7})");
  };
  protocol::report rep;
  rep.seq = 7;
  rep.at = protocol::parse_time("2026-11-25T18:00:00Z").value();
  rep.kind = protocol::report_kind::heartbeat;
  rep.current_path = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";
  rep.agent_version = "0.1.0";
  auto a = call(io::make_http_client(cfg)->post_reports({rep}));
  BOOST_TEST(a.ok, a.error);
  BOOST_TEST(a.acked_seq == 7u);
  const auto& req = requests.at(0);
  BOOST_TEST(req.starts_with("POST /api/v1/machines/web-01/reports HTTP/1.1"));
  auto body = protocol::parse<protocol::report_batch>(req.substr(req.find("\r\n\r\n") + 4));
  BOOST_REQUIRE(body.has_value());
  BOOST_TEST(body->reports.at(0).seq == 7u);
}

BOOST_AUTO_TEST_CASE(an_over_budget_answer_carries_its_retry_after_and_is_not_a_refusal) {
  BOOST_TEST(over_budget("Retry-After: 42\r\n").count() == 42);
}
BOOST_AUTO_TEST_CASE(an_unreadable_retry_after_waits_a_minute) { BOOST_TEST(over_budget("Retry-After: soon\r\n").count() == 60); }
BOOST_AUTO_TEST_CASE(a_missing_retry_after_waits_a_minute) { BOOST_TEST(over_budget("").count() == 60); }
BOOST_AUTO_TEST_CASE(a_retry_after_past_an_hour_is_an_hour) {
  BOOST_TEST(over_budget("Retry-After: 99999\r\n").count() == 3600);
}

BOOST_AUTO_TEST_CASE(unanswered_request_times_out_and_refused_connection_fails) {
  // Paths under /hang are held open without an answer by the test server's default handler.
  cfg.coordinator_url += "/hang-prefix";
  server.handler = nullptr;
  auto client = io::make_http_client(cfg);
  const auto start = std::chrono::steady_clock::now();
  auto r = call(client->get_desired(""));
  BOOST_TEST((r.what == io::poll_result::outcome::failed));
  BOOST_TEST(r.error.find("no answer from 127.0.0.1:") == 0, r.error);
  BOOST_TEST(r.error.ends_with(" within 500 ms"), r.error);
  BOOST_TEST((std::chrono::steady_clock::now() - start < 2s));

  agent_config refused = cfg;
  refused.coordinator_url = "http://127.0.0.1:1";
  asio::io_context ctx2;
  auto r2 = test::run_sync(ctx2, io::make_http_client(refused)->get_desired(""));
  BOOST_TEST(r2.error.find("Connection refused") != std::string::npos, r2.error);
}

BOOST_AUTO_TEST_SUITE_END()
