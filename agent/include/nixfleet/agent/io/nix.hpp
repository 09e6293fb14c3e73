// The real seams: Nix commands, switch-to-configuration, probes, the steady clock.
#pragma once

#include "nixfleet/agent/io/seams.hpp"
#include "nixfleet/health/config.hpp"

#include <filesystem>
#include <memory>

namespace nixfleet::agent::io {

struct nix_settings {
  std::vector<protocol::public_key> cache_public_keys;  // require-sigs with these keys
  std::vector<std::string> caches;  // the host's own caches, tried first (agent_config::caches)
  std::chrono::milliseconds fetch_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds command_timeout{std::chrono::minutes(2)};
  std::uint64_t min_free_mb = 1024;
  std::filesystem::path store_dir = "/nix/store";
};

// The NIX_CONFIG the agent runs Nix commands with: no substituters at all (nothing from the
// network ever becomes one), signatures required with only the configured cache keys.
std::string nix_config_for(const nix_settings& s);

class nix_cli final : public nix_runner {
 public:
  explicit nix_cli(nix_settings s) : settings_(std::move(s)) {}
  boost::asio::awaitable<step_result> fetch(std::string store_path, std::vector<std::string> cache_urls) override;
  boost::asio::awaitable<step_result> set_profile(std::string profile, std::string store_path) override;

 private:
  nix_settings settings_;
};

struct activation_settings {
  enum class runner { direct, systemd_run };
  runner how = runner::direct;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  // A switch is ended with SIGTERM at the timeout and SIGKILL only this much later.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(60)};
  std::filesystem::path current_system = "/run/current-system";
  std::string systemctl = "systemctl";
  std::string journalctl = "journalctl";  // the output of a switch run in a transient unit
};

class switch_activator final : public activator {
 public:
  explicit switch_activator(activation_settings s) : settings_(std::move(s)) {}
  boost::asio::awaitable<step_result> switch_to(std::string store_path, protocol::activation_mode mode) override;
  std::string running() override;
  boost::asio::awaitable<void> wait_for_earlier_switch() override;

 private:
  activation_settings settings_;
  std::uint64_t switches_ = 0;
};

class health_prober final : public prober {
 public:
  explicit health_prober(std::shared_ptr<health::health_setup> setup) : setup_(std::move(setup)) {}
  boost::asio::awaitable<std::vector<protocol::probe_result>> round() override;
  std::vector<health::gated_probe> probes() const override { return setup_->gated(); }
  std::string output_of(const std::string& probe) const override;

 private:
  std::shared_ptr<health::health_setup> setup_;
  std::vector<std::string> outputs_;  // of the last round, in the order of setup_->probes
};

class steady_clock final : public clock {
 public:
  core::time_point now() override { return std::chrono::steady_clock::now(); }
  protocol::timestamp wall_now() override {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  }
  boost::asio::awaitable<void> sleep_until(core::time_point t) override;
};

}  // namespace nixfleet::agent::io
