// The HTTP routes of architecture §3 as one table: method, pattern, who may call it, handler.
// A handler decodes the request, hands an event to the fleet core (or reads the fleet) and
// encodes the answer; the rules themselves live in coordinator/core.
#include "service_impl.hpp"

#include "nixfleet/common/http_wire.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/pki.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <random>
#include <span>
#include <variant>

namespace nixfleet::coordinator::io {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using impl = service::impl;
using core::operation;
using protocol::role;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

bool is_key_text(std::string_view k) {
  if (!k.starts_with("nfk_") || k.size() != 4 + 64) return false;
  return std::all_of(k.begin() + 4, k.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The API key an Authorization header's value holds, if it holds one.
std::optional<std::string_view> bearer_key(std::string_view v) {
  constexpr std::string_view bearer = "Bearer ";
  if (!v.starts_with(bearer) || !is_key_text(v.substr(bearer.size()))) return std::nullopt;
  return v.substr(bearer.size());
}

// Whether an X-Nixfleet-Protocol value has our major version.
bool speaks_our_protocol(std::string_view version) {
  return version.substr(0, version.find('.')) == std::to_string(protocol::protocol_version);
}

// A whole number up to `max`, all of `text`.
bool whole_number(std::string_view text, std::uint64_t max, std::uint64_t& out) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v > max) return false;
  out = v;
  return true;
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

template <class T>
std::string array_of(const std::vector<T>& items) {
  json::array a;
  a.reserve(items.size());
  for (const auto& i : items) a.push_back(protocol::to_json(i));
  return json::serialize(a);
}

// The body as T, or the 400 to answer. An empty body is T's defaults when `optional`.
template <class T>
std::variant<T, http_response> body_of(const http_request& req, bool optional = false) {
  if (optional && req.msg.body().empty()) return T{};
  auto d = protocol::parse<T>(req.msg.body());
  if (!d) {
    const auto& e = d.error();
    return error_response(400, e.code == protocol::errc::invalid_json ? "invalid_json" : "invalid_field", e.what());
  }
  return std::move(*d);
}

// Decodes the body and performs the event made of it.
template <class T, class Make>
asio::awaitable<http_response> perform_with(impl& s, route_call& c, Make make, bool optional = false) {
  auto body = body_of<T>(c.req, optional);
  if (auto* r = std::get_if<http_response>(&body)) co_return std::move(*r);
  core::event e{c.who.actor, make(std::get<T>(std::move(body)))};
  co_return co_await s.perform(std::move(e));
}

asio::awaitable<http_response> perform_now(impl& s, route_call& c, core::event_body what) {
  core::event e{c.who.actor, std::move(what)};
  co_return co_await s.perform(std::move(e));
}

asio::awaitable<std::variant<core::principal, http_response>> authenticate(impl& s, const http_request& req) {
  auto it = req.msg.find(http::field::authorization);
  if (it == req.msg.end())
    co_return error_response(401, "unauthenticated", "an API key is required (Authorization: Bearer nfk_...)");
  auto key = bearer_key(it->value());
  if (!key) co_return error_response(401, "unauthenticated", "the Authorization header does not hold an API key");
  co_return co_await s.key_principal(*key);
}

// ---------------------------------------------------------------------------------------------
// Agent routes

constexpr std::uint64_t max_wait_s = 3600;  // what `?wait=` may ask for (then capped by long_poll_max)

// The poll path: memory only.
// With `?wait=S` and the ETag the machine already has, the answer is held until its desired state
// changes, S elapses (at most long_poll_max, less a random fifth, so that polls held together do
// not expire together) or the agent sends its next request on the connection.
asio::awaitable<http_response> get_desired(impl& s, route_call& c) {
  std::uint64_t wait_s = 0;
  if (!query_number(c.query, "wait", max_wait_s, wait_s))
    co_return error_response(400, "bad_request", "wait is a whole number of seconds, at most 3600");
  std::string inm;
  if (auto h = c.req.msg.find(http::field::if_none_match); h != c.req.msg.end()) inm = h->value();
  const auto& id = c.params[0];
  http_response now = co_await s.answer_desired(id, inm);
  wait_s = std::min<std::uint64_t>(wait_s, static_cast<std::uint64_t>(s.opts.long_poll_max.count()));
  if (now.status != 304 || wait_s == 0 || s.stopping) co_return now;
  thread_local std::minstd_rand draw{std::random_device{}()};
  const auto hold_for = std::chrono::milliseconds(wait_s * 1000) -
                        std::chrono::milliseconds(wait_s * 200 * (draw() % 1000) / 1000);
  http_response r;
  r.held = [self = s.shared_from_this(), id, inm = std::move(inm),
            until = std::chrono::steady_clock::now() + hold_for](asio::steady_timer& wake) -> asio::awaitable<http_response> {
    if (wake.expiry() > until) wake.expires_at(until);
    auto& waiting = self->held_polls[id];
    waiting.push_back(&wake);
    co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
    if (auto h = self->held_polls.find(id); h != self->held_polls.end()) {
      std::erase(h->second, &wake);
      if (h->second.empty()) self->held_polls.erase(h);
    }
    const auto woke = std::chrono::steady_clock::now();
    http_response answer = co_await self->answer_desired(id, inm);
    if (answer.status != 304) ++self->long_polls.changed;
    else if (woke >= until) ++self->long_polls.expired;
    else ++self->long_polls.released;
    answer.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
    self->observe("/api/v1/machines/{id}/desired", answer.status, woke);
    co_return answer;
  };
  co_return r;
}

}  // namespace

// The poll path's plain case, answered from the request head without a coroutine: the same checks
// and the same answer as dispatch → get_desired, and anything else (a refusal, a held poll, a
// store still writing, an unusual target) left to them.
bool impl::quick_answer(const quick_request& q, std::string& out) {
  const auto& head = q.head;
  if (fatal || head.method != "GET") return false;
  constexpr std::string_view prefix = "/api/v1/machines/", suffix = "/desired";
  std::string_view target = head.target;
  if (!target.starts_with(prefix)) return false;
  target.remove_prefix(prefix.size());
  std::string_view query;
  if (const auto mark = target.find('?'); mark != std::string_view::npos) {
    query = target.substr(mark + 1);
    target = target.substr(0, mark);
  }
  if (!target.ends_with(suffix)) return false;
  const std::string_view id_text = target.substr(0, target.size() - suffix.size());
  if (protocol::check_identifier(id_text)) return false;
  std::uint64_t wait_s = 0;
  if (!query.empty()) {
    constexpr std::string_view wait = "wait=";
    if (!query.starts_with(wait) || !whole_number(query.substr(wait.size()), max_wait_s, wait_s)) return false;
  }
  if (auto ver = head.field(protocol::protocol_header); ver && !speaks_our_protocol(*ver)) return false;
  if (core::authorize_agent(q.client.id, q.client.problem, id_text, opts.insecure_http)) return false;
  if (core::certificate_refusal(fleet, id_text, q.client.serial, opts.clock())) return false;
  const auto start = std::chrono::steady_clock::now();
  const std::string id(id_text);
  const auto answer = desired_now(id, head.field("If-None-Match").value_or(std::string_view()));
  if (!answer) return false;  // memory is ahead of the store: the full path waits for it
  // A poll that would be held is the full path's.
  if (answer->status == 304 && wait_s > 0 && opts.long_poll_max.count() > 0 && !stopping) return false;
  // The fields desired_answer and handle() give it, in their order (short numbers: no allocation).
  const std::string long_poll_text = std::to_string(opts.long_poll_max.count()),
                    version_text = std::to_string(protocol::protocol_version);
  std::array<std::pair<std::string_view, std::string_view>, 3> fields;
  std::size_t n = 0;
  fields[n++] = {"ETag", answer->etag};
  if (opts.long_poll_max.count() > 0) fields[n++] = {protocol::long_poll_header, long_poll_text};
  fields[n++] = {protocol::protocol_header, version_text};
  http_wire::write_response(out, answer->status, "application/json", std::span(fields.data(), n), answer->body,
                            head.version, q.keep_alive, opts.api.server_name);
  if (desired_metrics == nullptr) desired_metrics = &route_stats["/api/v1/machines/{id}/desired"];
  observe(*desired_metrics, answer->status, start);
  return true;
}

namespace {

asio::awaitable<http_response> post_reports(impl& s, route_call& c) {
  auto body = body_of<protocol::report_batch>(c.req);
  if (auto* r = std::get_if<http_response>(&body)) co_return std::move(*r);
  auto batch = std::get<protocol::report_batch>(std::move(body));
  // Before anything is stored or audited: a machine over its budget is told when to come back.
  if (auto wait = s.spend_report_budget(c.params[0], batch.reports.size(), c.req.msg.body().size()); wait.count() > 0) {
    auto r = error_response(429, "over_budget",
                            "this machine has sent more reports than its budget allows; retry after " +
                                std::to_string(wait.count()) + " s");
    r.headers.emplace_back("Retry-After", std::to_string(wait.count()));
    co_return r;
  }
  s.reports_ingested += batch.reports.size();
  core::event e{"agent:" + c.params[0], core::ingest_reports{c.params[0], std::move(batch)}};
  co_return co_await s.perform(std::move(e));
}

// ---------------------------------------------------------------------------------------------
// Machines

asio::awaitable<http_response> list_machines(impl& s, route_call& c) {
  std::optional<protocol::lifecycle> state;
  if (auto it = c.query.find("state"); it != c.query.end()) {
    for (auto l : {protocol::lifecycle::active, protocol::lifecycle::maintenance, protocol::lifecycle::decommissioned})
      if (protocol::to_string(l) == it->second) state = l;
    if (!state) co_return error_response(400, "invalid_query", "state must be active, maintenance or decommissioned");
  }
  std::optional<std::string> tag;
  if (auto it = c.query.find("tag"); it != c.query.end()) tag = it->second;
  std::vector<const core::machine_record*> picked;
  for (const auto& [id, m] : s.fleet.machines) {
    if (state && m.state != *state) continue;
    if (tag && std::find(m.tags.begin(), m.tags.end(), *tag) == m.tags.end()) continue;
    picked.push_back(&m);
  }
  std::sort(picked.begin(), picked.end(), [](auto* a, auto* b) { return a->id < b->id; });
  std::vector<protocol::machine_status> items;
  items.reserve(picked.size());
  for (auto* m : picked) items.push_back(core::status_of(s.fleet, *m));
  co_return json_response(200, array_of(items));
}

asio::awaitable<http_response> get_machine(impl& s, route_call& c) {
  auto it = s.fleet.machines.find(c.params[0]);
  if (it == s.fleet.machines.end()) co_return error_response(404, "not_found", "no such machine");
  co_return json_response(200, protocol::serialize(core::status_of(s.fleet, it->second)));
}

// Its timeline: the reports kept (retention permitting), newest first, each as received;
// `?kind=rolled_back,rollback_failed` keeps those kinds only (a failure's forensics).
asio::awaitable<http_response> machine_reports(impl& s, route_call& c) {
  if (!s.fleet.machines.contains(c.params[0])) co_return error_response(404, "not_found", "no such machine");
  std::uint64_t limit = 100;
  if (!query_number(c.query, "limit", 1000, limit) || limit == 0)
    co_return error_response(400, "invalid_query", "limit: 1 to 1000");
  std::vector<protocol::report_kind> kinds;
  if (auto it = c.query.find("kind"); it != c.query.end()) {
    std::string_view rest = it->second;
    while (true) {
      const auto comma = rest.find(',');
      const auto name = rest.substr(0, comma);
      auto kind = protocol::fields::enum_from_string<protocol::report_kind>(name);
      if (!kind)
        co_return error_response(400, "invalid_query",
                                 "kind: a comma-separated list of " + protocol::fields::enum_choices<protocol::report_kind>());
      if (std::find(kinds.begin(), kinds.end(), *kind) == kinds.end()) kinds.push_back(*kind);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  auto job = [id = c.params[0], n = static_cast<std::uint32_t>(limit), kinds](storage& st) { return st.reports(id, n, kinds); };
  auto rows = co_await s.db->run<std::vector<core::stored_report>>(std::move(job));
  json::array a;
  a.reserve(rows.size());
  for (const auto& r : rows) {
    auto o = protocol::to_json(r.body).as_object();
    o["received_at"] = protocol::format_time(r.received_at);
    a.push_back(std::move(o));
  }
  co_return json_response(200, json::serialize(a));
}

asio::awaitable<http_response> put_machine(impl& s, route_call& c) {
  auto id = c.params[0];
  co_return co_await perform_with<protocol::machine_update>(
      s, c, [&](protocol::machine_update u) { return core::update_machine{id, std::move(u)}; });
}

asio::awaitable<http_response> clear_desired(impl& s, route_call& c) {
  core::event_body what = core::clear_desired{c.params[0]};  // named: GCC 12 mishandles temporaries in co_await calls
  co_return co_await perform_now(s, c, std::move(what));
}

asio::awaitable<http_response> rollback_machine(impl& s, route_call& c) {
  auto id = c.params[0];
  co_return co_await perform_with<protocol::rollback_request>(
      s, c, [&](protocol::rollback_request b) { return core::rollback_machine{id, std::move(b)}; }, true);
}

// ---------------------------------------------------------------------------------------------
// Revocations: signed by an operator, kept and served as they are. The coordinator cannot forge
// or shorten one (agents verify it and refuse a lower sequence); it can only withhold it.

asio::awaitable<http_response> get_revocations(impl& s, route_call&) {
  if (!s.fleet.revocations) co_return error_response(404, "not_found", "no revocation list has been published");
  co_return json_response(200, protocol::serialize(*s.fleet.revocations));
}

asio::awaitable<http_response> put_revocations(impl& s, route_call& c) {
  co_return co_await perform_with<protocol::revocation_list>(
      s, c, [](protocol::revocation_list l) { return core::publish_revocations{std::move(l)}; });
}

// ---------------------------------------------------------------------------------------------
// Releases

asio::awaitable<http_response> list_releases(impl& s, route_call&) {
  std::vector<protocol::release> all;
  for (const auto& [id, r] : s.fleet.releases) all.push_back(r);
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.created_at > b.created_at; });
  co_return json_response(200, array_of(all));
}

asio::awaitable<http_response> get_release(impl& s, route_call& c) {
  auto it = s.fleet.releases.find(c.params[0]);
  if (it == s.fleet.releases.end()) co_return error_response(404, "not_found", "no such release");
  co_return json_response(200, protocol::serialize(it->second));
}

asio::awaitable<http_response> create_release(impl& s, route_call& c) {
  co_return co_await perform_with<protocol::release_request>(
      s, c, [](protocol::release_request r) { return core::create_release{std::move(r)}; });
}

asio::awaitable<http_response> delete_release(impl& s, route_call& c) {
  core::event_body what = core::delete_release{c.params[0]};  // named: GCC 12 mishandles temporaries in co_await calls
  co_return co_await perform_now(s, c, std::move(what));
}

asio::awaitable<http_response> diff_releases(impl& s, route_call& c) {
  auto a = s.fleet.releases.find(c.params[0]), b = s.fleet.releases.find(c.params[1]);
  if (a == s.fleet.releases.end() || b == s.fleet.releases.end())
    co_return error_response(404, "not_found", "no such release");
  co_return json_response(200, protocol::serialize(core::diff(a->second, b->second)));
}

// ---------------------------------------------------------------------------------------------
// Rollouts

asio::awaitable<http_response> list_rollouts(impl& s, route_call& c) {
  std::optional<std::string> status;
  if (auto it = c.query.find("status"); it != c.query.end()) status = it->second;
  std::vector<protocol::rollout_detail> items;
  for (const auto& [id, r] : s.fleet.rollouts) {
    if (status && protocol::to_string(r.status) != *status) continue;
    auto summary = r;
    summary.hosts.clear();
    summary.events.clear();
    items.push_back(std::move(summary));
  }
  co_return json_response(200, array_of(items));
}

asio::awaitable<http_response> get_rollout(impl& s, route_call& c) {
  auto it = s.fleet.rollouts.find(c.params[0]);
  if (it == s.fleet.rollouts.end()) co_return error_response(404, "not_found", "no such rollout");
  co_return json_response(200, protocol::serialize(it->second));
}

asio::awaitable<http_response> create_rollout(impl& s, route_call& c) {
  const auto now = s.opts.clock();
  std::string id = "ro-" + protocol::format_time(now).substr(0, 10) + "-" + protocol::random_hex(4);
  co_return co_await perform_with<protocol::rollout_request>(
      s, c, [&](protocol::rollout_request spec) { return core::create_rollout{id, std::move(spec)}; });
}

template <core::steer_rollout::verb V>
asio::awaitable<http_response> steer(impl& s, route_call& c) {
  auto id = c.params[0];
  co_return co_await perform_with<protocol::resume_request>(
      s, c, [&](protocol::resume_request b) { return core::steer_rollout{id, V, b.retry_failed}; }, true);
}

// ---------------------------------------------------------------------------------------------
// Audit (read from the store)

asio::awaitable<http_response> list_audit(impl& s, route_call& c) {
  const auto& q = c.query;
  audit_query aq;
  if (auto it = q.find("actor"); it != q.end()) aq.actor = it->second;
  if (auto it = q.find("action"); it != q.end()) aq.action = it->second;
  if (auto it = q.find("target"); it != q.end()) aq.target = it->second;
  if (auto it = q.find("since"); it != q.end()) {
    auto t = protocol::parse_time(it->second);
    if (!t) co_return error_response(400, "invalid_query", "since: expected an RFC 3339 UTC time");
    aq.since = *t;
  }
  auto number = [&](const char* key, std::uint64_t max, std::uint64_t& out) { return query_number(q, key, max, out); };
  std::uint64_t limit = 100, after = 0;
  if (!number("limit", 1000, limit)) co_return error_response(400, "invalid_query", "limit: 0 to 1000");
  if (!number("after", std::numeric_limits<std::int64_t>::max(), after))
    co_return error_response(400, "invalid_query", "after: a sequence number");
  aq.limit = static_cast<std::uint32_t>(limit);
  aq.after_seq = after;
  auto job = [aq](storage& st) { return st.audit(aq); };
  auto rows = co_await s.db->run<std::vector<protocol::audit_event>>(std::move(job));
  co_return json_response(200, array_of(rows));
}

// The export in pages of 1,000 rows, each read from the store when the client has taken the one
// before: memory stays at a page whatever the log's size.
struct audit_export {
  std::shared_ptr<impl> service;
  bool csv = false;
  std::uint64_t after = 0;
  enum class phase { header, rows, tail, done } at = phase::header;
};

constexpr std::uint32_t page_rows = 1000;

asio::awaitable<std::string> next_export_chunk(std::shared_ptr<audit_export> x) {
  auto& s = *x->service;
  if (x->at == audit_export::phase::header) {
    x->at = audit_export::phase::rows;
    if (x->csv) co_return "seq,at,actor,action,target,detail,prev_hash,hash\n";
  }
  std::string out;
  while (out.empty() && x->at == audit_export::phase::rows) {
    audit_query aq;
    aq.after_seq = x->after;
    aq.limit = page_rows;
    // The page's rows and the checkpoints among them, read together.
    using page = std::pair<std::vector<protocol::audit_event>, std::vector<protocol::audit_checkpoint>>;
    auto job = [aq](storage& st) {
      page p{st.audit(aq), {}};
      if (!p.first.empty())
        for (auto& cp : st.audit_checkpoints(aq.after_seq, aq.limit))  // at most one per row
          if (cp.seq <= p.first.back().seq) p.second.push_back(std::move(cp));
      return p;
    };
    auto [rows, checkpoints] = co_await s.db->run<page>(std::move(job));
    auto next_checkpoint = checkpoints.begin();
    for (const auto& e : rows) {
      if (!x->csv) {
        out += protocol::serialize(e);
        out += '\n';
        // Right after the row it covers, so that a verifier reading the export in order checks it
        // there; one naming a row that is not there is written too, where the verifier sees it.
        for (; next_checkpoint != checkpoints.end() && next_checkpoint->seq <= e.seq; ++next_checkpoint)
          out += protocol::audit_checkpoint_line(*next_checkpoint) + '\n';
      } else {
        out += fmt::format("{},{},{},{},{},{},{},{}\n", e.seq, csv_cell(protocol::format_time(e.at)), csv_cell(e.actor),
                           csv_cell(e.action), csv_cell(e.target), csv_cell(json::serialize(e.detail)),
                           csv_cell(e.prev_hash), csv_cell(e.hash));
      }
      x->after = e.seq;
    }
    if (rows.size() < page_rows) x->at = x->csv ? audit_export::phase::done : audit_export::phase::tail;
  }
  while (out.empty() && x->at == audit_export::phase::tail) {
    // Checkpoints of rows past the last one: a truncated log shows as such.
    auto job = [after = x->after](storage& st) { return st.audit_checkpoints(after, page_rows); };
    auto tail = co_await s.db->run<std::vector<protocol::audit_checkpoint>>(std::move(job));
    for (const auto& cp : tail) out += protocol::audit_checkpoint_line(cp) + '\n';
    if (tail.size() < page_rows) x->at = audit_export::phase::done;
    else x->after = tail.back().seq;
  }
  co_return out;
}

asio::awaitable<http_response> export_audit(impl& s, route_call& c) {
  std::string format = "jsonl";
  if (auto it = c.query.find("format"); it != c.query.end()) format = it->second;
  if (format != "csv" && format != "jsonl") co_return error_response(400, "invalid_query", "format must be csv or jsonl");
  auto x = std::make_shared<audit_export>();
  x->service = s.shared_from_this();
  x->csv = format == "csv";
  http_response r;
  r.content_type = x->csv ? "text/csv; charset=utf-8" : "application/x-ndjson";
  r.stream = [x]() { return next_export_chunk(x); };
  co_return r;
}

// With the coordinator's own key: a check of the database as it is, not a proof for a third
// party (which verifies an export with the public key it holds: `nixfleet audit verify`).
asio::awaitable<http_response> verify_audit(impl& s, route_call&) {
  std::optional<protocol::public_key> key;
  if (s.opts.audit_key) key = protocol::to_public_key(*s.opts.audit_key);
  auto job = [key](storage& st) { return st.verify_audit(key); };
  auto v = co_await s.db->run<protocol::audit_verification>(std::move(job));
  co_return json_response(200, protocol::serialize(v));
}

// ---------------------------------------------------------------------------------------------
// Keys

asio::awaitable<http_response> list_keys(impl& s, route_call&) {
  co_await s.sync_keys();  // the store's keys, those made by `keys create` included
  std::vector<protocol::api_key_info> all;
  for (const auto& [h, k] : s.fleet.keys) all.push_back(k.info);
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.created_at < b.created_at; });
  co_return json_response(200, array_of(all));
}

