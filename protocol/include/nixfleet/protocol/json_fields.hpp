// The field-list machinery behind the codec, shared with other components' JSON configuration:
// one `describe(visitor, value)` per type walked by `decoder` (strict, names the failing field)
// and `encoder`. Not part of the wire API.
#pragma once

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/time.hpp"
#include "nixfleet/protocol/types.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/json/value.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace nixfleet::protocol::fields {

using check_fn = boost::system::error_code (*)(std::string_view);

// How one field is checked beyond its JSON type.
struct spec {
  check_fn fn = nullptr;                              // strings (and each string of a list)
  std::size_t max_len = limits::max_message_bytes;    // strings without a validator
  std::size_t max_items = limits::max_list_items;     // lists
};


// A JSON path built on the stack, rendered only when something is wrong.
struct path_node {
  const path_node* parent = nullptr;
  std::string_view key;
  std::size_t index = 0;
  bool is_index = false;
};

inline std::string render(const path_node* p) {
  if (p == nullptr) return {};
  std::string out = render(p->parent);
  if (p->is_index) {
    out.append("[").append(std::to_string(p->index)).append("]");
  } else if (!p->key.empty()) {
    if (!out.empty()) out.push_back('.');
    out.append(p->key);
  }
  return out;
}

template <class T>
struct enum_names;

#define NIXFLEET_ENUM_NAMES(type, ...)                                             \
  template <>                                                                      \
  struct enum_names<type> {                                                        \
    static constexpr std::pair<type, std::string_view> table[] = {__VA_ARGS__};    \
  };

NIXFLEET_ENUM_NAMES(activation_mode, {activation_mode::switch_, "switch"}, {activation_mode::boot, "boot"},
                    {activation_mode::test, "test"})
NIXFLEET_ENUM_NAMES(report_kind, {report_kind::heartbeat, "heartbeat"}, {report_kind::up_to_date, "up_to_date"},
                    {report_kind::fetching, "fetching"}, {report_kind::fetched, "fetched"},
                    {report_kind::fetch_failed, "fetch_failed"}, {report_kind::rejected, "rejected"},
                    {report_kind::activating, "activating"}, {report_kind::activated, "activated"},
                    {report_kind::activation_failed, "activation_failed"}, {report_kind::health, "health"},
                    {report_kind::confirmed, "confirmed"}, {report_kind::rolled_back, "rolled_back"},
                    {report_kind::rollback_failed, "rollback_failed"})
NIXFLEET_ENUM_NAMES(probe_status, {probe_status::pass, "pass"}, {probe_status::fail, "fail"})
NIXFLEET_ENUM_NAMES(lifecycle, {lifecycle::active, "active"}, {lifecycle::maintenance, "maintenance"},
                    {lifecycle::decommissioned, "decommissioned"})
NIXFLEET_ENUM_NAMES(role, {role::readonly, "readonly"}, {role::deploy, "deploy"}, {role::admin, "admin"})
NIXFLEET_ENUM_NAMES(failure_action, {failure_action::pause, "pause"}, {failure_action::revert, "revert"},
                    {failure_action::halt, "halt"})
NIXFLEET_ENUM_NAMES(rollout_status, {rollout_status::running, "running"}, {rollout_status::paused, "paused"},
                    {rollout_status::completed, "completed"}, {rollout_status::cancelled, "cancelled"},
                    {rollout_status::halted, "halted"}, {rollout_status::reverted, "reverted"})
NIXFLEET_ENUM_NAMES(wave_status, {wave_status::pending, "pending"}, {wave_status::active, "active"},
                    {wave_status::soaking, "soaking"}, {wave_status::done, "done"}, {wave_status::failed, "failed"})
NIXFLEET_ENUM_NAMES(host_state, {host_state::pending, "pending"}, {host_state::dispatched, "dispatched"},
                    {host_state::activating, "activating"}, {host_state::confirmed, "confirmed"},
                    {host_state::soaked, "soaked"}, {host_state::failed, "failed"},
                    {host_state::left, "left"})
