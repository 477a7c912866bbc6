"""The gateway as an HTTP/1.1 proxy, end to end: routing, both sides of HTTP/1.1 (keep-alive,
pipelining, 100-continue, chunked and sized bodies streamed with flat memory, Upgrade), the
headers it adds and removes, the request shapes it refuses before anything reaches a backend,
and what it reports (/metrics, the access log).

Most tests share one `flotilla up` (module fixture `gw`, one worker so upstream pooling is
deterministic) with one backend per service; requests go through a raw-socket client, since
pipelining and malformed requests are beyond urllib.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Stack, wait_for
from gateway_backend import GatewayBackend

MiB = 1 << 20
GiB = 1 << 30

# ---- a raw HTTP/1.1 client ----


class Response:
    def __init__(self, version, status, reason, headers, body=b""):
        self.version, self.status, self.reason, self.headers, self.body = version, status, reason, headers, body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def echo_header(self, name):
        """A header as the backend saw it (from an /echo answer): list of values."""
        return [v for k, v in self.json()["headers"] if k.lower() == name.lower()]

    def __repr__(self):
        return f"<{self.version} {self.status} {self.headers} {self.body[:300]!r}>"


class Client:
    """One TCP connection to the gateway; every read is bounded by the socket timeout."""

    def __init__(self, port, timeout=10.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data.encode("latin-1") if isinstance(data, str) else data)

    def _fill(self, n=65536):
        try:
            chunk = self.sock.recv(n)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise EOFError(f"connection closed; unparsed bytes: {bytes(self.buf[:300])!r}")
        self.buf += chunk

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill(max(65536, min(n - len(self.buf), 4 * MiB)))
        return self._take(n)

    def read_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n")
        line = self._take(i)
        self._take(2)
        return line

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n\r\n")
        head = self._take(i).decode("latin-1")
        self._take(4)
        lines = head.split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
        return Response(version, int(status), reason[0] if reason else "", headers)

    def read_response(self, method="GET"):
        """One response; an interim 1xx (but 101) is returned as it is, without a body."""
        r = self.read_head()
        if 100 <= r.status < 200 or method == "HEAD" or r.status in (204, 304):
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if te is not None:
            assert te.lower() == "chunked", r
            r.body = self.read_chunked()
        elif cl is not None:
            r.body = self.read_exact(int(cl))
        else:
            r.body = self.read_to_close()
        return r

    def read_chunked(self):
        parts = []
        while True:
            size = int(self.read_line().split(b";")[0], 16)
            if size == 0:
                while self.read_line() != b"":
                    pass
                return b"".join(parts)
            parts.append(self.read_exact(size))
            assert self.read_exact(2) == b"\r\n"

    def read_to_close(self):
        while True:
            try:
                self._fill()
            except EOFError:
                return self._take(len(self.buf))

    def closed_by_peer(self, within=5.0):
        """True when the peer closes within `within` seconds (bytes arriving first are kept)."""
        deadline = time.monotonic() + within
        old = self.sock.gettimeout()
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    return False
                except ConnectionResetError:
                    return True
                if not chunk:
                    return True
                self.buf += chunk
            return False
        finally:
            self.sock.settimeout(old)


def request(method, target, host="main.test", headers=(), body=None, version="1.1"):
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body.encode() if isinstance(body, str) else body
    return data


def chunked(parts, trailer=b""):
    out = b""
    for i, p in enumerate(parts):
        ext = b";note=x" if i == 1 else b""
        out += b"%x%s\r\n%s\r\n" % (len(p), ext, p)
    return out + b"0\r\n" + trailer + b"\r\n"


# ---- memory of the flotilla process ----


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} missing")


class PeakRss:
    """Peak VmRSS (bytes) of a process while the block runs: VmHWM reset through clear_refs when
    allowed, and sampled every 20 ms in any case."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def __enter__(self):
        self.base = vm_kib(self.pid, "VmRSS") * 1024
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm = True
        except OSError:
            self.hwm = False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, vm_kib(self.pid, "VmRSS") * 1024)
            except (OSError, AssertionError):
                return
            self.stop.wait(0.02)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if self.hwm:
            self.peak = max(self.peak, vm_kib(self.pid, "VmHWM") * 1024)

    @property
    def growth(self):
        return self.peak - self.base


# ---- the shared stack ----

SERVICES = ["main", "exact", "apihost", "wild", "writer", "beta", "stripped", "api", "admin", "first", "second"]

GATEWAY_YAML = """gateway:
  listen: [{gw}]
  workers: 1
  access_log: @LOG@
  timeouts: {header: 1s}
  routes:
    - match: {host: main.test}
      service: main
    - match: {host: limited.test}
      service: main
      max_body: 1KiB
    - match: {path: /exact}
      service: exact
    - match: {host: api.example.com}
      service: apihost
    - match: {host: "*.wild.test"}
      service: wild
    - match: {path_prefix: /m, methods: [POST, PUT]}
      service: writer
    - match: {path_prefix: /m, headers: {x-variant: beta}}
      service: beta
    - match: {path_prefix: /strip}
      service: stripped
      strip_prefix: true
    - match: {path_prefix: /api}
      service: api
    - match: {path_prefix: /admin}
      service: admin
    - match: {path_prefix: /first}
      service: first
    - match: {path_prefix: /first/deeper}
      service: second
    - match: {path_prefix: /empty}
      service: empty
"""
MAIN_ROUTE = "0:main"
EMPTY_ROUTE = "12:empty"


class Env:
    pass


@pytest.fixture(scope="module")
def gw():
    d = tempfile.mkdtemp(prefix="flotilla-gwhttp-")
    env = Env()
    env.dir = d
    env.access_log = os.path.join(d, "access.log")
    backends = {}
    stack = None
    try:
        # Distinct ports (all bound at once while chosen), backends started in parallel; then each
        # must answer with its own name (a backend that lost its port to another would not).
        holders = [socket.socket() for _ in SERVICES]
        for h in holders:
            h.bind(("127.0.0.1", 0))
        ports = [h.getsockname()[1] for h in holders]
        for h in holders:
            h.close()
        with ThreadPoolExecutor(len(SERVICES)) as pool:
            for b in pool.map(lambda np: GatewayBackend(np[1], np[0], d).start(), zip(SERVICES, ports)):
                backends[b.name] = b
        for name, b in backends.items():
            with urllib.request.urlopen(b.url("/whoami"), timeout=10) as r:
                assert r.headers["X-Backend"] == name, f"port {b.port} is not backend {name}'s"
        sdir = os.path.join(d, "stack")
        os.makedirs(sdir)
        stack = Stack(sdir, GATEWAY_YAML.replace("@LOG@", env.access_log)).start()
        for name, b in backends.items():
            stack.register(name, b)
        env.stack, env.backends, env.port = stack, backends, stack.gw_port
        env.main = backends["main"]
        env.pid = stack.proc.pid
        yield env
    finally:
        rc = stack.stop() if stack else 0
        for b in backends.values():
            b.stop()
        log = stack.read_log() if stack else ""
        shutil.rmtree(d, ignore_errors=True)
        assert rc in (0, None), f"flotilla up exited with {rc} on SIGTERM:\n{log}"


def one(gw, data, method="GET", timeout=10.0):
    """Sends `data` on a fresh connection and reads one response."""
    with Client(gw.port, timeout) as c:
        c.send(data)
        return c.read_response(method)


def get(gw, target, host=None, headers=()):
    return one(gw, request("GET", target, host=host or f"127.0.0.1:{gw.port}", headers=headers))


# ---- routing ----


def routed(gw, target, host=None, method="GET", headers=()):
    r = one(gw, request(method, target, host=host or f"127.0.0.1:{gw.port}", headers=headers,
                        body=b"" if method in ("POST", "PUT") else None), method)
    return r.status, r.header("x-backend"), r.header("x-path")


def test_first_matching_route_wins(gw):
    # /first/deeper is also matched by the later, more specific route: the earlier one wins.
    assert routed(gw, "/first/deeper")[:2] == (200, "first")
    assert routed(gw, "/first")[:2] == (200, "first")
    # A route on host api.example.com comes after the exact /exact route.
    assert routed(gw, "/exact", host="api.example.com")[:2] == (200, "exact")
    assert routed(gw, "/other", host="api.example.com")[:2] == (200, "apihost")


def test_path_prefix_is_segment_aware_and_exact_path_is_exact(gw):
    assert routed(gw, "/api")[:2] == (200, "api")
    assert routed(gw, "/api/")[:2] == (200, "api")
    assert routed(gw, "/api/v1/users?x=1") == (200, "api", "/api/v1/users?x=1")
    assert routed(gw, "/apix")[0] == 404
    assert routed(gw, "/administrator")[0] == 404
    assert routed(gw, "/exact")[:2] == (200, "exact")
    assert routed(gw, "/exact?q=1") == (200, "exact", "/exact?q=1")
    assert routed(gw, "/exact/sub")[0] == 404
    assert routed(gw, "/exactly")[0] == 404


def test_host_exact_and_wildcard_port_ignored(gw):
    assert routed(gw, "/anything", host="api.example.com")[:2] == (200, "apihost")
    assert routed(gw, "/anything", host="api.example.com:8443")[:2] == (200, "apihost")
    assert routed(gw, "/anything", host="API.Example.COM")[:2] == (200, "apihost")
    assert routed(gw, "/anything", host="other.example.com")[0] == 404
    assert routed(gw, "/anything", host="a.wild.test")[:2] == (200, "wild")
    assert routed(gw, "/anything", host="x.y.wild.test:81")[:2] == (200, "wild")
    assert routed(gw, "/anything", host="wild.test")[0] == 404  # *.suffix needs a subdomain
    assert routed(gw, "/anything", host="notwild.test")[0] == 404
    # absolute-form: the target's authority is the host
    with Client(gw.port) as c:
        c.send(f"GET http://api.example.com/abs HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n")
        r = c.read_response()
    assert (r.status, r.header("x-backend"), r.header("x-path")) == (200, "apihost", "/abs")


