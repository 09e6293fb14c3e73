// The coordinator service. All fleet state lives in memory and is touched on the io thread only;
// every mutation is applied in memory, written to the store as one change set, and answered once
// durable. Desired states are published to pollers only after they are durable.
#include "nixfleet/coordinator/io/service.hpp"

#include "nixfleet/common/log.hpp"
#include "nixfleet/common/prometheus.hpp"
#include "nixfleet/common/systemd.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/coordinator/core/rollout.hpp"
#include "nixfleet/coordinator/io/db_worker.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>
#include <variant>

namespace nixfleet::coordinator::io {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using protocol::role;
using protocol::timestamp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

constexpr std::size_t max_history = 20;
constexpr std::array<double, 12> latency_buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

http_response json_response(unsigned status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http_response error_response(unsigned status, std::string code, std::string message) {
  return json_response(status, protocol::serialize(protocol::error_body{std::move(code), std::move(message)}));
}

http_response no_content() {
  http_response r;
  r.status = 204;
  return r;
}

int rank(role r) {
  switch (r) {
    case role::readonly: return 0;
    case role::deploy: return 1;
    case role::admin: return 2;
  }
  return 0;
}

bool is_key_text(std::string_view k) {
  if (!k.starts_with("nfk_") || k.size() != 4 + 64) return false;
  return std::all_of(k.begin() + 4, k.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A CSV cell safe to open in a spreadsheet: quoted, and never starting a formula.
std::string csv_cell(std::string_view s) {
  std::string out = "\"";
  if (!s.empty() && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r'))
    out.push_back('\'');
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

bool lifecycle_kind(protocol::report_kind k) {
  return k != protocol::report_kind::heartbeat && k != protocol::report_kind::health;
}

struct principal {
  std::string actor;
  role level = role::readonly;
};

struct route_metrics {
  std::map<unsigned, std::uint64_t> by_status;
  std::array<std::uint64_t, latency_buckets.size()> buckets{};
  std::uint64_t count = 0;
  double sum = 0;
};

}  // namespace

struct service::impl : std::enable_shared_from_this<impl> {
  struct machine_entry {
    machine_record rec;
    std::string body;  // the desired state as served; empty when none
    std::string etag;
  };

  impl(asio::io_context& c, service_options o) : ctx(c), opts(std::move(o)) {
    if (!opts.clock)
      opts.clock = [] { return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now()); };
    store = open_sqlite(opts.db_path);
    db.emplace(*store);
    load();
  }

  asio::io_context& ctx;
  service_options opts;
  std::unique_ptr<storage> store;
  std::optional<db_worker> db;
  std::optional<http_server> api;
  std::optional<http_server> metrics_server;
  bool stopping = false;
  bool fatal = false;

  std::unordered_map<std::string, machine_entry> machines;
  std::map<std::string, protocol::release> releases;
  std::uint64_t max_release_sequence = 0;  // a new release must be numbered above it
  std::optional<protocol::revocation_list> revocations;  // stored as signed; agents verify it
  std::map<std::string, protocol::rollout_detail> rollouts;
  // Machine → the active rollout it is in, and its index among that rollout's hosts.
  struct membership {
    std::string rollout;
    std::size_t host = 0;
  };
  std::unordered_map<std::string, membership> active_rollout_of;
  std::unordered_map<std::string, key_record> keys;                // by hash
  std::map<std::string, route_metrics> route_stats;
  std::uint64_t reports_ingested = 0;
  std::uint64_t writes_in_flight = 0;

  // ------------------------------------------------------------------------------------
  // Loading and publishing

  void load() {
    auto state = store->load();
    for (auto& r : state.releases) {
      max_release_sequence = std::max(max_release_sequence, r.sequence);
      releases.emplace(r.id, std::move(r));
    }
    revocations = std::move(state.revocations);
    for (auto& r : state.rollouts) rollouts.emplace(r.id, std::move(r));
    for (auto& k : state.keys) keys.emplace(k.hash, std::move(k));
    for (auto& m : state.machines) {
      auto id = m.id;
      machines[id].rec = std::move(m);
    }
    for (const auto& [id, r] : rollouts)
      if (core::is_active(r.status))
        for (std::size_t i = 0; i < r.hosts.size(); ++i) active_rollout_of[r.hosts[i].hostname] = {id, i};
    for (auto& [id, m] : machines) publish(m);
    log::info("store_loaded", {{"machines", machines.size()},
                               {"releases", releases.size()},
                               {"rollouts", rollouts.size()},
                               {"keys", keys.size()}});
  }

  std::optional<std::uint32_t> poll_hint_for(const std::string& machine_id) const {
    auto it = active_rollout_of.find(machine_id);
    if (it == active_rollout_of.end()) return std::nullopt;
    const auto& r = rollouts.at(it->second.rollout);
    if (!core::is_active(r.status)) return std::nullopt;
    const auto state = r.hosts.at(it->second.host).state;
    if (state == protocol::host_state::soaked || state == protocol::host_state::failed ||
        state == protocol::host_state::left)
      return std::nullopt;
    return opts.poll_hint_s;
  }

  void publish(machine_entry& m) {
    if (!m.rec.desired) {
      m.body.clear();
      m.etag = "\"none\"";
      return;
    }
    auto d = *m.rec.desired;
    d.poll_hint = poll_hint_for(m.rec.id);
    if (revocations) d.revocations_sequence = revocations->sequence;
    m.body = protocol::serialize(d);
    m.etag = "\"" + protocol::sha256_hex(m.body).substr(0, 32) + "\"";
  }

  void publish(const std::vector<std::string>& ids) {
    for (const auto& id : ids)
      if (auto it = machines.find(id); it != machines.end()) publish(it->second);
  }

  // Writes `cs`; once durable, publishes the given machines. A failed write of state already
  // acted on in memory is fatal.
  asio::awaitable<bool> commit(change_set cs, std::vector<std::string> republish) {
    if (cs.empty()) {
      publish(republish);
      co_return true;
    }
    ++writes_in_flight;
    std::string err = co_await db->commit(std::move(cs));
    --writes_in_flight;
    if (!err.empty()) {
      fatal = true;
      log::error("store_commit_fatal", {{"error", err}});
      if (opts.on_fatal) opts.on_fatal(err);
      co_return false;
    }
    publish(republish);
    co_return true;
  }

  // Memory runs ahead of the disk while a commit is in flight. An operator read waits until
  // everything already queued is durable, so nothing it is shown can be lost to a crash.
  asio::awaitable<void> settled() {
    if (writes_in_flight == 0) co_return;
    auto barrier = [](storage&) { return true; };
    co_await db->run<bool>(std::move(barrier));
  }

  // ------------------------------------------------------------------------------------
  // Desired states

  // The desired state for `path` on `hostname` from release `release_id` when it has that entry,
  // else from the newest release that does, else unsigned.
  protocol::desired_state make_desired(const std::string& hostname, const std::string& path,
                                       const std::optional<std::string>& release_id, std::uint32_t attempt,
                                       const std::optional<std::string>& rollout_id) const {
    protocol::desired_state d;
    d.machine_id = hostname;
    d.store_path = path;
    d.attempt = attempt;
    d.rollout_id = rollout_id;
    d.release_id = "unreleased";
    auto from = [&](const protocol::release& r) {
      for (const auto& e : r.entries)
        if (e.hostname == hostname && e.store_path == path) {
          d.release_id = r.id;
          d.cache_urls = r.cache_urls;
          d.entry_signature = e.signature;
          d.release_created_at = r.created_at;
          d.release_sequence = r.sequence;
          d.activation = r.activation;
          return true;
        }
      return false;
    };
    if (release_id)
      if (auto it = releases.find(*release_id); it != releases.end() && from(it->second)) return d;
    const protocol::release* newest = nullptr;
    for (const auto& [id, r] : releases)
      for (const auto& e : r.entries)
        if (e.hostname == hostname && e.store_path == path && (!newest || r.created_at > newest->created_at))
          newest = &r;
    if (newest) from(*newest);
    return d;
  }

  // ------------------------------------------------------------------------------------
  // Rollouts

  std::vector<core::observation> observe(const protocol::rollout_detail& r) const {
    std::vector<core::observation> out;
    out.reserve(r.hosts.size());
    for (const auto& h : r.hosts) {
      core::observation o;
      o.hostname = h.hostname;
      auto it = machines.find(h.hostname);
      if (it == machines.end()) {
        o.exists = false;
        out.push_back(std::move(o));
        continue;
      }
      const auto& m = it->second.rec;
      o.lifecycle = m.state;
      o.current_path = m.current_path;
      if (m.desired) {
        o.desired_path = m.desired->store_path;
        o.desired_release_id = m.desired->release_id;
      }
      o.attempt = m.attempt;
      if (m.last_event) {
        o.last_kind = m.last_event->kind;
        o.last_path = m.last_event->store_path;
        o.last_message = m.last_event->message;
        o.last_at = m.last_event->received_at;
      }
      out.push_back(std::move(o));
    }
    return out;
  }

  // Puts a step into memory and into `cs`; returns the machines to publish once durable.
  std::vector<std::string> apply_step(core::step s, change_set& cs, const std::string& actor) {
    const auto now = opts.clock();
    auto& current = rollouts[s.rollout.id];
    const bool existed = !current.id.empty();
    std::vector<std::string> republish;
    rollout_write w;
    w.head = s.rollout;
    w.head.hosts.clear();
    w.head.events.clear();
    const bool status_changed = !existed || current.status != s.rollout.status;
    for (std::size_t i = 0; i < s.rollout.hosts.size(); ++i) {
      if (!existed || i >= current.hosts.size() || !(current.hosts[i] == s.rollout.hosts[i])) {
        w.hosts.emplace_back(i, s.rollout.hosts[i]);
        republish.push_back(s.rollout.hosts[i].hostname);
      } else if (status_changed) {
        republish.push_back(s.rollout.hosts[i].hostname);
      }
    }
    w.events = s.events;
    for (const auto& e : s.events) {
      json::object detail{{"rollout_id", s.rollout.id}, {"message", e.message}};
      if (e.wave) detail["wave"] = *e.wave;
      if (e.hostname) detail["hostname"] = *e.hostname;
      cs.audit.push_back({now, actor, "rollout." + e.kind, e.hostname ? *e.hostname : s.rollout.id, std::move(detail)});
    }
    for (const auto& c : s.changes) {
      auto it = machines.find(c.hostname);
      if (it == machines.end()) continue;
      auto& m = it->second.rec;
      const bool dispatch = c.why == core::desired_change::reason::dispatch;
      m.desired = make_desired(c.hostname, c.store_path, c.release_id, c.attempt,
                               dispatch ? std::optional<std::string>(s.rollout.id) : std::nullopt);
      m.attempt = std::max(m.attempt, c.attempt);
      cs.machines.push_back(m);
      republish.push_back(c.hostname);
    }
    cs.rollouts.push_back(std::move(w));
    const bool active = core::is_active(s.rollout.status);
    for (std::size_t i = 0; i < s.rollout.hosts.size(); ++i) {
      const auto& h = s.rollout.hosts[i];
      if (active) active_rollout_of[h.hostname] = {s.rollout.id, i};
      else if (auto it = active_rollout_of.find(h.hostname);
               it != active_rollout_of.end() && it->second.rollout == s.rollout.id)
        active_rollout_of.erase(it);
    }
    current = std::move(s.rollout);
    return republish;
  }

  asio::awaitable<void> reconcile_all() {
    std::vector<std::string> ids;
    for (const auto& [id, r] : rollouts)
      if (core::is_active(r.status)) ids.push_back(id);
    for (const auto& id : ids) {
      auto it = rollouts.find(id);
      if (it == rollouts.end() || !core::is_active(it->second.status)) continue;
      auto s = core::reconcile(it->second, observe(it->second), opts.clock());
      if (s.changes.empty() && s.events.empty() && s.rollout == it->second) continue;
      change_set cs;
      auto republish = apply_step(std::move(s), cs, "coordinator");
      co_await commit(std::move(cs), std::move(republish));
    }
  }

  static asio::awaitable<void> reconcile_loop(std::shared_ptr<impl> self) {
    asio::steady_timer t(self->ctx);
    while (!self->stopping && !self->fatal) {
      t.expires_after(self->opts.reconcile_interval);
      co_await t.async_wait(use_tuple);
      if (self->stopping || self->fatal) break;
      try {
        co_await self->reconcile_all();
      } catch (const std::exception& e) {
        log::error("reconcile_failed", {{"error", e.what()}});
      }
    }
  }

  static asio::awaitable<void> prune_loop(std::shared_ptr<impl> self) {
    asio::steady_timer t(self->ctx);
    while (!self->stopping && !self->fatal) {
      const auto before = self->opts.clock() - self->opts.report_retention;
      try {
        auto job = [before](storage& s) { return s.prune_reports(before); };
        auto n = co_await self->db->run<std::uint64_t>(std::move(job));
        if (n > 0) log::info("reports_pruned", {{"rows", n}});
      } catch (const std::exception& e) {
        log::error("prune_failed", {{"error", e.what()}});
      }
      t.expires_after(self->opts.prune_interval);
      co_await t.async_wait(use_tuple);
    }
  }

  // ------------------------------------------------------------------------------------
  // Authentication

  std::optional<http_response> authorize_agent(const http_request& req, const std::string& id) const {
    if (opts.insecure_http) return std::nullopt;
    if (!req.client_cn)
      return error_response(401, "client_certificate_required", "agent routes need a client certificate");
    if (*req.client_cn != id)
      return error_response(403, "forbidden", "the client certificate is not for this machine");
    return std::nullopt;
  }

  asio::awaitable<std::variant<principal, http_response>> authenticate(const http_request& req, role need) {
    auto it = req.msg.find(http::field::authorization);
    if (it == req.msg.end())
      co_return error_response(401, "unauthenticated", "an API key is required (Authorization: Bearer nfk_...)");
    std::string_view v = it->value();
    if (!v.starts_with("Bearer ") || !is_key_text(v.substr(7)))
      co_return error_response(401, "unauthenticated", "the Authorization header does not hold an API key");
    const std::string hash = protocol::sha256_hex(v.substr(7));
    auto k = keys.find(hash);
    if (k == keys.end()) {
      auto job = [hash](storage& s) { return s.find_key(hash); };
      auto found = co_await db->run<std::optional<key_record>>(std::move(job));
      if (!found) co_return error_response(401, "unauthenticated", "unknown API key");
      k = keys.emplace(hash, std::move(*found)).first;
    }
    k->second.info.last_used_at = opts.clock();
    if (rank(k->second.info.role) < rank(need))
      co_return error_response(403, "forbidden",
                               "this needs the " + std::string(protocol::to_string(need)) + " role (the key has " +
                                   std::string(protocol::to_string(k->second.info.role)) + ")");
    co_return principal{k->second.info.name, k->second.info.role};
  }

  // ------------------------------------------------------------------------------------
  // Views

  protocol::machine_status status_of(const machine_record& m) const {
    protocol::machine_status s;
    s.id = m.id;
    s.tags = m.tags;
    s.state = m.state;
    s.current_path = m.current_path;
    if (m.desired) s.desired_path = m.desired->store_path;
    s.booted_path = m.booted_path;
    if (auto it = active_rollout_of.find(m.id); it != active_rollout_of.end()) s.rollout_id = it->second.rollout;
    s.last_seen = m.last_seen;
    s.last_report = m.last_report;
    s.health = m.health;
    s.history = m.history;
    return s;
  }

  static std::string array_of(const std::vector<json::value>& items) {
    json::array a(items.begin(), items.end());
    return json::serialize(a);
  }

  // ------------------------------------------------------------------------------------
  // Routing

  asio::awaitable<http_response> handle(http_request& req) {
    const auto start = std::chrono::steady_clock::now();
    std::string route = "unmatched";
    http_response r = co_await dispatch(req, route);
    r.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
    auto& m = route_stats[route];
    ++m.by_status[r.status];
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++m.count;
    m.sum += secs;
    for (std::size_t i = 0; i < latency_buckets.size(); ++i)
      if (secs <= latency_buckets[i]) ++m.buckets[i];
    co_return r;
  }

  asio::awaitable<http_response> dispatch(http_request& req, std::string& route) {
    if (auto h = req.msg.find(protocol::protocol_header); h != req.msg.end()) {
      std::string_view v = h->value();
      auto major = v.substr(0, v.find('.'));
      if (major != std::to_string(protocol::protocol_version))
        co_return error_response(426, "unsupported_protocol", "this coordinator speaks protocol version 1");
    }
    auto parsed = boost::urls::parse_origin_form(req.msg.target());
    if (!parsed) co_return error_response(400, "bad_request", "the request target is not a valid path");
    std::vector<std::string> seg;
    for (auto s : parsed->segments()) seg.push_back(s);
    std::map<std::string, std::string> query;
    for (auto p : parsed->params()) query[p.key] = p.value;
    const auto method = req.msg.method();

    auto is = [&](std::initializer_list<std::string_view> pattern) {
      if (seg.size() != pattern.size()) return false;
      std::size_t i = 0;
      for (auto p : pattern) {
        if (p != "*" && seg[i] != p) return false;
        ++i;
      }
      return true;
    };
    auto bad_id = [&](const std::string& id) -> std::optional<http_response> {
      if (protocol::check_identifier(id))
        return error_response(400, "invalid_identifier", "not a valid identifier: [A-Za-z0-9][A-Za-z0-9._-]{0,127}");
      return std::nullopt;
    };
    auto wrong_method = [] { return error_response(405, "method_not_allowed", "this path does not take that method"); };

    if (is({"healthz"})) {
      route = "/healthz";
      co_return json_response(200, R"({"status":"ok"})");
    }
    if (seg.size() < 3 || seg[0] != "api" || seg[1] != "v1")
      co_return error_response(404, "not_found", "no such route");
    if (method == http::verb::get && !is({"api", "v1", "machines", "*", "desired"})) co_await settled();

    if (is({"api", "v1", "machines", "*", "desired"})) {
      route = "/api/v1/machines/{id}/desired";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method == http::verb::get) co_return get_desired(req, seg[3]);
      if (method == http::verb::delete_) co_return co_await clear_desired(req, seg[3]);
      co_return wrong_method();
    }
    if (is({"api", "v1", "machines", "*", "reports"})) {
      route = "/api/v1/machines/{id}/reports";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method != http::verb::post) co_return wrong_method();
      co_return co_await post_reports(req, seg[3]);
    }
    if (is({"api", "v1", "machines", "*", "rollback"})) {
      route = "/api/v1/machines/{id}/rollback";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method != http::verb::post) co_return wrong_method();
      co_return co_await rollback_machine(req, seg[3]);
    }
    if (is({"api", "v1", "machines"})) {
      route = "/api/v1/machines";
      if (method != http::verb::get) co_return wrong_method();
      co_return co_await list_machines(req, query);
    }
    if (is({"api", "v1", "machines", "*"})) {
      route = "/api/v1/machines/{id}";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method == http::verb::get) co_return co_await get_machine(req, seg[3]);
      if (method == http::verb::put) co_return co_await put_machine(req, seg[3]);
      co_return wrong_method();
    }
    if (is({"api", "v1", "revocations"})) {
      route = "/api/v1/revocations";
      if (method == http::verb::get) co_return co_await get_revocations(req);
      if (method == http::verb::put) co_return co_await put_revocations(req);
      co_return wrong_method();
    }
    if (is({"api", "v1", "releases"})) {
      route = "/api/v1/releases";
      if (method == http::verb::get) co_return co_await list_releases(req);
      if (method == http::verb::post) co_return co_await create_release(req);
      co_return wrong_method();
    }
    if (is({"api", "v1", "releases", "*"})) {
      route = "/api/v1/releases/{id}";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method == http::verb::get) co_return co_await get_release(req, seg[3]);
      if (method == http::verb::delete_) co_return co_await delete_release(req, seg[3]);
      co_return wrong_method();
    }
    if (is({"api", "v1", "releases", "*", "diff", "*"})) {
      route = "/api/v1/releases/{a}/diff/{b}";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (auto e = bad_id(seg[5])) co_return *e;
      if (method != http::verb::get) co_return wrong_method();
      co_return co_await diff_releases(req, seg[3], seg[5]);
    }
    if (is({"api", "v1", "rollouts"})) {
      route = "/api/v1/rollouts";
      if (method == http::verb::get) co_return co_await list_rollouts(req, query);
      if (method == http::verb::post) co_return co_await create_rollout(req);
      co_return wrong_method();
    }
    if (is({"api", "v1", "rollouts", "*"})) {
      route = "/api/v1/rollouts/{id}";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method != http::verb::get) co_return wrong_method();
      co_return co_await get_rollout(req, seg[3]);
    }
    if (is({"api", "v1", "rollouts", "*", "*"})) {
      route = "/api/v1/rollouts/{id}/" + (seg[4] == "pause" || seg[4] == "resume" || seg[4] == "cancel" ? seg[4] : "?");
      if (auto e = bad_id(seg[3])) co_return *e;
      if (route.ends_with("?")) co_return error_response(404, "not_found", "no such rollout action");
      if (method != http::verb::post) co_return wrong_method();
      co_return co_await command_rollout(req, seg[3], seg[4]);
    }
    if (is({"api", "v1", "audit"})) {
      route = "/api/v1/audit";
      if (method != http::verb::get) co_return wrong_method();
      co_return co_await list_audit(req, query);
    }
    if (is({"api", "v1", "audit", "export"})) {
      route = "/api/v1/audit/export";
      if (method != http::verb::get) co_return wrong_method();
      co_return co_await export_audit(req, query);
    }
    if (is({"api", "v1", "audit", "verify"})) {
      route = "/api/v1/audit/verify";
      if (method != http::verb::get) co_return wrong_method();
      co_return co_await verify_audit(req);
    }
    if (is({"api", "v1", "keys"})) {
      route = "/api/v1/keys";
      if (method == http::verb::get) co_return co_await list_keys(req);
      if (method == http::verb::post) co_return co_await create_key_route(req);
      co_return wrong_method();
    }
    if (is({"api", "v1", "keys", "*"})) {
      route = "/api/v1/keys/{id}";
      if (auto e = bad_id(seg[3])) co_return *e;
      if (method != http::verb::delete_) co_return wrong_method();
      co_return co_await delete_key(req, seg[3]);
    }
    co_return error_response(404, "not_found", "no such route");
  }

  template <class T>
  static std::variant<T, http_response> body_of(const http_request& req) {
    auto d = protocol::parse<T>(req.msg.body());
    if (!d) {
      const auto& e = d.error();
      std::string code = e.code == protocol::errc::invalid_json ? "invalid_json" : "invalid_field";
      return error_response(400, code, e.what());
    }
    return std::move(*d);
  }

