// The coordinator client: the agent's three exchanges over the common HTTP(S) client.
#include "nixfleet/agent/io/coordinator_client.hpp"

#include <charconv>

#include "nixfleet/common/http_client.hpp"
#include "nixfleet/protocol/codec.hpp"

namespace nixfleet::agent::io {
namespace {

class http_coordinator final : public coordinator_client {
 public:
  explicit http_coordinator(const agent_config& cfg) : cfg_(cfg), http_(connect(cfg)) {}

  static std::shared_ptr<nixfleet::http_client::client> connect(const agent_config& cfg) {
    return std::make_shared<nixfleet::http_client::client>(
        nixfleet::http_client::parse_url(cfg.coordinator_url).value(),
        nixfleet::http_client::tls_files{cfg.tls.ca_file, cfg.tls.cert_file, cfg.tls.key_file},
        nixfleet::http_client::options{.timeout = cfg.request_timeout, .body_limit = protocol::limits::max_body_bytes,
                                       .user_agent = "nixfleet-agent",
                                       // Resuming the last session skips the certificate work on both sides
                                       // (the coordinator keeps the client certificate in the ticket): most
                                       // of a poll's cost.
                                       .resume_sessions = true,
                                       // One connection for polls, reports and renewals: a held long
                                       // poll costs the coordinator no handshake per change.
                                       .keep_alive = true});
  }

  // Exchanges in flight keep the client they started with.
  void reload_identity() override { http_ = connect(cfg_); }

  boost::asio::awaitable<certificate_result> renew_certificate(std::string csr) override {
    nixfleet::http_client::request req{.method = "POST",
                                       .target = "/api/v1/machines/" + cfg_.machine_id + "/certificate",
                                       .body = protocol::serialize(protocol::certificate_request{std::move(csr)}),
                                       .headers = {{"Content-Type", "application/json"}}};
    auto res = co_await exchange(std::move(req));
    certificate_result out;
    if (!res.answer) {
      out.error = res.error;
      co_return out;
    }
    if (res.answer->status != 200 && res.answer->status != 201) {
      out.error = describe_status(*res.answer);
      out.refused = res.answer->status >= 400 && res.answer->status < 500 && res.answer->status != 429;
      co_return out;
    }
    out.body = std::move(res.answer->body);
    co_return out;
  }

  boost::asio::awaitable<poll_result> get_desired(std::string etag, std::uint32_t wait_s) override {
    nixfleet::http_client::request req{.target = "/api/v1/machines/" + cfg_.machine_id + "/desired"};
    if (wait_s > 0) {
      req.target += "?wait=" + std::to_string(wait_s);
      req.timeout = cfg_.request_timeout + std::chrono::seconds(wait_s);
    }
    if (!etag.empty()) req.headers.emplace_back("If-None-Match", etag);
    auto res = co_await exchange(std::move(req));
    poll_result out;
    if (!res.answer) {
      out.error = res.error;
      co_return out;
    }
    out.long_poll_s = long_poll_of(*res.answer);
    switch (res.answer->status) {
      case 200: {
        auto d = protocol::parse<protocol::desired_state>(res.answer->body);
        if (!d) {
          out.error = "coordinator sent an invalid desired state: " + d.error().what();
          co_return out;
        }
        out.what = poll_result::outcome::desired;
        out.desired = std::move(*d);
        out.etag = res.answer->header("ETag");
        co_return out;
      }
      case 204: out.what = poll_result::outcome::nothing_assigned; out.etag = res.answer->header("ETag"); co_return out;
      case 304: out.what = poll_result::outcome::not_modified; out.etag = etag; co_return out;
      default: out.error = describe_status(*res.answer); co_return out;
    }
  }

  // The coordinator's long-poll cap (seconds), when it offers long polls.
  static std::optional<std::uint32_t> long_poll_of(const nixfleet::http_client::response& r) {
    const auto text = r.header(protocol::long_poll_header);
    std::uint32_t s = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), s);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size() || s == 0) return std::nullopt;
    return std::min<std::uint32_t>(s, 3600);
  }

  // Retry-After in seconds (the HTTP-date form is not used by the coordinator); 60 s when absent
  // or unreadable, so that a 429 is never retried at once.
  static std::chrono::seconds retry_after_of(const nixfleet::http_client::response& r) {
    const auto text = r.header("Retry-After");
    std::uint64_t s = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), s);
    if (text.empty() || ec != std::errc() || p != text.data() + text.size()) return std::chrono::seconds(60);
    return std::chrono::seconds(std::min<std::uint64_t>(s, 3600));
  }

  boost::asio::awaitable<ack_result> post_reports(std::vector<protocol::report> batch) override {
    nixfleet::http_client::request req{.method = "POST",
                                       .target = "/api/v1/machines/" + cfg_.machine_id + "/reports",
                                       .body = protocol::serialize(protocol::report_batch{std::move(batch)}),
                                       .headers = {{"Content-Type", "application/json"}}};
    auto res = co_await exchange(std::move(req));
    ack_result out;
    if (!res.answer) {
      out.error = res.error;
      co_return out;
    }
    if (res.answer->status != 200) {
      out.error = describe_status(*res.answer);
      out.refused = res.answer->status == 400 || res.answer->status == 413 || res.answer->status == 422;
      if (res.answer->status == 429) out.retry_after = retry_after_of(*res.answer);
      co_return out;
    }
    auto ack = protocol::parse<protocol::report_ack>(res.answer->body);
    if (!ack) {
      out.error = "coordinator sent an invalid acknowledgement: " + ack.error().what();
      co_return out;
    }
    out.ok = true;
    out.acked_seq = ack->acked_seq;
    co_return out;
  }

  boost::asio::awaitable<revocations_result> get_revocations() override {
    nixfleet::http_client::request req{.target = "/api/v1/revocations"};  // named: GCC 12 and co_await temporaries
    auto res = co_await exchange(std::move(req));
    revocations_result out;
    if (!res.answer) {
      out.error = res.error;
      co_return out;
    }
    if (res.answer->status != 200) {
      out.error = describe_status(*res.answer);
      co_return out;
    }
    auto list = protocol::parse<protocol::revocation_list>(res.answer->body);
    if (!list) {
      out.error = "coordinator sent an invalid revocation list: " + list.error().what();
      co_return out;
    }
    out.list = std::move(*list);
    co_return out;
  }

 private:
  static std::string describe_status(const nixfleet::http_client::response& res) {
    if (res.status == 426) return "coordinator speaks another protocol version (426)";
    std::string msg = "coordinator answered " + std::to_string(res.status);
    if (auto e = protocol::parse<protocol::error_body>(res.body)) msg += ": " + e->error + ": " + e->message;
    return msg;
  }

  boost::asio::awaitable<nixfleet::http_client::result> exchange(nixfleet::http_client::request req) {
    req.headers.emplace_back(std::string(protocol::protocol_header), std::to_string(protocol::protocol_version));
    auto http = http_;
    co_return co_await http->exchange(std::move(req));
  }

  agent_config cfg_;
  std::shared_ptr<nixfleet::http_client::client> http_;
};

}  // namespace

boost::asio::awaitable<certificate_result> coordinator_client::renew_certificate(std::string) {
  co_return certificate_result{std::nullopt, false, "this client cannot renew certificates"};
}

std::unique_ptr<coordinator_client> make_http_client(const agent_config& cfg) { return std::make_unique<http_coordinator>(cfg); }

}  // namespace nixfleet::agent::io
