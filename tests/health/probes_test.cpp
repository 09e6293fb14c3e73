// Built-in probes against real local targets: an HTTP(S) server and a TCP listener on ephemeral
// ports, real commands, and a stand-in systemctl (no systemd runs where these tests run).
#include "nixfleet/health/config.hpp"
#include "nixfleet/protocol/validate.hpp"
#include "../common/ready_fifo.hpp"
#include "run_sync.hpp"
#include "test_http_server.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace nixfleet;
using namespace std::chrono_literals;
using protocol::probe_status;

namespace {

health::probe_env test_env() {
  health::probe_env env;
  env.kill_grace = 300ms;
  env.plugin_host = NIXFLEET_TEST_PROBE_HOST;
  return env;
}

health::probe_ptr make(const std::string& probe_json, const health::probe_env& env = test_env()) {
  auto setup = health::parse_health_config("{\"probes\": [" + probe_json + "]}", env);
  BOOST_TEST_REQUIRE(setup.has_value(), (setup ? "" : setup.error().what()));
  return std::move(setup->probes.front());
}

// Runs one probe while `server` serves on the same io_context, then stops the server.
protocol::probe_result check(health::probe& p, test::test_http_server* server = nullptr,
                             asio::io_context* shared = nullptr) {
  asio::io_context own;
  asio::io_context& ctx = shared ? *shared : own;
  return test::run_sync(ctx, [&]() -> asio::awaitable<protocol::probe_result> {
    auto r = co_await health::run_probe(p);
    if (server) server->stop();
    co_return r;
  }());
}

// The same, with what the probe printed or answered.
std::pair<protocol::probe_result, std::string> check_with_output(health::probe& p, test::test_http_server* server = nullptr,
                                                                 asio::io_context* shared = nullptr) {
  asio::io_context own;
  asio::io_context& ctx = shared ? *shared : own;
  std::string output;
  auto result = test::run_sync(ctx, [&]() -> asio::awaitable<protocol::probe_result> {
    auto r = co_await health::run_probe(p, &output);
    if (server) server->stop();
    co_return r;
  }());
  return {result, output};
}

std::string http_probe(unsigned short port, const std::string& path, const std::string& extra = "") {
  return R"({"name": "web", "type": "http", "timeout_s": 0.5, "url": "http://127.0.0.1:)" + std::to_string(port) +
         path + "\"" + extra + "}";
}

struct temp_dir {
  temp_dir() {
    path = fs::temp_directory_path() / ("nixfleet-health-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
  static inline int counter = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(http_probe_tests)

BOOST_AUTO_TEST_CASE(passes_on_2xx) {
  asio::io_context ctx;
  test::test_http_server server(ctx);
  auto p = make(http_probe(server.port(), "/ok", R"(, "body_contains": "healthy")"));
  auto r = check(*p, &server, &ctx);
  BOOST_TEST((r.status == probe_status::pass), r.message.value_or(""));
  BOOST_TEST(r.message.value_or("") == "status 200");
}

BOOST_AUTO_TEST_CASE(wrong_status_fails_and_expected_status_set_is_honoured) {
  asio::io_context ctx;
  test::test_http_server server(ctx);
  auto p = make(http_probe(server.port(), "/error"));
  auto r = check(*p, &server, &ctx);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "unexpected status 500");

  asio::io_context ctx2;
  test::test_http_server server2(ctx2);
  auto accepts_500 = make(http_probe(server2.port(), "/error", R"(, "expect_status": [500, 503])"));
  BOOST_TEST((check(*accepts_500, &server2, &ctx2).status == probe_status::pass));
}

BOOST_AUTO_TEST_CASE(a_failure_keeps_the_status_and_the_start_of_the_body_for_forensics) {
  asio::io_context ctx;
  test::test_http_server server(ctx);
  auto p = make(http_probe(server.port(), "/error"));
  auto [r, output] = check_with_output(*p, &server, &ctx);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(output.starts_with("HTTP 500\n"), output);
  BOOST_TEST(output.size() > std::string("HTTP 500\n").size(), output);
  BOOST_TEST(!protocol::check_text(output, protocol::limits::max_evidence_output_bytes, protocol::newlines::allow).failed());
}

BOOST_AUTO_TEST_CASE(body_mismatch_fails) {
  asio::io_context ctx;
  test::test_http_server server(ctx);
  auto p = make(http_probe(server.port(), "/other-body", R"(, "body_contains": "healthy")"));
  auto r = check(*p, &server, &ctx);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("lacks the expected text") != std::string::npos, *r.message);
}

BOOST_AUTO_TEST_CASE(hang_past_the_timeout_fails_within_the_timeout) {
  asio::io_context ctx;
  test::test_http_server server(ctx);
  auto p = make(http_probe(server.port(), "/hang"));
  auto r = check(*p, &server, &ctx);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "timed out after 500 ms");
  BOOST_TEST(r.duration_ms >= 500u);
  BOOST_TEST(r.duration_ms < 1500u);
}

BOOST_AUTO_TEST_CASE(connection_refused_fails) {
  // Bind a port, then close it: nothing listens there.
  unsigned short port;
  {
    asio::io_context tmp;
    asio::ip::tcp::acceptor a(tmp, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  auto p = make(http_probe(port, "/ok"));
  auto r = check(*p);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("Connection refused") != std::string::npos, *r.message);
}

BOOST_AUTO_TEST_CASE(oversized_body_fails) {
  asio::io_context ctx;
  test::test_http_server server(ctx);
  auto p = make(http_probe(server.port(), "/big"));
  auto r = check(*p, &server, &ctx);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "response body larger than 1 MiB");
}

BOOST_AUTO_TEST_CASE(https_verifies_against_the_given_ca) {
  temp_dir dir;
  const auto cert = (dir.path / "cert.pem").string(), key = (dir.path / "key.pem").string();
  const auto cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost "
                   "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + key + " -out " + cert + " 2>/dev/null";
  BOOST_REQUIRE(std::system(cmd.c_str()) == 0);

  asio::io_context ctx;
  test::test_http_server server(ctx, std::pair{cert, key});
  const auto url = "https://localhost:" + std::to_string(server.port()) + "/ok";
  auto trusted = make(R"({"name": "tls", "type": "http", "timeout_s": 2, "url": ")" + url + R"(", "ca_file": ")" + cert + "\"}");
  auto r = check(*trusted, &server, &ctx);
  BOOST_TEST((r.status == probe_status::pass), r.message.value_or(""));

