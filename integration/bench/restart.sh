#!/usr/bin/env bash
# A coordinator restart under AGENTS held long polls: bench_fleet's real agent runtimes (POLL_S
# poll interval, which also spreads their start; long polls, reconnect_jitter_s 5) hold one poll each; the coordinator is stopped
# (SIGTERM) and started again on the same port and database. Measured from the new process
# answering /healthz: when 10/50/90/100 % of the agents hold a poll again (its
# nixfleet_coordinator_long_polls_held, sampled every 50 ms), the most new connections it accepted
# in any 100 ms, and the agents' failed polls across the restart.
# Usage: restart.sh [agents] [runs] [poll_s]   (1000 3 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
agents=${1:-1000}; runs=${2:-3}; poll=${3:-60}
. integration/bench/lib.sh
bench_init
mport=$(free_port)
start_operator_coordinator --metrics-listen "127.0.0.1:$mport"
path_a=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-fleet-a
agent_state=$work/agents
if [ -d /dev/shm ] && [ -w /dev/shm ]; then agent_state=$(mktemp -d /dev/shm/nixfleet-restart.XXXXXX); fi
"$build/bench/bench_fleet" "http://127.0.0.1:$cport" "$agents" host- "$agent_state" "$path_a" $((poll * 1000)) \
  >"$work/fleet.json" 2>"$work/fleet.log" &
fleet=$!
metric() { curl -sf "http://127.0.0.1:$mport/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
for _ in $(seq $((poll * 10 + 600))); do [ "$(metric nixfleet_coordinator_long_polls_held)" = "$agents" ] && break; sleep 0.1; done
[ "$(metric nixfleet_coordinator_long_polls_held)" = "$agents" ] || { echo "the agents never all held a poll" >&2; exit 1; }
rows=$work/rows
for run in $(seq "$runs"); do
  kill -TERM $coord; wait $coord || true
  "$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --log-level error \
    --metrics-listen "127.0.0.1:$mport" 2>>"$work/coordinator.log" &
  coord=$!
  wait_http "http://127.0.0.1:$cport/healthz"
  python3 - "$mport" "$agents" >> "$rows" <<'PY'
import sys, time, urllib.request
port, agents = sys.argv[1], int(sys.argv[2])
def sample():
    held = accepted = 0
    for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode().splitlines():
        if line.startswith("nixfleet_coordinator_long_polls_held "): held = float(line.split()[1])
        if line.startswith("nixfleet_coordinator_connections_accepted_total "): accepted = float(line.split()[1])
    return held, accepted
t0 = time.time(); marks = {}; last_acc, last_t, burst = 0, t0, 0
while time.time() - t0 < 60:
    held, acc = sample()
    now = time.time()
    if now - last_t >= 0.1:
        burst = max(burst, (acc - last_acc) / (now - last_t) * 0.1); last_acc, last_t = acc, now
    for q in (0.1, 0.5, 0.9, 1.0):
        if q not in marks and held >= q * agents: marks[q] = now - t0
    if 1.0 in marks: break
    time.sleep(0.05)
print("restart", *(f"{marks.get(q, float('nan')):.2f}" for q in (0.1, 0.5, 0.9, 1.0)), f"{burst:.0f}")
PY
  tail -1 "$rows"
  sleep 10
done
kill -TERM $fleet; wait $fleet || true; fleet=
failed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["polls_failed"])' "$work/fleet.json")
echo "$agents agents, $runs restarts: failed polls in all $failed ($(python3 -c "print(f'{$failed / $agents / $runs:.2f}')") per agent and restart)"
echo "seconds from the new coordinator's first answer until 10/50/90/100 % hold a poll again; most connections accepted in 100 ms"
summarize "p10 p50 p90 p100 accepted_per_100ms" < "$rows"
