"""Health checks against real backends: HTTP, TCP and TTL checks, thresholds, the reaper, how fast
a dead instance leaves a blocking health query, checks after an agent restart, and drift.

Backends are separate processes (http_backend.py), each stopped by PID; every wait polls with a
deadline.
"""
import threading
import time
import urllib.parse

import pytest

from conftest import free_port, wait_for
from http_backend import Backend, big_body


@pytest.fixture
def backends(tmp_path):
    """Factory for backend processes; all are stopped by PID at the end of the test."""
    started = []

    def make(port=None):
        b = Backend(port or free_port(), str(tmp_path)).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.kill()



def put_ok(agent, path, body=None):
    status, _, data = agent.request("PUT", path, body)
    assert status == 200, f"PUT {path} -> {status}: {data!r}"
    return data


def checks(agent):
    status, _, body = agent.json("GET", "/v1/agent/checks")
    assert status == 200
    return body


def check(agent, check_id):
    return checks(agent).get(check_id)


def wait_check(agent, check_id, status, timeout, output_contains=None):
    def ok():
        c = check(agent, check_id)
        if c and c["Status"] == status and (output_contains is None or output_contains in c["Output"]):
            return c
        return None

    return wait_for(ok, timeout, what=f"check {check_id} to be {status}"
                    + (f" with output containing {output_contains!r}" if output_contains else "")
                    + f" (now {check(agent, check_id)!r})")


def register_http_check(agent, check_id, url, interval="1s", **extra):
    body = {"ID": check_id, "Name": check_id, "HTTP": url, "Interval": interval, **extra}
    put_ok(agent, "/v1/agent/check/register", body)


def requests_to(backend, path):
    return [r for r in backend.requests_log() if r["path"] == path]


