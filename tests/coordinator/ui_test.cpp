// The dashboard's listener over real HTTP: its files and their policy, sign-in to a session,
// CSRF and origin checks, roles, session ends, the fleet page, and the live-update stream.
#include "test_client.hpp"

#include "nixfleet/protocol/codec.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>

using namespace nixfleet;
using namespace nixfleet::test;
namespace fs = std::filesystem;
namespace json = boost::json;
using http::verb;
using namespace std::chrono_literals;

namespace {

std::string report_body(std::uint64_t seq, const std::string& kind, const std::string& current) {
  json::object r{{"seq", seq},
                 {"at", "2026-11-25T10:00:00.000Z"},
                 {"kind", kind},
                 {"current_path", current},
                 {"agent_version", "test"},
                 {"uptime_s", 5}};
  return json::serialize(json::object{{"reports", json::array{r}}});
}

struct session {
  std::string cookie;  // "name=value", as a browser sends it back
  std::string csrf;
  std::string set_cookie;
};

struct ui_fixture {
  fs::path dir = temp_dir("ui");
  std::string db = (dir / "db.sqlite").string();
  std::string admin, deployer, reader;
  std::optional<running_coordinator> c;
  asio::ip::tcp::endpoint ui;

  ui_fixture() {
    admin = coordinator::io::create_key(db, "alice", protocol::role::admin, "test");
    deployer = coordinator::io::create_key(db, "bob", protocol::role::deploy, "test");
    reader = coordinator::io::create_key(db, "carol", protocol::role::readonly, "test");
  }
  ~ui_fixture() {
    c.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void start(std::function<void(coordinator::io::service_options&)> tweak = {}) {
    coordinator::io::service_options o;
    o.db_path = db;
    o.insecure_http = true;
    o.reconcile_interval = std::chrono::hours(1);
    o.reconcile_promptly = false;
    server_options u;
    u.listen = {asio::ip::make_address("127.0.0.1"), 0};
    o.ui = u;
    if (tweak) tweak(o);
    c.emplace(std::move(o));
    ui = *c->service().ui_endpoint();
  }
  reply get(const std::string& target, const std::string& cookie = {}, std::map<std::string, std::string> h = {}) {
    if (!cookie.empty()) h["Cookie"] = cookie;
    return send(ui, {verb::get, target, {}, std::move(h)});
  }
  reply post(const std::string& target, const std::string& body, const session& s, bool with_csrf = true,
             std::map<std::string, std::string> h = {}) {
    if (!s.cookie.empty()) h["Cookie"] = s.cookie;
    if (with_csrf) h["X-CSRF-Token"] = s.csrf;
    h["Content-Type"] = "application/json";
    return send(ui, {verb::post, target, body, std::move(h)});
  }
  session sign_in(const std::string& key) {
    auto r = send(ui, {verb::post, "/ui/api/session", json::serialize(json::object{{"key", key}}), {}});
    BOOST_REQUIRE_EQUAL(r.status, 200u);
    session s;
    s.set_cookie = r.headers["Set-Cookie"];
    s.cookie = s.set_cookie.substr(0, s.set_cookie.find(';'));
    s.csrf = std::string(r.json().at("csrf").as_string());
    return s;
  }
  void report(const std::string& machine, std::uint64_t seq, const std::string& kind, const std::string& current) {
    auto r = send(c->endpoint(), {verb::post, "/api/v1/machines/" + machine + "/reports", report_body(seq, kind, current), {}});
    BOOST_REQUIRE_EQUAL(r.status, 200u);
  }
};

// A live-update stream, read as it comes.
struct stream_reader {
  asio::io_context ctx;
  beast::tcp_stream s{ctx};
  std::string seen;

