// HTTP(S) load generator for the poll path, where wrk falls short: TLS with a client certificate
// per machine (the coordinator checks that the certificate's CN is the machine in the path), one
// connection per request as the agent makes them, and an open-loop rate spread over many machines.
//
//   bench_load URL PATH [options]     PATH may contain {id}: the machine of each request
//     --ids PREFIX:COUNT      machines PREFIX000000.. (6 digits); default one machine "bench-01"
//     --conns N               concurrent connections (closed loop) or in-flight limit (open loop)
//     --threads N             io threads (default 1)
//     --seconds S             duration (default 10)
//     --requests N            stop after N requests (then --seconds is only a bound)
//     --warmup N              first N requests as fast as possible, not measured (ETags, sessions)
//     --server-pid PID        print that process's CPU (% of one core) over the measured phase, RSS
//     --rate R                open loop: R requests/s in total, latency from the scheduled start
//     --reconnect             a new connection (and TLS handshake) for every request
//     --resume                with --reconnect: resume each machine's last TLS session
//     --etag                  send each machine's last ETag back as If-None-Match (as agents do)
//     --if-none-match TAG     send this ETag with every request
//     --ca FILE               trust this CA for https
//     --cert FILE --key FILE  one client certificate for every connection
//     --client-ca-cert FILE --client-ca-key FILE
//                             mint a client certificate per machine (CN = machine id), signed here
//     --hold                  hold mode: each connection (machine i for connection i) sends one
//                             request and keeps the connection open, waiting for its answer (a long
//                             poll) or idle after it (a kept-alive one), for --seconds; prints when
//                             all are open, the server's memory then, and how many answers came when
//                             (seconds since the hold began, and the wall clock's Unix time)
//     --sources K             spread connections over source addresses 127.0.0.1 … 127.0.0.K (a
//                             source address has ~28,000 ports towards one server port)
// Prints one line: requests, req/s, statuses, p50/p99/max latency (ms), errors.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "nixfleet/common/tls_stream.hpp"
#include <boost/url/parse.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using clk = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

namespace {

struct options {
  std::string url, path;
  std::string prefix = "bench-01";
  std::size_t count = 0;  // 0: the prefix is the one machine id
  int conns = 16, threads = 1;
  double seconds = 10, rate = 0;
  std::uint64_t requests = 0;  // stop after this many (0: run for `seconds`)
  std::uint64_t warmup = 0;    // a closed-loop phase of this many requests first, not measured
  int server_pid = 0;          // report this process's CPU and memory over the measured phase
  bool reconnect = false, etag = false, resume = false, hold = false;
  int sources = 1;
  std::string if_none_match, ca, cert, key, client_ca_cert, client_ca_key;
};

[[noreturn]] void die(const std::string& msg) {
  std::cerr << "bench_load: " << msg << "\n";
  std::exit(2);
}

std::string machine(const options& o, std::size_t i) {
  if (o.count == 0) return o.prefix;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06zu", i);
  return o.prefix + buf;
}

// Client certificates, one per machine, minted at start with one shared key.
struct identities {
  EVP_PKEY* key = nullptr;
  std::vector<X509*> certs;

  void mint(const options& o) {
    auto* f = std::fopen(o.client_ca_cert.c_str(), "r");
    if (!f) die("cannot read " + o.client_ca_cert);
    X509* ca = PEM_read_X509(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    f = std::fopen(o.client_ca_key.c_str(), "r");
    if (!f) die("cannot read " + o.client_ca_key);
    EVP_PKEY* ca_key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (!ca || !ca_key) die("bad client CA certificate or key");
    key = EVP_EC_gen("P-256");
    const std::size_t n = std::max<std::size_t>(o.count, 1);
    for (std::size_t i = 0; i < n; ++i) {
      X509* c = X509_new();
      X509_set_version(c, 2);
      ASN1_INTEGER_set(X509_get_serialNumber(c), static_cast<long>(i + 1000));
      X509_gmtime_adj(X509_getm_notBefore(c), -3600);
      X509_gmtime_adj(X509_getm_notAfter(c), 86400);
      X509_set_pubkey(c, key);
      auto id = machine(o, i);
      X509_NAME* name = X509_get_subject_name(c);
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(id.c_str()), -1, -1, 0);
      X509_set_issuer_name(c, X509_get_subject_name(ca));
      if (!X509_sign(c, ca_key, EVP_sha256())) die("cannot sign a client certificate");
      certs.push_back(c);
    }
  }
};

long long server_cpu_ticks(int pid) {
  if (!pid) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(f, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) {
      stime = std::stoll(field);
      break;
    }
  }
  return utime + stime;
}

