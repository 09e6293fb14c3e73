#!/usr/bin/env bash
# The NixOS modules evaluated with nixpkgs' real `lib` (tests/nix/module_eval.nix: its module
# system and types, NixOS's option declarations for what the modules set, read-only pkgs): good
# settings give the units and files the binaries accept (ExecStart and agent.json go through
# check-config); each bad setting the binaries refuse at start is refused at evaluation.
# Usage: nix_modules_test.sh AGENT COORDINATOR SOURCE_DIR. nixpkgs' lib comes from $NIXPKGS_LIB,
# else SOURCE_DIR/../shared/nixpkgs-lib/lib, else flake.lock's nixpkgs when it can be fetched;
# without nix-instantiate or any of those: exit 77 (skipped, and said so).
set -euo pipefail
agent=$1 coordinator=$2 src=$3
if ! command -v nix-instantiate >/dev/null; then
  echo "nix-instantiate is not installed: skipping the module evaluation"
  exit 77
fi
lib=${NIXPKGS_LIB:-}
[ -n "$lib" ] || { [ -d "$src/../shared/nixpkgs-lib/lib" ] && lib=$(cd "$src/../shared/nixpkgs-lib/lib" && pwd); } || true
export NIX_CONFIG=$'build-users-group =\nsubstituters ='
if [ -z "$lib" ]; then
  # With network: the nixpkgs flake.lock pins, checked against its narHash.
  pin=$(python3 -c 'import json,sys; n=json.load(open(sys.argv[1]))["nodes"]["nixpkgs"]["locked"]; print(n["owner"], n["repo"], n["rev"], n["narHash"])' "$src/flake.lock")
  read -r owner repo rev hash <<<"$pin"
  fetched=$(timeout 120 nix-instantiate --eval --json -E \
    "builtins.toString (builtins.fetchTarball { url = \"https://github.com/$owner/$repo/archive/$rev.tar.gz\"; sha256 = \"$hash\"; })" \
    2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin))' 2>/dev/null) || true
  [ -n "$fetched" ] && [ -f "$fetched/lib/default.nix" ] && lib="$fetched/lib"
fi
if [ -z "$lib" ] || [ ! -f "$lib/default.nix" ]; then
  echo "no nixpkgs lib (set NIXPKGS_LIB, have ../shared/nixpkgs-lib/lib, or network for flake.lock's nixpkgs): skipping the module evaluation"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. "$(dirname "$0")/lib.sh"

# evaluate MODULE CONFIG → JSON of {failed, warnings, etc, units, ports}
evaluate() {
  nix-instantiate --eval --strict --json "$src/tests/nix/module_eval.nix" --arg lib "import $lib" --arg src "$src" \
    --argstr module "$1" --arg config "$2" 2>"$work/err" || { grep -v nixbld "$work/err" >&2; return 1; }
}
# The words of an ExecStart line as systemd reads them: JSON-quoted words, `%%` a literal %, `%d`
# the credentials directory ($creds), `$$` a literal $.
systemd_argv() {
  python3 - "$1" "$creds" <<'PY'
import json, re, sys
line, creds = open(sys.argv[1]).read().strip(), sys.argv[2]
for w in re.findall(r'"(?:[^"\\]|\\.)*"', line):
    print(re.sub(r"%(.)", lambda m: {"%": "%", "d": creds}.get(m.group(1), m.group(0)), json.loads(w)).replace("$$", "$"))
PY
}
field() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1:]: v = v[k]
print(json.dumps(v) if not isinstance(v, str) else v)' "$@"; }

