// systemd_unit: passes while `systemctl is-active UNIT` says active.
#include "process_probe.hpp"

#include "nixfleet/protocol/json_fields.hpp"

namespace nixfleet::health::probes {
namespace {

boost::system::error_code check_unit_name(std::string_view s) {
  if (s.empty() || s.size() > 256 || s.front() == '-' || s.front() == '.') return protocol::errc::invalid_identifier;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
                    c == '_' || c == '.' || c == '@' || c == '-' || c == '\\';
    if (!ok) return protocol::errc::invalid_identifier;
  }
  return {};
}

class systemd_unit final : public detail::process_probe {
 public:
  systemd_unit(probe_common c, std::string unit, const probe_env& env)
      : process_probe(std::move(c), env.kill_grace), unit_(std::move(unit)), systemctl_(env.systemctl) {}

  boost::asio::awaitable<outcome> check() override {
    // (argv built before co_await: GCC 12 miscompiles braced string literals inside it)
    auto req = make_request(argv());
    auto r = co_await process::run(std::move(req));
    const auto state = detail::first_line(r.out);
    if (r.ok()) co_return outcome{true, unit_ + " is " + (state.empty() ? std::string("active") : state)};
    if (r.how == process::result::ending::exited && !state.empty()) co_return outcome{false, unit_ + " is " + state};
    co_return outcome{false, "systemctl " + detail::failure_text(r)};
  }

 private:
  std::vector<std::string> argv() const { return {systemctl_, "is-active", "--", unit_}; }
  std::string unit_;
  std::string systemctl_;
};

}  // namespace

protocol::decoded<probe_ptr> make_systemd_unit(probe_common common, const boost::json::value& config,
                                               const protocol::fields::path_node* at, const probe_env& env) {
  std::optional<protocol::decode_error> err;
  std::string unit;
  protocol::fields::decoder d(config, at, err);
  d.req("unit", unit, {.fn = check_unit_name});
  if (err) return *err;
  return probe_ptr(std::make_unique<systemd_unit>(std::move(common), std::move(unit), env));
}

}  // namespace nixfleet::health::probes
