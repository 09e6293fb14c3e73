// Time from the health gate's fail verdict to the rollback switch starting, through the real
// deploy driver and the real durable state store (fsync on this machine's disk), with fake Nix and
// activation. Reference, side by side: one durable record write on the same disk.
#include "nixfleet/agent/io/deploy_driver.hpp"
#include "nixfleet/agent/io/nix.hpp"
#include "nixfleet/common/durable_file.hpp"
#include "nixfleet/common/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

using namespace nixfleet;
using namespace nixfleet::agent;
using clk = std::chrono::steady_clock;
namespace asio = boost::asio;

namespace {

const std::string path_a = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-bench-a";
const std::string path_b = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-bench-b";

struct host final : io::nix_runner, io::activator, io::prober {
  std::string current = path_a;
  clk::time_point verdict_round_end{}, rollback_switch_start{};
  asio::awaitable<io::step_result> fetch(std::string, std::vector<std::string>) override { co_return io::step_result{true, {}}; }
  asio::awaitable<io::step_result> set_profile(std::string, std::string) override { co_return io::step_result{true, {}}; }
  asio::awaitable<io::step_result> switch_to(std::string p, protocol::activation_mode) override {
    if (p == path_a && current == path_b) rollback_switch_start = clk::now();
    current = p;
    co_return io::step_result{true, {}};
  }
  std::string running() override { return current; }
  asio::awaitable<std::vector<protocol::probe_result>> round() override {
    std::vector<protocol::probe_result> r{{"web", "http", protocol::probe_status::fail, 1, std::string("502")}};
    verdict_round_end = clk::now();  // failure_threshold 1: this round's verdict is "fail"
    co_return r;
  }
  std::vector<health::gated_probe> probes() const override { return {{"web", true}}; }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 25;
  const std::filesystem::path dir = argc > 2 ? argv[2] : std::filesystem::temp_directory_path() / "nixfleet-bench-rollback";
  log::init({.min_level = log::level::error});
  std::vector<double> latency_ms, reference_ms;
  for (int i = 0; i < runs; ++i) {
    std::filesystem::remove_all(dir);
    io::state_store store(dir);
    store.prepare();
    host h;
    io::steady_clock time;
    core::deployer_config cfg;
    cfg.gate.grace = std::chrono::milliseconds(0);
    cfg.gate.interval = std::chrono::milliseconds(1);
    cfg.gate.soak = std::chrono::milliseconds(1000);
    cfg.gate.failure_threshold = 1;
    cfg.probes = h.probes();
    core::deployer machine(cfg);
    core::outbox box;
    io::deploy_driver driver(machine, {h, h, h, time}, store, box, "bench", "/nonexistent/profile", "bench");
    protocol::desired_state d;
    d.machine_id = "bench";
    d.release_id = "r-1";
    d.store_path = path_b;
    asio::io_context ctx;
    asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
      co_await driver.start();
      const core::trust_policy unsigned_ok{.allow_unsigned = true};
      co_await driver.deliver(d, unsigned_ok);
    }, asio::detached);
    ctx.run();
    if (h.current != path_a || h.rollback_switch_start == clk::time_point{}) {
      std::fprintf(stderr, "run %d did not roll back\n", i);
      return 1;
    }
    latency_ms.push_back(std::chrono::duration<double, std::milli>(h.rollback_switch_start - h.verdict_round_end).count());

    // Reference: one durable write of a record-sized file on the same disk.
    asio::io_context ref;
    const auto t0 = clk::now();
    asio::co_spawn(ref, durable::replace_file(dir / "reference.json", std::string(400, 'x')), asio::detached);
    ref.run();
    reference_ms.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
  }
  std::filesystem::remove_all(dir);
  const auto [lmin, lmax] = std::minmax_element(latency_ms.begin(), latency_ms.end());
  const auto [rmin, rmax] = std::minmax_element(reference_ms.begin(), reference_ms.end());
  std::printf("fail verdict -> rollback switch start: median %.2f ms (min %.2f, max %.2f) over %d runs\n",
              median(latency_ms), *lmin, *lmax, runs);
  std::printf("reference, one durable record write:   median %.2f ms (min %.2f, max %.2f)\n", median(reference_ms),
              *rmin, *rmax);
  std::printf("ratio (median): %.2fx\n", median(latency_ms) / median(reference_ms));
  return 0;
}