#define NIXFLEET_AUTH(need)                                 \
  auto auth_ = co_await authenticate(req, need);            \
  if (auto* r_ = std::get_if<http_response>(&auth_)) co_return std::move(*r_); \
  const principal who = std::get<principal>(std::move(auth_));

#define NIXFLEET_BODY(T, var)                                         \
  auto var##_ = body_of<T>(req);                                      \
  if (auto* r_ = std::get_if<http_response>(&var##_)) co_return std::move(*r_); \
  T var = std::get<T>(std::move(var##_));

  // ------------------------------------------------------------------------------------
  // Agent routes

  // The poll path: memory only.
  http_response get_desired(const http_request& req, const std::string& id) {
    if (auto e = authorize_agent(req, id)) return *e;
    auto it = machines.find(id);
    if (it == machines.end() || it->second.body.empty()) {
      auto r = no_content();
      return r;
    }
    const auto& m = it->second;
    if (auto inm = req.msg.find(http::field::if_none_match); inm != req.msg.end() && inm->value() == m.etag) {
      http_response r;
      r.status = 304;
      r.headers.emplace_back("ETag", m.etag);
      return r;
    }
    auto r = json_response(200, m.body);
    r.headers.emplace_back("ETag", m.etag);
    return r;
  }

  asio::awaitable<http_response> post_reports(const http_request& req, const std::string& id) {
    if (auto e = authorize_agent(req, id)) co_return *e;
    NIXFLEET_BODY(protocol::report_batch, batch)
    if (batch.reports.empty()) co_return json_response(200, protocol::serialize(protocol::report_ack{0}));
    const auto now = opts.clock();
    change_set cs;
    auto [it, created] = machines.try_emplace(id);
    auto& m = it->second.rec;
    if (created) {
      m.id = id;
      cs.audit.push_back({now, "agent:" + id, "machine.registered", id, json::object{}});
    }
    std::sort(batch.reports.begin(), batch.reports.end(),
              [](const protocol::report& a, const protocol::report& b) { return a.seq < b.seq; });
    std::uint64_t max_seq = 0;
    bool republish = false;
    for (const auto& r : batch.reports) {
      max_seq = std::max(max_seq, r.seq);
      cs.reports.push_back({id, now, r});
      // A report older than what was applied is a replay; one with a lower sequence but a
      // later time means the agent started its numbering again (its state was wiped).
      const bool fresh = r.seq > m.acked_seq || (m.last_report && r.at > m.last_report->at && r.seq < m.acked_seq);
      if (!fresh) continue;
      m.acked_seq = r.seq;
      m.last_seen = now;
      if (r.current_path && r.current_path != m.current_path) {
        json::object detail{{"from", m.current_path ? json::value(*m.current_path) : json::value(nullptr)},
                            {"to", *r.current_path}};
        cs.audit.push_back({now, "agent:" + id, "machine.current_changed", id, std::move(detail)});
        m.current_path = r.current_path;
      }
      if (r.booted_path) m.booted_path = r.booted_path;
      // The machine's health is that of what it runs: a failed gate's results are about the
      // target it rolled back from, and stay in that report.
      if (r.health && (!r.store_path || r.store_path == r.current_path)) {
        m.health = r.health;
        m.health_path = r.current_path;
      }
      if (lifecycle_kind(r.kind)) {
        m.last_event = lifecycle_event{r.kind, r.store_path, r.message, now};
        using k = protocol::report_kind;
        if (r.kind == k::confirmed || r.kind == k::rolled_back || r.kind == k::rollback_failed ||
            r.kind == k::activation_failed || r.kind == k::rejected || r.kind == k::fetch_failed) {
          json::object detail{{"kind", protocol::to_string(r.kind)}};
          if (r.store_path) detail["store_path"] = *r.store_path;
          if (r.message) detail["message"] = *r.message;
          cs.audit.push_back({now, "agent:" + id, "machine." + std::string(protocol::to_string(r.kind)), id,
                              std::move(detail)});
        }
        // `up_to_date`: the host runs, and has confirmed, the path it was asked for.
        if ((r.kind == k::confirmed || r.kind == k::up_to_date) && r.store_path &&
            (m.history.empty() || m.history.front().store_path != *r.store_path)) {
          m.history.insert(m.history.begin(), protocol::confirmed_generation{*r.store_path, now});
          if (m.history.size() > max_history) m.history.resize(max_history);
        }
      }
      m.last_report = r;
      republish = true;
    }
    cs.machines.push_back(m);
    reports_ingested += batch.reports.size();
    std::vector<std::string> pub;
    if (republish || created) pub.push_back(id);
    if (!co_await commit(std::move(cs), std::move(pub)))
      co_return error_response(503, "unavailable", "the coordinator could not store the reports");
    co_return json_response(200, protocol::serialize(protocol::report_ack{max_seq}));
  }

  // ------------------------------------------------------------------------------------
  // Machines

  asio::awaitable<http_response> list_machines(const http_request& req, const std::map<std::string, std::string>& q) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    std::optional<protocol::lifecycle> state;
    if (auto it = q.find("state"); it != q.end()) {
      for (auto l : {protocol::lifecycle::active, protocol::lifecycle::maintenance, protocol::lifecycle::decommissioned})
        if (protocol::to_string(l) == it->second) state = l;
      if (!state)
        co_return error_response(400, "invalid_query", "state must be active, maintenance or decommissioned");
    }
    std::optional<std::string> tag;
    if (auto it = q.find("tag"); it != q.end()) tag = it->second;
    std::vector<const machine_record*> picked;
    for (const auto& [id, m] : machines) {
      if (state && m.rec.state != *state) continue;
      if (tag && std::find(m.rec.tags.begin(), m.rec.tags.end(), *tag) == m.rec.tags.end()) continue;
      picked.push_back(&m.rec);
    }
    std::sort(picked.begin(), picked.end(), [](auto* a, auto* b) { return a->id < b->id; });
    std::vector<json::value> items;
    items.reserve(picked.size());
    for (auto* m : picked) items.push_back(protocol::to_json(status_of(*m)));
    co_return json_response(200, array_of(items));
  }

  asio::awaitable<http_response> get_machine(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    auto it = machines.find(id);
    if (it == machines.end()) co_return error_response(404, "not_found", "no such machine");
    co_return json_response(200, protocol::serialize(status_of(it->second.rec)));
  }

  asio::awaitable<http_response> put_machine(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::admin)
    NIXFLEET_BODY(protocol::machine_update, update)
    change_set cs;
    auto [it, created] = machines.try_emplace(id);
    auto& m = it->second.rec;
    if (created) m.id = id;
    json::object detail;
    if (update.tags) {
      m.tags = *update.tags;
      json::array tags;
      for (const auto& t : m.tags) tags.push_back(json::value(t));
      detail["tags"] = std::move(tags);
    }
    if (update.state) {
      m.state = *update.state;
      detail["lifecycle"] = protocol::to_string(m.state);
    }
    cs.machines.push_back(m);
    cs.audit.push_back({opts.clock(), who.actor, created ? "machine.created" : "machine.updated", id, std::move(detail)});
    std::vector<std::string> pub{id};  // named: GCC 12 mishandles braced lists in co_await
    if (!co_await commit(std::move(cs), std::move(pub)))
      co_return error_response(503, "unavailable", "the coordinator could not store the change");
    co_return json_response(200, protocol::serialize(status_of(m)));
  }

  asio::awaitable<http_response> clear_desired(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::admin)
    auto it = machines.find(id);
    if (it == machines.end()) co_return error_response(404, "not_found", "no such machine");
    if (auto r = active_rollout_of.find(id); r != active_rollout_of.end())
      co_return error_response(409, "in_rollout", "the machine is in rollout " + r->second.rollout + "; cancel it first");
    auto& m = it->second.rec;
    json::object detail;
    if (m.desired) detail["was"] = m.desired->store_path;
    m.desired.reset();
    change_set cs;
    cs.machines.push_back(m);
    cs.audit.push_back({opts.clock(), who.actor, "machine.desired_cleared", id, std::move(detail)});
    std::vector<std::string> pub{id};  // named: GCC 12 mishandles braced lists in co_await
    if (!co_await commit(std::move(cs), std::move(pub)))
      co_return error_response(503, "unavailable", "the coordinator could not store the change");
    co_return no_content();
  }

  asio::awaitable<http_response> rollback_machine(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::deploy)
    protocol::rollback_request body;
    if (!req.msg.body().empty()) {
      auto b = body_of<protocol::rollback_request>(req);
      if (auto* r = std::get_if<http_response>(&b)) co_return std::move(*r);
      body = std::get<protocol::rollback_request>(std::move(b));
    }
    auto it = machines.find(id);
    if (it == machines.end()) co_return error_response(404, "not_found", "no such machine");
    if (auto r = active_rollout_of.find(id); r != active_rollout_of.end())
      co_return error_response(409, "in_rollout", "the machine is in rollout " + r->second.rollout + "; pause or cancel it first");
    auto& m = it->second.rec;
    std::optional<std::string> target = body.store_path;
    if (!target) {
      for (const auto& h : m.history)
        if (h.store_path != m.current_path) {
          target = h.store_path;
          break;
        }
      if (!target) co_return error_response(409, "no_previous", "the machine has no earlier confirmed generation");
    }
    if (body.statement && body.statement->hostname != id)
      co_return error_response(400, "invalid_field", "statement.hostname: the rollback statement is for another machine");
    auto d = make_desired(id, *target, std::nullopt, m.attempt + 1, std::nullopt);
    if (d.release_id == "unreleased")
      co_return error_response(409, "not_released",
                               "no release has this path for this machine; agents with trusted keys would refuse it");
    // Carried to the agent as signed; whether it is needed (and valid) is the agent's judgement.
    d.rollback = body.statement;
    m.attempt += 1;
    m.desired = d;
    change_set cs;
    cs.machines.push_back(m);
    json::object detail{{"store_path", *target}, {"release_id", d.release_id}};
    if (body.statement) {
      detail["statement_reason"] = body.statement->reason;
      detail["statement_expires_at"] = protocol::format_time(body.statement->expires_at);
    }
    cs.audit.push_back({opts.clock(), who.actor, "machine.rollback", id, std::move(detail)});
    std::vector<std::string> pub{id};  // named: GCC 12 mishandles braced lists in co_await
    if (!co_await commit(std::move(cs), std::move(pub)))
      co_return error_response(503, "unavailable", "the coordinator could not store the change");
    co_return json_response(200, protocol::serialize(status_of(m)));
  }

  // ------------------------------------------------------------------------------------
  // Revocations: signed by an operator, kept and served as they are. The coordinator cannot
  // forge or shorten one (agents verify it, and refuse a lower sequence); it can only withhold it.

  asio::awaitable<http_response> get_revocations(const http_request& req) {
    // Agents (any machine's certificate) and operators read it.
    const bool agent = req.msg.find(http::field::authorization) == req.msg.end() && (req.client_cn || opts.insecure_http);
    if (!agent) {
      NIXFLEET_AUTH(role::readonly)
      (void)who;
    }
    if (!revocations) co_return error_response(404, "not_found", "no revocation list has been published");
    co_return json_response(200, protocol::serialize(*revocations));
  }

  asio::awaitable<http_response> put_revocations(const http_request& req) {
    NIXFLEET_AUTH(role::deploy)
    NIXFLEET_BODY(protocol::revocation_list, body)
    const auto held = revocations ? revocations->sequence : 0;
    if (body.sequence <= held)
      co_return error_response(409, "stale_sequence",
                               "sequence " + std::to_string(body.sequence) + " is not above the current list's (" +
                                   std::to_string(held) + ")");
    change_set cs;
    cs.revocations = body;
    json::object detail{{"sequence", body.sequence},
                        {"releases", body.releases.size()},
                        {"store_paths", body.store_paths.size()},
                        {"keys", body.keys.size()}};
    cs.audit.push_back({opts.clock(), who.actor, "revocations.published", "revocations", std::move(detail)});
    revocations = body;
    std::vector<std::string> all;  // every desired state now announces the new sequence
    all.reserve(machines.size());
    for (const auto& [id, m] : machines) all.push_back(id);
    if (!co_await commit(std::move(cs), std::move(all)))
      co_return error_response(503, "unavailable", "the coordinator could not store the revocation list");
    co_return json_response(200, protocol::serialize(body));
  }

  // ------------------------------------------------------------------------------------
  // Releases

  asio::awaitable<http_response> list_releases(const http_request& req) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    std::vector<const protocol::release*> all;
    for (const auto& [id, r] : releases) all.push_back(&r);
    std::sort(all.begin(), all.end(), [](auto* a, auto* b) { return a->created_at > b->created_at; });
    std::vector<json::value> items;
    for (auto* r : all) items.push_back(protocol::to_json(*r));
    co_return json_response(200, array_of(items));
  }

  asio::awaitable<http_response> get_release(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    auto it = releases.find(id);
    if (it == releases.end()) co_return error_response(404, "not_found", "no such release");
    co_return json_response(200, protocol::serialize(it->second));
  }

  asio::awaitable<http_response> create_release(const http_request& req) {
    NIXFLEET_AUTH(role::deploy)
    NIXFLEET_BODY(protocol::release_request, body)
    if (releases.contains(body.id))
      co_return error_response(409, "exists", "a release with this id exists; releases are immutable");
    if (body.entries.empty()) co_return error_response(400, "invalid_field", "entries: at least one entry");
    if (body.sequence == 0)
      co_return error_response(400, "invalid_field",
                               "sequence: releases carry a signed sequence number (sign them with `nixfleet release create`)");
    if (body.sequence <= max_release_sequence)
      co_return error_response(409, "stale_sequence",
                               "sequence " + std::to_string(body.sequence) + " is not above the newest release's (" +
                                   std::to_string(max_release_sequence) + "); sign it again with a higher one");
    std::set<std::string> seen;
    for (std::size_t i = 0; i < body.entries.size(); ++i)
      if (!seen.insert(body.entries[i].hostname).second)
        co_return error_response(400, "invalid_field",
                                 "entries[" + std::to_string(i) + "].hostname: appears twice in the release");
    protocol::release r{body.id,        body.created_at, body.sequence, body.activation, who.actor, body.flake_ref,
                        body.flake_rev, body.cache_urls, body.entries};
    change_set cs;
    cs.releases.push_back(r);
    json::object detail{{"entries", r.entries.size()}, {"sequence", r.sequence}};
    if (r.flake_ref) detail["flake_ref"] = *r.flake_ref;
    if (r.flake_rev) detail["flake_rev"] = *r.flake_rev;
    cs.audit.push_back({opts.clock(), who.actor, "release.created", r.id, std::move(detail)});
    releases.emplace(r.id, r);
    max_release_sequence = r.sequence;
    if (!co_await commit(std::move(cs), std::vector<std::string>()))
      co_return error_response(503, "unavailable", "the coordinator could not store the release");
    co_return json_response(201, protocol::serialize(r));
  }

  asio::awaitable<http_response> delete_release(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::admin)
    auto it = releases.find(id);
    if (it == releases.end()) co_return error_response(404, "not_found", "no such release");
    for (const auto& [rid, r] : rollouts)
      if (r.spec.release_id == id)
        co_return error_response(409, "in_use", "rollout " + rid + " references this release");
    releases.erase(it);
    change_set cs;
    cs.deleted_releases.push_back(id);
    cs.audit.push_back({opts.clock(), who.actor, "release.deleted", id, json::object{}});
    if (!co_await commit(std::move(cs), std::vector<std::string>()))
      co_return error_response(503, "unavailable", "the coordinator could not store the change");
    co_return no_content();
  }

  asio::awaitable<http_response> diff_releases(const http_request& req, const std::string& a, const std::string& b) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    auto ia = releases.find(a), ib = releases.find(b);
    if (ia == releases.end() || ib == releases.end()) co_return error_response(404, "not_found", "no such release");
    std::map<std::string, std::string> pa, pb;
    for (const auto& e : ia->second.entries) pa[e.hostname] = e.store_path;
    for (const auto& e : ib->second.entries) pb[e.hostname] = e.store_path;
    protocol::release_diff d;
    for (const auto& [h, p] : pa) {
      auto jt = pb.find(h);
      if (jt == pb.end()) d.removed.push_back(h);
      else if (jt->second != p) d.changed.push_back({h, p, jt->second});
      else d.unchanged.push_back(h);
    }
    for (const auto& [h, p] : pb)
      if (!pa.contains(h)) d.added.push_back(h);
    co_return json_response(200, protocol::serialize(d));
  }

  // ------------------------------------------------------------------------------------
  // Rollouts

  asio::awaitable<http_response> list_rollouts(const http_request& req, const std::map<std::string, std::string>& q) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    std::optional<std::string> status;
    if (auto it = q.find("status"); it != q.end()) status = it->second;
    std::vector<json::value> items;
    for (const auto& [id, r] : rollouts) {
      if (status && protocol::to_string(r.status) != *status) continue;
      auto summary = r;
      summary.hosts.clear();
      summary.events.clear();
      items.push_back(protocol::to_json(summary));
    }
    co_return json_response(200, array_of(items));
  }

  asio::awaitable<http_response> get_rollout(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    auto it = rollouts.find(id);
    if (it == rollouts.end()) co_return error_response(404, "not_found", "no such rollout");
    co_return json_response(200, protocol::serialize(it->second));
  }

  asio::awaitable<http_response> create_rollout(const http_request& req) {
    NIXFLEET_AUTH(role::deploy)
    NIXFLEET_BODY(protocol::rollout_request, spec)
    auto rel = releases.find(spec.release_id);
    if (rel == releases.end()) co_return error_response(400, "unknown_release", "no release " + spec.release_id);
    std::vector<core::candidate> candidates;
    std::set<std::string> wanted(spec.target.hosts.begin(), spec.target.hosts.end());
    for (const auto& h : wanted) {
      bool found = false;
      for (const auto& e : rel->second.entries) found = found || e.hostname == h;
      if (!found) co_return error_response(400, "invalid_field", "target.hosts: " + h + " has no entry in the release");
    }
    for (const auto& e : rel->second.entries) {
      auto m = machines.find(e.hostname);
      if (m != machines.end() && m->second.rec.state == protocol::lifecycle::decommissioned) continue;
      bool in = wanted.contains(e.hostname);
      for (const auto& t : spec.target.tags) {
        in = in || std::find(e.tags.begin(), e.tags.end(), t) != e.tags.end();
        if (m != machines.end())
          in = in || std::find(m->second.rec.tags.begin(), m->second.rec.tags.end(), t) != m->second.rec.tags.end();
      }
      if (in) candidates.push_back({e.hostname, e.store_path});
    }
    if (candidates.empty()) co_return error_response(400, "no_hosts", "no machine of the release matches the target");
    for (const auto& c : candidates)
      if (auto a = active_rollout_of.find(c.hostname); a != active_rollout_of.end())
        co_return error_response(409, "in_rollout", c.hostname + " is already in active rollout " + a->second.rollout);
    const auto now = opts.clock();
    std::string id = "ro-" + protocol::format_time(now).substr(0, 10) + "-" + protocol::random_hex(4);
    change_set cs;
    // Hosts that have not reported yet are registered now, so that their desired state is
    // waiting when they first poll (and the rollout times them out if they never do).
    for (const auto& c : candidates) {
      auto [m, created] = machines.try_emplace(c.hostname);
      if (!created) continue;
      m->second.rec.id = c.hostname;
      for (const auto& e : rel->second.entries)
        if (e.hostname == c.hostname) m->second.rec.tags = e.tags;
      cs.machines.push_back(m->second.rec);
      cs.audit.push_back({now, who.actor, "machine.registered", c.hostname, json::object{{"by", "rollout"}}});
    }
    auto planned = core::plan(id, spec, std::move(candidates), who.actor, now);
    json::object detail{{"release_id", spec.release_id}, {"hosts", planned.hosts.size()},
                        {"waves", planned.waves.size()}};
    cs.audit.push_back({now, who.actor, "rollout.created", id, std::move(detail)});
    auto first = core::reconcile(planned, observe(planned), now);
    auto republish = apply_step(std::move(first), cs, who.actor);
    if (!co_await commit(std::move(cs), std::move(republish)))
      co_return error_response(503, "unavailable", "the coordinator could not store the rollout");
    co_return json_response(201, protocol::serialize(rollouts.at(id)));
  }

  asio::awaitable<http_response> command_rollout(const http_request& req, const std::string& id,
                                                 const std::string& action) {
    NIXFLEET_AUTH(role::deploy)
    auto it = rollouts.find(id);
    if (it == rollouts.end()) co_return error_response(404, "not_found", "no such rollout");
    const auto now = opts.clock();
    core::command_result res;
    if (action == "pause") {
      res = core::pause(it->second, now);
    } else if (action == "cancel") {
      res = core::cancel(it->second, now);
    } else {
      protocol::resume_request body;
      if (!req.msg.body().empty()) {
        auto b = body_of<protocol::resume_request>(req);
        if (auto* r = std::get_if<http_response>(&b)) co_return std::move(*r);
        body = std::get<protocol::resume_request>(std::move(b));
      }
      res = core::resume(it->second, body.retry_failed, now);
    }
    if (!res.ok) co_return error_response(409, "invalid_state", res.refused);
    // Follow the command with a reconcile pass so a resume dispatches at once.
    auto s = std::move(*res.ok);
    auto next = core::reconcile(s.rollout, observe(s.rollout), now);
    s.rollout = std::move(next.rollout);
    s.events.insert(s.events.end(), next.events.begin(), next.events.end());
    s.changes.insert(s.changes.end(), next.changes.begin(), next.changes.end());
    change_set cs;
    auto republish = apply_step(std::move(s), cs, who.actor);
    if (!co_await commit(std::move(cs), std::move(republish)))
      co_return error_response(503, "unavailable", "the coordinator could not store the change");
    co_return json_response(200, protocol::serialize(rollouts.at(id)));
  }

  // ------------------------------------------------------------------------------------
  // Audit

  asio::awaitable<http_response> list_audit(const http_request& req, const std::map<std::string, std::string>& q) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    audit_query aq;
    if (auto it = q.find("actor"); it != q.end()) aq.actor = it->second;
    if (auto it = q.find("action"); it != q.end()) aq.action = it->second;
    if (auto it = q.find("target"); it != q.end()) aq.target = it->second;
    if (auto it = q.find("since"); it != q.end()) {
      auto t = protocol::parse_time(it->second);
      if (!t) co_return error_response(400, "invalid_query", "since: expected an RFC 3339 UTC time");
      aq.since = *t;
    }
    auto number = [&](const char* key, std::uint64_t max, std::uint64_t& out) {
      auto it = q.find(key);
      if (it == q.end()) return true;
      std::uint64_t v = 0;
      auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
      if (ec != std::errc() || p != it->second.data() + it->second.size() || v > max) return false;
      out = v;
      return true;
    };
    std::uint64_t limit = 100, after = 0;
    if (!number("limit", 1000, limit)) co_return error_response(400, "invalid_query", "limit: 0 to 1000");
    if (!number("after", std::numeric_limits<std::int64_t>::max(), after))
      co_return error_response(400, "invalid_query", "after: a sequence number");
    aq.limit = static_cast<std::uint32_t>(limit);
    aq.after_seq = after;
    auto job = [aq](storage& s) { return s.audit(aq); };
    auto rows = co_await db->run<std::vector<protocol::audit_event>>(std::move(job));
    std::vector<json::value> items;
    for (const auto& e : rows) items.push_back(protocol::to_json(e));
    co_return json_response(200, array_of(items));
  }

  asio::awaitable<http_response> export_audit(const http_request& req, const std::map<std::string, std::string>& q) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    std::string format = "jsonl";
    if (auto it = q.find("format"); it != q.end()) format = it->second;
    if (format != "csv" && format != "jsonl")
      co_return error_response(400, "invalid_query", "format must be csv or jsonl");
    std::string out;
    if (format == "csv") out = "seq,at,actor,action,target,detail,prev_hash,hash\n";
    std::uint64_t after = 0;
    for (;;) {
      audit_query aq;
      aq.after_seq = after;
      aq.limit = 1000;
      auto job = [aq](storage& s) { return s.audit(aq); };
      auto rows = co_await db->run<std::vector<protocol::audit_event>>(std::move(job));
      for (const auto& e : rows) {
        if (format == "jsonl") {
          out += protocol::serialize(e);
          out += '\n';
        } else {
          out += fmt::format("{},{},{},{},{},{},{},{}\n", e.seq, csv_cell(protocol::format_time(e.at)),
                             csv_cell(e.actor), csv_cell(e.action), csv_cell(e.target),
                             csv_cell(json::serialize(e.detail)), csv_cell(e.prev_hash), csv_cell(e.hash));
        }
        after = e.seq;
      }
      if (rows.size() < 1000) break;
    }
    http_response r = json_response(200, std::move(out));
    r.content_type = format == "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson";
    co_return r;
  }

  asio::awaitable<http_response> verify_audit(const http_request& req) {
    NIXFLEET_AUTH(role::readonly)
    (void)who;
    auto job = [](storage& s) { return s.verify_audit(); };
    auto v = co_await db->run<audit_verdict>(std::move(job));
    json::object o{{"ok", v.ok}, {"rows", v.rows}};
    if (v.bad_seq) {
      o["bad_seq"] = *v.bad_seq;
      o["reason"] = v.reason;
    }
    co_return json_response(200, json::serialize(o));
  }

  // ------------------------------------------------------------------------------------
  // Keys

  asio::awaitable<http_response> list_keys(const http_request& req) {
    NIXFLEET_AUTH(role::admin)
    (void)who;
    std::vector<const key_record*> all;
    for (const auto& [h, k] : keys) all.push_back(&k);
    std::sort(all.begin(), all.end(), [](auto* a, auto* b) { return a->info.created_at < b->info.created_at; });
    std::vector<json::value> items;
    for (auto* k : all) items.push_back(protocol::to_json(k->info));
    co_return json_response(200, array_of(items));
  }

  asio::awaitable<http_response> create_key_route(const http_request& req) {
    NIXFLEET_AUTH(role::admin)
    NIXFLEET_BODY(protocol::key_request, body)
    const std::string secret = "nfk_" + protocol::random_hex(32);
    key_record k{{"key-" + protocol::random_hex(6), body.name, body.role, opts.clock(), std::nullopt},
                 protocol::sha256_hex(secret)};
    change_set cs;
    cs.keys.push_back(k);
    json::object detail{{"name", body.name}, {"role", protocol::to_string(body.role)}};
    cs.audit.push_back({opts.clock(), who.actor, "key.created", k.info.id, std::move(detail)});
    keys.emplace(k.hash, k);
    if (!co_await commit(std::move(cs), std::vector<std::string>()))
      co_return error_response(503, "unavailable", "the coordinator could not store the key");
    co_return json_response(201, protocol::serialize(protocol::created_key{k.info, secret}));
  }

  asio::awaitable<http_response> delete_key(const http_request& req, const std::string& id) {
    NIXFLEET_AUTH(role::admin)
    auto it = std::find_if(keys.begin(), keys.end(), [&](const auto& kv) { return kv.second.info.id == id; });
    if (it == keys.end()) co_return error_response(404, "not_found", "no such key");
    keys.erase(it);
    change_set cs;
    cs.deleted_keys.push_back(id);
    cs.audit.push_back({opts.clock(), who.actor, "key.deleted", id, json::object{}});
    if (!co_await commit(std::move(cs), std::vector<std::string>()))
      co_return error_response(503, "unavailable", "the coordinator could not store the change");
    co_return no_content();
  }

