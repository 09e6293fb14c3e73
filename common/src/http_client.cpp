// The HTTP(S) client over Beast: resolve, connect, (TLS handshake,) one request, the answer, close;
// or, kept alive, every request on one connection, pipelined in turn.
#include "nixfleet/common/http_client.hpp"

#include "nixfleet/common/tls_stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include <stdexcept>
#include <tuple>
#include <variant>
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

using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Waits until one of `waiters` is woken (its timer cancelled), or the caller is cancelled.
asio::awaitable<void> woken(std::vector<asio::steady_timer*>& waiters) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::steady_clock::time_point::max());
  waiters.push_back(&t);
  struct leave {
    std::vector<asio::steady_timer*>& w;
    asio::steady_timer* t;
    ~leave() { std::erase(w, t); }
  } guard{waiters, &t};
  co_await t.async_wait(use_tuple);
}

// One open connection, plain or TLS, with what has been read of it and the order of the
// exchanges pipelined on it: each writes in turn, and reads its answer when every earlier one has.
struct connection {
  std::optional<tcp::socket> plain;
  std::unique_ptr<tls_stream> tls;
  beast::flat_buffer buf;
  std::uint64_t tickets = 0;    // handed out as requests are written
  std::uint64_t read_turn = 0;  // whose answer is read next
  std::uint64_t answered = 0;
  bool writing = false;
  bool dead = false;
  std::vector<asio::steady_timer*> waiters;  // exchanges waiting for a turn; woken on any progress

  tcp::socket& socket() { return tls ? tls->socket() : *plain; }
  void wake() {
    for (auto* t : waiters) t->cancel();
  }
  void kill() {
    if (dead) return;
    dead = true;
    boost::system::error_code ignored;
    socket().cancel(ignored);
    socket().close(ignored);
    wake();
  }
  // Waits until `ready()` holds or the connection dies.
  template <class Ready>
  asio::awaitable<void> until(Ready ready) {
    while (!dead && !ready()) co_await woken(waiters);
  }
};

}  // namespace

struct client::impl {
  url base;
  options opts;
  asio::ssl::context ssl{asio::ssl::context::tls_client};
  std::unique_ptr<SSL_SESSION, session_free> session;
  bool ip_literal = false;
  std::shared_ptr<connection> kept;   // with keep_alive
  bool connecting = false;
  std::vector<asio::steady_timer*> connect_waiters;

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

