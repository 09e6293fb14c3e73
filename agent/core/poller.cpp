// The poller and the reporter machines (see poller.hpp).
#include "nixfleet/agent/core/poller.hpp"

#include <algorithm>

#include <stdexcept>

namespace nixfleet::agent::core {

namespace {
[[noreturn]] void unexpected(const char* machine, const char* what) {
  throw std::logic_error(std::string(machine) + ": " + what + " was not expected now");
}
}  // namespace

poller::action poller::wait_for_next() {
  stage_ = stage::waiting;
  // A coordinator that holds long polls answers when something changes: the next poll goes out
  // at once (no sooner than long_poll_gap after the last started), and asks to be held for the
  // period. Else the next poll is due `next_` after this one started, so the request's own time
  // does not stretch the period (a host in a rollout sees a change within poll_hint plus one
  // round trip).
  if (long_poll_s_) return wait_until{started_ + policy_.long_poll_gap};
  return wait_until{started_ + next_};
}

poller::action poller::resume(const event& e, time_point now, std::uint64_t random) {
  if (std::holds_alternative<start>(e)) {
    if (stage_ != stage::fresh) unexpected("poller", "start");
    stage_ = stage::waiting;
    return wait_until{now + schedule_.first(random)};
  }
  if (std::holds_alternative<woke>(e)) {
    if (stage_ != stage::waiting) unexpected("poller", "a timer");
    stage_ = stage::polling;
    started_ = now;
    // The first poll (and one after a coordinator stopped offering them) is a plain one.
    std::uint32_t wait = 0;
    if (long_poll_s_ && !etag_.empty())
      wait = std::min<std::uint32_t>(*long_poll_s_, static_cast<std::uint32_t>(std::max<std::int64_t>(
                                                        1, std::chrono::duration_cast<std::chrono::seconds>(next_).count())));
    held_ = wait > 0;
    return poll{etag_, wait};
  }
  if (const auto* a = std::get_if<answered>(&e)) {
    if (stage_ != stage::polling) unexpected("poller", "an answer");
    using o = poll_answer::outcome;
    if (a->answer.what != o::failed)
      long_poll_s_ = policy_.long_poll && a->answer.long_poll_s && *a->answer.long_poll_s > 0
                         ? a->answer.long_poll_s
                         : std::nullopt;
    switch (a->answer.what) {
      case o::failed:
        // Never a reason to touch the host: keep running what runs. The backoff counts from now:
        // a request that timed out is not followed at once by the next. A held poll lost (the
        // coordinator restarted, with every host holding one) is spread wider, so that the fleet
        // does not come back at once.
        stage_ = stage::waiting;
        if (held_) {
          held_ = false;
          return wait_until{now + schedule_.after_lost_connection(random)};
        }
        return wait_until{now + schedule_.after_failure(random)};
      case o::desired: {
        if (!a->answer.desired) unexpected("poller", "a desired answer without a desired state");
        etag_ = a->answer.etag;
        last_ = *a->answer.desired;
        next_ = schedule_.after_success(last_->poll_hint);
        const auto announced = last_->revocations_sequence.value_or(0);
        if (announced > a->held_revocations) {
          stage_ = stage::refreshing;
          return fetch_revocations{announced};
        }
        stage_ = stage::delivering;
        return deliver{*last_};
      }
      case o::not_modified:
        // The same desired state again: offer it once more, so that what was deferred (a hold
        // since released) or failed on the way (a fetch) is tried again. Refusals are not repeated
        // (the deployer deduplicates them).
        next_ = schedule_.after_success(last_ ? last_->poll_hint : std::nullopt);
        if (!last_) return wait_for_next();
        stage_ = stage::delivering;
        return deliver{*last_};
      case o::nothing_assigned:
        etag_ = a->answer.etag;
        last_.reset();
        next_ = schedule_.after_success(std::nullopt);
        return wait_for_next();
    }
  }
  // done
  if (stage_ == stage::refreshing) {
    stage_ = stage::delivering;
    return deliver{*last_};
  }
  if (stage_ != stage::delivering) unexpected("poller", "done");
  return wait_for_next();
}

reporter::action reporter::resume(const event& e, time_point now, std::uint64_t random) {
  if (const auto* r = std::get_if<ready>(&e)) {
    if (r->pending == 0) return wait_until{now + cfg_.idle_check};
    return send{isolate_ ? 1 : cfg_.batch};
  }
  const auto& s = std::get<sent>(e);
  if (s.answer.ok) {
    backoff_.after_success(std::nullopt);
    return acknowledge{s.answer.acked_seq};
  }
  if (s.answer.refused) {
    // A report the coordinator can never accept would block every later one. Find it by sending
    // one report at a time, and drop only that one.
    if (s.count > 1) {
      isolate_ = true;
      return send{1};
    }
    isolate_ = false;
    return drop_oldest{s.answer.error};
  }
  if (s.answer.retry_after) {
    // The coordinator is up and asks for patience: its wait, not a failure's backoff (at least
    // a second, at most an hour whatever it says), with the outbox kept as it is.
    const auto wait = std::clamp<std::chrono::milliseconds>(*s.answer.retry_after, std::chrono::seconds(1),
                                                            std::chrono::hours(1));
    return wait_until{now + wait};
  }
  return wait_until{now + backoff_.after_failure(random)};
}

}  // namespace nixfleet::agent::core
