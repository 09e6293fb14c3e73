// The coordinator service, the thin driver around the fleet core: all fleet state lives in
// memory and is touched on the io thread only. An event is applied in memory by the core, its
// change set written to the store, and answered once durable; desired states are published to
// pollers only after they are durable. Routes are in routes.cpp, metrics in metrics_text.cpp.
#include "service_impl.hpp"

#include "nixfleet/common/log.hpp"
#include "nixfleet/common/systemd.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <thread>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cmath>

namespace nixfleet::coordinator::io {

namespace asio = boost::asio;
using protocol::role;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

http_response json_response(unsigned status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http_response error_response(unsigned status, std::string code, std::string message) {
  return json_response(status, protocol::serialize(protocol::error_body{std::move(code), std::move(message)}));
}

http_response refused(const core::refusal& r) { return error_response(r.status, r.code, r.message); }

core::create_key new_key(protocol::key_request request) {
  return {"key-" + protocol::random_hex(6), "nfk_" + protocol::random_hex(32), std::move(request)};
}

service::impl::impl(asio::io_context& c, service_options o) : ctx(c), home(asio::make_strand(c)), opts(std::move(o)) {
  if (!opts.clock)
    opts.clock = [] { return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now()); };
  store = opts.open_store ? opts.open_store() : open_sqlite(opts.db_path);
  db.emplace(*store);
  fleet = core::make_fleet(store->load());
  publish_all();
  log::info("store_loaded", {{"machines", fleet.machines.size()},
                             {"releases", fleet.releases.size()},
                             {"rollouts", fleet.rollouts.size()},
                             {"keys", fleet.keys.size()}});
}

namespace {

std::string etag_of(std::string_view body) { return "\"" + protocol::sha256_hex(body).substr(0, 32) + "\""; }

}  // namespace

void service::impl::publish(const std::string& id, bool hot) {
  auto m = fleet.machines.find(id);
  if (m == fleet.machines.end()) return;
  auto& out = served[id];
  const std::string before(out.etag());
  std::string body;
  if (auto d = core::served(fleet, m->second, opts.poll_hint_s)) {
    body = protocol::serialize(*d);
    out.set(etag_of(body));
  } else {
    out.set(nothing_assigned_etag);
  }
  if (out.etag() == before) return;  // a body kept hot is still the one published
  drop_hot(id);
  if (hot && !body.empty()) keep_hot(id, std::move(body));
  // Long polls of this machine answer now, with what they were waiting for.
  if (auto h = held_polls.find(id); h != held_polls.end())
    for (auto* wake : h->second) wake->expires_at(std::chrono::steady_clock::now());
}

void service::impl::keep_hot(const std::string& id, std::string body) {
  if (body.size() > opts.hot_bodies_max / 16) return;
  if (hot_bytes + body.size() > opts.hot_bodies_max) {
    hot_bodies.clear();
    hot_bytes = 0;
  }
  hot_bytes += body.size();
  hot_bodies.insert_or_assign(id, std::move(body));
}

void service::impl::drop_hot(const std::string& id) {
  if (auto it = hot_bodies.find(id); it != hot_bodies.end()) {
    hot_bytes -= it->second.size();
    hot_bodies.erase(it);
  }
}

std::optional<service::impl::desired_view> service::impl::desired_now(const std::string& id,
                                                                     std::string_view if_none_match) {
  auto it = served.find(id);
  const std::string_view etag = it == served.end() ? nothing_assigned_etag : it->second.etag();
  if (if_none_match == etag) return desired_view{304, etag, {}};
  if (etag == nothing_assigned_etag) return desired_view{204, etag, {}};
  if (auto hot = hot_bodies.find(id); hot != hot_bodies.end()) return desired_view{200, etag, hot->second};
  // Made again: the same bytes as published unless memory holds a change not yet durable.
  auto m = fleet.machines.find(id);
  if (m == fleet.machines.end()) return std::nullopt;
  auto d = core::served(fleet, m->second, opts.poll_hint_s);
  if (!d) return std::nullopt;
  remade_ = protocol::serialize(*d);
  if (etag_of(remade_) != etag) return std::nullopt;
  keep_hot(id, remade_);
  return desired_view{200, etag, remade_};
}

std::optional<http_response> service::impl::desired_answer(const std::string& id, std::string_view if_none_match) {
  if (fatal) return error_response(503, "unavailable", "the coordinator lost its store and is stopping");
  auto now = desired_now(id, if_none_match);
  if (!now) return std::nullopt;
  http_response r;
  r.status = now->status;
  r.body = std::string(now->body);
  r.headers.emplace_back("ETag", std::string(now->etag));
  if (opts.long_poll_max.count() > 0)
    r.headers.emplace_back(std::string(protocol::long_poll_header), std::to_string(opts.long_poll_max.count()));
  return r;
}

asio::awaitable<http_response> service::impl::answer_desired(const std::string& id, std::string if_none_match) {
  // Memory runs ahead of the store only while a commit is in flight; once it is durable the change
  // is published and the body matches its ETag again.
  for (int i = 0; i < 3; ++i) {
    if (auto r = desired_answer(id, if_none_match)) co_return std::move(*r);
    co_await settled();
  }
  if (auto r = desired_answer(id, if_none_match)) co_return std::move(*r);
  auto r = error_response(503, "changing", "this machine's desired state is being changed; retry");
  r.headers.emplace_back("Retry-After", "1");
  co_return r;
}

void service::impl::publish_all() {
  for (const auto& [id, m] : fleet.machines) publish(id, false);
}

void service::impl::changed(bool machines, bool rollouts, bool releases, bool audit) {
  if (!(machines || rollouts || releases || audit)) return;
  changes.machines += machines;
  changes.rollouts += rollouts;
  changes.releases += releases;
  changes.audit += audit;
  wake_waiters();
}

void service::impl::wake_waiters() {
  // At most one wake per stream and hold: a stream leaves the set while it holds (ui.cpp).
  for (auto* t : change_waiters) t->cancel();
}

asio::awaitable<bool> service::impl::commit(core::change_set cs, std::vector<std::string> republish, bool all) {
  const bool machines = !cs.machines.empty() || !cs.reports.empty() || !cs.certificates.empty(),
             rollouts = !cs.rollouts.empty(), releases = !cs.releases.empty() || !cs.deleted_releases.empty(),
             audit = !cs.audit.empty();
  // The webhooks that want the audited events get them queued in the same transaction.
  auto queued = core::deliveries_for(fleet, cs.audit);
  const bool deliveries = !queued.empty();
  cs.deliveries.insert(cs.deliveries.end(), std::make_move_iterator(queued.begin()), std::make_move_iterator(queued.end()));
  if (!cs.empty()) {
    ++writes_in_flight;
    std::string err = co_await db->commit(std::move(cs));
    --writes_in_flight;
    if (!err.empty()) {
      fatal = true;
      log::error("store_commit_fatal", {{"error", err}});
      if (opts.on_fatal) opts.on_fatal(err);
      co_return false;
    }
  }
  if (all) publish_all();
  else
    for (const auto& id : republish) publish(id);
  changed(machines, rollouts, releases, audit);
  if (deliveries) wake_webhooks();
  co_return true;
}

asio::awaitable<http_response> service::impl::perform(core::event e) {
  if (fatal) co_return error_response(503, "unavailable", "the coordinator lost its store and is stopping");
  auto fx = core::apply(fleet, e, opts.clock());
  if (fx.refused) co_return refused(*fx.refused);
  if (!co_await commit(std::move(fx.changes), std::move(fx.republish), fx.republish_all))
    co_return error_response(503, "unavailable", "the coordinator could not store the change");
  if (fx.reconcile) reconcile_soon();
  http_response r;
  r.status = fx.status;
  std::visit(
      [&r](const auto& answer) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(answer)>, std::monostate>)
          r.body = protocol::serialize(answer);
      },
      fx.reply);
  co_return r;
}

