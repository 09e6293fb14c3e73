// The health gate: a pure decision over probe results in time. No clocks, no I/O.
#pragma once

#include "nixfleet/protocol/types.hpp"

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nixfleet::health {

using gate_clock = std::chrono::steady_clock;

struct gate_config {
  // No checks before `grace` has passed since activation.
  std::chrono::milliseconds grace{std::chrono::seconds(10)};
  // Between rounds of checks.
  std::chrono::milliseconds interval{std::chrono::seconds(5)};
  // The gate passes no earlier than grace + soak after activation.
  std::chrono::milliseconds soak{std::chrono::seconds(60)};
  // A required probe failing this many rounds in a row fails the gate.
  std::uint32_t failure_threshold = 3;
  // Every required probe must have passed this many rounds in a row for the gate to pass.
  std::uint32_t success_threshold = 1;
  // No verdict after this long since activation is a failure.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

enum class gate_state { pending, pass, fail };

struct verdict {
  gate_state state = gate_state::pending;
  std::string reason;
};

struct gated_probe {
  std::string name;
  bool required = true;
};

class gate {
 public:
  gate(gate_config cfg, std::vector<gated_probe> probes, gate_clock::time_point activated_at);

  // When the next round of checks is due.
  gate_clock::time_point next_check() const noexcept;

  // Feeds one round of results taken at `at`. A required probe missing from the round counts as
  // failed; results of unknown probes are ignored.
  void record(gate_clock::time_point at, std::span<const protocol::probe_result> results);

  // The verdict at `now`. Once pass or fail, it stays.
  verdict evaluate(gate_clock::time_point now);

  std::uint32_t rounds() const noexcept { return rounds_; }

 private:
  struct track {
    gated_probe probe;
    std::uint32_t consecutive_failures = 0;
    std::uint32_t consecutive_passes = 0;
    std::uint32_t total_failures = 0;
    std::string last_message;
  };

  gate_config cfg_;
  std::vector<track> tracks_;
  gate_clock::time_point activated_at_;
  gate_clock::time_point last_round_{};
  std::uint32_t rounds_ = 0;
  verdict final_;
};

}  // namespace nixfleet::health
