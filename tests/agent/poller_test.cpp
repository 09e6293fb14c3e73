// The poller and reporter machines on test time: what each answer leads to, the period counted
// from each poll's start, backoff, revocation announcements, report isolation — and an error
// injected at every step of a scripted run, after which nothing is lost and nothing is stuck.
#include "nixfleet/agent/core/poller.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <deque>
#include <set>
#include <tuple>
#include <map>

using namespace nixfleet;
using namespace nixfleet::agent::core;
using namespace std::chrono_literals;

namespace {

const std::string path_a = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";

poll_policy policy() {
  poll_policy p;
  p.interval = 60s;
  p.retry_floor = 1s;
  p.retry_ceiling = 30s;
  p.startup_jitter = 10s;
  p.min_wait = 100ms;
  return p;
}

protocol::desired_state desired(std::optional<std::uint32_t> hint = std::nullopt,
                                std::optional<std::uint64_t> revocations = std::nullopt) {
  protocol::desired_state d;
  d.machine_id = "web-01";
  d.release_id = "r-1";
  d.store_path = path_a;
  d.poll_hint = hint;
  d.revocations_sequence = revocations;
  return d;
}

poll_answer answer(poll_answer::outcome o, std::optional<protocol::desired_state> d = std::nullopt,
                   std::string etag = {}) {
  poll_answer a;
  a.what = o;
  a.desired = std::move(d);
  a.etag = std::move(etag);
  if (o == poll_answer::outcome::failed) a.error = "connection refused";
  return a;
}

template <class T, class V>
const T& as(const V& v) {
  BOOST_TEST_REQUIRE(std::holds_alternative<T>(v), "the action is another kind (index " << v.index() << ")");
  return std::get<T>(v);
}

using o = poll_answer::outcome;
const time_point T0{std::chrono::hours(5)};

}  // namespace

BOOST_AUTO_TEST_SUITE(poller_machine)

BOOST_AUTO_TEST_CASE(each_answer_leads_to_the_right_next_step) {
  poller p(policy());
  auto first = as<poller::wait_until>(p.resume(poller::start{}, T0, 0));
  BOOST_TEST((first.at >= T0 + 100ms && first.at <= T0 + 10s));
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, first.at, 0)).etag.empty());
  // A desired state: delivered, then the next poll is due poll_hint after this poll started.
  auto t = first.at + 200ms;  // the answer took 200 ms
  auto d = as<poller::deliver>(p.resume(poller::answered{answer(o::desired, desired(5), "\"e1\"")}, t, 0));
  BOOST_TEST(d.desired.store_path == path_a);
  BOOST_TEST((as<poller::wait_until>(p.resume(poller::done{}, t + 1s, 0)).at == first.at + 5s));
  // Not modified: sent with the ETag; the same desired state is offered again, hint kept.
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, first.at + 5s, 0)).etag == "\"e1\"");
  BOOST_TEST(as<poller::deliver>(p.resume(poller::answered{answer(o::not_modified)}, first.at + 5s, 0)).desired.store_path ==
             path_a);
  BOOST_TEST((as<poller::wait_until>(p.resume(poller::done{}, first.at + 5s, 0)).at == first.at + 10s));
  // Nothing assigned: nothing delivered, the regular interval, the new ETag remembered.
  as<poller::poll>(p.resume(poller::woke{}, first.at + 10s, 0));
  auto w = as<poller::wait_until>(p.resume(poller::answered{answer(o::nothing_assigned, std::nullopt, "\"none\"")},
                                          first.at + 10s, 0));
  BOOST_TEST((w.at == first.at + 70s));
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, w.at, 0)).etag == "\"none\"");
  // Not modified with nothing assigned: nothing to offer.
  BOOST_TEST(std::holds_alternative<poller::wait_until>(p.resume(poller::answered{answer(o::not_modified)}, w.at, 0)));
}

