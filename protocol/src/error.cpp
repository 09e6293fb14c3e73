// The protocol error category and decode_error's text.
#include "nixfleet/protocol/error.hpp"

#include <boost/throw_exception.hpp>

#include <stdexcept>

namespace nixfleet::protocol {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "nixfleet.protocol"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::invalid_json: return "malformed JSON";
      case errc::wrong_type: return "wrong JSON type";
      case errc::missing_field: return "required field missing";
      case errc::out_of_range: return "number out of range";
      case errc::too_long: return "value too long";
      case errc::too_many_items: return "too many items";
      case errc::invalid_characters: return "invalid characters";
      case errc::invalid_identifier: return "invalid identifier";
      case errc::invalid_store_path: return "invalid store path";
      case errc::invalid_url: return "invalid URL";
      case errc::invalid_time: return "invalid RFC 3339 UTC time";
      case errc::invalid_enum: return "unknown value";
      case errc::invalid_size_spec: return "invalid count or percentage";
      case errc::invalid_combination: return "conflicting or incomplete fields";
      case errc::invalid_key: return "invalid key";
      case errc::invalid_signature: return "malformed signature";
      case errc::unknown_signer: return "signature by an untrusted key";
      case errc::signature_mismatch: return "signature does not match";
      case errc::not_finite: return "number is not finite";
      case errc::crypto_failure: return "cryptographic operation failed";
      case errc::key_expired: return "signed by a trusted key past its not_after time";
      case errc::key_revoked: return "signed by an operator key the revocation list withdrew";
    }
    return "unknown protocol error";
  }
};

}  // namespace

const boost::system::error_category& protocol_category() noexcept {
  static const category instance;
  return instance;
}

std::string decode_error::what() const {
  std::string out;
  if (!field.empty()) out.append(field).append(": ");
  out.append(message.empty() ? code.message() : message);
  return out;
}

void throw_exception_from_error(const decode_error& e, const boost::source_location& loc) {
  boost::throw_exception(std::invalid_argument(e.what()), loc);
}

}  // namespace nixfleet::protocol
