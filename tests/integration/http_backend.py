"""A tiny HTTP backend for health-check tests, and the handle the tests use to run it.

Run as a script (`/usr/bin/python3 http_backend.py PORT`) it serves on 127.0.0.1:PORT:

  ANY /code/<N>[/...]       answers status N, body "backend says <N>"
  ANY /sleep/<secs>[/...]   sleeps, then answers 200
  ANY /big/<bytes>[/...]    answers 200 with a body of that many bytes (big_body(n)); the header
                            goes out first, the body 20 ms later (as a server that flushes its
                            headers before it has produced the body)
  ANY /mode/<name>[/...]    answers the status last set for <name> (200 until set)
  ANY anything else         answers 200, body "ok"

and, not recorded:

  GET /_set/<name>/<N>      sets the status /mode/<name> answers
  GET /_log                 JSON list of the recorded requests: method, path, headers (list of
                            [name, value]), code (the status answered), t (time.monotonic())
  GET /_count               JSON {"total": n, "paths": {path: n}}

In tests, `Backend(port).start()` runs it as a separate process; `.kill()` sends SIGKILL to that
PID, `.stop()` SIGTERM. Every backend a test starts is stopped by PID.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


def big_body(n):
    """n bytes: a repeating 16-byte pattern for the first 4096, then a marker and filler."""
    head = ("0123456789abcdef" * 256)[: min(n, 4096)]
    tail = ("MARKER-BEYOND-4K-" * (n // 17 + 1))[: max(0, n - 4096)]
    return (head + tail).encode()


def _serve(port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    log = []
    counts = {}
    modes = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, code, body, record=True, pause=0.0):
            if record:
                with lock:
                    log.append({"method": self.command, "path": self.path, "headers": list(self.headers.items()),
                                "code": code, "t": time.monotonic()})
                    counts[self.path] = counts.get(self.path, 0) + 1
            try:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()  # unbuffered: the header is sent now
                if pause:
                    time.sleep(pause)
                if self.command != "HEAD":
                    self.wfile.write(body)
            except OSError:
                pass  # the prober gave up (timeout)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[0] == "_set" and len(parts) >= 3:
                with lock:
                    modes[parts[1]] = int(parts[2])
                return self.answer(200, b"set", record=False)
            if parts[0] == "_log":
                with lock:
                    body = json.dumps(log).encode()
                return self.answer(200, body, record=False)
            if parts[0] == "_count":
                with lock:
                    body = json.dumps({"total": sum(counts.values()), "paths": counts}).encode()
                return self.answer(200, body, record=False)
            if parts[0] == "code" and len(parts) >= 2:
                code = int(parts[1])
                return self.answer(code, f"backend says {code}".encode())
            if parts[0] == "sleep" and len(parts) >= 2:
                time.sleep(float(parts[1]))
                return self.answer(200, b"slept")
            if parts[0] == "big" and len(parts) >= 2:
                return self.answer(200, big_body(int(parts[1])), pause=0.02)
            if parts[0] == "mode" and len(parts) >= 2:
                with lock:
                    code = modes.get(parts[1], 200)
                return self.answer(code, f"mode {parts[1]} says {code}".encode())
            return self.answer(200, b"ok")

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass

    srv = Server(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever(poll_interval=0.05)


class Backend:
    """A backend process on a loopback port, stopped by PID."""

    def __init__(self, port, log_dir):
        self.port = port
        self.log_path = os.path.join(log_dir, f"backend-{port}.log")
        self.proc = None

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout=10):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, os.path.join(HERE, "http_backend.py"), str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("backend did not start")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL by PID; returns once the process is gone (its port refuses connections)."""
        return self._signal(signal.SIGKILL)

    def stop(self):
        return self._signal(signal.SIGTERM)

    def _signal(self, sig):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc and not self.log.closed:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def get(self, path):
        with urllib.request.urlopen(self.url(path), timeout=10) as r:
            return json.loads(r.read())

    def set_mode(self, name, code):
        with urllib.request.urlopen(self.url(f"/_set/{name}/{code}"), timeout=10) as r:
            r.read()

    def requests_log(self):
        return self.get("/_log")

    def counts(self):
        return self.get("/_count")


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
