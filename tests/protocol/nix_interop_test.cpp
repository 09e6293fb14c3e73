// Our ed25519 and Nix's agree: same keys, same narinfo signatures (runs when nix is installed).
#include "nixfleet/protocol/signing.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <sys/wait.h>

using namespace nixfleet::protocol;
namespace fs = std::filesystem;

namespace {

struct command_result {
  int status = -1;
  std::string out;
};

// Test-only: runs a shell command line built from fixed strings and temp paths.
command_result run(const std::string& cmd) {
  command_result r;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == ' ')) r.out.pop_back();
  return r;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The second column of `nix path-info --sigs`: the signature by `key_name`.
std::string nix_signature(const std::string& store_flag, const std::string& path, const std::string& key_name) {
  auto r = run("nix path-info " + store_flag + " --sigs " + path);
  std::istringstream words(r.out);
  std::string w;
  while (words >> w)
    if (w.rfind(key_name + ":", 0) == 0) return w;
  return {};
}

struct path_info {
  std::string hash, size;
  std::vector<std::string> refs;
};

path_info query(const std::string& store_flag, const std::string& path) {
  path_info info;
  info.hash = run("nix-store " + store_flag + " -q --hash " + path).out;
  info.size = run("nix-store " + store_flag + " -q --size " + path).out;
  std::istringstream refs(run("nix-store " + store_flag + " -q --references " + path).out);
  std::string r;
  while (refs >> r) info.refs.push_back(r);
  std::sort(info.refs.begin(), info.refs.end());
  return info;
}

// Exits 77 (ctest: skipped) with a message when nix is missing.
struct nix_environment {
  nix_environment() {
    if (run("command -v nix-store && command -v nix").status != 0) {
      std::cout << "nix is not installed: skipping the nix key interoperability tests\n";
      std::exit(77);
    }
    ::setenv("NIX_CONFIG",
             "experimental-features = nix-command flakes\nsubstituters =\nflake-registry =\nbuild-users-group =\nsandbox = false\n"
             "require-sigs = false",
             1);
    dir = fs::temp_directory_path() / ("nixfleet-interop-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    // A fresh name per run: the real store keeps signatures from earlier runs' keys.
    key_name = "interop-" + std::to_string(::getpid()) + "-" + std::to_string(::time(nullptr));
    BOOST_TEST_REQUIRE(run("nix-store --generate-binary-cache-key " + key_name + " " + (dir / "sk").string() + " " +
                           (dir / "pk").string())
                           .status == 0);
  }
  ~nix_environment() {
    std::error_code ec;
    // The chroot store's files are read-only, like /nix/store.
    run("chmod -R u+w " + dir.string());
    fs::remove_all(dir, ec);
  }
  fs::path dir;
  std::string key_name;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(nix_interop, nix_environment)

BOOST_AUTO_TEST_CASE(keys_from_nix_parse_and_match) {
  auto sk = parse_secret_key(slurp(dir / "sk"));
  auto pk = parse_public_key(slurp(dir / "pk"));
  BOOST_REQUIRE(sk.has_value());
  BOOST_REQUIRE(pk.has_value());
  BOOST_TEST(sk->name() == key_name);
  BOOST_TEST((to_public_key(*sk) == *pk));
  BOOST_TEST(to_public_key(*sk).to_string() == slurp(dir / "pk"));
}

BOOST_AUTO_TEST_CASE(our_narinfo_signature_equals_nix_store_sign) {
  const auto store = "--store " + (dir / "store").string();
  std::ofstream(dir / "payload") << "nixfleet interop payload\n";
  const auto path = run("nix-store " + store + " --add " + (dir / "payload").string()).out;
  BOOST_REQUIRE_MESSAGE(!check_store_path(path), "nix-store --add gave " << path);
  BOOST_REQUIRE(run("nix store sign " + store + " --key-file " + (dir / "sk").string() + " " + path).status == 0);
  const auto nix_sig = nix_signature(store, path, key_name);
  BOOST_REQUIRE(!nix_sig.empty());

  const auto info = query(store, path);
  const auto fp = narinfo_fingerprint(path, info.hash, std::stoull(info.size), info.refs);
  const auto key = parse_secret_key(slurp(dir / "sk")).value();
  BOOST_TEST(sign(key, fp).to_string() == nix_sig);

  // Our verifier accepts Nix's signature and refuses it with any bit flipped.
  const trusted_keys trusted({parse_public_key(slurp(dir / "pk")).value()});
  BOOST_TEST(!trusted.verify(fp, nix_sig));
  auto sig = parse_signature(nix_sig).value();
  for (std::size_t bit = 0; bit < 512; bit += 37) {
    auto flipped = sig;
    flipped.bytes[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    BOOST_TEST(trusted.verify(fp, flipped.to_string()) == make_error_code(errc::signature_mismatch), "bit " << bit);
  }
  auto altered = fp;
  altered.back() = altered.back() == ';' ? ',' : ';';
  BOOST_TEST(trusted.verify(altered, nix_sig) == make_error_code(errc::signature_mismatch));
}

// References appear in the fingerprint; building needs the real store (the chroot store cannot
// run builders without a sandbox), so this case runs only where /nix/store is writable.
BOOST_AUTO_TEST_CASE(fingerprint_with_references_matches_nix) {
  std::ofstream(dir / "top.nix") << R"(
    let dep = builtins.derivation { name = "nixfleet-interop-dep"; system = builtins.currentSystem;
                                    builder = "/bin/sh"; args = [ "-c" "echo dep > $out" ]; };
    in builtins.derivation { name = "nixfleet-interop-top"; system = builtins.currentSystem;
                             builder = "/bin/sh"; args = [ "-c" "echo ${dep} > $out" ]; })";
  auto built = run("nix-build --no-out-link " + (dir / "top.nix").string());
  if (built.status != 0 || check_store_path(built.out)) {
    BOOST_TEST_MESSAGE("cannot build in the default store here: the case with references is not checked");
    return;
  }
  const auto& path = built.out;
  BOOST_REQUIRE(run("nix store sign --key-file " + (dir / "sk").string() + " " + path).status == 0);
  const auto nix_sig = nix_signature("", path, key_name);
  const auto info = query("", path);
  BOOST_TEST_REQUIRE(info.refs.size() == 1u);
  const auto fp = narinfo_fingerprint(path, info.hash, std::stoull(info.size), info.refs);
  BOOST_TEST(sign(parse_secret_key(slurp(dir / "sk")).value(), fp).to_string() == nix_sig);
}

BOOST_AUTO_TEST_SUITE_END()
