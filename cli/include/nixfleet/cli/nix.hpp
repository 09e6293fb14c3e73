// Nix commands the operator CLI runs (blocking): flake discovery and builds, closure signing,
// copying and diffs. Failures throw cli_error with the command and the tail of its stderr.
#pragma once

#include <optional>
#include <string>
#include <vector>


namespace nixfleet::cli {

struct flake_info {
  std::optional<std::string> url;
  std::optional<std::string> revision;  // absent for a dirty tree
};

// Names of `<flake>#nixosConfigurations`, each a valid machine id.
std::vector<std::string> flake_hosts(const std::string& flake);
// `nix build --json --no-link <flake>#nixosConfigurations."<host>".config.system.build.toplevel`.
std::string build_toplevel(const std::string& flake, const std::string& host);
flake_info flake_metadata(const std::string& flake);
// `nix store sign --recursive --key-file F PATHS`: the closures carry the operator's signature,
// so agents fetching with require-sigs accept them.
void sign_closures(const std::vector<std::string>& paths, const std::string& key_file);
// `nix copy --to URL PATHS`.
void copy_closures(const std::vector<std::string>& paths, const std::string& to);
bool path_present(const std::string& path);
// `nix store diff-closures FROM TO`.
std::string diff_closures(const std::string& from, const std::string& to);

}  // namespace nixfleet::cli
