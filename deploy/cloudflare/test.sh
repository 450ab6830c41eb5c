#!/usr/bin/env bash
# Builds the routing module (crates/tandem-route as WebAssembly) and runs the
# Worker's tests in workerd against upstream servers on loopback. Installs
# what is missing: the wasm32 target (build.sh), the npm packages (npm ci).
# Exits non-zero on any failure. Called from scripts/test.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

step() { printf '\n==> %s\n' "$*"; }

step "building tandem-route for wasm32"
"$here/build.sh"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "installing Node.js and npm (Debian)"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi

cd "$here"
if [ ! -x node_modules/@cloudflare/workerd-linux-64/bin/workerd ]; then
  step "npm ci (workerd)"
  npm ci --no-audit --no-fund
fi

step "Worker tests in workerd"
node --test-reporter=spec --test test/run.mjs
