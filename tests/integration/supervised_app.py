"""A supervised application for end-to-end tests: writes a flotilla.yaml into a temporary
directory, runs the real `flotilla up -f` on free loopback ports, and reads the agent's
/v1/flotilla API. Every test app gets a unique FLOTILLA_APP name, which flotilla passes to every
instance, so `app_processes()` finds each process of the app (and every orphan) through
/proc/*/environ — without touching anybody else's processes.

Services for the tests live in tests/integration/services/: a shell one, a Python one and a C++
one (built by CMake; its path comes from FLOTILLA_TEST_SERVICE, default build/tests/test_service).
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid

from conftest import BIN, ROOT, free_ports, stop_process, wait_for

SERVICES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "services")
CPP_SERVICE = os.environ.get("FLOTILLA_TEST_SERVICE", os.path.join(ROOT, "build", "tests", "test_service"))
PYTHON = "/usr/bin/python3"  # Debian's: starts in ~50 ms (a pyenv shim can take seconds)


def app_processes(app_name):
    """PIDs of every process whose environment has FLOTILLA_APP=app_name (instances, their
    children and any orphan they left)."""
    needle = f"FLOTILLA_APP={app_name}".encode() + b"\0"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if (needle in env or env.startswith(needle[:-1] + b"\0")) and state != b"Z":
            pids.append(int(entry))
    return pids


class App:
    """`yaml_services`: the `services:` section as YAML text (indented by 2). `routes`: the
    gateway's routes as YAML text (indented by 4), or None for no public gateway listener.
    `gateway_yaml`: more keys of the `gateway:` section (indented by 2), e.g. "  access_log: FILE\n"."""

    def __init__(self, tmp_path, yaml_services, routes=None, extra_yaml="", files=None, gateway_yaml=""):
        self.dir = str(tmp_path)
        self.name = "t" + uuid.uuid4().hex[:10]
        self.api_port, self.gw_port = free_ports(2)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.gw = f"http://127.0.0.1:{self.gw_port}"
        for rel, text in (files or {}).items():
            path = os.path.join(self.dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        self.services_yaml = yaml_services
        self.routes = routes
        self.extra_yaml = extra_yaml
        self.gateway_yaml = gateway_yaml
        self.path = os.path.join(self.dir, "flotilla.yaml")
        self.write()
        self.proc = None
        self.log_path = os.path.join(self.dir, "up.log")

    def write(self, services_yaml=None):
        if services_yaml is not None:
            self.services_yaml = services_yaml
        text = f"name: {self.name}\nagent:\n  api: 127.0.0.1:{self.api_port}\n  data_dir: .flotilla\n"
        if self.routes is not None:
            text += f"gateway:\n  listen: [127.0.0.1:{self.gw_port}]\n  workers: 2\n{self.gateway_yaml}  routes:\n{self.routes}"
        text += self.extra_yaml
        text += "services:\n" + self.services_yaml
        with open(self.path, "w") as f:
            f.write(text)

    # --- running ---

    def up(self, wait_ready=True, timeout=30):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "up", "-f", self.path], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        wait_for(lambda: self.proc.poll() is not None or self.answers(), timeout=15, what="the agent's API")
        if self.proc.poll() is not None:
            raise RuntimeError(f"flotilla up exited with {self.proc.returncode}:\n{self.read_log()}")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def cli(self, *args, timeout=60, check=True):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir,
                           env={**os.environ, "FLOTILLA_API": f"127.0.0.1:{self.api_port}"})
        if check and r.returncode != 0:
            raise AssertionError(f"flotilla {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def answers(self):
        try:
            self.get("/v1/flotilla/status")
            return True
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout=30):
        stop_process(self.proc, sig, timeout)
        if getattr(self, "log", None):
            self.log.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def cleanup(self):
        """Stops the agent and makes sure nothing of the app survives (kills leftovers by PID)."""
        self.stop()
        deadline = time.monotonic() + 5
        left = app_processes(self.name)
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = app_processes(self.name)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    # --- API ---

    def request(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path):
        with urllib.request.urlopen(self.api + path, timeout=10) as r:
            return json.loads(r.read())

    def status(self):
        return self.get("/v1/flotilla/status")

    def service(self, name):
        for s in self.status()["Services"]:
            if s["Name"] == name:
                return s
        raise KeyError(name)

    def instances(self, service=""):
        return self.get("/v1/flotilla/instances" + (f"?service={service}" if service else ""))

    def events(self, after=0):
        return self.get(f"/v1/flotilla/events?after={after}")["Events"]

    def registered(self, service):
        """Instances the registry routes to (passing, not in maintenance)."""
        return self.get(f"/v1/health/service/{service}?passing")

    def wait_ready(self, timeout=30):
        def ready():
            s = self.status()
            return all(x["Ready"] >= x["Desired"] and x["Total"] == x["Desired"] for x in s["Services"]) and s
        return wait_for(ready, timeout=timeout, interval=0.1, what="every service ready")

    def service_port(self, name):
        """The gateway listener behind <NAME>_URL."""
        return self.service(name)["Port"]
