#!/usr/bin/env bash
# Alert latency benchmark: DEVICES simulated devices publish every INTERVAL into one fleetmon
# server evaluating the full built-in rule pack plus one benchmark rule; a probe then
#  - publishes, every few seconds, a sample that crosses the benchmark rule's threshold
#    (`bench_probe > 1`, no `for`, group_wait 0) and times it until the signed webhook
#    arrives at a local receiver: threshold → notification latency;
#  - connects a device with mosquitto_pub, kills it (the socket closes), and times until the
#    server shows it offline: offline detection latency (the DeviceOffline rule then waits
#    its `for: 2m` on top);
# and reads rule evaluation time per cycle from /api/v1/rules and the server's CPU.
# Usage: bench/alert-latency/run.sh [DEVICES] [INTERVAL] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/../.."
devices=${1:-10000}
interval=${2:-10s}
duration=${3:-5m}
bin=${FLEETMON_BIN:-target/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

http=$(port); mqtt=$(port); hook=$(port)
cp bench/alert-latency/rules.yml bench/alert-latency/alerting.yml "$work/"
printf '[retry]\ninitial_backoff = "100ms"\n\n[receivers.ops]\n[[receivers.ops.webhook]]\nurl = "http://127.0.0.1:%s/hook"\nsecret = "bench"\n' "$hook" > "$work/receivers.toml"

python3 bench/alert-latency/receiver.py "$hook" > "$work/receipts.txt" &
RUST_LOG=warn "$bin" server --data-dir "$work/data" --http-listen "127.0.0.1:$http" \
  --mqtt-listen "127.0.0.1:$mqtt" --rules "$work/rules.yml" \
  --alerting-config "$work/alerting.yml" --receivers "$work/receivers.toml" \
  >/dev/null 2>"$work/server.log" &
spid=$!
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "load: $devices devices, one batch every $interval, for $duration; built-in pack + bench rule"

"$bin" sim --mqtt "127.0.0.1:$mqtt" --devices "$devices" --interval "$interval" \
  --duration "$duration" --quiet --first-seq 1 --drain-timeout 60s > "$work/summary.json" 2>"$work/sim.log" &
simpid=$!
python3 bench/alert-latency/probe.py "$http" "$mqtt" "$simpid" "$spid" "$work/receipts.txt"
wait "$simpid" || true
grep -c ERROR "$work/server.log" | sed 's/^/server log errors: /' || true
