// RFC 3339 UTC parsing and formatting.
#include "nixfleet/protocol/time.hpp"

#include <charconv>

#include <fmt/format.h>

namespace nixfleet::protocol {
namespace {

bool read_digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

std::string format_time(timestamp t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss<milliseconds> tod{t - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), tod.hours().count(),
                     tod.minutes().count(), tod.seconds().count(), tod.subseconds().count());
}

boost::system::result<timestamp> parse_time(std::string_view s) {
  using namespace std::chrono;
  const boost::system::error_code bad = errc::invalid_time;
  if (s.size() < 20 || s.size() > 40) return bad;
  int y, mo, d, h, mi, sec;
  if (!read_digits(s, 0, 4, y) || s[4] != '-' || !read_digits(s, 5, 2, mo) || s[7] != '-' ||
      !read_digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't') || !read_digits(s, 11, 2, h) || s[13] != ':' ||
      !read_digits(s, 14, 2, mi) || s[16] != ':' || !read_digits(s, 17, 2, sec))
    return bad;
  std::size_t pos = 19;
  int millis = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::size_t digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 3) millis = millis * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0 || digits > 9) return bad;
    for (std::size_t k = digits; k < 3; ++k) millis *= 10;
  }
  const auto zone = s.substr(pos);
  if (zone != "Z" && zone != "z" && zone != "+00:00" && zone != "-00:00") return bad;
  if (y < 1970 || mo < 1 || mo > 12 || h > 23 || mi > 59 || sec > 59) return bad;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return bad;
  return timestamp{sys_days{ymd}} + hours{h} + minutes{mi} + seconds{sec} + milliseconds{millis};
}

std::optional<std::chrono::seconds> parse_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::int64_t unit = 1;
  switch (s.back()) {
    case 's': unit = 1; s.remove_suffix(1); break;
    case 'm': unit = 60; s.remove_suffix(1); break;
    case 'h': unit = 3600; s.remove_suffix(1); break;
    case 'd': unit = 86400; s.remove_suffix(1); break;
    default: break;
  }
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || n < 0) return std::nullopt;
  if (n > 100LL * 365 * 86400 / unit) return std::nullopt;
  return std::chrono::seconds(n * unit);
}

}  // namespace nixfleet::protocol
