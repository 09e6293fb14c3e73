// The common HTTP(S) client: URL rules, IPv6 literals, SNI for DNS names only, verification by IP
// address, the deadline and body bound, TLS session resumption, the blocking form, a kept-alive
// connection with exchanges pipelined behind a held answer.
#include "nixfleet/common/http_client.hpp"

#include "../health/test_http_server.hpp"
#include "nixfleet/common/http_server.hpp"
#include "nixfleet/common/tls_stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <thread>

using namespace nixfleet;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "|";
  return out;
}

std::string reply(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nETag: \"e1\"\r\nConnection: close\r\n\r\n" + body;
}

struct certificate {
  fs::path dir = fs::temp_directory_path() / ("nixfleet-http-client-" + std::to_string(::getpid()));
  std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  certificate() {
    fs::create_directories(dir);
    const auto cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost "
                     "-addext subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1 -keyout " + key + " -out " + cert + " 2>/dev/null";
    BOOST_REQUIRE(std::system(cmd.c_str()) == 0);
  }
  ~certificate() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// A test server on a thread of its own; the clients under test block on their own io_context.
struct served {
  asio::io_context ctx;
  test::test_http_server server;
  std::thread thread;
  explicit served(std::optional<std::pair<std::string, std::string>> tls = {}, const std::string& address = "127.0.0.1")
      : server(ctx, std::move(tls), address), port_(std::to_string(server.port())) {}
  void start() {
    thread = std::thread([this] { ctx.run(); });
  }
  const std::string& port() const { return port_; }
  // Stops the server; what it recorded may be read after this.
  void stop() {
    if (!thread.joinable()) return;
    asio::post(ctx, [this] { server.stop(); });
    thread.join();
  }
  ~served() { stop(); }

