// Poll timing arithmetic.
#include "nixfleet/agent/core/poll_schedule.hpp"

#include <algorithm>

namespace nixfleet::agent::core {
namespace {

std::chrono::milliseconds uniform(std::chrono::milliseconds lo, std::chrono::milliseconds hi, std::uint64_t random) {
  if (hi <= lo) return lo;
  const auto span = static_cast<std::uint64_t>((hi - lo).count()) + 1;
  return lo + std::chrono::milliseconds(static_cast<std::int64_t>(random % span));
}

}  // namespace

std::chrono::milliseconds poll_schedule::first(std::uint64_t random) const noexcept {
  return uniform(policy_.min_wait, std::max(policy_.min_wait, policy_.startup_jitter), random);
}

std::chrono::milliseconds poll_schedule::after_success(std::optional<std::uint32_t> poll_hint_s) noexcept {
  failures_ = 0;
  if (!poll_hint_s) return policy_.interval;
  const auto hint = std::chrono::milliseconds(std::chrono::seconds(*poll_hint_s));
  return std::clamp(hint, std::max(policy_.min_wait, std::chrono::milliseconds(1000)), policy_.interval);
}

std::chrono::milliseconds poll_schedule::ceiling() const noexcept {
  if (failures_ == 0) return policy_.retry_floor;
  auto c = policy_.retry_floor;
  for (std::uint32_t i = 1; i < failures_ && c < policy_.retry_ceiling; ++i) c *= 2;
  return std::min(c, policy_.retry_ceiling);
}

std::chrono::milliseconds poll_schedule::after_failure(std::uint64_t random) noexcept {
  if (failures_ < 64) ++failures_;
  return uniform(policy_.min_wait, std::max(policy_.min_wait, ceiling()), random);
}

std::chrono::milliseconds poll_schedule::after_lost_connection(std::uint64_t random) noexcept {
  if (failures_ < 64) ++failures_;
  return uniform(policy_.min_wait, std::max({policy_.min_wait, ceiling(), policy_.reconnect_jitter}), random);
}

}  // namespace nixfleet::agent::core
