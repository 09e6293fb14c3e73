// Poll timing: interval, poll_hint, and backoff with full jitter (bounds, growth, reset).
#include "nixfleet/agent/core/poll_schedule.hpp"

#include <boost/test/unit_test.hpp>

#include <limits>
#include <random>

using namespace nixfleet::agent::core;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

BOOST_AUTO_TEST_SUITE(poll_schedule_tests)

BOOST_AUTO_TEST_CASE(success_waits_the_interval_or_the_hint) {
  poll_schedule s({});
  BOOST_TEST(s.after_success(std::nullopt).count() == 60000);
  BOOST_TEST(s.after_success(5u).count() == 5000);
  BOOST_TEST(s.after_success(600u).count() == 60000);  // a hint never slows polling down
  BOOST_TEST(s.after_success(0u).count() == 1000);     // nor turns it into a busy loop
}

BOOST_AUTO_TEST_CASE(first_poll_is_jittered_and_never_zero) {
  poll_schedule s({});
  BOOST_TEST(s.first(0).count() == 100);
  BOOST_TEST(s.first(std::numeric_limits<std::uint64_t>::max()) <= 10s);
  std::mt19937_64 rng(1);
  ms lo = 10s, hi = 0s;
  for (int i = 0; i < 10000; ++i) {
    auto d = s.first(rng());
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  BOOST_TEST(lo < 1s);  // spread over the window, not clustered
  BOOST_TEST(hi > 9s);
}

BOOST_AUTO_TEST_CASE(backoff_ceiling_doubles_from_one_second_to_retry_interval) {
  poll_schedule s({});
  const std::vector<long> expected = {1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
  for (auto c : expected) {
    s.after_failure(0);
    BOOST_TEST(s.ceiling().count() == c);
  }
  BOOST_TEST(s.consecutive_failures() == expected.size());
}

BOOST_AUTO_TEST_CASE(every_failure_wait_lies_within_min_wait_and_the_ceiling) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 200; ++trial) {
    poll_schedule s({});
    for (int n = 1; n <= 12; ++n) {
      const auto d = s.after_failure(rng());
      BOOST_TEST_REQUIRE(d >= 100ms);  // never zero
      BOOST_TEST_REQUIRE(d <= s.ceiling());
    }
  }
  poll_schedule s({});
  BOOST_TEST(s.after_failure(std::numeric_limits<std::uint64_t>::max()) <= 1s);
}

BOOST_AUTO_TEST_CASE(success_resets_the_backoff) {
  poll_schedule s({});
  for (int i = 0; i < 6; ++i) s.after_failure(7);
  BOOST_TEST(s.ceiling().count() == 30000);
  s.after_success(std::nullopt);
  BOOST_TEST(s.consecutive_failures() == 0u);
  s.after_failure(0);
  BOOST_TEST(s.ceiling().count() == 1000);
}

BOOST_AUTO_TEST_CASE(full_jitter_spreads_a_fleet) {
  // 1000 agents failing together at the 30 s ceiling do not retry together.
  std::mt19937_64 rng(7);
  std::vector<int> buckets(30, 0);
  for (int agent = 0; agent < 1000; ++agent) {
    poll_schedule s({});
    ms d{};
    for (int i = 0; i < 6; ++i) d = s.after_failure(rng());
    buckets[static_cast<std::size_t>(std::min<long>(29, d.count() / 1000))]++;
  }
  for (int b : buckets) BOOST_TEST(b < 80);  // uniform would be ~33 per second
}

BOOST_AUTO_TEST_SUITE_END()
