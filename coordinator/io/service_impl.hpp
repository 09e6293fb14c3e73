// Internal to the coordinator's io layer: the service's state and the pieces its source files
// share (service.cpp drives, routes.cpp decodes and encodes, metrics_text.cpp renders).
#pragma once

#include "nixfleet/coordinator/core/fleet.hpp"
#include "nixfleet/coordinator/io/db_worker.hpp"
#include "nixfleet/coordinator/io/service.hpp"

#include <boost/asio/strand.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/verb.hpp>

#include <algorithm>
#include <array>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace nixfleet::coordinator::io {

http_response json_response(unsigned status, std::string body);
http_response error_response(unsigned status, std::string code, std::string message);
http_response refused(const core::refusal& r);
// A key-creation event with a fresh id and secret (the route and `keys create` both use it).
core::create_key new_key(protocol::key_request request);

// The ETag of a machine with nothing assigned (answered 204, or 304 to a poll that sends it back).
inline constexpr std::string_view nothing_assigned_etag = "\"none\"";

inline constexpr std::array<double, 12> latency_buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                           0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

struct route_metrics {
  std::map<unsigned, std::uint64_t> by_status;
  std::array<std::uint64_t, latency_buckets.size()> buckets{};
  std::uint64_t count = 0;
  double sum = 0;
};

// A warning anyone can cause, logged once per 10 s at most, with how many were not.
struct rate_limited_log {
  std::chrono::steady_clock::time_point logged_at{};
  std::uint64_t not_logged = 0;
  // How many went unlogged since the last line, when this one is to be logged; else none (counted).
  std::optional<std::uint64_t> take(std::chrono::steady_clock::time_point now) {
    if (now - logged_at < std::chrono::seconds(10)) {
      ++not_logged;
      return std::nullopt;
    }
    const auto skipped = not_logged;
    logged_at = now;
    not_logged = 0;
    return skipped;
  }
};

// A query parameter as a whole number up to `max` into `out`: true when absent (out untouched) or
// valid, false for anything else.
bool query_number(const std::map<std::string, std::string>& query, const char* key, std::uint64_t max,
                  std::uint64_t& out);

// One request matched to a route: its path parameters, query and (for operator routes) who asks.
struct route_call {
  http_request& req;
  std::vector<std::string> params;
  std::map<std::string, std::string> query;
  core::principal who;
};

struct service::impl : std::enable_shared_from_this<impl> {
  // What a machine's poll is answered with, as last published: the ETag of its desired state's
  // body (nothing_assigned_etag when it has none). The body itself is not kept per machine; it is
  // made again from the fleet when asked for, and is the published one when its hash is the ETag.
  struct served_state {
    // Held inline (no allocation per machine): a quoted 32-digit hash at most.
    std::array<char, 34> tag{};
    std::uint8_t length = 0;
    std::string_view etag() const noexcept { return {tag.data(), length}; }
    void set(std::string_view e) noexcept {
      length = static_cast<std::uint8_t>(std::min(e.size(), tag.size()));
      std::copy_n(e.data(), length, tag.data());
    }
  };

  impl(boost::asio::io_context& c, service_options o);

  boost::asio::io_context& ctx;
  // Where the fleet lives: every handler, loop and timer of the service runs here, one at a time,
  // whatever number of threads run `ctx` (connections run on strands of their own).
  boost::asio::strand<boost::asio::io_context::executor_type> home;
  service_options opts;
  std::unique_ptr<storage> store;
  std::optional<db_worker> db;
  std::optional<http_server> api;
  std::optional<http_server> metrics_server;
  std::optional<http_server> ui_server;
  bool stopping = false;
  bool fatal = false;

