// Outbox bookkeeping.
#include "nixfleet/agent/core/outbox.hpp"

#include <algorithm>

namespace nixfleet::agent::core {

std::uint64_t outbox::push(protocol::report r) {
  r.seq = next_seq_++;
  if (is_periodic(r.kind)) {
    auto same = std::find_if(items_.begin(), items_.end(), [&](const protocol::report& x) { return x.kind == r.kind; });
    if (same != items_.end()) {
      items_.erase(same);
      ++dropped_;
    }
  }
  items_.push_back(std::move(r));
  while (items_.size() > limit_) {
    // Periodic reports go first; then the oldest lifecycle report.
    auto victim = std::find_if(items_.begin(), items_.end(), [](const protocol::report& x) { return is_periodic(x.kind); });
    items_.erase(victim != items_.end() ? victim : items_.begin());
    ++dropped_;
  }
  std::size_t with_forensics = 0;
  for (auto it = items_.rbegin(); it != items_.rend(); ++it) {
    if (!it->forensics || ++with_forensics <= max_forensics) continue;
    it->forensics.reset();
    static constexpr std::string_view why = " (forensics dropped: newer failures queued while the coordinator was away)";
    if (it->message.value_or("").size() + why.size() <= protocol::limits::max_message_bytes)
      it->message = it->message.value_or("") + std::string(why);
  }
  const auto seq = items_.back().seq;
  if (pushed_) pushed_();
  return seq;
}

std::vector<protocol::report> outbox::batch(std::size_t max) const {
  std::vector<protocol::report> out;
  std::size_t with_forensics = 0;
  for (std::size_t i = 0; i < items_.size() && i < max; ++i) {
    if (items_[i].forensics && ++with_forensics > forensics_per_batch && !out.empty()) break;
    out.push_back(items_[i]);
  }
  return out;
}

void outbox::ack(std::uint64_t acked_seq) {
  while (!items_.empty() && items_.front().seq <= acked_seq) items_.pop_front();
}

void outbox::restore(std::uint64_t next_seq, std::vector<protocol::report> pending) {
  items_.assign(pending.begin(), pending.end());
  std::uint64_t highest = 0;
  for (const auto& r : items_) highest = std::max(highest, r.seq);
  next_seq_ = std::max(next_seq, highest + 1);
}

}  // namespace nixfleet::agent::core
