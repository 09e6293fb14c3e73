#!/usr/bin/env bash
# Report ingestion: durable, acknowledged POST …/reports on the coordinator (batches of 1 and of
# 50 heartbeats, wrk with integration/bench/reports.lua; single reports from 32 and from 256
# connections, since group commit serves more of them per fsync when more agents post at once) against raw batched SQLite inserts of the
# same rows with the same settings (bench_sqlite_reference), on the same disk, in the same run.
# Each run measures both back to back; the summary gives the median and min–max over the runs.
# Usage: ingestion.sh [seconds] [runs]   (10 5); binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}; runs=${2:-5}
. integration/bench/lib.sh
bench_init
cport=$(free_port)
# 100 machines per wrk thread posting thousands of reports a second is a stress test, not a fleet's
# steady state: the per-machine report budget is raised above it (when the binary has one), so
# that what is measured is the ingestion path with the budget's bookkeeping, never a 429.
budget=()
if "$bin/nixfleet-coordinator" serve --help 2>/dev/null | grep -q -- --report-budget; then
  budget=(--report-budget 10000000 --report-budget-mb 100000)
fi
"$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --log-level error \
  "${budget[@]}" 2>/dev/null &
coord=$!
wait_http "http://127.0.0.1:$cport/healthz"
echo "wrk -t1, 32 connections (and 256 for single reports: as many agents posting at once) for ${seconds}s each;"
echo "reference: the same rows straight into SQLite, one transaction per batch; $runs runs"
rows=$work/rows
for run in $(seq "$runs"); do
  for case in 1:32 1:256 50:32; do
    b=${case%:*}; c=${case#*:}
    out=$(BATCH=$b wrk -t1 -c$c -d${seconds}s -s integration/bench/reports.lua "http://127.0.0.1:$cport" | grep reports_per_s)
    rps=$(echo "$out" | awk '{print $2}'); errs=$(echo "$out" | awk '{print $4}'); p99=$(echo "$out" | awk '{print $6}')
    rm -f "$work/ref.db"*
    # About as many rows as the reference writes in a few seconds at that batch size.
    ref=$("$build/bench/bench_sqlite_reference" "$work/ref.db" $((b == 1 ? 2000 * seconds : 20000 * seconds)) $b)
    echo "batch_${b}_c$c $rps $ref $(echo "$rps $ref" | awk '{print $1/$2}') $p99 $errs" >> "$rows"
  done
done
summarize "nixfleet_reports_s sqlite_rows_s ratio p99_ms errors" < "$rows"
