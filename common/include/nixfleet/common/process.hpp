// Running a subprocess from a coroutine: argv (never a shell), capped output, a timeout that
// sends SIGTERM to the process group first and SIGKILL only after a grace period.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::process {

struct request {
  // argv[0] is an absolute path, or a name looked up in PATH.
  std::vector<std::string> argv;
  // Replaces the environment when set ("KEY=value" entries); inherited otherwise.
  std::optional<std::vector<std::string>> env;
  // Written to the child's stdin, which is then closed; /dev/null when empty.
  std::string input;
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  // Between SIGTERM and SIGKILL when the timeout (or cancellation) ends the process.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
  // stdout beyond this is read and discarded (out_truncated is set).
  std::size_t max_output = 1 << 20;
  // How much of the end of stderr is kept for diagnostics.
  std::size_t stderr_tail = 2048;
};

struct result {
  enum class ending { exited, signaled, timed_out, spawn_failed };
  ending how = ending::spawn_failed;
  int exit_code = -1;  // when exited
  int signal = 0;      // when signaled, or the last signal sent after a timeout
  bool killed = false; // SIGKILL was needed after the grace period
  std::string out;
  bool out_truncated = false;
  std::string err_tail;
  std::string spawn_error;  // when spawn_failed
  std::chrono::milliseconds duration{0};

  bool ok() const noexcept { return how == ending::exited && exit_code == 0; }
  // "exited with code 3", "killed by signal 11 (Segmentation fault)", "timed out after 5000 ms …"
  std::string describe() const;
};

// Runs `req` to completion. Never throws for process failures (spawn errors, signals, timeouts are
// in the result). If the awaiting coroutine is cancelled, the process group gets SIGTERM, then
// SIGKILL after `kill_grace`, and is reaped in the background; the cancellation propagates.
boost::asio::awaitable<result> run(request req);

// This process's environment with `name` set to `value` (replacing any inherited value), for
// request::env.
std::vector<std::string> environment_with(std::string_view name, const std::string& value);

// The same, for a program without an event loop of its own (the operator CLI): runs `req` on a
// private io_context and returns when it has ended.
result run_blocking(request req);

}  // namespace nixfleet::process
