// Runs the configured probes once on a private io_context and prints a table or JSON.
#include "nixfleet/agent/probe_command.hpp"

#include "nixfleet/health/config.hpp"
#include "nixfleet/protocol/codec.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <fmt/ostream.h>

#include <algorithm>
#include <filesystem>
#include <ostream>

namespace nixfleet::agent {

constexpr int exit_config = 78;

std::string default_plugin_host() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto beside = self.parent_path() / "nixfleet-probe-host";
    if (std::filesystem::exists(beside, ec)) return beside.string();
  }
  return "nixfleet-probe-host";
}

int run_probe_command(const probe_command_options& opts, std::ostream& out, std::ostream& err) {
  health::probe_env env;
  env.plugin_host = opts.plugin_host.empty() ? default_plugin_host() : opts.plugin_host;
  env.systemctl = opts.systemctl;
  auto setup = health::load_health_config(opts.health_config, env);
  if (!setup) {
    err << "nixfleet-agent: bad health configuration " << opts.health_config << ": " << setup.error().what() << "\n";
    return exit_config;
  }

  boost::asio::io_context ctx;
  std::vector<protocol::probe_result> results;
  std::exception_ptr failure;
  boost::asio::co_spawn(ctx, health::run_all(setup->probes),
                        [&](std::exception_ptr e, std::vector<protocol::probe_result> r) {
                          failure = e;
                          results = std::move(r);
                        });
  ctx.run();
  if (failure) std::rethrow_exception(failure);

  protocol::health_report report;
  report.passed = true;
  for (std::size_t i = 0; i < results.size(); ++i)
    if (setup->probes[i]->common().required && results[i].status != protocol::probe_status::pass) report.passed = false;
  report.results = results;

  if (opts.json) {
    out << protocol::serialize(report) << "\n";
  } else {
    std::size_t name_w = 5, type_w = 4;
    for (const auto& r : results) {
      name_w = std::max(name_w, r.probe.size());
      type_w = std::max(type_w, r.type.size());
    }
    fmt::print(out, "{:<{}}  {:<{}}  {:<8}  {:<6}  {:>8}  {}\n", "PROBE", name_w, "TYPE", type_w, "REQUIRED", "STATUS",
               "TIME", "MESSAGE");
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      fmt::print(out, "{:<{}}  {:<{}}  {:<8}  {:<6}  {:>6}ms  {}\n", r.probe, name_w, r.type, type_w,
                 setup->probes[i]->common().required ? "yes" : "no", protocol::to_string(r.status), r.duration_ms,
                 r.message.value_or(""));
    }
    fmt::print(out, "{}\n", report.passed ? "all required probes pass" : "a required probe fails");
  }
  return report.passed ? 0 : 1;
}

}  // namespace nixfleet::agent
