// Every `nixfleet` command: parsing with CLI11, one coordinator call (or a few), human tables or
// --json, and the documented exit codes.
#include "nixfleet/cli/commands.hpp"

#include "nixfleet/cli/client.hpp"
#include "nixfleet/cli/nix.hpp"
#include "nixfleet/common/process.hpp"
#include "nixfleet/common/version.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <CLI/CLI.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include <fnmatch.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <set>
#include <thread>

namespace nixfleet::cli {

namespace json = boost::json;

namespace {

// ---------------------------------------------------------------------------------------
// Output

std::string str(const json::value& v, std::string_view key, std::string fallback = "-") {
  if (!v.is_object()) return fallback;
  const auto* x = v.as_object().if_contains(key);
  if (x == nullptr || x->is_null()) return fallback;
  if (x->is_string()) return std::string(x->as_string());
  return json::serialize(*x);
}

// /nix/store/<hash>-name → <first 8 of hash>…-name, for tables.
std::string short_path(const std::string& p) {
  if (p.size() > 44 && p.starts_with("/nix/store/")) return p.substr(11, 8) + "…" + p.substr(43);
  return p;
}

void print_table(std::ostream& out, const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(head.size(), 0);
  auto cells = [](const std::string& s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;  // UTF-8 code points
    return n;
  };
  for (std::size_t i = 0; i < head.size(); ++i) width[i] = cells(head[i]);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], cells(r[i]));
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (std::size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(width[i] - cells(r[i]) + 2, ' ');
    }
    out << s << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
}

void print_json(const json::value& v) { std::cout << json::serialize(v) << "\n"; }

template <class T>
json::array to_json_array(const std::vector<T>& items) {
  json::array a;
  for (const auto& x : items) a.push_back(protocol::to_json(x));
  return a;
}

std::string or_dash(const std::optional<std::string>& s) { return s ? *s : "-"; }

// Tags as the JSON array they are: ["web","eu"].
std::string join(const std::vector<std::string>& items) {
  json::array a;
  for (const auto& x : items) a.push_back(json::value(x));
  return json::serialize(a);
}

std::string ago(protocol::timestamp t, protocol::timestamp now) {
  auto s = std::chrono::duration_cast<std::chrono::seconds>(now - t).count();
  if (s < 0) s = 0;
  if (s < 120) return std::to_string(s) + "s ago";
  if (s < 7200) return std::to_string(s / 60) + "m ago";
  if (s < 172800) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

protocol::timestamp now() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& x : v) a.push_back(json::value(x));
  return a;
}

std::string enc(const std::string& s) { return boost::urls::encode(s, boost::urls::unreserved_chars); }

void require_id(const std::string& id, const std::string& what) {
  if (protocol::check_identifier(id)) throw cli_error(what + ": not a valid identifier: " + id, exit_usage);
}

std::vector<std::string> glob_match(const std::vector<std::string>& names, const std::vector<std::string>& globs) {
  std::vector<std::string> out;
  for (const auto& n : names)
    for (const auto& g : globs)
      if (::fnmatch(g.c_str(), n.c_str(), 0) == 0) {
        out.push_back(n);
        break;
      }
  return out;
}

// ---------------------------------------------------------------------------------------
// Commands

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

// The next release sequence: one above the newest the coordinator holds. A coordinator that
// lies here can only make the release look newer (harmless) or older (agents refuse it).
std::uint64_t next_release_sequence(client& api) {
  std::uint64_t max = 0;
  const json::value all = api.call("GET", "/api/v1/releases");
  if (!all.is_array()) throw cli_error("the coordinator's release list is not a list");
  for (const auto& r : all.get_array()) {
    auto rel = protocol::from_json<protocol::release>(r);
    if (rel) max = std::max(max, rel->sequence);
  }
  return max + 1;
}

