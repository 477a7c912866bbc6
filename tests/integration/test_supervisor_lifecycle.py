"""The supervisor end to end: real `flotilla up` runs small real services in three languages
(services/py_service.py, services/test_service.cpp, services/shell_service.sh) and the tests
look at them from outside — the agent's API, the registry, the gateway, /proc.

Covered: start-up order (service_healthy / service_started), PORT and the environment,
<DEP>_URL through the gateway, logs (API and CLI), crash -> restart with exponential backoff and
the restart policies, health-gated registration, replacement after `retries` failed checks,
removal from the registry the moment an instance exits, no orphans after `down` and after
`kill -9` of the agent, recovery of scale and deploys after `kill -9`, re-applied `flotilla up`,
config errors, `up -d` / `down -f`.

Every test is bounded (a SIGALRM guard below, and every wait has a timeout); every process of a
test app is found by its FLOTILLA_APP and stopped by PID.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, free_port, wait_for
from supervised_app import CPP_SERVICE, PYTHON, SERVICES, App, app_processes

PY = f"[{PYTHON}, {SERVICES}/py_service.py]"
CPP = f"[{CPP_SERVICE}]"
SH = f"[{SERVICES}/shell_service.sh]"
ROUTE_ALL_TO = "    - match: {{path_prefix: /}}\n      service: {}\n"
TEST_SECONDS = 120  # no test of this file may take longer


# ---- helpers ----

class Alarm(Exception):
    pass


@pytest.fixture(autouse=True)
def bounded():
    def ring(signum, frame):
        raise Alarm(f"the test took more than {TEST_SECONDS} s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(TEST_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def make_app(tmp_path):
    """make_app(services_yaml, routes=None, ...) -> App (not started). Every app is cleaned up after
    the test, and none may leave a process behind."""
    apps = []

    def make(services_yaml, routes=None, **kw):
        d = tmp_path / f"app{len(apps)}"
        d.mkdir()
        app = App(d, services_yaml, routes=routes, **kw)
        apps.append(app)
        return app

    yield make
    leftovers = {}
    for app in apps:
        left = app.cleanup()
        if left:
            leftovers[app.name] = [describe(p) for p in left]
        if os.path.exists(app.log_path):
            print(f"---- {app.name}: flotilla up log (tail) ----\n{app.read_log()[-6000:]}")
    assert not leftovers, f"processes survived their agent: {leftovers}"


def describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        return f"{pid}: {text}"
    except OSError:
        return f"{pid}: (gone)"


def http(url, timeout=5):
    """GET url -> (status, parsed JSON or text). Plain urllib: no special header."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def ppid_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except OSError:
        return None


def events(app, service=None, kind=None, instance=None):
    out = app.events()
    return [e for e in out if (service is None or e["Service"] == service) and (kind is None or e["Kind"] == kind)
            and (instance is None or e["Instance"] == instance)]


