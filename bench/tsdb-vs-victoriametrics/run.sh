#!/usr/bin/env bash
# fleetmon's time-series engine (crate `fleetmon-tsdb`) against VictoriaMetrics, side by side,
# on one generated fleet dataset, in one run on this machine (issue 4's benchmark).
#
#   bench/tsdb-vs-victoriametrics/run.sh
#
# 1. builds `crates/tsdb/examples/fleet_vs_vm.rs` in release;
# 2. generates the dataset once as VictoriaMetrics `/api/v1/import` JSON lines (seeded, the
#    generator of the crate's benches: 334 devices × 30 series, 24 h at 10 s by default);
# 3. starts VictoriaMetrics (Debian package `victoria-metrics`) on 127.0.0.1:$VM_PORT, imports the
#    file, forces a flush and waits for merges, reads its data size, forces a merge (its
#    analogue of our compaction), runs the queries, reads its peak RSS, stops it and measures
#    its directory (it writes its in-memory parts at stop);
# 4. runs our side as a separate process (`fleet_vs_vm ours`), which regenerates the same
#    samples, appends them, flushes, compacts and runs the same queries;
# 5. prints a markdown table with ratios to VictoriaMetrics, and removes its work directory.
#
# Environment: FLEET_DEVICES, FLEET_HOURS, FLEET_STEP_S, FLEET_END_MS, FLEET_APPEND (ids | labels; see the example's docs),
# FLEET_QUERY_REPS (5; latencies are medians), VM_BIN (/usr/bin/victoria-metrics), VM_PORT
# (18428), WORK_DIR (a fresh directory under $TMPDIR; needs ~3 GB), KEEP=1 keeps it.
# Nothing but 127.0.0.1 is contacted.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
VM_BIN=${VM_BIN:-/usr/bin/victoria-metrics}
VM_PORT=${VM_PORT:-18428}
VM="http://127.0.0.1:$VM_PORT"
export FLEET_QUERY_REPS=${FLEET_QUERY_REPS:-5}
# Data ends at the last UTC midnight, so its one-day compaction window is closed for both.
export FLEET_END_MS=${FLEET_END_MS:-$(($(date -u +%s) / 86400 * 86400 * 1000))}
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/tsdb-vs-vm.XXXXXX")}
mkdir -p "$WORK"
VM_PID=

