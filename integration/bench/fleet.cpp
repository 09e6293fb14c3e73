// Many agents in one process: each a real agent runtime (poller, deployer, reporter, health loop,
// durable state directory, the real HTTP client) against a real coordinator, with fake Nix and
// activation that record when each fetch starts. Runs until SIGTERM/SIGINT, then lets every outbox
// drain (bounded) and prints a JSON summary on stdout:
//   {"agents":N,"cpu_s":…,"reports_generated":…,"reports_pending":…,"fetches":[{"machine":…,"path":…,"at_ms":…},…]}
// Usage: bench_fleet URL AGENTS PREFIX STATE_DIR START_PATH [poll_interval_ms]
#include "nixfleet/agent/io/nix.hpp"
#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/common/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

using namespace nixfleet;
using namespace nixfleet::agent;
namespace asio = boost::asio;

namespace {

struct fetch_record {
  std::string machine, path;
  long long at_ms;
};

std::vector<fetch_record> fetches;
std::mutex fetches_mutex;

long long unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One simulated host: its store is whatever was fetched, its system whatever was switched to.
struct fake_host final : io::nix_runner, io::activator, io::prober {
  std::string machine, current;
  asio::awaitable<io::step_result> fetch(std::string p, std::vector<std::string>) override {
    {
      std::lock_guard lock(fetches_mutex);
      fetches.push_back({machine, p, unix_ms()});
    }
    co_return io::step_result{true, {}};
  }
  asio::awaitable<io::step_result> set_profile(std::string, std::string) override { co_return io::step_result{true, {}}; }
  asio::awaitable<io::step_result> switch_to(std::string p, protocol::activation_mode) override {
    current = std::move(p);
    co_return io::step_result{true, {}};
  }
  std::string running() override { return current; }
  asio::awaitable<std::vector<protocol::probe_result>> round() override { co_return std::vector<protocol::probe_result>{}; }
  std::vector<health::gated_probe> probes() const override { return {}; }
};

struct sim_agent {
  agent_config cfg;
  fake_host host;
  std::unique_ptr<io::coordinator_client> client;
  std::unique_ptr<io::agent_runtime> runtime;
  int thread = 0;
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::cerr << "usage: bench_fleet URL AGENTS PREFIX STATE_DIR START_PATH [poll_interval_ms [OPERATOR_PUBLIC_KEY]]\n";
    return 2;
  }
  const std::string url = argv[1];
  const int count = std::atoi(argv[2]);
  const std::string prefix = argv[3];
  const std::string state_root = argv[4];
  const std::string start_path = argv[5];
  const auto poll = std::chrono::milliseconds(argc > 6 ? std::atoll(argv[6]) : 10000);
  // The agents check the operator's signatures as real ones do (without a key: unsigned allowed).
  std::optional<protocol::public_key> operator_key;
  if (argc > 7) {
    auto k = protocol::parse_public_key(argv[7]);
    if (!k) {
      std::cerr << "bench_fleet: not a public key: " << argv[7] << "\n";
      return 2;
    }
    operator_key = *k;
  }
  if (count <= 0 || count > 100000) {
    std::cerr << "bench_fleet: AGENTS must be 1..100000\n";
    return 2;
  }
  log::init({.min_level = log::level::error});

  health::gate_config gate;
  gate.grace = std::chrono::milliseconds(0);
  gate.interval = std::chrono::milliseconds(200);
  gate.soak = std::chrono::milliseconds(500);

  std::list<sim_agent> fleet;
  for (int i = 0; i < count; ++i) {
    auto& a = fleet.emplace_back();
    char id[64];
    std::snprintf(id, sizeof id, "%s%04d", prefix.c_str(), i);
    a.cfg.machine_id = id;
    a.cfg.coordinator_url = url;
    a.cfg.allow_insecure_http = true;
    a.cfg.poll_interval = poll;
    a.cfg.retry_interval = std::chrono::seconds(5);
    a.cfg.startup_jitter = poll;  // spread the fleet's polls over one interval, as in production
    a.cfg.health_interval = std::chrono::seconds(60);
    a.cfg.state_dir = state_root + "/" + id;
    a.cfg.profile = "/nonexistent/profile";
    a.cfg.control_socket.clear();
    if (operator_key) a.cfg.trusted_keys.add(*operator_key);
    else a.cfg.allow_unsigned = true;
    a.host.machine = id;
    a.host.current = start_path;
    a.client = io::make_http_client(a.cfg);
  }
  // The agents are spread over a few io threads: a real agent has a host (and a disk) to itself,
  // and its durable writes block only its own loop; here they would otherwise queue behind each
  // other on one thread.
  io::steady_clock time;
  const int threads = std::min(count, 8);
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  for (int t = 0; t < threads; ++t) contexts.push_back(std::make_unique<asio::io_context>());
  std::uint64_t seed = 1;
  int n = 0;
  for (auto& a : fleet) {
    a.runtime = std::make_unique<io::agent_runtime>(a.cfg, io::runtime_seams{*a.client, a.host, a.host, a.host, time},
                                                    gate, seed++);
    a.thread = n++ % threads;
    asio::co_spawn(*contexts[a.thread], a.runtime->run(), asio::detached);
  }
  // On SIGTERM/SIGINT each thread lets its agents' outboxes drain (up to 15 s), then stops; the
  // agents stop when the contexts are destroyed, before them.
  asio::io_context control;
  asio::signal_set signals(control, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    for (int t = 0; t < threads; ++t)
      asio::co_spawn(*contexts[t], [&, t]() -> asio::awaitable<void> {
        asio::steady_timer drain(co_await asio::this_coro::executor);
        for (int i = 0; i < 150; ++i) {
          bool empty = true;
          for (auto& a : fleet)
            if (a.thread == t) empty = empty && a.runtime->outbox().empty();
          if (empty) break;
          drain.expires_after(std::chrono::milliseconds(100));
          co_await drain.async_wait(asio::use_awaitable);
        }
        contexts[t]->stop();
      }, asio::detached);
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back([&, t] { contexts[t]->run(); });
  control.run();
  for (auto& w : workers) w.join();

  std::uint64_t generated = 0, superseded = 0, pending = 0, delivered = 0, polls_failed = 0;
  for (auto& a : fleet) {
    const auto& box = a.runtime->outbox();
    generated += box.next_seq() - 1;
    superseded += box.dropped();
    pending += box.size();
    delivered += a.runtime->driver().metrics().reports_delivered;
    polls_failed += a.runtime->driver().metrics().polls_failed;
  }
  boost::json::object out;
  out["agents"] = count;
  out["cpu_s"] = cpu_seconds();
  out["reports_generated"] = generated;
  out["reports_superseded"] = superseded;  // periodic reports replaced by newer ones before sending
  out["reports_pending"] = pending;
  out["reports_delivered"] = delivered;
  out["polls_failed"] = polls_failed;
  boost::json::array f;
  for (const auto& r : fetches) f.push_back(boost::json::object{{"machine", r.machine}, {"path", r.path}, {"at_ms", r.at_ms}});
  out["fetches"] = std::move(f);
  std::cout << boost::json::serialize(out) << std::endl;
  // The agents (and their clients' kept connections) go before the contexts their sockets are on.
  fleet.clear();
  return pending == 0 ? 0 : 1;
}
