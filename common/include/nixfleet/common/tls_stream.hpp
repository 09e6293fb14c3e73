// TLS over a TCP socket with OpenSSL reading and writing the descriptor itself: no buffers of its
// own (Asio's ssl::stream keeps four of 17 KiB per connection), and with SSL_MODE_RELEASE_BUFFERS
// OpenSSL frees its record buffers whenever a connection is idle, so a connection held open costs
// the SSL object and the socket. An Asio AsyncStream (Beast's HTTP reads and writes take it), on
// the socket's executor; one read and one write may be outstanding at once.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <string>
#include <vector>

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;

namespace nixfleet {

class tls_stream {
 public:
  using executor_type = boost::asio::ip::tcp::socket::executor_type;
  using io_handler = boost::asio::any_completion_handler<void(boost::system::error_code, std::size_t)>;
  using done_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;
  enum class role { client, server };
  struct step;  // one attempt's outcome (tls_stream.cpp)

  // Throws std::runtime_error when OpenSSL cannot make the connection's state.
  tls_stream(boost::asio::ip::tcp::socket socket, SSL_CTX* ctx, role r);
  ~tls_stream();
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  executor_type get_executor() { return socket_.get_executor(); }
  boost::asio::ip::tcp::socket& socket() { return socket_; }
  SSL* native_handle() { return ssl_; }
  // Decrypted bytes not yet read, or a record partly in: a read would not wait for the socket.
  bool has_pending() const;

  template <class Token>
  auto async_handshake(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto h) { start_handshake(std::move(h)); }, token);
  }
  // Sends close_notify (without waiting for the peer's): the session stays resumable.
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto h) { start_shutdown(std::move(h)); }, token);
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    boost::asio::mutable_buffer first;
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it)
      if (boost::asio::mutable_buffer b(*it); b.size() > 0) {
        first = b;
        break;
      }
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto h, boost::asio::mutable_buffer b) { start_read(b, std::move(h)); }, token, first);
  }

  // Writes at most one record: a sequence of small buffers (an HTTP head and its body) is gathered
  // into one, so that they leave in one record and one segment.
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    boost::asio::const_buffer first;
    std::size_t parts = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::const_buffer b(*it);
      if (b.size() == 0) continue;
      if (parts++ == 0) first = b;
    }
    if (parts > 1 && first.size() < gather_limit) {
      gathered_.clear();
      for (auto it = boost::asio::buffer_sequence_begin(buffers);
           it != boost::asio::buffer_sequence_end(buffers) && gathered_.size() < gather_limit; ++it) {
        boost::asio::const_buffer b(*it);
        const auto take = std::min(b.size(), gather_limit - gathered_.size());
        const auto* p = static_cast<const unsigned char*>(b.data());
        gathered_.insert(gathered_.end(), p, p + take);
      }
      first = boost::asio::buffer(gathered_);
    }
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto h, boost::asio::const_buffer b) { start_write(b, std::move(h)); }, token, first);
  }

 private:
  static constexpr std::size_t gather_limit = 16384;  // one TLS record's plaintext
  void start_handshake(done_handler h);
  void start_shutdown(done_handler h);
  void start_read(boost::asio::mutable_buffer b, io_handler h);
  void start_write(boost::asio::const_buffer b, io_handler h);
  template <class Handler, class Try>
  void run(Handler h, Try attempt, bool first);

  boost::asio::ip::tcp::socket socket_;
  SSL* ssl_ = nullptr;
  std::vector<unsigned char> gathered_;
};

}  // namespace nixfleet
