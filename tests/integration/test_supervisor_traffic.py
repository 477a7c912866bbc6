"""The supervisor under traffic, end to end: `flotilla up` with a public gateway listener, real
services (tests/integration/services/), and a bounded load of keep-alive clients (traffic.Load)
through the gateway while the supervisor deploys, scales, canaries, autoscales and loses instances.

What is asserted is what a user is promised (issue 4): zero non-2xx answers and zero connection
errors during a rolling deploy, a scale up and down and a rollout that rolls itself back; a canary
split within a few percent of what was asked; automatic canary verdicts; autoscaling up under a
load step and back down after the window; a dead instance out of routing within a second.
Timings (autoscale reaction, death -> last request routed to it) are printed (`pytest -s`), not
asserted tightly: the machine is shared and noisy.

Every load is bounded in time and count and stops by itself; every process is stopped by PID
(App.cleanup()).
"""
import json
import os
import signal
import time
from datetime import datetime, timezone

import pytest

from conftest import wait_for
from supervised_app import CPP_SERVICE, PYTHON, SERVICES, App
from traffic import Load

HC = "{ http: /healthz, interval: 200ms, timeout: 500ms }"
ROUTE = "    - match: { path_prefix: / }\n      service: web\n"


def cpp_service(replicas, extra="", env=None):
    env = {"VERSION": "1", **(env or {})}
    env_yaml = ", ".join(f'{k}: "{v}"' for k, v in env.items())
    return (f"  web:\n    command: [{CPP_SERVICE}]\n    environment: {{ {env_yaml} }}\n"
            f"    replicas: {replicas}\n    healthcheck: {HC}\n    stop_grace_period: 5s\n{extra}")


def py_service(replicas, extra=""):
    return (f"  web:\n    command: [{PYTHON}, {os.path.join(SERVICES, 'py_service.py')}]\n"
            f"    environment: {{ VERSION: \"1\" }}\n    replicas: {replicas}\n    healthcheck: {HC}\n"
            f"    stop_grace_period: 5s\n{extra}")


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def make(services, routes=ROUTE, **kw):
        d = tmp_path / f"app{len(apps)}"
        d.mkdir()
        a = App(d, services, routes=routes, **kw)
        apps.append(a)
        return a

    yield make
    for a in apps:
        left = a.cleanup()
        assert not left, f"processes of {a.name} survived the agent: {left}"


# ---- helpers ----

def last_seq(app):
    ev = app.events()
    return ev[-1]["Seq"] if ev else 0


