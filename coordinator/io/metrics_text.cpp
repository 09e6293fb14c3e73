// The coordinator's /metrics in Prometheus text: the fleet by state, HTTP routes, the store's
// writer and the listener.
#include "service_impl.hpp"

#include <malloc.h>

#include "nixfleet/common/prometheus.hpp"
#include "nixfleet/common/version.hpp"

#include <fmt/format.h>

namespace nixfleet::coordinator::io {

std::string service::impl::render_metrics() const {
  prometheus::text t;
  t.family("nixfleet_coordinator_build_info", "gauge", "Build of this coordinator.");
  t.sample("nixfleet_coordinator_build_info", {{"version", nixfleet::version()}}, 1);
  std::map<std::string, std::uint64_t> by_state;
  std::uint64_t in_sync = 0, out_of_sync = 0, unassigned = 0;
  for (const auto& [id, m] : fleet.machines) {
    ++by_state[std::string(protocol::to_string(m.state))];
    if (!m.desired) ++unassigned;
    else if (m.current_path == m.desired->store_path) ++in_sync;
    else ++out_of_sync;
  }
  t.family("nixfleet_coordinator_machines", "gauge", "Machines by lifecycle state.");
  for (auto l : {protocol::lifecycle::active, protocol::lifecycle::maintenance, protocol::lifecycle::decommissioned}) {
    auto name = std::string(protocol::to_string(l));
    t.sample("nixfleet_coordinator_machines", {{"lifecycle", name}}, by_state[name]);
  }
  t.family("nixfleet_coordinator_machines_sync", "gauge", "Machines by whether they run their desired state.");
  t.sample("nixfleet_coordinator_machines_sync", {{"sync", "in_sync"}}, in_sync);
  t.sample("nixfleet_coordinator_machines_sync", {{"sync", "out_of_sync"}}, out_of_sync);
  t.sample("nixfleet_coordinator_machines_sync", {{"sync", "unassigned"}}, unassigned);
  t.family("nixfleet_coordinator_rollouts", "gauge", "Rollouts by status.");
  std::map<std::string, std::uint64_t> by_status;
  for (const auto& [id, r] : fleet.rollouts) ++by_status[std::string(protocol::to_string(r.status))];
  for (auto s : {protocol::rollout_status::running, protocol::rollout_status::paused,
                 protocol::rollout_status::completed, protocol::rollout_status::cancelled,
                 protocol::rollout_status::halted, protocol::rollout_status::reverted}) {
    auto name = std::string(protocol::to_string(s));
    t.sample("nixfleet_coordinator_rollouts", {{"status", name}}, by_status[name]);
  }
  t.family("nixfleet_coordinator_http_requests_total", "counter", "HTTP requests by route and status.");
  for (const auto& [route, m] : route_stats)
    for (const auto& [status, n] : m.by_status)
      t.sample("nixfleet_coordinator_http_requests_total", {{"route", route}, {"status", std::to_string(status)}}, n);
  t.family("nixfleet_coordinator_http_request_duration_seconds", "histogram", "Time to answer, by route.");
  for (const auto& [route, m] : route_stats) {
    for (std::size_t i = 0; i < latency_buckets.size(); ++i)
      t.sample("nixfleet_coordinator_http_request_duration_seconds_bucket",
               {{"route", route}, {"le", fmt::format("{}", latency_buckets[i])}}, m.buckets[i]);
    t.sample("nixfleet_coordinator_http_request_duration_seconds_bucket", {{"route", route}, {"le", "+Inf"}}, m.count);
    t.sample("nixfleet_coordinator_http_request_duration_seconds_sum", {{"route", route}}, m.sum);
    t.sample("nixfleet_coordinator_http_request_duration_seconds_count", {{"route", route}}, m.count);
  }
  t.family("nixfleet_coordinator_api_key_lookups_total", "counter",
           "Keys not in memory looked up: found in the store, unknown to it, or refused from the negative cache.");
  t.sample("nixfleet_coordinator_api_key_lookups_total", {{"result", "found"}}, key_lookups.found);
  t.sample("nixfleet_coordinator_api_key_lookups_total", {{"result", "unknown"}}, key_lookups.unknown);
  t.sample("nixfleet_coordinator_api_key_lookups_total", {{"result", "cached"}}, key_lookups.cached);
  t.scalar("nixfleet_coordinator_reports_ingested_total", "counter", "Agent reports received.", reports_ingested);
  t.family("nixfleet_coordinator_webhook_attempts_total", "counter",
           "Webhook delivery attempts: delivered, to be retried, or the last before giving up.");
  t.sample("nixfleet_coordinator_webhook_attempts_total", {{"outcome", "delivered"}}, webhook_outcomes.delivered);
  t.sample("nixfleet_coordinator_webhook_attempts_total", {{"outcome", "retry"}}, webhook_outcomes.retried);
  t.sample("nixfleet_coordinator_webhook_attempts_total", {{"outcome", "failed"}}, webhook_outcomes.failed);
  t.scalar("nixfleet_coordinator_report_batches_over_budget_total", "counter",
           "Report batches answered 429: their machine was over its report budget.", reports_over_budget);
  const auto ws = db->stats();
  t.scalar("nixfleet_coordinator_store_transactions_total", "counter", "Write transactions committed.", ws.transactions);
  t.scalar("nixfleet_coordinator_store_change_sets_total", "counter", "Change sets written (batched into transactions).",
           ws.change_sets);
  t.scalar("nixfleet_coordinator_store_write_seconds_total", "counter", "Time spent writing transactions.",
           std::chrono::duration<double>(ws.busy).count());
  t.scalar("nixfleet_coordinator_store_backlog", "gauge", "Store operations queued or running.", db->backlog());
  // What the allocator holds for live objects (the rest of the resident set is code, stacks, and
  // memory freed but not returned).
  const struct mallinfo2 heap = ::mallinfo2();
  t.scalar("nixfleet_coordinator_heap_in_use_bytes", "gauge", "Heap bytes allocated and not freed.", heap.uordblks);
  if (api) {
    auto s = api->stats();
    t.scalar("nixfleet_coordinator_open_connections", "gauge", "Open API connections.", s.open_connections);
    t.scalar("nixfleet_coordinator_connections_accepted_total", "counter", "API connections accepted.", s.accepted);
    t.scalar("nixfleet_coordinator_connections_timed_out_total", "counter", "Connections closed for being too slow.",
             s.timed_out);
    t.family("nixfleet_coordinator_tls_handshakes_total", "counter", "Completed TLS handshakes, by session resumption.");
    t.sample("nixfleet_coordinator_tls_handshakes_total", {{"resumed", "false"}}, s.tls_handshakes - s.tls_resumed);
    t.sample("nixfleet_coordinator_tls_handshakes_total", {{"resumed", "true"}}, s.tls_resumed);
    t.scalar("nixfleet_coordinator_quick_answers_total", "counter",
             "Polls answered from the request head alone (the poll path's plain case).", s.quick);
    t.scalar("nixfleet_coordinator_long_polls_held", "gauge", "Polls held until their machine's desired state changes.",
             s.held);
  }
  t.family("nixfleet_coordinator_long_polls_total", "counter",
           "Held polls answered: the desired state changed, the wait elapsed, or the agent sent its next request.");
  t.sample("nixfleet_coordinator_long_polls_total", {{"outcome", "changed"}}, long_polls.changed);
  t.sample("nixfleet_coordinator_long_polls_total", {{"outcome", "expired"}}, long_polls.expired);
  t.sample("nixfleet_coordinator_long_polls_total", {{"outcome", "released"}}, long_polls.released);
  if (ui_server) {
    t.scalar("nixfleet_coordinator_ui_sessions", "gauge", "Dashboard sessions held (some may have ended unseen).",
             ui_sessions.size());
    t.scalar("nixfleet_coordinator_ui_streams", "gauge", "Dashboard live-update streams open.", ui_streams);
    t.scalar("nixfleet_coordinator_ui_open_connections", "gauge", "Open dashboard connections.",
             ui_server->stats().open_connections);
    t.scalar("nixfleet_coordinator_ui_fleet_pages_shared_total", "counter",
             "Fleet pages answered from the one computed for the same query.", fleet_pages_shared);
  }
  return t.take();
}

}  // namespace nixfleet::coordinator::io
