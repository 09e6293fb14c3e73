// ed25519 keys and signatures in Nix's `name:base64` format, and the release-entry signature.
#pragma once

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/time.hpp"
#include "nixfleet/protocol/types.hpp"

#include <optional>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::protocol {

// The file `nix-store --generate-binary-cache-key` writes as the secret key: `name:base64(64 bytes)`,
// the 32-byte seed followed by the public key. The bytes are wiped on destruction.
class secret_key {
 public:
  secret_key(std::string name, const std::array<std::uint8_t, 64>& bytes);
  secret_key(const secret_key&);
  secret_key& operator=(const secret_key&);
  ~secret_key();

  const std::string& name() const noexcept { return name_; }
  std::span<const std::uint8_t, 32> seed() const noexcept { return std::span<const std::uint8_t, 32>(bytes_.data(), 32); }
  std::span<const std::uint8_t, 32> public_bytes() const noexcept {
    return std::span<const std::uint8_t, 32>(bytes_.data() + 32, 32);
  }

 private:
  std::string name_;
  std::array<std::uint8_t, 64> bytes_;
};

struct public_key {
  std::string name;
  std::array<std::uint8_t, 32> bytes{};

  // `name:base64`, as in nix.conf's trusted-public-keys.
  std::string to_string() const;
  friend bool operator==(const public_key&, const public_key&) = default;
};

struct signature {
  std::string key_name;
  std::array<std::uint8_t, 64> bytes{};

  std::string to_string() const;
};

// Parse the text of a key file (surrounding whitespace ignored). A secret key whose stored public
// half does not match its seed is refused (errc::invalid_key).
boost::system::result<secret_key> parse_secret_key(std::string_view text);
boost::system::result<public_key> parse_public_key(std::string_view text);
boost::system::result<signature> parse_signature(std::string_view text);

public_key to_public_key(const secret_key& key);

// A key from a 32-byte seed (the public half derived), or a fresh random one; `name` must be a
// valid key name. What `nix-store --generate-binary-cache-key` makes, without the files.
secret_key secret_key_from_seed(std::string name, std::span<const std::uint8_t, 32> seed);
secret_key generate_secret_key(std::string name);

// Detached ed25519 signature of `message`.
signature sign(const secret_key& key, std::string_view message);

// What a verification is judged against besides the keys: the time (for keys with `not_after`)
// and the operator key names the revocation list has withdrawn.
struct verify_options {
  std::optional<timestamp> now;
  std::span<const std::string> revoked_keys;
};

// The set of keys an agent or operator trusts; a key may carry a `not_after` time after which
// signatures by it are refused.
class trusted_keys {
 public:
  trusted_keys() = default;
  explicit trusted_keys(std::vector<public_key> keys) : keys_(std::move(keys)), not_after_(keys_.size()) {}
  void add(public_key k, std::optional<timestamp> not_after = std::nullopt) {
    keys_.push_back(std::move(k));
    not_after_.push_back(not_after);
  }
  bool empty() const noexcept { return keys_.empty(); }
  const std::vector<public_key>& keys() const noexcept { return keys_; }
  const std::optional<timestamp>& not_after(std::size_t i) const { return not_after_.at(i); }

  // Empty on success; errc::invalid_signature (malformed), errc::unknown_signer (no trusted key of
  // that name), errc::signature_mismatch (a trusted key of that name, wrong signature),
  // errc::key_revoked (the signer's name is in opts.revoked_keys), errc::key_expired (the signing
  // key's not_after is before opts.now).
  boost::system::error_code verify(std::string_view message, std::string_view signature_text,
                                   const verify_options& opts = {}) const;

 private:
  std::vector<public_key> keys_;
  std::vector<std::optional<timestamp>> not_after_;
};

// Every field of a release entry an agent acts on: what the v2 entry signature covers.
struct entry_statement {
  std::string release_id;
  std::string hostname;
  std::string store_path;
  timestamp created_at{};
  activation_mode activation = activation_mode::switch_;
  std::vector<std::string> cache_urls;
  std::uint64_t sequence = 0;
};

// The statement of what a desired state asks for, as the agent checks it.
entry_statement entry_statement_of(const desired_state& d);

// Domain-separated payloads: the prefix line keeps a signature over one kind of statement from
// ever verifying as another (or as a narinfo, which the same keys may sign).
// "nixfleet-entry-v2\n" + RFC 8785 JSON of the statement.
std::string entry_signing_payload(const entry_statement& e);
std::string sign_entry(const secret_key& key, const entry_statement& e);
boost::system::error_code verify_entry(const trusted_keys& keys, const entry_statement& e,
                                       std::string_view signature_text, const verify_options& opts = {});

// True when `signature_text` is a valid signature of the old v1 payload (canonical JSON of
// {created_at, hostname, release_id, store_path}, no prefix): agents refuse it, and say why.
bool is_v1_entry_signature(const trusted_keys& keys, const entry_statement& e, std::string_view signature_text);
// The v1 payload, kept only to recognise v1 signatures.
std::string entry_signing_payload_v1(std::string_view release_id, std::string_view hostname,
                                     std::string_view store_path, timestamp created_at);

// "nixfleet-rollback-v1\n" + RFC 8785 JSON of {expires_at, hostname, issued_at, reason, store_path}.
std::string rollback_signing_payload(const rollback_statement& s);
// Fills s.signature.
void sign_rollback(const secret_key& key, rollback_statement& s);
boost::system::error_code verify_rollback(const trusted_keys& keys, const rollback_statement& s,
                                          const verify_options& opts = {});

// "nixfleet-revocations-v1\n" + RFC 8785 JSON of {issued_at, keys, releases, sequence, store_paths}.
std::string revocations_signing_payload(const revocation_list& r);
void sign_revocations(const secret_key& key, revocation_list& r);
boost::system::error_code verify_revocations(const trusted_keys& keys, const revocation_list& r,
                                             const verify_options& opts = {});

// Nix's narinfo fingerprint: `1;<path>;<narHash>;<narSize>;<ref>,<ref>…` (refs as full paths).
std::string narinfo_fingerprint(std::string_view store_path, std::string_view nar_hash, std::uint64_t nar_size,
                                std::span<const std::string> references);

// SHA-256 of `data`, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view data);
// HMAC-SHA256 of `data` under `key`, lowercase hex (webhook signatures).
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

// `n` bytes from the operating system's CSPRNG, as lowercase hex.
std::string random_hex(std::size_t n);

namespace detail {
std::string base64_encode(std::span<const std::uint8_t> bytes);
// Strict: canonical padding only, no whitespace. Fails with errc::invalid_key.
boost::system::result<std::vector<std::uint8_t>> base64_decode(std::string_view text);
}  // namespace detail

}  // namespace nixfleet::protocol
