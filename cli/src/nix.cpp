// The Nix commands the CLI runs: flake discovery, builds, closure signing and copying, closure
// diffs. Every argument that came from outside is validated before it reaches argv.
#include "nixfleet/cli/nix.hpp"

#include "nixfleet/cli/client.hpp"
#include "nixfleet/common/process.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/json/parse.hpp>

#include <cstdlib>
#include <unistd.h>

namespace nixfleet::cli {

namespace json = boost::json;

namespace {

std::vector<std::string> nix_env() {
  std::string config = "experimental-features = nix-command flakes\nflake-registry =\nwarn-dirty = false\n";
  if (const char* extra = std::getenv("NIX_CONFIG")) config += extra;
  return process::environment_with("NIX_CONFIG", config);
}

process::result run(std::vector<std::string> argv, std::chrono::seconds timeout) {
  process::request req;
  req.argv = std::move(argv);
  req.env = nix_env();
  req.timeout = timeout;
  req.max_output = 64u << 20;
  return process::run_blocking(std::move(req));
}

[[noreturn]] void fail(const std::string& what, const process::result& r) {
  std::string tail = r.err_tail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (auto nl = tail.rfind('\n'); nl != std::string::npos) tail = tail.substr(nl + 1);
  throw cli_error(what + " failed (" + r.describe() + (tail.empty() ? "" : "): " + tail) + (tail.empty() ? ")" : ""));
}

void check_flake_ref(const std::string& ref) {
  if (ref.empty() || ref.size() > 1024 || ref.front() == '-')
    throw cli_error("--flake: not a flake reference: " + ref, exit_usage);
  for (char c : ref)
    if (static_cast<unsigned char>(c) < 0x20 || c == '#')
      throw cli_error("--flake: give the flake without an attribute (no '#')", exit_usage);
}

}  // namespace

std::vector<std::string> flake_hosts(const std::string& flake) {
  check_flake_ref(flake);
  auto r = run({"nix", "eval", "--json", flake + "#nixosConfigurations", "--apply", "builtins.attrNames"},
               std::chrono::minutes(10));
  if (!r.ok()) fail("nix eval of " + flake + "#nixosConfigurations", r);
  boost::system::error_code ec;
  auto v = json::parse(r.out, ec);
  if (ec || !v.is_array()) throw cli_error("nix eval did not list the nixosConfigurations");
  std::vector<std::string> hosts;
  for (const auto& h : v.as_array()) {
    if (!h.is_string()) continue;
    std::string name(h.as_string());
    if (protocol::check_identifier(name))
      throw cli_error("nixosConfigurations." + name + " is not a valid machine id");
    hosts.push_back(std::move(name));
  }
  return hosts;
}

std::string build_toplevel(const std::string& flake, const std::string& host) {
  check_flake_ref(flake);
  if (protocol::check_identifier(host)) throw cli_error("not a valid machine id: " + host, exit_usage);
  auto r = run({"nix", "build", "--json", "--no-link",
                flake + "#nixosConfigurations.\"" + host + "\".config.system.build.toplevel"},
               std::chrono::hours(6));
  if (!r.ok()) fail("nix build of " + host, r);
  boost::system::error_code ec;
  auto v = json::parse(r.out, ec);
  if (ec || !v.is_array() || v.as_array().empty()) throw cli_error("nix build did not report what it built");
  const auto* outputs = v.as_array()[0].as_object().if_contains("outputs");
  if (outputs == nullptr || !outputs->is_object()) throw cli_error("nix build did not report an output");
  const auto* out = outputs->as_object().if_contains("out");
  if (out == nullptr || !out->is_string()) throw cli_error("nix build did not report an `out` output");
  std::string path(out->as_string());
  if (protocol::check_store_path(path)) throw cli_error("nix build reported an invalid store path");
  return path;
}

flake_info flake_metadata(const std::string& flake) {
  check_flake_ref(flake);
  auto r = run({"nix", "flake", "metadata", "--json", flake}, std::chrono::minutes(5));
  if (!r.ok()) fail("nix flake metadata of " + flake, r);
  boost::system::error_code ec;
  auto v = json::parse(r.out, ec);
  if (ec || !v.is_object()) throw cli_error("nix flake metadata did not answer JSON");
  flake_info info;
  const auto& o = v.as_object();
  if (const auto* u = o.if_contains("url"); u && u->is_string()) info.url = std::string(u->as_string());
  if (const auto* rev = o.if_contains("revision"); rev && rev->is_string()) {
    std::string s(rev->as_string());
    if (!protocol::check_flake_rev(s)) info.revision = s;
  }
  return info;
}

void sign_closures(const std::vector<std::string>& paths, const std::string& key_file) {
  std::vector<std::string> argv = {"nix", "store", "sign", "--recursive", "--key-file", key_file};
  for (const auto& p : paths) argv.push_back(p);
  auto r = run(std::move(argv), std::chrono::minutes(30));
  if (!r.ok()) fail("nix store sign", r);
}

void copy_closures(const std::vector<std::string>& paths, const std::string& to) {
  if (protocol::check_cache_url(to)) throw cli_error("--push-to: not a store URL: " + to, exit_usage);
  std::vector<std::string> argv = {"nix", "copy", "--to", to};
  for (const auto& p : paths) argv.push_back(p);
  auto r = run(std::move(argv), std::chrono::hours(6));
  if (!r.ok()) fail("nix copy --to " + to, r);
}

bool path_present(const std::string& path) {
  if (protocol::check_store_path(path)) return false;
  auto r = run({"nix-store", "--check-validity", path}, std::chrono::minutes(1));
  return r.ok();
}

std::string diff_closures(const std::string& from, const std::string& to) {
  if (protocol::check_store_path(from) || protocol::check_store_path(to)) throw cli_error("invalid store path");
  auto r = run({"nix", "store", "diff-closures", from, to}, std::chrono::minutes(10));
  if (!r.ok()) fail("nix store diff-closures", r);
  return r.out;
}

}  // namespace nixfleet::cli
