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


def wait_for(predicate, timeout=8.0, interval=0.05, what="condition"):
    """Polls predicate() until it returns something truthy; returns it, or fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
