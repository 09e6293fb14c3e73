// ed25519 through OpenSSL 3 EVP, with Nix's key and signature text formats.
#include "nixfleet/protocol/signing.hpp"

#include "nixfleet/protocol/canonical_json.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/json/value.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <memory>
#include <stdexcept>

namespace nixfleet::protocol {
namespace {

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, md_ctx_deleter>;

pkey_ptr private_pkey(std::span<const std::uint8_t, 32> seed) {
  pkey_ptr k(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
  if (!k) throw std::runtime_error("OpenSSL cannot load an ed25519 private key");
  return k;
}

std::array<std::uint8_t, 32> derive_public(std::span<const std::uint8_t, 32> seed) {
  auto k = private_pkey(seed);
  std::array<std::uint8_t, 32> pub{};
  std::size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(k.get(), pub.data(), &len) != 1 || len != pub.size())
    throw std::runtime_error("OpenSSL cannot derive an ed25519 public key");
  return pub;
}

// Splits `name:base64` and decodes the base64 part, which must be exactly N bytes.
template <std::size_t N>
boost::system::result<std::pair<std::string, std::array<std::uint8_t, N>>> split_named(std::string_view text,
                                                                                       errc bad) {
  // Key files end with a newline; tolerate surrounding whitespace only.
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' || text.back() == '\t'))
    text.remove_suffix(1);
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == '\n'))
    text.remove_prefix(1);
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return boost::system::error_code(bad);
  const auto name = text.substr(0, colon);
  if (check_key_name(name)) return boost::system::error_code(bad);
  auto raw = detail::base64_decode(text.substr(colon + 1));
  if (!raw || raw->size() != N) return boost::system::error_code(bad);
  std::array<std::uint8_t, N> bytes{};
  std::copy(raw->begin(), raw->end(), bytes.begin());
  OPENSSL_cleanse(raw->data(), raw->size());
  return std::pair{std::string(name), bytes};
}

}  // namespace

secret_key::secret_key(std::string name, const std::array<std::uint8_t, 64>& bytes)
    : name_(std::move(name)), bytes_(bytes) {}
secret_key::secret_key(const secret_key&) = default;
secret_key& secret_key::operator=(const secret_key&) = default;
secret_key::~secret_key() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

std::string public_key::to_string() const { return name + ":" + detail::base64_encode(bytes); }
std::string signature::to_string() const { return key_name + ":" + detail::base64_encode(bytes); }

boost::system::result<secret_key> parse_secret_key(std::string_view text) {
  auto parts = split_named<64>(text, errc::invalid_key);
  if (!parts) return parts.error();
  secret_key key(std::move(parts->first), parts->second);
  OPENSSL_cleanse(parts->second.data(), parts->second.size());
  const auto pub = derive_public(key.seed());
  if (!std::equal(pub.begin(), pub.end(), key.public_bytes().begin())) return boost::system::error_code(errc::invalid_key);
  return key;
}

boost::system::result<public_key> parse_public_key(std::string_view text) {
  auto parts = split_named<32>(text, errc::invalid_key);
  if (!parts) return parts.error();
  return public_key{std::move(parts->first), parts->second};
}

boost::system::result<signature> parse_signature(std::string_view text) {
  auto parts = split_named<64>(text, errc::invalid_signature);
  if (!parts) return parts.error();
  return signature{std::move(parts->first), parts->second};
}

public_key to_public_key(const secret_key& key) {
  public_key pub{key.name(), {}};
  std::copy(key.public_bytes().begin(), key.public_bytes().end(), pub.bytes.begin());
  return pub;
}

secret_key secret_key_from_seed(std::string name, std::span<const std::uint8_t, 32> seed) {
  std::array<std::uint8_t, 64> bytes{};
  std::copy(seed.begin(), seed.end(), bytes.begin());
  const auto pub = derive_public(seed);
  std::copy(pub.begin(), pub.end(), bytes.begin() + 32);
  secret_key key(std::move(name), bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return key;
}

secret_key generate_secret_key(std::string name) {
  std::array<std::uint8_t, 32> seed{};
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1)
    throw std::runtime_error("OpenSSL has no randomness for a new key");
  auto key = secret_key_from_seed(std::move(name), seed);
  OPENSSL_cleanse(seed.data(), seed.size());
  return key;
}

signature sign(const secret_key& key, std::string_view message) {
  auto pk = private_pkey(key.seed());
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  signature sig{key.name(), {}};
  std::size_t len = sig.bytes.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pk.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig.bytes.data(), &len, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1 ||
      len != sig.bytes.size())
    throw std::runtime_error("OpenSSL ed25519 signing failed");
  return sig;
}

boost::system::error_code trusted_keys::verify(std::string_view message, std::string_view signature_text,
                                               const verify_options& opts) const {
  auto sig = parse_signature(signature_text);
  if (!sig) return sig.error();
  for (const auto& revoked : opts.revoked_keys)
    if (revoked == sig->key_name) return errc::key_revoked;
  bool name_known = false;
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    const auto& k = keys_[i];
    if (k.name != sig->key_name) continue;
    name_known = true;
    pkey_ptr pk(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, k.bytes.data(), k.bytes.size()));
    md_ctx_ptr ctx(EVP_MD_CTX_new());
    if (!pk || !ctx) return errc::crypto_failure;
    if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pk.get()) != 1) return errc::crypto_failure;
    if (EVP_DigestVerify(ctx.get(), sig->bytes.data(), sig->bytes.size(),
                         reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1) {
      if (not_after_[i] && opts.now && *opts.now > *not_after_[i]) return errc::key_expired;
      return {};
    }
  }
  return name_known ? errc::signature_mismatch : errc::unknown_signer;
}