#undef NIXFLEET_AUTH
#undef NIXFLEET_BODY

  // ------------------------------------------------------------------------------------
  // Metrics

  std::string render_metrics() const {
    prometheus::text t;
    t.family("nixfleet_coordinator_build_info", "gauge", "Build of this coordinator.");
    t.sample("nixfleet_coordinator_build_info", {{"version", nixfleet::version()}}, 1);
    std::map<std::string, std::uint64_t> by_state;
    std::uint64_t in_sync = 0, out_of_sync = 0, unassigned = 0;
    for (const auto& [id, m] : machines) {
      ++by_state[std::string(protocol::to_string(m.rec.state))];
      if (!m.rec.desired) ++unassigned;
      else if (m.rec.current_path == m.rec.desired->store_path) ++in_sync;
      else ++out_of_sync;
    }
    t.family("nixfleet_coordinator_machines", "gauge", "Machines by lifecycle state.");
    for (auto l : {protocol::lifecycle::active, protocol::lifecycle::maintenance, protocol::lifecycle::decommissioned}) {
      auto name = std::string(protocol::to_string(l));
      t.sample("nixfleet_coordinator_machines", {{"lifecycle", name}}, by_state[name]);
    }
    t.family("nixfleet_coordinator_machines_sync", "gauge", "Machines by whether they run their desired state.");
    t.sample("nixfleet_coordinator_machines_sync", {{"sync", "in_sync"}}, in_sync);
    t.sample("nixfleet_coordinator_machines_sync", {{"sync", "out_of_sync"}}, out_of_sync);
    t.sample("nixfleet_coordinator_machines_sync", {{"sync", "unassigned"}}, unassigned);
    t.family("nixfleet_coordinator_rollouts", "gauge", "Rollouts by status.");
    std::map<std::string, std::uint64_t> by_status;
    for (const auto& [id, r] : rollouts) ++by_status[std::string(protocol::to_string(r.status))];
    for (auto s : {protocol::rollout_status::running, protocol::rollout_status::paused,
                   protocol::rollout_status::completed, protocol::rollout_status::cancelled,
                   protocol::rollout_status::halted, protocol::rollout_status::reverted}) {
      auto name = std::string(protocol::to_string(s));
      t.sample("nixfleet_coordinator_rollouts", {{"status", name}}, by_status[name]);
    }
    t.family("nixfleet_coordinator_http_requests_total", "counter", "HTTP requests by route and status.");
    for (const auto& [route, m] : route_stats)
      for (const auto& [status, n] : m.by_status)
        t.sample("nixfleet_coordinator_http_requests_total", {{"route", route}, {"status", std::to_string(status)}}, n);
    t.family("nixfleet_coordinator_http_request_duration_seconds", "histogram", "Time to answer, by route.");
    for (const auto& [route, m] : route_stats) {
      for (std::size_t i = 0; i < latency_buckets.size(); ++i)
        t.sample("nixfleet_coordinator_http_request_duration_seconds_bucket",
                 {{"route", route}, {"le", fmt::format("{}", latency_buckets[i])}}, m.buckets[i]);
      t.sample("nixfleet_coordinator_http_request_duration_seconds_bucket", {{"route", route}, {"le", "+Inf"}}, m.count);
      t.sample("nixfleet_coordinator_http_request_duration_seconds_sum", {{"route", route}}, m.sum);
      t.sample("nixfleet_coordinator_http_request_duration_seconds_count", {{"route", route}}, m.count);
    }
    t.scalar("nixfleet_coordinator_reports_ingested_total", "counter", "Agent reports received.", reports_ingested);
    const auto ws = db->stats();
    t.scalar("nixfleet_coordinator_store_transactions_total", "counter", "Write transactions committed.", ws.transactions);
    t.scalar("nixfleet_coordinator_store_change_sets_total", "counter", "Change sets written (batched into transactions).",
             ws.change_sets);
    t.scalar("nixfleet_coordinator_store_write_seconds_total", "counter", "Time spent writing transactions.",
             std::chrono::duration<double>(ws.busy).count());
    t.scalar("nixfleet_coordinator_store_backlog", "gauge", "Store operations queued or running.", db->backlog());
    if (api) {
      auto s = api->stats();
      t.scalar("nixfleet_coordinator_open_connections", "gauge", "Open API connections.", s.open_connections);
      t.scalar("nixfleet_coordinator_connections_timed_out_total", "counter", "Connections closed for being too slow.",
               s.timed_out);
      t.family("nixfleet_coordinator_tls_handshakes_total", "counter", "Completed TLS handshakes, by session resumption.");
      t.sample("nixfleet_coordinator_tls_handshakes_total", {{"resumed", "false"}}, s.tls_handshakes - s.tls_resumed);
      t.sample("nixfleet_coordinator_tls_handshakes_total", {{"resumed", "true"}}, s.tls_resumed);
    }
    return t.take();
  }
};

