// The systemd notification protocol against a real datagram socket, and the watchdog period.
#include "nixfleet/common/systemd.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

// A datagram socket standing in for systemd's notification socket.
struct notify_socket {
  notify_socket() {
    path = std::filesystem::temp_directory_path() / ("nixfleet-notify-" + std::to_string(::getpid()));
    ::unlink(path.c_str());
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  }
  ~notify_socket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd);
    ::unlink(path.c_str());
  }
  std::string receive() const {
    char buf[256];
    const auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
  std::filesystem::path path;
  int fd = -1;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(systemd_notify)

BOOST_AUTO_TEST_CASE(ready_and_watchdog_reach_the_notify_socket) {
  notify_socket s;
  BOOST_TEST(nixfleet::systemd::notify("READY=1"));
  BOOST_TEST(s.receive() == "READY=1");
  BOOST_TEST(nixfleet::systemd::notify("WATCHDOG=1"));
  BOOST_TEST(s.receive() == "WATCHDOG=1");
}

BOOST_AUTO_TEST_CASE(without_systemd_notify_is_a_quiet_no) {
  ::unsetenv("NOTIFY_SOCKET");
  BOOST_TEST(!nixfleet::systemd::notify("READY=1"));
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  BOOST_TEST(!nixfleet::systemd::notify("READY=1"));
  ::unsetenv("NOTIFY_SOCKET");
}

BOOST_AUTO_TEST_CASE(watchdog_period_is_half_the_interval_for_this_process_only) {
  ::setenv("WATCHDOG_USEC", "20000000", 1);
  ::unsetenv("WATCHDOG_PID");
  BOOST_TEST(nixfleet::systemd::watchdog_period()->count() == 10000);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  BOOST_TEST(nixfleet::systemd::watchdog_period().has_value());
  ::setenv("WATCHDOG_PID", "1", 1);  // meant for another process
  BOOST_TEST(!nixfleet::systemd::watchdog_period().has_value());
  ::unsetenv("WATCHDOG_PID");
  ::setenv("WATCHDOG_USEC", "soon", 1);
  BOOST_TEST(!nixfleet::systemd::watchdog_period().has_value());
  ::unsetenv("WATCHDOG_USEC");
  BOOST_TEST(!nixfleet::systemd::watchdog_period().has_value());
}

BOOST_AUTO_TEST_SUITE_END()
