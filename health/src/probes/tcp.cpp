// tcp: passes when a TCP connection to host:port opens.
#include "nixfleet/health/probe.hpp"
#include "nixfleet/protocol/json_fields.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nixfleet::health::probes {
namespace {
namespace asio = boost::asio;

boost::system::error_code check_host(std::string_view s) {
  if (s.empty() || s.size() > 253 || s.front() == '-') return protocol::errc::invalid_identifier;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == ':' || c == '_';
    if (!ok) return protocol::errc::invalid_identifier;
  }
  return {};
}

class tcp_probe final : public probe {
 public:
  tcp_probe(probe_common c, std::string host, std::uint16_t port)
      : probe(std::move(c)), host_(std::move(host)), port_(port) {}

  asio::awaitable<outcome> check() override {
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::resolver resolver(ex);
    auto [rec, endpoints] =
        co_await resolver.async_resolve(host_, std::to_string(port_), asio::as_tuple(asio::use_awaitable));
    if (rec) co_return outcome{false, "cannot resolve " + host_ + ": " + rec.message()};
    asio::ip::tcp::socket sock(ex);
    auto [cec, ep] = co_await asio::async_connect(sock, endpoints, asio::as_tuple(asio::use_awaitable));
    if (cec) co_return outcome{false, "connect to " + target() + ": " + cec.message()};
    co_return outcome{true, "connected to " + ep.address().to_string() + ":" + std::to_string(ep.port())};
  }

 private:
  std::string target() const { return host_ + ":" + std::to_string(port_); }
  std::string host_;
  std::uint16_t port_;
};

}  // namespace

protocol::decoded<probe_ptr> make_tcp(probe_common common, const boost::json::value& config,
                                      const protocol::fields::path_node* at, const probe_env&) {
  std::optional<protocol::decode_error> err;
  std::string host;
  std::uint16_t port = 0;
  protocol::fields::decoder d(config, at, err);
  d.req("host", host, {.fn = check_host});
  d.req("port", port);
  d.ensure(port != 0, "port", protocol::errc::out_of_range, "between 1 and 65535");
  if (err) return *err;
  return probe_ptr(std::make_unique<tcp_probe>(std::move(common), std::move(host), port));
}

}  // namespace nixfleet::health::probes
