#!/usr/bin/env bash
# Abuse limits, side by side in one run: fleetmon server with its default limits against the
# same server with every limit turned off, under
#   1. a normal simulated fleet (fleetmon sim, QoS 1): what the limits cost when nobody abuses;
#   2. one device flooding QoS 1 publishes over MQTT 3.1.1 as fast as it can for 10 s, while
#      a fleet of 100 devices publishes once a second: how much of the flood is taken, the
#      server's CPU, and whether the fleet's batches still get through;
#   3. a reconnect storm: 2,000 connections from one address as fast as a client can open
#      them (per-address limits applied to loopback with --limit-loopback in the limited run).
# Usage: bench/abuse-limits.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${FLEETMON_BIN:-target/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

cat > "$work/flood.py" <<'PY'
# One MQTT 3.1.1 client publishing QoS 1 batches of device `flood` as fast as it can for
# SECONDS (at most 1,000 unacknowledged); prints the PUBACKs received in that time.
import json, socket, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
def packet(kind, body):
    return bytes([kind]) + varint(len(body)) + body
def s16(b):
    return len(b).to_bytes(2, "big") + b
s = socket.create_connection(("127.0.0.1", port))
s.sendall(packet(0x10, s16(b"MQTT") + bytes([4, 2]) + (60).to_bytes(2, "big") + s16(b"flood")))
assert s.recv(4)[0] == 0x20
acked, window = 0, threading.Semaphore(1000)
stop = time.time() + seconds
def reader():
    global acked
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            return
        buf += data
        while len(buf) >= 4 and buf[0] == 0x40:
            buf = buf[4:]
            if time.time() < stop:
                acked += 1
            window.release()
threading.Thread(target=reader, daemon=True).start()
topic, seq = s16(b"fleetmon/v1/flood/telemetry"), 0
while time.time() < stop:
    if not window.acquire(timeout=0.1):
        continue
    seq += 1
    now = int(time.time() * 1000)
    batch = {"device": "flood", "seq": seq, "samples": [{"metric": "x", "ts_ms": now, "value": 1}]}
    s.sendall(packet(0x32, topic + (seq % 65535 + 1).to_bytes(2, "big") + json.dumps(batch).encode()))
print(acked)
PY

cat > "$work/storm.py" <<'PY'
# N connections from one address, opened as fast as possible, 100 at a time; prints how many
# got CONNACK accepted, refused, or nothing, and the seconds it took.
import socket, sys, time
from concurrent.futures import ThreadPoolExecutor
port, n = int(sys.argv[1]), int(sys.argv[2])
def one(i):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        cid = b"storm%d" % i
        body = len(b"MQTT").to_bytes(2, "big") + b"MQTT" + bytes([4, 2, 0, 60]) + len(cid).to_bytes(2, "big") + cid
        s.sendall(bytes([0x10, len(body)]) + body)
        ack = s.recv(4)
        s.close()
        return "ok" if len(ack) == 4 and ack[3] == 0 else "refused" if len(ack) == 4 else "closed"
    except OSError:
        return "closed"
start = time.time()
with ThreadPoolExecutor(100) as pool:
    results = list(pool.map(one, range(n)))
print(results.count("ok"), results.count("refused"), results.count("closed"), "%.2f" % (time.time() - start))
PY

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
off=(--device-message-rate 0 --mqtt-max-connections 0 --mqtt-max-connections-per-address 0 --mqtt-connection-rate 0)

start_server() { # $1 = name, rest = flags; sets http mqtt spid
  http=$(port); mqtt=$(port)
  RUST_LOG=error "$bin" server --data-dir "$work/$1" --http-listen "127.0.0.1:$http" \
    --mqtt-listen "127.0.0.1:$mqtt" "${@:2}" >/dev/null &
  spid=$!
  until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done
}

echo "== 1. normal fleet: 200 devices x 100 batches, interval 10ms"
for mode in limited unlimited; do
  if [ "$mode" = limited ]; then start_server "fleet-$mode"; else start_server "fleet-$mode" "${off[@]}"; fi
  t0=$(date +%s.%N)
  RUST_LOG=warn "$bin" sim --mqtt "127.0.0.1:$mqtt" --devices 200 --batches 100 --interval 10ms --quiet --first-seq 1 > "$work/s.json"
  t1=$(date +%s.%N)
  acked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["batches_acked"])' "$work/s.json")
  printf '%-10s %6.2f s  %6d batches acked  %7.0f batches/s  server cpu %6.2f s\n' \
    "$mode" "$(echo "$t1 - $t0" | bc -l)" "$acked" "$(echo "$acked / ($t1 - $t0)" | bc -l)" "$(cpu_seconds "$spid")"
  kill "$spid"; wait "$spid" 2>/dev/null || true
done

echo "== 2. one device floods for 10 s (MQTT 3.1.1, QoS 1) beside 100 devices at 1 s"
for mode in limited unlimited; do
  if [ "$mode" = limited ]; then start_server "flood-$mode"; else start_server "flood-$mode" "${off[@]}"; fi
  RUST_LOG=warn "$bin" sim --mqtt "127.0.0.1:$mqtt" --devices 100 --interval 1s --duration 14s --quiet --first-seq 1 > "$work/f.json" &
  sim=$!
  sleep 2
  c0=$(cpu_seconds "$spid")
  flood=$(python3 "$work/flood.py" "$mqtt" 10)
  c1=$(cpu_seconds "$spid")
  wait "$sim"
  read -r produced acked < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["batches_produced"], s["batches_acked"])' "$work/f.json")
  held=$(curl -s "http://127.0.0.1:$http/metrics" | awk '/^fleetmon_ingest_delayed_total/ {s+=$2} END {print s+0}')
  printf '%-10s flood: %6d batches acked in 10 s (%5.0f/s), %6d held back  server cpu %5.2f s  fleet: %d of %d batches acked\n' \
    "$mode" "$flood" "$(echo "$flood / 10" | bc -l)" "$held" "$(echo "$c1 - $c0" | bc -l)" "$acked" "$produced"
  kill "$spid"; wait "$spid" 2>/dev/null || true
done

echo "== 3. reconnect storm: 2000 connections from one address"
for mode in limited unlimited; do
  if [ "$mode" = limited ]; then start_server "storm-$mode" --limit-loopback; else start_server "storm-$mode" "${off[@]}"; fi
  c0=$(cpu_seconds "$spid")
  read -r ok refused closed secs < <(python3 "$work/storm.py" "$mqtt" 2000)
  c1=$(cpu_seconds "$spid")
  delayed=$(curl -s "http://127.0.0.1:$http/metrics" | awk '/^fleetmon_mqtt_connections_delayed_total/ {print $2}')
  printf '%-10s %5d served (%s of them made to wait)  %5d refused  %4d closed  in %s s  server cpu %5.2f s\n' \
    "$mode" "$ok" "${delayed:-0}" "$refused" "$closed" "$secs" "$(echo "$c1 - $c0" | bc -l)"
  kill "$spid"; wait "$spid" 2>/dev/null || true
done
