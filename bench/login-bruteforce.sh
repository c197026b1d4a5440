#!/usr/bin/env bash
# Login brute force against fleetmon server: 1,000 wrong logins from one address (127.0.0.1,
# 20 at a time) while a legitimate operator, from another loopback address (127.0.0.2) and
# logged in with their own account, keeps reading the API. Reports how the wrong logins were
# answered (401 = the password was checked, 429 = throttled before any hashing), the server's
# CPU time for the attack, and the legitimate user's request latency (p50, p99) without and
# with the attack, plus whether they can still log in during it.
# Usage: bench/login-bruteforce.sh [ATTEMPTS] [CONCURRENCY] [LEGIT_REQUESTS]
# Everything stays on this machine's loopback; the loops are bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
attempts=${1:-1000}
concurrency=${2:-20}
requests=${3:-400}
bin=${FLEETMON_BIN:-target/release/fleetmon}
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, $(uname -sr); binary: $bin"
printf '%s\n' "bench-password-0001" > "$work/pw"
"$bin" user add ops --role operator --data-dir "$work/data" --password-file "$work/pw" >/dev/null
"$bin" user add admin --admin --data-dir "$work/data" --password-file "$work/pw" >/dev/null
http=$(port); mqtt=$(port)
RUST_LOG=warn "$bin" server --data-dir "$work/data" --http-listen "127.0.0.1:$http" \
  --mqtt-listen "127.0.0.1:$mqtt" >/dev/null &
spid=$!
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done

python3 - "$http" "$attempts" "$concurrency" "$requests" "$spid" <<'PY'
import http.client, json, os, sys, threading, time

port, attempts, concurrency, requests, spid = map(int, sys.argv[1:6])
hz = os.sysconf("SC_CLK_TCK")

def cpu():
    with open(f"/proc/{spid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz

def conn(source):
    return http.client.HTTPConnection("127.0.0.1", port, source_address=(source, 0), timeout=30)

def login(c, user, password):
    body = json.dumps({"user": user, "password": password})
    c.request("POST", "/api/v1/login", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    return r.status, r.getheader("Set-Cookie")

legit = conn("127.0.0.2")
status, cookie = login(legit, "ops", "bench-password-0001")
assert status == 200, status
cookie = cookie.split(";")[0]

def timed_reads(n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        legit.request("GET", "/api/v1/fleet", headers={"Cookie": cookie})
        r = legit.getresponse()
        r.read()
        assert r.status == 200, r.status
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)

def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))]

timed_reads(20)  # warm up
base = timed_reads(requests)

answers = {}
lock = threading.Lock()
remaining = [attempts]

def attacker():
    c = conn("127.0.0.1")
    while True:
        with lock:
            if remaining[0] == 0:
                return
            remaining[0] -= 1
            i = remaining[0]
        try:
            s, _ = login(c, "admin", f"guess-{i:06d}")
        except Exception:
            c = conn("127.0.0.1")
            s = "error"
        with lock:
            answers[s] = answers.get(s, 0) + 1

cpu0, t0 = cpu(), time.perf_counter()
threads = [threading.Thread(target=attacker) for _ in range(concurrency)]
for t in threads:
    t.start()
during = timed_reads(requests)
status_during, _ = login(conn("127.0.0.2"), "ops", "bench-password-0001")
for t in threads:
    t.join()
attack_s, attack_cpu = time.perf_counter() - t0, cpu() - cpu0

print(f"attack: {attempts} wrong logins for 'admin' from 127.0.0.1, {concurrency} at a time, "
      f"done in {attack_s:.2f} s; answers {dict(sorted(answers.items(), key=str))}; "
      f"server CPU during the attack {attack_cpu:.2f} s")
print(f"legitimate reads (GET /api/v1/fleet from 127.0.0.2, {requests} each):")
print(f"  without attack  p50 {pct(base, .5):7.2f} ms  p99 {pct(base, .99):7.2f} ms")
print(f"  during attack   p50 {pct(during, .5):7.2f} ms  p99 {pct(during, .99):7.2f} ms  "
      f"(p99 ratio {pct(during, .99) / pct(base, .99):.2f}x)")
print(f"legitimate login from 127.0.0.2 during the attack: HTTP {status_during}")
PY
tail -n 3 "$work/data/audit.log" | cut -c1-200
kill "$spid"; wait "$spid" 2>/dev/null || true