 private:
  std::string port_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(http_client_tests)

BOOST_AUTO_TEST_CASE(urls_are_taken_apart_and_bad_ones_named) {
  auto u = http_client::parse_url("https://[::1]:8443/base/path/?x=1");
  BOOST_REQUIRE(u.has_value());
  BOOST_TEST(u->tls);
  BOOST_TEST(u->host == "::1");
  BOOST_TEST(u->port == "8443");
  BOOST_TEST(u->host_header == "[::1]:8443");
  BOOST_TEST(u->path == "/base/path");
  BOOST_TEST(u->target == "/base/path/?x=1");
  auto plain = http_client::parse_url("http://coordinator.example.org");
  BOOST_REQUIRE(plain.has_value());
  BOOST_TEST(plain->port == "80");
  BOOST_TEST(plain->host_header == "coordinator.example.org");
  BOOST_TEST(plain->target == "/");
  BOOST_TEST(plain->path.empty());

  std::string why;
  BOOST_TEST(!http_client::parse_url("ftp://x/", &why));
  BOOST_TEST(why.find("http or https") != std::string::npos, why);
  BOOST_TEST(!http_client::parse_url("https://user:secret@x/", &why));
  BOOST_TEST(why.find("password") != std::string::npos, why);
  BOOST_TEST(!http_client::parse_url("/relative", &why));
  BOOST_TEST(!http_client::parse_url("http:///nohost", &why));
}

BOOST_AUTO_TEST_CASE(an_ipv6_literal_is_bracketed_in_host_and_bare_on_the_wire) {
  served s(std::nullopt, "::1");
  std::string seen;
  s.server.handler = [&](const std::string& req) {
    seen = req;
    return reply(201, "made");
  };
  s.start();
  http_client::client c(*http_client::parse_url("http://[::1]:" + s.port() + "/base/"), {},
                        {.timeout = 5s, .user_agent = "nixfleet-test"});
  auto r = c.exchange_blocking({.method = "POST", .target = "/api/v1/x", .body = "{}", .headers = {{"X-Extra", "1"}}});
  s.stop();
  BOOST_REQUIRE(r.answer.has_value());
  BOOST_TEST(r.answer->status == 201u);
  BOOST_TEST(r.answer->body == "made");
  BOOST_TEST(r.answer->header("etag") == "\"e1\"", "headers are found whatever their case");
  BOOST_TEST(seen.starts_with("POST /base/api/v1/x HTTP/1.1\r\n"), seen);
  BOOST_TEST(seen.find("Host: [::1]:" + s.port() + "\r\n") != std::string::npos, seen);
  BOOST_TEST(seen.find("User-Agent: nixfleet-test\r\n") != std::string::npos, seen);
  BOOST_TEST(seen.find("X-Extra: 1\r\n") != std::string::npos, seen);
  BOOST_TEST(seen.find("Content-Length: 2\r\n") != std::string::npos, seen);
}

BOOST_AUTO_TEST_CASE(sni_carries_dns_names_only_and_an_address_is_verified_against_its_ip_san) {
  certificate cert;
  served s(std::pair{cert.cert, cert.key});
  s.server.handler = [](const std::string&) { return reply(200, "ok"); };
  s.start();
  http_client::client by_name(*http_client::parse_url("https://localhost:" + s.port()), {cert.cert}, {.timeout = 5s});
  auto r1 = by_name.exchange_blocking({.target = "/ok"});
  BOOST_TEST((r1.answer && r1.answer->status == 200u), r1.error);
  http_client::client by_address(*http_client::parse_url("https://127.0.0.1:" + s.port()), {cert.cert}, {.timeout = 5s});
  auto r2 = by_address.exchange_blocking({.target = "/ok"});
  BOOST_TEST((r2.answer && r2.answer->status == 200u), r2.error);
  // Not trusted: the system store does not know this certificate.
  http_client::client untrusted(*http_client::parse_url("https://localhost:" + s.port()), {}, {.timeout = 5s});
  auto r3 = untrusted.exchange_blocking({.target = "/ok"});
  s.stop();
  BOOST_REQUIRE(s.server.server_names.size() == 2u);
  BOOST_TEST(s.server.server_names[0] == "localhost");
  BOOST_TEST(s.server.server_names[1] == "", "no server name is sent for an IP literal");
  BOOST_TEST(!r3.answer);
  BOOST_TEST((r3.why == http_client::failure::tls));
  BOOST_TEST(r3.error.find("TLS handshake with localhost:") == 0, r3.error);
}

BOOST_AUTO_TEST_CASE(a_kept_session_is_resumed_on_the_next_connection) {
  certificate cert;
  served s(std::pair{cert.cert, cert.key});
  s.server.handler = [](const std::string&) { return reply(200, "ok"); };
  s.start();
  http_client::client c(*http_client::parse_url("https://localhost:" + s.port()), {cert.cert},
                        {.timeout = 5s, .resume_sessions = true});
  for (int i = 0; i < 3; ++i) {
    auto r = c.exchange_blocking({.target = "/ok"});
    BOOST_TEST((r.answer && r.answer->status == 200u), r.error);
  }
  s.stop();
  BOOST_TEST(s.server.resumed == 2, "the second and third connections resumed the session");
}

BOOST_AUTO_TEST_CASE(the_deadline_the_body_bound_and_a_refused_connection_are_failures_naming_the_peer) {
  served s;  // /hang holds the connection without answering; /big is 2 MiB
  s.start();
  http_client::client c(*http_client::parse_url("http://127.0.0.1:" + s.port()), {}, {.timeout = 300ms, .body_limit = 1 << 20});
  const auto start = std::chrono::steady_clock::now();
  auto hung = c.exchange_blocking({.target = "/hang"});
  BOOST_TEST((hung.why == http_client::failure::timeout));
  BOOST_TEST(hung.error == "no answer from 127.0.0.1:" + s.port() + " within 300 ms");
  BOOST_TEST((std::chrono::steady_clock::now() - start < 2s));
  auto big = c.exchange_blocking({.target = "/big"});
  BOOST_TEST((big.why == http_client::failure::too_large), big.error);
  s.stop();

  http_client::client refused(*http_client::parse_url("http://127.0.0.1:1"), {}, {.timeout = 2s});
  auto r = refused.exchange_blocking({.target = "/"});
  BOOST_TEST((r.why == http_client::failure::connect));
  BOOST_TEST(r.error.find("cannot connect to 127.0.0.1:1: ") == 0, r.error);
}

BOOST_AUTO_TEST_CASE(kept_alive_exchanges_share_one_connection_and_pipeline_behind_a_held_answer) {
  certificate cert;
  asio::io_context ctx;
  server_options o;
  o.listen = {asio::ip::make_address("127.0.0.1"), 0};
  o.tls = tls_options{cert.cert, cert.key};
  o.idle_timeout = 300ms;
  http_server srv(
      ctx, o,
      [](http_request& req) -> asio::awaitable<http_response> {
        http_response r;
        if (req.msg.target() != "/hold") {
          r.body = "ok";
          co_return r;
        }
        // Held up to 10 s; let go early when the client sends its next request.
        r.held = [](asio::steady_timer& wake) -> asio::awaitable<http_response> {
          const auto until = std::chrono::steady_clock::now() + 10s;
          if (wake.expiry() > until) wake.expires_at(until);
          co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
          http_response a;
          a.body = std::chrono::steady_clock::now() < until ? "released" : "expired";
          co_return a;
        };
        co_return r;
      },
      [](unsigned status, std::string, std::string) { return http_response{status, {}, "text/plain", {}, {}, {}}; });
  srv.start();
  http_client::client c(*http_client::parse_url("https://localhost:" + std::to_string(srv.local_endpoint().port())),
                        {cert.cert}, {.timeout = 5s, .resume_sessions = true, .keep_alive = true});
  auto run = [&](std::vector<std::string> targets, std::chrono::milliseconds stagger) {
    std::vector<std::future<http_client::result>> out;
    bool sent = false;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          for (const auto& t : targets) {
            out.push_back(asio::co_spawn(ctx, c.exchange({.target = t, .timeout = 20s}), asio::use_future));
            asio::steady_timer pause(ctx, stagger);
            co_await pause.async_wait(asio::use_awaitable);
          }
        },
        [&](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
          sent = true;
        });
    while (!sent || std::any_of(out.begin(), out.end(), [](auto& f) {
             return f.wait_for(0s) != std::future_status::ready;
           }))
      ctx.run_for(10ms);
    std::vector<std::string> bodies;
    for (auto& f : out) {
      auto r = f.get();
      bodies.push_back(r.answer ? r.answer->body : "failed: " + r.error);
    }
    return bodies;
  };
  const auto began = std::chrono::steady_clock::now();
  auto bodies = run({"/hold", "/ok"}, 200ms);
  BOOST_TEST((std::chrono::steady_clock::now() - began < 3s), "the held answer waited for its own deadline");
  BOOST_TEST(bodies == (std::vector<std::string>{"released", "ok"}), joined(bodies));
  BOOST_TEST(run({"/ok", "/ok"}, 0ms) == (std::vector<std::string>{"ok", "ok"}));
  BOOST_TEST(srv.stats().accepted == 1u, "every exchange went over the one connection");
  // Closed by the server while idle: the next exchange finds out and goes again on a new one.
  ctx.run_for(700ms);
  BOOST_TEST(run({"/ok"}, 0ms) == (std::vector<std::string>{"ok"}));
  BOOST_TEST(srv.stats().accepted == 2u);
  BOOST_TEST(srv.stats().tls_resumed == 1u, "the new connection resumed the kept session");
}

