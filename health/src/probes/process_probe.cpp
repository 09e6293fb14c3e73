// Helpers for process-running probes.
#include "process_probe.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace nixfleet::health::detail {

std::string first_line(const std::string& text, std::size_t max) {
  auto start = text.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return {};
  auto end = text.find('\n', start);
  std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.size() > max) line = line.substr(0, max) + "…";
  for (auto& c : line)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  if (!protocol::is_valid_utf8(line)) return "(output is not UTF-8)";
  return line;
}

std::string failure_text(const process::result& r) {
  auto text = r.describe();
  if (auto err = first_line(r.err_tail); !err.empty()) text += ": " + err;
  return text;
}

std::string output_of(const process::result& r) {
  constexpr std::size_t part = protocol::limits::max_evidence_output_bytes / 2 - 32;
  std::string text;
  if (!r.out.empty()) {
    text += "stdout:\n" + protocol::printable_excerpt(r.out, part);
    if (r.out_truncated) text += "\n(stdout beyond " + std::to_string(r.out.size()) + " bytes was discarded)";
    text += '\n';
  }
  if (!r.err_tail.empty()) text += "stderr:\n" + protocol::printable_excerpt(r.err_tail, part) + '\n';
  return text;
}

outcome parse_json_outcome(const process::result& r) {
  if (r.out_truncated) return {false, "output larger than the cap is not a valid result"};
  boost::system::error_code ec;
  auto v = boost::json::parse(r.out, ec);
  const auto* obj = ec ? nullptr : v.if_object();
  const auto* status = obj ? obj->if_contains("status") : nullptr;
  if (status == nullptr || !status->is_string() || (status->get_string() != "pass" && status->get_string() != "fail"))
    return {false, "invalid result: expected JSON {\"status\": \"pass\"|\"fail\", \"message\": …} on stdout"};
  outcome o{status->get_string() == "pass", {}};
  if (const auto* m = obj->if_contains("message"); m && m->is_string())
    o.message = first_line(std::string(m->get_string()), 1024);
  return o;
}

}  // namespace nixfleet::health::detail
