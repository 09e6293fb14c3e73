// SQLite store: WAL journal, foreign keys, numbered migrations, one prepared statement per query.
#include "nixfleet/coordinator/io/storage.hpp"

#include "nixfleet/protocol/canonical_json.hpp"
#include "nixfleet/protocol/codec.hpp"
#include "nixfleet/protocol/json_fields.hpp"
#include "nixfleet/protocol/signing.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <sqlite3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <optional>
#include <tuple>

namespace nixfleet::coordinator::io {

namespace json = boost::json;

namespace {

std::int64_t millis(timestamp t) { return t.time_since_epoch().count(); }
timestamp from_millis(std::int64_t ms) { return timestamp(std::chrono::milliseconds(ms)); }

template <class T>
T decode_or_throw(std::string_view text, std::string_view what) {
  auto v = protocol::parse<T>(text);
  if (!v) throw storage_error("corrupt " + std::string(what) + " row: " + v.error().what());
  return *v;
}

// Numbered migrations; each runs once, in order, in its own transaction.
constexpr const char* migrations[] = {
    R"sql(
CREATE TABLE machines (
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL
);
CREATE TABLE releases (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE rollouts (
  id TEXT PRIMARY KEY,
  release_id TEXT NOT NULL REFERENCES releases(id),
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE rollout_hosts (
  rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (rollout_id, idx)
);
CREATE TABLE rollout_events (
  rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (rollout_id, seq)
);
CREATE TABLE reports (
  machine_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (machine_id, seq)
);
CREATE INDEX reports_by_time ON reports (received_at);
CREATE TABLE audit (
  seq INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX audit_by_target ON audit (target);
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  body TEXT NOT NULL
);
)sql",
    // 2: the operator-signed revocation list (one row, replaced as a whole).
    R"sql(
CREATE TABLE revocations (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  sequence INTEGER NOT NULL,
  body TEXT NOT NULL
);
)sql",
    // 3: waves are numbered from 1 (they were stored from 0). The audit log keeps what it said.
    R"sql(
UPDATE rollouts SET body = json_set(body,
  '$.current_wave', json_extract(body, '$.current_wave') + 1,
  '$.waves', (SELECT json_group_array(json_set(value, '$.index', json_extract(value, '$.index') + 1))
              FROM json_each(rollouts.body, '$.waves')));
UPDATE rollout_hosts SET body = json_set(body, '$.wave', json_extract(body, '$.wave') + 1);
UPDATE rollout_events SET body = json_set(body, '$.wave', json_extract(body, '$.wave') + 1)
  WHERE json_type(body, '$.wave') = 'integer';
)sql",
    // 4: the coordinator's signed checkpoints of the audit chain head.
    R"sql(
CREATE TABLE audit_checkpoints (
  seq INTEGER PRIMARY KEY,
  body TEXT NOT NULL
);
)sql",
    // 5: enrollment tokens (their hashes) and the certificates the fleet CA issued (never a key).
    R"sql(
CREATE TABLE enroll_tokens (
  hash TEXT PRIMARY KEY,
  machine_id TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE certificates (
  serial TEXT PRIMARY KEY,
  machine_id TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX certificates_by_machine ON certificates (machine_id);
)sql",
    // 6: webhooks (their secrets too: the file is private to the coordinator) and the durable
    // queue of their deliveries; a delivery's id is what a receiver deduplicates on.
    R"sql(
CREATE TABLE webhooks (
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
  event TEXT NOT NULL,
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER,
  delivered_at INTEGER,
  last_status INTEGER,
  last_error TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook_id, id);
)sql",
};

