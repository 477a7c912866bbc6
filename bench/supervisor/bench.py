#!/usr/bin/python3
"""Supervisor measurements for docs/benchmarks.md (run by bench/supervisor/run.sh).

  (a) start-up: `flotilla up -d` until every service is healthy, for a 5-service file (the C++ test
      service, 2 replicas each; a -> b -> c a depends_on chain with condition service_healthy,
      d and e free), median of ROUNDS runs; once with the default health check (TCP connect,
      every 1 s) and once with `healthcheck: {http: /healthz, interval: 200ms}`.
  (b) death: an instance of 2 is killed with SIGKILL while a load (LOAD_RATE req/s, 6 keep-alive
      clients) runs through the gateway with retries off for the route; from the kill to the start
      of the last request the gateway routed to it (its access log), and the failed requests;
      median of KILLS kills.
  (c) rolling deploys of 4 instances under that load (retries at their defaults), DEPLOYS of them:
      failed requests (target 0) and requests sent.
  (d) autoscale: 1 instance, autoscale {min 1, max 4, target rps_per_instance 50}; a step from
      no load to 200 req/s; seconds until the added instances answer through the gateway (the
      last of the 3 new ones), median of ROUNDS steps (each after the service is back at 1).

Reuses the end-to-end tests' App (tests/integration/supervised_app.py: free ports, its own temp
dir, everything stopped by PID) and load generator (tests/integration/traffic.py): every load is
bounded in time and count. Prints a table; writes it as markdown to RESULTS.
"""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from supervised_app import BIN, CPP_SERVICE, App  # noqa: E402
from traffic import Load  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
KILLS = int(os.environ.get("KILLS", "5"))
DEPLOYS = int(os.environ.get("DEPLOYS", "3"))
LOAD_RATE = int(os.environ.get("LOAD_RATE", "500"))
RESULTS = os.environ.get("RESULTS", os.path.join(ROOT, "bench", "supervisor", "results-latest.md"))
KEEP = os.environ.get("BENCH_KEEP") == "1"
FAST_HC = "{ http: /healthz, interval: 200ms, timeout: 500ms }"
ROUTE = "    - match: { path_prefix: / }\n      service: web\n"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def service(name, replicas=2, hc=None, extra=""):
    text = f"  {name}:\n    command: [{CPP_SERVICE}]\n    environment: {{ VERSION: \"1\" }}\n    replicas: {replicas}\n"
    if hc:
        text += f"    healthcheck: {hc}\n"
    return text + extra


def settled(app, n, name="web"):
    s = app.service(name)
    inst = app.instances(name)
    return ("Rollout" not in s and len(inst) == n and
            all(i["State"] == "ready" and i["Version"] == s["Version"] for i in inst)) and inst


class Workdir:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="flotilla-bench-supervisor-")
        self.n = 0

    def new(self):
        self.n += 1
        d = os.path.join(self.root, f"app{self.n}")
        os.makedirs(d)
        return d

    def close(self):
        if KEEP:
            log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


# ---- (a) start-up ----

def startup(work, hc, label):
    services = (service("a", hc=hc) +
                service("b", hc=hc, extra="    depends_on: { a: { condition: service_healthy } }\n") +
                service("c", hc=hc, extra="    depends_on: { b: { condition: service_healthy } }\n") +
                service("d", hc=hc) + service("e", hc=hc))
    times = []
    for r in range(ROUNDS):
        app = App(work.new(), services)
        try:
            t0 = time.monotonic()
            p = subprocess.run([BIN, "up", "-d", "-f", app.path], cwd=app.dir, capture_output=True, text=True,
                               timeout=120)
            took = time.monotonic() - t0
            m = re.search(r"agent pid (\d+)", p.stdout)
            if p.returncode != 0 or not m:
                raise RuntimeError(f"flotilla up -d failed ({p.returncode}): {p.stdout}{p.stderr}")
            app.agent_pid = int(m.group(1))
            st = app.status()
            ready = all(s["Ready"] >= s["Desired"] == 2 for s in st["Services"]) and len(st["Services"]) == 5
            if not ready:
                raise RuntimeError(f"up -d returned before every service was ready: {st}")
            times.append(took)
            log(f"  (a) {label} round {r + 1}: {took:.2f}s")
        finally:
            down(app)
    return times