# --- agent --------------------------------------------------------------------------------
key='ops-1:RtgX7MGJ6xkqAcuUwgDJpb8c9rIo6DGsSSxmTzwrDDM='
good_agent="{ networking.hostName = \"web-01\"; services.nixfleet-agent = { enable = true; settings = {
  coordinator_url = \"https://fleet.example.org:8443\"; trusted_keys = [ \"$key\" ];
  tls = { ca_file = \"/etc/nixfleet/ca.pem\"; cert_file = \"/etc/nixfleet/web-01.pem\"; key_file = \"/etc/nixfleet/web-01.key\"; };
  caches = [ \"s3://fleet?region=eu-west-1\" ]; }; health.probes = [ { name = \"web\"; type = \"tcp\"; host = \"127.0.0.1\"; port = 80; } ]; }; }"
out=$(evaluate agent "$good_agent") || fail "the agent module does not evaluate"
[ "$(field failed <<<"$out")" = "[]" ] || fail "good agent settings fail assertions: $(field failed <<<"$out")"
unit=$(field units nixfleet-agent <<<"$out")
[ "$(field serviceConfig Type <<<"$unit")" = notify ] || fail "agent unit is not Type=notify"
[ "$(field serviceConfig WatchdogSec <<<"$unit")" = 120s ] || fail "agent unit has no watchdog"
[ "$(field restartIfChanged <<<"$unit")" = false ] || fail "the agent would be restarted by its own switch"
[ "$(field stopIfChanged <<<"$unit")" = false ] || fail "the agent would be stopped by its own switch"
[ "$(field serviceConfig KillMode <<<"$unit")" = process ] || fail "stopping the agent would take its switch with it"
unit_file=$(field text <<<"$unit")
grep -qx "X-RestartIfChanged=false" <<<"$unit_file" || fail "the agent's unit file lacks X-RestartIfChanged=false"
grep -qx "Type=notify" <<<"$unit_file" || fail "the agent's unit file lacks Type=notify"
field etc nixfleet/agent.json <<<"$out" > "$work/agent.json"
field etc nixfleet/health.json <<<"$out" > "$work/health.json"
sed -i "s|/etc/nixfleet/health.json|$work/health.json|" "$work/agent.json"
"$agent" check-config --config "$work/agent.json" >/dev/null 2>"$work/err" || fail "rendered agent.json refused: $(cat "$work/err")"
set +e
"$agent" probe --health-config "$work/health.json" >/dev/null 2>"$work/err"
rc=$?
set -e
[ "$rc" -eq 0 ] || [ "$rc" -eq 1 ] || fail "rendered health.json refused ($rc): $(cat "$work/err")"
# Bad agent settings: refused at evaluation, naming the option.
bad_agents=(
  'settings = { coordinator_url = "https://x"; };|trusted_keys'
  "settings = { coordinator_url = \"http://x\"; trusted_keys = [ \"$key\" ]; };|coordinator_url"
  "networking.hostName = \"\"; settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; };|machine_id"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; state_dir = \"var/lib/x\"; };|absolute paths"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; metrics_listen = \"9101\"; };|metrics_listen"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; tls = { cert_file = \"/a.pem\"; key_file = \"/nix/store/00000000000000000000000000000000-k\"; }; };|key_file"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; poll_interval_s = 0; };|poll_interval_s"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; caches = [ \"file:///c?trusted=1\" ]; };|caches"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; enroll_token_file = \"/nix/store/00000000000000000000000000000000-token\"; };|enroll_token_file is a Nix store path"
  "settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; enroll_token_file = \"/run/t\"; tls = { cert_file = \"/a.pem\"; key_file = \"/k.pem\"; }; };|exclude each other"
)
for row in "${bad_agents[@]}"; do
  setting=${row%|*}
  host=""
  case "$setting" in networking.*) host=${setting%%;*}\;; setting=${setting#*; } ;; esac
  out=$(evaluate agent "{ $host services.nixfleet-agent = { enable = true; $setting }; }") || fail "bad agent settings do not even evaluate: ${row%|*}"
  grep -q "${row#*|}" <<<"$(field failed <<<"$out")" || fail "agent settings accepted at evaluation: ${row%|*}"
done
out=$(evaluate agent '{ services.nixfleet-agent = { enable = true; settings = { coordinator_url = "https://x"; allow_unsigned = true; }; }; }')
[ "$(field warnings <<<"$out")" != "[]" ] || fail "allow_unsigned does not warn"
echo "agent module: units and files accepted by check-config, ${#bad_agents[@]} bad settings refused at evaluation"

# --- coordinator --------------------------------------------------------------------------
creds="$work/credentials"
make_credentials "$creds"
good_coord='{ services.nixfleet-coordinator = { enable = true; openFirewall = true; settings = {
  db = "/tmp/100%done $HOME.db"; listen = "[::]:8443"; tls_cert = "/etc/nixfleet/c.pem"; tls_key = "/etc/nixfleet/k.pem";
  client_ca = "/etc/nixfleet/ca.pem"; metrics_listen = "127.0.0.1:9464"; poll_hint = 2;
  audit_key = "/etc/nixfleet/audit.sec"; ca_cert = "/etc/nixfleet/fleet-ca.crt"; ca_key = "/etc/nixfleet/fleet-ca.key";
  certificate_lifetime = "30d"; ui_listen = "[::]:8444"; ui_tls_cert = "/etc/nixfleet/ui.pem";
  ui_tls_key = "/etc/nixfleet/ui.key"; ui_session_idle = "20m"; }; }; }'
