// systemd_failed: passes while at most `max_failed` units are in the failed state.
#include "process_probe.hpp"

#include "nixfleet/protocol/json_fields.hpp"

#include <sstream>

namespace nixfleet::health::probes {
namespace {

class systemd_failed final : public detail::process_probe {
 public:
  systemd_failed(probe_common c, std::uint32_t max_failed, const probe_env& env)
      : process_probe(std::move(c), env.kill_grace), max_failed_(max_failed), systemctl_(env.systemctl) {}

  boost::asio::awaitable<outcome> check() override {
    // (argv built before co_await: GCC 12 miscompiles braced string literals inside it)
    auto req = make_request(argv());
    auto r = co_await process::run(std::move(req));
    if (!r.ok()) co_return outcome{false, "systemctl " + detail::failure_text(r)};
    std::vector<std::string> failed;
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream words(line);
      std::string unit;
      if (words >> unit) failed.push_back(detail::first_line(unit, 100));
    }
    std::string names;
    for (std::size_t i = 0; i < failed.size() && i < 5; ++i) names += (i ? ", " : "") + failed[i];
    if (failed.size() > 5) names += ", …";
    const bool ok = failed.size() <= max_failed_;
    std::string msg = std::to_string(failed.size()) + " failed unit" + std::string(failed.size() == 1 ? 0 : 1, 's');
    if (!names.empty()) msg += ": " + names;
    msg += " (at most " + std::to_string(max_failed_) + " allowed)";
    co_return outcome{ok, msg};
  }

 private:
  std::vector<std::string> argv() const {
    return {systemctl_, "list-units", "--state=failed", "--no-legend", "--plain", "--no-pager"};
  }
  std::uint32_t max_failed_;
  std::string systemctl_;
};

}  // namespace

protocol::decoded<probe_ptr> make_systemd_failed(probe_common common, const boost::json::value& config,
                                                 const protocol::fields::path_node* at, const probe_env& env) {
  std::optional<protocol::decode_error> err;
  std::uint32_t max_failed = 0;
  protocol::fields::decoder d(config, at, err);
  d.def("max_failed", max_failed);
  if (err) return *err;
  return probe_ptr(std::make_unique<systemd_failed>(std::move(common), max_failed, env));
}

}  // namespace nixfleet::health::probes