BOOST_AUTO_TEST_CASE(writing_tls_to_a_peer_that_is_gone_is_an_error_not_a_signal) {
  // OpenSSL writes with write(2): to a connection the peer has closed that raises SIGPIPE, which
  // would end the server (and every other connection with it), as the close_notify written after
  // a failed write did in the fleet-in-a-box.
  certificate cert;
  asio::io_context ctx;
  asio::ssl::context server_ctx(asio::ssl::context::tls_server), client_ctx(asio::ssl::context::tls_client);
  server_ctx.use_certificate_chain_file(cert.cert);
  server_ctx.use_private_key_file(cert.key, asio::ssl::context::pem);
  asio::ip::tcp::acceptor acceptor(ctx, {asio::ip::make_address("127.0.0.1"), 0});
  std::vector<boost::system::error_code> errors;
  auto done = asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        asio::ip::tcp::socket out(ctx);
        co_await out.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
        auto in = co_await acceptor.async_accept(asio::use_awaitable);
        tls_stream server(std::move(in), server_ctx.native_handle(), tls_stream::role::server);
        auto client = std::make_unique<tls_stream>(std::move(out), client_ctx.native_handle(), tls_stream::role::client);
        using namespace asio::experimental::awaitable_operators;
        co_await (server.async_handshake(asio::use_awaitable) && client->async_handshake(asio::use_awaitable));
        // A socket that can no longer send: write(2) fails with EPIPE (and raises SIGPIPE) at once.
        server.socket().shutdown(asio::ip::tcp::socket::shutdown_send);
        const std::string chunk(16384, 'x');
        auto [ec, n] = co_await asio::async_write(server, asio::buffer(chunk), asio::as_tuple(asio::use_awaitable));
        errors.push_back(ec);
        client.reset();
      },
      asio::use_future);
  while (done.wait_for(0s) != std::future_status::ready) ctx.run_for(10ms);
  done.get();  // and the process is still here
  BOOST_TEST_REQUIRE(errors.size() == 1u);
  BOOST_TEST(errors.back().failed(), "the write to a socket that cannot send failed");
}

BOOST_AUTO_TEST_CASE(a_missing_ca_file_is_named_when_the_client_is_made) {
  try {
    http_client::client c(*http_client::parse_url("https://localhost:1"), {"/nonexistent/ca.pem"}, {});
    BOOST_FAIL("no exception");
  } catch (const std::runtime_error& e) {
    BOOST_TEST(std::string(e.what()).find("/nonexistent/ca.pem") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_SUITE_END()
