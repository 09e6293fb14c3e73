// The nixfleet-coordinator binary as a real process for the process tests: a free port, the
// process spawned with its stderr in a log file, and a wait for its /healthz.
#pragma once

#include "test_client.hpp"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <optional>
#include <sys/resource.h>
#include <unistd.h>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace nixfleet::test {

inline unsigned short free_port() {
  asio::io_context ctx;
  asio::ip::tcp::acceptor a(ctx, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// A descriptor limit for the child alone (set between fork and exec: no prlimit binary needed,
// which the package's check sandbox does not have).
struct fd_limit {
  rlim_t soft, hard;
};

// Runs `args` (args[0] a path) with stderr appended to `log`.
inline pid_t spawn_logged(std::vector<std::string> args, const std::filesystem::path& log,
                          std::optional<fd_limit> limit = std::nullopt) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log_path = log.string();
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    if (limit) {
      const rlimit rl{limit->soft, limit->hard};
      if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(126);
    }
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || ::dup2(fd, 2) < 0) ::_exit(126);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  return pid;
}

// `serve --db DB --listen 127.0.0.1:PORT --insecure-http EXTRA…`
inline pid_t spawn_coordinator(const std::string& db, unsigned short port, const std::filesystem::path& log,
                               const std::vector<std::string>& extra = {}, std::optional<fd_limit> limit = std::nullopt) {
  std::vector<std::string> args = {NIXFLEET_COORDINATOR_BIN, "serve", "--db", db, "--listen",
                                   "127.0.0.1:" + std::to_string(port), "--insecure-http"};
  args.insert(args.end(), extra.begin(), extra.end());
  return spawn_logged(std::move(args), log, limit);
}

inline bool wait_healthy(const asio::ip::tcp::endpoint& ep) {
  for (int i = 0; i < 400; ++i) {
    if (send(ep, {http::verb::get, "/healthz", {}, {}}).status == 200u) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return false;
}

}  // namespace nixfleet::test
