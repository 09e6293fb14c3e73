// The health gate's rules: consecutive failures fail, a stable pass after the soak passes,
// the timeout fails whatever is undecided.
#include "nixfleet/health/gate.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace nixfleet::health {

gate::gate(gate_config cfg, std::vector<gated_probe> probes, gate_clock::time_point activated_at)
    : cfg_(cfg), activated_at_(activated_at) {
  tracks_.reserve(probes.size());
  for (auto& p : probes) tracks_.push_back(track{std::move(p)});
}

gate_clock::time_point gate::next_check() const noexcept {
  if (rounds_ == 0) return activated_at_ + cfg_.grace;
  return std::max(last_round_ + cfg_.interval, activated_at_ + cfg_.grace);
}

void gate::record(gate_clock::time_point at, std::span<const protocol::probe_result> results) {
  if (final_.state != gate_state::pending) return;
  ++rounds_;
  last_round_ = at;
  for (auto& t : tracks_) {
    const auto it = std::find_if(results.begin(), results.end(),
                                 [&](const protocol::probe_result& r) { return r.probe == t.probe.name; });
    const bool passed = it != results.end() && it->status == protocol::probe_status::pass;
    if (passed) {
      t.consecutive_passes++;
      t.consecutive_failures = 0;
    } else {
      t.consecutive_failures++;
      t.consecutive_passes = 0;
      t.total_failures++;
      t.last_message = it == results.end() ? "no result" : it->message.value_or("failed");
    }
  }
}

verdict gate::evaluate(gate_clock::time_point now) {
  if (final_.state != gate_state::pending) return final_;

  for (const auto& t : tracks_) {
    if (t.probe.required && t.consecutive_failures >= cfg_.failure_threshold) {
      final_ = {gate_state::fail, fmt::format("required probe {} failed {} consecutive checks: {}", t.probe.name,
                                              t.consecutive_failures, t.last_message)};
      return final_;
    }
  }

  const bool soaked = now >= activated_at_ + cfg_.grace + cfg_.soak && rounds_ >= 1;
  const bool stable = std::all_of(tracks_.begin(), tracks_.end(), [&](const track& t) {
    return !t.probe.required || t.consecutive_passes >= cfg_.success_threshold;
  });
  if (soaked && stable) {
    std::uint32_t optional_failing = 0;
    for (const auto& t : tracks_) optional_failing += (!t.probe.required && t.consecutive_failures > 0) ? 1 : 0;
    final_ = {gate_state::pass, fmt::format("{} rounds over {} s, required probes passing{}", rounds_,
                                            std::chrono::duration_cast<std::chrono::seconds>(now - activated_at_).count(),
                                            optional_failing ? fmt::format(", {} optional failing", optional_failing) : "")};
    return final_;
  }

  if (now >= activated_at_ + cfg_.timeout) {
    std::string why = rounds_ == 0 ? "no check completed" : "required probes never passed stably";
    for (const auto& t : tracks_)
      if (t.probe.required && t.consecutive_passes < cfg_.success_threshold)
        why += fmt::format("; {} failed {} of {} checks (last: {})", t.probe.name, t.total_failures, rounds_,
                           t.last_message.empty() ? "passing" : t.last_message);
    final_ = {gate_state::fail, fmt::format("no verdict within {} s: {}",
                                            std::chrono::duration_cast<std::chrono::seconds>(cfg_.timeout).count(), why)};
    return final_;
  }
  return {gate_state::pending, fmt::format("{} rounds so far", rounds_)};
}

}  // namespace nixfleet::health
