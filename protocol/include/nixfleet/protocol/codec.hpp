// JSON conversion for every wire type: strict decoding that names the offending field,
// and encoding through Boost.JSON's value_from.
#pragma once

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/json/value.hpp>

#include <string>
#include <string_view>

namespace nixfleet::protocol {

// The types `from_json`, `parse` and `to_json` accept.
template <class T>
concept wire_type =
    std::same_as<T, desired_state> || std::same_as<T, probe_result> || std::same_as<T, health_report> ||
    std::same_as<T, report> || std::same_as<T, report_batch> || std::same_as<T, report_ack> ||
    std::same_as<T, release_entry> || std::same_as<T, release_request> || std::same_as<T, release> ||
    std::same_as<T, release_change> || std::same_as<T, release_diff> || std::same_as<T, rollout_target> ||
    std::same_as<T, rollout_request> || std::same_as<T, rollout_host> || std::same_as<T, rollout_wave> ||
    std::same_as<T, rollout_event> || std::same_as<T, rollout_detail> || std::same_as<T, resume_request> ||
    std::same_as<T, confirmed_generation> || std::same_as<T, machine_status> ||
    std::same_as<T, machine_update> || std::same_as<T, rollback_request> || std::same_as<T, audit_event> ||
    std::same_as<T, key_request> || std::same_as<T, api_key_info> || std::same_as<T, created_key> ||
    std::same_as<T, audit_verification> || std::same_as<T, audit_checkpoint> ||
    std::same_as<T, error_body> || std::same_as<T, enroll_token_request> || std::same_as<T, enroll_token> ||
    std::same_as<T, enroll_request> || std::same_as<T, certificate_request> || std::same_as<T, issued_certificate> || std::same_as<T, rollback_statement> || std::same_as<T, revocation_list> ||
    std::same_as<T, probe_evidence> || std::same_as<T, forensics_bundle> || std::same_as<T, webhook_request> ||
    std::same_as<T, webhook_info> || std::same_as<T, webhook_delivery>;

// Decodes a parsed value. Unknown fields are ignored; a missing required field, a wrong type,
// an out-of-range number or a value failing its validator is an error naming the field.
template <wire_type T>
decoded<T> from_json(const boost::json::value& v);

// Parses `text` (depth ≤ 32, size ≤ limits::max_body_bytes; a release's ≤ max_release_bytes) and
// decodes it.
template <wire_type T>
decoded<T> parse(std::string_view text);

template <wire_type T>
boost::json::value to_json(const T& v);

template <wire_type T>
std::string serialize(const T& v);

}  // namespace nixfleet::protocol
