// Parsing health.json: gate timing, then each probe through its type's factory.
#include "nixfleet/health/config.hpp"

#include "nixfleet/protocol/json_fields.hpp"

#include "nixfleet/common/durable_file.hpp"

#include <boost/json/parse.hpp>

#include <set>

namespace nixfleet::health {

namespace fields = protocol::fields;
using protocol::errc;

template <class V, class X>
  requires std::same_as<std::remove_const_t<X>, gate_config>
void describe(V& v, X& x) {
  v.def("grace_s", x.grace);
  v.def("interval_s", x.interval);
  v.def("soak_s", x.soak);
  v.def("failure_threshold", x.failure_threshold);
  v.def("success_threshold", x.success_threshold);
  v.def("timeout_s", x.timeout);
  v.ensure(x.interval.count() > 0, "interval_s", errc::out_of_range, "must be more than 0");
  v.ensure(x.failure_threshold >= 1 && x.failure_threshold <= 1000, "failure_threshold", errc::out_of_range,
           "must be between 1 and 1000");
  v.ensure(x.success_threshold >= 1 && x.success_threshold <= 1000, "success_threshold", errc::out_of_range,
           "must be between 1 and 1000");
  v.ensure(x.timeout >= x.grace + x.soak, "timeout_s", errc::out_of_range, "must be at least grace_s + soak_s");
}

std::vector<gated_probe> health_setup::gated() const {
  std::vector<gated_probe> out;
  for (const auto& p : probes) out.push_back({p->common().name, p->common().required});
  return out;
}

protocol::decoded<health_setup> parse_health_config(std::string_view text, const probe_env& env,
                                                    const registry& types) {
  boost::json::parse_options opts;
  opts.max_depth = 32;
  opts.allow_comments = true;
  opts.allow_trailing_commas = true;
  boost::system::error_code ec;
  auto doc = boost::json::parse(text, ec, {}, opts);
  if (ec) return protocol::decode_error{errc::invalid_json, {}, "malformed JSON: " + ec.message()};

  health_setup setup;
  std::optional<protocol::decode_error> err;
  fields::decoder top(doc, nullptr, err);
  top.def("gate", setup.gate);
  if (err) return *err;

  const auto* list = doc.as_object().if_contains("probes");
  if (list == nullptr || list->is_null()) return setup;
  const fields::path_node probes_node{nullptr, "probes"};
  if (!list->is_array()) return protocol::decode_error{errc::wrong_type, "probes", "expected a list of probes"};
  if (list->get_array().size() > 256) return protocol::decode_error{errc::too_many_items, "probes", "at most 256 probes"};

  std::set<std::string> names;
  std::size_t index = 0;
  for (const auto& item : list->get_array()) {
    const fields::path_node here{&probes_node, {}, index++, true};
    probe_common common;
    fields::decoder d(item, &here, err);
    d.req("name", common.name, {.fn = protocol::check_identifier});
    d.req("type", common.type, {.max_len = 64});
    d.def("timeout_s", common.timeout);
    d.def("required", common.required);
    d.ensure(common.timeout.count() > 0, "timeout_s", errc::out_of_range, "must be more than 0");
    if (err) {
      if (!common.name.empty()) err->message = "probe \"" + common.name + "\": " + err->message;
      return *err;
    }
    if (!names.insert(common.name).second) {
      const fields::path_node at{&here, "name"};
      return protocol::decode_error{errc::invalid_combination, fields::render(&at),
                                    "probe \"" + common.name + "\": another probe has this name"};
    }
    const auto* factory = types.find(common.type);
    if (factory == nullptr) {
      std::string known;
      for (const auto& t : types.types()) known += (known.empty() ? "" : ", ") + t;
      const fields::path_node at{&here, "type"};
      return protocol::decode_error{errc::invalid_enum, fields::render(&at),
                                    "probe \"" + common.name + "\": unknown type; known types: " + known};
    }
    const auto name = common.name;
    auto made = (*factory)(std::move(common), item, &here, env);
    if (!made) {
      auto e = made.error();
      e.message = "probe \"" + name + "\": " + e.message;
      return e;
    }
    setup.probes.push_back(std::move(*made));
  }
  return setup;
}

protocol::decoded<health_setup> load_health_config(const std::string& path, const probe_env& env,
                                                   const registry& types) {
  auto text = durable::read_file(path, 1 << 20);
  if (!text && text.error() == boost::system::errc::file_too_large)
    return protocol::decode_error{errc::too_long, {}, path + " is larger than 1 MiB"};
  if (!text) return protocol::decode_error{errc::invalid_json, {}, "cannot read " + path};
  return parse_health_config(*text, env, types);
}

}  // namespace nixfleet::health