def wait_event(app, kind, after=0, timeout=30, service="web"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in app.events(after):
            if e["Kind"] == kind and (service is None or e["Service"] == service):
                return e
        time.sleep(0.1)
    pytest.fail(f"no {kind!r} event within {timeout}s; events: {kinds(app, after)}")


def kinds(app, after=0):
    return [(e["Kind"], e["Instance"], e["Message"]) for e in app.events(after)]


def ready_instances(app, service="web"):
    return [i for i in app.instances(service) if i["State"] == "ready"]


def gateway_endpoints(app, service="web"):
    status, body = app.request("GET", "/v1/flotilla/gateway")
    assert status == 200, body
    return body["Services"].get(service, {}).get("Endpoints", [])


def wait_settled(app, n, version=None, timeout=60, service="web"):
    """No rollout, exactly n instances, all ready (and of `version`, the service's spec version
    when None), and the gateway routes to exactly those."""
    def settled():
        s = app.service(service)
        if "Rollout" in s or "Canary" in s:
            return None
        inst = app.instances(service)
        want = version or s["Version"]
        if len(inst) != n or any(i["State"] != "ready" or i["Version"] != want for i in inst):
            return None
        eps = {e["ID"] for e in gateway_endpoints(app, service)}
        if eps != {i["ID"] for i in inst}:
            return None
        return inst
    return wait_for(settled, timeout=timeout, interval=0.05,
                    what=lambda: f"{n} ready instances of {service} and no rollout; instances: "
                                 f"{[(i['ID'], i['State'], i['Version']) for i in app.instances(service)]}")


def assert_no_failures(load, what):
    bad = load.failures()
    assert not bad, f"{what}: {len(bad)} failed requests of {load.count()}:\n{load.describe_failures()}"


# ---- 1. rolling deploy under continuous load ----

@pytest.mark.parametrize("lang,replicas,rate,path", [
    ("cpp", 4, 400, "/"),
    ("python", 2, 200, "/"),
    # 8 closed-loop clients on 100 ms requests: every instance has requests in flight when it is
    # put in maintenance; they must finish (drain) before its SIGTERM.
    ("cpp-slow", 4, None, "/slow?ms=100"),
])
def test_rolling_deploy_under_load_has_zero_failed_requests(make_app, lang, replicas, rate, path):
    services = py_service(replicas) if lang == "python" else cpp_service(replicas)
    app = make_app(services).up()
    before = {i["ID"] for i in app.instances("web")}
    load = Load(app.gw, threads=8 if rate is None else 6, rate=rate, duration=90, max_requests=60000, path=path,
                post_every=4, name=f"deploy-{lang}")
    with load:
        load.wait_count(100)
        t_deploy = time.time()
        status, body = app.request("POST", "/v1/flotilla/services/web/deploy", {"set": ["environment.VERSION=2"]})
        assert status == 200, body
        assert "Rollout" in app.service("web")
        inst = wait_settled(app, replicas, timeout=60)
        t_done = time.time()
        assert not before & {i["ID"] for i in inst}, "every old instance was replaced"
        load.wait_count(150)
    print(f"\n{load.summary()}; rollout of {replicas} took {t_done - t_deploy:.2f}s")
    assert_no_failures(load, f"rolling deploy of {lang} service")
    assert load.versions(until=t_deploy) == {"1": load.versions(until=t_deploy).get("1", 0)}, "only version 1 before"
    after = load.versions(since=t_done + 0.2)
    assert set(after) == {"2"}, f"only version 2 after the rollout, got {after}"
    assert load.versions(since=t_deploy, until=t_done).get("2"), "version 2 served during the rollout"
    # Every new instance answers through the gateway with version 2.
    seen = {r.instance for r in load.snapshot() if r.ok and r.t0 >= t_done + 0.2}
    assert seen == {i["ID"] for i in inst}, f"answers after the rollout came from {seen}"
    posts = [r for r in load.snapshot() if r.method == "POST" and t_deploy <= r.t0 <= t_done]
    assert posts and all(r.ok for r in posts), "POST requests during the rollout all succeeded"
    ev = [e["Kind"] for e in app.events()]
    assert "deploy-started" in ev and "deploy-finished" in ev


# ---- 2. scale up and down under load ----

def test_scale_down_and_up_under_load_has_zero_failed_requests(make_app):
    app = make_app(cpp_service(4)).up()
    load = Load(app.gw, threads=6, rate=400, duration=90, max_requests=60000, post_every=4, name="scale")
    with load:
        load.wait_count(200)
        status, body = app.request("POST", "/v1/flotilla/services/web/scale", {"replicas": 1})
        assert status == 200, body
        (one,) = wait_settled(app, 1)
        t1 = time.time()
        load.wait_count(300)
        assert set(load.instances(since=t1 + 0.2)) == {one["ID"]}, "after scaling to 1 only it answers"
        status, body = app.request("POST", "/v1/flotilla/services/web/scale", {"replicas": 3})
        assert status == 200, body
        three = wait_settled(app, 3)
        t3 = time.time()
        load.wait_count(600)
    print(f"\n{load.summary()}")
    assert_no_failures(load, "scaling 4 -> 1 -> 3")
    new = {i["ID"] for i in three} - {one["ID"]}
    assert len(new) == 2
    seen = load.instances(since=t3)
    assert new <= set(seen), f"the new instances receive traffic: {seen}"
    scaled = [e for e in app.events() if e["Kind"] == "scaled"]
    assert [(e["Data"]["from"], e["Data"]["to"]) for e in scaled] == [(4, 1), (1, 3)]


# ---- 3. a rollout whose new version never becomes healthy rolls back by itself ----

def test_bad_rollout_rolls_back_by_itself_without_failed_requests(make_app):
    app = make_app(cpp_service(2, extra="    deploy: { healthy_timeout: 3s }\n")).up()
    before = app.instances("web")
    version = app.service("web")["Version"]
    load = Load(app.gw, threads=4, rate=200, duration=90, max_requests=40000, post_every=4, name="bad-rollout")
    with load:
        load.wait_count(100)
        seq = last_seq(app)
        t0 = time.time()
        status, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                                   {"set": ["environment.UNHEALTHY_FOR_MS=600000"]})
        assert status == 200, body
        rb = wait_event(app, "rollback", after=seq, timeout=60)
        t_rb = time.time()
        wait_event(app, "rollback-finished", after=seq, timeout=30)
        inst = wait_settled(app, 2, version=version)
        load.wait_count(200)
    print(f"\n{load.summary()}; rolled back {t_rb - t0:.1f}s after the deploy: {rb['Message']}")
    assert_no_failures(load, "a rollout that rolled back")
    assert set(load.versions()) == {"1"}
    assert {i["ID"] for i in inst} == {i["ID"] for i in before}, "the old instances kept running"
    assert app.service("web")["Version"] == version
    assert rb["Data"]["to"] == version
    assert any(e["Kind"] == "unhealthy" for e in app.events(seq)), kinds(app, seq)


