// The `nixfleet` binary against a real coordinator on loopback: every subcommand in human and
// --json form, settings precedence, bad usage, a real flake built and pushed to a file:// cache,
// and a rollback over a real sshd.
#include "../coordinator/test_client.hpp"

#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <set>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <csignal>
#include <fstream>
#include <sstream>

extern char** environ;

using namespace nixfleet;
using namespace nixfleet::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

struct outcome {
  int code = -1;
  std::string out, err;
  json::value json() const { return json::parse(out); }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a program with extra environment entries, capturing stdout and stderr in files.
outcome run_program(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                    const fs::path& scratch) {
  std::vector<std::string> envs;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    auto name = kv.substr(0, kv.find('='));
    if (env.contains(name) || name.starts_with("NIXFLEET_")) continue;
    envs.push_back(kv);
  }
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> argv, envp;
  std::vector<std::string> a = args;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : envs) envp.push_back(s.data());
  envp.push_back(nullptr);
  const auto out = scratch / "stdout", err = scratch / "stderr";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  outcome o;
  if (posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) return o;
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  ::waitpid(pid, &status, 0);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  o.out = slurp(out);
  o.err = slurp(err);
  return o;
}

std::size_t lines(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }

struct cli_fixture {
  fs::path dir = temp_dir("cli");
  std::string db = (dir / "db.sqlite").string();
  std::string admin = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
  std::string reader = coordinator::io::create_key(db, "carol", protocol::role::readonly, "test");
  fs::path admin_file = dir / "admin.key", reader_file = dir / "reader.key", sign_key = dir / "op.sec";
  protocol::secret_key op_key = protocol::generate_secret_key("op1");
  protocol::secret_key audit_key = protocol::generate_secret_key("coordinator-audit-1");
  std::optional<running_coordinator> c;
  std::string url;

  cli_fixture() {
    std::ofstream(admin_file) << admin << "\n";
    std::ofstream(reader_file) << reader << "\n";
    fs::permissions(admin_file, fs::perms::owner_read | fs::perms::owner_write);
    fs::permissions(reader_file, fs::perms::owner_read | fs::perms::owner_write);
    coordinator::io::service_options o;
    o.db_path = db;
    o.insecure_http = true;
    o.reconcile_interval = 100ms;
    o.audit_key = audit_key;
    c.emplace(std::move(o));
    url = "http://127.0.0.1:" + std::to_string(c->endpoint().port());
    std::ofstream(dir / "no-config.json") << "{}";
    write_sign_key();
  }
  ~cli_fixture() {
    c.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  void write_sign_key() {
    // The secret key in Nix's format: name:base64(seed ‖ public key).
    std::vector<std::uint8_t> bytes(op_key.seed().begin(), op_key.seed().end());
    bytes.insert(bytes.end(), op_key.public_bytes().begin(), op_key.public_bytes().end());
    std::ofstream(sign_key) << op_key.name() << ":" << protocol::detail::base64_encode(bytes);
    fs::permissions(sign_key, fs::perms::owner_read | fs::perms::owner_write);
  }

  outcome nixfleet(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), NIXFLEET_CLI_BIN);
    if (!env.contains("NIXFLEET_COORDINATOR")) env["NIXFLEET_COORDINATOR"] = url;
    if (!env.contains("NIXFLEET_API_KEY_FILE")) env["NIXFLEET_API_KEY_FILE"] = admin_file.string();
    if (!env.contains("NIXFLEET_CONFIG")) env["NIXFLEET_CONFIG"] = (dir / "no-config.json").string();
    return run_program(args, env, dir);
  }

  reply agent_report(const std::string& host, std::uint64_t seq, const std::string& kind, const std::string& path) {
    json::object r{{"seq", seq},          {"at", "2026-11-25T10:00:00.000Z"}, {"kind", kind},
                   {"store_path", path},  {"current_path", path},           {"agent_version", "t"},
                   {"uptime_s", 1}};
    return send(c->endpoint(), {http::verb::post, "/api/v1/machines/" + host + "/reports",
                                json::serialize(json::object{{"reports", json::array{r}}}), {}});
  }
};

bool one_clear_line(const outcome& o) { return lines(o.err) == 1 && o.err.starts_with("nixfleet: "); }

}  // namespace

