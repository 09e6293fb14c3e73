// http: GET a URL (http or https, verified against the system store or a given CA file); passes
// on an expected status and, when set, a body containing a substring.
#include "nixfleet/health/probe.hpp"
#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <filesystem>

namespace nixfleet::health::probes {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr std::size_t max_body = 1 << 20;

struct http_config {
  std::string url;
  std::vector<std::uint16_t> expect_status;  // empty: any 2xx
  std::optional<std::string> body_contains;
  std::optional<std::string> ca_file;
};

class http_probe final : public probe {
 public:
  http_probe(probe_common c, http_config cfg) : probe(std::move(c)), cfg_(std::move(cfg)) {
    auto u = boost::urls::parse_absolute_uri(cfg_.url).value();
    tls_ = u.scheme() == "https";
    host_ = u.host();
    port_ = u.has_port() ? std::string(u.port()) : (tls_ ? "443" : "80");
    target_ = u.encoded_target().empty() ? "/" : std::string(u.encoded_target());
    host_header_ = std::string(u.encoded_host_and_port());
  }

  asio::awaitable<outcome> check() override {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(host_, port_, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return outcome{false, "cannot resolve " + host_ + ": " + rec.message()};

    beast::tcp_stream tcp(ex);
    auto [cec, ep] = co_await tcp.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
    if (cec) co_return outcome{false, "connect to " + host_header_ + ": " + cec.message()};

    http::request<http::empty_body> req{http::verb::get, target_, 11};
    req.set(http::field::host, host_header_);
    req.set(http::field::user_agent, "nixfleet-agent health probe");
    req.set(http::field::connection, "close");

    if (!tls_) co_return co_await exchange(tcp, req);

    asio::ssl::context ctx(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    if (cfg_.ca_file) ctx.load_verify_file(*cfg_.ca_file, ec);
    else ctx.set_default_verify_paths(ec);
    if (ec) co_return outcome{false, "cannot load CA certificates: " + ec.message()};
    ctx.set_verify_mode(asio::ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp), ctx);
    tls.set_verify_callback(asio::ssl::host_name_verification(host_));
    // SSL_set_tlsext_host_name, without the macro's C cast.
    if (SSL_ctrl(tls.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(host_.c_str())) != 1)
      co_return outcome{false, "cannot set TLS server name"};
    auto [hec] = co_await tls.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) co_return outcome{false, "TLS handshake with " + host_header_ + ": " + hec.message()};
    co_return co_await exchange(tls, req);
  }

 private:
  template <class Stream>
  asio::awaitable<outcome> exchange(Stream& stream, http::request<http::empty_body>& req) {
    auto [wec, _] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
    if (wec) co_return outcome{false, "sending the request: " + wec.message()};
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body);
    auto [rec, n] = co_await http::async_read(stream, buf, parser, asio::as_tuple(asio::use_awaitable));
    if (rec == http::error::body_limit) co_return outcome{false, "response body larger than 1 MiB"};
    if (rec) co_return outcome{false, "reading the response: " + rec.message()};
    const auto& res = parser.get();
    const unsigned status = res.result_int();
    const bool status_ok = cfg_.expect_status.empty()
                               ? (status >= 200 && status < 300)
                               : std::find(cfg_.expect_status.begin(), cfg_.expect_status.end(), status) !=
                                     cfg_.expect_status.end();
    if (!status_ok) co_return outcome{false, "unexpected status " + std::to_string(status)};
    if (cfg_.body_contains && res.body().find(*cfg_.body_contains) == std::string::npos)
      co_return outcome{false, "status " + std::to_string(status) + " but the body lacks the expected text"};
    co_return outcome{true, "status " + std::to_string(status)};
  }

  http_config cfg_;
  bool tls_ = false;
  std::string host_, port_, target_, host_header_;
};

boost::system::error_code check_ca_file(std::string_view s) {
  if (!s.starts_with('/')) return protocol::errc::invalid_characters;
  return protocol::check_text(s, 4096);
}

}  // namespace

protocol::decoded<probe_ptr> make_http(probe_common common, const boost::json::value& config,
                                       const protocol::fields::path_node* at, const probe_env&) {
  std::optional<protocol::decode_error> err;
  http_config cfg;
  protocol::fields::decoder d(config, at, err);
  d.req("url", cfg.url, {.fn = protocol::check_http_url});
  d.def("expect_status", cfg.expect_status, {.max_items = 64});
  d.opt("body_contains", cfg.body_contains, {.max_len = 4096});
  d.opt("ca_file", cfg.ca_file, {.fn = check_ca_file});
  d.ensure(std::all_of(cfg.expect_status.begin(), cfg.expect_status.end(),
                       [](std::uint16_t s) { return s >= 100 && s <= 599; }),
           "expect_status", protocol::errc::out_of_range, "HTTP status codes are between 100 and 599");
  if (err) return *err;
  return probe_ptr(std::make_unique<http_probe>(std::move(common), std::move(cfg)));
}

}  // namespace nixfleet::health::probes
