// /metrics in the Prometheus text format, served by a small Beast listener.
#include "nixfleet/agent/io/metrics.hpp"

#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/common/listen.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/prometheus.hpp"
#include "nixfleet/common/version.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace nixfleet::agent::io {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

std::string render_metrics(agent_runtime& rt) {
  auto& d = rt.driver();
  const auto& m = d.metrics();
  prometheus::text t;
  t.family("nixfleet_agent_info", "gauge", "Agent identity.");
  t.sample("nixfleet_agent_info", {{"machine_id", d.machine_id()}, {"version", nixfleet::version()}}, 1);
  t.family("nixfleet_agent_stage", "gauge", "Deployment stage (1 for the current one).");
  for (auto s : {core::deployer::stage::idle, core::deployer::stage::fetching, core::deployer::stage::recording,
                 core::deployer::stage::activating, core::deployer::stage::gating, core::deployer::stage::rolling_back,
                 core::deployer::stage::rollback_pending})
    t.sample("nixfleet_agent_stage", {{"stage", core::to_string(s)}}, rt.deployer().current() == s ? 1 : 0);
  t.family("nixfleet_agent_polls_total", "counter", "Polls of the desired state by result.");
  t.sample("nixfleet_agent_polls_total", {{"result", "ok"}}, m.polls_ok);
  t.sample("nixfleet_agent_polls_total", {{"result", "failed"}}, m.polls_failed);
  t.scalar("nixfleet_agent_last_poll_timestamp_seconds", "gauge", "Time of the last successful poll.", m.last_poll_unix);
  t.scalar("nixfleet_agent_last_report_timestamp_seconds", "gauge", "Time reports were last acknowledged.", m.last_report_unix);
  t.scalar("nixfleet_agent_reports_delivered_total", "counter", "Reports acknowledged by the coordinator.", m.reports_delivered);
  t.scalar("nixfleet_agent_reports_dropped_total", "counter", "Reports the coordinator refused and were dropped.", m.reports_dropped);
  t.scalar("nixfleet_agent_outbox_depth", "gauge", "Reports waiting for the coordinator.", rt.outbox().size());
  t.scalar("nixfleet_agent_activations_total", "counter", "Activations that completed.", m.activations);
  t.scalar("nixfleet_agent_activation_failures_total", "counter", "Activations refused or failed.", m.activation_failures);
  t.scalar("nixfleet_agent_rollbacks_total", "counter", "Rollbacks completed.", m.rollbacks);
  t.scalar("nixfleet_agent_confirmations_total", "counter", "Targets confirmed by the health gate.", m.confirmations);
  t.scalar("nixfleet_agent_last_activation_duration_seconds", "gauge", "Duration of the last switch.", m.last_activation_seconds);
  t.scalar("nixfleet_agent_last_rollback_duration_seconds", "gauge", "Duration of the last rollback switch.", m.last_rollback_seconds);
  t.scalar("nixfleet_agent_hold", "gauge", "1 while deployments are held locally.", d.state().hold ? 1 : 0);
  t.scalar("nixfleet_agent_quarantined_targets", "gauge", "Targets refused until retried.", d.state().quarantine.size());
  t.family("nixfleet_agent_probe_up", "gauge", "Latest result of each probe (1 pass, 0 fail).");
  for (const auto& [name, up] : m.probe_up) t.sample("nixfleet_agent_probe_up", {{"probe", name}}, up);
  return t.take();
}

namespace {

asio::awaitable<void> serve_one(beast::tcp_stream stream, agent_runtime& rt) {
  stream.expires_after(std::chrono::seconds(5));
  beast::flat_buffer buf;
  http::request_parser<http::empty_body> parser;
  parser.header_limit(8 * 1024);
  auto [ec, n] = co_await http::async_read(stream, buf, parser, asio::as_tuple(asio::use_awaitable));
  if (ec) co_return;
  const auto& req = parser.get();
  http::response<http::string_body> res;
  res.version(11);
  res.keep_alive(false);
  if (req.method() == http::verb::get && req.target() == "/metrics") {
    res.result(http::status::ok);
    res.set(http::field::content_type, "text/plain; version=0.0.4");
    res.body() = render_metrics(rt);
  } else {
    res.result(http::status::not_found);
    res.body() = "not found\n";
  }
  res.prepare_payload();
  co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

}  // namespace

asio::awaitable<void> serve_metrics(std::string listen, agent_runtime& rt) {
  auto ex = co_await asio::this_coro::executor;
  const auto at = nixfleet::parse_listen(listen);
  if (!at) {
    log::error("metrics_listen must be an IP address and port; metrics are off", {{"listen", listen}});
    co_return;
  }
  const asio::ip::tcp::endpoint ep = *at;
  boost::system::error_code ec;
  asio::ip::tcp::acceptor acceptor(ex);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    log::error("cannot listen for metrics; metrics are off", {{"listen", listen}, {"error", ec.message()}});
    co_return;
  }
  log::info("metrics listening", {{"listen", listen}});
  for (;;) {
    auto [aec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (aec == asio::error::operation_aborted) co_return;
    if (aec) continue;
    asio::co_spawn(ex, serve_one(beast::tcp_stream(std::move(sock)), rt), asio::detached);
  }
}

}  // namespace nixfleet::agent::io
