"""A webhook receiver: prints `<receipt unix time> <alertname> <device> <status>` per alert."""
import http.server, json, sys, time

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        t = time.time()
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        for a in body.get("alerts", []):
            l = a.get("labels", {})
            print(f"{t:.3f} {l.get('alertname')} {l.get('device')} {a.get('status')}", flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
