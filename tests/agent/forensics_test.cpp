// Forensics of a failed target: reading switch output, unit listings and closure differences
// (pure), and the host investigator against stand-in systemctl, journalctl and nix programs that
// record their argv — a hung journalctl, units that must not reach argv, excluded units.
#include "nixfleet/agent/core/forensics.hpp"
#include "nixfleet/agent/io/forensics.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/validate.hpp"
#include "run_sync.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

using namespace nixfleet;
using namespace nixfleet::agent;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string bad_path = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";
const std::string good_path = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";

struct standins {
  standins() {
    dir = fs::temp_directory_path() / ("nixfleet-forensics-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::create_directories(dir);
  }
  ~standins() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // A program that records its arguments, one per line, and then runs `body`.
  std::string program(const std::string& name, const std::string& body) {
    const auto p = dir / name;
    std::ofstream(p) << "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " << (dir / (name + ".args")).string() << "\n"
                     << body << "\n";
    fs::permissions(p, fs::perms::owner_all);
    return p.string();
  }
  std::string args(const std::string& name) const {
    std::ifstream in(dir / (name + ".args"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  io::forensics_settings settings() {
    io::forensics_settings s;
    s.systemctl = program("systemctl", "printf 'api.service loaded failed failed API\\nbad;name loaded failed failed x\\n'");
    s.journalctl = program("journalctl", "echo '2026-12-08T10:00:00+0000 web-01 api[1]: \\033[31mcannot reach the database\\033[0m'");
    s.nix = program("nix", "printf 'api: 1.4.0 \\342\\206\\222 1.5.0, +2.3 KiB\\nopenssl: 3.0.13 \\342\\206\\222 3.0.14\\n'");
    s.timeout = 2s;
    return s;
  }
  fs::path dir;
  static inline int n = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(forensics_reading)

BOOST_AUTO_TEST_CASE(the_units_a_switch_touched_are_read_from_its_output) {
  const std::string out =
      "stopping the following units: api.service, worker@2.service\n"
      "activating the configuration...\n"
      "NOT restarting the following changed units: dbus.service\n"
      "restarting the following units: api.service\n"
      "starting the following units: --now.service, ../etc.service, cache.socket, nothing, a b.service\n"
      "the following new units were started: backup.timer\n"
      "warning: the following units failed: api.service\n";
  const auto units = core::units_in_switch_output(out);
  BOOST_TEST((units == std::vector<std::string>{"api.service", "worker@2.service", "dbus.service", "cache.socket",
                                                "backup.timer"}));
}

BOOST_AUTO_TEST_CASE(unit_names_and_patterns) {
  for (auto ok : {"api.service", "worker@2.service", "sys-devices-x.device", "a\\x2db.mount", "x:y.socket"})
    BOOST_TEST(core::is_unit_name(ok), ok);
  for (auto bad : {"", "-x.service", ".service", "api", "a b.service", "a;b.service", "a/b.service", "api.service\n"})
    BOOST_TEST(!core::is_unit_name(bad), bad);
  BOOST_TEST(protocol::glob_match("vault*.service", "vault-agent.service"));
  BOOST_TEST(protocol::glob_match("*", "anything.service"));
  BOOST_TEST(protocol::glob_match("a?c.service", "abc.service"));
  BOOST_TEST(!protocol::glob_match("vault*.service", "api.service"));
  BOOST_TEST(!protocol::glob_match("vault", "vault.service"));
  BOOST_TEST(protocol::glob_match("*secret*", "my-secret-thing.service"));
}

BOOST_AUTO_TEST_CASE(failed_units_and_closure_differences_are_bounded) {
  BOOST_TEST((core::failed_units_in("\u25cf api.service loaded failed failed API\n"
                                    "db.service   loaded failed failed DB\n\nx;y loaded failed\n") ==
              std::vector<std::string>{"api.service", "db.service"}));
  std::string listing;
  for (int i = 0; i < 500; ++i) listing += "u" + std::to_string(i) + ".service loaded failed failed\n";
  BOOST_TEST(core::failed_units_in(listing).size() == protocol::limits::max_failed_units);

  std::string diff;
  for (int i = 0; i < 300; ++i) diff += "pkg" + std::to_string(i) + ": 1.0 → 1.1, +" + std::string(400, '9') + " KiB\n";
  auto lines = core::closure_diff_lines(diff, 64);
  BOOST_TEST(lines.total == 300u);
  BOOST_TEST(lines.lines.size() == 64u);
  for (const auto& l : lines.lines) BOOST_TEST(l.size() <= protocol::limits::max_short_text_bytes);
}

BOOST_AUTO_TEST_CASE(probe_evidence_puts_failures_first_with_their_output) {
  protocol::health_report h{false, {}};
  for (int i = 0; i < 20; ++i)
    h.results.push_back({"p" + std::to_string(i), "exec", i == 7 ? protocol::probe_status::fail : protocol::probe_status::pass,
                         1, std::string(5000, 'm')});
  auto ev = core::evidence_of(h, [](const std::string& name) { return name == "p7" ? std::string(100000, 'o') : ""; });
  BOOST_TEST(ev.size() == protocol::limits::max_evidence_probes);
  BOOST_TEST(ev.front().probe == "p7");
  BOOST_TEST(ev.front().output->size() <= protocol::limits::max_evidence_output_bytes);
  BOOST_TEST(ev.front().message->size() <= protocol::limits::max_evidence_message_bytes);
  BOOST_TEST(!ev[1].output.has_value());
  protocol::forensics_bundle b;
  b.probes = ev;
  BOOST_TEST(protocol::from_json<protocol::forensics_bundle>(protocol::to_json(b)).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(host_investigator_tests, standins)

BOOST_AUTO_TEST_CASE(collects_failed_units_their_journal_and_the_closure_difference) {
  auto s = settings();
  s.journal_exclude = {"vault*.service"};
  io::host_investigator inv(s);
  io::forensics_request q{bad_path, good_path, protocol::timestamp(std::chrono::milliseconds(1'765'188'000'123)),
                          "stopping the following units: vault-agent.service, --evil.service\n"
                          "starting the following units: vault-agent.service, worker.service\n",
                          std::nullopt};
  auto b = test::run_sync(inv.investigate(q));
  BOOST_TEST((b.failed_units == std::vector<std::string>{"api.service"}));  // "bad;name" never passes
  BOOST_TEST(b.journal.value_or("") == "2026-12-08T10:00:00+0000 web-01 api[1]: cannot reach the database\n");
  BOOST_TEST(b.closure_changes == 2u);
  BOOST_TEST((b.closure_diff == std::vector<std::string>{"api: 1.4.0 → 1.5.0, +2.3 KiB", "openssl: 3.0.13 → 3.0.14"}));
  BOOST_TEST(b.notes.empty());
  // journalctl: the failed unit and the switch's valid, not excluded units, since the activation.
  BOOST_TEST(args("journalctl") ==
             "--no-pager\n--quiet\n-o\nshort-iso\n-n\n200\n--since=@1765188000\n--unit=api.service\n--unit=worker.service\n");
  BOOST_TEST(args("nix") == "store\ndiff-closures\n" + good_path + "\n" + bad_path + "\n");
  BOOST_TEST(protocol::from_json<protocol::forensics_bundle>(protocol::to_json(b)).has_value());
}

BOOST_AUTO_TEST_CASE(a_hung_journalctl_and_a_failing_nix_become_notes_within_the_timeout) {
  auto s = settings();
  s.journalctl = program("journalctl", "echo 'one line before hanging'; trap '' TERM; exec sleep 60");
  s.nix = program("nix", "echo 'error: path is not valid' >&2; exit 1");
  s.timeout = 500ms;
  io::host_investigator inv(s);
  const auto began = std::chrono::steady_clock::now();
  io::forensics_request q{bad_path, good_path, std::nullopt, "", std::nullopt};
  auto b = test::run_sync(inv.investigate(q));
  const auto took = std::chrono::steady_clock::now() - began;
  BOOST_TEST(took < 4s);  // 0.5 s, then SIGKILL 1 s later
  BOOST_TEST(b.journal.value_or("").find("one line before hanging") != std::string::npos);
  BOOST_REQUIRE(b.notes.size() == 2u);
  BOOST_TEST(b.notes[0].starts_with("nix store diff-closures exited with code 1: error: path is not valid"), b.notes[0]);
  BOOST_TEST(b.notes[1].starts_with("journalctl timed out"), b.notes[1]);
  BOOST_TEST(b.closure_diff.empty());
  BOOST_TEST(args("journalctl").find("--since") == std::string::npos);  // unknown after a restart: newest lines
}

BOOST_AUTO_TEST_CASE(listing_failed_units_before_a_rollback_waits_briefly_even_for_a_hung_systemctl) {
  auto s = settings();
  s.systemctl = program("systemctl", "trap '' TERM; exec sleep 60");
  s.timeout = 5s;
  s.before_rollback_timeout = 300ms;
  io::host_investigator inv(s);
  const auto began = std::chrono::steady_clock::now();
  auto snap = test::run_sync(inv.failed_units());
  BOOST_TEST((std::chrono::steady_clock::now() - began < 2s));  // 0.3 s, SIGKILL 0.5 s later
  BOOST_TEST(snap.units.empty());
  BOOST_TEST(snap.note.starts_with("systemctl timed out"), snap.note);
  // Given to the investigation, the snapshot is used as it is: systemctl is not asked again.
  fs::remove(dir / "systemctl.args");
  io::forensics_request q{bad_path, good_path, std::nullopt, "", io::failed_units_snapshot{{"api.service"}, ""}};
  auto b = test::run_sync(inv.investigate(q));
  BOOST_TEST((b.failed_units == std::vector<std::string>{"api.service"}));
  BOOST_TEST(!fs::exists(dir / "systemctl.args"));
}

BOOST_AUTO_TEST_CASE(switched_off_or_without_paths_nothing_runs) {
  auto s = settings();
  s.enable = false;
  io::host_investigator off(s);
  io::forensics_request q{bad_path, good_path, std::nullopt, "", std::nullopt};
  auto b = test::run_sync(off.investigate(q));
  BOOST_TEST(b.failed_units.empty());
  BOOST_TEST(!fs::exists(dir / "systemctl.args"));

  auto s2 = settings();
  s2.journal = false;
  io::host_investigator no_journal(s2);
  io::forensics_request odd{"/tmp/not-a-store-path", "--version", std::nullopt, "", std::nullopt};
  auto b2 = test::run_sync(no_journal.investigate(odd));
  BOOST_TEST(!b2.journal.has_value());
  BOOST_TEST(b2.closure_changes == 0u);
  BOOST_TEST(!fs::exists(dir / "nix.args"));  // nothing unchecked reaches argv
  BOOST_TEST(!fs::exists(dir / "journalctl.args"));
}

BOOST_AUTO_TEST_SUITE_END()
