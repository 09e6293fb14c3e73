// health.json validation (errors name the probe and the field) and `nixfleet-agent probe`.
#include "nixfleet/agent/probe_command.hpp"
#include "nixfleet/health/config.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace nixfleet;
namespace fs = std::filesystem;

namespace {

struct bad_config {
  std::string json;
  std::string field;
  std::string message_part;
};

fs::path write_temp(const std::string& name, const std::string& text) {
  auto p = fs::temp_directory_path() / ("nixfleet-" + std::to_string(::getpid()) + "-" + name);
  std::ofstream(p) << text;
  return p;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(health_config)

BOOST_AUTO_TEST_CASE(a_full_config_parses_with_defaults) {
  auto setup = health::parse_health_config(R"({
    // comments are allowed in the file
    "gate": {"grace_s": 5, "interval_s": 2.5, "soak_s": 30, "failure_threshold": 2, "timeout_s": 120},
    "probes": [
      {"name": "nginx", "type": "systemd_unit", "unit": "nginx.service"},
      {"name": "api", "type": "http", "url": "https://127.0.0.1:8443/health", "required": false, "timeout_s": 3},
      {"name": "db", "type": "tcp", "host": "localhost", "port": 5432}
    ]
  })");
  BOOST_REQUIRE_MESSAGE(setup.has_value(), (setup ? "" : setup.error().what()));
  BOOST_TEST(setup->gate.interval.count() == 2500);
  BOOST_TEST(setup->gate.success_threshold == 1u);
  BOOST_TEST(setup->probes.size() == 3u);
  BOOST_TEST(setup->probes[1]->common().required == false);
  BOOST_TEST(setup->probes[0]->common().timeout.count() == 10000);  // default
  BOOST_TEST(setup->gated()[1].name == "api");
}

BOOST_AUTO_TEST_CASE(empty_config_means_no_probes) {
  auto setup = health::parse_health_config("{}");
  BOOST_REQUIRE(setup.has_value());
  BOOST_TEST(setup->probes.empty());
}

BOOST_AUTO_TEST_CASE(bad_configs_name_the_probe_and_the_field) {
  const std::vector<bad_config> cases = {
      {"[]", "", "expected an object"},
      {"{", "", "malformed JSON"},
      {R"({"gate": {"timeout_s": 10, "soak_s": 60}})", "gate.timeout_s", "grace_s + soak_s"},
      {R"({"gate": {"interval_s": 0}})", "gate.interval_s", "more than 0"},
      {R"({"gate": {"failure_threshold": -1}})", "gate.failure_threshold", "negative"},
      {R"({"gate": {"grace_s": "ten"}})", "gate.grace_s", "seconds"},
      {R"({"probes": {}})", "probes", "list"},
      {R"({"probes": [{"type": "tcp"}]})", "probes[0].name", "required"},
      {R"({"probes": [{"name": "a b", "type": "tcp"}]})", "probes[0].name", ""},
      {R"({"probes": [{"name": "x", "type": "telepathy"}]})", "probes[0].type", "probe \"x\": unknown type"},
      {R"({"probes": [{"name": "x", "type": "tcp", "host": "h", "port": 1}, {"name": "x", "type": "tcp", "host": "h", "port": 2}]})",
       "probes[1].name", "another probe has this name"},
      {R"({"probes": [{"name": "api", "type": "http", "url": "ftp://x"}]})", "probes[0].url", "probe \"api\": invalid URL"},
      {R"({"probes": [{"name": "api", "type": "http"}]})", "probes[0].url", "probe \"api\": required"},
      {R"({"probes": [{"name": "api", "type": "http", "url": "http://x", "expect_status": [99]}]})",
       "probes[0].expect_status", "between 100 and 599"},
      {R"({"probes": [{"name": "db", "type": "tcp", "host": "h", "port": 70000}]})", "probes[0].port", "65535"},
      {R"({"probes": [{"name": "db", "type": "tcp", "host": "-oops", "port": 5}]})", "probes[0].host", "probe \"db\""},
      {R"({"probes": [{"name": "c", "type": "exec", "command": "x", "shell": true, "args": ["y"]}]})", "probes[0].args",
       "whole command line"},
      {R"({"probes": [{"name": "c", "type": "exec", "command": "-rf"}]})", "probes[0].command", "probe \"c\""},
      {R"({"probes": [{"name": "c", "type": "exec", "command": "x", "timeout_s": 0}]})", "probes[0].timeout_s",
       "probe \"c\": must be more than 0"},
      {R"({"probes": [{"name": "p", "type": "plugin", "path": "relative.so"}]})", "probes[0].path", "probe \"p\""},
      {R"({"probes": [{"name": "p", "type": "plugin", "path": "/x.so", "config": []}]})", "probes[0].config",
       "expected an object"},
      {R"({"probes": [{"name": "u", "type": "systemd_unit", "unit": "a;b"}]})", "probes[0].unit", ""},
      {R"({"probes": [{"name": "u", "type": "systemd_failed", "max_failed": "2"}]})", "probes[0].max_failed", ""},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.json) {
      auto r = health::parse_health_config(c.json);
      BOOST_TEST_REQUIRE(r.has_error(), "accepted");
      BOOST_TEST(r.error().field == c.field, r.error().what());
      BOOST_TEST(r.error().what().find(c.message_part) != std::string::npos, r.error().what());
    }
  }
}

BOOST_AUTO_TEST_CASE(unreadable_file_is_an_error) {
  auto r = health::load_health_config("/nonexistent/health.json");
  BOOST_REQUIRE(r.has_error());
  BOOST_TEST(r.error().what().find("cannot read /nonexistent/health.json") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(probe_command)

BOOST_AUTO_TEST_CASE(all_required_passing_exits_0_and_prints_a_table) {
  auto cfg = write_temp("good.json", R"({"probes": [
      {"name": "ok", "type": "exec", "command": "true"},
      {"name": "optional-bad", "type": "exec", "command": "false", "required": false}]})");
  std::ostringstream out, err;
  BOOST_TEST(agent::run_probe_command({.health_config = cfg.string()}, out, err) == 0);
  BOOST_TEST(out.str().find("optional-bad") != std::string::npos, out.str());
  BOOST_TEST(out.str().find("all required probes pass") != std::string::npos, out.str());
  fs::remove(cfg);
}

BOOST_AUTO_TEST_CASE(a_required_failure_exits_1_and_json_is_a_health_report) {
  auto cfg = write_temp("bad.json", R"({"probes": [{"name": "broken", "type": "exec", "command": "false"}]})");
  std::ostringstream out, err;
  BOOST_TEST(agent::run_probe_command({.health_config = cfg.string(), .json = true}, out, err) == 1);
  BOOST_TEST(out.str().find(R"("passed":false)") != std::string::npos, out.str());
  BOOST_TEST(out.str().find(R"("probe":"broken")") != std::string::npos, out.str());
  fs::remove(cfg);
}

BOOST_AUTO_TEST_CASE(a_bad_config_exits_78_naming_the_field) {
  auto cfg = write_temp("invalid.json", R"({"probes": [{"name": "x", "type": "tcp", "host": "h"}]})");
  std::ostringstream out, err;
  BOOST_TEST(agent::run_probe_command({.health_config = cfg.string()}, out, err) == 78);
  BOOST_TEST(err.str().find("probes[0].port") != std::string::npos, err.str());
  BOOST_TEST(out.str().empty());
  BOOST_TEST(agent::run_probe_command({.health_config = "/nonexistent.json"}, out, err) == 78);
  fs::remove(cfg);
}

BOOST_AUTO_TEST_SUITE_END()
