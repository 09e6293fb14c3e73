// A listen address as operators write it: "127.0.0.1:8443", "[::1]:8443", or ":8443" for every
// address (IPv6 and IPv4). Names are not resolved: a listener binds to an address.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <optional>
#include <string_view>

namespace nixfleet {

std::optional<boost::asio::ip::tcp::endpoint> parse_listen(std::string_view text);

}  // namespace nixfleet
