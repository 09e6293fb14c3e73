// `nixfleet status`, `machines …`, `rollback`, `audit`, `keys …`.
#include "commands_detail.hpp"
#include "nixfleet/protocol/audit.hpp"

#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/json/serialize.hpp>

#include <fstream>
#include <iostream>

namespace nixfleet::cli::detail {

int fleet_status(context& ctx, const status_opts& o) {
  std::string target = "/api/v1/machines";
  std::string sep = "?";
  if (o.tag) target += sep + "tag=" + enc(*o.tag), sep = "&";
  if (o.state) target += sep + "state=" + enc(*o.state);
  auto list = ctx.api().get<std::vector<protocol::machine_status>>(target);
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  const auto t = now();
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : list) {
    const std::string health = !m.health ? "-" : m.health->passed ? "ok" : "FAILING";
    const bool stale = !m.last_seen || t - *m.last_seen > std::chrono::seconds(o.stale_after);
    const std::string current = or_dash(m.current_path), desired = or_dash(m.desired_path);
    const std::string sync = !m.desired_path || !m.current_path || current == desired ? "" : " *";
    rows.push_back({m.id, std::string(protocol::to_string(m.state)), short_path(current) + sync, short_path(desired), health,
                    m.last_seen ? ago(*m.last_seen, t) : "never", stale ? "STALE" : "", m.rollout_id.value_or("")});
  }
  print_table(std::cout, {"HOST", "STATE", "CURRENT", "DESIRED", "HEALTH", "LAST SEEN", "", "ROLLOUT"}, rows);
  return exit_ok;
}

int machine_show(context& ctx, const std::string& id) {
  require_id(id, "machine");
  auto m = ctx.api().get<protocol::machine_status>("/api/v1/machines/" + id);
  if (ctx.s.json) return print_json(protocol::to_json(m)), exit_ok;
  std::cout << "machine   " << m.id << " (" << protocol::to_string(m.state) << ")\n"
            << "tags      " << join(m.tags) << "\n"
            << "current   " << or_dash(m.current_path) << "\n"
            << "desired   " << or_dash(m.desired_path) << "\n"
            << "booted    " << or_dash(m.booted_path) << "\n"
            << "rollout   " << or_dash(m.rollout_id) << "\n"
            << "last seen " << (m.last_seen ? protocol::format_time(*m.last_seen) : "-") << "\n";
  if (m.certificate_expires_at) std::cout << "cert until " << protocol::format_time(*m.certificate_expires_at) << "\n";
  if (m.revoked_at) std::cout << "REVOKED   " << protocol::format_time(*m.revoked_at) << "\n";
  if (m.health) {
    std::cout << "health    " << (m.health->passed ? "passing" : "FAILING") << "\n";
    for (const auto& p : m.health->results)
      std::cout << "  " << p.probe << " (" << p.type << "): " << protocol::to_string(p.status) << " "
                << p.message.value_or("") << "\n";
  }
  std::cout << "confirmed generations:\n";
  for (const auto& g : m.history) std::cout << "  " << protocol::format_time(g.confirmed_at) << "  " << g.store_path << "\n";
  return exit_ok;
}

namespace {

// Program output, indented under its heading.
void print_block(const std::string& text, const char* indent = "    ") {
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    auto line = std::string(rest.substr(0, nl));
    std::erase(line, '\r');  // a carriage return would let a line overwrite the one before
    std::cout << indent << line << "\n";
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
}

}  // namespace