def listening_sockets(port):
    """How many TCP sockets listen on 127.0.0.1:port (SO_REUSEPORT: one per gateway worker)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local == f"0100007F:{port:04X}":
                n += 1
    return n


def first_event(app, service, kind):
    found = events(app, service, kind)
    assert found, f"no {kind!r} event for {service}: {app.events()}"
    return found[0]


def registered_ids(app, service, passing=True):
    path = f"/v1/health/service/{service}" + ("?passing" if passing else "")
    return sorted(e["Service"]["ID"] for e in app.get(path))


def gateway_endpoints(app, service):
    """{instance id: address} the gateway routes to."""
    svc = app.get("/v1/flotilla/gateway")["Services"].get(service, {})
    return {e["ID"]: e["Address"] for e in svc.get("Endpoints", [])}


def ready_instances(app, service):
    return [i for i in app.instances(service) if i["State"] == "ready"]


def logs(app, service):
    return app.get(f"/v1/flotilla/logs/{service}")["Records"]


def children_of(app, service):
    """{instance id: (child pid, daemon pid)} from the "children P1 P2" lines of FORK_CHILDREN=1."""
    out = {}
    for r in logs(app, service):
        m = re.fullmatch(r"children (\d+) (\d+)", r["Text"].strip())
        if m:
            out[r["Instance"]] = (int(m.group(1)), int(m.group(2)))
    return out


def assert_backoff(app, service, delays_ms):
    """The supervisor schedules restarts 100 ms, 200 ms, 400 ms … after consecutive failures (its
    "backoff" events say so exactly), and no restart comes sooner than scheduled. Only lower bounds
    on wall time: a loaded machine (ASan, CI) makes every start slower, never faster."""
    scheduled = [e["Data"]["seconds"] for e in events(app, service, "backoff")]
    n = len(delays_ms)
    assert len(scheduled) >= n, (scheduled, delays_ms)
    assert scheduled[:n] == [0.1 * 2 ** k for k in range(n)], f"backoff schedule {scheduled[:n]}"
    for k, d in enumerate(delays_ms):
        expected = 100 * 2 ** k
        assert d >= expected * 0.9 - 10, f"restart {k + 1} after {d} ms, sooner than its backoff {expected} ms: {delays_ms}"


# ---- 1. start-up order ----

def test_start_order_waits_for_a_healthy_dependency(make_app):
    # `a` comes first in the file: only depends_on can put b before it.
    app = make_app(f"""  a:
    command: {PY}
    depends_on: {{b: {{condition: service_healthy}}}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  b:
    command: {CPP}
    environment: {{UNHEALTHY_FOR_MS: "1500"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up()
    b_started, b_healthy = first_event(app, "b", "started"), first_event(app, "b", "healthy")
    a_started = first_event(app, "a", "started")
    assert b_healthy["Time"] - b_started["Time"] >= 1400, "b was healthy before UNHEALTHY_FOR_MS ended"
    assert a_started["Seq"] > b_healthy["Seq"] and a_started["Time"] >= b_healthy["Time"], (
        f"a started before b was healthy: {app.events()}")
    print(f"a started {a_started['Time'] - b_healthy['Time']} ms after b became healthy")


def test_start_order_service_started_does_not_wait_for_health(make_app):
    app = make_app(f"""  a:
    command: {CPP}
    depends_on: {{b: {{condition: service_started}}}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  b:
    command: {SH}
    environment: {{UNHEALTHY_FOR_MS: "1500"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up()
    b_started, b_healthy = first_event(app, "b", "started"), first_event(app, "b", "healthy")
    a_started = first_event(app, "a", "started")
    assert b_started["Seq"] < a_started["Seq"] < b_healthy["Seq"], app.events()


# ---- 2. ports and environment ----

def test_ports_environment_and_dependency_urls(make_app, tmp_path):
    fixed = free_port()
    app = make_app(f"""  a:
    command: {PY}
    port: {fixed}
    depends_on: [b]
    healthcheck: {{http: /healthz, interval: 100ms}}
  b:
    command: {CPP}
    replicas: 2
    working_dir: ./bdir
    env_file: b.env
    environment: {{GREETING: hello, OVERRIDDEN: "from environment"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""", routes=ROUTE_ALL_TO.format("a"), files={"b.env": "FROM_FILE=yes\nOVERRIDDEN=from file\n", "bdir/.keep": ""})
    app.up()
    b = app.instances("b")
    assert len(b) == 2
    ports = [i["Port"] for i in b]
    assert len(set(ports)) == 2 and all(p > 0 for p in ports), ports
    registry = {e["Service"]["ID"]: e["Service"]["Port"] for e in app.get("/v1/health/service/b")}
    assert registry == {i["ID"]: i["Port"] for i in b}
    b_url = f"http://127.0.0.1:{app.service_port('b')}"
    for inst in b:
        status, env = http(f"http://127.0.0.1:{inst['Port']}/env")
        assert status == 200
        assert env["PORT"] == str(inst["Port"])
        assert env["FLOTILLA_SERVICE"] == "b" and env["FLOTILLA_INSTANCE"] == inst["ID"]
        assert env["FLOTILLA_APP"] == app.name
        assert env["GREETING"] == "hello" and env["FROM_FILE"] == "yes"
        assert env["OVERRIDDEN"] == "from environment", "environment must win over env_file"
        assert "B_URL" not in env
        assert os.readlink(f"/proc/{inst['Pid']}/cwd") == os.path.join(app.dir, "bdir"), "working_dir"
    # A fixed port is the port.
    (a,) = app.instances("a")
    assert a["Port"] == fixed
    status, body = http(f"http://127.0.0.1:{fixed}/")
    assert status == 200 and body["instance"] == a["ID"] and body["service"] == "a"
    status, env = http(f"http://127.0.0.1:{fixed}/env")
    assert env["PORT"] == str(fixed) and env["B_URL"] == b_url
    # a calls b through B_URL with a plain client; the client calls a through the gateway.
    seen = set()
    for _ in range(6):
        status, body = http(f"{app.gw}/call?dep=b")
        assert status == 200, body
        assert body["via"]["service"] == "b"
        seen.add(body["via"]["instance"])
    assert seen <= {i["ID"] for i in b} and seen, seen
    # The stable address works from outside too.
    status, body = http(b_url + "/")
    assert status == 200 and body["service"] == "b"


# ---- 3. logs ----

def test_logs_merge_instances_with_their_ids(make_app):
    app = make_app(f"""  web:
    command: {SH}
    replicas: 2
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up()
    instances = app.instances("web")
    assert len(instances) == 2

    def both_lines_of_both():
        records = logs(app, "web")
        for i in instances:
            mine = [(r["Stream"], r["Text"].strip()) for r in records if r["Instance"] == i["ID"]]
            if ("out", f"listening on {i['Port']}") not in mine or ("err", "started") not in mine:
                return False
        return records
    records = wait_for(both_lines_of_both, timeout=5, what="stdout and stderr lines of both instances")
    times = [r["Time"] for r in records]
    assert times == sorted(times), "records are merged in time order"

    help_text = app.cli("logs", "--help", check=False)
    if help_text.returncode == 0 and "Usage: flotilla logs" in help_text.stdout:
        r = app.cli("logs", "--no-color", "web")
        lines = r.stdout.splitlines()
        for i in instances:
            mine = [l for l in lines if l.startswith(i["ID"])]
            assert any(l.endswith(f"listening on {i['Port']}") for l in mine), r.stdout
            assert any(l.endswith("started") for l in mine), r.stdout
        assert app.cli("logs", "no-such-service", check=False).returncode != 0


def test_logs_of_every_service_or_several_are_merged_in_time_order(make_app):
    app = make_app(f"""  web:
    command: {SH}
    replicas: 2
    healthcheck: {{http: /healthz, interval: 100ms}}
  api:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
  jobs:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up()
    ids = {i["ID"]: i for i in app.instances()}
    assert len(ids) == 4

    def every_start():
        records = app.get("/v1/flotilla/logs")["Records"]
        seen = {r["Instance"] for r in records if r["Text"].strip().startswith("listening on")}
        return records if seen == set(ids) else None
    records = wait_for(every_start, timeout=5, what="a line of each of the 4 instances")
    times = [r["Time"] for r in records]
    assert times == sorted(times), "records of all services merged in time order"

    # Two of them: only theirs; tail applies to the merge.
    both = app.get("/v1/flotilla/logs?service=api,web")
    assert {r["Instance"].rsplit("-", 1)[0] for r in both["Records"]} == {"api", "web"}, both
    last = app.get("/v1/flotilla/logs?service=api,web&tail=2")["Records"]
    assert last == both["Records"][-2:]
    status, body = app.request("GET", "/v1/flotilla/logs?service=api,nosuch")
    assert status == 404 and "nosuch" in body["error"], body
    status, body = app.request("GET", "/v1/flotilla/logs?service=api,,web")
    assert status == 400, body

    r = app.cli("logs", "--no-color")
    for i in ids.values():
        assert any(l.startswith(i["ID"]) and l.endswith(f"listening on {i['Port']}") for l in r.stdout.splitlines()), \
            r.stdout
    r = app.cli("logs", "--no-color", "api", "jobs")
    prefixes = {l.split(" ", 1)[0].rsplit("-", 1)[0] for l in r.stdout.splitlines()}
    assert prefixes == {"api", "jobs"}, r.stdout
    # -f over all services: a line written after it began is printed once.
    follow = subprocess.Popen([BIN, "logs", "-f", "--no-color", "--tail", "0"], stdout=subprocess.PIPE, text=True,
                              cwd=app.dir, env={**os.environ, "FLOTILLA_API": f"127.0.0.1:{app.api_port}"})
    try:
        time.sleep(0.5)
        app.cli("scale", "jobs=2")
        new = wait_for(lambda: [i for i in app.instances("jobs") if i["ID"] not in ids], timeout=10,
                       what="a second jobs instance")[0]
        lines = [follow.stdout.readline() for _ in range(2)]  # its stdout and stderr lines
        assert all(l.startswith(new["ID"]) for l in lines), lines
        assert {l.split("| ", 1)[1].strip() for l in lines} == {f"listening on {new['Port']}", "started"}, lines
    finally:
        follow.terminate()
        follow.wait(timeout=10)

    # After flotilla down the files are still there: logs reads them (as pm2 logs does); -f cannot.
    app.cli("down", "-f", app.path)
    assert app.proc.wait(timeout=30) == 0
    r = app.cli("logs", "--no-color", "api")
    (api,) = [i for i in ids.values() if i["Service"] == "api"]
    assert f"{api['ID']} | listening on {api['Port']}" in r.stdout and "not running" in r.stderr, r.stdout + r.stderr
    r = app.cli("logs", "--no-color")
    assert all(i in r.stdout for i in ids), r.stdout
    r = app.cli("logs", "-f", "api", check=False)
    assert r.returncode == 1 and "-f follows a running application" in r.stderr, r.stderr


def test_foreground_up_prints_the_services_output_prefixed_by_instance(make_app, tmp_path):
    # docker compose up: the services' lines on stdout, "INSTANCE | text". Two port: none workers
    # (no health check: ready at once) must also start exactly twice, not three times.
    app = make_app(f"""  web:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
  worker:
    command: "echo worker $FLOTILLA_INSTANCE ready; exec sleep 1000"
    port: none
    replicas: 2
""")
    out = open(tmp_path / "stdout", "wb")
    up = subprocess.Popen([BIN, "up", "-f", app.path], stdout=out, stderr=subprocess.DEVNULL, cwd=app.dir)
    app.proc = up
    try:
        wait_for(app.answers, timeout=15, what="the agent's API")
        app.wait_ready()
        (web,) = app.instances("web")
        workers = app.instances("worker")
        assert len(workers) == 2 and len(events(app, "worker", "started")) == 2, events(app, "worker")

        def printed():
            # Prefixes are padded to the longest instance name seen so far (worker-… is longer).
            text = (tmp_path / "stdout").read_text()
            want = [rf"^{web['ID']} +\| listening on {web['Port']}$", rf"^{web['ID']} +\| started$"]
            want += [rf"^{w['ID']} +\| worker {w['ID']} ready$" for w in workers]
            return text if all(re.search(w, text, re.M) for w in want) else None
        text = wait_for(printed, timeout=5, what="every instance's lines on stdout")
        assert "info" not in text, "the agent's own log goes to stderr, not among the services' lines"
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
        out.close()
    # --no-attach: nothing of the services on stdout.
    app2 = make_app(f"""  web:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    up = subprocess.Popen([BIN, "up", "--no-attach", "-f", app2.path], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, cwd=app2.dir)
    app2.proc = up
    try:
        wait_for(app2.answers, timeout=15, what="the agent's API")
        app2.wait_ready()
        time.sleep(0.3)
    finally:
        up.send_signal(signal.SIGTERM)
        stdout, _ = up.communicate(timeout=30)
    assert up.returncode == 0 and stdout == b"", stdout

    # `flotilla up 2>&1 | head -3`: the reader goes away; the agent (and every service) stays.
    app3 = make_app(f"""  web:
    command: "while true; do echo tick; sleep 0.05; done"
    port: none
""")
    up = subprocess.Popen([BIN, "up", "-f", app3.path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          cwd=app3.dir)
    app3.proc = up
    try:
        for _ in range(3):
            up.stdout.readline()
        up.stdout.close()  # as head -3 exits
        time.sleep(1.0)  # ticks and log lines keep being written into the closed pipe
        assert up.poll() is None, f"the agent died (exit {up.returncode})"
        assert app3.service("web")["State"] == "running"
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0


# ---- 4. crash -> restart with backoff; restart policies ----

def test_crash_restarts_with_growing_backoff_and_shows_crash_looping(make_app):
    app = make_app(f"""  crashy:
    command: {CPP}
    environment: {{CRASH_AFTER_MS: "100"}}
    healthcheck: {{http: /healthz, interval: 1s}}
""")
    app.up(wait_ready=False)
    crashes = wait_for(lambda: len(events(app, "crashy", "crashed")) >= 5 and events(app, "crashy", "crashed"),
                       timeout=15, what="5 crashes")
    assert all(c["Data"].get("code") == 3 for c in crashes), crashes
    started = events(app, "crashy", "started")
    # The pause between a crash and the next start is the backoff: 100 ms, 200 ms, 400 ms, 800 ms …
    delays = []
    for c in crashes[:5]:
        nxt = [s for s in started if s["Seq"] > c["Seq"]]
        if nxt:
            delays.append(nxt[0]["Time"] - c["Time"])
    assert len(delays) >= 4, (crashes, started)
    print("crash -> restart delays (ms):", delays)
    assert_backoff(app, "crashy", delays)
    s = wait_for(lambda: (lambda s: s["State"] == "crash-looping" and s)(app.service("crashy")), timeout=5,
                 what="crash-looping state")
    restarts = s["Restarts"]
    assert restarts >= 3
    wait_for(lambda: app.service("crashy")["Restarts"] > restarts, timeout=8, what="more restarts")
    st = app.cli("status", check=False)
    if st.returncode == 0:
        assert "crash-looping" in st.stdout, st.stdout
    # ps shows the instance that crashed last and how it ended while its replacement waits (it
    # listed nothing at all: a crashed instance is replaced by a new one).
    crashed = wait_for(lambda: [i for i in json.loads(app.cli("ps", "crashy", "--json").stdout)
                                if i["State"] == "exited"], timeout=10, what="the crashed instance in ps")
    assert "code 3" in crashed[0]["Exit"], crashed
    assert all(i["State"] == "exited" or i["Pid"] > 0 for i in app.instances("crashy"))  # the API's default list
    # Fixed by a deploy: RESTARTS counts the version that runs, so it starts again from 0.
    app.cli("deploy", "crashy", "--set", "environment.CRASH_AFTER_MS=0", "--wait", timeout=90)
    fixed = app.service("crashy")
    assert fixed["State"] == "running" and fixed["Restarts"] == 0, fixed


def test_restart_no_and_on_failure_with_exit_0_are_not_restarted(make_app):
    app = make_app(f"""  once:
    command: {PY}
    restart: "no"
    environment: {{CRASH_AFTER_MS: "200"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  done:
    command: "exit 0"
    port: none
    restart: on-failure
  failing:
    command: "sleep 0.2; exit 1"
    port: none
    restart: on-failure
""")
    app.up(wait_ready=False)
    # on-failure with a failure: restarted.
    wait_for(lambda: len(events(app, "failing", "started")) >= 2, timeout=10, what="the failing service restarted")
    once_crash = wait_for(lambda: events(app, "once", "crashed"), timeout=10, what="once crashed")[0]
    done_exit = wait_for(lambda: events(app, "done", "exited"), timeout=10, what="done exited")[0]
    assert "not restarted" in once_crash["Message"] and "not restarted" in done_exit["Message"]
    time.sleep(1.0)  # far beyond the first backoff (100 ms)
    assert len(events(app, "once", "started")) == 1, events(app, "once")
    assert len(events(app, "done", "started")) == 1, events(app, "done")
    assert not events(app, "done", "crashed")
    for name, text in (("once", "exited with code 3"), ("done", "exited with code 0")):
        (inst,) = app.instances(name)
        assert inst["State"] == "exited" and inst["Exit"] == text, inst
    assert registered_ids(app, "once", passing=False) == []


def test_a_one_shot_job_completes_and_gates_its_dependent(make_app, tmp_path):
    # A migration as compose runs it: restart "no", and a dependent that waits for exit 0.
    marker, gate = tmp_path / "migrated", tmp_path / "gate"
    app = make_app(f"""  web:
    command: {SH}
    depends_on: {{migrate: {{condition: service_completed_successfully}}}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  migrate:
    command: "while [ ! -f {gate} ]; do sleep 0.05; done; touch {marker}"
    port: none
    restart: "no"
""")
    pid_file = os.path.join(app.dir, ".flotilla", "flotilla.pid")
    up = subprocess.Popen([BIN, "up", "-d", "-f", app.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=app.dir)
    agent_pid = None
    try:
        wait_for(app.answers, timeout=15, what="the agent's API")
        agent_pid = int(open(pid_file).read().split()[0])
        web = wait_for(lambda: (lambda s: s["State"] == "waiting" and s)(app.service("web")), timeout=5,
                       what="web waiting for migrate")
        assert web["WaitingFor"] == ["migrate"] and web["Total"] == 0 and not marker.exists(), web
        assert "waiting for migrate" in app.cli("status").stdout
        time.sleep(1.2)  # the 1 s tick looked again: web still waits for the job
        assert app.instances("web") == [] and up.poll() is None
        gate.touch()
        out, err = up.communicate(timeout=60)
        assert up.returncode == 0, out + err
        assert "migrate: 0/1 ready, 1 completed" in out and "all services ready" in out, out
        migrate, web = app.service("migrate"), app.service("web")
        assert (migrate["State"], migrate["Completed"], migrate["Failed"]) == ("completed", 1, 0), migrate
        assert web["State"] == "running" and web["Ready"] == 1 and "WaitingFor" not in web, web
        assert first_event(app, "web", "started")["Seq"] > first_event(app, "migrate", "exited")["Seq"]
        # A job with port: none serves nothing: no listener, no MIGRATE_URL.
        assert app.service_port("migrate") == 0
        (w,) = app.instances("web")
        assert "MIGRATE_URL" not in http(f"http://127.0.0.1:{w['Port']}/env")[1]
        st = app.cli("status").stdout
        assert re.search(r"migrate\s+\S+\s+completed\s+0/1 ", st) and "1 completed (exit 0)" in st, st
        assert app.cli("down", "-f", app.path).returncode == 0
        wait_for(lambda: not alive(agent_pid), timeout=10, what="the detached agent gone")
    finally:
        if up.poll() is None:
            up.kill()
        if agent_pid and alive(agent_pid) and "flotilla" in describe(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)


def test_a_failed_job_runs_again_on_up_and_a_changed_job_is_waited_for_again(make_app, tmp_path):
    ok, gate = tmp_path / "ok", tmp_path / "gate"
    job = f"""  migrate:
    command: "test -f {ok}"
    port: none
    restart: "no"
"""
    web = f"""  web:
    command: {SH}
    depends_on: {{migrate: {{condition: service_completed_successfully}}}}
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    app = make_app(job + web)
    app.up(wait_ready=False)
    wait_for(lambda: app.service("migrate")["State"] == "failed", timeout=10, what="migrate failed")
    assert app.service("web")["State"] == "waiting"
    # `up -d` against the running agent runs the failed job again and waits for it, as a first
    # start does: it fails again, so exit 1.
    r = app.cli("up", "-d", "-f", app.path, "--wait", "30", check=False)
    assert r.returncode == 1 and re.search(r"re-run: +migrate ", r.stdout), r.stdout + r.stderr
    assert "migrate: 0/1 ready, 1 failed" in r.stdout and "failed: migrate" in r.stderr, r.stdout + r.stderr
    assert "unchanged: web\n" in r.stdout, r.stdout
    # The cause is fixed; `flotilla up -d` runs it again, web follows, and it says so.
    ok.touch()
    r = app.cli("up", "-d", "-f", app.path, "--wait", "30")
    assert re.search(r"re-run: +migrate ", r.stdout) and "all services ready" in r.stdout, r.stdout
    wait_for(lambda: app.service("migrate")["State"] == "completed", timeout=10, what="migrate completed")
    wait_for(lambda: ready_instances(app, "web"), timeout=15, what="web ready")
    assert len(events(app, "migrate", "rerun")) == 2
    r = app.cli("up", "-f", app.path)  # a completed job is not run again
    assert "re-run" not in r.stdout and len(events(app, "migrate", "started")) == 3, r.stdout

    # A new version of the job: a service added with it waits for that version, not the old one.
    web2 = web.replace("  web:", "  web2:")
    app.write(job.replace(f"test -f {ok}", f"while [ ! -f {gate} ]; do sleep 0.05; done") + web + web2)
    r = app.cli("up", "-f", app.path)
    assert re.search(r"changed: +migrate ", r.stdout) and re.search(r"added: +web2\n", r.stdout), r.stdout
    wait_for(lambda: app.service("web2")["State"] == "waiting", timeout=5, what="web2 waiting")
    time.sleep(1.2)  # the 1 s tick looked again
    assert app.instances("web2") == [], "web2 started before the new version of migrate completed"
    gate.touch()
    wait_for(lambda: ready_instances(app, "web2"), timeout=15, what="web2 ready")
    assert app.service("migrate")["State"] == "completed"

    # A changed job whose dependents already run: `up -d` waits for it to end, as a first start
    # waits through those dependents, and exits 1 when it fails (it returned, "all services
    # ready", as soon as the job had started).
    app.write(job.replace(f"test -f {ok}", "sleep 1; exit 1") + web + web2)
    t0 = time.monotonic()
    r = app.cli("up", "-d", "-f", app.path, "--wait", "30", check=False)
    assert r.returncode == 1 and "failed: migrate" in r.stderr, r.stdout + r.stderr
    assert time.monotonic() - t0 >= 0.9, "returned before the job ended"


def test_restart_runs_a_job_again_refuses_what_it_cannot_do_and_restarts_all(make_app, tmp_path):
    runs = tmp_path / "runs"
    app = make_app(f"""  job:
    command: "echo run >> {runs}"
    port: none
    restart: "no"
  web:
    command: {SH}
    replicas: 2
    healthcheck: {{http: /healthz, interval: 100ms}}
  idle:
    command: {SH}
    replicas: 0
""")
    app.up(wait_ready=False)
    wait_for(lambda: app.service("job")["State"] == "completed", timeout=10, what="job completed")
    wait_for(lambda: len(ready_instances(app, "web")) == 2, timeout=15, what="web ready")
    assert runs.read_text() == "run\n"

    # A one-shot job runs again (as `docker compose restart` starts an exited container).
    r = app.cli("restart", "job")
    assert "job: starting version" in r.stdout and "completed" in r.stdout, r.stdout
    assert runs.read_text() == "run\nrun\n"
    assert (app.service("job")["Completed"], app.service("job")["Failed"]) == (1, 0)

    # What cannot be restarted says why, with exit 1, and changes nothing.
    web_before = {i["ID"] for i in app.instances("web")}
    for args, why in ((["restart", "nosuch"], "nosuch"), (["restart", "idle"], "scaled to 0")):
        r = app.cli(*args, check=False)
        assert r.returncode == 1 and why in r.stderr, (args, r.returncode, r.stdout, r.stderr)
    status, body = app.request("POST", "/v1/flotilla/services/web/deploy", {"set": ["environment.X=2"], "canary": 50})
    assert status == 200, body
    r = app.cli("restart", "web", check=False)
    assert r.returncode == 1 and "canary" in r.stderr, r.stdout + r.stderr
    status, body = app.request("POST", "/v1/flotilla/services/web/rollback")
    assert status == 200, body
    wait_for(lambda: "Canary" not in app.service("web") and len(app.instances("web")) == 2, timeout=15,
             what="the canary gone")
    assert {i["ID"] for i in app.instances("web")} == web_before

    # Without a service: every service that runs, one after the other.
    r = app.cli("restart", timeout=90)
    assert "job: starting version" in r.stdout and "idle" not in r.stdout, r.stdout
    assert "web: version" in r.stdout and "running (2/2 ready)" in r.stdout, r.stdout
    assert not web_before & {i["ID"] for i in app.instances("web")}
    assert runs.read_text() == "run\nrun\nrun\n"
    assert app.service("web")["State"] == "running"


def test_up_detached_on_a_running_agent_fails_when_the_new_version_is_rolled_back(make_app):
    good = f"""  web:
    command: {SH}
    replicas: 2
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    app = make_app(good).up()
    version = app.service("web")["Version"]
    before = {i["ID"] for i in app.instances("web")}
    # The new version crashes at once: the rollout rolls itself back, every instance is ready
    # again on the old version, and that is not what the file asked for.
    app.write(good.replace(f"command: {SH}", 'command: "echo broken; exit 3"'))
    r = app.cli("up", "-d", "-f", app.path, "--wait", "60", timeout=90, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"changed: +web ", r.stdout), r.stdout
    assert "web: 2/2 ready" in r.stdout, r.stdout
    assert "rolling back to " + version in r.stderr and "the new version of web failed and was rolled back" in r.stderr, \
        r.stderr
    assert app.service("web")["Version"] == version and {i["ID"] for i in app.instances("web")} == before
    # The same file again: its version does not run, so it is tried again (and fails again), not
    # called "unchanged" with exit 0.
    r = app.cli("up", "-d", "-f", app.path, "--wait", "60", timeout=90, check=False)
    assert r.returncode == 1 and re.search(r"changed: +web ", r.stdout), r.stdout + r.stderr
    assert "deployed:" not in r.stdout and "rolled back" in r.stderr, r.stdout + r.stderr
    assert any("rolling it out again" in e["Message"] for e in events(app, "web", "deploy-started"))
    # The file fixed again: what it says already runs, so nothing rolls out, exit 0.
    app.write(good)
    started = len(events(app, "web", "deploy-started"))
    r = app.cli("up", "-d", "-f", app.path, "--wait", "60", timeout=90)
    assert "all services ready" in r.stdout and "rolled back" not in r.stderr, r.stdout + r.stderr
    assert re.search(r"unchanged: +web", r.stdout) and len(events(app, "web", "deploy-started")) == started, r.stdout
    # A good new version: exit 0, and it says the new version is still watched for a while.
    app.write(good.replace("    replicas: 2", "    replicas: 2\n    environment: { V: \"3\" }"))
    r = app.cli("up", "-d", "-f", app.path, "--wait", "60", timeout=90)
    assert re.search(r"web: version \w+ is watched for [0-9.]+ s more", r.stdout), r.stdout + r.stderr
    assert app.service("web")["Probation"]["Version"] == app.service("web")["Version"]


def test_a_new_version_that_crashes_after_its_rollout_is_rolled_back(make_app):
    # One replica: the old instance stops as soon as the new one is healthy, which then crashes
    # a second later, again and again. Within deploy.healthy_timeout of the rollout its crashes
    # still count: the third one rolls it back.
    app = make_app(f"""  web:
    command: {CPP}
    environment: {{ VERSION: "1" }}
    healthcheck: {{http: /healthz, interval: 100ms}}
    deploy: {{ healthy_timeout: 30s }}
""").up()
    version = app.service("web")["Version"]
    status, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                               {"set": ["environment.VERSION=2", "environment.CRASH_AFTER_MS=1000"]})
    assert status == 200, body
    wait_for(lambda: events(app, "web", "deploy-finished"), timeout=15, what="the rollout finished")
    rb = wait_for(lambda: events(app, "web", "rollback"), timeout=30, what="the automatic rollback")[0]
    assert "crashed 3 times within 30s of its rollout" in rb["Message"], rb
    assert rb["Data"]["to"] == version
    wait_for(lambda: events(app, "web", "rollback-finished"), timeout=30, what="the rollback finished")
    wait_for(lambda: (lambda s: s["State"] == "running" and s["Version"] == version and s["Ready"] == 1)(
        app.service("web")), timeout=15, what="web running version 1 again")
    assert [i["Version"] for i in app.instances("web")] == [version]
    # The failed version is no version to go back to (a rollback went back to it, and crash-looped
    # in "rolling back" for good).
    status, body = app.request("POST", "/v1/flotilla/services/web/rollback")
    assert status == 409 and "no previous version" in body["error"], body
    # Nor after the agent restarts: that is stored too.
    r = app.cli("down", "--keep")
    assert app.proc.wait(timeout=10) == 0, r.stdout + r.stderr
    app.up()
    assert app.service("web")["Version"] == version
    status, body = app.request("POST", "/v1/flotilla/services/web/rollback")
    assert status == 409 and "no previous version" in body["error"], body
    # A healthy deploy is not rolled back by its probation.
    status, body = app.request("POST", "/v1/flotilla/services/web/deploy", {"set": ["environment.VERSION=3"]})
    assert status == 200, body
    wait_for(lambda: len(events(app, "web", "deploy-finished")) == 2, timeout=15, what="the second rollout")
    time.sleep(1.5)
    assert len(events(app, "web", "rollback")) == 1 and app.service("web")["Version"] != version


def test_ps_shows_a_crash_only_while_it_is_being_replaced(make_app, tmp_path):
    # A job (restart: on-failure) that fails once, then completes: ps lists the completed run,
    # not the old crash as well.
    marker = tmp_path / "second-try"
    app = make_app(f"""  job:
    command: "[ -f {marker} ] && exit 0; touch {marker}; exit 1"
    port: none
    restart: on-failure
""")
    app.up(wait_ready=False)
    wait_for(lambda: app.service("job")["State"] == "completed", timeout=15, what="the job completed")
    rows = json.loads(app.cli("ps", "job", "--json").stdout)
    assert [r["State"] for r in rows] == ["exited"] and "code 0" in rows[0]["Exit"], rows


def app_whose_first_version_needs_a_marker(make_app, tmp_path, later_env):
    """A started app whose service `web` exits 3 at start unless its marker file exists or a
    later version set `later_env`: removing the marker breaks only the first version."""
    marker = tmp_path / "v1-can-start"
    marker.write_text("")
    app = make_app(f"""  web:
    command: '[ -n "${later_env}" ] || [ -f {marker} ] || exit 3; exec {CPP_SERVICE}'
    healthcheck: {{http: /healthz, interval: 100ms}}
    deploy: {{ healthy_timeout: 30s }}
""").up()
    return marker, app


def test_a_rollback_whose_version_fails_stops_and_keeps_the_running_one(make_app, tmp_path):
    # Version 1 cannot start any more once its marker file is gone (say, a file it needs was
    # removed); version 2 does not need it. Rolling back to 1 crashes 3 times: the rollback stops
    # (rollback-failed, exit 1) and version 2, still running, stays. It used to stay "rolling
    # back", crash-looping, for good.
    marker, app = app_whose_first_version_needs_a_marker(make_app, tmp_path, "V2")
    v1 = app.service("web")["Version"]
    app.cli("deploy", "web", "--set", "environment.V2=1", "--wait", timeout=60)
    v2 = app.service("web")["Version"]
    assert v2 != v1
    marker.unlink()
    r = app.cli("rollback", "web", "--wait", "--timeout", "60s", check=False, timeout=90)
    assert r.returncode == 1 and f"rollback to version {v1} stopped" in r.stderr, r.stdout + r.stderr
    s = wait_for(lambda: (lambda s: s["State"] == "running" and s)(app.service("web")), timeout=10,
                 what="web running")
    assert s["Version"] == v2 and s["Ready"] == 1, s
    assert [i["Version"] for i in app.instances("web") if i["State"] == "ready"] == [v2]
    assert events(app, "web", "rollback-failed")


def test_an_automatic_rollback_to_a_broken_version_stops_without_ping_pong(make_app, tmp_path):
    # Version 2 crashes 0.7 s after it starts; version 1 can no longer start (its marker file is
    # gone). The automatic rollback to 1 fails: it stops (rollback-failed), nothing is kept to go
    # back to, and no further rollout or rollback follows between the two broken versions.
    marker, app = app_whose_first_version_needs_a_marker(make_app, tmp_path, "CRASH_AFTER_MS")
    status, body = app.request("POST", "/v1/flotilla/services/web/deploy", {"set": ["environment.CRASH_AFTER_MS=700"]})
    assert status == 200, body
    wait_for(lambda: events(app, "web", "deploy-finished"), timeout=15, what="the rollout finished")
    marker.unlink()
    wait_for(lambda: events(app, "web", "rollback-failed"), timeout=40, what="the rollback failed")
    time.sleep(3)
    kinds = [e["Kind"] for e in events(app, "web")]
    assert kinds.count("rollback") == 1 and kinds.count("rollback-failed") == 1, kinds
    assert kinds.count("deploy-started") <= 1, kinds  # no rollout of its own after the failure
    s = app.service("web")
    assert s["PreviousVersion"] == "" and "Rollout" not in s, s
    status, body = app.request("POST", "/v1/flotilla/services/web/rollback")
    assert status == 409, body


def test_a_fixed_port_rollout_waits_for_the_old_process_to_exit(make_app, tmp_path):
    # The old process takes 1.5 s to exit after SIGTERM and holds the port all that time. A new
    # one started before it is gone would fail to bind (or pass its health check against the old
    # one), crash, and the rollout's crash count would roll back a good version.
    port = free_port()
    script = tmp_path / "slow_exit.sh"
    script.write_text(f"{CPP_SERVICE} & pid=$!\ntrap 'sleep 1.5; kill $pid' TERM\nwait $pid\n")
    app = make_app(f"""  fx:
    command: [/bin/sh, {script}]
    port: {port}
    environment: {{ VERSION: "1" }}
    healthcheck: {{http: /healthz, interval: 100ms}}
    deploy: {{ healthy_timeout: 10s }}
""")
    app.up()
    seq = app.events()[-1]["Seq"]
    r = app.cli("deploy", "fx", "--set", "environment.VERSION=2", "--wait", timeout=60)
    assert "running (1/1 ready)" in r.stdout, r.stdout
    after = [e for e in app.events(seq) if e["Service"] == "fx"]
    kinds = [e["Kind"] for e in after]
    assert "crashed" not in kinds and "rollback" not in kinds, kinds
    stopped = next(e for e in after if e["Kind"] == "stopped")
    started = next(e for e in after if e["Kind"] == "started")
    assert started["Seq"] > stopped["Seq"], "the new process started only after the old one had exited"
    assert "(1 instance(s))" in next(e for e in after if e["Kind"] == "deploy-finished")["Message"]
    time.sleep(1.0)  # nothing crashes afterwards either (probation would roll it back)
    assert http(f"http://127.0.0.1:{port}/")[1]["version"] == "2"
    assert not [e for e in app.events(seq) if e["Service"] == "fx" and e["Kind"] in ("crashed", "rollback")]

    # It runs one instance at most: a second could not bind, and its TCP check would reach the
    # first one and call it healthy.
    r = app.cli("scale", "fx=2", check=False)
    assert r.returncode != 0 and "at most 1 replica" in r.stderr, r.stdout + r.stderr
    assert app.service("fx")["Desired"] == 1

    # A restart of it whose new process is broken: stop-first, then restart-failed and exit 1
    # (not a wait until --timeout).
    script.write_text("echo broken; exit 1\n")
    t0 = time.monotonic()
    r = app.cli("restart", "fx", "--timeout", "60s", check=False, timeout=90)
    assert r.returncode == 1 and "restart stopped" in r.stderr, r.stdout + r.stderr
    assert time.monotonic() - t0 < 30, "the failure was found, not waited out"


def test_restart_of_a_crash_looping_or_waiting_service(make_app, tmp_path):
    app = make_app(f"""  loop:
    command: "sleep 0.05; exit 2"
    healthcheck: {{http: /healthz, interval: 100ms}}
  web:
    command: {SH}
    depends_on: {{gate: {{condition: service_completed_successfully}}}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  gate:
    command: "exit 1"
    port: none
    restart: "no"
""")
    app.up(wait_ready=False)
    wait_for(lambda: app.service("loop")["State"] == "crash-looping", timeout=15, what="loop crash-looping")
    wait_for(lambda: app.service("web")["State"] == "waiting", timeout=10, what="web waiting for gate")
    # Still crashing after the restart: restart-failed after 3 crashes, exit 1, no wait till --timeout.
    r = app.cli("restart", "loop", "--timeout", "60s", check=False, timeout=90)
    assert r.returncode == 1 and "restart stopped" in r.stderr and "crashed 3 times" in r.stderr, r.stdout + r.stderr
    # A service that has not started (it waits for a dependency) has nothing to restart.
    r = app.cli("restart", "web", check=False)
    assert r.returncode == 1 and "waits for gate" in r.stderr, r.stdout + r.stderr


def test_up_detached_fails_when_a_one_shot_job_fails(make_app):
    app = make_app(f"""  web:
    command: {CPP}
    depends_on: {{migrate: {{condition: service_completed_successfully}}}}
  migrate:
    command: "echo no database; exit 2"
    port: none
    restart: "no"
""")
    pid_file = os.path.join(app.dir, ".flotilla", "flotilla.pid")
    agent_pid = None
    try:
        r = app.cli("up", "-d", "-f", app.path, "--wait", "30", timeout=60, check=False)
        agent_pid = int(open(pid_file).read().split()[0])
        assert r.returncode == 1, r.stdout + r.stderr
        assert "migrate: 0/1 ready, 1 failed (exited, not restarted)" in r.stdout, r.stdout
        assert "flotilla up: failed: migrate; see flotilla ps and flotilla events" in r.stderr, r.stderr
        migrate, web = app.service("migrate"), app.service("web")
        assert (migrate["State"], migrate["Failed"]) == ("failed", 1), migrate
        assert web["State"] == "waiting" and web["WaitingFor"] == ["migrate"], web
        assert "exited with code 2" in app.instances("migrate")[0]["Exit"]
        time.sleep(1.5)  # the 1 s tick looked again: web still waits
        assert app.instances("web") == []
        assert app.cli("down", "-f", app.path).returncode == 0
        wait_for(lambda: not alive(agent_pid), timeout=10, what="the detached agent gone")
    finally:
        if agent_pid and alive(agent_pid) and "flotilla" in describe(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)


def test_up_detached_fails_fast_when_a_command_cannot_start(make_app):
    app = make_app(f"""  web:
    command: [{SERVICES}/no-such-program, --port]
  fine:
    command: {CPP}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    pid_file = os.path.join(app.dir, ".flotilla", "flotilla.pid")
    agent_pid = None
    try:
        t0 = time.monotonic()
        r = app.cli("up", "-d", "-f", app.path, "--wait", "60", timeout=90, check=False)
        took = time.monotonic() - t0
        agent_pid = int(open(pid_file).read().split()[0])
        assert r.returncode == 1, r.stdout + r.stderr
        assert took < 30, f"up -d waited {took:.1f} s for a service that cannot start"
        assert re.search(r"web: 0/1 ready, crash-looping \(cannot start: .*No such file or directory\)", r.stdout), r.stdout
        assert "flotilla up: failed: web" in r.stderr, r.stderr
        st = app.cli("status").stdout
        assert re.search(r"web .*crash-looping.*last: cannot start: .*No such file or directory", st), st
        assert app.cli("down", "-f", app.path).returncode == 0
        wait_for(lambda: not alive(agent_pid), timeout=10, what="the detached agent gone")
    finally:
        if agent_pid and alive(agent_pid) and "flotilla" in describe(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)


def test_a_dependency_that_always_restarts_cannot_be_waited_on_to_complete(tmp_path):
    path = tmp_path / "flotilla.yaml"
    path.write_text(f"""name: never
services:
  web:
    command: {CPP}
    depends_on: {{migrate: {{condition: service_completed_successfully}}}}
  migrate:
    command: "true"
""")
    r = subprocess.run([BIN, "config", "check", "-f", str(path)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert re.search(r":\d+:\d+: services\.web\.depends_on: \"migrate\" has restart: always, so it never completes",
                     r.stderr), r.stderr


# ---- 5. health-gated registration ----

def test_instance_is_registered_only_once_healthy(make_app):
    app = make_app(f"""  slow:
    command: {PY}
    environment: {{UNHEALTHY_FOR_MS: "1500"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""", routes=ROUTE_ALL_TO.format("slow"))
    app.up(wait_ready=False)
    inst = wait_for(lambda: (lambda l: l and l[0]["Pid"] > 0 and l[0])(app.instances("slow")), timeout=10,
                    what="the instance started")
    started = first_event(app, "slow", "started")
    assert alive(inst["Pid"])
    # Until 1.5 s after its start it answers 500 on /healthz: running, not registered, no traffic.
    checks = 0
    while time.time() * 1000 < started["Time"] + 1200:
        assert registered_ids(app, "slow", passing=False) == [], "registered before healthy"
        assert app.instances("slow")[0]["State"] == "starting"
        checks += 1
        time.sleep(0.05)
    assert checks >= 3
    assert alive(inst["Pid"])
    status, _ = http(app.gw + "/")
    assert status == 503, "the gateway routed to an instance that is not healthy"
    wait_for(lambda: registered_ids(app, "slow") == [inst["ID"]], timeout=5, what="registered once healthy")
    healthy = first_event(app, "slow", "healthy")
    assert healthy["Time"] - started["Time"] >= 1400
    status, body = http(app.gw + "/")
    assert status == 200 and body["instance"] == inst["ID"]
    # Consul clients see the supervisor's healthcheck as the instance's check.
    (check,) = app.get("/v1/health/checks/slow")
    assert (check["CheckID"], check["ServiceID"], check["Status"]) == (f"service:{inst['ID']}", inst["ID"], "passing")
    assert check["Name"] == "flotilla healthcheck" and "HTTP GET /healthz every 100ms" in check["Notes"], check
    assert "200" in check["Output"], check
    (entry,) = app.get("/v1/health/service/slow?passing")
    assert f"service:{inst['ID']}" in [c["CheckID"] for c in entry["Checks"]]
    r = app.cli("services")
    assert re.search(rf"{inst['ID']}\s+127\.0\.0\.1:\d+\s+passing", r.stdout), r.stdout


# ---- 6. unhealthy after `retries` failed checks ----

def test_unhealthy_instance_is_deregistered_and_replaced(make_app, tmp_path):
    flag = str(tmp_path / "unhealthy-flag")
    # The failing answer is not UTF-8 (a service says what it likes): it reaches events and the
    # API with U+FFFD in place of the bad bytes, and it must not stop the instance's replacement.
    bad = (b"\xff\xfe not utf-8 " + "\u00e9".encode() * 120).hex()
    app = make_app(f"""  flaky:
    command: {PY}
    environment: {{HEALTH_FILE: "{flag}", UNHEALTHY_BODY_HEX: "{bad}"}}
    healthcheck: {{http: /healthz, interval: 200ms, retries: 3}}
""")
    app.up()
    (old,) = app.instances("flaky")
    assert registered_ids(app, "flaky") == [old["ID"]]
    with open(flag, "w"):
        pass
    touched = time.time()
    unhealthy = wait_for(lambda: events(app, "flaky", "unhealthy", old["ID"]), timeout=10,
                         what="the instance declared unhealthy")[0]
    # Three failures 200 ms apart: not at the first failed probe.
    assert unhealthy["Time"] / 1000 - touched >= 0.35, unhealthy
    assert "3 failed health checks" in unhealthy["Message"], unhealthy
    assert "\ufffd" in unhealthy["Message"] and "not utf-8" in unhealthy["Message"], unhealthy
    wait_for(lambda: old["ID"] not in registered_ids(app, "flaky", passing=False), timeout=2,
             what="the unhealthy instance deregistered")
    os.unlink(flag)
    new = wait_for(lambda: [i for i in ready_instances(app, "flaky") if i["ID"] != old["ID"]], timeout=10,
                   what="a replacement instance ready")
    assert len(new) == 1 and new[0]["ID"] != old["ID"]
    wait_for(lambda: registered_ids(app, "flaky", passing=False) == [new[0]["ID"]], timeout=3,
             what="only the replacement registered")
    wait_for(lambda: not alive(old["Pid"]), timeout=5, what="the unhealthy instance's process gone")
    assert app.service("flaky")["Restarts"] >= 1


# ---- 7. an exit leaves the registry at once ----

def test_exited_instance_leaves_the_registry_at_once(make_app):
    app = make_app(f"""  api:
    command: {CPP}
    replicas: 2
    healthcheck: {{http: /healthz, interval: 5s}}
""", routes=ROUTE_ALL_TO.format("api"))
    app.up(timeout=20)
    victim, other = app.instances("api")
    wait_for(lambda: sorted(gateway_endpoints(app, "api")) == sorted([victim["ID"], other["ID"]]), timeout=5,
             what="both instances routed")
    os.kill(victim["Pid"], signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: victim["ID"] not in registered_ids(app, "api", passing=False), timeout=4, interval=0.005,
             what="the dead instance deregistered")
    gone_after = time.monotonic() - killed
    print(f"deregistered {gone_after * 1000:.1f} ms after the kill")
    # The check interval is 5 s: anything well below it is the supervisor's doing, not a check's.
    assert gone_after < 4.0, f"deregistered {gone_after:.3f} s after the exit: only a health check explains that"
    wait_for(lambda: victim["ID"] not in gateway_endpoints(app, "api"), timeout=4, interval=0.005,
             what="the gateway stopped routing to it")
    crash = first_event(app, "api", "crashed")
    assert crash["Instance"] == victim["ID"] and crash["Data"]["signal"] == "SIGKILL"
    # Requests keep succeeding on the other instance.
    for _ in range(5):
        status, body = http(app.gw + "/")
        assert status == 200 and body["instance"] != victim["ID"]


# ---- 8. no orphans ----

FORKING = f"""  py:
    command: {PY}
    environment: {{FORK_CHILDREN: "1"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  sh:
    command: {SH}
    environment: {{FORK_CHILDREN: "1"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  cpp:
    command: {CPP}
    environment: {{FORK_CHILDREN: "1"}}
    depends_on: [py]
    healthcheck: {{http: /healthz, interval: 100ms}}
"""


def start_forking_app(make_app):
    app = make_app(FORKING, routes=ROUTE_ALL_TO.format("py"))
    app.up()
    kids = {}
    for name in ("py", "sh", "cpp"):
        kids.update(wait_for(lambda: children_of(app, name), timeout=5, what=f"the children line of {name}"))
    assert len(kids) == 3
    pids = [p for pair in kids.values() for p in pair] + [i["Pid"] for i in app.instances()]
    for p in pids:
        assert alive(p), describe(p)
    procs = set(app_processes(app.name))
    assert set(pids) <= procs, "app_processes() must see the children"
    return app, pids


def test_no_orphans_after_down(make_app):
    app, pids = start_forking_app(make_app)
    r = subprocess.run([BIN, "down", "--api", f"127.0.0.1:{app.api_port}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert app.proc.wait(timeout=15) == 0, "the agent did not exit cleanly after down"
    wait_for(lambda: not app_processes(app.name), timeout=5, what="no process of the app left after down")
    assert not [p for p in pids if alive(p)]
    # Dependents first: cpp (depends on py) had stopped before py was asked to stop. The events
    # are in the store; read them with a fresh agent on the same data dir... not needed: the
    # agent's log has them in order.
    log = app.read_log()
    cpp_stopped = re.search(r"cpp cpp-\w+: (exited|killed|stopped)", log)
    py_stopping = re.search(r"py py-\w+: stopping the application", log)
    assert cpp_stopped and py_stopping and cpp_stopped.start() < py_stopping.start(), log[-3000:]


def test_no_orphans_after_agent_kill9(make_app):
    app, pids = start_forking_app(make_app)
    app.kill9()
    left = []

    def none_left():
        left[:] = app_processes(app.name)
        return not left
    wait_for(none_left, timeout=5, what="no process of the app left after kill -9 of the agent")
    assert not [p for p in pids if alive(p)]


def test_no_orphans_when_a_forking_service_exits_by_itself(make_app):
    # restart: "no": once each main process has crashed nothing of the app may remain, although
    # each of them left a child and a setsid daemon behind.
    app = make_app("".join(f"""  {name}:
    command: {cmd}
    restart: "no"
    environment: {{FORK_CHILDREN: "1", CRASH_AFTER_MS: "700"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""" for name, cmd in (("py", PY), ("sh", SH), ("cpp", CPP))))
    app.up(wait_ready=False)
    kids = {}
    for name in ("py", "sh", "cpp"):
        kids.update(wait_for(lambda: children_of(app, name), timeout=5, what=f"the children line of {name}"))
    for name in ("py", "sh", "cpp"):
        wait_for(lambda: events(app, name, "crashed"), timeout=5, what=f"{name} crashed")
    left = []

    def none_left():
        left[:] = app_processes(app.name)
        return not left
    wait_for(none_left, timeout=5, what="no process left by the crashed instances")
    assert not [p for pair in kids.values() for p in pair if alive(p)]
    assert app.proc.poll() is None, "the agent must keep running"


def test_stop_kills_a_service_that_ignores_its_stop_signal_after_the_grace_period(make_app):
    app = make_app("""  stubborn:
    command: "trap '' TERM; echo ignoring TERM; exec sleep 1000"
    port: none
    stop_grace_period: 1s
""")
    app.up()
    (inst,) = app.instances("stubborn")
    t0 = time.monotonic()
    app.cli("down", "--api", f"127.0.0.1:{app.api_port}", timeout=30)
    took = time.monotonic() - t0
    assert 0.9 <= took < 20, f"down took {took:.2f} s with a 1 s grace period"
    assert app.proc.wait(timeout=10) == 0
    assert "did not exit within stop_grace_period: killed" in app.read_log()
    assert not alive(inst["Pid"])
    wait_for(lambda: not app_processes(app.name), timeout=5, what="nothing of the app left")


def test_a_command_that_cannot_start_is_reported_and_retried_with_backoff(make_app):
    app = make_app(f"""  ghost:
    command: [{SERVICES}/no-such-program]
  fine:
    command: {CPP}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up(wait_ready=False)
    fails = wait_for(lambda: (lambda f: len(f) >= 4 and f)(events(app, "ghost", "failed")), timeout=10,
                     what="4 failed starts")
    assert "no-such-program" in fails[0]["Message"] and "No such file or directory" in fails[0]["Message"], fails[0]
    assert_backoff(app, "ghost", [b["Time"] - a["Time"] for a, b in zip(fails, fails[1:])])
    wait_for(lambda: app.service("ghost")["State"] == "crash-looping", timeout=5, what="ghost crash-looping")
    # The other service is not disturbed.
    wait_for(lambda: len(ready_instances(app, "fine")) == 1, timeout=5, what="fine ready")


def test_a_failed_start_after_a_crash_is_retried(make_app, tmp_path):
    # The program is gone when its crashed instance is restarted (a deploy replacing the binary,
    # say), then comes back: the supervisor keeps retrying, with backoff, until it starts.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = str(bindir / "svc")
    shutil.copy(CPP_SERVICE, prog)
    app = make_app(f"""  svc:
    command: [{prog}]
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up()
    (inst,) = app.instances("svc")
    os.rename(prog, prog + ".away")
    os.kill(inst["Pid"], signal.SIGKILL)
    wait_for(lambda: events(app, "svc", "failed"), timeout=5, what="a failed start")
    os.rename(prog + ".away", prog)
    wait_for(lambda: len(ready_instances(app, "svc")) == 1, timeout=10, what="svc restarted once its program is back")


# ---- 9. recovery after kill -9 of the agent ----

def test_recovery_after_agent_kill9_keeps_scale_and_deployed_version(make_app):
    app = make_app(f"""  svc:
    command: {PY}
    environment: {{VERSION: "1"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""", routes=ROUTE_ALL_TO.format("svc"))
    app.up()
    v1 = app.service("svc")["Version"]
    status, body = app.request("POST", "/v1/flotilla/services/svc/scale", {"replicas": 3})
    assert status == 200, body
    wait_for(lambda: len(ready_instances(app, "svc")) == 3, timeout=15, what="3 instances")
    status, body = app.request("POST", "/v1/flotilla/services/svc/deploy", {"set": ["environment.VERSION=2"]})
    assert status == 200, body

    def deployed():
        s = app.service("svc")
        inst = app.instances("svc")
        return (s["Version"] != v1 and "Rollout" not in s and len(inst) == 3
                and all(i["State"] == "ready" and i["Version"] == s["Version"] for i in inst) and s)
    v2 = wait_for(deployed, timeout=30, what="version 2 rolled out to 3 instances")["Version"]
    before = app.instances("svc")
    for i in before:
        assert http(f"http://127.0.0.1:{i['Port']}/")[1]["version"] == "2"

    app.kill9()
    wait_for(lambda: not app_processes(app.name), timeout=5, what="the old agent's instances gone")
    app.up(timeout=30)

    def recovered():
        s = app.service("svc")
        inst = app.instances("svc")
        return (s["Version"] == v2 and len(inst) == 3 and all(i["State"] == "ready" for i in inst)
                and s["Desired"] == 3 and inst)
    after = wait_for(recovered, timeout=20, what="3 ready instances of version 2 after the restart")
    assert not {i["ID"] for i in after} & {i["ID"] for i in before}
    for i in after:
        status, body = http(f"http://127.0.0.1:{i['Port']}/")
        assert status == 200 and body["version"] == "2" and body["instance"] == i["ID"]
    wait_for(lambda: registered_ids(app, "svc", passing=False) == sorted(i["ID"] for i in after), timeout=5,
             what="the registry holds exactly the 3 new instances")
    time.sleep(0.5)  # nothing more starts: still exactly 3
    assert registered_ids(app, "svc", passing=False) == sorted(i["ID"] for i in after)
    assert len(app.instances("svc")) == 3
    assert not [i for i in before if alive(i["Pid"])]
    # Every process of the app is a current instance or its shim.
    current = {i["Pid"] for i in after}
    shims = {ppid_of(c) for c in current}
    stray = [p for p in app_processes(app.name) if p not in current and p not in shims]
    assert not stray, [describe(p) for p in stray]


def test_down_keep_restarts_with_runtime_changes_and_plain_down_forgets_them(make_app):
    app = make_app(f"""  svc:
    command: {CPP}
    environment: {{VERSION: "1"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up()
    v1 = app.service("svc")["Version"]
    # A canary of the version that runs compares nothing with itself: refused.
    status, body = app.request("POST", "/v1/flotilla/services/svc/deploy", {"canary": 10})
    assert status == 400 and "nothing to deploy" in body["error"], body
    status, body = app.request("POST", "/v1/flotilla/services/svc/deploy",
                               {"set": ["environment.VERSION=1"], "canary": 10})
    assert status == 400 and "already runs" in body["error"], body
    assert "Canary" not in app.service("svc")
    app.cli("scale", "svc=2")
    app.cli("deploy", "svc", "--set", "environment.VERSION=2", "--wait")
    v2 = app.service("svc")["Version"]
    assert v2 != v1

    status, body = app.request("POST", "/v1/flotilla/down?keep=maybe")
    assert status == 400 and body["field"] == "keep", body
    r = app.cli("down", "--keep")
    assert app.proc.wait(timeout=10) == 0, r.stdout + r.stderr
    assert "flotilla down --keep: stopping every service" in app.read_log()
    app.up()
    s = app.service("svc")
    assert (s["Version"], s["Desired"], s["Ready"]) == (v2, 2, 2), s

    app.cli("down")
    assert app.proc.wait(timeout=10) == 0
    app.up()
    s = app.service("svc")
    assert (s["Version"], s["Desired"], s["Ready"]) == (v1, 1, 1), s


# ---- 10. re-applied `flotilla up` ----

def test_reapplied_up_changes_only_what_changed(make_app):
    steady = f"""  steady:
    command: {PY}
    environment: {{VERSION: "1"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    extra = f"""  extra:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
"""

    def moving(version, replicas=2):
        return f"""  moving:
    command: {CPP}
    replicas: {replicas}
    environment: {{VERSION: "{version}"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    app = make_app(steady + moving(1))
    app.up()
    steady_before = {(i["ID"], i["Pid"]) for i in app.instances("steady")}
    moving_v1 = app.service("moving")["Version"]
    moving_old = {i["ID"] for i in app.instances("moving")}

    # Only `moving` changes: it rolls out; `steady` is untouched.
    app.write(steady + moving(2))
    r = app.cli("up", "-f", app.path)
    assert "applied" in r.stdout, r.stdout

    def rolled():
        s = app.service("moving")
        inst = app.instances("moving")
        return (s["Version"] != moving_v1 and "Rollout" not in s and len(inst) == 2
                and all(i["State"] == "ready" and i["Version"] == s["Version"] for i in inst) and inst)
    moving_new = wait_for(rolled, timeout=30, what="moving rolled out")
    assert not {i["ID"] for i in moving_new} & moving_old
    for i in moving_new:
        assert http(f"http://127.0.0.1:{i['Port']}/")[1]["version"] == "2"
    assert {(i["ID"], i["Pid"]) for i in app.instances("steady")} == steady_before, "an unchanged service was touched"
    assert not events(app, "steady", "stopping")

    # `steady` removed, `extra` added, `moving` as it is.
    app.write(moving(2) + extra)
    r = app.cli("up", "-f", app.path)
    assert "applied" in r.stdout, r.stdout
    wait_for(lambda: sorted(s["Name"] for s in app.status()["Services"]) == ["extra", "moving"], timeout=15,
             what="steady gone, extra present")
    wait_for(lambda: len(ready_instances(app, "extra")) == 1, timeout=10, what="extra ready")
    for _, pid in steady_before:
        wait_for(lambda: not alive(pid), timeout=5, what="the removed service's process gone")
    assert registered_ids(app, "steady", passing=False) == []
    assert {(i["ID"], i["Pid"]) for i in app.instances("moving")} == {(i["ID"], i["Pid"]) for i in moving_new}

    # Only `moving`'s replicas change: it scales, nothing rolls out.
    app.write(moving(2, replicas=3) + extra)
    r = app.cli("up", "-f", app.path)
    assert re.search(r"changed: +-\n", r.stdout) and re.search(r"settings: +moving ", r.stdout), r.stdout
    assert "rolling out" not in r.stdout, r.stdout
    wait_for(lambda: len(ready_instances(app, "moving")) == 3, timeout=15, what="moving scaled to 3")
    assert {i["ID"] for i in moving_new} <= {i["ID"] for i in app.instances("moving")}, "an instance was replaced"


def test_up_again_says_when_a_deployed_version_is_kept_and_scales_with_an_event(make_app):
    web = f"""  web:
    command: {SH}
    replicas: 1
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    app = make_app(web).up()
    app.cli("deploy", "web", "--set", "environment.FEATURE=on", "--wait")
    r = app.cli("up", "-f", app.path)
    assert re.search(r"unchanged: +web\n", r.stdout) and re.search(r"deployed: +web ", r.stdout), r.stdout
    # The file now asks for 2: a scale, with its event, and still the deployed version.
    app.write(web.replace("replicas: 1", "replicas: 2"))
    r = app.cli("up", "-d", "-f", app.path, "--wait", "30")
    assert re.search(r"settings: +web ", r.stdout) and re.search(r"deployed: +web ", r.stdout), r.stdout
    (scaled,) = events(app, "web", "scaled")
    assert (scaled["Data"]["from"], scaled["Data"]["to"]) == (1, 2) and "flotilla.yaml" in scaled["Message"], scaled
    # Rolled back to the file's version: nothing to say any more.
    app.cli("rollback", "web", "--wait")
    r = app.cli("up", "-f", app.path)
    assert "deployed:" not in r.stdout, r.stdout


def test_a_changed_agent_api_is_found_through_the_data_dir(make_app):
    app = make_app(f"""  web:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    app.up(wait_ready=True)
    old_api, agent_pid = f"127.0.0.1:{app.api_port}", app.proc.pid
    app.api_port = free_port()  # the file now names another address; the agent still listens on the old one
    app.write()
    r = app.cli("up", "-d", "-f", app.path, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"already runs on the data dir" in r.stderr and f"API {old_api}" in r.stderr, r.stderr
    assert f"flotilla down -f {app.path}" in r.stderr, r.stderr
    assert app.proc.poll() is None, "the running application was left alone"
    # Every command finds it there (status too), and down stops it.
    r = app.cli("status", "-f", app.path)
    assert "web" in r.stdout and f"listens on {old_api}" in r.stderr, r.stdout + r.stderr
    r = app.cli("down", "-f", app.path)
    assert f"listens on {old_api}" in r.stderr and "stopped" in r.stdout, r.stdout + r.stderr
    assert app.proc.wait(timeout=30) == 0 and not alive(agent_pid)
    r = app.cli("down", "-f", app.path)
    assert r.stdout.startswith("nothing to stop"), r.stdout


def test_commands_refuse_another_applications_agent(make_app, tmp_path):
    # Two projects left on the same agent.api: from the second one's directory, down (or deploy,
    # status, …) must not act on the first one's application.
    app = make_app(f"""  web:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
""").up()
    other = tmp_path / "other"
    other.mkdir()
    (other / "flotilla.yaml").write_text(f"name: other\nagent:\n  api: 127.0.0.1:{app.api_port}\n")
    env = {k: v for k, v in os.environ.items() if k != "FLOTILLA_API"}
    for args in (["down"], ["status"], ["restart", "web"], ["deploy", "web", "--set", "environment.X=1"]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, cwd=other, env=env, timeout=30)
        assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
        assert f'runs "{app.name}", not "other"' in r.stderr, (args, r.stderr)
    assert app.proc.poll() is None and app.service("web")["State"] == "running"
    assert not events(app, "web", "restart-started") and not events(app, "web", "deploy-started")


def test_commands_say_when_another_server_holds_agent_api(tmp_path):
    # A web server that is not flotilla on the file's agent.api: up and down say so, rather than
    # "an agent without an application" or its HTML error page as the message.
    port = free_port()
    (tmp_path / "flotilla.yaml").write_text(f"name: shop\nagent:\n  api: 127.0.0.1:{port}\n"
                                            "services:\n  job: {command: 'true', port: none, restart: 'no'}\n")
    srv = subprocess.Popen([PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(port)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 0,
                 timeout=10, what="the web server")
        env = {k: v for k, v in os.environ.items() if k != "FLOTILLA_API"}
        for args in (["up", "-d"], ["down"], ["status"]):
            r = subprocess.run([BIN, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30)
            assert r.returncode != 0, (args, r.stdout, r.stderr)
            assert "not a flotilla agent" in r.stderr and "<html" not in r.stderr.lower(), (args, r.stderr)
            assert "without an application" not in r.stderr, (args, r.stderr)
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def test_a_crashing_canary_is_rolled_back_by_itself(make_app):
    app = make_app(f"""  web:
    command: {SH}
    replicas: 2
    healthcheck: {{http: /healthz, interval: 100ms}}
""").up()
    before = {i["ID"] for i in app.instances("web")}
    r = app.cli("deploy", "web", "--set", "command=exit 3", "--canary", "10")
    assert "canary at 10%" in r.stdout, r.stdout
    failed = wait_for(lambda: events(app, "web", "canary-failed"), timeout=20, what="canary-failed")[0]
    assert "crashed 3 times" in failed["Message"], failed
    wait_for(lambda: "Canary" not in app.service("web") and app.service("web")["State"] == "running", timeout=10,
             what="the canary gone")
    assert {i["ID"] for i in app.instances("web")} == before
    r = app.cli("promote", "web", check=False)
    assert r.returncode == 1 and "no canary" in r.stderr, r.stderr


def test_a_dependency_added_while_running_gets_its_url(make_app):
    # Nothing depends on anything at first: the gateway has no listener of a service's own.
    quotes = f"""  quotes:
    command: {CPP}
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    app = make_app(quotes, routes=ROUTE_ALL_TO.format("quotes"))
    app.up()
    assert app.service_port("quotes") == 0
    quotes_before = {i["ID"] for i in app.instances("quotes")}

    # A new service that depends on quotes: quotes gets a listener, web its QUOTES_URL.
    web = f"""  web:
    command: {PY}
    depends_on: [quotes]
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    r = app.cli("up", "-f", app.path)
    assert "added:     -" in r.stdout, r.stdout  # nothing changed yet: the file is the same
    # Another application's file is refused before the gateway opens anything for it.
    other = os.path.join(app.dir, "other.yaml")
    with open(app.path) as f:
        text = f.read()
    with open(other, "w") as f:
        f.write(text.replace(f"name: {app.name}", "name: other", 1) + web)
    status, body = app.request("POST", "/v1/flotilla/apply", {"file": other})
    assert status == 409 and "not \"other\"" in body["error"], body
    assert app.service_port("quotes") == 0
    app.write(quotes + web)
    r = app.cli("up", "-f", app.path)
    assert re.search(r"added: +web\n", r.stdout) and "restart needed" not in r.stdout, r.stdout
    port = app.service_port("quotes")
    assert port > 0
    assert listening_sockets(port) == 2, "one listener per gateway worker"
    (w,) = wait_for(lambda: ready_instances(app, "web"), timeout=15, what="web ready")
    status, env = http(f"http://127.0.0.1:{w['Port']}/env")
    assert status == 200 and env["QUOTES_URL"] == f"http://127.0.0.1:{port}", env.get("QUOTES_URL")
    for _ in range(20):  # a new connection each: SO_REUSEPORT spreads them over both workers' sockets
        status, body = http(f"http://127.0.0.1:{w['Port']}/call?dep=quotes")
        assert status == 200 and body["via"]["service"] == "quotes", body
    assert {i["ID"] for i in app.instances("quotes")} == quotes_before, "quotes was not touched"

    # An existing service gains a dependency: a new environment, so it rolls out with USERS_URL.
    users = f"""  users:
    command: {SH}
    healthcheck: {{http: /healthz, interval: 100ms}}
"""
    app.write(quotes.replace("    healthcheck:", "    depends_on: [users]\n    healthcheck:") + web + users)
    r = app.cli("up", "-f", app.path)
    assert re.search(r"changed: +quotes ", r.stdout) and re.search(r"added: +users\n", r.stdout), r.stdout

    def rolled():
        inst = app.instances("quotes")
        return (len(inst) == 1 and inst[0]["ID"] not in quotes_before and inst[0]["State"] == "ready"
                and "Rollout" not in app.service("quotes") and inst)
    (q,) = wait_for(rolled, timeout=30, what="quotes rolled out")
    status, env = http(f"http://127.0.0.1:{q['Port']}/env")
    assert env["USERS_URL"] == f"http://127.0.0.1:{app.service_port('users')}", env.get("USERS_URL")
    status, body = http(env["USERS_URL"] + "/")
    assert status == 200 and body["service"] == "users", body
    assert app.service_port("quotes") == port, "a listener stays where it is"


# ---- 11. config errors, up -d, down -f ----

def test_config_errors_are_reported_with_file_line_col(tmp_path):
    cyclic = tmp_path / "cycle.yaml"
    cyclic.write_text(f"""name: cyc
agent:
  api: 127.0.0.1:1
services:
  a:
    command: {PY}
    depends_on: [b]
  b:
    command: {CPP}
    depends_on: [c]
  c:
    command: {SH}
    depends_on: [a]
""")
    for args in (["config", "check", "-f", str(cyclic)], ["up", "-f", str(cyclic)]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=20, cwd=tmp_path)
        assert r.returncode != 0, f"{args}: {r.stdout}{r.stderr}"
        assert re.search(re.escape(str(cyclic)) + r":\d+:\d+: depends_on has a cycle", r.stderr), r.stderr

    typo = tmp_path / "typo.yaml"
    typo.write_text(f"""name: typo
services:
  a:
    comand: {PY}
""")
    for args in (["config", "check", "-f", str(typo)], ["up", "-f", str(typo)]):
        r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=20, cwd=tmp_path)
        assert r.returncode != 0
        assert re.search(re.escape(str(typo)) + r":4:5: .*unknown key \"comand\"", r.stderr), r.stderr
        assert "command" in r.stderr.split("comand", 1)[1], "the message names the known keys"
    assert not (tmp_path / ".flotilla").exists(), "a bad file started nothing"


def test_up_detached_then_down_by_file(make_app):
    app = make_app(f"""  web:
    command: {SH}
    depends_on: {{db: {{condition: service_healthy}}}}
    healthcheck: {{http: /healthz, interval: 100ms}}
  db:
    command: {CPP}
    environment: {{UNHEALTHY_FOR_MS: "500"}}
    healthcheck: {{http: /healthz, interval: 100ms}}
""")
    pid_file = os.path.join(app.dir, ".flotilla", "flotilla.pid")
    agent_pid = None
    try:
        r = app.cli("up", "-d", "-f", app.path, timeout=60)
        assert "all services ready" in r.stdout, r.stdout
        assert os.path.exists(pid_file)
        agent_pid = int(open(pid_file).read().split()[0])
        assert alive(agent_pid)
        # Returned only once every service is ready.
        s = app.status()
        assert all(x["Ready"] == x["Desired"] == 1 for x in s["Services"]), s
        pids = [i["Pid"] for i in app.instances()]
        r = app.cli("down", "-f", app.path, timeout=60)
        assert r.returncode == 0
        wait_for(lambda: not alive(agent_pid), timeout=10, what="the detached agent gone")
        assert not os.path.exists(pid_file), "the pid file stays after down"
        wait_for(lambda: not app_processes(app.name), timeout=5, what="no process of the app left")
        assert not [p for p in pids if alive(p)]
    finally:
        if agent_pid and alive(agent_pid) and "flotilla" in describe(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