  // A new connection: resolved, connected, TLS verified against the URL's host (its name, or its
  // address for a literal), the last session offered.
  asio::awaitable<std::variant<std::shared_ptr<connection>, result>> open() {
    auto ex = co_await asio::this_coro::executor;
    tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(base.host, base.port, use_tuple);
    if (rec) co_return failed(failure::resolve, "cannot resolve " + base.host + ": " + rec.message());
    tcp::socket sock(ex);
    auto [cec, ep] = co_await asio::async_connect(sock, endpoints, use_tuple);
    if (cec) co_return failed(failure::connect, "cannot connect to " + peer() + ": " + cec.message());
    boost::system::error_code nodelay_ec;  // small writes go out at once, not after a delayed ACK
    sock.set_option(tcp::no_delay(true), nodelay_ec);
    auto c = std::make_shared<connection>();
    if (!base.tls) {
      c->plain.emplace(std::move(sock));
      co_return c;
    }
    try {
      c->tls = std::make_unique<tls_stream>(std::move(sock), ssl.native_handle(), tls_stream::role::client);
    } catch (const std::exception& e) {
      co_return failed(failure::tls, std::string("TLS with ") + peer() + ": " + e.what());
    }
    SSL* h = c->tls->native_handle();
    // The peer's certificate must name the URL's host: its DNS name, or its IP address.
    const bool named = ip_literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(h), base.host.c_str()) == 1
                                  : SSL_set1_host(h, base.host.c_str()) == 1;
    // Server Name Indication carries DNS names only (RFC 6066 §3), never an address literal.
    if (!named || (!ip_literal && SSL_ctrl(h, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                                               const_cast<char*>(base.host.c_str())) != 1))
      co_return failed(failure::tls, "cannot set the TLS peer name " + base.host);
    if (session) SSL_set_session(h, session.get());
    auto [hec] = co_await c->tls->async_handshake(use_tuple);
    if (hec) {
      session.reset();
      std::string why = hec.message();
      if (const long v = SSL_get_verify_result(h); v != X509_V_OK) why += ": " + std::string(X509_verify_cert_error_string(v));
      co_return failed(failure::tls, "TLS handshake with " + peer() + ": " + why);
    }
    co_return c;
  }

  // Keeps the connection's session for the next one (TLS 1.3 tickets arrive after the handshake:
  // by the end of an answer they have been read).
  void keep_session(connection& c) {
    if (!c.tls || !opts.resume_sessions) return;
    if (SSL_SESSION* s = SSL_get1_session(c.tls->native_handle()); s && SSL_SESSION_is_resumable(s)) session.reset(s);
    else if (s) SSL_SESSION_free(s);
  }

  template <class Stream>
  asio::awaitable<boost::system::error_code> write(Stream& s, http::request<http::string_body>& req) {
    auto [ec, n] = co_await http::async_write(s, req, use_tuple);
    co_return ec;
  }
  template <class Stream>
  asio::awaitable<std::pair<boost::system::error_code, std::optional<http::response<http::string_body>>>> read(
      Stream& s, beast::flat_buffer& buf) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(opts.body_limit);
    auto [ec, n] = co_await http::async_read(s, buf, parser, use_tuple);
    if (ec) co_return std::pair{ec, std::nullopt};
    co_return std::pair{ec, std::optional(parser.release())};
  }

  result answer_of(boost::system::error_code wec, boost::system::error_code rec,
                   std::optional<http::response<http::string_body>> res) {
    if (rec == http::error::body_limit)
      return failed(failure::too_large, "the answer from " + peer() + " is larger than " +
                                            std::to_string(opts.body_limit) + " bytes");
    if (rec && wec) return failed(failure::send, "sending to " + peer() + ": " + wec.message());
    if (rec) return failed(failure::receive, "reading the answer from " + peer() + ": " + rec.message());
    response out;
    out.status = res->result_int();
    out.body = std::move(res->body());
    for (const auto& f : *res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    return result{std::move(out), failure::none, {}};
  }

  // One exchange on a connection of its own, closed after the answer.
  asio::awaitable<result> once(http::request<http::string_body>& req) {
    auto opened = co_await open();
    if (auto* r = std::get_if<result>(&opened)) co_return std::move(*r);
    auto c = std::get<std::shared_ptr<connection>>(std::move(opened));
    // A server may answer (413) and stop reading before the body is sent: read the answer even so.
    boost::system::error_code wec, rec;
    std::optional<http::response<http::string_body>> res;
    if (c->tls) {
      wec = co_await write(*c->tls, req);
      auto got = co_await read(*c->tls, c->buf);
      rec = got.first;
      res = std::move(got.second);
      // The close_notify matters: OpenSSL drops the session of a connection closed without one.
      if (!rec) {
        co_await c->tls->async_shutdown(use_tuple);
        keep_session(*c);
      }
    } else {
      wec = co_await write(*c->plain, req);
      auto got = co_await read(*c->plain, c->buf);
      rec = got.first;
      res = std::move(got.second);
    }
    c->kill();
    co_return answer_of(wec, rec, std::move(res));
  }

  // The kept connection, opened when there is none (one opening at a time; the others wait for it).
  asio::awaitable<std::variant<std::shared_ptr<connection>, result>> kept_connection() {
    while (connecting) co_await woken(connect_waiters);
    if (kept && !kept->dead) co_return kept;
    connecting = true;
    struct done {
      impl& s;
      ~done() {
        s.connecting = false;
        for (auto* t : s.connect_waiters) t->cancel();
      }
    } finally{*this};
    auto opened = co_await open();
    if (auto* c = std::get_if<std::shared_ptr<connection>>(&opened)) kept = *c;
    co_return opened;
  }

  // One exchange on the kept connection, in its turn; false in `retry` when it failed in a way a
  // new connection may not (it had been used before and closed before answering anything).
  asio::awaitable<result> pipelined(std::shared_ptr<connection> c, http::request<http::string_body>& req, bool& retry) {
    retry = false;
    const bool reused = c->answered > 0 || c->tickets > 0;
    co_await c->until([&] { return !c->writing; });
    if (c->dead) {
      retry = true;
      co_return failed(failure::send, "the connection to " + peer() + " was closed");
    }
    const auto ticket = c->tickets++;
    c->writing = true;
    boost::system::error_code wec;
    if (c->tls) wec = co_await write(*c->tls, req);
    else wec = co_await write(*c->plain, req);
    c->writing = false;
    c->wake();
    if (wec) {
      retry = reused;
      c->kill();
      co_return failed(failure::send, "sending to " + peer() + ": " + wec.message());
    }
    co_await c->until([&] { return c->read_turn == ticket; });
    if (c->dead) {
      retry = reused;
      co_return failed(failure::receive, "the connection to " + peer() + " was closed before its answer");
    }
    struct next_turn {
      connection& c;
      ~next_turn() {
        ++c.read_turn;
        c.wake();
      }
    } advance{*c};
    std::pair<boost::system::error_code, std::optional<http::response<http::string_body>>> got;
    if (c->tls) got = co_await read(*c->tls, c->buf);
    else got = co_await read(*c->plain, c->buf);
    auto& [rec, res] = got;
    if (rec) {
      // Closed by the server between requests (its idle timeout), before a byte of the answer.
      retry = reused && (rec == http::error::end_of_stream || rec == asio::error::eof ||
                         rec == asio::error::connection_reset);
      c->kill();
      co_return answer_of(wec, rec, std::nullopt);
    }
    ++c->answered;
    keep_session(*c);
    if (!res->keep_alive()) c->kill();
    co_return answer_of(wec, rec, std::move(res));
  }

  asio::awaitable<result> talk(http::request<http::string_body>& req, bool kept_ok) {
    if (!opts.keep_alive || !kept_ok) co_return co_await once(req);
    for (int attempt = 0;; ++attempt) {
      auto got = co_await kept_connection();
      if (auto* r = std::get_if<result>(&got)) co_return std::move(*r);
      auto c = std::get<std::shared_ptr<connection>>(std::move(got));
      bool retry = false;
      try {
        auto r = co_await pipelined(c, req, retry);
        if (r.answer || !retry || attempt > 0) co_return r;
      } catch (...) {
        c->kill();  // cancelled half way: the answer cannot be told apart from the next one's
        throw;
      }
    }
  }
};

