#!/usr/bin/env python3
"""A small service for flotilla's end-to-end tests (Python 3, standard library only).

The contract every test service shares (py_service.py, test_service.cpp, shell_service.sh):
  listens on 127.0.0.1:$PORT (HTTP/1.1, keep-alive, Content-Length);
  GET /healthz   200 "ok"; 500 while $UNHEALTHY_FOR_MS has not elapsed since start, or while the
                 file named by $HEALTH_FILE exists (body: $UNHEALTHY_BODY_HEX decoded, or "unhealthy");
  GET /          200 {"instance": $FLOTILLA_INSTANCE, "service": $FLOTILLA_SERVICE,
                 "version": $VERSION, "pid": N}; the same with 500 when FAIL=1;
  GET /env       the whole environment as a JSON object;
  GET /slow?ms=N sleeps N ms, then answers like /;
  CRASH_AFTER_MS=N    exits with code 3 after N ms;
  FORK_CHILDREN=1     starts a background `sleep 1000` child and a `setsid sleep 1000` daemon at
                      start and prints "children PID1 PID2";
  prints "listening on $PORT" on stdout and "started" on stderr; SIGTERM: exits at once.
This one also answers GET /call?dep=NAME: GET ${NAME_URL}/ (NAME upper-cased, '-' -> '_') and
returns 200 {"via": <that JSON>}.
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = time.monotonic()
ENV = os.environ


def identity():
    return {"instance": ENV.get("FLOTILLA_INSTANCE", ""), "service": ENV.get("FLOTILLA_SERVICE", ""),
            "version": ENV.get("VERSION", ""), "pid": os.getpid()}


def healthy():
    unhealthy_ms = int(ENV.get("UNHEALTHY_FOR_MS", "0") or 0)
    if (time.monotonic() - START) * 1000 < unhealthy_ms:
        return False
    hf = ENV.get("HEALTH_FILE", "")
    return not (hf and os.path.exists(hf))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, fmt, *args):  # quiet: the tests read stdout/stderr for their own lines
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def identity_answer(self):
        self.send(500 if ENV.get("FAIL") == "1" else 200, identity())

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        if path == "/healthz":
            if healthy():
                self.send(200, "ok", "text/plain")
            else:
                # $UNHEALTHY_BODY_HEX: the failing answer's body as hex (bytes that are not UTF-8).
                body = bytes.fromhex(ENV.get("UNHEALTHY_BODY_HEX", "")) or b"unhealthy"
                self.send(500, body, "text/plain")
        elif path == "/":
            self.identity_answer()
        elif path == "/env":
            self.send(200, dict(ENV))
        elif path == "/slow":
            time.sleep(int(query.get("ms", ["0"])[0]) / 1000.0)
            self.identity_answer()
        elif path == "/call":
            dep = query.get("dep", [""])[0]
            var = dep.upper().replace("-", "_") + "_URL"
            base = ENV.get(var)
            if not base:
                self.send(502, {"error": f"no {var} in the environment"})
                return
            try:
                with urllib.request.urlopen(base.rstrip("/") + "/", timeout=10) as r:
                    self.send(200, {"via": json.loads(r.read())})
            except urllib.error.HTTPError as e:
                self.send(502, {"error": f"{base} answered {e.code}", "body": e.read().decode(errors="replace")})
            except OSError as e:
                self.send(502, {"error": f"{base}: {e}"})
        else:
            self.send(404, {"error": "not found", "path": path})

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    port = int(ENV["PORT"])
    server = Server(("127.0.0.1", port), Handler)
    if ENV.get("FORK_CHILDREN") == "1":
        child = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
        daemon = subprocess.Popen(["setsid", "sleep", "1000"], stdin=subprocess.DEVNULL)
        print(f"children {child.pid} {daemon.pid}", flush=True)
    crash = int(ENV.get("CRASH_AFTER_MS", "0") or 0)
    if crash > 0:
        def die():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
        t = threading.Timer(crash / 1000.0, die)
        t.daemon = True
        t.start()
    print(f"listening on {port}", flush=True)
    print("started", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
