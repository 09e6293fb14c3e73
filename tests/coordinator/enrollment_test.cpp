// The fleet CA end to end over real TLS: one-time tokens, enrollment, renewal, revocation and the
// CRL, with the agent's own identity keeper on the other side.
#include "test_client.hpp"

#include "../common/run_sync.hpp"
#include "nixfleet/agent/io/coordinator_client.hpp"
#include "nixfleet/agent/io/identity.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/pki.hpp"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <boost/json/serialize.hpp>

#include <fstream>
#include <set>
#include <sstream>

using namespace nixfleet;
using namespace nixfleet::test;
namespace fs = std::filesystem;
using http::verb;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// The base64 lines of the first PEM block in `pem` (what would show if the key leaked anywhere).
std::vector<std::string> pem_lines(const std::string& pem) {
  std::vector<std::string> out;
  std::istringstream in(pem);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("-----END")) break;
    if (!line.starts_with("-----")) out.push_back(line);
  }
  return out;
}

struct enrollment_fixture {
  fs::path dir = temp_dir("enroll");
  std::string db = (dir / "db.sqlite").string();
  std::string admin = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
  std::string deployer = coordinator::io::create_key(db, "ci", protocol::role::deploy, "test");
  std::string reader = coordinator::io::create_key(db, "viewer", protocol::role::readonly, "test");
  std::shared_ptr<std::atomic<std::int64_t>> now_ms = std::make_shared<std::atomic<std::int64_t>>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  std::optional<running_coordinator> c;
  std::ostringstream logs;

