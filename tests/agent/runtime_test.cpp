// The running agent over fake seams (coordinator, Nix, activation, probes) on test time: polls,
// deploys, reports in order with acknowledgements, and keeps running through a coordinator outage.
// Time moves only when every loop of the agent waits on the manual clock; nothing here sleeps.
#include "manual_clock.hpp"
#include "nixfleet/agent/io/control.hpp"
#include "nixfleet/agent/io/runtime.hpp"
#include "nixfleet/agent/io/metrics.hpp"
#include "nixfleet/common/pki.hpp"
#include "nixfleet/protocol/codec.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <fstream>
#include <future>
#include <map>
#include <set>

using namespace nixfleet;
using namespace nixfleet::agent;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

const std::string path_a = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-web-01-a";
const std::string path_b = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-b";

struct fake_coordinator final : io::coordinator_client {
  // An honest coordinator serves entries the operator signed: each answer is signed with this key.
  protocol::secret_key signer = protocol::generate_secret_key("ops-1");
  bool down = false;
  std::optional<std::uint64_t> poison_seq;  // a report this coordinator always refuses (400)
  int over_budget = 0;                      // answer this many batches 429 with Retry-After: 30
  std::vector<core::time_point> sends;  // when each batch arrived (test time)
  std::optional<protocol::desired_state> desired;
  std::map<std::uint64_t, protocol::report> received;
  std::map<std::uint64_t, protocol::timestamp> received_at;  // test wall time
  int polls = 0;
  io::clock* clock = nullptr;
  std::vector<core::time_point> poll_starts;
  std::chrono::milliseconds delay{0};  // how long each poll takes to be answered (test time)
  std::vector<std::uint32_t> waits;  // what each poll asked to be held for
  asio::awaitable<io::poll_result> get_desired(std::string etag, std::uint32_t wait_s) override {
    ++polls;
    waits.push_back(wait_s);
    poll_starts.push_back(clock->now());
    if (delay.count() > 0) co_await clock->sleep_until(clock->now() + delay);
    io::poll_result r;
    if (down) {
      r.error = "connection refused";
      co_return r;
    }
    if (!desired) {
      r.what = io::poll_result::outcome::nothing_assigned;
      co_return r;
    }
    const auto tag = "\"" + desired->store_path.substr(11, 8) + std::to_string(desired->attempt) + "\"";
    if (etag == tag) {
      r.what = io::poll_result::outcome::not_modified;
      co_return r;
    }
    r.what = io::poll_result::outcome::desired;
    r.desired = desired;
    if (!r.desired->entry_signature)
      r.desired->entry_signature = protocol::sign_entry(signer, protocol::entry_statement_of(*r.desired));
    r.etag = tag;
    co_return r;
  }
  std::optional<protocol::revocation_list> revocations;
  int revocation_fetches = 0;
  asio::awaitable<io::revocations_result> get_revocations() override {
    ++revocation_fetches;
    io::revocations_result r;
    if (down || !revocations) r.error = down ? "connection refused" : "not found";
    else r.list = revocations;
    co_return r;
  }
  asio::awaitable<io::ack_result> post_reports(std::vector<protocol::report> batch) override {
    io::ack_result a;
    if (down) {
      a.error = "connection refused";
      co_return a;
    }
    if (clock) sends.push_back(clock->now());
    if (over_budget > 0) {
      --over_budget;
      a.error = "coordinator answered 429";
      a.retry_after = std::chrono::seconds(30);
      co_return a;
    }
    for (auto& r : batch)
      if (poison_seq && r.seq == *poison_seq) {
        a.refused = true;
        a.error = "coordinator answered 400";
        co_return a;
      }
    for (auto& r : batch) {
      received.emplace(r.seq, r);
      if (clock) received_at.emplace(r.seq, clock->wall_now());
    }
    a.ok = true;
    a.acked_seq = batch.empty() ? 0 : batch.back().seq;
    co_return a;
  }
  // Renewal by a real CA over the agent's request, when `ca` is set.
  const pki::authority* ca = nullptr;
  std::vector<protocol::timestamp> renewed_at;
  int reloads = 0;
  asio::awaitable<io::certificate_result> renew_certificate(std::string csr) override {
    io::certificate_result r;
    if (down || ca == nullptr) {
      r.error = "connection refused";
      co_return r;
    }
    const auto now = std::chrono::floor<std::chrono::seconds>(clock->wall_now());
    protocol::issued_certificate c;
    c.machine_id = "web-01";
    c.serial = pki::random_serial();
    c.certificate = ca->issue_client(*pki::read_csr(csr), "web-01", c.serial, now, now + 3h);
    c.ca_chain = ca->chain_pem();
    c.not_before = now;
    c.not_after = now + 3h;
    renewed_at.push_back(clock->wall_now());
    r.body = protocol::serialize(c);
    co_return r;
  }
  void reload_identity() override { ++reloads; }
  std::vector<protocol::report_kind> kinds() const {
    std::vector<protocol::report_kind> out;
    for (const auto& [seq, r] : received)
      if (r.kind != protocol::report_kind::heartbeat && r.kind != protocol::report_kind::health) out.push_back(r.kind);
    return out;
  }
};

