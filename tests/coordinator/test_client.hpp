// A blocking HTTP(S) client for the coordinator tests, and a coordinator running on its own thread.
#pragma once

#include "nixfleet/coordinator/io/service.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/parse.hpp>

#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <algorithm>
#include <vector>
#include <thread>

namespace nixfleet::test {

// Two valid store paths the coordinator tests deploy and report.
inline const std::string P1 = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-a";
inline const std::string P2 = "/nix/store/1d3b7r5mckylg04wcr7hhd7im5h1vp5w-nixos-system-b";

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

struct reply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  std::string error;  // transport failure (no reply)

  boost::json::value json() const { return boost::json::parse(body); }
};

struct client_tls {
  std::string ca_file;
  std::optional<std::string> cert_file, key_file;
};

struct request_spec {
  http::verb method = http::verb::get;
  std::string target;
  std::string body;
  std::map<std::string, std::string> headers;
};

// One request on a fresh connection.
inline reply send(const asio::ip::tcp::endpoint& ep, const request_spec& spec,
                  const std::optional<client_tls>& tls = std::nullopt) {
  asio::io_context ctx;
  reply out;
  http::request<http::string_body> req{spec.method, spec.target, 11};
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [k, v] : spec.headers) req.set(k, v);
  if (!spec.body.empty() || spec.method == http::verb::post || spec.method == http::verb::put) {
    req.body() = spec.body;
    req.prepare_payload();
  }
  http::response<http::string_body> res;
  boost::system::error_code ec;
  beast::flat_buffer buf;
  if (tls) {
    asio::ssl::context ssl(asio::ssl::context::tls_client);
    ssl.load_verify_file(tls->ca_file);
    ssl.set_verify_mode(asio::ssl::verify_peer);
    if (tls->cert_file) {
      ssl.use_certificate_chain_file(*tls->cert_file);
      ssl.use_private_key_file(*tls->key_file, asio::ssl::context::pem);
    }
    beast::ssl_stream<beast::tcp_stream> s(ctx, ssl);
    beast::get_lowest_layer(s).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(s).socket().connect(ep, ec);
    if (!ec) s.handshake(asio::ssl::stream_base::client, ec);
    if (!ec) http::write(s, req, ec);
    if (!ec) http::read(s, buf, res, ec);
    if (ec) {
      out.error = ec.message();
      return out;
    }
  } else {
    // The server may answer (413) and stop reading before the body is sent: read the answer
    // even when writing failed.
    beast::tcp_stream s(ctx);
    s.expires_after(std::chrono::seconds(10));
    s.socket().connect(ep, ec);
    if (!ec) {
      boost::system::error_code write_ec;
      http::write(s, req, write_ec);
      http::read(s, buf, res, ec);
    }
    if (ec) {
      out.error = ec.message();
      return out;
    }
  }
  out.status = res.result_int();
  out.body = res.body();
  for (const auto& f : res) out.headers[std::string(f.name_string())] = std::string(f.value());
  return out;
}

// A coordinator on a thread of its own, on an ephemeral loopback port.
class running_coordinator {
 public:
  explicit running_coordinator(coordinator::io::service_options opts) {
    if (opts.api.listen.port() == 0 && opts.api.listen.address().is_unspecified())
      opts.api.listen = {asio::ip::make_address("127.0.0.1"), 0};
    opts.on_fatal = [this](const std::string& why) {
      std::lock_guard lock(fatal_mutex_);
      fatal_ = why;
      ++fatal_calls_;
    };
    // NIXFLEET_TEST_THREADS runs every coordinator of a suite on that many threads (ctest runs
    // the service suites once so).
    if (const char* t = std::getenv("NIXFLEET_TEST_THREADS"); t != nullptr && opts.threads == 1)
      opts.threads = std::clamp<std::size_t>(std::strtoul(t, nullptr, 10), 1, 64);
    const std::size_t threads = opts.threads;
    svc_.emplace(ctx_, std::move(opts));
    svc_->start();
    endpoint_ = svc_->api_endpoint();
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { ctx_.run(); });
  }
  ~running_coordinator() { stop(); }

  void stop() {
    if (threads_.empty()) return;
    auto f = asio::co_spawn(svc_->executor(), svc_->stop(std::chrono::milliseconds(2000)), asio::use_future);
    f.wait_for(std::chrono::seconds(10));
    ctx_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    svc_.reset();
  }

  // Runs `fn` where the fleet lives (the service's strand) and waits for it.
  template <class F>
  auto on_thread(F fn) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto fut = task.get_future();
    asio::post(svc_->executor(), [&task] { task(); });
    return fut.get();
  }

  void reconcile() {
    auto f = asio::co_spawn(svc_->executor(), svc_->reconcile_now(), asio::use_future);
    f.get();
  }

  coordinator::io::service& service() { return *svc_; }
  const asio::ip::tcp::endpoint& endpoint() const { return endpoint_; }
  std::string fatal() const {
    std::lock_guard lock(fatal_mutex_);
    return fatal_;
  }
  int fatal_calls() const {
    std::lock_guard lock(fatal_mutex_);
    return fatal_calls_;
  }

 private:
  asio::io_context ctx_;
  std::optional<coordinator::io::service> svc_;
  asio::ip::tcp::endpoint endpoint_;
  std::vector<std::thread> threads_;
  mutable std::mutex fatal_mutex_;
  std::string fatal_;
  int fatal_calls_ = 0;
};

inline std::filesystem::path temp_dir(const std::string& tag) {
  auto base = std::filesystem::temp_directory_path() / ("nixfleet-" + tag + "-XXXXXX");
  std::string s = base.string();
  if (::mkdtemp(s.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return s;
}

}  // namespace nixfleet::test
