// Fuzzes every wire-type decoder, canonical JSON, the signed statements' payloads and the signature
// parsers with the same input.
// Property checked beyond "no crash": whatever decodes re-encodes to something that decodes to
// the same value.
#include "nixfleet/protocol/canonical_json.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

using namespace nixfleet::protocol;

template <class T>
void round_trip(std::string_view text) {
  auto d = parse<T>(text);
  if (!d) {
    if (d.error().message.empty()) std::abort();  // every refusal explains itself
    return;
  }
  auto again = parse<T>(serialize(*d));
  if (!again || !(*again == *d)) std::abort();
}

template <class... T>
void round_trip_all(std::string_view text) {
  (round_trip<T>(text), ...);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  round_trip_all<desired_state, probe_result, health_report, report, report_batch, report_ack, release_entry,
                 release_request, release, release_change, release_diff, rollout_target, rollout_request,
                 rollout_host, rollout_wave, rollout_event, rollout_detail, resume_request, confirmed_generation,
                 machine_status, machine_update, rollback_request, audit_event, key_request, api_key_info,
                 created_key, error_body, rollback_statement, revocation_list, audit_checkpoint,
                 audit_verification, enroll_token_request, enroll_token, enroll_request, certificate_request,
                 issued_certificate>(text);

  // What an agent computes from a decoded statement to check its signature never fails.
  if (auto d = parse<desired_state>(text)) {
    (void)entry_signing_payload(entry_statement_of(*d));
    if (d->rollback) (void)rollback_signing_payload(*d->rollback);
  }
  if (auto r = parse<revocation_list>(text)) (void)revocations_signing_payload(*r);

  // Canonical form is a fixed point.
  if (auto c = canonicalize_text(text)) {
    auto twice = canonicalize_text(*c);
    if (!twice || *twice != *c) std::abort();
  }
  (void)parse_signature(text);
  (void)parse_public_key(text);
  (void)parse_time(text);
  (void)parse_size_spec(text);
  return 0;
}
