#!/usr/bin/env bash
# --threads: the same coordinator state served over mTLS by `--threads 1` and `--threads 2` side by
# side (two processes on copies of one database), polled by bench_load with one thread: a new
# connection and a full handshake per poll (what more threads are for), the same resuming the TLS
# session, and kept-alive polls (what the hop to the fleet's strand costs). Each run measures both
# back to back; the summary gives the median and min–max. Usage: threads.sh [seconds] [runs] [conns]
# (5 5 16). Binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}; runs=${2:-5}; conns=${3:-16}
. integration/bench/lib.sh
bench_init
one_assigned_machine
declare -A port pid
for t in 1 2; do
  cp "$work/db" "$work/db-$t"
  port[$t]=$(free_port)
  "$bin/nixfleet-coordinator" serve --db "$work/db-$t" --listen "127.0.0.1:${port[$t]}" --threads $t \
    --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" --client-ca "$pki/ca.crt" --log-level error 2>/dev/null &
  pid[$t]=$!
  coord="$coord $!"
done
tls=(--cacert "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key")
for t in 1 2; do wait_http "https://127.0.0.1:${port[$t]}/api/v1/machines/bench-01/desired" "${tls[@]}"; done
etag=$(curl -sf "${tls[@]}" -D - -o /dev/null "https://127.0.0.1:${port[1]}/api/v1/machines/bench-01/desired" |
  awk -F': ' 'tolower($1)=="etag" {gsub("\r",""); print $2}')

load_row() { awk '{for (i=1;i<NF;i++) {if ($i=="rps") r=$(i+1); if ($i=="p99_ms") p=$(i+1); if ($i=="errors") e=$(i+1)}}
  END {if (e > 0) print "errors", e > "/dev/stderr"; print r, p}'; }
load() { "$build/bench/bench_load" "https://127.0.0.1:$1" /api/v1/machines/bench-01/desired --conns "$conns" \
  --if-none-match "$etag" --threads 1 --seconds "$seconds" --ca "$pki/ca.crt" --cert "$pki/client.crt" --key "$pki/client.key" "${@:2}"; }

# CPU (user + system) a coordinator spent, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One measurement against --threads $1: requests/s, p99 and the coordinator's CPU per request (µs).
measure() {
  local t=$1 before after row; shift
  before=$(ticks "${pid[$t]}")
  row=$(load "${port[$t]}" "$@" | load_row)
  after=$(ticks "${pid[$t]}")
  awk -v row="$row" -v cpu="$(( after - before ))" -v hz="$(getconf CLK_TCK)" -v s="$seconds" \
    'BEGIN {split(row, f, " "); printf "%s %s %.1f\n", f[1], f[2], cpu / hz * 1e6 / (f[1] * s)}'
}

echo "one load-generator thread, $(nproc) cores; $conns connections, ${seconds}s per measurement, $runs runs; columns: --threads 2 against --threads 1"
rows=$work/rows
for run in $(seq "$runs"); do
  for mode in handshake resumed kept_alive; do
    case $mode in handshake) extra=(--reconnect) ;; resumed) extra=(--reconnect --resume) ;; kept_alive) extra=() ;; esac
    one=$(measure 1 "${extra[@]}")
    two=$(measure 2 "${extra[@]}")
    echo "${mode}_304 $two $one" | awk '{print $1, $2, $5, $2/$5, $3, $6, $4, $7}' >> "$rows"
  done
  echo "run $run done" >&2
done
summarize "threads2_rps threads1_rps ratio threads2_p99_ms threads1_p99_ms threads2_cpu_us threads1_cpu_us" < "$rows"
