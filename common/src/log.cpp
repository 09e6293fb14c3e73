// spdlog-backed implementation of nixfleet::log: formatting, journal detection, sinks.
#include "nixfleet/common/log.hpp"

#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstdlib>
#include <memory>
#include <mutex>

namespace nixfleet::log {
namespace {

spdlog::level::level_enum to_spdlog(level l) {
  switch (l) {
    case level::trace: return spdlog::level::trace;
    case level::debug: return spdlog::level::debug;
    case level::info: return spdlog::level::info;
    case level::warn: return spdlog::level::warn;
    case level::error: return spdlog::level::err;
    case level::critical: return spdlog::level::critical;
    case level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

// Renders the syslog priority prefix (`<3>` …) that journald reads off each stderr line.
class journal_priority_flag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr std::array<std::string_view, 7> prefixes = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    auto p = prefixes[static_cast<std::size_t>(msg.level) % prefixes.size()];
    dest.append(p.data(), p.data() + p.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<journal_priority_flag>();
  }
};

bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (env == nullptr) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return detail::journal_stream_matches(env, static_cast<std::uint64_t>(st.st_dev),
                                        static_cast<std::uint64_t>(st.st_ino));
}

std::mutex init_mutex;
std::shared_ptr<spdlog::logger> current;

// A copy under the lock: init() may swap the logger while another thread logs.
std::shared_ptr<spdlog::logger> logger() {
  {
    std::lock_guard lock(init_mutex);
    if (current) return current;
  }
  init(options{});
  std::lock_guard lock(init_mutex);
  return current;
}

}  // namespace

field::field(std::string_view k, double v) : key(k), value(fmt::format("{}", v)) {}

void init(const options& opts) {
  std::lock_guard lock(init_mutex);
  spdlog::sink_ptr sink;
  if (opts.stream != nullptr)
    sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*opts.stream, /*force_flush=*/true);
  else
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();

  const bool journal = opts.style == format::journal ||
                       (opts.style == format::automatic && opts.stream == nullptr && stderr_is_journal());
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (journal) {
    // The journal stamps time itself; the priority prefix lets it filter by level.
    formatter->add_flag<journal_priority_flag>('J').set_pattern("%Jlevel=%l %v");
  } else {
    formatter->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%eZ level=%l %v");
  }
  sink->set_formatter(std::move(formatter));

  auto l = std::make_shared<spdlog::logger>("nixfleet", std::move(sink));
  l->set_level(to_spdlog(opts.min_level));
  l->flush_on(spdlog::level::warn);
  current = std::move(l);
}

level parse_level(std::string_view name, level fallback) {
  static constexpr std::array<std::pair<std::string_view, level>, 8> names = {{
      {"trace", level::trace}, {"debug", level::debug}, {"info", level::info}, {"warn", level::warn},
      {"warning", level::warn}, {"error", level::error}, {"critical", level::critical}, {"off", level::off}}};
  for (auto [n, l] : names)
    if (n == name) return l;
  return fallback;
}

std::string_view to_string(level l) {
  switch (l) {
    case level::trace: return "trace";
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
    case level::critical: return "critical";
    case level::off: return "off";
  }
  return "info";
}

bool enabled(level l) { return logger()->should_log(to_spdlog(l)); }

void write(level l, std::string_view event, std::initializer_list<field> fields) {
  auto lg = logger();
  const auto sl = to_spdlog(l);
  if (!lg->should_log(sl)) return;
  lg->log(sl, "{}", detail::render(event, fields));
}

namespace detail {

void append_value(std::string& out, std::string_view value) {
  bool needs_quotes = value.empty();
  for (unsigned char c : value) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) {
      needs_quotes = true;
      break;
    }
  }
  if (!needs_quotes) {
    out.append(value);
    return;
  }
  out.push_back('"');
  for (unsigned char c : value) {
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x20 || c == 0x7f)
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(c));
        else
          out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

std::string render(std::string_view event, std::initializer_list<field> fields) {
  std::string out;
  out.reserve(64 + event.size());
  out.append("msg=");
  append_value(out, event);
  for (const auto& f : fields) {
    out.push_back(' ');
    // Keys come from code, but a key with a space or '=' would break the line's grammar.
    for (char c : f.key) out.push_back((c <= ' ' || c == '=' || c == '"') ? '_' : c);
    out.push_back('=');
    append_value(out, f.value);
  }
  return out;
}

bool journal_stream_matches(std::string_view journal_stream, std::uint64_t dev, std::uint64_t ino) {
  auto colon = journal_stream.find(':');
  if (colon == std::string_view::npos) return false;
  std::uint64_t d = 0, i = 0;
  auto a = journal_stream.substr(0, colon), b = journal_stream.substr(colon + 1);
  auto [pa, ea] = std::from_chars(a.data(), a.data() + a.size(), d);
  auto [pb, eb] = std::from_chars(b.data(), b.data() + b.size(), i);
  if (ea != std::errc{} || eb != std::errc{} || pa != a.data() + a.size() || pb != b.data() + b.size() ||
      a.empty() || b.empty())
    return false;
  return d == dev && i == ino;
}

}  // namespace detail
}  // namespace nixfleet::log