  stream_reader(const asio::ip::tcp::endpoint& ep, const std::string& cookie) {
    s.connect(ep);
    std::string req = "GET /ui/api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + cookie + "\r\n\r\n";
    asio::write(s, asio::buffer(req));
  }
  // Reads until `text` has been seen (after what was consumed) or `within` passed.
  bool wait_for(const std::string& text, std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (seen.find(text) == std::string::npos) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= 0s) return false;
      s.expires_after(left);
      std::array<char, 4096> buf;
      boost::system::error_code ec;
      auto n = s.read_some(asio::buffer(buf), ec);
      if (ec) return seen.find(text) != std::string::npos;
      seen.append(buf.data(), n);
    }
    return true;
  }
  void consume() { seen.clear(); }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(dashboard, ui_fixture)

BOOST_AUTO_TEST_CASE(the_dashboard_is_served_from_its_own_listener_under_a_strict_policy) {
  start();
  auto page = get("/ui/");
  BOOST_TEST(page.status == 200u);
  BOOST_TEST(page.headers["Content-Type"].starts_with("text/html"));
  const auto& csp = page.headers["Content-Security-Policy"];
  BOOST_TEST(csp.find("default-src 'none'") != std::string::npos);
  BOOST_TEST(csp.find("script-src 'self'") != std::string::npos);
  BOOST_TEST(csp.find("frame-ancestors 'none'") != std::string::npos);
  BOOST_TEST(csp.find("unsafe") == std::string::npos);
  BOOST_TEST(page.headers["X-Content-Type-Options"] == "nosniff");
  BOOST_TEST(page.headers["X-Frame-Options"] == "DENY");
  // No inline script or style: every <script> has a src, and nothing carries a style attribute.
  for (std::size_t at = page.body.find("<script"); at != std::string::npos; at = page.body.find("<script", at + 1)) {
    const auto tag = page.body.substr(at, page.body.find('>', at) - at);
    BOOST_TEST(tag.find("src=\"/ui/assets/") != std::string::npos);
    BOOST_TEST(page.body.substr(page.body.find('>', at) + 1, 9) == "</script>");
  }
  BOOST_TEST(page.body.find("style=") == std::string::npos);
  BOOST_TEST(page.body.find("http://") == std::string::npos);   // no CDN, no external fonts
  BOOST_TEST(page.body.find("https://") == std::string::npos);
  // Any page path gets the shell; the script routes it.
  BOOST_TEST(get("/ui/rollouts/ro-1").body == page.body);

  auto js = get("/ui/assets/app.js");
  BOOST_TEST(js.status == 200u);
  BOOST_TEST(js.headers["Content-Type"].starts_with("text/javascript"));
  BOOST_TEST(js.body.find("innerHTML") == std::string::npos);  // text only: host data never becomes markup
  BOOST_TEST(js.body.find("https://") == std::string::npos);
  const auto etag = js.headers["ETag"];
  BOOST_TEST(!etag.empty());
  BOOST_TEST(get("/ui/assets/app.js", {}, {{"If-None-Match", etag}}).status == 304u);
  BOOST_TEST(get("/ui/assets/app.css").headers["Content-Type"].starts_with("text/css"));
  BOOST_TEST(get("/ui/assets/nothing.js").status == 404u);
  BOOST_TEST(get("/ui/assets/../app.js").status == 404u);
  BOOST_TEST(get("/").status == 303u);

  // The agents' listener has no dashboard, and the dashboard's has no agent or unauthenticated route.
  BOOST_TEST(send(c->endpoint(), {verb::get, "/ui/", {}, {}}).status == 404u);
  BOOST_TEST(get("/api/v1/machines").status == 404u);
  auto s = sign_in(admin);
  BOOST_TEST(get("/ui/api/v1/machines/web-1/desired", s.cookie).status == 404u);
  BOOST_TEST(post("/ui/api/v1/enroll", "{}", s).status == 404u);
  BOOST_TEST(get("/ui/api/v1/healthz", s.cookie).status == 404u);
}

BOOST_AUTO_TEST_CASE(sign_in_gives_a_strict_session_cookie_and_sign_out_ends_it) {
  start();
  BOOST_TEST(send(ui, {verb::post, "/ui/api/session", R"({"key":"nfk_)" + std::string(64, 'a') + "\"}", {}}).status == 401u);
  BOOST_TEST(send(ui, {verb::post, "/ui/api/session", R"({"key":"nope"})", {}}).status == 401u);
  BOOST_TEST(send(ui, {verb::post, "/ui/api/session", "not json", {}}).status == 400u);
  BOOST_TEST(get("/ui/api/session").status == 401u);
  BOOST_TEST(get("/ui/api/v1/machines").status == 401u);

  auto s = sign_in(deployer);
  BOOST_TEST(s.cookie.starts_with("__Host-nixfleet-session="));
  for (const char* attr : {"; HttpOnly", "; Secure", "; SameSite=Strict", "; Path=/", "; Max-Age=28800"})
    BOOST_TEST(s.set_cookie.find(attr) != std::string::npos, attr);
  BOOST_TEST(s.set_cookie.find("Domain") == std::string::npos);
  auto who = get("/ui/api/session", s.cookie);
  BOOST_TEST(who.status == 200u);
  BOOST_TEST(who.json().at("name").as_string() == "bob");
  BOOST_TEST(who.json().at("role").as_string() == "deploy");
  BOOST_TEST(who.json().at("csrf").as_string() == s.csrf);
  BOOST_TEST(get("/ui/api/v1/machines", s.cookie).status == 200u);
  // A cookie not issued here is no session.
  BOOST_TEST(get("/ui/api/v1/machines", "__Host-nixfleet-session=" + std::string(64, 'f')).status == 401u);
  // The Authorization header means nothing on this listener: the session is the credential.
  BOOST_TEST(get("/ui/api/v1/machines", {}, {{"Authorization", "Bearer " + admin}}).status == 401u);

