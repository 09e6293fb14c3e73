// ed25519 in Nix's key format: parsing, RFC 8032 vectors, entry signatures, trust decisions.
#include "nixfleet/protocol/signing.hpp"

#include <boost/test/unit_test.hpp>

#include <array>

using namespace nixfleet::protocol;

namespace {

std::vector<std::uint8_t> from_hex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

// RFC 8032 §7.1, TEST 1 (empty message).
constexpr std::string_view rfc_seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
constexpr std::string_view rfc_public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
constexpr std::string_view rfc_signature =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

std::string key_text(std::string_view name, const std::vector<std::uint8_t>& bytes) {
  return std::string(name) + ":" + detail::base64_encode(bytes);
}

secret_key rfc_key(std::string_view name = "test-1") {
  auto bytes = from_hex(rfc_seed);
  auto pub = from_hex(rfc_public);
  bytes.insert(bytes.end(), pub.begin(), pub.end());
  return parse_secret_key(key_text(name, bytes)).value();
}

const timestamp created_at = parse_time("2026-11-25T18:00:00.000Z").value();
constexpr std::string_view path = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01";

}  // namespace

BOOST_AUTO_TEST_SUITE(signing)

BOOST_AUTO_TEST_CASE(rfc8032_test_vector_signs_and_derives_the_public_key) {
  auto key = rfc_key();
  const auto pub = to_public_key(key);
  BOOST_TEST(std::vector<std::uint8_t>(pub.bytes.begin(), pub.bytes.end()) == from_hex(rfc_public));
  const auto sig = sign(key, "");
  BOOST_TEST(std::vector<std::uint8_t>(sig.bytes.begin(), sig.bytes.end()) == from_hex(rfc_signature));
  BOOST_TEST(trusted_keys({pub}).verify("", sig.to_string()).failed() == false);
}

BOOST_AUTO_TEST_CASE(key_files_parse_with_trailing_newline_and_reject_garbage) {
  auto seed = from_hex(rfc_seed), pub = from_hex(rfc_public);
  auto both = seed;
  both.insert(both.end(), pub.begin(), pub.end());
  BOOST_TEST(parse_secret_key(key_text("cache.example.org-1", both) + "\n").has_value());
  BOOST_TEST(parse_public_key(key_text("cache.example.org-1", pub) + "\n").has_value());

  // Wrong length, no name, bad base64, a public half that does not belong to the seed.
  BOOST_TEST(parse_secret_key(key_text("k", seed)).error() == make_error_code(errc::invalid_key));
  BOOST_TEST(parse_secret_key(detail::base64_encode(both)).error() == make_error_code(errc::invalid_key));
  BOOST_TEST(parse_public_key("k:not*base64").error() == make_error_code(errc::invalid_key));
  BOOST_TEST(parse_public_key("k:" + detail::base64_encode(pub) + "=").error() == make_error_code(errc::invalid_key));
  BOOST_TEST(parse_public_key("bad name:" + detail::base64_encode(pub)).error() == make_error_code(errc::invalid_key));
  auto mismatched = seed;
  mismatched.insert(mismatched.end(), seed.begin(), seed.end());
  BOOST_TEST(parse_secret_key(key_text("k", mismatched)).error() == make_error_code(errc::invalid_key));
}

BOOST_AUTO_TEST_CASE(base64_is_strict) {
  BOOST_TEST(detail::base64_decode("QUJD").value() == (std::vector<std::uint8_t>{'A', 'B', 'C'}));
  BOOST_TEST(detail::base64_decode("QUI=").value() == (std::vector<std::uint8_t>{'A', 'B'}));
  BOOST_TEST(detail::base64_decode("QUJ=").has_error());  // stray bits in the last symbol
  BOOST_TEST(detail::base64_decode("QU=I").has_error());
  BOOST_TEST(detail::base64_decode("QUJD\n").has_error());
  BOOST_TEST(detail::base64_decode("").has_error());
}

BOOST_AUTO_TEST_CASE(entry_payload_is_canonical_json_of_the_four_fields) {
  BOOST_TEST(entry_signing_payload("r-1", "web-01", path, created_at) ==
             std::string("{\"created_at\":\"2026-11-25T18:00:00.000Z\",\"hostname\":\"web-01\","
                         "\"release_id\":\"r-1\",\"store_path\":\"") +
                 std::string(path) + "\"}");
}

BOOST_AUTO_TEST_CASE(entry_signature_verifies_only_for_the_signed_fields) {
  auto key = rfc_key("ops-1");
  trusted_keys trusted({to_public_key(key)});
  const auto sig = sign_entry(key, "r-1", "web-01", path, created_at);
  BOOST_TEST(!verify_entry(trusted, "r-1", "web-01", path, created_at, sig));

  const auto mismatch = make_error_code(errc::signature_mismatch);
  BOOST_TEST(verify_entry(trusted, "r-2", "web-01", path, created_at, sig) == mismatch);
  BOOST_TEST(verify_entry(trusted, "r-1", "web-02", path, created_at, sig) == mismatch);
  BOOST_TEST(verify_entry(trusted, "r-1", "web-01", "/nix/store/1c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01",
                          created_at, sig) == mismatch);
  BOOST_TEST(verify_entry(trusted, "r-1", "web-01", path, created_at + std::chrono::milliseconds(1), sig) == mismatch);
}

BOOST_AUTO_TEST_CASE(untrusted_malformed_and_flipped_signatures_are_refused) {
  auto key = rfc_key("ops-1");
  const auto sig = sign(key, "message").to_string();

  BOOST_TEST(trusted_keys().verify("message", sig) == make_error_code(errc::unknown_signer));
  auto other = to_public_key(key);
  other.name = "someone-else";
  BOOST_TEST(trusted_keys({other}).verify("message", sig) == make_error_code(errc::unknown_signer));

  // Same name, different key material.
  auto impostor = to_public_key(key);
  impostor.bytes[0] ^= 1;
  BOOST_TEST(trusted_keys({impostor}).verify("message", sig) == make_error_code(errc::signature_mismatch));
  // A second key of the same name that does match is still accepted (key rotation).
  BOOST_TEST(!trusted_keys({impostor, to_public_key(key)}).verify("message", sig));

  auto parsed = parse_signature(sig).value();
  for (std::size_t bit : {0u, 100u, 511u}) {
    auto flipped = parsed;
    flipped.bytes[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    BOOST_TEST(trusted_keys({to_public_key(key)}).verify("message", flipped.to_string()) ==
               make_error_code(errc::signature_mismatch));
  }
  BOOST_TEST(trusted_keys({to_public_key(key)}).verify("message", "ops-1:short") ==
             make_error_code(errc::invalid_signature));
  BOOST_TEST(trusted_keys({to_public_key(key)}).verify("message", "no-colon") ==
             make_error_code(errc::invalid_signature));
}

BOOST_AUTO_TEST_CASE(narinfo_fingerprint_has_nix_layout) {
  const std::vector<std::string> refs = {"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a", "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b"};
  BOOST_TEST(narinfo_fingerprint("/nix/store/cccccccccccccccccccccccccccccccc-c", "sha256:xyz", 1234, refs) ==
             "1;/nix/store/cccccccccccccccccccccccccccccccc-c;sha256:xyz;1234;/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a,"
             "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b");
  BOOST_TEST(narinfo_fingerprint("/nix/store/cccccccccccccccccccccccccccccccc-c", "sha256:xyz", 0, {}) ==
             "1;/nix/store/cccccccccccccccccccccccccccccccc-c;sha256:xyz;0;");
}

BOOST_AUTO_TEST_SUITE_END()
