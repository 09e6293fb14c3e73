// The listen-address parser and the Prometheus text writer.
#include "nixfleet/common/listen.hpp"
#include "nixfleet/common/prometheus.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet;

BOOST_AUTO_TEST_SUITE(listen_address)

BOOST_AUTO_TEST_CASE(addresses_with_ports_are_taken_and_the_rest_refused) {
  auto v4 = parse_listen("127.0.0.1:8443");
  BOOST_REQUIRE(v4.has_value());
  BOOST_TEST(v4->address().to_string() == "127.0.0.1");
  BOOST_TEST(v4->port() == 8443);
  auto v6 = parse_listen("[::1]:9100");
  BOOST_REQUIRE(v6.has_value());
  BOOST_TEST(v6->address().to_string() == "::1");
  auto any = parse_listen(":8443");
  BOOST_REQUIRE(any.has_value());
  BOOST_TEST(any->address().to_string() == "::");
  BOOST_TEST(parse_listen("127.0.0.1:0")->port() == 0, "port 0: an ephemeral port");
  for (const char* bad : {"", "8443", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:84x3", "::1:8443",
                          "localhost:8443", "[::1:8443", "127.0.0.1:-1", "127.0.0.1: 80"})
    BOOST_TEST(!parse_listen(bad), bad);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(prometheus_text)

BOOST_AUTO_TEST_CASE(families_samples_and_escaped_labels) {
  prometheus::text t;
  t.family("x_total", "counter", "Things, by kind.\nSecond line \\ here.");
  t.sample("x_total", {{"kind", "a\"b"}, {"path", "c\\d\ne"}}, std::uint64_t{3});
  t.sample("x_total", {{"kind", "plain"}}, -2);
  t.scalar("y_seconds", "gauge", "A time.", 0.25);
  t.scalar("z", "gauge", "A flag.", true);
  t.sample("inf", {{"le", "+Inf"}}, std::numeric_limits<double>::infinity());
  BOOST_TEST(t.str() ==
             "# HELP x_total Things, by kind.\\nSecond line \\\\ here.\n"
             "# TYPE x_total counter\n"
             "x_total{kind=\"a\\\"b\",path=\"c\\\\d\\ne\"} 3\n"
             "x_total{kind=\"plain\"} -2\n"
             "# HELP y_seconds A time.\n# TYPE y_seconds gauge\ny_seconds 0.25\n"
             "# HELP z A flag.\n# TYPE z gauge\nz 1\n"
             "inf{le=\"+Inf\"} +Inf\n");
}

BOOST_AUTO_TEST_SUITE_END()
