// `nixfleet release …`: build, sign, push and register releases; list, show, diff, delete, revoke.
#include "commands_detail.hpp"

#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <algorithm>
#include <iostream>
#include <set>

namespace nixfleet::cli::detail {

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

}  // namespace nixfleet::cli::detail
