// RFC 8785 canonicalisation: number formatting, string escaping, UTF-16 key order.
#include "nixfleet/protocol/canonical_json.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace nixfleet::protocol {
namespace {

// UTF-8 to UTF-16 code units, for key ordering. Input is valid UTF-8 (Boost.JSON checks).
std::u16string to_utf16(std::string_view s) {
  std::u16string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    char32_t cp;
    std::size_t len;
    if (c < 0x80) { cp = c; len = 1; }
    else if ((c & 0xe0) == 0xc0) { cp = c & 0x1f; len = 2; }
    else if ((c & 0xf0) == 0xe0) { cp = c & 0x0f; len = 3; }
    else { cp = c & 0x07; len = 4; }
    for (std::size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    i += len;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xd800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xdc00 + (cp & 0x3ff)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return out;
}

void append_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x20) {
          out.append("\\u00");
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

boost::system::error_code append_value(std::string& out, const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::null: out.append("null"); return {};
    case boost::json::kind::bool_: out.append(v.get_bool() ? "true" : "false"); return {};
    case boost::json::kind::int64: out.append(format_number(static_cast<double>(v.get_int64()))); return {};
    case boost::json::kind::uint64: out.append(format_number(static_cast<double>(v.get_uint64()))); return {};
    case boost::json::kind::double_:
      if (!std::isfinite(v.get_double())) return errc::not_finite;
      out.append(format_number(v.get_double()));
      return {};
    case boost::json::kind::string: append_string(out, v.get_string()); return {};
    case boost::json::kind::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out.push_back(',');
        first = false;
        if (auto ec = append_value(out, e)) return ec;
      }
      out.push_back(']');
      return {};
    }
    case boost::json::kind::object: {
      const auto& obj = v.get_object();
      std::vector<std::pair<std::u16string, const boost::json::key_value_pair*>> members;
      members.reserve(obj.size());
      for (const auto& kv : obj) members.emplace_back(to_utf16(kv.key()), &kv);
      std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out.push_back('{');
      bool first = true;
      for (const auto& [_, kv] : members) {
        if (!first) out.push_back(',');
        first = false;
        append_string(out, kv->key());
        out.push_back(':');
        if (auto ec = append_value(out, kv->value())) return ec;
      }
      out.push_back('}');
      return {};
    }
  }
  return errc::invalid_json;
}

// A basic_parser handler that builds a json::value but reads every number from its text with
// std::from_chars, which rounds correctly.
class precise_handler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  boost::json::value result;

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }
  bool on_object_begin(boost::system::error_code&) { return open(boost::json::object()); }
  bool on_object_end(std::size_t, boost::system::error_code& ec) { return close(ec); }
  bool on_array_begin(boost::system::error_code&) { return open(boost::json::array()); }
  bool on_array_end(std::size_t, boost::system::error_code& ec) { return close(ec); }
  bool on_key_part(boost::json::string_view s, std::size_t, boost::system::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t, boost::system::error_code&) {
    key_.append(s.data(), s.size());
    keys_.push_back(std::move(key_));
    key_.clear();
    return true;
  }
  bool on_string_part(boost::json::string_view s, std::size_t, boost::system::error_code&) {
    str_.append(s.data(), s.size());
    return true;
  }
  bool on_string(boost::json::string_view s, std::size_t, boost::system::error_code& ec) {
    str_.append(s.data(), s.size());
    bool ok = put(boost::json::value(str_), ec);
    str_.clear();
    return ok;
  }
  bool on_number_part(boost::json::string_view s, boost::system::error_code&) {
    num_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t, boost::json::string_view s, boost::system::error_code& ec) { return number(s, ec); }
  bool on_uint64(std::uint64_t, boost::json::string_view s, boost::system::error_code& ec) { return number(s, ec); }
  bool on_double(double, boost::json::string_view s, boost::system::error_code& ec) { return number(s, ec); }
  bool on_bool(bool b, boost::system::error_code& ec) { return put(boost::json::value(b), ec); }
  bool on_null(boost::system::error_code& ec) { return put(boost::json::value(nullptr), ec); }
  bool on_comment_part(boost::json::string_view, boost::system::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::system::error_code&) { return true; }

 private:
  bool number(boost::json::string_view s, boost::system::error_code& ec) {
    num_.append(s.data(), s.size());
    double d = 0;
    auto [ptr, err] = std::from_chars(num_.data(), num_.data() + num_.size(), d);
    num_.clear();
    // from_chars reports out_of_range for 1e400 (and for underflow to zero, which is finite).
    if (err == std::errc::result_out_of_range) {
      d = std::strtod(std::string(s.data(), s.size()).c_str(), nullptr);
      if (!std::isfinite(d)) {
        ec = errc::not_finite;
        return false;
      }
    } else if (err != std::errc{}) {
      ec = errc::invalid_json;
      return false;
    }
    (void)ptr;
    return put(boost::json::value(d), ec);
  }
  bool open(boost::json::value container) {
    stack_.push_back(std::move(container));
    return true;
  }
  bool close(boost::system::error_code& ec) {
    auto v = std::move(stack_.back());
    stack_.pop_back();
    return put(std::move(v), ec);
  }
  bool put(boost::json::value v, boost::system::error_code& ec) {
    if (stack_.empty()) {
      result = std::move(v);
    } else if (stack_.back().is_array()) {
      stack_.back().get_array().push_back(std::move(v));
    } else {
      auto& obj = stack_.back().get_object();
      // RFC 8785 §3.1: duplicate property names make the input invalid.
      if (obj.contains(keys_.back())) {
        ec = errc::invalid_json;
        return false;
      }
      obj.emplace(keys_.back(), std::move(v));
      keys_.pop_back();
    }
    return true;
  }

  std::vector<boost::json::value> stack_;
  std::vector<std::string> keys_;
  std::string key_, str_, num_;
};

}  // namespace

std::string format_number(double d) {
  if (d == 0) return "0";  // also -0
  std::string out;
  if (d < 0) {
    out.push_back('-');
    d = -d;
  }
  // Shortest round-trip digits in scientific form: "d.ddddde+XX".
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
  const auto e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos))
    if (c != '.') digits.push_back(c);
  const int exp10 = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;  // decimal point position relative to the digit string

  if (k <= n && n <= 21) {
    out.append(digits).append(static_cast<std::size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out.append(digits, 0, static_cast<std::size_t>(n)).push_back('.');
    out.append(digits, static_cast<std::size_t>(n));
  } else if (-6 < n && n <= 0) {
    out.append("0.").append(static_cast<std::size_t>(-n), '0').append(digits);
  } else {
    out.push_back(digits[0]);
    if (k > 1) out.append(".").append(digits, 1);
    out.push_back('e');
    out.push_back(n - 1 >= 0 ? '+' : '-');
    out.append(std::to_string(std::abs(n - 1)));
  }
  return out;
}

boost::system::result<std::string> canonicalize(const boost::json::value& v) {
  std::string out;
  if (auto ec = append_value(out, v)) return ec;
  return out;
}

boost::system::result<std::string> canonicalize_text(std::string_view json_text) {
  boost::json::basic_parser<precise_handler> parser(boost::json::parse_options{});
  boost::system::error_code ec;
  const auto n = parser.write_some(false, json_text.data(), json_text.size(), ec);
  if (!ec && (n != json_text.size() || !parser.done())) ec = errc::invalid_json;
  if (ec) {
    if (ec == errc::not_finite) return ec;
    return boost::system::error_code(errc::invalid_json);
  }
  return canonicalize(parser.handler().result);
}

}  // namespace nixfleet::protocol
