// Agent configuration: defaults, overrides from the file, and bad input naming the field.
#include "nixfleet/agent/config.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

using namespace nixfleet;

namespace {
const std::string key = "ops-1:SqzA8d7ok1nayRg0TVpL7g14GYEJyYx2TMPulfFKJAY=";
}

BOOST_AUTO_TEST_SUITE(agent_config)

BOOST_AUTO_TEST_CASE(minimal_config_takes_every_default_and_the_hostname) {
  auto cfg = agent::parse_agent_config(
      R"({"coordinator_url": "https://fleet.example.org:8443", "trusted_keys": [")" + key + R"("]})", "web-01");
  BOOST_REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().what()));
  BOOST_TEST(cfg->machine_id == "web-01");
  BOOST_TEST(cfg->poll_interval.count() == 60000);
  BOOST_TEST(cfg->retry_interval.count() == 30000);
  BOOST_TEST(cfg->health_interval.count() == 60000);
  BOOST_TEST(cfg->profile == "/nix/var/nix/profiles/system");
  BOOST_TEST(cfg->trusted_keys.keys().size() == 1u);
  BOOST_TEST(!cfg->allow_unsigned);
  BOOST_TEST(!cfg->max_target_age.has_value());
  BOOST_TEST(cfg->caches.empty());
  BOOST_TEST(!cfg->dry_run);
  BOOST_TEST((cfg->runner == agent::switch_runner::automatic));
}

BOOST_AUTO_TEST_CASE(file_values_override_defaults_and_round_trip_through_check_config_output) {
  const std::string text = R"({"machine_id": "db-01", "coordinator_url": "http://127.0.0.1:8080",
    "allow_insecure_http": true, "poll_interval_s": 30, "retry_interval_s": 5.5, "trusted_keys": [")" + key +
                           R"("], "switch_runner": "direct", "dry_run": true, "metrics_listen": "127.0.0.1:9101",
    "tls": {"ca_file": "/etc/nixfleet/ca.pem", "cert_file": "/etc/nixfleet/db-01.pem", "key_file": "/etc/nixfleet/db-01.key"}})";
  auto cfg = agent::parse_agent_config(text, "ignored");
  BOOST_REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().what()));
  BOOST_TEST(cfg->machine_id == "db-01");
  BOOST_TEST(cfg->retry_interval.count() == 5500);
  BOOST_TEST(cfg->trusted_keys.keys().size() == 1u);
  BOOST_TEST(cfg->trusted_keys.keys()[0].to_string() == key);
  BOOST_TEST((cfg->runner == agent::switch_runner::direct));
  BOOST_TEST(*cfg->metrics_listen == "127.0.0.1:9101");

  // What check-config prints parses back to the same configuration.
  auto again = agent::parse_agent_config(boost::json::serialize(agent::to_json(*cfg)), "other");
  BOOST_REQUIRE(again.has_value());
  BOOST_TEST(boost::json::serialize(agent::to_json(*again)) == boost::json::serialize(agent::to_json(*cfg)));
}

BOOST_AUTO_TEST_CASE(no_trusted_keys_fails_closed_unless_unsigned_is_allowed_explicitly) {
  auto cfg = agent::parse_agent_config(R"({"coordinator_url": "https://x"})", "web-01");
  BOOST_REQUIRE(cfg.has_error());
  BOOST_TEST(cfg.error().field == "trusted_keys");
  BOOST_TEST(cfg.error().what().find("allow_unsigned") != std::string::npos, cfg.error().what());
  cfg = agent::parse_agent_config(R"({"coordinator_url": "https://x", "trusted_keys": []})", "web-01");
  BOOST_TEST((cfg.has_error() && cfg.error().field == "trusted_keys"));
  cfg = agent::parse_agent_config(R"({"coordinator_url": "https://x", "allow_unsigned": true})", "web-01");
  BOOST_REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().what()));
  BOOST_TEST(cfg->allow_unsigned);
}

BOOST_AUTO_TEST_CASE(trusted_keys_may_carry_not_after_and_caches_store_parameters) {
  auto cfg = agent::parse_agent_config(R"({"coordinator_url": "https://x", "trusted_keys": [
      {"key": ")" + key + R"(", "not_after": "2027-01-01T00:00:00.000Z"}, "ops-2:SqzA8d7ok1nayRg0TVpL7g14GYEJyYx2TMPulfFKJAY="],
      "max_target_age_s": 604800, "caches": ["s3://fleet-cache?region=eu-west-1", "file:///srv/cache"]})",
                                       "web-01");
  BOOST_REQUIRE_MESSAGE(cfg.has_value(), (cfg ? "" : cfg.error().what()));
  BOOST_TEST(cfg->trusted_keys.keys().size() == 2u);
  BOOST_TEST((cfg->trusted_keys.not_after(0) == protocol::parse_time("2027-01-01T00:00:00.000Z").value()));
  BOOST_TEST(!cfg->trusted_keys.not_after(1).has_value());
  BOOST_TEST(cfg->max_target_age->count() == 604800000);
  BOOST_TEST(cfg->caches.size() == 2u);
  // check-config prints what parses back to the same.
  auto again = agent::parse_agent_config(boost::json::serialize(agent::to_json(*cfg)), "other");
  BOOST_REQUIRE_MESSAGE(again.has_value(), (again ? "" : again.error().what()));
  BOOST_TEST(boost::json::serialize(agent::to_json(*again)) == boost::json::serialize(agent::to_json(*cfg)));
}