asio::awaitable<http_response> create_key(impl& s, route_call& c) {
  co_return co_await perform_with<protocol::key_request>(s, c, [](protocol::key_request b) { return new_key(std::move(b)); });
}

asio::awaitable<http_response> delete_key(impl& s, route_call& c) {
  co_await s.sync_keys();  // a key made by `keys create` and never used is revocable too
  core::event_body what = core::delete_key{c.params[0]};  // named: GCC 12 mishandles temporaries in co_await calls
  co_return co_await perform_now(s, c, std::move(what));
}

// ---------------------------------------------------------------------------------------------
// Webhooks (admin: a hook's URL may itself be a secret)

asio::awaitable<http_response> list_webhooks(impl& s, route_call&) {
  auto job = [](storage& st) { return st.pending_deliveries(); };
  const auto pending = co_await s.db->run<std::map<std::string, std::uint64_t>>(std::move(job));
  std::vector<protocol::webhook_info> all;
  for (const auto& [id, w] : s.fleet.webhooks) {
    all.push_back(w.info);
    if (auto p = pending.find(id); p != pending.end()) all.back().pending = p->second;
  }
  co_return json_response(200, array_of(all));
}

asio::awaitable<http_response> add_webhook(impl& s, route_call& c) {
  co_return co_await perform_with<protocol::webhook_request>(s, c, [](protocol::webhook_request b) {
    return core::add_webhook{"wh-" + protocol::random_hex(4), std::move(b)};
  });
}

