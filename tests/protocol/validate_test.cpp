// Validators for identifiers, store paths, URLs, times and size specs.
#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/time.hpp"
#include "nixfleet/protocol/types.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet::protocol;

namespace {
const std::string hash32 = "0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v";
std::string store(std::string_view name) { return "/nix/store/" + hash32 + "-" + std::string(name); }
}  // namespace

BOOST_AUTO_TEST_SUITE(validate)

BOOST_AUTO_TEST_CASE(durations_as_operators_write_them) {
  using std::chrono::seconds;
  BOOST_TEST(nixfleet::protocol::parse_duration("90s").value().count() == 90);
  BOOST_TEST(nixfleet::protocol::parse_duration("15m").value().count() == 900);
  BOOST_TEST(nixfleet::protocol::parse_duration("1h").value().count() == 3600);
  BOOST_TEST(nixfleet::protocol::parse_duration("30d").value().count() == 30 * 86400);
  BOOST_TEST(nixfleet::protocol::parse_duration("42").value().count() == 42);
  for (const char* bad : {"", "d", "1w", "-1h", "1.5h", "1 h", "h1", "99999999999999999999s", "40000d"})
    BOOST_TEST(!nixfleet::protocol::parse_duration(bad).has_value(), bad);
}

BOOST_AUTO_TEST_CASE(store_paths_accept_nix_names) {
  const std::string names[] = {"nixos-system-web-01-25.11", "a", "foo+bar_baz.drv", "x?y=z", "-rf", std::string(211, 'n')};
  for (const auto& name : names) BOOST_TEST(!check_store_path(store(name)), name);
}

BOOST_AUTO_TEST_CASE(store_paths_refuse_traversal_alphabet_length_and_names) {
  const std::string bad[] = {
      "/nix/store/../etc",
      "/nix/store/" + hash32 + "-..",
      "/nix/store/" + hash32 + "-.hidden",
      "/nix/store/" + hash32 + "-a/../../etc/shadow",
      "/nix/store/" + hash32 + "-a/bin",
      "/nix/store/" + hash32 + "-",
      "/nix/store/" + hash32,
      "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4e-a",  // 'e' is not nix base32
      "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4u-a",  // nor 'u'
      "/nix/store/0C2A6Q4LBJXKFZ3VBQ6GGC6HL4G0SN4V-a",  // nor upper case
      "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4-a",   // 31 characters
      "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4vv-a", // 33 characters
      store(std::string(212, 'n')),
      store("a b"),
      store("a\nb"),
      store("a\x01"),
      "nix/store/" + hash32 + "-a",
      "/nix/store2/" + hash32 + "-a",
      "",
      store("caf\xc3\xa9"),
  };
  for (const auto& s : bad) BOOST_TEST(check_store_path(s).failed(), s);
}

BOOST_AUTO_TEST_CASE(identifiers_follow_the_machine_id_grammar) {
  for (auto s : {"web-01", "a", "A.b_c-d", "0"}) BOOST_TEST(!check_identifier(s), s);
  BOOST_TEST(!check_identifier(std::string(128, 'a')));
  for (std::string s : {"", "-web", ".web", "_web", "web 01", "web/01", "web\n", "wéb", "../x"})
    BOOST_TEST(check_identifier(s).failed(), s);
  BOOST_TEST(check_identifier(std::string(129, 'a')) == make_error_code(errc::too_long));
}

BOOST_AUTO_TEST_CASE(cache_urls_are_absolute_with_a_known_scheme) {
  for (auto s : {"https://cache.example.org", "http://127.0.0.1:8080/cache", "file:///var/cache/nix",
                 "s3://bucket", "ssh://builder", "ssh-ng://builder"})
    BOOST_TEST(!check_cache_url(s), s);
  for (auto s : {"", "cache.example.org", "ftp://x", "https://", "https:// example.org", "-oProxyCommand=x",
                 "https://example.org/\n", "file:relative", "javascript:alert(1)"})
    BOOST_TEST(check_cache_url(s).failed(), s);
  BOOST_TEST(check_http_url("ssh://x").failed());
}

BOOST_AUTO_TEST_CASE(network_cache_urls_carry_no_store_parameters) {
  // Nix takes store settings from the query: over the network, none is accepted.
  for (auto s : {"file:///srv/cache?trusted=1", "https://cache.example.org/?trusted=true", "s3://bucket?region=eu-west-1",
                 "ssh://builder?remote-program=/tmp/x", "ssh-ng://nix@builder", "ssh://h?ssh-key=/root/.ssh/id",
                 "https://user:pw@cache.example.org", "https://cache.example.org/#frag"})
    BOOST_TEST(check_cache_url(s).failed(), s);
  // Fetchable from a release: http(s) and s3 only, never a file path or a remote command.
  for (auto s : {"https://cache.example.org", "http://127.0.0.1:8081", "s3://bucket"})
    BOOST_TEST(!check_fetchable_cache_url(s), s);
  for (auto s : {"file:///var/cache/nix", "ssh://builder", "ssh-ng://builder", "https://c/?trusted=1"})
    BOOST_TEST(check_fetchable_cache_url(s).failed(), s);
  // The host's own caches may have parameters, never `trusted`.
  for (auto s : {"s3://bucket?region=eu-west-1", "ssh-ng://nix@builder?ssh-key=/etc/nix/key", "file:///srv/cache"})
    BOOST_TEST(!check_local_cache_url(s), s);
  for (auto s : {"file:///srv/cache?trusted=1", "s3://b?region=x&trusted=true", "ftp://x"})
    BOOST_TEST(check_local_cache_url(s).failed(), s);
  BOOST_TEST(!check_http_url("https://coordinator:8443"));
}

