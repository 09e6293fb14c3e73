#!/usr/bin/env bash
# The package's test selection (what nix/package.nix's checkPhase runs: `ctest --label-exclude nix`)
# in a stand-in for the Nix build sandbox: a private mount namespace where /usr/bin (and so /bin)
# holds only `sh`, and PATH holds only what the package's build inputs provide (coreutils, a shell,
# grep/sed/awk, openssl, openssh). A test that runs /usr/bin/env or /bin/sleep, or a tool the
# package does not declare, fails here as it would in the sandbox.
# Usage: tests/sandbox/fhs_free_test.sh BUILD_DIR   (needs root for the mount namespace)
set -euo pipefail
build=$(cd "${1:?usage: fhs_free_test.sh BUILD_DIR}" && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "fhs_free_test: needs root (a private mount namespace): skipped"
  exit 77
fi
tools=$(mktemp -d /tmp/nixfleet-sandbox-tools.XXXXXX)
trap 'rm -rf "$tools"' EXIT
# stdenv's tools and the package's nativeCheckInputs (openssl, openssh); ctest runs the tests.
for p in coreutils dash bash grep sed findutils diffutils gzip; do
  dpkg -L "$p" | grep -E '^/(usr/)?bin/' | while read -r f; do [ -f "$f" ] && cp -L "$f" "$tools/" || true; done
done
for f in awk openssl ssh ssh-keygen ctest; do cp -L "$(command -v "$f")" "$tools/$f"; done
exec unshare --mount --propagation private -- /bin/bash -c '
  set -e
  tools=$1 build=$2
  shell=$(mktemp -d /tmp/nixfleet-sandbox-bin.XXXXXX)
  cp -a "$tools/dash" "$shell/sh"
  mount --bind "$shell" /usr/bin
  cd "$build"
  exec "$tools/env" -i PATH="$tools" HOME=/homeless-shelter TMPDIR=/tmp "$tools/ctest" --output-on-failure --label-exclude nix
' fhs-free "$tools" "$build"