asio::awaitable<http_response> remove_webhook(impl& s, route_call& c) {
  core::event_body what = core::remove_webhook{c.params[0]};  // named: GCC 12 mishandles temporaries in co_await calls
  co_return co_await perform_now(s, c, std::move(what));
}

// A hook's delivery log, newest first: each event's state, attempts and last error.
asio::awaitable<http_response> webhook_deliveries(impl& s, route_call& c) {
  if (!s.fleet.webhooks.contains(c.params[0])) co_return error_response(404, "not_found", "no such webhook");
  std::uint64_t limit = 50;
  if (!query_number(c.query, "limit", 1000, limit) || limit == 0)
    co_return error_response(400, "invalid_query", "limit: 1 to 1000");
  auto job = [id = c.params[0], n = static_cast<std::uint32_t>(limit)](storage& st) { return st.deliveries(id, n); };
  auto rows = co_await s.db->run<std::vector<protocol::webhook_delivery>>(std::move(job));
  co_return json_response(200, array_of(rows));
}

// ---------------------------------------------------------------------------------------------
// The fleet CA: one-time tokens, enrollment, renewal, revocation

http_response no_ca() {
  return error_response(404, "enrollment_disabled", "this coordinator has no fleet CA (start it with --ca-dir)");
}

// The fleet CA's certificate for `id` over the request's key, valid from a little before now
// until the configured lifetime from now.
protocol::issued_certificate issue(const impl& s, const std::string& id, const pki::csr_info& csr, protocol::timestamp now) {
  // Back-dated for clocks that differ, by at most a tenth of the lifetime so that the agent's "renew at
  // two thirds" still falls well after issuance when lifetimes are short.
  const auto skew = std::min<std::chrono::seconds>(std::chrono::minutes(5), s.opts.certificate_lifetime / 10);
  const auto from = std::chrono::floor<std::chrono::seconds>(now) - skew;
  const auto until = std::chrono::floor<std::chrono::seconds>(now) + s.opts.certificate_lifetime;
  protocol::issued_certificate out;
  out.machine_id = id;
  out.serial = pki::random_serial();
  out.certificate = s.opts.ca->issue_client(csr, id, out.serial, from, until);
  out.ca_chain = s.opts.ca->chain_pem();
  out.not_before = std::chrono::time_point_cast<std::chrono::milliseconds>(from);
  out.not_after = std::chrono::time_point_cast<std::chrono::milliseconds>(until);
  return out;
}