// The newest failure on record (a rollback, a failed rollback or a failed activation) with what
// the host saw: why, the probes' last word, failed units, journal, switch output, closure diff.
int machine_show_rollback(context& ctx, const std::string& id) {
  require_id(id, "machine");
  const std::string target = "/api/v1/machines/" + id + "/reports?kind=rolled_back,rollback_failed,activation_failed&limit=1";
  auto list = ctx.api().call("GET", target);
  if (!list.is_array()) detail::invalid_answer(target, "not a JSON array");
  if (list.as_array().empty()) {
    if (ctx.s.json) return print_json(json::value(nullptr)), exit_ok;
    std::cout << "no rollback or failed activation of " << id << " is on record (reports are kept for a while only)\n";
    return exit_ok;
  }
  auto body = list.as_array().front();
  // Checked like any answer; received_at is the coordinator's addition to the report.
  std::optional<protocol::timestamp> received;
  if (auto* o = body.if_object(); o && o->contains("received_at")) {
    if (const auto* t = o->at("received_at").if_string()) {
      if (auto parsed = protocol::parse_time(*t)) received = *parsed;
    }
    o->erase("received_at");
  }
  const auto r = decode<protocol::report>(body, target);
  if (ctx.s.json) return print_json(list.as_array().front()), exit_ok;
  std::cout << protocol::to_string(r.kind) << "  " << protocol::format_time(r.at) << " (report " << r.seq
            << (received ? ", received " + protocol::format_time(*received) : std::string()) << ")\n"
            << "target      " << or_dash(r.store_path) << "\n";
  if (r.rollout_id) std::cout << "rollout     " << *r.rollout_id << "\n";
  if (r.message) std::cout << "why         " << *r.message << "\n";
  if (!r.forensics) {
    std::cout << "no forensics: the agent sent none (an older agent, or they were dropped while it was cut off)\n";
    return exit_ok;
  }
  const auto& f = *r.forensics;
  if (f.previous) std::cout << "went back to " << *f.previous << "\n";
  if (!f.probes.empty()) {
    std::cout << "probes:\n";
    for (const auto& p : f.probes) {
      std::cout << "  " << p.probe << " (" << p.type << "): " << protocol::to_string(p.status)
                << (p.message ? " — " + *p.message : std::string()) << "\n";
      if (p.output) print_block(*p.output);
    }
  }
  std::cout << "failed units:";
  for (std::size_t i = 0; i < f.failed_units.size(); ++i) std::cout << (i ? ", " : " ") << f.failed_units[i];
  std::cout << (f.failed_units.empty() ? " none\n" : "\n");
  if (f.switch_output) std::cout << "switch output (end):\n", print_block(*f.switch_output);
  if (f.journal) std::cout << "journal:\n", print_block(*f.journal);
  if (f.closure_changes > 0) {
    std::cout << "closure difference (" << f.closure_diff.size() << " of " << f.closure_changes << " changes):\n";
    for (const auto& line : f.closure_diff) std::cout << "  " << line << "\n";
  } else if (f.previous && f.target) {
    std::cout << "closure difference: none recorded\n";
  }
  if (!f.notes.empty()) {
    std::cout << "not collected:\n";
    for (const auto& n : f.notes) std::cout << "  " << n << "\n";
  }
  return exit_ok;
}

int machine_update(context& ctx, const std::string& id, const json::object& body) {
  require_id(id, "machine");
  auto m = ctx.api().send<protocol::machine_status>("PUT", "/api/v1/machines/" + id, json::serialize(body));
  if (ctx.s.json) return print_json(protocol::to_json(m)), exit_ok;
  std::cout << "machine " << id << ": tags " << join(m.tags) << ", " << protocol::to_string(m.state) << "\n";
  return exit_ok;
}

int machine_enroll(context& ctx, const std::string& id, const std::vector<std::string>& tags, std::chrono::seconds ttl) {
  require_id(id, "machine");
  json::object body{{"tags", strings(tags)}, {"ttl_s", ttl.count()}};
  auto t = ctx.api().send<protocol::enroll_token>("POST", "/api/v1/machines/" + id + "/enroll-token", json::serialize(body));
  if (ctx.s.json) return print_json(protocol::to_json(t)), exit_ok;
  std::cout << t.token << "\n";
  std::cerr << "enrollment token for " << id << ", single use, valid until " << protocol::format_time(t.expires_at)
            << ": put it in the host's enroll_token_file (shown once)\n";
  return exit_ok;
}

int machine_revoke(context& ctx, const std::string& id) {
  require_id(id, "machine");
  auto m = ctx.api().send<protocol::machine_status>("POST", "/api/v1/machines/" + id + "/revoke", "");
  if (ctx.s.json) return print_json(protocol::to_json(m)), exit_ok;
  std::cout << "machine " << id << " revoked: its certificates are refused; it needs a new enrollment token\n";
  return exit_ok;
}

int machine_clear_desired(context& ctx, const std::string& id) {
  require_id(id, "machine");
  ctx.api().call("DELETE", "/api/v1/machines/" + id + "/desired");
  if (!ctx.s.json) std::cout << "machine " << id << ": desired state cleared\n";
  return exit_ok;
}

