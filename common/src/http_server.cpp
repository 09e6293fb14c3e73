// The HTTP(S) server. One coroutine per connection; a connection waiting for its
// next request is idle (and closed at shutdown), one reading or answering is in flight.
// With a sessions executor each connection runs on its own strand (handshakes, parsing and writes
// in parallel); what the application gives it (handler, held answers, streamed bodies, the body
// limit hook) always runs on the home executor, so the application stays single-threaded.
#include "nixfleet/common/http_server.hpp"

#include "nixfleet/common/http_wire.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/tls_stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <openssl/bn.h>

#include <cctype>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <sys/socket.h>
#include <array>
#include <atomic>
#include <list>
#include <mutex>
#include <unordered_map>

namespace nixfleet {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct http_server::impl : std::enable_shared_from_this<impl> {
  // One open connection. `idle` is read by a shutdown on the home executor; the rest only on the
  // connection's own executor, where a shutdown's close() runs.
  struct connection {
    std::atomic<bool> idle{true};
    asio::any_io_executor ex;
    bool alive = true;
    tcp::socket* sock = nullptr;
    std::weak_ptr<asio::steady_timer> wake;  // of a held answer
  };
  using connection_ptr = std::shared_ptr<connection>;

  struct counters {
    std::atomic<std::size_t> in_flight{0}, held{0};
    std::atomic<std::uint64_t> accepted{0}, refused_over_cap{0}, refused_per_address{0}, accept_failures{0},
        timed_out{0}, tls_handshakes{0}, tls_resumed{0}, quick{0};
  };

  impl(asio::any_io_executor c, std::optional<asio::any_io_executor> sx, server_options o, http_handler h,
       error_renderer e)
      : ctx(c), sessions(std::move(sx)), opts(std::move(o)), handler(std::move(h)), errors(std::move(e)), acceptor(c) {}

  asio::any_io_executor ctx;  // home: the acceptor, the handler and everything it touches
  std::optional<asio::any_io_executor> sessions;  // set: a strand per connection made from it
  server_options opts;
  http_handler handler;
  error_renderer errors;
  tcp::acceptor acceptor;
  std::optional<asio::ssl::context> ssl;
  std::atomic<bool> stopping{false};
  counters st;
  std::mutex mu;  // connections and per_address
  std::list<connection_ptr> connections;
  std::unordered_map<asio::ip::address, std::size_t> per_address;

  // Runs `f` (returning an awaitable<T>) on the home executor and comes back with its result.
  template <class T, class F>
  asio::awaitable<T> at_home(F f) {
    if (!sessions) co_return co_await f();
    co_return co_await asio::co_spawn(ctx, std::move(f), asio::use_awaitable);
  }

  // Cancels what the connection is doing and lets its held answer go, on its own executor.
  void close(const connection_ptr& c) {
    asio::dispatch(c->ex, [c, home = ctx] {
      if (!c->alive || c->sock == nullptr) return;
      boost::system::error_code ignored;
      c->sock->cancel(ignored);
      if (auto w = c->wake.lock())
        asio::dispatch(home, [w] { w->expires_at(std::chrono::steady_clock::now()); });
    });
  }

