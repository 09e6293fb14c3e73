// Golden round-trips for every wire type, and tables of bad input that must name the field.
#include "nixfleet/protocol/codec.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

using namespace nixfleet::protocol;
namespace fs = std::filesystem;

namespace {

fs::path fixtures() {
  const char* env = std::getenv("NIXFLEET_TEST_FIXTURES");
  BOOST_REQUIRE_MESSAGE(env != nullptr, "NIXFLEET_TEST_FIXTURES is not set (run through ctest)");
  return fs::path(env) / "protocol";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Decode then encode; the error text when decoding fails.
struct outcome {
  std::optional<boost::json::value> value;
  std::string error;
};
using round_trip = std::function<outcome(const std::string&)>;

template <class T>
round_trip via() {
  return [](const std::string& text) -> outcome {
    auto d = parse<T>(text);
    if (!d) return {std::nullopt, d.error().what()};
    // Encoding must itself decode to the same struct.
    auto again = from_json<T>(to_json(*d));
    if (!again) return {std::nullopt, "re-decoding failed: " + again.error().what()};
    if (!(*again == *d)) return {std::nullopt, "re-decoded value differs"};
    return {to_json(*d), {}};
  };
}

const std::map<std::string, round_trip>& wire_types() {
  static const std::map<std::string, round_trip> table = {
      {"desired_state", via<desired_state>()},
      {"rollback_statement", via<rollback_statement>()},
      {"revocation_list", via<revocation_list>()},
      {"probe_result", via<probe_result>()},
      {"health_report", via<health_report>()},
      {"report", via<report>()},
      {"probe_evidence", via<probe_evidence>()},
      {"forensics_bundle", via<forensics_bundle>()},
      {"webhook_request", via<webhook_request>()},
      {"webhook_info", via<webhook_info>()},
      {"webhook_delivery", via<webhook_delivery>()},
      {"report_batch", via<report_batch>()},
      {"report_ack", via<report_ack>()},
      {"release_entry", via<release_entry>()},
      {"release_request", via<release_request>()},
      {"release", via<release>()},
      {"release_change", via<release_change>()},
      {"release_diff", via<release_diff>()},
      {"rollout_target", via<rollout_target>()},
      {"rollout_request", via<rollout_request>()},
      {"rollout_host", via<rollout_host>()},
      {"rollout_wave", via<rollout_wave>()},
      {"rollout_event", via<rollout_event>()},
      {"rollout_detail", via<rollout_detail>()},
      {"resume_request", via<resume_request>()},
      {"confirmed_generation", via<confirmed_generation>()},
      {"machine_status", via<machine_status>()},
      {"machine_update", via<machine_update>()},
      {"rollback_request", via<rollback_request>()},
      {"audit_event", via<audit_event>()},
      {"key_request", via<key_request>()},
      {"api_key_info", via<api_key_info>()},
      {"created_key", via<created_key>()},
      {"audit_verification", via<audit_verification>()},
      {"audit_checkpoint", via<audit_checkpoint>()},
      {"error_body", via<error_body>()},
      {"enroll_token_request", via<enroll_token_request>()},
      {"enroll_token", via<enroll_token>()},
      {"enroll_request", via<enroll_request>()},
      {"certificate_request", via<certificate_request>()},
      {"issued_certificate", via<issued_certificate>()},
  };
  return table;
}

const std::string h1 = "0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v";
const std::string p1 = "/nix/store/" + h1 + "-nixos-system-web-01";

// A valid heartbeat report with one field replaced (or removed when `value` is empty).
std::string report_with(const std::string& key, const std::string& raw_value) {
  auto v = boost::json::parse(R"({"seq":1,"at":"2026-11-25T18:00:01.250Z","kind":"heartbeat","current_path":")" + p1 +
                              R"(","agent_version":"0.1.0","uptime_s":3600})");
  if (raw_value.empty())
    v.as_object().erase(key);
  else
    v.as_object()[key] = boost::json::parse(raw_value);
  return boost::json::serialize(v);
}

