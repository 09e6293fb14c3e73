#!/usr/bin/env bash
# What CI can check of the Nix packaging without nixpkgs: every .nix file parses, and the NixOS
# modules' pure renderers produce configurations the binaries accept (so they cannot drift apart).
# Usage: nix_files_test.sh AGENT COORDINATOR SOURCE_DIR. Exits 77 (skipped) without nix-instantiate.
set -euo pipefail
agent=$1 coordinator=$2 src=$3
if ! command -v nix-instantiate >/dev/null; then
  echo "nix-instantiate is not installed: skipping the Nix file checks"
  exit 77
fi
export NIX_CONFIG=$'build-users-group =\nsubstituters ='
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/lib.sh"

count=0
while IFS= read -r f; do
  nix-instantiate --parse "$f" >/dev/null 2>"$work/err" || fail "$f does not parse: $(grep -v nixbld "$work/err")"
  count=$((count + 1))
done < <(cd "$src" && find . -name '*.nix' -not -path './build/*' | sort | sed "s|^\.|$src|")
[ "$count" -ge 8 ] || fail "expected the flake, package, modules, renderers and tests; found $count .nix files"
echo "parsed $count .nix files"

# flake.lock: every input of flake.nix locked, the framework's inputs following our nixpkgs (one
# version of everything), no node that follows nothing.
python3 - "$src/flake.lock" <<'PY' || fail "flake.lock is not the follows chain the flake declares"
import json, sys
lock = json.load(open(sys.argv[1]))
nodes, root = lock["nodes"], lock["nodes"][lock["root"]]["inputs"]
assert set(root) == {"nixpkgs", "home-manager", "disko", "impermanence"}, root
for name in ("home-manager", "disko", "impermanence"):
    node = nodes[root[name]]
    assert node["inputs"]["nixpkgs"] == ["nixpkgs"], (name, node["inputs"])
    assert node["locked"]["type"] == "github" and len(node["locked"]["rev"]) == 40, name
assert nodes["impermanence"]["inputs"]["home-manager"] == ["home-manager"]
assert set(nodes) == {"root", "nixpkgs", "home-manager", "disko", "impermanence"}, sorted(nodes)
PY
for u in 'github:NixOS/nixpkgs/nixos-25.11' 'github:nix-community/home-manager/release-25.11' \
         'github:nix-community/disko/v1.13.0' 'github:nix-community/impermanence'; do
  grep -q "url = \"$u\"" "$src/flake.nix" || fail "flake.nix does not name $u as flake.lock's original"
done

eval_json() { nix-instantiate --eval --strict --json -E "$1" 2>"$work/err" || fail "evaluation failed: $(grep -v nixbld "$work/err")"; }