BOOST_AUTO_TEST_CASE(text_refuses_control_characters_and_invalid_utf8) {
  BOOST_TEST(!check_text("fine: ünïcødé", 100));
  BOOST_TEST(check_text("a\nb", 100) == make_error_code(errc::invalid_characters));
  BOOST_TEST(!check_text("a\nb\tc", 100, newlines::allow));
  BOOST_TEST(check_text("a\x1b[31m", 100, newlines::allow) == make_error_code(errc::invalid_characters));
  BOOST_TEST(check_text("\xc0\xaf", 100) == make_error_code(errc::invalid_characters));  // overlong '/'
  BOOST_TEST(check_text("\xed\xa0\x80", 100) == make_error_code(errc::invalid_characters));  // surrogate
  BOOST_TEST(check_text("abcd", 3) == make_error_code(errc::too_long));
}

BOOST_AUTO_TEST_CASE(flake_revs_and_platforms) {
  BOOST_TEST(!check_flake_rev("8fd9daa3db09ced9700431c5b7ad0e8ba199b575"));
  BOOST_TEST(!check_flake_rev("8fd9daa-dirty"));
  BOOST_TEST(check_flake_rev("8FD9DAA").failed());
  BOOST_TEST(check_flake_rev("abc").failed());
  BOOST_TEST(!check_platform("x86_64-linux"));
  BOOST_TEST(!check_platform("aarch64-darwin"));
  BOOST_TEST(check_platform("linux").failed());
  BOOST_TEST(check_platform("x86_64-linux;rm").failed());
}

BOOST_AUTO_TEST_CASE(times_round_trip_in_utc_with_milliseconds) {
  auto t = parse_time("2026-11-25T18:26:21.123Z");
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(format_time(*t) == "2026-11-25T18:26:21.123Z");
  BOOST_TEST(format_time(parse_time("2026-11-25T18:26:21Z").value()) == "2026-11-25T18:26:21.000Z");
  BOOST_TEST(format_time(parse_time("2026-11-25T18:26:21.123456789+00:00").value()) == "2026-11-25T18:26:21.123Z");
  BOOST_TEST(format_time(parse_time("2024-02-29T00:00:00.5Z").value()) == "2024-02-29T00:00:00.500Z");
  for (auto s : {"2026-11-25T18:26:21.123+01:00", "2026-11-25 18:26:21Z", "2026-02-30T00:00:00Z",
                 "2026-11-25T24:00:00Z", "2026-11-25T18:26:21.Z", "2026-11-25T18:26:21", "1969-12-31T23:59:59Z",
                 "2026-13-01T00:00:00Z", "2026-11-25T18:26:21.1234567890Z", "", "yesterday"})
    BOOST_TEST(parse_time(s).has_error(), s);
}

BOOST_AUTO_TEST_CASE(size_specs_parse_counts_and_percentages) {
  BOOST_TEST((parse_size_spec("1").value() == size_spec{size_spec::unit::count, 1}));
  BOOST_TEST((parse_size_spec("10%").value() == size_spec{size_spec::unit::percent, 10}));
  BOOST_TEST(parse_size_spec("100%").value().to_string() == "100%");
  for (auto s : {"", "%", "101%", "-1", "1.5", "01", "10 %", "1e3", "99999999"})
    BOOST_TEST(parse_size_spec(s).has_error(), s);
  BOOST_TEST(parse_size_spec("10%").value().resolve(25) == 3u);  // rounds up
  BOOST_TEST(parse_size_spec("1%").value().resolve(10) == 1u);
  BOOST_TEST(parse_size_spec("5").value().resolve(3) == 3u);
  BOOST_TEST(parse_size_spec("0").value().resolve(3) == 0u);
}

BOOST_AUTO_TEST_CASE(program_output_becomes_bounded_printable_text) {
  auto accepted = [](const std::string& s, std::size_t max) { return !check_text(s, max, newlines::allow).failed(); };
  // Colours, carriage returns, a bell, a NUL, a lone continuation byte, a cut character.
  const std::string raw = std::string("\x1b[1;31merror\x1b[0m: a\r\nb\x07" "c") + '\0' + "d \x80 caf\xc3\xa9 \xe2\x82";
  const auto clean = printable_excerpt(raw, 1024);
  BOOST_TEST(clean == "error: a\nb c d ? café ??");
  BOOST_TEST(accepted(clean, 1024));
  // Longer than the limit: the end is kept from a line start, marked.
  std::string lines;
  for (int i = 0; i < 1000; ++i) lines += "line " + std::to_string(i) + " é\n";
  const auto tail = printable_excerpt(lines, 200);
  BOOST_TEST(tail.size() <= 200u);
  BOOST_TEST(accepted(tail, 200));
  BOOST_TEST(tail.starts_with("[…]\nline "));
  BOOST_TEST(tail.ends_with("line 999 é\n"));
  const auto head = printable_excerpt(lines, 200, keep::head);
  BOOST_TEST(head.size() <= 200u);
  BOOST_TEST(head.starts_with("line 0 é\n"));
  BOOST_TEST(head.ends_with("\n[…]"));
  BOOST_TEST(accepted(head, 200));
  // One long line of multibyte characters is cut between characters.
  BOOST_TEST(accepted(printable_excerpt(std::string(3000, 'x') + std::string(300, '\xc3'), 100), 100));
  std::string wide;
  for (int i = 0; i < 500; ++i) wide += "é";
  for (std::size_t max : {50u, 51u, 52u, 99u}) {
    BOOST_TEST(accepted(printable_excerpt(wide, max), max), max);
    BOOST_TEST(accepted(printable_excerpt(wide, max, keep::head), max), max);
  }
  BOOST_TEST(printable_excerpt(wide, 3).empty());
}

BOOST_AUTO_TEST_SUITE_END()