class statement {
 public:
  statement(sqlite3* db, const char* sql, std::atomic<std::uint64_t>& ops) : db_(db), ops_(ops) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK)
      throw storage_error(std::string("prepare failed: ") + sqlite3_errmsg(db));
  }
  ~statement() { sqlite3_finalize(stmt_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  statement& bind(int i, std::string_view s) {
    check(sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT));
    return *this;
  }
  statement& bind(int i, std::int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  statement& bind_null(int i) {
    check(sqlite3_bind_null(stmt_, i));
    return *this;
  }

  // True while there is a row.
  bool step() {
    if (!started_) {
      ++ops_;
      started_ = true;
    }
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw storage_error(std::string("step failed: ") + sqlite3_errmsg(db_));
  }
  void run();
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    started_ = false;
  }

  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, col));
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) throw storage_error(std::string("bind failed: ") + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::atomic<std::uint64_t>& ops_;
  bool started_ = false;
};

// Resets a statement however the scope is left.
struct reset_on_exit {
  statement& s;
  ~reset_on_exit() { s.reset(); }
};

void statement::run() {
  reset_on_exit r{*this};
  while (step()) {
  }
}

// The database holds API key hashes and the whole record: private to the coordinator's user. SQLite
// gives its -wal and -shm files the database file's mode, so creating that one 0600 is enough; an
// existing database (or one left behind with looser bits) is tightened.
void make_private(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) return;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;  // sqlite3_open_v2 below says why, in its words
  ::close(fd);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const auto file = path + suffix;
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) ::chmod(file.c_str(), st.st_mode & 0700);
  }
}

