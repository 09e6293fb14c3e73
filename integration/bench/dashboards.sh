#!/usr/bin/env bash
# Open dashboards against the poll path: MACHINES machines (each with a desired state, made as in
# scale.sh), polled open-loop at POLL_RATE polls/s by bench_load (one thread, ETags sent back as
# agents do), while REPORT_RATE heartbeat reports/s change the fleet. Each run measures the poll
# path twice, back to back: with the change load alone, and with DASHBOARDS open dashboards
# (dashboards.mjs: a session each, the live stream, the fleet page fetched again on changes as the
# page does). The summary gives the poll path's p50/p99 for both, median and min–max over the runs.
# Usage: dashboards.sh [machines] [seconds] [runs] [dashboards] [poll_rate] [report_rate]
#        (10000 20 3 20 1000 100); binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
machines=${1:-10000}; seconds=${2:-20}; runs=${3:-3}; dash=${4:-20}; poll_rate=${5:-1000}; report_rate=${6:-100}
. integration/bench/lib.sh
bench_init
path=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-dash

# One machine made through the API, then copied in the store (as scale.sh does).
start_operator_coordinator
"$bin/nixfleet" release create --id r1 --sign-key "$work/op.sec" --entry "m000000=$path" --cache-url https://cache.example.org >/dev/null
"$bin/nixfleet" deploy --release r1 --hosts m000000 --waves 100% --soak 0 >/dev/null
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
curl -sf -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$cport/api/v1/machines/m000000/reports" -d @- >/dev/null <<JSON
{"reports":[{"seq":1,"at":"$now","kind":"confirmed","store_path":"$path","release_id":"r1","current_path":"$path","booted_path":"$path","agent_version":"0.1.0","uptime_s":60}]}
JSON
kill -TERM $coord; wait $coord || true; coord=
clone_machines "$work/db" "$machines"

uport=$(free_port)
cport=$(free_port)
# The coordinator on the first core, every load generator on the second: what the dashboards cost
# shows in the coordinator; the dashboards and the change load (nice 19) yield to bench_load, so
# their cost on the client side does not show as poll latency.
taskset -c 0 "$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --ui-listen "127.0.0.1:$uport" \
  --report-budget 0 --log-level error 2>"$work/coordinator.log" &
coord=$!
wait_http "http://127.0.0.1:$cport/healthz"
echo "machines $machines, polls $poll_rate/s (open loop, ETags), reports $report_rate/s, $dash dashboards, ${seconds} s per measurement"

poll() {
  taskset -c 1 "$build/bench/bench_load" "http://127.0.0.1:$cport" '/api/v1/machines/{id}/desired' --ids m:"$machines" --etag \
    --conns 64 --threads 1 --warmup "$machines" --rate "$poll_rate" --seconds "$seconds" --server-pid $coord
}
measure() {  # label dashboards
  taskset -c 1 nice -n 19 node integration/bench/dashboards.mjs "http://127.0.0.1:$cport" "http://127.0.0.1:$uport" "$key" "$2" $((seconds + 8)) \
    "$report_rate" "$machines" "$path" >"$work/dash.out" &
  local d=$!
  sleep 2  # signed in and streaming before the polls start
  local out; out=$(poll)
  wait $d
  local p50 p99 cpu
  p50=$(sed -n 's/.* p50_ms \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  p99=$(sed -n 's/.* p99_ms \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  cpu=$(sed -n 's/^server_cpu_percent \([0-9.]*\).*/\1/p' <<<"$out")
  echo "$1 $p50 $p99 $cpu" >>"$work/rows"
  echo "  $1: $(grep -v "^warmup" <<<"$out" | head -1 | cut -c1-200) | $(cat "$work/dash.out")"
}
: >"$work/rows"
for run in $(seq "$runs"); do
  echo "run $run"
  measure without 0
  measure with-$dash "$dash"
done
summarize "p50_ms p99_ms coordinator_cpu%" <"$work/rows"
