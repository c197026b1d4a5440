#!/usr/bin/env bash
# PromQL range-query latency: fleetmon's `/prometheus/api/v1/query_range` against Prometheus's
# `/api/v1/query_range`, on the same dataset, in one run on this machine (issue 6).
#
#   bench/promql-vs-prometheus/run.sh
#
# 1. builds `fleetmon` and `crates/tsdb/examples/fleet_vs_vm.rs` in release;
# 2. generates the engine benchmark's fleet dataset (`crates/tsdb/tests/common/fleet.rs`, seeded)
#    twice, identically: as OpenMetrics text, turned into Prometheus blocks by
#    `promtool tsdb create-blocks-from openmetrics`, and straight into `DATA/tsdb` with the tsdb
#    crate (`fleet_vs_vm load`: appended, flushed and compacted, so whole days carry rollups);
# 3. starts Prometheus (Debian package `prometheus`) and `fleetmon server` on 127.0.0.1;
# 4. runs `client.py`: each query class as a range query over the last 24 h of the data,
#    QUERY_RUNS times per side after a warm-up, alternating; prints median and p90 per side
#    and checks that both answers agree (same series, timestamps, values within 1e-6);
# 5. stops both servers and removes its work directory.
#
# Environment: FLEET_DEVICES (60), FLEET_HOURS (26), FLEET_STEP_S (30) — the dataset, scaled
# down from the engine benchmark's 334 devices × 24 h × 10 s so that the OpenMetrics file stays
# small; QUERY_RUNS (10); PROM_PORT (19090), FLEETMON_PORT (18427), MQTT_PORT (18883);
# WORK_DIR (a fresh directory under $TMPDIR), KEEP=1 keeps it. Only 127.0.0.1 is contacted.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export FLEET_DEVICES=${FLEET_DEVICES:-60}
export FLEET_HOURS=${FLEET_HOURS:-26}
export FLEET_STEP_S=${FLEET_STEP_S:-30}
# Data ends at the last UTC midnight, so its days are closed and compacted.
export FLEET_END_MS=${FLEET_END_MS:-$(($(date -u +%s) / 86400 * 86400 * 1000))}
QUERY_RUNS=${QUERY_RUNS:-10}
PROM_PORT=${PROM_PORT:-19090}
FLEETMON_PORT=${FLEETMON_PORT:-18427}
MQTT_PORT=${MQTT_PORT:-18883}
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/promql-vs-prom.XXXXXX")}
mkdir -p "$WORK"
PROM_PID=
OURS_PID=

cleanup() {
    for pid in $PROM_PID $OURS_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            wait "$pid" || true
        fi
    done
    if [[ ${KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    else
        echo "kept $WORK" >&2
    fi
}
trap cleanup EXIT

log() { echo "== $(date -u +%T) $*" >&2; }
# wait_http URL: waits (up to 120 s) until URL answers 200.
wait_http() {
    for _ in $(seq 240); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.5
    done
    echo "no answer from $1" >&2
    return 1
}

log "building (release)"
# Two builds: with `--example`, cargo builds only the named targets, not the server binary.
cargo build --release -p fleetmon --bin fleetmon >&2
cargo build --release -p fleetmon-tsdb --example fleet_vs_vm >&2
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
FLEET="$TARGET/examples/fleet_vs_vm"

log "dataset: $FLEET_DEVICES devices × 30 series, $FLEET_HOURS h at $FLEET_STEP_S s"
"$FLEET" openmetrics "$WORK/data.om" >"$WORK/om.txt"
log "promtool create-blocks-from openmetrics"
promtool tsdb create-blocks-from openmetrics "$WORK/data.om" "$WORK/prom" >&2
rm "$WORK/data.om"
log "fleetmon: loading DATA/tsdb with the tsdb crate"
"$FLEET" load "$WORK/fleetmon/tsdb" >"$WORK/load.txt"
cat "$WORK/load.txt" >&2

printf 'global:\n  evaluation_interval: 1m\n' >"$WORK/prometheus.yml"
/usr/bin/prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=10y \
    >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
"$TARGET/fleetmon" server --data-dir "$WORK/fleetmon" --http-listen "127.0.0.1:$FLEETMON_PORT" \
    --mqtt-listen "127.0.0.1:$MQTT_PORT" >"$WORK/fleetmon.log" 2>&1 &
OURS_PID=$!
wait_http "http://127.0.0.1:$PROM_PORT/-/ready"
wait_http "http://127.0.0.1:$FLEETMON_PORT/healthz"

END_S=$((FLEET_END_MS / 1000))
START_S=$((END_S - 24 * 3600))
log "queries: $QUERY_RUNS runs per class and side, range $START_S..$END_S"
echo "# $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# dataset: $FLEET_DEVICES devices × 30 series, $FLEET_HOURS h at $FLEET_STEP_S s; $(sed -n 's/^samples=//p' "$WORK/om.txt") samples"
python3 bench/promql-vs-prometheus/client.py "http://127.0.0.1:$PROM_PORT" \
    "http://127.0.0.1:$FLEETMON_PORT" "$START_S" "$END_S" "$QUERY_RUNS"
