// Logging: logfmt rendering, quoting, levels and the journal priority prefix.
#include "nixfleet/common/log.hpp"

#include <boost/test/unit_test.hpp>

#include <sstream>
#include <system_error>



BOOST_AUTO_TEST_SUITE(logging)

BOOST_AUTO_TEST_CASE(fields_render_as_logfmt_with_quoting_only_when_needed) {
  const auto line = nixfleet::log::detail::render("poll failed", {{"machine", "web-01"},
                                                         {"attempt", 3},
                                                         {"ok", false},
                                                         {"error", "connection refused"},
                                                         {"empty", ""},
                                                         {"quote", "say \"hi\""},
                                                         {"multi", "a\nb\x01"}});
  BOOST_TEST(line ==
             "msg=\"poll failed\" machine=web-01 attempt=3 ok=false error=\"connection refused\" empty=\"\" "
             "quote=\"say \\\"hi\\\"\" multi=\"a\\nb\\u0001\"");
}

BOOST_AUTO_TEST_CASE(keys_cannot_break_the_line_grammar) {
  BOOST_TEST(nixfleet::log::detail::render("x", {{"bad key=", "v"}}) == "msg=x bad_key_=v");
}

BOOST_AUTO_TEST_CASE(plain_lines_carry_utc_time_and_level) {
  std::ostringstream out;
  nixfleet::log::init({.min_level = nixfleet::log::level::info, .style = nixfleet::log::format::plain, .stream = &out});
  nixfleet::log::debug("hidden");
  nixfleet::log::info("started", {{"version", "1.2.3"}});
  nixfleet::log::error("failed", {{"error", std::make_error_code(std::errc::connection_refused)}});
  const auto text = out.str();
  BOOST_TEST(text.find("hidden") == std::string::npos);
  BOOST_TEST(text.find(" level=info msg=started version=1.2.3\n") != std::string::npos, text);
  BOOST_TEST(text.find(" level=error msg=failed error=\"Connection refused\"\n") != std::string::npos, text);
  BOOST_TEST(text.rfind("ts=", 0) == 0u);
  BOOST_TEST(text.find("Z level=info") != std::string::npos, text);
  nixfleet::log::init({});
}

BOOST_AUTO_TEST_CASE(journal_lines_carry_the_syslog_priority_and_no_time) {
  std::ostringstream out;
  nixfleet::log::init({.min_level = nixfleet::log::level::debug, .style = nixfleet::log::format::journal, .stream = &out});
  nixfleet::log::debug("d");
  nixfleet::log::info("i");
  nixfleet::log::warn("w");
  nixfleet::log::error("e");
  BOOST_TEST(out.str() == "<7>level=debug msg=d\n<6>level=info msg=i\n<4>level=warning msg=w\n<3>level=error msg=e\n");
  nixfleet::log::init({});
}

BOOST_AUTO_TEST_CASE(journal_stream_detection_compares_device_and_inode) {
  BOOST_TEST(nixfleet::log::detail::journal_stream_matches("8:12345", 8, 12345));
  BOOST_TEST(!nixfleet::log::detail::journal_stream_matches("8:12345", 8, 12346));
  BOOST_TEST(!nixfleet::log::detail::journal_stream_matches("8", 8, 0));
  BOOST_TEST(!nixfleet::log::detail::journal_stream_matches("8:x", 8, 0));
  BOOST_TEST(!nixfleet::log::detail::journal_stream_matches(":1", 0, 1));
}

BOOST_AUTO_TEST_CASE(levels_parse_by_name) {
  BOOST_TEST((nixfleet::log::parse_level("debug", nixfleet::log::level::info) == nixfleet::log::level::debug));
  BOOST_TEST((nixfleet::log::parse_level("warning", nixfleet::log::level::info) == nixfleet::log::level::warn));
  BOOST_TEST((nixfleet::log::parse_level("loud", nixfleet::log::level::info) == nixfleet::log::level::info));
}

BOOST_AUTO_TEST_SUITE_END()