BOOST_FIXTURE_TEST_SUITE(cli, cli_fixture)

BOOST_AUTO_TEST_CASE(default_release_ids_made_in_the_same_second_do_not_collide) {
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto made = nixfleet({"--json", "release", "create", "--sign-key", sign_key.string(), "--entry", "web-1=" + P1});
    BOOST_TEST_REQUIRE(made.code == 0, made.err);
    auto rel = protocol::parse<protocol::release>(made.out);
    BOOST_TEST_REQUIRE(rel.has_value());
    BOOST_TEST(rel->id.starts_with("r-20"), rel->id);
    ids.insert(rel->id);
  }
  BOOST_TEST(ids.size() == 3u);
}

BOOST_AUTO_TEST_CASE(releases_are_created_signed_listed_shown_diffed_and_deleted) {
  auto made = nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r1", "--entry",
                        "web-1=" + P1, "--entry", "web-2=" + P1, "--tag", "web"});
  BOOST_TEST_REQUIRE(made.code == 0, made.err);
  BOOST_TEST(made.out == "release r1 (#1) registered: 2 hosts, signed by op1\n");
  auto second = nixfleet({"--json", "release", "create", "--sign-key", sign_key.string(), "--id", "r2", "--entry",
                          "web-1=" + P2, "--entry", "web-3=" + P1});
  BOOST_TEST_REQUIRE(second.code == 0, second.err);
  auto rel = protocol::parse<protocol::release>(second.out);
  BOOST_TEST_REQUIRE(rel.has_value());
  protocol::trusted_keys trust;
  trust.add(protocol::to_public_key(op_key));
  BOOST_TEST(rel->sequence == 2u, "numbered one above the newest release");
  for (const auto& e : rel->entries)
    BOOST_TEST(!protocol::verify_entry(trust,
                                       {rel->id, e.hostname, e.store_path, rel->created_at, rel->activation,
                                        rel->cache_urls, rel->sequence},
                                       *e.signature),
               "the entry for " << e.hostname << " verifies");

  auto list = nixfleet({"release", "list"});
  BOOST_TEST(list.code == 0);
  BOOST_TEST(list.out.starts_with("ID "));
  BOOST_TEST(lines(list.out) == 3u);
  BOOST_TEST(nixfleet({"--json", "release", "list"}).json().as_array().size() == 2u);
  auto show = nixfleet({"release", "show", "r1"});
  BOOST_TEST(show.out.find("web-2  " + P1 + "  signed") != std::string::npos, show.out);
  BOOST_TEST(nixfleet({"--json", "release", "show", "r1"}).json().at("entries").as_array().size() == 2u);

  auto diff = nixfleet({"release", "diff", "r1", "r2"});
  BOOST_TEST(diff.code == 0);
  BOOST_TEST(diff.out.find("+ web-3") != std::string::npos);
  BOOST_TEST(diff.out.find("- web-2") != std::string::npos);
  BOOST_TEST(diff.out.find("~ web-1") != std::string::npos);
  auto jdiff = nixfleet({"--json", "release", "diff", "r1", "r2", "--closure"}).json();
  BOOST_TEST(jdiff.at("closures").at(0).at("diff").is_null(), "paths not in the local store are not diffed");

  BOOST_TEST(nixfleet({"release", "delete", "r2"}).out == "release r2 deleted\n");
  auto gone = nixfleet({"release", "show", "r2"});
  BOOST_TEST(gone.code == 1);
  BOOST_TEST(one_clear_line(gone), gone.err);
}

