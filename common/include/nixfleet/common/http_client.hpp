// The one HTTP(S) client of nixfleet: the agent talking to its coordinator, the CLI, the http
// health probe. It keeps the rules they must share in one place: URL parsing, IPv6 literals
// (bracketed in the URL and the Host header, bare when resolving and verifying), SNI for DNS names
// only (never for an IP literal), the peer verified against a CA file or the system store, a
// deadline over the whole exchange, a bound on the answer's body, and TLS session resumption.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nixfleet::http_client {

// An absolute http:// or https:// URL, taken apart.
struct url {
  bool tls = false;
  std::string host;         // as resolved and verified: an IPv6 literal without brackets
  std::string port;         // explicit, or 80 / 443
  std::string host_header;  // as written in the URL: "[::1]:8443", "cache.example.org"
  std::string path;         // the encoded path without a trailing '/', possibly empty
  std::string target;       // the encoded path and query, "/" when empty
};

// The URL's parts, or why it is not an absolute http(s) URL with a host.
std::optional<url> parse_url(std::string_view text, std::string* why = nullptr);

struct tls_files {
  std::optional<std::string> ca_file;  // else the system store
  std::optional<std::string> cert_file, key_file;
};

struct options {
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};  // the whole exchange
  std::size_t body_limit = std::size_t{1} << 20;
  std::string user_agent = "nixfleet";
  // Keep the last TLS session and offer it on the next connection (skips the certificate work).
  bool resume_sessions = false;
  // One kept-alive connection for every exchange, opened again when it is lost. Exchanges made
  // while another is waiting for its answer are pipelined behind it on the same connection (a
  // server holding a long poll answers it when the next request arrives). A connection that was
  // idle and is found closed is retried once on a new one. The kept connection belongs to the
  // io_context of the exchanges: use such a client from one io_context that outlives it.
  bool keep_alive = false;
};

struct request {
  std::string method = "GET";
  std::string target;  // appended to the URL's path: "/api/v1/…"; empty: the URL itself, query included
  std::string body;    // sent with Content-Length when set, or when the method is POST or PUT
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<std::chrono::milliseconds> timeout;  // instead of options::timeout (a long poll)
};

struct response {
  unsigned status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  // The first header of that name (case-insensitive), or "".
  std::string header(std::string_view name) const;
};

enum class failure { none, resolve, connect, tls, send, receive, too_large, timeout };

struct result {
  std::optional<response> answer;
  failure why = failure::none;
  std::string error;  // when there is no answer: what went wrong, naming the peer
};

class client {
 public:
  // Throws std::runtime_error naming the file when a TLS file cannot be loaded.
  client(url base, tls_files tls, options opts);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // One request on a fresh connection (closed after the answer), or on the kept one
  // (options::keep_alive), on the caller's executor. Cancelling the awaiting coroutine ends it
  // promptly (and, on a kept connection, the connection: an answer half read cannot be skipped).
  boost::asio::awaitable<result> exchange(request req);
  // The same on an io_context of its own, for blocking callers (the CLI): always on a connection
  // of its own, kept alive or not.
  result exchange_blocking(request req);

  const url& base() const;

 private:
  boost::asio::awaitable<result> run(request req, bool may_keep);
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace nixfleet::http_client