# Agent: option sets as the module would pass them (nulls are what the module leaves unset).
agent_sets=(
  '{ settings = { machine_id = "web-01"; coordinator_url = "https://fleet.example.org:8443"; allow_insecure_http = null; tls = null; poll_interval_s = null; metrics_listen = null; trusted_keys = [ { key = "ops-2:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM="; not_after = "2027-06-01T00:00:00.000Z"; } "ops-3:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" ]; max_target_age_s = 604800; caches = [ "s3://fleet?region=eu-west-1" ]; }; health = { gate = { }; probes = [ ]; }; }'
  '{ settings = { machine_id = "db-2"; coordinator_url = "https://fleet.internal:8443"; tls = { ca_file = "/etc/nixfleet/ca.pem"; cert_file = "/etc/nixfleet/host.pem"; key_file = "/etc/nixfleet/host.key"; }; poll_interval_s = 30; retry_interval_s = 10; startup_jitter_s = 0; trusted_keys = [ "ops-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" ]; cache_public_keys = [ "cache-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" ]; switch_runner = "systemd-run"; dry_run = true; metrics_listen = "127.0.0.1:9465"; outbox_limit = 500; log_level = "debug"; min_free_mb = 2048; activation_timeout_s = 900; forensics = { enable = null; journal = true; journal_lines = 50; journal_exclude = [ "vault*.service" ]; timeout_s = 3; }; }; health = { gate = { grace_s = 10; interval_s = 5; soak_s = 60; failure_threshold = 3; success_threshold = 2; timeout_s = 300; }; probes = [ { name = "tcp"; type = "tcp"; host = "127.0.0.1"; port = 1; timeout_s = 1; required = null; } { name = "sh"; type = "exec"; command = "true"; shell = true; args = null; } ]; }; }'
  '{ settings = { machine_id = "edge.3"; coordinator_url = "http://127.0.0.1:8080"; allow_insecure_http = true; allow_unsigned = true; health_interval_s = 1.5; request_timeout_s = 2.5; }; health = { probes = [ { name = "web"; type = "http"; url = "http://127.0.0.1:1/health"; expect_status = [ 200 204 ]; body_contains = "ok"; timeout_s = 1; } ]; }; }'
  '{ settings = { machine_id = "web-9"; coordinator_url = "https://fleet.internal:8443"; tls = { ca_file = "/etc/nixfleet/ca.pem"; }; enroll_token_file = "/run/keys/nixfleet-enroll"; trusted_keys = [ "ops-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" ]; }; health = { }; }'
)
i=0
for set in "${agent_sets[@]}"; do
  i=$((i + 1))
  out=$(eval_json "let r = import $src/agent/render.nix ($set // { healthConfigPath = \"$work/health-$i.json\"; }); in r")
  failed=$(eval_json "let r = import $src/agent/render.nix $set; in builtins.filter (a: !a.assertion) r.assertions")
  [ "$failed" = "[]" ] || fail "agent option set $i fails the module's assertions: $failed"
  python3 - "$out" "$work/agent-$i.json" "$work/health-$i.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
json.dump(r["agent"], open(sys.argv[2], "w"))
json.dump(r["health"], open(sys.argv[3], "w"))
PY
  "$agent" check-config --config "$work/agent-$i.json" >/dev/null 2>"$work/err" ||
    fail "agent option set $i renders a configuration check-config refuses: $(cat "$work/err")"
  set +e
  "$agent" probe --health-config "$work/health-$i.json" >/dev/null 2>"$work/err"
  rc=$?
  set -e
  [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] || fail "agent option set $i renders a health configuration probe refuses ($rc): $(cat "$work/err")"
done
# The checker has teeth: an option the binary refuses is caught.
out=$(eval_json "let r = import $src/agent/render.nix { settings = { coordinator_url = \"ftp://x\"; }; }; in r.agent")
echo "$out" > "$work/bad.json"
set +e
"$agent" check-config --config "$work/bad.json" >/dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq 78 ] || fail "a bad coordinator_url was accepted (exit $rc)"
# What the binary refuses at start, the module refuses at evaluation, with the field named.
weak_sets=(
  '{ settings = { coordinator_url = "https://x"; }; }'
  '{ settings = { coordinator_url = "https://x"; trusted_keys = [ ]; }; }'
  '{ settings = { coordinator_url = "https://x"; trusted_keys = [ "ops-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM=" ]; allow_unsigned = true; }; }'
  '{ settings = { coordinator_url = "https://x"; allow_unsigned = true; caches = [ "file:///srv/cache?trusted=1" ]; }; }'
)
fields=(trusted_keys trusted_keys allow_unsigned caches)
for j in "${!weak_sets[@]}"; do
  msgs=$(eval_json "let r = import $src/agent/render.nix ${weak_sets[$j]}; in map (a: a.message) (builtins.filter (a: !a.assertion) r.assertions)")
  case "$msgs" in *"settings.${fields[$j]}"*) ;; *) fail "weak agent settings $((j + 1)) pass the module's assertions: $msgs" ;; esac
  out=$(eval_json "let r = import $src/agent/render.nix ${weak_sets[$j]}; in r.agent")
  echo "$out" > "$work/weak.json"
  set +e
  "$agent" check-config --config "$work/weak.json" >/dev/null 2>"$work/err"
  rc=$?
  set -e
  [ "$rc" -eq 78 ] && grep -q "${fields[$j]}" "$work/err" || fail "weak agent settings $((j + 1)) accepted by check-config ($rc)"
