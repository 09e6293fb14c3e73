// The quick path's request-head reader and the one response-head writer.
#include "nixfleet/common/http_wire.hpp"

#include <boost/beast/http/status.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace nixfleet::http_wire {

namespace {

bool is_tchar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '&': case '\'': case '*': case '+': case '-': case '.':
    case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// A field value's bytes: visible ASCII, space, tab and obs-text; no other control character.
bool value_ok(std::string_view v) noexcept {
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

std::string_view trim(std::string_view v) noexcept {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

}  // namespace

std::optional<std::string_view> request_head::field(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < field_count; ++i)
    if (iequals(fields[i].first, name)) return fields[i].second;
  return std::nullopt;
}

std::optional<request_head> read_request_head(std::string_view data, std::size_t limit) noexcept {
  // One pass over the bytes: each line ends at its LF, which must follow a CR; no other CR or LF
  // may appear. The head ends at the first empty line.
  data = data.substr(0, limit);
  request_head h;
  bool first_line = true;
  std::size_t at = 0;
  for (;;) {
    const void* found = std::memchr(data.data() + at, '\n', data.size() - at);
    if (found == nullptr) return std::nullopt;  // incomplete (or over the limit)
    const auto lf = static_cast<std::size_t>(static_cast<const char*>(found) - data.data());
    if (lf == at || data[lf - 1] != '\r') return std::nullopt;
    const std::string_view line = data.substr(at, lf - 1 - at);
    at = lf + 1;
    if (line.find('\r') != std::string_view::npos) return std::nullopt;
    if (first_line) {
      first_line = false;
      const auto sp1 = line.find(' ');
      const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
      if (sp2 == std::string_view::npos) return std::nullopt;
      h.method = line.substr(0, sp1);
      h.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      const auto version = line.substr(sp2 + 1);
      if (h.method.empty() || !std::all_of(h.method.begin(), h.method.end(), is_tchar)) return std::nullopt;
      if (h.target.empty() || h.target.front() != '/') return std::nullopt;
      for (char ch : h.target) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c >= 0x7f || c == '%' || c == '#') return std::nullopt;
      }
      if (version == "HTTP/1.1") h.version = 11;
      else if (version == "HTTP/1.0") h.version = 10;
      else return std::nullopt;
      h.keep_alive = h.version == 11;
      continue;
    }
    if (line.empty()) {
      h.size = at;
      return h;
    }
    if (h.field_count == request_head::max_fields) return std::nullopt;
    const auto colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return std::nullopt;  // also a folded line
    const auto name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), is_tchar)) return std::nullopt;
    const auto value = trim(line.substr(colon + 1));
    if (!value_ok(value)) return std::nullopt;
    if (iequals(name, "transfer-encoding")) return std::nullopt;
    if (iequals(name, "content-length") && value != "0") return std::nullopt;
    if (iequals(name, "connection")) {
      if (iequals(value, "close")) h.keep_alive = false;
      else if (iequals(value, "keep-alive")) h.keep_alive = true;
      else return std::nullopt;
    }
    h.fields[h.field_count++] = {name, value};
  }
}

namespace {

template <class Fields>
void write_head(std::string& out, unsigned status, std::string_view content_type, const Fields& fields,
                std::size_t body_size, unsigned version, bool keep_alive, std::string_view server_name) {
  char number[24];
  auto append_number = [&](std::uint64_t n) {
    const auto [p, ec] = std::to_chars(number, number + sizeof number, n);
    out.append(number, p);
  };
  out.append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_number(status);
  out.push_back(' ');
  out.append(boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status)));
  out.append("\r\nServer: ").append(server_name);
  if (body_size > 0 || status != 204) out.append("\r\nContent-Type: ").append(content_type);
  for (const auto& [k, v] : fields) out.append("\r\n").append(k).append(": ").append(v);
  if (version == 11 && !keep_alive) out.append("\r\nConnection: close");
  if (version == 10 && keep_alive) out.append("\r\nConnection: keep-alive");
  out.append("\r\nContent-Length: ");
  append_number(body_size);
  out.append("\r\n\r\n");
}

}  // namespace

void write_response(std::string& out, const http_response& r, unsigned version, bool keep_alive,
                    std::string_view server_name, bool with_body) {
  write_head(out, r.status, r.content_type, r.headers, r.body.size(), version, keep_alive, server_name);
  if (with_body) out.append(r.body);
}

void write_response(std::string& out, unsigned status, std::string_view content_type,
                    std::span<const std::pair<std::string_view, std::string_view>> fields, std::string_view body,
                    unsigned version, bool keep_alive, std::string_view server_name, bool with_body) {
  write_head(out, status, content_type, fields, body.size(), version, keep_alive, server_name);
  if (with_body) out.append(body);
}

}  // namespace nixfleet::http_wire