// The request, checked: a valid signature over an acceptable key, and a CN naming the machine.
std::variant<pki::csr_info, http_response> csr_for(std::string_view pem, const std::string& id) {
  std::string why;
  auto csr = pki::read_csr(pem, &why);
  if (!csr) return error_response(400, "invalid_csr", why);
  if (csr->cn != id)
    return error_response(400, "invalid_csr", "the request's CN is \"" + csr->cn.substr(0, 128) + "\", not the machine id " + id);
  return std::move(*csr);
}

asio::awaitable<http_response> create_enroll_token(impl& s, route_call& c) {
  if (!s.opts.ca) co_return no_ca();
  auto id = c.params[0];
  auto secret = "nfe_" + protocol::random_hex(32);
  co_return co_await perform_with<protocol::enroll_token_request>(
      s, c, [&](protocol::enroll_token_request b) { return core::create_enroll_token{id, secret, std::move(b)}; }, true);
}

// Anyone may try; only a live token bound to the machine, over TLS, with a request for that
// machine, gets a certificate. The token is spent in the same change set as the certificate is
// recorded: a replay of the request finds it used.
asio::awaitable<http_response> enroll(impl& s, route_call& c) {
  if (!s.opts.ca) co_return no_ca();
  if (!c.req.tls) co_return error_response(403, "tls_required", "enrollment carries a token: TLS only");
  auto body = body_of<protocol::enroll_request>(c.req);
  if (auto* r = std::get_if<http_response>(&body)) co_return std::move(*r);
  auto b = std::get<protocol::enroll_request>(std::move(body));
  const auto now = s.opts.clock();
  const auto hash = core::is_enroll_token_text(b.token) ? protocol::sha256_hex(b.token) : std::string();
  if (auto no = core::enrollment_refusal(s.fleet, hash, b.machine_id, now)) {
    // Anyone may send these: one line per 10 s at most, with how many were not logged.
    if (auto skipped = s.enroll_refusals.take(std::chrono::steady_clock::now()))
      log::warn("enrollment_refused", {{"machine_id", b.machine_id}, {"peer", c.req.peer}, {"not_logged_since", *skipped}});
    co_return refused(*no);
  }
  auto csr = csr_for(b.csr, b.machine_id);
  if (auto* r = std::get_if<http_response>(&csr)) co_return std::move(*r);
  auto issued = issue(s, b.machine_id, std::get<pki::csr_info>(csr), now);
  const auto serial = issued.serial, until = protocol::format_time(issued.not_after);
  core::event e{"enroll:" + b.machine_id, core::enroll_machine{hash, std::move(issued)}};
  auto answer = co_await s.perform(std::move(e));
  if (answer.status < 300)
    log::info("machine_enrolled", {{"machine_id", b.machine_id}, {"serial", serial}, {"not_after", until}, {"peer", c.req.peer}});
  co_return answer;
}