cleanup() {
    if [[ -n $VM_PID ]] && kill -0 "$VM_PID" 2>/dev/null; then
        kill "$VM_PID"
        wait "$VM_PID" || true
    fi
    if [[ ${KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    else
        echo "kept $WORK" >&2
    fi
}
trap cleanup EXIT

log() { echo "== $(date -u +%T) $*" >&2; }
now() { date +%s.%N; }
# kv FILE KEY: the value of KEY=... in FILE.
kv() { sed -n "s/^$2=//p" "$1" | head -n1; }
# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%s\", $1 }"; }
# vm_metric NAME: the sum of all of VictoriaMetrics's /metrics lines for NAME.
vm_metric() {
    curl -sS --fail "$VM/metrics" |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'
}
# vm_settle: waits (up to 300 s) until VictoriaMetrics has no pending rows and no active merges.
vm_settle() {
    local quiet=0
    for _ in $(seq 300); do
        if [[ $(vm_metric vm_active_merges) == 0 && $(vm_metric vm_pending_rows) == 0 ]]; then
            quiet=$((quiet + 1))
            [[ $quiet -ge 3 ]] && return 0
        else
            quiet=0
        fi
        sleep 1
    done
    echo "warning: VictoriaMetrics still merging after 300 s" >&2
}
# vm_query NAME ENDPOINT PARAMS...: runs a query FLEET_QUERY_REPS times (response cache off),
# prints NAME_ms=median and keeps the last response in $WORK/NAME.json.
vm_query() {
    local name=$1 endpoint=$2
    shift 2
    local args=()
    for p in "$@"; do args+=(--data-urlencode "$p"); done
    local times=()
    for _ in $(seq "$FLEET_QUERY_REPS"); do
        times+=("$(curl -sS --fail -G "$VM$endpoint" "${args[@]}" -d nocache=1 \
            -o "$WORK/$name.json" -w '%{time_total}')")
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    echo "${name}_ms=$(calc "$median * 1000")"
}

[[ -x $VM_BIN ]] || {
    echo "$VM_BIN not found: apt-get install -y victoria-metrics" >&2
    exit 1
}
if curl -s -o /dev/null "$VM/health"; then
    echo "something already listens on 127.0.0.1:$VM_PORT; set VM_PORT" >&2
    exit 1
fi

log "build"
cargo build --release -q -p fleetmon-tsdb --example fleet_vs_vm
example() { cargo run --release -q -p fleetmon-tsdb --example fleet_vs_vm -- "$@"; }

log "generate the dataset"
example json "$WORK/fleet.jsonl" >"$WORK/gen.txt"
# Write the file back now, so that neither side's ingest competes with its writeback.
sync "$WORK/fleet.jsonl"
SAMPLES=$(kv "$WORK/gen.txt" samples)
SERIES=$(kv "$WORK/gen.txt" series)
log "$SAMPLES samples, $SERIES series, $(kv "$WORK/gen.txt" json_bytes) bytes of JSON"

# ---- VictoriaMetrics ----
VMOUT=$WORK/vm.txt
: >"$VMOUT"
log "start VictoriaMetrics $("$VM_BIN" -version 2>&1 | head -n1)"
"$VM_BIN" -storageDataPath="$WORK/vm" -httpListenAddr="127.0.0.1:$VM_PORT" \
    -retentionPeriod=100y -search.latencyOffset=0 -loggerLevel=ERROR >"$WORK/vm.log" 2>&1 &
VM_PID=$!
for _ in $(seq 60); do
    curl -s -o /dev/null --fail "$VM/health" && break
    sleep 0.5
done
curl -sS -o /dev/null --fail "$VM/health"

log "import into VictoriaMetrics"
t0=$(now)
curl -sS --fail -H 'Expect:' -X POST -T "$WORK/fleet.jsonl" "$VM/api/v1/import"
t1=$(now)
echo "ingest_s=$(calc "$t1 - $t0")" >>"$VMOUT"
t0=$(now)
curl -sS --fail "$VM/internal/force_flush"
vm_settle
echo "flush_settle_s=$(calc "$(now) - $t0")" >>"$VMOUT"
echo "rows_added=$(vm_metric vm_rows_added_to_storage_total)" >>"$VMOUT"
# This VictoriaMetrics keeps recent parts in memory (force_flush does not write them; a
# graceful stop does), so after a flush only its own figure of its data size is meaningful.
echo "data_size_after_flush_bytes=$(vm_metric vm_data_size_bytes)" >>"$VMOUT"
echo "vmhwm_after_flush_bytes=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$VM_PID/status")" >>"$VMOUT"
rm -f "$WORK/fleet.jsonl"

log "force merge"
t0=$(now)
START_MS=$(kv "$WORK/gen.txt" start_ms)
for m in $(printf '%s\n' "$(date -u -d "@$((START_MS / 1000))" +%Y_%m)" \
    "$(date -u -d "@$((FLEET_END_MS / 1000 - 1))" +%Y_%m)" | sort -u); do
    curl -sS --fail "$VM/internal/force_merge?partition_prefix=$m"
done
sleep 1
vm_settle
echo "force_merge_s=$(calc "$(now) - $t0")" >>"$VMOUT"
echo "data_size_after_compact_bytes=$(vm_metric vm_data_size_bytes)" >>"$VMOUT"

log "query VictoriaMetrics"
END_S=$((FLEET_END_MS / 1000))
vm_query q_one_series /api/v1/query 'query=cpu_usage_ratio{device="dev-00007"}[24h]' "time=$END_S" >>"$VMOUT"
echo "q_one_series_result=$(jq '.data.result | "\(length) series, \([.[].values | length] | add) points"' -r "$WORK/q_one_series.json")" >>"$VMOUT"
vm_query q_device /api/v1/query 'query={device="dev-00007"}[24h]' "time=$END_S" >>"$VMOUT"
echo "q_device_result=$(jq '.data.result | "\(length) series, \([.[].values | length] | add) points"' -r "$WORK/q_device.json")" >>"$VMOUT"
vm_query q_fleet_avg /api/v1/query_range 'query=avg by (site) (avg_over_time(cpu_usage_ratio[1h]))' \
    "start=$((END_S - 7 * 86400))" "end=$END_S" step=3600 >>"$VMOUT"
echo "q_fleet_avg_result=$(jq '.data.result | "\(length) sites, \([.[].values | length] | add) points"' -r "$WORK/q_fleet_avg.json")" >>"$VMOUT"
vm_query q_last /api/v1/query 'query={__name__=~".+"}' "time=$END_S" >>"$VMOUT"
echo "q_last_result=$(jq '.data.result | "\(length) series"' -r "$WORK/q_last.json")" >>"$VMOUT"
echo "vmhwm_bytes=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$VM_PID/status")" >>"$VMOUT"
echo "rss_end_bytes=$(awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$VM_PID/status")" >>"$VMOUT"
log "stop VictoriaMetrics"
kill "$VM_PID"
wait "$VM_PID" || true
VM_PID=
# On disk after a graceful stop: data and index; its cache directory is counted apart.
echo "disk_after_compact_bytes=$(du -scb "$WORK/vm/data" "$WORK/vm/indexdb" | tail -n1 | cut -f1)" >>"$VMOUT"
echo "disk_cache_bytes=$(du -sb "$WORK/vm/cache" | cut -f1)" >>"$VMOUT"

