#!/usr/bin/env bash
# Installs every build and test dependency of nixfleet on Debian 12. Idempotent; quiet when all is there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-all-dev liburing-dev libssl-dev libsqlite3-dev
  libspdlog-dev libfmt-dev libcli11-dev
  clang libclang-rt-14-dev
  nix-bin openssl socat nginx wrk python3-pytest iproute2 util-linux curl openssh-client openssh-server
  chromium fonts-dejavu-core
)
# Node.js and npm for the browser tests: Debian's, unless a Node.js is already installed.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install packages" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The browser tests' npm packages (puppeteer-core, axe-core), as pinned in their lock file.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$here/tests/browser/node_modules/puppeteer-core" ] || [ ! -d "$here/tests/browser/node_modules/axe-core" ]; then
  (cd "$here/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
