#!/usr/bin/env bash
# Runs `tandem-bench edge`: the same open-loop loadgen against three
# upstreams directly, through Tandem's edge and through Debian's nginx,
# then the edge's split accuracy. Installs nginx first if it is missing
# (needs root or sudo). Extra arguments go to the bench, e.g.
#   scripts/bench-edge.sh --upstream both --nginx-workers 1
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1; then
    echo "installing Debian's nginx (the bench's peer)" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y nginx >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y nginx >/dev/null; }
fi
cargo build --release -p tandem-bench
exec target/release/tandem-bench edge "$@"