  core::fleet fleet;
  std::unordered_map<std::string, served_state> served;
  // Long polls held, by machine: the wake timers `publish` fires when the machine's ETag changes.
  std::unordered_map<std::string, std::vector<boost::asio::steady_timer*>> held_polls;
  struct long_poll_counts {
    std::uint64_t changed = 0, expired = 0, released = 0;
  } long_polls;
  // The bodies of answers recently published or sent (a rollout's hosts fetch theirs at once), by
  // machine; bounded by size, cleared whole when full.
  std::unordered_map<std::string, std::string> hot_bodies;
  std::size_t hot_bytes = 0;
  void keep_hot(const std::string& id, std::string body);
  void drop_hot(const std::string& id);
  // The answer to a poll from `id` sending `if_none_match` (200, 204 or 304), as published; none
  // while memory holds a change to it that is not durable yet (the body made from the fleet is not
  // the published one).
  std::optional<http_response> desired_answer(const std::string& id, std::string_view if_none_match);
  // The same as a status, the published ETag and the body, viewed in place (valid until the fleet
  // or the hot bodies change): what desired_answer and the quick path both answer from.
  struct desired_view {
    unsigned status = 0;
    std::string_view etag, body;
  };
  std::optional<desired_view> desired_now(const std::string& id, std::string_view if_none_match);
  std::string remade_;  // a body made again and not kept hot, for desired_now's view
  // The same, waiting for the store when memory is ahead of it (503 when it stays ahead).
  boost::asio::awaitable<http_response> answer_desired(const std::string& id, std::string if_none_match);
  std::map<std::string, route_metrics> route_stats;
  route_metrics* desired_metrics = nullptr;  // route_stats' entry of the poll path, once it has one
  // The poll path's plain case from the request head alone (http_server's quick path).
  bool quick_answer(const quick_request& q, std::string& out);
  std::uint64_t reports_ingested = 0;
  std::uint64_t writes_in_flight = 0;

  // Webhooks (webhooks.cpp): the delivery loop's timer (woken when a commit queued deliveries),
  // the deliveries being attempted (by id, and how many per hook), and what became of attempts.
  boost::asio::steady_timer* webhook_timer = nullptr;
  std::set<std::uint64_t> deliveries_in_flight;
  std::map<std::string, std::size_t> hook_in_flight;
  struct {
    std::uint64_t delivered = 0, retried = 0, failed = 0;
  } webhook_outcomes;
  void wake_webhooks();
  // Starts attempts of the deliveries that are due, within the concurrency limits.
  boost::asio::awaitable<void> send_due_webhooks();
  boost::asio::awaitable<void> deliver(delivery_job job);

  // The background loops' timers (cancelled by stop) and how many loops still run: stop waits for
  // them, so no loop outlives the service's store or touches a stopped context.
  std::list<boost::asio::steady_timer> loop_timers;
  int loops_running = 0;
  // The reconcile loop's timer, and whether a pass is wanted before it expires.
  boost::asio::steady_timer* reconcile_timer = nullptr;
  bool reconcile_wanted = false;
  void reconcile_soon();
  // Until the next pass: the interval, or less when a running rollout's wave ends its soak first.
  std::chrono::milliseconds until_next_reconcile() const;

  // API keys: the hashes used since their last use was written (flushed by sync_keys, off the
  // request path), and hashes the store did not know, answered without asking it again until
  // they expire (bounded: cleared whole when full).
  std::set<std::string> keys_used;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> unknown_keys;
  static constexpr std::size_t unknown_keys_max = 16384;
  rate_limited_log enroll_refusals;  // refused enrollments
  // The fleet CA's last signed CRL, made again when the revoked set changes or it is an hour old.
  struct {
    std::string pem;
    std::size_t entries = 0;
    std::uint64_t number = 0;
    std::chrono::sys_seconds made{};
  } crl;
  // Per machine: what is left of its report budget, as of `at`.
  struct report_budget {
    double reports = 0, bytes = 0;
    std::chrono::steady_clock::time_point at;
  };
  std::unordered_map<std::string, report_budget> report_budgets;
  std::uint64_t reports_over_budget = 0;
  // The time until `machine` may send `count` reports in `bytes`, or zero when it may now (and then
  // they are taken from its budget).
  std::chrono::seconds spend_report_budget(const std::string& machine, std::uint64_t count, std::uint64_t bytes);