NIXFLEET_ENUM_NAMES(delivery_state, {delivery_state::pending, "pending"}, {delivery_state::delivered, "delivered"},
                    {delivery_state::failed, "failed"})
#undef NIXFLEET_ENUM_NAMES

template <class E>
std::string_view enum_to_string(E v) noexcept {
  for (const auto& [e, name] : enum_names<E>::table)
    if (e == v) return name;
  return "unknown";
}

template <class E>
std::optional<E> enum_from_string(std::string_view s) noexcept {
  for (const auto& [e, name] : enum_names<E>::table)
    if (name == s) return e;
  return std::nullopt;
}

template <class E>
std::string enum_choices() {
  std::string out;
  for (const auto& [e, name] : enum_names<E>::table) {
    if (!out.empty()) out.append(", ");
    out.append(name);
  }
  return out;
}

template <class E>
concept wire_enum = requires { enum_names<E>::table; };

// ---------------------------------------------------------------------------------------
// Decoder

class decoder {
 public:

  decoder(const boost::json::value& v, const path_node* at, std::optional<decode_error>& err)
      : obj_(v.if_object()), at_(at), err_(err) {
    if (obj_ == nullptr) fail(at, errc::wrong_type, "expected an object");
  }

  bool ok() const noexcept { return !err_.has_value(); }

  template <class T>
  void req(std::string_view key, T& out, const spec& s = {}) {
    if (!ok()) return;
    path_node here{at_, key};
    const auto* v = obj_->if_contains(key);
    if (v == nullptr || v->is_null()) return fail(&here, errc::missing_field, "required field missing");
    read(*v, &here, out, s);
  }

  // Absent or null leaves nullopt. Encoded as absent.
  template <class T>
  void opt(std::string_view key, std::optional<T>& out, const spec& s = {}) {
    if (!ok()) return;
    path_node here{at_, key};
    const auto* v = obj_->if_contains(key);
    if (v == nullptr || v->is_null()) {
      out.reset();
      return;
    }
    read(*v, &here, out.emplace(), s);
  }

  // Like opt, but encoded as an explicit null when absent.
  template <class T>
  void nullable(std::string_view key, std::optional<T>& out, const spec& s = {}) {
    opt(key, out, s);
  }

  // Absent or null keeps the default already in `out`.
  template <class T>
  void def(std::string_view key, T& out, const spec& s = {}) {
    if (!ok()) return;
    path_node here{at_, key};
    const auto* v = obj_->if_contains(key);
    if (v == nullptr || v->is_null()) return;
    read(*v, &here, out, s);
  }

  // A rule across fields; `field` names the one to blame.
  void ensure(bool cond, std::string_view field, errc code, std::string_view message) {
    if (!ok() || cond) return;
    path_node here{at_, field};
    fail(&here, code, message);
  }

  void fail(const path_node* where, boost::system::error_code code, std::string_view message) {
    if (!err_) err_ = decode_error{code, render(where), std::string(message)};
  }

 private:
  void read(const boost::json::value& v, const path_node* p, std::string& out, const spec& s) {
    const auto* str = v.if_string();
    if (str == nullptr) return fail(p, errc::wrong_type, "expected a string");
    const std::string_view sv(str->data(), str->size());
    if (s.fn != nullptr) {
      if (auto ec = s.fn(sv)) return fail(p, ec, ec.message());
    } else if (auto ec = check_text(sv, s.max_len, newlines::allow)) {
      return fail(p, ec, ec == errc::too_long ? "longer than " + std::to_string(s.max_len) + " bytes" : ec.message());
    }
    out.assign(sv);
  }

  void read(const boost::json::value& v, const path_node* p, bool& out, const spec&) {
    const auto* b = v.if_bool();
    if (b == nullptr) return fail(p, errc::wrong_type, "expected true or false");
    out = *b;
  }

