// Enrollment and renewal of the host's certificate with the fleet CA.
#include "nixfleet/agent/io/identity.hpp"

#include "nixfleet/agent/io/coordinator_client.hpp"
#include "nixfleet/common/durable_file.hpp"
#include "nixfleet/common/http_client.hpp"
#include "nixfleet/common/log.hpp"
#include "nixfleet/common/pki.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <algorithm>

namespace nixfleet::agent::io {

namespace {

protocol::timestamp to_ms(pki::time_point t) { return std::chrono::time_point_cast<std::chrono::milliseconds>(t); }

bool is_token_text(std::string_view t) {
  if (!t.starts_with("nfe_") || t.size() != 4 + 64) return false;
  return std::all_of(t.begin() + 4, t.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string describe_answer(const nixfleet::http_client::response& r) {
  std::string msg = "coordinator answered " + std::to_string(r.status);
  if (auto e = protocol::parse<protocol::error_body>(r.body)) msg += ": " + e->error + ": " + e->message;
  return msg;
}

}  // namespace

protocol::timestamp renewal_due(const identity_info& id) {
  return id.not_before + (id.not_after - id.not_before) * 2 / 3;
}

identity_keeper::identity_keeper(const agent_config& cfg)
    : cfg_(cfg), file_(cfg.state_dir + "/identity.pem"), used_token_file_(cfg.state_dir + "/identity.token") {}

std::optional<identity_info> identity_keeper::load(std::string* why) {
  auto say = [&](std::string w) -> std::optional<identity_info> {
    if (why) *why = std::move(w);
    return std::nullopt;
  };
  auto text = durable::read_file(file_, 256 * 1024);
  if (!text) return say(text.error() == boost::system::errc::no_such_file_or_directory
                            ? "no identity yet"
                            : "cannot read " + file_ + ": " + text.error().message());
  std::string problem;
  auto cert = pki::read_certificate(*text, &problem);
  if (!cert) return say(file_ + ": " + problem);
  if (!pki::key_matches(*text, *text)) return say(file_ + ": the certificate does not belong to the key");
  if (cert->subject_cn != cfg_.machine_id)
    return say(file_ + ": the certificate is for " + cert->subject_cn + ", not " + cfg_.machine_id);
  current_ = identity_info{cert->serial, to_ms(cert->not_before), to_ms(cert->not_after)};
  return current_;
}

boost::asio::awaitable<enroll_result> identity_keeper::store(const std::string& key_pem, const std::string& body) {
  enroll_result out;
  auto issued = protocol::parse<protocol::issued_certificate>(body);
  if (!issued) {
    out.error = "coordinator sent an invalid certificate answer: " + issued.error().what();
    co_return out;
  }
  std::string problem;
  auto cert = pki::read_certificate(issued->certificate, &problem);
  if (!cert) {
    out.error = "coordinator sent no certificate: " + problem;
    co_return out;
  }
  if (issued->machine_id != cfg_.machine_id || cert->subject_cn != cfg_.machine_id || !pki::key_matches(key_pem, issued->certificate)) {
    out.error = "coordinator sent a certificate that is not for this machine's new key";
    co_return out;
  }
  // The key first (it is the identity), then the certificate and the chain: one file, one rename.
  std::string text = key_pem + issued->certificate + issued->ca_chain;
  if (auto ec = co_await durable::replace_file(file_, std::move(text))) {
    out.error = "cannot store the identity in " + file_ + ": " + ec.message();
    co_return out;
  }
  std::string why;
  if (!load(&why)) {
    out.error = why;
    co_return out;
  }
  out.ok = true;
  co_return out;
}

boost::asio::awaitable<enroll_result> identity_keeper::enroll() {
  enroll_result out;
  if (!cfg_.enroll_token_file) {
    out.refused = true;
    out.error = "no enroll_token_file configured";
    co_return out;
  }
  auto raw = durable::read_file(*cfg_.enroll_token_file, 4096);
  if (!raw) {
    out.error = "cannot read the enrollment token " + *cfg_.enroll_token_file + ": " + raw.error().message();
    co_return out;
  }
  const auto token = trim(*raw);
  if (!is_token_text(token)) {
    out.refused = true;
    out.error = *cfg_.enroll_token_file + " does not hold an enrollment token (nfe_ and 64 hex digits)";
    co_return out;
  }
  const auto token_hash = protocol::sha256_hex(token);
  if (auto used = durable::read_file(used_token_file_, 4096); used && trim(*used) == token_hash) {
    out.refused = true;
    out.error = "this token already enrolled this host and is spent; an operator must give a new one "
                "(nixfleet machines enroll " + cfg_.machine_id + ")";
    co_return out;
  }
  const auto key = pki::generate_key(pki::key_type::p256);
  protocol::enroll_request req{cfg_.machine_id, token, pki::make_csr(key, cfg_.machine_id)};
  nixfleet::http_client::client http(nixfleet::http_client::parse_url(cfg_.coordinator_url).value(),
                                     {cfg_.tls.ca_file, std::nullopt, std::nullopt},
                                     {.timeout = cfg_.request_timeout, .body_limit = 256 * 1024,
                                      .user_agent = "nixfleet-agent"});
  nixfleet::http_client::request r{.method = "POST",
                                   .target = "/api/v1/enroll",
                                   .body = protocol::serialize(req),
                                   .headers = {{"Content-Type", "application/json"},
                                               {std::string(protocol::protocol_header),
                                                std::to_string(protocol::protocol_version)}}};
  auto res = co_await http.exchange(std::move(r));
  if (!res.answer) {
    out.error = res.error;
    co_return out;
  }
  if (res.answer->status != 201 && res.answer->status != 200) {
    out.error = describe_answer(*res.answer);
    out.refused = res.answer->status >= 400 && res.answer->status < 500 && res.answer->status != 429 &&
                  res.answer->status != 408;
    co_return out;
  }
  out = co_await store(key, res.answer->body);
  if (out.ok) {
    // The token is spent: remember it, so that it is never offered again.
    if (auto ec = co_await durable::replace_file(used_token_file_, token_hash + "\n"))
      log::warn("cannot record the spent enrollment token", {{"error", ec.message()}});
  }
  co_return out;
}

boost::asio::awaitable<enroll_result> identity_keeper::renew(coordinator_client& coordinator) {
  enroll_result out;
  const auto key = pki::generate_key(pki::key_type::p256);
  // Named first: GCC 12 destroys a temporary passed into a coroutine call twice.
  std::string csr = pki::make_csr(key, cfg_.machine_id);
  auto res = co_await coordinator.renew_certificate(std::move(csr));
  if (!res.body) {
    out.error = res.error;
    out.refused = res.refused;
    co_return out;
  }
  co_return co_await store(key, *res.body);
}

}  // namespace nixfleet::agent::io