BOOST_AUTO_TEST_CASE(the_period_counts_from_each_polls_start_and_backoff_from_the_failure) {
  poller p(policy());
  auto t = as<poller::wait_until>(p.resume(poller::start{}, T0, 0)).at;
  for (int i = 0; i < 5; ++i) {
    as<poller::poll>(p.resume(poller::woke{}, t, 0));
    // Each answer takes 20 s: counted from the end, the period would be 80 s.
    auto next = as<poller::wait_until>(p.resume(poller::answered{answer(o::nothing_assigned)}, t + 20s, 0)).at;
    BOOST_TEST((next == t + 60s));
    t = next;
  }
  // Failures: from now, full jitter under a ceiling that doubles (1, 2, 4, … ≤ 30 s).
  std::chrono::milliseconds ceiling = 1s;
  for (int i = 0; i < 7; ++i) {
    as<poller::poll>(p.resume(poller::woke{}, t, 0));
    const auto now = t + 3s;
    auto next = as<poller::wait_until>(p.resume(poller::answered{answer(o::failed)}, now, ~std::uint64_t{0})).at;
    BOOST_TEST((next > now && next <= now + ceiling), "failure " << i);
    BOOST_TEST(p.consecutive_failures() == static_cast<std::uint32_t>(i + 1));
    ceiling = std::min<std::chrono::milliseconds>(ceiling * 2, 30s);
    t = next;
  }
  // A success resets the backoff.
  as<poller::poll>(p.resume(poller::woke{}, t, 0));
  p.resume(poller::answered{answer(o::nothing_assigned)}, t, 0);
  BOOST_TEST(p.consecutive_failures() == 0u);
}

BOOST_AUTO_TEST_CASE(a_coordinator_that_holds_long_polls_is_polled_again_at_once_and_asked_to_hold_for_the_period) {
  poller p(policy());
  auto t = as<poller::wait_until>(p.resume(poller::start{}, T0, 0)).at;
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, t, 0)).wait_s == 0u, "the first poll is a plain one");
  auto offered = [](poll_answer a) {
    a.long_poll_s = 300;
    return a;
  };
  as<poller::deliver>(p.resume(poller::answered{offered(answer(o::desired, desired(), "\"e1\""))}, t + 100ms, 0));
  // Next: one second after the last poll started (not the 60 s period), held up to the period.
  auto next = as<poller::wait_until>(p.resume(poller::done{}, t + 200ms, 0)).at;
  BOOST_TEST((next == t + 1s));
  auto held = as<poller::poll>(p.resume(poller::woke{}, next, 0));
  BOOST_TEST(held.wait_s == 60u);
  BOOST_TEST(held.etag == "\"e1\"");
  // It comes back after its wait, unchanged: the desired state is offered again (as a periodic
  // poll would), and the next long poll follows at once.
  const auto back = next + 60s;
  as<poller::deliver>(p.resume(poller::answered{offered(answer(o::not_modified))}, back, 0));
  BOOST_TEST((as<poller::wait_until>(p.resume(poller::done{}, back, 0)).at == next + 1s), "due at once: in the past");
  // During a rollout the hint bounds the hold (a failed fetch is retried that often).
  as<poller::poll>(p.resume(poller::woke{}, back, 0));
  as<poller::deliver>(p.resume(poller::answered{offered(answer(o::desired, desired(5), "\"e2\""))}, back, 0));
  as<poller::wait_until>(p.resume(poller::done{}, back, 0));
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, back + 1s, 0)).wait_s == 5u);
  // A coordinator that stops offering them (an older one behind the same name): periodic again.
  as<poller::deliver>(p.resume(poller::answered{answer(o::not_modified)}, back + 2s, 0));
  BOOST_TEST((as<poller::wait_until>(p.resume(poller::done{}, back + 2s, 0)).at == back + 6s));
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, back + 6s, 0)).wait_s == 0u);
}