# ---- 3b. flotilla restart: new processes of the same version, under load ----

def test_restart_under_load_replaces_every_process_with_zero_failed_requests(make_app):
    app = make_app(cpp_service(3)).up()
    before = app.instances("web")
    version = app.service("web")["Version"]
    load = Load(app.gw, threads=6, rate=400, duration=90, max_requests=60000, post_every=4, name="restart")
    with load:
        load.wait_count(100)
        seq = last_seq(app)
        t0 = time.time()
        r = app.cli("restart", "web", timeout=90)
        t_done = time.time()
        inst = wait_settled(app, 3, version=version)
        load.wait_count(200)
    print(f"\n{load.summary()}; restart of 3 took {t_done - t0:.2f}s\n{r.stdout}")
    assert_no_failures(load, "flotilla restart")
    assert "restarting 3 instance(s)" in r.stdout and "running (3/3 ready)" in r.stdout, r.stdout
    assert not {i["ID"] for i in before} & {i["ID"] for i in inst}, "every process was replaced"
    assert not {i["Pid"] for i in before} & {i["Pid"] for i in inst}
    assert app.service("web")["Version"] == version and app.service("web")["State"] == "running"
    seen = {e[0] for e in kinds(app, seq)}
    assert {"restart-started", "restart-finished"} <= seen and "rollback" not in seen, kinds(app, seq)
    # Start-first: never fewer ready instances than asked for while it ran.
    started = [e for e in app.events(seq) if e["Kind"] == "started"]
    stopped = [e for e in app.events(seq) if e["Kind"] == "stopped"]
    assert len(started) == 3 and len(stopped) == 3, kinds(app, seq)


def test_restart_whose_new_processes_fail_stops_and_keeps_the_old_ones(make_app, tmp_path):
    # The code on disk changed and the new processes never get healthy: the restart stops at the
    # first one, and the processes started before it keep serving (there is no older version to
    # roll back to).
    script = tmp_path / "run.sh"
    script.write_text(f"exec {CPP_SERVICE}\n")
    services = (f"  web:\n    command: [/bin/sh, {script}]\n    environment: {{ VERSION: \"1\" }}\n"
                f"    replicas: 2\n    healthcheck: {HC}\n    stop_grace_period: 5s\n"
                f"    deploy: {{ healthy_timeout: 2s }}\n")
    app = make_app(services).up()
    before = app.instances("web")
    load = Load(app.gw, threads=4, rate=200, duration=90, max_requests=40000, post_every=4, name="bad-restart")
    with load:
        load.wait_count(100)
        seq = last_seq(app)
        script.write_text(f"UNHEALTHY_FOR_MS=600000 exec {CPP_SERVICE}\n")
        r = app.cli("restart", "web", timeout=90, check=False)
        inst = wait_settled(app, 2)
        load.wait_count(200)
    print(f"\n{load.summary()}\n{r.stdout}{r.stderr}")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "restart stopped" in r.stderr and "2 instance(s) started before it keep running" in r.stderr, r.stderr
    assert_no_failures(load, "a restart that failed")
    assert {i["ID"] for i in inst} == {i["ID"] for i in before}, "the old processes kept running"
    assert app.service("web")["State"] == "running" and "Rollout" not in app.service("web")
    assert any(e[0] == "restart-failed" for e in kinds(app, seq)), kinds(app, seq)
    # Once the code is fixed, the next restart goes through.
    script.write_text(f"exec {CPP_SERVICE}\n")
    app.cli("restart", "web", timeout=90)
    after = wait_settled(app, 2)
    assert not {i["ID"] for i in before} & {i["ID"] for i in after}


# ---- 4. canary: split ratio, promote, rollback ----

