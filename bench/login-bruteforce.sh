#!/usr/bin/env bash
# Login brute force against fleetmon server: 1,000 wrong logins from one address (127.0.0.1,
# 20 at a time) while a legitimate operator, from another loopback address (127.0.0.2) and
# logged in with their own account, keeps reading the API. Reports how the wrong logins were
# answered (401 = the password was checked, 429 = throttled before any hashing), the server's
# CPU time for the attack, and the legitimate user's request latency (p50, p99) without and
# with the attack, plus whether they can still log in during it. A control run sends the same
# number of requests from the same load generator to /healthz, which separates what any load
# on this machine costs (the generator shares the cores) from what the logins cost.
# With PIN=1 the server and the timed client run on CPU 0 and the load generator alone on CPU 1
# (taskset), in the baseline as under load: the load's own threads never take a core from the
# server or the client, so what moves the client's p99 is the work the attack makes the server do.
# Usage: [PIN=1] bench/login-bruteforce.sh [ATTEMPTS] [CONCURRENCY] [LEGIT_REQUESTS]
# Everything stays on this machine's loopback; the loops are bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
attempts=${1:-1000}
concurrency=${2:-20}
requests=${3:-400}
bin=${FLEETMON_BIN:-target/release/fleetmon}
pin_server=(); pin_load=()
if [ "${PIN:-0}" = 1 ]; then pin_server=(taskset -c 0); pin_load=(taskset -c 0); fi
[ -n "${FLEETMON_BIN:-}" ] || cargo build --release -q -p fleetmon
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, $(uname -sr); binary: $bin; pinned: ${PIN:-0}"
printf '%s\n' "bench-password-0001" > "$work/pw"
"$bin" user add ops --role operator --data-dir "$work/data" --password-file "$work/pw" >/dev/null
"$bin" user add admin --admin --data-dir "$work/data" --password-file "$work/pw" >/dev/null
http=$(port); mqtt=$(port)
RUST_LOG=warn "${pin_server[@]}" "$bin" server --data-dir "$work/data" --http-listen "127.0.0.1:$http" \
  --mqtt-listen "127.0.0.1:$mqtt" >/dev/null &
spid=$!
until curl -sf "http://127.0.0.1:$http/healthz" >/dev/null; do sleep 0.1; done

cat > "$work/attack.py" <<'PY'
import http.client, json, sys, threading
port, attempts, concurrency = map(int, sys.argv[1:4])
control = len(sys.argv) > 4 and sys.argv[4] == "control"  # same load, GET /healthz instead
answers, lock, remaining = {}, threading.Lock(), [attempts]
def attacker():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while True:
        with lock:
            if remaining[0] == 0:
                return
            remaining[0] -= 1
            i = remaining[0]
        try:
            if control:
                c.request("GET", "/healthz")
            else:
                c.request("POST", "/api/v1/login", json.dumps({"user": "admin", "password": f"guess-{i:06d}"}),
                          {"Content-Type": "application/json"})
            r = c.getresponse(); r.read(); s = r.status
        except Exception:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); s = "error"
        with lock:
            answers[s] = answers.get(s, 0) + 1
threads = [threading.Thread(target=attacker) for _ in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({str(k): v for k, v in sorted(answers.items(), key=str)}))
PY

"${pin_load[@]}" python3 - "$http" "$attempts" "$concurrency" "$requests" "$spid" "$work/attack.py" <<'PY'
import http.client, json, os, subprocess, sys, time

port, attempts, concurrency, requests, spid = map(int, sys.argv[1:6])
attack_script = sys.argv[6]
hz = os.sysconf("SC_CLK_TCK")

def cpu():
    with open(f"/proc/{spid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz

def conn():
    return http.client.HTTPConnection("127.0.0.1", port, source_address=("127.0.0.2", 0), timeout=30)

def login(c, user, password):
    c.request("POST", "/api/v1/login", json.dumps({"user": user, "password": password}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    return r.status, r.getheader("Set-Cookie")

legit = conn()
status, cookie = login(legit, "ops", "bench-password-0001")
assert status == 200, status
cookie = cookie.split(";")[0]

def read():
    t = time.perf_counter()
    legit.request("GET", "/api/v1/fleet", headers={"Cookie": cookie})
    r = legit.getresponse(); r.read()
    assert r.status == 200, r.status
    return (time.perf_counter() - t) * 1000

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]

for _ in range(20):
    read()
base = [read() for _ in range(requests)]

# The load is its own process (no shared interpreter lock with the timed client); the
# legitimate user keeps reading for as long as it lasts, and at least REQUESTS times.
def under_load(mode):
    cpu0, t0 = cpu(), time.perf_counter()
    pin = ["taskset", "-c", "1"] if os.environ.get("PIN") == "1" else []
    p = subprocess.Popen(pin + [sys.executable, attack_script, str(port), str(attempts), str(concurrency), mode],
                         stdout=subprocess.PIPE, text=True)
    reads, login_status = [], None
    while p.poll() is None or len(reads) < requests:
        reads.append(read())
        if mode == "attack" and login_status is None and len(reads) == 10:
            login_status, _ = login(conn(), "ops", "bench-password-0001")
    return reads, p.communicate()[0].strip(), time.perf_counter() - t0, cpu() - cpu0, login_status

control, _, _, _, _ = under_load("control")
during, answers, attack_s, attack_cpu, status_during = under_load("attack")

print(f"attack: {attempts} wrong logins for 'admin' from 127.0.0.1, {concurrency} connections, "
      f"over {attack_s:.2f} s (with the reads after it); answers {answers}; server CPU {attack_cpu:.2f} s")
print(f"legitimate reads (GET /api/v1/fleet with a session, from 127.0.0.2):")
print(f"  without attack  {len(base):5d} reads  p50 {pct(base, .5):7.2f} ms  p99 {pct(base, .99):7.2f} ms")
print(f"  during attack   {len(during):5d} reads  p50 {pct(during, .5):7.2f} ms  p99 {pct(during, .99):7.2f} ms  "
      f"(p99 ratio {pct(during, .99) / pct(base, .99):.2f}x)")
print(f"  control: same load of {attempts} GET /healthz  {len(control):5d} reads  p50 {pct(control, .5):7.2f} ms  "
      f"p99 {pct(control, .99):7.2f} ms  (p99 ratio {pct(control, .99) / pct(base, .99):.2f}x)")
print(f"legitimate login from 127.0.0.2 during the attack: HTTP {status_during}")
PY
tail -n 3 "$work/data/audit.log" | cut -c1-200
kill "$spid"; wait "$spid" 2>/dev/null || true
