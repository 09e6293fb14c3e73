// `nixfleet deploy` and `nixfleet rollout …`: start, watch, list, steer rollouts.
#include "commands_detail.hpp"

#include "nixfleet/protocol/validate.hpp"

#include <boost/json/serialize.hpp>

#include <unistd.h>

#include <iostream>
#include <map>
#include <thread>

namespace nixfleet::cli::detail {

// One timeline line: time, kind, host and wave when set, message.
void print_event(const protocol::rollout_event& e) {
  std::cout << protocol::format_time(e.at) << "  " << e.kind;
  if (e.hostname) std::cout << "  " << *e.hostname;
  if (e.wave) std::cout << "  wave " << *e.wave;
  std::cout << "  " << e.message << "\n";
}

std::string wave_of(const protocol::rollout_detail& r) {
  return std::to_string(r.current_wave) + "/" + std::to_string(r.waves.size());
}

// Rollout progress: new timeline lines, and on a terminal one summary line redrawn in place.
int watch_rollout(context& ctx, client& api, const std::string& id) {
  const bool tty = ::isatty(STDOUT_FILENO) == 1 && !ctx.s.json;
  std::uint64_t last_seq = 0;
  for (;;) {
    auto r = api.get<protocol::rollout_detail>("/api/v1/rollouts/" + id);
    if (tty) std::cout << "\r\033[K";
    for (const auto& e : r.events) {
      if (e.seq <= last_seq) continue;
      last_seq = e.seq;
      if (ctx.s.json) print_json(protocol::to_json(e));
      else print_event(e);
    }
    std::map<std::string, int> counts;
    for (const auto& h : r.hosts) ++counts[std::string(protocol::to_string(h.state))];
    const std::string status(protocol::to_string(r.status));
    if (tty) {
      std::cout << "wave " << wave_of(r);
      for (const auto& [k, n] : counts) std::cout << " · " << n << " " << k;
      std::cout << " · " << status << std::flush;
    }
    if (r.status != protocol::rollout_status::running) {
      if (tty) std::cout << "\n";
      if (!ctx.s.json) std::cout << "rollout " << id << " " << status << "\n";
      return r.status == protocol::rollout_status::completed ? exit_ok : exit_incomplete;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int deploy(context& ctx, const deploy_opts& o) {
  require_id(o.release, "--release");
  if (o.tags.empty() == o.hosts.empty()) throw cli_error("give --tags or --hosts (one of them)", exit_usage);
  auto api = ctx.api();
  json::object target;
  if (!o.tags.empty()) {
    for (const auto& t : o.tags)
      if (protocol::check_tag(t)) throw cli_error("--tags: not a valid tag: " + t, exit_usage);
    target["tags"] = strings(o.tags);
  } else {
    auto rel = api.get<protocol::release>("/api/v1/releases/" + o.release);
    std::vector<std::string> names;
    for (const auto& e : rel.entries) names.push_back(e.hostname);
    auto picked = glob_match(names, o.hosts);
    if (picked.empty()) throw cli_error("no host of release " + o.release + " matches --hosts");
    target["hosts"] = strings(picked);
  }
  json::array waves;
  std::string rest = o.waves;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string w = rest.substr(0, comma);
    if (w != "canary" && !protocol::parse_size_spec(w)) throw cli_error("--waves: not a size: " + w, exit_usage);
    waves.push_back(json::value(w));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  if (!protocol::parse_size_spec(o.threshold))
    throw cli_error("--failure-threshold: expected a count or a percentage", exit_usage);
  json::value wave_spec = o.waves == "canary" ? json::value("canary") : json::value(waves);
  json::object body{{"release_id", o.release},     {"target", target},
                    {"waves", wave_spec},              {"soak_s", o.soak},
                    {"failure_threshold", o.threshold}, {"health_timeout_s", o.health_timeout},
                    {"on_failure", o.on_failure}};
  auto r = api.send<protocol::rollout_detail>("POST", "/api/v1/rollouts", json::serialize(body));
  const std::string id = r.id;
  if (ctx.s.json && !o.wait) return print_json(protocol::to_json(r)), exit_ok;
  if (!ctx.s.json) std::cout << "rollout " << id << " started: " << r.hosts.size() << " hosts in " << r.waves.size() << " waves\n";
  if (!o.wait) return exit_ok;
  return watch_rollout(ctx, api, id);
}

int rollout_list(context& ctx, const std::optional<std::string>& status) {
  std::string target = "/api/v1/rollouts";
  if (status) target += "?status=" + enc(*status);
  auto list = ctx.api().get<std::vector<protocol::rollout_detail>>(target);
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  std::vector<std::vector<std::string>> rows;
  for (const auto& x : list)
    rows.push_back({x.id, x.spec.release_id, std::string(protocol::to_string(x.status)), wave_of(x),
                    protocol::format_time(x.created_at), x.created_by});
  print_table(std::cout, {"ID", "RELEASE", "STATUS", "WAVE", "CREATED", "BY"}, rows);
  return exit_ok;
}

int rollout_status(context& ctx, const std::string& id) {
  require_id(id, "rollout");
  auto r = ctx.api().get<protocol::rollout_detail>("/api/v1/rollouts/" + id);
  if (ctx.s.json) return print_json(protocol::to_json(r)), exit_ok;
  std::cout << "rollout " << id << "  " << protocol::to_string(r.status) << "  release " << r.spec.release_id
            << "  wave " << wave_of(r) << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& h : r.hosts)
    rows.push_back({h.hostname, std::to_string(h.wave), std::string(protocol::to_string(h.state)), h.message.value_or("")});
  print_table(std::cout, {"HOST", "WAVE", "STATE", "DETAIL"}, rows);
  return exit_ok;
}

int rollout_command(context& ctx, const std::string& id, const std::string& action, bool retry_failed) {
  require_id(id, "rollout");
  std::string body;
  if (action == "resume") body = retry_failed ? R"({"retry_failed":true})" : R"({"retry_failed":false})";
  auto r = ctx.api().send<protocol::rollout_detail>("POST", "/api/v1/rollouts/" + id + "/" + action, body);
  if (ctx.s.json) return print_json(protocol::to_json(r)), exit_ok;
  std::cout << "rollout " << id << " " << protocol::to_string(r.status) << "\n";
  return exit_ok;
}

}  // namespace nixfleet::cli::detail
