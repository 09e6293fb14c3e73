// The running agent: poller, deployer, reporter and periodic health as coroutines on one
// io_context, over the seams.
#pragma once

#include "nixfleet/agent/config.hpp"
#include "nixfleet/agent/core/deployer.hpp"
#include "nixfleet/agent/core/outbox.hpp"
#include "nixfleet/agent/core/poll_schedule.hpp"
#include "nixfleet/agent/io/coordinator_client.hpp"
#include "nixfleet/agent/io/deploy_driver.hpp"
#include "nixfleet/agent/io/identity.hpp"
#include "nixfleet/agent/io/seams.hpp"
#include "nixfleet/agent/io/state_store.hpp"

#include <boost/asio/awaitable.hpp>

#include <random>

namespace nixfleet::agent::io {

struct runtime_seams {
  coordinator_client& coordinator;
  nix_runner& nix;
  activator& activation;
  prober& probes;
  clock& time;
  identity_keeper* identity = nullptr;  // an enrolled host's identity, renewed while running
  investigator* forensics = nullptr;     // what a failed target left on the host; none: probes only
};

class agent_runtime {
 public:
  agent_runtime(const agent_config& cfg, runtime_seams seams, health::gate_config gate, std::uint64_t seed);

  // Resumes any interrupted deployment, then runs until cancelled (SIGTERM). Cancellation during a
  // deployment leaves the in-flight record, so the next start finishes or rolls back.
  boost::asio::awaitable<void> run();

  const core::outbox& outbox() const noexcept { return outbox_; }
  const core::deployer& deployer() const noexcept { return machine_; }
  deploy_driver& driver() noexcept { return driver_; }
  std::uint64_t polls() noexcept { return driver_.metrics().polls_ok + driver_.metrics().polls_failed; }

 private:
  boost::asio::awaitable<void> poll_loop();
  boost::asio::awaitable<void> report_loop();
  boost::asio::awaitable<void> health_loop();
  boost::asio::awaitable<void> renew_loop();
  boost::asio::awaitable<void> sleep_for(std::chrono::milliseconds d);
  // Fetches the coordinator's revocation list when the desired state announces a newer one.
  boost::asio::awaitable<void> refresh_revocations(std::optional<std::uint64_t> announced);

  const agent_config& cfg_;
  runtime_seams seams_;
  state_store store_;
  core::outbox outbox_;
  core::deployer machine_;
  deploy_driver driver_;
  protocol::trusted_keys keys_;
  core::trust_policy trust_;
  std::mt19937_64 rng_;
};

}  // namespace nixfleet::agent::io
