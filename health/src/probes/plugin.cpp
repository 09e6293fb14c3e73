// plugin: a shared object implementing health/sdk/nixfleet_probe.h, run in nixfleet-probe-host so
// that a crash, a hang or a leak ends a helper process, never the agent.
#include "process_probe.hpp"

#include "nixfleet/protocol/json_fields.hpp"

#include <boost/json/serialize.hpp>

namespace nixfleet::health::probes {
namespace {

class plugin_probe final : public detail::process_probe {
 public:
  plugin_probe(probe_common c, std::string path, std::string config_json, const probe_env& env)
      : process_probe(std::move(c), env.kill_grace),
        path_(std::move(path)),
        config_(std::move(config_json)),
        host_(env.plugin_host) {}

  boost::asio::awaitable<outcome> check() override {
    auto req = make_request(argv());
    req.input = config_;
    req.max_output = 16 * 1024;
    auto r = co_await process::run(std::move(req));
    switch (r.how) {
      case process::result::ending::timed_out:
        co_return outcome{false, "plugin did not return within " + std::to_string(common().timeout.count()) + " ms"};
      case process::result::ending::signaled:
        co_return outcome{false, "plugin crashed: " + r.describe()};
      case process::result::ending::spawn_failed:
        co_return outcome{false, "cannot start the plugin host: " + r.describe()};
      case process::result::ending::exited: break;
    }
    if (r.exit_code != 0) co_return outcome{false, "plugin host " + detail::failure_text(r)};
    co_return detail::parse_json_outcome(r);
  }

 private:
  std::vector<std::string> argv() const {
    return {host_, "--plugin", path_, "--deadline-ms", std::to_string(common().timeout.count())};
  }
  std::string path_;
  std::string config_;
  std::string host_;
};

boost::system::error_code check_plugin_path(std::string_view s) {
  if (!s.starts_with('/')) return protocol::errc::invalid_characters;
  return protocol::check_text(s, 4096);
}

}  // namespace

protocol::decoded<probe_ptr> make_plugin(probe_common common, const boost::json::value& config,
                                         const protocol::fields::path_node* at, const probe_env& env) {
  std::optional<protocol::decode_error> err;
  std::string path;
  boost::json::object plugin_config;
  protocol::fields::decoder d(config, at, err);
  d.req("path", path, {.fn = check_plugin_path});
  d.def("config", plugin_config);
  if (err) return *err;
  return probe_ptr(
      std::make_unique<plugin_probe>(std::move(common), std::move(path), boost::json::serialize(plugin_config), env));
}

}  // namespace nixfleet::health::probes
