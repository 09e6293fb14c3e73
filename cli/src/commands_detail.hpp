// Internal to the CLI: the output helpers, the command context, each command's options, and the
// commands themselves (releases.cpp, rollouts.cpp, fleet.cpp), wired up by commands.cpp.
#pragma once

#include "nixfleet/cli/client.hpp"
#include "nixfleet/cli/nix.hpp"
#include "nixfleet/common/process.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/types.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace nixfleet::cli::detail {

namespace json = boost::json;

// ---------------------------------------------------------------------------------------
// Output

std::string str(const json::value& v, std::string_view key, std::string fallback = "-");
std::string short_path(const std::string& p);
void print_table(std::ostream& out, const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows);
void print_json(const json::value& v);
std::string or_dash(const std::optional<std::string>& s);
std::string join(const std::vector<std::string>& items);
std::string ago(protocol::timestamp t, protocol::timestamp now);
protocol::timestamp now();
json::array strings(const std::vector<std::string>& v);
std::string enc(const std::string& s);
void require_id(const std::string& id, const std::string& what);
std::vector<std::string> glob_match(const std::vector<std::string>& names, const std::vector<std::string>& globs);

template <class T>
json::array to_json_array(const std::vector<T>& items) {
  json::array a;
  for (const auto& x : items) a.push_back(protocol::to_json(x));
  return a;
}

// ---------------------------------------------------------------------------------------
// Commands and their options

struct context {
  settings s;
  client api() {
    auto copy = s;
    complete_settings(copy);
    return client(copy);
  }
};

// release create
struct release_create_opts {
  std::optional<std::string> flake;
  std::vector<std::string> hosts_globs;
  std::vector<std::string> entries;
  std::optional<std::string> push_to;
  std::string sign_key;
  std::optional<std::string> id;
  std::vector<std::string> cache_urls;
  std::vector<std::string> tags;
  std::optional<std::uint64_t> sequence;
  std::string activation = "switch";
};

// release revoke
struct release_revoke_opts {
  std::vector<std::string> releases;
  std::vector<std::string> paths;
  std::vector<std::string> keys;
  std::string sign_key;
  std::vector<std::string> trusted_keys;  // besides the signing key, who may have signed the current list
};

struct deploy_opts {
  std::string release;
  std::vector<std::string> tags, hosts;
  std::string waves = "1,10%,100%";
  unsigned soak = 300;
  std::string threshold = "0";
  unsigned health_timeout = 600;
  std::string on_failure = "pause";
  bool wait = false;
};

struct status_opts {
  std::optional<std::string> tag, state;
  unsigned stale_after = 300;
};

struct rollback_opts {
  std::string host;
  std::optional<std::string> to;
  bool ssh = false;
  std::optional<std::string> target;
  std::string profile = "/nix/var/nix/profiles/system";
  std::vector<std::string> ssh_options;
  std::optional<std::string> sign_key;  // signs a rollback statement for --to
  std::string reason = "operator rollback";
  std::uint32_t valid_for_s = 3600;
};

struct audit_opts {
  std::optional<std::string> actor, action, target, since, format;
  unsigned limit = 100;
  bool verify = false;
  std::optional<std::string> public_key;  // verify here, against the coordinator's audit key
  std::optional<std::string> file;        // a jsonl export to verify instead of the live log
};

std::uint64_t next_release_sequence(client& api);
int release_create(context& ctx, const release_create_opts& o);
int release_revoke(context& ctx, const release_revoke_opts& o);
int release_list(context& ctx);
int release_show(context& ctx, const std::string& id);
int release_diff(context& ctx, const std::string& a, const std::string& b, bool closure);
int release_delete(context& ctx, const std::string& id);
void print_event(const protocol::rollout_event& e);
std::string wave_of(const protocol::rollout_detail& r);
int watch_rollout(context& ctx, client& api, const std::string& id);
int deploy(context& ctx, const deploy_opts& o);
int rollout_list(context& ctx, const std::optional<std::string>& status);
int rollout_status(context& ctx, const std::string& id);
int rollout_command(context& ctx, const std::string& id, const std::string& action, bool retry_failed);
int fleet_status(context& ctx, const status_opts& o);
int machine_show(context& ctx, const std::string& id);
int machine_show_rollback(context& ctx, const std::string& id);
int machine_update(context& ctx, const std::string& id, const json::object& body);
int machine_enroll(context& ctx, const std::string& id, const std::vector<std::string>& tags, std::chrono::seconds ttl);
int machine_revoke(context& ctx, const std::string& id);
int machine_clear_desired(context& ctx, const std::string& id);
process::result run_ssh(const std::vector<std::string>& argv);
int rollback(context& ctx, const rollback_opts& o);
int audit(context& ctx, const audit_opts& o);
int keys_create(context& ctx, const std::string& name, const std::string& role);
int keys_list(context& ctx);
int keys_revoke(context& ctx, const std::string& id);

struct webhook_opts {
  std::string url;
  std::string events;  // comma-separated
  std::optional<std::string> secret_file;
  std::optional<std::string> description;
};
int webhooks_add(context& ctx, const webhook_opts& o);
int webhooks_list(context& ctx);
int webhooks_remove(context& ctx, const std::string& id);
int webhooks_deliveries(context& ctx, const std::string& id, std::uint32_t limit);

}  // namespace nixfleet::cli::detail
