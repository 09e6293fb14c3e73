// posix_spawn + pidfd subprocesses on Asio. posix_spawn (vfork semantics) rather than a fork of
// the whole process: no atfork work in a child of a process that has io_uring operations in flight.
#include "nixfleet/common/process.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace nixfleet::process {
namespace {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using clock = std::chrono::steady_clock;

struct fd_pair {
  int read = -1, write = -1;
  ~fd_pair() {
    if (read >= 0) ::close(read);
    if (write >= 0) ::close(write);
  }
};

bool make_pipe(fd_pair& p) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  p.read = fds[0];
  p.write = fds[1];
  return true;
}

// The child's life: pid, pidfd for waiting, and whether it has been reaped.
struct child {
  pid_t pid = -1;
  std::optional<asio::posix::stream_descriptor> pidfd;
  bool reaped = false;
  int status = 0;

  bool try_reap() {
    if (reaped) return true;
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      reaped = true;
      status = st;
    } else if (r < 0 && errno == ECHILD) {
      reaped = true;  // someone else reaped it; treat as exited
    }
    return reaped;
  }

  void signal_group(int sig) const {
    // The child leads its own process group, so its children get the signal too.
    if (::kill(-pid, sig) != 0) ::kill(pid, sig);
  }
};

// Completes when the child has exited (and is reaped). Cancellable.
asio::awaitable<void> wait_exit(std::shared_ptr<child> c) {
  while (!c->try_reap()) {
    if (c->pidfd) {
      co_await c->pidfd->async_wait(asio::posix::stream_descriptor::wait_read, asio::use_awaitable);
    } else {
      // Kernels without pidfd_open: poll.
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(10));
      co_await t.async_wait(asio::use_awaitable);
    }
  }
}

struct capture {
  std::string data;
  bool truncated = false;
  bool done = false;
};

// Reads to EOF; keeps the first `max` bytes (head) or the last `max` bytes (tail).
enum class keep { head, tail };
asio::awaitable<void> drain(std::shared_ptr<asio::posix::stream_descriptor> fd, std::shared_ptr<capture> cap,
                            std::size_t max, keep k) {
  char buf[8192];
  for (;;) {
    auto [ec, n] = co_await fd->async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    if (n > 0) {
      if (k == keep::head) {
        const auto room = max > cap->data.size() ? max - cap->data.size() : 0;
        cap->data.append(buf, std::min(room, n));
        if (n > room) cap->truncated = true;
      } else {
        cap->data.append(buf, n);
        if (cap->data.size() > max) cap->data.erase(0, cap->data.size() - max);
      }
    }
    if (ec) break;
  }
  cap->done = true;
}

// Ends a child nobody waits for any more: SIGTERM, SIGKILL after the grace period, reap.
void end_in_background(asio::any_io_executor ex, std::shared_ptr<child> c, std::chrono::milliseconds grace) {
  if (c->try_reap()) return;
  c->signal_group(SIGTERM);
  asio::co_spawn(
      ex,
      [c, grace]() -> asio::awaitable<void> {
        asio::steady_timer t(co_await asio::this_coro::executor, grace);
        auto r = co_await (wait_exit(c) || t.async_wait(asio::use_awaitable));
        if (r.index() == 1) {
          c->signal_group(SIGKILL);
          co_await wait_exit(c);
        }
      },
      [](std::exception_ptr) {});
}

std::string signal_name(int sig) {
  const char* s = ::strsignal(sig);
  return s ? s : "unknown";
}

}  // namespace

std::string result::describe() const {
  switch (how) {
    case ending::exited: return fmt::format("exited with code {}", exit_code);
    case ending::signaled: return fmt::format("killed by signal {} ({})", signal, signal_name(signal));
    case ending::timed_out:
      return fmt::format("timed out after {} ms{}", duration.count(), killed ? " (SIGKILL after SIGTERM)" : " (SIGTERM)");
    case ending::spawn_failed: return "could not start: " + spawn_error;
  }
  return "unknown";
}

