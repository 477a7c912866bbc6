"""An HTTP/1.1 keep-alive backend for gateway tests, and the fixtures' handle to run it.

Run as `/usr/bin/python3 gateway_backend.py PORT NAME` it serves on 127.0.0.1:PORT. Every answer
carries `X-Backend: NAME` and `X-Conn: <client port>` (so a test can tell which instance answered
and whether the gateway reused its upstream connection); answers sent through send() also carry
`X-Path: <request target as received>`. Paths:

  /echo[...]          200, JSON: name, method, path (as received), headers (list of [name, value]),
                      body_len, body_sha256, conn
  /status/<N>         answers N with body "status N"
  /sleep/<secs>       sleeps, then 200
  /bytes/<N>          200 with N bytes (Content-Length), streamed in 64 KiB writes
  /chunked/<N>        200 with N bytes, Transfer-Encoding: chunked (64 KiB chunks)
  /close              200 with Connection: close, then closes
  /unframed/<N>       200 with N bytes and neither Content-Length nor chunked: the body ends with
                      the close, which follows the last byte at once
  /ws_goodbye         WebSocket-style upgrade: answers 101, sends "goodbye" and closes at once
  /coded              200 with Transfer-Encoding: gzip (no chunked) and some bytes, then closes
  /coded_chunked      200 with Transfer-Encoding: gzip, chunked (a gzip of "hello" in one chunk);
                      keeps the connection open
  /early              103 Early Hints (Link and Connection: x-hop, X-Hop: 1), then 200 "ok"
  /early_crash        103 Early Hints, then closes at once (no final answer)
  /ws                 WebSocket-style upgrade: answers 101, then echoes every byte back
  /ws_half/<tag>      upgrade: answers 101, sends "last word", shuts down its sending side (a
                      half-close), then reads to the client's close; /_half/<tag> then answers
                      JSON {"received": bytes read after the half-close, "sha256": their hash}
  /reject_early       answers 413 with Connection: close before reading the request body, and closes
  /early_close_later/<secs> answers 413 with Connection: close before reading the request body, then
                      neither reads nor closes for secs, then closes
  /reject_early_big   answers 413 with Connection: close and a 4 MiB body before reading the request
                      body, waits 1 s (so the answer is taken before the close resets it), closes
  /stall_upload/<secs> reads the head, then neither reads the body nor answers for secs, then closes
  /quiet_close        200 "ok" without Connection: close, then closes at once (the FIN in the same
                      segment as the answer's last bytes)
  /stale_later        200 "ok" (kept alive), then 30 ms later writes an unasked 200 "stale" and closes
  /overlong           200 with Content-Length: 2, and "ok" followed by an unasked 200 "stale" in the
                      same write (kept alive)
  /cut/<N>/<M>        200 announcing Content-Length N, sends M < N bytes, closes (FIN right behind)
  /cut_chunked/<M>    200 chunked, one chunk of M bytes, no last chunk, closes (FIN right behind)
  /unframed_reset/<N> 200 with N bytes and no framing, then a reset (RST), not a close
  /events/<N>/<gap>   200 chunked text/event-stream: N events, <gap> seconds apart (the first at once)
  /bad_chunk          200 chunked: a good chunk, then a chunk size "ZZ", in the head's write; closes
  /fields/<N>         200 "ok" whose head has N fields (Content-Length and N-1 X-F-<i>)
  /_count             JSON {"total": n, "conns": number of distinct client connections, "heads": request
                      heads received (counted before the body is read), "paths": the last 100
                      request targets received}, not counted
  /_set_status/<N>    every later counted request (but /_count, /_set_*) answers N (0: normal)
  /_set_delay/<secs>  every later counted request waits secs before it is answered (0: none)
  /_set_reset/<0|1|2> 1: every later counted request is read (body too), then (after the delay,
                      when one is set) the connection is closed without an answer; 2: the same for
                      every request but the first on its connection (a keep-alive timeout that
                      expires as each reused connection's next request arrives)
  anything else       200 "ok from NAME"

The body of any request is read fully (Content-Length or chunked) and hashed.
"""
import gzip
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


