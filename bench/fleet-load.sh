#!/usr/bin/env bash
# Fleet load benchmark: DEVICES simulated devices (~35 metrics per batch) publishing every
# INTERVAL into one fleetmon server for DURATION, while a probe measures publish→queryable
# latency: every 2 s it publishes one JSON batch with mosquitto_pub (QoS 1) and polls the HTTP
# API until the sample can be read back.
# DEVICES_PER_CONNECTION (4th argument or environment variable; default 1, each device its own
# connection) puts that many devices behind one MQTT connection, as behind a gateway: a process
# here may hold at most `ulimit -Hn` open files, so 100,000 devices need shared connections.
# Reports server CPU and RSS per device, the simulator's CPU, RSS and lag (ticks it produced
# late or held back), batches lost, the probe's latency percentiles and the load average.
# Stops early when the server's RSS passes MAX_RSS_GIB (default 18), and says so.
# SERVER_FLAGS adds flags to `fleetmon server` (e.g. --no-builtin-rules); KEEP_LOGS=1 keeps the
# server's and the simulator's logs; SERVER_LOG sets the server's RUST_LOG (default warn).
# Usage: bench/fleet-load.sh [DEVICES] [INTERVAL] [DURATION] [DEVICES_PER_CONNECTION]
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-10000}
interval=${2:-10s}
duration=${3:-10m}
per_connection=${4:-${DEVICES_PER_CONNECTION:-1}}
max_rss_kib=$(( ${MAX_RSS_GIB:-18} * 1024 * 1024 ))
bin=${FLEETMON_BIN:-${CARGO_TARGET_DIR:-target}/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
# At the end: stop what was started and wait for it (a server with millions of series takes a
# while to shut down), then SIGKILL whatever is still running after 30 s.
stop_all() {
  local pids; pids=$(jobs -p)
  [ -n "$pids" ] && kill $pids 2>/dev/null
  for _ in $(seq 60); do
    kill -0 $pids 2>/dev/null || break
    sleep 0.5
  done
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  # KEEP_LOGS=1 keeps the server's and the simulator's logs (the data directory goes).
  if [ "${KEEP_LOGS:-0}" = 1 ]; then
    rm -rf "$work/data"
    echo "logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap 'stop_all || true' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

http=$(port); mqtt=$(port)
RUST_LOG=${SERVER_LOG:-warn} "$bin" server --data-dir "$work/data" --http-listen "127.0.0.1:$http" \
  --mqtt-listen "127.0.0.1:$mqtt" ${SERVER_FLAGS:-} >/dev/null 2>"$work/server.log" &
spid=$!
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "load: $devices devices ($per_connection per MQTT connection), one batch every $interval, for $duration; server flags: ${SERVER_FLAGS:-none}"
echo "started $(date -u +%FT%TZ); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

"$bin" sim --mqtt "127.0.0.1:$mqtt" --devices "$devices" --interval "$interval" \
  --devices-per-connection "$per_connection" \
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
peak_rss=0; peak_sim_rss=0; stopped_early=0; sim_cpu=0
: > "$work/loadavg.txt"
while kill -0 "$simpid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  sim_rss=$(awk '/VmRSS/ {print $2}' "/proc/$simpid/status" 2>/dev/null || echo 0)
  [ "${sim_rss:-0}" -gt "$peak_sim_rss" ] && peak_sim_rss=$sim_rss
  sim_cpu=$(cpu_seconds "$simpid" 2>/dev/null || echo "$sim_cpu")
  cut -d' ' -f1 /proc/loadavg >> "$work/loadavg.txt"
  echo "$(date -u +%T) server RSS $((rss / 1024)) MiB, sim RSS $((${sim_rss:-0} / 1024)) MiB, load $(cut -d' ' -f1 /proc/loadavg)" >&2
  if [ "$rss" -gt "$max_rss_kib" ]; then
    echo "server RSS passed ${MAX_RSS_GIB:-18} GiB: stopping the run" >&2
    stopped_early=1
    kill -INT "$simpid" 2>/dev/null || true
    wait "$simpid" 2>/dev/null || true
    break
  fi
  sleep 5
done
wait "$probepid" 2>/dev/null || true
cpu1=$(cpu_seconds "$spid"); t1=$(date +%s)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$spid/status")
curl -s "http://127.0.0.1:$http/api/v1/integrity" > "$work/integrity.json"
curl -s "http://127.0.0.1:$http/metrics" > "$work/metrics.txt"
python3 - "$work" "$devices" "$cpu0" "$cpu1" "$t0" "$t1" "$rss" "$peak_rss" "$peak_sim_rss" "$sim_cpu" "$stopped_early" "$interval" "$duration" <<'PY'
import json, re, sys
work, devices = sys.argv[1], int(sys.argv[2])
cpu0, cpu1, t0, t1 = map(float, sys.argv[3:7])
rss, peak = int(sys.argv[7]), int(sys.argv[8])
peak_sim, sim_cpu, stopped_early = int(sys.argv[9]), float(sys.argv[10]), sys.argv[11] == "1"
def seconds(d):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|s|m|h)", d))
interval_s, duration_s = seconds(sys.argv[12]), seconds(sys.argv[13])
if stopped_early:
    print("STOPPED EARLY: the server's RSS passed the limit")
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
ticks = devices * int(duration_s // interval_s)
made = s["batches_produced"] + s["batches_skipped"]
print(f"simulator: CPU {sim_cpu:.1f} s ({100 * sim_cpu / wall:.1f} % of one core), peak RSS {peak_sim / 1024:.0f} MiB; "
      f"ticks scheduled {ticks}, produced {s['batches_produced']}, held back (backlog full) {s['batches_skipped']}, "
      f"missed (the simulator fell behind) {max(0, ticks - made)}; resends {s['resends']}")
loads = [float(x) for x in open(f"{work}/loadavg.txt") if x.strip()]
if loads:
    print(f"load average (1 min) during the run: min {min(loads):.1f}, mean {sum(loads) / len(loads):.1f}, max {max(loads):.1f} on {__import__('os').cpu_count()} cores (shared machine)")
print(f"publish->queryable latency over {len(ok)} probes ({lat.count('timeout')} timeouts): "
      f"p50 {pct(50):.1f} ms, p90 {pct(90):.1f} ms, p99 {pct(99):.1f} ms, max {ok[-1] if ok else float('nan'):.1f} ms")
PY
grep -E '^fleetmon_(wal_syncs_total|wal_group_batches_(sum|count)|store_(series|samples|disk_bytes)) ' "$work/metrics.txt" | sed 's/^/    /'
# Why the simulator's connections dropped (each drop resends what was in flight), and why the
# server closed sessions: the most frequent warnings of each, device names left out.
warnings() {
  sed -E 's/\x1b\[[0-9;]*m//g; s/(client_id|peer|device|pkid)=[^ ]+ ?//g; s/^[0-9TZ:.-]+ +//' "$1" \
    | { grep -E 'WARN|ERROR' || true; } | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
}
echo "simulator warnings (count, message):"
warnings "$work/sim.log"
echo "server warnings (count, message):"
warnings "$work/server.log"
