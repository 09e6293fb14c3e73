// Talking to the coordinator: fetch desired state (with ETag), deliver report batches.
#pragma once

#include "nixfleet/agent/config.hpp"
#include "nixfleet/agent/core/poller.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>
#include <vector>

namespace nixfleet::agent::io {

using poll_result = core::poll_answer;
using ack_result = core::send_answer;

struct revocations_result {
  std::optional<protocol::revocation_list> list;  // decoded; its signature is the caller's to check
  std::string error;
};

struct certificate_result {
  std::optional<std::string> body;  // the issued_certificate answer, for the identity keeper to check
  bool refused = false;             // 4xx: revoked, decommissioned, a bad request
  std::string error;
};

class coordinator_client {
 public:
  virtual ~coordinator_client() = default;
  // GET /api/v1/machines/{id}/desired with If-None-Match when `etag` is set; with `wait_s`, a
  // long poll the coordinator may hold that long (the request's deadline grows by as much).
  virtual boost::asio::awaitable<poll_result> get_desired(std::string etag, std::uint32_t wait_s = 0) = 0;
  // POST /api/v1/machines/{id}/reports.
  virtual boost::asio::awaitable<ack_result> post_reports(std::vector<protocol::report> batch) = 0;
  // GET /api/v1/revocations.
  virtual boost::asio::awaitable<revocations_result> get_revocations() = 0;
  // POST /api/v1/machines/{id}/certificate: a new certificate over the current one.
  virtual boost::asio::awaitable<certificate_result> renew_certificate(std::string csr);
  // The identity file changed (renewed): later exchanges present the new certificate.
  virtual void reload_identity() {}
};

// HTTP(S) with Beast: TLS verified against tls.ca_file (or the system store), the client
// certificate when configured, every request bounded by request_timeout (a long poll by its wait
// more), all of them on one kept-alive connection (reports pipelined behind a held poll).
std::unique_ptr<coordinator_client> make_http_client(const agent_config& cfg);

}  // namespace nixfleet::agent::io
