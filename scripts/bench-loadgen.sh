#!/usr/bin/env bash
# The load generator beside wrk, each in its own process, against one
# durable node in its own process (fresh data directory, port 18080):
# GET /healthz and POST /v1/orders under wrk (closed loop, 2 threads, 64
# connections, 5 s), then tandem-loadgen asked far beyond what it reaches
# (300 k/s, 64 connections, no read-back), with each client's CPU a
# request and the node's. Installs wrk if it is missing (needs root or
# sudo). Usage: scripts/bench-loadgen.sh [LOADGEN_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    echo "installing Debian's wrk (the loadgen's peer)" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y wrk >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y wrk >/dev/null; }
fi
cargo build --release -p tandem-cli -p tandem-loadgen
lg=${1:-target/release/tandem-loadgen}
work=$(mktemp -d)
trap 'kill "$node" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/node.toml" <<EOT
config_version = 1
listen = "127.0.0.1:18080"
data_dir = "$work/data"
[log]
kind = "file"
fsync = true
[limits]
account_rate = 0
reserve_ids = 4000000
reserve_orders = 1048576
EOT
target/release/tandem node --config "$work/node.toml" > "$work/node.log" 2>&1 &
node=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.2; done
curl -sf http://127.0.0.1:18080/readyz >/dev/null || { cat "$work/node.log"; exit 1; }
url=http://127.0.0.1:18080
ticks() { awk '{print $14 + $15}' "/proc/$node/stat"; }
hz=$(getconf CLK_TCK)
# One client run: its label, then the command; prints requests/s and
# CPU a request of the client and of the node.
measure() {
    local label=$1; shift
    local t0 out t1
    t0=$(ticks)
    out=$( { /usr/bin/time -f "cpu %U %S" "$@" ; } 2>&1 )
    t1=$(ticks)
    local rps reqs cpu
    if [[ $1 == wrk ]]; then
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    else
        rps=$(grep -o 'achieved [0-9.]*' <<<"$out" | awk '{print $2}')
        reqs=$(grep -o '^requests: [0-9]*' <<<"$out" | awk '{print $2}')
    fi
    cpu=$(awk '/^cpu / {print $2 + $3}' <<<"$out")
    awk -v l="$label" -v r="$rps" -v n="$reqs" -v c="$cpu" -v d="$((t1 - t0))" -v hz="$hz" 'BEGIN {
        printf "%-18s %9.0f req/s   client %5.2f us a request   node %5.2f us a request\n", l, r, c * 1e6 / n, d / hz * 1e6 / n }'
}
measure "wrk /healthz" wrk -t2 -c64 -d5s "$url/healthz"
measure "loadgen /healthz" "$lg" --target "$url" --rate 300000 --duration 4 --warmup 1 --connections 64 --floor --no-verify
measure "wrk orders" wrk -t2 -c64 -d5s -s scripts/wrk-orders.lua "$url/v1/orders" -- "$$-$RANDOM"
measure "loadgen orders" "$lg" --target "$url" --rate 300000 --duration 4 --warmup 1 --connections 64 --no-verify --seed "$RANDOM"