// A new certificate over the machine's current one (the agent route checked it names this
// machine and is not revoked). An expired certificate cannot get here: the handshake refuses it.
asio::awaitable<http_response> renew_certificate(impl& s, route_call& c) {
  if (!s.opts.ca) co_return no_ca();
  if (!c.req.tls || !c.req.client.id)
    co_return error_response(401, "client_certificate_required", "renewal needs the machine's current certificate");
  auto body = body_of<protocol::certificate_request>(c.req);
  if (auto* r = std::get_if<http_response>(&body)) co_return std::move(*r);
  const auto id = c.params[0];
  auto csr = csr_for(std::get<protocol::certificate_request>(body).csr, id);
  if (auto* r = std::get_if<http_response>(&csr)) co_return std::move(*r);
  auto issued = issue(s, id, std::get<pki::csr_info>(csr), s.opts.clock());
  const auto serial = issued.serial, until = protocol::format_time(issued.not_after);
  core::event e{"agent:" + id, core::renew_certificate{c.req.client.serial, std::move(issued)}};
  auto answer = co_await s.perform(std::move(e));
  if (answer.status < 300)
    log::info("certificate_renewed", {{"machine_id", id}, {"serial", serial}, {"previous", c.req.client.serial}, {"not_after", until}});
  else
    log::warn("certificate_renewal_refused", {{"machine_id", id}, {"status", answer.status}});
  co_return answer;
}