  enrollment_fixture() {
    log::init({.min_level = log::level::debug, .style = log::format::plain, .stream = &logs});
    const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    pki::init_authority((dir / "ca").string(), pki::key_type::p256, "test fleet CA", false, std::chrono::days(30), now);
    auto ca = pki::authority::load(path("ca/ca.crt"), path("ca/ca.key"));
    const auto key = pki::generate_key(pki::key_type::p256);
    spit(dir / "server.key", key);
    spit(dir / "server.crt", ca.issue_server(key, {"127.0.0.1"}, pki::random_serial(), now - std::chrono::minutes(1),
                                            now + std::chrono::days(1)));
  }
  ~enrollment_fixture() {
    c.reset();
    log::init({});
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  std::string path(const std::string& f) const { return (dir / f).string(); }

  void start(std::chrono::seconds lifetime = std::chrono::days(30)) {
    coordinator::io::service_options o;
    o.db_path = db;
    o.api.tls = coordinator::io::tls_options{path("server.crt"), path("server.key"), path("ca/ca.crt"), false};
    o.ca = std::make_shared<const pki::authority>(pki::authority::load(path("ca/ca.crt"), path("ca/ca.key")));
    o.certificate_lifetime = lifetime;
    o.reconcile_interval = std::chrono::hours(1);
    o.reconcile_promptly = false;
    o.clock = [t = now_ms] { return protocol::timestamp(std::chrono::milliseconds(t->load())); };
    c.emplace(std::move(o));
  }
  void advance(std::chrono::seconds d) { *now_ms += std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

  client_tls as(const std::optional<std::string>& identity = std::nullopt) const {
    client_tls t{path("ca/ca.crt"), std::nullopt, std::nullopt};
    if (identity) t.cert_file = t.key_file = *identity;
    return t;
  }
  reply call(verb m, const std::string& target, const std::string& body, const std::optional<std::string>& key,
             const std::optional<std::string>& identity = std::nullopt) {
    std::map<std::string, std::string> h;
    if (key) h["Authorization"] = "Bearer " + *key;
    return send(c->endpoint(), {m, target, body, h}, as(identity));
  }

  std::string token(const std::string& id, unsigned ttl = 3600, const std::string& key_text = "") {
    auto r = call(verb::post, "/api/v1/machines/" + id + "/enroll-token",
                  R"({"tags":["web"],"ttl_s":)" + std::to_string(ttl) + "}", key_text.empty() ? deployer : key_text);
    BOOST_REQUIRE_MESSAGE(r.status == 201u, r.body);
    return std::string(r.json().at("token").as_string());
  }

  static std::string enroll_body(const std::string& id, const std::string& tok, const std::string& csr) {
    return boost::json::serialize(boost::json::object{{"machine_id", id}, {"token", tok}, {"csr", csr}});
  }

  // Enrolls `id` with `tok` over a fresh key: the identity file (key, certificate, chain) and the answer.
  std::pair<std::string, reply> enroll(const std::string& id, const std::string& tok) {
    const auto key = pki::generate_key(pki::key_type::p256);
    auto r = call(verb::post, "/api/v1/enroll", enroll_body(id, tok, pki::make_csr(key, id)), std::nullopt);
    if (r.status != 201u) return {"", r};
    const auto file = path(id + "-" + std::string(r.json().at("serial").as_string()) + ".pem");
    spit(file, key + std::string(r.json().at("certificate").as_string()));
    return {file, r};
  }

  unsigned poll_status(const std::string& id, const std::string& identity) {
    return call(verb::get, "/api/v1/machines/" + id + "/desired", "", std::nullopt, identity).status;
  }

  agent::agent_config agent_for(const std::string& id, const std::string& tok) {
    agent::agent_config a;
    a.machine_id = id;
    a.coordinator_url = "https://127.0.0.1:" + std::to_string(c->endpoint().port());
    a.tls.ca_file = path("ca/ca.crt");
    a.state_dir = path("state-" + id);
    fs::create_directories(a.state_dir);
    a.enroll_token_file = path("token-" + id);
    spit(*a.enroll_token_file, tok + "\n");
    a.request_timeout = std::chrono::seconds(5);
    return a;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(coordinator_enrollment, enrollment_fixture)

BOOST_AUTO_TEST_CASE(a_token_enrolls_its_machine_once) {
  start();
  BOOST_TEST(call(verb::post, "/api/v1/machines/web-1/enroll-token", "{}", reader).status == 403u);
  const auto tok = token("web-1");
  BOOST_TEST(tok.starts_with("nfe_"));
  const auto key = pki::generate_key(pki::key_type::p256);

  // Another machine's id with this token; a garbage token; a request naming someone else.
  auto wrong_machine = call(verb::post, "/api/v1/enroll", enroll_body("web-2", tok, pki::make_csr(key, "web-2")), std::nullopt);
  BOOST_TEST(wrong_machine.status == 403u);
  BOOST_TEST(wrong_machine.json().at("error").as_string() == "invalid_token");
  BOOST_TEST(call(verb::post, "/api/v1/enroll", enroll_body("web-1", "nfe_" + std::string(64, 'a'), pki::make_csr(key, "web-1")),
                  std::nullopt).status == 403u);
  auto other_cn = call(verb::post, "/api/v1/enroll", enroll_body("web-1", tok, pki::make_csr(key, "web-2")), std::nullopt);
  BOOST_TEST(other_cn.status == 400u);
  BOOST_TEST(other_cn.json().at("error").as_string() == "invalid_csr");
  BOOST_TEST(std::string(other_cn.json().at("message").as_string()).find("web-2") != std::string::npos);
  BOOST_TEST(call(verb::post, "/api/v1/enroll", enroll_body("web-1", tok, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"),
                  std::nullopt).status == 400u);

  // None of that spent the token: the real request gets a certificate for web-1, and it polls.
  const auto body = enroll_body("web-1", tok, pki::make_csr(key, "web-1"));
  auto ok = call(verb::post, "/api/v1/enroll", body, std::nullopt);
  BOOST_REQUIRE_MESSAGE(ok.status == 201u, ok.body);
  auto info = pki::read_certificate(std::string(ok.json().at("certificate").as_string()));
  BOOST_REQUIRE(info);
  BOOST_TEST(info->subject_cn == "web-1");
  BOOST_TEST(info->uris == std::vector<std::string>{"nixfleet://machine/web-1"});
  BOOST_TEST(info->serial == std::string(ok.json().at("serial").as_string()));
  BOOST_TEST((info->not_after - info->not_before > std::chrono::days(29)));
  spit(dir / "web-1.pem", key + std::string(ok.json().at("certificate").as_string()));
  BOOST_TEST(poll_status("web-1", path("web-1.pem")) == 204u);

  // The same request again (captured and replayed) finds the token spent.
  auto replay = call(verb::post, "/api/v1/enroll", body, std::nullopt);
  BOOST_TEST(replay.status == 403u);
  BOOST_TEST(replay.json().at("error").as_string() == "invalid_token");

  // The machine exists with the token's tags and its certificate's end; both steps are audited.
  auto m = call(verb::get, "/api/v1/machines/web-1", "", reader).json();
  BOOST_TEST(m.at("tags").as_array().size() == 1u);
  BOOST_TEST(m.as_object().contains("certificate_expires_at"));
  auto audit = call(verb::get, "/api/v1/audit?target=web-1", "", reader).body;
  BOOST_TEST(audit.find("machine.enroll_token_created") != std::string::npos);
  BOOST_TEST(audit.find("machine.enrolled") != std::string::npos);

  // Past its end by the coordinator's clock it is refused on the request too, not only at a full
  // handshake (a resumed session would skip that check).
  advance(std::chrono::days(31));
  auto late = call(verb::get, "/api/v1/machines/web-1/desired", "", std::nullopt, path("web-1.pem"));
  BOOST_TEST(late.status == 403u);
  BOOST_TEST(late.json().at("error").as_string() == "certificate_expired");
}

BOOST_AUTO_TEST_CASE(an_expired_token_is_refused) {
  start();
  const auto tok = token("web-1", 60);
  advance(std::chrono::seconds(61));
  auto [file, r] = enroll("web-1", tok);
  BOOST_TEST(r.status == 403u);
  BOOST_TEST(r.json().at("error").as_string() == "invalid_token");
  BOOST_TEST(call(verb::post, "/api/v1/machines/web-1/enroll-token", R"({"ttl_s":10})", deployer).status == 400u);
}

BOOST_AUTO_TEST_CASE(a_revoked_machine_is_refused_on_its_next_request_and_listed_in_the_crl) {
  start();
  auto [first, r1] = enroll("web-1", token("web-1"));
  BOOST_REQUIRE_MESSAGE(!first.empty(), r1.body);
  const std::string serial1(r1.json().at("serial").as_string());
  // Renewal over the current certificate: a new serial; the old one keeps working until it ends.
  const auto key2 = pki::generate_key(pki::key_type::p256);
  auto renewed = call(verb::post, "/api/v1/machines/web-1/certificate",
                      boost::json::serialize(boost::json::object{{"csr", pki::make_csr(key2, "web-1")}}), std::nullopt, first);
  BOOST_REQUIRE_MESSAGE(renewed.status == 200u, renewed.body);
  const std::string serial2(renewed.json().at("serial").as_string());
  BOOST_TEST(serial2 != serial1);
  const auto second = path("web-1-renewed.pem");
  spit(second, key2 + std::string(renewed.json().at("certificate").as_string()));
  BOOST_TEST(poll_status("web-1", first) == 204u);
  BOOST_TEST(poll_status("web-1", second) == 204u);
  // Renewal for another machine with this certificate is refused by the agent route.
  BOOST_TEST(call(verb::post, "/api/v1/machines/web-2/certificate",
                  boost::json::serialize(boost::json::object{{"csr", pki::make_csr(key2, "web-2")}}), std::nullopt, first)
                 .status == 403u);

  BOOST_TEST(call(verb::post, "/api/v1/machines/web-1/revoke", "", deployer).status == 403u, "revoking is admin's");
  auto rev = call(verb::post, "/api/v1/machines/web-1/revoke", "", admin);
  BOOST_REQUIRE_MESSAGE(rev.status == 200u, rev.body);
  BOOST_TEST(rev.json().as_object().contains("revoked_at"));
  for (const auto& f : {first, second}) {
    auto r = call(verb::get, "/api/v1/machines/web-1/desired", "", std::nullopt, f);
    BOOST_TEST(r.status == 403u);
    BOOST_TEST(r.json().at("error").as_string() == "revoked");
    BOOST_TEST(call(verb::post, "/api/v1/machines/web-1/reports", R"({"reports":[]})", std::nullopt, f).status == 403u);
  }
  BOOST_TEST(call(verb::post, "/api/v1/machines/web-1/certificate",
                  boost::json::serialize(boost::json::object{{"csr", pki::make_csr(key2, "web-1")}}), std::nullopt, second)
                 .status == 403u);
  BOOST_TEST(call(verb::get, "/api/v1/audit?action=machine.revoked", "", reader).body.find("web-1") != std::string::npos);

  // The CRL, signed by the fleet CA, lists both serials.
  auto crl = call(verb::get, "/api/v1/ca/crl", "", std::nullopt);
  BOOST_REQUIRE_EQUAL(crl.status, 200u);
  BIO* b = BIO_new_mem_buf(crl.body.data(), static_cast<int>(crl.body.size()));
  X509_CRL* list = PEM_read_bio_X509_CRL(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  BOOST_REQUIRE(list != nullptr);
  BIO* cb = BIO_new_file(path("ca/ca.crt").c_str(), "r");
  X509* ca = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  BOOST_TEST(X509_CRL_verify(list, X509_get0_pubkey(ca)) == 1);
  std::set<std::string> listed;
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(list);
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(entries, i)), nullptr);
    char* hex = BN_bn2hex(bn);
    std::string s(hex);
    OPENSSL_free(hex);
    BN_free(bn);
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    listed.insert(s.substr(s.find_first_not_of('0')));
  }
  X509_free(ca);
  X509_CRL_free(list);
  BOOST_TEST(listed == (std::set<std::string>{serial1, serial2}));

  // Only a new token (the operator's decision) brings it back, with a new certificate.
  auto [third, r3] = enroll("web-1", token("web-1"));
  BOOST_REQUIRE_MESSAGE(!third.empty(), r3.body);
  BOOST_TEST(poll_status("web-1", third) == 204u);
  BOOST_TEST(poll_status("web-1", first) == 403u, "the revoked certificates stay revoked");
}

BOOST_AUTO_TEST_CASE(decommissioning_revokes) {
  start();
  auto [file, r] = enroll("web-1", token("web-1"));
  BOOST_REQUIRE(!file.empty());
  BOOST_TEST(call(verb::put, "/api/v1/machines/web-1", R"({"lifecycle":"decommissioned"})", admin).status == 200u);
  BOOST_TEST(poll_status("web-1", file) == 403u);
  BOOST_TEST(call(verb::post, "/api/v1/machines/web-1/enroll-token", "{}", deployer).status == 409u);
}

BOOST_AUTO_TEST_CASE(the_agent_enrolls_renews_through_an_outage_and_survives_a_failed_write) {
  start(std::chrono::seconds(90));
  auto cfg = agent_for("web-1", token("web-1"));
  agent::io::identity_keeper keeper(cfg);
  BOOST_TEST(!keeper.load());
  auto first = run_sync(keeper.enroll());
  BOOST_REQUIRE_MESSAGE(first.ok, first.error);
  const auto serial1 = keeper.current()->serial;
  BOOST_TEST((keeper.current()->not_after - keeper.current()->not_before == std::chrono::seconds(90 + 9)),
             "back-dated a tenth of a short lifetime");
  BOOST_TEST(((fs::status(keeper.file()).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write)));
  BOOST_TEST(poll_status("web-1", keeper.file()) == 204u);
  const auto identity_text = slurp(keeper.file());

  // The token is spent: a second enrollment with it is not even attempted.
  auto again = run_sync(keeper.enroll());
  BOOST_TEST(!again.ok);
  BOOST_TEST(again.refused);
  BOOST_TEST(again.error.find("spent") != std::string::npos, again.error);

  cfg.tls.cert_file = cfg.tls.key_file = keeper.file();
  // A client keeps its connection open: its exchanges run on one io_context, which outlives it.
  asio::io_context agent_ctx;
  {
    // Coordinator down: renewal fails, the identity is what it was and still loads.
    c->stop();
    auto client = agent::io::make_http_client(cfg);
    auto down = run_sync(agent_ctx, keeper.renew(*client));
    BOOST_TEST(!down.ok);
    BOOST_TEST(!down.refused);
    BOOST_TEST(slurp(keeper.file()) == identity_text);
    BOOST_TEST(keeper.load()->serial == serial1);
  }
  c.reset();
  start(std::chrono::seconds(90));
  cfg.coordinator_url = "https://127.0.0.1:" + std::to_string(c->endpoint().port());
  auto client = agent::io::make_http_client(cfg);
  BOOST_TEST(poll_status("web-1", keeper.file()) == 204u, "the old certificate works after the outage");

  // A write that cannot complete (its temporary file cannot be made): the old identity stays.
  const fs::path blocker = keeper.file() + ".tmp." + std::to_string(::getpid());
  fs::create_directory(blocker);
  auto torn = run_sync(agent_ctx, keeper.renew(*client));
  BOOST_TEST(!torn.ok);
  BOOST_TEST(torn.error.find("cannot store") != std::string::npos, torn.error);
  BOOST_TEST(slurp(keeper.file()) == identity_text);
  BOOST_TEST(keeper.load()->serial == serial1);
  BOOST_TEST(poll_status("web-1", keeper.file()) == 204u);
  fs::remove(blocker);

  auto later = run_sync(agent_ctx, keeper.renew(*client));
  BOOST_REQUIRE_MESSAGE(later.ok, later.error);
  BOOST_TEST(keeper.current()->serial != serial1);
  BOOST_TEST(keeper.load()->serial == keeper.current()->serial);
  client->reload_identity();
  BOOST_TEST(poll_status("web-1", keeper.file()) == 204u);

  // Neither key ever reached the coordinator's database or its log.
  c->stop();
  std::string stored;
  for (const auto* suffix : {"", "-wal"})
    if (fs::exists(db + suffix)) stored += slurp(db + suffix);
  const auto logged = logs.str();
  BOOST_TEST(logged.find("machine_enrolled") != std::string::npos, "the log was captured");
  BOOST_TEST(logged.find("certificate_renewed") != std::string::npos);
  for (const auto& text : {identity_text, slurp(keeper.file())})
    for (const auto& line : pem_lines(text)) {
      BOOST_TEST(stored.find(line) == std::string::npos);
      BOOST_TEST(logged.find(line) == std::string::npos);
    }
  BOOST_TEST(stored.find(serial1) != std::string::npos, "the certificates are recorded by serial");
}

// `ca init --intermediate`: the operator's root signs the request, the chain goes in ca.crt, and
// what the fleet CA then issues verifies against that root alone.
BOOST_AUTO_TEST_CASE(an_intermediate_signed_by_an_own_root_issues_certificates_that_root_verifies) {
  const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  const auto root = dir / "own-root", mid = dir / "fleet-int";
  auto files = pki::init_authority(mid.string(), pki::key_type::ed25519, "fleet intermediate", true, std::chrono::days(1), now);
  BOOST_TEST(files.cert_file.empty());
  BOOST_REQUIRE(fs::exists(files.csr_file));
  const auto sh = [](const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); };
  // The operator's own root, made as an operator would (a fleet CA root has pathlen 0: it signs leaves).
  fs::create_directories(root);
  BOOST_REQUIRE(sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
                   (root / "ca.key").string() + " -out " + (root / "ca.crt").string() + " -days 2 -subj /CN=own-root") == 0);
  BOOST_REQUIRE(sh("openssl x509 -req -in " + files.csr_file + " -CA " + (root / "ca.crt").string() + " -CAkey " +
                   (root / "ca.key").string() + " -CAcreateserial -days 2 -copy_extensions copy -out " +
                   (mid / "signed.crt").string()) == 0);
  spit(mid / "ca.crt", slurp(mid / "signed.crt") + slurp(root / "ca.crt"));
  auto ca = pki::authority::load((mid / "ca.crt").string(), files.key_file);
  const auto key = pki::generate_key(pki::key_type::p256);
  const auto cert = ca.issue_client(*pki::read_csr(pki::make_csr(key, "web-1")), "web-1", pki::random_serial(), now,
                                    now + std::chrono::hours(1));
  spit(dir / "leaf.crt", cert);
  spit(dir / "chain.crt", ca.chain_pem());
  BOOST_TEST(sh("openssl verify -CAfile " + (root / "ca.crt").string() + " -untrusted " + (dir / "chain.crt").string() +
                " " + (dir / "leaf.crt").string()) == 0);
  BOOST_TEST(sh("openssl verify -CAfile " + (dir / "chain.crt").string() + " -partial_chain " +
                (dir / "leaf.crt").string()) == 0);
  // A key that is not the CA's, or a certificate that is not a CA, is refused at load.
  BOOST_CHECK_THROW(pki::authority::load((mid / "ca.crt").string(), (root / "ca.key").string()), pki::error);
  spit(dir / "leaf.key", key);
  BOOST_CHECK_THROW(pki::authority::load((dir / "leaf.crt").string(), (dir / "leaf.key").string()), pki::error);
}

BOOST_AUTO_TEST_SUITE_END()