int release_create(context& ctx, const release_create_opts& o) {
  auto key_text = read_secret_file(o.sign_key, "signing key");
  auto key = protocol::parse_secret_key(key_text);
  if (!key) throw cli_error("--sign-key: not a Nix secret key (name:base64, as nix-store --generate-binary-cache-key makes)", exit_usage);
  if (!o.flake && o.entries.empty()) throw cli_error("give --flake REF or --entry HOST=STORE_PATH", exit_usage);

  std::vector<std::pair<std::string, std::string>> built;  // host, path
  std::optional<flake_info> info;
  if (o.flake) {
    auto hosts = flake_hosts(*o.flake);
    if (!o.hosts_globs.empty()) hosts = glob_match(hosts, o.hosts_globs);
    if (hosts.empty()) throw cli_error("no nixosConfigurations match in " + *o.flake);
    for (const auto& h : hosts) {
      std::cerr << "building " << h << "\n";
      built.emplace_back(h, build_toplevel(*o.flake, h));
    }
    info = flake_metadata(*o.flake);
  }
  for (const auto& e : o.entries) {
    auto eq = e.find('=');
    if (eq == std::string::npos) throw cli_error("--entry: expected HOST=STORE_PATH, got " + e, exit_usage);
    std::string host = e.substr(0, eq), path = e.substr(eq + 1);
    require_id(host, "--entry");
    if (protocol::check_store_path(path)) throw cli_error("--entry: not a valid store path: " + path, exit_usage);
    built.emplace_back(host, path);
  }
  std::set<std::string> seen;
  for (const auto& [h, p] : built)
    if (!seen.insert(h).second) throw cli_error("host " + h + " appears twice", exit_usage);

  std::vector<std::string> paths;
  for (const auto& [h, p] : built) paths.push_back(p);
  std::vector<std::string> caches = o.cache_urls;
  if (o.push_to) {
    sign_closures(paths, o.sign_key);
    copy_closures(paths, *o.push_to);
    if (caches.empty()) caches.push_back(*o.push_to);
  }
  for (const auto& c : caches) {
    if (protocol::check_cache_url(c))
      throw cli_error("--cache-url: not a cache URL agents may be told of (no store parameters): " + c, exit_usage);
    if (protocol::check_fetchable_cache_url(c))
      std::cerr << "nixfleet: warning: agents fetch only from http(s) and s3 release caches; " << c
                << " reaches only hosts that list it in their own `caches` (give --cache-url)\n";
  }
  auto activation = protocol::fields::enum_from_string<protocol::activation_mode>(o.activation);
  if (!activation) throw cli_error("--activation: expected switch, boot or test", exit_usage);
  if (o.sequence && (*o.sequence == 0 || *o.sequence > protocol::limits::max_sequence))
    throw cli_error("--sequence: must be between 1 and 2^53 - 1", exit_usage);
  for (const auto& t : o.tags)
    if (protocol::check_tag(t)) throw cli_error("--tag: not a valid tag: " + t, exit_usage);

  const auto created = now();
  // The default id: the time (to the second) and a random suffix, so two releases made in the
  // same second never collide.
  std::string id = o.id.value_or("r-" + protocol::format_time(created).substr(0, 19) + "-" + protocol::random_hex(3));
  std::replace(id.begin(), id.end(), ':', '-');
  std::replace(id.begin(), id.end(), 'T', '-');
  require_id(id, "--id");

  auto api = ctx.api();
  protocol::release_request req;
  req.id = id;
  req.created_at = created;
  req.sequence = o.sequence ? *o.sequence : next_release_sequence(api);
  req.activation = *activation;
  if (o.flake) req.flake_ref = *o.flake;
  if (info && info->revision) req.flake_rev = info->revision;
  req.cache_urls = caches;
  for (const auto& [h, p] : built)
    req.entries.push_back({h, p, std::nullopt, o.tags,
                           protocol::sign_entry(*key, {id, h, p, created, req.activation, caches, req.sequence})});
  auto r = api.call("POST", "/api/v1/releases", protocol::serialize(req));
  if (ctx.s.json) print_json(r);
  else
    std::cout << "release " << id << " (#" << req.sequence << ") registered: " << req.entries.size()
              << " hosts, signed by " << key->name() << "\n";
  return exit_ok;
}

// release revoke
struct release_revoke_opts {
  std::vector<std::string> releases;
  std::vector<std::string> paths;
  std::vector<std::string> keys;
  std::string sign_key;
  std::vector<std::string> trusted_keys;  // besides the signing key, who may have signed the current list
};