asio::awaitable<void> service::impl::settled() {
  if (writes_in_flight == 0) co_return;
  auto barrier = [](storage&) { return true; };
  co_await db->run<bool>(std::move(barrier));
}

asio::awaitable<void> service::impl::reconcile_all() {
  if (fatal) co_return;
  auto fx = core::apply(fleet, core::event{"coordinator", core::tick{}}, opts.clock());
  co_await commit(std::move(fx.changes), std::move(fx.republish), fx.republish_all);
}

void service::impl::reconcile_soon() {
  if (!opts.reconcile_promptly || !reconcile_timer) return;
  // A pass under way sees the flag when it ends and goes again: what it read may predate this.
  reconcile_wanted = true;
  reconcile_timer->cancel();
}

std::chrono::milliseconds service::impl::until_next_reconcile() const {
  auto wait = opts.reconcile_interval;
  if (!opts.reconcile_promptly) return wait;
  const auto now = opts.clock();
  for (const auto& [id, r] : fleet.rollouts) {
    if (r.status != protocol::rollout_status::running) continue;
    for (const auto& w : r.waves) {
      if (w.status != protocol::wave_status::soaking || !w.soak_until) continue;
      // A little past the end, so that the pass sees it ended; never a busy loop.
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*w.soak_until - now) + std::chrono::milliseconds(5);
      wait = std::min(wait, std::max(left, std::chrono::milliseconds(10)));
    }
  }
  return wait;
}

