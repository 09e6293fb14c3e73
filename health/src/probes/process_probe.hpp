// Shared by probes that run a process: the time limit and how a process ending reads as an outcome.
#pragma once

#include "nixfleet/common/process.hpp"
#include "nixfleet/health/probe.hpp"

#include <string>

namespace nixfleet::health::detail {

// A probe that runs a process and ends it itself on timeout (SIGTERM, then SIGKILL).
class process_probe : public probe {
 public:
  process_probe(probe_common c, std::chrono::milliseconds kill_grace) : probe(std::move(c)), kill_grace_(kill_grace) {}
  std::chrono::milliseconds hard_limit() const override {
    return common().timeout + kill_grace_ + std::chrono::seconds(1);
  }

 protected:
  process::request make_request(std::vector<std::string> argv) const {
    process::request r;
    r.argv = std::move(argv);
    r.timeout = common().timeout;
    r.kill_grace = kill_grace_;
    return r;
  }

 private:
  std::chrono::milliseconds kill_grace_;
};

// First line of `text`, trimmed and capped, for messages.
std::string first_line(const std::string& text, std::size_t max = 200);

// "exited with code 3: <stderr tail>" style text for a failed run.
std::string failure_text(const process::result& r);

// The ends of what the process wrote, for forensics: "stdout:\n…\nstderr:\n…", each part's end
// kept, and the place where the output cap cut stdout said.
std::string output_of(const process::result& r);

// Reads `{"status": "pass"|"fail", "message": "…"}` from a probe's stdout.
outcome parse_json_outcome(const process::result& r);

}  // namespace nixfleet::health::detail