  asio::io_context ctx2;
  test::test_http_server server2(ctx2, std::pair{cert, key});
  const auto url2 = "https://localhost:" + std::to_string(server2.port()) + "/ok";
  auto untrusted = make(R"({"name": "tls", "type": "http", "timeout_s": 2, "url": ")" + url2 + "\"}");
  auto r2 = check(*untrusted, &server2, &ctx2);
  BOOST_TEST((r2.status == probe_status::fail));
  BOOST_TEST(r2.message->find("TLS handshake") != std::string::npos, *r2.message);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tcp_probe_tests)

BOOST_AUTO_TEST_CASE(connects_to_a_listener_and_fails_on_a_closed_port) {
  asio::io_context ctx;
  asio::ip::tcp::acceptor listener(ctx, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = listener.local_endpoint().port();
  auto p = make(R"({"name": "db", "type": "tcp", "host": "127.0.0.1", "port": )" + std::to_string(port) + "}");
  BOOST_TEST((check(*p, nullptr, &ctx).status == probe_status::pass));
  listener.close();
  auto r = check(*p);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("Connection refused") != std::string::npos, *r.message);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(exec_probe_tests)

BOOST_AUTO_TEST_CASE(exit_zero_passes_and_nonzero_fails_with_stderr) {
  auto ok = make(R"({"name": "c", "type": "exec", "command": "/bin/sh", "args": ["-c", "echo all good"]})");
  auto r = check(*ok);
  BOOST_TEST((r.status == probe_status::pass));
  BOOST_TEST(r.message.value_or("") == "all good");

  auto bad = make(R"({"name": "c", "type": "exec", "command": "echo disk full >&2; exit 2", "shell": true})");
  r = check(*bad);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "exited with code 2: disk full");
}

BOOST_AUTO_TEST_CASE(arguments_are_not_interpreted_by_a_shell) {
  auto p = make(R"({"name": "c", "type": "exec", "command": "echo", "args": ["$HOME; false"]})");
  auto r = check(*p);
  BOOST_TEST((r.status == probe_status::pass));
  BOOST_TEST(r.message.value_or("") == "$HOME; false");
}

BOOST_AUTO_TEST_CASE(hang_is_killed_within_timeout_plus_grace) {
  auto p = make(R"({"name": "c", "type": "exec", "timeout_s": 0.3, "command": "trap '' TERM; sleep 30", "shell": true})");
  auto r = check(*p);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("timed out") != std::string::npos, *r.message);
  BOOST_TEST(r.message->find("SIGKILL") != std::string::npos, *r.message);
  BOOST_TEST(r.duration_ms >= 600u);   // 300 ms timeout + 300 ms grace
  BOOST_TEST(r.duration_ms < 1600u);
}

