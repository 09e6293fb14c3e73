// The CLI's output and argument helpers: tables, JSON, times, ids, globs.
#include "commands_detail.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <boost/json/serialize.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include <fnmatch.h>

#include <algorithm>
#include <iostream>

namespace nixfleet::cli::detail {

std::string str(const json::value& v, std::string_view key, std::string fallback) {
  if (!v.is_object()) return fallback;
  const auto* x = v.as_object().if_contains(key);
  if (x == nullptr || x->is_null()) return fallback;
  if (x->is_string()) return std::string(x->as_string());
  return json::serialize(*x);
}

// /nix/store/<hash>-name → <first 8 of hash>…-name, for tables.
std::string short_path(const std::string& p) {
  if (p.size() > 44 && p.starts_with("/nix/store/")) return p.substr(11, 8) + "…" + p.substr(43);
  return p;
}

void print_table(std::ostream& out, const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(head.size(), 0);
  auto cells = [](const std::string& s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // UTF-8 code points
    return n;
  };
  for (std::size_t i = 0; i < head.size(); ++i) width[i] = cells(head[i]);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], cells(r[i]));
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (std::size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(width[i] - cells(r[i]) + 2, ' ');
    }
    out << s << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
}

void print_json(const json::value& v) { std::cout << json::serialize(v) << "\n"; }

std::string or_dash(const std::optional<std::string>& s) { return s ? *s : "-"; }

// Tags as the JSON array they are: ["web","eu"].
std::string join(const std::vector<std::string>& items) {
  json::array a;
  for (const auto& x : items) a.push_back(json::value(x));
  return json::serialize(a);
}

std::string ago(protocol::timestamp t, protocol::timestamp now) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(now - t).count();
  if (s < 0) s = 0;
  if (s < 120) return std::to_string(s) + "s ago";
  if (s < 7200) return std::to_string(s / 60) + "m ago";
  if (s < 172800) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

protocol::timestamp now() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& x : v) a.push_back(json::value(x));
  return a;
}

std::string enc(const std::string& s) { return boost::urls::encode(s, boost::urls::unreserved_chars); }

void require_id(const std::string& id, const std::string& what) {
  if (protocol::check_identifier(id)) throw cli_error(what + ": not a valid identifier: " + id, exit_usage);
}

std::vector<std::string> glob_match(const std::vector<std::string>& names, const std::vector<std::string>& globs) {
  std::vector<std::string> out;
  for (const auto& n : names)
    for (const auto& g : globs)
      if (::fnmatch(g.c_str(), n.c_str(), 0) == 0) {
        out.push_back(n);
        break;
      }
  return out;
}

// ---------------------------------------------------------------------------------------
// Commands

}  // namespace nixfleet::cli::detail