def down(app):
    """`flotilla down`, then make sure the agent (by its pid) and every instance are gone."""
    subprocess.run([BIN, "down"], cwd=app.dir, capture_output=True, timeout=60,
                   env={**os.environ, "FLOTILLA_API": f"127.0.0.1:{app.api_port}"})
    pid = getattr(app, "agent_pid", None)
    if pid:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and not zombie(pid):
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}") and not zombie(pid):
            os.kill(pid, signal.SIGKILL)
    app.cleanup()


def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---- (b) death -> last request routed ----

def parse_time(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def deaths(work):
    d = work.new()
    access = os.path.join(d, "access.log")
    route = ROUTE + "      retry: { attempts: 1 }\n"
    app = App(d, service("web", hc=FAST_HC), routes=route, gateway_yaml=f"  access_log: {access}\n")
    routed, failed, failing_ms = [], [], []
    try:
        app.up()
        load = Load(app.gw, threads=6, rate=LOAD_RATE, duration=30 + KILLS * 10, max_requests=10 ** 6, name="death")
        with load:
            load.wait_count(300)
            for k in range(KILLS):
                victim = app.instances("web")[k % 2]
                address = f"127.0.0.1:{victim['Port']}"
                t_kill = time.time()
                os.kill(victim["Pid"], signal.SIGKILL)
                wait(lambda: victim["ID"] not in {i["ID"] for i in app.instances("web")} and settled(app, 2), 20,
                     "the killed instance replaced")
                load.wait_count(300)
                time.sleep(1.2)  # the access log is flushed in batches
                last = None
                with open(access) as f:
                    for line in f:
                        rec = json.loads(line)
                        if rec["upstream"] == address:
                            started = parse_time(rec["time"]) - rec["duration"]
                            last = started if last is None else max(last, started)
                bad = load.failures(since=t_kill - 0.1, until=t_kill + 5)
                routed.append((last - t_kill) * 1000)
                failed.append(len(bad))
                failing_ms.append((max(r.t1 for r in bad) - t_kill) * 1000 if bad else 0.0)
                log(f"  (b) kill {k + 1}: last request routed to it {routed[-1]:.1f} ms after the kill, "
                    f"{failed[-1]} failed request(s)")
    finally:
        app.cleanup()
    return routed, failed, failing_ms


# ---- (c) rolling deploys ----

def rolling(work):
    app = App(work.new(), service("web", replicas=4, hc=FAST_HC), routes=ROUTE)
    durations = []
    try:
        app.up()
        load = Load(app.gw, threads=6, rate=LOAD_RATE, duration=30 + DEPLOYS * 20, max_requests=10 ** 6,
                    post_every=4, name="deploy")
        with load:
            load.wait_count(300)
            for k in range(DEPLOYS):
                t0 = time.monotonic()
                st, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                                       {"set": [f"environment.VERSION={k + 2}"]})
                if st != 200:
                    raise RuntimeError(f"deploy: {st} {body}")
                wait(lambda: settled(app, 4), 60, "the rollout finished")
                durations.append(time.monotonic() - t0)
                log(f"  (c) deploy {k + 1}: {durations[-1]:.2f}s, failed so far {len(load.failures())}")
                load.wait_count(300)
        total, bad = load.count(), load.failures()
        posts = sum(1 for r in load.snapshot() if r.method == "POST")
    finally:
        app.cleanup()
    return total, posts, bad, durations


# ---- (d) autoscale ----

