// HTTP/1.1 on the wire without Beast, for the server's quick path: a strict reader of a request head
// that takes only the plain case (a whole head, no body, nothing unusual; anything else is left to
// Beast's parser) and the one writer of a response head, used for every answer that is not streamed.
#pragma once

#include "nixfleet/common/http_server.hpp"

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace nixfleet::http_wire {

// A request head read in place: the views point into the bytes it was read from.
struct request_head {
  std::string_view method;
  std::string_view target;
  unsigned version = 11;  // 10 or 11
  bool keep_alive = true;
  std::size_t size = 0;  // the head's bytes, the blank line included
  static constexpr std::size_t max_fields = 32;
  std::array<std::pair<std::string_view, std::string_view>, max_fields> fields{};
  std::size_t field_count = 0;

  // The first field of that name (case-insensitive), or nullopt.
  std::optional<std::string_view> field(std::string_view name) const noexcept;
};

// The head at the start of `data`, when it is whole, at most `limit` bytes, and plain: a token
// method, an origin-form target of visible ASCII without '%', HTTP/1.0 or 1.1, CRLF line ends, at
// most max_fields fields with token names and no folding, no body (no Transfer-Encoding, no
// Content-Length but 0) and a Connection field of "close" or "keep-alive" if any. Anything else
// (an incomplete head included) gives nullopt: the full parser reads it and answers any error.
std::optional<request_head> read_request_head(std::string_view data, std::size_t limit) noexcept;

// Appends the answer's status line and header (and its body) to `out`: Server, then Content-Type
// unless a 204 without body, the handler's fields in order, Connection when it differs from the
// version's default, and Content-Length. `r.stream` and `r.held` are not looked at.
void write_response(std::string& out, const http_response& r, unsigned version, bool keep_alive,
                    std::string_view server_name, bool with_body = true);
// The same from parts, nothing made on the way (the quick path).
void write_response(std::string& out, unsigned status, std::string_view content_type,
                    std::span<const std::pair<std::string_view, std::string_view>> fields, std::string_view body,
                    unsigned version, bool keep_alive, std::string_view server_name, bool with_body = true);

}  // namespace nixfleet::http_wire