BOOST_AUTO_TEST_CASE(bad_configs_name_the_field) {
  struct row {
    std::string json;
    std::string hostname;
    std::string field;
  };
  const std::vector<row> rows = {
      {"{}", "web-01", "coordinator_url"},
      {R"({"coordinator_url": "ftp://x"})", "web-01", "coordinator_url"},
      {R"({"coordinator_url": "http://x"})", "web-01", "coordinator_url"},  // plain http not allowed
      {R"({"coordinator_url": "https://x"})", "bad host name", "machine_id"},
      {R"({"coordinator_url": "https://x", "machine_id": "../etc"})", "web-01", "machine_id"},
      {R"({"coordinator_url": "https://x", "poll_interval_s": 0})", "h", "poll_interval_s"},
      {R"({"coordinator_url": "https://x", "poll_interval_s": -5})", "h", "poll_interval_s"},
      {R"({"coordinator_url": "https://x", "retry_interval_s": "30"})", "h", "retry_interval_s"},
      {R"({"coordinator_url": "https://x", "state_dir": "relative/dir"})", "h", "state_dir"},
      {R"({"coordinator_url": "https://x", "profile": "/nix/../etc/profile"})", "h", "profile"},
      {R"({"coordinator_url": "https://x", "trusted_keys": ["not-a-key"]})", "h", "trusted_keys[0].key"},
      {R"({"coordinator_url": "https://x", "trusted_keys": [{"key": ")" + key + R"(", "not_after": "soon"}]})", "h",
       "trusted_keys[0].not_after"},
      {R"({"coordinator_url": "https://x", "trusted_keys": [")" + key + R"("], "allow_unsigned": true})", "h",
       "allow_unsigned"},
      {R"({"coordinator_url": "https://x", "allow_unsigned": true, "max_target_age_s": 5})", "h", "max_target_age_s"},
      {R"({"coordinator_url": "https://x", "allow_unsigned": true, "caches": ["file:///srv/c?trusted=1"]})", "h",
       "caches[0]"},
      {R"({"coordinator_url": "https://x", "allow_unsigned": true, "caches": ["s3://b?region=x&trusted=true"]})", "h",
       "caches[0]"},
      {R"({"coordinator_url": "https://x", "cache_public_keys": ["k:AAAA"]})", "h", "cache_public_keys[0]"},
      {R"({"coordinator_url": "https://x", "tls": {"cert_file": "/a.pem"}})", "h", "tls.key_file"},
      {R"({"coordinator_url": "https://x", "switch_runner": "ssh"})", "h", "switch_runner"},
      {R"({"coordinator_url": "https://x", "log_level": "loud"})", "h", "log_level"},
      {R"({"coordinator_url": "https://x", "metrics_listen": "9101"})", "h", "metrics_listen"},
      {R"({"coordinator_url": "https://x", "metrics_listen": "127.0.0.1:70000"})", "h", "metrics_listen"},
      {R"({"coordinator_url": "https://x", "metrics_listen": "127.0.0.1:0"})", "h", "metrics_listen"},
      {R"({"coordinator_url": "https://x", "outbox_limit": 5})", "h", "outbox_limit"},
      {R"({"coordinator_url": "https://x", "dry_run": "yes"})", "h", "dry_run"},
      {"[1]", "h", ""},
      {"{,}", "h", ""},
  };
  for (const auto& r : rows) {
    BOOST_TEST_CONTEXT(r.json) {
      auto cfg = agent::parse_agent_config(r.json, r.hostname);
      BOOST_TEST_REQUIRE(cfg.has_error(), "accepted");
      BOOST_TEST(cfg.error().field == r.field, cfg.error().what());
    }
  }
}

BOOST_AUTO_TEST_CASE(missing_file_is_an_error) {
  auto cfg = agent::load_agent_config("/nonexistent/agent.json", "h");
  BOOST_REQUIRE(cfg.has_error());
  BOOST_TEST(cfg.error().what() == "cannot read /nonexistent/agent.json");
}

BOOST_AUTO_TEST_SUITE_END()
