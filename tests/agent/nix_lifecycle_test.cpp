// The whole deploy lifecycle against real Nix (runs when nix is installed): real store paths, a
// real profile in a temporary directory, real switch-to-configuration scripts, real probes.
#include "nixfleet/agent/io/deploy_driver.hpp"
#include "nixfleet/agent/io/forensics.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/agent/io/nix.hpp"
#include "run_sync.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/wait.h>

using namespace nixfleet;
using namespace nixfleet::agent;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A tiny "NixOS system": bin/switch-to-configuration logs the switch and points current-system
// at itself; a `healthy` file is what the probe looks for.
constexpr const char* system_nix = R"(
{ stateDir, label, healthy }:
builtins.derivation {
  name = "nixos-system-test-${label}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    /bin/mkdir -p $out/bin
    /bin/cat > $out/bin/switch-to-configuration <<EOF
    #!/bin/sh
    echo "\$1 $out" >> ${stateDir}/switch.log
    echo "starting the following units: demo-${label}.service" >&2
    /bin/ln -sfn $out ${stateDir}/current-system
    EOF
    /bin/chmod +x $out/bin/switch-to-configuration
    ${if healthy then "/bin/touch $out/healthy" else ""}
  '' ];
}
)";

struct nix_world {
  nix_world() {
    if (run("command -v nix-build").empty()) {
      std::cout << "nix is not installed: skipping the real-Nix lifecycle tests\n";
      std::exit(77);
    }
    dir = fs::temp_directory_path() / ("nixfleet-lifecycle-" + std::to_string(::getpid()));
    fs::create_directories(dir / "profiles");
    std::ofstream(dir / "system.nix") << system_nix;
    ::setenv("NIX_CONFIG", "experimental-features = nix-command\nsubstituters =\nbuild-users-group =\nsandbox = false", 1);
    const auto label = std::to_string(::getpid());
    a = build("a-" + label, true);
    b = build("b-" + label, true);
    c = build("c-" + label, false);
    profile = (dir / "profiles" / "system").string();
    BOOST_TEST_REQUIRE(!run("nix-env -p " + profile + " --set " + a + " && " + a + "/bin/switch-to-configuration switch && echo ok").empty());
  }
  ~nix_world() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string build(const std::string& label, bool healthy) {
    auto out = run("nix-build --no-out-link " + (dir / "system.nix").string() + " --argstr stateDir " + dir.string() +
                   " --argstr label " + label + " --arg healthy " + (healthy ? "true" : "false"));
    BOOST_TEST_REQUIRE(out.starts_with("/nix/store/"), "nix-build gave: " << out);
    return out;
  }
  std::size_t generations() const {
    auto list = run("nix-env -p " + profile + " --list-generations");
    return static_cast<std::size_t>(std::count(list.begin(), list.end(), '\n') + (list.empty() ? 0 : 1));
  }
  std::string profile_target() const { return fs::canonical(profile).string(); }
  std::string running() const { return fs::read_symlink(dir / "current-system").string(); }

  fs::path dir;
  std::string a, b, c, profile;
};

