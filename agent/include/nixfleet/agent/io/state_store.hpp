// The agent's durable state under state_dir: the in-flight record and the persistent state (last
// known good, quarantine, hold). Each file is sealed with a SHA-256 of its canonical content, so a
// torn or corrupted file is detected, set aside, and never crashes the agent.
#pragma once

#include "nixfleet/agent/core/deployer.hpp"
#include "nixfleet/agent/core/outbox.hpp"

#include <boost/asio/awaitable.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace nixfleet::agent::io {

struct persistent_state {
  std::optional<std::string> last_good;
  // Confirmed paths, newest last (at most 16): where a manual rollback goes.
  std::vector<std::string> confirmed;
  std::vector<core::quarantine_entry> quarantine;  // newest last, at most 64 kept
  bool hold = false;
  // Anti-downgrade (architecture §4): the newest signed release accepted, the one step back from
  // it, a target staged for the next boot, and the newest verified revocation list.
  std::optional<core::high_water> accepted;
  std::optional<std::string> step_back;
  std::optional<std::string> staged_boot;
  std::optional<protocol::revocation_list> revocations;
  friend bool operator==(const persistent_state&, const persistent_state&) = default;
};

template <class T>
struct loaded {
  T value{};
  // Set when a file existed but could not be trusted (it was moved to <name>.corrupt).
  std::optional<std::string> problem;
};

class state_store {
 public:
  explicit state_store(std::filesystem::path dir) : dir_(std::move(dir)) {}

  // Creates the directory (mode 0700) if needed.
  boost::system::error_code prepare() const;

  // True when the directory lives on a tmpfs: its records do not survive a reboot (an ephemeral
  // root without the state declared persistent).
  bool volatile_storage() const;

  loaded<std::optional<core::in_flight>> load_record() const;
  loaded<persistent_state> load_state() const;

  // Durable when they complete without error.
  boost::asio::awaitable<boost::system::error_code> save_record(core::in_flight record) const;
  boost::system::error_code clear_record() const;
  boost::asio::awaitable<boost::system::error_code> save_state(persistent_state state) const;

  // The outbox's lifecycle reports and its next sequence number (periodic reports are not kept:
  // a fresh one is made after a restart anyway).
  loaded<core::outbox> load_outbox(std::size_t limit) const;
  boost::asio::awaitable<boost::system::error_code> save_outbox(const core::outbox& box) const;

  const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  std::filesystem::path dir_;
};

// The sealed text of a JSON value, and its check (exposed for tests).
std::string seal(const boost::json::value& data);
boost::system::result<boost::json::value> unseal(std::string_view text);

}  // namespace nixfleet::agent::io
