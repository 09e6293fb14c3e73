// The coordinator over TLS: agents identified by client certificates (CN = machine id),
// operators by API key, and a handshake refused when a required certificate is missing or
// signed by someone else. Certificates are made with the openssl command for each run.
#include "test_client.hpp"

#include "nixfleet/agent/io/coordinator_client.hpp"

#include <boost/asio/detached.hpp>

#include <boost/test/unit_test.hpp>

#include <fstream>

using namespace nixfleet;
using namespace nixfleet::test;
namespace fs = std::filesystem;
using http::verb;

namespace {

void run(const std::string& cmd) {
  const int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  BOOST_REQUIRE_MESSAGE(rc == 0, "failed: " << cmd);
}

struct pki {
  fs::path dir = temp_dir("tls");

  pki() {
    const std::string d = dir.string();
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    run("openssl req -x509 " + ec + " -keyout " + d + "/ca.key -out " + d + "/ca.crt -days 2 -subj /CN=nixfleet-test-ca");
    run("openssl req -x509 " + ec + " -keyout " + d + "/rogue-ca.key -out " + d +
        "/rogue-ca.crt -days 2 -subj /CN=rogue-ca");
    issue("server", "127.0.0.1", "ca", "subjectAltName=IP:127.0.0.1");
    issue("web-1", "web-1", "ca", "extendedKeyUsage=clientAuth");
    issue("web-2", "web-2", "ca", "extendedKeyUsage=clientAuth");
    issue("rogue-web-1", "web-1", "rogue-ca", "extendedKeyUsage=clientAuth");
    issue("two-cns", "/CN=web-2/CN=web-1", "ca", "extendedKeyUsage=clientAuth");
    issue("uri-web-1", "/O=fleet", "ca", "extendedKeyUsage=clientAuth\nsubjectAltName=URI:nixfleet://machine/web-1");
    issue("cn-and-uri-web-1", "web-1", "ca", "extendedKeyUsage=clientAuth\nsubjectAltName=URI:nixfleet://machine/web-1");
    issue("cn-web-2-uri-web-1", "web-2", "ca", "extendedKeyUsage=clientAuth\nsubjectAltName=URI:nixfleet://machine/web-1");
    issue("bad-cn", "/CN=web 1", "ca", "extendedKeyUsage=clientAuth");
  }
  ~pki() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  void issue(const std::string& name, const std::string& cn, const std::string& ca, const std::string& ext) {
    const std::string d = dir.string();
    std::ofstream(dir / (name + ".ext")) << ext << "\n";
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + d + "/" + name +
        ".key -out " + d + "/" + name + ".csr -subj '" + (cn.starts_with("/") ? cn : "/CN=" + cn) + "'");
    run("openssl x509 -req -in " + d + "/" + name + ".csr -CA " + d + "/" + ca + ".crt -CAkey " + d + "/" + ca +
        ".key -CAcreateserial -out " + d + "/" + name + ".crt -days 2 -extfile " + d + "/" + name + ".ext");
  }

  std::string path(const std::string& f) const { return (dir / f).string(); }
  client_tls as(const std::optional<std::string>& who) const {
    client_tls t{path("ca.crt"), std::nullopt, std::nullopt};
    if (who) {
      t.cert_file = path(*who + ".crt");
      t.key_file = path(*who + ".key");
    }
    return t;
  }
};

struct tls_fixture {
  pki certs;
  fs::path dir = temp_dir("tls-db");
  std::string db = (dir / "db.sqlite").string();
  std::string admin = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
  std::optional<running_coordinator> c;

  ~tls_fixture() {
    c.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  void start(bool require_cert, std::chrono::milliseconds idle = std::chrono::seconds(30)) {
    coordinator::io::service_options o;
    o.api.idle_timeout = idle;
    o.metrics_listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
    o.db_path = db;
    o.api.tls = coordinator::io::tls_options{certs.path("server.crt"), certs.path("server.key"),
                                             certs.path("ca.crt"), require_cert};
    o.reconcile_interval = std::chrono::hours(1);
    o.reconcile_promptly = false;
    c.emplace(std::move(o));
  }

  reply get(const std::string& target, const std::optional<std::string>& who,
            std::map<std::string, std::string> headers = {}) {
    return send(c->endpoint(), {verb::get, target, {}, std::move(headers)}, certs.as(who));
  }
};

const std::string heartbeat =
    R"({"reports":[{"seq":1,"at":"2026-11-25T10:00:00Z","kind":"heartbeat","agent_version":"t","uptime_s":1}]})";

}  // namespace

BOOST_FIXTURE_TEST_SUITE(coordinator_tls, tls_fixture)

