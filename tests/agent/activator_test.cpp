// switch-to-configuration through the activator: directly, in a transient unit (a stand-in
// systemd-run on PATH: no systemd runs here), failures with stderr, and waiting for a switch an
// earlier agent started (a stand-in systemctl).
#include "nixfleet/agent/io/nix.hpp"
#include "run_sync.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <fstream>

using namespace nixfleet;
using namespace nixfleet::agent;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// A fake store path whose switch script records its argument; made under a temp dir and
// addressed through a symlink-free absolute path that passes validation.
struct fixture {
  fixture() {
    dir = fs::temp_directory_path() / ("nixfleet-activator-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::create_directories(dir / "bin");
    write_exec(dir / "bin" / "systemd-run",
               "#!/bin/sh\necho \"$@\" > " + (dir / "systemd-run.args").string() +
                   "\nwhile [ \"${1#--}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n");
    old_path = std::getenv("PATH");
    ::setenv("PATH", ((dir / "bin").string() + ":" + old_path).c_str(), 1);
  }
  ~fixture() {
    ::setenv("PATH", old_path.c_str(), 1);
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  static void write_exec(const fs::path& p, const std::string& text) {
    std::ofstream(p) << text;
    fs::permissions(p, fs::perms::owner_all);
  }
  std::string slurp(const fs::path& p) const {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  fs::path dir;
  std::string old_path;
  static inline int n = 0;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(activator_tests, fixture)

BOOST_AUTO_TEST_CASE(invalid_store_paths_never_reach_a_command) {
  io::switch_activator a({});
  auto r = test::run_sync(a.switch_to("/tmp/evil", protocol::activation_mode::switch_));
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "refusing an invalid store path");
}

BOOST_AUTO_TEST_CASE(missing_switch_script_is_a_failure_with_the_reason) {
  io::switch_activator a({});
  auto r = test::run_sync(a.switch_to("/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-not-here", protocol::activation_mode::boot));
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error.find("switch-to-configuration boot could not start") != std::string::npos, r.error);
}

BOOST_AUTO_TEST_CASE(transient_unit_wraps_the_switch) {
  io::activation_settings s;
  s.how = io::activation_settings::runner::systemd_run;
  // The switch's output is in its unit's journal: a stand-in journalctl records what it was asked.
  s.journalctl = (dir / "journalctl").string();
  write_exec(dir / "journalctl", "#!/bin/sh\necho \"$@\" > " + (dir / "journalctl.args").string() +
                                      "\necho 'starting the following units: web.service'\n");
  io::switch_activator a(s);
  // The stand-in systemd-run records its arguments and runs the command: /bin/true as "script".
  const auto before = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  auto r = test::run_sync(a.switch_to("/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-x", protocol::activation_mode::test));
  BOOST_TEST(!r.ok);  // there is no script under that store path
  const auto args = slurp(dir / "systemd-run.args");
  BOOST_TEST(args.find("--collect --wait --quiet --service-type=exec --unit=nixfleet-switch-1 "
                       "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-x/bin/switch-to-configuration test") == 0u,
             args);
  BOOST_TEST(r.output == "starting the following units: web.service\n");
  // Only this unit, and only since this switch began (an earlier agent numbered its units from 1 too).
  const auto jargs = slurp(dir / "journalctl.args");
  BOOST_TEST(jargs.find("--unit=nixfleet-switch-1") != std::string::npos, jargs);
  const auto since = jargs.find("--since=@");
  BOOST_REQUIRE(since != std::string::npos);
  BOOST_TEST(std::stoll(jargs.substr(since + 9)) >= before.count(), jargs);
}

BOOST_AUTO_TEST_CASE(waits_while_an_earlier_switch_unit_runs) {
  const auto counter = dir / "calls";
  write_exec(dir / "systemctl", "#!/bin/sh\nn=$(cat " + counter.string() + " 2>/dev/null || echo 0)\necho $((n+1)) > " +
                                    counter.string() +
                                    "\nif [ $n -lt 2 ]; then echo 'nixfleet-switch-7.service loaded active running x'; fi\n");
  io::activation_settings s;
  s.how = io::activation_settings::runner::systemd_run;
  s.systemctl = (dir / "systemctl").string();
  io::switch_activator a(s);
  const auto start = std::chrono::steady_clock::now();
  test::run_sync([&]() -> boost::asio::awaitable<int> {
    co_await a.wait_for_earlier_switch();
    co_return 0;
  }());
  BOOST_TEST(slurp(counter) == "3\n");  // asked until the unit was gone
  BOOST_TEST((std::chrono::steady_clock::now() - start >= 2s));

  // Direct switching has no units to wait for.
  io::switch_activator direct({});
  fs::remove(counter);
  test::run_sync([&]() -> boost::asio::awaitable<int> {
    co_await direct.wait_for_earlier_switch();
    co_return 0;
  }());
  BOOST_TEST(!fs::exists(counter));
}

BOOST_AUTO_TEST_SUITE_END()
