// Settings resolution and the blocking coordinator client of the CLI.
#include "nixfleet/cli/client.hpp"

#include "nixfleet/protocol/types.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/parse.hpp>
#include <boost/url/parse.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace nixfleet::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
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

client::client(settings s) : s_(std::move(s)) {
  if (s_.coordinator.empty())
    throw cli_error("no coordinator: give --coordinator URL or set NIXFLEET_COORDINATOR", exit_usage);
  auto u = boost::urls::parse_absolute_uri(s_.coordinator);
  if (!u || (u->scheme() != "http" && u->scheme() != "https") || u->host().empty())
    throw cli_error("--coordinator: expected an http:// or https:// URL, got " + s_.coordinator, exit_usage);
  tls_ = u->scheme() == "https";
  host_ = u->host();
  if (host_.size() > 2 && host_.front() == '[') host_ = host_.substr(1, host_.size() - 2);
  port_ = u->has_port() ? std::string(u->port()) : (tls_ ? "443" : "80");
  base_ = std::string(u->encoded_path());
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
  if (s_.api_key) key_ = s_.api_key;
  else if (s_.api_key_file) key_ = read_secret_file(*s_.api_key_file, "API key file");
}

response client::request(const std::string& method, const std::string& target, const std::string& body,
                         bool authenticated) {
  asio::io_context ctx;
  http::request<http::string_body> req{http::string_to_verb(method), base_ + target, 11};
  req.set(http::field::host, host_);
  req.set(http::field::user_agent, "nixfleet-cli");
  req.set(protocol::protocol_header, std::to_string(protocol::protocol_version));
  if (authenticated && key_) req.set(http::field::authorization, "Bearer " + *key_);
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(256u << 20);  // audit exports can be large
  boost::system::error_code ec;
  asio::ip::tcp::resolver resolver(ctx);
  auto eps = resolver.resolve(host_, port_, ec);
  auto unreachable = [&](const boost::system::error_code& e) {
    return cli_error("cannot reach the coordinator at " + s_.coordinator + ": " + e.message());
  };
  if (ec) throw unreachable(ec);
  beast::flat_buffer buf;
  if (tls_) {
    asio::ssl::context ssl(asio::ssl::context::tls_client);
    if (s_.ca_file) ssl.load_verify_file(*s_.ca_file, ec);
    else ssl.set_default_verify_paths(ec);
    if (ec) throw cli_error("cannot load the CA file: " + ec.message(), exit_usage);
    if (s_.cert_file && s_.key_file) {
      ssl.use_certificate_chain_file(*s_.cert_file, ec);
      if (!ec) ssl.use_private_key_file(*s_.key_file, asio::ssl::context::pem, ec);
      if (ec) throw cli_error("cannot load the client certificate: " + ec.message(), exit_usage);
    }
    ssl.set_verify_mode(asio::ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> stream(ctx, ssl);
    boost::system::error_code not_ip;
    asio::ip::make_address(host_, not_ip);
    if (not_ip && SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                           const_cast<char*>(host_.c_str())) != 1)
      throw cli_error("cannot set the TLS server name");
    stream.set_verify_callback(asio::ssl::host_name_verification(host_));
    beast::get_lowest_layer(stream).expires_after(s_.timeout);
    beast::get_lowest_layer(stream).connect(eps, ec);
    if (!ec) stream.handshake(asio::ssl::stream_base::client, ec);
    if (!ec) http::write(stream, req, ec);
    if (!ec) http::read(stream, buf, parser, ec);
    if (ec) throw unreachable(ec);
  } else {
    beast::tcp_stream stream(ctx);
    stream.expires_after(s_.timeout);
    stream.connect(eps, ec);
    if (!ec) http::write(stream, req, ec);
    if (!ec) http::read(stream, buf, parser, ec);
    if (ec) throw unreachable(ec);
  }
  auto res = parser.release();
  response out;
  out.status = res.result_int();
  out.body = std::move(res.body());
  for (const auto& f : res) out.headers[std::string(f.name_string())] = std::string(f.value());
  return out;
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
