// The dashboard's listener: its static files, sign-in to a server-side session, the fleet page,
// the live-update stream, and the operator API reached as the session's key. Never the agents'
// listener: nothing here is on the poll path.
//
//   GET  /ui/, /ui/PAGE…       the page shell (the script routes PAGE)
//   GET  /ui/assets/NAME       a built-in file
//   GET  /ui/api/session       who is signed in, with the session's CSRF token
//   POST /ui/api/session       {"key": "nfk_…"} → a session cookie
//   POST /ui/api/signout       ends it
//   GET  /ui/api/fleet         counts and one page of machines (filters in the query)
//   GET  /ui/api/events        text/event-stream of change counters
//   *    /ui/api/v1/…          the operator routes of /api/v1/…, as the session's key
//
// Every state-changing request carries the session's token in X-CSRF-Token, and a browser's Origin
// must be this listener's own.
#include "service_impl.hpp"
#include "ui_assets.hpp"

#include "nixfleet/common/log.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>

namespace nixfleet::coordinator::io {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using impl = service::impl;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::string_view cookie_name = "__Host-nixfleet-session";
constexpr auto event_gap = std::chrono::milliseconds(250);  // at most four events a second per stream
constexpr auto heartbeat = std::chrono::seconds(15);

// Scripts, styles, images and requests from this origin only; nothing inline, nothing framed.
constexpr std::string_view csp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

void secure_headers(http_response& r, bool tls, bool cacheable) {
  r.headers.emplace_back("Content-Security-Policy", std::string(csp));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Cross-Origin-Opener-Policy", "same-origin");
  r.headers.emplace_back("Cross-Origin-Resource-Policy", "same-origin");
  r.headers.emplace_back("Cache-Control", cacheable ? "no-cache" : "no-store");
  if (tls) r.headers.emplace_back("Strict-Transport-Security", "max-age=31536000");
}

const ui_asset* asset(std::string_view name) {
  for (const auto& a : ui_assets())
    if (a.name == name) return &a;
  return nullptr;
}

http_response serve_asset(const http_request& req, const ui_asset& a) {
  http_response r;
  r.headers.emplace_back("ETag", std::string(a.etag));
  if (auto inm = req.msg.find(http::field::if_none_match); inm != req.msg.end() && inm->value() == a.etag) {
    r.status = 304;
    return r;
  }
  r.content_type = std::string(a.content_type);
  r.body = std::string(a.body);
  return r;
}

bool equal_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The session cookie's secret, when the request carries a well-formed one.
std::optional<std::string> cookie_secret(const http_request& req) {
  for (auto it = req.msg.find(http::field::cookie); it != req.msg.end() && it->name() == http::field::cookie; ++it) {
    std::string_view v = it->value();
    while (!v.empty()) {
      auto end = v.find(';');
      auto part = v.substr(0, end);
      while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
      if (part.starts_with(cookie_name) && part.size() > cookie_name.size() && part[cookie_name.size()] == '=') {
        auto value = part.substr(cookie_name.size() + 1);
        if (is_hex64(value)) return std::string(value);
      }
      if (end == std::string_view::npos) break;
      v.remove_prefix(end + 1);
    }
  }
  return std::nullopt;
}

// A browser says where a request comes from: only this listener's own pages may change anything.
bool foreign_origin(const http_request& req) {
  auto o = req.msg.find(http::field::origin);
  if (o == req.msg.end()) return false;  // not a browser's cross-origin request
  auto host = req.msg.find(http::field::host);
  if (host == req.msg.end()) return true;
  const std::string own = std::string(req.tls ? "https://" : "http://") + std::string(host->value());
  return o->value() != own;
}

std::string session_cookie(std::string_view secret, std::chrono::seconds max_age) {
  return std::string(cookie_name) + "=" + std::string(secret) + "; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=" +
         std::to_string(max_age.count());
}

json::object session_json(const impl::ui_session& s) {
  return {{"name", s.who.actor},
          {"role", protocol::to_string(s.who.level)},
          {"csrf", s.csrf},
          {"expires_at", protocol::format_time(s.expires_at)}};
}

// The live session the request's cookie names (its idle deadline moved on), or none. A session
// whose key was deleted ends here, and one takes its key's role as the key has it now.
impl::ui_session* session_of(impl& s, const http_request& req, std::string* hash_out = nullptr) {
  auto secret = cookie_secret(req);
  if (!secret) return nullptr;
  const auto hash = protocol::sha256_hex(*secret);
  auto it = s.ui_sessions.find(hash);
  if (it == s.ui_sessions.end()) return nullptr;
  const auto now = clock_type::now();
  auto key = s.fleet.keys.find(it->second.key_hash);
  if (now >= it->second.ends || now >= it->second.idle_until || key == s.fleet.keys.end()) {
    if (it->second.streams == 0) s.ui_sessions.erase(it);
    else it->second.ends = now;  // its streams see it ended and close; the last one erases it
    return nullptr;
  }
  it->second.idle_until = now + s.opts.ui_session_idle;
  it->second.who.level = key->second.info.role;
  if (hash_out) *hash_out = hash;
  return &it->second;
}

// ---------------------------------------------------------------------------------------------
// Sign-in and sign-out

asio::awaitable<http_response> sign_in(impl& s, http_request& req) {
  if (foreign_origin(req)) co_return error_response(403, "forbidden_origin", "sign in from this dashboard's own page");
  std::string key;
  {
    boost::system::error_code ec;
    auto v = json::parse(req.msg.body(), ec);
    if (ec || !v.is_object() || !v.as_object().contains("key") || !v.as_object().at("key").is_string())
      co_return error_response(400, "invalid_json", R"(expected {"key": "nfk_..."})");
    key = std::string(v.as_object().at("key").as_string());
  }
  auto who = co_await s.key_principal(key);
  if (auto* r = std::get_if<http_response>(&who)) {
    if (auto skipped = s.ui_refusals.take(clock_type::now()))
      log::warn("ui_sign_in_refused", {{"peer", req.peer}, {"not_logged_since", *skipped}});
    co_return std::move(*r);
  }
  const auto now = clock_type::now();
  // Bounded: ended sessions go first, then the one nearest its end.
  if (s.ui_sessions.size() >= s.opts.ui_max_sessions) {
    std::erase_if(s.ui_sessions, [&](const auto& kv) {
      return kv.second.streams == 0 && (now >= kv.second.ends || now >= kv.second.idle_until);
    });
    // Sessions with a stream open are at most ui_max_streams: the others make room.
    while (s.ui_sessions.size() >= s.opts.ui_max_sessions) {
      auto oldest = s.ui_sessions.end();
      for (auto it = s.ui_sessions.begin(); it != s.ui_sessions.end(); ++it)
        if (it->second.streams == 0 && (oldest == s.ui_sessions.end() || it->second.ends < oldest->second.ends))
          oldest = it;
      if (oldest == s.ui_sessions.end()) break;
      s.ui_sessions.erase(oldest);
    }
  }
  const auto secret = protocol::random_hex(32);
  impl::ui_session session;
  session.key_hash = protocol::sha256_hex(key);
  session.who = std::get<core::principal>(std::move(who));
  session.csrf = protocol::random_hex(32);
  session.expires_at = s.opts.clock() + s.opts.ui_session_ttl;
  session.ends = now + s.opts.ui_session_ttl;
  session.idle_until = now + s.opts.ui_session_idle;
  log::info("ui_signed_in", {{"key", session.who.actor}, {"role", protocol::to_string(session.who.level)}, {"peer", req.peer}});
  auto body = json::serialize(session_json(session));
  s.ui_sessions.emplace(protocol::sha256_hex(secret), std::move(session));
  auto r = json_response(200, std::move(body));
  r.headers.emplace_back("Set-Cookie", session_cookie(secret, s.opts.ui_session_ttl));
  co_return r;
}

http_response signed_out() {
  http_response r;
  r.status = 204;
  r.headers.emplace_back("Set-Cookie", session_cookie(std::string(64, '0'), std::chrono::seconds(0)));
  return r;
}

// ---------------------------------------------------------------------------------------------
// The fleet page

std::variant<core::fleet_filter, http_response> fleet_filter_of(const std::map<std::string, std::string>& q) {
  core::fleet_filter f;
  auto bad = [](std::string m) { return error_response(400, "invalid_query", std::move(m)); };
  auto number = [&](const char* key, std::uint64_t max, std::size_t& out) {
    std::uint64_t v = out;
    if (!query_number(q, key, max, v)) return false;
    out = static_cast<std::size_t>(v);
    return true;
  };
  if (!number("offset", 100'000'000, f.offset)) return bad("offset: a number");
  if (!number("limit", 500, f.limit) || f.limit == 0) return bad("limit: 1 to 500");
  std::size_t stale_s = 300;
  if (!number("stale_after", 365 * 86400, stale_s)) return bad("stale_after: seconds");
  f.stale_after = std::chrono::seconds(stale_s);
  if (auto it = q.find("tag"); it != q.end() && !it->second.empty()) f.tag = it->second;
  if (auto it = q.find("q"); it != q.end()) f.text = it->second.substr(0, 256);
  if (auto it = q.find("stale"); it != q.end()) f.stale_only = it->second == "1" || it->second == "true";
  if (auto it = q.find("state"); it != q.end() && !it->second.empty()) {
    for (auto l : {protocol::lifecycle::active, protocol::lifecycle::maintenance, protocol::lifecycle::decommissioned})
      if (protocol::to_string(l) == it->second) f.state = l;
    if (!f.state) return bad("state: active, maintenance or decommissioned");
  }
  if (auto it = q.find("sync"); it != q.end() && !it->second.empty()) {
    using core::sync_state;
    for (auto v : {sync_state::in_sync, sync_state::behind, sync_state::failing, sync_state::unmanaged, sync_state::unknown})
      if (core::to_string(v) == it->second) f.sync = v;
    if (!f.sync) return bad("sync: in_sync, behind, failing, unmanaged or unknown");
  }
  if (auto it = q.find("health"); it != q.end() && !it->second.empty()) {
    if (it->second != "passing" && it->second != "failing" && it->second != "unknown")
      return bad("health: passing, failing or unknown");
    f.health = it->second;
  }
  return f;
}

http_response fleet_page_now(impl& s, const std::map<std::string, std::string>& query) {
  auto f = fleet_filter_of(query);
  if (auto* r = std::get_if<http_response>(&f)) return std::move(*r);
  const auto& filter = std::get<core::fleet_filter>(f);
  auto page = core::page_of(s.fleet, filter, s.opts.clock());
  auto counts = [](const auto& n, auto name) {
    json::object o;
    for (std::size_t i = 0; i < n.size(); ++i)
      if (n[i]) o[name(i)] = n[i];
    return o;
  };
  auto sync_name = [](std::size_t i) { return core::to_string(static_cast<core::sync_state>(i)); };
  auto health_name = [](std::size_t i) { return core::health_names[i]; };
  auto lifecycle_name = [](std::size_t i) { return protocol::to_string(static_cast<protocol::lifecycle>(i)); };
  json::array rows;
  rows.reserve(page.rows.size());
  for (const auto& row : page.rows) {
    const auto& m = *row.machine;
    json::array tags;
    for (const auto& t : m.tags) tags.push_back(json::string(t));
    json::object o{{"id", m.id},
                   {"tags", std::move(tags)},
                   {"lifecycle", protocol::to_string(m.state)},
                   {"sync", core::to_string(row.sync)},
                   {"health", row.health},
                   {"stale", row.stale}};
    if (m.current_path) o["current_path"] = *m.current_path;
    if (m.desired) o["desired_path"] = m.desired->store_path;
    if (m.last_seen) o["last_seen"] = protocol::format_time(*m.last_seen);
    if (row.rollout) o["rollout_id"] = *row.rollout;
    rows.push_back(std::move(o));
  }
  json::object out{{"total", page.total},
                   {"matched", page.matched},
                   {"offset", filter.offset},
                   {"limit", filter.limit},
                   {"stale", page.stale},
                   {"sync", counts(page.by_sync, sync_name)},
                   {"health", counts(page.by_health, health_name)},
                   {"lifecycle", counts(page.by_lifecycle, lifecycle_name)},
                   {"items", std::move(rows)}};
  return json_response(200, json::serialize(out));
}

// The page as computed for this query, shared by every dashboard asking the same: made again
// when the fleet changed, but not more than once a second while it keeps changing (the page is
// an overview; a rollout's page is always exact). Bounded: cleared whole when full.
http_response fleet_page(impl& s, const std::map<std::string, std::string>& query) {
  std::string key;
  for (const auto& [k, v] : query) key += k + '=' + v + '&';
  const auto now = clock_type::now();
  if (auto it = s.fleet_pages.find(key); it != s.fleet_pages.end()) {
    const auto& c = it->second;
    if (c.at == s.changes || now - c.made < std::chrono::seconds(1)) {
      ++s.fleet_pages_shared;
      return json_response(200, c.body);
    }
  }
  auto r = fleet_page_now(s, query);
  if (r.status == 200) {
    if (s.fleet_pages.size() >= 64) s.fleet_pages.clear();
    s.fleet_pages[key] = {r.body, s.changes, now};
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Live updates: one event whenever a change counter moved, at most one per event_gap, and a
// comment every heartbeat so that a closed tab is noticed. The stream ends with its session or
// the service.

struct event_stream {
  std::shared_ptr<impl> service;
  std::string session;  // its hash
  asio::steady_timer timer;
  impl::change_counters sent;
  clock_type::time_point last{};
  bool started = false, ended = false;

  event_stream(std::shared_ptr<impl> s, std::string h) : service(std::move(s)), session(std::move(h)), timer(service->home) {
    ++service->ui_streams;
  }
  ~event_stream() {
    service->change_waiters.erase(&timer);
    --service->ui_streams;
    if (auto it = service->ui_sessions.find(session); it != service->ui_sessions.end()) {
      --it->second.streams;
      if (it->second.streams == 0 && clock_type::now() >= it->second.ends) service->ui_sessions.erase(it);
    }
  }
  event_stream(const event_stream&) = delete;
  event_stream& operator=(const event_stream&) = delete;

  bool session_live() const {
    auto it = service->ui_sessions.find(session);
    const auto now = clock_type::now();
    return it != service->ui_sessions.end() && now < it->second.ends && service->fleet.keys.contains(it->second.key_hash);
  }
  std::string event() {
    sent = service->changes;
    last = clock_type::now();
    return "event: change\ndata: " +
           json::serialize(json::object{{"machines", sent.machines},
                                        {"rollouts", sent.rollouts},
                                        {"releases", sent.releases},
                                        {"audit", sent.audit}}) +
           "\n\n";
  }
};

asio::awaitable<std::string> next_event(std::shared_ptr<event_stream> x) {
  constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
  auto& s = *x->service;
  if (!x->started) {
    x->started = true;
    co_return "retry: 2000\n" + x->event();
  }
  for (;;) {
    if (x->ended || s.stopping || s.fatal) co_return "";
    if (!x->session_live()) {
      x->ended = true;
      co_return "event: signed_out\ndata: {}\n\n";
    }
    if (s.changes != x->sent) {
      if (auto since = clock_type::now() - x->last; since < event_gap) {
        x->timer.expires_after(event_gap - since);  // held, out of the waiters: commits meanwhile cost it nothing
        co_await x->timer.async_wait(use_tuple);
        continue;
      }
      co_return x->event();
    }
    x->timer.expires_after(heartbeat);
    s.change_waiters.insert(&x->timer);
    auto [ec] = co_await x->timer.async_wait(use_tuple);
    s.change_waiters.erase(&x->timer);
    if (!ec && s.changes == x->sent) co_return ": keep-alive\n\n";
  }
}

asio::awaitable<http_response> events(impl& s, impl::ui_session& session, const std::string& hash) {
  if (session.streams >= s.opts.ui_streams_per_session || s.ui_streams >= s.opts.ui_max_streams) {
    auto r = error_response(429, "too_many_streams", "too many live dashboards are open; close one and reload");
    r.headers.emplace_back("Retry-After", "10");
    co_return r;
  }
  ++session.streams;
  auto x = std::make_shared<event_stream>(s.shared_from_this(), hash);
  http_response r;
  r.content_type = "text/event-stream";
  r.headers.emplace_back("X-Accel-Buffering", "no");
  r.stream = [x]() { return next_event(x); };
  co_return r;
}

// ---------------------------------------------------------------------------------------------

asio::awaitable<http_response> route_ui(impl& s, http_request& req, std::string& route) {
  auto parsed = boost::urls::parse_origin_form(req.msg.target());
  if (!parsed) co_return error_response(400, "bad_request", "the request target is not a valid path");
  const std::string path = parsed->path();
  const auto method = req.msg.method();
  const bool reading = method == http::verb::get || method == http::verb::head;

  if (path == "/" || path == "/ui") {
    route = "ui:redirect";
    http_response r;
    r.status = 303;
    r.headers.emplace_back("Location", "/ui/");
    co_return r;
  }
  if (path.starts_with("/ui/assets/")) {
    route = "ui:asset";
    if (!reading) co_return error_response(405, "method_not_allowed", "assets are read-only");
    auto* a = asset(std::string_view(path).substr(11));
    if (!a || a->name == "index.html") co_return error_response(404, "not_found", "no such file");
    co_return serve_asset(req, *a);
  }
  if (!path.starts_with("/ui/api/")) {
    route = "ui:page";
    if (!path.starts_with("/ui/")) co_return error_response(404, "not_found", "the dashboard is at /ui/");
    if (!reading) co_return error_response(405, "method_not_allowed", "pages are read-only");
    co_return serve_asset(req, *asset("index.html"));
  }

  if (path == "/ui/api/session" && method == http::verb::post) {
    route = "ui:sign_in";
    co_return co_await sign_in(s, req);
  }
  std::string hash;
  auto* session = session_of(s, req, &hash);
  if (path == "/ui/api/session" && reading) {
    route = "ui:session";
    if (!session) co_return error_response(401, "unauthenticated", "not signed in");
    co_return json_response(200, json::serialize(session_json(*session)));
  }
  if (!session) {
    route = "ui:unauthenticated";
    co_return error_response(401, "unauthenticated", "not signed in (or the session ended)");
  }
  if (!reading) {
    // Forged requests from another site carry neither the token nor this origin.
    auto token = req.msg.find("X-CSRF-Token");
    if (token == req.msg.end() || !equal_secret(token->value(), session->csrf) || foreign_origin(req)) {
      route = "ui:csrf_refused";
      log::warn("ui_csrf_refused", {{"key", session->who.actor}, {"target", path}, {"peer", req.peer}});
      co_return error_response(403, "csrf", "a state-changing request needs the session's X-CSRF-Token");
    }
  }
  if (path == "/ui/api/signout" && method == http::verb::post) {
    route = "ui:sign_out";
    log::info("ui_signed_out", {{"key", session->who.actor}});
    if (session->streams == 0) s.ui_sessions.erase(hash);
    else session->ends = clock_type::now();
    s.wake_waiters();  // its streams close now
    co_return signed_out();
  }
  if (path == "/ui/api/fleet" && reading) {
    route = "ui:fleet";
    std::map<std::string, std::string> query;
    for (auto p : parsed->params()) query[p.key] = p.value;
    co_return fleet_page(s, query);
  }
  if (path == "/ui/api/events" && reading) {
    route = "ui:events";
    co_return co_await events(s, *session, hash);
  }
  if (path.starts_with("/ui/api/v1/")) {
    // The operator API, as this session's key: the same routes, checks and audit.
    const auto who = session->who;
    req.msg.target(std::string(req.msg.target()).substr(3));
    std::string api_route;
    auto r = co_await s.dispatch(req, api_route, &who);
    route = "ui:" + api_route;
    co_return r;
  }
  route = "ui:unmatched";
  co_return error_response(404, "not_found", "no such route");
}

}  // namespace

asio::awaitable<http_response> impl::handle_ui(http_request& req) {
  const auto start = clock_type::now();
  std::string route = "ui:unmatched";
  http_response r = co_await route_ui(*this, req, route);
  secure_headers(r, req.tls, route == "ui:asset" || route == "ui:page");
  observe(route, r.status, start);
  co_return r;
}

}  // namespace nixfleet::coordinator::io
