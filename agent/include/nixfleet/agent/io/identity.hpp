// The host's own identity with the fleet CA: a private key made here and never sent anywhere, and
// the certificate the coordinator issued for it, kept together in one file (state_dir/identity.pem,
// 0600, replaced atomically: a crash mid-write leaves the old identity or the new, never neither).
// Enrollment spends a one-time token; renewal goes over the current certificate.
#pragma once

#include "nixfleet/agent/config.hpp"
#include "nixfleet/protocol/time.hpp"

#include <boost/asio/awaitable.hpp>

#include <optional>
#include <string>

namespace nixfleet::agent::io {

class coordinator_client;

struct identity_info {
  std::string serial;
  protocol::timestamp not_before{}, not_after{};
  friend bool operator==(const identity_info&, const identity_info&) = default;
};

// When a certificate is renewed: at two thirds of its lifetime.
protocol::timestamp renewal_due(const identity_info& id);

struct enroll_result {
  bool ok = false;
  bool refused = false;  // the coordinator said no (the token, the request): retrying the same is useless
  std::string error;
};

class identity_keeper {
 public:
  explicit identity_keeper(const agent_config& cfg);

  // state_dir/identity.pem: the key, the certificate and the CA chain.
  const std::string& file() const noexcept { return file_; }
  // Reads the identity file: its certificate must be for this machine and belong to its key.
  // Empty (with `why`) when there is none or it is not usable.
  std::optional<identity_info> load(std::string* why = nullptr);
  const std::optional<identity_info>& current() const noexcept { return current_; }

  // Makes a key, sends a request with the token file's token to POST /api/v1/enroll (the server
  // verified against tls.ca_file) and stores what comes back. A token that already enrolled this
  // host is not sent again: an expired identity needs a new token from an operator.
  boost::asio::awaitable<enroll_result> enroll();
  // A new key and certificate over the current identity; the old stays in place until the new one
  // is durable.
  boost::asio::awaitable<enroll_result> renew(coordinator_client& coordinator);

 private:
  boost::asio::awaitable<enroll_result> store(const std::string& key_pem, const std::string& body);

  const agent_config& cfg_;
  std::string file_;
  std::string used_token_file_;
  std::optional<identity_info> current_;
};

}  // namespace nixfleet::agent::io
