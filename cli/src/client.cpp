// Settings resolution and the blocking coordinator client of the CLI.
#include "nixfleet/cli/client.hpp"

#include "nixfleet/protocol/types.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/json/parse.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace nixfleet::cli {

namespace json = boost::json;

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

std::string config_path() {
  if (auto p = env("NIXFLEET_CONFIG")) return *p;
  if (auto x = env("XDG_CONFIG_HOME")) return *x + "/nixfleet/config.json";
  if (auto h = env("HOME")) return *h + "/.config/nixfleet/config.json";
  return {};
}

void from_file(settings& s) {
  const auto path = config_path();
  if (path.empty()) return;
  std::ifstream in(path);
  if (!in) {
    if (env("NIXFLEET_CONFIG")) throw cli_error("cannot read the config file " + path, exit_usage);
    return;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  auto v = json::parse(ss.str(), ec);
  if (ec || !v.is_object()) throw cli_error("the config file " + path + " is not a JSON object", exit_usage);
  auto take = [&](const char* key, auto& field) {
    if (const auto* x = v.as_object().if_contains(key)) {
      if (!x->is_string()) throw cli_error(path + ": " + key + " must be a string", exit_usage);
      using T = std::decay_t<decltype(field)>;
      if constexpr (std::is_same_v<T, std::string>) {
        if (field.empty()) field = std::string(x->as_string());
      } else {
        if (!field) field = std::string(x->as_string());
      }
    }
  };
  take("coordinator", s.coordinator);
  take("api_key_file", s.api_key_file);
  take("ca_file", s.ca_file);
  take("cert_file", s.cert_file);
  take("key_file", s.key_file);
}

}  // namespace

void complete_settings(settings& s) {
  if (s.coordinator.empty())
    if (auto v = env("NIXFLEET_COORDINATOR")) s.coordinator = *v;
  if (!s.api_key && !s.api_key_file) {
    if (auto v = env("NIXFLEET_API_KEY")) s.api_key = *v;
    else if (auto f = env("NIXFLEET_API_KEY_FILE")) s.api_key_file = *f;
  }
  if (!s.ca_file) s.ca_file = env("NIXFLEET_CA_FILE");
  if (!s.cert_file) s.cert_file = env("NIXFLEET_CERT_FILE");
  if (!s.key_file) s.key_file = env("NIXFLEET_KEY_FILE");
  from_file(s);
}

std::string read_secret_file(const std::string& path, const std::string& what) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw cli_error("cannot read the " + what + " " + path, exit_usage);
  if ((st.st_mode & S_IROTH) != 0)
    throw cli_error("the " + what + " " + path + " is readable by everyone; chmod 600 it", exit_usage);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw cli_error("cannot read the " + what + " " + path, exit_usage);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return text;
}

namespace {

// 127.0.0.0/8, ::1 and the name localhost (which the resolver is required to keep on loopback).
bool is_loopback(const std::string& host) {
  if (host == "localhost" || host.ends_with(".localhost")) return true;
  boost::system::error_code ec;
  const auto addr = boost::asio::ip::make_address(host, ec);
  if (ec) return false;
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, addr.to_v6()).is_loopback();
  return addr.is_loopback();
}

}  // namespace

client::client(settings s) : s_(std::move(s)) {
  if (s_.coordinator.empty())
    throw cli_error("no coordinator: give --coordinator URL or set NIXFLEET_COORDINATOR", exit_usage);
  std::string why;
  auto u = http_client::parse_url(s_.coordinator, &why);
  if (!u) throw cli_error("--coordinator: expected an http:// or https:// URL (" + why + "), got " + s_.coordinator, exit_usage);
  if (!u->tls && !s_.insecure_http && !is_loopback(u->host))
    throw cli_error("--coordinator " + s_.coordinator +
                        " is plain http:// to a host that is not loopback: the API key would cross the network in the "
                        "clear; use https://, or --insecure-http if that is really meant",
                    exit_usage);
  try {
    http_ = std::make_unique<http_client::client>(
        *u, http_client::tls_files{s_.ca_file, s_.cert_file, s_.key_file},
        http_client::options{.timeout = s_.timeout, .body_limit = std::size_t{256} << 20,  // audit exports can be large
                             .user_agent = "nixfleet-cli"});
  } catch (const std::runtime_error& e) {
    throw cli_error(e.what(), exit_usage);
  }
  if (s_.api_key) key_ = s_.api_key;
  else if (s_.api_key_file) key_ = read_secret_file(*s_.api_key_file, "API key file");
}

client::~client() = default;

void detail::invalid_answer(const std::string& target, const std::string& why) {
  throw cli_error("the coordinator sent an invalid answer to " + target + ": " + why);
}

response client::request(const std::string& method, const std::string& target, const std::string& body,
                         bool authenticated) {
  http_client::request req{.method = method, .target = target, .body = body, .headers = {}};
  req.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
  if (authenticated && key_) req.headers.emplace_back("Authorization", "Bearer " + *key_);
  if (!body.empty() || method == "POST" || method == "PUT") req.headers.emplace_back("Content-Type", "application/json");
  auto res = http_->exchange_blocking(std::move(req));
  if (!res.answer) throw cli_error("cannot reach the coordinator at " + s_.coordinator + ": " + res.error);
  return std::move(*res.answer);
}

json::value client::call(const std::string& method, const std::string& target, const std::string& body) {
  auto r = request(method, target, body);
  if (r.status >= 200 && r.status < 300) {
    if (r.body.empty()) return nullptr;
    boost::system::error_code ec;
    auto v = json::parse(r.body, ec);
    if (ec) throw cli_error("the coordinator sent a reply that is not JSON");
    return v;
  }
  std::string message = "HTTP " + std::to_string(r.status);
  boost::system::error_code ec;
  auto v = json::parse(r.body, ec);
  if (!ec && v.is_object())
    if (const auto* m = v.as_object().if_contains("message"); m && m->is_string())
      message = std::string(m->as_string()) + " (" + std::to_string(r.status) + ")";
  if (r.status == 401) {
    if (!key_) message = "no API key: give --api-key-file FILE or set NIXFLEET_API_KEY_FILE (401)";
    throw cli_error("the coordinator refused the API key: " + message);
  }
  if (r.status == 403) throw cli_error("not allowed: " + message);
  throw cli_error(message);
}

}  // namespace nixfleet::cli
