// The SQLite store: migrations, change sets isolated in savepoints, the audit chain across failed
// sets and other writers, report retention, and everything loaded back as written.
#include "test_client.hpp"

#include "nixfleet/coordinator/io/storage.hpp"

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <sqlite3.h>

using namespace nixfleet;
using namespace nixfleet::coordinator::io;
namespace fs = std::filesystem;

namespace {

using test::P1;

protocol::timestamp at(std::int64_t ms) { return protocol::timestamp(std::chrono::milliseconds(ms)); }

struct store_fixture {
  fs::path dir = nixfleet::test::temp_dir("store");
  std::string path = (dir / "db.sqlite").string();
  ~store_fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

protocol::release release(const std::string& id) {
  protocol::release r;
  r.id = id;
  r.created_at = at(1000);
  r.created_by = "alice";
  r.entries.push_back({"web-1", P1, std::nullopt, {"web"}, std::nullopt});
  return r;
}

// Built out of line: GCC 12 warns (wrongly) about the default wave list when this is inlined.
[[gnu::noinline]] protocol::rollout_detail rollout_head() {
  protocol::rollout_detail r;
  r.id = "ro-1";
  r.spec.release_id = "r1";
  return r;
}

audit_entry event(const std::string& action) { return {at(5000), "alice", action, "r1", boost::json::object{{"n", 1}}}; }

}  // namespace

BOOST_FIXTURE_TEST_SUITE(coordinator_storage, store_fixture)

BOOST_AUTO_TEST_CASE(migrations_run_once_and_a_newer_schema_is_refused) {
  { auto s = open_sqlite(path); }
  { auto s = open_sqlite(path); }
  sqlite3* raw = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(raw, "SELECT count(*) FROM schema_version", -1, &st, nullptr);
  sqlite3_step(st);
  BOOST_TEST(sqlite3_column_int(st, 0) == 6, "each of the six migrations once");
  sqlite3_finalize(st);
  sqlite3_exec(raw, "INSERT INTO schema_version (version) VALUES (999)", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  BOOST_CHECK_THROW(open_sqlite(path), storage_error);
}

BOOST_AUTO_TEST_CASE(migration_3_numbers_the_waves_of_a_stored_rollout_from_1) {
  {
    auto s = open_sqlite(path);
    rollout_write w;
    w.head = rollout_head();
    w.head.spec.target.hosts = {"web-1"};
    w.head.current_wave = 2;
    w.head.waves.resize(2);
    w.head.waves[0].index = 1;
    w.head.waves[1].index = 2;
    protocol::rollout_host h;
    h.hostname = "web-1";
    h.wave = 2;
    w.hosts.emplace_back(0, h);
    w.events.push_back({1, at(2000), "wave_started", std::nullopt, 2u, "1 hosts"});
    w.events.push_back({2, at(2000), "rollout_paused", std::nullopt, std::nullopt, "paused"});
    change_set c;
    c.releases.push_back(release("r1"));
    c.rollouts.push_back(w);
    const auto err = s->commit({&c}).at(0);
    BOOST_TEST_REQUIRE(err.empty(), err);
  }
  // As a coordinator before migration 3 stored it: waves from 0.
  sqlite3* raw = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  for (const char* sql : {
           "UPDATE rollouts SET body = json_set(body, '$.current_wave', 1, '$.waves[0].index', 0, '$.waves[1].index', 1)",
           "UPDATE rollout_hosts SET body = json_set(body, '$.wave', 1)",
           "UPDATE rollout_events SET body = json_set(body, '$.wave', 1) WHERE json_type(body, '$.wave') = 'integer'",
           "DROP TABLE audit_checkpoints", "DROP TABLE enroll_tokens", "DROP TABLE certificates",
           "DROP TABLE webhook_deliveries", "DROP TABLE webhooks",
           "DELETE FROM schema_version WHERE version >= 3"})
    BOOST_TEST_REQUIRE(sqlite3_exec(raw, sql, nullptr, nullptr, nullptr) == SQLITE_OK, sql);
  sqlite3_close(raw);

  auto loaded = open_sqlite(path)->load();
  BOOST_REQUIRE(loaded.rollouts.size() == 1u);
  const auto& r = loaded.rollouts[0];
  BOOST_TEST(r.current_wave == 2u);
  BOOST_REQUIRE(r.waves.size() == 2u);
  BOOST_TEST(r.waves[0].index == 1u);
  BOOST_TEST(r.waves[1].index == 2u);
  BOOST_REQUIRE(r.hosts.size() == 1u);
  BOOST_TEST(r.hosts[0].wave == 2u);
  BOOST_REQUIRE(r.events.size() == 2u);
  BOOST_TEST(r.events[0].wave.value_or(0) == 2u);
  BOOST_TEST(!r.events[1].wave.has_value(), "an event without a wave keeps none");
}

BOOST_AUTO_TEST_CASE(a_failing_change_set_does_not_take_the_others_down_nor_break_the_chain) {
  auto s = open_sqlite(path);
  change_set a, dup, b;
  a.releases.push_back(release("r1"));
  a.audit.push_back(event("release.created"));
  dup.releases.push_back(release("r1"));  // primary key taken: this set fails
  dup.audit.push_back(event("release.created"));
  b.releases.push_back(release("r2"));
  b.audit.push_back(event("release.created"));
  b.audit.push_back(event("release.noted"));
  auto results = s->commit({&a, &dup, &b});
  BOOST_TEST(results[0].empty());
  BOOST_TEST(!results[1].empty());
  BOOST_TEST(results[2].empty());
  auto loaded = s->load();
  BOOST_TEST(loaded.releases.size() == 2u);
  auto v = s->verify_audit();
  BOOST_TEST(v.ok, v.reason.value_or(""));
  BOOST_TEST(v.rows == 3u);
  auto rows = s->audit({});
  BOOST_TEST_REQUIRE(rows.size() == 3u);
  BOOST_TEST(rows[0].prev_hash == std::string(64, '0'));
  BOOST_TEST(rows[1].prev_hash == rows[0].hash);
  BOOST_TEST(rows[2].seq == 3u);
  BOOST_TEST(rows[2].hash == audit_row_hash(rows[2]));

  // Another writer (`keys create` on the host) appends meanwhile; the chain stays whole.
  {
    auto other = open_sqlite(path);
    change_set k;
    k.audit.push_back(event("key.created"));
    BOOST_TEST(other->commit({&k})[0].empty());
  }
  change_set c;
  c.audit.push_back(event("release.deleted"));
  BOOST_TEST(s->commit({&c})[0].empty());
  v = s->verify_audit();
  BOOST_TEST(v.ok, v.reason.value_or(""));
  BOOST_TEST(v.rows == 5u);
}

BOOST_AUTO_TEST_CASE(a_removed_audit_row_is_named) {
  auto s = open_sqlite(path);
  change_set c;
  for (int i = 0; i < 5; ++i) c.audit.push_back(event("a" + std::to_string(i)));
  s->commit({&c});
  sqlite3* raw = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &raw) == SQLITE_OK);
  sqlite3_exec(raw, "DELETE FROM audit WHERE seq = 3", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  auto v = open_sqlite(path)->verify_audit();
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 4u));
}

