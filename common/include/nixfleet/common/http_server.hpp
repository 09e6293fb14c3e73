// The one HTTP/1.1 server (the coordinator's API and metrics, the agent's metrics), on Beast and coroutines, plain or TLS (optionally verifying client
// certificates), with keep-alive, size limits, idle and request timeouts, a connection cap and a
// graceful shutdown that lets requests in flight finish.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nixfleet {

namespace http_wire {
struct request_head;
}
struct quick_request;

struct tls_options {
  std::string cert_file;
  std::string key_file;
  std::optional<std::string> client_ca_file;  // verify client certificates signed by this CA
  bool require_client_cert = false;           // refuse the handshake without one
  std::optional<std::string> extra_client_ca_file;  // and by this one (the fleet CA beside an own PKI)
};

struct server_options {
  boost::asio::ip::tcp::endpoint listen;
  std::optional<tls_options> tls;
  std::size_t header_limit = 16 * 1024;
  std::size_t body_limit = 1 << 20;
  // A larger limit for some requests, chosen from the request's header before its body is read
  // (a release for a whole fleet, sent by a known operator), never above max_body_limit.
  std::function<std::size_t(const boost::beast::http::request_header<>&)> body_limit_for;
  std::size_t max_body_limit = 1 << 20;
  std::chrono::milliseconds idle_timeout{30'000};     // waiting for the next request
  std::chrono::milliseconds request_timeout{10'000};  // reading one request, first byte to last
  // A new connection's TLS handshake and first request: a socket opened and left silent is
  // closed this soon, however long kept-alive connections may idle between requests.
  std::chrono::milliseconds first_request_timeout{5'000};
  std::chrono::milliseconds write_timeout{30'000};
  std::size_t max_connections = 20'000;
  std::size_t max_connections_per_address = 0;  // from one source address; 0: no cap but the total
  std::string server_name = "nixfleet";  // the Server header
  // The quick path (the poll path's answers): see quick_request. Used when the server runs on one
  // thread (no sessions executor), for a plain head already whole in the read buffer.
  std::function<bool(const quick_request&, std::string& out)> quick;
};

// What a verified client certificate says about its holder: `id` when it names exactly one machine
// (its single CN, or its single `nixfleet://machine/ID` SAN URI agreeing with any CN), otherwise
// `problem` says why it names no one. Both empty without a client certificate.
struct client_identity {
  std::optional<std::string> id;
  std::string problem;
  std::string serial;  // the verified certificate's serial, lowercase hex without leading zeros
};

struct http_request {
  boost::beast::http::request<boost::beast::http::string_body> msg;
  client_identity client;
  bool tls = false;
  std::string peer;
};

struct http_response {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  // A body too large to hold: when set, `body` is ignored and the answer is sent with chunked
  // transfer encoding, one chunk per call, until a call returns "" (or throws, which cuts the
  // connection so that the client cannot take a partial body for a whole one).
  std::function<boost::asio::awaitable<std::string>()> stream;
  // A long poll: the handler holds its answer back. When set, the rest is ignored and the server
  // awaits `held(wake)` with the connection idle (its read buffer freed, OpenSSL's released, closed
  // by a shutdown like any idle one), then sends what it returns. `wake` is made to expire at once
  // when the client sends anything first (its next request, pipelined behind this one, or its
  // close) or the server stops: the handler then answers with what it has.
  std::function<boost::asio::awaitable<http_response>(boost::asio::steady_timer& wake)> held;
};

// A request offered to the quick path before any parsing beyond its head (http_wire.hpp): a handler
// that can answer it at once, on the server's thread and without waiting for anything, appends the
// whole answer (http_wire::write_response) to `out` and returns true; false sends the request down
// the full path (Beast's parser, http_handler), which answers everything, errors included.
struct quick_request {
  const http_wire::request_head& head;
  const client_identity& client;
  bool tls = false;
  bool keep_alive = true;  // what the answer must say: the head's wish, unless the server is stopping
};

using http_handler = std::function<boost::asio::awaitable<http_response>(http_request&)>;
// The body of an error answered by the server itself (bad request, too large…).
using error_renderer = std::function<http_response(unsigned status, std::string code, std::string message)>;

struct server_stats {
  std::size_t open_connections = 0;
  std::size_t in_flight = 0;
  std::uint64_t accepted = 0;
  std::uint64_t refused_over_cap = 0;
  std::uint64_t refused_per_address = 0;  // over max_connections_per_address
  std::uint64_t accept_failures = 0;      // out of descriptors and the like
  std::uint64_t timed_out = 0;
  std::uint64_t tls_handshakes = 0;  // completed
  std::uint64_t tls_resumed = 0;     // of those, resumed sessions (no certificate work)
  std::size_t held = 0;              // answers held back right now (long polls)
  std::uint64_t quick = 0;           // requests answered by the quick path
};

class http_server {
 public:
  http_server(boost::asio::any_io_executor ex, server_options opts, http_handler handler, error_renderer errors);
  // Each connection on a strand of its own made from `sessions` (run by several threads: TLS,
  // parsing and writing in parallel), while the handler, held answers, streamed bodies and
  // `body_limit_for` run on `home`, which must run one thing at a time (a strand).
  http_server(boost::asio::any_io_executor home, boost::asio::any_io_executor sessions, server_options opts,
              http_handler handler, error_renderer errors);
  http_server(boost::asio::io_context& ctx, server_options opts, http_handler handler, error_renderer errors)
      : http_server(ctx.get_executor(), std::move(opts), std::move(handler), std::move(errors)) {}
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds and starts accepting; throws std::system_error when the address cannot be used and
  // std::runtime_error when the TLS files cannot be loaded.
  void start();
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // Stops accepting, closes idle connections, waits up to `drain` for requests in flight.
  boost::asio::awaitable<void> shutdown(std::chrono::milliseconds drain);
  server_stats stats() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace nixfleet