BOOST_AUTO_TEST_CASE(a_lost_long_poll_comes_back_spread_over_the_reconnect_jitter) {
  auto pol = policy();
  pol.reconnect_jitter = 5s;
  std::set<std::int64_t> spread;
  for (std::uint64_t r : {0ull, 1234ull, 2500ull, 4899ull, ~0ull}) {
    poller p(pol);
    auto t = as<poller::wait_until>(p.resume(poller::start{}, T0, 0)).at;
    as<poller::poll>(p.resume(poller::woke{}, t, 0));
    auto a = answer(o::nothing_assigned, std::nullopt, "\"none\"");
    a.long_poll_s = 300;
    t = as<poller::wait_until>(p.resume(poller::answered{a}, t, 0)).at;
    BOOST_TEST_REQUIRE(as<poller::poll>(p.resume(poller::woke{}, t, 0)).wait_s == 60u);
    // The coordinator restarts: the held poll fails.
    const auto lost = t + 30s;
    const auto back = as<poller::wait_until>(p.resume(poller::answered{answer(o::failed)}, lost, r)).at;
    BOOST_TEST((back >= lost + 100ms && back <= lost + 5s));
    spread.insert(std::chrono::duration_cast<std::chrono::milliseconds>(back - lost).count());
  }
  BOOST_TEST(spread.size() == 5u, "the draws spread the returns");
  BOOST_TEST(*spread.rbegin() > 2000, "beyond the first failure's one-second ceiling");
  // Turned off in the configuration: never a long poll.
  auto off = policy();
  off.long_poll = false;
  poller p(off);
  auto t = as<poller::wait_until>(p.resume(poller::start{}, T0, 0)).at;
  as<poller::poll>(p.resume(poller::woke{}, t, 0));
  auto a = answer(o::nothing_assigned, std::nullopt, "\"none\"");
  a.long_poll_s = 300;
  t = as<poller::wait_until>(p.resume(poller::answered{a}, t, 0)).at;
  BOOST_TEST(as<poller::poll>(p.resume(poller::woke{}, t, 0)).wait_s == 0u);
}

BOOST_AUTO_TEST_CASE(a_newer_announced_revocation_list_is_fetched_before_delivery) {
  poller p(policy());
  auto t = as<poller::wait_until>(p.resume(poller::start{}, T0, 0)).at;
  as<poller::poll>(p.resume(poller::woke{}, t, 0));
  BOOST_TEST(as<poller::fetch_revocations>(p.resume(poller::answered{answer(o::desired, desired(std::nullopt, 3)), 2}, t, 0))
                 .announced == 3u);
  as<poller::deliver>(p.resume(poller::done{}, t, 0));
  t = as<poller::wait_until>(p.resume(poller::done{}, t, 0)).at;
  // Announced what the host holds: straight to delivery.
  as<poller::poll>(p.resume(poller::woke{}, t, 0));
  as<poller::deliver>(p.resume(poller::answered{answer(o::desired, desired(std::nullopt, 3)), 3}, t, 0));
}

BOOST_AUTO_TEST_CASE(an_event_out_of_turn_is_a_programming_error) {
  poller p(policy());
  BOOST_CHECK_THROW(p.resume(poller::woke{}, T0, 0), std::logic_error);
  p.resume(poller::start{}, T0, 0);
  BOOST_CHECK_THROW(p.resume(poller::start{}, T0, 0), std::logic_error);
  BOOST_CHECK_THROW(p.resume(poller::answered{}, T0, 0), std::logic_error);
  BOOST_CHECK_THROW(p.resume(poller::done{}, T0, 0), std::logic_error);
}

