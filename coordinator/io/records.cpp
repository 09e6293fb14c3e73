// JSON form of the coordinator's machine records, as stored.
#include "nixfleet/coordinator/io/storage.hpp"

#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/json_fields.hpp"

#include <boost/json/value.hpp>

namespace nixfleet::coordinator::io {

namespace json = boost::json;

namespace {

template <class T>
T field(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) throw storage_error("machine row lacks " + std::string(key));
  auto d = protocol::from_json<T>(*v);
  if (!d) throw storage_error("machine row: " + std::string(key) + ": " + d.error().what());
  return *d;
}

std::optional<std::string> opt_string(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->as_string());
}

std::optional<timestamp> opt_time(const json::object& o, std::string_view key) {
  auto s = opt_string(o, key);
  if (!s) return std::nullopt;
  auto t = protocol::parse_time(*s);
  if (!t) throw storage_error("machine row: bad time in " + std::string(key));
  return *t;
}

template <class E>
E enum_field(const json::object& o, std::string_view key, E fallback) {
  auto s = opt_string(o, key);
  if (!s) return fallback;
  if (auto e = protocol::fields::enum_from_string<E>(*s)) return *e;
  throw storage_error("machine row: unknown " + std::string(key) + " " + *s);
}

}  // namespace

json::value to_json(const machine_record& m) {
  json::object o;
  o["id"] = m.id;
  json::array tags;
  for (const auto& t : m.tags) tags.push_back(json::value(t));
  o["tags"] = std::move(tags);
  o["lifecycle"] = protocol::to_string(m.state);
  if (m.desired) o["desired"] = protocol::to_json(*m.desired);
  o["attempt"] = m.attempt;
  if (m.current_path) o["current_path"] = *m.current_path;
  if (m.booted_path) o["booted_path"] = *m.booted_path;
  if (m.last_seen) o["last_seen"] = protocol::format_time(*m.last_seen);
  if (m.last_report) o["last_report"] = protocol::to_json(core::last_report_of(m));
  if (m.health) o["health"] = protocol::to_json(*m.health);
  if (auto p = core::health_path_of(m)) o["health_path"] = *p;
  if (m.last_event) {
    json::object e;
    e["kind"] = protocol::to_string(m.last_event->kind);
    if (m.last_event->store_path) e["store_path"] = *m.last_event->store_path;
    if (m.last_event->message) e["message"] = *m.last_event->message;
    e["received_at"] = protocol::format_time(m.last_event->received_at);
    o["last_event"] = std::move(e);
  }
  if (m.last_audited) {
    json::object a{{"kind", protocol::to_string(m.last_audited->first)}};
    if (m.last_audited->second) a["store_path"] = *m.last_audited->second;
    o["last_audited"] = std::move(a);
  }
  json::array history;
  for (const auto& h : m.history) history.push_back(protocol::to_json(h));
  o["history"] = std::move(history);
  o["acked_seq"] = m.acked_seq;
  if (m.revoked_at) o["revoked_at"] = protocol::format_time(*m.revoked_at);
  return o;
}

machine_record machine_from_json(const json::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) throw storage_error("machine row is not an object");
  machine_record m;
  m.id = opt_string(*o, "id").value_or("");
  if (m.id.empty()) throw storage_error("machine row lacks id");
  if (const auto* t = o->if_contains("tags"); t && t->is_array())
    for (const auto& x : t->as_array())
      if (x.is_string()) m.tags.emplace_back(x.as_string());
  using protocol::lifecycle;
  m.state = enum_field(*o, "lifecycle", lifecycle::active);
  if (o->contains("desired")) m.desired = field<protocol::desired_state>(*o, "desired");
  if (const auto* a = o->if_contains("attempt"); a && a->is_number())
    m.attempt = static_cast<std::uint32_t>(a->to_number<std::uint64_t>());
  m.current_path = opt_string(*o, "current_path");
  m.booted_path = opt_string(*o, "booted_path");
  m.last_seen = opt_time(*o, "last_seen");
  if (o->contains("health")) m.health = field<protocol::health_report>(*o, "health");
  // After the health and paths it may share with the record.
  if (o->contains("last_report")) core::set_last_report(m, field<protocol::report>(*o, "last_report"));
  core::set_health_path(m, opt_string(*o, "health_path"));
  if (const auto* e = o->if_contains("last_event"); e && e->is_object()) {
    const auto& eo = e->as_object();
    lifecycle_event ev;
    ev.kind = enum_field(eo, "kind", protocol::report_kind::heartbeat);
    ev.store_path = opt_string(eo, "store_path");
    ev.message = opt_string(eo, "message");
    ev.received_at = opt_time(eo, "received_at").value_or(timestamp{});
    m.last_event = ev;
  }
  if (const auto* a = o->if_contains("last_audited"); a && a->is_object())
    m.last_audited.emplace(enum_field(a->as_object(), "kind", protocol::report_kind::heartbeat),
                           opt_string(a->as_object(), "store_path"));
  if (const auto* h = o->if_contains("history"); h && h->is_array())
    for (const auto& x : h->as_array()) {
      auto g = protocol::from_json<protocol::confirmed_generation>(x);
      if (!g) throw storage_error("machine row: history: " + g.error().what());
      m.history.push_back(*g);
    }
  if (const auto* a = o->if_contains("acked_seq"); a && a->is_number()) m.acked_seq = a->to_number<std::uint64_t>();
  m.revoked_at = opt_time(*o, "revoked_at");
  return m;
}