int release_revoke(context& ctx, const release_revoke_opts& o) {
  auto key = protocol::parse_secret_key(read_secret_file(o.sign_key, "signing key"));
  if (!key) throw cli_error("--sign-key: not a Nix secret key (name:base64)", exit_usage);
  if (o.releases.empty() && o.paths.empty() && o.keys.empty())
    throw cli_error("give release ids, --path or --key to revoke", exit_usage);
  for (const auto& r : o.releases) require_id(r, "release");
  for (const auto& p : o.paths)
    if (protocol::check_store_path(p)) throw cli_error("--path: not a valid store path: " + p, exit_usage);
  for (const auto& k : o.keys)
    if (protocol::check_key_name(k)) throw cli_error("--key: not a key name: " + k, exit_usage);
  protocol::trusted_keys trust({protocol::to_public_key(*key)});
  for (const auto& t : o.trusted_keys) {
    auto pk = protocol::parse_public_key(t);
    if (!pk) throw cli_error("--trusted-key: not a public key (name:base64): " + t, exit_usage);
    trust.add(*pk);
  }
  auto api = ctx.api();
  // The new list extends the current one: it must be genuine, or a coordinator could make the
  // operator sign away earlier revocations.
  protocol::revocation_list list;
  if (auto res = api.request("GET", "/api/v1/revocations"); res.status != 404) {  // 404: none published yet
    if (res.status != 200) {
      api.call("GET", "/api/v1/revocations");  // throws the coordinator's own error for this status
      throw cli_error("the coordinator's revocation list changed while it was read; try again");
    }
    auto cur = protocol::parse<protocol::revocation_list>(res.body);
    if (!cur) throw cli_error("the coordinator's revocation list is malformed: " + cur.error().what());
    if (auto ec = protocol::verify_revocations(trust, *cur))
      throw cli_error("the coordinator's revocation list #" + std::to_string(cur->sequence) + " does not verify (" +
                      ec.message() + "); pass the key that signed it with --trusted-key");
    list = std::move(*cur);
  }
  auto add = [](std::vector<std::string>& to, const std::vector<std::string>& more) {
    for (const auto& m : more)
      if (std::find(to.begin(), to.end(), m) == to.end()) to.push_back(m);
  };
  add(list.releases, o.releases);
  add(list.store_paths, o.paths);
  add(list.keys, o.keys);
  list.sequence += 1;
  list.issued_at = now();
  protocol::sign_revocations(*key, list);
  auto r = api.call("PUT", "/api/v1/revocations", protocol::serialize(list));
  if (ctx.s.json) return print_json(r), exit_ok;
  std::cout << "revocation list #" << list.sequence << " published: " << list.releases.size() << " releases, "
            << list.store_paths.size() << " store paths, " << list.keys.size() << " keys\n";
  return exit_ok;
}

int release_list(context& ctx) {
  auto list = ctx.api().get<std::vector<protocol::release>>("/api/v1/releases");
  if (ctx.s.json) return print_json(to_json_array(list)), exit_ok;
  std::vector<std::vector<std::string>> rows;
  for (const auto& x : list)
    rows.push_back({x.id, protocol::format_time(x.created_at), x.created_by, std::to_string(x.entries.size()),
                    or_dash(x.flake_rev)});
  print_table(std::cout, {"ID", "CREATED", "BY", "HOSTS", "REVISION"}, rows);
  return exit_ok;
}

int release_show(context& ctx, const std::string& id) {
  require_id(id, "release");
  auto r = ctx.api().get<protocol::release>("/api/v1/releases/" + id);
  if (ctx.s.json) return print_json(protocol::to_json(r)), exit_ok;
  std::cout << "release " << r.id << "  created " << protocol::format_time(r.created_at) << " by " << r.created_by
            << "\nflake " << or_dash(r.flake_ref) << "  revision " << or_dash(r.flake_rev) << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : r.entries) rows.push_back({e.hostname, e.store_path, e.signature ? "signed" : "unsigned"});
  print_table(std::cout, {"HOST", "STORE PATH", "SIGNATURE"}, rows);
  return exit_ok;
}

