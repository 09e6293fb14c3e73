// The seams between the agent's I/O drivers and the world: Nix, activation, probes, time.
// Tests substitute fakes; nix.cpp and activator.cpp are the real ones.
#pragma once

#include "nixfleet/agent/core/deployer.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace nixfleet::agent::io {

struct step_result {
  bool ok = false;
  std::string error;  // what failed, with the command's stderr tail
};

class nix_runner {
 public:
  virtual ~nix_runner() = default;
  // Makes `store_path` and its closure valid locally, from the caches (signatures required).
  virtual boost::asio::awaitable<step_result> fetch(std::string store_path, std::vector<std::string> cache_urls) = 0;
  // Points `profile` at `store_path` as a new generation.
  virtual boost::asio::awaitable<step_result> set_profile(std::string profile, std::string store_path) = 0;
};

class activator {
 public:
  virtual ~activator() = default;
  // Runs <store_path>/bin/switch-to-configuration <mode> to completion.
  virtual boost::asio::awaitable<step_result> switch_to(std::string store_path, protocol::activation_mode mode) = 0;
  // The system running now (/run/current-system).
  virtual std::string running() = 0;
  // Completes when no switch started by an earlier agent process is still running (a switch in a
  // transient unit outlives the agent that started it). Bounded by the activation timeout.
  virtual boost::asio::awaitable<void> wait_for_earlier_switch() { co_return; }
};

class prober {
 public:
  virtual ~prober() = default;
  virtual boost::asio::awaitable<std::vector<protocol::probe_result>> round() = 0;
  virtual std::vector<health::gated_probe> probes() const = 0;
  // What a probe printed or answered in the last round (an excerpt), for forensics.
  virtual std::string output_of(const std::string& /*probe*/) const { return {}; }
};

class clock {
 public:
  virtual ~clock() = default;
  virtual core::time_point now() = 0;
  virtual protocol::timestamp wall_now() = 0;
  virtual boost::asio::awaitable<void> sleep_until(core::time_point t) = 0;
};

}  // namespace nixfleet::agent::io