  // The dashboard's sessions, by the SHA-256 of the cookie's secret (ui.cpp).
  struct ui_session {
    std::string key_hash;  // the API key signed in with: deleted, the session ends
    core::principal who;
    std::string csrf;      // sent back in X-CSRF-Token on every state-changing request
    protocol::timestamp expires_at{};
    std::chrono::steady_clock::time_point ends, idle_until;
    std::size_t streams = 0;
  };
  std::unordered_map<std::string, ui_session> ui_sessions;
  rate_limited_log ui_refusals;  // refused dashboard sign-ins
  std::size_t ui_streams = 0;

  // What changed since start, by kind: a dashboard compares these to what it shows. Bumped after
  // each durable commit; the live-update streams waiting in `change_waiters` are woken then.
  struct change_counters {
    std::uint64_t machines = 0, rollouts = 0, releases = 0, audit = 0;
    friend bool operator==(const change_counters&, const change_counters&) = default;
  } changes;
  std::set<boost::asio::steady_timer*> change_waiters;
  // The dashboards' fleet pages as last computed, by query (ui.cpp).
  struct fleet_page_cache {
    std::string body;
    change_counters at;
    std::chrono::steady_clock::time_point made;
  };
  std::unordered_map<std::string, fleet_page_cache> fleet_pages;
  std::uint64_t fleet_pages_shared = 0;
  void changed(bool machines, bool rollouts, bool releases, bool audit);
  void wake_waiters();

  struct key_lookup_counts {
    std::uint64_t found = 0, unknown = 0, cached = 0;
  } key_lookups;

  // `hot`: keep the new body for the fetch that follows (not when publishing everything at start).
  void publish(const std::string& id, bool hot = true);
  void publish_all();
  // Writes the change set; once durable, publishes what changed. A failed write of state already
  // applied in memory is fatal: false, and opts.on_fatal is called.
  boost::asio::awaitable<bool> commit(core::change_set cs, std::vector<std::string> republish, bool all = false);
  // Applies an event to the fleet, commits its effects and encodes the answer.
  boost::asio::awaitable<http_response> perform(core::event e);
  // Memory runs ahead of the disk while a commit is in flight. An operator read waits until
  // everything already queued is durable, so nothing it is shown can be lost to a crash.
  boost::asio::awaitable<void> settled();
  boost::asio::awaitable<void> reconcile_all();
  // Deletes reports past retention (by age, then by size).
  boost::asio::awaitable<void> prune_reports();
  // Writes the last use of the keys used since the last call, then learns the keys made by
  // another process (`nixfleet-coordinator keys create`) from the store.
  boost::asio::awaitable<void> sync_keys();
  // Signs and stores a checkpoint of the audit chain head (when there is a key and the head
  // moved since the last one), and logs it.
  boost::asio::awaitable<void> checkpoint_audit();

  // routes.cpp
  boost::asio::awaitable<http_response> handle(http_request& req);
  // The body a request may send, from its header: a release from a known deploy or admin key may
  // be release_body_limit large; 0 for every other (the server's own limit).
  std::size_t body_limit_for(const boost::beast::http::request_header<>& h) const;
  // Counts an answer in the route's metrics (requests by status, latency).
  void observe(const std::string& route, unsigned status, std::chrono::steady_clock::time_point start);
  void observe(route_metrics& m, unsigned status, std::chrono::steady_clock::time_point start);
  // An API route; `session`, from the dashboard, stands for the API key (and only operator
  // routes are reached through it).
  boost::asio::awaitable<http_response> dispatch(http_request& req, std::string& route,
                                                 const core::principal* session = nullptr);
  // Who holds API key `key` (its text as sent), or the 401 to answer.
  boost::asio::awaitable<std::variant<core::principal, http_response>> key_principal(std::string_view key);

  // ui.cpp
  boost::asio::awaitable<http_response> handle_ui(http_request& req);

  // metrics_text.cpp
  std::string render_metrics() const;
};

// webhooks.cpp: the delivery loop, started with the service.
boost::asio::awaitable<void> webhook_loop(std::shared_ptr<service::impl> self);

}  // namespace nixfleet::coordinator::io
