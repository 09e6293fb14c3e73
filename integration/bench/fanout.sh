#!/usr/bin/env bash
# Fan-out: MACHINES agents' long polls held by the coordinator (mTLS, a certificate per machine minted
# by bench_load, one connection each, `GET …/desired?wait=300` with nothing assigned yet), then one
# rollout gives every machine a new desired state in a single wave (`deploy --waves 100%`). Prints the
# time from the deploy command's start to its answer (the rollout made and its dispatch durable), to
# the first and to the last held poll answered (bench_load counts answers every 100 ms), and the
# coordinator's CPU for all of it. Usage: fanout.sh [machines] [runs]
# (15000 3). Binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
machines=${1:-15000}; runs=${2:-3}
. integration/bench/lib.sh
bench_init
make_pki bench-01
pki=$work/pki
need_descriptors $((machines + 4096))
sources=$(( (machines + 19999) / 20000 ))
path=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-fanout
nix-store --generate-binary-cache-key bench-1 "$work/op.sec" "$work/op.pub" 2>/dev/null
chmod 600 "$work/op.sec"
entries=()
for i in $(seq 0 $((machines - 1))); do entries+=(--entry "$(printf 'm%06d' "$i")=$path"); done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rows=$work/rows
echo "$machines held mTLS long polls, $sources source address(es), $runs runs"
for run in $(seq "$runs"); do
  db=$work/db-$run; cport=$(free_port)
  key=$("$bin/nixfleet-coordinator" keys create --db "$db" --name bench --role admin)
  "$bin/nixfleet-coordinator" serve --db "$db" --listen "127.0.0.1:$cport" --tls-cert "$pki/server.crt" \
    --tls-key "$pki/server.key" --client-ca "$pki/ca.crt" --max-connections $((machines + 1024)) \
    --max-connections-per-ip 0 --log-level error 2>>"$work/coordinator.log" &
  coord=$!
  wait_http "https://127.0.0.1:$cport/healthz" --cacert "$pki/ca.crt"
  export NIXFLEET_COORDINATOR="https://127.0.0.1:$cport" NIXFLEET_API_KEY="$key" NIXFLEET_CA_FILE="$pki/ca.crt" \
    NIXFLEET_CONFIG="$work/none.json"
  echo '{}' > "$work/none.json"
  "$bin/nixfleet" release create --id r1 --sign-key "$work/op.sec" "${entries[@]}" --tag all \
    --cache-url https://cache.example.org >/dev/null
  out=$work/hold-$run
  "$build/bench/bench_load" "https://127.0.0.1:$cport" "/api/v1/machines/{id}/desired?wait=300" --hold --seconds 600 \
    --conns "$machines" --ids "m:$machines" --sources "$sources" --if-none-match '"none"' --ca "$pki/ca.crt" \
    --client-ca-cert "$pki/ca.crt" --client-ca-key "$pki/ca.key" > "$out" &
  fleet=$!
  until grep -q '^open' "$out"; do sleep 0.2; done
  grep -q ' failed 0 ' "$out" || { echo "fanout.sh: not every long poll opened: $(head -1 "$out")" >&2; exit 1; }
  sleep 2
  ticks=$(cpu_ticks $coord)
  deployed=$(date +%s.%N)
  "$bin/nixfleet" deploy --release r1 --hosts 'm*' --waves 100% --soak 0 >/dev/null
  acked=$(date +%s.%N)  # the rollout is created, its dispatch durable
  for _ in $(seq 300); do
    last=$(awk '/^at / {n=$4} END {print n+0}' "$out")
    [ "$last" -ge "$machines" ] && break
    sleep 0.1
  done
  cpu_s=$(awk -v a="$ticks" -v b="$(cpu_ticks $coord)" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / hz}')
  kill $fleet; wait $fleet 2>/dev/null || true; fleet=
  kill -TERM $coord; wait $coord || true; coord=
  # From the deploy's start, on the wall clock bench_load prints with each count (every 100 ms).
  awk -v off="$deployed" -v acked="$acked" -v n="$machines" -v cpu="$cpu_s" -v run="$run" '
    /^at / {if ($4 + 0 >= n && !t) t = $6 - off; if (!first && $4 + 0 > 0) first = $6 - off}
    END {if (!t) {print "fanout.sh: not every poll was answered"; exit 1}
         printf "run %d: deploy answered after %.2f s; first answer by %.2f s, all %d by %.2f s after the deploy started; coordinator CPU %.2f s\n", run, acked - off, first, n, t, cpu
         printf "fanout %.3f %.3f %.3f %.2f\n", acked - off, first, t, cpu > "/dev/stderr"}' "$out" 2>>"$rows"
done
echo "seconds from the deploy command to answers, and coordinator CPU (median [min–max] over $runs runs)"
summarize "deploy_answered first_answer all_answered coordinator_cpu_s" < "$rows"
