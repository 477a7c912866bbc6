"""The "web" service: greets and shows a quote fetched from the "quotes" service.

Plain Python 3 standard library. flotilla passes PORT, FLOTILLA_INSTANCE and QUOTES_URL (a stable
address of the quotes service through flotilla's gateway: any HTTP client works, no discovery
code needed)."""
import http.server
import json
import os
import sys
import urllib.request

PORT = int(os.environ["PORT"])
INSTANCE = os.environ.get("FLOTILLA_INSTANCE", "web")
QUOTES_URL = os.environ["QUOTES_URL"]
GREETING = os.environ.get("GREETING", "Hello")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, "text/plain", b"ok\n")
        if self.path != "/":
            return self.reply(404, "application/json", b'{"error": "no such path"}\n')
        try:
            with urllib.request.urlopen(QUOTES_URL + "/random", timeout=5) as r:
                quote = json.load(r)
        except Exception as e:  # the gateway already retried; say what happened
            return self.reply(502, "application/json", json.dumps({"error": f"quotes: {e}"}).encode() + b"\n")
        text = f"{GREETING} from {INSTANCE}! \"{quote['quote']}\" (from {quote['instance']})\n"
        self.reply(200, "text/plain; charset=utf-8", text.encode())

    def reply(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


print(f"{INSTANCE} listening on 127.0.0.1:{PORT}, quotes at {QUOTES_URL}", flush=True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