  BOOST_TEST(post("/ui/api/signout", "", s, false).status == 403u);
  auto out = post("/ui/api/signout", "", s);
  BOOST_TEST(out.status == 204u);
  BOOST_TEST(out.headers["Set-Cookie"].find("Max-Age=0") != std::string::npos);
  BOOST_TEST(get("/ui/api/session", s.cookie).status == 401u);
  BOOST_TEST(get("/ui/api/v1/machines", s.cookie).status == 401u);
}

BOOST_AUTO_TEST_CASE(a_forged_change_is_refused_and_the_key_s_role_decides) {
  start();
  auto bob = sign_in(deployer);
  auto carol = sign_in(reader);
  const std::string pause = "/ui/api/v1/rollouts/ro-1/pause";
  // No token, a wrong token, or another site's page: refused before anything is looked at.
  BOOST_TEST(post(pause, "{}", bob, false).status == 403u);
  BOOST_TEST(post(pause, "{}", bob, false).json().at("error").as_string() == "csrf");
  session wrong = bob;
  wrong.csrf = std::string(64, '0');
  BOOST_TEST(post(pause, "{}", wrong).status == 403u);
  BOOST_TEST(post(pause, "{}", carol).status == 403u);  // carol's token is not bob's session's
  session carol_with_bobs = carol;
  carol_with_bobs.csrf = bob.csrf;
  BOOST_TEST(post(pause, "{}", carol_with_bobs).json().at("error").as_string() == "csrf");
  BOOST_TEST(post(pause, "{}", bob, true, {{"Origin", "https://evil.example"}}).status == 403u);
  // With its token and from its own origin, it reaches the route (no such rollout here).
  BOOST_TEST(post(pause, "{}", bob, true, {{"Origin", "http://127.0.0.1"}}).status == 404u);
  BOOST_TEST(post(pause, "{}", bob).status == 404u);
  // A readonly key's session may look but not act, whatever the page shows.
  auto refused = post(pause, "{}", carol);
  BOOST_TEST(refused.status == 403u);
  BOOST_TEST(refused.json().at("error").as_string() == "forbidden");
  BOOST_TEST(get("/ui/api/v1/rollouts", carol.cookie).status == 200u);
  BOOST_TEST(get("/ui/api/v1/keys", bob.cookie).status == 403u);  // admin only
  // Signing in from another site's page is refused too.
  auto foreign = send(ui, {verb::post, "/ui/api/session", json::serialize(json::object{{"key", deployer}}),
                           {{"Origin", "https://evil.example"}}});
  BOOST_TEST(foreign.status == 403u);
  BOOST_TEST(foreign.headers.count("Set-Cookie") == 0u);
}

BOOST_AUTO_TEST_CASE(a_session_ends_when_idle_or_when_its_key_is_deleted) {
  start([](auto& o) { o.ui_session_idle = 400ms; });
  auto idle = sign_in(reader);
  BOOST_TEST(get("/ui/api/session", idle.cookie).status == 200u);
  std::this_thread::sleep_for(600ms);
  BOOST_TEST(get("/ui/api/session", idle.cookie).status == 401u);

  auto bob = sign_in(deployer);
  auto alice = sign_in(admin);
  auto keys = get("/ui/api/v1/keys", alice.cookie).json().as_array();
  std::string bob_id;
  for (const auto& k : keys)
    if (k.at("name").as_string() == "bob") bob_id = std::string(k.at("id").as_string());
  BOOST_REQUIRE(!bob_id.empty());
  auto del = send(ui, {verb::delete_, "/ui/api/v1/keys/" + bob_id, {}, {{"Cookie", alice.cookie}, {"X-CSRF-Token", alice.csrf}}});
  BOOST_TEST(del.status == 204u);
  BOOST_TEST(get("/ui/api/session", bob.cookie).status == 401u);
  BOOST_TEST(get("/ui/api/session", alice.cookie).status == 200u);
}

BOOST_AUTO_TEST_CASE(sessions_are_bounded_and_the_one_nearest_its_end_goes_first) {
  start([](auto& o) { o.ui_max_sessions = 3; });
  std::vector<session> held;
  for (int i = 0; i < 5; ++i) {
    held.push_back(sign_in(reader));
    std::this_thread::sleep_for(5ms);  // each ends a little after the one before
  }
  BOOST_TEST(get("/ui/api/session", held[0].cookie).status == 401u);
  BOOST_TEST(get("/ui/api/session", held[1].cookie).status == 401u);
  for (int i = 2; i < 5; ++i) BOOST_TEST(get("/ui/api/session", held[static_cast<std::size_t>(i)].cookie).status == 200u);
  // A session with a live stream is not the one that makes room.
  stream_reader live(ui, held[2].cookie);
  BOOST_REQUIRE(live.wait_for("event: change", 2s));
  auto next = sign_in(reader);
  BOOST_TEST(get("/ui/api/session", held[2].cookie).status == 200u);
  BOOST_TEST(get("/ui/api/session", held[3].cookie).status == 401u);
  BOOST_TEST(get("/ui/api/session", next.cookie).status == 200u);
}

