// Webhooks over real HTTP: a loopback receiver gets signed deliveries of the events it asked for,
// gets them again after it was down (retried from the durable queue, the same delivery id), a
// receiver that never answers holds up no one and is given up on, and only admins see hooks.
#include "test_client.hpp"

#include "nixfleet/common/http_server.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

using namespace nixfleet;
using namespace nixfleet::test;
namespace fs = std::filesystem;
namespace json = boost::json;
using http::verb;
using namespace std::chrono_literals;

namespace {

const std::string secret = "hook-secret-0123456789";

struct delivery_seen {
  std::string event, id, signature, body;
};

// A receiver on loopback answering `status` (0: it is down — connections are refused).
struct receiver {
  explicit receiver(unsigned short at = 0) {
    server_options o;
    o.listen = {asio::ip::make_address("127.0.0.1"), at};
    server.emplace(ctx, o,
                   [this](http_request& req) -> asio::awaitable<http_response> {
                     std::lock_guard lock(m);
                     delivery_seen d{std::string(req.msg["X-Nixfleet-Event"]), std::string(req.msg["X-Nixfleet-Delivery"]),
                                     std::string(req.msg["X-Nixfleet-Signature"]), req.msg.body()};
                     got.push_back(d);
                     http_response r;
                     r.status = status.load();
                     co_return r;
                   },
                   [](unsigned code, std::string, std::string text) { return http_response{code, text}; });
    server->start();
    this->port = server->local_endpoint().port();
    th = std::thread([this] { ctx.run(); });
  }
  ~receiver() {
    asio::co_spawn(ctx, server->shutdown(100ms), asio::detached);
    th.join();
  }
  std::vector<delivery_seen> seen() {
    std::lock_guard lock(m);
    return got;
  }
  asio::io_context ctx;
  std::optional<http_server> server;
  std::thread th;
  std::mutex m;
  std::vector<delivery_seen> got;
  std::atomic<unsigned> status{200};
  unsigned short port = 0;
};

// Accepts connections and never answers.
struct silent_peer {
  silent_peer() : acceptor(ctx, {asio::ip::make_address("127.0.0.1"), 0}) {
    port = acceptor.local_endpoint().port();
    th = std::thread([this] {
      for (;;) {
        boost::system::error_code ec;
        asio::ip::tcp::socket s(ctx);
        acceptor.accept(s, ec);
        if (ec) return;
        held.push_back(std::move(s));
      }
    });
  }
  ~silent_peer() {
    ::shutdown(acceptor.native_handle(), SHUT_RDWR);  // wakes the blocked accept
    th.join();
    boost::system::error_code ec;
    acceptor.close(ec);
  }
  asio::io_context ctx;
  asio::ip::tcp::acceptor acceptor;
  std::vector<asio::ip::tcp::socket> held;
  std::thread th;
  unsigned short port = 0;
};

template <class F>
bool eventually(F f, std::chrono::milliseconds within = 10s) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

struct fixture {
  fs::path dir = temp_dir("webhooks");
  std::string db = (dir / "db.sqlite").string();
  std::string admin = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
  std::string reader = coordinator::io::create_key(db, "carol", protocol::role::readonly, "test");
  std::shared_ptr<std::atomic<std::int64_t>> now_ms = std::make_shared<std::atomic<std::int64_t>>(1'790'000'000'000);
  std::optional<running_coordinator> c;

