// Probe plugins through nixfleet-probe-host: the example plugin on demand, and plugins that
// crash, hang, speak another ABI, fail init, return garbage or do not exist.
#include "nixfleet/health/config.hpp"
#include "run_sync.hpp"

#include <boost/test/unit_test.hpp>

using namespace nixfleet;
using namespace std::chrono_literals;
using protocol::probe_status;

namespace {

protocol::probe_result run_plugin(const std::string& path, const std::string& config = "{}", double timeout_s = 2) {
  health::probe_env env;
  env.plugin_host = NIXFLEET_TEST_PROBE_HOST;
  env.kill_grace = 300ms;
  auto setup = health::parse_health_config(R"({"probes": [{"name": "p", "type": "plugin", "timeout_s": )" +
                                               std::to_string(timeout_s) + R"(, "path": ")" + path +
                                               R"(", "config": )" + config + "}]}",
                                           env);
  BOOST_TEST_REQUIRE(setup.has_value(), (setup ? "" : setup.error().what()));
  return test::run_sync(health::run_probe(*setup->probes.front()));
}

std::string plugin(const std::string& name) { return std::string(NIXFLEET_TEST_PLUGIN_DIR) + "/" + name + ".so"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(plugins)

BOOST_AUTO_TEST_CASE(example_disk_free_plugin_passes_and_fails_on_demand) {
  const auto so = std::string(NIXFLEET_EXAMPLE_PLUGIN);
  auto pass = run_plugin(so, R"({"path": "/", "min_free_mb": 0, "min_free_percent": 0})");
  BOOST_TEST((pass.status == probe_status::pass), pass.message.value_or(""));
  BOOST_TEST(pass.message->find("MiB free") != std::string::npos, *pass.message);

  auto fail = run_plugin(so, R"({"path": "/", "min_free_mb": 1e12})");
  BOOST_TEST((fail.status == probe_status::fail));
  BOOST_TEST(fail.message->find("need 1000000000000 MiB") != std::string::npos, *fail.message);

  auto missing_path = run_plugin(so, R"({"path": "/nonexistent/dir"})");
  BOOST_TEST((missing_path.status == probe_status::fail));
  BOOST_TEST(missing_path.message->find("No such file") != std::string::npos, *missing_path.message);

  auto bad_config = run_plugin(so, R"({"min_free_mb": 1})");
  BOOST_TEST((bad_config.status == probe_status::fail));
  BOOST_TEST(bad_config.message.value_or("") == "plugin init failed: config.path (a string) is required");
}

BOOST_AUTO_TEST_CASE(segfaulting_plugin_is_a_failed_probe) {
  auto r = run_plugin(plugin("segfault"));
  BOOST_TEST((r.status == probe_status::fail));
  // SIGSEGV, or SIGABRT when the host is built with AddressSanitizer (which catches the fault).
  BOOST_TEST(r.message.value_or("").starts_with("plugin crashed: killed by signal "), r.message.value_or(""));
}

BOOST_AUTO_TEST_CASE(hanging_plugin_is_killed_at_the_timeout) {
  auto r = run_plugin(plugin("hang"), "{}", 0.4);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "plugin did not return within 400 ms");
  BOOST_TEST(r.duration_ms < 400u + 300u + 1000u);
}

BOOST_AUTO_TEST_CASE(wrong_abi_version_is_refused) {
  auto r = run_plugin(plugin("wrong_abi"));
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "plugin ABI version 99, this host speaks 1");
}

BOOST_AUTO_TEST_CASE(garbage_result_is_a_failed_probe) {
  auto r = run_plugin(plugin("garbage"));
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "plugin returned an invalid status 42");
}

BOOST_AUTO_TEST_CASE(init_failure_carries_the_plugins_reason) {
  auto r = run_plugin(plugin("init_fails"));
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "plugin init failed: missing config.threshold");
}

BOOST_AUTO_TEST_CASE(missing_shared_object_is_a_failed_probe) {
  auto r = run_plugin("/nonexistent/libprobe.so");
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("cannot load plugin") != std::string::npos, *r.message);
  auto not_a_plugin = run_plugin("/bin/sh");
  BOOST_TEST((not_a_plugin.status == probe_status::fail));
}

BOOST_AUTO_TEST_CASE(missing_plugin_host_is_a_failed_probe) {
  health::probe_env env;
  env.plugin_host = "/nonexistent/nixfleet-probe-host";
  auto setup = health::parse_health_config(
      R"({"probes": [{"name": "p", "type": "plugin", "path": "/x.so"}]})", env);
  BOOST_REQUIRE(setup.has_value());
  auto r = test::run_sync(health::run_probe(*setup->probes.front()));
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("cannot start the plugin host") != std::string::npos, *r.message);
}

BOOST_AUTO_TEST_SUITE_END()
