// The nixfleet-agent binary end to end against a local coordinator stand-in: it polls, reports
// heartbeats, answers `status` on its control socket, and stops cleanly (exit 0) on SIGTERM.
#include "nixfleet/protocol/codec.hpp"
#include "../health/test_http_server.hpp"

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>

extern char** environ;

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string reply(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nX-Nixfleet-Protocol: 1\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

std::string run_cli(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  std::size_t n;
  while (p && (n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (p) ::pclose(p);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(agent_binary)

BOOST_AUTO_TEST_CASE(polls_reports_answers_status_and_stops_cleanly_on_sigterm) {
  const auto dir = fs::temp_directory_path() / ("nixfleet-agent-bin-" + std::to_string(::getpid()));
  fs::create_directories(dir);

  boost::asio::io_context ctx;
  nixfleet::test::test_http_server server(ctx);
  std::mutex m;
  int polls = 0;
  std::vector<nixfleet::protocol::report> reports;
  server.handler = [&](const std::string& req) {
    std::lock_guard lock(m);
    if (req.starts_with("GET /api/v1/machines/bench-01/desired ")) {
      ++polls;
      return reply(204, "");
    }
    if (req.starts_with("POST /api/v1/machines/bench-01/reports ")) {
      auto batch = nixfleet::protocol::parse<nixfleet::protocol::report_batch>(req.substr(req.find("\r\n\r\n") + 4));
      if (!batch) return reply(400, R"({"error":"bad_request","message":"invalid report batch"})");
      for (auto& r : batch->reports) reports.push_back(r);
      return reply(200, R"({"acked_seq":)" + std::to_string(batch->reports.back().seq) + "}");
    }
    return reply(404, R"({"error":"not_found","message":"no such route"})");
  };
  auto guard = boost::asio::make_work_guard(ctx);
  std::thread io([&] { ctx.run(); });

  const auto cfg = dir / "agent.json";
  std::ofstream(cfg) << R"({"machine_id": "bench-01", "coordinator_url": "http://127.0.0.1:)" << server.port()
                     << R"(", "allow_insecure_http": true, "state_dir": ")" << (dir / "state").string()
                     << R"(", "control_socket": ")" << (dir / "control.sock").string()
                     << R"(", "health_config": ")" << (dir / "none.json").string()
                     << R"(", "poll_interval_s": 1, "health_interval_s": 1, "startup_jitter_s": 0.1, "log_level": "warn",)"
                     << R"( "trusted_keys": ["ops-1:SqzA8d7ok1nayRg0TVpL7g14GYEJyYx2TMPulfFKJAY="]})";

  std::string bin = NIXFLEET_AGENT_BIN, run = "run", flag = "--config", path = cfg.string();
  char* argv[] = {bin.data(), run.data(), flag.data(), path.data(), nullptr};
  pid_t pid = 0;
  BOOST_REQUIRE(::posix_spawn(&pid, bin.c_str(), nullptr, nullptr, argv, environ) == 0);

  auto heard = [&] {
    std::lock_guard lock(m);
    return polls >= 2 && std::any_of(reports.begin(), reports.end(), [](const auto& r) {
             return r.kind == nixfleet::protocol::report_kind::heartbeat && r.agent_version == "0.1.0";
           });
  };
  // Deadlines are generous: a sanitizer build on a loaded CI machine starts many times slower.
  for (int i = 0; i < 600 && !heard(); ++i) std::this_thread::sleep_for(50ms);
  BOOST_TEST(heard());

  const auto status = run_cli(bin + " status --socket " + (dir / "control.sock").string());
  BOOST_TEST(status.find(R"("ok":true)") != std::string::npos, status);
  BOOST_TEST(status.find(R"("stage":"idle")") != std::string::npos, status);

  ::kill(pid, SIGTERM);
  int st = 0;
  pid_t done = 0;
  for (int i = 0; i < 500 && done == 0; ++i) {
    done = ::waitpid(pid, &st, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(20ms);
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
  }
  BOOST_TEST(done == pid, "did not stop within 10 s of SIGTERM");
  BOOST_TEST(WIFEXITED(st));
  BOOST_TEST(WEXITSTATUS(st) == 0);

  boost::asio::post(ctx, [&] { server.stop(); });
  guard.reset();
  io.join();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

BOOST_AUTO_TEST_CASE(bad_configuration_exits_78_naming_the_field) {
  const auto cfg = fs::temp_directory_path() / ("nixfleet-agent-bad-" + std::to_string(::getpid()) + ".json");
  std::ofstream(cfg) << R"({"coordinator_url": "https://x", "poll_interval_s": "often"})";
  const auto out = run_cli(std::string(NIXFLEET_AGENT_BIN) + " run --config " + cfg.string() + " 2>&1; echo \"exit=$?\"");
  BOOST_TEST(out.find("poll_interval_s") != std::string::npos, out);
  BOOST_TEST(out.find("exit=78") != std::string::npos, out);
  fs::remove(cfg);
}

BOOST_AUTO_TEST_CASE(an_agent_without_trusted_keys_does_not_start) {
  const auto cfg = fs::temp_directory_path() / ("nixfleet-agent-nokeys-" + std::to_string(::getpid()) + ".json");
  std::ofstream(cfg) << R"({"coordinator_url": "https://x", "machine_id": "web-01"})";
  for (const char* cmd : {" run", " check-config"}) {
    const auto out = run_cli(std::string(NIXFLEET_AGENT_BIN) + cmd + " --config " + cfg.string() + " 2>&1; echo \"exit=$?\"");
    BOOST_TEST(out.find("trusted_keys") != std::string::npos, out);
    BOOST_TEST(out.find("exit=78") != std::string::npos, out);
  }
  fs::remove(cfg);
}

BOOST_AUTO_TEST_SUITE_END()