// ---------------------------------------------------------------------------------------

service::service(asio::io_context& ctx, service_options opts) : impl_(std::make_shared<impl>(ctx, std::move(opts))) {}

service::~service() = default;

void service::start() {
  auto self = impl_;
  std::weak_ptr<impl> weak = self;
  self->api.emplace(
      self->ctx, self->opts.api,
      [weak](http_request& req) -> asio::awaitable<http_response> {
        auto s = weak.lock();
        if (!s) co_return error_response(503, "unavailable", "shutting down");
        co_return co_await s->handle(req);
      },
      [](unsigned status, std::string code, std::string message) {
        auto r = error_response(status, std::move(code), std::move(message));
        r.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
        return r;
      });
  self->api->start();
  if (self->opts.metrics_listen) {
    server_options mo;
    mo.listen = *self->opts.metrics_listen;
    mo.max_connections = 64;
    self->metrics_server.emplace(
        self->ctx, mo,
        [weak](http_request& req) -> asio::awaitable<http_response> {
          auto s = weak.lock();
          if (!s) co_return error_response(503, "unavailable", "shutting down");
          auto target = req.msg.target();
          if (target != "/metrics") co_return error_response(404, "not_found", "only /metrics is served here");
          http_response r;
          r.body = s->render_metrics();
          r.content_type = "text/plain; version=0.0.4";
          co_return r;
        },
        [](unsigned status, std::string code, std::string message) {
          return error_response(status, std::move(code), std::move(message));
        });
    self->metrics_server->start();
  }
  asio::co_spawn(self->ctx, impl::reconcile_loop(self), asio::detached);
  asio::co_spawn(self->ctx, impl::prune_loop(self), asio::detached);
}