def canary_weights_routed(app, percent):
    """The gateway routes to the canary and the stable instances at the canary's weights."""
    def routed():
        inst = {i["ID"]: i for i in app.instances("web")}
        eps = gateway_endpoints(app, "web")
        if {e["ID"] for e in eps} != {i for i, x in inst.items() if x["State"] == "ready"}:
            return None
        canary = [e for e in eps if inst[e["ID"]]["Canary"]]
        stable = [e for e in eps if not inst[e["ID"]]["Canary"]]
        if len(canary) != 1 or not stable:
            return None
        total = sum(e["Weight"] for e in eps)
        share = canary[0]["Weight"] / total
        return (canary[0]["ID"], share) if abs(share - percent / 100) < 0.005 else None
    return wait_for(routed, timeout=30, interval=0.05, what="the canary routed at its weight")


def test_canary_split_ratio_then_promote(make_app):
    app = make_app(cpp_service(3)).up()
    stable_ids = {i["ID"] for i in app.instances("web")}
    load = Load(app.gw, threads=6, rate=600, duration=120, max_requests=80000, name="canary")
    with load:
        load.wait_count(100)
        status, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                                   {"set": ["environment.VERSION=canary"], "canary": 20})
        assert status == 200, body
        canary_id, weight_share = canary_weights_routed(app, 20)
        assert app.service("web")["Canary"]["Percent"] == 20
        t0 = time.time() + 0.3  # every worker has the snapshot
        time.sleep(0.3)
        load.wait_count(2400, timeout=60)
        t1 = time.time()
        v = load.versions(since=t0, until=t1)
        n = sum(v.values())
        share = v.get("canary", 0) / n
        print(f"\ncanary share over {n} requests: {share * 100:.1f}% (asked 20%, weights give "
              f"{weight_share * 100:.1f}%): {v}")
        assert n >= 2000
        assert abs(share - 0.20) <= 0.04, v
        assert set(v) == {"1", "canary"}
        assert load.instances(since=t0).get(canary_id), "the canary instance answers"

        seq = last_seq(app)
        status, body = app.request("POST", "/v1/flotilla/services/web/promote")
        assert status == 200, body
        inst = wait_settled(app, 3, timeout=60)
        t_done = time.time()
        load.wait_count(300)
    print(load.summary())
    assert_no_failures(load, "canary and promote")
    assert app.service("web")["PreviousVersion"] != app.service("web")["Version"]
    assert canary_id in {i["ID"] for i in inst}, "the promoted canary stays as one of the new instances"
    assert not stable_ids & {i["ID"] for i in inst}
    assert set(load.versions(since=t_done + 0.2)) == {"canary"}
    assert "deploy-finished" in [e["Kind"] for e in app.events(seq)]


def test_canary_rollback_returns_to_zero_percent(make_app):
    app = make_app(cpp_service(3)).up()
    stable_ids = {i["ID"] for i in app.instances("web")}
    version = app.service("web")["Version"]
    load = Load(app.gw, threads=4, rate=400, duration=90, max_requests=40000, name="canary-rollback")
    with load:
        load.wait_count(100)
        status, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                                   {"set": ["environment.VERSION=canary"], "canary": 20})
        assert status == 200, body
        canary_id, _ = canary_weights_routed(app, 20)
        time.sleep(0.3)
        load.wait_count(300)
        assert load.versions().get("canary"), "the canary served"
        status, body = app.request("POST", "/v1/flotilla/services/web/rollback")
        assert status == 200, body
        inst = wait_settled(app, 3, version=version)
        assert "Canary" not in app.service("web")
        t_done = time.time()
        load.wait_count(1000)
    print(f"\n{load.summary()}")
    assert_no_failures(load, "canary rollback")
    assert {i["ID"] for i in inst} == stable_ids
    assert canary_id not in {i["ID"] for i in app.instances("web")}, "the canary instance is gone"
    after = load.versions(since=t_done + 0.2)
    assert set(after) == {"1"}, f"0% canary after the rollback: {after}"
    assert {e["ID"] for e in gateway_endpoints(app)} == stable_ids
    assert all(e["Weight"] == 1 for e in gateway_endpoints(app)), "stable weights back to equal"


# ---- 5. automatic canary analysis ----

ANALYSIS = "    deploy: { canary: { analysis: { interval: 1s, iterations: 3, min_requests: 10 } } }\n"