  ~fixture() {
    c.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void start() {
    coordinator::io::service_options o;
    o.db_path = db;
    o.insecure_http = true;
    o.reconcile_interval = std::chrono::hours(1);
    o.reconcile_promptly = false;
    o.webhook_timeout = 300ms;
    o.webhook_retry_min = 10s;  // on the test's clock, moved by hand
    o.webhook_give_up_after = 1h;
    auto clock = now_ms;
    o.clock = [clock] { return protocol::timestamp(std::chrono::milliseconds(clock->load())); };
    c.emplace(std::move(o));
  }
  void advance(std::chrono::milliseconds d) { *now_ms += d.count(); }
  reply as(const std::string& key, verb m, const std::string& target, const std::string& body = {}) {
    request_spec s{m, target, body, {}};
    if (!key.empty()) s.headers["Authorization"] = "Bearer " + key;
    return send(c->endpoint(), s);
  }
  std::string add_hook(unsigned short port, const std::string& events, bool signed_ = true) {
    json::object body{{"url", "http://127.0.0.1:" + std::to_string(port) + "/hook"}, {"events", json::parse(events)}};
    if (signed_) body["secret"] = secret;
    auto r = as(admin, verb::post, "/api/v1/webhooks", json::serialize(body));
    BOOST_TEST_REQUIRE(r.status == 201u, r.body);
    BOOST_TEST(r.body.find(secret) == std::string::npos);  // never shown again
    return std::string(json::parse(r.body).at("id").as_string());
  }
  void rolled_back(std::uint64_t seq) {
    json::object r{{"seq", seq}, {"at", "2026-11-25T10:00:01.000Z"}, {"kind", "rolled_back"}, {"store_path", P2},
                   {"current_path", P1}, {"message", "health gate failed"}, {"agent_version", "test"}, {"uptime_s", 5}};
    auto res = send(c->endpoint(), {verb::post, "/api/v1/machines/web-1/reports",
                                    json::serialize(json::object{{"reports", json::array{r}}}), {}});
    BOOST_TEST_REQUIRE(res.status == 200u, res.body);
  }
  json::array deliveries(const std::string& hook) {
    auto r = as(admin, verb::get, "/api/v1/webhooks/" + hook + "/deliveries");
    BOOST_TEST_REQUIRE(r.status == 200u, r.body);
    return json::parse(r.body).as_array();
  }
};

bool verifies(const delivery_seen& d) {
  // "t=<seconds>,v1=<hex>" over "<t>.<body>"
  const auto comma = d.signature.find(",v1=");
  if (!d.signature.starts_with("t=") || comma == std::string::npos) return false;
  const auto t = d.signature.substr(2, comma - 2);
  return protocol::hmac_sha256_hex(secret, t + "." + d.body) == d.signature.substr(comma + 4);
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(webhooks, fixture)

BOOST_AUTO_TEST_CASE(a_receiver_gets_signed_deliveries_of_what_it_asked_for_and_again_after_it_was_down) {
  start();
  receiver rx;
  const auto hook = add_hook(rx.port, R"(["machine.rolled_back", "rollout.*"])");
  // Only admins see or change hooks (a chat service's hook URL is a secret).
  BOOST_TEST(as(reader, verb::get, "/api/v1/webhooks").status == 403u);
  BOOST_TEST(as(reader, verb::post, "/api/v1/webhooks", R"({"url":"http://127.0.0.1:1/","events":["*"]})").status == 403u);

  rolled_back(1);
  BOOST_REQUIRE(eventually([&] { return rx.seen().size() == 1; }));
  auto first = rx.seen()[0];
  BOOST_TEST(first.event == "machine.rolled_back");
  BOOST_TEST(verifies(first), first.signature);
  auto body = json::parse(first.body).as_object();
  BOOST_TEST(body.at("event").as_string() == "machine.rolled_back");
  BOOST_TEST(body.at("target").as_string() == "web-1");
  BOOST_TEST(body.at("detail").at("report_seq").to_number<std::uint64_t>() == 1u);
  BOOST_TEST(std::to_string(body.at("delivery").to_number<std::uint64_t>()) == first.id);
  // A tampered body does not verify.
  auto forged = first;
  forged.body.replace(forged.body.find("web-1"), 5, "web-2");
  BOOST_TEST(!verifies(forged));
  BOOST_REQUIRE(eventually([&] { return deliveries(hook).at(0).at("state").as_string() == "delivered"; }));

  // Down (503): the delivery waits in the queue and is tried again once its backoff is over.
  rx.status = 503;
  rolled_back(2);  // the same outcome again: stored, not audited again, nothing sent
  rolled_back(3);
  BOOST_TEST(rx.seen().size() == 1u);
  // Another host's rollback is another event.
  json::object r{{"seq", 1}, {"at", "2026-11-25T10:00:01.000Z"}, {"kind", "rolled_back"}, {"store_path", P1},
                 {"current_path", P2}, {"agent_version", "test"}, {"uptime_s", 5}};
  BOOST_TEST(send(c->endpoint(), {verb::post, "/api/v1/machines/web-2/reports",
                                  json::serialize(json::object{{"reports", json::array{r}}}), {}})
                 .status == 200u);
  BOOST_REQUIRE(eventually([&] { return rx.seen().size() == 2; }));
  BOOST_REQUIRE(eventually([&] { return deliveries(hook).at(0).at("attempts").to_number<int>() == 1; }));
  auto pending = deliveries(hook).at(0).as_object();
  BOOST_TEST(pending.at("state").as_string() == "pending");
  BOOST_TEST(pending.at("last_status").to_number<int>() == 503);
  std::this_thread::sleep_for(1500ms);
  BOOST_TEST(rx.seen().size() == 2u, "retried before its backoff was over");
  auto listed = json::parse(as(admin, verb::get, "/api/v1/webhooks").body).as_array();
  BOOST_TEST(listed.at(0).at("pending").to_number<int>() == 1);
  BOOST_TEST(listed.at(0).at("signed").as_bool());

  rx.status = 200;
  advance(15s);  // past the first backoff (10 s ± 20 %)
  BOOST_REQUIRE(eventually([&] { return rx.seen().size() == 3; }));
  const auto seen = rx.seen();
  BOOST_TEST(seen[2].id == seen[1].id);  // the same delivery again: receivers deduplicate on it
  BOOST_TEST(verifies(seen[2]));
  BOOST_REQUIRE(eventually([&] { return deliveries(hook).at(0).at("state").as_string() == "delivered"; }));
  BOOST_TEST(deliveries(hook).at(0).at("attempts").to_number<int>() == 2);
  BOOST_TEST(deliveries(hook).size() == 2u);

  // Removed, it gets nothing more.
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/webhooks/" + hook).status == 204u);
  BOOST_TEST(as(admin, verb::get, "/api/v1/webhooks/" + hook + "/deliveries").status == 404u);
}

BOOST_AUTO_TEST_CASE(queued_deliveries_survive_a_restart) {
  start();
  std::string hook;
  unsigned short port = 0;
  {
    receiver down;
    down.status = 500;
    port = down.port;
    hook = add_hook(port, R"(["machine.*"])", false);
    rolled_back(1);
    BOOST_REQUIRE(eventually([&] { return down.seen().size() >= 3; }));  // registered, current changed, rolled back
  }
  c.reset();  // the coordinator stops with both deliveries still pending
  start();
  receiver up(port);
  advance(15s);
  BOOST_REQUIRE(eventually([&] { return up.seen().size() == 3; }));
  std::set<std::string> events;
  for (const auto& d : up.seen()) {
    events.insert(d.event);
    BOOST_TEST(d.signature.empty());  // a hook without a secret sends unsigned deliveries
  }
  BOOST_TEST((events == std::set<std::string>{"machine.registered", "machine.current_changed", "machine.rolled_back"}));
}

BOOST_AUTO_TEST_CASE(a_receiver_that_never_answers_holds_up_no_one_and_is_given_up) {
  start();
  silent_peer silent;
  receiver rx;
  const auto stuck = add_hook(silent.port, R"(["*"])");
  const auto fine = add_hook(rx.port, R"(["machine.rolled_back"])");
  const auto began = std::chrono::steady_clock::now();
  rolled_back(1);
  // The healthy hook is served at once, however long the silent one takes.
  BOOST_REQUIRE(eventually([&] { return rx.seen().size() == 1; }, 3s));
  BOOST_TEST((std::chrono::steady_clock::now() - began < 2s));
  BOOST_REQUIRE(eventually([&] {
    auto d = deliveries(stuck);
    return !d.empty() && d.at(0).at("attempts").to_number<int>() >= 1;
  }));
  auto d = deliveries(stuck).at(0).as_object();
  BOOST_TEST(d.at("state").as_string() == "pending");
  BOOST_TEST(std::string(d.at("last_error").as_string()).find("no answer") != std::string::npos, d.at("last_error"));
  // Past its give-up time it is failed, not tried for ever.
  advance(2h);
  BOOST_REQUIRE(eventually([&] {
    for (const auto& x : deliveries(stuck))
      if (x.at("state").as_string() != "failed") return false;
    return true;
  }));
  auto m = send(c->endpoint(), {verb::get, "/healthz", "", {}});
  BOOST_TEST(m.status == 200u);
  (void)fine;
}

BOOST_AUTO_TEST_CASE(bad_hooks_are_refused_naming_the_field) {
  start();
  for (const auto& [body, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"url":"ftp://x/","events":["*"]})", "url"},
           {R"({"url":"http://127.0.0.1:1/","events":[]})", "events"},
           {R"({"url":"http://127.0.0.1:1/","events":["*"],"secret":"short"})", "secret"},
           {R"({"url":"http://127.0.0.1:1/","events":["Machine.*"]})", "events[0]"}}) {
    auto r = as(admin, verb::post, "/api/v1/webhooks", body);
    BOOST_TEST(r.status == 400u, body);
    BOOST_TEST(r.body.find(field) != std::string::npos, r.body);
  }
  BOOST_TEST(as(admin, verb::delete_, "/api/v1/webhooks/wh-none").status == 404u);
}

BOOST_AUTO_TEST_SUITE_END()