process::result run_ssh(const std::vector<std::string>& argv) {
  process::request req;
  req.argv = argv;
  req.timeout = std::chrono::minutes(10);
  return process::run_blocking(std::move(req));
}

int rollback(context& ctx, const rollback_opts& o) {
  require_id(o.host, "--host");
  if (o.sign_key && !o.to) throw cli_error("--sign-key signs a rollback statement for --to PATH: give --to", exit_usage);
  if (o.valid_for_s < 60 || o.valid_for_s > 7 * 86400)
    throw cli_error("--valid-for: between 60 seconds and 7 days", exit_usage);
  if (o.to && protocol::check_store_path(*o.to)) throw cli_error("--to: not a valid store path", exit_usage);
  std::optional<std::string> ran;
  if (o.ssh) {
    // Directly on the host: profile to the previous generation, switch, and read what now runs.
    const std::string target = o.target.value_or("root@" + o.host);
    if (target.empty() || target.front() == '-' || target.find_first_of(" \t\n;|&$`'\"\\") != std::string::npos)
      throw cli_error("--target: expected USER@HOST", exit_usage);
    if (o.profile.empty() || o.profile.front() != '/' || o.profile.find_first_of(" \t\n;|&$`'\"\\") != std::string::npos)
      throw cli_error("--profile: expected an absolute path", exit_usage);
    std::string script = "set -e; ";
    if (o.to) script += "nix-env -p " + o.profile + " --set " + *o.to + "; ";
    else script += "nix-env -p " + o.profile + " --rollback; ";
    script += o.profile + "/bin/switch-to-configuration switch; readlink -f " + o.profile;
    std::vector<std::string> argv = {"ssh", "-o", "BatchMode=yes"};
    for (const auto& opt : o.ssh_options) {
      argv.push_back("-o");
      argv.push_back(opt);
    }
    argv.push_back(target);
    argv.push_back("--");
    argv.push_back(script);
    auto r = run_ssh(argv);
    if (!r.ok()) {
      std::string tail = r.err_tail;
      while (!tail.empty() && tail.back() == '\n') tail.pop_back();
      if (auto nl = tail.rfind('\n'); nl != std::string::npos) tail = tail.substr(nl + 1);
      throw cli_error("rollback over ssh on " + target + " failed (" + r.describe() + "): " + tail);
    }
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (auto nl = out.rfind('\n'); nl != std::string::npos) out = out.substr(nl + 1);
    if (protocol::check_store_path(out)) throw cli_error("the host did not report a store path after the switch");
    ran = out;
    if (!ctx.s.json) std::cout << o.host << " switched to " << *ran << " over ssh\n";
  }
  // Tell the coordinator, so that the desired state follows (the agent does the rest when not over ssh).
  protocol::rollback_request body;
  if (ran) body.store_path = *ran;
  else if (o.to) body.store_path = *o.to;
  if (o.sign_key && !ran) {
    // Agents go back further than one step only with the operator's signed word for it.
    auto key = protocol::parse_secret_key(read_secret_file(*o.sign_key, "signing key"));
    if (!key) throw cli_error("--sign-key: not a Nix secret key (name:base64)", exit_usage);
    if (protocol::check_text(o.reason, protocol::limits::max_message_bytes))
      throw cli_error("--reason: printable text of at most 4096 bytes", exit_usage);
    protocol::rollback_statement st;
    st.hostname = o.host;
    st.store_path = *o.to;
    st.issued_at = now();
    st.expires_at = st.issued_at + std::chrono::seconds(o.valid_for_s);
    st.reason = o.reason;
    protocol::sign_rollback(*key, st);
    body.statement = std::move(st);
  }
  auto api = ctx.api();
  protocol::machine_status m;
  try {
    m = api.send<protocol::machine_status>("POST", "/api/v1/machines/" + o.host + "/rollback", protocol::serialize(body));
  } catch (const cli_error& e) {
    if (!ran) throw;
    throw cli_error(std::string("the host was rolled back, but the coordinator was not told: ") + e.what());
  }
  if (ctx.s.json) return print_json(protocol::to_json(m)), exit_ok;
  std::cout << o.host << ": desired state is now " << or_dash(m.desired_path) << "\n";
  return exit_ok;
}