BOOST_AUTO_TEST_CASE(a_certificate_names_one_machine_or_none) {
  start(false);
  auto refused_with = [&](const std::string& who, const std::string& why) {
    auto r = get("/api/v1/machines/web-1/desired", who);
    BOOST_TEST(r.status == 403u, who);
    BOOST_TEST(r.json().at("error").as_string() == "bad_client_certificate", who);
    BOOST_TEST(std::string(r.json().at("message").as_string()).find(why) != std::string::npos, r.body);
  };
  // /CN=web-2/CN=web-1 is neither machine, whichever CN a reader would take.
  refused_with("two-cns", "has 2 CNs");
  BOOST_TEST(get("/api/v1/machines/web-2/desired", "two-cns").status == 403u);
  refused_with("cn-web-2-uri-web-1", "name different machines");
  BOOST_TEST(get("/api/v1/machines/web-2/desired", "cn-web-2-uri-web-1").status == 403u);
  refused_with("bad-cn", "not a valid machine id");
  // The nixfleet://machine/ID URI identifies a host, alone or agreeing with its CN.
  BOOST_TEST(get("/api/v1/machines/web-1/desired", "uri-web-1").status == 204u);
  BOOST_TEST(get("/api/v1/machines/web-1/desired", "cn-and-uri-web-1").status == 204u);
  BOOST_TEST(get("/api/v1/machines/web-2/desired", "uri-web-1").status == 403u);
}

BOOST_AUTO_TEST_CASE(agents_are_known_by_their_certificate_and_operators_by_key) {
  start(false);
  BOOST_TEST(get("/api/v1/machines/web-1/desired", "web-1").status == 204u);
  auto other = get("/api/v1/machines/web-2/desired", "web-1");
  BOOST_TEST(other.status == 403u, "a certificate for another machine");
  auto report_other = send(c->endpoint(), {verb::post, "/api/v1/machines/web-2/reports", heartbeat, {}}, certs.as("web-1"));
  BOOST_TEST(report_other.status == 403u);
  auto own = send(c->endpoint(), {verb::post, "/api/v1/machines/web-2/reports", heartbeat, {}}, certs.as("web-2"));
  BOOST_TEST(own.status == 200u);
  auto none = get("/api/v1/machines/web-1/desired", std::nullopt);
  BOOST_TEST(none.status == 401u, "no certificate at all");
  BOOST_TEST(none.json().at("error").as_string() == "client_certificate_required");
  // Operators need no certificate; their key is what counts.
  BOOST_TEST(get("/api/v1/machines", std::nullopt, {{"Authorization", "Bearer " + admin}}).status == 200u);
  BOOST_TEST(get("/api/v1/machines", "web-1").status == 401u, "a machine certificate is no operator key");
  // A certificate with the right name from another CA does not get through the handshake.
  auto rogue = get("/api/v1/machines/web-1/desired", "rogue-web-1");
  BOOST_TEST(rogue.status == 0u);
  BOOST_TEST(!rogue.error.empty());
  BOOST_TEST(get("/healthz", std::nullopt).status == 200u);
}

BOOST_AUTO_TEST_CASE(a_required_client_certificate_is_enforced_at_the_handshake) {
  start(true);
  auto none = get("/healthz", std::nullopt);
  BOOST_TEST(none.status == 0u, "handshake refused");
  BOOST_TEST(!none.error.empty());
  BOOST_TEST(get("/api/v1/machines/web-1/desired", "web-1").status == 204u);
  BOOST_TEST(get("/healthz", "web-2").status == 200u);
}

BOOST_AUTO_TEST_CASE(the_agent_keeps_one_connection_resumes_its_session_on_the_next_and_is_still_known) {
  start(false, std::chrono::milliseconds(400));
  agent::agent_config cfg;
  cfg.machine_id = "web-1";
  cfg.coordinator_url = "https://127.0.0.1:" + std::to_string(c->endpoint().port());
  cfg.tls = {certs.path("ca.crt"), certs.path("web-1.crt"), certs.path("web-1.key")};
  // The context first: a kept-alive client's connection belongs to it and must go before it does.
  asio::io_context ctx;
  auto client = agent::io::make_http_client(cfg);
  std::vector<agent::io::poll_result::outcome> polls;
  bool acked = false;
  asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    // Three polls on the kept connection; then it idles past the coordinator's idle timeout, and
    // the report goes on a new connection that resumes the session.
    for (int i = 0; i < 3; ++i) polls.push_back((co_await client->get_desired("")).what);
    asio::steady_timer idle(co_await asio::this_coro::executor, std::chrono::milliseconds(900));
    co_await idle.async_wait(asio::use_awaitable);
    protocol::report r;
    r.seq = 1;
    r.at = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    r.kind = protocol::report_kind::heartbeat;
    r.agent_version = "t";
    r.uptime_s = 1;
    std::vector<protocol::report> batch{r};
    acked = (co_await client->post_reports(std::move(batch))).ok;
  }, asio::detached);
  ctx.run();
  using outcome = agent::io::poll_result::outcome;
  BOOST_TEST((polls == std::vector<outcome>{outcome::nothing_assigned, outcome::nothing_assigned, outcome::nothing_assigned}));
  BOOST_TEST(acked, "a report over a resumed session is taken as web-1's");
  auto ep = c->on_thread([this] { return *c->service().metrics_endpoint(); });
  auto m = send(ep, {verb::get, "/metrics", {}, {}});
  BOOST_TEST(m.body.find("nixfleet_coordinator_tls_handshakes_total{resumed=\"false\"} 1\n") != std::string::npos, m.body);
  BOOST_TEST(m.body.find("nixfleet_coordinator_tls_handshakes_total{resumed=\"true\"} 1\n") != std::string::npos, m.body);
}

BOOST_AUTO_TEST_SUITE_END()
