#!/usr/bin/env bash
# Whole-system ingest benchmark: the same simulated fleet (fleetmon sim, real MQTT, QoS 1,
# protobuf batches) publishes into
#   1. fleetmon server — PUBACK only after the batch is fsynced in the WAL, deduplicated, stored;
#   2. mosquitto       — PUBACK from memory, nothing stored (the floor: what MQTT alone costs).
# Reports acknowledged batches and samples per second, server CPU seconds and peak RSS.
# Usage: bench/ingest.sh [DEVICES] [BATCHES_PER_DEVICE] [INTERVAL]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-200}
batches=${2:-100}
interval=${3:-10ms}
bin=${FLEETMON_BIN:-target/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cpu_seconds() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}

run_sim() { # $1 = mqtt port; prints "seconds acked samples"
  local start end
  start=$(date +%s.%N)
  "$bin" sim --mqtt "127.0.0.1:$1" --devices "$devices" --batches "$batches" --interval "$interval" \
    --quiet --first-seq 1 > "$work/summary.json"
  end=$(date +%s.%N)
  python3 - "$work/summary.json" "$start" "$end" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
print(f"{secs:.2f} {s['batches_acked']} {s['samples_acked']}")
PY
}

report() { # name pid seconds acked samples
  local cpu rss
  cpu=$(cpu_seconds "$2")
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$2/status")
  printf '%-10s %8s s %10s batches %12s samples %10.0f batches/s %12.0f samples/s  cpu %6.2f s  peak RSS %6d KiB\n' \
    "$1" "$3" "$4" "$5" "$(echo "$4 / $3" | bc -l)" "$(echo "$5 / $3" | bc -l)" "$cpu" "$rss"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "load: $devices devices x $batches batches, interval $interval, QoS 1, protobuf"

# fleetmon
http=$(port); mqtt=$(port)
RUST_LOG=warn "$bin" server --data-dir "$work/fleetmon" --http-listen "127.0.0.1:$http" --mqtt-listen "127.0.0.1:$mqtt" >/dev/null &
fpid=$!
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done
read -r secs acked samples < <(run_sim "$mqtt")
report fleetmon "$fpid" "$secs" "$acked" "$samples"
curl -s "http://127.0.0.1:$http/metrics" | grep -E '^fleetmon_(wal_syncs_total|wal_group_batches_(sum|count)|ingest_batches_total)' | sed 's/^/    /'
echo "    WAL on disk: $(du -sh "$work/fleetmon/wal" | cut -f1)"
kill "$fpid"; wait "$fpid" 2>/dev/null || true

# mosquitto
mport=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mport" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
mpid=$!
sleep 0.5
read -r secs acked samples < <(run_sim "$mport")
report mosquitto "$mpid" "$secs" "$acked" "$samples"
kill "$mpid"; wait "$mpid" 2>/dev/null || true
