// The probe registry and running probes with a hard time limit, concurrently.
#include "nixfleet/health/probe.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include <exception>

namespace nixfleet::health {
namespace asio = boost::asio;

const probe_factory* registry::find(const std::string& type) const {
  auto it = factories_.find(type);
  return it == factories_.end() ? nullptr : &it->second;
}

std::vector<std::string> registry::types() const {
  std::vector<std::string> out;
  for (const auto& [t, _] : factories_) out.push_back(t);
  return out;
}

const registry& registry::builtin() {
  static const registry r = [] {
    registry reg;
    reg.add("systemd_unit", probes::make_systemd_unit);
    reg.add("systemd_failed", probes::make_systemd_failed);
    reg.add("http", probes::make_http);
    reg.add("tcp", probes::make_tcp);
    reg.add("exec", probes::make_exec);
    reg.add("plugin", probes::make_plugin);
    return reg;
  }();
  return r;
}

asio::awaitable<protocol::probe_result> run_probe(probe& p, std::string* output) {
  using namespace asio::experimental::awaitable_operators;
  protocol::probe_result r;
  r.probe = p.common().name;
  r.type = p.common().type;
  const auto started = std::chrono::steady_clock::now();
  try {
    asio::steady_timer limit(co_await asio::this_coro::executor, p.hard_limit());
    auto first = co_await (p.check() || limit.async_wait(asio::use_awaitable));
    if (first.index() == 0) {
      auto& o = std::get<0>(first);
      r.status = o.passed ? protocol::probe_status::pass : protocol::probe_status::fail;
      if (!o.message.empty()) r.message = std::move(o.message);
      if (output != nullptr)
        *output = protocol::printable_excerpt(o.output, protocol::limits::max_evidence_output_bytes);
    } else {
      r.status = protocol::probe_status::fail;
      r.message = fmt::format("timed out after {} ms", p.common().timeout.count());
    }
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::operation_aborted) throw;  // our caller is cancelling
    r.status = protocol::probe_status::fail;
    r.message = std::string("probe error: ") + e.what();
  } catch (const std::exception& e) {
    r.status = protocol::probe_status::fail;
    r.message = std::string("probe error: ") + e.what();
  }
  r.duration_ms = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
  co_return r;
}

asio::awaitable<std::vector<protocol::probe_result>> run_all(const std::vector<probe_ptr>& probes,
                                                             std::vector<std::string>* outputs) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<protocol::probe_result> results(probes.size());
  if (outputs != nullptr) outputs->assign(probes.size(), std::string());
  if (probes.empty()) co_return results;

  // A timer that never fires on its own: the last probe to finish cancels it.
  auto done = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  auto remaining = std::make_shared<std::size_t>(probes.size());
  auto failure = std::make_shared<std::exception_ptr>();
  // One signal per probe, so that our own cancellation reaches every probe.
  std::vector<asio::cancellation_signal> signals(probes.size());
  for (std::size_t i = 0; i < probes.size(); ++i) {
    asio::co_spawn(ex, run_probe(*probes[i], outputs != nullptr ? &(*outputs)[i] : nullptr),
                   asio::bind_cancellation_slot(
                       signals[i].slot(),
                       [&results, i, done, remaining, failure](std::exception_ptr e, protocol::probe_result r) {
                         if (e) *failure = e;
                         else results[i] = std::move(r);
                         if (--*remaining == 0) done->cancel();
                       }));
  }
  auto [ec] = co_await done->async_wait(asio::as_tuple(asio::use_awaitable));
  (void)ec;
  if (*remaining != 0) {
    // We are being cancelled: cancel the probes (processes get SIGTERM, sockets close) and wait
    // until they have let go of `results` and `probes`.
    co_await asio::this_coro::reset_cancellation_state();
    for (auto& s : signals) s.emit(asio::cancellation_type::terminal);
    while (*remaining != 0) {
      asio::steady_timer t(ex, std::chrono::milliseconds(10));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    throw boost::system::system_error(asio::error::operation_aborted);
  }
  if (*failure) std::rethrow_exception(*failure);
  co_return results;
}

}  // namespace nixfleet::health
