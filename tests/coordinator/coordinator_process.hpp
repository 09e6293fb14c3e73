// The nixfleet-coordinator binary as a real process for the process tests: a free port, the
// process spawned with its stderr in a log file, and a wait for its /healthz.
#pragma once

#include "test_client.hpp"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <filesystem>
#include <spawn.h>
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

// `serve --db DB --listen 127.0.0.1:PORT --insecure-http EXTRA…`; `wrapper` goes before the binary
// (prlimit and its arguments).
inline pid_t spawn_coordinator(const std::string& db, unsigned short port, const std::filesystem::path& log,
                               std::vector<std::string> wrapper = {}, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = std::move(wrapper);
  for (std::string a : {std::string(NIXFLEET_COORDINATOR_BIN), std::string("serve"), std::string("--db"), db,
                        std::string("--listen"), "127.0.0.1:" + std::to_string(port), std::string("--insecure-http")})
    args.push_back(std::move(a));
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = 0;
  BOOST_REQUIRE(posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

inline bool wait_healthy(const asio::ip::tcp::endpoint& ep) {
  for (int i = 0; i < 400; ++i) {
    if (send(ep, {http::verb::get, "/healthz", {}, {}}).status == 200u) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return false;
}

}  // namespace nixfleet::test