asio::ip::tcp::endpoint service::api_endpoint() const { return impl_->api->local_endpoint(); }

std::optional<asio::ip::tcp::endpoint> service::metrics_endpoint() const {
  if (!impl_->metrics_server) return std::nullopt;
  return impl_->metrics_server->local_endpoint();
}

asio::awaitable<void> service::stop(std::chrono::milliseconds drain) {
  auto self = impl_;
  self->stopping = true;
  if (self->api) co_await self->api->shutdown(drain);
  if (self->metrics_server) co_await self->metrics_server->shutdown(std::chrono::milliseconds(100));
  while (self->writes_in_flight > 0) {
    asio::steady_timer t(self->ctx, std::chrono::milliseconds(5));
    co_await t.async_wait(use_tuple);
  }
}

asio::awaitable<void> service::reconcile_now() { co_await impl_->reconcile_all(); }

std::uint64_t service::store_operations() const { return impl_->store->operations(); }

std::string create_key(const std::string& db_path, const std::string& name, role r, const std::string& actor) {
  auto store = open_sqlite(db_path);
  const std::string secret = "nfk_" + protocol::random_hex(32);
  const auto now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  key_record k{{"key-" + protocol::random_hex(6), name, r, now, std::nullopt}, protocol::sha256_hex(secret)};
  change_set cs;
  cs.keys.push_back(k);
  cs.audit.push_back({now, actor, "key.created", k.info.id,
                      json::object{{"name", name}, {"role", protocol::to_string(r)}}});
  auto results = store->commit({&cs});
  if (!results[0].empty()) throw storage_error(results[0]);
  return secret;
}

