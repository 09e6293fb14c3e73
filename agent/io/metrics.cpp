// /metrics in the Prometheus text format, served by the common HTTP server.
#include "nixfleet/agent/io/metrics.hpp"

#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/common/listen.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/prometheus.hpp"
#include "nixfleet/common/version.hpp"

#include "nixfleet/common/http_server.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nixfleet::agent::io {
namespace asio = boost::asio;

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
  if (m.certificate_expiry_unix) {
    t.scalar("nixfleet_agent_certificate_expiry_timestamp_seconds", "gauge", "When this host's certificate expires.",
             *m.certificate_expiry_unix);
    t.scalar("nixfleet_agent_certificate_days_left", "gauge", "Days until this host's certificate expires.",
             m.certificate_days_left);
    t.scalar("nixfleet_agent_certificate_renewals_total", "counter", "Certificates renewed.", m.certificate_renewals);
    t.scalar("nixfleet_agent_certificate_renewal_failures_total", "counter", "Renewal attempts that failed.",
             m.certificate_renewal_failures);
  }
  t.family("nixfleet_agent_probe_up", "gauge", "Latest result of each probe (1 pass, 0 fail).");
  for (const auto& [name, up] : m.probe_up) t.sample("nixfleet_agent_probe_up", {{"probe", name}}, up);
  return t.take();
}

asio::awaitable<void> serve_metrics(std::string listen, agent_runtime& rt) {
  auto ex = co_await asio::this_coro::executor;
  const auto at = nixfleet::parse_listen(listen);
  if (!at) {
    log::error("metrics_listen must be an IP address and port; metrics are off", {{"listen", listen}});
    co_return;
  }
  server_options o;
  o.listen = *at;
  o.max_connections = 64;
  o.idle_timeout = std::chrono::seconds(5);
  o.request_timeout = std::chrono::seconds(5);
  o.body_limit = 0;
  o.server_name = "nixfleet-agent";
  auto errors = [](unsigned status, std::string, std::string message) {
    http_response r;
    r.status = status;
    r.body = std::move(message) + "\n";
    r.content_type = "text/plain";
    return r;
  };
  auto handler = [&rt, errors](http_request& req) -> asio::awaitable<http_response> {
    if (req.msg.method() != boost::beast::http::verb::get || req.msg.target() != "/metrics")
      co_return errors(404, "not_found", "not found");
    http_response r;
    r.body = render_metrics(rt);
    r.content_type = "text/plain; version=0.0.4";
    co_return r;
  };
  http_server server(ex, o, handler, errors);
  try {
    server.start();
  } catch (const std::exception& e) {
    log::error("cannot listen for metrics; metrics are off", {{"listen", listen}, {"error", e.what()}});
    co_return;
  }
  log::info("metrics listening", {{"listen", listen}});
  // Serves until the agent stops (cancellation ends this wait; the server closes with it).
  asio::steady_timer forever(ex, std::chrono::hours(24 * 365 * 10));
  for (;;) co_await forever.async_wait(asio::use_awaitable);
}

}  // namespace nixfleet::agent::io
