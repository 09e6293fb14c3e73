// The nixfleet-coordinator binary killed with SIGKILL in the middle of a rollout under report
// load, then restarted on the same database: the rollout carries on from where it was, every
// report it acknowledged is stored, and the audit chain verifies.
#include "coordinator_process.hpp"

#include "nixfleet/coordinator/io/storage.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>

using namespace nixfleet;
using namespace nixfleet::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;
using http::verb;

namespace {

const std::string P_OLD = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-old";
const std::string P_NEW = "/nix/store/1d3b7r5mckylg04wcr7hhd7im5h1vp5w-nixos-system-new";

std::string report(std::uint64_t seq, const std::string& kind, const std::string& path, const std::string& current) {
  json::object r{{"seq", seq},         {"at", "2026-11-25T10:00:00.000Z"}, {"kind", kind},
                 {"store_path", path}, {"current_path", current},          {"agent_version", "test"},
                 {"uptime_s", seq}};
  return json::serialize(json::object{{"reports", json::array{r}}});
}

}  // namespace

BOOST_AUTO_TEST_SUITE(coordinator_binary)

// Started with a soft descriptor limit of 64 (systemd's and most shells' default is 1024), the
// coordinator raises it to the hard limit: 300 idle sockets neither exhaust it nor keep /healthz out.
BOOST_AUTO_TEST_CASE(a_low_soft_descriptor_limit_is_raised_and_one_the_cap_cannot_fit_is_refused) {
  const auto dir = temp_dir("coordinator-fds");
  const auto log = dir / "coordinator.log";
  const auto port = free_port();
  const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  const pid_t pid = spawn_coordinator((dir / "db.sqlite").string(), port, log,
                                      {"--max-connections", "1000", "--max-connections-per-ip", "0"}, fd_limit{64, 4096});
  BOOST_REQUIRE(wait_healthy(ep));
  asio::io_context ctx;
  std::vector<asio::ip::tcp::socket> idle;
  for (int i = 0; i < 300; ++i) {
    idle.emplace_back(ctx);
    idle.back().connect(ep);
  }
  BOOST_TEST(send(ep, {verb::get, "/healthz", {}, {}}).status == 200u, "answered with 300 idle sockets open");
  idle.clear();
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  std::ifstream in(log);
  const std::string text(std::istreambuf_iterator<char>(in), {});
  BOOST_TEST(text.find("accept_failed") == std::string::npos, text);

  // A cap the hard limit cannot hold is refused at start, naming both numbers.
  const pid_t check = spawn_logged({NIXFLEET_COORDINATOR_BIN, "check-config", "--insecure-http", "--max-connections", "1000"},
                                   dir / "err", fd_limit{256, 256});
  int rc = 0;
  ::waitpid(check, &rc, 0);
  BOOST_TEST((WIFEXITED(rc) && WEXITSTATUS(rc) == 64));
  std::ifstream err(dir / "err");
  const std::string why(std::istreambuf_iterator<char>(err), {});
  BOOST_TEST(why.find("--max-connections 1000 needs 1128 file descriptors and the limit is 256") != std::string::npos, why);

  // A thread count that is not one is refused the same way.
  for (const char* bad : {"0", "65", "two", "2x"}) {
    const pid_t t = spawn_logged({NIXFLEET_COORDINATOR_BIN, "check-config", "--insecure-http", "--threads", bad},
                                 dir / "err-threads", fd_limit{4096, 4096});
    ::waitpid(t, &rc, 0);
    BOOST_TEST((WIFEXITED(rc) && WEXITSTATUS(rc) == 64), bad);
    std::ifstream terr(dir / "err-threads");
    const std::string said(std::istreambuf_iterator<char>(terr), {});
    BOOST_TEST(said.find("--threads: expected a number from 1 to 64 or auto, got " + std::string(bad)) != std::string::npos,
               said);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

BOOST_AUTO_TEST_CASE(sigkill_under_load_loses_no_acknowledged_report_and_the_rollout_carries_on) {
  const auto dir = temp_dir("coordinator-kill");
  const std::string db = (dir / "db.sqlite").string();
  const auto key = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
  const auto port = free_port();
  const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  auto op = [&](verb m, const std::string& target, const std::string& body = {}) {
    return send(ep, {m, target, body, {{"Authorization", "Bearer " + key}}});
  };

  // On three threads until the kill, on one after it.
  pid_t pid = spawn_coordinator(db, port, dir / "coordinator.log", {"--threads", "3"});
  BOOST_REQUIRE(wait_healthy(ep));

  std::vector<std::string> hosts;
  json::array entries;
  for (int i = 0; i < 12; ++i) {
    hosts.push_back("host-" + std::to_string(i));
    entries.push_back(json::object{{"hostname", hosts.back()}, {"store_path", P_NEW}, {"tags", json::array{"all"}}});
  }
  auto rel = op(verb::post, "/api/v1/releases",
                json::serialize(json::object{{"id", "r1"}, {"created_at", "2026-11-25T10:00:00Z"}, {"sequence", 1},
                                             {"cache_urls", json::array{}}, {"entries", entries}}));
  BOOST_REQUIRE(rel.status == 201u);
  auto ro = op(verb::post, "/api/v1/rollouts",
               R"({"release_id":"r1","target":{"tags":["all"]},"waves":["1","100%"],"soak_s":0,"health_timeout_s":3600})");
  BOOST_REQUIRE(ro.status == 201u);
  const std::string id(ro.json().at("id").as_string());
  const std::string canary(ro.json().at("waves").at(0).at("hosts").at(0).as_string());

  // Report load: every host sends heartbeats with rising sequence numbers; what was
  // acknowledged is remembered. One host's reports go one at a time, in sequence order, as its
  // agent sends them: a heartbeat numbered after a confirmation must not overtake it, or the
  // coordinator rightly takes the confirmation for a replay.
  std::mutex mu;
  std::map<std::string, std::set<std::uint64_t>> acked;
  std::map<std::string, std::uint64_t> next_seq;
  std::map<std::string, std::mutex> agent;
  for (const auto& h : hosts) agent[h];
  std::atomic<bool> load{true};
  auto post = [&](const std::string& h, const std::string& kind, const std::string& path) {
    std::lock_guard one_at_a_time(agent.at(h));
    std::uint64_t seq;
    {
      std::lock_guard lock(mu);
      seq = ++next_seq[h];
    }
    auto r = send(ep, {verb::post, "/api/v1/machines/" + h + "/reports", report(seq, kind, path, path), {}});
    if (r.status == 200u) {
      std::lock_guard lock(mu);
      acked[h].insert(seq);
    }
    return r.status;
  };
  std::vector<std::thread> senders;
  // A failed requirement leaves by an exception: the load stops and the coordinator goes with it,
  // rather than a joinable thread aborting the run with a live child holding ctest's pipes.
  struct cleanup {
    std::atomic<bool>& load;
    std::vector<std::thread>& senders;
    pid_t& pid;
    ~cleanup() {
      load = false;
      for (auto& t : senders)
        if (t.joinable()) t.join();
      if (pid > 0 && ::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
    }
  } guard{load, senders, pid};
  for (int t = 0; t < 3; ++t)
    senders.emplace_back([&, t] {
      while (load)
        for (std::size_t i = static_cast<std::size_t>(t); i < hosts.size() && load; i += 3)
          post(hosts[i], "heartbeat", P_OLD);
    });

  // The canary confirms; the reconcile loop (1 s) dispatches everyone else.
  BOOST_REQUIRE(post(canary, "confirmed", P_NEW) == 200u);
  json::value st;
  for (int i = 0; i < 400; ++i) {
    st = op(verb::get, "/api/v1/rollouts/" + id).json();
    if (st.at("current_wave").as_int64() == 2) break;
    std::this_thread::sleep_for(50ms);
  }
  BOOST_REQUIRE(st.at("current_wave").as_int64() == 2);
  // Half of the second wave confirms, then the coordinator dies mid-load.
  std::vector<std::string> second;
  for (const auto& h : st.at("waves").at(1).at("hosts").as_array()) second.emplace_back(h.as_string());
  for (std::size_t i = 0; i < second.size() / 2; ++i) BOOST_TEST(post(second[i], "confirmed", P_NEW) == 200u);
  // A reconcile pass (1 s) records those confirmations in the rollout; wait until it has (a loaded
  // machine may take longer than one pass), then kill.
  auto confirmed_in = [](const json::value& rollout) {
    std::size_t n = 0;
    for (const auto& h : rollout.at("hosts").as_array()) n += h.at("state").as_string() == "confirmed";
    return n;
  };
  for (int i = 0; i < 400 && confirmed_in(st) < second.size() / 2; ++i) {
    std::this_thread::sleep_for(50ms);
    st = op(verb::get, "/api/v1/rollouts/" + id).json();
  }
  BOOST_REQUIRE(confirmed_in(st) >= second.size() / 2);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  pid = -1;
  BOOST_TEST(WIFSIGNALED(status));
  load = false;
  for (auto& t : senders) t.join();

  pid = spawn_coordinator(db, port, dir / "coordinator.log");
  BOOST_REQUIRE(wait_healthy(ep));
  st = op(verb::get, "/api/v1/rollouts/" + id).json();
  BOOST_TEST(st.at("status").as_string() == "running");
  BOOST_TEST(st.at("current_wave").as_int64() == 2);
  std::size_t confirmed = 0;
  for (const auto& h : st.at("hosts").as_array()) confirmed += h.at("state").as_string() == "confirmed";
  BOOST_TEST(confirmed >= second.size() / 2, "confirmations recorded before the kill are still there");

  // The rest confirms after the restart; the rollout completes.
  for (std::size_t i = second.size() / 2; i < second.size(); ++i) BOOST_TEST(post(second[i], "confirmed", P_NEW) == 200u);
  for (int i = 0; i < 400; ++i) {
    st = op(verb::get, "/api/v1/rollouts/" + id).json();
    if (st.at("status").as_string() == "completed") break;
    std::this_thread::sleep_for(50ms);
  }
  BOOST_TEST(st.at("status").as_string() == "completed");

  ::kill(pid, SIGTERM);
  ::waitpid(pid, &status, 0);
  pid = -1;
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0), "SIGTERM stops it cleanly");

  auto store = coordinator::io::open_sqlite(db);
  std::size_t checked = 0;
  for (const auto& [h, seqs] : acked) {
    std::set<std::uint64_t> stored;
    for (const auto& r : store->reports(h, 1'000'000)) stored.insert(r.body.seq);
    for (auto s : seqs) {
      BOOST_TEST(stored.contains(s), h << " report " << s << " was acknowledged but is not stored");
      ++checked;
    }
  }
  BOOST_TEST(checked > 50u, "the load acknowledged " << checked << " reports");
  auto v = store->verify_audit();
  BOOST_TEST(v.ok, v.reason.value_or(""));
  BOOST_TEST(v.rows > 20u);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

BOOST_AUTO_TEST_SUITE_END()