def test_methods_and_header_match(gw):
    assert routed(gw, "/m/x", method="POST")[:2] == (200, "writer")
    assert routed(gw, "/m/x", method="PUT")[:2] == (200, "writer")
    assert routed(gw, "/m/x")[0] == 404  # GET: neither the method route nor (no header) the header route
    assert routed(gw, "/m/x", method="DELETE")[0] == 404
    assert routed(gw, "/m/x", headers=[("X-Variant", "beta")])[:2] == (200, "beta")
    assert routed(gw, "/m/x", headers=[("x-variant", "beta")])[:2] == (200, "beta")
    assert routed(gw, "/m/x", headers=[("X-Variant", "alpha")])[0] == 404
    assert routed(gw, "/m/x", headers=[("X-Variant", "betamax")])[0] == 404
    # A header sent twice is matched as its values joined with ",": neither copy alone wins.
    assert routed(gw, "/m/x", headers=[("X-Variant", "beta"), ("X-Variant", "alpha")])[0] == 404
    assert routed(gw, "/m/x", headers=[("X-Variant", "alpha"), ("x-variant", "beta")])[0] == 404
    # both would match: the first route wins
    assert routed(gw, "/m/x", method="POST", headers=[("X-Variant", "beta")])[:2] == (200, "writer")


def test_strip_prefix(gw):
    assert routed(gw, "/strip/echo/a?q=1") == (200, "stripped", "/echo/a?q=1")
    assert routed(gw, "/strip") == (200, "stripped", "/")
    assert routed(gw, "/strip/") == (200, "stripped", "/")
    assert routed(gw, "/stripped")[0] == 404


@pytest.mark.parametrize("target,backend,upstream_path", [
    ("/api/../admin", "admin", "/admin"),
    ("/api/%2e%2e/admin", "admin", "/admin"),
    ("/api/%2E%2E/admin", "admin", "/admin"),
    ("/api/.%2e/admin/x", "admin", "/admin/x"),
    ("/api/./../admin", "admin", "/admin"),
    ("/../../admin", "admin", "/admin"),
    ("//admin", "admin", "/admin"),
    ("/admin//x///y", "admin", "/admin/x/y"),
    ("/%61dmin/x", "admin", "/admin/x"),
    ("/admin/../api/v1", "api", "/api/v1"),
    ("/a/b/../../api", "api", "/api"),
    # Raw characters a URI cannot hold (curl -g sends them so) are escaped as browsers send them.
    ("/admin/{id}/a|b", "admin", "/admin/%7Bid%7D/a%7Cb"),
    ("/admin/%7bid%7d", "admin", "/admin/%7Bid%7D"),
])
def test_path_normalised_before_matching(gw, target, backend, upstream_path):
    assert routed(gw, target) == (200, backend, upstream_path)


@pytest.mark.parametrize("target", ["/api/..", "/api/../adminx", "/exact/../nothing", "/%2e%2e/x"])
def test_normalised_path_without_route_is_404(gw, target):
    assert routed(gw, target)[0] == 404


def test_no_route_is_404_json(gw):
    r = get(gw, "/nowhere/at/all")
    assert r.status == 404
    assert r.header("content-type") == "application/json"
    body = r.json()
    assert body["error"] and body["path"] == "/nowhere/at/all"
    # The gateway's own answers carry a Date (RFC 9110 6.6.1), in IMF-fixdate form.
    import email.utils
    from datetime import datetime, timezone
    date = r.header("date")
    assert date and date.endswith(" GMT") and len(date) == 29, date
    assert abs((email.utils.parsedate_to_datetime(date) - datetime.now(timezone.utc)).total_seconds()) < 5, date


def test_refusal_on_keepalive_connection_is_answered_once(gw):
    # A 404 or 503 the gateway answers itself leaves the connection usable, for the next request only.
    with Client(gw.port) as c:
        c.send(request("GET", "/nowhere", host=f"127.0.0.1:{gw.port}"))
        assert c.read_response().status == 404
        c.send(request("GET", "/empty/x", host=f"127.0.0.1:{gw.port}"))
        assert c.read_response().status == 503
        c.send(request("GET", "/api/after", host=f"127.0.0.1:{gw.port}"))
        r = c.read_response()
        assert (r.status, r.header("x-backend"), r.header("x-path")) == (200, "api", "/api/after")
        assert not c.closed_by_peer(0.3)
        assert c.buf == b"", "more answers than requests"


def test_refusal_of_a_small_body_sent_whole_keeps_the_connection(gw):
    # The body came with the head: it is dropped (never read as a request) and the connection
    # stays usable. A body still on its way closes it (test_a_refused_upload_is_answered_not_reset).
    hidden = request("GET", "/api/hidden", host=f"127.0.0.1:{gw.port}")
    with Client(gw.port) as c:
        c.send(request("POST", "/nowhere", host=f"127.0.0.1:{gw.port}", body=hidden))
        r = c.read_response("POST")
        assert r.status == 404 and r.header("connection") is None, r
        c.send(request("POST", "/api/after", host=f"127.0.0.1:{gw.port}", body=b"x" * 100))
        r = c.read_response("POST")
        assert (r.status, r.header("x-backend"), r.header("x-path")) == (200, "api", "/api/after"), r
        assert not c.closed_by_peer(0.3)
        assert c.buf == b"", "more answers than requests"


@pytest.mark.parametrize("target,status", [("/nowhere", 404), ("/empty/x", 503)])
def test_refusal_of_a_body_still_arriving_keeps_the_connection(gw, target, status):
    # A refused request's sized body that comes after its head (beyond the first read) is read
    # and dropped after the answer, as nginx does: the connection stays usable, and nothing of
    # the body is ever read as a request. It used to close once the body passed ~2 KiB.
    tag = uuid.uuid4().hex
    hidden = f"GET /hidden-{tag} HTTP/1.1\r\nHost: main.test\r\n\r\n".encode()
    body = (hidden + b"x" * 1000) * 200  # 200 KiB and more
    host = f"127.0.0.1:{gw.port}"
    with Client(gw.port, timeout=10) as c:
        c.send(request("POST", target, host=host, headers=[("Content-Length", str(len(body)))]))
        for i in range(0, len(body), 50_000):
            time.sleep(0.05)
            c.send(body[i:i + 50_000])
        r = c.read_response("POST")
        assert r.status == status and r.header("connection") is None, r
        c.send(request("GET", "/api/after", host=host))
        r = c.read_response()
        assert (r.status, r.header("x-backend"), r.header("x-path")) == (200, "api", "/api/after"), r
        assert not c.closed_by_peer(0.3)
        assert c.buf == b"", "more answers than requests"
    with urllib.request.urlopen(gw.main.url("/_count"), timeout=10) as resp:
        assert not [p for p in json.loads(resp.read())["paths"] if tag in p]


@pytest.mark.parametrize("case", ["over_1MiB", "expect_continue", "too_large_413", "never_sent"])
def test_refusal_closes_when_the_body_is_big_awaited_or_too_large(gw, case):
    # What is not dropped closes the connection after the answer: more than 1 MiB still to
    # come, a body the client holds back for a 100 Continue it will not get, a 413 (the client
    # sends more than the route takes), and a body that never comes (after timeouts.header).
    host = f"127.0.0.1:{gw.port}"
    headers = [("Content-Length", str(2 * MiB if case == "over_1MiB" else 5000))]
    if case == "expect_continue":
        headers.append(("Expect", "100-continue"))
    with Client(gw.port, timeout=10) as c:
        c.send(request("POST", "/echo/big" if case == "too_large_413" else "/nowhere",
                       host="limited.test" if case == "too_large_413" else host, headers=headers))
        if case == "over_1MiB":
            c.send(b"y" * 100_000)
        r = c.read_response("POST")
        assert r.status == (413 if case == "too_large_413" else 404), r
        if case == "never_sent":
            assert r.header("connection") is None, r  # kept, until the body is overdue
            assert c.closed_by_peer(within=5)
        else:
            assert "close" in r.header("connection", "").lower(), r
            assert c.closed_by_peer(within=5)
        assert c.buf == b"", "more answers than requests"


def test_service_without_instance_is_503_json(gw):
    r = get(gw, "/empty/x")
    assert r.status == 503
    assert r.header("content-type") == "application/json"
    assert r.json()["service"] == "empty"


# ---- HTTP/1.1, both sides ----


def test_upstream_connections_reused_within_and_across_client_connections(gw):
    before = gw.main.counts()["conns"]
    conns = []
    with Client(gw.port) as c:
        for i in range(5):
            c.send(request("GET", f"/echo?i={i}"))
            r = c.read_response()
            assert r.status == 200
            conns.append(r.header("x-conn"))
    for i in range(3):
        with Client(gw.port) as c:
            c.send(request("GET", f"/echo?j={i}"))
            r = c.read_response()
            assert r.status == 200
            conns.append(r.header("x-conn"))
    assert len(set(conns)) == 1, conns
    assert gw.main.counts()["conns"] - before <= 1


def test_http10_client_without_keepalive_is_closed(gw):
    with Client(gw.port) as c:
        c.send(request("GET", "/echo/ten", version="1.0"))
        r = c.read_response()
        # RFC 9110 §6.2: the server's highest minor version, as nginx and Envoy answer.
        assert r.status == 200 and r.version == "HTTP/1.1" and r.header("connection") == "close", r
        assert r.json()["path"] == "/echo/ten"
        assert c.closed_by_peer(5)


def test_http10_client_with_keepalive(gw):
    with Client(gw.port) as c:
        for i in range(3):
            c.send(request("GET", f"/echo/ka{i}", version="1.0", headers=[("Connection", "keep-alive")]))
            r = c.read_response()
            assert r.status == 200 and r.version == "HTTP/1.1", r
            assert r.header("connection", "").lower() == "keep-alive"
            assert r.json()["path"] == f"/echo/ka{i}"
        assert not c.closed_by_peer(0.3)


def test_http10_client_gets_chunked_response_decoded(gw):
    n = 3 * 65536 + 77
    with Client(gw.port) as c:
        c.send(request("GET", f"/chunked/{n}", version="1.0", headers=[("Connection", "keep-alive")]))
        r = c.read_head()
        assert r.status == 200 and r.header("transfer-encoding") is None, r
        body = c.read_to_close()  # an HTTP/1.0 client gets the body up to the close
    assert body == b"y" * n