def autoscale(work):
    extra = "    autoscale: { min: 1, max: 4, target: { rps_per_instance: 50 }, scale_down_window: 5s }\n"
    app = App(work.new(), service("web", replicas=1, hc=FAST_HC, extra=extra), routes=ROUTE)
    out = []
    try:
        app.up()
        for r in range(ROUNDS):
            wait(lambda: settled(app, 1), 60, "back at 1 instance")
            time.sleep(1.0)
            load = Load(app.gw, threads=4, rate=200, duration=30, max_requests=10 ** 5, name="autoscale")
            with load:
                t_step = time.time()
                wait(lambda: len(load.instances(since=t_step)) >= 4, 30, "answers from 4 instances")
                first = {}
                for rec in load.snapshot():
                    if rec.ok and rec.instance not in first:
                        first[rec.instance] = rec.t0
            out.append((max(first.values()) - t_step, len(load.failures())))
            log(f"  (d) step {r + 1}: 4 instances serving {out[-1][0]:.2f}s after the step")
    finally:
        app.cleanup()
    return out


def main():
    work = Workdir()
    rows = []
    try:
        log("(a) flotilla up -d -> all healthy, 5 services x 2 instances, chain a -> b -> c (service_healthy)")
        t_default = startup(work, None, "default health check")
        t_fast = startup(work, FAST_HC, "http health check every 200ms")
        rows.append(("up -d -> all healthy (5 services x 2, a->b->c healthy chain), default health check "
                     "(TCP, 1s)", f"{statistics.median(t_default):.2f} s",
                     f"median of {len(t_default)}: " + ", ".join(f"{t:.2f}" for t in t_default)))
        rows.append(("same, `healthcheck: {http: /healthz, interval: 200ms}`", f"{statistics.median(t_fast):.2f} s",
                     f"median of {len(t_fast)}: " + ", ".join(f"{t:.2f}" for t in t_fast)))
        log(f"(b) SIGKILL of an instance under {LOAD_RATE} req/s, retries off")
        routed, failed, failing = deaths(work)
        rows.append(("instance death -> last request routed to it (access log)", f"{statistics.median(routed):.1f} ms",
                     f"median of {len(routed)} kills; max {max(routed):.1f} ms; target < 50 ms"))
        rows.append(("  failed requests per kill (retries off) / last failure after the kill",
                     f"{statistics.median(failed):g}", f"each: {failed}; last failure "
                     + ", ".join(f"{x:.0f}" for x in failing) + " ms"))
        log(f"(c) rolling deploys of 4 instances under {LOAD_RATE} req/s")
        total, posts, bad, durations = rolling(work)
        rows.append((f"failed requests during {len(durations)} rolling deploys of 4 instances", f"{len(bad)}",
                     f"of {total} requests ({posts} POST) at {LOAD_RATE} req/s; target 0; each rollout "
                     + ", ".join(f"{d:.2f}" for d in durations) + " s"))
        log("(d) autoscale: load step 0 -> 200 req/s, target 50 req/s per instance")
        steps = autoscale(work)
        secs = [s for s, _ in steps]
        rows.append(("load step -> added instances serving (autoscale 1 -> 4)", f"{statistics.median(secs):.2f} s",
                     f"median of {len(secs)}: " + ", ".join(f"{s:.2f}" for s in secs)
                     + f"; failed requests {sum(f for _, f in steps)}; target < 5 s"))
    finally:
        work.close()

    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'measurement'.ljust(width)}  {'result':>10}  notes")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>10}  {note}")
    with open(RESULTS, "w") as f:
        f.write(f"Supervisor measurements ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
                f"bench/supervisor/run.sh)\n\n| measurement | result | notes |\n|---|---|---|\n")
        for name, value, note in rows:
            f.write(f"| {name.strip()} | {value} | {note} |\n")
    log(f"\nwritten to {RESULTS}")
    ok = len(bad) == 0 and max(routed) < 1000
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
