// Listen address parsing and the descriptor limit a listener needs.
#include "nixfleet/common/listen.hpp"

#include <charconv>
#include <sys/resource.h>
#include <string>

namespace nixfleet {

std::optional<boost::asio::ip::tcp::endpoint> parse_listen(std::string_view text) {
  if (text.size() > 128) return std::nullopt;
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) return std::nullopt;
  std::string_view host = text.substr(0, colon), port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535) return std::nullopt;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string_view::npos) return std::nullopt;  // an IPv6 address needs its brackets
  if (host.empty()) host = "::";
  boost::system::error_code bad;
  auto addr = boost::asio::ip::make_address(std::string(host), bad);
  if (bad) return std::nullopt;
  return boost::asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(port));
}

std::uint64_t raise_open_file_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<std::uint64_t>(rl.rlim_cur);
}

}  // namespace nixfleet
