// nixfleet-coordinator: command-line parsing and one call per subcommand.
#include "nixfleet/common/listen.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/pki.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/coordinator/io/service.hpp"
#include "nixfleet/coordinator/io/storage.hpp"
#include "nixfleet/protocol/time.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <CLI/CLI.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sys/stat.h>
#include <thread>
#include <tuple>
#include <variant>
#include <iostream>

namespace {

namespace cio = nixfleet::coordinator::io;
constexpr int exit_usage = 64;
constexpr int exit_config = 78;

std::optional<nixfleet::protocol::role> parse_role(const std::string& s) {
  using nixfleet::protocol::role;
  for (auto r : {role::readonly, role::deploy, role::admin})
    if (nixfleet::protocol::to_string(r) == s) return r;
  return std::nullopt;
}

struct serve_flags {
  std::string db = "/var/lib/nixfleet/coordinator.db";
  std::string listen = "[::]:8443";
  std::optional<std::string> tls_cert, tls_key, client_ca, metrics_listen;
  bool require_client_cert = false, insecure_http = false;
  unsigned retention_days = 7;
  unsigned poll_hint = 5;
  unsigned long_poll_max = 300;
  double idle_timeout = 30, request_timeout = 10;
  std::optional<std::size_t> max_connections;  // default: 20000, or what the descriptor limit allows
  std::size_t max_connections_per_ip = 1024;
  std::optional<std::string> audit_key;
  std::optional<std::string> ca_dir, ca_cert, ca_key;
  std::string certificate_lifetime = "30d";
  std::optional<std::string> ui_listen, ui_tls_cert, ui_tls_key;
  std::string ui_session_ttl = "8h", ui_session_idle = "1h";
  double checkpoint_interval = 300;
  std::uint64_t report_budget = 1200, report_budget_mb = 8, report_retention_mb = 1024;
  std::string log_level = "info";
  std::string threads = "1";
};

void add_serve_flags(CLI::App* sub, serve_flags& f) {
  sub->add_option("--db", f.db, "SQLite database (created when missing)")->capture_default_str();
  sub->add_option("--listen", f.listen, "API address, HOST:PORT")->capture_default_str();
  sub->add_option("--tls-cert", f.tls_cert, "server certificate chain (PEM)");
  sub->add_option("--tls-key", f.tls_key, "server private key (PEM)");
  sub->add_option("--client-ca", f.client_ca, "CA whose client certificates identify agents (CN = machine id)");
  sub->add_flag("--require-client-cert", f.require_client_cert,
                "refuse the TLS handshake of clients without a certificate (operators too)");
  sub->add_flag("--insecure-http", f.insecure_http,
                "serve plain HTTP: keys travel in clear and agent routes are open (tests and demos only)");
  sub->add_option("--metrics-listen", f.metrics_listen, "Prometheus /metrics address, e.g. 127.0.0.1:9464");
  sub->add_option("--report-retention-days", f.retention_days, "keep agent reports this long")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3650u));
  sub->add_option("--poll-hint", f.poll_hint, "poll interval (s) suggested to hosts in an active rollout")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3600u));
  sub->add_option("--long-poll-max", f.long_poll_max,
                  "seconds a long poll is held at most until the host's desired state changes (0: no long polls)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 3600u));
  sub->add_option("--idle-timeout", f.idle_timeout, "seconds a connection may wait between requests")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  sub->add_option("--request-timeout", f.request_timeout, "seconds to receive one whole request")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  sub->add_option("--max-connections", f.max_connections,
                  "open connections at most [default 20000, or fewer when the descriptor limit is lower]")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}));
  sub->add_option("--max-connections-per-ip", f.max_connections_per_ip,
                  "open connections from one source address at most; 0: no such cap (behind a NAT or load balancer)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, std::size_t{1000000}));
  sub->add_option("--threads", f.threads,
                  "threads serving connections (TLS, parsing, writing); the fleet itself stays on one. N from 1 to "
                  "64, or auto: one per core")
      ->capture_default_str();
  sub->add_option("--audit-key", f.audit_key,
                  "ed25519 secret key (Nix format, e.g. from nix-store --generate-binary-cache-key) that signs "
                  "checkpoints of the audit chain");
  sub->add_option("--checkpoint-interval", f.checkpoint_interval, "seconds between audit checkpoints (when it moved)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  sub->add_option("--report-budget", f.report_budget, "reports one machine may send per 10 minutes (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{10'000'000}));
  sub->add_option("--report-budget-mb", f.report_budget_mb, "report bytes (MiB) one machine may send per 10 minutes (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{100'000}));
  sub->add_option("--report-retention-mb", f.report_retention_mb, "stored reports at most (MiB of bodies); the oldest go first")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10'000'000}));
  sub->add_option("--ca-dir", f.ca_dir,
                  "the fleet CA (ca.crt, ca.key from `ca init`): hosts enroll with one-time tokens and renew their "
                  "client certificates");
  sub->add_option("--ca-cert", f.ca_cert, "the fleet CA's certificate chain, instead of --ca-dir (with --ca-key)");
  sub->add_option("--ca-key", f.ca_key, "the fleet CA's private key, instead of --ca-dir (with --ca-cert)");
  sub->add_option("--certificate-lifetime", f.certificate_lifetime,
                  "how long a certificate the fleet CA issues lasts (s, m, h or d); agents renew at two thirds")
      ->capture_default_str();
  sub->add_option("--ui-listen", f.ui_listen,
                  "the web dashboard's address, HOST:PORT (its own listener; TLS as the API's unless --ui-tls-cert)");
  sub->add_option("--ui-tls-cert", f.ui_tls_cert, "the dashboard's certificate chain (PEM), e.g. one browsers trust");
  sub->add_option("--ui-tls-key", f.ui_tls_key, "the dashboard's private key (PEM)");
  sub->add_option("--ui-session-ttl", f.ui_session_ttl, "a dashboard session's life from sign-in (s, m, h or d)")
      ->capture_default_str();
  sub->add_option("--ui-session-idle", f.ui_session_idle, "a dashboard session ends after this long without a request")
      ->capture_default_str();
  sub->add_option("--log-level", f.log_level, "trace, debug, info, warn, error")->capture_default_str();
}