out=$(evaluate coordinator "$good_coord") || fail "the coordinator module does not evaluate"
[ "$(field failed <<<"$out")" = "[]" ] || fail "good coordinator settings fail assertions: $(field failed <<<"$out")"
[ "$(field ports <<<"$out")" = "[8443, 8444]" ] || fail "openFirewall opens $(field ports <<<"$out")"
unit=$(field units nixfleet-coordinator <<<"$out")
for k in DynamicUser ProtectSystem NoNewPrivileges LoadCredential SystemCallFilter; do
  field serviceConfig "$k" <<<"$unit" >/dev/null || fail "coordinator unit lacks $k"
done
[ "$(field serviceConfig LimitNOFILE <<<"$unit")" = 21024 ] ||
  fail "the coordinator unit's LimitNOFILE does not cover its connections: $(field serviceConfig LimitNOFILE <<<"$unit")"
[ "$(field serviceConfig LoadCredential <<<"$unit")" = '["tls-cert:/etc/nixfleet/c.pem", "tls-key:/etc/nixfleet/k.pem", "client-ca:/etc/nixfleet/ca.pem", "audit-key:/etc/nixfleet/audit.sec", "ca-cert:/etc/nixfleet/fleet-ca.crt", "ca-key:/etc/nixfleet/fleet-ca.key", "ui-tls-cert:/etc/nixfleet/ui.pem", "ui-tls-key:/etc/nixfleet/ui.key"]' ] ||
  fail "credentials: $(field serviceConfig LoadCredential <<<"$unit")"
# ExecStart as systemd reads it: JSON-quoted words, `%%` a literal %, `%d` the credentials directory.
field serviceConfig ExecStart <<<"$unit" > "$work/exec"
mapfile -t argv < <(systemd_argv "$work/exec")
[ "${argv[3]}" = '/tmp/100%done $HOME.db' ] || fail "the db path did not survive systemd quoting: ${argv[3]}"
"$coordinator" check-config "${argv[@]:2}" >/dev/null 2>"$work/err" || fail "rendered ExecStart refused: $(cat "$work/err")"
grep -q -- '"--threads" "1"' "$work/exec" || fail "the coordinator's thread count is not rendered: $(cat "$work/exec")"
bad_coords=(
  'db = "/tmp/x.db";|tls_cert and tls_key, or insecure_http'
  'insecure_http = true; poll_hint = 5000;|poll_hint'
  'insecure_http = true; long_poll_max = 3601;|long_poll_max'
  'insecure_http = true; idle_timeout = 0;|idle_timeout'
  'tls_cert = "/etc/c.pem"; tls_key = "/nix/store/00000000000000000000000000000000-key.pem";|tls_key is a Nix store path'
  'insecure_http = true; audit_key = "/nix/store/00000000000000000000000000000000-audit.sec";|audit_key is a Nix store path'
  'tls_cert = "/etc/c.pem";|go together'
  'insecure_http = true; listen = "8443";|listen'
  'insecure_http = true; require_client_cert = true;|need TLS'
  'tls_cert = "/c"; tls_key = "/k"; ca_cert = "/a"; ca_key = "/nix/store/00000000000000000000000000000000-ca.key";|ca_key is a Nix store path'
  'tls_cert = "/c"; tls_key = "/k"; ca_cert = "/a";|ca_cert and ca_key go together'
  'tls_cert = "/c"; tls_key = "/k"; client_ca = "/ca"; require_client_cert = true; ca_cert = "/a"; ca_key = "/b";|exclude each other'
  'insecure_http = true; listen = "127.0.0.1:8443"; ui_listen = "127.0.0.1:8443";|ui_listen must differ'
  'insecure_http = true; ui_listen = "[::]:8444"; ui_tls_cert = "/c"; ui_tls_key = "/nix/store/00000000000000000000000000000000-ui.key";|ui_tls_key is a Nix store path'
  'insecure_http = true; ui_tls_cert = "/c"; ui_tls_key = "/k";|ui_tls_cert needs ui_listen'
  'insecure_http = true; ui_listen = "dashboard";|ui_listen: expected'
)
for row in "${bad_coords[@]}"; do
  out=$(evaluate coordinator "{ services.nixfleet-coordinator = { enable = true; settings = { ${row%|*} }; }; }") ||
    fail "bad coordinator settings do not even evaluate: ${row%|*}"
  grep -q "${row#*|}" <<<"$(field failed <<<"$out")" || fail "coordinator settings accepted at evaluation: ${row%|*}"