asio::awaitable<result> run(request req) {
  auto ex = co_await asio::this_coro::executor;
  result res;
  const auto started = clock::now();
  if (req.argv.empty() || req.argv.front().empty()) {
    res.spawn_error = "empty command";
    co_return res;
  }

  fd_pair out, err, in;
  if (!make_pipe(out) || !make_pipe(err) || (!req.input.empty() && !make_pipe(in))) {
    res.spawn_error = std::string("pipe: ") + std::strerror(errno);
    co_return res;
  }

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  if (req.input.empty())
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  else
    posix_spawn_file_actions_adddup2(&actions, in.read, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.write, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write, STDERR_FILENO);
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  for (auto& a : req.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (req.env) {
    for (auto& e : *req.env) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  char** env = req.env ? envp.data() : environ;

  auto c = std::make_shared<child>();
  const bool search = req.argv.front().find('/') == std::string::npos;
  const int rc = search ? ::posix_spawnp(&c->pid, argv[0], &actions, &attr, argv.data(), env)
                        : ::posix_spawn(&c->pid, argv[0], &actions, &attr, argv.data(), env);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    res.spawn_error = req.argv.front() + ": " + std::strerror(rc);
    co_return res;
  }
  ::close(out.write);
  out.write = -1;
  ::close(err.write);
  err.write = -1;
  if (in.read >= 0) {
    ::close(in.read);
    in.read = -1;
  }

  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, c->pid, 0));
  if (pidfd >= 0) c->pidfd.emplace(ex, pidfd);

  // If this coroutine is cancelled or destroyed before the child is reaped, end it gracefully.
  struct reaper_guard {
    asio::any_io_executor ex;
    std::shared_ptr<child> c;
    std::chrono::milliseconds grace;
    ~reaper_guard() {
      if (!c->reaped) end_in_background(ex, c, grace);
    }
  } guard{ex, c, req.kill_grace};

  auto out_fd = std::make_shared<asio::posix::stream_descriptor>(ex, std::exchange(out.read, -1));
  auto err_fd = std::make_shared<asio::posix::stream_descriptor>(ex, std::exchange(err.read, -1));
  auto out_cap = std::make_shared<capture>();
  auto err_cap = std::make_shared<capture>();
  asio::co_spawn(ex, drain(out_fd, out_cap, req.max_output, keep::head), asio::detached);
  asio::co_spawn(ex, drain(err_fd, err_cap, req.stderr_tail, keep::tail), asio::detached);

  if (in.write >= 0) {
    auto in_fd = std::make_shared<asio::posix::stream_descriptor>(ex, std::exchange(in.write, -1));
    auto data = std::make_shared<std::string>(std::move(req.input));
    asio::co_spawn(
        ex,
        [in_fd, data]() -> asio::awaitable<void> {
          // A child that exits without reading gives EPIPE: not our failure.
          co_await asio::async_write(*in_fd, asio::buffer(*data), asio::as_tuple(asio::use_awaitable));
          boost::system::error_code ignored;
          in_fd->close(ignored);
        },
        asio::detached);
  }

  asio::steady_timer deadline(ex, req.timeout);
  auto first = co_await (wait_exit(c) || deadline.async_wait(asio::use_awaitable));
  if (first.index() == 1) {
    res.how = result::ending::timed_out;
    res.signal = SIGTERM;
    c->signal_group(SIGTERM);
    asio::steady_timer grace(ex, req.kill_grace);
    auto second = co_await (wait_exit(c) || grace.async_wait(asio::use_awaitable));
    if (second.index() == 1) {
      res.killed = true;
      res.signal = SIGKILL;
      c->signal_group(SIGKILL);
      co_await wait_exit(c);
    }
  }

  // Output still buffered in the pipes is collected; a grandchild holding them open is not waited for.
  asio::steady_timer drain_deadline(ex, std::chrono::milliseconds(200));
  while ((!out_cap->done || !err_cap->done) && drain_deadline.expiry() > clock::now()) {
    asio::steady_timer tick(ex, std::chrono::milliseconds(5));
    co_await tick.async_wait(asio::use_awaitable);
  }
  boost::system::error_code ignored;
  out_fd->close(ignored);
  err_fd->close(ignored);

  res.duration = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started);
  if (res.how != result::ending::timed_out) {
    if (WIFEXITED(c->status)) {
      res.how = result::ending::exited;
      res.exit_code = WEXITSTATUS(c->status);
    } else if (WIFSIGNALED(c->status)) {
      res.how = result::ending::signaled;
      res.signal = WTERMSIG(c->status);
    }
  }
  res.out = std::move(out_cap->data);
  res.out_truncated = out_cap->truncated;
  res.err_tail = std::move(err_cap->data);
  co_return res;
}

result run_blocking(request req) {
  boost::asio::io_context ctx;
  result out;
  std::exception_ptr failure;
  boost::asio::co_spawn(ctx, run(std::move(req)), [&](std::exception_ptr e, result r) {
    failure = e;
    out = std::move(r);
  });
  ctx.run();
  if (failure) std::rethrow_exception(failure);
  return out;
}

std::vector<std::string> environment_with(std::string_view name, const std::string& value) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    if (kv.size() > name.size() && kv.starts_with(name) && kv[name.size()] == '=') continue;
    env.emplace_back(kv);
  }
  env.push_back(std::string(name) + "=" + value);
  return env;
}

}  // namespace nixfleet::process