done
warned=$(eval_json "(import $src/agent/render.nix { settings = { coordinator_url = \"https://x\"; allow_unsigned = true; }; }).warnings")
[ "$warned" != "[]" ] || fail "allow_unsigned does not warn"
echo "agent: ${#agent_sets[@]} option sets accepted, a bad one and ${#weak_sets[@]} weak ones refused"

# Coordinator: the TLS files are credentials named tls-cert, tls-key, client-ca.
creds="$work/credentials"
make_credentials "$creds"
coordinator_sets=(
  '{ db = "/var/lib/nixfleet-coordinator/coordinator.db"; listen = "[::]:8443"; tls_cert = "/run/keys/cert.pem"; tls_key = "/run/keys/key.pem"; client_ca = "/run/keys/ca.pem"; require_client_cert = false; insecure_http = false; metrics_listen = null; report_retention_days = null; poll_hint = null; idle_timeout = null; request_timeout = null; max_connections = null; log_level = null; }'
  '{ db = "/tmp/c.db"; listen = "127.0.0.1:9443"; tls_cert = "/a"; tls_key = "/b"; client_ca = "/c"; require_client_cert = true; insecure_http = false; metrics_listen = "127.0.0.1:9464"; report_retention_days = 30; poll_hint = 2; long_poll_max = 120; idle_timeout = 0.5; request_timeout = 5; max_connections = 1000; max_connections_per_ip = 0; audit_key = "/run/keys/audit.sec"; checkpoint_interval = 60; report_budget = 600; report_budget_mb = 4; report_retention_mb = 512; log_level = "warn"; }'
  '{ db = "/tmp/d.db"; listen = "127.0.0.1:8080"; tls_cert = null; tls_key = null; client_ca = null; require_client_cert = false; insecure_http = true; }'
  '{ db = "/tmp/f.db"; listen = "127.0.0.1:9443"; tls_cert = "/a"; tls_key = "/b"; ca_cert = "/run/keys/ca.crt"; ca_key = "/run/keys/ca.key"; certificate_lifetime = "7d"; }'
  '{ db = "/tmp/g.db"; listen = "127.0.0.1:9443"; tls_cert = "/a"; tls_key = "/b"; ui_listen = "127.0.0.1:9444"; ui_tls_cert = "/c"; ui_tls_key = "/d"; ui_session_ttl = "12h"; ui_session_idle = "30m"; }'
  '{ db = "/tmp/h.db"; listen = "127.0.0.1:8080"; insecure_http = true; ui_listen = "127.0.0.1:8081"; }'
)
for set in "${coordinator_sets[@]}"; do
  mapfile -t args < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' \
    "$(eval_json "import $src/coordinator/render.nix { settings = $set; credentialsDir = \"$creds\"; }")")
  "$coordinator" check-config "${args[@]}" >/dev/null 2>"$work/err" ||
    fail "coordinator option set renders arguments check-config refuses: ${args[*]}: $(cat "$work/err")"
done
# Refused with 78: neither TLS nor insecure_http; a flag value out of its range (a configuration
# error too, not the parser's own code).
for bad in 'insecure_http = false;' 'insecure_http = true; poll_hint = 5000;' 'insecure_http = true; idle_timeout = 0;' \
           'insecure_http = true; max_connections = 0;' 'insecure_http = true; long_poll_max = 3601;'; do
  rendered=$(eval_json "import $src/coordinator/render.nix { settings = { db = \"/tmp/e.db\"; listen = \"127.0.0.1:1\"; $bad }; }")
  mapfile -t args < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$rendered")
  [ "${#args[@]}" -ge 4 ] || fail "coordinator setting '$bad' rendered no arguments"
  set +e
  "$coordinator" check-config "${args[@]}" >/dev/null 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 78 ] || fail "coordinator setting '$bad' exits $rc, not 78"
done
echo "coordinator: ${#coordinator_sets[@]} option sets accepted, 4 bad ones refused"
