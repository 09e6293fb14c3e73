// The reference for report ingestion: the same rows the coordinator stores for a report, inserted
// straight into SQLite with the coordinator's settings (WAL, synchronous=FULL), one transaction per
// batch. Usage: bench_sqlite_reference DB ROWS BATCH — prints rows/s.
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {
void exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
    std::exit(1);
  }
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DB ROWS BATCH\n", argv[0]);
    return 2;
  }
  const long rows = std::atol(argv[2]);
  const long batch = std::atol(argv[3]);
  sqlite3* db = nullptr;
  if (sqlite3_open(argv[1], &db) != SQLITE_OK) return 1;
  exec(db, "PRAGMA journal_mode=WAL");
  exec(db, "PRAGMA synchronous=FULL");
  exec(db,
       "CREATE TABLE IF NOT EXISTS reports (machine_id TEXT NOT NULL, seq INTEGER NOT NULL, received_at INTEGER "
       "NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (machine_id, seq))");
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db,
                     "INSERT INTO reports (machine_id, seq, received_at, kind, body) VALUES (?, ?, ?, ?, ?) "
                     "ON CONFLICT(machine_id, seq) DO NOTHING",
                     -1, &st, nullptr);
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < rows;) {
    exec(db, "BEGIN IMMEDIATE");
    for (long j = 0; j < batch && i < rows; ++j, ++i) {
      const std::string machine = "bench-" + std::to_string(i % 100);
      const std::string body =
          "{\"seq\":" + std::to_string(i) +
          ",\"at\":\"2026-11-26T00:00:00.000Z\",\"kind\":\"heartbeat\",\"current_path\":\"/nix/store/"
          "0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-bench\",\"agent_version\":\"bench\",\"uptime_s\":" +
          std::to_string(i) + "}";
      sqlite3_bind_text(st, 1, machine.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(st, 2, i);
      sqlite3_bind_int64(st, 3, 1790000000000 + i);
      sqlite3_bind_text(st, 4, "heartbeat", -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 5, body.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(st) != SQLITE_DONE) return 1;
      sqlite3_reset(st);
    }
    exec(db, "COMMIT");
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.0f\n", static_cast<double>(rows) / secs);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return 0;
}