BOOST_AUTO_TEST_CASE(reports_are_kept_once_and_pruned_after_retention) {
  auto s = open_sqlite(path);
  change_set c;
  for (std::uint64_t seq = 1; seq <= 4; ++seq) {
    protocol::report r;
    r.seq = seq;
    r.at = at(static_cast<std::int64_t>(seq) * 1000);
    r.agent_version = "t";
    c.reports.push_back({"web-1", at(static_cast<std::int64_t>(seq) * 1000), r});
  }
  s->commit({&c});
  s->commit({&c});  // a replay
  BOOST_TEST(s->report_count() == 4u);
  BOOST_TEST(s->prune_reports(at(2500), std::uint64_t{1} << 30) == 2u);
  BOOST_TEST(s->report_count() == 2u);
  BOOST_TEST(s->reports("web-1", 10).front().body.seq == 4u);
}

BOOST_AUTO_TEST_CASE(reports_are_pruned_by_size_oldest_first) {
  auto s = open_sqlite(path);
  change_set c;
  for (std::uint64_t seq = 1; seq <= 3000; ++seq) {
    protocol::report r;
    r.seq = seq;
    r.at = at(static_cast<std::int64_t>(seq));
    r.agent_version = "t";
    r.message = std::string(200, 'x');
    c.reports.push_back({seq % 2 ? "web-1" : "web-2", at(static_cast<std::int64_t>(seq)), r});
  }
  BOOST_TEST(s->commit({&c})[0].empty());
  // A few hundred bytes a body; a cap of 300 KB keeps the newest few hundred, and no more.
  const auto pruned = s->prune_reports(at(0), 300'000);
  BOOST_TEST(pruned >= 2000u);
  BOOST_TEST(s->report_count() == 3000u - pruned);
  BOOST_TEST_REQUIRE(s->report_count() > 100u);
  // The newest are what is left.
  BOOST_TEST(s->reports("web-2", 1).front().body.seq == 3000u);
  BOOST_TEST(s->reports("web-1", 1).front().body.seq == 2999u);
}

BOOST_AUTO_TEST_CASE(machines_rollouts_and_keys_load_back_as_written) {
  machine_record m;
  m.id = "web-1";
  m.tags = {"web", "eu"};
  m.state = protocol::lifecycle::maintenance;
  m.attempt = 3;
  m.current_path = P1;
  m.last_seen = at(7000);
  m.health = protocol::health_report{true, {{"nginx", "systemd_unit", protocol::probe_status::pass, 12, std::nullopt}}};
  set_health_path(m, P1);
  BOOST_TEST(m.health_on_current, "the path health was measured on is the current one, kept once");
  m.last_event = lifecycle_event{protocol::report_kind::confirmed, P1, std::string("ok"), at(6000)};
  m.history = {{P1, at(6000)}};
  m.acked_seq = 42;
  protocol::desired_state d;
  d.machine_id = "web-1";
  d.release_id = "r1";
  d.store_path = P1;
  d.attempt = 3;
  d.release_created_at = at(1000);
  m.desired = d;

  auto r = rollout_head();
  r.spec.target.hosts = {"web-1"};
  r.created_at = at(2000);
  r.created_by = "alice";
  r.waves = {{0, protocol::wave_status::active, {"web-1"}, at(2000), std::nullopt, std::nullopt, 0}};
  protocol::rollout_host h;
  h.hostname = "web-1";
  h.target_path = P1;
  h.state = protocol::host_state::dispatched;
  h.attempt = 3;
  h.dispatched_at = at(2000);
  rollout_write w;
  w.head = r;
  w.hosts = {{0, h}};
  w.events = {{1, at(2000), "host_dispatched", std::string("web-1"), 0u, "desired state set"}};

  key_record k{{"key-1", "alice", protocol::role::admin, at(100), std::nullopt}, std::string(64, 'f')};
  {
    auto s = open_sqlite(path);
    change_set c;
    c.releases.push_back(release("r1"));
    c.machines.push_back(m);
    c.rollouts.push_back(w);
    c.keys.push_back(k);
    BOOST_TEST(s->commit({&c})[0].empty());
  }
  auto loaded = open_sqlite(path)->load();
  BOOST_TEST_REQUIRE(loaded.machines.size() == 1u);
  BOOST_TEST((loaded.machines[0] == m));
  BOOST_TEST_REQUIRE(loaded.rollouts.size() == 1u);
  BOOST_TEST_REQUIRE(loaded.rollouts[0].hosts.size() == 1u);
  BOOST_TEST((loaded.rollouts[0].hosts[0] == h));
  BOOST_TEST(loaded.rollouts[0].events.size() == 1u);
  BOOST_TEST((loaded.rollouts[0].waves == r.waves));
  BOOST_TEST_REQUIRE(loaded.keys.size() == 1u);
  BOOST_TEST(loaded.keys[0].hash == k.hash);
  BOOST_TEST(open_sqlite(path)->find_key(k.hash).has_value());
  BOOST_TEST(!open_sqlite(path)->find_key(std::string(64, 'e')).has_value());
}

BOOST_AUTO_TEST_CASE(the_database_and_its_wal_are_private_to_the_coordinator) {
  const auto old = ::umask(022);
  {
    auto s = open_sqlite(path);
    change_set c;
    c.audit.push_back(event("key.created"));
    BOOST_TEST(s->commit({&c})[0].empty());
    for (const char* suffix : {"", "-wal", "-shm"}) {
      struct stat st {};
      BOOST_REQUIRE(::stat((path + suffix).c_str(), &st) == 0);
      BOOST_TEST((st.st_mode & 0777) == 0600u, suffix);
    }
  }
  // A database left readable by others is tightened when it is opened again.
  ::chmod(path.c_str(), 0644);
  { auto s = open_sqlite(path); }
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  ::umask(old);
}

// The attack: a copy of the database, two rows deleted, the rest re-chained so that every hash
// matches again. The chain alone calls that intact; the coordinator's checkpoints do not.
BOOST_AUTO_TEST_CASE(a_copy_with_rows_deleted_and_rechained_fails_verify_at_the_checkpoint) {
  const auto key = protocol::generate_secret_key("coordinator-audit-1");
  {
    auto s = open_sqlite(path);
    for (int round = 0; round < 3; ++round) {
      change_set c;
      for (int i = 0; i < 4; ++i) c.audit.push_back(event("machine.updated." + std::to_string(round * 4 + i + 1)));
      BOOST_TEST(s->commit({&c})[0].empty());
      auto made = s->checkpoint_audit(key, at(10'000 + round));
      BOOST_TEST_REQUIRE(made.has_value());
      BOOST_TEST(made->seq == 4u * (round + 1));
    }
    BOOST_TEST(!s->checkpoint_audit(key, at(20'000)).has_value(), "nothing new to anchor");
    auto v = s->verify_audit(protocol::to_public_key(key));
    BOOST_TEST(v.ok, v.reason.value_or(""));
    BOOST_TEST(v.checkpoints == 3u);
    BOOST_TEST((v.anchored_seq == 12u));
  }
  const auto copy = (dir / "copy.sqlite").string();
  fs::copy_file(path, copy);
  {
    sqlite3* raw = nullptr;
    BOOST_REQUIRE(sqlite3_open(copy.c_str(), &raw) == SQLITE_OK);
    BOOST_REQUIRE(sqlite3_exec(raw, "DELETE FROM audit WHERE seq IN (6, 7)", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(raw);
    // Re-chain what is left, as an attacker with the file and this code would.
    auto s = open_sqlite(copy);
    auto rows = s->audit({.limit = 1000});
    sqlite3* db = nullptr;
    BOOST_REQUIRE(sqlite3_open(copy.c_str(), &db) == SQLITE_OK);
    sqlite3_exec(db, "DELETE FROM audit", nullptr, nullptr, nullptr);
    std::string prev(64, '0');
    for (std::size_t i = 0; i < rows.size(); ++i) {
      rows[i].seq = i + 1;
      rows[i].prev_hash = prev;
      rows[i].hash = audit_row_hash(rows[i]);
      prev = rows[i].hash;
      sqlite3_stmt* st = nullptr;
      sqlite3_prepare_v2(db, "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)", -1, &st, nullptr);
      sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(rows[i].seq));
      sqlite3_bind_int64(st, 2, std::chrono::duration_cast<std::chrono::milliseconds>(rows[i].at.time_since_epoch()).count());
      sqlite3_bind_text(st, 3, rows[i].actor.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 4, rows[i].action.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 5, rows[i].target.c_str(), -1, SQLITE_TRANSIENT);
      const auto detail = boost::json::serialize(rows[i].detail);
      sqlite3_bind_text(st, 6, detail.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 7, rows[i].prev_hash.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 8, rows[i].hash.c_str(), -1, SQLITE_TRANSIENT);
      BOOST_REQUIRE(sqlite3_step(st) == SQLITE_DONE);
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
  }
  auto tampered = open_sqlite(copy);
  auto v = tampered->verify_audit(protocol::to_public_key(key));
  BOOST_TEST(!v.ok);
  BOOST_TEST((v.bad_seq == 8u), "the checkpoint of row 8 no longer matches");
  BOOST_TEST(v.reason.value_or("").find("rewritten") != std::string::npos, v.reason.value_or(""));
  // And the checkpoints deleted as well: not anchored.
  {
    sqlite3* raw = nullptr;
    BOOST_REQUIRE(sqlite3_open(copy.c_str(), &raw) == SQLITE_OK);
    sqlite3_exec(raw, "DELETE FROM audit_checkpoints", nullptr, nullptr, nullptr);
    sqlite3_close(raw);
  }
  auto bare = open_sqlite(copy)->verify_audit(protocol::to_public_key(key));
  BOOST_TEST(!bare.ok);
  BOOST_TEST(bare.reason.value_or("").find("not anchored") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