  void start() {
    if (opts.tls) {
      ssl.emplace(asio::ssl::context::tls_server);
      ssl->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                       asio::ssl::context::single_dh_use);
      // Sessions resume from tickets (the session travels with the client, sealed with the
      // context's ticket key), so none is kept here: OpenSSL's own cache would hold every
      // session, client certificate included, up to 20,480 of them, and sweep that table under
      // its lock as connections come and go.
      SSL_CTX_set_session_cache_mode(ssl->native_handle(), SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL_STORE |
                                                               SSL_SESS_CACHE_NO_AUTO_CLEAR);
      boost::system::error_code ec;
      ssl->use_certificate_chain_file(opts.tls->cert_file, ec);
      if (ec) throw std::runtime_error("cannot load the TLS certificate " + opts.tls->cert_file + ": " + ec.message());
      ssl->use_private_key_file(opts.tls->key_file, asio::ssl::context::pem, ec);
      if (ec) throw std::runtime_error("cannot load the TLS key " + opts.tls->key_file + ": " + ec.message());
      if (opts.tls->client_ca_file) {
        ssl->load_verify_file(*opts.tls->client_ca_file, ec);
        if (ec)
          throw std::runtime_error("cannot load the client CA " + *opts.tls->client_ca_file + ": " + ec.message());
        if (opts.tls->extra_client_ca_file) {
          ssl->load_verify_file(*opts.tls->extra_client_ca_file, ec);
          if (ec)
            throw std::runtime_error("cannot load the client CA " + *opts.tls->extra_client_ca_file + ": " + ec.message());
        }
        auto mode = asio::ssl::verify_peer;
        if (opts.tls->require_client_cert) mode |= asio::ssl::verify_fail_if_no_peer_cert;
        ssl->set_verify_mode(mode);
        // Sessions that carry a verified client certificate may be resumed only within this
        // context: without an id OpenSSL refuses every resumption and agents pay a full
        // handshake (certificate signing and verification) on every poll.
        static constexpr unsigned char sid_ctx[] = "nixfleet";
        SSL_CTX_set_session_id_context(ssl->native_handle(), sid_ctx, sizeof sid_ctx - 1);
      }
    }
    acceptor.open(opts.listen.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(opts.listen);
    acceptor.listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(ctx, accept_loop(shared_from_this()), asio::detached);
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    // Accept failures (out of descriptors, mostly) back off up to a second and are logged once per
    // ten seconds with how many there were: a full table must not become a log storm.
    auto backoff = std::chrono::milliseconds(0);
    std::optional<std::chrono::steady_clock::time_point> last_logged;
    std::uint64_t unlogged = 0;
    for (;;) {
      tcp::endpoint from;  // filled by accept itself: no getpeername per connection
      boost::system::error_code ec;
      tcp::socket sock(self->ctx);
      if (self->sessions) {
        auto [e, s] = co_await self->acceptor.async_accept(asio::make_strand(*self->sessions), from, use_tuple);
        ec = e;
        sock = std::move(s);
      } else {
        auto [e, s] = co_await self->acceptor.async_accept(from, use_tuple);
        ec = e;
        sock = std::move(s);
      }
      if (self->stopping) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        ++self->st.accept_failures;
        ++unlogged;
        const auto now = std::chrono::steady_clock::now();
        if (!last_logged || now - *last_logged >= std::chrono::seconds(10)) {
          log::warn("accept_failed", {{"error", ec.message()}, {"failures", unlogged},
                                      {"open_connections", self->open_connections()}});
          last_logged = now;
          unlogged = 0;
        }
        backoff = std::min<std::chrono::milliseconds>(std::max(backoff * 2, std::chrono::milliseconds(10)),
                                                      std::chrono::seconds(1));
        asio::steady_timer t(self->ctx, backoff);
        co_await t.async_wait(use_tuple);
        continue;
      }
      backoff = std::chrono::milliseconds(0);
      // Counted per source address, so that one client holding sockets open does not lock the
      // others out: past its share its new connections are closed at once.
      auto source = from.address();
      if (source.is_v6() && source.to_v6().is_v4_mapped())
        source = asio::ip::make_address_v4(asio::ip::v4_mapped, source.to_v6());
      auto conn = self->admit(source, sock.get_executor());
      if (!conn) {
        boost::system::error_code ignored;
        sock.close(ignored);
        continue;
      }
      ++self->st.accepted;
      // Answers and TLS flights are written whole: Nagle would hold their last segment back for
      // the peer's delayed ACK (40 ms) on every new connection.
      boost::system::error_code nodelay_ec;
      sock.set_option(tcp::no_delay(true), nodelay_ec);
      auto ex = sock.get_executor();
      asio::co_spawn(ex, session(self, std::move(sock), from, source, *conn), asio::detached);
    }
  }

  std::size_t open_connections() {
    std::lock_guard lock(mu);
    return connections.size();
  }