double server_kib(int pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.starts_with(key)) return std::stod(line.substr(key.size()));
  return 0;
}

struct stats {
  std::vector<std::uint32_t> latency_us;
  std::map<unsigned, std::uint64_t> statuses;
  std::uint64_t errors = 0;
  std::string first_error;
};

class generator {
 public:
  generator(const options& o) : o_(o), ssl_(asio::ssl::context::tls_client) {
    auto u = boost::urls::parse_absolute_uri(o.url);
    if (!u) die("bad URL " + o.url);
    tls_ = u->scheme() == "https";
    host_ = u->host();
    port_ = u->has_port() ? std::string(u->port()) : (tls_ ? "443" : "80");
    host_header_ = std::string(u->encoded_host_and_port());
    if (tls_) {
      if (!o.ca.empty()) ssl_.load_verify_file(o.ca);
      ssl_.set_verify_mode(asio::ssl::verify_peer);
      if (!o.cert.empty()) {
        ssl_.use_certificate_chain_file(o.cert);
        ssl_.use_private_key_file(o.key, asio::ssl::context::pem);
      }
      if (!o.client_ca_cert.empty()) ids_.mint(o);
    }
    etags_.resize(std::max<std::size_t>(o.count, 1));
    sessions_.resize(etags_.size());
  }