  template <class U>
    requires std::is_unsigned_v<U> && (!std::same_as<U, bool>)
  void read(const boost::json::value& v, const path_node* p, U& out, const spec&) {
    std::uint64_t n = 0;
    if (const auto* i = v.if_int64()) {
      if (*i < 0) return fail(p, errc::out_of_range, "must not be negative");
      n = static_cast<std::uint64_t>(*i);
    } else if (const auto* u = v.if_uint64()) {
      n = *u;
    } else if (const auto* d = v.if_double()) {
      if (std::isfinite(*d) && std::trunc(*d) == *d) return fail(p, errc::out_of_range, "integer out of range");
      return fail(p, errc::wrong_type, "expected an integer");
    } else {
      return fail(p, errc::wrong_type, "expected an integer");
    }
    if (n > std::numeric_limits<U>::max())
      return fail(p, errc::out_of_range, "must be at most " + std::to_string(std::numeric_limits<U>::max()));
    out = static_cast<U>(n);
  }

  // Durations are written in seconds and may have a fraction ("timeout_s": 0.5); at most a week.
  void read(const boost::json::value& v, const path_node* p, std::chrono::milliseconds& out, const spec&) {
    double seconds = 0;
    if (const auto* i = v.if_int64()) seconds = static_cast<double>(*i);
    else if (const auto* u = v.if_uint64()) seconds = static_cast<double>(*u);
    else if (const auto* d = v.if_double()) seconds = *d;
    else return fail(p, errc::wrong_type, "expected a number of seconds");
    if (!std::isfinite(seconds) || seconds < 0 || seconds > 7 * 86400.0)
      return fail(p, errc::out_of_range, "expected between 0 and 604800 seconds");
    out = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0 + 0.5));
  }

  void read(const boost::json::value& v, const path_node* p, timestamp& out, const spec&) {
    const auto* str = v.if_string();
    if (str == nullptr) return fail(p, errc::wrong_type, "expected an RFC 3339 UTC time string");
    auto t = parse_time(std::string_view(str->data(), str->size()));
    if (!t) return fail(p, errc::invalid_time, "expected an RFC 3339 UTC time such as 2026-01-31T12:00:00.000Z");
    out = *t;
  }

  void read(const boost::json::value& v, const path_node* p, size_spec& out, const spec&) {
    const auto* str = v.if_string();
    if (str == nullptr) return fail(p, errc::wrong_type, "expected a count (\"3\") or a percentage (\"10%\")");
    auto r = parse_size_spec(std::string_view(str->data(), str->size()));
    if (!r) return fail(p, errc::invalid_size_spec, "expected a count (\"3\") or a percentage (\"10%\", at most 100%)");
    out = *r;
  }

  // Wave lists: "canary" alone is shorthand for ["1", "100%"]; inside a list it means "1".
  void read(const boost::json::value& v, const path_node* p, std::vector<size_spec>& out, const spec& s) {
    if (const auto* str = v.if_string(); str != nullptr && *str == "canary") {
      out = {{size_spec::unit::count, 1}, {size_spec::unit::percent, 100}};
      return;
    }
    const auto* arr = v.if_array();
    if (arr == nullptr) return fail(p, errc::wrong_type, "expected a list of wave sizes or \"canary\"");
    if (arr->size() > s.max_items)
      return fail(p, errc::too_many_items, "more than " + std::to_string(s.max_items) + " items");
    out.clear();
    for (std::size_t i = 0; i < arr->size() && ok(); ++i) {
      path_node here{p, {}, i, true};
      if (const auto* str = (*arr)[i].if_string(); str != nullptr && *str == "canary") {
        out.push_back({size_spec::unit::count, 1});
        continue;
      }
      read((*arr)[i], &here, out.emplace_back(), s);
    }
  }

  void read(const boost::json::value& v, const path_node* p, boost::json::object& out, const spec&) {
    const auto* o = v.if_object();
    if (o == nullptr) return fail(p, errc::wrong_type, "expected an object");
    out = *o;
  }

  template <wire_enum E>
  void read(const boost::json::value& v, const path_node* p, E& out, const spec&) {
    const auto* str = v.if_string();
    if (str == nullptr) return fail(p, errc::wrong_type, "expected one of: " + enum_choices<E>());
    auto e = enum_from_string<E>(std::string_view(str->data(), str->size()));
    if (!e) return fail(p, errc::invalid_enum, "expected one of: " + enum_choices<E>());
    out = *e;
  }

  template <class T>
  void read(const boost::json::value& v, const path_node* p, std::vector<T>& out, const spec& s) {
    const auto* arr = v.if_array();
    if (arr == nullptr) return fail(p, errc::wrong_type, "expected a list");
    if (arr->size() > s.max_items)
      return fail(p, errc::too_many_items, "more than " + std::to_string(s.max_items) + " items");
    out.clear();
    out.reserve(arr->size());
    for (std::size_t i = 0; i < arr->size() && ok(); ++i) {
      path_node here{p, {}, i, true};
      read((*arr)[i], &here, out.emplace_back(), s);
    }
  }

  template <class T>
    requires requires(decoder& d, T& t) { describe(d, t); }
  void read(const boost::json::value& v, const path_node* p, T& out, const spec&) {
    decoder nested(v, p, err_);
    if (nested.ok()) describe(nested, out);
  }

  const boost::json::object* obj_;
  const path_node* at_;
  std::optional<decode_error>& err_;
};

