// The agent's Nix work against the same commands run by hand, alternating, on the same paths:
//  activation: nix_cli::set_profile + switch_activator::switch_to (direct runner) against
//              `nix-env -p PROFILE --set PATH` then `PATH/bin/switch-to-configuration switch`;
//  fetch:      nix_cli::fetch from a binary cache (signatures required) against
//              `nix copy --from CACHE PATH` with the same Nix settings, the closure deleted before
//              each run.
// Usage: bench_nix_ops RUNS PROFILE PATH_A PATH_B FETCH_PATH CACHE_URL CACHE_PUBLIC_KEY
// Prints per operation: median/min/max ms for the agent and by hand, and the ratio of medians.
#include "nixfleet/agent/io/nix.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/process.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

using namespace nixfleet;
using namespace nixfleet::agent;
using clk = std::chrono::steady_clock;
namespace asio = boost::asio;

namespace {

double ms_since(clk::time_point t) { return std::chrono::duration<double, std::milli>(clk::now() - t).count(); }

struct series {
  std::vector<double> v;
  double median() {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
};

// Runs one command (argv) with NIX_CONFIG as the agent sets it; exits on failure.
void by_hand(std::vector<std::string> argv, const std::string& nix_config) {
  const auto cmd = argv.front();
  process::request req;
  req.argv = std::move(argv);
  req.env = process::environment_with("NIX_CONFIG", nix_config);
  req.timeout = std::chrono::minutes(10);
  auto r = process::run_blocking(std::move(req));
  if (!r.ok()) {
    std::cerr << "bench_nix_ops: by hand failed: " << cmd << ": " << r.describe() << " " << r.err_tail << "\n";
    std::exit(1);
  }
}

template <class F>
io::step_result agent_step(asio::io_context& ctx, F make) {
  auto fut = asio::co_spawn(ctx, make(), asio::use_future);
  ctx.restart();
  ctx.run();
  auto r = fut.get();
  if (!r.ok) {
    std::cerr << "bench_nix_ops: agent step failed: " << r.error << "\n";
    std::exit(1);
  }
  return r;
}

void print(const char* what, series& agent, series& hand) {
  auto a = agent.median(), h = hand.median();
  std::printf("%s agent_ms %.1f [%.1f-%.1f] by_hand_ms %.1f [%.1f-%.1f] ratio %.3f runs %zu\n", what, a, agent.v.front(),
              agent.v.back(), h, hand.v.front(), hand.v.back(), a / h, agent.v.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::cerr << "usage: bench_nix_ops RUNS PROFILE PATH_A PATH_B FETCH_PATH CACHE_URL CACHE_PUBLIC_KEY\n";
    return 2;
  }
  const int runs = std::atoi(argv[1]);
  const std::string profile = argv[2], a = argv[3], b = argv[4], fetch_path = argv[5], cache = argv[6];
  auto key = protocol::parse_public_key(argv[7]);
  if (runs < 1 || !key) {
    std::cerr << "bench_nix_ops: RUNS must be positive and the cache key NAME:BASE64\n";
    return 2;
  }
  log::init({.min_level = log::level::error});
  io::nix_settings ns;
  ns.cache_public_keys = {*key};
  ns.min_free_mb = 0;
  ns.caches = {cache};  // a file:// cache: the host's own configuration, as a release may not name one
  io::nix_cli nix(ns);
  io::activation_settings as;
  as.how = io::activation_settings::runner::direct;
  io::switch_activator activation(as);
  const auto nix_config = io::nix_config_for(ns);
  asio::io_context ctx;

  series act_agent, act_hand, fetch_agent, fetch_hand;
  for (int i = 0; i < runs; ++i) {
    // Activation: each run switches to the path not active, by the agent and by hand in turn
    // (which one goes first alternates between runs).
    for (int turn = 0; turn < 2; ++turn) {
      const bool agent_turn = (turn == 0) == (i % 2 == 0);
      const std::string target = turn == 0 ? b : a;
      const auto t = clk::now();
      if (agent_turn) {
        agent_step(ctx, [&] { return nix.set_profile(profile, target); });
        agent_step(ctx, [&] { return activation.switch_to(target, protocol::activation_mode::switch_); });
        act_agent.v.push_back(ms_since(t));
      } else {
        by_hand({"nix-env", "-p", profile, "--set", target}, nix_config);
        by_hand({target + "/bin/switch-to-configuration", "switch"}, nix_config);
        act_hand.v.push_back(ms_since(t));
      }
    }
    // Fetch: the closure is deleted before each, so both copy all of it from the cache.
    for (int turn = 0; turn < 2; ++turn) {
      by_hand({"/bin/sh", "-c", "nix-store --delete $(nix-store -qR '" + fetch_path + "') >/dev/null 2>&1 || true"},
              nix_config);
      const bool agent_turn = (turn == 0) == (i % 2 == 0);
      const auto t = clk::now();
      if (agent_turn) {
        agent_step(ctx, [&] { return nix.fetch(fetch_path, {}); });
        fetch_agent.v.push_back(ms_since(t));
      } else {
        by_hand({"nix", "copy", "--from", cache, fetch_path}, nix_config);
        fetch_hand.v.push_back(ms_since(t));
      }
    }
  }
  print("activation", act_agent, act_hand);
  print("fetch", fetch_agent, fetch_hand);
  return 0;
}
