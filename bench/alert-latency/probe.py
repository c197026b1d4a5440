"""Times threshold → webhook and connection loss → offline while the simulated fleet runs."""
import json, os, subprocess, sys, time, urllib.request

http, mqtt, simpid, spid, receipts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
base = f"http://127.0.0.1:{http}"
hz = os.sysconf("SC_CLK_TCK")

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz

def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")

def receipt(device, since):
    for line in open(receipts):
        t, name, dev, status = line.split()
        if name == "BenchThreshold" and dev == device and status == "firing" and float(t) >= since:
            return float(t)
    return None

time.sleep(60)  # warm-up: the fleet connects and the store fills
cpu0, t0 = cpu(spid), time.monotonic()
crossing, offline, evals = [], [], []
k = 0
while alive(simpid):
    k += 1
    dev = f"bench-{k}"
    # Threshold crossing over HTTP ingest.
    sent = time.time()
    batch = {"device": dev, "seq": 0, "samples": [{"metric": "bench_probe", "ts_ms": int(sent * 1000), "value": 2}]}
    req = urllib.request.Request(base + "/api/v1/ingest", data=json.dumps(batch).encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    while time.time() - sent < 30:
        got = receipt(dev, sent)
        if got:
            crossing.append(got - sent)
            break
        time.sleep(0.01)
    # Connection loss → offline.
    odev = f"offline-{k}"
    msg = json.dumps({"device": odev, "seq": 0, "samples": [{"metric": "up_probe", "ts_ms": int(time.time() * 1000), "value": 1}]})
    pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", mqtt, "-q", "1", "-i", odev,
                            "-t", f"fleetmon/v1/{odev}/telemetry", "-l"], stdin=subprocess.PIPE)
    pub.stdin.write((msg + "\n").encode()); pub.stdin.flush()
    while time.time() - sent < 60:
        try:
            if get(f"/api/v1/devices/{odev}")["status"] == "online":
                break
        except Exception:
            pass
        time.sleep(0.02)
    killed = time.time()
    pub.kill(); pub.wait()
    while time.time() - killed < 30:
        if get(f"/api/v1/devices/{odev}")["status"] == "offline":
            offline.append(time.time() - killed)
            break
        time.sleep(0.01)
    for g in get("/api/v1/rules")["groups"]:
        if g["name"].startswith("fleetmon-"):
            evals.append(g.get("evaluationTime", 0.0))
    time.sleep(2)

elapsed = time.monotonic() - t0
ms = lambda v: f"{v * 1000:.0f} ms"
print(f"threshold → webhook: n={len(crossing)} p50 {ms(pct(crossing, 50))} p99 {ms(pct(crossing, 99))} max {ms(max(crossing or [float('nan')]))}")
print(f"connection lost → offline: n={len(offline)} p50 {ms(pct(offline, 50))} p99 {ms(pct(offline, 99))}")
print(f"built-in group evaluation time: p50 {ms(pct(evals, 50))} p99 {ms(pct(evals, 99))} (per group, 7 groups)")
print(f"server CPU: {100 * (cpu(spid) - cpu0) / elapsed:.0f}% of one core over {elapsed:.0f} s")
