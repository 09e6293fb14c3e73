// `nixfleet release create --flake` on real Nix: a flake without nixpkgs whose
// nixosConfigurations.<host>.config.system.build.toplevel are builtins.derivation, built, signed,
// pushed to a file:// binary cache and registered; Nix itself verifies the cache signatures.
// Exits 77 (skipped) when nix is not installed.
#include "../coordinator/test_client.hpp"

#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>

using namespace nixfleet;
using namespace nixfleet::test;
namespace fs = std::filesystem;

namespace {

struct result {
  int code = -1;
  std::string out;
};

result shell(const std::string& cmd) {
  result r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  std::size_t n;
  while (p && (n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = p ? ::pclose(p) : -1;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cli_nix)

BOOST_AUTO_TEST_CASE(release_create_builds_a_flake_signs_pushes_and_registers) {
  if (shell("command -v nix").code != 0) {
    std::cout << "nix is not installed: skipping the real-flake release test\n";
    std::exit(77);
  }
  const auto dir = temp_dir("cli-flake");
  const std::string d = dir.string();
  const std::string db = d + "/db.sqlite";
  const auto key = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
  std::ofstream(d + "/admin.key") << key;
  fs::permissions(d + "/admin.key", fs::perms::owner_read | fs::perms::owner_write);
  BOOST_TEST_REQUIRE(shell("nix-store --generate-binary-cache-key op1 " + d + "/op.sec " + d + "/op.pub").code == 0);
  fs::permissions(d + "/op.sec", fs::perms::owner_read | fs::perms::owner_write);

  // A nonce keeps each run's derivations distinct, so they are really built.
  const std::string nonce = std::to_string(::getpid()) + "-" + std::to_string(std::time(nullptr));
  fs::create_directories(dir / "flake");
  std::ofstream(dir / "flake" / "flake.nix") << R"({
  outputs = { self }:
    let
      mk = name: builtins.derivation {
        inherit name;
        system = "x86_64-linux";
        nonce = ")" << nonce << R"(";
        builder = "/bin/sh";
        args = [ "-c" "/bin/mkdir -p $out/bin && echo '#!/bin/sh' > $out/bin/switch-to-configuration && /bin/chmod +x $out/bin/switch-to-configuration" ];
      };
    in {
      nixosConfigurations = {
        web-1.config.system.build.toplevel = mk "nixos-system-web-1";
        web-2.config.system.build.toplevel = mk "nixos-system-web-2";
        db-1.config.system.build.toplevel = mk "nixos-system-db-1";
      };
    };
}
)";

  coordinator::io::service_options o;
  o.db_path = db;
  o.insecure_http = true;
  running_coordinator c(std::move(o));
  const std::string url = "http://127.0.0.1:" + std::to_string(c.endpoint().port());
  auto made = shell("env " + std::string("NIX_CONFIG='build-users-group =\nsandbox = false\nsubstituters =' NIXFLEET_COORDINATOR=") +
                    url + " NIXFLEET_API_KEY_FILE=" + d + "/admin.key " + NIXFLEET_CLI_BIN +
                    " --json release create --flake path:" + d + "/flake --hosts 'web-*' --push-to file://" + d +
                    "/cache --sign-key " + d + "/op.sec --id rf1");
  BOOST_TEST_REQUIRE(made.code == 0, made.out);
  const auto json_start = made.out.rfind("\n{");
  auto rel = protocol::parse<protocol::release>(json_start == std::string::npos ? made.out : made.out.substr(json_start + 1));
  BOOST_TEST_REQUIRE(rel.has_value(), made.out);
  BOOST_TEST(rel->entries.size() == 2u, "only the hosts matching web-*");
  BOOST_TEST((rel->flake_ref == "path:" + d + "/flake"));
  BOOST_TEST(rel->cache_urls.size() == 1u);

  std::ifstream pub_in(d + "/op.pub");
  std::string pub_text;
  std::getline(pub_in, pub_text);
  protocol::trusted_keys trust;
  trust.add(*protocol::parse_public_key(pub_text));
  for (const auto& e : rel->entries) {
    BOOST_TEST_CONTEXT(e.hostname) {
      BOOST_TEST(e.store_path.ends_with("-nixos-system-" + e.hostname));
      BOOST_TEST(fs::exists(e.store_path + "/bin/switch-to-configuration"), "really built");
      BOOST_TEST(!protocol::verify_entry(
          trust, {rel->id, e.hostname, e.store_path, rel->created_at, rel->activation, rel->cache_urls, rel->sequence},
          *e.signature));
      // Nix checks the closure's signature in the pushed cache against the operator's key.
      auto verify = shell("NIX_CONFIG='experimental-features = nix-command\nsubstituters =' nix store verify --store file://" + d + "/cache --sigs-needed 1 " +
                          "--option trusted-public-keys '" + pub_text + "' " + e.store_path);
      BOOST_TEST(verify.code == 0, verify.out);
      auto untrusted = shell("NIX_CONFIG='experimental-features = nix-command\nsubstituters =' nix store verify --store file://" + d +
                             "/cache --sigs-needed 1 --option trusted-public-keys 'other:" +
                             pub_text.substr(pub_text.find(':') + 1, 10) + "' " + e.store_path);
      BOOST_TEST(untrusted.code != 0, "a key that did not sign is not accepted");
    }
  }
  c.stop();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

BOOST_AUTO_TEST_SUITE_END()