# ---- fleetmon-tsdb ----
sync
log "load fleetmon-tsdb (separate process)"
OURS=$WORK/ours.txt
example ours "$WORK/ours" >"$OURS"
[[ $(kv "$OURS" samples) == "$SAMPLES" ]] || {
    echo "datasets differ" >&2
    exit 1
}

# ---- table ----
o() { kv "$OURS" "$1"; }
v() { kv "$VMOUT" "$1"; }
row() { # label ours vm format
    printf "| %s | $4 | $4 | %.2f |\n" "$1" "$2" "$3" "$(calc "$2 / $3")"
}
echo
echo "Dataset: $SERIES series ($(kv "$WORK/gen.txt" devices) devices × 30), $(kv "$WORK/gen.txt" points_per_series) points per series at $(kv "$WORK/gen.txt" step_s) s, $SAMPLES samples; $(kv "$WORK/gen.txt" json_bytes) bytes as import JSON."
echo "VictoriaMetrics rows added: $(v rows_added)."
echo
echo "| measure | fleetmon-tsdb | VictoriaMetrics | ours / VM |"
echo "|---|---|---|---|"
row "after flush: ours du of the data dir, VM vm_data_size_bytes; bytes/sample" "$(calc "$(o disk_after_flush_bytes) / $SAMPLES")" "$(calc "$(v data_size_after_flush_bytes) / $SAMPLES")" "%.3f"
row "after compaction / force merge + stop: du -sb (VM: data + indexdb); bytes/sample" "$(calc "$(o disk_after_compact_bytes) / $SAMPLES")" "$(calc "$(v disk_after_compact_bytes) / $SAMPLES")" "%.3f"
row "ingest, samples/s" "$(calc "$SAMPLES / $(o ingest_s)")" "$(calc "$SAMPLES / $(v ingest_s)")" "%.0f"
row "peak RSS (VmHWM) through ingest + flush, MiB" "$(calc "$(o vmhwm_after_flush_bytes) / 1048576")" "$(calc "$(v vmhwm_after_flush_bytes) / 1048576")" "%.1f"
row "the same per series, bytes" "$(calc "$(o vmhwm_after_flush_bytes) / $SERIES")" "$(calc "$(v vmhwm_after_flush_bytes) / $SERIES")" "%.0f"
row "peak RSS of the whole run (with compaction / force merge, queries), MiB" "$(calc "$(o vmhwm_bytes) / 1048576")" "$(calc "$(v vmhwm_bytes) / 1048576")" "%.1f"
row "one series, 24 h raw, ms" "$(o q_one_series_ms)" "$(v q_one_series_ms)" "%.2f"
row "one device's 30 series, 24 h raw, ms" "$(o q_device_ms)" "$(v q_device_ms)" "%.2f"
row "fleet cpu avg by site, 7 d, 1 h step, ms" "$(o q_fleet_avg_ms)" "$(v q_fleet_avg_ms)" "%.2f"
row "last value of every series, ms" "$(o q_last_ms)" "$(v q_last_ms)" "%.2f"
echo
echo "Results (ours | VM): one series $(o q_one_series_result) | $(v q_one_series_result);" \
    "device $(o q_device_result) | $(v q_device_result);" \
    "fleet avg $(o q_fleet_avg_result) | $(v q_fleet_avg_result);" \
    "last values $(o q_last_result) | $(v q_last_result)."
echo "ours: ingest $(o ingest_s) s, $(o append_samples) samples per append by $(o append_by), $(o ingest_background_flushes) background flushes meanwhile, $(o wal_syncs) fsyncs;" \
    "peak RSS after ingest (before the final flush) $(calc "$(o vmhwm_after_ingest_bytes) / 1048576") MiB;" \
    "blocks alone after flush $(calc "$(o blocks_after_flush_bytes) / $SAMPLES") B/sample;" \
    "final flush $(o final_flush_s) s; compaction $(o compact_s) s; head+index heap peak $(calc "$(o head_index_heap_peak_bytes) / $SERIES") B/series, mean $(calc "$(o head_index_heap_mean_bytes) / $SERIES") B/series;" \
    "rollup rows read by the fleet query $(o q_fleet_avg_rollup_rows_read)."
echo "VictoriaMetrics: import $(v ingest_s) s; force_flush + merges $(v flush_settle_s) s; force_merge $(v force_merge_s) s;" \
    "vm_data_size_bytes after force merge $(calc "$(v data_size_after_compact_bytes) / $SAMPLES") B/sample;" \
    "cache dir after stop $(calc "$(v disk_cache_bytes) / 1048576") MiB; peak RSS at end of run (VmRSS) $(calc "$(v rss_end_bytes) / 1048576") MiB."