BOOST_AUTO_TEST_CASE(huge_output_is_capped) {
  auto p = make(R"({"name": "c", "type": "exec", "command": "head", "args": ["-c", "50000000", "/dev/zero"],
                    "max_output_bytes": 1024})");
  auto r = check(*p);
  BOOST_TEST((r.status == probe_status::pass));  // read and discarded; the child was never blocked
  BOOST_TEST(r.duration_ms < 5000u);
  auto j = make(R"({"name": "c", "type": "exec", "command": "yes '{\"status\":\"pass\"}' | head -c 100000",
                    "shell": true, "json_output": true, "max_output_bytes": 1024})");
  auto rj = check(*j);
  BOOST_TEST((rj.status == probe_status::fail));
  BOOST_TEST(rj.message->find("cap") != std::string::npos, *rj.message);
}

BOOST_AUTO_TEST_CASE(a_probe_printing_megabytes_leaves_a_bounded_excerpt_of_both_streams) {
  // 8 MB of numbered lines on stdout and on stderr, a terminal colour and a NUL among them.
  auto p = make(R"({"name": "c", "type": "exec", "shell": true, "max_output_bytes": 65536,
                    "command": "seq 1 1000000 | sed 's/^/out /'; printf '\\033[31mred\\000\\n' >&2; seq 1 1000000 | sed 's/^/err /' >&2; exit 3"})");
  auto [r, output] = check_with_output(*p);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("").starts_with("exited with code 3"), r.message.value_or(""));
  BOOST_TEST(output.size() <= protocol::limits::max_evidence_output_bytes);
  BOOST_TEST(!protocol::check_text(output, protocol::limits::max_evidence_output_bytes, protocol::newlines::allow).failed());
  BOOST_TEST(output.starts_with("stdout:\n[…]\n"), output);
  BOOST_TEST(output.find("was discarded") != std::string::npos, output);
  BOOST_TEST(output.find("stderr:\n") != std::string::npos, output);
  BOOST_TEST(output.find("err 1000000\n") != std::string::npos, output);  // the end of stderr
  BOOST_TEST(r.duration_ms < 10000u);
}

BOOST_AUTO_TEST_CASE(json_output_decides_and_garbage_fails) {
  auto pass = make(R"({"name": "c", "type": "exec", "json_output": true, "shell": true,
                       "command": "echo '{\"status\": \"pass\", \"message\": \"3 replicas\"}'"})");
  auto r = check(*pass);
  BOOST_TEST((r.status == probe_status::pass));
  BOOST_TEST(r.message.value_or("") == "3 replicas");
  auto fail = make(R"({"name": "c", "type": "exec", "json_output": true, "shell": true,
                       "command": "echo '{\"status\": \"fail\", \"message\": \"lagging\"}'"})");
  BOOST_TEST((check(*fail).status == probe_status::fail));
  auto garbage = make(R"({"name": "c", "type": "exec", "json_output": true, "command": "echo", "args": ["ok!"]})");
  r = check(*garbage);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("invalid result") != std::string::npos, *r.message);
}

BOOST_AUTO_TEST_CASE(crash_and_missing_program_fail) {
  auto crash = make(R"({"name": "c", "type": "exec", "command": "kill -SEGV $$", "shell": true})");
  auto r = check(*crash);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("signal 11") != std::string::npos, *r.message);
  auto missing = make(R"({"name": "c", "type": "exec", "command": "/nonexistent/check"})");
  r = check(*missing);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message->find("could not start") != std::string::npos, *r.message);
}

BOOST_AUTO_TEST_SUITE_END()

// No systemd runs where these tests run: a stand-in `systemctl` script, first on PATH, answers
// `is-active` and `list-units --state=failed` the way systemctl does.
struct standin_systemctl {
  standin_systemctl() {
    std::ofstream script(dir.path / "systemctl");
    script << "#!/bin/sh\n"
              "case \"$1\" in\n"
              "  is-active) case \"$3\" in good.service) echo active; exit 0;; starting.service) echo activating; exit 3;;\n"
              "             *) echo inactive; exit 3;; esac;;\n"
              "  list-units) cat \"$NIXFLEET_TEST_FAILED_UNITS\"; exit 0;;\n"
              "esac\n"
              "exit 1\n";
    script.close();
    fs::permissions(dir.path / "systemctl", fs::perms::owner_all);
    failed_units = dir.path / "failed";
    std::ofstream(failed_units) << "";
    old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
    ::setenv("PATH", (dir.path.string() + ":" + old_path).c_str(), 1);
    ::setenv("NIXFLEET_TEST_FAILED_UNITS", failed_units.c_str(), 1);
  }
  ~standin_systemctl() { ::setenv("PATH", old_path.c_str(), 1); }
  temp_dir dir;
  fs::path failed_units;
  std::string old_path;
};