def _serve(port, name):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    state = {"total": 0, "conns": set(), "force": 0, "delay": 0.0, "reset": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The head and the body are separate writes: without TCP_NODELAY, Nagle holds the body
        # until the peer's delayed ACK (40 ms a request on a kept-alive connection).
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def read_body(self):
            h = hashlib.sha256()
            n = 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    line = self.rfile.readline()
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    left = size
                    while left:
                        chunk = self.rfile.read(min(left, 1 << 16))
                        h.update(chunk)
                        n += len(chunk)
                        left -= len(chunk)
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                    left -= len(chunk)
            return n, h.hexdigest()

        def send(self, code, body, ctype="text/plain", extra=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.send_header("X-Conn", str(self.client_address[1]))
            self.send_header("X-Path", self.path)
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def handle_any(self):
            if not self.path.lstrip("/").startswith("_"):
                with lock:  # request heads received, counted before the body is read
                    state["heads"] = state.get("heads", 0) + 1
                    state.setdefault("paths", []).append(self.path)
                    del state["paths"][:-100]
            path = self.path
            parts = path.split("?")[0].strip("/").split("/")
            if parts[0] == "reject_early":
                self.close_connection = True
                return self.send(413, b"too large", extra=[("Connection", "close")])
            if parts[0] == "reject_early_big":
                self.close_connection = True
                self.send(413, b"L" * (4 << 20), extra=[("Connection", "close")])
                self.wfile.flush()
                time.sleep(1)
                return
            if parts[0] in ("early_close_later", "stall_upload") and len(parts) > 1:
                if parts[0] == "early_close_later":
                    self.send(413, b"too large", extra=[("Connection", "close")])
                    self.wfile.flush()
                time.sleep(float(parts[1]))
                self.close_connection = True
                return
            if parts[0] == "overlong":
                self.read_body()
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: %s\r\nX-Conn: %d\r\n\r\nok"
                                 % (name.encode(), self.client_address[1]) +
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: stale\r\n\r\nstale")
                self.wfile.flush()
                return
            if parts[0] == "stale_later":
                self.read_body()
                self.send(200, b"ok")
                self.wfile.flush()
                conn = self.connection

                def unasked():
                    time.sleep(0.03)
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: stale\r\n\r\nstale")
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

                threading.Thread(target=unasked, daemon=True).start()
                return
            if parts[0] == "events" and len(parts) > 2:
                self.read_body()
                self.connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(int(parts[1])):
                    if i:
                        time.sleep(float(parts[2]))
                    event = b"data: %d\n\n" % i
                    self.connection.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                self.connection.sendall(b"0\r\n\r\n")
                return
            if parts[0] == "fields" and len(parts) > 1:
                self.read_body()
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"".join(
                    b"X-F-%d: v\r\n" % i for i in range(int(parts[1]) - 1))
                self.connection.sendall(head + b"\r\nok")
                return
            if parts[0] == "bad_chunk":
                self.read_body()
                self.close_connection = True
                self.connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"5\r\nhello\r\nZZ\r\nbad\r\n")
                return
            if parts[0] in ("cut", "cut_chunked") and len(parts) > 1:
                # Head, part of the body and the FIN in one go (one write, then the close at
                # once): the FIN is usually there by the time the gateway reads the bytes.
                self.read_body()
                self.close_connection = True
                if parts[0] == "cut":
                    data = b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n" % parts[1].encode() + b"c" * int(parts[2])
                else:
                    n = int(parts[1])
                    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % n + b"k" * n + b"\r\n"
                self.connection.sendall(data)
                self.connection.shutdown(socket.SHUT_WR)
                return
            if parts[0] == "unframed_reset" and len(parts) > 1:
                self.read_body()
                self.close_connection = True
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"r" * int(parts[1]))
                self.wfile.flush()
                time.sleep(0.2)  # the bytes are on their way; then a reset, not a FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()  # here: the server's own close would send a FIN first
                return
            body_len, body_sha = self.read_body()
            if parts[0] == "_half":
                with lock:
                    seen = state.setdefault("half", {}).get(parts[1])
                return self.send(200 if seen else 404, json.dumps(seen).encode(), "application/json")
            if parts[0] == "_count":
                with lock:
                    body = json.dumps({"total": state["total"], "conns": len(state["conns"]),
                                       "heads": state.get("heads", 0), "paths": state.get("paths", [])}).encode()
                return self.send(200, body, "application/json")
            if parts[0] == "_set_status":
                with lock:
                    state["force"] = int(parts[1])
                return self.send(200, b"set")
            if parts[0] in ("_set_delay", "_set_reset"):
                with lock:
                    if parts[0] == "_set_delay":
                        state["delay"] = float(parts[1])
                    else:
                        state["reset"] = int(parts[1])
                return self.send(200, b"set")
            with lock:
                state["total"] += 1
                state["conns"].add(self.client_address[1])
                force = state["force"]
                delay = state["delay"]
                reset = state["reset"] == 1 or (state["reset"] == 2 and getattr(self, "served_one", False))
            self.served_one = True  # one handler object serves every request of its connection
            if reset:
                if delay:
                    time.sleep(delay)  # a handler that works on the request, then dies
                self.close_connection = True
                return
            if delay:
                time.sleep(delay)
            if force:
                return self.send(force, f"forced {force}".encode())
            if parts[0] == "echo":
                body = json.dumps({"name": name, "method": self.command, "path": path,
                                   "headers": list(self.headers.items()), "body_len": body_len,
                                   "body_sha256": body_sha, "conn": self.client_address[1]}).encode()
                return self.send(200, body, "application/json")
            if parts[0] == "status" and len(parts) > 1:
                code = int(parts[1])
                return self.send(code, f"status {code}".encode())
            if parts[0] == "sleep" and len(parts) > 1:
                time.sleep(float(parts[1]))
                return self.send(200, b"slept")
            if parts[0] == "bytes" and len(parts) > 1:
                n = int(parts[1])
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.send_header("X-Backend", name)
                self.end_headers()
                block = b"x" * (1 << 16)
                while n > 0 and self.command != "HEAD":
                    self.wfile.write(block[: min(n, len(block))])
                    n -= min(n, len(block))
                return
            if parts[0] == "chunked" and len(parts) > 1:
                n = int(parts[1])
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("X-Backend", name)
                self.end_headers()
                block = b"y" * (1 << 16)
                while n > 0:
                    k = min(n, len(block))
                    self.wfile.write(b"%x\r\n" % k + block[:k] + b"\r\n")
                    n -= k
                self.wfile.write(b"0\r\n\r\n")
                return
            if parts[0] == "unframed" and len(parts) > 1:
                n = int(parts[1])
                self.close_connection = True  # the body ends with the connection (RFC 9112 6.3)
                self.send_response(200)
                self.send_header("X-Backend", name)
                self.end_headers()
                block = b"u" * (1 << 16)
                while n > 0:
                    k = min(n, len(block))
                    self.wfile.write(block[:k])
                    n -= k
                return
            if parts[0] == "early":
                self.send_response_only(103)
                self.send_header("Link", "</style.css>; rel=preload; as=style")
                self.send_header("Connection", "x-hop")
                self.send_header("X-Hop", "1")
                self.end_headers()
                self.wfile.flush()
                time.sleep(0.05)  # the service "works" after its hints
                return self.send(200, b"ok")
            if parts[0] == "early_crash":
                self.send_response_only(103)
                self.send_header("Link", "</style.css>; rel=preload; as=style")
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True  # the FIN right behind the hints: the service died
                return
            if parts[0] == "ws_half":
                self.send_response(101)
                self.send_header("Upgrade", self.headers.get("Upgrade", "websocket"))
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                sock = self.connection
                sock.sendall(b"last word")
                sock.shutdown(socket.SHUT_WR)
                h, n = hashlib.sha256(), 0
                sock.settimeout(30)
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    h.update(data)
                    n += len(data)
                with lock:
                    state.setdefault("half", {})[parts[1]] = {"received": n, "sha256": h.hexdigest()}
                self.close_connection = True
                return
            if parts[0] == "ws_goodbye":
                self.send_response(101)
                self.send_header("Upgrade", self.headers.get("Upgrade", "websocket"))
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                self.connection.sendall(b"goodbye")
                self.close_connection = True  # the FIN right behind the last bytes
                return
            if parts[0] == "coded_chunked":
                data = gzip.compress(b"hello")
                self.connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
                                        b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
                return
            if parts[0] == "coded":
                self.connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot-really-gzip")
                self.close_connection = True
                return
            if parts[0] == "quiet_close":
                self.close_connection = True
                # Corked: the answer and the FIN leave in one segment (the shutdown sends what
                # the cork held, FIN set), so no event of the FIN's own follows the answer's.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                self.send(200, b"ok")
                self.connection.shutdown(socket.SHUT_WR)  # the FIN now, not after the handler's return
                return
            if parts[0] == "close":
                self.close_connection = True
                return self.send(200, b"closing", extra=[("Connection", "close")])
            if parts[0] == "ws":
                self.send_response(101)
                self.send_header("Upgrade", self.headers.get("Upgrade", "websocket"))
                self.send_header("Connection", "Upgrade")
                self.send_header("X-Backend", name)
                self.end_headers()
                self.wfile.flush()
                sock = self.connection
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    sock.sendall(data)
                self.close_connection = True
                return
            return self.send(200, f"ok from {name}".encode())

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass

    srv = Server(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever(poll_interval=0.05)


class GatewayBackend:
    """A backend process on a loopback port, stopped by PID."""

    def __init__(self, port, name, log_dir):
        self.port = port
        self.name = name
        self.log_path = os.path.join(log_dir, f"backend-{name}-{port}.log")
        self.proc = None

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout=10):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, os.path.join(HERE, "gateway_backend.py"), str(self.port), self.name],
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

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc and not self.log.closed:
            self.log.close()

    def kill(self):
        self.stop(signal.SIGKILL)

    def counts(self):
        with urllib.request.urlopen(self.url("/_count"), timeout=10) as r:
            return json.loads(r.read())

    def force_status(self, code):
        with urllib.request.urlopen(self.url(f"/_set_status/{code}"), timeout=10) as r:
            r.read()

    def set_delay(self, seconds):
        with urllib.request.urlopen(self.url(f"/_set_delay/{seconds}"), timeout=10) as r:
            r.read()

    def set_reset(self, on=True, reused_only=False):
        mode = (2 if reused_only else 1) if on else 0
        with urllib.request.urlopen(self.url(f"/_set_reset/{mode}"), timeout=10) as r:
            r.read()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