  // One phase: closed loop (rate 0) or open loop; until `requests` (when not 0) or `seconds`.
  stats run(double rate, std::uint64_t requests, double seconds) {
    rate_ = rate;
    requests_ = requests;
    issued_ = 0;
    if (endpoints_.empty()) {
      asio::io_context resolve_ctx;
      tcp::resolver r(resolve_ctx);
      endpoints_ = r.resolve(host_, port_);
    }
    start_ = clk::now();
    end_ = start_ + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(seconds));
    std::vector<std::thread> threads;
    std::vector<stats> per(o_.threads);
    for (int t = 0; t < o_.threads; ++t)
      threads.emplace_back([this, t, &per] {
        asio::io_context ctx;
        for (int c = t; c < o_.conns; c += o_.threads) asio::co_spawn(ctx, worker(per[t]), asio::detached);
        ctx.run();
      });
    for (auto& t : threads) t.join();
    finished_ = clk::now();
    stats all;
    for (auto& s : per) {
      all.latency_us.insert(all.latency_us.end(), s.latency_us.begin(), s.latency_us.end());
      for (auto [k, v] : s.statuses) all.statuses[k] += v;
      all.errors += s.errors;
      if (all.first_error.empty()) all.first_error = s.first_error;
    }
    return all;
  }

  double elapsed() const { return std::chrono::duration<double>(finished_ - start_).count(); }

 private:
  // The next request: which machine, and (open loop) when it is due.
  std::optional<std::pair<std::size_t, clk::time_point>> next() {
    const auto k = issued_.fetch_add(1);
    if (requests_ && k >= requests_) return std::nullopt;
    auto due = clk::now();
    if (rate_ > 0) due = start_ + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(k / rate_));
    if (due >= end_ || clk::now() >= end_) return std::nullopt;
    return std::pair{static_cast<std::size_t>(k % std::max<std::size_t>(o_.count, 1)), due};
  }

  template <class Stream>
  asio::awaitable<unsigned> exchange(Stream& s, std::size_t id, beast::flat_buffer& buf) {
    std::string target = o_.path;
    if (auto p = target.find("{id}"); p != std::string::npos) target.replace(p, 4, machine(o_, id));
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, host_header_);
    req.set("X-Nixfleet-Protocol", "1");
    std::string tag;
    if (!o_.if_none_match.empty()) tag = o_.if_none_match;
    else if (o_.etag) {
      std::lock_guard l(state_mutex_);
      tag = etags_[id];
    }
    if (!tag.empty()) req.set(http::field::if_none_match, tag);
    req.keep_alive(!o_.reconnect);
    co_await http::async_write(s, req, asio::use_awaitable);
    http::response<http::string_body> res;
    co_await http::async_read(s, buf, res, asio::use_awaitable);
    if (o_.etag && res.result_int() == 200) {
      std::lock_guard l(state_mutex_);
      etags_[id] = std::string(res[http::field::etag]);
    }
    co_return res.result_int();
  }

  // A new connection for machine `id`: from its source address, TLS with its certificate.
  asio::awaitable<std::pair<std::unique_ptr<nixfleet::tls_stream>, std::optional<tcp::socket>>> open(std::size_t id) {
    auto ex = co_await asio::this_coro::executor;
    tcp::socket sock(ex);
    if (o_.sources > 1) {
      const auto& to = endpoints_.begin()->endpoint();
      sock.open(to.protocol());
      const auto source = asio::ip::make_address_v4(0x7f000001u + static_cast<unsigned>(id % o_.sources));
      sock.bind(tcp::endpoint(source, 0));
      co_await sock.async_connect(to, asio::use_awaitable);
    } else {
      co_await asio::async_connect(sock, endpoints_, asio::use_awaitable);
    }
    sock.set_option(tcp::no_delay(true));
    if (!tls_) co_return std::pair{nullptr, std::optional<tcp::socket>(std::move(sock))};
    auto tls = std::make_unique<nixfleet::tls_stream>(std::move(sock), ssl_.native_handle(), nixfleet::tls_stream::role::client);
    if (!ids_.certs.empty()) {
      SSL_use_certificate(tls->native_handle(), ids_.certs[id % ids_.certs.size()]);
      SSL_use_PrivateKey(tls->native_handle(), ids_.key);
    }
    if (o_.resume) {
      std::lock_guard l(state_mutex_);
      if (sessions_[id]) SSL_set_session(tls->native_handle(), sessions_[id]);
    }
    SSL_ctrl(tls->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host_.c_str()));
    co_await tls->async_handshake(asio::use_awaitable);
    co_return std::pair{std::move(tls), std::optional<tcp::socket>()};
  }

  asio::awaitable<void> worker(stats& st) {
    auto ex = co_await asio::this_coro::executor;
    std::unique_ptr<nixfleet::tls_stream> tls;
    std::optional<tcp::socket> plain;
    beast::flat_buffer buf;
    asio::steady_timer wait(ex);
    while (auto job = next()) {
      auto [id, due] = *job;
      if (rate_ > 0) {
        wait.expires_at(due);
        co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      const auto began = rate_ > 0 ? due : clk::now();
      try {
        if (o_.reconnect || (!tls && !plain)) {
          tls.reset();
          plain.reset();
          buf.clear();
          auto opened = co_await open(id);
          tls = std::move(opened.first);
          plain = std::move(opened.second);
        }
        unsigned status = 0;
        if (tls) status = co_await exchange(*tls, id, buf);
        else status = co_await exchange(*plain, id, buf);
        st.statuses[status]++;
        st.latency_us.push_back(static_cast<std::uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(clk::now() - began).count()));
        if (o_.reconnect) {
          if (tls) {
            // As the agent does: close_notify, then keep the session for the next connection.
            auto [sec] = co_await tls->async_shutdown(asio::as_tuple(asio::use_awaitable));
            if (o_.resume && !sec) {
              std::lock_guard l(state_mutex_);
              auto& slot = sessions_[id];
              if (slot) SSL_SESSION_free(slot);
              slot = SSL_get1_session(tls->native_handle());
            }
            tls->socket().close();
          }
          if (plain) plain->close();
        }
      } catch (const std::exception& e) {
        if (st.first_error.empty()) st.first_error = e.what();
        st.errors++;
        tls.reset();
        plain.reset();
        buf.clear();
      }
    }
  }

 public:
  // Hold mode: connection i opens as machine i, sends one request and stays open until `seconds`
  // have passed, reading its answer whenever it comes.
  void hold(double seconds) {
    if (endpoints_.empty()) {
      asio::io_context resolve_ctx;
      tcp::resolver r(resolve_ctx);
      endpoints_ = r.resolve(host_, port_);
    }
    const auto start = clk::now();
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    std::vector<std::unique_ptr<asio::io_context>> ctxs;
    for (int t = 0; t < o_.threads; ++t) ctxs.push_back(std::make_unique<asio::io_context>());
    for (int t = 0; t < o_.threads; ++t)
      threads.emplace_back([this, t, &ctxs, &done] {
        auto& ctx = *ctxs[t];
        auto guard = asio::make_work_guard(ctx);
        for (int c = t; c < o_.conns; c += o_.threads) asio::co_spawn(ctx, held_one(static_cast<std::size_t>(c)), asio::detached);
        while (!done) ctx.run_for(std::chrono::milliseconds(100));
      });
    // All open (or failed): the server's memory now; then answers as they come, until the end.
    while (opened_ + held_failed_ < static_cast<std::size_t>(o_.conns) && clk::now() - start < std::chrono::seconds(600))
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const double open_s = std::chrono::duration<double>(clk::now() - start).count();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    std::printf("open %zu failed %zu open_seconds %.1f answered %zu", opened_.load(), held_failed_.load(), open_s,
                answered_.load());
    if (o_.server_pid)
      std::printf(" server_rss_mib %.1f", server_kib(o_.server_pid, "VmRSS:") / 1024.0);
    std::printf("\n");
    std::fflush(stdout);
    std::size_t last = answered_;
    while (clk::now() - start < std::chrono::duration<double>(seconds)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (answered_ != last) {
        last = answered_;
        std::printf("at %.3f answered %zu unix %.3f\n", std::chrono::duration<double>(clk::now() - start).count(), last,
                    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
        std::fflush(stdout);
      }
    }
    done = true;
    for (auto& t : threads) t.join();
    if (!first_hold_error_.empty()) std::fprintf(stderr, "bench_load: first error: %s\n", first_hold_error_.c_str());
  }

 private:
  asio::awaitable<void> held_one(std::size_t id) {
    std::unique_ptr<nixfleet::tls_stream> tls;
    std::optional<tcp::socket> plain;
    beast::flat_buffer buf;
    try {
      // At most 64 handshakes in flight, as a fleet arriving over time would make them: a server
      // handed 10,000 at once rightly closes those still waiting past its first-request deadline.
      asio::steady_timer slot(co_await asio::this_coro::executor);
      while (opening_ >= 64) {
        slot.expires_after(std::chrono::milliseconds(5));
        co_await slot.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      ++opening_;
      struct done_opening {
        std::atomic<int>& n;
        ~done_opening() { --n; }
      };
      std::pair<std::unique_ptr<nixfleet::tls_stream>, std::optional<tcp::socket>> opened;
      {
        done_opening d{opening_};
        opened = co_await open(id);
      }
      tls = std::move(opened.first);
      plain = std::move(opened.second);
      ++opened_;
      if (tls) co_await exchange(*tls, id, buf);
      else co_await exchange(*plain, id, buf);
      ++answered_;
      // Idle from here on: what a kept-alive connection costs the server between requests.
      asio::steady_timer forever(co_await asio::this_coro::executor, std::chrono::hours(24));
      co_await forever.async_wait(asio::as_tuple(asio::use_awaitable));
    } catch (const std::exception& e) {
      std::lock_guard l(state_mutex_);
      if (first_hold_error_.empty()) first_hold_error_ = e.what();
      ++held_failed_;
    }
  }

  const options& o_;
  asio::ssl::context ssl_;
  bool tls_ = false;
  std::string host_, port_, host_header_;
  tcp::resolver::results_type endpoints_;
  identities ids_;
  std::vector<std::string> etags_;
  std::vector<SSL_SESSION*> sessions_;  // per machine, with --resume
  std::mutex state_mutex_;  // guards etags_ and sessions_ across io threads
  std::atomic<std::size_t> opened_{0}, answered_{0}, held_failed_{0};
  std::atomic<int> opening_{0};
  std::string first_hold_error_;
  std::atomic<std::uint64_t> issued_{0};
  double rate_ = 0;
  std::uint64_t requests_ = 0;
  clk::time_point start_, end_, finished_;
};

}  // namespace