def metric(agent, name):
    status, _, body = agent.request("GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- HTTP checks ---


def test_http_check_status_follows_response_code(agent, backends):
    b = backends()
    register_http_check(agent, "ok", b.url("/code/200"))
    register_http_check(agent, "created", b.url("/code/204"))
    register_http_check(agent, "busy", b.url("/code/429"))
    register_http_check(agent, "broken", b.url("/code/500"))
    c = wait_check(agent, "ok", "passing", 5)
    assert "200" in c["Output"] and "backend says 200" in c["Output"], c["Output"]
    wait_check(agent, "created", "passing", 5)
    c = wait_check(agent, "busy", "warning", 5)
    assert "429" in c["Output"] and "backend says 429" in c["Output"], c["Output"]
    # Checks start critical: wait for the output of a real probe.
    c = wait_check(agent, "broken", "critical", 5, output_contains="500")
    assert "backend says 500" in c["Output"], c["Output"]
    assert c["Type"] == "http"


def test_http_check_timeout_is_critical_and_says_so(agent, backends):
    b = backends()
    register_http_check(agent, "slow", b.url("/sleep/3"), interval="1s", Timeout="500ms")
    t0 = time.monotonic()
    c = wait_check(agent, "slow", "critical", 5, output_contains="timed out")
    elapsed = time.monotonic() - t0
    assert "500ms" in c["Output"], c["Output"]
    # First run within ~1 s (jittered), then 500 ms of timeout.
    assert elapsed < 3.5, f"timeout took {elapsed:.2f}s to be reported"


def test_http_check_output_has_first_4k_of_body(agent, backends):
    b = backends()
    register_http_check(agent, "big", b.url("/big/10000"))
    c = wait_check(agent, "big", "passing", 5)
    first4k = big_body(10000)[:4096].decode()
    assert first4k in c["Output"], c["Output"][:200]
    assert "MARKER-BEYOND-4K" not in c["Output"]
    assert c["Output"].endswith(first4k)


def test_http_check_output_has_first_4k_of_large_body(agent, backends):
    """A body larger than what the prober reads whole (64 KiB) must still show its first 4 KiB."""
    b = backends()
    sizes = (70000, 1000000)
    for n in sizes:
        register_http_check(agent, f"large-{n}", b.url(f"/big/{n}"))
    for n in sizes:
        c = wait_check(agent, f"large-{n}", "passing", 5)
        assert big_body(n)[:4096].decode() in c["Output"], f"{n}-byte body missing from the output: {c['Output']!r}"
        assert "MARKER-BEYOND-4K" not in c["Output"]


def test_http_check_sends_method_and_headers(agent, backends):
    b = backends()
    register_http_check(agent, "custom", b.url("/rec/custom"), Method="POST",
                        Header={"X-Flotilla-Test": ["one", "two"], "Authorization": ["Bearer s3cret"]})
    wait_check(agent, "custom", "passing", 5)
    reqs = wait_for(lambda: requests_to(b, "/rec/custom"), 5, what="a probe of /rec/custom")
    r = reqs[0]
    assert r["method"] == "POST"
    headers = [(k.lower(), v) for k, v in r["headers"]]
    values = [v for k, v in headers if k == "x-flotilla-test"]
    # Two values: two header lines, or one comma-joined line (equivalent in HTTP).
    assert sorted(", ".join(values).split(", ")) == ["one", "two"], headers
    assert ("authorization", "Bearer s3cret") in headers, headers


# --- TCP checks ---


def test_tcp_check_listening_and_closed_port(agent, backends):
    b = backends()
    closed = free_port()
    put_ok(agent, "/v1/agent/check/register", {"ID": "tcp-up", "Name": "tcp-up", "TCP": f"127.0.0.1:{b.port}",
                                                "Interval": "1s", "Timeout": "1s"})
    put_ok(agent, "/v1/agent/check/register", {"ID": "tcp-down", "Name": "tcp-down", "TCP": f"127.0.0.1:{closed}",
                                                "Interval": "1s", "Timeout": "1s"})
    c = wait_check(agent, "tcp-up", "passing", 5)
    assert c["Type"] == "tcp"
    c = wait_check(agent, "tcp-down", "critical", 5, output_contains=f"127.0.0.1:{closed}")
    assert "refused" in c["Output"].lower(), c["Output"]


# --- TTL checks ---


def test_ttl_check_lifecycle(agent):
    put_ok(agent, "/v1/agent/check/register", {"ID": "beat", "Name": "beat", "TTL": "2s"})
    c = check(agent, "beat")
    assert c["Status"] == "critical", c
    assert c["Type"] == "ttl"

    put_ok(agent, "/v1/agent/check/pass/beat?note=" + urllib.parse.quote("all good"))
    t_pass = time.monotonic()
    c = check(agent, "beat")
    assert (c["Status"], c["Output"]) == ("passing", "all good")
    # Not before the TTL...
    time.sleep(max(0.0, t_pass + 1.2 - time.monotonic()))
    assert check(agent, "beat")["Status"] == "passing", "TTL check expired early"
    # ...but soon after it.
    c = wait_check(agent, "beat", "critical", 4, output_contains="TTL expired")
    expired_after = time.monotonic() - t_pass
    assert 1.5 <= expired_after <= 4.5, f"expired {expired_after:.2f}s after the pass (TTL 2s)"

    put_ok(agent, "/v1/agent/check/warn/beat?note=" + urllib.parse.quote("disk 91%"))
    c = check(agent, "beat")
    assert (c["Status"], c["Output"]) == ("warning", "disk 91%")

    put_ok(agent, "/v1/agent/check/fail/beat?note=down")
    c = check(agent, "beat")
    assert (c["Status"], c["Output"]) == ("critical", "down")

    put_ok(agent, "/v1/agent/check/update/beat", {"Status": "passing", "Output": "recovered"})
    t_update = time.monotonic()
    c = check(agent, "beat")
    assert (c["Status"], c["Output"]) == ("passing", "recovered")
    # An update renews the TTL as a pass does.
    time.sleep(max(0.0, t_update + 1.2 - time.monotonic()))
    assert check(agent, "beat")["Status"] == "passing"
    wait_check(agent, "beat", "critical", 4, output_contains="TTL expired")

    # Updates are for TTL checks only; unknown checks are 404.
    status, _, _ = agent.request("PUT", "/v1/agent/check/pass/no-such-check")
    assert status == 404


# --- thresholds ---


def test_success_before_passing(agent, backends):
    b = backends()
    path = "/mode/sbp"
    register_http_check(agent, "sbp", b.url(path), SuccessBeforePassing=2)
    wait_for(lambda: len(requests_to(b, path)) >= 1, 5, what="the first probe")
    time.sleep(0.4)
    assert len(requests_to(b, path)) == 1, "second probe came too soon to judge"
    assert check(agent, "sbp")["Status"] == "critical", "passing after one success with SuccessBeforePassing=2"
    wait_for(lambda: len(requests_to(b, path)) >= 2, 3, what="the second probe")
    wait_check(agent, "sbp", "passing", 1)


def test_failures_before_critical(agent, backends):
    b = backends()
    path = "/mode/fbc"
    register_http_check(agent, "fbc", b.url(path), FailuresBeforeCritical=2)
    wait_check(agent, "fbc", "passing", 5)
    b.set_mode("fbc", 500)
    failing = lambda: [r for r in requests_to(b, path) if r["code"] == 500]
    wait_for(lambda: len(failing()) >= 1, 5, what="the first failing probe")
    time.sleep(0.4)
    assert len(failing()) == 1, "second probe came too soon to judge"
    assert check(agent, "fbc")["Status"] == "passing", "critical after one failure with FailuresBeforeCritical=2"
    wait_for(lambda: len(failing()) >= 2, 3, what="the second failing probe")
    wait_check(agent, "fbc", "critical", 1, output_contains="500")


# --- reaper ---


def test_deregister_critical_service_after(agent, backends):
    b = backends()
    closed = free_port()
    put_ok(agent, "/v1/agent/service/register",
           {"Name": "doomed", "Port": closed,
            "Check": {"TCP": f"127.0.0.1:{closed}", "Interval": "500ms", "DeregisterCriticalServiceAfter": "1s"}})
    put_ok(agent, "/v1/agent/service/register",
           {"Name": "healthy", "Port": b.port,
            "Check": {"HTTP": b.url("/code/200"), "Interval": "500ms", "DeregisterCriticalServiceAfter": "1s"}})
    t0 = time.monotonic()
    status, _, services = agent.json("GET", "/v1/agent/services")
    assert "doomed" in services and "healthy" in services
    wait_for(lambda: "doomed" not in agent.json("GET", "/v1/agent/services")[2], 6, what="doomed to be reaped")
    gone_after = time.monotonic() - t0
    print(f"\ncritical service reaped {gone_after:.2f}s after registration (DeregisterCriticalServiceAfter 1s)")
    assert gone_after >= 0.8, f"reaped after {gone_after:.2f}s, before DeregisterCriticalServiceAfter=1s"
    assert "service:doomed" not in checks(agent), "the reaped service's check is left behind"
    # A passing service with the same setting stays.
    time.sleep(max(0.0, t0 + 2.5 - time.monotonic()))
    status, _, services = agent.json("GET", "/v1/agent/services")
    assert "healthy" in services
    assert check(agent, "service:healthy")["Status"] == "passing"


# --- a dead instance leaves blocking health queries fast ---


def test_dead_instance_wakes_blocking_query(agent, backends):
    b = backends()
    put_ok(agent, "/v1/agent/service/register",
           {"Name": "web", "ID": "web-1", "Port": b.port,
            "Check": {"HTTP": b.url("/code/200"), "Interval": "1s", "Timeout": "500ms"}})

    def passing():
        status, headers, body = agent.json("GET", "/v1/health/service/web?passing")
        assert status == 200
        return (int(headers["X-Consul-Index"]), body) if body else None

    index, body = wait_for(passing, 5, what="web-1 to pass")
    assert [e["Service"]["ID"] for e in body] == ["web-1"]

    result = {}

    def blocking():
        try:
            result["answer"] = agent.json("GET", f"/v1/health/service/web?passing&index={index}&wait=30s", timeout=40)
        except Exception as e:  # reported below
            result["error"] = e
        result["t"] = time.monotonic()

    waiting_before = metric(agent, "flotilla_blocking_queries_waiting") or 0
    t = threading.Thread(target=blocking, daemon=True)
    t.start()
    wait_for(lambda: (metric(agent, "flotilla_blocking_queries_waiting") or 0) > waiting_before, 5,
             what="the query to park")
    assert "t" not in result, f"blocking query answered before anything changed: {result}"

    b.kill()
    t_kill = time.monotonic()
    t.join(timeout=35)
    assert not t.is_alive(), "blocking query still hangs 35s after the kill"
    assert "error" not in result, result
    woke = result["t"] - t_kill
    print(f"\ndead instance: blocking query answered {woke * 1000:.0f} ms after SIGKILL of the backend "
          f"(interval 1s, timeout 500ms)")
    status, headers, body = result["answer"]
    assert status == 200
    assert body == [], f"instance still listed as passing: {body}"
    assert int(headers["X-Consul-Index"]) > index
    assert woke <= 1.5, f"blocking query woke {woke:.2f}s after the backend died (want <= 1.5s)"


# --- checks after a restart ---


def test_checks_resume_after_agent_restart(make_agent, backends):
    b = backends()
    agent = make_agent().start()
    put_ok(agent, "/v1/agent/service/register",
           {"Name": "api", "Port": b.port, "Check": {"HTTP": b.url("/code/200"), "Interval": "1s", "Timeout": "500ms"}})
    wait_check(agent, "service:api", "passing", 5)
    assert agent.stop() == 0
    b.kill()
    agent.start()
    t0 = time.monotonic()
    # The last known status survives the restart...
    c = check(agent, "service:api")
    assert c is not None and c["Status"] == "passing", c
    # ...and the check runs again: the dead backend is noticed within about one interval.
    wait_check(agent, "service:api", "critical", 5, output_contains="refused")
    noticed = time.monotonic() - t0
    print(f"\nbackend that died while the agent was down: critical {noticed:.2f}s after restart (interval 1s)")
    assert noticed <= 2.0, f"took {noticed:.2f}s after the restart to notice (interval 1s)"
    status, _, body = agent.json("GET", "/v1/health/service/api?passing")
    assert status == 200 and body == []


# --- drift ---


def test_check_drift_300_checks(agent, backends):
    b = backends()
    n, interval = 300, 1.0
    for i in range(n):
        register_http_check(agent, f"drift-{i}", b.url(f"/drift/{i}"), interval="1s", Timeout="2s")
    # Every check has run at least once (first runs are jittered over up to one interval).
    wait_for(lambda: len(b.counts()["paths"]) >= n, 5, interval=0.2, what="every check to run once")
    time.sleep(1.0)
    c0, p0, t0 = b.counts(), metric(agent, "flotilla_health_probes_total"), time.monotonic()
    time.sleep(5.0)
    c1, p1, t1 = b.counts(), metric(agent, "flotilla_health_probes_total"), time.monotonic()
    window = t1 - t0
    expected = n * window / interval
    got = c1["total"] - c0["total"]
    per_check = [c1["paths"].get(f"/drift/{i}", 0) - c0["paths"].get(f"/drift/{i}", 0) for i in range(n)]
    print(f"\ndrift: {got} probes received by the backend in {window:.2f}s for {n} checks at 1s "
          f"(expected {expected:.0f}, {100 * (got - expected) / expected:+.1f}%); agent counted {p1 - p0:.0f}; "
          f"per check min {min(per_check)} max {max(per_check)}")
    assert abs(got - expected) <= 0.15 * expected, f"{got} probes, expected {expected:.0f} ± 15%"


def test_redefined_check_does_not_wait_for_the_old_probe(agent, backends):
    # The old definition hangs (its probe would take 6 s to time out); the new one is healthy and
    # must be probed, and pass, without waiting for the old probe to finish.
    b = backends()
    register_http_check(agent, "re", b.url("/sleep/8"), Timeout="6s")
    time.sleep(1.5)  # the first probe starts within the first interval and hangs
    started = time.monotonic()
    register_http_check(agent, "re", b.url("/code/200"))
    wait_check(agent, "re", "passing", 4)
    assert time.monotonic() - started < 3