done
# A path literal for the key is refused by the type (it would copy the key into the store).
if evaluate coordinator "{ services.nixfleet-coordinator = { enable = true; settings.tls_key = $src/README.md; settings.tls_cert = \"/c\"; }; }" >/dev/null 2>&1; then
  out=$(evaluate coordinator "{ services.nixfleet-coordinator = { enable = true; settings.tls_key = $src/README.md; settings.tls_cert = \"/c\"; }; }")
  grep -q "tls_key" <<<"$(field failed <<<"$out")" || fail "a path literal for tls_key was accepted"
fi
# A thread count outside 1–64 (or auto) is refused by the type; auto reaches the binary as is.
for n in 0 65 '"two"'; do
  if evaluate coordinator "{ services.nixfleet-coordinator = { enable = true; settings = { insecure_http = true; threads = $n; }; }; }" >/dev/null 2>&1; then
    fail "threads = $n was accepted"
  fi
done
out=$(evaluate coordinator '{ services.nixfleet-coordinator = { enable = true; settings = { insecure_http = true; threads = "auto"; }; }; }') ||
  fail "threads = auto does not evaluate"
field units nixfleet-coordinator <<<"$out" | field serviceConfig ExecStart > "$work/exec-auto"
grep -q -- '"--threads" "auto"' "$work/exec-auto" || fail "threads = auto is not rendered: $(cat "$work/exec-auto")"
echo "coordinator module: ExecStart accepted by check-config through systemd quoting, ${#bad_coords[@]} bad settings refused at evaluation"

# --- read-only pkgs -----------------------------------------------------------------------
if evaluate agent '{ nixpkgs.overlays = [ ]; }' >/dev/null 2>&1; then
  fail "the read-only nixpkgs declaration has no teeth: setting nixpkgs.overlays evaluated"
fi
echo "read-only pkgs: the modules evaluate; a module setting nixpkgs.* does not"

# --- the VM tests' nodes ------------------------------------------------------------------
for node in coordinator host1 host2; do
  out=$(nix-instantiate --eval --strict --json "$src/tests/nix/vm_nodes_eval.nix" --arg lib "import $lib" --arg src "$src" \
    --argstr node "$node" 2>"$work/err") || fail "VM test node $node does not evaluate: $(grep -v nixbld "$work/err")"
  [ "$(field failed <<<"$out")" = "[]" ] || fail "VM test node $node fails the modules' assertions: $(field failed <<<"$out")"
  if [ "$node" = coordinator ]; then
    field execStart <<<"$out" > "$work/exec"
    mapfile -t argv < <(systemd_argv "$work/exec")
    "$coordinator" check-config "${argv[@]:2}" >/dev/null 2>"$work/err" || fail "VM coordinator's ExecStart refused: $(cat "$work/err")"
  else
    field agentJson <<<"$out" > "$work/$node.json"
    "$agent" check-config --config "$work/$node.json" >/dev/null 2>"$work/err" || fail "VM $node's agent.json refused: $(cat "$work/err")"
  fi
done
echo "VM test nodes: coordinator, host1, host2 evaluate with read-only pkgs and pass check-config"

# --- impermanence ------------------------------------------------------------------------
# The real impermanence module (pinned in flake.lock) declares environment.persistence: the state
# the agent and the coordinator declare there is checked by its own types and assertions.
sources=${NIXFLEET_NIX_SOURCES:-$src/../shared/nix-sources}
if [ ! -f "$sources/impermanence/nixos.nix" ]; then
  echo "impermanence sources not found (NIXFLEET_NIX_SOURCES or ../shared/nix-sources): SKIPPED the persistence checks"
  exit 0
fi
imp="[ $(cd "$sources/impermanence" && pwd)/nixos.nix ]"
evaluate_imp() {
  nix-instantiate --eval --strict --json "$src/tests/nix/module_eval.nix" --arg lib "import $lib" --arg src "$src" \
    --argstr module "$1" --arg config "$2" --arg check false --arg extraModules "$imp" 2>"$work/err" ||
    { grep -v nixbld "$work/err" >&2; return 1; }
}
disks='fileSystems."/" = { device = "none"; fsType = "tmpfs"; }; fileSystems."/persist" = { device = "/dev/vda2"; fsType = "ext4"; neededForBoot = true; };'
out=$(evaluate_imp agent "{ networking.hostName = \"edge-01\"; $disks services.nixfleet-agent = { enable = true; persistence = \"/persist\";
  settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; }; }; }") || fail "agent + impermanence do not evaluate"