struct fake_host final : io::nix_runner, io::activator, io::prober {
  std::string current = path_a;
  std::string profile = path_a;
  std::set<std::string> unhealthy;
  int switches = 0;
  asio::awaitable<io::step_result> fetch(std::string, std::vector<std::string>) override { co_return io::step_result{true, {}}; }
  asio::awaitable<io::step_result> set_profile(std::string, std::string p) override {
    profile = p;
    co_return io::step_result{true, {}};
  }
  asio::awaitable<io::step_result> switch_to(std::string p, protocol::activation_mode) override {
    ++switches;
    current = p;
    co_return io::step_result{true, {}};
  }
  std::string running() override { return current; }
  asio::awaitable<std::vector<protocol::probe_result>> round() override {
    const bool ok = !unhealthy.contains(current);
    co_return std::vector<protocol::probe_result>{
        {"web", "http", ok ? protocol::probe_status::pass : protocol::probe_status::fail, 1, std::nullopt}};
  }
  std::vector<health::gated_probe> probes() const override { return {{"web", true}}; }
};

struct fixture {
  fixture() {
    dir = fs::temp_directory_path() / ("nixfleet-runtime-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    cfg.machine_id = "web-01";
    cfg.coordinator_url = "https://fleet.invalid";
    cfg.poll_interval = 100ms;
    cfg.retry_interval = 200ms;
    cfg.startup_jitter = 50ms;
    cfg.health_interval = 10s;
    cfg.state_dir = dir.string();
    cfg.control_socket = (dir / "control.sock").string();
    cfg.trusted_keys.add(protocol::to_public_key(coordinator.signer));
    gate.grace = 30ms;
    gate.interval = 30ms;
    gate.soak = 100ms;
    gate.failure_threshold = 2;
    gate.timeout = 5s;
    coordinator.desired = protocol::desired_state{};
    coordinator.desired->machine_id = "web-01";
    coordinator.desired->release_id = "r-1";
    coordinator.desired->store_path = path_b;
    coordinator.clock = &time;
  }
  void remove_state() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  ~fixture() {
    stop();
    agents.clear();
    remove_state();
  }

  // An agent over the fixture's seams, owned here so that it outlives its coroutines.
  io::agent_runtime& agent(std::uint64_t seed, io::identity_keeper* identity = nullptr) {
    return *agents.emplace_back(std::make_unique<io::agent_runtime>(
        cfg, io::runtime_seams{coordinator, host, host, host, time, identity}, gate, seed));
  }

  // Starts `rt` (stopping whichever runtime ran before: a restart of the agent).
  void start(io::agent_runtime& rt) {
    if (running == &rt) return;
    stop();
    running = &rt;
    finished = false;
    asio::co_spawn(ctx, rt.run(), asio::bind_cancellation_slot(stop_signal.slot(), [this](std::exception_ptr) {
                     finished = true;
                   }));
  }
  // Stops the running agent as SIGTERM does (cancellation) and waits until it has.
  void stop() {
    if (!running) return;
    stop_signal.emit(asio::cancellation_type::terminal);
    while (!finished) {
      if (ctx.stopped()) ctx.restart();
      if (ctx.run_one_for(std::chrono::seconds(10)) == 0) BOOST_FAIL("the agent did not stop when cancelled");
    }
    running = nullptr;
  }

  // Runs `rt` until `done` holds or `limit` of test time passes. The agent's poll, report and
  // health loops are the three coroutines that sleep on the clock when nothing else is left.
  template <class Pred>
  bool run_until(io::agent_runtime& rt, Pred done, std::chrono::milliseconds limit = 5s) {
    start(rt);
    return time.run_until(ctx, 3, done, limit);
  }

  // Runs the agent while another thread talks to it over a socket: real I/O is waited for, and
  // test time moves only when nothing at all happened for a while.
  template <class Pred>
  bool serve_until(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (ctx.stopped()) ctx.restart();
      if (ctx.run_one_for(50ms) == 0 && time.sleeping() >= 3 && time.next_wake()) time.advance_to(*time.next_wake());
    }
    return true;
  }