BOOST_FIXTURE_TEST_SUITE(systemd_probe_tests, standin_systemctl)

BOOST_AUTO_TEST_CASE(unit_active_passes_and_inactive_fails) {
  auto good = make(R"({"name": "u", "type": "systemd_unit", "unit": "good.service"})");
  auto r = check(*good);
  BOOST_TEST((r.status == probe_status::pass));
  BOOST_TEST(r.message.value_or("") == "good.service is active");
  auto bad = make(R"({"name": "u", "type": "systemd_unit", "unit": "nginx.service"})");
  r = check(*bad);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "nginx.service is inactive");
  auto starting = make(R"({"name": "u", "type": "systemd_unit", "unit": "starting.service"})");
  BOOST_TEST(check(*starting).message.value_or("") == "starting.service is activating");
}

BOOST_AUTO_TEST_CASE(failed_units_counted_against_the_limit) {
  auto none_allowed = make(R"({"name": "f", "type": "systemd_failed"})");
  auto r = check(*none_allowed);
  BOOST_TEST((r.status == probe_status::pass), r.message.value_or(""));
  std::ofstream(failed_units) << "a.service loaded failed failed A\nb.mount loaded failed failed B\n";
  r = check(*none_allowed);
  BOOST_TEST((r.status == probe_status::fail));
  BOOST_TEST(r.message.value_or("") == "2 failed units: a.service, b.mount (at most 0 allowed)");
  auto two_allowed = make(R"({"name": "f", "type": "systemd_failed", "max_failed": 2})");
  BOOST_TEST((check(*two_allowed).status == probe_status::pass));
}

BOOST_AUTO_TEST_CASE(unit_names_cannot_become_options) {
  auto setup = health::parse_health_config(R"({"probes": [{"name": "u", "type": "systemd_unit", "unit": "--user"}]})");
  BOOST_REQUIRE(setup.has_error());
  BOOST_TEST(setup.error().field == "probes[0].unit");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(concurrency)

BOOST_AUTO_TEST_CASE(run_all_runs_probes_concurrently_in_order) {
  // Each probe marks that it started and passes only once all three have: run one after another,
  // the first would wait for the others until its timeout and fail. No timing is measured.
  const auto dir = std::filesystem::temp_directory_path() / ("nixfleet-concurrent-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto probe = [&](const std::string& name) {
    const auto d = dir.string();
    return R"({"name": ")" + name + R"(", "type": "exec", "timeout_s": 20, "shell": true, "command": "touch )" + d + "/" +
           name + "; until [ -e " + d + "/a ] && [ -e " + d + "/b ] && [ -e " + d + "/c ]; do sleep 0.01; done; echo " +
           name + R"("})";
  };
  auto setup = health::parse_health_config(
      R"({"probes": [)" + probe("a") + "," + probe("b") + "," + probe("c") + "]}", test_env());
  BOOST_REQUIRE(setup.has_value());
  auto results = test::run_sync(health::run_all(setup->probes));
  std::filesystem::remove_all(dir);
  BOOST_REQUIRE(results.size() == 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    BOOST_TEST((results[i].status == protocol::probe_status::pass), results[i].message.value_or(""));
    BOOST_TEST(results[i].message.value_or("") == std::string(1, static_cast<char>('a' + i)));  // in order
  }
}

BOOST_AUTO_TEST_CASE(cancelling_a_round_ends_running_probes_promptly) {
  using namespace asio::experimental::awaitable_operators;
  test::ready_fifo ready;
  auto setup = health::parse_health_config(R"({"probes": [
      {"name": "slow", "type": "exec", "timeout_s": 30, "shell": true, "command": ")" + ready.signal_command() +
                                               R"(; exec sleep 30"},
      {"name": "hang", "type": "http", "timeout_s": 30, "url": "http://127.0.0.1:9/"}]})", test_env());
  BOOST_REQUIRE(setup.has_value());
  // Cancelled once the slow probe runs: the round ends then (it would take the probes' 30 s),
  // and the probe's process is gone.
  const auto start = std::chrono::steady_clock::now();
  auto which = test::run_sync([&]() -> asio::awaitable<std::size_t> {
    auto r = co_await (health::run_all(setup->probes) || ready.wait());
    co_return r.index();
  }());
  BOOST_TEST(which == 1u);
  // Not a speed figure: a round that ignored the cancellation would end with the probes' 30 s.
  BOOST_TEST((std::chrono::steady_clock::now() - start < 10s));
}

BOOST_AUTO_TEST_SUITE_END()
