#!/usr/bin/env bash
# Activation and fetch: the agent's own Nix steps against the same commands by hand, alternating,
# on real store paths (bench_nix_ops). Two "systems" whose switch-to-configuration records the
# switch, and a closure of DEPS paths of 1 MiB each in a signed file:// binary cache.
# Usage: nix_ops.sh [runs] [deps]   (10 20); binaries from $BENCH_BUILD (default build/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-10}; deps=${2:-20}; build=${BENCH_BUILD:-build/release}
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
export NIX_CONFIG="experimental-features = nix-command
build-users-group =
sandbox = false
substituters =
require-sigs = true"
stamp=$(date +%s%N)  # new paths for every run of the benchmark
cat > "$work/systems.nix" <<NIX
{ stamp, deps }:
let
  mk = label: builtins.derivation {
    name = "nixos-system-bench-\${label}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" ''
      mkdir -p \$out/bin
      printf '#!/bin/sh\necho "\$0 \$1" > /tmp/nixfleet-bench-switch-\${label}-\${stamp}\n' > \$out/bin/switch-to-configuration
      chmod +x \$out/bin/switch-to-configuration
    '' ];
  };
  dep = i: builtins.derivation {
    name = "bench-dep-\${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" "i=0; while [ \$i -lt 16384 ]; do echo '\${stamp} \${toString i} 0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab' ; i=\$((i+1)); done > \$out" ];
  };
  fetched = builtins.derivation {
    name = "nixos-system-bench-fetched";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    depList = builtins.genList dep deps;
    args = [ "-c" "echo \$depList > \$out" ];
  };
in { a = mk "a"; b = mk "b"; inherit fetched; }
NIX
build() { nix-build "$work/systems.nix" --argstr stamp "$stamp" --arg deps "$deps" -A "$1" --no-out-link 2>"$work/build.log" || { cat "$work/build.log" >&2; return 1; }; }
a=$(build a); b=$(build b); f=$(build fetched)
nix-store --generate-binary-cache-key bench-cache-1 "$work/cache.sec" "$work/cache.pub" 2>/dev/null
nix store sign --key-file "$work/cache.sec" -r "$f"
nix copy --to "file://$work/cache" "$f" 2>/dev/null
size=$(du -sm "$work/cache" | cut -f1)
echo "closure: $(nix-store -qR "$f" | wc -l) paths, cache ${size} MiB; $runs runs each, alternating who goes first"
"$build/bench/bench_nix_ops" "$runs" "$work/profile" "$a" "$b" "$f" "file://$work/cache" "$(cat "$work/cache.pub")" | \
  sed 's/^/  /'
rm -f /tmp/nixfleet-bench-switch-*-"$stamp" "$work"/profile*
nix-store --delete "$a" "$b" $(nix-store -qR "$f") >/dev/null 2>&1 || true