def test_canary_analysis_rolls_back_a_failing_canary(make_app):
    app = make_app(cpp_service(3, extra=ANALYSIS)).up()
    stable_ids = {i["ID"] for i in app.instances("web")}
    load = Load(app.gw, threads=4, rate=300, duration=90, max_requests=40000, name="canary-bad")
    with load:
        load.wait_count(100)
        seq = last_seq(app)
        t0 = time.time()
        status, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                                   {"set": ["environment.VERSION=bad", "environment.FAIL=1"], "canary": 20})
        assert status == 200, body
        failed = wait_event(app, "canary-failed", after=seq, timeout=30)
        t_failed = time.time()
        inst = wait_settled(app, 3, version=app.service("web")["Version"])
        t_done = time.time()
        load.wait_count(500)
    print(f"\n{load.summary()}; canary failed {t_failed - t0:.1f}s after the deploy: {failed['Message']}")
    assert {i["ID"] for i in inst} == stable_ids, "the canary is gone, the stable instances stay"
    assert "Canary" not in app.service("web")
    bad = load.failures()
    assert bad and all(r.status == 500 and r.version == "bad" for r in bad), "only the canary failed"
    assert not load.failures(since=t_done), "no failure once the canary is gone"
    assert set(load.versions(since=t_done)) == {"1"}
    assert failed["Data"]["canary_failures"] > 0


def test_canary_analysis_promotes_a_good_canary(make_app):
    app = make_app(cpp_service(3, extra=ANALYSIS)).up()
    load = Load(app.gw, threads=4, rate=300, duration=90, max_requests=40000, name="canary-good")
    with load:
        load.wait_count(100)
        seq = last_seq(app)
        t0 = time.time()
        status, body = app.request("POST", "/v1/flotilla/services/web/deploy",
                                   {"set": ["environment.VERSION=2"], "canary": 20})
        assert status == 200, body
        wait_event(app, "canary-promoted", after=seq, timeout=30)
        t_promoted = time.time()
        inst = wait_settled(app, 3, timeout=60)
        t_done = time.time()
        load.wait_count(300)
    print(f"\n{load.summary()}; promoted {t_promoted - t0:.1f}s after the deploy, rolled out "
          f"{t_done - t0:.1f}s after it")
    assert_no_failures(load, "canary analysis and automatic promotion")
    checks = [e for e in app.events(seq) if e["Kind"] == "canary-check" and e["Message"].startswith("passed")]
    assert len(checks) >= 3, kinds(app, seq)
    assert all(i["Version"] == app.service("web")["Version"] for i in inst)
    assert set(load.versions(since=t_done + 0.2)) == {"2"}


# ---- 6. autoscaling ----

def autoscale_events(app, after=0):
    return [e for e in app.events(after) if e["Kind"] == "autoscaled"]


def test_autoscale_rps_up_under_a_load_step_and_back_down(make_app):
    extra = ("    autoscale: { min: 1, max: 4, target: { rps_per_instance: 50 }, scale_down_window: 5s }\n")
    app = make_app(cpp_service(1, extra=extra)).up()
    assert len(app.instances("web")) == 1
    seq = last_seq(app)
    load = Load(app.gw, threads=4, rate=200, duration=60, max_requests=20000, name="autoscale-rps")
    with load:
        t_step = time.time()
        # Added instances serving: registered, routed, and answering through the gateway.
        wait_for(lambda: len(load.instances(since=t_step)) >= 4, timeout=20, interval=0.02,
                 what=lambda: f"answers from 4 instances; events {kinds(app, seq)}")
        t_serving = time.time()
        first = {}
        for r in load.snapshot():
            if r.ok and r.instance not in first:
                first[r.instance] = r.t0
        t_last_new = max(first.values())
        assert len(ready_instances(app)) == 4
        load.wait_count(200)
    t_stop = time.time()
    steps = ", ".join(f"+{t - t_step:.2f}s" for t in sorted(first.values()))
    print(f"\nautoscale: load step (200 req/s) -> 4 instances serving in {t_last_new - t_step:.2f}s "
          f"(first answers of each instance: {steps}); {load.summary()}")
    for e in autoscale_events(app, seq):
        print(f"  +{e['Time'] / 1000 - t_step:.2f}s {e['Message']}")
    assert_no_failures(load, "autoscaling up")
    up = autoscale_events(app, seq)
    assert up and up[0]["Data"]["to"] > up[0]["Data"]["from"], kinds(app, seq)
    assert max(e["Data"]["to"] for e in up) == 4
    # Load gone: back to min after the 5 s scale-down window.
    wait_for(lambda: len(app.instances("web")) == 1 and app.service("web")["Autoscale"]["Desired"] == 1,
             timeout=30, interval=0.1, what="scaled back down to 1")
    t_down = time.time()
    down = [e for e in autoscale_events(app, seq) if e["Data"]["to"] < e["Data"]["from"]]
    print(f"autoscale: load stopped -> back to 1 instance in {t_down - t_stop:.1f}s (window 5s)")
    assert down, kinds(app, seq)
    assert t_down - t_stop >= 4.0, "the scale-down waited for the window"
    for e in autoscale_events(app, seq):
        assert isinstance(e["Data"]["metric"], (int, float)) and e["Data"]["metric"] >= 0
        assert "rps_per_instance" in e["Message"] and "target 50" in e["Message"], e["Message"]


