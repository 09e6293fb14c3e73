// Subprocesses with real commands: exit codes, signals, timeouts (SIGTERM, then SIGKILL), caps.
#include "nixfleet/common/process.hpp"
#include "ready_fifo.hpp"
#include "run_sync.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>

namespace asio = boost::asio;
using nixfleet::process::request;
using nixfleet::process::result;
using nixfleet::test::run_sync;
using namespace std::chrono_literals;

namespace {
result run_cmd(request r) { return run_sync(nixfleet::process::run(std::move(r))); }
request sh(std::string script) { return request{.argv = {"/bin/sh", "-c", std::move(script)}}; }
}  // namespace

BOOST_AUTO_TEST_SUITE(process)

BOOST_AUTO_TEST_CASE(exit_code_stdout_and_stderr_tail_are_captured) {
  auto r = run_cmd(sh("echo out; echo err >&2; exit 3"));
  BOOST_TEST((r.how == result::ending::exited));
  BOOST_TEST(r.exit_code == 3);
  BOOST_TEST(!r.ok());
  BOOST_TEST(r.out == "out\n");
  BOOST_TEST(r.err_tail == "err\n");
  BOOST_TEST(r.describe() == "exited with code 3");
  BOOST_TEST(run_cmd(request{.argv = {"true"}}).ok());
}

BOOST_AUTO_TEST_CASE(missing_program_is_a_spawn_failure_not_an_exception) {
  auto r = run_cmd(request{.argv = {"/nonexistent/program"}});
  BOOST_TEST((r.how == result::ending::spawn_failed));
  BOOST_TEST(r.describe().find("No such file") != std::string::npos, r.describe());
  BOOST_TEST((run_cmd(request{}).how == result::ending::spawn_failed));
}

BOOST_AUTO_TEST_CASE(death_by_signal_is_reported) {
  auto r = run_cmd(sh("kill -SEGV $$"));
  BOOST_TEST((r.how == result::ending::signaled));
  BOOST_TEST(r.signal == SIGSEGV);
  BOOST_TEST(r.describe().find("signal 11") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(timeout_sends_sigterm_and_ends_within_the_timeout) {
  auto req = sh("sleep 30");
  req.timeout = 200ms;
  req.kill_grace = 2s;
  auto r = run_cmd(req);
  BOOST_TEST((r.how == result::ending::timed_out));
  BOOST_TEST(r.signal == SIGTERM);
  BOOST_TEST(!r.killed);
  BOOST_TEST(r.duration < 200ms + 1s);
}

BOOST_AUTO_TEST_CASE(sigterm_ignored_escalates_to_sigkill_after_the_grace_period) {
  auto req = sh("trap '' TERM; sleep 30");
  req.timeout = 200ms;
  req.kill_grace = 300ms;
  auto r = run_cmd(req);
  BOOST_TEST((r.how == result::ending::timed_out));
  BOOST_TEST(r.killed);
  BOOST_TEST(r.signal == SIGKILL);
  BOOST_TEST(r.duration >= 500ms);
  BOOST_TEST(r.duration < 500ms + 1s);
}

BOOST_AUTO_TEST_CASE(huge_output_is_capped_and_drained) {
  auto req = request{.argv = {"head", "-c", "20000000", "/dev/zero"}};
  req.max_output = 4096;
  auto r = run_cmd(req);
  BOOST_TEST(r.ok());  // the child was not blocked on a full pipe
  BOOST_TEST(r.out.size() == 4096u);
  BOOST_TEST(r.out_truncated);
}

BOOST_AUTO_TEST_CASE(input_environment_and_stderr_tail) {
  BOOST_TEST(run_cmd(request{.argv = {"cat"}, .input = "hello"}).out == "hello");
  BOOST_TEST(run_cmd(request{.argv = {"env"}, .env = std::vector<std::string>{"ONLY=1"}}).out == "ONLY=1\n");
  auto req = sh("i=0; while [ $i -lt 1000 ]; do echo line-$i >&2; i=$((i+1)); done");
  req.stderr_tail = 16;
  auto r = run_cmd(req);
  BOOST_TEST(r.err_tail.size() == 16u);
  BOOST_TEST(r.err_tail.ends_with("line-999\n"));
}

BOOST_AUTO_TEST_CASE(cancelling_the_caller_still_ends_the_process) {
  using namespace asio::experimental::awaitable_operators;
  const auto pidfile = std::filesystem::temp_directory_path() / ("nixfleet-proc-" + std::to_string(::getpid()));
  asio::io_context ctx;
  nixfleet::test::ready_fifo ready;
  auto req = sh("echo $$ > " + pidfile.string() + "; " + ready.signal_command() + "; exec sleep 30");
  req.kill_grace = 200ms;
  auto task = [&]() -> asio::awaitable<int> {
    // Cancelled as soon as the child says it runs.
    auto r = co_await (nixfleet::process::run(req) || ready.wait());
    co_return static_cast<int>(r.index());
  };
  BOOST_TEST(run_sync(ctx, task()) == 1);  // the child started; run() was cancelled
  int pid = 0;
  std::ifstream(pidfile) >> pid;
  std::filesystem::remove(pidfile);
  BOOST_REQUIRE(pid > 0);
  // run_sync ran the context dry, so the background reaper has finished: the process is gone.
  BOOST_TEST(::kill(pid, 0) == -1);
}

BOOST_AUTO_TEST_CASE(run_blocking_serves_programs_without_an_event_loop) {
  request req;
  req.argv = {"/bin/sh", "-c", "echo out; echo err >&2; exit 4"};
  auto r = nixfleet::process::run_blocking(req);
  BOOST_TEST((r.how == result::ending::exited));
  BOOST_TEST(r.exit_code == 4);
  BOOST_TEST(r.out == "out\n");
  BOOST_TEST(r.err_tail == "err\n");
  req.argv = {"sleep", "5"};
  req.timeout = std::chrono::milliseconds(100);
  req.kill_grace = std::chrono::milliseconds(100);
  BOOST_TEST((nixfleet::process::run_blocking(req).how == result::ending::timed_out));
}

BOOST_AUTO_TEST_SUITE_END()