class sqlite_storage final : public storage {
 public:
  explicit sqlite_storage(const std::string& path) {
    make_private(path);
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw storage_error("cannot open database " + path + ": " + msg);
    }
    try {
      sqlite3_busy_timeout(db_, 5000);
      exec("PRAGMA journal_mode=WAL");
      exec("PRAGMA synchronous=FULL");
      exec("PRAGMA foreign_keys=ON");
      migrate();
    } catch (...) {
      cache_.clear();
      sqlite3_close(db_);
      throw;
    }
  }
  ~sqlite_storage() override {
    cache_.clear();
    sqlite3_close(db_);
  }

  loaded_state load() override {
    loaded_state out;
    {
      auto& s = prepared("SELECT body FROM machines ORDER BY id");
      reset_on_exit r{s};
      while (s.step()) {
        boost::system::error_code ec;
        auto v = json::parse(s.text(0), ec);
        if (ec) throw storage_error("corrupt machine row");
        out.machines.push_back(machine_from_json(v));
      }
    }
    {
      auto& s = prepared("SELECT body FROM releases ORDER BY created_at, id");
      reset_on_exit r{s};
      while (s.step()) out.releases.push_back(decode_or_throw<protocol::release>(s.text(0), "release"));
    }
    {
      auto& s = prepared("SELECT body FROM revocations WHERE id = 1");
      reset_on_exit r{s};
      if (s.step()) out.revocations = decode_or_throw<protocol::revocation_list>(s.text(0), "revocation list");
    }
    {
      auto& s = prepared("SELECT body FROM rollouts ORDER BY created_at, id");
      reset_on_exit r{s};
      while (s.step()) out.rollouts.push_back(decode_or_throw<protocol::rollout_detail>(s.text(0), "rollout"));
    }
    for (auto& r : out.rollouts) {
      {
        auto& s = prepared("SELECT body FROM rollout_hosts WHERE rollout_id = ? ORDER BY idx");
        reset_on_exit g{s};
        s.bind(1, r.id);
        while (s.step()) r.hosts.push_back(decode_or_throw<protocol::rollout_host>(s.text(0), "rollout host"));
      }
      {
        auto& s = prepared("SELECT body FROM rollout_events WHERE rollout_id = ? ORDER BY seq");
        reset_on_exit g{s};
        s.bind(1, r.id);
        while (s.step()) r.events.push_back(decode_or_throw<protocol::rollout_event>(s.text(0), "rollout event"));
      }
    }
    out.keys = list_keys();
    {
      auto& s = prepared("SELECT body FROM enroll_tokens ORDER BY hash");
      reset_on_exit r{s};
      while (s.step()) out.tokens.push_back(token_from_json(parse_row(s.text(0), "enrollment token")));
    }
    {
      auto& s = prepared("SELECT body FROM certificates ORDER BY serial");
      reset_on_exit r{s};
      while (s.step()) out.certificates.push_back(certificate_from_json(parse_row(s.text(0), "certificate")));
    }
    {
      auto& s = prepared("SELECT body FROM webhooks ORDER BY id");
      reset_on_exit r{s};
      while (s.step()) out.webhooks.push_back(webhook_from_json(parse_row(s.text(0), "webhook")));
    }
    return out;
  }

  static json::value parse_row(const std::string& text, const char* what) {
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec) throw storage_error(std::string("corrupt ") + what + " row");
    return v;
  }

  std::vector<key_record> list_keys() override {
    std::vector<key_record> out;
    auto& s = prepared("SELECT hash, body FROM api_keys ORDER BY id");
    reset_on_exit r{s};
    while (s.step()) out.push_back({decode_or_throw<protocol::api_key_info>(s.text(1), "api key"), s.text(0)});
    return out;
  }

  std::vector<std::string> commit(const std::vector<const change_set*>& sets) override {
    std::vector<std::string> results(sets.size());
    exec("BEGIN IMMEDIATE");
    // Another process (`keys create`) may have appended to the audit chain: read its head under
    // the write lock.
    try {
      chain_head_ = head();
    } catch (const storage_error&) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    const auto head_before = chain_head_;
    try {
      for (std::size_t i = 0; i < sets.size(); ++i) {
        const auto saved_head = chain_head_;
        exec("SAVEPOINT change_set");
        try {
          apply(*sets[i]);
          exec("RELEASE change_set");
        } catch (const storage_error& e) {
          exec("ROLLBACK TO change_set");
          exec("RELEASE change_set");
          chain_head_ = saved_head;
          results[i] = e.what();
        }
      }
      exec("COMMIT");
    } catch (const storage_error& e) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      chain_head_ = head_before;
      for (auto& r : results)
        if (r.empty()) r = std::string("commit failed: ") + e.what();
    }
    return results;
  }

  std::vector<protocol::audit_event> audit(const audit_query& q) override {
    auto& s = prepared(
        "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit WHERE seq > ?1 "
        "AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR target = ?4) "
        "AND (?5 IS NULL OR at >= ?5) ORDER BY seq LIMIT ?6");
    reset_on_exit r{s};
    s.bind(1, static_cast<std::int64_t>(q.after_seq));
    q.actor ? s.bind(2, *q.actor) : s.bind_null(2);
    q.action ? s.bind(3, *q.action) : s.bind_null(3);
    q.target ? s.bind(4, *q.target) : s.bind_null(4);
    q.since ? s.bind(5, millis(*q.since)) : s.bind_null(5);
    s.bind(6, static_cast<std::int64_t>(q.limit));
    std::vector<protocol::audit_event> out;
    while (s.step()) out.push_back(read_audit_row(s));
    return out;
  }

  audit_verification verify_audit(const std::optional<protocol::public_key>& key) override {
    protocol::audit_verifier verifier(key);
    for (const auto& c : audit_checkpoints(0, std::numeric_limits<std::uint32_t>::max())) verifier.expect(c);
    auto& s = prepared("SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit ORDER BY seq");
    reset_on_exit r{s};
    while (s.step() && !verifier.broken()) {
      try {
        verifier.add(read_audit_row(s));
      } catch (const storage_error&) {
        verifier.unreadable(static_cast<std::uint64_t>(s.integer(0)));
      }
    }
    return verifier.finish();
  }

  std::optional<audit_checkpoint> checkpoint_audit(const protocol::secret_key& key, timestamp now) override {
    exec("BEGIN IMMEDIATE");
    try {
      const auto h = head();
      std::optional<audit_checkpoint> made;
      std::int64_t newest = 0;
      {
        auto& s = prepared("SELECT coalesce(max(seq), 0) FROM audit_checkpoints");
        reset_on_exit r{s};
        if (s.step()) newest = s.integer(0);
      }
      if (h.seq > 0 && static_cast<std::int64_t>(h.seq) > newest) {
        audit_checkpoint c{h.seq, h.hash, now, {}};
        protocol::sign_audit_checkpoint(key, c);
        auto& s = prepared("INSERT INTO audit_checkpoints (seq, body) VALUES (?, ?)");
        s.bind(1, static_cast<std::int64_t>(c.seq)).bind(2, protocol::serialize(c));
        s.run();
        made = std::move(c);
      }
      exec("COMMIT");
      return made;
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  std::vector<audit_checkpoint> audit_checkpoints(std::uint64_t after_seq, std::uint32_t limit) override {
    auto& s = prepared("SELECT body FROM audit_checkpoints WHERE seq > ? ORDER BY seq LIMIT ?");
    reset_on_exit r{s};
    s.bind(1, static_cast<std::int64_t>(after_seq)).bind(2, static_cast<std::int64_t>(limit));
    std::vector<audit_checkpoint> out;
    while (s.step()) out.push_back(decode_or_throw<audit_checkpoint>(s.text(0), "audit checkpoint"));
    return out;
  }

  std::uint64_t prune_reports(timestamp before, std::uint64_t max_bytes) override {
    std::uint64_t pruned = 0;
    {
      auto& s = prepared("DELETE FROM reports WHERE received_at < ?");
      s.bind(1, millis(before));
      s.run();
      pruned += static_cast<std::uint64_t>(sqlite3_changes(db_));
    }
    // Then by size: the oldest go first, at most a thousand at a time (each its own short
    // transaction, so that writers are not held up), as many as the excess needs on average.
    auto total = [this] {
      auto& s = prepared("SELECT coalesce(sum(length(body)), 0), count(*) FROM reports");
      reset_on_exit r{s};
      if (!s.step()) return std::pair<std::uint64_t, std::uint64_t>{0, 0};
      return std::pair{static_cast<std::uint64_t>(s.integer(0)), static_cast<std::uint64_t>(s.integer(1))};
    };
    for (auto [bytes, rows] = total(); bytes > max_bytes && rows > 0; std::tie(bytes, rows) = total()) {
      const auto average = std::max<std::uint64_t>(1, bytes / rows);
      const auto excess = std::clamp<std::uint64_t>((bytes - max_bytes + average - 1) / average, 1, 1000);
      auto& s = prepared(
          "DELETE FROM reports WHERE rowid IN (SELECT rowid FROM reports ORDER BY received_at, rowid LIMIT ?)");
      s.bind(1, static_cast<std::int64_t>(excess));
      s.run();
      const auto n = static_cast<std::uint64_t>(sqlite3_changes(db_));
      if (n == 0) break;
      pruned += n;
    }
    return pruned;
  }

  std::vector<stored_report> reports(const std::string& machine_id, std::uint32_t limit,
                                     const std::vector<protocol::report_kind>& kinds) override {
    // The kinds as one bound text ",rolled_back,rollback_failed,": one statement for any set.
    std::string wanted = ",";
    for (auto k : kinds) wanted.append(protocol::to_string(k)).append(",");
    auto& s = prepared(
        "SELECT received_at, body FROM reports WHERE machine_id = ? AND (? = ',' OR instr(?, ',' || kind || ',') > 0) "
        "ORDER BY seq DESC LIMIT ?");
    reset_on_exit r{s};
    s.bind(1, machine_id).bind(2, wanted).bind(3, wanted).bind(4, static_cast<std::int64_t>(limit));
    std::vector<stored_report> out;
    while (s.step())
      out.push_back({machine_id, from_millis(s.integer(0)), decode_or_throw<protocol::report>(s.text(1), "report")});
    return out;
  }

  std::vector<delivery_job> due_deliveries(timestamp now, std::uint32_t limit) override {
    auto& s = prepared(
        "SELECT id, hook_id, event, body, attempts, created_at FROM webhook_deliveries "
        "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?");
    reset_on_exit r{s};
    s.bind(1, millis(now)).bind(2, static_cast<std::int64_t>(limit));
    std::vector<delivery_job> out;
    while (s.step())
      out.push_back({static_cast<std::uint64_t>(s.integer(0)), s.text(1), s.text(2), s.text(3),
                     static_cast<std::uint32_t>(s.integer(4)), from_millis(s.integer(5))});
    return out;
  }

  void record_delivery(const delivery_outcome& o) override {
    auto& s = prepared(
        "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_at = ?, delivered_at = ?, last_status = ?, "
        "last_error = ? WHERE id = ?");
    s.bind(1, protocol::to_string(o.state)).bind(2, static_cast<std::int64_t>(o.attempts));
    if (o.next_at) s.bind(3, millis(*o.next_at));
    else s.bind_null(3);
    if (o.delivered_at) s.bind(4, millis(*o.delivered_at));
    else s.bind_null(4);
    if (o.status) s.bind(5, static_cast<std::int64_t>(*o.status));
    else s.bind_null(5);
    if (o.error) s.bind(6, *o.error);
    else s.bind_null(6);
    s.bind(7, static_cast<std::int64_t>(o.id));
    s.run();
  }

  std::vector<protocol::webhook_delivery> deliveries(const std::string& hook_id, std::uint32_t limit) override {
    auto& s = prepared(
        "SELECT id, hook_id, event, created_at, state, attempts, next_at, delivered_at, last_status, last_error "
        "FROM webhook_deliveries WHERE hook_id = ? ORDER BY id DESC LIMIT ?");
    reset_on_exit r{s};
    s.bind(1, hook_id).bind(2, static_cast<std::int64_t>(limit));
    std::vector<protocol::webhook_delivery> out;
    while (s.step()) {
      protocol::webhook_delivery d;
      d.id = static_cast<std::uint64_t>(s.integer(0));
      d.hook_id = s.text(1);
      d.event = s.text(2);
      d.created_at = from_millis(s.integer(3));
      auto state = protocol::fields::enum_from_string<protocol::delivery_state>(s.text(4));
      if (!state) throw storage_error("corrupt delivery row: state");
      d.state = *state;
      d.attempts = static_cast<std::uint32_t>(s.integer(5));
      if (s.is_null(6)) d.next_at.reset();
      else d.next_at = from_millis(s.integer(6));
      if (!s.is_null(7)) d.delivered_at = from_millis(s.integer(7));
      if (!s.is_null(8)) d.last_status = static_cast<std::uint32_t>(s.integer(8));
      if (!s.is_null(9)) d.last_error = s.text(9);
      if (d.state != protocol::delivery_state::pending) d.next_at.reset();
      out.push_back(std::move(d));
    }
    return out;
  }

  std::map<std::string, std::uint64_t> pending_deliveries() override {
    auto& s = prepared("SELECT hook_id, count(*) FROM webhook_deliveries WHERE state = 'pending' GROUP BY hook_id");
    reset_on_exit r{s};
    std::map<std::string, std::uint64_t> out;
    while (s.step()) out[s.text(0)] = static_cast<std::uint64_t>(s.integer(1));
    return out;
  }

  std::uint64_t prune_deliveries(timestamp before) override {
    auto& s = prepared("DELETE FROM webhook_deliveries WHERE state != 'pending' AND created_at < ?");
    s.bind(1, millis(before));
    s.run();
    return static_cast<std::uint64_t>(sqlite3_changes(db_));
  }

  std::uint64_t report_count() override {
    auto& s = prepared("SELECT count(*) FROM reports");
    reset_on_exit r{s};
    s.step();
    return static_cast<std::uint64_t>(s.integer(0));
  }

  std::optional<key_record> find_key(const std::string& hash) override {
    auto& s = prepared("SELECT body FROM api_keys WHERE hash = ?");
    reset_on_exit r{s};
    s.bind(1, hash);
    if (!s.step()) return std::nullopt;
    return key_record{decode_or_throw<protocol::api_key_info>(s.text(0), "api key"), hash};
  }

  std::uint64_t operations() const noexcept override { return ops_.load(); }

 private:
  struct chain {
    std::uint64_t seq = 0;
    std::string hash = std::string(64, '0');
  };

  void exec(const char* sql) {
    ++ops_;
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      throw storage_error(std::string(sql).substr(0, 40) + ": " + msg);
    }
  }

  statement& prepared(const char* sql) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) it = cache_.emplace(sql, std::make_unique<statement>(db_, sql, ops_)).first;
    return *it->second;
  }

  void migrate() {
    exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    std::int64_t version = 0;
    {
      auto& s = prepared("SELECT coalesce(max(version), 0) FROM schema_version");
      reset_on_exit r{s};
      if (s.step()) version = s.integer(0);
    }
    const auto known = static_cast<std::int64_t>(std::size(migrations));
    if (version > known)
      throw storage_error("the database was written by a newer coordinator (schema " + std::to_string(version) + ")");
    for (auto v = version; v < known; ++v) {
      exec("BEGIN IMMEDIATE");
      try {
        exec(migrations[v]);
        auto& s = prepared("INSERT INTO schema_version (version) VALUES (?)");
        s.bind(1, v + 1);
        s.run();
        exec("COMMIT");
      } catch (...) {
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
      }
    }
    chain_head_ = head();
  }

  chain head() {
    auto& s = prepared("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
    reset_on_exit r{s};
    chain c;
    if (s.step()) {
      c.seq = static_cast<std::uint64_t>(s.integer(0));
      c.hash = s.text(1);
    }
    return c;
  }

  protocol::audit_event read_audit_row(statement& s) {
    protocol::audit_event e;
    e.seq = static_cast<std::uint64_t>(s.integer(0));
    e.at = from_millis(s.integer(1));
    e.actor = s.text(2);
    e.action = s.text(3);
    e.target = s.text(4);
    boost::system::error_code ec;
    auto detail = json::parse(s.text(5), ec);
    if (ec || !detail.is_object()) throw storage_error("corrupt audit detail");
    e.detail = detail.as_object();
    e.prev_hash = s.text(6);
    e.hash = s.text(7);
    return e;
  }

  void apply(const change_set& c) {
    for (const auto& m : c.machines) {
      auto& s = prepared("INSERT INTO machines (id, body) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body");
      s.bind(1, m.id).bind(2, json::serialize(to_json(m)));
      s.run();
    }
    for (const auto& r : c.reports) {
      auto& s = prepared(
          "INSERT INTO reports (machine_id, seq, received_at, kind, body) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT(machine_id, seq) DO NOTHING");
      s.bind(1, r.machine_id)
          .bind(2, static_cast<std::int64_t>(r.body.seq))
          .bind(3, millis(r.received_at))
          .bind(4, protocol::to_string(r.body.kind))
          .bind(5, protocol::serialize(r.body));
      s.run();
    }
    for (const auto& r : c.releases) {
      auto& s = prepared("INSERT INTO releases (id, created_at, body) VALUES (?, ?, ?)");
      s.bind(1, r.id).bind(2, millis(r.created_at)).bind(3, protocol::serialize(r));
      s.run();
    }
    if (c.revocations) {
      auto& s = prepared(
          "INSERT INTO revocations (id, sequence, body) VALUES (1, ?, ?) "
          "ON CONFLICT(id) DO UPDATE SET sequence = excluded.sequence, body = excluded.body");
      s.bind(1, static_cast<std::int64_t>(c.revocations->sequence)).bind(2, protocol::serialize(*c.revocations));
      s.run();
    }
    for (const auto& id : c.deleted_releases) {
      auto& s = prepared("DELETE FROM releases WHERE id = ?");
      s.bind(1, id);
      s.run();
    }
    for (const auto& w : c.rollouts) {
      auto& s = prepared(
          "INSERT INTO rollouts (id, release_id, status, created_at, body) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT(id) DO UPDATE SET status = excluded.status, body = excluded.body");
      s.bind(1, w.head.id)
          .bind(2, w.head.spec.release_id)
          .bind(3, protocol::to_string(w.head.status))
          .bind(4, millis(w.head.created_at))
          .bind(5, protocol::serialize(w.head));
      s.run();
      for (const auto& [idx, h] : w.hosts) {
        auto& hs = prepared(
            "INSERT INTO rollout_hosts (rollout_id, idx, body) VALUES (?, ?, ?) "
            "ON CONFLICT(rollout_id, idx) DO UPDATE SET body = excluded.body");
        hs.bind(1, w.head.id).bind(2, static_cast<std::int64_t>(idx)).bind(3, protocol::serialize(h));
        hs.run();
      }
      for (const auto& e : w.events) {
        auto& es = prepared("INSERT INTO rollout_events (rollout_id, seq, body) VALUES (?, ?, ?)");
        es.bind(1, w.head.id).bind(2, static_cast<std::int64_t>(e.seq)).bind(3, protocol::serialize(e));
        es.run();
      }
    }
    for (const auto& k : c.keys) {
      // A key written again carries its new last use.
      auto& s = prepared(
          "INSERT INTO api_keys (id, hash, body) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body");
      s.bind(1, k.info.id).bind(2, k.hash).bind(3, protocol::serialize(k.info));
      s.run();
    }
    for (const auto& id : c.deleted_keys) {
      auto& s = prepared("DELETE FROM api_keys WHERE id = ?");
      s.bind(1, id);
      s.run();
    }
    for (const auto& t : c.tokens) {
      auto& s = prepared(
          "INSERT INTO enroll_tokens (hash, machine_id, body) VALUES (?, ?, ?) "
          "ON CONFLICT(hash) DO UPDATE SET body = excluded.body");
      s.bind(1, t.hash).bind(2, t.machine_id).bind(3, json::serialize(to_json(t)));
      s.run();
    }
    for (const auto& cert : c.certificates) {
      auto& s = prepared(
          "INSERT INTO certificates (serial, machine_id, body) VALUES (?, ?, ?) "
          "ON CONFLICT(serial) DO UPDATE SET body = excluded.body");
      s.bind(1, cert.serial).bind(2, cert.machine_id).bind(3, json::serialize(to_json(cert)));
      s.run();
    }
    for (const auto& w : c.webhooks) {
      auto& s = prepared("INSERT INTO webhooks (id, body) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body");
      s.bind(1, w.info.id).bind(2, json::serialize(to_json(w)));
      s.run();
    }
    for (const auto& id : c.deleted_webhooks) {
      auto& s = prepared("DELETE FROM webhooks WHERE id = ?");  // its deliveries go with it
      s.bind(1, id);
      s.run();
    }
    for (const auto& d : c.deliveries) {
      auto& s = prepared(
          "INSERT INTO webhook_deliveries (hook_id, event, body, created_at, state, next_at) "
          "SELECT ?, ?, ?, ?, 'pending', ? WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?)");
      s.bind(1, d.hook_id).bind(2, d.event).bind(3, d.body).bind(4, millis(d.created_at)).bind(5, millis(d.created_at)).bind(6, d.hook_id);
      s.run();
    }
    for (const auto& a : c.audit) {
      protocol::audit_event e;
      e.seq = chain_head_.seq + 1;
      e.at = a.at;
      e.actor = a.actor;
      e.action = a.action;
      e.target = a.target;
      e.detail = a.detail;
      e.prev_hash = chain_head_.hash;
      e.hash = protocol::audit_row_hash(e);
      auto& s = prepared(
          "INSERT INTO audit (seq, at, actor, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
      s.bind(1, static_cast<std::int64_t>(e.seq))
          .bind(2, millis(e.at))
          .bind(3, e.actor)
          .bind(4, e.action)
          .bind(5, e.target)
          .bind(6, json::serialize(e.detail))
          .bind(7, e.prev_hash)
          .bind(8, e.hash);
      s.run();
      chain_head_ = {e.seq, e.hash};
    }
  }

  sqlite3* db_ = nullptr;
  std::map<const char*, std::unique_ptr<statement>> cache_;
  std::atomic<std::uint64_t> ops_{0};
  chain chain_head_;
};

}  // namespace

std::unique_ptr<storage> open_sqlite(const std::string& path) { return std::make_unique<sqlite_storage>(path); }

}  // namespace nixfleet::coordinator::io
