// The lean TLS stream (tls_stream.hpp): OpenSSL works on the non-blocking descriptor; whenever it
// wants to read or write, the operation waits for the socket to be ready and tries again.
#include "nixfleet/common/tls_stream.hpp"

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <csignal>
#include <mutex>
#include <stdexcept>

namespace nixfleet {

namespace asio = boost::asio;
using boost::system::error_code;

// What one attempt came to: done (with a count), or waiting for the socket.
struct tls_stream::step {
  enum class what { done, want_read, want_write } w = what::done;
  std::size_t n = 0;
  error_code ec;
};

namespace {

// The error of a failed SSL call, as Asio's TLS stream reports it: the end of the stream as eof,
// so that Beast sees a closed connection between messages as its end.
tls_stream::step outcome_of(SSL* ssl, int rc, std::size_t n) {
  using step = tls_stream::step;
  if (rc == 1) return step{step::what::done, n, {}};
  const int err = SSL_get_error(ssl, rc);
  switch (err) {
    case SSL_ERROR_WANT_READ: return step{step::what::want_read, 0, {}};
    case SSL_ERROR_WANT_WRITE: return step{step::what::want_write, 0, {}};
    case SSL_ERROR_ZERO_RETURN: return step{step::what::done, 0, asio::error::eof};
    case SSL_ERROR_SYSCALL: {
      const int e = errno;
      ERR_clear_error();
      if (e == 0 || e == EPIPE || e == ECONNRESET)
        return step{step::what::done, 0, e == ECONNRESET ? error_code(asio::error::connection_reset) : error_code(asio::error::eof)};
      return step{step::what::done, 0, error_code(e, boost::system::system_category())};
    }
    default: {
      const unsigned long code = ERR_peek_last_error();
      ERR_clear_error();
      // A peer gone without close_notify: the end of the stream (HTTP frames its own messages).
      if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) return step{step::what::done, 0, asio::error::eof};
      return step{step::what::done, 0, error_code(static_cast<int>(code), asio::error::get_ssl_category())};
    }
  }
}

}  // namespace

tls_stream::tls_stream(asio::ip::tcp::socket socket, SSL_CTX* ctx, role r) : socket_(std::move(socket)) {
  // OpenSSL writes the socket with write(2), which raises SIGPIPE on a connection the peer has
  // closed (Asio's own writes pass MSG_NOSIGNAL): a peer gone must be an error, not our end.
  static std::once_flag no_sigpipe;
  std::call_once(no_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
  ssl_ = SSL_new(ctx);
  if (ssl_ == nullptr) throw std::runtime_error("cannot create a TLS connection");
  error_code ec;
  socket_.non_blocking(true, ec);
  if (ec || SSL_set_fd(ssl_, static_cast<int>(socket_.native_handle())) != 1) {
    SSL_free(ssl_);
    throw std::runtime_error("cannot attach TLS to the socket" + (ec ? ": " + ec.message() : std::string()));
  }
  SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (r == role::server) SSL_set_accept_state(ssl_);
  else SSL_set_connect_state(ssl_);
}

tls_stream::~tls_stream() { SSL_free(ssl_); }

bool tls_stream::has_pending() const { return SSL_has_pending(ssl_) == 1; }

// Attempts until done or the socket must be waited for; the wait carries the caller's
// cancellation slot, so that cancelling the caller ends the wait. Handlers run on the socket's
// executor (a session's strand when it has one). A first attempt that
// finishes at once completes through a post, never inside the initiating call.
template <class Handler, class Try>
void tls_stream::run(Handler h, Try attempt, bool first) {
  // SSL_get_error needs an empty error queue; looking is cheaper than clearing every time.
  if (ERR_peek_error() != 0) ERR_clear_error();
  step s = attempt();
  if (s.w == step::what::done) {
    auto finish = [h = std::move(h), s]() mutable {
      if constexpr (std::is_same_v<Handler, io_handler>) std::move(h)(s.ec, s.n);
      else std::move(h)(s.ec);
    };
    if (first) {
      asio::post(get_executor(), std::move(finish));
    } else {
      finish();
    }
    return;
  }
  const auto wait = s.w == step::what::want_read ? asio::ip::tcp::socket::wait_read : asio::ip::tcp::socket::wait_write;
  auto slot = asio::get_associated_cancellation_slot(h);
  auto resume = [this, h = std::move(h), attempt](error_code ec) mutable {
    if (ec) {
      if constexpr (std::is_same_v<Handler, io_handler>) std::move(h)(ec, 0);
      else std::move(h)(ec);
      return;
    }
    run(std::move(h), attempt, false);
  };
  socket_.async_wait(wait, asio::bind_cancellation_slot(slot, std::move(resume)));
}

void tls_stream::start_handshake(done_handler h) {
  run(std::move(h), [this] { return outcome_of(ssl_, SSL_do_handshake(ssl_), 0); }, true);
}

void tls_stream::start_shutdown(done_handler h) {
  run(
      std::move(h),
      [this] {
        // 0: our close_notify is out (the peer's is not awaited); 1: both are.
        const int rc = SSL_shutdown(ssl_);
        return rc >= 0 ? step{step::what::done, 0, {}} : outcome_of(ssl_, rc, 0);
      },
      true);
}

void tls_stream::start_read(asio::mutable_buffer b, io_handler h) {
  run(
      std::move(h),
      [this, b] {
        if (b.size() == 0) return step{step::what::done, 0, {}};
        std::size_t n = 0;
        const int rc = SSL_read_ex(ssl_, b.data(), b.size(), &n);
        return outcome_of(ssl_, rc, n);
      },
      true);
}

void tls_stream::start_write(asio::const_buffer b, io_handler h) {
  run(
      std::move(h),
      [this, b] {
        if (b.size() == 0) return step{step::what::done, 0, {}};
        std::size_t n = 0;
        const int rc = SSL_write_ex(ssl_, b.data(), b.size(), &n);
        return outcome_of(ssl_, rc, n);
      },
      true);
}

}  // namespace nixfleet