int run_serve(service_options opts) {
  asio::io_context ctx(1);
  int exit_code = 0;
  opts.on_fatal = [&ctx, &exit_code](const std::string& why) {
    log::error("store_write_failed_stopping", {{"error", why}});
    exit_code = 70;
    ctx.stop();
  };
  std::optional<service> svc;
  try {
    svc.emplace(ctx, opts);
    svc->start();
  } catch (const std::system_error& e) {
    log::error("cannot_listen", {{"error", e.code().message()}});
    return 71;
  } catch (const std::exception& e) {
    log::error("cannot_start", {{"error", e.what()}});
    return 71;
  }
  log::info("coordinator_listening", {{"api", svc->api_endpoint().address().to_string() + ":" +
                                                   std::to_string(svc->api_endpoint().port())},
                                      {"tls", opts.api.tls.has_value()}});
  if (opts.insecure_http)
    log::warn("insecure_http", {{"detail", "plain HTTP: API keys travel in clear and agent routes are open to anyone "
                                           "who can reach this address"}});
  else if (!opts.api.tls || !opts.api.tls->client_ca_file)
    log::warn("no_client_ca", {{"detail", "no --client-ca: agents cannot authenticate and their routes refuse them"}});
  asio::signal_set signals(ctx, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::info("stopping", {{"signal", sig}});
    systemd::notify("STOPPING=1");
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          co_await svc->stop(std::chrono::seconds(10));
          ctx.stop();
        },
        asio::detached);
  });
  systemd::notify("READY=1");
  ctx.run();
  return exit_code;
}

}  // namespace nixfleet::coordinator::io
