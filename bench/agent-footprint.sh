#!/usr/bin/env bash
# Footprint of fleetmon-agent side by side with prometheus-node-exporter and a psutil script
# doing the same collection, at the same interval, on this machine:
#   resident memory, CPU seconds per 1000 collections, stripped binary size, bytes per sample
#   on the wire.
#
# Needs: the agent built for devices (cargo build --profile release-small -p fleetmon-agent),
# the fleetmon server (cargo build -p fleetmon), prometheus-node-exporter and python3-psutil
# (Debian packages).
# Usage: footprint.sh [SECONDS] [INTERVAL_MS]
set -euo pipefail

DURATION=${1:-60}
INTERVAL_MS=${2:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=${FLEETMON_AGENT_BIN:-$TARGET/release-small/fleetmon-agent}
SERVER=${FLEETMON_BIN:-$TARGET/debug/fleetmon}
[ -x "$SERVER" ] || SERVER=$ROOT/target/debug/fleetmon
NODE_EXPORTER=$(command -v prometheus-node-exporter || command -v node_exporter)
PY=/usr/bin/python3
for f in "$AGENT" "$SERVER" "$NODE_EXPORTER"; do
  [ -x "$f" ] || { echo "missing $f" >&2; exit 1; }
done
"$PY" -c 'import psutil' || { echo "python3-psutil missing" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14+$15)/hz}' "/proc/$1/stat"; }
INTERVAL_S=$(awk -v ms="$INTERVAL_MS" 'BEGIN {printf "%.3f", ms/1000}')

# Stripped size.
cp "$AGENT" "$WORK/agent" && strip "$WORK/agent"
AGENT_SIZE=$(stat -c %s "$WORK/agent")
NE_SIZE=$(stat -c %s "$NODE_EXPORTER")

# --- fleetmon-agent against a real server ---
HTTP=$(free_port); MQTT=$(free_port)
"$SERVER" server --data-dir "$WORK/data" --http-listen 127.0.0.1:$HTTP --mqtt-listen 127.0.0.1:$MQTT >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
cat > "$WORK/agent.toml" <<TOML
device_id = "bench-1"
interval = "${INTERVAL_MS}ms"
low_power_interval = "60s"
[server]
mqtt = "127.0.0.1:$MQTT"
[spool]
dir = "$WORK/spool"
TOML
RUST_LOG=warn "$WORK/agent" run --config "$WORK/agent.toml" &
APID=$!; PIDS+=($APID)
sleep "$DURATION"
A_RSS=$(rss_kb $APID); A_CPU=$(cpu_s $APID)
kill -TERM $APID; wait $APID 2>/dev/null || true
read -r A_N A_SAMPLES A_BYTES < <(curl -s "http://127.0.0.1:$HTTP/api/v1/devices/bench-1" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
lv = {v["metric"]: v["value"] for v in d["last_values"]}
print(d["batches_received"], d["samples_received"], int(lv["agent_uplink_bytes_total"]))')

# --- node_exporter, scraped at the same interval ---
NE_PORT=$(free_port)
"$NODE_EXPORTER" --web.listen-address=127.0.0.1:$NE_PORT >/dev/null 2>&1 &
NPID=$!; PIDS+=($NPID)
sleep 1
NE_CPU0=$(cpu_s $NPID); NE_N=0
END=$((SECONDS + DURATION))
while [ $SECONDS -lt $END ]; do
  curl -s "http://127.0.0.1:$NE_PORT/metrics" -o "$WORK/scrape" && NE_N=$((NE_N + 1))
  sleep "$INTERVAL_S"
done
NE_RSS=$(rss_kb $NPID); NE_CPU=$(awk -v a="$(cpu_s $NPID)" -v b="$NE_CPU0" 'BEGIN {print a-b}')
NE_SAMPLES=$(grep -vc '^#' "$WORK/scrape"); NE_BYTES=$(stat -c %s "$WORK/scrape")

# --- psutil: the same families ("full"), and the six values the issue quotes ("six") ---
PSUTIL_SCRIPT=$(cat <<'PYEOF'
import os, resource, sys, time
import psutil
mode, duration, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def six():
    return [psutil.cpu_percent(), psutil.virtual_memory().percent, psutil.swap_memory().percent,
            os.getloadavg()[0], time.time() - psutil.boot_time(), len(psutil.pids())]
def full():
    v = []
    v.append(psutil.cpu_percent()); v += psutil.cpu_percent(percpu=True); v += os.getloadavg()
    m = psutil.virtual_memory(); s = psutil.swap_memory(); v += [m.total, m.available, m.percent, s.total, s.used, s.percent]
    for p in psutil.disk_partitions():
        try:
            u = psutil.disk_usage(p.mountpoint); v += [u.total, u.free, u.percent]
        except OSError:
            pass
    for d in psutil.disk_io_counters(perdisk=True).values(): v += [d.read_bytes, d.write_bytes]
    for n in psutil.net_io_counters(pernic=True).values(): v += list(n)
    for ts in psutil.sensors_temperatures().values(): v += [t.current for t in ts]
    b = psutil.sensors_battery(); v += [b.percent] if b else []
    v.append(time.time() - psutil.boot_time()); v.append(len(psutil.pids()))
    v.append(len({(c.type, c.laddr.port) for c in psutil.net_connections("inet") if c.status in ("LISTEN", "NONE")}))
    return v
collect = full if mode == "full" else six
n, cpu = 0, 0.0
end = time.monotonic() + duration
while time.monotonic() < end:
    t0 = time.process_time(); collect(); cpu += time.process_time() - t0; n += 1
    time.sleep(interval)
print(n, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
PYEOF
)
read -r P_N P_CPU P_RSS < <("$PY" -c "$PSUTIL_SCRIPT" full "$DURATION" "$INTERVAL_S")
read -r S_N S_CPU S_RSS < <("$PY" -c "$PSUTIL_SCRIPT" six "$DURATION" "$INTERVAL_S")

per1000() { awk -v c="$1" -v n="$2" 'BEGIN {printf "%.2f", c / n * 1000}'; }
echo
echo "Side by side, ${DURATION}s at ${INTERVAL_MS}ms ($(nproc) cores, $(uname -r)):"
echo
echo "| | fleetmon-agent | node_exporter | psutil, same families | psutil, six values |"
echo "|---|---|---|---|---|"
echo "| resident memory | $A_RSS KiB | $NE_RSS KiB | $P_RSS KiB (max) | $S_RSS KiB (max) |"
echo "| CPU s per 1000 collections | $(per1000 "$A_CPU" "$A_N") (collect, spool fsync, MQTT) | $(per1000 "$NE_CPU" "$NE_N") (per scrape) | $(per1000 "$P_CPU" "$P_N") (collect only) | $(per1000 "$S_CPU" "$S_N") (collect only) |"
echo "| collections measured | $A_N | $NE_N | $P_N | $S_N |"
echo "| samples per collection | $((A_SAMPLES / A_N)) | $NE_SAMPLES | - | 6 |"
echo "| stripped binary | $((AGENT_SIZE / 1024)) KiB | $((NE_SIZE / 1024)) KiB | - | - |"
echo "| bytes per sample on the wire | $(awk -v b="$A_BYTES" -v s="$A_SAMPLES" 'BEGIN {printf "%.1f", b/s}') (columnar v2 frame) | $(awk -v b="$NE_BYTES" -v s="$NE_SAMPLES" 'BEGIN {printf "%.1f", b/s}') (text exposition) | - | - |"
