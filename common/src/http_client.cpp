// The HTTP(S) client over Beast: resolve, connect, (TLS handshake,) one request, the answer, close.
#include "nixfleet/common/http_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include <stdexcept>
#include <strings.h>

namespace nixfleet::http_client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace asio::experimental::awaitable_operators;

std::optional<url> parse_url(std::string_view text, std::string* why) {
  auto fail = [&](const char* reason) -> std::optional<url> {
    if (why) *why = reason;
    return std::nullopt;
  };
  auto u = boost::urls::parse_absolute_uri(text);
  if (!u) return fail("not an absolute URL");
  if (u->scheme() != "http" && u->scheme() != "https") return fail("the scheme is not http or https");
  if (u->encoded_host().empty()) return fail("the URL has no host");
  if (u->has_userinfo()) return fail("the URL carries a user name or password");
  url out;
  out.tls = u->scheme() == "https";
  out.host = u->host_address();  // IPv6 without its brackets
  out.port = u->has_port() ? std::string(u->port()) : (out.tls ? "443" : "80");
  out.host_header = std::string(u->encoded_host_and_port());
  out.path = std::string(u->encoded_path());
  while (!out.path.empty() && out.path.back() == '/') out.path.pop_back();
  out.target = u->encoded_target().empty() ? "/" : std::string(u->encoded_target());
  if (out.target.front() != '/') out.target.insert(0, "/");
  return out;
}

std::string response::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k.size() == name.size() && ::strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
  return {};
}

namespace {

struct session_free {
  void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
};

result failed(failure why, std::string error) { return result{std::nullopt, why, std::move(error)}; }

}  // namespace

struct client::impl {
  url base;
  options opts;
  asio::ssl::context ssl{asio::ssl::context::tls_client};
  std::unique_ptr<SSL_SESSION, session_free> session;
  bool ip_literal = false;

  impl(url u, const tls_files& tls, options o) : base(std::move(u)), opts(std::move(o)) {
    boost::system::error_code not_ip;
    asio::ip::make_address(base.host, not_ip);
    ip_literal = !not_ip;
    if (!base.tls) return;
    boost::system::error_code ec;
    if (tls.ca_file) ssl.load_verify_file(*tls.ca_file, ec);
    else ssl.set_default_verify_paths(ec);
    if (ec) throw std::runtime_error("cannot load the CA certificates" + (tls.ca_file ? " " + *tls.ca_file : "") + ": " + ec.message());
    if (tls.cert_file && tls.key_file) {
      ssl.use_certificate_chain_file(*tls.cert_file, ec);
      if (ec) throw std::runtime_error("cannot load the client certificate " + *tls.cert_file + ": " + ec.message());
      ssl.use_private_key_file(*tls.key_file, asio::ssl::context::pem, ec);
      if (ec) throw std::runtime_error("cannot load the client key " + *tls.key_file + ": " + ec.message());
    }
    ssl.set_verify_mode(asio::ssl::verify_peer);
  }

  const std::string& peer() const { return base.host_header; }

  asio::awaitable<result> talk(http::request<http::string_body>& req) {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(base.host, base.port, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return failed(failure::resolve, "cannot resolve " + base.host + ": " + rec.message());
    beast::tcp_stream tcp(ex);
    auto [cec, ep] = co_await tcp.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
    if (cec) co_return failed(failure::connect, "cannot connect to " + peer() + ": " + cec.message());
    boost::system::error_code nodelay_ec;  // small writes go out at once, not after a delayed ACK
    tcp.socket().set_option(asio::ip::tcp::no_delay(true), nodelay_ec);
    if (!base.tls) co_return co_await round_trip(tcp, req);

    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), ssl);
    stream.set_verify_callback(asio::ssl::host_name_verification(base.host));
    // Server Name Indication carries DNS names only (RFC 6066 §3), never an address literal.
    if (!ip_literal && SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                                const_cast<char*>(base.host.c_str())) != 1)
      co_return failed(failure::tls, "cannot set the TLS server name " + base.host);
    if (session) SSL_set_session(stream.native_handle(), session.get());
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) {
      session.reset();
      co_return failed(failure::tls, "TLS handshake with " + peer() + ": " + hec.message());
    }
    auto res = co_await round_trip(stream, req);
    if (res.answer && opts.resume_sessions) {
      // TLS 1.3 tickets arrive after the handshake; by the end of the answer they have been read.
      // The close_notify matters too: OpenSSL marks the session of a connection dropped without
      // one as not resumable. Bounded on its own: the answer is in hand, a peer slow to close
      // must not turn it into a failed exchange.
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
      auto [sec] = co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
      if (SSL_SESSION* s = SSL_get1_session(stream.native_handle()); s && !sec && SSL_SESSION_is_resumable(s))
        session.reset(s);
      else if (s)
        SSL_SESSION_free(s);
    }
    co_return res;
  }

  template <class Stream>
  asio::awaitable<result> round_trip(Stream& s, http::request<http::string_body>& req) {
    auto [wec, w] = co_await http::async_write(s, req, asio::as_tuple(asio::use_awaitable));
    // A server may answer (413) and stop reading before the body is sent: read the answer even so.
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(opts.body_limit);
    auto [rec, n] = co_await http::async_read(s, buf, parser, asio::as_tuple(asio::use_awaitable));
    if (rec == http::error::body_limit)
      co_return failed(failure::too_large, "the answer from " + peer() + " is larger than " +
                                               std::to_string(opts.body_limit) + " bytes");
    if (rec && wec) co_return failed(failure::send, "sending to " + peer() + ": " + wec.message());
    if (rec) co_return failed(failure::receive, "reading the answer from " + peer() + ": " + rec.message());
    auto res = parser.release();
    response out;
    out.status = res.result_int();
    out.body = std::move(res.body());
    for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    co_return result{std::move(out), failure::none, {}};
  }
};

client::client(url base, tls_files tls, options opts) : impl_(std::make_unique<impl>(std::move(base), tls, std::move(opts))) {}

client::~client() = default;

const url& client::base() const { return impl_->base; }

asio::awaitable<result> client::exchange(request r) {
  const auto verb = http::string_to_verb(r.method);
  if (verb == http::verb::unknown) co_return failed(failure::send, "not an HTTP method: " + r.method);
  http::request<http::string_body> req{verb, r.target.empty() ? impl_->base.target : impl_->base.path + r.target, 11};
  req.set(http::field::host, impl_->base.host_header);
  req.set(http::field::user_agent, impl_->opts.user_agent);
  req.keep_alive(false);  // one exchange per connection: the peer need not hold it open
  for (auto& [k, v] : r.headers) req.set(k, v);
  if (!r.body.empty() || verb == http::verb::post || verb == http::verb::put) {
    req.body() = std::move(r.body);
    req.prepare_payload();
  }
  asio::steady_timer deadline(co_await asio::this_coro::executor, impl_->opts.timeout);
  auto done = co_await (impl_->talk(req) || deadline.async_wait(asio::use_awaitable));
  if (done.index() == 1)
    co_return failed(failure::timeout, "no answer from " + impl_->peer() + " within " +
                                           std::to_string(impl_->opts.timeout.count()) + " ms");
  co_return std::get<0>(std::move(done));
}

result client::exchange_blocking(request r) {
  asio::io_context ctx;
  auto f = asio::co_spawn(ctx, exchange(std::move(r)), asio::use_future);
  ctx.run();
  return f.get();
}

}  // namespace nixfleet::http_client
