# Shared by the benchmark scripts (sourced from the repository root).

# Binaries from $BENCH_BUILD (default build/release); a scratch directory $work; on exit the
# processes in $coord, $nginx and $fleet are stopped and $work (and $agent_state) removed.
bench_init() {
  build=${BENCH_BUILD:-build/release}
  bin=$build/bin
  work=$(mktemp -d)
  coord=; nginx=; fleet=; agent_state=
  trap bench_cleanup EXIT
}
bench_cleanup() {
  kill $coord $nginx $fleet 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work" ${agent_state:+"$agent_state"}
}

# The servers and the generator hold a descriptor per connection: raises the soft limit to $1, or
# stops, naming the hard limit, when it cannot.
need_descriptors() {
  local want=$1 hard
  hard=$(ulimit -Hn)
  [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] ||
    { echo "$(basename "$0"): $want descriptors are needed; the hard limit is $hard" >&2; exit 1; }
  ulimit -n "$want"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() {  # URL [curl options...]
  local url=$1; shift
  for _ in $(seq 1200); do curl -sf "$@" "$url" >/dev/null && return 0; sleep 0.05; done
  echo "no answer from $url" >&2; return 1
}

# A CA, a server certificate for 127.0.0.1 and a client certificate with CN=$1, all P-256, in $work/pki.
make_pki() {
  local p=$work/pki ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  mkdir -p "$p"
  openssl req -x509 "${ec[@]}" -keyout "$p/ca.key" -out "$p/ca.crt" -days 2 -subj /CN=bench-ca 2>/dev/null
  issue() {
    echo "$3" > "$p/$1.ext"
    openssl req "${ec[@]}" -keyout "$p/$1.key" -out "$p/$1.csr" -subj "/CN=$2" 2>/dev/null
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -out "$p/$1.crt" -days 2 \
      -extfile "$p/$1.ext" 2>/dev/null
  }
  issue server 127.0.0.1 subjectAltName=IP:127.0.0.1
  issue client "$1" extendedKeyUsage=clientAuth
}

# Reads rows "key value..." on stdin (one per run); prints per key: median, min and max of each column.
# Usage: summarize "col1 col2 ..."
summarize() {
  python3 -c '
import sys, statistics
names = sys.argv[1].split()
rows = {}
for line in sys.stdin:
    f = line.split()
    if f: rows.setdefault(f[0], []).append([float(x) for x in f[1:]])
for key, runs in rows.items():
    cols = list(zip(*runs))
    print(key, " ".join(f"{n}={statistics.median(c):.4g}[{min(c):.4g}-{max(c):.4g}]" for n, c in zip(names, cols)), f"runs={len(runs)}")
' "$1"
}

# Starts a plain-HTTP coordinator on a new database $work/db with an admin key, and sets up the
# CLI to talk to it with an operator signing key ($work/op.sec). Sets $cport, $coord, $key.
# Extra arguments go to `serve`.
start_operator_coordinator() {
  cport=$(free_port)
  key=$("$bin/nixfleet-coordinator" keys create --db "$work/db" --name bench --role admin)
  "$bin/nixfleet-coordinator" serve --db "$work/db" --listen "127.0.0.1:$cport" --insecure-http --log-level error \
    "$@" 2>"$work/coordinator.log" &
  coord=$!
  wait_http "http://127.0.0.1:$cport/healthz"
  export NIXFLEET_COORDINATOR="http://127.0.0.1:$cport" NIXFLEET_API_KEY="$key" NIXFLEET_CONFIG="$work/none.json"
  echo '{}' > "$work/none.json"
  nix-store --generate-binary-cache-key bench-1 "$work/op.sec" "$work/op.pub" 2>/dev/null
  chmod 600 "$work/op.sec"
}

# Fills the store at $1 with machines m000000…m(N-1) ($2), copies of m000000 (made through the API
# first) with its id swapped in: the coordinator must be stopped.
clone_machines() {
  python3 - "$1" "$2" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
(body,) = db.execute("select body from machines where id = 'm000000'").fetchone()
def swap(v, new):
    if isinstance(v, dict): return {k: swap(x, new) for k, x in v.items()}
    if isinstance(v, list): return [swap(x, new) for x in v]
    return new if v == "m000000" else v
template = json.loads(body)
db.executemany("insert or replace into machines (id, body) values (?, ?)",
               ((f"m{i:06d}", json.dumps(swap(template, f"m{i:06d}"), separators=(",", ":"))) for i in range(int(sys.argv[2]))))
db.commit()
PY
}

# A database $work/db in which machine bench-01 is assigned a signed release (r1), made through a
# coordinator that is stopped again; and a PKI for it in $work/pki (sets $pki).
one_assigned_machine() {
  make_pki bench-01
  pki=$work/pki
  start_operator_coordinator
  local path=/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-bench-01
  "$bin/nixfleet" release create --id r1 --sign-key "$work/op.sec" --entry "bench-01=$path" \
    --cache-url https://cache.example.org >/dev/null
  "$bin/nixfleet" deploy --release r1 --hosts bench-01 --waves 100% >/dev/null
  kill -TERM $coord; wait $coord || true
  coord=
}
