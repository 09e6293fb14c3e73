// A tiny HTTP(S) server for probe tests, on an ephemeral loopback port. Paths: /ok (200 "healthy"),
// /error (500), /other-body (200 "nope"), /hang (never answers), /big (2 MiB body).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nixfleet::test {

class test_http_server {
 public:
  // With `tls`, serves HTTPS with the given certificate chain and key files.
  test_http_server(boost::asio::io_context& ctx, std::optional<std::pair<std::string, std::string>> tls = {},
                   const std::string& address = "127.0.0.1")
      : acceptor_(ctx, {boost::asio::ip::make_address(address), 0}) {
    if (tls) {
      ssl_.emplace(boost::asio::ssl::context::tls_server);
      ssl_->use_certificate_chain_file(tls->first);
      ssl_->use_private_key_file(tls->second, boost::asio::ssl::context::pem);
    }
    boost::asio::co_spawn(ctx, accept_loop(), boost::asio::detached);
  }

  unsigned short port() const { return acceptor_.local_endpoint().port(); }

  // Answers every request (head and body) with the raw HTTP response this returns.
  std::function<std::string(const std::string& request)> handler;

  // Over TLS: the server name each client sent ("" for none), and how many resumed a session.
  std::vector<std::string> server_names;
  int resumed = 0;

  // Closes the listener and every open connection so that the io_context can run dry.
  void stop() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    for (auto& s : sockets_) s->close(ec);
  }

 private:
  boost::asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) co_return;
      auto s = std::make_shared<boost::asio::ip::tcp::socket>(std::move(sock));
      sockets_.push_back(s);
      boost::asio::co_spawn(acceptor_.get_executor(), serve(s), boost::asio::detached);
    }
  }

  static std::string response_for(const std::string& request) {
    const auto path = request.substr(4, request.find(' ', 4) - 4);
    if (path == "/ok") return reply(200, "healthy");
    if (path == "/error") return reply(500, "broken");
    if (path == "/other-body") return reply(200, "nope");
    if (path == "/big") return reply(200, std::string(2 << 20, 'x'));
    return reply(404, "no");
  }

  static std::string reply(int status, const std::string& body) {
    return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
  }

  template <class Stream>
  boost::asio::awaitable<void> exchange(Stream& stream) {
    boost::asio::streambuf buf;
    auto [ec, n] = co_await boost::asio::async_read_until(stream, buf, "\r\n\r\n",
                                                          boost::asio::as_tuple(boost::asio::use_awaitable));
    if (ec) co_return;
    std::string request(boost::asio::buffers_begin(buf.data()), boost::asio::buffers_begin(buf.data()) + n);
    buf.consume(n);
    if (const auto cl = request.find("Content-Length: "); cl != std::string::npos) {
      const auto want = std::stoul(request.substr(cl + 16));
      while (buf.size() < want) {
        auto [rec, m] = co_await stream.async_read_some(buf.prepare(want - buf.size()),
                                                        boost::asio::as_tuple(boost::asio::use_awaitable));
        if (rec) co_return;
        buf.commit(m);
      }
      request.append(boost::asio::buffers_begin(buf.data()), boost::asio::buffers_begin(buf.data()) + want);
    }
    if (request.starts_with("GET /hang")) {
      // Hold the connection open without answering until stop() closes it.
      char byte;
      co_await stream.async_read_some(boost::asio::buffer(&byte, 1), boost::asio::as_tuple(boost::asio::use_awaitable));
      co_return;
    }
    // (a named local: GCC 12 mishandles temporaries of a conditional inside co_await)
    std::string answer = handler ? handler(request) : response_for(request);
    co_await boost::asio::async_write(stream, boost::asio::buffer(answer), boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<boost::asio::ip::tcp::socket> s) {
    if (!ssl_) {
      co_await exchange(*s);
    } else {
      boost::asio::ssl::stream<boost::asio::ip::tcp::socket&> tls(*s, *ssl_);
      auto [ec] = co_await tls.async_handshake(boost::asio::ssl::stream_base::server,
                                               boost::asio::as_tuple(boost::asio::use_awaitable));
      if (!ec) {
        const char* sni = SSL_get_servername(tls.native_handle(), TLSEXT_NAMETYPE_host_name);
        server_names.emplace_back(sni ? sni : "");
        resumed += SSL_session_reused(tls.native_handle()) ? 1 : 0;
        co_await exchange(tls);
        co_await tls.async_shutdown(boost::asio::as_tuple(boost::asio::use_awaitable));
      }
    }
    boost::system::error_code ignored;
    s->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  }

  boost::asio::ip::tcp::acceptor acceptor_;
  std::optional<boost::asio::ssl::context> ssl_;
  std::list<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
};

}  // namespace nixfleet::test
