// Identifier, store path, URL and text validation.
#include "nixfleet/protocol/validate.hpp"

#include "nixfleet/protocol/error.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <span>

namespace nixfleet::protocol {
namespace {

constexpr bool is_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

boost::system::error_code check_id_like(std::string_view s, std::size_t max) {
  if (s.empty()) return errc::invalid_identifier;
  if (s.size() > max) return errc::too_long;
  if (!is_alnum(s.front())) return errc::invalid_identifier;
  for (char c : s)
    if (!is_alnum(c) && c != '.' && c != '_' && c != '-') return errc::invalid_identifier;
  return {};
}

constexpr std::string_view store_dir = "/nix/store/";
constexpr std::size_t hash_len = 32;
constexpr std::size_t max_name_len = 211;

boost::system::error_code check_url_with(std::string_view s, std::span<const std::string_view> schemes) {
  if (s.empty()) return errc::invalid_url;
  if (s.size() > 2048) return errc::too_long;
  for (unsigned char c : s)
    if (c <= ' ' || c >= 0x7f) return errc::invalid_url;
  auto u = boost::urls::parse_absolute_uri(s);
  if (!u) return errc::invalid_url;
  bool known = false;
  for (auto scheme : schemes) known = known || u->scheme() == scheme;
  if (!known) return errc::invalid_url;
  const bool needs_host = u->scheme() == "http" || u->scheme() == "https";
  if (needs_host && (!u->has_authority() || u->host().empty())) return errc::invalid_url;
  if (u->scheme() == "file" && !u->path().starts_with("/")) return errc::invalid_url;
  return {};
}

}  // namespace

bool is_nix_base32(char c) noexcept {
  // 0-9 and a-z without e, o, u, t.
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z' && c != 'e' && c != 'o' && c != 'u' && c != 't');
}

boost::system::error_code check_identifier(std::string_view s) { return check_id_like(s, 128); }

boost::system::error_code check_tag(std::string_view s) { return check_id_like(s, 64); }

boost::system::error_code check_store_path(std::string_view s) {
  if (!s.starts_with(store_dir)) return errc::invalid_store_path;
  auto rest = s.substr(store_dir.size());
  if (rest.size() < hash_len + 2 || rest[hash_len] != '-') return errc::invalid_store_path;
  for (char c : rest.substr(0, hash_len))
    if (!is_nix_base32(c)) return errc::invalid_store_path;
  auto name = rest.substr(hash_len + 1);
  if (name.size() > max_name_len) return errc::too_long;
  if (name.front() == '.') return errc::invalid_store_path;
  for (char c : name) {
    const bool ok = is_alnum(c) || c == '+' || c == '.' || c == '_' || c == '?' || c == '=' || c == '-';
    if (!ok) return errc::invalid_store_path;
  }
  return {};
}

boost::system::error_code check_cache_url(std::string_view s) {
  static constexpr std::array<std::string_view, 6> schemes = {"http", "https", "file", "s3", "ssh", "ssh-ng"};
  if (auto ec = check_url_with(s, schemes)) return ec;
  // Nix reads store parameters (`?trusted=1`, `?remote-program=…`, `?ssh-key=…`) from the query; a
  // URL that travels over the network carries none, and no user part either.
  auto u = boost::urls::parse_absolute_uri(s);
  if (u->has_query() || u->has_fragment() || u->has_userinfo()) return errc::invalid_url;
  return {};
}

boost::system::error_code check_fetchable_cache_url(std::string_view s) {
  if (auto ec = check_cache_url(s)) return ec;
  // A cache named by a release is only ever reached over HTTP(S) or S3: a file path or a remote
  // command on this host is the host's own configuration's business.
  static constexpr std::array<std::string_view, 3> schemes = {"http", "https", "s3"};
  return check_url_with(s, schemes);
}

boost::system::error_code check_local_cache_url(std::string_view s) {
  static constexpr std::array<std::string_view, 6> schemes = {"http", "https", "file", "s3", "ssh", "ssh-ng"};
  if (auto ec = check_url_with(s, schemes)) return ec;
  // The host's own caches may carry store parameters, but none that turns signature checks off.
  auto u = boost::urls::parse_absolute_uri(s);
  for (auto param : u->params())
    if (param.key == "trusted") return errc::invalid_url;
  if (u->has_fragment()) return errc::invalid_url;
  return {};
}

boost::system::error_code check_http_url(std::string_view s) {
  static constexpr std::array<std::string_view, 2> schemes = {"http", "https"};
  return check_url_with(s, schemes);
}

bool is_valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len;
    char32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    const char32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

namespace {

// The length of the UTF-8 character starting at s[i], or 0 when it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  const std::size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  return is_valid_utf8(s.substr(i, len)) ? len : 0;
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text) noexcept {
  // Iterative glob with one backtracking point for the last `*`.
  std::size_t p = 0, u = 0, star = std::string_view::npos, mark = 0;
  while (u < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[u])) {
      ++p;
      ++u;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = u;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      u = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string printable_excerpt(std::string_view raw, std::size_t max, keep part) {
  std::string clean;
  clean.reserve(std::min(raw.size(), max * 2));
  for (std::size_t i = 0; i < raw.size();) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c == 0x1b) {  // ESC: a CSI sequence ends at a byte in 0x40..0x7e; others are two bytes
      i += 1;
      if (i < raw.size() && raw[i] == '[') {
        ++i;
        while (i < raw.size() && !(raw[i] >= 0x40 && raw[i] <= 0x7e)) ++i;
      }
      if (i < raw.size()) ++i;
      continue;
    }
    if (c == '\r') { ++i; continue; }
    if (c < 0x80) {
      clean.push_back(c == '\n' || c == '\t' ? static_cast<char>(c) : (c < 0x20 || c == 0x7f) ? ' ' : static_cast<char>(c));
      ++i;
      continue;
    }
    if (const auto len = utf8_length(raw, i)) {
      clean.append(raw.substr(i, len));
      i += len;
    } else {
      clean.push_back('?');
      ++i;
    }
  }
  if (clean.size() <= max) return clean;
  static constexpr std::string_view mark = "[…]";
  if (max <= mark.size() + 1) return {};
  const std::size_t room = max - mark.size() - 1;
  auto boundary = [&](std::size_t at) {  // not inside a character
    while (at < clean.size() && (static_cast<unsigned char>(clean[at]) & 0xc0) == 0x80) ++at;
    return at;
  };
  if (part == keep::tail) {
    std::size_t from = boundary(clean.size() - room);
    if (const auto nl = clean.find('\n', from); nl != std::string::npos && nl + 1 < clean.size()) from = nl + 1;
    return std::string(mark) + "\n" + clean.substr(from);
  }
  std::size_t to = room;
  while (to > 0 && (static_cast<unsigned char>(clean[to]) & 0xc0) == 0x80) --to;
  if (const auto nl = clean.rfind('\n', to); nl != std::string::npos && nl > 0) to = nl;
  return clean.substr(0, to) + "\n" + std::string(mark);
}