asio::awaitable<http_response> revoke_machine(impl& s, route_call& c) {
  core::event_body what = core::revoke_machine{c.params[0]};  // named: GCC 12 mishandles temporaries in co_await calls
  co_return co_await perform_now(s, c, std::move(what));
}

asio::awaitable<http_response> get_ca(impl& s, route_call&) {
  if (!s.opts.ca) co_return no_ca();
  http_response r;
  r.content_type = "application/x-pem-file";
  r.body = s.opts.ca->chain_pem();
  co_return r;
}

// Every revoked certificate that has not yet expired, signed by the fleet CA; made again when a
// revocation changed it, else at most hourly.
asio::awaitable<http_response> get_crl(impl& s, route_call&) {
  if (!s.opts.ca) co_return no_ca();
  const auto now = std::chrono::floor<std::chrono::seconds>(s.opts.clock());
  std::vector<pki::revoked_certificate> revoked;
  for (const auto& [serial, cert] : s.fleet.certificates)
    if (cert.revoked_at && cert.not_after > now)
      revoked.push_back({serial, std::chrono::floor<std::chrono::seconds>(*cert.revoked_at)});
  if (s.crl.pem.empty() || s.crl.entries != revoked.size() || now - s.crl.made >= std::chrono::hours(1)) {
    s.crl.number = std::max<std::uint64_t>(s.crl.number + 1, static_cast<std::uint64_t>(now.time_since_epoch().count()));
    s.crl.pem = s.opts.ca->crl(revoked, s.crl.number, now, now + std::chrono::days(1));
    s.crl.entries = revoked.size();
    s.crl.made = now;
  }
  http_response r;
  r.content_type = "application/pkix-crl";
  r.body = s.crl.pem;
  co_return r;
}

asio::awaitable<http_response> healthz(impl&, route_call&) { co_return json_response(200, R"({"status":"ok"})"); }

// ---------------------------------------------------------------------------------------------
// The table

enum class access {
  anyone,
  agent,              // a client certificate for the machine in the path
  operator_key,       // an API key with the operation's role
  agent_or_operator,  // any machine's certificate, or an API key
};

using handler = asio::awaitable<http_response> (*)(impl&, route_call&);

struct route {
  http::verb method;
  std::string_view pattern;  // segments; {name} matches an identifier
  access who;
  operation op;
  handler fn;
};

