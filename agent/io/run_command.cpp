// Wires the real seams into the runtime and runs it under signals and the systemd watchdog.
#include "nixfleet/agent/run_command.hpp"

#include "nixfleet/agent/io/forensics.hpp"
#include "nixfleet/agent/io/identity.hpp"
#include "nixfleet/agent/io/nix.hpp"
#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/agent/probe_command.hpp"
#include "nixfleet/common/durable_file.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/systemd.hpp"
#include "nixfleet/health/config.hpp"
#include "nixfleet/protocol/signing.hpp"

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

namespace {

// Until the host has a certificate of its own that has not expired: enroll with the token file's
// token, backing off while the coordinator cannot be reached. A token the coordinator refused is
// not sent again; the file is read again each retry interval for a new one.
boost::asio::awaitable<void> ensure_identity(io::identity_keeper& keeper, const agent_config& cfg, io::clock& time) {
  std::string why;
  if (auto id = keeper.load(&why); id && id->not_after > time.wall_now()) {
    log::info("identity loaded", {{"serial", id->serial}, {"not_after", protocol::format_time(id->not_after)}});
    co_return;
  } else if (id) {
    why = "the certificate expired at " + protocol::format_time(id->not_after);
  }
  log::info("enrolling with the fleet CA", {{"reason", why}, {"token_file", *cfg.enroll_token_file}});
  std::error_code ec;
  std::filesystem::create_directories(cfg.state_dir, ec);
  std::string refused_token;
  for (unsigned failures = 0;; ++failures) {
    auto raw = durable::read_file(*cfg.enroll_token_file, 4096);
    const auto seen = raw ? protocol::sha256_hex(*raw) : std::string();
    if (seen.empty() || seen != refused_token) {
      auto r = co_await keeper.enroll();
      if (r.ok) {
        log::info("enrolled", {{"serial", keeper.current()->serial},
                               {"not_after", protocol::format_time(keeper.current()->not_after)}});
        co_return;
      }
      if (r.refused) {
        refused_token = seen;
        log::error("enrollment refused; waiting for a new token in the token file",
                   {{"error", r.error}, {"token_file", *cfg.enroll_token_file}});
      } else {
        log::warn("enrollment failed; retrying", {{"error", r.error}});
      }
    }
    auto wait = refused_token.empty() ? cfg.retry_interval * (1u << std::min(failures, 5u)) : cfg.retry_interval;
    wait = std::min<std::chrono::milliseconds>(wait, std::chrono::minutes(5));
    co_await time.sleep_until(time.now() + wait);
  }
}

}  // namespace

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

  // An enrolled host's identity lives in its state directory and is its TLS client identity.
  agent_config effective = cfg;
  std::optional<io::identity_keeper> keeper;
  if (cfg.enroll_token_file) {
    keeper.emplace(effective);
    effective.tls.cert_file = keeper->file();
    effective.tls.key_file = keeper->file();
  }
  io::nix_cli nix(ns);
  io::switch_activator activation(as);
  io::health_prober probes(health_setup);
  io::host_investigator forensics({.enable = cfg.forensics.enable,
                                   .journal = cfg.forensics.journal,
                                   .journal_lines = cfg.forensics.journal_lines,
                                   .journal_exclude = cfg.forensics.journal_exclude,
                                   .timeout = cfg.forensics.timeout,
                                   .nix_config = io::nix_config_for(ns)});
  io::steady_clock time;
  const auto seed = std::random_device{}();

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
  // Enrollment first when there is no usable identity; then the agent proper.
  auto agent = [&]() -> boost::asio::awaitable<void> {
    if (keeper) co_await ensure_identity(*keeper, effective, time);
    auto client = io::make_http_client(effective);
    io::agent_runtime runtime(effective, {*client, nix, activation, probes, time, keeper ? &*keeper : nullptr, &forensics},
                              health_setup->gate, seed);
    co_await runtime.run();
  };
  boost::asio::co_spawn(ctx, agent(),
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
