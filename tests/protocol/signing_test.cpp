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

entry_statement sample_entry() {
  return {"r-1", "web-01", std::string(path), created_at, activation_mode::switch_, {"https://cache.example.org"}, 7};
}

BOOST_AUTO_TEST_CASE(entry_payload_v2_is_a_domain_line_and_canonical_json_of_every_acted_on_field) {
  BOOST_TEST(entry_signing_payload(sample_entry()) ==
             std::string("nixfleet-entry-v2\n{\"activation\":\"switch\",\"cache_urls\":[\"https://cache.example.org\"],"
                         "\"created_at\":\"2026-11-25T18:00:00.000Z\",\"hostname\":\"web-01\","
                         "\"release_id\":\"r-1\",\"sequence\":7,\"store_path\":\"") +
                 std::string(path) + "\"}");
}

BOOST_AUTO_TEST_CASE(entry_signature_verifies_only_for_the_signed_fields) {
  auto key = rfc_key("ops-1");
  trusted_keys trusted({to_public_key(key)});
  const auto sig = sign_entry(key, sample_entry());
  BOOST_TEST(!verify_entry(trusted, sample_entry(), sig));

  const auto mismatch = make_error_code(errc::signature_mismatch);
  std::vector<entry_statement> tampered(8, sample_entry());
  tampered[0].release_id = "r-2";
  tampered[1].hostname = "web-02";
  tampered[2].store_path = "/nix/store/1c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01";
  tampered[3].created_at += std::chrono::milliseconds(1);
  tampered[4].activation = activation_mode::boot;
  tampered[5].cache_urls = {"https://evil.example.org"};
  tampered[6].cache_urls.push_back("https://second.example.org");
  tampered[7].sequence = 8;
  for (const auto& t : tampered) BOOST_TEST(verify_entry(trusted, t, sig) == mismatch);
}

BOOST_AUTO_TEST_CASE(v1_entry_signatures_do_not_verify_as_v2_and_are_recognised) {
  auto key = rfc_key("ops-1");
  trusted_keys trusted({to_public_key(key)});
  const auto e = sample_entry();
  const auto v1 = sign(key, entry_signing_payload_v1(e.release_id, e.hostname, e.store_path, e.created_at)).to_string();
  BOOST_TEST(verify_entry(trusted, e, v1) == make_error_code(errc::signature_mismatch));
  BOOST_TEST(is_v1_entry_signature(trusted, e, v1));
  BOOST_TEST(!is_v1_entry_signature(trusted, e, sign_entry(key, e)));
}

BOOST_AUTO_TEST_CASE(statements_of_one_kind_never_verify_as_another) {
  auto key = rfc_key("ops-1");
  trusted_keys trusted({to_public_key(key)});
  rollback_statement rb{"web-01", std::string(path), created_at, created_at + std::chrono::hours(1), "bad kernel", {}};
  sign_rollback(key, rb);
  BOOST_TEST(!verify_rollback(trusted, rb));
  BOOST_TEST(rollback_signing_payload(rb).starts_with("nixfleet-rollback-v1\n"));
  auto other_host = rb;
  other_host.hostname = "web-02";
  BOOST_TEST(verify_rollback(trusted, other_host) == make_error_code(errc::signature_mismatch));
  auto longer = rb;
  longer.expires_at += std::chrono::hours(1);
  BOOST_TEST(verify_rollback(trusted, longer) == make_error_code(errc::signature_mismatch));

  revocation_list rl{3, created_at, {"r-1"}, {std::string(path)}, {"ops-0"}, {}};
  sign_revocations(key, rl);
  BOOST_TEST(!verify_revocations(trusted, rl));
  auto forgiven = rl;
  forgiven.releases.clear();
  BOOST_TEST(verify_revocations(trusted, forgiven) == make_error_code(errc::signature_mismatch));
  // The same signature over the same fields, presented as another kind of statement.
  BOOST_TEST(trusted.verify(entry_signing_payload(sample_entry()), rl.signature).failed());
}

BOOST_AUTO_TEST_CASE(expired_and_revoked_keys_are_refused) {
  auto key = rfc_key("ops-1");
  trusted_keys trusted;
  trusted.add(to_public_key(key), created_at);
  const auto sig = sign(key, "message").to_string();
  BOOST_TEST(!trusted.verify("message", sig, {.now = created_at}));
  BOOST_TEST(!trusted.verify("message", sig));  // no time given: not judged
  BOOST_TEST(trusted.verify("message", sig, {.now = created_at + std::chrono::milliseconds(1)}) ==
             make_error_code(errc::key_expired));
  const std::vector<std::string> revoked = {"ops-1"};
  BOOST_TEST(trusted.verify("message", sig, {.now = created_at, .revoked_keys = revoked}) ==
             make_error_code(errc::key_revoked));
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
