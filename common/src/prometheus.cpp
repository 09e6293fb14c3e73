// The Prometheus text writer.
#include "nixfleet/common/prometheus.hpp"

#include <fmt/format.h>

#include <cmath>

namespace nixfleet::prometheus {

void text::family(std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out_), "# HELP {} ", name);
  for (char c : help) {  // in HELP, only the backslash and the line break are escaped
    if (c == '\\') out_ += "\\\\";
    else if (c == '\n') out_ += "\\n";
    else out_ += c;
  }
  fmt::format_to(std::back_inserter(out_), "\n# TYPE {} {}\n", name, type);
}

void text::head(std::string_view name, labels ls) {
  out_ += name;
  if (ls.size() == 0) {
    out_ += ' ';
    return;
  }
  out_ += '{';
  bool first = true;
  for (const auto& [k, v] : ls) {
    if (!first) out_ += ',';
    first = false;
    out_ += k;
    out_ += "=\"";
    for (char c : v) {
      if (c == '\\') out_ += "\\\\";
      else if (c == '"') out_ += "\\\"";
      else if (c == '\n') out_ += "\\n";
      else out_ += c;
    }
    out_ += '"';
  }
  out_ += "} ";
}

void text::put(std::string_view name, labels ls, std::uint64_t v) {
  head(name, ls);
  fmt::format_to(std::back_inserter(out_), "{}\n", v);
}

void text::put(std::string_view name, labels ls, std::int64_t v) {
  head(name, ls);
  fmt::format_to(std::back_inserter(out_), "{}\n", v);
}

void text::put(std::string_view name, labels ls, double v) {
  head(name, ls);
  if (std::isnan(v)) out_ += "NaN\n";
  else if (std::isinf(v)) out_ += v > 0 ? "+Inf\n" : "-Inf\n";
  else fmt::format_to(std::back_inserter(out_), "{}\n", v);
}

}  // namespace nixfleet::prometheus
