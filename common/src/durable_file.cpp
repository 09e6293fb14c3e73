// write-temp, fsync, rename, fsync(dir).
#include "nixfleet/common/durable_file.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#if defined(BOOST_ASIO_HAS_FILE)
#include <boost/asio/stream_file.hpp>
#endif

#include <cerrno>
#include <fcntl.h>
#include <fstream>
#include <unistd.h>

namespace nixfleet::durable {
namespace {

boost::system::error_code last_error() { return {errno, boost::system::system_category()}; }

boost::system::error_code sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return last_error();
  const int rc = ::fsync(fd);
  auto ec = rc == 0 ? boost::system::error_code{} : last_error();
  ::close(fd);
  return ec;
}

}  // namespace

boost::asio::awaitable<boost::system::error_code> replace_file(std::filesystem::path path, std::string content) {
  auto tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  // Opened here rather than by stream_file::open, whose mode would be 0777 less the umask: state
  // files hold what this host trusts and are private to its owner.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) co_return last_error();
#if defined(BOOST_ASIO_HAS_FILE)
  {
    boost::asio::stream_file file(co_await boost::asio::this_coro::executor);
    boost::system::error_code ec;
    file.assign(fd, ec);
    if (ec) {
      ::close(fd);
      co_return ec;
    }
    auto [wec, n] = co_await boost::asio::async_write(file, boost::asio::buffer(content),
                                                      boost::asio::as_tuple(boost::asio::use_awaitable));
    if (!wec) file.sync_all(wec);
    file.close(ec);
    if (wec) {
      std::filesystem::remove(tmp, ec);
      co_return wec;
    }
  }
#else
  {
    std::size_t off = 0;
    while (off < content.size()) {
      const auto n = ::write(fd, content.data() + off, content.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        auto ec = last_error();
        ::close(fd);
        co_return ec;
      }
      off += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) {
      auto ec = last_error();
      ::close(fd);
      co_return ec;
    }
    ::close(fd);
  }
#endif
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto ec = last_error();
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    co_return ec;
  }
  co_return sync_directory(path.parent_path());
}

boost::system::error_code remove_file(const std::filesystem::path& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return {};
    return last_error();
  }
  return sync_directory(path.parent_path());
}

boost::system::result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT || !std::filesystem::exists(path))
      return boost::system::error_code(ENOENT, boost::system::generic_category());
    return last_error();
  }
  std::string text(max_bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (in.peek() != std::char_traits<char>::eof()) return boost::system::error_code(EFBIG, boost::system::generic_category());
  return text;
}

}  // namespace nixfleet::durable