  // Counts a new connection in, or says no (over the cap, or over its address's share).
  std::optional<std::list<connection_ptr>::iterator> admit(const asio::ip::address& source,
                                                           const asio::any_io_executor& ex) {
    std::lock_guard lock(mu);
    if (connections.size() >= opts.max_connections) {
      ++st.refused_over_cap;
      return std::nullopt;
    }
    auto& n = per_address[source];
    if (opts.max_connections_per_address > 0 && n >= opts.max_connections_per_address) {
      ++st.refused_per_address;
      if (n == 0) per_address.erase(source);
      return std::nullopt;
    }
    ++n;
    auto c = std::make_shared<connection>();
    c->ex = ex;
    return connections.insert(connections.end(), std::move(c));
  }

  void release(const asio::ip::address& source, std::list<connection_ptr>::iterator c) {
    (*c)->alive = false;
    std::lock_guard lock(mu);
    auto it = per_address.find(source);
    if (it != per_address.end() && --it->second == 0) per_address.erase(it);
    connections.erase(c);
  }

  // Who a verified client certificate names: its one CN, or the id of its one `nixfleet://machine/`
  // SAN URI (which, when both are present, must agree with the CN). A subject with two CNs is
  // ambiguous (`/CN=hostB/CN=hostA` must not be taken as either), and so is anything with an
  // embedded NUL; such a certificate names no one, and the request says why.
  static client_identity peer_identity(SSL* ssl) {
    client_identity who;
    X509* cert = SSL_get1_peer_certificate(ssl);
    if (cert == nullptr) return who;
    struct release {
      X509* c;
      ~release() { X509_free(c); }
    } guard{cert};
    if (SSL_get_verify_result(ssl) != X509_V_OK) return who;
    if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
      if (char* hex = BN_bn2hex(bn)) {
        std::string s(hex);
        OPENSSL_free(hex);
        for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        const auto nz = s.find_first_not_of('0');
        who.serial = nz == std::string::npos ? "0" : s.substr(nz);
      }
      BN_free(bn);
    }
    auto text = [](const ASN1_STRING* str) -> std::optional<std::string> {
      unsigned char* utf8 = nullptr;
      const int n = ASN1_STRING_to_UTF8(&utf8, str);
      if (n < 0) return std::nullopt;
      std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n));
      OPENSSL_free(utf8);
      if (out.find('\0') != std::string::npos) return std::nullopt;
      return out;
    };
    std::vector<std::string> cns;
    const X509_NAME* subject = X509_get_subject_name(cert);
    for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
      auto cn = text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
      if (!cn) {
        who.problem = "the client certificate's CN is not text";
        return who;
      }
      cns.push_back(std::move(*cn));
    }
    std::vector<std::string> uris;
    constexpr std::string_view prefix = "nixfleet://machine/";
    if (auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr))) {
      for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
        if (name->type != GEN_URI) continue;
        auto uri = text(name->d.uniformResourceIdentifier);
        if (uri && uri->starts_with(prefix)) uris.push_back(uri->substr(prefix.size()));
      }
      GENERAL_NAMES_free(names);
    }
    if (cns.size() > 1) {
      who.problem = "the client certificate's subject has " + std::to_string(cns.size()) + " CNs";
    } else if (uris.size() > 1) {
      who.problem = "the client certificate has " + std::to_string(uris.size()) + " nixfleet://machine/ URIs";
    } else if (uris.size() == 1) {
      if (!cns.empty() && cns[0] != uris[0])
        who.problem = "the client certificate's CN and its nixfleet://machine/ URI name different machines";
      else
        who.id = uris[0];
    } else if (cns.size() == 1) {
      who.id = cns[0];
    } else {
      who.problem = "the client certificate names no machine (no CN, no nixfleet://machine/ URI)";
    }
    return who;
  }

  // A connection's one deadline: whatever it is doing (handshake, reading, writing) must be done
  // by `due`, else the socket's operations are cancelled and `expired` says why. Moving the
  // deadline later costs nothing (the timer looks again when it fires); earlier re-arms it.
  struct watchdog : std::enable_shared_from_this<watchdog> {
    explicit watchdog(asio::any_io_executor ex, tcp::socket& s) : timer(ex), sock(&s) {}
    asio::steady_timer timer;
    tcp::socket* sock;
    std::chrono::steady_clock::time_point due{};
    bool expired = false, waiting = false, done = false;

    void set(std::chrono::milliseconds d) {
      due = std::chrono::steady_clock::now() + d;
      expired = false;
      if (!waiting) {
        timer.expires_at(due);
        wait();
      } else if (due < timer.expiry()) {
        timer.expires_at(due);  // the pending wait ends (aborted) and waits again for the new one
      }
    }
    void wait() {
      waiting = true;
      timer.async_wait([self = shared_from_this()](boost::system::error_code) {
        self->waiting = false;
        if (self->done) return;
        if (std::chrono::steady_clock::now() >= self->due) {
          self->expired = true;
          boost::system::error_code ignored;
          self->sock->cancel(ignored);
          return;
        }
        self->timer.expires_at(self->due);
        self->wait();
      });
    }
    void stop() {
      done = true;
      timer.cancel();
    }
  };

  // A session's deadline, stopped when the session ends; and what a shutdown does to the
  // connection: cancel its socket's operations and let a held answer go.
  struct watched {
    std::shared_ptr<watchdog> dog;
    ~watched() { dog->stop(); }
  };
  static watched watch(connection& c, tcp::socket& sock) {
    c.sock = &sock;
    return watched{std::make_shared<watchdog>(sock.get_executor(), sock)};
  }

  static tcp::socket& socket_of(tls_stream& s) { return s.socket(); }
  static tcp::socket& socket_of(tcp::socket& s) { return s; }
  static bool pending(tls_stream& s) { return s.has_pending(); }
  static bool pending(tcp::socket&) { return false; }

  static asio::awaitable<void> session(std::shared_ptr<impl> self, tcp::socket sock, tcp::endpoint from,
                                      asio::ip::address source, std::list<connection_ptr>::iterator entry) {
    std::string peer = from.address().to_string() + ":" + std::to_string(from.port());
    struct release_address {
      impl& s;
      asio::ip::address a;
      std::list<connection_ptr>::iterator c;
      ~release_address() { s.release(a, c); }
    } counted{*self, source, entry};
    connection_ptr conn = *entry;
    if (self->ssl) {
      std::optional<tls_stream> stream;
      try {
        stream.emplace(std::move(sock), self->ssl->native_handle(), tls_stream::role::server);
      } catch (const std::exception& e) {
        log::warn("tls_setup_failed", {{"peer", peer}, {"error", e.what()}});
        co_return;
      }
      auto watched = self->watch(*conn, stream->socket());
      auto dog = watched.dog;
      dog->set(self->opts.first_request_timeout);
      auto [ec] = co_await stream->async_handshake(use_tuple);
      if (!ec) {
        ++self->st.tls_handshakes;
        if (SSL_session_reused(stream->native_handle())) ++self->st.tls_resumed;
        // Named first: GCC 12 destroys a temporary passed into a coroutine call twice.
        client_identity who = peer_identity(stream->native_handle());
        co_await self->serve(*stream, *dog, conn, who, true, peer);
        dog->set(std::chrono::seconds(2));
        co_await stream->async_shutdown(use_tuple);
      } else {
        if (dog->expired) ++self->st.timed_out;
        log::debug("tls_handshake_failed", {{"peer", peer}, {"error", ec.message()}});
      }
    } else {
      tcp::socket stream(std::move(sock));
      auto watched = self->watch(*conn, stream);
      auto dog = watched.dog;
      client_identity nobody;
      co_await self->serve(stream, *dog, conn, nobody, false, peer);
      boost::system::error_code ignored;
      stream.shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  // The answers below are the caller's, taken by reference: a copy would take room in the frames
  // of every held connection.
  template <class Stream>
  asio::awaitable<bool> send(Stream& stream, watchdog& dog, http_response& r, unsigned version, bool keep_alive) {
    if (r.stream) co_return co_await send_chunked(stream, dog, r, version, keep_alive);
    std::string out;
    http_wire::write_response(out, r, version, keep_alive, opts.server_name, false);
    dog.set(opts.write_timeout);
    const std::array<asio::const_buffer, 2> parts{asio::buffer(out), asio::buffer(r.body)};
    auto [ec, n] = co_await asio::async_write(stream, parts, use_tuple);
    co_return !ec;
  }

  template <class Stream>
  asio::awaitable<bool> send_chunked(Stream& stream, watchdog& dog, http_response& r, unsigned version, bool keep_alive) {
    http::response<http::empty_body> res{static_cast<http::status>(r.status), version};
    res.set(http::field::server, opts.server_name);
    res.set(http::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep_alive);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    dog.set(opts.write_timeout);
    if (auto [ec, n] = co_await http::async_write_header(stream, sr, use_tuple); ec) co_return false;
    for (;;) {
      std::string chunk;
      try {
        chunk = co_await at_home<std::string>([&r] { return r.stream(); });
      } catch (const std::exception& e) {
        log::error("response_stream_failed", {{"error", e.what()}});
        co_return false;
      }
      dog.set(opts.write_timeout);
      if (chunk.empty()) {
        auto [ec, n] = co_await asio::async_write(stream, http::make_chunk_last(), use_tuple);
        co_return !ec;
      }
      if (auto [ec, n] = co_await asio::async_write(stream, http::make_chunk(asio::buffer(chunk)), use_tuple); ec)
        co_return false;
    }
  }

  template <class Stream>
  asio::awaitable<void> drain(Stream& stream, watchdog& dog) {
    auto& sock = socket_of(stream);
    boost::system::error_code ignored;
    sock.shutdown(tcp::socket::shutdown_send, ignored);
    dog.set(std::chrono::seconds(1));
    std::array<char, 16384> sink;
    for (std::size_t total = 0; total < 8u << 20;) {
      auto [ec, n] = co_await sock.async_read_some(asio::buffer(sink), use_tuple);
      if (ec) break;
      total += n;
    }
  }

  // A held answer (a long poll): the connection waits idle, watched for anything the client sends.
  // `r` comes with the handler's held function and leaves with the answer to send.
  template <class Stream>
  asio::awaitable<void> hold(Stream& stream, watchdog& dog, const connection_ptr& c, beast::flat_buffer& buf,
                             http_response& r) {
    connection& conn = *c;
    auto held = std::move(r.held);
    auto& sock = socket_of(stream);
    const bool spoke = buf.size() > 0 || pending(stream);
    // The wake timer belongs to the home executor, where the handler waits on it.
    auto wake = std::make_shared<asio::steady_timer>(
        ctx, spoke ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point::max());
    conn.wake = wake;
    conn.idle = true;
    ++st.held;
    if (!spoke) {
      buf.shrink_to_fit();
      watch_reads(c, wake);
    }
    dog.set(std::chrono::hours(1));  // the handler's own deadline is the one that counts
    try {
      r = co_await at_home<http_response>([&held, &wake] { return held(*wake); });
    } catch (const std::exception& e) {
      log::error("held_request_failed", {{"error", e.what()}});
      r = errors(500, "internal", "the server could not complete the request");
    }
    --st.held;
    conn.idle = false;
    conn.wake.reset();
    if (!spoke) {
      boost::system::error_code ignored;
      sock.cancel(ignored);  // the watch, if it is still waiting
    }
  }

  // Wakes a held answer when the client sends something or closes. Readiness can be stale (several
  // threads: the edge of bytes a read already took may be reported after it), so it is checked
  // with a peek, and a wait that finds nothing waits again.
  void watch_reads(const connection_ptr& c, const std::shared_ptr<asio::steady_timer>& wake) {
    c->sock->async_wait(tcp::socket::wait_read, [self = shared_from_this(), c, weak = std::weak_ptr(wake)](boost::system::error_code ec) {
      auto w = weak.lock();
      if (ec || !c->alive || !w || c->wake.lock() != w) return;  // cancelled, or the hold is over
      char byte;
      const auto n = ::recv(c->sock->native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return self->watch_reads(c, w);
      asio::dispatch(self->ctx, [w] { w->expires_at(std::chrono::steady_clock::now()); });
    });
  }

  struct in_flight_guard {
    counters& s;
    bool counted = true;
    void release() {
      if (counted) --s.in_flight;
      counted = false;
    }
    ~in_flight_guard() { release(); }
  };

  // What one request came to: the answer to send and how, or nothing when the connection ends.
  struct exchange {
    http_response r;
    unsigned version = 11;
    bool keep_alive = false;
  };

  // Reads one request and runs the handler on it. Its own frame (the parser, the request, the
  // handler's call) is gone once it returns, so that a held answer keeps none of it.
  template <class Stream>
  asio::awaitable<std::optional<exchange>> read_and_handle(Stream& stream, watchdog& dog, beast::flat_buffer& buf,
                                                           bool first, const client_identity& who, bool tls,
                                                           const std::string& peer) {
    // A new connection's first header is due within first_request_timeout (a silent or
    // trickling socket holds nothing for long); its body, like any request, within request_timeout.
    dog.set(first ? std::min(opts.first_request_timeout, opts.request_timeout) : opts.request_timeout);
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opts.header_limit));
    // The largest any request may have while the header is read; then this request's own.
    const std::size_t most = opts.body_limit_for ? std::max(opts.body_limit, opts.max_body_limit) : opts.body_limit;
    parser.body_limit(most);
    auto [ec, header_bytes] = co_await http::async_read_header(stream, buf, parser, use_tuple);
    std::size_t limit = opts.body_limit;
    // Asked only of a body that may not fit the usual limit (never of a poll).
    if (!ec && opts.body_limit_for &&
        (parser.chunked() || (parser.content_length() && *parser.content_length() > opts.body_limit))) {
      const auto& header = parser.get().base();
      const std::size_t larger =
          co_await at_home<std::size_t>([this, &header]() -> asio::awaitable<std::size_t> {
            co_return opts.body_limit_for(header);
          });
      limit = std::min(most, std::max(opts.body_limit, larger));
    }
    if (!ec && opts.body_limit_for) {
      if (auto length = parser.content_length(); length && *length > limit) ec = http::error::body_limit;
      else parser.body_limit(limit);
    }
    if (!ec && !parser.is_done()) {
      if (first) dog.set(opts.request_timeout);
      auto [body_ec, body_bytes] = co_await http::async_read(stream, buf, parser, use_tuple);
      ec = body_ec;
    }
    if (ec) {
      if (dog.expired) {
        ++st.timed_out;
        co_return std::nullopt;
      }
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::operation_aborted ||
          ec == asio::error::connection_reset || ec == http::error::partial_message)
        co_return std::nullopt;
      http_response r = ec == http::error::body_limit
                            ? errors(413, "body_too_large",
                                     "the body is larger than " + std::to_string(limit) + " bytes")
                        : ec == http::error::header_limit
                            ? errors(431, "header_too_large", "the request header is too large")
                            : errors(400, "bad_request", "malformed HTTP request");
      co_await send(stream, dog, r, 11, false);
      // Read (and drop) what the client is still sending for a moment, so that closing does
      // not reset the connection before it has read the answer.
      if (ec == http::error::body_limit) co_await drain(stream, dog);
      co_return std::nullopt;
    }
    http_request req{parser.release(), who, tls, peer};
    exchange out;
    out.keep_alive = req.msg.keep_alive();
    out.version = req.msg.version();
    try {
      out.r = co_await at_home<http_response>([this, &req] { return handler(req); });
    } catch (const std::exception& e) {
      log::error("request_failed", {{"target", std::string(req.msg.target())}, {"error", e.what()}});
      out.r = errors(500, "internal", "the server could not complete the request");
    }
    co_return out;
  }

  // The plain case answered from the head alone, without Beast or the handler's coroutines: the
  // answer in `out` and the head consumed, with whether the connection stays open. Not a
  // coroutine, so that the head (a kilobyte of views) never takes room in a suspended frame.
  std::optional<bool> answer_quickly(beast::flat_buffer& buf, const client_identity& who, bool tls, std::string& out) {
    const std::string_view data(static_cast<const char*>(buf.data().data()), buf.size());
    const auto head = http_wire::read_request_head(data, opts.header_limit);
    if (!head) return std::nullopt;
    out.clear();
    const bool keep = head->keep_alive && !stopping;
    if (!opts.quick(quick_request{*head, who, tls, keep}, out)) return std::nullopt;
    buf.consume(head->size);
    ++st.quick;
    return keep;
  }

  // `who` and `peer` belong to the session's frame, which outlives this loop.
  template <class Stream>
  asio::awaitable<void> serve(Stream& stream, watchdog& dog, connection_ptr conn, const client_identity& who, bool tls,
                              const std::string& peer) {
    beast::flat_buffer buf;
    std::string quick;  // the quick path's answer while it is written
    bool first = true;
    while (!stopping) {
      if (buf.size() == 0 && !pending(stream)) {
        conn->idle = true;
        dog.set(first ? std::min(opts.first_request_timeout, opts.idle_timeout) : opts.idle_timeout);
        auto [ec, n] = co_await stream.async_read_some(buf.prepare(4096), use_tuple);
        conn->idle = false;
        if (ec) {
          if (dog.expired) ++st.timed_out;
          co_return;
        }
        buf.commit(n);
      }
      conn->idle = false;
      ++st.in_flight;
      in_flight_guard guard{st};
      if (opts.quick && !sessions) {
        if (const auto keep = answer_quickly(buf, who, tls, quick)) {
          first = false;
          dog.set(opts.write_timeout);
          auto [ec, n] = co_await asio::async_write(stream, asio::buffer(quick), use_tuple);
          if (ec || !*keep) co_return;
          if (quick.capacity() > 4096) std::string().swap(quick);
          continue;
        }
      }
      auto ex = co_await read_and_handle(stream, dog, buf, first, who, tls, peer);
      first = false;
      if (!ex) co_return;
      if (ex->r.held) {
        std::string().swap(quick);  // a held connection keeps no answer's bytes
        guard.release();  // a held answer is idle, not in flight: a shutdown does not wait for it
        co_await hold(stream, dog, conn, buf, ex->r);
      }
      if (!co_await send(stream, dog, ex->r, ex->version, ex->keep_alive && !stopping)) co_return;
      if (!ex->keep_alive) co_return;
    }
  }
};

