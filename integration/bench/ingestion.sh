#!/usr/bin/env bash
# Report ingestion: durable, acknowledged POST …/reports on the coordinator (batches of 1 and of
# 50 heartbeats, wrk with integration/bench/reports.lua) against raw batched SQLite inserts of the
# same rows with the same settings (bench_sqlite_reference), on the same disk, in the same run.
# Usage: ingestion.sh [seconds] (default 10).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
bin=build/release/bin
work=$(mktemp -d)
cleanup() { kill $coord 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --log-level error 2>/dev/null &
coord=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$cport/healthz" >/dev/null && break; sleep 0.05; done
printf "%-6s %16s %16s %8s %10s %8s\n" batch nixfleet_rps sqlite_rows_s ratio p99_ms errors
for b in 1 50; do
  out=$(BATCH=$b wrk -t1 -c32 -d${seconds}s -s integration/bench/reports.lua "http://127.0.0.1:$cport" | grep reports_per_s)
  rps=$(echo "$out" | awk '{print $2}'); errs=$(echo "$out" | awk '{print $4}'); p99=$(echo "$out" | awk '{print $6}')
  rm -f "$work/ref.db"*
  ref=$(build/release/bench/bench_sqlite_reference "$work/ref.db" 200000 $b)
  printf "%-6s %16s %16s %8.2f %10s %8s\n" $b "$rps" "$ref" "$(echo "$rps $ref" | awk '{print $1/$2}')" "$p99" "$errs"
done
