#!/usr/bin/env bash
# Dashboard timing with a big fleet: DEVICES simulated devices (default 10,000; tagged with a
# site, group and position through DATA_DIR/tags.json) publish every INTERVAL into one
# server; after WARMUP, bench/dashboard-timing.mjs opens the overview, the device list and a
# device page in Debian's chromium several times each and reports, from the browser's
# Performance API, when each page was interactive (domInteractive), loaded (loadEventEnd) and,
# for the device page, when every chart was drawn. Figures are reported, not asserted.
# Needs what scripts/install-test-deps installs (chromium, web-tests/node_modules).
# Usage: bench/dashboard.sh [DEVICES] [INTERVAL] [WARMUP]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-10000}
interval=${2:-10s}
warmup=${3:-60}
bin=${FLEETMON_BIN:-target/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$work/data"
python3 - "$devices" > "$work/data/tags.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({f"sim-{i:05d}": {
    "site": f"site-{i % 25:02d}", "group": f"group-{i % 7}",
    "lat": f"{45 + (i % 100) * 0.08:.3f}", "lon": f"{5 + (i // 100) * 0.1:.3f}",
} for i in range(n)}))
PY
http=$(port); mqtt=$(port)
RUST_LOG=warn "$bin" server --data-dir "$work/data" --http-listen "127.0.0.1:$http" \
  --mqtt-listen "127.0.0.1:$mqtt" >/dev/null 2>"$work/server.log" &
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "fleet: $devices devices, one batch every $interval, ${warmup}s of history before measuring"
"$bin" sim --mqtt "127.0.0.1:$mqtt" --devices "$devices" --interval "$interval" \
  --quiet >/dev/null 2>"$work/sim.log" &
for _ in $(seq 1 600); do
  online=$(curl -s "http://127.0.0.1:$http/api/v1/devices?limit=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["online"])')
  [ "$online" -ge "$devices" ] && break
  sleep 1
done
echo "online: $online"
sleep "$warmup"
node bench/dashboard-timing.mjs "http://127.0.0.1:$http/" sim-00042