using v = http::verb;
constexpr auto read = operation::read;

const route routes[] = {
    {v::get, "/healthz", access::anyone, read, healthz},
    {v::get, "/api/v1/machines/{id}/desired", access::agent, read, get_desired},
    {v::delete_, "/api/v1/machines/{id}/desired", access::operator_key, operation::clear_desired, clear_desired},
    {v::post, "/api/v1/machines/{id}/reports", access::agent, read, post_reports},
    {v::post, "/api/v1/machines/{id}/rollback", access::operator_key, operation::rollback_machine, rollback_machine},
    {v::post, "/api/v1/machines/{id}/certificate", access::agent, read, renew_certificate},
    {v::post, "/api/v1/machines/{id}/enroll-token", access::operator_key, operation::enroll_machine,
     create_enroll_token},
    {v::post, "/api/v1/machines/{id}/revoke", access::operator_key, operation::revoke_machine, revoke_machine},
    {v::post, "/api/v1/enroll", access::anyone, read, enroll},
    {v::get, "/api/v1/ca", access::anyone, read, get_ca},
    {v::get, "/api/v1/ca/crl", access::anyone, read, get_crl},
    {v::get, "/api/v1/machines", access::operator_key, read, list_machines},
    {v::get, "/api/v1/machines/{id}", access::operator_key, read, get_machine},
    {v::get, "/api/v1/machines/{id}/reports", access::operator_key, read, machine_reports},
    {v::put, "/api/v1/machines/{id}", access::operator_key, operation::update_machine, put_machine},
    {v::get, "/api/v1/revocations", access::agent_or_operator, read, get_revocations},
    {v::put, "/api/v1/revocations", access::operator_key, operation::publish_revocations, put_revocations},
    {v::get, "/api/v1/releases", access::operator_key, read, list_releases},
    {v::post, "/api/v1/releases", access::operator_key, operation::create_release, create_release},
    {v::get, "/api/v1/releases/{id}", access::operator_key, read, get_release},
    {v::delete_, "/api/v1/releases/{id}", access::operator_key, operation::delete_release, delete_release},
    {v::get, "/api/v1/releases/{a}/diff/{b}", access::operator_key, read, diff_releases},
    {v::get, "/api/v1/rollouts", access::operator_key, read, list_rollouts},
    {v::post, "/api/v1/rollouts", access::operator_key, operation::create_rollout, create_rollout},
    {v::get, "/api/v1/rollouts/{id}", access::operator_key, read, get_rollout},
    {v::post, "/api/v1/rollouts/{id}/pause", access::operator_key, operation::steer_rollout,
     steer<core::steer_rollout::verb::pause>},
    {v::post, "/api/v1/rollouts/{id}/resume", access::operator_key, operation::steer_rollout,
     steer<core::steer_rollout::verb::resume>},
    {v::post, "/api/v1/rollouts/{id}/cancel", access::operator_key, operation::steer_rollout,
     steer<core::steer_rollout::verb::cancel>},
    {v::get, "/api/v1/audit", access::operator_key, read, list_audit},
    {v::get, "/api/v1/audit/export", access::operator_key, read, export_audit},
    {v::get, "/api/v1/audit/verify", access::operator_key, read, verify_audit},
    {v::get, "/api/v1/keys", access::operator_key, operation::manage_keys, list_keys},
    {v::post, "/api/v1/keys", access::operator_key, operation::manage_keys, create_key},
    {v::delete_, "/api/v1/keys/{id}", access::operator_key, operation::manage_keys, delete_key},
    {v::get, "/api/v1/webhooks", access::operator_key, operation::manage_webhooks, list_webhooks},
    {v::post, "/api/v1/webhooks", access::operator_key, operation::manage_webhooks, add_webhook},
    {v::delete_, "/api/v1/webhooks/{id}", access::operator_key, operation::manage_webhooks, remove_webhook},
    {v::get, "/api/v1/webhooks/{id}/deliveries", access::operator_key, operation::manage_webhooks, webhook_deliveries},
};

// Matches `seg` against `pattern`, collecting parameters.
bool match(std::string_view pattern, const std::vector<std::string>& seg, std::vector<std::string>& params) {
  params.clear();
  std::size_t i = 0;
  pattern.remove_prefix(1);
  while (!pattern.empty()) {
    const auto end = pattern.find('/');
    const auto part = pattern.substr(0, end);
    if (i >= seg.size()) return false;
    if (part.starts_with('{')) params.push_back(seg[i]);
    else if (seg[i] != part) return false;
    ++i;
    pattern = end == std::string_view::npos ? std::string_view() : pattern.substr(end + 1);
  }
  return i == seg.size();
}

}  // namespace

bool query_number(const std::map<std::string, std::string>& query, const char* key, std::uint64_t max,
                  std::uint64_t& out) {
  auto it = query.find(key);
  return it == query.end() || whole_number(it->second, max, out);
}

