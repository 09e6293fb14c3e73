// Structured logging shared by every nixfleet binary: one logfmt line per event, on spdlog.
#pragma once

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>
#include <string_view>
#include <system_error>

namespace nixfleet::log {

enum class level { trace, debug, info, warn, error, critical, off };

// Where lines go and how they look. `automatic` picks `journal` when stderr is connected to the
// systemd journal (JOURNAL_STREAM matches stderr), `plain` otherwise.
enum class format { automatic, plain, journal };

struct options {
  level min_level = level::info;
  format style = format::automatic;
  // Tests write into a stream instead of stderr.
  std::ostream* stream = nullptr;
};

// One `key=value` pair. Values are rendered at construction so a field never dangles.
struct field {
  field(std::string_view k, std::string_view v) : key(k), value(v) {}
  field(std::string_view k, const char* v) : key(k), value(v ? v : "") {}
  field(std::string_view k, const std::string& v) : key(k), value(v) {}
  field(std::string_view k, bool v) : key(k), value(v ? "true" : "false") {}
  template <std::integral T>
    requires(!std::same_as<T, bool> && !std::same_as<T, char>)
  field(std::string_view k, T v) : key(k), value(std::to_string(v)) {}
  field(std::string_view k, double v);
  field(std::string_view k, const std::error_code& ec) : key(k), value(ec.message()) {}

  std::string_view key;
  std::string value;
};

// Configures the process-wide logger. Safe to call again (tests do).
void init(const options& opts);

level parse_level(std::string_view name, level fallback);
std::string_view to_string(level l);
bool enabled(level l);

// Writes `msg="<event>" k=v ...` at level `l` (the logger adds time and level).
void write(level l, std::string_view event, std::initializer_list<field> fields);

inline void trace(std::string_view e, std::initializer_list<field> f = {}) { write(level::trace, e, f); }
inline void debug(std::string_view e, std::initializer_list<field> f = {}) { write(level::debug, e, f); }
inline void info(std::string_view e, std::initializer_list<field> f = {}) { write(level::info, e, f); }
inline void warn(std::string_view e, std::initializer_list<field> f = {}) { write(level::warn, e, f); }
inline void error(std::string_view e, std::initializer_list<field> f = {}) { write(level::error, e, f); }

namespace detail {
// logfmt body of one line, without time and level.
std::string render(std::string_view event, std::initializer_list<field> fields);
// Appends `value` quoted and escaped when logfmt needs it.
void append_value(std::string& out, std::string_view value);
// True when JOURNAL_STREAM ("<dev>:<inode>") names the given device and inode.
bool journal_stream_matches(std::string_view journal_stream, std::uint64_t dev, std::uint64_t ino);
}  // namespace detail

}  // namespace nixfleet::log
