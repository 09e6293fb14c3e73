// The agent's two conversations with the coordinator as pure machines: the poller (when to poll,
// what an answer means: ETag, re-offering an unchanged desired state, the revocation list it
// announces, the period counted from each poll's start, long polls while the coordinator holds
// them, backoff) and the reporter (batches,
// acknowledgements, backoff, finding and dropping the one report the coordinator can never take).
// `resume(event, now, random)` answers with the next action; the runtime performs it and feeds the
// outcome back. No I/O, no clock, no randomness of their own.
#pragma once

#include "nixfleet/agent/core/deployer.hpp"
#include "nixfleet/agent/core/poll_schedule.hpp"
#include "nixfleet/protocol/types.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

namespace nixfleet::agent::core {

// What a poll of the coordinator came back with.
struct poll_answer {
  enum class outcome { desired, nothing_assigned, not_modified, failed };
  outcome what = outcome::failed;
  std::optional<protocol::desired_state> desired;
  std::string etag;
  std::string error;
  // The coordinator holds long polls up to this many seconds (its X-Nixfleet-Long-Poll header).
  std::optional<std::uint32_t> long_poll_s;
};

// What the coordinator said to a batch of reports.
struct send_answer {
  bool ok = false;
  // The coordinator refused the batch as invalid (400/413/422): retrying it as is cannot succeed.
  bool refused = false;
  std::uint64_t acked_seq = 0;
  std::string error;
  // Over this machine's report budget (429): send again after this long, nothing dropped.
  std::optional<std::chrono::seconds> retry_after;
};

class poller {
 public:
  enum class stage { fresh, waiting, polling, refreshing, delivering };

  struct start {};
  struct woke {};  // the wait asked for is over
  struct answered {
    poll_answer answer;
    std::uint64_t held_revocations = 0;  // the sequence of the list the host holds (0: none)
  };
  struct done {};  // the revocation fetch or the delivery asked for has finished (whatever its outcome)
  using event = std::variant<start, woke, answered, done>;

  struct wait_until {
    time_point at;
  };
  struct poll {
    std::string etag;         // If-None-Match; empty for none
    std::uint32_t wait_s = 0;  // a long poll: held by the coordinator up to this long; 0: none
  };
  struct fetch_revocations {
    std::uint64_t announced;
  };
  struct deliver {
    protocol::desired_state desired;  // to the deployer
  };
  using action = std::variant<wait_until, poll, fetch_revocations, deliver>;

  explicit poller(poll_policy p) : schedule_(p), policy_(p) {}

  // Throws std::logic_error for an event the current stage does not expect.
  action resume(const event& e, time_point now, std::uint64_t random);

  stage current() const noexcept { return stage_; }
  std::uint32_t consecutive_failures() const noexcept { return schedule_.consecutive_failures(); }

 private:
  action wait_for_next();

  poll_schedule schedule_;
  stage stage_ = stage::fresh;
  std::string etag_;
  std::optional<protocol::desired_state> last_;  // what the coordinator last sent
  time_point started_{};                         // when the current poll started
  std::chrono::milliseconds next_{0};            // the period after it
  std::optional<std::uint32_t> long_poll_s_;     // the coordinator's cap, as it last said
  bool held_ = false;                            // the poll in flight is a long poll
  poll_policy policy_;
};

class reporter {
 public:
  struct ready {
    std::size_t pending = 0;  // reports waiting in the outbox
  };
  struct sent {
    std::size_t count = 0;  // how many the batch held
    send_answer answer;
  };
  using event = std::variant<ready, sent>;

  struct wait_until {
    time_point at;
  };
  struct send {
    std::size_t limit;  // the oldest `limit` reports of the outbox
  };
  struct acknowledge {
    std::uint64_t seq;  // drop everything up to it from the outbox, then persist it; then `ready`
  };
  struct drop_oldest {
    std::string why;  // the one report the coordinator refuses; then `ready`
  };
  using action = std::variant<wait_until, send, acknowledge, drop_oldest>;

  struct config {
    std::size_t batch = 100;
    std::chrono::milliseconds idle_check{250};  // how often an empty outbox is looked at again (besides when woken)
    poll_policy backoff;                       // interval unused; retry floor and ceiling
  };
  explicit reporter(config c) : cfg_(c), backoff_(c.backoff) {}

  action resume(const event& e, time_point now, std::uint64_t random);

  bool isolating() const noexcept { return isolate_; }

 private:
  config cfg_;
  poll_schedule backoff_;
  bool isolate_ = false;  // sending one at a time to find a report the coordinator refuses
};

}  // namespace nixfleet::agent::core