int release_diff(context& ctx, const std::string& a, const std::string& b, bool closure) {
  require_id(a, "release");
  require_id(b, "release");
  auto r = ctx.api().get<protocol::release_diff>("/api/v1/releases/" + a + "/diff/" + b);
  if (ctx.s.json && !closure) return print_json(protocol::to_json(r)), exit_ok;
  json::object out = protocol::to_json(r).as_object();
  if (closure) {
    json::array closures;
    for (const auto& c : r.changed) {
      json::object d{{"hostname", c.hostname}};
      if (path_present(c.old_path) && path_present(c.new_path)) d["diff"] = diff_closures(c.old_path, c.new_path);
      else d["diff"] = nullptr;
      closures.push_back(std::move(d));
    }
    out["closures"] = std::move(closures);
  }
  if (ctx.s.json) return print_json(out), exit_ok;
  for (const auto& h : r.added) std::cout << "+ " << h << "\n";
  for (const auto& h : r.removed) std::cout << "- " << h << "\n";
  for (const auto& c : r.changed)
    std::cout << "~ " << c.hostname << ": " << short_path(c.old_path) << " → " << short_path(c.new_path) << "\n";
  std::cout << r.unchanged.size() << " unchanged\n";
  if (closure)
    for (const auto& d : out["closures"].as_array()) {
      std::cout << "\n" << str(d, "hostname") << ":\n";
      if (d.at("diff").is_null()) std::cout << "  (both closures are not in the local store)\n";
      else std::cout << std::string(d.at("diff").as_string());
    }
  return exit_ok;
}

int release_delete(context& ctx, const std::string& id) {
  require_id(id, "release");
  ctx.api().call("DELETE", "/api/v1/releases/" + id);
  if (!ctx.s.json) std::cout << "release " << id << " deleted\n";
  return exit_ok;
}

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

struct status_opts {
  std::optional<std::string> tag, state;
  unsigned stale_after = 300;
};

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

int machine_update(context& ctx, const std::string& id, const json::object& body) {
  require_id(id, "machine");
  auto m = ctx.api().send<protocol::machine_status>("PUT", "/api/v1/machines/" + id, json::serialize(body));
  if (ctx.s.json) return print_json(protocol::to_json(m)), exit_ok;
  std::cout << "machine " << id << ": tags " << join(m.tags) << ", " << protocol::to_string(m.state) << "\n";
  return exit_ok;
}

int machine_clear_desired(context& ctx, const std::string& id) {
  require_id(id, "machine");
  ctx.api().call("DELETE", "/api/v1/machines/" + id + "/desired");
  if (!ctx.s.json) std::cout << "machine " << id << ": desired state cleared\n";
  return exit_ok;
}

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

struct audit_opts {
  std::optional<std::string> actor, action, target, since, format;
  unsigned limit = 100;
  bool verify = false;
};

