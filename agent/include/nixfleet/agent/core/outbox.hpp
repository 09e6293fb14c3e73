// The report outbox: sequence numbers, order, acknowledgement and bounds. Lifecycle reports are
// kept until acknowledged (the oldest dropped only past `limit`); periodic ones (heartbeat,
// health) are not queued up: a newer one replaces the pending one of its kind. Forensics are heavy
// (up to about 110 KiB each): only the newest `max_forensics` pending reports keep theirs (an older
// one says in its message that it lost them), and a batch carries at most `forensics_per_batch`,
// so that it stays well below the coordinator's 1 MiB body limit.
#pragma once

#include "nixfleet/protocol/types.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

namespace nixfleet::agent::core {

class outbox {
 public:
  explicit outbox(std::size_t limit = 10000, std::uint64_t next_seq = 1) : limit_(limit), next_seq_(next_seq) {}

  // Assigns the next sequence number and queues the report; returns the number. Then calls the
  // pushed hook, if any (the sender waiting on an empty outbox goes at once).
  std::uint64_t push(protocol::report r);
  void on_push(std::function<void()> f) { pushed_ = std::move(f); }

  static constexpr std::size_t max_forensics = 8;
  static constexpr std::size_t forensics_per_batch = 4;

  // Up to `max` reports, oldest first (fewer when the next would be one forensics too many).
  std::vector<protocol::report> batch(std::size_t max) const;

  // Forgets every report with seq ≤ `acked_seq`.
  void ack(std::uint64_t acked_seq);

  // Restores what a previous run persisted.
  void restore(std::uint64_t next_seq, std::vector<protocol::report> pending);

  std::size_t size() const noexcept { return items_.size(); }
  bool empty() const noexcept { return items_.empty(); }
  std::uint64_t next_seq() const noexcept { return next_seq_; }
  std::uint64_t dropped() const noexcept { return dropped_; }
  const std::deque<protocol::report>& items() const noexcept { return items_; }

  // Heartbeats and periodic health reports.
  static bool is_periodic(protocol::report_kind k) noexcept {
    return k == protocol::report_kind::heartbeat || k == protocol::report_kind::health;
  }

 private:
  std::size_t limit_;
  std::uint64_t next_seq_;
  std::uint64_t dropped_ = 0;
  std::deque<protocol::report> items_;
  std::function<void()> pushed_;
};

}  // namespace nixfleet::agent::core
