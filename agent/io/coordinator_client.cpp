// The coordinator client over Beast: one connection per exchange, TLS or (explicitly) plain.
#include "nixfleet/agent/io/coordinator_client.hpp"

#include "nixfleet/protocol/codec.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

namespace nixfleet::agent::io {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace asio::experimental::awaitable_operators;

struct response {
  bool ok = false;
  unsigned status = 0;
  std::string body;
  std::string etag;
  std::string error;
};

class http_client final : public coordinator_client {
 public:
  explicit http_client(const agent_config& cfg) : cfg_(cfg), ssl_(asio::ssl::context::tls_client) {
    auto u = boost::urls::parse_absolute_uri(cfg.coordinator_url).value();
    tls_ = u.scheme() == "https";
    host_ = u.host();
    port_ = u.has_port() ? std::string(u.port()) : (tls_ ? "443" : "80");
    base_ = std::string(u.encoded_path());
    while (!base_.empty() && base_.back() == '/') base_.pop_back();
    host_header_ = std::string(u.encoded_host_and_port());
    if (tls_) {
      if (cfg.tls.ca_file) ssl_.load_verify_file(*cfg.tls.ca_file);
      else ssl_.set_default_verify_paths();
      if (cfg.tls.cert_file) {
        ssl_.use_certificate_chain_file(*cfg.tls.cert_file);
        ssl_.use_private_key_file(*cfg.tls.key_file, asio::ssl::context::pem);
      }
      ssl_.set_verify_mode(asio::ssl::verify_peer);
    }
  }

  asio::awaitable<poll_result> get_desired(std::string etag) override {
    http::request<http::string_body> req{http::verb::get, base_ + "/api/v1/machines/" + cfg_.machine_id + "/desired", 11};
    if (!etag.empty()) req.set(http::field::if_none_match, etag);
    auto res = co_await exchange(std::move(req));
    poll_result out;
    if (!res.ok) {
      out.error = res.error;
      co_return out;
    }
    switch (res.status) {
      case 200: {
        auto d = protocol::parse<protocol::desired_state>(res.body);
        if (!d) {
          out.error = "coordinator sent an invalid desired state: " + d.error().what();
          co_return out;
        }
        out.what = poll_result::outcome::desired;
        out.desired = std::move(*d);
        out.etag = res.etag;
        co_return out;
      }
      case 204: out.what = poll_result::outcome::nothing_assigned; out.etag = res.etag; co_return out;
      case 304: out.what = poll_result::outcome::not_modified; out.etag = etag; co_return out;
      default: out.error = describe_status(res); co_return out;
    }
  }

  asio::awaitable<ack_result> post_reports(std::vector<protocol::report> batch) override {
    http::request<http::string_body> req{http::verb::post, base_ + "/api/v1/machines/" + cfg_.machine_id + "/reports", 11};
    req.set(http::field::content_type, "application/json");
    req.body() = protocol::serialize(protocol::report_batch{std::move(batch)});
    req.prepare_payload();
    auto res = co_await exchange(std::move(req));
    ack_result out;
    if (!res.ok) {
      out.error = res.error;
      co_return out;
    }
    if (res.status != 200) {
      out.error = describe_status(res);
      out.refused = res.status == 400 || res.status == 413 || res.status == 422;
      co_return out;
    }
    auto ack = protocol::parse<protocol::report_ack>(res.body);
    if (!ack) {
      out.error = "coordinator sent an invalid acknowledgement: " + ack.error().what();
      co_return out;
    }
    out.ok = true;
    out.acked_seq = ack->acked_seq;
    co_return out;
  }

  asio::awaitable<revocations_result> get_revocations() override {
    http::request<http::string_body> req{http::verb::get, base_ + "/api/v1/revocations", 11};
    auto res = co_await exchange(std::move(req));
    revocations_result out;
    if (!res.ok) {
      out.error = res.error;
      co_return out;
    }
    if (res.status != 200) {
      out.error = describe_status(res);
      co_return out;
    }
    auto list = protocol::parse<protocol::revocation_list>(res.body);
    if (!list) {
      out.error = "coordinator sent an invalid revocation list: " + list.error().what();
      co_return out;
    }
    out.list = std::move(*list);
    co_return out;
  }

