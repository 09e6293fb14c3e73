// Test time for the agent's clock seam: `now()` moves only when the test moves it, and a
// `sleep_until(t)` completes when test time reaches t. `run_until` drives an io_context as a
// discrete-event simulation: it runs everything that is ready (real I/O included), and when every
// expected sleeper is parked on the clock it jumps test time to the earliest wake-up. No real sleep.
#pragma once

#include "nixfleet/agent/io/seams.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <map>
#include <optional>

namespace nixfleet::test {

class manual_clock final : public agent::io::clock {
 public:
  explicit manual_clock(protocol::timestamp wall_start = protocol::timestamp(std::chrono::milliseconds(1'790'000'000'000)))
      : wall_start_(wall_start) {}

  agent::core::time_point now() override { return now_; }
  protocol::timestamp wall_now() override {
    return wall_start_ + std::chrono::duration_cast<std::chrono::milliseconds>(now_ - start_);
  }

  boost::asio::awaitable<void> sleep_until(agent::core::time_point t) override {
    auto ex = co_await boost::asio::this_coro::executor;
    if (t <= now_) {
      // Due already: yield once, as a timer that has expired would.
      co_await boost::asio::post(ex, boost::asio::use_awaitable);
      co_return;
    }
    // Woken by advance_to (a cancel); a year is "never" without the overflow max() risks.
    boost::asio::steady_timer timer(ex, std::chrono::hours(24 * 365));
    bool fired = false;
    // Leaves the table however this frame ends (woken, cancelled, or destroyed unresumed).
    struct registration {
      std::multimap<agent::core::time_point, sleeper>& table;
      std::multimap<agent::core::time_point, sleeper>::iterator it;
      const bool& fired;
      ~registration() {
        if (!fired) table.erase(it);
      }
    } reg{sleepers_, sleepers_.emplace(t, sleeper{&timer, &fired}), fired};
    co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));  // woken or cancelled
    // Cancelled from outside (the agent is being stopped): behave as a real timer does.
    if (!fired) throw boost::system::system_error(boost::asio::error::operation_aborted);
  }

  // Sleepers parked on the clock now.
  std::size_t sleeping() const noexcept { return sleepers_.size(); }
  std::optional<agent::core::time_point> next_wake() const {
    if (sleepers_.empty()) return std::nullopt;
    return sleepers_.begin()->first;
  }

  // Moves test time to `t` (never back) and wakes every sleeper due by then.
  void advance_to(agent::core::time_point t) {
    if (t > now_) now_ = t;
    while (!sleepers_.empty() && sleepers_.begin()->first <= now_) {
      auto s = sleepers_.begin()->second;
      sleepers_.erase(sleepers_.begin());
      *s.fired = true;
      s.timer->cancel();
    }
  }
  void advance(std::chrono::milliseconds d) { advance_to(now_ + d); }

  // Runs `ctx` until `done()` holds or test time passes `limit` from now. `parked` is how many
  // coroutines are expected to sleep on this clock when nothing else is left to do; while fewer
  // are, something waits on real I/O and the context is run (blocking on that I/O) instead of
  // moving time. Returns whether `done()` held.
  template <class Pred>
  bool run_until(boost::asio::io_context& ctx, std::size_t parked, Pred done, std::chrono::milliseconds limit) {
    const auto until = now_ + limit;
    for (;;) {
      if (ctx.stopped()) ctx.restart();
      while (ctx.poll() > 0)
        if (done()) return true;
      if (done()) return true;
      if (sleepers_.size() < parked) {
        // Real I/O in flight (a durable write): wait for it. A start-up phase sleeps with fewer
        // coroutines than `parked` (the loops are not running yet), so after a short bound with
        // nothing completing, time moves anyway.
        if (ctx.stopped()) ctx.restart();
        if (ctx.run_one_for(std::chrono::milliseconds(50)) > 0) continue;
      }
      const auto wake = next_wake();
      if (!wake || *wake > until) {
        advance_to(until);
        if (ctx.stopped()) ctx.restart();
        while (ctx.poll() > 0) {
        }
        return done();
      }
      advance_to(*wake);
    }
  }

 private:
  struct sleeper {
    boost::asio::steady_timer* timer;
    bool* fired;
  };
  agent::core::time_point start_{std::chrono::hours(1000)};
  agent::core::time_point now_ = start_;
  protocol::timestamp wall_start_;
  std::multimap<agent::core::time_point, sleeper> sleepers_;
};

}  // namespace nixfleet::test