  // A deployment of `path` has finished: idle, running it, and its in-flight record is gone (the
  // last thing a deployment does), so stopping the agent now interrupts nothing.
  bool settled(io::agent_runtime& rt, const std::string& path) const {
    return host.current == path && rt.deployer().current() == core::deployer::stage::idle &&
           !fs::exists(dir / "in-flight.json");
  }

  fs::path dir;
  agent_config cfg;
  health::gate_config gate;
  test::manual_clock time;
  fake_coordinator coordinator;
  fake_host host;
  asio::io_context ctx;
  asio::cancellation_signal stop_signal;
  io::agent_runtime* running = nullptr;
  bool finished = true;
  std::vector<std::unique_ptr<io::agent_runtime>> agents;
  static inline int n = 0;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(agent_runtime_tests, fixture)

BOOST_AUTO_TEST_CASE(polls_deploys_and_reports_in_order) {
  auto& rt = agent(1);
  using k = protocol::report_kind;
  const std::vector<k> lifecycle = {k::fetching, k::fetched, k::activating, k::activated, k::confirmed};
  // The lifecycle in order; the same desired state offered again afterwards is only `up_to_date`.
  BOOST_TEST(run_until(rt, [&] {
    auto got = coordinator.kinds();
    return got.size() >= lifecycle.size() && std::equal(lifecycle.begin(), lifecycle.end(), got.begin());
  }));
  const auto got = coordinator.kinds();
  for (std::size_t i = lifecycle.size(); i < got.size(); ++i) BOOST_TEST((got[i] == k::up_to_date));
  BOOST_TEST(host.current == path_b);
  BOOST_TEST(host.profile == path_b);
  std::uint64_t expected = 1;
  for (const auto& [seq, r] : coordinator.received) BOOST_TEST(seq == expected++);
}

BOOST_AUTO_TEST_CASE(a_report_queued_while_the_outbox_is_empty_is_sent_at_once) {
  // Polls answered 70 ms after they start, so that nothing the deployment reports falls on the
  // empty outbox's 250 ms look by chance: each report arrives the (test) moment it was made.
  cfg.startup_jitter = 0ms;
  coordinator.delay = 70ms;
  auto& rt = agent(11);
  using k = protocol::report_kind;
  BOOST_TEST_REQUIRE(run_until(rt, [&] { return coordinator.kinds().size() >= 5u && host.current == path_b; }, 30s));
  BOOST_TEST_REQUIRE(run_until(rt, [&] {
    for (const auto& [seq, r] : coordinator.received)
      if (r.kind == k::confirmed) return true;
    return false;
  }, 30s));
  std::size_t checked = 0;
  for (const auto& [seq, r] : coordinator.received) {
    if (r.kind == k::heartbeat || r.kind == k::health) continue;
    BOOST_TEST((coordinator.received_at.at(seq) - r.at == std::chrono::milliseconds(0)),
               protocol::to_string(r.kind) << " made at " << protocol::format_time(r.at) << " arrived at "
                                           << protocol::format_time(coordinator.received_at.at(seq)));
    ++checked;
  }
  BOOST_TEST(checked >= 5u);
}

BOOST_AUTO_TEST_CASE(the_poll_period_counts_from_the_start_of_each_poll) {
  // Each poll takes 200 ms (test time) to be answered. With a 300 ms period counted from the start
  // of a poll, polls start exactly 300 ms apart; counted from the end they would be 500 ms apart.
  cfg.poll_interval = 300ms;
  cfg.startup_jitter = 0ms;
  coordinator.desired.reset();
  coordinator.delay = 200ms;
  auto& rt = agent(4);
  BOOST_TEST_REQUIRE(run_until(rt, [&] { return coordinator.polls >= 9; }, 3200ms), "polls by 3.2 s: " << coordinator.polls);
  for (std::size_t i = 1; i < coordinator.poll_starts.size(); ++i)
    BOOST_TEST((coordinator.poll_starts[i] - coordinator.poll_starts[i - 1] == 300ms), "poll " << i);
}

BOOST_AUTO_TEST_CASE(coordinator_outage_during_the_gate_changes_nothing_and_loses_nothing) {
  auto& rt = agent(2);
  // The coordinator vanishes as soon as the agent has the desired state.
  BOOST_TEST(run_until(rt, [&] {
    if (coordinator.polls >= 1 && rt.deployer().current() != core::deployer::stage::idle) coordinator.down = true;
    return coordinator.down && settled(rt, path_b);
  }));
  BOOST_TEST(host.current == path_b);  // confirmed, not rolled back
  BOOST_TEST(host.switches == 1);
  const auto polls_before = coordinator.polls;
  // Stays down for a while: the host keeps running its generation, reports wait.
  auto& rt2 = agent(3);
  BOOST_TEST(!run_until(rt2, [&] { return false; }, 600ms));
  BOOST_TEST(coordinator.polls > polls_before);
  BOOST_TEST(host.current == path_b);
  BOOST_TEST(host.switches == 1);
  // Back: everything reaches the coordinator, in order.
  coordinator.down = false;
  using k = protocol::report_kind;
  const std::vector<k> lifecycle = {k::fetching, k::fetched, k::activating, k::activated, k::confirmed};
  auto& rt3 = agent(4);
  BOOST_TEST(run_until(rt3, [&] {
    auto ks = coordinator.kinds();
    return std::find(ks.begin(), ks.end(), k::confirmed) != ks.end() && rt3.outbox().empty();
  }));
  // Every lifecycle step arrives, in order. (If the first agent was stopped between emitting and
  // persisting a report, the restarted one resumes the gate and reports again: at least once.)
  auto got = coordinator.kinds();
  auto at = got.begin();
  for (auto step : lifecycle) {
    at = std::find(at, got.end(), step);
    BOOST_TEST_REQUIRE((at != got.end()), "missing step " << protocol::to_string(step));
  }
  BOOST_TEST((std::find(got.begin(), got.end(), k::rolled_back) == got.end()));
  BOOST_TEST(host.switches == 1);
}

BOOST_AUTO_TEST_CASE(unhealthy_target_is_rolled_back_once_and_not_reapplied) {
  host.unhealthy = {path_b};
  auto& rt = agent(5);
  BOOST_TEST(run_until(rt, [&] {
    auto ks = coordinator.kinds();
    return std::find(ks.begin(), ks.end(), protocol::report_kind::rolled_back) != ks.end();
  }));
  BOOST_TEST(host.current == path_a);
  const auto switches = host.switches;
  // Many more polls of the same desired state: no re-apply. (A new ETag each poll forces full
  // desired states through the decision.)
  BOOST_TEST(!run_until(rt, [&] { return false; }, 700ms));
  BOOST_TEST(host.switches == switches);
  BOOST_TEST(host.current == path_a);
}

BOOST_AUTO_TEST_CASE(a_report_the_coordinator_refuses_does_not_block_the_rest) {
  coordinator.poison_seq = 2;
  auto& rt = agent(7);
  BOOST_TEST(run_until(rt, [&] { return coordinator.received.contains(5) && rt.outbox().empty(); }));
  BOOST_TEST(!coordinator.received.contains(2));
  BOOST_TEST(coordinator.received.contains(1));
  BOOST_TEST(coordinator.received.contains(3));
}

BOOST_AUTO_TEST_CASE(over_its_report_budget_the_agent_waits_as_told_and_loses_nothing) {
  coordinator.over_budget = 2;
  auto& rt = agent(8);
  BOOST_TEST_REQUIRE(run_until(rt, [&] { return settled(rt, path_b) && rt.outbox().empty(); }, 120s));
  BOOST_TEST_REQUIRE(coordinator.sends.size() >= 3u);
  // The two refused batches were each followed by the 30 s asked for, not a retry backoff.
  BOOST_TEST((coordinator.sends[1] - coordinator.sends[0] >= 30s));
  BOOST_TEST((coordinator.sends[2] - coordinator.sends[1] >= 30s));
  // And every step of the deployment made it, in order (heartbeats superseded in the outbox aside).
  using k = protocol::report_kind;
  BOOST_TEST((coordinator.kinds() ==
              std::vector<k>{k::fetching, k::fetched, k::activating, k::activated, k::confirmed, k::up_to_date}));
}

BOOST_AUTO_TEST_CASE(metrics_endpoint_serves_the_agent_state) {
  unsigned short port;
  {
    asio::io_context tmp;
    asio::ip::tcp::acceptor a(tmp, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  cfg.metrics_listen = "127.0.0.1:" + std::to_string(port);
  auto& rt = agent(8);
  BOOST_REQUIRE(run_until(rt, [&] { return settled(rt, path_b); }));

  // The listener was bound when the agent started; fetch the page from another thread.
  auto page = std::async(std::launch::async, [port] {
    asio::io_context c;
    asio::ip::tcp::socket sock(c);
    sock.connect({asio::ip::make_address("127.0.0.1"), port});
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    asio::write(sock, asio::buffer(req));
    std::string out;
    boost::system::error_code ec;
    char buf[4096];
    for (;;) {
      auto got_n = sock.read_some(asio::buffer(buf), ec);
      out.append(buf, got_n);
      if (ec) break;
    }
    return out;
  });
  BOOST_REQUIRE(serve_until([&] { return page.wait_for(0s) == std::future_status::ready; }));
  const auto text = page.get();
  BOOST_TEST(text.starts_with("HTTP/1.1 200"), text);
  BOOST_TEST(text.find("nixfleet_agent_info{machine_id=\"web-01\"") != std::string::npos);
  // At least one: an agent stopped between reporting and clearing its record confirms again on
  // restart (at-least-once), and this test restarts it.
  BOOST_TEST(text.find("nixfleet_agent_confirmations_total ") != std::string::npos, text);
  BOOST_TEST(text.find("nixfleet_agent_confirmations_total 0\n") == std::string::npos, text);
  BOOST_TEST(text.find("nixfleet_agent_stage{stage=\"idle\"} 1") != std::string::npos);
  BOOST_TEST(text.find("nixfleet_agent_probe_up{probe=\"web\"} 1") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(control_socket_status_hold_and_rollback) {
  auto& rt = agent(6);
  BOOST_REQUIRE(run_until(rt, [&] { return settled(rt, path_b); }));

  // Talk to the socket from another thread while the agent runs (it bound the socket at start).
  auto ask = [&](const std::string& command) {
    auto answer = std::async(std::launch::async, [&, command] { return io::control_request(cfg.control_socket, command); });
    BOOST_REQUIRE(serve_until([&] { return answer.wait_for(0s) == std::future_status::ready; }));
    return answer.get();
  };

  auto status = ask("status");
  BOOST_TEST(status.at("ok").as_bool());
  BOOST_TEST(status.at("current").as_string() == path_b);
  BOOST_TEST(status.at("last_good").as_string() == path_b);
  BOOST_TEST(status.at("stage").as_string() == "idle");

  auto held = ask("hold");
  BOOST_TEST(held.at("hold").as_bool());
  // A new target while held is not deployed.
  coordinator.desired->store_path = path_a;
  coordinator.desired->attempt = 1;
  run_until(rt, [] { return false; }, 400ms);
  BOOST_TEST(host.current == path_b);

  ask("release-hold");
  BOOST_TEST(run_until(rt, [&] { return settled(rt, path_a); }));

  // Break-glass rollback to the previous confirmed generation (a), from b deployed again.
  coordinator.desired->store_path = path_b;
  coordinator.desired->attempt = 2;
  BOOST_REQUIRE(run_until(rt, [&] { return settled(rt, path_b); }));
  auto rolled = ask("rollback");
  BOOST_TEST(rolled.at("current").as_string() == path_a);
  BOOST_TEST(rolled.at("hold").as_bool());  // and held, so the next poll does not undo it
  run_until(rt, [] { return false; }, 400ms);
  BOOST_TEST(host.current == path_a);

  auto bad = ask("format-disk");
  BOOST_TEST(!bad.at("ok").as_bool());
}

BOOST_AUTO_TEST_CASE(a_control_client_that_says_nothing_is_answered_and_closed_at_the_deadline) {
  cfg.control_deadline = 200ms;
  auto& rt = agent(7);
  BOOST_REQUIRE(run_until(rt, [&] { return settled(rt, path_b); }));
  auto silent = std::async(std::launch::async, [&] {
    asio::io_context client;
    asio::local::stream_protocol::socket sock(client);
    sock.connect(asio::local::stream_protocol::endpoint(cfg.control_socket));
    std::string out;
    boost::system::error_code ec;
    char buf[512];
    while (!ec) out.append(buf, sock.read_some(asio::buffer(buf), ec));
    return std::pair(out, ec);
  });
  BOOST_REQUIRE(serve_until([&] { return silent.wait_for(0s) == std::future_status::ready; }));
  const auto [text, ec] = silent.get();
  BOOST_TEST(ec == asio::error::eof, ec.message());
  BOOST_TEST(text.find("no request within 200 ms") != std::string::npos, text);
  // And the socket still serves the next client.
  auto status = std::async(std::launch::async, [&] { return io::control_request(cfg.control_socket, "status"); });
  BOOST_REQUIRE(serve_until([&] { return status.wait_for(0s) == std::future_status::ready; }));
  BOOST_TEST(status.get().at("ok").as_bool());
}

BOOST_AUTO_TEST_CASE(after_a_confirmed_release_an_older_one_is_refused_and_the_step_back_accepted) {
  const std::string path_c = "/nix/store/2m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-web-01-c";
  coordinator.desired->release_id = "r-5";
  coordinator.desired->release_sequence = 5;
  auto& rt = agent(11);
  BOOST_TEST_REQUIRE(run_until(rt, [&] { return settled(rt, path_b) && rt.driver().state().accepted.has_value(); }));
  BOOST_TEST(rt.driver().state().accepted->sequence == 5u);
  BOOST_TEST(*rt.driver().state().step_back == path_a);

  // A genuinely signed, older release (a replay): refused, nothing switched.
  coordinator.desired->release_id = "r-3";
  coordinator.desired->release_sequence = 3;
  coordinator.desired->store_path = path_c;
  const auto switches = host.switches;
  auto refused = [&] {
    for (const auto& [seq, r] : coordinator.received)
      if (r.kind == protocol::report_kind::rejected && r.store_path == path_c && r.message &&
          r.message->find("older than release r-5 (#5)") != std::string::npos)
        return true;
    return false;
  };
  BOOST_TEST(run_until(rt, refused));
  BOOST_TEST(host.switches == switches);
  BOOST_TEST(host.current == path_b);

  // The one step back (what ran before r-5), signed in an older release: accepted.
  coordinator.desired->release_id = "r-2";
  coordinator.desired->release_sequence = 2;
  coordinator.desired->store_path = path_a;
  BOOST_TEST(run_until(rt, [&] { return settled(rt, path_a); }));
  // The high-water mark does not go down with it, and the state survives a restart.
  io::state_store store(cfg.state_dir);
  const auto kept = store.load_state().value;
  BOOST_TEST(kept.accepted->sequence == 5u);
  BOOST_TEST(*kept.step_back == path_b);
}

BOOST_AUTO_TEST_CASE(an_announced_revocation_list_is_verified_kept_and_enforced) {
  protocol::revocation_list list{1, protocol::parse_time("2026-11-25T18:00:00Z").value(), {"r-1"}, {}, {}, {}};
  // First a forgery: the coordinator's own key is not trusted.
  auto forged = list;
  protocol::sign_revocations(protocol::generate_secret_key("ops-1"), forged);
  coordinator.revocations = forged;
  coordinator.desired->revocations_sequence = 1;
  auto& rt = agent(12);
  BOOST_TEST(run_until(rt, [&] { return settled(rt, path_b); }), "a forged list revokes nothing");
  BOOST_TEST(!rt.driver().state().revocations.has_value());

  // The operator's list revokes what now runs and the next target's release.
  list.sequence = 2;
  list.store_paths = {path_b};
  list.releases = {"r-2"};
  protocol::sign_revocations(coordinator.signer, list);
  coordinator.revocations = list;
  coordinator.desired->release_id = "r-2";
  coordinator.desired->store_path = path_a;
  coordinator.desired->revocations_sequence = 2;
  auto reported = [&](const std::string& path, const std::string& text) {
    for (const auto& [seq, r] : coordinator.received)
      if (r.kind == protocol::report_kind::rejected && r.store_path == path && r.message &&
          r.message->find(text) != std::string::npos)
        return true;
    return false;
  };
  BOOST_TEST(run_until(rt, [&] {
    return reported(path_b, "running generation is revoked") && reported(path_a, "revocation list #2");
  }));
  BOOST_TEST(host.current == path_b, "a revoked running generation keeps running: nothing replaces it unasked");
  BOOST_TEST(rt.driver().state().revocations->sequence == 2u);
  // Fetched once per new sequence, not on every poll.
  const auto fetches = coordinator.revocation_fetches;
  BOOST_TEST(!run_until(rt, [&] { return false; }, 500ms));
  BOOST_TEST(coordinator.revocation_fetches == fetches);
  // An older list served again later is not taken.
  coordinator.revocations = forged;
  coordinator.desired->revocations_sequence = 3;
  coordinator.desired->attempt = 1;  // a new ETag: the announcement is read
  BOOST_TEST(run_until(rt, [&] { return coordinator.revocation_fetches > fetches; }));
  BOOST_TEST(rt.driver().state().revocations->sequence == 2u);
}

// A certificate valid for 3 h is renewed at 2 h; the coordinator is down from 1 h 50 to 2 h 30, so the
// renewal backs off (the old identity untouched) and happens soon after it is back; polls go on.
BOOST_AUTO_TEST_CASE(the_certificate_is_renewed_at_two_thirds_and_later_when_the_coordinator_was_down) {
  const auto w0 = std::chrono::floor<std::chrono::seconds>(time.wall_now());
  pki::init_authority((dir / "ca").string(), pki::key_type::p256, "test CA", false, std::chrono::days(30), w0);
  auto ca = pki::authority::load((dir / "ca/ca.crt").string(), (dir / "ca/ca.key").string());
  coordinator.ca = &ca;
  coordinator.desired.reset();
  const auto key = pki::generate_key(pki::key_type::p256);
  const auto first = ca.issue_client(*pki::read_csr(pki::make_csr(key, "web-01")), "web-01", pki::random_serial(), w0,
                                     w0 + 3h);
  { std::ofstream(dir / "identity.pem") << key << first << ca.chain_pem(); }
  const auto original = key + first + ca.chain_pem();
  cfg.enroll_token_file = (dir / "token").string();
  cfg.poll_interval = 30s;
  cfg.retry_interval = 1s;
  cfg.health_interval = 10min;
  io::identity_keeper keeper(cfg);
  BOOST_REQUIRE(keeper.load());
  const auto serial = keeper.current()->serial;
  auto& rt = agent(7, &keeper);

  BOOST_TEST(!run_until(rt, [&] { return !coordinator.renewed_at.empty(); }, 110min), "nothing before two thirds");
  coordinator.down = true;
  BOOST_TEST(!run_until(rt, [&] { return !coordinator.renewed_at.empty(); }, 40min));
  BOOST_TEST(rt.driver().metrics().certificate_renewal_failures > 0u);
  {
    std::ifstream in(dir / "identity.pem");
    std::string now((std::istreambuf_iterator<char>(in)), {});
    BOOST_TEST(now == original, "a failed renewal leaves the identity as it was");
  }
  BOOST_TEST(keeper.current()->serial == serial);
  coordinator.down = false;
  const auto polls = coordinator.polls;
  BOOST_TEST(run_until(rt, [&] { return !coordinator.renewed_at.empty(); }, 5min));
  // Signed; the agent installs it with real, durable writes: wait for those without moving test
  // time (done is when the agent has the new certificate, not when the coordinator was asked).
  for (int i = 0; i < 400 && rt.driver().metrics().certificate_renewals == 0; ++i) {
    if (ctx.stopped()) ctx.restart();
    ctx.run_one_for(50ms);
  }
  BOOST_TEST_REQUIRE(!coordinator.renewed_at.empty());
  BOOST_TEST((coordinator.renewed_at[0] >= protocol::timestamp(w0 + 150min)));
  BOOST_TEST((coordinator.renewed_at[0] < protocol::timestamp(w0 + 153min)), "soon after the coordinator is back");
  BOOST_TEST(keeper.current()->serial != serial);
  BOOST_TEST(coordinator.reloads == 1);
  BOOST_TEST(coordinator.polls > polls);
  BOOST_TEST(rt.driver().metrics().certificate_renewals == 1u);
  // The next renewal waits for two thirds of the new certificate.
  BOOST_TEST(!run_until(rt, [&] { return coordinator.renewed_at.size() > 1; }, 110min));
  BOOST_TEST(run_until(rt, [&] { return coordinator.renewed_at.size() > 1; }, 15min));
  const auto text = io::render_metrics(rt);
  BOOST_TEST(text.find("nixfleet_agent_certificate_days_left") != std::string::npos);
  BOOST_TEST(text.find("nixfleet_agent_certificate_renewal_failures_total") != std::string::npos);
  // The keeper is this test's: the agent (and a renewal it may still be writing) stops before it goes.
  stop();
}

BOOST_AUTO_TEST_SUITE_END()
