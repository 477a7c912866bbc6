"""Fixtures for integration tests: a real `flotilla agent` on a free loopback port.

FLOTILLA_BIN points at the binary (CTest sets it); default build/flotilla.
Every process a test starts is stopped by PID.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("FLOTILLA_BIN", os.path.join(ROOT, "build", "flotilla"))


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Sends `sig` to a process this test started (by PID, through its Popen), waits up to
    `timeout`, then kills it."""
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_ticks(pid):
    """User + system CPU time of a process so far, in clock ticks (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return sum(int(v) for v in f.read().rsplit(")", 1)[1].split()[11:13])


def wait_for(predicate, timeout=8.0, interval=0.05, what="condition"):
    """Polls predicate() until it returns something truthy; returns it, or fails after timeout.
    `what` may be a callable, called only on a timeout (the message then shows that moment's state)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}; last value: {last!r}")


_handed_out = set()  # every port free_port()/free_ports() gave in this test process


def free_ports(n):
    """n free loopback ports, distinct from each other and from every port handed out before in
    this process: the kernel may give a port it just gave back again (two ports chosen for one
    config, or a service's fixed port and the stack's own, were seen to collide)."""
    ports = []
    while len(ports) < n:
        socks = [socket.socket() for _ in range(n - len(ports))]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            got = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        for p in got:
            if p not in _handed_out:
                _handed_out.add(p)
                ports.append(p)
    return ports


def free_port():
    return free_ports(1)[0]


class Agent:
    """A running agent. `url` is its API base; `request()` is a small HTTP helper."""

    def __init__(self, data_dir, extra_args=(), port=None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.addr}"
        self.extra_args = list(extra_args)
        self.proc = None
        self.log_path = os.path.join(data_dir, "agent.log")

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "agent", "--api", self.addr, "--data-dir", self.data_dir, "--node", "test-node", *self.extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            deadline = time.time() + 10
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.read_log()}")
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return self
                except OSError:
                    time.sleep(0.02)
            raise RuntimeError("agent did not start: " + self.read_log())
        return self

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        stop_process(self.proc, sig, timeout)
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def request(self, method, path, body=None, headers=None, timeout=30):
        """Returns (status, headers, body bytes). body may be bytes, str or a JSON-able object."""
        data = body
        if body is not None and not isinstance(body, (bytes, str)):
            data = json.dumps(body)
        if isinstance(data, str):
            data = data.encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method, path, body=None, **kw):
        status, headers, data = self.request(method, path, body, **kw)
        return status, headers, (json.loads(data) if data else None)


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory(prefix="flotilla-test-") as d:
        yield d


@pytest.fixture
def agent(data_dir):
    a = Agent(data_dir).start()
    yield a
    rc = a.stop()
    assert rc == 0, f"agent exited with {rc} on SIGTERM:\n{a.read_log()}"


@pytest.fixture
def make_agent(data_dir):
    """Factory for tests that need flags, restarts or several agents."""
    agents = []

    def make(extra_args=(), port=None, directory=None):
        a = Agent(directory or data_dir, extra_args, port)
        agents.append(a)
        return a

    yield make
    for a in agents:
        a.stop(signal.SIGKILL)


# ---- gateway: `flotilla up` with a flotilla.yaml, backends, registration ----

class Stack:
    """`flotilla up -f FILE` (agent + gateway in one process) on free loopback ports.

    `yaml_body` is the file without `name:` and `agent:`; it must contain the gateway section,
    with `{gw}` where the listen address goes (filled in here)."""

    def __init__(self, directory, yaml_body, extra_args=(), env=None, new_session=False):
        self.dir = directory
        self.api_port, self.gw_port = free_ports(2)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.gw = f"http://127.0.0.1:{self.gw_port}"
        self.file = os.path.join(directory, "flotilla.yaml")
        with open(self.file, "w") as f:
            f.write(f"name: test\nagent:\n  api: 127.0.0.1:{self.api_port}\n  data_dir: data\n")
            f.write(yaml_body.replace("{gw}", f"127.0.0.1:{self.gw_port}"))
        self.extra_args = list(extra_args)
        self.env = {**os.environ, **env} if env else None  # extra environment for flotilla
        self.new_session = new_session  # no controlling terminal, as `flotilla up -d` or systemd
        self.log_path = os.path.join(directory, "up.log")
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "up", "-f", self.file, "--node", "test-node", *self.extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=self.new_session)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flotilla up exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.api_port), timeout=0.2):
                    with socket.create_connection(("127.0.0.1", self.gw_port), timeout=0.2):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("flotilla up did not start: " + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        stop_process(self.proc, sig, timeout)
        if self.proc and not self.log.closed:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def api_request(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        req = urllib.request.Request(self.api + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def register(self, service, backend_or_port, instance_id=None, check=None, weights=None, address="127.0.0.1"):
        """Registers an instance (no check: passing) and waits until the gateway has it."""
        port = backend_or_port if isinstance(backend_or_port, int) else backend_or_port.port
        body = {"Name": service, "ID": instance_id or f"{service}-{port}", "Address": address, "Port": port}
        if check:
            body["Check"] = check
        if weights:
            body["Weights"] = weights
        status, text = self.api_request("PUT", "/v1/agent/service/register", body)
        assert status == 200, text
        if not check:
            wait_for(lambda: any(e["ID"] == body["ID"] for e in self.endpoints(service)), what=f"{body['ID']} routed")
        return body["ID"]

    def deregister(self, instance_id):
        status, text = self.api_request("PUT", f"/v1/agent/service/deregister/{instance_id}")
        assert status == 200, text

    def gateway_status(self):
        status, text = self.api_request("GET", "/v1/flotilla/gateway")
        assert status == 200, text
        return json.loads(text)

    def endpoints(self, service):
        return self.gateway_status()["Services"].get(service, {}).get("Endpoints", [])

    def metrics(self):
        status, text = self.api_request("GET", "/metrics")
        assert status == 200
        return text.decode()


@pytest.fixture
def make_stack(data_dir):
    """make_stack(yaml_body) -> a started Stack; stopped (and its exit checked) after the test."""
    stacks = []

    def make(yaml_body, extra_args=(), start=True, env=None, new_session=False):
        d = os.path.join(data_dir, f"stack{len(stacks)}")
        os.makedirs(d)
        s = Stack(d, yaml_body, extra_args, env, new_session)
        stacks.append(s)
        return s.start() if start else s

    yield make
    for s in stacks:
        rc = s.stop()
        assert rc in (0, None), f"flotilla up exited with {rc} on SIGTERM:\n{s.read_log()}"


@pytest.fixture
def make_backend(data_dir):
    """make_backend(name) -> a started GatewayBackend on a free port; stopped by PID after the test."""
    from gateway_backend import GatewayBackend
    backends = []

    def make(name="b", port=None):
        b = GatewayBackend(port or free_port(), name, data_dir).start()
        backends.append(b)
        return b

    yield make
    for b in backends:
        b.stop()