def test_a_higher_http1_minor_version_is_served_as_http11(gw):
    # RFC 9110 §2.5: HTTP/1.2 is processed as HTTP/1.1 (kept alive, forwarded as 1.1); HTTP/2.0
    # in an HTTP/1 request line is not HTTP/1: 505.
    with Client(gw.port) as c:
        for i in range(2):
            c.send(request("GET", f"/echo/v12-{i}", version="1.2"))
            r = c.read_response()
            assert r.status == 200 and r.version == "HTTP/1.1", r
            assert r.json()["path"] == f"/echo/v12-{i}"
        assert not c.closed_by_peer(0.3)
    assert one(gw, request("GET", "/echo/v2", version="2.0")).status == 505


def test_connection_close_honoured(gw):
    with Client(gw.port) as c:
        c.send(request("GET", "/echo", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200
        assert r.header("connection", "").lower() == "close"
        assert c.closed_by_peer(5)


def test_keepalive_default_and_upstream_close_does_not_close_client(gw):
    with Client(gw.port) as c:
        c.send(request("GET", "/close"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"closing"
        assert "close" not in r.header("connection", "").lower()
        first = r.header("x-conn")
        c.send(request("GET", "/echo"))
        r = c.read_response()
        assert r.status == 200
        assert r.header("x-conn") != first  # that upstream connection was closed, not reused
        assert not c.closed_by_peer(0.3)


def test_pipelined_requests_answered_in_order(gw):
    reqs = (request("GET", "/echo?n=1")
            + request("GET", "/bytes/300000")
            + request("POST", "/echo?n=3", body=b"hello pipeline")
            + request("HEAD", "/bytes/1000")
            + request("PUT", "/echo?n=5", headers=[("Transfer-Encoding", "chunked")], body=chunked([b"abc", b"de"]))
            + request("GET", "/echo?n=6"))
    with Client(gw.port) as c:
        c.send(reqs)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        r4 = c.read_response("HEAD")
        r5 = c.read_response()
        r6 = c.read_response()
    assert r1.json()["path"] == "/echo?n=1"
    assert r2.status == 200 and r2.body == b"x" * 300000
    assert r3.json()["path"] == "/echo?n=3" and r3.json()["body_len"] == 14
    assert r4.status == 200 and r4.header("content-length") == "1000" and r4.body == b""
    assert r5.json()["path"] == "/echo?n=5" and r5.json()["body_len"] == 5
    assert r5.json()["body_sha256"] == hashlib.sha256(b"abcde").hexdigest()
    assert r6.json()["path"] == "/echo?n=6"


@pytest.mark.parametrize("size", [11, 200 * 1024])
def test_expect_100_continue(gw, size):
    body = os.urandom(size)
    with Client(gw.port, timeout=5) as c:
        c.send(request("POST", "/echo/expect", headers=[("Expect", "100-continue"), ("Content-Length", str(size))]))
        interim = c.read_response()  # nothing of the body sent yet: the gateway must say 100 first
        assert interim.status == 100, interim
        c.send(body)
        r = c.read_response()
    assert r.status == 200
    echo = r.json()
    assert echo["body_len"] == size and echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body_reaches_backend_exactly(gw):
    rnd = os.urandom(400_000)
    sizes = [1, 7, 4096, 65536, 100_000, 1, 3]
    parts, at = [], 0
    for s in sizes:
        parts.append(rnd[at:at + s])
        at += s
    parts.append(rnd[at:])
    data = request("POST", "/echo/chunked", headers=[("Transfer-Encoding", "chunked")],
                   body=chunked(parts, trailer=b"X-Trailer: t\r\n"))
    with Client(gw.port) as c:
        # in pieces, split inside chunk-size lines and data
        for i in range(0, len(data), 9973):
            c.send(data[i:i + 9973])
        r = c.read_response()
        assert r.status == 200
        echo = r.json()
        assert echo["body_len"] == len(rnd)
        assert echo["body_sha256"] == hashlib.sha256(rnd).hexdigest()
        # an empty chunked body, then the connection still works
        c.send(request("POST", "/echo/empty", headers=[("Transfer-Encoding", "chunked")], body=b"0\r\n\r\n"))
        r = c.read_response()
        assert r.json()["body_len"] == 0
        c.send(request("GET", "/echo/after"))
        assert c.read_response().json()["path"] == "/echo/after"


def test_chunked_response_identical_bytes(gw):
    n = 5 * 65536 + 12345
    with Client(gw.port) as c:
        c.send(request("GET", f"/chunked/{n}"))
        r = c.read_response()
        assert r.status == 200 and r.header("transfer-encoding", "").lower() == "chunked"
        assert r.body == b"y" * n
        # the framing ended where it should: the connection carries the next request
        c.send(request("GET", "/chunked/0"))
        r = c.read_response()
        assert r.status == 200 and r.body == b""
        c.send(request("GET", "/echo/next"))
        assert c.read_response().json()["path"] == "/echo/next"


def test_head_request(gw):
    with Client(gw.port) as c:
        c.send(request("HEAD", "/bytes/123456"))
        r = c.read_response("HEAD")
        assert r.status == 200 and r.header("content-length") == "123456"
        c.send(request("GET", "/echo/after-head"))
        r = c.read_response()  # a body left over from HEAD would be read as this response
        assert r.status == 200 and r.json()["path"] == "/echo/after-head"


def test_1gib_upload_streams_with_flat_memory(gw):
    base_block = os.urandom(MiB)
    h = hashlib.sha256()
    with Client(gw.port, timeout=30) as c, PeakRss(gw.pid) as mem:
        c.send(request("PUT", "/echo/upload", headers=[("Content-Length", str(GiB))]))
        for i in range(GiB // MiB):
            block = i.to_bytes(8, "big") + base_block[8:]
            h.update(block)
            c.sock.sendall(block)
        r = c.read_response()
    assert r.status == 200, r
    echo = r.json()
    assert echo["body_len"] == GiB
    assert echo["body_sha256"] == h.hexdigest()
    assert mem.growth < 64 * MiB, f"RSS grew by {mem.growth / MiB:.1f} MiB during a 1 GiB upload"


def test_1gib_download_streams_with_flat_memory(gw):
    got = 0
    bad = 0
    buf = bytearray(MiB)
    view = memoryview(buf)
    with Client(gw.port, timeout=30) as c, PeakRss(gw.pid) as mem:
        c.send(request("GET", f"/bytes/{GiB}"))
        r = c.read_head()
        assert r.status == 200 and r.header("content-length") == str(GiB)
        got = len(c.buf)
        bad += len(c.buf) - c.buf.count(b"x")
        c.buf.clear()
        while got < GiB:
            n = c.sock.recv_into(view, min(MiB, GiB - got))
            assert n > 0, f"closed after {got} bytes"
            bad += n - buf.count(b"x", 0, n)
            got += n
    assert got == GiB and bad == 0
    assert mem.growth < 64 * MiB, f"RSS grew by {mem.growth / MiB:.1f} MiB during a 1 GiB download"


def test_slow_reader_gets_backpressure_not_buffering(gw):
    size = 512 * MiB
    with Client(gw.port, timeout=10, rcvbuf=64 * 1024) as c, PeakRss(gw.pid) as mem:
        c.send(request("GET", f"/bytes/{size}"))
        r = c.read_head()
        assert r.status == 200
        time.sleep(2.0)  # not reading at all: a buffering gateway would take in hundreds of MiB now
        got = len(c.buf)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # then reading slowly
            got += len(c.sock.recv(16 * 1024))
            time.sleep(0.01)
        assert got > 0
    assert mem.growth < 64 * MiB, f"RSS grew by {mem.growth / MiB:.1f} MiB behind a slow reader"
    assert get(gw, "/echo", host="main.test").status == 200


def test_idle_connections_keep_no_memory_of_a_large_request(gw):
    # A request with a 50 KiB head (forwarded, and logged: the gw stack has an access log) must
    # not leave its copies pinned to the connection once it is idle: 300 such connections would
    # otherwise hold ~15 MiB.
    n, big = 300, "b" * (50 * 1024)
    clients = [Client(gw.port, timeout=10) for _ in range(n)]
    try:
        for i, c in enumerate(clients):  # every connection's own allocations made first
            c.send(request("GET", f"/echo/small{i}"))
            assert c.read_response().status == 200
        before = vm_kib(gw.pid, "VmRSS")
        for i, c in enumerate(clients):  # one at a time: freed memory is reused by the next
            c.send(request("GET", f"/echo/big{i}/" + "p" * 4000, headers=[("X-Big", big)]))
            r = c.read_response()
            assert r.status == 200, r
        growth = vm_kib(gw.pid, "VmRSS") - before
        # AddressSanitizer keeps freed memory in quarantine (hundreds of MiB): RSS says nothing
        # there; the Release run checks it.
        if not os.environ.get("FLOTILLA_SANITIZED"):
            assert growth < 4 * 1024, f"RSS grew by {growth} KiB for {n} idle connections"
        for c in clients[:3]:  # still usable
            c.send(request("GET", "/echo/again"))
            assert c.read_response().status == 200
    finally:
        for c in clients:
            c.close()


def test_a_connection_waiting_for_its_next_request_holds_no_buffer(gw):
    # Between requests a keep-alive connection holds neither a read buffer nor the request's
    # parser and strings (all lent per request by the worker): a few thousand idle clients must
    # not cost megabytes (it was 7.3 KiB per connection, 2 KiB of it the read buffer).
    n = 600
    warm = [Client(gw.port, timeout=10) for _ in range(20)]  # the worker's pools exist first
    clients = []
    try:
        for c in warm:
            c.send(request("GET", "/echo/warm", headers=[("Cookie", "c" * 3000)]))
            assert c.read_response().status == 200
        before = vm_kib(gw.pid, "VmRSS")
        for i in range(n):
            c = Client(gw.port, timeout=10)
            clients.append(c)
            c.send(request("GET", f"/echo/idle{i}", headers=[("Cookie", "c" * 3000)]))
            assert c.read_response().status == 200
        per_connection = (vm_kib(gw.pid, "VmRSS") - before) / n
        if not os.environ.get("FLOTILLA_SANITIZED"):  # ASan's quarantine and redzones: no bound there
            assert per_connection < 4.5, f"{per_connection:.2f} KiB per idle connection"
        for c in clients[:3] + clients[-3:]:  # and each still answers
            c.send(request("GET", "/echo/again"))
            assert c.read_response().status == 200
    finally:
        for c in warm + clients:
            c.close()


def test_websocket_upgrade_tunnelled(gw):
    with Client(gw.port, timeout=5) as c:
        c.send(request("GET", "/ws", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                              ("Sec-WebSocket-Version", "13")]))
        r = c.read_head()
        assert r.status == 101, r
        assert r.header("upgrade", "").lower() == "websocket"
        assert "upgrade" in r.header("connection", "").lower()
        for msg in (b"hello", b"\x00\x01binary\xff", os.urandom(100_000)):
            c.send(msg)
            assert c.read_exact(len(msg)) == msg
        assert c.buf == b""


@pytest.mark.parametrize("protocols", ["h2c", "H2C", "websocket, h2c"])
def test_h2c_upgrade_is_not_tunnelled(gw, protocols):
    # A tunnelled h2c connection would carry HTTP/2 requests past routing and rate limits
    # ("h2c smuggling"): the request is forwarded as a plain one, without its Upgrade.
    with Client(gw.port) as c:
        c.send(request("GET", "/echo/h2c", headers=[("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", protocols),
                                                    ("HTTP2-Settings", "AAMAAABkAAQAAP__")]))
        r = c.read_response()
        assert r.status == 200, r
        seen = {k.lower() for k, _ in r.json()["headers"]}
        assert "upgrade" not in seen and "http2-settings" not in seen, r.json()["headers"]
        c.send(request("GET", "/echo/after"))  # still HTTP/1.1 on the same connection
        assert c.read_response().json()["path"] == "/echo/after"


def test_early_hints_reach_an_http11_client(gw):
    # A proxy forwards 1xx answers (RFC 9110 15.2): 103 lets a browser preload while the service
    # works. End-to-end fields only; the final answer follows on the same connection.
    with Client(gw.port) as c:
        for _ in range(2):
            c.send(request("GET", "/early"))
            hints = c.read_response()
            assert hints.status == 103, hints
            assert hints.header("link") == "</style.css>; rel=preload; as=style", hints
            assert hints.header("x-hop") is None and hints.header("connection") is None, hints
            final = c.read_response()
            assert final.status == 200 and final.body == b"ok", final
    # An HTTP/1.0 client cannot take interim answers: only the final one.
    with Client(gw.port) as c:
        c.send(request("GET", "/early", version="1.0"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok", r


def test_service_closing_after_early_hints_is_a_502_at_once(gw):
    # The service sends 103 and dies, its FIN right behind the hints: the gateway must see the
    # close at once (502, "closed the connection"), not wait for the route's 15 s timeout (504).
    with Client(gw.port, timeout=5) as c:
        started = time.monotonic()
        c.send(request("GET", "/early_crash"))
        r = c.read_response()
        hints = 0
        while r.status == 103:
            hints += 1
            r = c.read_response()
        assert r.status == 502, r
        assert time.monotonic() - started < 5, r
        # A GET is tried again after a reset, and the retry gets its 103 too: the client hears
        # one try's interim answers, not each try's.
        assert hints == 1, hints


def test_websocket_tunnel_ends_when_the_service_closes(gw):
    # The service's last bytes and its FIN arrive together: the client must get both at once,
    # not the bytes and then the close only when the idle timeout (60 s here) ends the tunnel.
    for i in range(5):
        with Client(gw.port, timeout=10) as c:
            c.send(request("GET", "/ws_goodbye", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                          ("Sec-WebSocket-Version", "13")]))
            assert c.read_head().status == 101
            assert c.read_to_close() == b"goodbye", i  # a lost close times out here instead


def test_websocket_tunnel_passes_on_a_service_half_close(gw):
    # The service shuts down its sending side and goes on reading (a half-close): the client gets
    # the service's last bytes and then the FIN, and what it sends after that still reaches the
    # service, until the client closes too. Closing the whole tunnel at the service's FIN would
    # lose those bytes.
    tag = f"half-{os.getpid()}-{time.monotonic_ns()}"
    payload = os.urandom(300_000)
    with Client(gw.port, timeout=10) as c:
        c.send(request("GET", f"/ws_half/{tag}", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                                           ("Sec-WebSocket-Version", "13")]))
        assert c.read_head().status == 101
        assert c.read_to_close() == b"last word"  # the FIN reached the client
        time.sleep(0.2)  # the tunnel must still be open the other way after the FIN went through
        c.sock.sendall(payload)
        c.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        seen = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(gw.main.url(f"/_half/{tag}"), timeout=10) as r:
                    seen = json.loads(r.read())
                    break
            except urllib.error.HTTPError as e:
                assert e.code == 404
                time.sleep(0.05)
    assert seen == {"received": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}, seen


@pytest.mark.parametrize("size", [5_000, 200_000, 1 << 20])
def test_unframed_response_ends_when_the_service_closes(gw, size):
    # Neither Content-Length nor chunked: the body ends with the service's close, and the gateway
    # then closes the client's connection. The FIN follows the last bytes at once, so it is often
    # there before the gateway has read them; it must still be seen (the idle timeout is 60 s here,
    # and the client's reads give up after 10).
    for i in range(3):
        with Client(gw.port, timeout=10) as c:
            c.send(request("GET", f"/unframed/{size}"))
            r = c.read_head()
            assert r.status == 200, r
            assert r.header("content-length") is None and r.header("transfer-encoding") is None, r
            assert "close" in r.header("connection", "").lower(), r
            body = c.read_to_close()
            assert len(body) == size and body == b"u" * size, (i, len(body))


def test_hop_by_hop_headers_removed(gw):
    r = one(gw, request("GET", "/echo/hop", headers=[
        ("Connection", "x-secret, keep-alive"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
        ("Proxy-Authorization", "Basic c2VjcmV0"), ("Proxy-Connection", "keep-alive"), ("Trailer", "X-T"),
        ("X-Kept", "yes")]))
    assert r.status == 200
    seen = {k.lower() for k, _ in r.json()["headers"]}
    for h in ("x-secret", "keep-alive", "te", "proxy-authorization", "proxy-connection", "trailer"):
        assert h not in seen, (h, r.json()["headers"])
    assert r.echo_header("connection") in ([], ["keep-alive"])  # the gateway's own hop, if any
    assert r.echo_header("x-kept") == ["yes"]


def test_forwarded_headers(gw):
    r = one(gw, request("GET", "/echo/fwd", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                     ("X-Forwarded-Proto", "https"),
                                                     ("X-Forwarded-Host", "evil.example")]))
    assert r.echo_header("x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert r.echo_header("x-forwarded-proto") == ["http"]
    assert r.echo_header("x-forwarded-host") == ["main.test"]
    r = one(gw, request("GET", "/echo/fwd2", host="main.test:8080"))
    assert r.echo_header("x-forwarded-for") == ["127.0.0.1"]
    assert r.echo_header("x-forwarded-host") == ["main.test:8080"]
    assert r.echo_header("host") == ["main.test:8080"]


def test_request_id_generated_or_preserved(gw):
    ids = []
    for _ in range(2):
        r = one(gw, request("GET", "/echo/rid"))
        v = r.echo_header("x-request-id")
        assert len(v) == 1 and re.fullmatch(r"[0-9a-f]{32}", v[0]), v
        ids.append(v[0])
    assert ids[0] != ids[1]
    r = one(gw, request("GET", "/echo/rid", headers=[("X-Request-Id", "client-id-42")]))
    assert r.echo_header("x-request-id") == ["client-id-42"]


TRACE_RE = r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})"


def test_traceparent_propagated_with_new_parent(gw):
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = one(gw, request("GET", "/echo/tp", headers=[("traceparent", f"00-{trace}-{parent}-01")]))
    v = r.echo_header("traceparent")
    assert len(v) == 1
    m = re.fullmatch(TRACE_RE, v[0])
    assert m, v
    assert m.group(1) == trace and m.group(2) != parent and m.group(2) != "0" * 16 and m.group(3) == "01"


@pytest.mark.parametrize("sent", [None, "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                                  "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
def test_traceparent_created_when_absent_or_invalid(gw, sent):
    seen = []
    for _ in range(2):
        r = one(gw, request("GET", "/echo/tp", headers=[("traceparent", sent)] if sent else []))
        v = r.echo_header("traceparent")
        assert len(v) == 1
        m = re.fullmatch(TRACE_RE, v[0])
        assert m, v
        assert m.group(1) != "0" * 32 and m.group(2) != "0" * 16
        seen.append(m.group(1))
    assert seen[0] != seen[1]  # a new trace each time
    if sent:
        assert sent[3:35] not in seen


# ---- hardening: refused before anything reaches the backend ----

BASE = "POST /echo/smuggle HTTP/1.1\r\nHost: main.test\r\n"
GBASE = "GET /echo/bad HTTP/1.1\r\nHost: main.test\r\n"

HARDENING = [
    ("cl_and_te", BASE + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    ("te_and_cl", BASE + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}),
    ("duplicate_cl_differing", BASE + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400}),
    ("duplicate_cl_list", BASE + "Content-Length: 5, 6\r\n\r\nhello!", {400}),
    ("cl_not_numeric", BASE + "Content-Length: 5x\r\n\r\nhello", {400}),
    ("cl_plus_sign", BASE + "Content-Length: +5\r\n\r\nhello", {400}),
    ("cl_negative", BASE + "Content-Length: -1\r\n\r\n", {400}),
    ("cl_overflow", BASE + "Content-Length: 99999999999999999999999\r\n\r\n", {400}),
    ("te_gzip", BASE + "Transfer-Encoding: gzip\r\n\r\n", {400, 501}),
    ("te_chunked_not_last", BASE + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te_chunked_twice", BASE + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te_two_fields", BASE + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("te_in_http10", "POST /echo/smuggle HTTP/1.0\r\nHost: main.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     {400}),
    ("te_xchunked", BASE + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    ("bad_chunk_size", BASE + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_0x", BASE + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_size_overflow", BASE + "Transfer-Encoding: chunked\r\n\r\n" + "f" * 17 + "\r\nhello\r\n0\r\n\r\n", {400, 413}),
    ("chunk_size_negative", BASE + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", {400}),
    ("chunk_data_too_long", BASE + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", {400}),
    ("obs_fold", GBASE + "X-A: 1\r\n  folded\r\n\r\n", {400}),
    ("nul_in_value", GBASE + "X-A: a\x00b\r\n\r\n", {400}),
    ("nul_in_name", GBASE + "X-\x00A: b\r\n\r\n", {400}),
    ("bare_cr_in_value", GBASE + "X-A: a\rb\r\n\r\n", {400}),
    ("bare_lf_in_head", GBASE + "X-A: a\nX-B: b\r\n\r\n", {400}),
    ("bare_lf_ending", "GET /echo/bad HTTP/1.1\nHost: main.test\n\n", {400}),
    ("space_before_colon", GBASE + "X-A : b\r\n\r\n", {400}),
    ("tab_before_colon", GBASE + "X-A\t: b\r\n\r\n", {400}),
    ("space_before_colon_cl", BASE + "Content-Length : 5\r\n\r\nhello", {400}),
    ("request_line_too_long", "GET /echo/" + "a" * 8200 + " HTTP/1.1\r\nHost: main.test\r\n\r\n", {414}),
    ("headers_too_large", GBASE + "".join(f"X-Big-{i}: {'v' * 2000}\r\n" for i in range(31)) + "\r\n", {431}),
    ("too_many_fields", GBASE + "".join(f"X-F{i}: v\r\n" for i in range(101)) + "\r\n", {431}),
    ("host_missing", "GET /echo/bad HTTP/1.1\r\nX-A: b\r\n\r\n", {400}),
    ("host_twice", GBASE + "Host: other.test\r\n\r\n", {400}),
    ("host_with_slash", "GET /echo/bad HTTP/1.1\r\nHost: main.test/x\r\n\r\n", {400}),
    ("host_with_userinfo", "GET /echo/bad HTTP/1.1\r\nHost: user@main.test\r\n\r\n", {400}),
    ("host_with_space", "GET /echo/bad HTTP/1.1\r\nHost: main .test\r\n\r\n", {400}),
    ("host_bad_port", "GET /echo/bad HTTP/1.1\r\nHost: main.test:99999\r\n\r\n", {400}),
    ("host_list", "GET /echo/bad HTTP/1.1\r\nHost: main.test,evil.test\r\n\r\n", {400}),
    ("body_over_max_by_cl", "POST /echo/big HTTP/1.1\r\nHost: limited.test\r\nContent-Length: 2048\r\n\r\n", {413}),
    ("body_over_max_one_chunk", "POST /echo/big HTTP/1.1\r\nHost: limited.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     "800\r\n", {413}),
    ("body_over_max_small_chunks", "POST /echo/big HTTP/1.1\r\nHost: limited.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     + "64\r\n" + "z" * 100 + "\r\n" + "64\r\n" + "z" * 100 + "\r\n" + "".join("64\r\n" + "z" * 100 + "\r\n" for _ in range(10)),
     {413}),
]


@pytest.mark.parametrize("name,raw,statuses", HARDENING, ids=[h[0] for h in HARDENING])
def test_refused_before_reaching_backend(gw, name, raw, statuses):
    before = gw.main.counts()
    with Client(gw.port, timeout=5) as c:
        c.send(raw.encode("latin-1"))
        r = c.read_response()
        assert r.status in statuses, r
        assert r.header("content-type") == "application/json"
        assert c.closed_by_peer(5), "the connection stays open after a refused request"
    after = gw.main.counts()
    assert after["total"] == before["total"], "a refused request reached the backend"
    assert after["heads"] == before["heads"], "a refused request's head reached the backend"
    # the refusal was the request's fault, not the gateway's state: a good request passes
    assert one(gw, request("GET", "/echo/ok")).status == 200


@pytest.mark.parametrize("late", ["zz\r\nhello\r\n0\r\n\r\n", "800\r\n" + "z" * 2048 + "\r\n0\r\n\r\n"],
                         ids=["bad_chunk_size", "over_max_body"])
def test_bad_chunked_body_arriving_later_never_completes_at_backend(gw, late):
    # The body streams, so the head may be upstream already; the backend must still never get a
    # complete request, and the client gets the error.
    before = gw.main.counts()
    with Client(gw.port, timeout=5) as c:
        c.send("POST /echo/late HTTP/1.1\r\nHost: limited.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.3)
        c.send(late)
        r = c.read_response()
        assert r.status == (400 if late.startswith("zz") else 413), r
        assert c.closed_by_peer(5)
    time.sleep(0.2)
    assert gw.main.counts()["total"] == before["total"]


def test_body_within_max_body_passes(gw):
    body = os.urandom(1024)
    r = one(gw, request("POST", "/echo/limit", host="limited.test", body=body))
    assert r.status == 200 and r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    r = one(gw, request("POST", "/echo/limit", host="limited.test", headers=[("Transfer-Encoding", "chunked")],
                        body=chunked([body[:1000], body[1000:]])))
    assert r.status == 200 and r.json()["body_len"] == 1024


def test_slow_headers_get_408(gw):
    before = gw.main.counts()
    with Client(gw.port, timeout=6) as c:
        c.send("GET /echo/slow HTTP/1.1\r\nHost: main.test\r\nX-Partial: ")
        t0 = time.monotonic()
        r = c.read_response()
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert 0.8 <= elapsed <= 3.0, elapsed
        assert c.closed_by_peer(5)
    after = gw.main.counts()
    assert after["total"] == before["total"] and after["heads"] == before["heads"]


def test_a_pipelined_partial_head_still_times_out(gw):
    # A whole request followed by part of the next: the part's head has the header timeout (1 s
    # here) like any other; it was held with no deadline at all (a slowloris way around it).
    with Client(gw.port, timeout=10) as c:
        c.send(request("GET", "/", host="main.test") + b"GET /next HTTP/1.1\r\nHo")
        assert c.read_response().status == 200
        assert c.closed_by_peer(within=5), "the partial head was held past the header timeout"
        assert bytes(c.buf).startswith(b"HTTP/1.1 408 "), bytes(c.buf[:200])


def test_slow_headers_trickled_still_408(gw):
    # Bytes arriving now and then do not extend the head deadline.
    with Client(gw.port, timeout=6) as c:
        c.send("GET /echo/slow HTTP/1.1\r\nHost: main.test\r\n")
        t0 = time.monotonic()
        status = None
        for i in range(40):
            try:
                c.send(f"X-T{i}: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            if c.closed_by_peer(0.1) or c.buf:
                break
        r = c.read_response()
        status = r.status
        elapsed = time.monotonic() - t0
    assert status == 408 and elapsed <= 3.0, (status, elapsed)


def test_connection_flood_keeps_process_alive(make_stack, make_backend):
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 1\n  max_connections: 50\n  routes:\n    - service: web\n")
    b = make_backend("flood")
    stack.register("web", b)
    socks = []
    try:
        for _ in range(200):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", stack.gw_port))
            socks.append(s)

        def rejected():
            m = re.search(r"^flotilla_gateway_downstream_connections_rejected_total (\S+)$", stack.metrics(), re.M)
            return m and float(m.group(1)) >= 150

        wait_for(rejected, timeout=10, what="150 connections rejected")
        assert stack.proc.poll() is None
        # the connections over the limit were closed by the gateway
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 150 - 5, closed
    finally:
        for s in socks:
            s.close()
    assert stack.proc.poll() is None

    wait_for(lambda: serves(stack, "/echo/after-flood"), timeout=10, what="a request served after the flood")


def test_an_idle_connection_past_its_idle_check_serves_what_comes_and_still_times_out(make_stack, make_backend):
    # 200 ms into its idleness a keep-alive connection is checked for a FIN and lets go of its
    # routing snapshot; it holds no read buffer while it waits (the buffer is lent when bytes
    # come). From there it must serve pipelined and split requests as before, and timeouts.idle
    # and the client's close must still end it.
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 1\n  timeouts: {idle: 1s, header: 2s}\n"
                       "  routes:\n    - service: web\n")
    stack.register("web", make_backend("idle"))

    def open_gauge():
        m = re.search(r"^flotilla_gateway_downstream_connections (\S+)$", stack.metrics(), re.M)
        return float(m.group(1)) if m else -1.0

    with Client(stack.gw_port, timeout=5) as c:
        c.send(request("GET", "/echo/first", host="x.test"))
        assert c.read_response().status == 200
        time.sleep(0.5)  # past the idle check
        c.send(request("GET", "/echo/p1", host="x.test") + request("GET", "/echo/p2", host="x.test"))
        assert [c.read_response().header("x-path") for _ in range(2)] == ["/echo/p1", "/echo/p2"]
        time.sleep(0.5)  # past it again; then a head in three parts
        data = request("GET", "/echo/split", host="x.test")
        for part in (data[:5], data[5:20], data[20:]):
            c.send(part)
            time.sleep(0.15)
        r = c.read_response()
        assert (r.status, r.header("x-path")) == (200, "/echo/split")
        # Now quiet: closed by timeouts.idle (1 s), not held.
        started = time.monotonic()
        c.sock.settimeout(5)
        assert c.sock.recv(1) == b""
        took = time.monotonic() - started
        assert 0.7 < took < 3.0, f"closed {took:.2f} s into its idleness, not after timeouts.idle (1 s)"
    # A client that closes an idle connection: the gateway closes its end too.
    with Client(stack.gw_port, timeout=5) as c:
        c.send(request("GET", "/echo/then-leave", host="x.test"))
        assert c.read_response().status == 200
        time.sleep(0.5)
        assert open_gauge() >= 1
    wait_for(lambda: open_gauge() == 0, timeout=5, what="the idle connection closed after its client left")


def test_requests_waiting_for_their_answers_hold_little_memory(make_stack, make_backend):
    # A long poll waiting for its answer holds no relay buffer in either direction (each is lent
    # when bytes come) and its coroutine frame carries no buffer. VmRSS growth per waiting request
    # (only touched pages count): 19.4 KiB before (a 16 KiB buffer per direction, a 22 KiB
    # frame), 13.5-14.2 KiB now.
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 1\n  routes:\n    - service: web\n")
    b = make_backend("slow")
    stack.register("web", b)
    n = 300

    def wave(count, secs):
        clients = [Client(stack.gw_port, timeout=20) for _ in range(count)]
        for i, c in enumerate(clients):
            c.send(request("GET", f"/sleep/{secs}?{i}", host="x.test"))
        return clients

    warm = wave(20, 0.3)  # the worker's pools and upstream connections exist first
    assert all(c.read_response().status == 200 for c in warm)
    for c in warm:
        c.close()
    before_total = b.counts()["total"]
    before = vm_kib(stack.proc.pid, "VmRSS")
    clients = wave(n, 4)
    try:
        wait_for(lambda: b.counts()["total"] >= before_total + n, timeout=15, what=f"{n} requests at the service")
        per_request = (vm_kib(stack.proc.pid, "VmRSS") - before) / n
        if not os.environ.get("FLOTILLA_SANITIZED"):  # ASan's redzones and quarantine: no bound there
            assert per_request < 17, f"{per_request:.1f} KiB per request waiting for its answer"
        assert all(c.read_response().status == 200 for c in clients)
    finally:
        for c in clients:
            c.close()


def serves(stack, path):
    """One GET through the gateway answered 200 (False on any connection failure)."""
    try:
        with Client(stack.gw_port, timeout=2) as c:
            c.send(request("GET", path, host="x.test"))
            return c.read_response().status == 200
    except (OSError, EOFError):
        return False


def handed_over(stack):
    m = re.search(r"^flotilla_gateway_downstream_connections_handed_over_total (\S+)$", stack.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def test_connections_balanced_across_workers(make_stack, make_backend):
    # SO_REUSEPORT alone spreads connections by a hash of their addresses: 40 connections on 4
    # workers come out 10/10/10/10 about once in 300 tries. A worker that accepts while another
    # has fewer hands the connection over, so connections opened one after another stay even.
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 4\n  routes:\n    - service: web\n")
    b = make_backend("bal")
    stack.register("web", b)
    clients = []
    try:
        for i in range(40):
            c = Client(stack.gw_port, timeout=5)
            clients.append(c)
            c.send(request("GET", f"/echo/bal-{i}", host="x.test"))
            r = c.read_response()
            assert r.status == 200 and json.loads(r.body)["path"] == f"/echo/bal-{i}", (i, r)
        per_worker = stack.gateway_status()["WorkerConnections"]
        assert sorted(per_worker) == [10, 10, 10, 10], per_worker
        assert handed_over(stack) >= 1
        # Every connection, handed over or not, keeps serving requests.
        for i, c in enumerate(clients):
            c.send(request("GET", f"/echo/again-{i}", host="x.test"))
            assert c.read_response().status == 200, i
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: stack.gateway_status()["WorkerConnections"] == [0, 0, 0, 0], timeout=10,
             what="every worker's connections closed")

    # Opened all at once (workers accepting at the same time): still close to even, all served.
    def one(i):
        with Client(stack.gw_port, timeout=10) as c:
            c.send(request("GET", f"/echo/burst-{i}", host="x.test"))
            status = c.read_response().status
            barrier.wait(timeout=20)  # everyone is connected here
            if i == 0:
                counts.extend(stack.gateway_status()["WorkerConnections"])
            barrier.wait(timeout=20)
            return status

    barrier = threading.Barrier(64)
    counts = []
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    assert sum(counts) == 64 and max(counts) - min(counts) <= 4, counts


def test_connection_limit_counts_every_worker_before_refusing(make_stack, make_backend):
    # max_connections is per worker; a full worker hands a new connection to one with room, so
    # connections are refused only when every worker is full: 40 connections on 4 workers of 10
    # are all kept (by the address hash alone, some worker would get more than 10 but about once
    # in 300 tries), and the 41st to 45th are refused.
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 4\n  max_connections: 10\n  routes:\n"
                       "    - service: web\n")
    b = make_backend("limit")
    stack.register("web", b)

    def rejected():
        m = re.search(r"^flotilla_gateway_downstream_connections_rejected_total (\S+)$", stack.metrics(), re.M)
        return float(m.group(1)) if m else 0.0

    clients = []
    try:
        for i in range(40):
            c = Client(stack.gw_port, timeout=5)
            clients.append(c)
            c.send(request("GET", f"/echo/limit-{i}", host="x.test"))
            assert c.read_response().status == 200, i
        assert rejected() == 0
        assert stack.gateway_status()["WorkerConnections"] == [10, 10, 10, 10]
        for _ in range(5):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", stack.gw_port))
            assert s.recv(1) == b""  # closed at once
            s.close()
        assert rejected() == 5
    finally:
        for c in clients:
            c.close()


# ---- observability ----


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def requests_total(metrics, route, service, code):
    key = ("flotilla_gateway_requests_total", tuple(sorted([("route", route), ("service", service), ("code", code)])))
    return metrics.get(key, 0.0)


def test_metrics_count_requests_by_route_service_code(gw):
    before = parse_metrics(gw.stack.metrics())
    with Client(gw.port) as c:
        for path in ["/echo/m1", "/echo/m2", "/echo/m3", "/status/404", "/status/404", "/status/502"]:
            c.send(request("GET", path))
            c.read_response()
    assert get(gw, "/empty/m").status == 503
    after = parse_metrics(gw.stack.metrics())

    def delta(route, service, code):
        return requests_total(after, route, service, code) - requests_total(before, route, service, code)

    assert delta(MAIN_ROUTE, "main", "2xx") == 3
    assert delta(MAIN_ROUTE, "main", "4xx") == 2
    assert delta(MAIN_ROUTE, "main", "5xx") == 1
    assert delta(EMPTY_ROUTE, "empty", "5xx") == 1
    assert delta(EMPTY_ROUTE, "empty", "2xx") == 0


def test_refused_requests_count_only_the_gateways_refusals(gw):
    # flotilla_gateway_refused_requests_total counts requests turned away before any service saw
    # them (malformed, oversized, slow), not the gateway's answers for a service that failed or
    # had no instance (502/503/504, which have metrics of their own).
    def refused(code):
        return sum(v for (name, labels), v in parse_metrics(gw.stack.metrics()).items()
                   if name == "flotilla_gateway_refused_requests_total" and ("code", code) in labels)

    before4, before5 = refused("4xx"), refused("5xx")
    assert get(gw, "/empty/m").status == 503  # no instance
    with Client(gw.port) as c:
        c.send(request("GET", "/status/502"))  # the service's own 502
        assert c.read_response().status == 502
    assert refused("5xx") == before5
    with Client(gw.port) as c:
        c.send(b"POST /echo/r HTTP/1.1\r\nHost: main.test\r\nTransfer-Encoding: gzip\r\n\r\n")
        assert c.read_response().status == 501
    with Client(gw.port) as c:
        c.send(b"GET /echo/r HTTP/1.1\r\nHost: main.test\r\nBad Name: x\r\n\r\n")
        assert c.read_response().status == 400
    assert refused("5xx") == before5 + 1
    assert refused("4xx") == before4 + 1


def test_metrics_pass_promtool(gw):
    promtool = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    get(gw, "/echo/promtool", host="main.test")
    text = gw.stack.metrics()
    assert "flotilla_gateway_requests_total{" in text
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()


def test_access_log_one_json_line_per_request(gw):
    tag = uuid.uuid4().hex
    upstream = f"127.0.0.1:{gw.main.port}"
    # (method, path, host, status, upstream, service): answered by the backend, then by the gateway
    sent = [("GET", f"/echo/{tag}/a", "main.test", 200, upstream, "main"),  # a client's X-Request-Id
            ("POST", f"/echo/{tag}/b", "main.test", 200, upstream, "main"),
            ("GET", f"/status/404?{tag}", "main.test", 404, upstream, "main"),
            ("DELETE", f"/echo/{tag}/c", "main.test", 200, upstream, "main"),
            ("GET", f"/nowhere/{tag}", "nohost.test", 404, "", ""),
            ("GET", f"/empty/{tag}", "nohost.test", 503, "", "empty")]
    bodies = []
    with Client(gw.port) as c:
        for i, (method, path, host, status, _, _) in enumerate(sent):
            headers = [("X-Request-Id", f"req-{tag}")] if i == 0 else []
            c.send(request(method, path, host=host, headers=headers, body=b"data" if method == "POST" else None))
            r = c.read_response(method)
            assert r.status == status
            bodies.append(len(r.body))

    def mine():
        if not os.path.exists(gw.access_log):
            return None
        with open(gw.access_log) as f:
            lines = f.read().splitlines()
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        found = [r for r in records if tag in r.get("path", "")]
        return found if len(found) >= len(sent) else None

    found = wait_for(mine, timeout=5, what="access log lines")
    time.sleep(0.3)  # nothing more arrives for these requests
    found = mine()
    assert len(found) == len(sent), found
    for rec, (method, path, host, status, up, service), size in zip(found, sent, bodies):
        assert rec["method"] == method and rec["path"] == path and rec["status"] == status, rec
        assert rec["host"] == host and rec["upstream"] == up and rec["service"] == service, rec
        assert rec["bytes"] == size > 0, (rec, size)  # the gateway's own JSON answers too
        # The id sent upstream: the client's, else a new one; none when nothing was forwarded.
        if up:
            assert rec["request_id"] == f"req-{tag}" if rec is found[0] else re.fullmatch(r"[0-9a-f]{32}", rec["request_id"]), rec
        else:
            assert rec["request_id"] == "", rec


@pytest.mark.parametrize("target", ["/cut/100000/1000", "/cut_chunked/1000"])
def test_a_response_the_service_cuts_short_ends_at_once(gw, target):
    # The service announces more than it sends and closes, its FIN right behind the last bytes.
    # The client must see its connection end (a short body) at once, not when the idle timeout
    # (60 s here) ends it; the client's reads give up after 10 s.
    for i in range(3):
        with Client(gw.port, timeout=10) as c:
            c.send(request("GET", target))
            r = c.read_head()
            assert r.status == 200, r
            rest = c.read_to_close()
            assert 0 < len(rest) < 100_000 and not rest.endswith(b"0\r\n\r\n"), (i, len(rest))


def test_a_body_the_service_cuts_short_is_its_failure_and_says_so_in_the_log(gw):
    # The head was a 200, but the body stopped short: that is the service's failure (Envoy counts
    # an upstream reset after the headers). It counted as a success everywhere: no reset in the
    # metrics, no failure for outlier detection, and a log line like any whole answer's.
    def resets():
        return parse_metrics(gw.stack.metrics()).get(("flotilla_gateway_upstream_resets_total", ()), 0.0)

    def failures():
        return sum(e["Failures"] for e in gw.stack.endpoints("main"))
    r0, f0 = resets(), failures()
    tags = [uuid.uuid4().hex, uuid.uuid4().hex]
    for target in (f"/cut/100000/1000?{tags[0]}", f"/cut_chunked/1000?{tags[1]}"):
        with Client(gw.port, timeout=10) as c:
            c.send(request("GET", target))
            assert c.read_head().status == 200
            c.read_to_close()
    for tag in tags:
        line = wait_for(lambda: next((json.loads(x) for x in open(gw.access_log) if tag in x), None), timeout=5)
        assert line["status"] == 200 and line["cut"] == "service closed", line
    assert resets() - r0 == 2
    assert failures() - f0 == 2
    # A whole answer has no "cut".
    tag = uuid.uuid4().hex
    assert one(gw, request("GET", f"/echo/whole?{tag}")).status == 200
    line = wait_for(lambda: next((json.loads(x) for x in open(gw.access_log) if tag in x), None), timeout=5)
    assert "cut" not in line, line


def test_a_bad_chunk_with_the_answers_head_is_a_502(gw):
    # The service's chunked answer is malformed in the bytes that came with its head: nothing has
    # reached the client, so it gets the gateway's 502 (not an empty reply), and the request is
    # counted and logged as the 502 it got, not as the service's 200.
    before = parse_metrics(gw.stack.metrics())
    tag = uuid.uuid4().hex
    with Client(gw.port, timeout=10) as c:
        c.send(request("GET", f"/bad_chunk?{tag}"))
        r = c.read_response()
    assert r.status == 502, r
    assert json.loads(r.body) == {"error": "the service's answer was malformed: invalid chunk size", "service": "main"}, r
    after = parse_metrics(gw.stack.metrics())
    assert requests_total(after, MAIN_ROUTE, "main", "5xx") - requests_total(before, MAIN_ROUTE, "main", "5xx") == 1
    assert requests_total(after, MAIN_ROUTE, "main", "2xx") == requests_total(before, MAIN_ROUTE, "main", "2xx")
    line = wait_for(lambda: next((json.loads(x) for x in open(gw.access_log) if tag in x), None), timeout=5)
    assert line["status"] == 502, line


def test_an_answer_head_over_100_fields_is_a_502_that_says_so(gw):
    # The request's limits apply to answers too (Envoy and HAProxy: 100 fields as well); the 502
    # names the cause, so the service's owner is not left guessing at "malformed".
    with Client(gw.port, timeout=10) as c:
        c.send(request("GET", "/fields/100"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok"), r
        assert r.header("x-f-98") == "v", r
        c.send(request("GET", "/fields/101"))
        r = c.read_response()
    assert r.status == 502, r
    assert json.loads(r.body)["error"] == "the service's answer was malformed: too many header fields", r


def read_to_end_or_reset(c):
    """(bytes of the body read, whether the connection ended with a reset rather than a FIN)."""
    got = len(c.buf)
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                return got, False
            got += len(chunk)
    except ConnectionResetError:
        return got, True


def test_a_reset_in_a_response_ended_by_the_close_reaches_the_client_as_a_reset(gw):
    # Such a body ends with the close, so a clean close after part of it would read as the whole.
    with Client(gw.port, timeout=10) as c:
        c.send(request("GET", "/unframed_reset/5000"))
        r = c.read_head()
        assert r.status == 200 and r.header("content-length") is None, r
        got, reset = read_to_end_or_reset(c)
        assert reset, f"a clean end after {got} bytes"


def test_a_chunked_response_cut_short_resets_an_http10_client(gw):
    # An HTTP/1.0 client gets the chunked body decoded, ended by the close: when the service
    # stops before the last chunk, a clean close would make the part look whole.
    for i in range(3):
        with Client(gw.port, timeout=10) as c:
            c.send(request("GET", "/cut_chunked/1000", version="1.0"))
            r = c.read_head()
            assert r.status == 200 and r.header("transfer-encoding") is None, r
            got, reset = read_to_end_or_reset(c)
            assert reset, (i, f"a clean end after {got} bytes")


def test_the_rest_of_an_unread_body_is_never_read_as_a_request(gw):
    # A streamed upload (beyond the 64 KiB read whole) that the service refuses before reading it
    # (413, then close): the rest of the body is not read, so the connection must close. Kept
    # open, the rest was parsed as requests, and a request hidden in the body was forwarded.
    tag = uuid.uuid4().hex
    hidden = f"GET /hidden-{tag} HTTP/1.1\r\nHost: main.test\r\n\r\n".encode()
    with Client(gw.port, timeout=10) as c:
        c.send(request("POST", "/reject_early", headers=[("Content-Length", "1000000")]) + b"a" * 100_000)
        for part in (b"b" * 1000, hidden, hidden):
            time.sleep(0.3)
            try:
                c.send(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        r = c.read_response("POST")
        assert r.status == 413 and r.body == b"too large", r  # the service's early answer
        assert "close" in r.header("connection", "").lower(), r
        assert c.closed_by_peer(within=5), "the connection stayed open after an unread body"
        assert c.buf == b"", f"more answers: {bytes(c.buf[:300])!r}"
    with urllib.request.urlopen(gw.main.url("/_count"), timeout=10) as resp:
        paths = json.loads(resp.read())["paths"]
    assert not [p for p in paths if tag in p], paths


@pytest.mark.parametrize("host,target,status", [("limited.test", "/echo/big", 413), ("none.test", "/nothing", 404),
                                                ("none.test", "/empty", 503)], ids=["max_body", "no_route", "no_instance"])
def test_a_refused_upload_is_answered_not_reset(gw, host, target, status):
    # A client that writes its whole body before it reads (Python's http.client, curl without
    # Expect, most SDKs) gets the refusal: after answering, the gateway reads and drops the rest
    # of the body (nginx's lingering close). Closed at once, the unread bytes made the kernel
    # reset the connection, and the client saw "connection reset" instead of the answer.
    body = b"x" * (16 * MiB)
    for _ in range(2):
        with Client(gw.port, timeout=20) as c:
            c.send(request("POST", target, host=host, body=body))  # the whole body, then read
            r = c.read_response("POST")
            assert r.status == status and json.loads(r.body)["error"], r
            assert "close" in r.header("connection", "").lower(), r
            assert c.closed_by_peer(within=5)


@pytest.mark.parametrize("framing", ["content_length", "chunked"])
def test_an_answer_the_service_gives_before_reading_the_upload_reaches_the_client(gw, framing):
    # /reject_early answers 413 and closes without reading the body (Go's net/http does the same
    # past 256 KiB). The client gets that answer, as through Envoy, not a 502; its connection
    # closes after it, the rest of its body read and dropped.
    data = b"a" * (16 * MiB)
    if framing == "chunked":
        head = request("POST", "/reject_early", headers=[("Transfer-Encoding", "chunked")])
        payload = head + chunked([data[i:i + 65536] for i in range(0, len(data), 65536)])
    else:
        payload = request("POST", "/reject_early", body=data)
    for _ in range(2):
        with Client(gw.port, timeout=20) as c:
            c.send(payload)
            r = c.read_response("POST")
            assert r.status == 413 and r.body == b"too large", r
            assert r.header("x-backend") == "main", r
            assert "close" in r.header("connection", "").lower(), r
            assert c.closed_by_peer(within=5)
    assert one(gw, request("GET", "/echo")).status == 200


@pytest.mark.parametrize("target,body,pause", [("/early_close_later/40", b"too large", 0),
                                               ("/early_close_later/40", b"too large", 0.3),
                                               ("/reject_early_big", b"L" * (4 * MiB), 0)],
                         ids=["slow_close", "slow_close_answer_before_the_write_waits", "long_answer"])
def test_a_closing_early_answer_reaches_the_client_while_the_service_stops_reading(gw, target, body, pause):
    # The service answers 413 with Connection: close before reading the body, then neither reads
    # nor closes: it closes only 40 s later, or it is stuck sending a 4 MiB answer that nobody
    # reads. The gateway sees the answer while its write of the body waits for room, and passes
    # it on (it used to wait until the close or timeouts.idle, 60 s here, then answer 504).
    # The client reads while it sends (as Go's and curl's do): a long answer passed on while the
    # client is blocked sending and not reading would wait for it.
    # pause: the first 100 KB, then a pause in which the answer arrives while no write waits
    # (its readiness event passes unwatched), then the rest.
    data = request("POST", target, body=b"a" * (16 * MiB))

    def send():
        c.send(data[:100_000])
        time.sleep(pause)
        c.send(data[100_000:])

    with Client(gw.port, timeout=20) as c:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        r = c.read_response("POST")
        assert r.status == 413 and r.body == body, (r.status, r.headers, len(r.body))
        assert "close" in r.header("connection", "").lower(), r
        assert c.closed_by_peer(within=5)
        sender.join(timeout=10)
        assert not sender.is_alive(), "the rest of the body was not taken (lingering)"


@pytest.mark.parametrize("size", [MiB, 100], ids=["streamed", "in_memory"])
def test_a_request_never_takes_unasked_bytes_for_its_answer(gw, size):
    # /stale_later answers, then (30 ms later, the connection back in the pool) writes an unasked
    # answer and closes. The next request must not get that as its own answer (a desync): a
    # pooled connection whose socket had any event since its answer was read is checked before
    # reuse, however recently it came back (and one for a streamed request always is).
    for _ in range(4):
        with Client(gw.port, timeout=20) as c:
            c.send(request("GET", "/stale_later"))
            assert c.read_response().body == b"ok"
            time.sleep(0.1)
            c.send(request("POST", "/echo/upload", body=b"u" * size))
            r = c.read_response("POST")
            assert r.status == 200 and r.header("x-backend") == "main", (r, r.body[:100])
            assert json.loads(r.body)["body_len"] == size, r


def test_a_post_never_meets_a_connection_the_service_closed_with_its_answer(gw):
    # /quiet_close answers without Connection: close and closes at once, so the FIN arrives with
    # the answer's last bytes and raises no event of its own. A GET that meets such a pooled
    # connection is retried; a POST may not be once its bytes went out, so it must never be sent
    # on one: it would get a 502 although the service is fine.
    codes = []
    with Client(gw.port, timeout=20) as c:
        for i in range(20):
            c.send(request("GET", f"/quiet_close?{i}"))
            assert c.read_response().body == b"ok"
            # Well within the 200 ms a pooled connection goes unchecked when nothing happened on
            # it, and long enough for the FIN to be there whatever the scheduler did.
            time.sleep(0.02)
            c.send(request("POST", "/echo/after-close", body=b"p" * 100))
            r = c.read_response("POST")
            codes.append(r.status)
            assert r.status != 200 or json.loads(r.body)["body_len"] == 100, r
    assert codes == [200] * 20, str(codes)


def test_bytes_past_an_answers_length_retire_its_connection(gw):
    # The service sends more than its Content-Length says (broken framing, or an unasked answer
    # in the same write): the client gets the answer as framed, and the next request goes to a
    # new upstream connection, never to one with bytes of unknown meaning behind it.
    with Client(gw.port) as c:
        c.send(request("GET", "/overlong"))
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok"), r
        first = r.header("x-conn")
        for _ in range(2):
            c.send(request("GET", "/echo"))
            r = c.read_response()
            assert r.status == 200 and r.header("x-backend") == "main", r
            assert r.header("x-conn") != first, "the connection with the extra bytes was reused"


def test_a_head_refused_by_the_gateway_has_no_body(gw):
    # The answer to HEAD has the length a GET's body would have, and no body: bytes after it
    # would be read as the answer to the next request on the connection.
    tag = uuid.uuid4().hex
    with Client(gw.port) as c:
        c.send(request("HEAD", f"/nowhere?{tag}", host=f"127.0.0.1:{gw.port}") +
               request("GET", "/api/next", host=f"127.0.0.1:{gw.port}"))
        r = c.read_response("HEAD")
        assert r.status == 404 and int(r.header("content-length")) > 0, r
        r = c.read_response()
        assert (r.status, r.header("x-path")) == (200, "/api/next"), r
    # Logged with no body bytes, as sent.
    got = wait_for(lambda: [r for r in read_access_log(gw) if tag in r["path"]], timeout=5, what="the HEAD's log line")
    assert [(r["status"], r["bytes"]) for r in got] == [(404, 0)], got


def test_lingering_ends_when_the_client_goes_quiet(gw):
    # After a refusal the gateway drops what the client still sends, but only while it keeps
    # sending: 5 s of quiet and the connection is closed for good (a later byte is reset).
    with Client(gw.port, timeout=20) as c:
        c.send(request("POST", "/echo/big", host="limited.test", headers=[("Content-Length", str(MiB))]) + b"x" * 1000)
        r = c.read_response("POST")
        assert r.status == 413, r
        assert c.closed_by_peer(within=5)  # the FIN follows the answer at once
        time.sleep(1)
        for _ in range(4):  # still lingering: dropped, never reset (a closed socket resets the first)
            c.send(b"y" * 1000)
            time.sleep(0.2)
        time.sleep(6)  # quiet for more than 5 s: closed
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(10):
                c.send(b"z" * 1000)
                time.sleep(0.05)


def test_an_upload_the_client_abandons_is_logged_as_499(gw):
    tag = uuid.uuid4().hex
    for sent, total in ((10, 1000), (100_000, 1_000_000)):  # read whole, then streamed
        with Client(gw.port) as c:
            c.send(request("POST", f"/echo?{tag}-{total}", headers=[("Content-Length", str(total))]) + b"x" * sent)
            time.sleep(0.2)

    def lines():
        got = [r for r in read_access_log(gw) if tag in r["path"]]
        return got if len(got) >= 2 else None

    got = wait_for(lines, timeout=5, what="the abandoned uploads in the access log")
    assert sorted(r["status"] for r in got) == [499, 499] and all(r["service"] == "main" for r in got), got
    # The body read whole first never left the gateway: no try, no upstream, no request id. The
    # streamed one's head went to the service with its id.
    by_total = {r["path"].rsplit("-", 1)[1]: r for r in got}
    small, streamed = by_total["1000"], by_total["1000000"]
    assert (small["tries"], small["upstream"], small["request_id"]) == (0, "", ""), small
    assert streamed["tries"] == 1 and streamed["upstream"] and len(streamed["request_id"]) == 32, streamed


def read_access_log(gw):
    if not os.path.exists(gw.access_log):
        return []
    with open(gw.access_log) as f:
        return [json.loads(line) for line in f.read().splitlines()]


def test_access_log_has_refused_requests_and_tunnels(gw):
    def refused():
        return [r for r in read_access_log(gw) if r["method"] == "" and r["status"] in (400, 431)]

    before = len(refused())
    smuggle = "POST / HTTP/1.1\r\nHost: main.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    folded = "GET / HTTP/1.1\r\nHost: main.test\r\nX-A: 1\r\n folded\r\n\r\n"
    for raw in (smuggle, folded):
        with Client(gw.port) as c:
            c.send(raw)
            assert c.read_response().status == 400
    got = wait_for(lambda: refused()[before:] if len(refused()) >= before + 2 else None, timeout=5,
                   what="refused requests in the access log")
    assert [r["client"] for r in got] == ["127.0.0.1"] * 2 and all(r["bytes"] > 0 for r in got), got

    tag = uuid.uuid4().hex
    with Client(gw.port) as c:
        c.send(request("GET", f"/ws?{tag}", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")]))
        assert c.read_head().status == 101
        c.send(b"ping!")
        assert c.read_exact(5) == b"ping!"
    # Logged when the tunnel ends, with what the service sent.
    rec = wait_for(lambda: next((r for r in read_access_log(gw) if tag in r["path"]), None), timeout=5,
                   what="the tunnel's access log line")
    assert rec["status"] == 101 and rec["service"] == "main" and rec["bytes"] == 5, rec


def test_access_log_has_the_gateways_502_for_answers_it_cannot_pass_on(gw):
    # A 101 the client did not ask for, and a transfer coding the gateway cannot re-frame: the
    # client gets a 502, and the log a line for it (it had none).
    tags = [uuid.uuid4().hex, uuid.uuid4().hex]
    for path in (f"/ws_goodbye?{tags[0]}", f"/coded?{tags[1]}"):
        with Client(gw.port) as c:
            c.send(request("GET", path))
            r = c.read_response()
            assert r.status == 502, r
    for tag in tags:
        rec = wait_for(lambda: next((r for r in read_access_log(gw) if tag in r["path"]), None), timeout=5,
                       what="the 502's access log line")
        assert rec["status"] == 502 and rec["service"] == "main" and rec["tries"] == 1 and rec["upstream"], rec


def test_a_transfer_coding_before_chunked_is_refused_not_passed_on_decoded(gw):
    # `Transfer-Encoding: gzip, chunked`: the chunked framing is the gateway's to remove, the gzip
    # is not. Passing the chunks on under a plain `Transfer-Encoding: chunked` handed the client
    # gzip bytes as if they were the body (as `Transfer-Encoding: gzip` alone would: 502 since
    # long). Both client versions get a 502 naming the coding, their connection stays open, and
    # the service's connection with its unread body is not used again.
    for version in ("1.1", "1.0"):
        headers = [("Connection", "keep-alive")] if version == "1.0" else []
        with Client(gw.port) as c:
            c.send(request("GET", "/coded_chunked", version=version, headers=headers))
            r = c.read_response()
            assert r.status == 502, r
            assert "unsupported transfer coding" in json.loads(r.body)["error"], r
            assert "hello" not in r.body.decode(errors="replace") and b"\x1f\x8b" not in r.body, r
            for i in range(3):
                c.send(request("GET", f"/echo/after-coded-{i}", version=version, headers=headers))
                r = c.read_response()
                assert r.status == 200 and json.loads(r.body)["path"] == f"/echo/after-coded-{i}", r


def test_options_for_the_whole_server_is_refused_and_the_connection_kept(gw):
    # `OPTIONS *` asks about the server, not a resource: not forwarded (400), connection kept. An
    # absolute-form OPTIONS without a path means the same (RFC 9112 §3.2.4: the last proxy sends it
    # on as `OPTIONS *`); it was forwarded as `OPTIONS /`, a question about another thing.
    before = gw.main.counts()["total"]
    with Client(gw.port) as c:
        for target in ("*", "http://main.test", "http://main.test?x=1"):
            c.send(f"OPTIONS {target} HTTP/1.1\r\nHost: main.test\r\n\r\n".encode())
            r = c.read_response()
            assert r.status == 400 and "OPTIONS *" in json.loads(r.body)["error"], (target, r)
        assert gw.main.counts()["total"] == before, "refused requests reached the service"
        c.send(b"OPTIONS http://main.test/echo/opt HTTP/1.1\r\nHost: main.test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["path"] == "/echo/opt" and r.json()["method"] == "OPTIONS", r


def test_a_client_that_half_closed_after_its_request_is_closed_after_its_answer(gw):
    # `printf 'GET / …' | nc -N`: the request and the FIN come together, so no event of the FIN's
    # own follows (recv.h), and the connection waited for a next request until timeouts.idle
    # (60 s) after the answer. The idle connection is polled once, 200 ms in, and closed.
    for _ in range(3):
        with Client(gw.port, timeout=10) as c:
            c.send(request("GET", "/echo/half"))
            c.sock.shutdown(socket.SHUT_WR)
            t0 = time.monotonic()
            data = c.read_to_close()
            took = time.monotonic() - t0
        assert data.startswith(b"HTTP/1.1 200") and b"/echo/half" in data, data[:300]
        assert took < 5, f"the connection stayed open {took:.1f} s after the answer"


def test_access_log_reopened_on_sigusr1(gw):
    # logrotate moves the file, then signals (nginx's `-s reopen`): lines go to a new file at the
    # old path. SIGUSR1 used to kill the process.
    rotated = gw.access_log + ".1"
    wait_for(lambda: os.path.exists(gw.access_log), timeout=5, what="the access log")
    os.rename(gw.access_log, rotated)
    try:
        os.kill(gw.pid, signal.SIGUSR1)
        wait_for(lambda: os.path.exists(gw.access_log), timeout=5, what="the access log opened again")
        tag = uuid.uuid4().hex
        assert get(gw, f"/?{tag}", host="main.test").status == 200
        wait_for(lambda: any(tag in r["path"] for r in read_access_log(gw)), timeout=5,
                 what="the request in the new file")
        with open(rotated) as f:
            assert tag not in f.read()
    finally:
        os.remove(rotated)