boost::system::error_code check_text(std::string_view s, std::size_t max, newlines nl) {
  if (s.size() > max) return errc::too_long;
  for (unsigned char c : s) {
    const bool allowed_ws = nl == newlines::allow && (c == '\n' || c == '\r' || c == '\t');
    if ((c < 0x20 && !allowed_ws) || c == 0x7f) return errc::invalid_characters;
  }
  if (!is_valid_utf8(s)) return errc::invalid_characters;
  return {};
}

boost::system::error_code check_key_name(std::string_view s) {
  if (s.empty()) return errc::invalid_key;
  if (s.size() > 128) return errc::too_long;
  for (char c : s)
    if (!is_alnum(c) && c != '.' && c != '_' && c != '+' && c != '-') return errc::invalid_key;
  return {};
}

boost::system::error_code check_signature_text(std::string_view s) {
  auto sig = parse_signature(s);
  if (!sig) return sig.error();
  return {};
}

boost::system::error_code check_flake_rev(std::string_view s) {
  if (s.ends_with("-dirty")) s.remove_suffix(6);
  if (s.size() < 7 || s.size() > 64) return errc::invalid_identifier;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return errc::invalid_identifier;
  return {};
}

boost::system::error_code check_platform(std::string_view s) {
  if (s.empty() || s.size() > 64) return errc::invalid_identifier;
  auto dash = s.find('-');
  if (dash == 0 || dash == std::string_view::npos || dash + 1 == s.size()) return errc::invalid_identifier;
  for (char c : s)
    if (!is_alnum(c) && c != '_' && c != '-') return errc::invalid_identifier;
  return {};
}

}  // namespace nixfleet::protocol