def test_autoscale_inflight_with_slow_requests(make_app):
    extra = ("    autoscale: { min: 1, max: 4, target: { inflight: 2 }, scale_down_window: 5s }\n")
    app = make_app(cpp_service(1, extra=extra)).up()
    seq = last_seq(app)
    # 8 closed-loop clients on /slow?ms=200: ~8 requests in flight whatever the instance count.
    load = Load(app.gw, threads=8, duration=40, max_requests=3000, path="/slow?ms=200", name="autoscale-inflight")
    with load:
        t_step = time.time()
        wait_for(lambda: len(load.instances(since=t_step)) >= 4, timeout=20, interval=0.02,
                 what=lambda: f"answers from 4 instances; events {kinds(app, seq)}")
        t_serving = time.time()
    t_stop = time.time()
    print(f"\nautoscale (inflight): 4 instances serving {t_serving - t_step:.2f}s after the step; {load.summary()}")
    assert_no_failures(load, "autoscaling on inflight")
    up = autoscale_events(app, seq)
    assert up and "inflight" in up[0]["Message"]
    wait_for(lambda: len(app.instances("web")) == 1, timeout=30, interval=0.1, what="scaled back down to 1")
    print(f"autoscale (inflight): back to 1 instance {time.time() - t_stop:.1f}s after the load stopped")


# ---- 7. an instance's death -> out of routing ----

def parse_time(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def test_killed_instance_leaves_routing_within_a_second(make_app, tmp_path):
    access = str(tmp_path / "access.log")
    route = "    - match: { path_prefix: / }\n      service: web\n      retry: { attempts: 1 }\n"
    app = make_app(cpp_service(2), routes=route, gateway_yaml=f"  access_log: {access}\n").up()
    victim = app.instances("web")[0]
    address = f"127.0.0.1:{victim['Port']}"
    load = Load(app.gw, threads=6, rate=600, duration=60, max_requests=30000, name="death")
    with load:
        load.wait_count(300)
        seq = last_seq(app)
        t_kill = time.time()
        os.kill(victim["Pid"], signal.SIGKILL)
        wait_event(app, "crashed", after=seq, timeout=10)
        wait_settled(app, 2, timeout=20)
        load.wait_count(600)
    time.sleep(1.5)  # the access log is written in batches by its own thread
    last_routed = None
    routed_after = 0
    with open(access) as f:
        for line in f:
            rec = json.loads(line)
            if rec["upstream"] != address:
                continue
            started = parse_time(rec["time"]) - rec["duration"]
            if last_routed is None or started > last_routed:
                last_routed = started
            if started >= t_kill:
                routed_after += 1
    bad = load.failures()
    last_error = max((r.t1 for r in bad), default=None)
    routed_ms = (last_routed - t_kill) * 1000
    print(f"\ndeath -> last request routed to the dead instance: {routed_ms:.1f} ms "
          f"({routed_after} requests routed to it after the kill); failed requests: {len(bad)}"
          + (f", last one {(last_error - t_kill) * 1000:.1f} ms after the kill" if bad else "")
          + f"; {load.summary()}")
    assert last_routed is not None, "the access log names the victim's address"
    # Bounds far above the measured few ms (a loaded CI machine, ASan): only a stuck removal fails.
    assert routed_ms < 3000, f"requests still routed to the dead instance {routed_ms:.0f} ms after the kill"
    if bad:
        assert last_error - t_kill < 3.0, f"errors went on for {(last_error - t_kill):.2f}s:\n{load.describe_failures()}"
        assert all(r.t0 >= t_kill - 0.05 for r in bad), "nothing failed before the kill"
    assert not load.failures(since=t_kill + 1.0)
