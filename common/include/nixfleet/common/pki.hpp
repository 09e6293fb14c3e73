// The fleet's X.509 work, over OpenSSL: private keys, certificate signing requests, the fleet CA
// that turns a machine's request into its short-lived client certificate, and the revocation list.
// Everything is PEM text in and out; nothing here touches the network.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::pki {

using time_point = std::chrono::sys_seconds;

// Thrown when OpenSSL cannot do what was asked; the message says what, with OpenSSL's reason.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class key_type { p256, ed25519 };

// A fresh private key, PKCS#8 PEM.
std::string generate_key(key_type type);

// A request for a certificate naming `cn`, signed with `key_pem`.
std::string make_csr(std::string_view key_pem, std::string_view cn);

// What a request asks for, once its own signature checked out.
struct csr_info {
  std::string cn;              // its one CN; empty when it has none
  std::string public_key_pem;  // SubjectPublicKeyInfo
};
// The request's contents, or why it is not one we sign: not PEM, a bad self-signature, more than
// one CN, a key that is not P-256, P-384, ed25519 or RSA of at least 2048 bits.
std::optional<csr_info> read_csr(std::string_view pem, std::string* why = nullptr);

struct certificate_info {
  std::string serial;  // lowercase hex, no leading zeros
  std::string subject_cn;
  std::string issuer_cn;
  time_point not_before{}, not_after{};
  std::vector<std::string> uris;  // SAN URIs
};
// The first certificate in `pem`.
std::optional<certificate_info> read_certificate(std::string_view pem, std::string* why = nullptr);
// Whether the first private key in `key_pem` belongs to the first certificate in `cert_pem`.
bool key_matches(std::string_view key_pem, std::string_view cert_pem);

// A random certificate serial: 16 bytes, positive, lowercase hex.
std::string random_serial();

struct revoked_certificate {
  std::string serial;  // hex
  time_point at{};
};

// A loaded certificate authority: its certificate (followed by any issuers above it, for an
// intermediate an operator's root signed) and its private key.
class authority {
 public:
  // Throws pki::error naming the file when either cannot be read or they do not belong together.
  static authority load(const std::string& cert_file, const std::string& key_file);
  static authority from_pem(std::string_view chain_pem, std::string_view key_pem);
  ~authority();
  authority(authority&&) noexcept;
  authority& operator=(authority&&) noexcept;

  // A client certificate for `machine_id` over the request's key: CN = machine id, SAN URI
  // nixfleet://machine/ID, clientAuth only, not a CA, valid [not_before, not_after].
  std::string issue_client(const csr_info& req, std::string_view machine_id, std::string_view serial,
                           time_point not_before, time_point not_after) const;
  // A server certificate for `names` (DNS names and IP literals) over `key_pem`'s key.
  std::string issue_server(std::string_view key_pem, const std::vector<std::string>& names, std::string_view serial,
                           time_point not_before, time_point not_after) const;
  // A signed CRL (PEM) of `revoked`, numbered `number`.
  std::string crl(const std::vector<revoked_certificate>& revoked, std::uint64_t number, time_point this_update,
                  time_point next_update) const;
  // The CA certificate and its issuers, PEM.
  const std::string& chain_pem() const noexcept;
  const certificate_info& info() const noexcept;

 private:
  authority();
  struct impl;
  std::unique_ptr<impl> impl_;
};

// A new CA: a private key (written 0600) and either a self-signed root certificate valid for
// `lifetime`, or a request for an operator's own CA to sign (an intermediate). Refuses to replace
// existing files. Returns what was written.
struct ca_files {
  std::string key_file, cert_file, csr_file;
};
ca_files init_authority(const std::string& dir, key_type type, std::string_view name, bool intermediate,
                        std::chrono::seconds lifetime, time_point now);

}  // namespace nixfleet::pki
