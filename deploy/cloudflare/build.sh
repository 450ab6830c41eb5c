#!/usr/bin/env bash
# Builds the routing module, crates/tandem-route compiled to WebAssembly,
# into build/tandem_route.wasm, where src/worker.js imports it. Used by
# test.sh and by `wrangler deploy` ([build] in wrangler.toml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "installing rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# The workspace's release profile keeps debug info and unwinds; the module
# needs neither (it cannot panic on any input, and the Worker should load
# as little as possible). These overrides touch only this wasm32 build
# (its own directory under target/), never the native artefacts.
CARGO_PROFILE_RELEASE_DEBUG=0 \
CARGO_PROFILE_RELEASE_STRIP=true \
CARGO_PROFILE_RELEASE_PANIC=abort \
CARGO_PROFILE_RELEASE_OPT_LEVEL=s \
  cargo rustc --quiet --locked -p tandem-route --release \
    --target wasm32-unknown-unknown --features wasm --crate-type cdylib
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$here/build"
cp "$target_dir/wasm32-unknown-unknown/release/tandem_route.wasm" "$here/build/tandem_route.wasm"
echo "build/tandem_route.wasm: $(wc -c < "$here/build/tandem_route.wasm") bytes"