[ "$(field failed <<<"$out")" = "[]" ] || fail "agent + impermanence fail assertions: $(field failed <<<"$out")"
[ "$(field persistence /persist <<<"$out")" = '[{"directory": "/var/lib/nixfleet-agent", "mode": "0700"}]' ] ||
  fail "the agent's state is not persisted: $(field persistence <<<"$out")"
out=$(evaluate_imp coordinator "{ $disks services.nixfleet-coordinator = { enable = true; persistence = \"/persist\";
  settings = { insecure_http = true; }; }; }") || fail "coordinator + impermanence do not evaluate"
[ "$(field persistence /persist <<<"$out")" = '[{"directory": "/var/lib/private/nixfleet-coordinator", "mode": "0700"}]' ] ||
  fail "the coordinator's state is not persisted: $(field persistence <<<"$out")"
# impermanence's own assertions are evaluated: a persistent path not mounted in the initrd is refused.
out=$(evaluate_imp agent "{ networking.hostName = \"edge-01\"; fileSystems.\"/persist\" = { device = \"/dev/vda2\"; fsType = \"ext4\"; };
  services.nixfleet-agent = { enable = true; persistence = \"/persist\"; settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; }; }; }") ||
  fail "agent + impermanence (no neededForBoot) do not evaluate"
grep -q neededForBoot <<<"$(field failed <<<"$out")" || fail "impermanence's neededForBoot assertion did not fire: $(field failed <<<"$out")"
# Without impermanence, asking for persistence is an error, not a silently volatile state.
out=$(evaluate agent "{ services.nixfleet-agent = { enable = true; persistence = \"/persist\"; settings = { coordinator_url = \"https://x\"; trusted_keys = [ \"$key\" ]; }; }; }")
grep -q "impermanence" <<<"$(field failed <<<"$out")" || fail "persistence without impermanence was accepted"
echo "impermanence: agent and coordinator state declared under the persistent path (0700), checked by the real module"

# --- lib.mkHost ---------------------------------------------------------------------------
# nix/mk-host.nix (what the flake's lib.mkHost hands to nixosSystem) with the real disko and
# impermanence modules and home-manager's option surface, on the example fleet's own hosts.
mkhost() {
  nix-instantiate --eval --strict --json "$src/tests/nix/mkhost_eval.nix" --arg lib "import $lib" --arg src "$src" \
    --arg sources "$(cd "$sources" && pwd)" --arg hostArgs "$1" 2>"$work/err" || { grep -v nixbld "$work/err" >&2; return 1; }
}
example="$src/examples/fleet"
for h in web-01 edge-01; do
  out=$(mkhost "let h = (import $example/hosts.nix { }).\"$h\"; in h // { modules = (h.modules or [ ]) ++ [ $example/hosts/$h.nix ]; }") ||
    fail "the example host $h does not evaluate through mkHost"
  [ "$(field failed <<<"$out")" = "[]" ] || fail "example host $h fails assertions: $(field failed <<<"$out")"
  [ "$(field hostName <<<"$out")" = "$h" ] || fail "example host $h has hostname $(field hostName <<<"$out")"
  field agentJson <<<"$out" > "$work/$h.json"
  "$agent" check-config --config "$work/$h.json" >/dev/null 2>"$work/err" || fail "$h's agent.json refused: $(cat "$work/err")"
done
[ "$(field homeUsers <<<"$(mkhost "(import $example/hosts.nix { }).web-01")")" = '["ops"]' ] || fail "web-01's home-manager users"
out=$(mkhost "(import $example/hosts.nix { }).edge-01")
[ "$(field fileSystems / fsType <<<"$out")" = tmpfs ] || fail "edge-01's root is not the tmpfs disko lays out"
[ "$(field fileSystems /persist neededForBoot <<<"$out")" = true ] || fail "edge-01's /persist is not mounted in the initrd"
grep -q '/var/lib/nixfleet-agent' <<<"$(field persistence /persist <<<"$out")" || fail "edge-01 does not persist the agent's state"
# Plain mkHost: no framework module is imported; a host without operator keys is refused.
out=$(mkhost '{ hostName = "db-01"; coordinator = "https://fleet.example.org:8443"; }')
grep -q trusted_keys <<<"$(field failed <<<"$out")" || fail "mkHost without trustedKeys was accepted"
[ "$(field persistence <<<"$out")" = null ] && [ "$(field homeUsers <<<"$out")" = null ] ||
  fail "a plain mkHost host imports framework modules it did not ask for"
echo "mkHost: the example fleet's hosts (home-manager; disko + impermanence ephemeral root) evaluate, agent.json accepted"
