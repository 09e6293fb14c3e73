// The host's side of forensics: failed units (systemctl), a journal excerpt (journalctl) and the
// closure difference (nix store diff-closures), run concurrently, each with a timeout.
#pragma once

#include "nixfleet/agent/io/seams.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace nixfleet::agent::io {

struct forensics_settings {
  bool enable = true;
  bool journal = true;
  std::uint32_t journal_lines = 200;  // in all, newest kept
  // Units whose journal is never sent (globs: "vault*.service"); failed units are still named.
  std::vector<std::string> journal_exclude;
  std::chrono::milliseconds timeout{std::chrono::seconds(5)};  // each command
  // Listing the failed units before a rollback: the rollback waits for it.
  std::chrono::milliseconds before_rollback_timeout{std::chrono::seconds(2)};
  std::string systemctl = "systemctl";
  std::string journalctl = "journalctl";
  std::string nix = "nix";
  std::string nix_config;  // NIX_CONFIG for nix (nix_config_for: no substituters)
};

class host_investigator final : public investigator {
 public:
  explicit host_investigator(forensics_settings s) : settings_(std::move(s)) {}
  boost::asio::awaitable<failed_units_snapshot> failed_units() override;
  boost::asio::awaitable<protocol::forensics_bundle> investigate(forensics_request request) override;

 private:
  forensics_settings settings_;
};

}  // namespace nixfleet::agent::io
