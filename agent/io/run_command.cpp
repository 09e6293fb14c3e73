// Wires the real seams into the runtime and runs it under signals and the systemd watchdog.
#include "nixfleet/agent/run_command.hpp"

#include "nixfleet/agent/io/nix.hpp"
#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/agent/probe_command.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/systemd.hpp"
#include "nixfleet/health/config.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>
#include <random>

namespace nixfleet::agent {

int run_agent(const agent_config& cfg) {
  health::probe_env env;
  env.plugin_host = default_plugin_host();
  auto setup = health::load_health_config(cfg.health_config, env);
  if (!setup) {
    // A missing file means "no probes"; a file that exists and is wrong is a configuration error.
    if (std::filesystem::exists(cfg.health_config)) {
      std::cerr << "nixfleet-agent: bad health configuration " << cfg.health_config << ": " << setup.error().what() << "\n";
      return exit_config_error;
    }
    log::warn("no health configuration: activations are confirmed after the soak without probes",
              {{"path", cfg.health_config}});
    setup = health::health_setup{};
  }
  auto health_setup = std::make_shared<health::health_setup>(std::move(*setup));

  io::nix_settings ns;
  ns.cache_public_keys = cfg.cache_public_keys;
  ns.caches = cfg.caches;
  if (cfg.allow_unsigned)
    log::warn("allow_unsigned is set: this host deploys whatever its coordinator says, signed or not");
  ns.fetch_timeout = cfg.fetch_timeout;
  ns.min_free_mb = cfg.min_free_mb;
  io::activation_settings as;
  as.timeout = cfg.activation_timeout;
  as.how = cfg.runner == switch_runner::systemd_run ||
                   (cfg.runner == switch_runner::automatic && systemd::booted())
               ? io::activation_settings::runner::systemd_run
               : io::activation_settings::runner::direct;

  auto client = io::make_http_client(cfg);
  io::nix_cli nix(ns);
  io::switch_activator activation(as);
  io::health_prober probes(health_setup);
  io::steady_clock time;
  io::agent_runtime runtime(cfg, {*client, nix, activation, probes, time}, health_setup->gate, std::random_device{}());

  boost::asio::io_context ctx;
  boost::asio::cancellation_signal stop;
  std::optional<boost::asio::steady_timer> dog;
  bool stopping = false;
  boost::asio::signal_set signals(ctx, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::info("stopping", {{"signal", sig}});
    stopping = true;
    systemd::notify("STOPPING=1");
    stop.emit(boost::asio::cancellation_type::terminal);
    if (dog) dog->cancel();
  });

  int exit_code = 0;
  boost::asio::co_spawn(ctx, runtime.run(),
                        boost::asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
                          signals.cancel();
                          if (!e || stopping) return;  // cancellation by a signal is a clean stop
                          try {
                            std::rethrow_exception(e);
                          } catch (const boost::system::system_error& se) {
                            if (se.code() == boost::asio::error::operation_aborted) return;  // shutdown
                            log::error("agent stopped on an error", {{"error", se.what()}});
                            exit_code = 1;
                          } catch (const std::exception& ex) {
                            log::error("agent stopped on an error", {{"error", ex.what()}});
                            exit_code = 1;
                          }
                          ctx.stop();
                        }));

  // The watchdog is fed from the io thread: a stuck loop stops feeding it.
  if (auto period = systemd::watchdog_period()) {
    dog.emplace(ctx);
    boost::asio::co_spawn(ctx, [&, p = *period]() -> boost::asio::awaitable<void> {
      for (;;) {
        systemd::notify("WATCHDOG=1");
        dog->expires_after(p);
        co_await dog->async_wait(boost::asio::use_awaitable);
      }
    }, boost::asio::detached);
  }

  log::info("nixfleet-agent started", {{"machine_id", cfg.machine_id}, {"coordinator", cfg.coordinator_url},
                                       {"dry_run", cfg.dry_run}, {"probes", health_setup->probes.size()}});
  systemd::notify("READY=1");
  ctx.run();
  return exit_code;
}

}  // namespace nixfleet::agent