namespace {

boost::json::array string_array(const std::vector<std::string>& v) {
  boost::json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

std::string with_domain(std::string_view domain, const boost::json::object& o) {
  // Strings, arrays of strings and integers below 2^53 (the decoders check): cannot fail.
  return std::string(domain) + "\n" + canonicalize(o).value();
}

}  // namespace

entry_statement entry_statement_of(const desired_state& d) {
  return {d.release_id, d.machine_id, d.store_path, d.release_created_at, d.activation, d.cache_urls, d.release_sequence};
}

std::string entry_signing_payload(const entry_statement& e) {
  boost::json::object o;
  o["release_id"] = e.release_id;
  o["hostname"] = e.hostname;
  o["store_path"] = e.store_path;
  o["created_at"] = format_time(e.created_at);
  o["activation"] = to_string(e.activation);
  o["cache_urls"] = string_array(e.cache_urls);
  o["sequence"] = e.sequence;
  return with_domain("nixfleet-entry-v2", o);
}

std::string sign_entry(const secret_key& key, const entry_statement& e) {
  return sign(key, entry_signing_payload(e)).to_string();
}

boost::system::error_code verify_entry(const trusted_keys& keys, const entry_statement& e,
                                       std::string_view signature_text, const verify_options& opts) {
  return keys.verify(entry_signing_payload(e), signature_text, opts);
}

std::string entry_signing_payload_v1(std::string_view release_id, std::string_view hostname,
                                     std::string_view store_path, timestamp created_at) {
  boost::json::object o;
  o["release_id"] = release_id;
  o["hostname"] = hostname;
  o["store_path"] = store_path;
  o["created_at"] = format_time(created_at);
  return canonicalize(o).value();
}

bool is_v1_entry_signature(const trusted_keys& keys, const entry_statement& e, std::string_view signature_text) {
  return !keys.verify(entry_signing_payload_v1(e.release_id, e.hostname, e.store_path, e.created_at), signature_text);
}

std::string rollback_signing_payload(const rollback_statement& s) {
  boost::json::object o;
  o["hostname"] = s.hostname;
  o["store_path"] = s.store_path;
  o["issued_at"] = format_time(s.issued_at);
  o["expires_at"] = format_time(s.expires_at);
  o["reason"] = s.reason;
  return with_domain("nixfleet-rollback-v1", o);
}

void sign_rollback(const secret_key& key, rollback_statement& s) {
  s.signature = sign(key, rollback_signing_payload(s)).to_string();
}

boost::system::error_code verify_rollback(const trusted_keys& keys, const rollback_statement& s,
                                          const verify_options& opts) {
  return keys.verify(rollback_signing_payload(s), s.signature, opts);
}

std::string revocations_signing_payload(const revocation_list& r) {
  boost::json::object o;
  o["sequence"] = r.sequence;
  o["issued_at"] = format_time(r.issued_at);
  o["releases"] = string_array(r.releases);
  o["store_paths"] = string_array(r.store_paths);
  o["keys"] = string_array(r.keys);
  return with_domain("nixfleet-revocations-v1", o);
}

void sign_revocations(const secret_key& key, revocation_list& r) {
  r.signature = sign(key, revocations_signing_payload(r)).to_string();
}

boost::system::error_code verify_revocations(const trusted_keys& keys, const revocation_list& r,
                                             const verify_options& opts) {
  // opts.revoked_keys are those of the list the verifier holds: a withdrawn key cannot sign a
  // newer list that forgives what the older one revoked.
  return keys.verify(revocations_signing_payload(r), r.signature, opts);
}

std::string narinfo_fingerprint(std::string_view store_path, std::string_view nar_hash, std::uint64_t nar_size,
                                std::span<const std::string> references) {
  std::string out = "1;";
  out.append(store_path).append(";").append(nar_hash).append(";").append(std::to_string(nar_size)).append(";");
  bool first = true;
  for (const auto& r : references) {
    if (!first) out.push_back(',');
    first = false;
    out.append(r);
  }
  return out;
}

namespace detail {

std::string base64_encode(std::span<const std::uint8_t> bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

boost::system::result<std::vector<std::uint8_t>> base64_decode(std::string_view text) {
  const boost::system::error_code bad = errc::invalid_key;
  if (text.empty() || text.size() % 4 != 0 || text.size() > 4096) return bad;
  for (char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                    c == '/' || c == '=';
    if (!ok) return bad;
  }
  std::vector<std::uint8_t> out(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return bad;
  std::size_t pad = 0;
  if (text.ends_with("==")) pad = 2;
  else if (text.ends_with("=")) pad = 1;
  out.resize(static_cast<std::size_t>(n) - pad);
  // Refuse non-canonical encodings ('=' in the middle, stray bits in the last symbol).
  if (base64_encode(out) != text) return bad;
  return out;
}

}  // namespace detail
namespace {
std::string to_hex(const unsigned char* p, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 0xf];
  }
  return out;
}
}  // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
           data.size(), mac, &len) == nullptr)
    throw std::runtime_error("HMAC-SHA256 failed");
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(digits[mac[i] >> 4]);
    hex.push_back(digits[mac[i] & 15]);
  }
  return hex;
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return to_hex(digest, len);
}

std::string random_hex(std::size_t n) {
  std::vector<unsigned char> bytes(n);
  if (RAND_bytes(bytes.data(), static_cast<int>(n)) != 1) throw std::runtime_error("no randomness available");
  return to_hex(bytes.data(), n);
}

}  // namespace nixfleet::protocol
