// The coordinator service: the in-memory fleet, the HTTP routes of architecture §3, the
// reconcile loop driving rollouts, report retention and metrics, over a store.
#pragma once

#include "nixfleet/common/http_server.hpp"
#include "nixfleet/coordinator/io/storage.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace nixfleet::pki {
class authority;
}

namespace nixfleet::coordinator::io {

using nixfleet::http_request;
using nixfleet::http_response;
using nixfleet::http_server;
using nixfleet::server_options;
using nixfleet::tls_options;

struct service_options {
  std::string db_path;
  server_options api;
  // Threads running the io_context (run_serve starts them; a caller running ctx itself starts
  // as many). Above one, connections (TLS, parsing, writing) run on strands of their own, in
  // parallel; the fleet and everything touching it stays on one strand (`service::executor`).
  std::size_t threads = 1;
  // A plain poll is answered from its request head alone (no HTTP parser, no coroutine per
  // request) when the server runs on one thread: the same checks, the same bytes as the full path,
  // which takes everything else. Off only to compare the two.
  bool quick_polls = true;
  std::optional<boost::asio::ip::tcp::endpoint> metrics_listen;
  // Plain HTTP: agent routes are open (no client certificates to check).
  bool insecure_http = false;
  std::chrono::hours report_retention{7 * 24};
  // Rollouts are reconciled every reconcile_interval, and besides at once after a host of an
  // active rollout reports a step (confirmed, failed, …) and when a wave's soak ends, unless
  // reconcile_promptly is off (tests that reconcile by hand).
  std::chrono::milliseconds reconcile_interval{1000};
  bool reconcile_promptly = true;
  std::chrono::milliseconds prune_interval{std::chrono::hours(1)};
  std::uint32_t poll_hint_s = 5;
  // Long polls (`GET …/desired?wait=S` with If-None-Match) are held until the machine's desired
  // state changes, for at most this long (each a little less, at random, so that they do not all
  // expire together). 0: answered at once, and not advertised.
  std::chrono::seconds long_poll_max{300};
  // Bodies of desired states kept ready for the fetches that follow a change (bytes, at most): a
  // machine's body is otherwise made again from the fleet when asked for.
  std::size_t hot_bodies_max = 8u << 20;
  // The body of `POST /api/v1/releases` from a caller holding a known deploy or admin key may be
  // this large (a release of up to 100,000 entries); every other request has api.body_limit.
  std::size_t release_body_limit = 64u << 20;
  // Each machine's report budget: at most this many reports and body bytes per window (a token
  // bucket, refilled evenly over the window). Past it, 429 with Retry-After; the agent keeps its
  // outbox and waits. 0 turns a limit off.
  std::uint64_t report_budget_count = 1200;
  std::uint64_t report_budget_bytes = 8u << 20;
  std::chrono::milliseconds report_budget_window{std::chrono::minutes(10)};
  // Stored reports at most (bytes of their bodies, oldest pruned first), besides report_retention.
  std::uint64_t report_retention_bytes = 1ull << 30;
  // How often keys' last use is written and keys made by `keys create` are learnt from the store;
  // how long a key the store did not know is refused without asking it again.
  std::chrono::milliseconds key_sync_interval{std::chrono::seconds(30)};
  std::chrono::milliseconds unknown_key_ttl{std::chrono::seconds(60)};
  // The coordinator's own ed25519 key (Nix format): it signs checkpoints of the audit chain head
  // at start, every checkpoint_interval when the chain moved, after every admin action and at
  // stop, into the database and the journal. Without it the chain is not anchored.
  std::optional<protocol::secret_key> audit_key;
  std::chrono::milliseconds checkpoint_interval{std::chrono::minutes(5)};
  // The fleet CA (`ca init`): with it, hosts enroll with one-time tokens and renew their client
  // certificates, which last certificate_lifetime. Without it, enrollment routes answer 404 and
  // client certificates come from the operator's own PKI.
  std::shared_ptr<const pki::authority> ca;
  std::chrono::seconds certificate_lifetime{std::chrono::days(30)};
  // The dashboard (/ui/) on a listener of its own (never the agents'): operators sign in with an
  // API key and get a server-side session (lost on restart: they sign in again). A session ends
  // at its ttl, after idle without a request, at sign-out, or when its key is deleted.
  std::optional<server_options> ui;
  std::chrono::seconds ui_session_ttl{std::chrono::hours(8)};
  std::chrono::milliseconds ui_session_idle{std::chrono::hours(1)};
  std::size_t ui_max_sessions = 1024;       // past it, the session nearest its end goes
  std::size_t ui_max_streams = 64;          // live-update streams open at once, all sessions
  std::size_t ui_streams_per_session = 4;
  // Webhook deliveries: each attempt's deadline; a failed one is tried again after
  // webhook_retry_min, doubling up to webhook_retry_max (±20 % at random), and given up
  // webhook_give_up_after past its event. At most webhook_concurrency attempts at once (two per
  // hook, so one that never answers cannot hold the others up); settled deliveries are kept in a
  // hook's log for report_retention.
  std::chrono::milliseconds webhook_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds webhook_retry_min{std::chrono::seconds(5)};
  std::chrono::milliseconds webhook_retry_max{std::chrono::hours(1)};
  std::chrono::milliseconds webhook_give_up_after{std::chrono::hours(24)};
  std::size_t webhook_concurrency = 8;
  // The store; empty opens the SQLite database at db_path. Tests pass a fake.
  std::function<std::unique_ptr<storage>()> open_store;
  // Time source; tests move it.
  std::function<protocol::timestamp()> clock;
  // Called when a write the coordinator already acted on in memory cannot be made durable: the
  // process must stop (and restart from the store) rather than serve state it would forget.
  std::function<void(const std::string&)> on_fatal;
};

class service {
 public:
  service(boost::asio::io_context& ctx, service_options opts);
  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // Binds the listeners and starts the background loops; throws when an address is unusable.
  void start();
  boost::asio::ip::tcp::endpoint api_endpoint() const;
  std::optional<boost::asio::ip::tcp::endpoint> metrics_endpoint() const;
  std::optional<boost::asio::ip::tcp::endpoint> ui_endpoint() const;
  // Stops accepting, drains requests in flight (up to `drain`), waits for pending writes.
  boost::asio::awaitable<void> stop(std::chrono::milliseconds drain);
  // Runs one reconcile pass over every active rollout now (tests; the loop does it periodically).
  boost::asio::awaitable<void> reconcile_now();
  // The strand the fleet lives on: stop() and reconcile_now() are awaited there.
  boost::asio::any_io_executor executor() const;
  // Statements the store ran since it was opened.
  std::uint64_t store_operations() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

// Creates an operator API key in the store at `db_path` and returns it (the only time it is
// shown). The coordinator need not be stopped: it finds the key in the store on its first use,
// and lists it within key_sync_interval (or at once on `GET /api/v1/keys`).
std::string create_key(const std::string& db_path, const std::string& name, protocol::role role,
                       const std::string& actor);

// `nixfleet-coordinator serve`: runs until SIGTERM/SIGINT. Returns the exit code.
int run_serve(service_options opts);

}  // namespace nixfleet::coordinator::io