int audit(context& ctx, const audit_opts& o) {
  auto api = ctx.api();
  if (o.verify) {
    auto v = api.get<protocol::audit_verification>("/api/v1/audit/verify");
    if (ctx.s.json) print_json(protocol::to_json(v));
    else if (v.ok) std::cout << "audit log intact: " << v.rows << " rows\n";
    else
      std::cout << "audit log BROKEN at row " << (v.bad_seq ? std::to_string(*v.bad_seq) : "-") << ": "
                << or_dash(v.reason) << "\n";
    return v.ok ? exit_ok : exit_failure;
  }
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

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"nixfleet — build, sign and register releases, roll them out in waves, watch the fleet, roll back"};
  app.set_version_flag("--version", std::string(nixfleet::version()));
  app.require_subcommand(1);
  context ctx;
  app.add_option("--coordinator", ctx.s.coordinator, "coordinator URL (env NIXFLEET_COORDINATOR)");
  app.add_option("--api-key", ctx.s.api_key, "API key nfk_… (env NIXFLEET_API_KEY; prefer --api-key-file)");
  app.add_option("--api-key-file", ctx.s.api_key_file, "file holding the API key, not world-readable (env NIXFLEET_API_KEY_FILE)");
  app.add_option("--ca-file", ctx.s.ca_file, "CA to verify the coordinator with (env NIXFLEET_CA_FILE)");
  app.add_option("--cert-file", ctx.s.cert_file, "client certificate, when the coordinator requires one");
  app.add_option("--key-file", ctx.s.key_file, "client certificate key");
  app.add_flag("--json", ctx.s.json, "print JSON instead of tables");
  app.fallthrough();

  int rc = exit_ok;
  std::function<int()> action;

  // release
  auto* release = app.add_subcommand("release", "Build, sign, register and inspect releases");
  release->require_subcommand(1);
  release_create_opts rc_opts;
  auto* rcreate = release->add_subcommand("create", "Build every host of a flake (or take given paths), sign and register");
  rcreate->add_option("--flake", rc_opts.flake, "flake whose nixosConfigurations to build");
  rcreate->add_option("--hosts", rc_opts.hosts_globs, "only hosts matching these globs");
  rcreate->add_option("--entry", rc_opts.entries, "HOST=STORE_PATH built elsewhere (repeatable)");
  rcreate->add_option("--push-to", rc_opts.push_to, "sign the closures and nix copy them to this store URL");
  rcreate->add_option("--sign-key", rc_opts.sign_key, "Nix secret key file that signs every entry")->required();
  rcreate->add_option("--id", rc_opts.id, "release id (default r-<UTC date and time>-<6 random hex digits>)");
  rcreate->add_option("--cache-url", rc_opts.cache_urls, "binary caches agents fetch from (default: --push-to)");
  rcreate->add_option("--tag", rc_opts.tags, "tags for every entry");
  rcreate->add_option("--sequence", rc_opts.sequence, "the release's signed sequence (default: one above the newest)");
  rcreate->add_option("--activation", rc_opts.activation, "switch, boot or test (signed)")
      ->capture_default_str()
      ->check(CLI::IsMember({"switch", "boot", "test"}));
  rcreate->callback([&] { action = [&] { return release_create(ctx, rc_opts); }; });
  release->add_subcommand("list", "List releases")->callback([&] { action = [&] { return release_list(ctx); }; });
  std::string rel_id, rel_b;
  auto* rshow = release->add_subcommand("show", "Show one release");
  rshow->add_option("ID", rel_id, "release id")->required();
  rshow->callback([&] { action = [&] { return release_show(ctx, rel_id); }; });
  bool closure = false;
  auto* rdiff = release->add_subcommand("diff", "What changes between two releases");
  rdiff->add_option("A", rel_id, "from release")->required();
  rdiff->add_option("B", rel_b, "to release")->required();
  rdiff->add_flag("--closure", closure, "add nix store diff-closures per changed host (paths must be local)");
  rdiff->callback([&] { action = [&] { return release_diff(ctx, rel_id, rel_b, closure); }; });
  release_revoke_opts rv;
  auto* rrevoke = release->add_subcommand("revoke", "Sign and publish a revocation list that adds these releases, paths or keys");
  rrevoke->add_option("ID", rv.releases, "release ids to revoke");
  rrevoke->add_option("--path", rv.paths, "store paths to revoke (repeatable)");
  rrevoke->add_option("--key", rv.keys, "operator key names whose signatures agents must refuse (repeatable)");
  rrevoke->add_option("--sign-key", rv.sign_key, "Nix secret key file that signs the list")->required();
  rrevoke->add_option("--trusted-key", rv.trusted_keys, "public key that may have signed the current list (repeatable)");
  rrevoke->callback([&] { action = [&] { return release_revoke(ctx, rv); }; });
  auto* rdelete = release->add_subcommand("delete", "Delete a release no rollout references (admin)");
  rdelete->add_option("ID", rel_id, "release id")->required();
  rdelete->callback([&] { action = [&] { return release_delete(ctx, rel_id); }; });

  // deploy
  deploy_opts d_opts;
  auto* dep = app.add_subcommand("deploy", "Roll a release out in waves");
  dep->add_option("--release", d_opts.release, "release id")->required();
  dep->add_option("--tags", d_opts.tags, "hosts with any of these tags");
  dep->add_option("--hosts", d_opts.hosts, "hosts matching these globs");
  dep->add_option("--waves", d_opts.waves, "cumulative wave sizes, or canary")->capture_default_str();
  dep->add_option("--soak", d_opts.soak, "seconds a wave soaks before the next")->capture_default_str();
  dep->add_option("--failure-threshold", d_opts.threshold, "failures tolerated per wave: N or P%")->capture_default_str();
  dep->add_option("--health-timeout", d_opts.health_timeout, "seconds a host has to confirm")->capture_default_str();
  dep->add_option("--on-failure", d_opts.on_failure, "pause, revert or halt")
      ->capture_default_str()
      ->check(CLI::IsMember({"pause", "revert", "halt"}));
  dep->add_flag("--wait", d_opts.wait, "follow the rollout until it ends (exit 3 unless it completes)");
  dep->callback([&] { action = [&] { return deploy(ctx, d_opts); }; });

  // rollout
  auto* rollout = app.add_subcommand("rollout", "List, follow and steer rollouts");
  rollout->require_subcommand(1);
  std::optional<std::string> ro_status;
  std::string ro_id;
  bool retry_failed = false;
  auto* rlist = rollout->add_subcommand("list", "List rollouts");
  rlist->add_option("--status", ro_status, "running, paused, completed, cancelled, halted, reverted");
  rlist->callback([&] { action = [&] { return rollout_list(ctx, ro_status); }; });
  auto* rstatus = rollout->add_subcommand("status", "Waves and hosts of a rollout");
  rstatus->add_option("ID", ro_id, "rollout id")->required();
  rstatus->callback([&] { action = [&] { return rollout_status(ctx, ro_id); }; });
  auto* rwatch = rollout->add_subcommand("watch", "Follow a rollout until it ends (exit 3 unless it completes)");
  rwatch->add_option("ID", ro_id, "rollout id")->required();
  rwatch->callback([&] {
    action = [&] {
      require_id(ro_id, "rollout");
      auto api = ctx.api();
      return watch_rollout(ctx, api, ro_id);
    };
  });
  for (const char* verb : {"pause", "resume", "cancel"}) {
    auto* sub = rollout->add_subcommand(verb, std::string(verb) == "pause"    ? "Stop dispatching"
                                              : std::string(verb) == "resume" ? "Continue a paused rollout"
                                                                              : "End a rollout; hosts keep their desired state");
    sub->add_option("ID", ro_id, "rollout id")->required();
    if (std::string(verb) == "resume")
      sub->add_flag("--retry-failed", retry_failed, "dispatch failed hosts again with a raised attempt");
    std::string v = verb;
    sub->callback([&, v] { action = [&, v] { return rollout_command(ctx, ro_id, v, retry_failed); }; });
  }

  // status
  status_opts s_opts;
  auto* stat = app.add_subcommand("status", "One table of the fleet");
  stat->add_option("--tag", s_opts.tag, "only machines with this tag");
  stat->add_option("--state", s_opts.state, "only machines in this lifecycle state");
  stat->add_option("--stale-after", s_opts.stale_after, "seconds without a report before STALE")->capture_default_str();
  stat->callback([&] { action = [&] { return fleet_status(ctx, s_opts); }; });

  // machines
  auto* machines = app.add_subcommand("machines", "List, show and manage machines");
  machines->require_subcommand(1);
  std::string m_id, m_state;
  std::vector<std::string> m_tags;
  auto* mlist = machines->add_subcommand("list", "List machines");
  mlist->add_option("--tag", s_opts.tag, "only machines with this tag");
  mlist->add_option("--state", s_opts.state, "only machines in this lifecycle state");
  mlist->callback([&] { action = [&] { return fleet_status(ctx, s_opts); }; });
  auto* mshow = machines->add_subcommand("show", "Everything about one machine");
  mshow->add_option("ID", m_id, "machine id")->required();
  mshow->callback([&] { action = [&] { return machine_show(ctx, m_id); }; });
  auto* mtag = machines->add_subcommand("tag", "Set a machine's tags (admin)");
  mtag->add_option("ID", m_id, "machine id")->required();
  mtag->add_option("TAGS", m_tags, "the tags (none clears them)");
  mtag->callback([&] {
    action = [&] {
      for (const auto& t : m_tags)
        if (protocol::check_tag(t)) throw cli_error("not a valid tag: " + t, exit_usage);
      return machine_update(ctx, m_id, json::object{{"tags", strings(m_tags)}});
    };
  });
  auto* mlife = machines->add_subcommand("lifecycle", "Set a machine's lifecycle (admin)");
  mlife->add_option("ID", m_id, "machine id")->required();
  mlife->add_option("STATE", m_state, "active, maintenance or decommissioned")
      ->required()
      ->check(CLI::IsMember({"active", "maintenance", "decommissioned"}));
  mlife->callback([&] { action = [&] { return machine_update(ctx, m_id, json::object{{"lifecycle", m_state}}); }; });
  auto* mclear = machines->add_subcommand("clear-desired", "Remove a machine's desired state (admin)");
  mclear->add_option("ID", m_id, "machine id")->required();
  mclear->callback([&] { action = [&] { return machine_clear_desired(ctx, m_id); }; });

  // rollback
  rollback_opts rb;
  auto* rback = app.add_subcommand("rollback", "Roll a host back: through the coordinator, or directly over ssh");
  rback->add_option("--host", rb.host, "machine id")->required();
  rback->add_option("--to", rb.to, "store path to go to (default: the previous confirmed generation)");
  rback->add_flag("--ssh", rb.ssh, "switch the host directly over ssh, then tell the coordinator");
  rback->add_option("--target", rb.target, "USER@HOST for ssh (default root@<host>)");
  rback->add_option("--profile", rb.profile, "system profile on the host")->capture_default_str();
  rback->add_option("--ssh-option", rb.ssh_options, "extra ssh -o options (repeatable)");
  rback->add_option("--sign-key", rb.sign_key, "sign a rollback statement for --to (needed further back than one step)");
  rback->add_option("--reason", rb.reason, "why, recorded in the statement")->capture_default_str();
  rback->add_option("--valid-for", rb.valid_for_s, "seconds the statement is valid")->capture_default_str();
  rback->callback([&] { action = [&] { return rollback(ctx, rb); }; });

  // audit
  audit_opts a;
  auto* aud = app.add_subcommand("audit", "Read, export and verify the audit log");
  aud->add_option("--actor", a.actor, "only this actor");
  aud->add_option("--action", a.action, "only this action");
  aud->add_option("--target", a.target, "only this target");
  aud->add_option("--since", a.since, "RFC 3339 UTC time");
  aud->add_option("--limit", a.limit, "rows at most (≤ 1000)")->capture_default_str()->check(CLI::Range(1u, 1000u));
  aud->add_option("--export", a.format, "print the whole log as csv or jsonl")->check(CLI::IsMember({"csv", "jsonl"}));
  aud->add_flag("--verify", a.verify, "check the hash chain (exit 1 when broken)");
  aud->callback([&] { action = [&] { return audit(ctx, a); }; });

  // keys
  auto* keys = app.add_subcommand("keys", "Manage API keys (admin)");
  keys->require_subcommand(1);
  std::string k_name, k_role, k_id;
  auto* kcreate = keys->add_subcommand("create", "Create a key and print it once");
  kcreate->add_option("--name", k_name, "who or what it is for")->required();
  kcreate->add_option("--role", k_role, "readonly, deploy or admin")->required()->check(CLI::IsMember({"readonly", "deploy", "admin"}));
  kcreate->callback([&] { action = [&] { return keys_create(ctx, k_name, k_role); }; });
  keys->add_subcommand("list", "List keys")->callback([&] { action = [&] { return keys_list(ctx); }; });
  auto* krevoke = keys->add_subcommand("revoke", "Revoke a key");
  krevoke->add_option("ID", k_id, "key id")->required();
  krevoke->callback([&] { action = [&] { return keys_revoke(ctx, k_id); }; });

  // completions
  std::string shell;
  auto* comp = app.add_subcommand("completions", "Print a completion script: bash, zsh or fish");
  comp->add_option("SHELL", shell, "bash, zsh or fish")->required()->check(CLI::IsMember({"bash", "zsh", "fish"}));
  comp->callback([&] { action = [&] { return std::cout << completion_script(app, shell), exit_ok; }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    // `nixfleet bogus`: CLI11 only says a subcommand is required; name the word it did not know.
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && msg.find("subcommand") != std::string::npos) {
      const CLI::App* at = &app;
      for (int i = 1; i < argc; ++i) {
        std::string w = argv[i];
        if (w.starts_with("-")) continue;
        const CLI::App* next = nullptr;
        for (const CLI::App* sub : at->get_subcommands([](const CLI::App*) { return true; }))
          if (sub->get_name() == w) next = sub;
        if (next == nullptr) {
          msg = "unknown command: " + w;
          break;
        }
        at = next;
      }
    }
    std::cerr << "nixfleet: " << msg << " (see --help)\n";
    return exit_usage;
  }
  if (!action) return exit_usage;
  try {
    rc = action();
  } catch (const cli_error& e) {
    std::cerr << "nixfleet: " << e.what() << "\n";
    return e.exit_code;
  } catch (const std::exception& e) {
    std::cerr << "nixfleet: " << e.what() << "\n";
    return exit_failure;
  }
  return rc;
}

}  // namespace nixfleet::cli