BOOST_AUTO_TEST_CASE(deploy_waits_for_completion_and_rollouts_are_steered) {
  BOOST_TEST_REQUIRE(nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r1", "--entry",
                               "web-1=" + P1, "--entry", "web-2=" + P1, "--tag", "web"})
                         .code == 0);
  // Agents stand-ins confirm whatever they are told once it is dispatched.
  std::atomic<bool> agents{true};
  std::thread confirmer([&] {
    std::uint64_t seq = 0;
    while (agents) {
      for (const char* h : {"web-1", "web-2"}) {
        auto d = send(c->endpoint(), {http::verb::get, std::string("/api/v1/machines/") + h + "/desired", {}, {}});
        if (d.status == 200u) agent_report(h, ++seq, "confirmed", P1);
      }
      std::this_thread::sleep_for(50ms);
    }
  });
  auto dep = nixfleet({"deploy", "--release", "r1", "--tags", "web", "--waves", "canary", "--soak", "0", "--wait"});
  agents = false;
  confirmer.join();
  BOOST_TEST(dep.code == 0, dep.err);
  BOOST_TEST(dep.out.find("host_confirmed") != std::string::npos, dep.out);
  BOOST_TEST(dep.out.find("completed") != std::string::npos);

  auto list = nixfleet({"rollout", "list", "--status", "completed"});
  BOOST_TEST(lines(list.out) == 2u, list.out);
  auto rollouts = nixfleet({"--json", "rollout", "list"}).json().as_array();
  BOOST_TEST_REQUIRE(rollouts.size() == 1u);
  const std::string id(rollouts[0].at("id").as_string());
  auto st = nixfleet({"rollout", "status", id});
  BOOST_TEST(st.out.find("completed") != std::string::npos);
  BOOST_TEST(st.out.find("web-1") != std::string::npos);
  BOOST_TEST(nixfleet({"--json", "rollout", "status", id}).json().at("status").as_string() == "completed");
  auto watch = nixfleet({"rollout", "watch", id});
  BOOST_TEST(watch.code == 0);

  // A second rollout nobody confirms: pause, resume with retry, cancel; watch says it did not complete.
  auto second = nixfleet({"--json", "deploy", "--release", "r1", "--hosts", "web-*", "--health-timeout", "3600"});
  BOOST_TEST_REQUIRE(second.code == 0, second.err);
  const std::string id2(second.json().at("id").as_string());
  BOOST_TEST(nixfleet({"rollout", "pause", id2}).out == "rollout " + id2 + " paused\n");
  BOOST_TEST(nixfleet({"--json", "rollout", "resume", id2, "--retry-failed"}).json().at("status").as_string() == "running");
  BOOST_TEST(nixfleet({"rollout", "cancel", id2}).out == "rollout " + id2 + " cancelled\n");
  auto w2 = nixfleet({"rollout", "watch", id2});
  BOOST_TEST(w2.code == 3);
  auto again = nixfleet({"rollout", "cancel", id2});
  BOOST_TEST(again.code == 1);
  BOOST_TEST(one_clear_line(again), again.err);
}

