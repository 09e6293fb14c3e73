#!/usr/bin/env bash
# A fleet of agents through a 3-wave rollout: bench_fleet runs AGENTS real agent runtimes (real
# HTTP client, durable state directories, fake Nix and activation) in one process against the real
# coordinator. The fleet first converges on release r1 (what it runs), then r2 is rolled out in
# waves 1%, 10%, 100% with SOAK seconds each. Prints: wall time beyond the soaks, coordinator CPU,
# propagation (host dispatched → its agent starting the fetch) per wave, and lost reports (every
# report an agent generated must be in the coordinator's store).
# Usage: fleet.sh [agents] [soak_s] [poll_interval_s] [poll_hint_s]   (1000 10 10 2)
# Binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
agents=${1:-1000}; soak=${2:-10}; poll=${3:-10}; hint=${4:-2}
. integration/bench/lib.sh
bench_init
start_operator_coordinator --poll-hint "$hint"
path_a=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-fleet-a
path_b=/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-fleet-b
ea=(); eb=()
for i in $(seq 0 $((agents - 1))); do
  id=$(printf 'host-%04d' "$i"); ea+=(--entry "$id=$path_a"); eb+=(--entry "$id=$path_b")
done
"$bin/nixfleet" release create --id r1 --sign-key "$work/op.sec" "${ea[@]}" --cache-url https://cache.example.org >/dev/null
"$bin/nixfleet" release create --id r2 --sign-key "$work/op.sec" "${eb[@]}" --cache-url https://cache.example.org >/dev/null

# The agents' state directories on tmpfs when there is one: a real host has a disk to itself, and
# 1,000 agents' fsyncs queued on this machine's one disk would measure the disk, not the protocol.
# (The coordinator's database stays on disk.)
agent_state=$work/agents
if [ -d /dev/shm ] && [ -w /dev/shm ]; then agent_state=$(mktemp -d /dev/shm/nixfleet-fleet.XXXXXX); fi
"$build/bench/bench_fleet" "http://127.0.0.1:$cport" "$agents" host- "$agent_state" "$path_a" $((poll * 1000)) \
  "$(cat "$work/op.pub")" \
  >"$work/fleet.json" 2>"$work/fleet.log" &
fleet=$!
# The fleet is managed already: it converges on r1, which it runs.
"$bin/nixfleet" deploy --release r1 --hosts 'host-*' --waves 100% --soak 0 --wait >/dev/null
sleep $((hint + 1))  # every host has seen r1's rollout end

cpu() { awk '{print $14 + $15}' "/proc/$coord/stat"; }
tick=$(getconf CLK_TCK)
c0=$(cpu); t0=$(date +%s.%N)
"$bin/nixfleet" deploy --release r2 --hosts 'host-*' --waves 1,10%,100% --soak "$soak" --wait >/dev/null
t1=$(date +%s.%N); c1=$(cpu)
sleep 2
kill -TERM $fleet; wait $fleet || true; fleet=
kill -TERM $coord; wait $coord || true; coord=
python3 - "$work" "$agents" "$soak" "$poll" "$hint" "$t0" "$t1" "$c0" "$c1" "$tick" "$path_b" <<'PY'
import json, sqlite3, sys, statistics
from datetime import datetime
work, agents, soak, poll, hint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t0, t1, c0, c1, tick, path_b = float(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10]), sys.argv[11]
fleet = json.load(open(f"{work}/fleet.json"))
db = sqlite3.connect(f"{work}/db")
stored = db.execute("select count(*) from reports").fetchone()[0]
kinds = dict(db.execute("select kind, count(*) from reports group by kind").fetchall())
hosts = [json.loads(b) for (b,) in db.execute(
    "select h.body from rollout_hosts h join rollouts r on r.id = h.rollout_id where r.release_id = 'r2' order by h.idx")]
fetch = {f["machine"]: f["at_ms"] for f in fleet["fetches"] if f["path"] == path_b}
by_wave = {}
for h in hosts:
    if "dispatched_at" in h and h["hostname"] in fetch:
        d = datetime.fromisoformat(h["dispatched_at"].replace("Z", "+00:00")).timestamp() * 1000
        by_wave.setdefault(h["wave"], []).append((fetch[h["hostname"]] - d) / 1000)
wall = t1 - t0
# The rollout's own timeline, from the coordinator: made → its last event (completed). The CLI's
# `--wait` looks once a second, so the wall time above runs up to a second past the end.
(created_ms,) = db.execute("select created_at from rollouts where release_id = 'r2'").fetchone()
events = [json.loads(b) for (b,) in db.execute(
    "select e.body from rollout_events e join rollouts r on r.id = e.rollout_id where r.release_id = 'r2' order by e.seq")]
ended = max(datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() for e in events)
own = ended - created_ms / 1000
expected = fleet["reports_generated"] - fleet["reports_superseded"] - fleet["reports_pending"]
print(f"agents {agents}, waves 1/10%/100%, soak {soak} s each, agent poll interval {poll} s, poll_hint {hint} s")
print(f"rollout wall time {wall:.1f} s; beyond the soaks ({3 * soak} s): {wall - 3 * soak:.1f} s")
print(f"rollout timeline (made -> {events[-1]['kind']}) {own:.2f} s; beyond the soaks: {own - 3 * soak:.2f} s")
print(f"coordinator CPU during the rollout: {(c1 - c0) / tick:.2f} s = {100 * (c1 - c0) / tick / wall:.1f} % of one core")
print(f"fleet process CPU (all {agents} agents, whole run): {fleet['cpu_s']:.1f} s")
for w in sorted(by_wave):
    v = sorted(by_wave[w])
    print(f"propagation wave {w}: {len(v)} hosts, median {statistics.median(v):.2f} s, p99 {v[min(len(v) - 1, int(len(v) * 0.99))]:.2f} s, max {v[-1]:.2f} s")
print(f"fetches of the new release: {len(fetch)} of {agents}")
print(f"reports generated {fleet['reports_generated']}, superseded before sending {fleet['reports_superseded']}, "
      f"pending {fleet['reports_pending']}, stored {stored} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
      f"lost {expected - stored}")
sys.exit(0 if expected == stored and len(fetch) == agents else 1)
PY