std::chrono::seconds service::impl::spend_report_budget(const std::string& machine, std::uint64_t count,
                                                        std::uint64_t bytes) {
  const double window_s = std::chrono::duration<double>(opts.report_budget_window).count();
  const double cap_n = static_cast<double>(opts.report_budget_count), cap_b = static_cast<double>(opts.report_budget_bytes);
  const auto now = std::chrono::steady_clock::now();
  // Bounded: with plain HTTP anyone may name a machine. Buckets that have refilled are the same
  // as absent ones, and go first.
  if (report_budgets.size() > 100'000)
    std::erase_if(report_budgets, [&](const auto& kv) {
      return std::chrono::duration<double>(now - kv.second.at).count() >= window_s;
    });
  auto [it, fresh] = report_budgets.try_emplace(machine, report_budget{cap_n, cap_b, now});
  auto& b = it->second;
  if (!fresh) {
    const double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.reports = std::min(cap_n, b.reports + elapsed * cap_n / window_s);
    b.bytes = std::min(cap_b, b.bytes + elapsed * cap_b / window_s);
    b.at = now;
  }
  double wait = 0;
  const auto n = static_cast<double>(count), size = static_cast<double>(bytes);
  // A batch larger than the whole budget waits for a full bucket and is then let through, so
  // that no batch is refused for ever (the body limit bounds it).
  if (cap_n > 0 && b.reports < std::min(n, cap_n)) wait = std::max(wait, (std::min(n, cap_n) - b.reports) * window_s / cap_n);
  if (cap_b > 0 && b.bytes < std::min(size, cap_b)) wait = std::max(wait, (std::min(size, cap_b) - b.bytes) * window_s / cap_b);
  if (wait > 0) {
    ++reports_over_budget;
    return std::chrono::seconds(static_cast<std::int64_t>(std::ceil(wait)));
  }
  if (cap_n > 0) b.reports = std::max(0.0, b.reports - n);
  if (cap_b > 0) b.bytes = std::max(0.0, b.bytes - size);
  return std::chrono::seconds(0);
}

asio::awaitable<void> service::impl::sync_keys() {
  if (fatal) co_return;
  core::change_set cs;
  for (const auto& hash : keys_used)
    if (auto k = fleet.keys.find(hash); k != fleet.keys.end()) cs.keys.push_back(k->second);
  keys_used.clear();
  std::vector<std::string> republish;  // none; named: GCC 12 mishandles temporaries in co_await calls
  if (!co_await commit(std::move(cs), std::move(republish))) co_return;
  auto job = [](storage& st) { return st.list_keys(); };
  auto stored = co_await db->run<std::vector<core::key_record>>(std::move(job));
  // Only added: a key this process holds but the store does not is one whose creation is still
  // being written (keys are deleted through this process alone).
  for (auto& k : stored) {
    if (fleet.keys.contains(k.hash)) continue;
    unknown_keys.erase(k.hash);
    auto hash = k.hash;
    fleet.keys.emplace(std::move(hash), std::move(k));
  }
}

asio::awaitable<void> service::impl::checkpoint_audit() {
  if (!opts.audit_key || fatal) co_return;
  auto job = [key = *opts.audit_key, now = opts.clock()](storage& st) { return st.checkpoint_audit(key, now); };
  try {
    auto made = co_await db->run<std::optional<protocol::audit_checkpoint>>(std::move(job));
    // In the journal as well: a copy of the anchor outside the database it vouches for.
    if (made)
      log::info("audit_checkpoint", {{"seq", made->seq},
                                     {"hash", made->hash},
                                     {"at", protocol::format_time(made->at)},
                                     {"signature", made->signature}});
  } catch (const std::exception& e) {
    log::error("audit_checkpoint_failed", {{"error", e.what()}});
  }
}

asio::awaitable<void> service::impl::prune_reports() {
  const auto before = opts.clock() - opts.report_retention;
  auto job = [before, max = opts.report_retention_bytes](storage& s) { return s.prune_reports(before, max); };
  auto n = co_await db->run<std::uint64_t>(std::move(job));
  if (n > 0) log::info("reports_pruned", {{"rows", n}});
  auto settled = [before](storage& s) { return s.prune_deliveries(before); };
  if (auto d = co_await db->run<std::uint64_t>(std::move(settled)); d > 0) log::info("webhook_deliveries_pruned", {{"rows", d}});
}

namespace {

// A background loop: `step` every `interval` (first at once, or after the first interval) until
// the service stops or loses its store. Its timer is the service's, so that stop can cancel it,
// and stop waits until the loop has left.
asio::awaitable<void> periodic(std::shared_ptr<service::impl> self, std::chrono::milliseconds interval, bool at_once,
                               const char* what, asio::awaitable<void> (service::impl::*step)()) {
  auto& t = self->loop_timers.emplace_back(self->home);
  ++self->loops_running;
  for (bool first = true; !self->stopping && !self->fatal; first = false) {
    if (!(first && at_once)) {
      t.expires_after(interval);
      co_await t.async_wait(use_tuple);
      if (self->stopping || self->fatal) break;
    }
    try {
      co_await ((*self).*step)();
    } catch (const std::exception& e) {
      log::error(what, {{"error", e.what()}});
    }
  }
  --self->loops_running;
}

// The reconcile loop: a pass every interval, at the end of a soak, and soon after a rollout's host
// reported a step (reconcile_soon cancels the wait).
asio::awaitable<void> reconcile_loop(std::shared_ptr<service::impl> self) {
  auto& t = self->loop_timers.emplace_back(self->home);
  self->reconcile_timer = &t;
  ++self->loops_running;
  while (!self->stopping && !self->fatal) {
    if (!self->reconcile_wanted) {
      t.expires_after(self->until_next_reconcile());
      co_await t.async_wait(use_tuple);
      if (self->stopping || self->fatal) break;
    }
    self->reconcile_wanted = false;
    try {
      co_await self->reconcile_all();
    } catch (const std::exception& e) {
      log::error("reconcile_failed", {{"error", e.what()}});
    }
  }
  self->reconcile_timer = nullptr;
  --self->loops_running;
}

}  // namespace

// ---------------------------------------------------------------------------------------

service::service(asio::io_context& ctx, service_options opts) : impl_(std::make_shared<impl>(ctx, std::move(opts))) {}

service::~service() = default;

void service::start() {
  auto self = impl_;
  std::weak_ptr<impl> weak = self;
  auto api_options = self->opts.api;
  api_options.max_body_limit = std::max(api_options.max_body_limit, self->opts.release_body_limit);
  api_options.body_limit_for = [weak](const boost::beast::http::request_header<>& h) -> std::size_t {
    auto s = weak.lock();
    return s ? s->body_limit_for(h) : 0;
  };
  // Polls answered from the request head (one thread: the connection runs on `home` already).
  if (self->opts.quick_polls)
    api_options.quick = [weak](const quick_request& q, std::string& out) {
      auto s = weak.lock();
      return s && s->quick_answer(q, out);
    };
  // More than one thread: connections on strands of their own, the application on `home`.
  auto make_server = [&](std::optional<http_server>& slot, server_options so, http_handler h, error_renderer e) {
    if (self->opts.threads > 1)
      slot.emplace(self->home, self->ctx.get_executor(), std::move(so), std::move(h), std::move(e));
    else
      slot.emplace(self->home, std::move(so), std::move(h), std::move(e));
  };
  make_server(
      self->api, api_options,
      [weak](http_request& req) -> asio::awaitable<http_response> {
        auto s = weak.lock();
        if (!s) co_return error_response(503, "unavailable", "shutting down");
        co_return co_await s->handle(req);
      },
      [](unsigned status, std::string code, std::string message) {
        auto r = error_response(status, std::move(code), std::move(message));
        r.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
        return r;
      });
  self->api->start();
  if (self->opts.metrics_listen) {
    server_options mo;
    mo.listen = *self->opts.metrics_listen;
    mo.max_connections = 64;
    make_server(
        self->metrics_server, mo,
        [weak](http_request& req) -> asio::awaitable<http_response> {
          auto s = weak.lock();
          if (!s) co_return error_response(503, "unavailable", "shutting down");
          auto target = req.msg.target();
          if (target != "/metrics") co_return error_response(404, "not_found", "only /metrics is served here");
          http_response r;
          r.body = s->render_metrics();
          r.content_type = "text/plain; version=0.0.4";
          co_return r;
        },
        [](unsigned status, std::string code, std::string message) {
          return error_response(status, std::move(code), std::move(message));
        });
    self->metrics_server->start();
  }
  if (self->opts.ui) {
    make_server(
        self->ui_server, *self->opts.ui,
        [weak](http_request& req) -> asio::awaitable<http_response> {
          auto s = weak.lock();
          if (!s) co_return error_response(503, "unavailable", "shutting down");
          co_return co_await s->handle_ui(req);
        },
        [](unsigned status, std::string code, std::string message) {
          return error_response(status, std::move(code), std::move(message));
        });
    self->ui_server->start();
  }
  const auto& o = self->opts;
  asio::co_spawn(self->home, reconcile_loop(self), asio::detached);
  asio::co_spawn(self->home, webhook_loop(self), asio::detached);
  asio::co_spawn(self->home, periodic(self, o.prune_interval, true, "prune_failed", &impl::prune_reports), asio::detached);
  asio::co_spawn(self->home, periodic(self, o.key_sync_interval, false, "key_sync_failed", &impl::sync_keys),
                 asio::detached);
  if (o.audit_key)
    asio::co_spawn(self->home,
                   periodic(self, o.checkpoint_interval, true, "audit_checkpoint_failed", &impl::checkpoint_audit),
                   asio::detached);
}

asio::ip::tcp::endpoint service::api_endpoint() const { return impl_->api->local_endpoint(); }

std::optional<asio::ip::tcp::endpoint> service::ui_endpoint() const {
  if (!impl_->ui_server) return std::nullopt;
  return impl_->ui_server->local_endpoint();
}

std::optional<asio::ip::tcp::endpoint> service::metrics_endpoint() const {
  if (!impl_->metrics_server) return std::nullopt;
  return impl_->metrics_server->local_endpoint();
}

asio::awaitable<void> service::stop(std::chrono::milliseconds drain) {
  auto self = impl_;
  self->stopping = true;
  self->wake_waiters();  // the dashboards' live streams end
  if (self->ui_server) co_await self->ui_server->shutdown(std::chrono::milliseconds(500));
  if (self->api) co_await self->api->shutdown(drain);
  if (self->metrics_server) co_await self->metrics_server->shutdown(std::chrono::milliseconds(100));
  for (auto& t : self->loop_timers) t.cancel();
  // The last uses not yet written.
  try {
    co_await self->sync_keys();
  } catch (const std::exception& e) {
    log::error("key_sync_failed", {{"error", e.what()}});
  }
  co_await self->checkpoint_audit();
  while (self->writes_in_flight > 0 || self->loops_running > 0) {
    asio::steady_timer t(self->home, std::chrono::milliseconds(5));
    co_await t.async_wait(use_tuple);
  }
}

asio::awaitable<void> service::reconcile_now() { co_await impl_->reconcile_all(); }

asio::any_io_executor service::executor() const { return impl_->home; }

std::uint64_t service::store_operations() const { return impl_->store->operations(); }

std::string create_key(const std::string& db_path, const std::string& name, role r, const std::string& actor) {
  auto store = open_sqlite(db_path);
  core::fleet fleet;  // a key stands alone: nothing else of the fleet is needed to make one
  const auto now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  auto make = new_key({name, r});
  auto fx = core::apply(fleet, core::event{actor, make}, now);
  if (fx.refused) throw storage_error(fx.refused->message);
  auto results = store->commit({&fx.changes});
  if (!results[0].empty()) throw storage_error(results[0]);
  return make.secret;
}

int run_serve(service_options opts) {
  const std::size_t threads = std::max<std::size_t>(opts.threads, 1);
  asio::io_context ctx(static_cast<int>(threads));
  int exit_code = 0;
  opts.on_fatal = [&ctx, &exit_code](const std::string& why) {
    log::error("store_write_failed_stopping", {{"error", why}});
    exit_code = 70;
    ctx.stop();
  };
  std::optional<service> svc;
  try {
    svc.emplace(ctx, opts);
    svc->start();
  } catch (const std::system_error& e) {
    log::error("cannot_listen", {{"error", e.code().message()}});
    return 71;
  } catch (const std::exception& e) {
    log::error("cannot_start", {{"error", e.what()}});
    return 71;
  }
  log::info("coordinator_listening", {{"api", svc->api_endpoint().address().to_string() + ":" +
                                                   std::to_string(svc->api_endpoint().port())},
                                      {"tls", opts.api.tls.has_value()}});
  if (auto ui = svc->ui_endpoint())
    log::info("dashboard_listening", {{"ui", ui->address().to_string() + ":" + std::to_string(ui->port())},
                                      {"tls", opts.ui->tls.has_value()}});
  if (opts.insecure_http)
    log::warn("insecure_http", {{"detail", "plain HTTP: API keys travel in clear and agent routes are open to anyone "
                                           "who can reach this address"}});
  else if (!opts.api.tls || !opts.api.tls->client_ca_file)
    log::warn("no_client_ca", {{"detail", "no --client-ca: agents cannot authenticate and their routes refuse them"}});
  if (opts.audit_key)
    log::info("audit_anchored", {{"public_key", protocol::to_public_key(*opts.audit_key).to_string()}});
  else
    log::warn("audit_not_anchored", {{"detail", "no --audit-key: the audit chain is not signed, and whoever can write "
                                                "the database can rewrite it undetected"}});
  asio::signal_set signals(svc->executor(), SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::info("stopping", {{"signal", sig}});
    systemd::notify("STOPPING=1");
    asio::co_spawn(
        svc->executor(),
        [&]() -> asio::awaitable<void> {
          co_await svc->stop(std::chrono::seconds(10));
          ctx.stop();
        },
        asio::detached);
  });
  systemd::notify("READY=1");
  std::vector<std::thread> more;
  for (std::size_t i = 1; i < threads; ++i) more.emplace_back([&ctx] { ctx.run(); });
  ctx.run();
  for (auto& t : more) t.join();
  return exit_code;
}

}  // namespace nixfleet::coordinator::io
