// A listen address as operators write it: "127.0.0.1:8443", "[::1]:8443", or ":8443" for every
// address (IPv6 and IPv4). Names are not resolved: a listener binds to an address.
#pragma once

#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

namespace nixfleet {

std::optional<boost::asio::ip::tcp::endpoint> parse_listen(std::string_view text);

// Raises the soft limit on open descriptors to the hard limit (a server's every connection is
// one) and returns the limit now in force.
std::uint64_t raise_open_file_limit();

}  // namespace nixfleet