// ---------------------------------------------------------------------------------------
// Encoder

class encoder {
 public:

  explicit encoder(boost::json::object& obj) : obj_(obj) {}

  template <class T>
  void req(std::string_view key, const T& v, const spec& = {}) {
    obj_[key] = write(v);
  }
  template <class T>
  void opt(std::string_view key, const std::optional<T>& v, const spec& = {}) {
    if (v) obj_[key] = write(*v);
  }
  template <class T>
  void nullable(std::string_view key, const std::optional<T>& v, const spec& = {}) {
    obj_[key] = v ? write(*v) : boost::json::value(nullptr);
  }
  template <class T>
  void def(std::string_view key, const T& v, const spec& = {}) {
    obj_[key] = write(v);
  }
  void ensure(bool, std::string_view, errc, std::string_view) {}

  static boost::json::value write(const std::string& s) { return boost::json::value(s); }
  static boost::json::value write(bool b) { return boost::json::value(b); }
  template <class U>
    requires std::is_unsigned_v<U> && (!std::same_as<U, bool>)
  static boost::json::value write(U n) {
    return boost::json::value(static_cast<std::uint64_t>(n));
  }
  static boost::json::value write(timestamp t) { return boost::json::value(format_time(t)); }
  static boost::json::value write(std::chrono::milliseconds d) {
    if (d.count() % 1000 == 0) return boost::json::value(static_cast<std::int64_t>(d.count() / 1000));
    return boost::json::value(static_cast<double>(d.count()) / 1000.0);
  }
  static boost::json::value write(const size_spec& s) { return boost::json::value(s.to_string()); }
  static boost::json::value write(const boost::json::object& o) { return boost::json::value(o); }
  template <wire_enum E>
  static boost::json::value write(E e) {
    return boost::json::value(enum_to_string(e));
  }
  template <class T>
  static boost::json::value write(const std::vector<T>& list) {
    boost::json::array arr;
    arr.reserve(list.size());
    for (const auto& e : list) arr.push_back(write(e));
    return arr;
  }
  template <class T>
    requires requires(encoder& e, const T& t) { describe(e, t); }
  static boost::json::value write(const T& v) {
    boost::json::object obj;
    encoder nested(obj);
    describe(nested, v);
    return obj;
  }

 private:
  boost::json::object& obj_;
};

}  // namespace nixfleet::protocol::fields