protocol::desired_state desired(const std::string& path) {
  protocol::desired_state d;
  d.machine_id = "web-01";
  d.release_id = "r-1";
  d.store_path = path;
  return d;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(nix_lifecycle, nix_world)

BOOST_AUTO_TEST_CASE(good_target_becomes_a_generation_and_a_failing_one_is_rolled_back) {
  auto setup = std::make_shared<health::health_setup>(health::parse_health_config(
      R"({"probes": [{"name": "marker", "type": "exec", "shell": true, "timeout_s": 2,
                      "command": "test -e )" + (dir / "current-system" / "healthy").string() + R"("}]})").value());
  core::deployer_config cfg;
  cfg.gate.grace = 100ms;
  cfg.gate.interval = 100ms;
  cfg.gate.soak = 300ms;
  cfg.gate.failure_threshold = 2;
  cfg.gate.timeout = 10s;
  cfg.probes = setup->gated();
  core::deployer machine(cfg);

  io::nix_settings ns;
  ns.min_free_mb = 1;
  io::nix_cli nix(ns);
  io::switch_activator activation({.current_system = dir / "current-system"});
  io::health_prober probes(setup);
  io::steady_clock time;
  io::state_store store(dir / "agent");
  BOOST_REQUIRE(!store.prepare());
  core::outbox box;
  // Forensics with the real `nix store diff-closures`; systemd does not run here, so systemctl and
  // journalctl are stand-ins that name a failed unit and print its journal.
  io::forensics_settings fs_settings;
  fs_settings.systemctl = (dir / "systemctl").string();
  fs_settings.journalctl = (dir / "journalctl").string();
  // demo.service has failed while c runs; the switch back to b restarts it.
  std::ofstream(fs_settings.systemctl) << "#!/bin/sh\n[ \"$(readlink " << (dir / "current-system").string() << ")\" = " << c
                                       << " ] && echo 'demo.service loaded failed failed Demo'\nexit 0\n";
  std::ofstream(fs_settings.journalctl) << "#!/bin/sh\necho \"journal of $*\"\n";
  for (const auto& f : {fs_settings.systemctl, fs_settings.journalctl}) fs::permissions(f, fs::perms::owner_all);
  fs_settings.nix_config = std::getenv("NIX_CONFIG");
  io::host_investigator investigator(fs_settings);
  io::deploy_driver driver(machine, {nix, activation, probes, time, &investigator}, store, box, "web-01", profile,
                           "test");
  const core::trust_policy no_keys{.allow_unsigned = true};

  boost::asio::io_context ctx;
  test::run_sync(ctx, [&]() -> boost::asio::awaitable<int> {
    co_await driver.start();
    co_await driver.deliver(desired(b), no_keys);
    co_return 0;
  }());
  BOOST_TEST(running() == b);
  BOOST_TEST(profile_target() == b);
  BOOST_TEST(generations() == 2u);
  BOOST_TEST(*driver.state().last_good == b);
  BOOST_TEST((box.items().back().kind == protocol::report_kind::confirmed));
  BOOST_TEST(!store.load_record().value.has_value());

  test::run_sync(ctx, [&]() -> boost::asio::awaitable<int> {
    co_await driver.deliver(desired(c), no_keys);
    co_return 0;
  }());
  BOOST_TEST(running() == b);
  BOOST_TEST(profile_target() == b);  // the profile points to the previous path again
  BOOST_TEST((box.items().back().kind == protocol::report_kind::rolled_back));
  BOOST_TEST(box.items().back().message->find("marker failed 2 consecutive checks") != std::string::npos,
             *box.items().back().message);
  BOOST_REQUIRE(driver.state().quarantine.size() == 1u);
  BOOST_TEST(driver.state().quarantine[0].store_path == c);
  // The rolled_back report carries what the host saw: the probe's output, the failed unit (listed
  // before the switch back cleared it) and its journal, the switch's output and the closure difference between c and b.
  const auto& fx = box.items().back().forensics;
  BOOST_REQUIRE(fx.has_value());
  BOOST_TEST(fx->target.value_or("") == c);
  BOOST_TEST(fx->previous.value_or("") == b);
  BOOST_REQUIRE(fx->probes.size() == 1u);
  BOOST_TEST(fx->probes[0].probe == "marker");
  BOOST_TEST((fx->probes[0].status == protocol::probe_status::fail));
  BOOST_TEST(fx->failed_units == std::vector<std::string>{"demo.service"});
  const auto label = std::to_string(::getpid());
  BOOST_TEST(fx->switch_output.value_or("").find("starting the following units: demo-c-" + label + ".service") !=
                 std::string::npos,
             fx->switch_output.value_or(""));
  BOOST_TEST(fx->journal.value_or("").find("--unit=demo.service --unit=demo-c-" + label + ".service") != std::string::npos,
             fx->journal.value_or(""));
  BOOST_TEST(fx->closure_changes >= 1u);
  bool names_c = false;
  for (const auto& line : fx->closure_diff) names_c = names_c || line.find("nixos-system-test-c") != std::string::npos;
  BOOST_TEST(names_c, "closure diff: " << fx->closure_diff.size() << " lines");
  BOOST_TEST(fx->notes.empty(), (fx->notes.empty() ? "" : fx->notes.front()));
  BOOST_TEST(protocol::from_json<protocol::report>(protocol::to_json(box.items().back())).has_value());
  std::ifstream log(dir / "switch.log");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  BOOST_TEST(text == "switch " + a + "\nswitch " + b + "\nswitch " + c + "\nswitch " + b + "\n");

  // The durable state a restarted agent would see agrees.
  auto st = store.load_state();
  BOOST_TEST(*st.value.last_good == b);
  BOOST_TEST(st.value.quarantine.size() == 1u);
}

BOOST_AUTO_TEST_CASE(missing_path_fails_the_fetch_and_touches_nothing) {
  core::deployer machine({});
  io::nix_settings ns;
  ns.min_free_mb = 1;
  ns.fetch_timeout = 30s;
  ns.caches = {"file://" + (dir / "empty-cache").string()};
  io::nix_cli nix(ns);
  io::switch_activator activation({.current_system = dir / "current-system"});
  auto setup = std::make_shared<health::health_setup>();
  io::health_prober probes(setup);
  io::steady_clock time;
  io::state_store store(dir / "agent2");
  BOOST_REQUIRE(!store.prepare());
  core::outbox box;
  io::deploy_driver driver(machine, {nix, activation, probes, time}, store, box, "web-01", profile, "test");
  const core::trust_policy no_keys{.allow_unsigned = true};
  auto d = desired("/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-not-anywhere");
  // A release's cache that would switch signature checks off is never used.
  d.cache_urls = {"file://" + (dir / "empty-cache").string() + "?trusted=1"};
  test::run_sync([&]() -> boost::asio::awaitable<int> {
    co_await driver.start();
    co_await driver.deliver(d, no_keys);
    co_return 0;
  }());
  BOOST_TEST(running() == a);
  BOOST_TEST(profile_target() == a);
  BOOST_TEST((box.items().back().kind == protocol::report_kind::fetch_failed));
  const auto& why = *box.items().back().message;
  BOOST_TEST(why.find("nix copy --from file://" + (dir / "empty-cache").string() + " exited") != std::string::npos, why);
  BOOST_TEST(why.find("ignored a release cache") != std::string::npos, why);
  BOOST_TEST(why.find("trusted=1") == std::string::npos, why);
}

BOOST_AUTO_TEST_SUITE_END()
