// exec: runs a command (argv, or /bin/sh -c when `shell` is set); exit 0 passes, or with
// `json_output` the JSON on stdout decides.
#include "process_probe.hpp"

#include "nixfleet/protocol/json_fields.hpp"

namespace nixfleet::health::probes {
namespace {

struct exec_config {
  std::string command;
  std::vector<std::string> args;
  bool shell = false;
  bool json_output = false;
  std::uint32_t max_output_bytes = 64 * 1024;
};

class exec_probe final : public detail::process_probe {
 public:
  exec_probe(probe_common c, exec_config cfg, const probe_env& env)
      : process_probe(std::move(c), env.kill_grace), cfg_(std::move(cfg)) {}

  boost::asio::awaitable<outcome> check() override {
    std::vector<std::string> argv;
    if (cfg_.shell) {
      argv = {"/bin/sh", "-c", cfg_.command};
    } else {
      argv.push_back(cfg_.command);
      argv.insert(argv.end(), cfg_.args.begin(), cfg_.args.end());
    }
    auto req = make_request(std::move(argv));
    req.max_output = cfg_.max_output_bytes;
    auto r = co_await process::run(std::move(req));
    auto o = judge(r);
    o.output = detail::output_of(r);
    co_return o;
  }

 private:
  outcome judge(const process::result& r) const {
    if (r.how != process::result::ending::exited) return outcome{false, detail::failure_text(r)};
    if (cfg_.json_output) {
      auto o = detail::parse_json_outcome(r);
      if (r.exit_code != 0 && o.passed) o = {false, "exited with code " + std::to_string(r.exit_code)};
      return o;
    }
    if (r.exit_code == 0) return outcome{true, detail::first_line(r.out)};
    auto msg = "exited with code " + std::to_string(r.exit_code);
    if (auto line = detail::first_line(r.err_tail.empty() ? r.out : r.err_tail); !line.empty()) msg += ": " + line;
    return outcome{false, msg};
  }

  exec_config cfg_;
};

boost::system::error_code check_command(std::string_view s) {
  if (s.empty() || s.front() == '-') return protocol::errc::invalid_characters;
  return protocol::check_text(s, 4096);
}

}  // namespace

protocol::decoded<probe_ptr> make_exec(probe_common common, const boost::json::value& config,
                                       const protocol::fields::path_node* at, const probe_env& env) {
  std::optional<protocol::decode_error> err;
  exec_config cfg;
  protocol::fields::decoder d(config, at, err);
  d.req("command", cfg.command, {.fn = check_command});
  d.def("args", cfg.args, {.max_len = 4096, .max_items = 256});
  d.def("shell", cfg.shell);
  d.def("json_output", cfg.json_output);
  d.def("max_output_bytes", cfg.max_output_bytes);
  d.ensure(!cfg.shell || cfg.args.empty(), "args", protocol::errc::invalid_combination,
           "with shell, put the whole command line in command");
  d.ensure(cfg.max_output_bytes >= 1 && cfg.max_output_bytes <= (1u << 20), "max_output_bytes",
           protocol::errc::out_of_range, "between 1 and 1048576");
  if (err) return *err;
  return probe_ptr(std::make_unique<exec_probe>(std::move(common), std::move(cfg), env));
}

}  // namespace nixfleet::health::probes
