// When to poll next: the interval, the coordinator's poll_hint during rollouts, and exponential
// backoff with full jitter after failures. Pure: randomness comes in as a number.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace nixfleet::agent::core {

struct poll_policy {
  std::chrono::milliseconds interval{std::chrono::seconds(60)};
  // Backoff: the ceiling starts at `retry_floor` and doubles per consecutive failure up to `retry_ceiling`.
  std::chrono::milliseconds retry_floor{std::chrono::seconds(1)};
  std::chrono::milliseconds retry_ceiling{std::chrono::seconds(30)};
  // The first poll after start waits up to this long, so a rebooted fleet does not stampede.
  std::chrono::milliseconds startup_jitter{std::chrono::seconds(10)};
  // No wait is ever shorter than this (never zero, even with full jitter).
  std::chrono::milliseconds min_wait{std::chrono::milliseconds(100)};
  // Long polls, when the coordinator holds them: asked for, and how widely the first poll after
  // a held one was lost (a coordinator restart: its whole fleet at once) is spread.
  bool long_poll = true;
  std::chrono::milliseconds reconnect_jitter{std::chrono::seconds(5)};
  // Polls start at least this far apart, however soon a coordinator answers a long poll.
  std::chrono::milliseconds long_poll_gap{std::chrono::seconds(1)};
};

class poll_schedule {
 public:
  explicit poll_schedule(poll_policy p) : policy_(p) {}

  // The wait before the first poll, uniform in [min_wait, startup_jitter]; `random` is any 64-bit draw.
  std::chrono::milliseconds first(std::uint64_t random) const noexcept;

  // After a successful poll: the hint (seconds, at most the interval) while one is given, else the
  // interval. Resets the backoff.
  std::chrono::milliseconds after_success(std::optional<std::uint32_t> poll_hint_s) noexcept;

  // After a transient failure: uniform in [min_wait, ceiling] where the ceiling is
  // min(retry_ceiling, retry_floor × 2^(failures − 1)).
  std::chrono::milliseconds after_failure(std::uint64_t random) noexcept;

  // After a held poll was lost: uniform in [min_wait, max(ceiling, reconnect_jitter)] (counted
  // as a failure).
  std::chrono::milliseconds after_lost_connection(std::uint64_t random) noexcept;

  // The current backoff ceiling (for logs and tests).
  std::chrono::milliseconds ceiling() const noexcept;
  std::uint32_t consecutive_failures() const noexcept { return failures_; }

 private:
  poll_policy policy_;
  std::uint32_t failures_ = 0;
};

}  // namespace nixfleet::agent::core
