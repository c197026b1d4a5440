#!/usr/bin/env bash
# Fleet load benchmark: DEVICES simulated devices (one MQTT connection each, ~35 metrics per
# batch) publishing every INTERVAL into one fleetmon server for DURATION, while a probe
# measures publish→queryable latency: every 2 s it publishes one JSON batch with mosquitto_pub
# (QoS 1) and polls the HTTP API until the sample can be read back.
# Reports server CPU, RSS per device, batches lost, and the probe's latency percentiles.
# Usage: bench/fleet-load.sh [DEVICES] [INTERVAL] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-10000}
interval=${2:-10s}
duration=${3:-10m}
bin=${FLEETMON_BIN:-target/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

http=$(port); mqtt=$(port)
RUST_LOG=warn "$bin" server --data-dir "$work/data" --http-listen "127.0.0.1:$http" \
  --mqtt-listen "127.0.0.1:$mqtt" >/dev/null 2>"$work/server.log" &
spid=$!
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "load: $devices devices, one batch every $interval, for $duration"

"$bin" sim --mqtt "127.0.0.1:$mqtt" --devices "$devices" --interval "$interval" \
  --duration "$duration" --quiet --first-seq 1 --drain-timeout 60s > "$work/summary.json" 2>"$work/sim.log" &
simpid=$!

# The probe: publish, then poll until queryable.
python3 - "$mqtt" "$http" "$simpid" > "$work/latency.txt" <<'PY' &
import json, subprocess, sys, time, urllib.request
mqtt, http, simpid = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os
k = 0
while True:
    try:
        os.kill(simpid, 0)
    except OSError:
        break
    k += 1
    ts = int(time.time() * 1000)
    batch = {"device": "latency-probe", "seq": k, "samples": [{"metric": "probe_value", "ts_ms": ts, "value": k}]}
    t0 = time.monotonic()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", mqtt, "-q", "1",
                    "-t", "fleetmon/v1/latency-probe/telemetry", "-m", json.dumps(batch)], check=False)
    url = f"http://127.0.0.1:{http}/api/v1/samples?device=latency-probe&metric=probe_value&start_ms={ts}&end_ms={ts}"
    while True:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body["series"]:
            print(f"{(time.monotonic() - t0) * 1000:.1f}", flush=True)
            break
        if time.monotonic() - t0 > 30:
            print("timeout", flush=True)
            break
        time.sleep(0.005)
    time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
PY
probepid=$!

cpu0=$(cpu_seconds "$spid"); t0=$(date +%s)
peak_rss=0
while kill -0 "$simpid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  sleep 5
done
wait "$probepid" 2>/dev/null || true
cpu1=$(cpu_seconds "$spid"); t1=$(date +%s)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
curl -s "http://127.0.0.1:$http/api/v1/integrity" > "$work/integrity.json"
curl -s "http://127.0.0.1:$http/metrics" > "$work/metrics.txt"
python3 - "$work" "$devices" "$cpu0" "$cpu1" "$t0" "$t1" "$rss" "$peak_rss" <<'PY'
import json, sys
work, devices = sys.argv[1], int(sys.argv[2])
cpu0, cpu1, t0, t1 = map(float, sys.argv[3:7])
rss, peak = int(sys.argv[7]), int(sys.argv[8])
s = json.load(open(f"{work}/summary.json"))
integ = json.load(open(f"{work}/integrity.json"))
stored = sum(d["received"] for d in integ["devices"] if d["id"] != "latency-probe")
lat = [l.strip() for l in open(f"{work}/latency.txt")]
ok = sorted(float(x) for x in lat if x != "timeout")
def pct(p):
    return ok[min(len(ok) - 1, int(round(p / 100 * (len(ok) - 1))))] if ok else float("nan")
wall = t1 - t0
print(f"wall {wall:.0f} s; batches produced {s['batches_produced']}, acknowledged {s['batches_acked']}, "
      f"stored {stored}, lost (acked but not stored) {s['batches_acked'] - min(stored, s['batches_acked'])}, "
      f"unacknowledged at the end {s['batches_produced'] - s['batches_acked']}")
print(f"samples acknowledged {s['samples_acked']} ({s['samples_acked'] / wall:.0f}/s)")
print(f"server CPU {cpu1 - cpu0:.1f} s over {wall:.0f} s = {100 * (cpu1 - cpu0) / wall:.1f} % of one core")
print(f"server RSS {rss / 1024:.0f} MiB at the end ({rss * 1024 / devices:.0f} B per device), peak {peak / 1024:.0f} MiB")
print(f"publish->queryable latency over {len(ok)} probes ({lat.count('timeout')} timeouts): "
      f"p50 {pct(50):.1f} ms, p90 {pct(90):.1f} ms, p99 {pct(99):.1f} ms, max {ok[-1] if ok else float('nan'):.1f} ms")
PY
grep -E '^fleetmon_(wal_syncs_total|wal_group_batches_(sum|count)|store_(series|samples|disk_bytes)) ' "$work/metrics.txt" | sed 's/^/    /'
