// Error codes of the protocol library and the decode error that names the offending field.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <string>
#include <type_traits>

namespace nixfleet::protocol {

enum class errc {
  invalid_json = 1,
  wrong_type,
  missing_field,
  out_of_range,
  too_long,
  too_many_items,
  invalid_characters,
  invalid_identifier,
  invalid_store_path,
  invalid_url,
  invalid_time,
  invalid_enum,
  invalid_size_spec,
  invalid_combination,
  invalid_key,
  invalid_signature,
  unknown_signer,
  signature_mismatch,
  not_finite,
  crypto_failure,
  key_expired,
  key_revoked,
};

const boost::system::error_category& protocol_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), protocol_category()};
}

// Why an input was refused: the code, the JSON path of the field (`reports[2].store_path`;
// empty for the document itself) and a human sentence that leaks no internals.
struct decode_error {
  boost::system::error_code code;
  std::string field;
  std::string message;

  // "reports[2].store_path: not a valid store path (…)"
  std::string what() const;
};

[[noreturn]] void throw_exception_from_error(const decode_error& e, const boost::source_location& loc);

template <class T>
using decoded = boost::system::result<T, decode_error>;

}  // namespace nixfleet::protocol

template <>
struct boost::system::is_error_code_enum<nixfleet::protocol::errc> : std::true_type {};