// A scripted conversation — desired, not modified ×2, a new desired with a newer revocation list,
// nothing assigned, desired again — with the poll at step k failing instead (k = every step, and
// every two consecutive steps): each failure is followed by a backoff wait and a retry of the same
// ETag, nothing is delivered for a failure, and every desired state in the script is still
// delivered, in order.
BOOST_AUTO_TEST_CASE(an_error_at_every_step_delays_but_never_loses_or_invents_a_delivery) {
  struct step {
    poll_answer a;
    std::uint64_t held;
  };
  auto d2 = desired(std::nullopt, 2);
  d2.store_path = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";
  const std::vector<step> script = {
      {answer(o::desired, desired(), "\"e1\""), 0}, {answer(o::not_modified), 0},
      {answer(o::not_modified), 0},                 {answer(o::desired, d2, "\"e2\""), 0},
      {answer(o::nothing_assigned, {}, "\"none\""), 2}, {answer(o::desired, desired(), "\"e3\""), 2},
  };
  auto run = [&](std::set<std::size_t> failing) {
    poller p(policy());
    time_point now = T0;
    std::vector<std::string> delivered, fetched;
    std::string expected_etag;
    std::size_t at = 0;
    auto next = p.resume(poller::start{}, now, 7);
    int guard = 0;
    while (at < script.size() || !std::holds_alternative<poller::wait_until>(next)) {
      BOOST_TEST_REQUIRE(++guard < 200, "the poller is stuck");
      if (auto* w = std::get_if<poller::wait_until>(&next)) {
        BOOST_TEST_REQUIRE((w->at >= now), "a wait into the past");
        now = w->at;
        next = p.resume(poller::woke{}, now, 7);
      } else if (auto* q = std::get_if<poller::poll>(&next)) {
        BOOST_TEST(q->etag == expected_etag, "a retry polls with the ETag it had");
        if (failing.erase(at)) {
          next = p.resume(poller::answered{answer(o::failed), 0}, now, 7);
          BOOST_TEST_REQUIRE(std::holds_alternative<poller::wait_until>(next), "a failure delivers nothing");
          continue;
        }
        const auto& s = script[at++];
        if (!s.a.etag.empty()) expected_etag = s.a.etag;
        next = p.resume(poller::answered{s.a, s.held}, now, 7);
      } else if (auto* f = std::get_if<poller::fetch_revocations>(&next)) {
        fetched.push_back(std::to_string(f->announced));
        next = p.resume(poller::done{}, now, 7);
      } else {
        delivered.push_back(std::get<poller::deliver>(next).desired.store_path);
        next = p.resume(poller::done{}, now, 7);
      }
    }
    return std::pair{delivered, fetched};
  };
  const auto clean = run({});
  const std::vector<std::string> expected = {path_a, path_a, path_a, d2.store_path, path_a};
  BOOST_TEST(clean.first == expected, boost::test_tools::per_element());
  BOOST_TEST(clean.second == std::vector<std::string>{"2"});
  for (std::size_t k = 0; k < script.size(); ++k) {
    for (std::set<std::size_t> failing : {std::set<std::size_t>{k}, std::set<std::size_t>{k, k + 1}}) {
      BOOST_TEST_CONTEXT("the poll at step " << k << (failing.size() > 1 ? " and the next" : "") << " fails") {
        const auto got = run(failing);
        BOOST_TEST(got.first == expected, boost::test_tools::per_element());
        BOOST_TEST(got.second == clean.second, boost::test_tools::per_element());
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(reporter_machine)

reporter::config reporter_config() {
  reporter::config c;
  c.batch = 4;
  c.idle_check = 250ms;
  c.backoff = policy();
  return c;
}

BOOST_AUTO_TEST_CASE(batches_acknowledgements_and_an_empty_outbox) {
  reporter r(reporter_config());
  BOOST_TEST((as<reporter::wait_until>(r.resume(reporter::ready{0}, T0, 0)).at == T0 + 250ms));
  BOOST_TEST(as<reporter::send>(r.resume(reporter::ready{9}, T0, 0)).limit == 4u);
  send_answer ok{true, false, 4, {}};
  BOOST_TEST(as<reporter::acknowledge>(r.resume(reporter::sent{4, ok}, T0, 0)).seq == 4u);
  // A transient failure backs off (jittered, under the ceiling) and then sends again.
  send_answer down{false, false, 0, "connection refused"};
  auto w = as<reporter::wait_until>(r.resume(reporter::sent{4, down}, T0, ~std::uint64_t{0})).at;
  BOOST_TEST((w > T0 && w <= T0 + 1s));
  BOOST_TEST(as<reporter::send>(r.resume(reporter::ready{5}, w, 0)).limit == 4u);
}

BOOST_AUTO_TEST_CASE(over_budget_the_coordinators_retry_after_is_waited_and_nothing_is_dropped) {
  reporter r(reporter_config());
  send_answer busy{false, false, 0, "coordinator answered 429", std::chrono::seconds(30)};
  // Not the failure backoff (at most 1 s here): the wait asked for, and then the same batch again.
  BOOST_TEST((as<reporter::wait_until>(r.resume(reporter::sent{4, busy}, T0, 0)).at == T0 + 30s));
  BOOST_TEST(!r.isolating());
  BOOST_TEST(as<reporter::send>(r.resume(reporter::ready{9}, T0 + 30s, 0)).limit == 4u);
  // A coordinator asking for a day is waited an hour; one asking for nothing, a second.
  busy.retry_after = std::chrono::hours(24);
  BOOST_TEST((as<reporter::wait_until>(r.resume(reporter::sent{4, busy}, T0, 0)).at == T0 + 1h));
  busy.retry_after = std::chrono::seconds(0);
  BOOST_TEST((as<reporter::wait_until>(r.resume(reporter::sent{4, busy}, T0, 0)).at == T0 + 1s));
}

BOOST_AUTO_TEST_CASE(a_refused_batch_is_sent_one_by_one_and_only_the_bad_report_dropped) {
  reporter r(reporter_config());
  send_answer refused{false, true, 0, "coordinator answered 400"};
  send_answer ok{true, false, 1, {}};
  BOOST_TEST(as<reporter::send>(r.resume(reporter::sent{4, refused}, T0, 0)).limit == 1u);
  BOOST_TEST(r.isolating());
  as<reporter::acknowledge>(r.resume(reporter::sent{1, ok}, T0, 0));
  BOOST_TEST(as<reporter::send>(r.resume(reporter::ready{3}, T0, 0)).limit == 1u);  // still looking
  BOOST_TEST(as<reporter::drop_oldest>(r.resume(reporter::sent{1, refused}, T0, 0)).why == "coordinator answered 400");
  BOOST_TEST(!r.isolating());
  BOOST_TEST(as<reporter::send>(r.resume(reporter::ready{2}, T0, 0)).limit == 4u);
}

// An outbox of 10 reports, report 6 one the coordinator always refuses, and an error (the
// coordinator away) injected at every send in turn: every other report is acknowledged once, in
// order, and only report 6 is dropped.
BOOST_AUTO_TEST_CASE(an_error_at_every_step_loses_nothing_but_the_refused_report) {
  auto run = [](std::optional<int> fail_at) {
    reporter r(reporter_config());
    std::deque<std::uint64_t> outbox;
    for (std::uint64_t i = 1; i <= 10; ++i) outbox.push_back(i);
    std::vector<std::uint64_t> accepted, dropped;
    time_point now = T0;
    int sends = 0, guard = 0;
    auto next = r.resume(reporter::ready{outbox.size()}, now, 3);
    while (!outbox.empty()) {
      BOOST_TEST_REQUIRE(++guard < 500, "the reporter is stuck");
      if (auto* w = std::get_if<reporter::wait_until>(&next)) {
        now = w->at;
        next = r.resume(reporter::ready{outbox.size()}, now, 3);
      } else if (auto* s = std::get_if<reporter::send>(&next)) {
        std::vector<std::uint64_t> batch(outbox.begin(), outbox.begin() + std::min(s->limit, outbox.size()));
        send_answer a;
        if (fail_at && sends == *fail_at) {
          a.error = "timed out";
        } else if (std::find(batch.begin(), batch.end(), 6u) != batch.end()) {
          a.refused = true;
          a.error = "400";
        } else {
          a.ok = true;
          a.acked_seq = batch.back();
          accepted.insert(accepted.end(), batch.begin(), batch.end());
        }
        ++sends;
        next = r.resume(reporter::sent{batch.size(), a}, now, 3);
      } else if (auto* k = std::get_if<reporter::acknowledge>(&next)) {
        while (!outbox.empty() && outbox.front() <= k->seq) outbox.pop_front();
        next = r.resume(reporter::ready{outbox.size()}, now, 3);
      } else {
        dropped.push_back(outbox.front());
        outbox.pop_front();
        next = r.resume(reporter::ready{outbox.size()}, now, 3);
      }
    }
    return std::tuple{accepted, dropped, sends};
  };
  const std::vector<std::uint64_t> all_but_6 = {1, 2, 3, 4, 5, 7, 8, 9, 10};
  const auto [clean, clean_dropped, sends] = run(std::nullopt);
  BOOST_TEST(clean == all_but_6, boost::test_tools::per_element());
  BOOST_TEST(clean_dropped == std::vector<std::uint64_t>{6});
  for (int k = 0; k < sends; ++k) {
    BOOST_TEST_CONTEXT("send " << k << " fails") {
      const auto [accepted, dropped, n] = run(k);
      BOOST_TEST(accepted == all_but_6, boost::test_tools::per_element());
      BOOST_TEST(dropped == std::vector<std::uint64_t>{6});
      BOOST_TEST(n == sends + 1);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
