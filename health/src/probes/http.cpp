// http: GET a URL (http or https, verified against the system store or a given CA file); passes
// on an expected status and, when set, a body containing a substring.
#include "nixfleet/health/probe.hpp"
#include "nixfleet/common/http_client.hpp"
#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/validate.hpp"

#include <algorithm>

namespace nixfleet::health::probes {
namespace {
namespace asio = boost::asio;

constexpr std::size_t max_body = 1 << 20;

struct http_config {
  std::string url;
  std::vector<std::uint16_t> expect_status;  // empty: any 2xx
  std::optional<std::string> body_contains;
  std::optional<std::string> ca_file;
};

class http_probe final : public probe {
 public:
  http_probe(probe_common c, http_config cfg) : probe(std::move(c)), cfg_(std::move(cfg)) {}

  asio::awaitable<outcome> check() override {
    // The client is made per round: a CA file replaced on disk is read again.
    std::optional<http_client::client> client;
    try {
      client.emplace(http_client::parse_url(cfg_.url).value(), http_client::tls_files{cfg_.ca_file},
                     http_client::options{.timeout = common().timeout, .body_limit = max_body,
                                          .user_agent = "nixfleet-agent health probe"});
    } catch (const std::exception& e) {
      co_return outcome{false, e.what()};
    }
    http_client::request req;  // the URL as configured; named: GCC 12 mishandles temporaries in co_await
    auto res = co_await client->exchange(std::move(req));
    if (res.why == http_client::failure::too_large) co_return outcome{false, "response body larger than 1 MiB"};
    if (!res.answer) co_return outcome{false, res.error};
    const unsigned status = res.answer->status;
    const bool status_ok = cfg_.expect_status.empty()
                               ? (status >= 200 && status < 300)
                               : std::find(cfg_.expect_status.begin(), cfg_.expect_status.end(), status) !=
                                     cfg_.expect_status.end();
    // What the service answered, for forensics: its status and the start of its body.
    auto answered = "HTTP " + std::to_string(status) + "\n" +
                    protocol::printable_excerpt(res.answer->body, protocol::limits::max_evidence_output_bytes - 16,
                                                protocol::keep::head);
    if (!status_ok) co_return outcome{false, "unexpected status " + std::to_string(status), std::move(answered)};
    if (cfg_.body_contains && res.answer->body.find(*cfg_.body_contains) == std::string::npos)
      co_return outcome{false, "status " + std::to_string(status) + " but the body lacks the expected text",
                        std::move(answered)};
    co_return outcome{true, "status " + std::to_string(status), std::move(answered)};
  }

 private:
  http_config cfg_;
};

boost::system::error_code check_ca_file(std::string_view s) {
  if (!s.starts_with('/')) return protocol::errc::invalid_characters;
  return protocol::check_text(s, 4096);
}

}  // namespace

protocol::decoded<probe_ptr> make_http(probe_common common, const boost::json::value& config,
                                       const protocol::fields::path_node* at, const probe_env&) {
  std::optional<protocol::decode_error> err;
  http_config cfg;
  protocol::fields::decoder d(config, at, err);
  d.req("url", cfg.url, {.fn = protocol::check_http_url});
  d.def("expect_status", cfg.expect_status, {.max_items = 64});
  d.opt("body_contains", cfg.body_contains, {.max_len = 4096});
  d.opt("ca_file", cfg.ca_file, {.fn = check_ca_file});
  d.ensure(std::all_of(cfg.expect_status.begin(), cfg.expect_status.end(),
                       [](std::uint16_t s) { return s >= 100 && s <= 599; }),
           "expect_status", protocol::errc::out_of_range, "HTTP status codes are between 100 and 599");
  if (err) return *err;
  return probe_ptr(std::make_unique<http_probe>(std::move(common), std::move(cfg)));
}

}  // namespace nixfleet::health::probes
