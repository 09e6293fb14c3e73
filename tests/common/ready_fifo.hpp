// Test helper: a named pipe a child process writes to when it has started, and an awaitable that
// completes when it has — an event to act on instead of a guess of how long a start takes.
#pragma once

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace nixfleet::test {

class ready_fifo {
 public:
  ready_fifo() {
    std::string d = (std::filesystem::temp_directory_path() / "nixfleet-ready-XXXXXX").string();
    if (::mkdtemp(d.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = d;
    path_ = (dir_ / "ready").string();
    if (::mkfifo(path_.c_str(), 0600) != 0) throw std::runtime_error("mkfifo failed");
    // Our own writer end keeps reads waiting (not at end of file) until the child writes.
    read_fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    write_fd_ = ::open(path_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (read_fd_ < 0 || write_fd_ < 0) throw std::runtime_error("cannot open the fifo");
  }
  ~ready_fifo() {
    ::close(read_fd_);
    ::close(write_fd_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  ready_fifo(const ready_fifo&) = delete;
  ready_fifo& operator=(const ready_fifo&) = delete;

  // A shell command that signals readiness.
  std::string signal_command() const { return "echo ready > '" + path_ + "'"; }

  boost::asio::awaitable<void> wait() {
    boost::asio::posix::stream_descriptor d(co_await boost::asio::this_coro::executor, ::dup(read_fd_));
    char c = 0;
    co_await d.async_read_some(boost::asio::buffer(&c, 1), boost::asio::use_awaitable);
  }

 private:
  std::filesystem::path dir_;
  std::string path_;
  int read_fd_ = -1;
  int write_fd_ = -1;
};

}  // namespace nixfleet::test