http_server::http_server(asio::any_io_executor ctx, server_options opts, http_handler handler, error_renderer errors)
    : impl_(std::make_shared<impl>(ctx, std::nullopt, std::move(opts), std::move(handler), std::move(errors))) {}

http_server::http_server(asio::any_io_executor home, asio::any_io_executor sessions, server_options opts,
                         http_handler handler, error_renderer errors)
    : impl_(std::make_shared<impl>(home, std::move(sessions), std::move(opts), std::move(handler), std::move(errors))) {}

http_server::~http_server() {
  boost::system::error_code ignored;
  impl_->stopping = true;
  impl_->acceptor.close(ignored);
  std::lock_guard lock(impl_->mu);
  for (auto& c : impl_->connections) impl_->close(c);
}

void http_server::start() { impl_->start(); }

tcp::endpoint http_server::local_endpoint() const { return impl_->acceptor.local_endpoint(); }

server_stats http_server::stats() const {
  const auto& c = impl_->st;
  server_stats s;
  s.open_connections = impl_->open_connections();
  s.in_flight = c.in_flight;
  s.accepted = c.accepted;
  s.refused_over_cap = c.refused_over_cap;
  s.refused_per_address = c.refused_per_address;
  s.accept_failures = c.accept_failures;
  s.timed_out = c.timed_out;
  s.tls_handshakes = c.tls_handshakes;
  s.tls_resumed = c.tls_resumed;
  s.held = c.held;
  s.quick = c.quick;
  return s;
}

asio::awaitable<void> http_server::shutdown(std::chrono::milliseconds drain) {
  auto self = impl_;
  self->stopping = true;
  boost::system::error_code ignored;
  self->acceptor.close(ignored);
  {
    std::lock_guard lock(self->mu);
    for (auto& c : self->connections)
      if (c->idle) self->close(c);
  }
  const auto deadline = std::chrono::steady_clock::now() + drain;
  while (self->st.in_flight > 0 && std::chrono::steady_clock::now() < deadline) {
    asio::steady_timer t(self->ctx, std::chrono::milliseconds(10));
    co_await t.async_wait(use_tuple);
  }
  std::lock_guard lock(self->mu);
  for (auto& c : self->connections) self->close(c);
}

}  // namespace nixfleet
