// The operator CLI's view of the coordinator: settings (flags > NIXFLEET_* environment > config
// file), a blocking HTTP(S) client, and the errors that end a command with one line.
#pragma once

#include "nixfleet/common/http_client.hpp"
#include "nixfleet/protocol/codec.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace nixfleet::cli {

// Exit codes of every command.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;
inline constexpr int exit_incomplete = 3;  // a rollout that did not complete

// A failure that ends the command: printed as one line on stderr, then exit `code`.
struct cli_error : std::runtime_error {
  cli_error(std::string message, int code = exit_failure) : std::runtime_error(std::move(message)), exit_code(code) {}
  int exit_code;
};

struct settings {
  std::string coordinator;  // URL
  std::optional<std::string> api_key;
  std::optional<std::string> api_key_file;
  std::optional<std::string> ca_file;
  std::optional<std::string> cert_file;
  std::optional<std::string> key_file;
  std::chrono::seconds timeout{30};
  bool json = false;
  // Plain http:// carries the API key in the clear: only to a loopback address unless this is set.
  bool insecure_http = false;
};

// Fills what the flags left unset from NIXFLEET_COORDINATOR, NIXFLEET_API_KEY,
// NIXFLEET_API_KEY_FILE, NIXFLEET_CA_FILE, NIXFLEET_CERT_FILE, NIXFLEET_KEY_FILE, then from the
// config file ($NIXFLEET_CONFIG, else $XDG_CONFIG_HOME/nixfleet/config.json, else
// ~/.config/nixfleet/config.json; keys: coordinator, api_key_file, ca_file, cert_file, key_file).
void complete_settings(settings& s);

// Reads a secret from a file that only its owner (and group) may read; refuses a
// world-readable file, naming the fix.
std::string read_secret_file(const std::string& path, const std::string& what);

using response = http_client::response;

namespace detail {
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
[[noreturn]] void invalid_answer(const std::string& target, const std::string& why);
}  // namespace detail

// `v` as the protocol type T, or a cli_error naming `target` and the offending field.
template <class T>
T decode(const boost::json::value& v, const std::string& target) {
  if constexpr (detail::is_vector<T>::value) {
    if (!v.is_array()) detail::invalid_answer(target, "not a JSON array");
    T out;
    std::size_t i = 0;
    for (const auto& x : v.as_array()) {
      auto d = protocol::from_json<typename T::value_type>(x);
      if (!d) detail::invalid_answer(target, "[" + std::to_string(i) + "]." + d.error().what());
      out.push_back(std::move(*d));
      ++i;
    }
    return out;
  } else {
    auto d = protocol::from_json<T>(v);
    if (!d) detail::invalid_answer(target, d.error().what());
    return std::move(*d);
  }
}

class client {
 public:
  explicit client(settings s);
  ~client();

  // Sends a request. Transport failures throw cli_error ("cannot reach the coordinator at …").
  response request(const std::string& method, const std::string& target, const std::string& body = {},
                   bool authenticated = true);
  // Like request, but a status other than 2xx throws cli_error with the coordinator's message;
  // returns the parsed JSON body (null for 204).
  boost::json::value call(const std::string& method, const std::string& target, const std::string& body = {});

  // Like call, decoded as the protocol type T (std::vector<T> for a JSON array of them): what the
  // coordinator answers is checked like any peer's input, and a malformed answer names its field.
  template <class T>
  T get(const std::string& target) {
    return decode<T>(call("GET", target), target);
  }
  template <class T>
  T send(const std::string& method, const std::string& target, const std::string& body = {}) {
    return decode<T>(call(method, target, body), target);
  }

  const settings& config() const noexcept { return s_; }

 private:
  settings s_;
  std::unique_ptr<http_client::client> http_;
  std::optional<std::string> key_;
};

}  // namespace nixfleet::cli
