// Webhook deliveries: the durable queue (the store) is read for what is due, each delivery is
// POSTed signed, and its outcome (delivered, retry later, given up) is written back. Never on the
// request path: a receiver that is slow or gone costs one attempt slot until its deadline.
#include "service_impl.hpp"

#include "nixfleet/common/http_client.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <random>

namespace nixfleet::coordinator::io {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr std::size_t per_hook = 2;  // attempts at once to one hook

// The wait before attempt `attempts + 1`: retry_min doubling per failed attempt, up to retry_max,
// ±20 % so that a receiver coming back is not met by every delivery at once.
std::chrono::milliseconds backoff(const service_options& o, std::uint32_t attempts) {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  auto wait = o.webhook_retry_min;
  for (std::uint32_t i = 1; i < attempts && wait < o.webhook_retry_max; ++i) wait *= 2;
  wait = std::min(wait, o.webhook_retry_max);
  std::uniform_real_distribution<double> spread(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(wait.count()) * spread(random)));
}

}  // namespace

void service::impl::wake_webhooks() {
  if (webhook_timer != nullptr) webhook_timer->cancel();
}

asio::awaitable<void> service::impl::send_due_webhooks() {
  if (fatal || stopping || fleet.webhooks.empty()) co_return;
  const auto room = opts.webhook_concurrency - std::min(opts.webhook_concurrency, deliveries_in_flight.size());
  if (room == 0) co_return;
  auto job = [now = opts.clock(), n = static_cast<std::uint32_t>(room * 4)](storage& st) { return st.due_deliveries(now, n); };
  auto due = co_await db->run<std::vector<delivery_job>>(std::move(job));
  for (auto& d : due) {
    if (deliveries_in_flight.size() >= opts.webhook_concurrency) break;
    if (deliveries_in_flight.contains(d.id) || hook_in_flight[d.hook_id] >= per_hook) continue;
    deliveries_in_flight.insert(d.id);
    ++hook_in_flight[d.hook_id];
    asio::co_spawn(home, deliver(std::move(d)), asio::detached);
  }
}

asio::awaitable<void> service::impl::deliver(delivery_job d) {
  auto self = shared_from_this();  // lives until the attempt is recorded
  const auto id = d.id;
  const auto hook_id = d.hook_id;
  struct release_slot {
    service::impl& s;
    std::uint64_t id;
    std::string hook;
    ~release_slot() {
      s.deliveries_in_flight.erase(id);
      if (auto it = s.hook_in_flight.find(hook); it != s.hook_in_flight.end() && --it->second == 0) s.hook_in_flight.erase(it);
    }
  } slot{*this, id, hook_id};

  auto hook = fleet.webhooks.find(hook_id);
  if (hook == fleet.webhooks.end()) co_return;  // removed: its deliveries went with it
  const auto url = hook->second.info.url;
  const auto secret = hook->second.secret;

  // The body as queued, with the delivery's id: what a receiver deduplicates on.
  std::string body;
  {
    boost::system::error_code ec;
    auto v = json::parse(d.body, ec);
    if (ec || !v.is_object()) {
      log::error("webhook_delivery_corrupt", {{"delivery", id}});
      co_return;
    }
    auto& o = v.as_object();
    o["delivery"] = id;
    body = json::serialize(o);
  }
  http_client::request req;
  req.method = "POST";
  req.body = body;
  req.headers = {{"Content-Type", "application/json"},
                 {"X-Nixfleet-Event", d.event},
                 {"X-Nixfleet-Delivery", std::to_string(id)}};
  if (secret) {
    // Over the time and the body, so that a captured delivery cannot be replayed much later.
    const auto t = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(opts.clock().time_since_epoch()).count());
    req.headers.emplace_back("X-Nixfleet-Signature", "t=" + t + ",v1=" + protocol::hmac_sha256_hex(*secret, t + "." + body));
  }

  delivery_outcome out;
  out.id = id;
  out.attempts = d.attempts + 1;
  std::string why;
  try {
    auto parsed = http_client::parse_url(url, &why);
    if (!parsed) throw std::runtime_error("bad URL: " + why);
    http_client::client client(*parsed, http_client::tls_files{},
                               http_client::options{.timeout = opts.webhook_timeout,
                                                    .body_limit = 64 * 1024,
                                                    .user_agent = "nixfleet-coordinator webhook"});
    auto r = co_await client.exchange(std::move(req));
    if (r.answer) {
      out.status = r.answer->status;
      if (r.answer->status >= 200 && r.answer->status < 300) out.state = protocol::delivery_state::delivered;
      else why = "HTTP " + std::to_string(r.answer->status);
    } else {
      why = r.error;
    }
  } catch (const std::exception& e) {
    why = e.what();
  }
  if (stopping || fatal) co_return;  // not recorded: tried again after the restart (at least once)
  const auto now = opts.clock();
  if (out.state == protocol::delivery_state::delivered) {
    out.delivered_at = now;
    ++webhook_outcomes.delivered;
  } else {
    out.error = why.substr(0, 1024);
    if (now - d.created_at >= opts.webhook_give_up_after) {
      out.state = protocol::delivery_state::failed;
      ++webhook_outcomes.failed;
      log::warn("webhook_delivery_given_up",
                {{"hook", hook_id}, {"delivery", id}, {"attempts", out.attempts}, {"error", *out.error}});
    } else {
      out.next_at = now + backoff(opts, out.attempts);
      ++webhook_outcomes.retried;
      log::warn("webhook_delivery_failed", {{"hook", hook_id}, {"delivery", id}, {"attempts", out.attempts},
                                            {"error", *out.error}});
    }
  }
  auto write = [out](storage& st) {
    st.record_delivery(out);
    return true;
  };
  try {
    co_await db->run<bool>(std::move(write));
  } catch (const std::exception& e) {
    log::error("webhook_delivery_not_recorded", {{"delivery", id}, {"error", e.what()}});
  }
  // A retry may already be due (a short minimum), and the slot is free for the next.
  wake_webhooks();
}

// The delivery loop: what is due every second, and at once after a commit queued deliveries.
asio::awaitable<void> webhook_loop(std::shared_ptr<service::impl> self) {
  auto& t = self->loop_timers.emplace_back(self->home);
  self->webhook_timer = &t;
  ++self->loops_running;
  while (!self->stopping && !self->fatal) {
    try {
      co_await self->send_due_webhooks();
    } catch (const std::exception& e) {
      log::error("webhook_loop_failed", {{"error", e.what()}});
    }
    t.expires_after(std::chrono::seconds(1));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  self->webhook_timer = nullptr;
  --self->loops_running;
}

}  // namespace nixfleet::coordinator::io
