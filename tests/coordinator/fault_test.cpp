// Faults on real processes and a real filesystem: the coordinator's database on a tmpfs that
// fills up. It must stop acknowledging, say why, exit 70 — and once there is space again, restart
// with every report it acknowledged still stored. Needs root (a private mount namespace for the
// tmpfs); exits 77 (skipped) without.
#include "coordinator_process.hpp"

#include "nixfleet/coordinator/io/storage.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <set>
#include <spawn.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace nixfleet;
using namespace nixfleet::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;
using http::verb;

namespace {

std::string batch(std::uint64_t first, std::size_t n) {
  json::array reports;
  for (std::uint64_t seq = first; seq < first + n; ++seq)
    reports.push_back(json::object{{"seq", seq},
                                   {"at", "2026-11-25T10:00:00.000Z"},
                                   {"kind", "heartbeat"},
                                   {"message", std::string(400, 'x')},
                                   {"agent_version", "test"},
                                   {"uptime_s", seq}});
  return json::serialize(json::object{{"reports", reports}});
}

std::optional<int> exited_within(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(20ms);
  }
  return std::nullopt;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(coordinator_faults)

BOOST_AUTO_TEST_CASE(a_full_disk_stops_acknowledging_exits_70_and_loses_nothing_acknowledged) {
  // A private mount namespace for this process and its children, or nothing to test here.
  if (::geteuid() != 0 || ::unshare(CLONE_NEWNS) != 0 || ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::cerr << "coordinator_fault_test: needs root and mount namespaces; skipped\n";
    std::exit(77);
  }
  const auto dir = temp_dir("fault");
  const auto disk = dir / "disk";
  fs::create_directories(disk);
  BOOST_REQUIRE(::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=1m") == 0);
  const auto db = (disk / "db.sqlite").string();
  const auto log = dir / "coordinator.log";
  const auto port = free_port();
  const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);

  // No report budget: the point is to fill the disk.
  const std::vector<std::string> unbudgeted = {"--report-budget", "0", "--report-budget-mb", "0"};
  pid_t pid = spawn_coordinator(db, port, log, unbudgeted);
  BOOST_REQUIRE(wait_healthy(ep));
  std::set<std::uint64_t> acknowledged;
  std::uint64_t next = 1;
  unsigned refused = 0;
  for (int i = 0; i < 400 && refused == 0; ++i) {
    auto r = send(ep, {verb::post, "/api/v1/machines/web-1/reports", batch(next, 50), {}});
    if (r.status == 200u) {
      const auto acked = r.json().at("acked_seq").to_number<std::uint64_t>();
      for (std::uint64_t s = next; s <= acked; ++s) acknowledged.insert(s);
    } else {
      ++refused;
      // Refused as unavailable, or the connection cut as the process stops: never a 200.
      BOOST_TEST((r.status == 503u || r.status == 0u), r.status << " " << r.body);
    }
    next += 50;
  }
  BOOST_TEST_REQUIRE(refused > 0u, "1 MiB filled without a refusal");
  BOOST_TEST(acknowledged.size() > 100u, "some reports were acknowledged before the disk filled");
  BOOST_TEST_MESSAGE(acknowledged.size() << " reports acknowledged, then refused at batch " << next / 50);
  const auto code = exited_within(pid, 20s);
  BOOST_TEST_REQUIRE(code.has_value(), "the coordinator kept running on a full disk");
  BOOST_TEST(*code == 70);
  {
    std::ifstream in(log);
    const std::string text(std::istreambuf_iterator<char>(in), {});
    BOOST_TEST(text.find("store_write_failed_stopping") != std::string::npos, text);
    BOOST_TEST(text.find("full") != std::string::npos, "the reason names the full disk: " << text);
  }

  // Space again: it restarts on the same database, and everything acknowledged is there.
  BOOST_REQUIRE(::mount("tmpfs", disk.c_str(), nullptr, MS_REMOUNT, "size=64m") == 0);
  pid = spawn_coordinator(db, port, log, unbudgeted);
  BOOST_REQUIRE(wait_healthy(ep));
  BOOST_TEST(send(ep, {verb::post, "/api/v1/machines/web-1/reports", batch(next, 5), {}}).status == 200u,
             "it acknowledges again");
  ::kill(pid, SIGTERM);
  BOOST_TEST((exited_within(pid, 20s) == std::optional<int>(0)));
  auto store = coordinator::io::open_sqlite(db);
  std::set<std::uint64_t> stored;
  for (const auto& r : store->reports("web-1", 1'000'000)) stored.insert(r.body.seq);
  std::size_t lost = 0;
  for (auto s : acknowledged) lost += !stored.contains(s);
  BOOST_TEST(lost == 0u, lost << " of " << acknowledged.size() << " acknowledged reports are not stored");
  auto v = store->verify_audit();
  BOOST_TEST(v.ok, v.reason.value_or(""));
  store.reset();
  ::umount(disk.c_str());
  std::error_code ec;
  fs::remove_all(dir, ec);
}

BOOST_AUTO_TEST_SUITE_END()