client::client(url base, tls_files tls, options opts) : impl_(std::make_unique<impl>(std::move(base), tls, std::move(opts))) {}

client::~client() {
  if (impl_->kept) impl_->kept->kill();
}

const url& client::base() const { return impl_->base; }

asio::awaitable<result> client::exchange(request r) { co_return co_await run(std::move(r), true); }

asio::awaitable<result> client::run(request r, bool may_keep) {
  const auto verb = http::string_to_verb(r.method);
  if (verb == http::verb::unknown) co_return failed(failure::send, "not an HTTP method: " + r.method);
  http::request<http::string_body> req{verb, r.target.empty() ? impl_->base.target : impl_->base.path + r.target, 11};
  req.set(http::field::host, impl_->base.host_header);
  req.set(http::field::user_agent, impl_->opts.user_agent);
  // One exchange per connection unless kept: the peer need not hold it open.
  req.keep_alive(impl_->opts.keep_alive);
  for (auto& [k, v] : r.headers) req.set(k, v);
  if (!r.body.empty() || verb == http::verb::post || verb == http::verb::put) {
    req.body() = std::move(r.body);
    req.prepare_payload();
  }
  const auto timeout = r.timeout.value_or(impl_->opts.timeout);
  asio::steady_timer deadline(co_await asio::this_coro::executor, timeout);
  auto done = co_await (impl_->talk(req, may_keep) || deadline.async_wait(asio::use_awaitable));
  if (done.index() == 1) {
    if (impl_->kept && impl_->opts.keep_alive && may_keep) impl_->kept->kill();
    co_return failed(failure::timeout, "no answer from " + impl_->peer() + " within " +
                                           std::to_string(timeout.count()) + " ms");
  }
  co_return std::get<0>(std::move(done));
}

result client::exchange_blocking(request r) {
  asio::io_context ctx;
  auto f = asio::co_spawn(ctx, run(std::move(r), false), asio::use_future);
  ctx.run();
  return f.get();
}

}  // namespace nixfleet::http_client
