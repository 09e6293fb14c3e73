#!/usr/bin/env bash
# Agent idle footprint: RSS and CPU of `nixfleet-agent run` over a window, with
# its coordinator unreachable (it backs off and keeps polling), beside `sleep` as the floor.
# Usage: integration/bench/agent_idle.sh [seconds]   (default 30, at least 6); binary from
# $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-30}
bin=${BENCH_BUILD:-build/release}/bin/nixfleet-agent

work=$(mktemp -d)
trap 'kill $agent $ref 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/agent.json" <<JSON
{"machine_id": "bench-01", "coordinator_url": "http://127.0.0.1:1", "allow_insecure_http": true,
 "state_dir": "$work/state", "control_socket": "$work/control.sock", "health_config": "$work/none.json",
 "log_level": "error", "trusted_keys": ["bench-1:SqzA8d7ok1nayRg0TVpL7g14GYEJyYx2TMPulfFKJAY="]}
JSON
"$bin" check-config --config "$work/agent.json" >/dev/null  # a refused configuration fails here, loudly
"$bin" run --config "$work/agent.json" 2>/dev/null & agent=$!
sleep "$seconds" & ref=$!
sleep 2
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
c0=$(cpu $agent); t0=$(date +%s.%N)
sleep $((seconds - 4))
c1=$(cpu $agent); t1=$(date +%s.%N)
agent_rss=$(rss_kib $agent); ref_rss=$(rss_kib $ref)
agent_anon=$(awk '/^RssAnon/ {print $2}' "/proc/$agent/status")
agent_pss=$(awk '/^Pss:/ {print $2}' "/proc/$agent/smaps_rollup")
awk -v a="$agent_rss" -v anon="$agent_anon" -v pss="$agent_pss" -v r="$ref_rss" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$ticks" 'BEGIN {
  printf "agent idle RSS: %.2f MiB (sleep(1) beside it: %.2f MiB, ratio %.1fx); private anonymous %.2f MiB, PSS %.2f MiB\n", a/1024, r/1024, a/r, anon/1024, pss/1024;
  printf "agent idle CPU: %.3f %% of one core over %.0f s\n", 100 * (c1 - c0) / hz / (t1 - t0), t1 - t0 }'