int main(int argc, char** argv) {
  options o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--ids") {
      auto v = value();
      auto colon = v.rfind(':');
      if (colon == std::string::npos) die("--ids wants PREFIX:COUNT");
      o.prefix = v.substr(0, colon);
      o.count = std::stoul(v.substr(colon + 1));
    } else if (a == "--conns") o.conns = std::stoi(value());
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--rate") o.rate = std::stod(value());
    else if (a == "--requests") o.requests = std::stoull(value());
    else if (a == "--warmup") o.warmup = std::stoull(value());
    else if (a == "--server-pid") o.server_pid = std::stoi(value());
    else if (a == "--reconnect") o.reconnect = true;
    else if (a == "--etag") o.etag = true;
    else if (a == "--resume") o.resume = true;
    else if (a == "--hold") o.hold = true;
    else if (a == "--sources") o.sources = std::stoi(value());
    else if (a == "--if-none-match") o.if_none_match = value();
    else if (a == "--ca") o.ca = value();
    else if (a == "--cert") o.cert = value();
    else if (a == "--key") o.key = value();
    else if (a == "--client-ca-cert") o.client_ca_cert = value();
    else if (a == "--client-ca-key") o.client_ca_key = value();
    else if (a.starts_with("--")) die("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.size() != 2) die("usage: bench_load URL PATH [options]");
  if (o.conns < 1 || o.threads < 1 || o.seconds <= 0) die("--conns, --threads and --seconds must be positive");
  o.url = pos[0];
  o.path = pos[1];
  generator g(o);
  if (o.hold) {
    g.hold(o.seconds);
    return 0;
  }
  if (o.warmup) {
    auto w = g.run(0, o.warmup, 3600);
    std::printf("warmup requests %zu seconds %.1f errors %llu\n", w.latency_us.size(), g.elapsed(),
                static_cast<unsigned long long>(w.errors));
  }
  const auto cpu0 = server_cpu_ticks(o.server_pid);
  auto s = g.run(o.rate, o.requests, o.seconds);
  const auto cpu1 = server_cpu_ticks(o.server_pid);
  std::sort(s.latency_us.begin(), s.latency_us.end());
  auto pct = [&](double p) {
    if (s.latency_us.empty()) return 0.0;
    return s.latency_us[std::min(s.latency_us.size() - 1, static_cast<std::size_t>(p * s.latency_us.size()))] / 1000.0;
  };
  std::printf("requests %zu rps %.0f", s.latency_us.size(), s.latency_us.size() / g.elapsed());
  for (auto [k, v] : s.statuses) std::printf(" status_%u %llu", k, static_cast<unsigned long long>(v));
  std::printf(" p50_ms %.3f p99_ms %.3f max_ms %.3f errors %llu\n", pct(0.50), pct(0.99),
              s.latency_us.empty() ? 0.0 : s.latency_us.back() / 1000.0, static_cast<unsigned long long>(s.errors));
  if (o.server_pid) {
    const double cpu_s = static_cast<double>(cpu1 - cpu0) / static_cast<double>(sysconf(_SC_CLK_TCK));
    std::printf("server_cpu_percent %.2f server_rss_mib %.1f server_hwm_mib %.1f\n", 100.0 * cpu_s / g.elapsed(),
                server_kib(o.server_pid, "VmRSS:") / 1024.0, server_kib(o.server_pid, "VmHWM:") / 1024.0);
  }
  if (s.errors) std::fprintf(stderr, "bench_load: first error: %s\n", s.first_error.c_str());
  // Not a benchmark of anything if nothing was answered, or answered with something a poll never gets.
  bool answered = !s.latency_us.empty();
  for (auto [status, n] : s.statuses)
    if (status != 200 && status != 204 && status != 304) {
      std::fprintf(stderr, "bench_load: %llu answers with status %u\n", static_cast<unsigned long long>(n), status);
      answered = false;
    }
  return answered ? 0 : 1;
}