json::value to_json(const core::enroll_token_record& t) {
  json::array tags;
  for (const auto& x : t.tags) tags.push_back(json::value(x));
  json::object o{{"hash", t.hash},
                 {"machine_id", t.machine_id},
                 {"tags", std::move(tags)},
                 {"created_at", protocol::format_time(t.created_at)},
                 {"expires_at", protocol::format_time(t.expires_at)},
                 {"created_by", t.created_by}};
  if (t.used_at) o["used_at"] = protocol::format_time(*t.used_at);
  return o;
}

core::enroll_token_record token_from_json(const json::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) throw storage_error("enrollment token row is not an object");
  core::enroll_token_record t;
  t.hash = opt_string(*o, "hash").value_or("");
  t.machine_id = opt_string(*o, "machine_id").value_or("");
  if (t.hash.empty() || t.machine_id.empty()) throw storage_error("enrollment token row lacks hash or machine_id");
  if (const auto* a = o->if_contains("tags"); a && a->is_array())
    for (const auto& x : a->as_array())
      if (x.is_string()) t.tags.emplace_back(x.as_string());
  t.created_at = opt_time(*o, "created_at").value_or(timestamp{});
  t.expires_at = opt_time(*o, "expires_at").value_or(timestamp{});
  t.created_by = opt_string(*o, "created_by").value_or("");
  t.used_at = opt_time(*o, "used_at");
  return t;
}

json::value to_json(const core::certificate_record& c) {
  json::object o{{"serial", c.serial},
                 {"machine_id", c.machine_id},
                 {"not_before", protocol::format_time(c.not_before)},
                 {"not_after", protocol::format_time(c.not_after)}};
  if (c.revoked_at) o["revoked_at"] = protocol::format_time(*c.revoked_at);
  return o;
}

core::certificate_record certificate_from_json(const json::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) throw storage_error("certificate row is not an object");
  core::certificate_record c;
  c.serial = opt_string(*o, "serial").value_or("");
  c.machine_id = opt_string(*o, "machine_id").value_or("");
  if (c.serial.empty() || c.machine_id.empty()) throw storage_error("certificate row lacks serial or machine_id");
  c.not_before = opt_time(*o, "not_before").value_or(timestamp{});
  c.not_after = opt_time(*o, "not_after").value_or(timestamp{});
  c.revoked_at = opt_time(*o, "revoked_at");
  return c;
}

json::value to_json(const core::webhook_record& w) {
  auto o = protocol::to_json(w.info).as_object();
  o.erase("pending");  // counted when listed, not kept
  if (w.secret) o["secret"] = *w.secret;
  return o;
}

core::webhook_record webhook_from_json(const json::value& v) {
  const auto* o = v.if_object();
  if (o == nullptr) throw storage_error("webhook row is not an object");
  core::webhook_record w;
  w.secret = opt_string(*o, "secret");
  auto rest = *o;
  rest.erase("secret");
  auto info = protocol::from_json<protocol::webhook_info>(rest);
  if (!info) throw storage_error("corrupt webhook row: " + info.error().what());
  w.info = std::move(*info);
  return w;
}

}  // namespace nixfleet::coordinator::io