std::string desired_with(const std::string& key, const std::string& raw_value) {
  auto v = boost::json::parse(R"({"machine_id":"web-01","release_id":"r-1","store_path":")" + p1 +
                              R"(","cache_urls":["https://cache.example.org"],"activation":"switch","rollout_id":null,
                                  "attempt":0,"entry_signature":null,"release_created_at":"2026-11-25T18:00:00.000Z",
                                  "poll_hint":null})");
  if (raw_value.empty())
    v.as_object().erase(key);
  else
    v.as_object()[key] = boost::json::parse(raw_value);
  return boost::json::serialize(v);
}

struct bad_case {
  std::string what;
  std::function<std::optional<decode_error>()> decode;
  std::string field;
  errc code;
};

template <class T>
std::function<std::optional<decode_error>()> decoding(std::string text) {
  return [text]() -> std::optional<decode_error> {
    auto r = parse<T>(text);
    if (r) return std::nullopt;
    return r.error();
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(codec)

BOOST_AUTO_TEST_CASE(every_wire_type_has_golden_fixtures) {
  for (const auto& [name, _] : wire_types()) {
    const auto dir = fixtures() / name;
    BOOST_TEST_REQUIRE(fs::is_directory(dir), "no fixtures for " << name);
    BOOST_TEST(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) >= 1, name);
  }
  for (const auto& entry : fs::directory_iterator(fixtures()))
    BOOST_TEST(wire_types().contains(entry.path().filename().string()), "fixture dir without a type: " << entry.path());
}

BOOST_AUTO_TEST_CASE(golden_fixtures_round_trip) {
  std::size_t cases = 0;
  for (const auto& [name, convert] : wire_types()) {
    for (const auto& c : fs::directory_iterator(fixtures() / name)) {
      BOOST_TEST_CONTEXT(name << "/" << c.path().filename().string()) {
        const auto input = slurp(c.path() / "input.json");
        const auto expected_file = c.path() / "expected.json";
        const auto expected = boost::json::parse(fs::exists(expected_file) ? slurp(expected_file) : input);
        auto out = convert(input);
        BOOST_TEST_REQUIRE(out.value.has_value(), out.error);
        BOOST_TEST(*out.value == expected, "got " << boost::json::serialize(*out.value));
        ++cases;
      }
    }
  }
  BOOST_TEST(cases >= wire_types().size());
}

BOOST_AUTO_TEST_CASE(bad_input_names_the_field) {
  const std::vector<bad_case> cases = {
      // store paths
      {"traversal", decoding<report>(report_with("current_path", R"("/nix/store/../etc")")), "current_path",
       errc::invalid_store_path},
      {"traversal after hash", decoding<report>(report_with("current_path", "\"/nix/store/" + h1 + "-a/../../etc\"")),
       "current_path", errc::invalid_store_path},
      {"wrong hash alphabet",
       decoding<desired_state>(desired_with("store_path", R"("/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4e-x")")),
       "store_path", errc::invalid_store_path},
      {"short hash", decoding<desired_state>(desired_with("store_path", R"("/nix/store/0c2a6q4l-x")")),
       "store_path", errc::invalid_store_path},
      {"name starts with a dot", decoding<desired_state>(desired_with("store_path", "\"/nix/store/" + h1 + "-.x\"")),
       "store_path", errc::invalid_store_path},
      {"over-long name",
       decoding<desired_state>(desired_with("store_path", "\"/nix/store/" + h1 + "-" + std::string(212, 'a') + "\"")),
       "store_path", errc::too_long},
      {"control character in path", decoding<report>(report_with("booted_path", "\"/nix/store/" + h1 + "-a\\u0007\"")),
       "booted_path", errc::invalid_store_path},
      // identifiers
      {"machine id with slash", decoding<desired_state>(desired_with("machine_id", R"("web/01")")), "machine_id",
       errc::invalid_identifier},
      {"machine id with newline", decoding<desired_state>(desired_with("machine_id", R"("web\n01")")), "machine_id",
       errc::invalid_identifier},
      {"over-long machine id", decoding<desired_state>(desired_with("machine_id", "\"" + std::string(129, 'w') + "\"")),
       "machine_id", errc::too_long},
      {"rollout id leading dash", decoding<desired_state>(desired_with("rollout_id", R"("-x")")), "rollout_id",
       errc::invalid_identifier},
      // urls
      {"relative cache url", decoding<desired_state>(desired_with("cache_urls", R"(["cache.example.org"])")),
       "cache_urls[0]", errc::invalid_url},
      {"option-like cache url",
       decoding<desired_state>(desired_with("cache_urls", R"(["https://ok.example.org","--option"])")),
       "cache_urls[1]", errc::invalid_url},
      {"too many cache urls",
       decoding<desired_state>(desired_with("cache_urls", "[" + [] {
         std::string s;
         for (int i = 0; i < 17; ++i) s += std::string(i ? "," : "") + "\"https://c" + std::to_string(i) + ".org\"";
         return s;
       }() + "]")),
       "cache_urls", errc::too_many_items},
      // times
      {"local time", decoding<report>(report_with("at", R"("2026-11-25T18:00:01+01:00")")), "at", errc::invalid_time},
      {"not a date", decoding<report>(report_with("at", R"("2026-02-30T00:00:00Z")")), "at", errc::invalid_time},
      {"time as number", decoding<report>(report_with("at", "1764093601")), "at", errc::wrong_type},
      // enums
      {"unknown kind", decoding<report>(report_with("kind", R"("exploded")")), "kind", errc::invalid_enum},
      {"activation case", decoding<desired_state>(desired_with("activation", R"("Switch")")), "activation",
       errc::invalid_enum},
      // types and missing fields
      {"seq as string", decoding<report>(report_with("seq", R"("1")")), "seq", errc::wrong_type},
      {"seq negative", decoding<report>(report_with("seq", "-1")), "seq", errc::out_of_range},
      {"seq fraction", decoding<report>(report_with("seq", "1.5")), "seq", errc::wrong_type},
      {"seq beyond 2^64", decoding<report>(report_with("seq", "18446744073709551616")), "seq", errc::out_of_range},
      {"seq zero", decoding<report>(report_with("seq", "0")), "seq", errc::out_of_range},
      {"attempt beyond 2^32", decoding<desired_state>(desired_with("attempt", "4294967296")), "attempt",
       errc::out_of_range},
      {"huge exponent", decoding<report>(report_with("uptime_s", "1e300")), "uptime_s", errc::out_of_range},
      {"poll hint zero", decoding<desired_state>(desired_with("poll_hint", "0")), "poll_hint", errc::out_of_range},
      {"missing at", decoding<report>(report_with("at", "")), "at", errc::missing_field},
      {"empty current_path", decoding<report>(report_with("current_path", R"("")")), "current_path",
       errc::invalid_store_path},
      {"null required field", decoding<report>(report_with("agent_version", "null")), "agent_version",
       errc::missing_field},
      {"missing store_path for a target kind", decoding<report>(report_with("kind", R"("confirmed")")), "store_path",
       errc::missing_field},
      {"health kind without health", decoding<report>(report_with("kind", R"("health")")), "health",
       errc::missing_field},
      {"document is an array", decoding<report>("[]"), "", errc::wrong_type},
      {"malformed json", decoding<report>("{\"seq\":"), "", errc::invalid_json},
      {"nesting too deep", decoding<report>(std::string(64, '[') + std::string(64, ']')), "", errc::invalid_json},
      {"over-long agent version", decoding<report>(report_with("agent_version", "\"" + std::string(65, 'v') + "\"")),
       "agent_version", errc::too_long},
      {"control character in message", decoding<report>(report_with("message", R"("a\u001b[31m")")), "message",
       errc::invalid_characters},
      // nested paths
      {"bad report inside batch",
       decoding<report_batch>("{\"reports\":[" + report_with("seq", "2") + "," + report_with("kind", "\"x\"") + "]}"),
       "reports[1].kind", errc::invalid_enum},
      {"bad probe status",
       decoding<report>(report_with("health", R"({"passed":true,"results":[{"probe":"a","type":"tcp","status":"ok","duration_ms":1}]})")),
       "health.results[0].status", errc::invalid_enum},
      {"release entry bad host",
       decoding<release_request>("{\"id\":\"r-1\",\"created_at\":\"2026-11-25T18:00:00Z\",\"entries\":[{\"hostname\":\"a b\",\"store_path\":\"" + p1 + "\"}]}"),
       "entries[0].hostname", errc::invalid_identifier},
      {"release entry duplicate host",
       decoding<release_request>("{\"id\":\"r-1\",\"created_at\":\"2026-11-25T18:00:00Z\",\"entries\":[{\"hostname\":\"a\",\"store_path\":\"" + p1 +
                                 "\"},{\"hostname\":\"a\",\"store_path\":\"" + p1 + "\"}]}"),
       "entries", errc::invalid_combination},
      {"release without entries",
       decoding<release_request>(R"({"id":"r-1","created_at":"2026-11-25T18:00:00Z","entries":[]})"), "entries",
       errc::missing_field},
      {"malformed signature",
       decoding<release_entry>("{\"hostname\":\"a\",\"store_path\":\"" + p1 + "\",\"signature\":\"k:AAAA\"}"),
       "signature", errc::invalid_signature},
      {"bad flake rev",
       decoding<release_request>("{\"id\":\"r-1\",\"created_at\":\"2026-11-25T18:00:00Z\",\"flake_rev\":\"main; rm\",\"entries\":[{\"hostname\":\"a\",\"store_path\":\"" + p1 + "\"}]}"),
       "flake_rev", errc::invalid_identifier},
      // rollouts
      {"target with both", decoding<rollout_request>(R"({"release_id":"r-1","target":{"tags":["a"],"hosts":["b"]}})"),
       "target.tags", errc::invalid_combination},
      {"target with neither", decoding<rollout_request>(R"({"release_id":"r-1","target":{}})"), "target.tags",
       errc::invalid_combination},
      {"wave over 100%", decoding<rollout_request>(R"({"release_id":"r-1","target":{"tags":["a"]},"waves":["150%"]})"),
       "waves[0]", errc::invalid_size_spec},
      {"empty wave", decoding<rollout_request>(R"({"release_id":"r-1","target":{"tags":["a"]},"waves":["0"]})"),
       "waves", errc::invalid_size_spec},
      {"no waves", decoding<rollout_request>(R"({"release_id":"r-1","target":{"tags":["a"]},"waves":[]})"), "waves",
       errc::missing_field},
      {"threshold as number",
       decoding<rollout_request>(R"({"release_id":"r-1","target":{"tags":["a"]},"failure_threshold":2})"),
       "failure_threshold", errc::wrong_type},
      {"on_failure unknown",
       decoding<rollout_request>(R"({"release_id":"r-1","target":{"tags":["a"]},"on_failure":"explode"})"),
       "on_failure", errc::invalid_enum},
      {"bad tag", decoding<machine_update>(R"({"tags":["ok","no spaces"]})"), "tags[1]", errc::invalid_identifier},
      {"empty update", decoding<machine_update>("{}"), "tags", errc::missing_field},
      {"key role", decoding<key_request>(R"({"name":"ci","role":"root"})"), "role", errc::invalid_enum},
      {"key name", decoding<key_request>(R"({"name":"c i","role":"admin"})"), "name", errc::invalid_key},
      {"retry flag type", decoding<resume_request>(R"({"retry_failed":"yes"})"), "retry_failed", errc::wrong_type},
      // webhooks
      {"webhook without events", decoding<webhook_request>(R"({"url":"https://h.example.org","events":[]})"), "events",
       errc::missing_field},
      {"webhook pattern star inside", decoding<webhook_request>(R"({"url":"https://h.example.org","events":["a*.b"]})"),
       "events[0]", errc::invalid_identifier},
      {"webhook short secret",
       decoding<webhook_request>(R"({"url":"https://h.example.org","events":["*"],"secret":"short"})"), "secret",
       errc::out_of_range},
      {"webhook secret with a newline",
       decoding<webhook_request>(R"({"url":"https://h.example.org","events":["*"],"secret":"0123456789abcdef\nX"})"),
       "secret", errc::invalid_characters},
      {"webhook url not http", decoding<webhook_request>(R"({"url":"file:///etc/passwd","events":["*"]})"), "url",
       errc::invalid_url},
      // forensics: every part bounded, nothing unchecked
      {"forensics journal too long",
       decoding<report>(report_with("forensics", "{\"journal\":\"" + std::string(16 * 1024 + 1, 'j') + "\"}")),
       "forensics.journal", errc::too_long},
      {"forensics probe output too long",
       decoding<report>(report_with("forensics", R"({"probes":[{"probe":"p","type":"exec","status":"fail","output":")" +
                                                     std::string(2049, 'o') + "\"}]}")),
       "forensics.probes[0].output", errc::too_long},
      {"forensics too many probes",
       decoding<forensics_bundle>([] {
         std::string ps;
         for (int i = 0; i < 17; ++i) ps += std::string(i ? "," : "") + R"({"probe":"p","type":"t","status":"pass"})";
         return R"({"probes":[)" + ps + "]}";
       }()),
       "probes", errc::too_many_items},
      {"forensics target not a store path", decoding<forensics_bundle>(R"({"target":"/etc/passwd"})"), "target",
       errc::invalid_store_path},
      {"forensics control character in a unit",
       decoding<forensics_bundle>(R"({"failed_units":["a\u001b[31m.service"]})"), "failed_units[0]",
       errc::invalid_characters},
      {"forensics diff count below its lines",
       decoding<forensics_bundle>(R"({"closure_diff":["a: 1 → 2"],"closure_changes":0})"), "closure_changes",
       errc::out_of_range},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.what) {
      auto err = c.decode();
      BOOST_TEST_REQUIRE(err.has_value(), "accepted");
      BOOST_TEST(err->field == c.field, "error was: " << err->what());
      BOOST_TEST(err->code == make_error_code(c.code), "error was: " << err->what());
      BOOST_TEST(!err->message.empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(oversized_body_is_refused_before_parsing) {
  std::string big = "{\"reports\":[" + std::string(limits::max_body_bytes, ' ') + "]}";
  auto r = parse<report_batch>(big);
  BOOST_REQUIRE(r.has_error());
  BOOST_TEST(r.error().code == make_error_code(errc::too_long));
}

BOOST_AUTO_TEST_CASE(batch_limit_counts_reports) {
  std::string body = "{\"reports\":[";
  for (std::size_t i = 0; i <= limits::max_reports_per_batch; ++i) body += (i ? "," : "") + report_with("seq", std::to_string(i + 1));
  body += "]}";
  auto r = parse<report_batch>(body);
  BOOST_REQUIRE(r.has_error());
  BOOST_TEST(r.error().field == "reports");
  BOOST_TEST(r.error().code == make_error_code(errc::too_many_items));
}

BOOST_AUTO_TEST_CASE(error_messages_do_not_echo_input) {
  auto r = parse<desired_state>(desired_with("machine_id", R"("<script>alert(1)</script>")"));
  BOOST_REQUIRE(r.has_error());
  BOOST_TEST(r.error().what().find("<script>") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