// A secret key file that not everyone may read (a systemd credential is its user's alone), in Nix's format.
std::variant<nixfleet::protocol::secret_key, std::string> load_secret_key(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "cannot read " + path + ": " + std::strerror(errno);
  if ((st.st_mode & S_IROTH) != 0) return path + " is readable by everyone; chmod 600 it";
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  auto key = nixfleet::protocol::parse_secret_key(text);
  if (!key) return path + " is not an ed25519 secret key in Nix's format (name:base64)";
  return std::move(*key);
}

int bad(const std::string& message, int code = exit_config) {
  std::cerr << "nixfleet-coordinator: " << message << "\n";
  return code;
}

// Checks the flags together and fills `o`; 0, or the exit code after one line on stderr.
int to_options(const serve_flags& f, cio::service_options& o) {
  o.db_path = f.db;
  auto ep = nixfleet::parse_listen(f.listen);
  if (!ep) return bad("--listen: expected HOST:PORT, got " + f.listen, exit_usage);
  o.api.listen = *ep;
  if (f.metrics_listen) {
    auto m = nixfleet::parse_listen(*f.metrics_listen);
    if (!m) return bad("--metrics-listen: expected HOST:PORT", exit_usage);
    o.metrics_listen = *m;
  }
  if (f.tls_cert.has_value() != f.tls_key.has_value()) return bad("--tls-cert and --tls-key go together");
  if (f.tls_cert && f.insecure_http) return bad("--insecure-http and --tls-cert exclude each other");
  if (!f.tls_cert && !f.insecure_http) return bad("give --tls-cert and --tls-key, or --insecure-http to serve plain HTTP");
  if ((f.client_ca || f.require_client_cert) && !f.tls_cert) return bad("--client-ca and --require-client-cert need TLS");
  if (f.require_client_cert && !f.client_ca) return bad("--require-client-cert needs --client-ca");
  if (nixfleet::log::parse_level(f.log_level, nixfleet::log::level::off) == nixfleet::log::level::off &&
      f.log_level != "off")
    return bad("--log-level: expected trace, debug, info, warn or error", exit_usage);
  if (f.tls_cert) o.api.tls = cio::tls_options{*f.tls_cert, *f.tls_key, f.client_ca, f.require_client_cert};
  o.insecure_http = f.insecure_http;
  o.report_retention = std::chrono::hours(24 * f.retention_days);
  o.poll_hint_s = f.poll_hint;
  o.long_poll_max = std::chrono::seconds(f.long_poll_max);
  o.api.idle_timeout = std::chrono::milliseconds(static_cast<long>(f.idle_timeout * 1000));
  o.api.request_timeout = std::chrono::milliseconds(static_cast<long>(f.request_timeout * 1000));
  // Every connection is a descriptor, and so are the database, its WAL, the listeners and the
  // log: the limit (raised to the hard limit first) must cover them all, or accept() fails with
  // EMFILE under load instead of the cap refusing cleanly.
  constexpr std::uint64_t reserve = 128;
  const auto limit = nixfleet::raise_open_file_limit();
  const std::uint64_t room = limit > reserve ? limit - reserve : 1;
  if (f.max_connections && *f.max_connections > room)
    return bad("--max-connections " + std::to_string(*f.max_connections) + " needs " +
                   std::to_string(*f.max_connections + reserve) + " file descriptors and the limit is " +
                   std::to_string(limit) + " (raise LimitNOFILE / ulimit -Hn, or lower --max-connections)",
               exit_usage);
  o.api.max_connections = f.max_connections.value_or(std::min<std::uint64_t>(20000, room));
  o.api.max_connections_per_address = f.max_connections_per_ip;
  if (f.threads == "auto") {
    o.threads = std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 64);
  } else {
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(f.threads.data(), f.threads.data() + f.threads.size(), n);
    if (ec != std::errc{} || end != f.threads.data() + f.threads.size() || n < 1 || n > 64)
      return bad("--threads: expected a number from 1 to 64 or auto, got " + f.threads, exit_usage);
    o.threads = n;
  }
  if (f.audit_key) {
    auto key = load_secret_key(*f.audit_key);
    if (auto* why = std::get_if<std::string>(&key)) return bad("--audit-key: " + *why);
    o.audit_key = std::get<nixfleet::protocol::secret_key>(std::move(key));
  }
  if (f.ca_dir && (f.ca_cert || f.ca_key)) return bad("--ca-dir and --ca-cert/--ca-key exclude each other");
  if (f.ca_cert.has_value() != f.ca_key.has_value()) return bad("--ca-cert and --ca-key go together");
  if (f.ca_dir || f.ca_cert) {
    const auto cert = f.ca_dir ? *f.ca_dir + "/ca.crt" : *f.ca_cert;
    const auto key = f.ca_dir ? *f.ca_dir + "/ca.key" : *f.ca_key;
    if (!f.tls_cert) return bad("the fleet CA (--ca-dir) needs TLS (--tls-cert, --tls-key)");
    if (f.require_client_cert)
      return bad("the fleet CA (--ca-dir) and --require-client-cert exclude each other: a host enrolls before it has a "
                 "certificate (agent routes require one regardless)");
    struct stat st {};
    if (::stat(key.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
      return bad("the fleet CA key " + key + " is readable by others; chmod 600 it");
    try {
      o.ca = std::make_shared<const nixfleet::pki::authority>(nixfleet::pki::authority::load(cert, key));
    } catch (const std::exception& e) {
      return bad(std::string("the fleet CA: ") + e.what());
    }
    auto life = nixfleet::protocol::parse_duration(f.certificate_lifetime);
    if (!life || *life < std::chrono::seconds(30) || *life > std::chrono::days(397))
      return bad("--certificate-lifetime: a duration from 30s to 397d, e.g. 30d");
    o.certificate_lifetime = *life;
    // The fleet CA verifies the certificates it issues, beside an operator's own CA if given.
    if (o.api.tls) {
      if (o.api.tls->client_ca_file) o.api.tls->extra_client_ca_file = cert;
      else o.api.tls->client_ca_file = cert;
    }
  }
  if (f.ui_tls_cert.has_value() != f.ui_tls_key.has_value()) return bad("--ui-tls-cert and --ui-tls-key go together");
  if (f.ui_tls_cert && !f.ui_listen) return bad("--ui-tls-cert needs --ui-listen");
  if (f.ui_listen) {
    auto u = nixfleet::parse_listen(*f.ui_listen);
    if (!u) return bad("--ui-listen: expected HOST:PORT", exit_usage);
    if (*u == o.api.listen) return bad("--ui-listen must differ from --listen: the dashboard has a listener of its own");
    cio::server_options ui;
    ui.listen = *u;
    ui.body_limit = 64 * 1024;
    ui.max_connections = 1024;
    ui.max_connections_per_address = 64;
    ui.idle_timeout = std::chrono::seconds(60);
    // Browsers' connections carry no client certificate: the dashboard's TLS asks for none.
    if (f.ui_tls_cert) ui.tls = cio::tls_options{*f.ui_tls_cert, *f.ui_tls_key, std::nullopt, false};
    else if (f.tls_cert) ui.tls = cio::tls_options{*f.tls_cert, *f.tls_key, std::nullopt, false};
    auto ttl = nixfleet::protocol::parse_duration(f.ui_session_ttl);
    auto idle = nixfleet::protocol::parse_duration(f.ui_session_idle);
    if (!ttl || *ttl < std::chrono::minutes(1) || *ttl > std::chrono::days(30))
      return bad("--ui-session-ttl: a duration from 1m to 30d, e.g. 8h");
    if (!idle || *idle < std::chrono::minutes(1) || *idle > *ttl)
      return bad("--ui-session-idle: a duration from 1m to the session's ttl, e.g. 1h");
    o.ui = ui;
    o.ui_session_ttl = *ttl;
    o.ui_session_idle = *idle;
  }
  o.checkpoint_interval = std::chrono::milliseconds(static_cast<long>(f.checkpoint_interval * 1000));
  o.report_budget_count = f.report_budget;
  o.report_budget_bytes = f.report_budget_mb << 20;
  o.report_retention_bytes = f.report_retention_mb << 20;
  return 0;
}

// check-config: the TLS files must load; prints the effective configuration.
int check_config(const serve_flags& f, const cio::service_options& o) {
  if (o.api.tls) {
    boost::asio::ssl::context ctx(boost::asio::ssl::context::tls_server);
    boost::system::error_code ec;
    ctx.use_certificate_chain_file(o.api.tls->cert_file, ec);
    if (ec) return bad("--tls-cert: cannot load " + o.api.tls->cert_file + ": " + ec.message());
    ctx.use_private_key_file(o.api.tls->key_file, boost::asio::ssl::context::pem, ec);
    if (ec) return bad("--tls-key: cannot load " + o.api.tls->key_file + ": " + ec.message());
    if (o.api.tls->client_ca_file) {
      ctx.load_verify_file(*o.api.tls->client_ca_file, ec);
      if (ec) return bad("--client-ca: cannot load " + *o.api.tls->client_ca_file + ": " + ec.message());
    }
  }
  if (o.ui && o.ui->tls) {
    boost::asio::ssl::context ctx(boost::asio::ssl::context::tls_server);
    boost::system::error_code ec;
    ctx.use_certificate_chain_file(o.ui->tls->cert_file, ec);
    if (ec) return bad("the dashboard's certificate: cannot load " + o.ui->tls->cert_file + ": " + ec.message());
    ctx.use_private_key_file(o.ui->tls->key_file, boost::asio::ssl::context::pem, ec);
    if (ec) return bad("the dashboard's key: cannot load " + o.ui->tls->key_file + ": " + ec.message());
  }
  auto opt = [](const std::optional<std::string>& v) { return v ? boost::json::value(*v) : boost::json::value(nullptr); };
  boost::json::object out{{"db", f.db},
                          {"listen", f.listen},
                          {"tls_cert", opt(f.tls_cert)},
                          {"tls_key", opt(f.tls_key)},
                          {"client_ca", opt(f.client_ca)},
                          {"require_client_cert", f.require_client_cert},
                          {"insecure_http", f.insecure_http},
                          {"metrics_listen", opt(f.metrics_listen)},
                          {"report_retention_days", f.retention_days},
                          {"poll_hint", f.poll_hint},
                          {"idle_timeout", f.idle_timeout},
                          {"request_timeout", f.request_timeout},
                          {"max_connections", o.api.max_connections},
                          {"max_connections_per_ip", f.max_connections_per_ip},
                          {"audit_key", opt(f.audit_key)},
                          {"audit_public_key", o.audit_key ? boost::json::value(nixfleet::protocol::to_public_key(*o.audit_key).to_string())
                                                           : boost::json::value(nullptr)},
                          {"checkpoint_interval", f.checkpoint_interval},
                          {"report_budget", f.report_budget},
                          {"report_budget_mb", f.report_budget_mb},
                          {"report_retention_mb", f.report_retention_mb},
                          {"ca_dir", opt(f.ca_dir)},
                          {"ca_cert", opt(f.ca_cert)},
                          {"ca_key", opt(f.ca_key)},
                          {"certificate_lifetime_s", o.certificate_lifetime.count()},
                          {"ui_listen", opt(f.ui_listen)},
                          {"ui_tls", o.ui && o.ui->tls.has_value()},
                          {"ui_session_ttl_s", o.ui_session_ttl.count()},
                          {"ui_session_idle_s", std::chrono::duration_cast<std::chrono::seconds>(o.ui_session_idle).count()},
                          {"log_level", f.log_level}};
  std::cout << boost::json::serialize(out) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nixfleet-coordinator — desired state, reports, releases, waved rollouts and the audit log"};
  app.set_version_flag("--version", std::string(nixfleet::version()));
  app.require_subcommand(1);

  serve_flags serve_opts;
  auto* serve = app.add_subcommand("serve", "Serve the API (HTTPS; plain HTTP only with --insecure-http)");
  add_serve_flags(serve, serve_opts);
  auto* check = app.add_subcommand("check-config",
                                   "Validate serve's flags (and that the TLS files load) and print the effective "
                                   "configuration as JSON; exit 0, or 78 naming the flag");
  add_serve_flags(check, serve_opts);

  struct {
    std::string db = "/var/lib/nixfleet/coordinator.db";
    std::string name, role;
  } key_opts;
  auto* keys = app.add_subcommand("keys", "Manage operator API keys on the coordinator host");
  keys->require_subcommand(1);
  auto* keys_create = keys->add_subcommand("create", "Create an API key and print it (the only time it is shown)");
  keys_create->add_option("--db", key_opts.db, "SQLite database")->capture_default_str();
  keys_create->add_option("--name", key_opts.name, "who or what the key is for")->required();
  keys_create->add_option("--role", key_opts.role, "readonly, deploy or admin")->required();

  std::string verify_db = "/var/lib/nixfleet/coordinator.db";
  std::optional<std::string> verify_key, key_file;
  auto* audit = app.add_subcommand("audit", "Inspect the audit log on the coordinator host");
  audit->require_subcommand(1);
  auto* audit_verify = audit->add_subcommand(
      "verify", "Check the hash chain and, with the coordinator's public key, every signed checkpoint (exit 0 intact, 1 broken)");
  audit_verify->add_option("--db", verify_db, "SQLite database")->capture_default_str();
  audit_verify->add_option("--public-key", verify_key, "the coordinator's audit public key, name:base64");
  auto* audit_public = audit->add_subcommand("public-key", "Print the public half of an --audit-key file");
  audit_public->add_option("--audit-key", key_file, "the secret key file")->required();

  struct {
    std::string dir, key_type = "p256", name = "nixfleet fleet CA", lifetime = "3650d";
    bool intermediate = false;
    std::vector<std::string> names;
    std::string cert_out, key_out;
  } ca_opts;
  auto* ca = app.add_subcommand("ca", "The fleet CA that enrolls hosts (optional: an own PKI works as well)");
  ca->require_subcommand(1);
  auto* ca_init = ca->add_subcommand(
      "init", "Make the fleet CA in DIR: ca.key (0600) and a self-signed ca.crt, or with --intermediate a ca.csr for "
              "your own CA to sign (put its answer, followed by its issuers, in DIR/ca.crt)");
  ca_init->add_option("--dir", ca_opts.dir, "where the CA lives (created 0700)")->required();
  ca_init->add_option("--key-type", ca_opts.key_type, "p256 or ed25519")->capture_default_str();
  ca_init->add_option("--name", ca_opts.name, "the CA's CN")->capture_default_str();
  ca_init->add_option("--lifetime", ca_opts.lifetime, "validity of a self-signed root")->capture_default_str();
  ca_init->add_flag("--intermediate", ca_opts.intermediate, "write a request for an intermediate instead of a root");
  auto* ca_server = ca->add_subcommand("server-cert", "Issue the coordinator's own TLS certificate from the fleet CA");
  ca_server->add_option("--dir", ca_opts.dir, "the fleet CA")->required();
  ca_server->add_option("--name", ca_opts.names, "a DNS name or IP address the coordinator answers to (repeatable)")
      ->required();
  ca_server->add_option("--cert-out", ca_opts.cert_out, "where the certificate chain goes")->required();
  ca_server->add_option("--key-out", ca_opts.key_out, "where its private key goes (0600)")->required();
  ca_server->add_option("--lifetime", ca_opts.lifetime, "validity")->default_val("397d");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ValidationError& e) {
    // A flag value out of its range is a configuration error like any other: 78, not CLI11's own
    // code, so that a supervisor (and the NixOS module's users) can tell it from a crash.
    app.exit(e);
    return exit_config;
  } catch (const CLI::ConversionError& e) {
    app.exit(e);
    return exit_config;
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serve || *check) {
    nixfleet::log::init({nixfleet::log::parse_level(serve_opts.log_level, nixfleet::log::level::info)});
    cio::service_options o;
    if (int rc = to_options(serve_opts, o); rc != 0) return rc;
    if (*check) return check_config(serve_opts, o);
    return cio::run_serve(std::move(o));
  }

  if (*ca_init) {
    if (ca_opts.key_type != "p256" && ca_opts.key_type != "ed25519") return bad("--key-type: p256 or ed25519", exit_usage);
    auto life = nixfleet::protocol::parse_duration(ca_opts.lifetime);
    if (!life || life->count() < 86400) return bad("--lifetime: a duration of at least 1d, e.g. 3650d", exit_usage);
    try {
      const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
      auto files = nixfleet::pki::init_authority(
          ca_opts.dir, ca_opts.key_type == "ed25519" ? nixfleet::pki::key_type::ed25519 : nixfleet::pki::key_type::p256,
          ca_opts.name, ca_opts.intermediate, *life, now);
      std::cout << "wrote " << files.key_file << " (0600)";
      if (!files.cert_file.empty()) std::cout << " and " << files.cert_file;
      if (!files.csr_file.empty())
        std::cout << " and " << files.csr_file << ": have your CA sign it as a CA (pathlen 0) and put the certificate, "
                  << "followed by its issuers, in " << ca_opts.dir << "/ca.crt";
      std::cout << "\n";
    } catch (const std::exception& e) {
      return bad(std::string("ca init: ") + e.what(), 1);
    }
    return 0;
  }

  if (*ca_server) {
    auto life = nixfleet::protocol::parse_duration(ca_opts.lifetime);
    if (!life || life->count() < 3600) return bad("--lifetime: a duration of at least 1h", exit_usage);
    for (const auto& n : ca_opts.names)
      if (n.empty() || n.size() > 253 || n.find_first_of(",\n\r\t /\\") != std::string::npos)
        return bad("--name: not a DNS name or IP address: " + n, exit_usage);
    try {
      auto authority = nixfleet::pki::authority::load(ca_opts.dir + "/ca.crt", ca_opts.dir + "/ca.key");
      const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
      const auto key = nixfleet::pki::generate_key(nixfleet::pki::key_type::p256);
      const auto cert = authority.issue_server(key, ca_opts.names, nixfleet::pki::random_serial(),
                                               now - std::chrono::minutes(5), now + *life);
      for (const auto& [path, text, mode] : {std::tuple{ca_opts.key_out, key, 0600}, std::tuple{ca_opts.cert_out, cert + authority.chain_pem(), 0644}}) {
        std::ofstream out;
        ::umask(077);
        out.open(path, std::ios::trunc);
        out << text;
        out.close();
        if (!out) return bad("cannot write " + path + ": " + std::strerror(errno), 1);
        ::chmod(path.c_str(), static_cast<mode_t>(mode));
      }
      std::cout << "wrote " << ca_opts.cert_out << " and " << ca_opts.key_out << "\n";
    } catch (const std::exception& e) {
      return bad(std::string("ca server-cert: ") + e.what(), 1);
    }
    return 0;
  }

  if (*keys_create) {
    auto r = parse_role(key_opts.role);
    if (!r) {
      std::cerr << "nixfleet-coordinator: --role: expected readonly, deploy or admin\n";
      return exit_usage;
    }
    if (auto ec = nixfleet::protocol::check_key_name(key_opts.name)) {
      std::cerr << "nixfleet-coordinator: --name: " << "letters, digits, '.', '_', '+' and '-', at most 128" << "\n";
      return exit_usage;
    }
    try {
      std::cout << cio::create_key(key_opts.db, key_opts.name, *r, "local:keys-create") << "\n";
    } catch (const std::exception& e) {
      std::cerr << "nixfleet-coordinator: cannot create the key: " << e.what() << "\n";
      return 1;
    }
    return 0;
  }

  if (*audit_public) {
    auto key = load_secret_key(*key_file);
    if (auto* why = std::get_if<std::string>(&key)) return bad("--audit-key: " + *why);
    std::cout << nixfleet::protocol::to_public_key(std::get<nixfleet::protocol::secret_key>(key)).to_string() << "\n";
    return 0;
  }

  if (*audit_verify) {
    std::optional<nixfleet::protocol::public_key> key;
    if (verify_key) {
      auto k = nixfleet::protocol::parse_public_key(*verify_key);
      if (!k) return bad("--public-key: expected name:base64 (an ed25519 public key in Nix's format)", exit_usage);
      key = *k;
    }
    try {
      auto store = cio::open_sqlite(verify_db);
      auto v = store->verify_audit(key);
      if (v.ok) {
        std::cout << "audit log intact: " << v.rows << " rows";
        if (key)
          std::cout << ", " << v.checkpoints << " checkpoints verified, anchored through row " << v.anchored_seq.value_or(0);
        else
          std::cout << " (checkpoints not checked: no --public-key)";
        std::cout << "\n";
        return 0;
      }
      std::cout << "audit log broken at row " << *v.bad_seq << ": " << v.reason.value_or("") << "\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "nixfleet-coordinator: " << e.what() << "\n";
      return 1;
    }
  }
  return 0;
}