BOOST_AUTO_TEST_CASE(a_failed_wave_makes_deploy_wait_exit_3) {
  BOOST_TEST_REQUIRE(nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r1", "--entry",
                               "web-1=" + P1})
                         .code == 0);
  std::atomic<bool> agents{true};
  std::thread failer([&] {
    std::uint64_t seq = 0;
    while (agents) {
      auto d = send(c->endpoint(), {http::verb::get, "/api/v1/machines/web-1/desired", {}, {}});
      if (d.status == 200u) agent_report("web-1", ++seq, "rolled_back", P1);
      std::this_thread::sleep_for(50ms);
    }
  });
  auto dep = nixfleet({"deploy", "--release", "r1", "--hosts", "web-1", "--wait"});
  agents = false;
  failer.join();
  BOOST_TEST(dep.code == 3, dep.out << dep.err);
  BOOST_TEST(dep.out.find("rollout_paused") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(status_and_machines_commands) {
  BOOST_TEST(agent_report("web-1", 1, "confirmed", P1).status == 200u);
  BOOST_TEST(agent_report("web-2", 1, "confirmed", P2).status == 200u);
  auto st = nixfleet({"status"});
  BOOST_TEST(st.code == 0);
  BOOST_TEST(st.out.starts_with("HOST "));
  BOOST_TEST(st.out.find("web-1  active") != std::string::npos, st.out);
  BOOST_TEST(nixfleet({"--json", "status"}).json().as_array().size() == 2u);

  BOOST_TEST(nixfleet({"machines", "tag", "web-1", "web", "eu"}).code == 0);
  BOOST_TEST(nixfleet({"--json", "machines", "list", "--tag", "eu"}).json().as_array().size() == 1u);
  auto life = nixfleet({"machines", "lifecycle", "web-2", "maintenance"});
  BOOST_TEST(life.out.find("maintenance") != std::string::npos);
  BOOST_TEST(lines(nixfleet({"status", "--state", "maintenance"}).out) == 2u);
  auto show = nixfleet({"machines", "show", "web-1"});
  BOOST_TEST(show.out.find("current   " + P1) != std::string::npos, show.out);
  BOOST_TEST(show.out.find("confirmed generations:") != std::string::npos);
  BOOST_TEST(nixfleet({"--json", "machines", "show", "web-1"}).json().at("tags").as_array().size() == 2u);
  BOOST_TEST(nixfleet({"machines", "clear-desired", "web-1"}).out == "machine web-1: desired state cleared\n");
  BOOST_TEST(nixfleet({"machines", "lifecycle", "web-2", "gone"}).code == 2);
}

BOOST_AUTO_TEST_CASE(rollback_through_the_coordinator) {
  BOOST_TEST_REQUIRE(nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r1", "--entry", "web-1=" + P1}).code == 0);
  BOOST_TEST_REQUIRE(nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r2", "--entry", "web-1=" + P2}).code == 0);
  BOOST_TEST(agent_report("web-1", 1, "confirmed", P1).status == 200u);
  BOOST_TEST(agent_report("web-1", 2, "confirmed", P2).status == 200u);
  auto rb = nixfleet({"rollback", "--host", "web-1"});
  BOOST_TEST(rb.code == 0, rb.err);
  BOOST_TEST(rb.out == "web-1: desired state is now " + P1 + "\n");
  auto to = nixfleet({"--json", "rollback", "--host", "web-1", "--to", P2});
  BOOST_TEST(to.json().at("desired_path").as_string() == P2);
  auto bad = nixfleet({"rollback", "--host", "web-1", "--to", "/etc/passwd"});
  BOOST_TEST(bad.code == 2);
  BOOST_TEST(one_clear_line(bad));
}

BOOST_AUTO_TEST_CASE(rollback_over_ssh_switches_the_host_and_tells_the_coordinator) {
  if (std::system("command -v sshd >/dev/null && command -v nix-store >/dev/null") != 0) {
    BOOST_TEST_MESSAGE("skipped: sshd or nix not installed");
    return;
  }
  // Two "systems" whose switch-to-configuration records which one ran.
  const auto marker = dir / "switched";
  std::vector<std::string> paths;
  for (const char* name : {"sys-old", "sys-new"}) {
    fs::create_directories(dir / name / "bin");
    std::ofstream(dir / name / "bin" / "switch-to-configuration")
        << "#!/bin/sh\necho " << name << " \"$1\" > " << marker.string() << "\n";
    fs::permissions(dir / name / "bin" / "switch-to-configuration", fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    auto added = run_program({"nix-store", "--add", (dir / name).string()}, {}, dir);
    BOOST_TEST_REQUIRE(added.code == 0, added.err);
    paths.push_back(added.out.substr(0, added.out.find('\n')));
  }
  const auto profile = dir / "profile" / "system";
  fs::create_directories(profile.parent_path());
  for (const auto& p : paths) BOOST_TEST_REQUIRE(run_program({"nix-env", "-p", profile.string(), "--set", p}, {}, dir).code == 0);
  BOOST_TEST_REQUIRE(nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r1", "--entry", "web-1=" + paths[0]}).code == 0);
  BOOST_TEST_REQUIRE(agent_report("web-1", 1, "confirmed", paths[1]).status == 200u);

  // An sshd on loopback that lets this key in as root.
  const auto sshd_dir = dir / "sshd";
  fs::create_directories(sshd_dir);
  BOOST_TEST_REQUIRE(run_program({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", (sshd_dir / "host").string()}, {}, dir).code == 0);
  BOOST_TEST_REQUIRE(run_program({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", (sshd_dir / "client").string()}, {}, dir).code == 0);
  fs::copy_file(sshd_dir / "client.pub", sshd_dir / "authorized_keys");
  asio::io_context io;
  asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = std::to_string(probe.local_endpoint().port());
  probe.close();
  std::ofstream(sshd_dir / "sshd_config") << "ListenAddress 127.0.0.1\nPort " << port << "\nHostKey "
                                           << (sshd_dir / "host").string() << "\nAuthorizedKeysFile "
                                           << (sshd_dir / "authorized_keys").string()
                                           << "\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                                              "UsePAM no\nStrictModes no\nPidFile "
                                           << (sshd_dir / "pid").string() << "\n";
  fs::create_directories("/run/sshd");
  std::vector<std::string> sargs = {"/usr/sbin/sshd", "-D", "-e", "-f", (sshd_dir / "sshd_config").string()};
  std::vector<char*> sargv;
  for (auto& s : sargs) sargv.push_back(s.data());
  sargv.push_back(nullptr);
  pid_t sshd = 0;
  BOOST_TEST_REQUIRE(posix_spawn(&sshd, sargv[0], nullptr, nullptr, sargv.data(), environ) == 0);
  for (int i = 0; i < 100; ++i) {
    asio::ip::tcp::socket s(io);
    boost::system::error_code ec;
    s.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(std::stoi(port))}, ec);
    if (!ec) break;
    std::this_thread::sleep_for(50ms);
  }

  auto rb = nixfleet({"rollback", "--host", "web-1", "--ssh", "--target", "root@127.0.0.1", "--profile", profile.string(),
                      "--ssh-option", "Port=" + port, "--ssh-option", "IdentityFile=" + (sshd_dir / "client").string(),
                      "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
                      "--ssh-option", "LogLevel=ERROR"});
  ::kill(sshd, SIGTERM);
  ::waitpid(sshd, nullptr, 0);
  BOOST_TEST(rb.code == 0, rb.err);
  BOOST_TEST(slurp(marker) == "sys-old switch\n", "the previous generation's switch ran");
  BOOST_TEST(fs::canonical(profile).string() == paths[0]);
  BOOST_TEST(rb.out.find("switched to " + paths[0] + " over ssh") != std::string::npos, rb.out);
  auto m = send(c->endpoint(), {http::verb::get, "/api/v1/machines/web-1", {}, {{"Authorization", "Bearer " + admin}}});
  BOOST_TEST(m.json().at("desired_path").as_string() == paths[0], "the coordinator was told");

  auto refused = nixfleet({"rollback", "--host", "web-1", "--ssh", "--target", "root@127.0.0.1", "--ssh-option",
                           "Port=" + port, "--ssh-option", "ConnectTimeout=2"});
  BOOST_TEST(refused.code == 1);
  BOOST_TEST(one_clear_line(refused), refused.err);
}

BOOST_AUTO_TEST_CASE(audit_and_keys_commands) {
  BOOST_TEST_REQUIRE(nixfleet({"release", "create", "--sign-key", sign_key.string(), "--id", "r1", "--entry", "web-1=" + P1}).code == 0);
  auto a = nixfleet({"audit", "--action", "release.created"});
  BOOST_TEST(a.code == 0);
  BOOST_TEST(lines(a.out) == 2u, a.out);
  BOOST_TEST(nixfleet({"--json", "audit", "--limit", "2"}).json().as_array().size() == 2u);
  auto csv = nixfleet({"audit", "--export", "csv"});
  BOOST_TEST(csv.out.starts_with("seq,at,actor"));
  // Three rows, and the checkpoint the coordinator signed at start (of the two keys' rows).
  auto jsonl = nixfleet({"audit", "--export", "jsonl"});
  BOOST_TEST(lines(jsonl.out) == 4u, jsonl.out);
  BOOST_TEST(jsonl.out.find("{\"checkpoint\":{\"seq\":2,") != std::string::npos, jsonl.out);
  BOOST_TEST(nixfleet({"audit", "--verify"}).out == "audit log intact: 3 rows, 1 checkpoints verified, anchored through row 2\n");
  BOOST_TEST(nixfleet({"--json", "audit", "--verify"}).json().at("ok").as_bool());
  // Verified here, with the key the operator holds: live, and an export offline.
  const auto pub = protocol::to_public_key(audit_key).to_string();
  BOOST_TEST(nixfleet({"audit", "--verify", "--public-key", pub}).out ==
             "audit log intact: 3 rows, 1 checkpoints verified, anchored through row 2\n");
  std::ofstream(dir / "export.jsonl") << jsonl.out;
  BOOST_TEST(nixfleet({"audit", "--verify", "--public-key", pub, "--file", (dir / "export.jsonl").string()}).code == 0);
  const auto stranger = protocol::to_public_key(protocol::generate_secret_key("coordinator-audit-1")).to_string();
  auto foreign = nixfleet({"audit", "--verify", "--public-key", stranger, "--file", (dir / "export.jsonl").string()});
  BOOST_TEST(foreign.code == 1);
  BOOST_TEST(foreign.out.find("does not verify") != std::string::npos, foreign.out);
  // An export with its second row left out.
  auto rows = jsonl.out;
  const auto cut = rows.find('\n');
  std::ofstream(dir / "cut.jsonl") << rows.substr(0, cut + 1) << rows.substr(rows.find('\n', cut + 1) + 1);
  auto missing = nixfleet({"audit", "--verify", "--public-key", pub, "--file", (dir / "cut.jsonl").string()});
  BOOST_TEST(missing.code == 1);
  BOOST_TEST(missing.out.find("BROKEN at row") != std::string::npos, missing.out);

  auto made = nixfleet({"keys", "create", "--name", "ci", "--role", "deploy"});
  BOOST_TEST_REQUIRE(made.code == 0);
  BOOST_TEST(made.out.starts_with("nfk_"));
  // An admin action is anchored at once: the checkpoint covers its row (4: key.created).
  BOOST_TEST(nixfleet({"audit", "--verify", "--public-key", pub}).out ==
             "audit log intact: 4 rows, 2 checkpoints verified, anchored through row 4\n");
  auto keys = nixfleet({"--json", "keys", "list"}).json().as_array();
  BOOST_TEST(keys.size() == 3u);
  std::string ci_id;
  for (const auto& k : keys)
    if (k.at("name").as_string() == "ci") ci_id = k.at("id").as_string();
  BOOST_TEST(lines(nixfleet({"keys", "list"}).out) == 4u);
  BOOST_TEST(nixfleet({"keys", "revoke", ci_id}).out == "key " + ci_id + " revoked\n");
  auto ci = made.out.substr(0, made.out.find('\n'));
  auto refused = nixfleet({"--api-key", ci, "release", "list"});
  BOOST_TEST(refused.code == 1);
  BOOST_TEST(refused.err.find("refused the API key") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_usage_gives_one_line_and_the_documented_exit_code) {
  struct row {
    std::string name;
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    int code;
    std::string says;
  };
  const std::vector<row> rows = {
      {"unknown flag", {"status", "--colour"}, {}, 2, "--colour"},
      {"unknown command", {"frobnicate"}, {}, 2, "unknown command: frobnicate"},
      {"missing argument", {"release", "show"}, {}, 2, "ID"},
      {"missing required option", {"deploy", "--tags", "web"}, {}, 2, "--release"},
      {"unreachable coordinator", {"status"}, {{"NIXFLEET_COORDINATOR", "http://127.0.0.1:1"}}, 1, "cannot reach the coordinator"},
      {"not a URL", {"status"}, {{"NIXFLEET_COORDINATOR", "ftp://x"}}, 2, "expected an http"},
      // 0.0.0.0 is not loopback by address (though Linux connects it locally): the key would be
      // sent in the clear, so the CLI refuses before sending anything…
      {"plain http off loopback", {"status"}, {{"NIXFLEET_COORDINATOR", "http://0.0.0.0:1"}}, 2, "not loopback"},
      {"plain http by name", {"status"}, {{"NIXFLEET_COORDINATOR", "http://fleet.example.org"}}, 2, "--insecure-http"},
      // …unless asked to; IPv6 loopback and localhost are loopback.
      {"plain http when asked", {"--insecure-http", "status"}, {{"NIXFLEET_COORDINATOR", "http://0.0.0.0:1"}}, 1, "cannot reach"},
      {"plain http to ::1", {"status"}, {{"NIXFLEET_COORDINATOR", "http://[::1]:1"}}, 1, "cannot reach"},
      {"plain http to localhost", {"status"}, {{"NIXFLEET_COORDINATOR", "http://localhost:1"}}, 1, "cannot reach"},
      {"bad key", {"status"}, {{"NIXFLEET_API_KEY", "nfk_" + std::string(64, '0')}}, 1, "refused the API key"},
      {"role too low", {"keys", "list"}, {{"NIXFLEET_API_KEY_FILE", reader_file.string()}}, 1, "not allowed"},
      {"invalid id", {"release", "show", "../etc"}, {}, 2, "not a valid identifier"},
      {"bad wave", {"deploy", "--release", "r1", "--tags", "web", "--waves", "1,ten"}, {}, 2, "--waves"},
  };
  for (const auto& r : rows) {
    BOOST_TEST_CONTEXT(r.name) {
      auto o = nixfleet(r.args, r.env);
      BOOST_TEST(o.code == r.code);
      BOOST_TEST(one_clear_line(o), o.err);
      BOOST_TEST(o.err.find(r.says) != std::string::npos, o.err);
      BOOST_TEST(o.err.find("terminate") == std::string::npos);
    }
  }
  // A world-readable key file is refused before anything is sent.
  fs::permissions(reader_file, fs::perms::others_read, fs::perm_options::add);
  auto open_key = nixfleet({"status"}, {{"NIXFLEET_API_KEY_FILE", reader_file.string()}});
  BOOST_TEST(open_key.code == 2);
  BOOST_TEST(open_key.err.find("chmod 600") != std::string::npos);
  BOOST_TEST(nixfleet({"--help"}).code == 0);
  BOOST_TEST(nixfleet({"rollout", "resume", "--help"}).out.find("--retry-failed") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(settings_come_from_flags_then_environment_then_the_config_file) {
  const auto cfg = dir / "config.json";
  std::ofstream(cfg) << R"({"coordinator": ")" << url << R"(", "api_key_file": ")" << admin_file.string() << "\"}";
  // Only the config file: it is used.
  auto from_file = run_program({NIXFLEET_CLI_BIN, "status"}, {{"NIXFLEET_CONFIG", cfg.string()}}, dir);
  BOOST_TEST(from_file.code == 0, from_file.err);
  // The environment beats the file.
  auto env_wins = run_program({NIXFLEET_CLI_BIN, "status"},
                              {{"NIXFLEET_CONFIG", cfg.string()}, {"NIXFLEET_COORDINATOR", "http://127.0.0.1:1"}}, dir);
  BOOST_TEST(env_wins.code == 1);
  // A flag beats both.
  auto flag_wins = run_program({NIXFLEET_CLI_BIN, "--coordinator", url, "status"},
                               {{"NIXFLEET_CONFIG", cfg.string()}, {"NIXFLEET_COORDINATOR", "http://127.0.0.1:1"}}, dir);
  BOOST_TEST(flag_wins.code == 0, flag_wins.err);
}

BOOST_AUTO_TEST_CASE(completion_scripts_cover_the_command_tree) {
  auto bash = nixfleet({"completions", "bash"});
  BOOST_TEST(bash.code == 0);
  BOOST_TEST(bash.out.find("complete -F _nixfleet nixfleet") != std::string::npos);
  BOOST_TEST(bash.out.find("\" rollout resume\") words=\"") != std::string::npos);
  BOOST_TEST(bash.out.find("--retry-failed") != std::string::npos);
  std::ofstream(dir / "c.bash") << bash.out;
  BOOST_TEST(run_program({"bash", "-n", (dir / "c.bash").string()}, {}, dir).code == 0, "bash parses it");
  // Completing `nixfleet rollout re` offers resume.
  std::ofstream(dir / "try.bash") << bash.out
                                  << "COMP_WORDS=(nixfleet rollout re); COMP_CWORD=2; _nixfleet; echo \"${COMPREPLY[@]}\"\n";
  BOOST_TEST(run_program({"bash", (dir / "try.bash").string()}, {}, dir).out == "resume\n");
  BOOST_TEST(nixfleet({"completions", "zsh"}).out.starts_with("#compdef nixfleet"));
  auto fish = nixfleet({"completions", "fish"});
  BOOST_TEST(fish.out.find("complete -c nixfleet -f -n '__fish_seen_subcommand_from rollout' -a resume") != std::string::npos);
  BOOST_TEST(nixfleet({"completions", "tcsh"}).code == 2);
}

BOOST_AUTO_TEST_SUITE_END()
