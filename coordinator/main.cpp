// nixfleet-coordinator: command-line parsing and one call per subcommand.
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/coordinator/io/service.hpp"
#include "nixfleet/coordinator/io/storage.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <CLI/CLI.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>
#include <iostream>

namespace {

namespace cio = nixfleet::coordinator::io;
constexpr int exit_usage = 64;
constexpr int exit_config = 78;

// "127.0.0.1:8443", "[::1]:8443" or ":8443" (every address).
std::optional<boost::asio::ip::tcp::endpoint> parse_endpoint(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535) return std::nullopt;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "::";
  boost::system::error_code bad;
  auto addr = boost::asio::ip::make_address(host, bad);
  if (bad) return std::nullopt;
  return boost::asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(port));
}

std::optional<nixfleet::protocol::role> parse_role(const std::string& s) {
  using nixfleet::protocol::role;
  for (auto r : {role::readonly, role::deploy, role::admin})
    if (nixfleet::protocol::to_string(r) == s) return r;
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nixfleet-coordinator — desired state, reports, releases, waved rollouts and the audit log"};
  app.set_version_flag("--version", std::string(nixfleet::version()));
  app.require_subcommand(1);

  struct {
    std::string db = "/var/lib/nixfleet/coordinator.db";
    std::string listen = "[::]:8443";
    std::optional<std::string> tls_cert, tls_key, client_ca, metrics_listen;
    bool require_client_cert = false, insecure_http = false;
    unsigned retention_days = 7;
    unsigned poll_hint = 5;
    double idle_timeout = 30, request_timeout = 10;
    std::size_t max_connections = 20000;
    std::string log_level = "info";
  } serve_opts;
  auto* serve = app.add_subcommand("serve", "Serve the API (HTTPS; plain HTTP only with --insecure-http)");
  serve->add_option("--db", serve_opts.db, "SQLite database (created when missing)")->capture_default_str();
  serve->add_option("--listen", serve_opts.listen, "API address, HOST:PORT")->capture_default_str();
  serve->add_option("--tls-cert", serve_opts.tls_cert, "server certificate chain (PEM)");
  serve->add_option("--tls-key", serve_opts.tls_key, "server private key (PEM)");
  serve->add_option("--client-ca", serve_opts.client_ca,
                    "CA whose client certificates identify agents (CN = machine id)");
  serve->add_flag("--require-client-cert", serve_opts.require_client_cert,
                  "refuse the TLS handshake of clients without a certificate (operators too)");
  serve->add_flag("--insecure-http", serve_opts.insecure_http,
                  "serve plain HTTP: keys travel in clear and agent routes are open (tests and demos only)");
  serve->add_option("--metrics-listen", serve_opts.metrics_listen, "Prometheus /metrics address, e.g. 127.0.0.1:9464");
  serve->add_option("--report-retention-days", serve_opts.retention_days, "keep agent reports this long")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3650u));
  serve->add_option("--poll-hint", serve_opts.poll_hint, "poll interval (s) suggested to hosts in an active rollout")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3600u));
  serve->add_option("--idle-timeout", serve_opts.idle_timeout, "seconds a connection may wait between requests")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  serve->add_option("--request-timeout", serve_opts.request_timeout, "seconds to receive one whole request")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 600.0));
  serve->add_option("--max-connections", serve_opts.max_connections, "open connections at most")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000}));
  serve->add_option("--log-level", serve_opts.log_level, "trace, debug, info, warn, error")->capture_default_str();

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
  auto* audit = app.add_subcommand("audit", "Inspect the audit log on the coordinator host");
  audit->require_subcommand(1);
  auto* audit_verify = audit->add_subcommand("verify", "Check the hash chain (exit 0 intact, 1 broken)");
  audit_verify->add_option("--db", verify_db, "SQLite database")->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serve) {
    nixfleet::log::init({nixfleet::log::parse_level(serve_opts.log_level, nixfleet::log::level::info)});
    cio::service_options o;
    o.db_path = serve_opts.db;
    auto ep = parse_endpoint(serve_opts.listen);
    if (!ep) {
      std::cerr << "nixfleet-coordinator: --listen: expected HOST:PORT, got " << serve_opts.listen << "\n";
      return exit_usage;
    }
    o.api.listen = *ep;
    if (serve_opts.metrics_listen) {
      auto m = parse_endpoint(*serve_opts.metrics_listen);
      if (!m) {
        std::cerr << "nixfleet-coordinator: --metrics-listen: expected HOST:PORT\n";
        return exit_usage;
      }
      o.metrics_listen = *m;
    }
    if (serve_opts.tls_cert.has_value() != serve_opts.tls_key.has_value()) {
      std::cerr << "nixfleet-coordinator: --tls-cert and --tls-key go together\n";
      return exit_config;
    }
    if (serve_opts.tls_cert && serve_opts.insecure_http) {
      std::cerr << "nixfleet-coordinator: --insecure-http and --tls-cert exclude each other\n";
      return exit_config;
    }
    if (!serve_opts.tls_cert && !serve_opts.insecure_http) {
      std::cerr << "nixfleet-coordinator: give --tls-cert and --tls-key, or --insecure-http to serve plain HTTP\n";
      return exit_config;
    }
    if ((serve_opts.client_ca || serve_opts.require_client_cert) && !serve_opts.tls_cert) {
      std::cerr << "nixfleet-coordinator: --client-ca and --require-client-cert need TLS\n";
      return exit_config;
    }
    if (serve_opts.require_client_cert && !serve_opts.client_ca) {
      std::cerr << "nixfleet-coordinator: --require-client-cert needs --client-ca\n";
      return exit_config;
    }
    if (serve_opts.tls_cert)
      o.api.tls = cio::tls_options{*serve_opts.tls_cert, *serve_opts.tls_key, serve_opts.client_ca,
                                   serve_opts.require_client_cert};
    o.insecure_http = serve_opts.insecure_http;
    o.report_retention = std::chrono::hours(24 * serve_opts.retention_days);
    o.poll_hint_s = serve_opts.poll_hint;
    o.api.idle_timeout = std::chrono::milliseconds(static_cast<long>(serve_opts.idle_timeout * 1000));
    o.api.request_timeout = std::chrono::milliseconds(static_cast<long>(serve_opts.request_timeout * 1000));
    o.api.max_connections = serve_opts.max_connections;
    return cio::run_serve(std::move(o));
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

  if (*audit_verify) {
    try {
      auto store = cio::open_sqlite(verify_db);
      auto v = store->verify_audit();
      if (v.ok) {
        std::cout << "audit log intact: " << v.rows << " rows\n";
        return 0;
      }
      std::cout << "audit log broken at row " << *v.bad_seq << ": " << v.reason << "\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "nixfleet-coordinator: " << e.what() << "\n";
      return 1;
    }
  }
  return 0;
}