asio::awaitable<std::variant<core::principal, http_response>> impl::key_principal(std::string_view key) {
  if (!is_key_text(key)) co_return error_response(401, "unauthenticated", "not an API key (nfk_ and 64 hex digits)");
  const std::string hash = protocol::sha256_hex(key);
  auto k = fleet.keys.find(hash);
  if (k == fleet.keys.end()) {
    const auto now = std::chrono::steady_clock::now();
    if (auto u = unknown_keys.find(hash); u != unknown_keys.end()) {
      if (u->second > now) {
        ++key_lookups.cached;
        co_return error_response(401, "unauthenticated", "unknown API key");
      }
      unknown_keys.erase(u);
    }
    // Made by `nixfleet-coordinator keys create` after this process loaded the store.
    auto job = [hash](storage& st) { return st.find_key(hash); };
    auto found = co_await db->run<std::optional<core::key_record>>(std::move(job));
    k = fleet.keys.find(hash);  // another request may have found it meanwhile
    if (k == fleet.keys.end()) {
      if (!found) {
        ++key_lookups.unknown;
        if (unknown_keys.size() >= unknown_keys_max) unknown_keys.clear();
        unknown_keys.emplace(hash, now + opts.unknown_key_ttl);
        co_return error_response(401, "unauthenticated", "unknown API key");
      }
      ++key_lookups.found;
      k = fleet.keys.emplace(hash, std::move(*found)).first;
    }
  }
  k->second.info.last_used_at = opts.clock();
  keys_used.insert(hash);
  co_return core::principal{k->second.info.name, k->second.info.role};
}

asio::awaitable<http_response> impl::dispatch(http_request& req, std::string& route_name,
                                              const core::principal* session) {
  // Memory may hold a change the store refused: nothing more is served from it.
  if (fatal) co_return error_response(503, "unavailable", "the coordinator lost its store and is stopping");
  if (auto h = req.msg.find(protocol::protocol_header); h != req.msg.end()) {
    std::string_view ver = h->value();
    if (!speaks_our_protocol(ver))
      co_return error_response(426, "unsupported_protocol", "this coordinator speaks protocol version 1");
  }
  auto parsed = boost::urls::parse_origin_form(req.msg.target());
  if (!parsed) co_return error_response(400, "bad_request", "the request target is not a valid path");
  std::vector<std::string> seg;
  for (auto s : parsed->segments()) seg.push_back(s);
  route_call call{req, {}, {}, {}};
  for (auto p : parsed->params()) call.query[p.key] = p.value;

  const route* found = nullptr;
  bool path_known = false;
  for (const auto& r : routes) {
    if (!match(r.pattern, seg, call.params)) continue;
    path_known = true;
    route_name = std::string(r.pattern);
    for (const auto& p : call.params)
      if (protocol::check_identifier(p))
        co_return error_response(400, "invalid_identifier", "not a valid identifier: [A-Za-z0-9][A-Za-z0-9._-]{0,127}");
    if (r.method == req.msg.method()) {
      found = &r;
      break;
    }
  }
  if (!path_known) {
    route_name = "unmatched";
    co_return error_response(404, "not_found", "no such route");
  }
  if (!found) co_return error_response(405, "method_not_allowed", "this path does not take that method");

  if (session) {
    // The dashboard reaches operator routes only, as the session's key.
    if (found->who != access::operator_key && found->who != access::agent_or_operator)
      co_return error_response(404, "not_found", "no such route");
    call.who = *session;
    if (auto no = core::authorize(call.who, found->op)) co_return refused(*no);
  }
  const bool from_agent = !session && req.msg.find(http::field::authorization) == req.msg.end() &&
                          (req.client.id || opts.insecure_http);
  if (session) {
    // Authorised above.
  } else if (found->who == access::agent) {
    if (auto no = core::authorize_agent(req.client.id, req.client.problem, call.params[0], opts.insecure_http)) co_return refused(*no);
    if (auto no = core::certificate_refusal(fleet, call.params[0], req.client.serial, opts.clock())) co_return refused(*no);
  } else if (found->who == access::agent_or_operator && from_agent && req.client.id) {
    if (auto no = core::certificate_refusal(fleet, *req.client.id, req.client.serial, opts.clock())) co_return refused(*no);
  } else if (found->who == access::operator_key || (found->who == access::agent_or_operator && !from_agent)) {
    auto auth = co_await authenticate(*this, req);
    if (auto* r = std::get_if<http_response>(&auth)) co_return std::move(*r);
    call.who = std::get<core::principal>(std::move(auth));
    if (auto no = core::authorize(call.who, found->op)) co_return refused(*no);
  }
  if (req.msg.method() == http::verb::get && found->fn != get_desired) co_await settled();
  auto answer = co_await found->fn(*this, call);
  // An admin action is anchored at once: rewriting it later would need the coordinator's key.
  if (found->who == access::operator_key && core::required_role(found->op) == protocol::role::admin &&
      answer.status < 300)
    co_await checkpoint_audit();
  co_return answer;
}

asio::awaitable<http_response> impl::handle(http_request& req) {
  const auto start = std::chrono::steady_clock::now();
  std::string route = "unmatched";
  http_response r = co_await dispatch(req, route);
  if (r.held) co_return r;  // it says and counts what it answers when it does (get_desired)
  r.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
  observe(route, r.status, start);
  co_return r;
}

void impl::observe(const std::string& route, unsigned status, std::chrono::steady_clock::time_point start) {
  observe(route_stats[route], status, start);
}

void impl::observe(route_metrics& m, unsigned status, std::chrono::steady_clock::time_point start) {
  ++m.by_status[status];
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++m.count;
  m.sum += secs;
  for (std::size_t i = 0; i < latency_buckets.size(); ++i)
    if (secs <= latency_buckets[i]) ++m.buckets[i];
}

std::size_t service::impl::body_limit_for(const http::request_header<>& h) const {
  // Known from the header alone, before the body is read: the route checks the key again, fully.
  if (h.method() != http::verb::post || h.target() != "/api/v1/releases") return 0;
  auto key = bearer_key(h[http::field::authorization]);
  if (!key) return 0;
  auto k = fleet.keys.find(protocol::sha256_hex(*key));
  if (k == fleet.keys.end() || k->second.info.role == role::readonly) return 0;
  return opts.release_body_limit;
}

}  // namespace nixfleet::coordinator::io
