// RFC 8785 JSON Canonicalization Scheme: the byte form that release signatures cover.
#pragma once

#include "nixfleet/protocol/error.hpp"

#include <boost/json/fwd.hpp>

#include <string>
#include <string_view>

namespace nixfleet::protocol {

// Canonical form of a value: object members sorted by UTF-16 code units, no whitespace,
// minimal string escapes, numbers as ECMAScript's Number.prototype.toString. Fails with
// errc::not_finite for NaN or infinity.
boost::system::result<std::string> canonicalize(const boost::json::value& v);

// Parses JSON text and canonicalises it. Numbers are read with correct rounding (the
// general-purpose parser may be off by one unit in the last place). Fails with
// errc::invalid_json, errc::not_finite.
boost::system::result<std::string> canonicalize_text(std::string_view json_text);

// ECMAScript Number.prototype.toString for a finite double (RFC 8785 §3.2.2.3).
std::string format_number(double d);

}  // namespace nixfleet::protocol