int audit(context& ctx, const audit_opts& o) {
  if ((o.public_key || o.file) && !o.verify) throw cli_error("--public-key and --file go with --verify", exit_usage);
  if (o.verify) {
    std::optional<protocol::public_key> key;
    if (o.public_key) {
      auto k = protocol::parse_public_key(*o.public_key);
      if (!k) throw cli_error("--public-key: expected name:base64 (an ed25519 public key in Nix's format)", exit_usage);
      key = *k;
    }
    protocol::audit_verification v;
    if (o.file) {
      std::ifstream in(*o.file, std::ios::binary);
      if (!in) throw cli_error("cannot read " + *o.file, exit_usage);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      v = protocol::verify_audit_export(text, key);
    } else if (key) {
      // Checked here with the key the operator holds: a coordinator (or a database) rewritten
      // by someone else cannot vouch for itself.
      auto api = ctx.api();
      auto r = api.request("GET", "/api/v1/audit/export?format=jsonl");
      if (r.status != 200) api.call("GET", "/api/v1/audit/export?format=jsonl");  // throws with the message
      v = protocol::verify_audit_export(r.body, key);
    } else {
      v = ctx.api().get<protocol::audit_verification>("/api/v1/audit/verify");
    }
    if (ctx.s.json) print_json(protocol::to_json(v));
    else if (v.ok) {
      std::cout << "audit log intact: " << v.rows << " rows";
      if (v.checkpoints_verified)
        std::cout << ", " << v.checkpoints << " checkpoints verified, anchored through row "
                  << (v.anchored_seq ? std::to_string(*v.anchored_seq) : "-");
      std::cout << "\n";
    } else
      std::cout << "audit log BROKEN at row " << (v.bad_seq ? std::to_string(*v.bad_seq) : "-") << ": "
                << or_dash(v.reason) << "\n";
    return v.ok ? exit_ok : exit_failure;
  }
  auto api = ctx.api();
  if (o.format) {
    if (*o.format != "csv" && *o.format != "jsonl") throw cli_error("--export: csv or jsonl", exit_usage);
    auto r = api.request("GET", "/api/v1/audit/export?format=" + *o.format);
    if (r.status != 200) api.call("GET", "/api/v1/audit/export?format=" + *o.format);  // throws with the message
    std::cout << r.body;
    return exit_ok;
  }
  std::string target = "/api/v1/audit?limit=" + std::to_string(o.limit);
  if (o.actor) target += "&actor=" + enc(*o.actor);
  if (o.action) target += "&action=" + enc(*o.action);
  if (o.target) target += "&target=" + enc(*o.target);
  if (o.since) target += "&since=" + enc(*o.since);
  auto list = api.get<std::vector<protocol::audit_event>>(target);
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : list)
    rows.push_back({std::to_string(e.seq), protocol::format_time(e.at), e.actor, e.action, e.target, json::serialize(e.detail)});
  print_table(std::cout, {"SEQ", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"}, rows);
  return exit_ok;
}

int keys_create(context& ctx, const std::string& name, const std::string& role) {
  auto r = ctx.api().send<protocol::created_key>("POST", "/api/v1/keys",
                                                 json::serialize(json::object{{"name", name}, {"role", role}}));
  if (ctx.s.json) return print_json(protocol::to_json(r)), exit_ok;
  std::cout << r.key << "\n";
  std::cerr << "key " << r.info.id << " (" << role << ") for " << name << ": shown once, store it now\n";
  return exit_ok;
}

int keys_list(context& ctx) {
  auto list = ctx.api().get<std::vector<protocol::api_key_info>>("/api/v1/keys");
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : list)
    rows.push_back({k.id, k.name, std::string(protocol::to_string(k.role)), protocol::format_time(k.created_at),
                    k.last_used_at ? protocol::format_time(*k.last_used_at) : "-"});
  print_table(std::cout, {"ID", "NAME", "ROLE", "CREATED", "LAST USED"}, rows);
  return exit_ok;
}

int keys_revoke(context& ctx, const std::string& id) {
  require_id(id, "key");
  ctx.api().call("DELETE", "/api/v1/keys/" + id);
  if (!ctx.s.json) std::cout << "key " << id << " revoked\n";
  return exit_ok;
}

}  // namespace nixfleet::cli::detail