BOOST_AUTO_TEST_CASE(the_fleet_page_counts_the_whole_fleet_and_pages_the_filtered_part) {
  start();
  for (int i = 0; i < 7; ++i) report("web-" + std::to_string(i), 1, "heartbeat", i % 2 ? P1 : P2);
  report("db-1", 1, "heartbeat", P1);
  auto s = sign_in(reader);
  auto all = get("/ui/api/fleet?limit=3", s.cookie);
  BOOST_REQUIRE_EQUAL(all.status, 200u);
  auto j = all.json().as_object();
  BOOST_TEST(j.at("total").as_int64() == 8);
  BOOST_TEST(j.at("matched").as_int64() == 8);
  BOOST_TEST(j.at("items").as_array().size() == 3u);
  BOOST_TEST(j.at("items").as_array()[0].at("id").as_string() == "db-1");  // in id order
  BOOST_TEST(j.at("sync").at("unmanaged").as_int64() == 8);
  BOOST_TEST(j.at("lifecycle").at("active").as_int64() == 8);
  auto second = get("/ui/api/fleet?limit=3&offset=3", s.cookie).json();
  BOOST_TEST(second.at("items").as_array()[0].at("id").as_string() == "web-2");
  auto found = get("/ui/api/fleet?q=web-&limit=50", s.cookie).json();
  BOOST_TEST(found.at("matched").as_int64() == 7);
  BOOST_TEST(found.at("total").as_int64() == 8);  // counts stay the fleet's
  auto by_path = get("/ui/api/fleet?q=nixos-system-b", s.cookie).json();
  BOOST_TEST(by_path.at("matched").as_int64() == 4);
  BOOST_TEST(get("/ui/api/fleet?sync=in_sync", s.cookie).json().at("matched").as_int64() == 0);
  BOOST_TEST(get("/ui/api/fleet?stale=1&stale_after=3600", s.cookie).json().at("matched").as_int64() == 0);
  for (const char* bad : {"limit=0", "limit=501", "offset=x", "sync=sideways", "state=gone", "health=meh"})
    BOOST_TEST(get(std::string("/ui/api/fleet?") + bad, s.cookie).status == 400u, bad);
  BOOST_TEST(get("/ui/api/fleet").status == 401u);
}

BOOST_AUTO_TEST_CASE(the_event_stream_tells_of_changes_at_once_is_bounded_and_ends_with_the_session) {
  start([](auto& o) {
    o.ui_streams_per_session = 2;
    o.metrics_listen = asio::ip::tcp::endpoint{asio::ip::make_address("127.0.0.1"), 0};
  });
  auto s = sign_in(reader);
  stream_reader a(ui, s.cookie);
  BOOST_REQUIRE(a.wait_for("\"machines\":0", 2s));
  BOOST_TEST(a.seen.find("text/event-stream") != std::string::npos);
  a.consume();
  const auto t0 = std::chrono::steady_clock::now();
  report("web-1", 1, "heartbeat", P1);
  BOOST_TEST(a.wait_for("\"machines\":1", 2s));
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 1s));
  // Many changes in a burst reach a stream as a few events, not one each.
  a.consume();
  for (int i = 2; i < 30; ++i) report("web-1", static_cast<std::uint64_t>(i), "heartbeat", P1);
  BOOST_TEST(a.wait_for("\"machines\":29", 3s));
  std::size_t events = 0;
  for (auto at = a.seen.find("event: change"); at != std::string::npos; at = a.seen.find("event: change", at + 1)) ++events;
  BOOST_TEST(events < 28u);

  stream_reader b(ui, s.cookie);
  BOOST_REQUIRE(b.wait_for("event: change", 2s));
  auto third = get("/ui/api/events", s.cookie);
  BOOST_TEST(third.status == 429u);
  auto metrics = send(*c->service().metrics_endpoint(), {verb::get, "/metrics", {}, {}}).body;
  BOOST_TEST(metrics.find("nixfleet_coordinator_ui_streams 2\n") != std::string::npos);
  BOOST_TEST(metrics.find("nixfleet_coordinator_ui_sessions 1\n") != std::string::npos);
  // Signing out ends the session's streams.
  a.consume();
  BOOST_TEST(post("/ui/api/signout", "", s).status == 204u);
  BOOST_TEST(a.wait_for("event: signed_out", 2s));
}

BOOST_AUTO_TEST_SUITE_END()
