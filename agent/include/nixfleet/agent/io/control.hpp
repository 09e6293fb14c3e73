// The local break-glass control socket: a unix stream socket (root only, mode 0600) taking one JSON
// line {"command": "status"|"hold"|"release-hold"|"rollback"} and answering one JSON line.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace nixfleet::agent::io {

class agent_runtime;

// Serves until cancelled. Bad requests get {"ok": false, "error": …}; the socket keeps serving. A
// client gets `deadline` to send its line and again to read the answer, then is closed.
boost::asio::awaitable<void> serve_control(std::string socket_path, agent_runtime& rt, std::chrono::milliseconds deadline);

// The answer to one command (exposed for tests).
boost::asio::awaitable<boost::json::value> handle_control(const std::string& line, agent_runtime& rt);

// Client side: sends `command` and returns the answer; throws on connection errors.
boost::json::value control_request(const std::string& socket_path, const std::string& command);

}  // namespace nixfleet::agent::io
