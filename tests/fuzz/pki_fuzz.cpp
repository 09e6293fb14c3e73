// The X.509 parsing that sees network input: a host's certificate signing request (enrollment and
// renewal bodies) and a certificate the coordinator answers with (the agent reads it back). A
// request that parses is signed by a test CA, as the coordinator would.
#include "nixfleet/common/pki.hpp"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace {

const nixfleet::pki::authority& test_ca() {
  static const nixfleet::pki::authority ca = [] {
    const auto dir = std::filesystem::temp_directory_path() / ("nixfleet-pki-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    auto files = nixfleet::pki::init_authority(dir.string(), nixfleet::pki::key_type::p256, "fuzz CA", false,
                                               std::chrono::hours(24), now);
    auto a = nixfleet::pki::authority::load(files.cert_file, files.key_file);
    std::filesystem::remove_all(dir);
    return a;
  }();
  return ca;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string why;
  if (auto csr = nixfleet::pki::read_csr(text, &why)) {
    const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    auto pem = test_ca().issue_client(*csr, "web-01", nixfleet::pki::random_serial(), now, now + std::chrono::hours(1));
    if (!nixfleet::pki::read_certificate(pem)) std::abort();  // what we issue must read back
  } else if (why.empty()) {
    std::abort();  // a refusal always says why
  }
  (void)nixfleet::pki::read_certificate(text);
  (void)nixfleet::pki::key_matches(text, text);
  return 0;
}
