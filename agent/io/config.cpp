// Agent configuration: field list, validation, file loading.
#include "nixfleet/agent/config.hpp"
#include "nixfleet/common/listen.hpp"

#include "nixfleet/protocol/json_fields.hpp"

#include "nixfleet/common/durable_file.hpp"

#include <boost/json/parse.hpp>


namespace nixfleet::agent {
namespace {

namespace fields = protocol::fields;
using protocol::errc;

boost::system::error_code check_absolute_path(std::string_view s) {
  if (!s.starts_with('/') || s.find("/../") != std::string_view::npos || s.ends_with("/..")) return errc::invalid_characters;
  return protocol::check_text(s, 4096);
}

// An IP address and a port other than 0, as nixfleet::parse_listen takes it.
boost::system::error_code check_listen(std::string_view s) {
  if (auto ep = nixfleet::parse_listen(s); !ep || ep->port() == 0) return errc::invalid_characters;
  return protocol::check_text(s, 128);
}

boost::system::error_code check_key(std::string_view s) {
  return protocol::parse_public_key(s) ? boost::system::error_code{} : make_error_code(errc::invalid_key);
}

constexpr fields::spec path_spec{.fn = check_absolute_path};

}  // namespace

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, tls_files>
void describe(V& v, X& x) {
  v.opt("ca_file", x.ca_file, path_spec);
  v.opt("cert_file", x.cert_file, path_spec);
  v.opt("key_file", x.key_file, path_spec);
  v.ensure(x.cert_file.has_value() == x.key_file.has_value(), "key_file", errc::invalid_combination,
           "cert_file and key_file go together");
}

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, forensics_config>
void describe(V& v, X& x) {
  v.def("enable", x.enable);
  v.def("journal", x.journal);
  v.def("journal_lines", x.journal_lines);
  v.def("journal_exclude", x.journal_exclude, {.max_len = 256, .max_items = 256});
  v.def("timeout_s", x.timeout);
  v.ensure(x.journal_lines >= 1 && x.journal_lines <= 10000, "journal_lines", errc::out_of_range,
           "between 1 and 10000");
  v.ensure(x.timeout >= std::chrono::milliseconds(100) && x.timeout <= std::chrono::minutes(2), "timeout_s",
           errc::out_of_range, "between 0.1 and 120 seconds");
}

namespace {

// A trusted key as configured: `"name:base64"`, or `{"key": "name:base64", "not_after": TIME}`.
struct trusted_key_entry {
  std::string key;
  std::optional<protocol::timestamp> not_after;
};

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, trusted_key_entry>
void describe(V& v, X& x) {
  v.req("key", x.key, {.fn = check_key});
  v.opt("not_after", x.not_after);
}

struct raw_config {
  agent_config cfg;
  std::vector<trusted_key_entry> trusted_keys;
  std::vector<std::string> cache_public_keys;
  std::string runner = "auto";
};

template <class V, class X>
void describe_config(V& v, X& raw) {
  auto& x = raw.cfg;
  v.def("machine_id", x.machine_id, {.fn = protocol::check_machine_id});
  v.req("coordinator_url", x.coordinator_url, {.fn = protocol::check_http_url});
  v.def("allow_insecure_http", x.allow_insecure_http);
  v.def("tls", x.tls);
  v.opt("enroll_token_file", x.enroll_token_file, path_spec);
  v.def("poll_interval_s", x.poll_interval);
  v.def("retry_interval_s", x.retry_interval);
  v.def("startup_jitter_s", x.startup_jitter);
  v.def("long_poll", x.long_poll);
  v.def("reconnect_jitter_s", x.reconnect_jitter);
  v.def("request_timeout_s", x.request_timeout);
  v.def("health_interval_s", x.health_interval);
  v.def("health_config", x.health_config, path_spec);
  v.def("state_dir", x.state_dir, path_spec);
  v.def("profile", x.profile, path_spec);
  v.def("trusted_keys", raw.trusted_keys, {.max_items = 64});
  v.def("allow_unsigned", x.allow_unsigned);
  v.opt("max_target_age_s", x.max_target_age);
  v.def("cache_public_keys", raw.cache_public_keys, {.fn = check_key, .max_items = 64});
  v.def("caches", x.caches, {.fn = protocol::check_local_cache_url, .max_items = 16});
  v.def("fetch_timeout_s", x.fetch_timeout);
  v.def("min_free_mb", x.min_free_mb);
  v.def("activation_timeout_s", x.activation_timeout);
  v.def("switch_runner", raw.runner, {.max_len = 16});
  v.def("dry_run", x.dry_run);
  v.def("control_socket", x.control_socket, path_spec);
  v.opt("metrics_listen", x.metrics_listen, {.fn = check_listen});
  v.def("outbox_limit", x.outbox_limit);
  v.def("forensics", x.forensics);
  v.def("log_level", x.log_level, {.max_len = 16});

  v.ensure(!x.enroll_token_file || !x.tls.cert_file, "enroll_token_file", errc::invalid_combination,
           "cannot be set together with tls.cert_file: an enrolled host keeps its own key and certificate in state_dir");
  v.ensure(!x.enroll_token_file || x.coordinator_url.starts_with("https://"), "enroll_token_file",
           errc::invalid_combination, "enrollment sends a token: coordinator_url must be https");
  v.ensure(!x.machine_id.empty(), "machine_id", errc::missing_field, "no machine_id and no hostname to default to");
  v.ensure(x.allow_insecure_http || x.coordinator_url.starts_with("https://"), "coordinator_url", errc::invalid_url,
           "must be https (set allow_insecure_http to use plain http)");
  for (auto [name, d] : {std::pair{"poll_interval_s", x.poll_interval}, std::pair{"retry_interval_s", x.retry_interval},
                         std::pair{"request_timeout_s", x.request_timeout},
                         std::pair{"health_interval_s", x.health_interval},
                         std::pair{"fetch_timeout_s", x.fetch_timeout},
                         std::pair{"activation_timeout_s", x.activation_timeout}})
    v.ensure(d >= std::chrono::seconds(1), name, errc::out_of_range, "must be at least 1 second");
  v.ensure(raw.runner == "auto" || raw.runner == "systemd-run" || raw.runner == "direct", "switch_runner",
           errc::invalid_enum, "expected one of: auto, systemd-run, direct");
  v.ensure(x.log_level == "trace" || x.log_level == "debug" || x.log_level == "info" || x.log_level == "warn" ||
               x.log_level == "error",
           "log_level", errc::invalid_enum, "expected one of: trace, debug, info, warn, error");
  v.ensure(x.outbox_limit >= 100, "outbox_limit", errc::out_of_range, "at least 100");
  v.ensure(!raw.trusted_keys.empty() || x.allow_unsigned, "trusted_keys", errc::missing_field,
           "no operator keys: without them any coordinator could make this host run anything; give trusted_keys "
           "(or set allow_unsigned to true to deploy unsigned targets, for tests only)");
  v.ensure(raw.trusted_keys.empty() || !x.allow_unsigned, "allow_unsigned", errc::invalid_combination,
           "cannot be set together with trusted_keys");
  v.ensure(!x.max_target_age || *x.max_target_age >= std::chrono::minutes(1), "max_target_age_s", errc::out_of_range,
           "must be at least 60 seconds");
}

}  // namespace

std::string_view to_string(switch_runner r) noexcept {
  switch (r) {
    case switch_runner::automatic: return "auto";
    case switch_runner::systemd_run: return "systemd-run";
    case switch_runner::direct: return "direct";
  }
  return "auto";
}

protocol::decoded<agent_config> parse_agent_config(std::string_view text, const std::string& hostname) {
  boost::json::parse_options opts;
  opts.max_depth = 16;
  boost::system::error_code ec;
  auto doc = boost::json::parse(text, ec, {}, opts);
  if (ec) return protocol::decode_error{errc::invalid_json, {}, "malformed JSON: " + ec.message()};
  raw_config raw;
  // The hostname default applies only when it is a valid machine id.
  if (!protocol::check_machine_id(hostname)) raw.cfg.machine_id = hostname;
  // A trusted key may be given as a plain string: read it as {"key": …}.
  if (auto* o = doc.if_object())
    if (auto* keys = o->if_contains("trusted_keys"); keys && keys->is_array())
      for (auto& k : keys->get_array())
        if (k.is_string()) k = boost::json::object{{"key", k}};
  std::optional<protocol::decode_error> err;
  fields::decoder d(doc, nullptr, err);
  if (d.ok()) describe_config(d, raw);
  if (err) return *err;
  for (const auto& k : raw.trusted_keys) raw.cfg.trusted_keys.add(protocol::parse_public_key(k.key).value(), k.not_after);
  for (const auto& k : raw.cache_public_keys) raw.cfg.cache_public_keys.push_back(protocol::parse_public_key(k).value());
  raw.cfg.runner = raw.runner == "systemd-run" ? switch_runner::systemd_run
                   : raw.runner == "direct"    ? switch_runner::direct
                                               : switch_runner::automatic;
  return raw.cfg;
}

protocol::decoded<agent_config> load_agent_config(const std::string& path, const std::string& hostname) {
  auto text = durable::read_file(path, 1 << 20);
  if (!text && text.error() == boost::system::errc::file_too_large)
    return protocol::decode_error{errc::too_long, {}, path + " is larger than 1 MiB"};
  if (!text) return protocol::decode_error{errc::invalid_json, {}, "cannot read " + path};
  return parse_agent_config(*text, hostname);
}

boost::json::value to_json(const agent_config& cfg) {
  raw_config raw{cfg, {}, {}, std::string(to_string(cfg.runner))};
  for (std::size_t i = 0; i < cfg.trusted_keys.keys().size(); ++i)
    raw.trusted_keys.push_back({cfg.trusted_keys.keys()[i].to_string(), cfg.trusted_keys.not_after(i)});
  for (const auto& k : cfg.cache_public_keys) raw.cache_public_keys.push_back(k.to_string());
  boost::json::object obj;
  fields::encoder e(obj);
  describe_config(e, std::as_const(raw));
  // Keys without not_after print as the plain strings an operator writes.
  if (auto* keys = obj.if_contains("trusted_keys"); keys && keys->is_array())
    for (auto& k : keys->get_array())
      if (k.is_object() && k.get_object().size() == 1) k = k.get_object().at("key");
  return obj;
}

}  // namespace nixfleet::agent
