// The seams between the agent's I/O drivers and the world: Nix, activation, probes, time.
// Tests substitute fakes; nix.cpp and activator.cpp are the real ones.
#pragma once

#include "nixfleet/agent/core/deployer.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace nixfleet::agent::io {

struct step_result {
  bool ok = false;
  std::string error;  // what failed, with the command's stderr tail
  std::string output;  // the end of what a switch printed (forensics), printable and bounded
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

// What a failed target left behind on the host, beyond the agent's own knowledge: the failed
// units, their journal and the closure difference.
// The units failed at one moment (or why they could not be listed).
struct failed_units_snapshot {
  std::vector<std::string> units;
  std::string note;
};

struct forensics_request {
  std::string target;    // the generation that failed
  std::string previous;  // the one it is compared with (went back to, or tried to)
  std::optional<protocol::timestamp> since;  // when the target's activation began, when known
  std::string switch_output;  // names the units the switch stopped, started and restarted
  // Taken before the rollback, whose switch restarts (and so clears) failed units; listed anew
  // when absent.
  std::optional<failed_units_snapshot> failed;
};

class investigator {
 public:
  virtual ~investigator() = default;
  // The failed units now, quickly (a rollback waits for it): bounded by a short timeout.
  virtual boost::asio::awaitable<failed_units_snapshot> failed_units() = 0;
  // The host's part of the bundle (failed units, journal, closure difference, notes; the caller
  // adds the paths, probes and switch output). Every part bounded in time and size; what could
  // not be had is a note, never an exception.
  virtual boost::asio::awaitable<protocol::forensics_bundle> investigate(forensics_request request) = 0;
};

class clock {
 public:
  virtual ~clock() = default;
  virtual core::time_point now() = 0;
  virtual protocol::timestamp wall_now() = 0;
  virtual boost::asio::awaitable<void> sleep_until(core::time_point t) = 0;
};

}  // namespace nixfleet::agent::io
