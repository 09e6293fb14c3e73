// The common HTTP server with connections on strands of their own, several threads running them:
// what the application gives it (the handler, a held answer, the body-limit hook) still runs on
// the home strand alone, every request is answered, and a shutdown lets held answers go.
#include "nixfleet/common/http_server.hpp"
#include "nixfleet/common/http_wire.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <future>
#include <netinet/in.h>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace nixfleet;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

// A blocking HTTP/1.1 client on a raw socket: requests out, answers read by Content-Length.
class raw_client {
 public:
  explicit raw_client(unsigned short port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) throw std::runtime_error("connect");
  }
  ~raw_client() { ::close(fd_); }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  void write(const std::string& text) const {
    for (std::size_t off = 0; off < text.size();) {
      const auto n = ::send(fd_, text.data() + off, text.size() - off, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send");
      off += static_cast<std::size_t>(n);
    }
  }
  // The next answer's status and body; 0 when the connection closed first.
  std::pair<unsigned, std::string> read() {
    for (;;) {
      if (auto end = buf_.find("\r\n\r\n"); end != std::string::npos) {
        const auto head = buf_.substr(0, end);
        std::size_t length = 0;
        if (auto cl = head.find("Content-Length: "); cl != std::string::npos)
          length = std::stoul(head.substr(cl + 16));
        if (buf_.size() >= end + 4 + length) {
          const unsigned status = static_cast<unsigned>(std::stoul(head.substr(9, 3)));
          std::string body = buf_.substr(end + 4, length);
          buf_.erase(0, end + 4 + length);
          return {status, body};
        }
      }
      char chunk[4096];
      const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return {0, {}};
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_;
  std::string buf_;
};

std::string get(const std::string& target) { return "GET " + target + " HTTP/1.1\r\nHost: t\r\n\r\n"; }

http_response plain(unsigned status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  r.content_type = "text/plain";
  return r;
}

error_renderer errors() {
  return [](unsigned status, std::string, std::string message) { return plain(status, std::move(message)); };
}

// An io_context run by `n` threads, joined on destruction.
struct pool {
  explicit pool(std::size_t n) : work(asio::make_work_guard(ctx)) {
    for (std::size_t i = 0; i < n; ++i) threads.emplace_back([this] { ctx.run(); });
  }
  ~pool() {
    work.reset();
    ctx.stop();
    for (auto& t : threads) t.join();
  }
  asio::io_context ctx;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::thread> threads;
};

// Runs `fn` on `ex` and waits for it.
template <class F>
void on(const asio::any_io_executor& ex, F fn) {
  std::promise<void> done;
  asio::post(ex, [&] {
    fn();
    done.set_value();
  });
  done.get_future().get();
}

server_options loopback() {
  server_options o;
  o.listen = asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_server_threads)

BOOST_AUTO_TEST_CASE(the_handler_runs_on_the_home_strand_only_while_connections_run_on_four_threads) {
  pool p(4);
  auto home = asio::make_strand(p.ctx);
  std::atomic<int> off_home{0};
  int handled = 0;  // plain: only the home strand touches it
  std::atomic<bool> hook_off_home{false};
  auto o = loopback();
  o.body_limit = 64;
  o.max_body_limit = 4096;
  o.body_limit_for = [&](const boost::beast::http::request_header<>&) -> std::size_t {
    if (!home.running_in_this_thread()) hook_off_home = true;
    return 4096;
  };
  std::optional<http_server> srv;
  srv.emplace(
      home, p.ctx.get_executor(), o,
      [&](http_request& req) -> asio::awaitable<http_response> {
        if (!home.running_in_this_thread()) ++off_home;
        // A wait in the middle: other handlers run meanwhile, and this one resumes on home too.
        asio::steady_timer t(home, 1ms);
        co_await t.async_wait(asio::use_awaitable);
        if (!home.running_in_this_thread()) ++off_home;
        ++handled;
        co_return plain(200, std::to_string(req.msg.body().size()));
      },
      errors());
  srv->start();
  const auto port = srv->local_endpoint().port();

  constexpr int clients = 16, each = 20;
  std::atomic<int> answered{0}, wrong{0};
  std::vector<std::thread> load;
  for (int c = 0; c < clients; ++c)
    load.emplace_back([&, c] {
      raw_client client(port);
      for (int i = 0; i < each; ++i) {
        // Every fifth request has a body over the usual limit: the hook (on home) allows it.
        const std::string body(i % 5 == 0 ? 1000 : 10, 'x');
        client.write("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
        auto [status, text] = client.read();
        if (status == 200 && text == std::to_string(body.size())) ++answered;
        else ++wrong;
      }
      (void)c;
    });
  for (auto& t : load) t.join();
  BOOST_TEST(answered.load() == clients * each);
  BOOST_TEST(wrong.load() == 0);
  BOOST_TEST(off_home.load() == 0, "the handler ran off the home strand " << off_home.load() << " times");
  BOOST_TEST(!hook_off_home.load(), "body_limit_for ran off the home strand");
  auto count = asio::co_spawn(home, [&]() -> asio::awaitable<int> { co_return handled; }, asio::use_future);
  BOOST_TEST(count.get() == clients * each);
  BOOST_TEST(srv->stats().accepted == static_cast<std::uint64_t>(clients));
  on(home, [&] { srv.reset(); });
}

BOOST_AUTO_TEST_CASE(held_answers_wake_on_home_for_the_next_request_and_for_a_shutdown) {
  pool p(3);
  auto home = asio::make_strand(p.ctx);
  std::atomic<int> off_home{0};
  std::vector<asio::steady_timer*> waiting;  // home only
  auto o = loopback();
  std::optional<http_server> srv;
  srv.emplace(
      home, p.ctx.get_executor(), o,
      [&](http_request& req) -> asio::awaitable<http_response> {
        if (req.msg.target() != "/hold") co_return plain(200, "now");
        http_response r;
        r.held = [&](asio::steady_timer& wake) -> asio::awaitable<http_response> {
          if (!home.running_in_this_thread()) ++off_home;
          waiting.push_back(&wake);
          co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
          std::erase(waiting, &wake);
          if (!home.running_in_this_thread()) ++off_home;
          co_return plain(200, "woke");
        };
        co_return r;
      },
      errors());
  srv->start();
  const auto port = srv->local_endpoint().port();
  auto held_now = [&] {
    auto f = asio::co_spawn(home, [&]() -> asio::awaitable<std::size_t> { co_return waiting.size(); }, asio::use_future);
    return f.get();
  };

  // The client's next request, pipelined behind a held one, releases it; both are answered in order.
  {
    raw_client c(port);
    c.write(get("/hold"));
    for (int i = 0; i < 400 && held_now() == 0; ++i) std::this_thread::sleep_for(5ms);
    BOOST_REQUIRE(held_now() == 1u);
    BOOST_TEST(srv->stats().held == 1u);
    c.write(get("/now"));
    BOOST_TEST(c.read().second == "woke");
    BOOST_TEST(c.read().second == "now");
  }

  // Eight held at once on eight connections; a shutdown lets every one of them go.
  std::vector<std::unique_ptr<raw_client>> cs;
  for (int i = 0; i < 8; ++i) {
    cs.push_back(std::make_unique<raw_client>(port));
    cs.back()->write(get("/hold"));
  }
  for (int i = 0; i < 400 && held_now() < 8; ++i) std::this_thread::sleep_for(5ms);
  BOOST_REQUIRE(held_now() == 8u);
  auto done = asio::co_spawn(home, srv->shutdown(1s), asio::use_future);
  BOOST_TEST((done.wait_for(5s) == std::future_status::ready));
  for (auto& c : cs) BOOST_TEST(c->read().second == "woke");
  BOOST_TEST(off_home.load() == 0);
  on(home, [&] { srv.reset(); });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(http_server_quick_path)

std::string said(const std::pair<unsigned, std::string>& answer) {
  return std::to_string(answer.first) + " " + answer.second;
}

// A server whose quick path answers GET /quick/… from the head alone; everything else reaches the
// handler, which echoes the method, target and body.
struct quick_server {
  explicit quick_server(std::size_t threads) : p(threads) {
    auto o = loopback();
    o.quick = [this](const quick_request& q, std::string& out) {
      if (q.head.method != "GET" || !q.head.target.starts_with("/quick/")) return false;
      ++offered_on_home;
      http_response r = plain(200, "quick " + std::string(q.head.target) + " " +
                                       std::string(q.head.field("X-Tag").value_or("-")));
      http_wire::write_response(out, r, q.head.version, q.keep_alive, "nixfleet");
      return true;
    };
    auto handler = [](http_request& req) -> asio::awaitable<http_response> {
      co_return plain(200, "full " + std::string(req.msg.method_string()) + " " + std::string(req.msg.target()) + " " +
                               req.msg.body());
    };
    if (threads > 1) {
      auto home = asio::make_strand(p.ctx);
      srv.emplace(home, p.ctx.get_executor(), o, handler, errors());
    } else {
      srv.emplace(p.ctx.get_executor(), o, handler, errors());
    }
    srv->start();
    port = srv->local_endpoint().port();
  }
  pool p;
  std::atomic<int> offered_on_home{0};
  std::optional<http_server> srv;
  unsigned short port = 0;
};

BOOST_AUTO_TEST_CASE(plain_heads_are_answered_by_the_quick_path_in_order_with_the_full_path_between) {
  quick_server s(1);
  raw_client c(s.port);
  // Pipelined in one write: quick, a body for the full path, quick, a head the quick path leaves
  // (percent-encoded), quick split across two writes, then quick with Connection: close.
  c.write("GET /quick/1 HTTP/1.1\r\nHost: t\r\nX-Tag: a\r\n\r\n"
          "POST /quick/2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody" +
          get("/quick/3") + get("/quick/%34") + "GET /quick/5 HTTP/1.1\r\nHo");
  BOOST_TEST(said(c.read()) == "200 quick /quick/1 a");
  BOOST_TEST(said(c.read()) == "200 full POST /quick/2 body");
  BOOST_TEST(said(c.read()) == "200 quick /quick/3 -");
  BOOST_TEST(said(c.read()) == "200 full GET /quick/%34 ");
  c.write("st: t\r\n\r\nGET /quick/6 HTTP/1.1\r\nConnection: close\r\n\r\n");
  // /quick/5 arrived in two pieces: the full parser read the rest of its head.
  BOOST_TEST(said(c.read()) == "200 full GET /quick/5 ");
  BOOST_TEST(said(c.read()) == "200 quick /quick/6 -");
  BOOST_TEST(c.read().first == 0u);  // closed after the answer that said so
  BOOST_TEST(s.srv->stats().quick == 3u);
}

BOOST_AUTO_TEST_CASE(malformed_heads_are_answered_by_the_full_parser_and_the_server_keeps_serving) {
  quick_server s(1);
  {
    raw_client c(s.port);
    c.write("GET /quick/1 HTTP/1.1\r\nBad Name: x\r\n\r\n");
    BOOST_TEST(c.read().first == 400u);
  }
  {
    raw_client c(s.port);
    c.write("GET /quick/" + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n");
    BOOST_TEST(c.read().first == 431u);
  }
  raw_client c(s.port);
  c.write(get("/quick/ok"));
  BOOST_TEST(said(c.read()) == "200 quick /quick/ok -");
  BOOST_TEST(s.srv->stats().quick == 1u);
}

BOOST_AUTO_TEST_CASE(with_several_threads_every_request_takes_the_full_path) {
  // The quick handler would run on a connection's strand, not where the application lives.
  quick_server s(4);
  raw_client c(s.port);
  c.write(get("/quick/1"));
  BOOST_TEST(said(c.read()) == "200 full GET /quick/1 ");
  BOOST_TEST(s.srv->stats().quick == 0u);
  BOOST_TEST(s.offered_on_home == 0);
}

BOOST_AUTO_TEST_SUITE_END()
