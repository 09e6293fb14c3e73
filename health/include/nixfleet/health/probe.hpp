// The probe interface, the registry of probe types, and running probes with a bounded time.
#pragma once

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/json/fwd.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nixfleet::protocol::fields {
struct path_node;
}

namespace nixfleet::health {

// Fields every probe has.
struct probe_common {
  std::string name;
  std::string type;
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
  bool required = true;
};

struct outcome {
  bool passed = false;
  std::string message;
  // What the target printed or answered (an exec probe's output, an http probe's status and body),
  // for the forensics of a failed target; never sent with routine health.
  std::string output;
};

// Where the probes find the programs they run; tests point these elsewhere.
struct probe_env {
  std::string systemctl = "systemctl";
  // The helper that hosts plugins out of process (nixfleet-probe-host).
  std::string plugin_host = "nixfleet-probe-host";
  // SIGTERM → SIGKILL grace for probes that run processes.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(2)};
};

class probe {
 public:
  explicit probe(probe_common common) : common_(std::move(common)) {}
  virtual ~probe() = default;
  probe(const probe&) = delete;
  probe& operator=(const probe&) = delete;

  const probe_common& common() const noexcept { return common_; }

  // One check. Completes with the verdict; target failures are outcomes, not exceptions.
  // Supports cancellation (the runner cancels it when `hard_limit()` passes).
  virtual boost::asio::awaitable<outcome> check() = 0;

  // How long the runner waits before abandoning check(): the timeout, plus the kill grace for
  // probes that end their own processes on timeout.
  virtual std::chrono::milliseconds hard_limit() const { return common_.timeout; }

 private:
  probe_common common_;
};

using probe_ptr = std::unique_ptr<probe>;

// Builds a probe of one type from its JSON object (already checked for the common fields).
// Errors name the field under `at`.
using probe_factory = std::function<protocol::decoded<probe_ptr>(
    probe_common common, const boost::json::value& config, const protocol::fields::path_node* at,
    const probe_env& env)>;

class registry {
 public:
  void add(std::string type, probe_factory f) { factories_[std::move(type)] = std::move(f); }
  const probe_factory* find(const std::string& type) const;
  std::vector<std::string> types() const;

  // The built-in types: systemd_unit, systemd_failed, http, tcp, exec, plugin.
  static const registry& builtin();

 private:
  std::map<std::string, probe_factory> factories_;
};

// Runs one probe, bounded by its hard limit; exceptions become a failed result. Completes with
// the wire result (probe, type, status, duration_ms, message); the probe's output goes to
// `output` when given (an excerpt of at most protocol::limits::max_evidence_output_bytes).
boost::asio::awaitable<protocol::probe_result> run_probe(probe& p, std::string* output = nullptr);

// Runs all probes concurrently; results (and, when given, outputs) in the order of `probes`.
boost::asio::awaitable<std::vector<protocol::probe_result>> run_all(const std::vector<probe_ptr>& probes,
                                                                     std::vector<std::string>* outputs = nullptr);

// Each built-in probe type's factory, one file each.
namespace probes {
protocol::decoded<probe_ptr> make_systemd_unit(probe_common, const boost::json::value&,
                                               const protocol::fields::path_node*, const probe_env&);
protocol::decoded<probe_ptr> make_systemd_failed(probe_common, const boost::json::value&,
                                                 const protocol::fields::path_node*, const probe_env&);
protocol::decoded<probe_ptr> make_http(probe_common, const boost::json::value&, const protocol::fields::path_node*,
                                       const probe_env&);
protocol::decoded<probe_ptr> make_tcp(probe_common, const boost::json::value&, const protocol::fields::path_node*,
                                      const probe_env&);
protocol::decoded<probe_ptr> make_exec(probe_common, const boost::json::value&, const protocol::fields::path_node*,
                                       const probe_env&);
protocol::decoded<probe_ptr> make_plugin(probe_common, const boost::json::value&, const protocol::fields::path_node*,
                                         const probe_env&);
}  // namespace probes

}  // namespace nixfleet::health
