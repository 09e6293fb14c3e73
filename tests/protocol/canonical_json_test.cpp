// RFC 8785 canonicalisation against the RFC's own examples.
#include "nixfleet/protocol/canonical_json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <bit>
#include <charconv>
#include <cstdint>
#include <random>

using namespace nixfleet::protocol;

BOOST_AUTO_TEST_SUITE(canonical_json)

// RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript serialisation.
BOOST_AUTO_TEST_CASE(number_serialisation_matches_rfc_appendix_b) {
  struct row {
    std::uint64_t bits;
    const char* expected;
  };
  const row rows[] = {
      {0x0000000000000000, "0"},
      {0x8000000000000000, "0"},
      {0x0000000000000001, "5e-324"},
      {0x8000000000000001, "-5e-324"},
      {0x7fefffffffffffff, "1.7976931348623157e+308"},
      {0xffefffffffffffff, "-1.7976931348623157e+308"},
      {0x4340000000000000, "9007199254740992"},
      {0xc340000000000000, "-9007199254740992"},
      {0x4430000000000000, "295147905179352830000"},
      {0x44b52d02c7e14af5, "9.999999999999997e+22"},
      {0x44b52d02c7e14af6, "1e+23"},
      {0x44b52d02c7e14af7, "1.0000000000000001e+23"},
      {0x444b1ae4d6e2ef4e, "999999999999999700000"},
      {0x444b1ae4d6e2ef4f, "999999999999999900000"},
      {0x444b1ae4d6e2ef50, "1e+21"},
      {0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
      {0x3eb0c6f7a0b5ed8d, "0.000001"},
      {0x41b3de4355555553, "333333333.3333332"},
      {0x41b3de4355555554, "333333333.33333325"},
      {0x41b3de4355555555, "333333333.3333333"},
      {0x41b3de4355555556, "333333333.3333334"},
      {0x41b3de4355555557, "333333333.33333343"},
      {0xbecbf647612f3696, "-0.0000033333333333333333"},
      {0x43143ff3c1cb0959, "1424953923781206.2"},
  };
  for (const auto& r : rows) {
    BOOST_TEST_CONTEXT("bits " << std::hex << r.bits) {
      BOOST_TEST(format_number(std::bit_cast<double>(r.bits)) == r.expected);
    }
  }
}

BOOST_AUTO_TEST_CASE(nan_and_infinity_are_refused) {
  boost::json::value nan(std::bit_cast<double>(std::uint64_t{0x7fffffffffffffff}));
  boost::json::value inf(std::bit_cast<double>(std::uint64_t{0x7ff0000000000000}));
  BOOST_TEST(canonicalize(nan).error() == make_error_code(errc::not_finite));
  BOOST_TEST(canonicalize(inf).error() == make_error_code(errc::not_finite));
  BOOST_TEST(canonicalize_text("[1e400]").error() == make_error_code(errc::not_finite));
}

// RFC 8785 §3.2.2: the worked example (numbers, string escapes, literals, key order).
BOOST_AUTO_TEST_CASE(rfc_section_3_2_2_example) {
  const char* input = R"({
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  })";
  const std::string expected =
      "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
      "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
  auto out = canonicalize_text(input);
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(*out == expected);
}

// RFC 8785 §3.2.3: property sorting by UTF-16 code units (the emoji sorts before U+FB33).
BOOST_AUTO_TEST_CASE(rfc_section_3_2_3_sorting_by_utf16_code_units) {
  const char* input = R"({
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis"
  })";
  auto out = canonicalize_text(input);
  BOOST_REQUIRE(out.has_value());
  const std::string expected =
      "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\","
      "\"\xc3\xb6\":\"Latin Small Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro Sign\","
      "\"\xf0\x9f\x98\x80\":\"Emoji: Grinning Face\",\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}";
  BOOST_TEST(*out == expected);
}

BOOST_AUTO_TEST_CASE(nested_objects_are_sorted_and_arrays_keep_order) {
  auto out = canonicalize_text(R"({"b": [3, {"z": 1, "a": 2}], "a": {"d": true, "c": null}})");
  BOOST_REQUIRE(out.has_value());
  BOOST_TEST(*out == R"({"a":{"c":null,"d":true},"b":[3,{"a":2,"z":1}]})");
}

BOOST_AUTO_TEST_CASE(malformed_and_duplicate_keys_are_refused) {
  BOOST_TEST(canonicalize_text("{\"a\":1,}").error() == make_error_code(errc::invalid_json));
  BOOST_TEST(canonicalize_text("{\"a\":1,\"a\":2}").error() == make_error_code(errc::invalid_json));
  BOOST_TEST(canonicalize_text("[1] [2]").error() == make_error_code(errc::invalid_json));
  BOOST_TEST(canonicalize_text("").error() == make_error_code(errc::invalid_json));
}

// Shortest round-trip: whatever the bits, the text reads back to the same double.
BOOST_AUTO_TEST_CASE(formatted_numbers_read_back_exactly) {
  std::mt19937_64 rng(8785);
  for (int i = 0; i < 20000; ++i) {
    const auto bits = rng();
    const double d = std::bit_cast<double>(bits);
    if (!std::isfinite(d)) continue;
    const auto text = format_number(d);
    double back = 0;
    std::from_chars(text.data(), text.data() + text.size(), back);
    BOOST_TEST_REQUIRE(back == (d == 0 ? 0.0 : d), "bits " << std::hex << bits << " gave " << text);
  }
}

BOOST_AUTO_TEST_SUITE_END()