 private:
  static std::string describe_status(const response& res) {
    if (res.status == 426) return "coordinator speaks another protocol version (426)";
    std::string msg = "coordinator answered " + std::to_string(res.status);
    if (auto e = protocol::parse<protocol::error_body>(res.body)) msg += ": " + e->error + ": " + e->message;
    return msg;
  }

  asio::awaitable<response> exchange(http::request<http::string_body> req) {
    req.set(http::field::host, host_header_);
    req.keep_alive(false);  // one exchange per connection: the coordinator need not hold it open
    req.set(http::field::user_agent, "nixfleet-agent");
    req.set(protocol::protocol_header, std::to_string(protocol::protocol_version));
    asio::steady_timer deadline(co_await asio::this_coro::executor, cfg_.request_timeout);
    auto r = co_await (talk(std::move(req)) || deadline.async_wait(asio::use_awaitable));
    if (r.index() == 1) co_return response{false, 0, {}, {}, "no answer within " + std::to_string(cfg_.request_timeout.count()) + " ms"};
    co_return std::get<0>(std::move(r));
  }

  asio::awaitable<response> talk(http::request<http::string_body> req) {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(host_, port_, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return response{false, 0, {}, {}, "cannot resolve " + host_ + ": " + rec.message()};
    beast::tcp_stream tcp(ex);
    auto [cec, ep] = co_await tcp.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
    if (cec) co_return response{false, 0, {}, {}, "cannot connect to " + host_header_ + ": " + cec.message()};
    boost::system::error_code nodelay_ec;  // small writes go out at once, not after a delayed ACK
    tcp.socket().set_option(asio::ip::tcp::no_delay(true), nodelay_ec);
    if (!tls_) co_return co_await round_trip(tcp, req);
    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), ssl_);
    stream.set_verify_callback(asio::ssl::host_name_verification(host_));
    SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host_.c_str()));
    // Resuming the last session skips the certificate work on both sides (the coordinator keeps
    // the client certificate in the ticket), which is most of the cost of a poll.
    if (session_) SSL_set_session(stream.native_handle(), session_.get());
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) {
      session_.reset();
      co_return response{false, 0, {}, {}, "TLS handshake with " + host_header_ + ": " + hec.message()};
    }
    auto res = co_await round_trip(stream, req);
    if (res.ok) {
      // TLS 1.3 tickets arrive after the handshake; by the end of the answer they have been read.
      // The close_notify matters too: OpenSSL marks the session of a connection dropped without
      // one as not resumable.
      // Bounded on its own: the answer is in hand, a peer slow to close must not turn it into a
      // failed exchange.
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
      auto [sec] = co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
      if (SSL_SESSION* s = SSL_get1_session(stream.native_handle()); s && !sec && SSL_SESSION_is_resumable(s))
        session_.reset(s);
      else if (s)
        SSL_SESSION_free(s);
    }
    co_return res;
  }

  template <class Stream>
  asio::awaitable<response> round_trip(Stream& s, http::request<http::string_body>& req) {
    auto [wec, w] = co_await http::async_write(s, req, asio::as_tuple(asio::use_awaitable));
    if (wec) co_return response{false, 0, {}, {}, "sending to the coordinator: " + wec.message()};
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(protocol::limits::max_body_bytes);
    auto [rec, n] = co_await http::async_read(s, buf, parser, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return response{false, 0, {}, {}, "reading the coordinator's answer: " + rec.message()};
    auto& res = parser.get();
    co_return response{true, res.result_int(), std::move(res.body()), std::string(res[http::field::etag]), {}};
  }

  struct session_free {
    void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
  };

  agent_config cfg_;
  asio::ssl::context ssl_;
  std::unique_ptr<SSL_SESSION, session_free> session_;
  bool tls_ = false;
  std::string host_, port_, base_, host_header_;
};

}  // namespace

std::unique_ptr<coordinator_client> make_http_client(const agent_config& cfg) { return std::make_unique<http_client>(cfg); }

}  // namespace nixfleet::agent::io
