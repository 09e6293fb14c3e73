// ed25519 keys and signatures in Nix's `name:base64` format, and the release-entry signature.
#pragma once

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/time.hpp"

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

// The set of keys an agent or operator trusts.
class trusted_keys {
 public:
  trusted_keys() = default;
  explicit trusted_keys(std::vector<public_key> keys) : keys_(std::move(keys)) {}
  void add(public_key k) { keys_.push_back(std::move(k)); }
  bool empty() const noexcept { return keys_.empty(); }
  const std::vector<public_key>& keys() const noexcept { return keys_; }

  // Empty on success; errc::invalid_signature (malformed), errc::unknown_signer (no trusted key of
  // that name), errc::signature_mismatch (a trusted key of that name, wrong signature).
  boost::system::error_code verify(std::string_view message, std::string_view signature_text) const;

 private:
  std::vector<public_key> keys_;
};

// What a release entry's signature covers: canonical JSON of
// {created_at, hostname, release_id, store_path}.
std::string entry_signing_payload(std::string_view release_id, std::string_view hostname,
                                  std::string_view store_path, timestamp created_at);

// `name:base64` signature of the entry payload.
std::string sign_entry(const secret_key& key, std::string_view release_id, std::string_view hostname,
                       std::string_view store_path, timestamp created_at);

boost::system::error_code verify_entry(const trusted_keys& keys, std::string_view release_id,
                                       std::string_view hostname, std::string_view store_path,
                                       timestamp created_at, std::string_view signature_text);

// Nix's narinfo fingerprint: `1;<path>;<narHash>;<narSize>;<ref>,<ref>…` (refs as full paths).
std::string narinfo_fingerprint(std::string_view store_path, std::string_view nar_hash, std::uint64_t nar_size,
                                std::span<const std::string> references);

// SHA-256 of `data`, as 64 lowercase hex digits.
std::string sha256_hex(std::string_view data);

// `n` bytes from the operating system's CSPRNG, as lowercase hex.
std::string random_hex(std::size_t n);

namespace detail {
std::string base64_encode(std::span<const std::uint8_t> bytes);
// Strict: canonical padding only, no whitespace. Fails with errc::invalid_key.
boost::system::result<std::vector<std::uint8_t>> base64_decode(std::string_view text);
}  // namespace detail

}  // namespace nixfleet::protocol
