"""Changing routes and services' gateway keys in a running gateway: `flotilla up -f FILE` again
against the running agent (POST /v1/flotilla/apply), and SIGHUP to `flotilla gateway`. Under
keep-alive load: no failed request, no connection closed, requests in flight finish.

Every process here is started by the test (or its fixtures) and stopped by PID."""
import json
import os
import pty
import signal
import subprocess
import threading
import time

from conftest import BIN, Agent, wait_for
from test_gateway_live import Load, StandaloneGateway, get, make_gateway  # noqa: F401 (fixture)


def gateway_yaml(routes, services="", listen="{gw}"):
    return f"gateway:\n  listen: [{listen}]\n  workers: 2\n  routes:\n{routes}{services}"


CATCH_ALL = "    - service: web\n"
API_FIRST = "    - match: { path_prefix: /api }\n      service: api\n" + CATCH_ALL


def rewrite(stack, body):
    """Writes the stack's flotilla.yaml again (same name and agent) with a new body."""
    with open(stack.file, "w") as f:
        f.write(f"name: test\nagent:\n  api: 127.0.0.1:{stack.api_port}\n  data_dir: data\n")
        f.write(body.replace("{gw}", f"127.0.0.1:{stack.gw_port}"))


def up_again(stack):
    r = subprocess.run([BIN, "up", "-f", stack.file], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def status_answers(api_port):
    """True once the agent's /v1/flotilla/status answers 200 (None before, for wait_for)."""
    try:
        return get(f"http://127.0.0.1:{api_port}/v1/flotilla/status")[0] == 200 or None
    except OSError:
        return None


def backend_of(url):
    status, headers, body = get(url)
    return status, headers.get("X-Backend"), body


def test_up_again_changes_routes_under_load(make_stack, make_backend):
    stack = make_stack(gateway_yaml(CATCH_ALL))
    web, api = make_backend("web"), make_backend("api")
    stack.register("web", web)
    # Registered before any route sends to it: the gateway does not follow it yet.
    status, text = stack.api_request("PUT", "/v1/agent/service/register",
                                     {"Name": "api", "ID": "api-1", "Address": "127.0.0.1", "Port": api.port})
    assert status == 200, text
    assert backend_of(stack.gw + "/api/x")[:2] == (200, "web")
    assert "api" not in stack.gateway_status()["Services"]

    load = Load(stack.gw_port, connections=8, slow=4).start()
    try:
        time.sleep(0.5)
        # A route in front, to a service the gateway did not follow: it answers at once, never 503.
        rewrite(stack, gateway_yaml(API_FIRST))
        out = up_again(stack)
        assert "gateway:   2 route(s), changed; now routing to: api; no longer: -; settings changed: -" in out, out
        assert "restart needed" not in out, out
        assert backend_of(stack.gw + "/api/x")[:2] == (200, "api")
        assert backend_of(stack.gw + "/other")[:2] == (200, "web")
        routes = stack.gateway_status()["Routes"]
        assert [(r["Route"], r["Match"]) for r in routes] == [("0:api", {"PathPrefix": "/api"}), ("1:web", {})], routes
        time.sleep(0.5)

        # A service's keys change live.
        rewrite(stack, gateway_yaml(API_FIRST, "services:\n  web:\n    load_balancer: least_request\n"
                                               "    circuit_breaker: {max_requests: 77}\n"
                                               "    outlier_detection: {consecutive_failures: 9}\n"))
        out = up_again(stack)
        assert "2 route(s), unchanged" in out and "settings changed: web" in out, out
        web_status = stack.gateway_status()["Services"]["web"]
        assert web_status["LoadBalancer"] == "least_request"
        # The settings in force show, so an operator can check a reload took.
        assert web_status["CircuitBreaker"] == {"MaxConnections": 1024, "MaxPendingRequests": 1024,
                                                "MaxRequests": 77}, web_status
        assert web_status["OutlierDetection"]["ConsecutiveFailures"] == 9, web_status
        route = stack.gateway_status()["Routes"][1]
        assert route["Retry"] == {"Attempts": 2, "On": ["connect-failure", "reset", "503"],
                                  "PerTryTimeoutSeconds": 0.0}, route
        assert route["MaxBodyBytes"] == 0 and route["OnClientClose"] == "abort", route
        time.sleep(0.5)

        # The route goes: /api falls through to the catch-all, and api is no longer followed.
        rewrite(stack, gateway_yaml(CATCH_ALL, "services:\n  web:\n    load_balancer: least_request\n"))
        out = up_again(stack)
        assert "1 route(s), changed; now routing to: -; no longer: api" in out, out
        assert backend_of(stack.gw + "/api/x")[:2] == (200, "web")
        assert "api" not in stack.gateway_status()["Services"]
        time.sleep(0.5)

        # A new listen address needs a restart; the running one goes on serving.
        rewrite(stack, gateway_yaml(CATCH_ALL, "services:\n  web:\n    load_balancer: least_request\n",
                                    listen="127.0.0.1:1"))
        out = up_again(stack)
        assert "restart needed to change: gateway.listen" in out, out
        assert stack.gateway_status()["Listen"] == [f"127.0.0.1:{stack.gw_port}"]
        time.sleep(0.5)
    finally:
        load.stop()

    records, slow = load.records, load.slow_records
    bad = [r for r in records + slow if r[3] != 200 or r[4] != "web"]
    print(f"\n{len(records)} fast and {len(slow)} slow requests across 4 applies; {len(load.errors)} errors, "
          f"{len(bad)} not 200 from web, {load.closed} connections closed, {load.sockets_opened} sockets opened")
    assert not load.errors, load.errors[:10]
    assert not bad, bad[:10]
    assert load.closed == 0
    assert load.sockets_opened == len(load.threads)
    assert len(records) > 200 and len(slow) >= 20
    log = stack.read_log()
    assert "gateway: applied" in log and "now routing to api" in log, log


def test_apply_refuses_a_bad_file_and_keeps_the_routes(make_stack, make_backend):
    stack = make_stack(gateway_yaml(API_FIRST))
    web, api = make_backend("web"), make_backend("api")
    stack.register("web", web)
    stack.register("api", api)

    def write(name, app, route_extra=""):
        path = os.path.join(stack.dir, name)
        with open(path, "w") as f:
            f.write(f"name: {app}\nagent:\n  api: 127.0.0.1:{stack.api_port}\n  data_dir: data\n"
                    f"gateway:\n  listen: [127.0.0.1:{stack.gw_port}]\n  routes:\n    - service: web\n{route_extra}")
        return path

    bad = write("bad.yaml", "test", "      timeout: 0s\n")
    status, text = stack.api_request("POST", "/v1/flotilla/apply", {"file": bad})
    assert status == 400, text
    err = json.loads(text)
    assert err["field"] == "file" and "bad.yaml:9:" in err["error"] and "timeout" in err["error"], err
    r = subprocess.run([BIN, "up", "-f", bad], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "bad.yaml:9:" in r.stderr, (r.returncode, r.stderr)
    # Another application's file: refused, nothing changes.
    status, text = stack.api_request("POST", "/v1/flotilla/apply", {"file": write("other.yaml", "other")})
    assert status == 409, text
    # No `gateway:` section any more: that needs a restart, and the running routes stay.
    plain = os.path.join(stack.dir, "plain.yaml")
    with open(plain, "w") as f:
        f.write(f"name: test\nagent:\n  api: 127.0.0.1:{stack.api_port}\n  data_dir: data\n")
    status, text = stack.api_request("POST", "/v1/flotilla/apply", {"file": plain})
    assert status == 200, text
    assert json.loads(text)["Gateway"] == {"RestartNeeded": ["gateway"]}, text
    assert backend_of(stack.gw + "/api/x")[:2] == (200, "api")
    assert backend_of(stack.gw + "/x")[:2] == (200, "web")


def test_rate_limit_buckets_survive_an_unrelated_route_change(make_stack, make_backend):
    limited = ("    - match: { path_prefix: /limited }\n      service: web\n"
               "      rate_limit: { requests_per_second: 0.02, burst: BURST, key: route }\n")
    stack = make_stack(gateway_yaml(limited.replace("BURST", "2") + CATCH_ALL))
    stack.register("web", make_backend("web"))
    statuses = [get(stack.gw + "/limited")[0] for _ in range(3)]
    assert statuses == [200, 200, 429], statuses
    # Another route comes: the limited route is the same, so its bucket (empty) stays.
    rewrite(stack, gateway_yaml("    - match: { path: /new }\n      service: web\n" + limited.replace("BURST", "2") +
                                CATCH_ALL))
    assert "changed" in up_again(stack)
    assert get(stack.gw + "/limited")[0] == 429
    assert get(stack.gw + "/new")[0] == 200
    # The limited route itself changes: a new bucket with its new burst.
    rewrite(stack, gateway_yaml(limited.replace("BURST", "3") + CATCH_ALL))
    up_again(stack)
    statuses = [get(stack.gw + "/limited")[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429], statuses


def requests_of(stack, route):
    """flotilla_gateway_requests_total{route=ROUTE, code="2xx"} (0 when absent)."""
    for line in stack.metrics().splitlines():
        if line.startswith("flotilla_gateway_requests_total{") and f'route="{route}"' in line and 'code="2xx"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_named_routes_metrics_keep_their_label_when_routes_move(make_stack, make_backend):
    # Unnamed routes are labelled INDEX:SERVICE, so inserting a route in front shifts what a label
    # counts. A route's `name:` is its label wherever it moves.
    checkout = "    - match: { path_prefix: /checkout }\n      name: checkout\n      service: web\n"
    stack = make_stack(gateway_yaml(checkout + CATCH_ALL))
    stack.register("web", make_backend("web"))
    for _ in range(3):
        assert get(stack.gw + "/checkout/pay")[0] == 200
    assert get(stack.gw + "/other")[0] == 200
    assert requests_of(stack, "checkout") == 3 and requests_of(stack, "1:web") == 1
    rewrite(stack, gateway_yaml("    - match: { path: /new }\n      service: web\n" + checkout + CATCH_ALL))
    assert "changed" in up_again(stack)
    assert get(stack.gw + "/checkout/pay")[0] == 200
    assert requests_of(stack, "checkout") == 4
    status, _, body = get(f"http://127.0.0.1:{stack.api_port}/v1/flotilla/gateway")
    assert [r["Route"] for r in json.loads(body)["Routes"]] == ["0:web", "checkout", "2:web"], body


def test_standalone_gateway_reloads_on_sighup(data_dir, make_gateway, make_backend):
    agent_dir = os.path.join(data_dir, "agent")
    os.makedirs(agent_dir)
    agent = Agent(agent_dir).start()
    try:
        web, api = make_backend("web"), make_backend("api")
        for name, b in (("web", web), ("api", api)):
            status, _, body = agent.request("PUT", "/v1/agent/service/register",
                                            {"Name": name, "ID": f"{name}-1", "Address": "127.0.0.1",
                                             "Port": b.port})
            assert status == 200, body
        g = make_gateway(agent.url, routes="    - match: { path_prefix: /web }\n      service: web\n      strip_prefix: true\n")
        assert backend_of(g.url + "/web")[:2] == (200, "web")
        assert backend_of(g.url + "/api")[0] == 404
        load = Load(g.port, connections=6, path="/web", slow=2, slow_path="/web/sleep/0.3").start()
        seen = []
        try:
            time.sleep(0.4)
            with open(g.file) as f:
                text = f.read()
            with open(g.file, "w") as f:
                f.write(text + "    - match: { path_prefix: /api }\n      service: api\n")
            os.kill(g.proc.pid, signal.SIGHUP)
            # Until the switch /api has no route (404); after it, api answers. Never a 503: the new
            # route goes live once api's endpoints are known.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                status, backend, _ = backend_of(g.url + "/api")
                seen.append(status)
                if status == 200:
                    assert backend == "api"
                    break
            assert seen[-1] == 200 and set(seen) <= {404, 200}, seen
            wait_for(lambda: "gateway: reloaded" in g.read_log(), what="the reload logged")
            assert "now routing to api" in g.read_log()

            # A broken file: logged, the running routes stay.
            with open(g.file, "a") as f:
                f.write("    - match: { path: /x }\n      service: web\n      retry: { attempts: 0 }\n")
            os.kill(g.proc.pid, signal.SIGHUP)
            wait_for(lambda: "keeping the running configuration" in g.read_log(), what="the refusal logged")
            assert backend_of(g.url + "/api")[:2] == (200, "api")
            time.sleep(0.4)
        finally:
            load.stop()
        assert g.proc.poll() is None
        records, slow = load.records, load.slow_records
        bad = [r for r in records + slow if r[3] != 200]
        print(f"\n{len(records)} fast and {len(slow)} slow requests across a reload; {len(load.errors)} errors, "
              f"{len(bad)} not 200, {load.closed} closed; /api before the switch: {seen}")
        assert not load.errors, load.errors[:10]
        assert not bad, bad[:10]
        assert load.closed == 0 and load.sockets_opened == len(load.threads)
        assert len(records) > 100 and len(slow) >= 4
        # api is followed live from now on.
        api2 = make_backend("api2")
        status, _, body = agent.request("PUT", "/v1/agent/service/register",
                                        {"Name": "api", "ID": "api-2", "Address": "127.0.0.1", "Port": api2.port})
        assert status == 200, body
        wait_for(lambda: len(g.endpoints("api")) == 2 or None, what="api-2 followed")
    finally:
        assert agent.stop() == 0


def test_up_again_without_a_gateway_says_a_restart_is_needed(data_dir):
    """An application started without a gateway cannot get one live: `flotilla up` says so, and
    the agent (which has a supervisor even with no supervised service) still stops on `down`."""
    from conftest import free_ports, stop_process
    api_port, gw_port = free_ports(2)
    path = os.path.join(data_dir, "flotilla.yaml")
    head = f"name: plain\nagent:\n  api: 127.0.0.1:{api_port}\n  data_dir: data\n"
    with open(path, "w") as f:
        f.write(head)
    log = open(os.path.join(data_dir, "up.log"), "ab")
    proc = subprocess.Popen([BIN, "up", "-f", path], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: status_answers(api_port), what="the agent's API")
        with open(path, "w") as f:
            f.write(head + f"gateway:\n  listen: [127.0.0.1:{gw_port}]\n  routes:\n    - service: web\n")
        r = subprocess.run([BIN, "up", "-f", path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "restart needed to change: gateway" in r.stdout, r.stdout
        r = subprocess.run([BIN, "down", "-f", path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
        log.close()


def test_up_applies_its_file_on_sighup_without_a_terminal(make_stack, make_backend):
    """`flotilla up -d` and systemd units have no controlling terminal: SIGHUP is a reload."""
    stack = make_stack(gateway_yaml(CATCH_ALL), new_session=True)
    stack.register("web", make_backend("web"))
    status, text = stack.api_request("PUT", "/v1/agent/service/register",
                                     {"Name": "api", "ID": "api-1", "Address": "127.0.0.1",
                                      "Port": make_backend("api").port})
    assert status == 200, text
    rewrite(stack, gateway_yaml(API_FIRST))
    os.kill(stack.proc.pid, signal.SIGHUP)
    wait_for(lambda: backend_of(stack.gw + "/api/x")[1] == "api" or None, what="the new route")
    log = stack.read_log()
    assert "received SIGHUP, applying" in log and "gateway: applied" in log and "now routing to api" in log, log
    # A file that does not load: nothing changes, the agent runs on.
    with open(stack.file, "a") as f:
        f.write("  bogus: 1\n")
    os.kill(stack.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload: " in stack.read_log() or None, what="the refusal logged")
    assert "keeping the running configuration" in stack.read_log()
    # No gateway section any more: a restart would be needed; the routes stay.
    with open(stack.file, "w") as f:
        f.write(f"name: test\nagent:\n  api: 127.0.0.1:{stack.api_port}\n  data_dir: data\n")
    os.kill(stack.proc.pid, signal.SIGHUP)
    wait_for(lambda: "needs a restart" in stack.read_log() or None, what="the warning")
    assert stack.proc.poll() is None
    assert backend_of(stack.gw + "/api/x")[:2] == (200, "api")


def test_up_in_a_terminal_stops_on_sighup(data_dir):
    """In the foreground, SIGHUP means the terminal went away: a clean stop (exit 0), not death
    by the signal, and not a reload that would leave the agent running unattended."""
    from conftest import free_port
    api_port = free_port()
    path = os.path.join(data_dir, "flotilla.yaml")
    with open(path, "w") as f:
        f.write(f"name: tty\nagent:\n  api: 127.0.0.1:{api_port}\n  data_dir: data\n")
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        try:
            os.execv(BIN, [BIN, "up", "-f", path])
        finally:
            os._exit(127)
    output = []

    def drain():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            output.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for(lambda: status_answers(api_port), what="the agent's API")
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("flotilla up did not stop on SIGHUP")
        reader.join(timeout=5)
        text = b"".join(output).decode(errors="replace")
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, text)
        assert "received SIGHUP (the terminal went away), stopping" in text, text
    finally:
        os.close(master)


def test_trusted_proxies_change_with_up_again(make_stack, make_backend):
    stack = make_stack(gateway_yaml(CATCH_ALL))
    stack.register("web", make_backend("web"))

    def proto_seen():
        status, _, body = get(stack.gw + "/echo/p", headers={"X-Forwarded-Proto": "https"})
        assert status == 200, body
        return [v for k, v in json.loads(body)["headers"] if k.lower() == "x-forwarded-proto"]

    assert proto_seen() == ["http"]
    rewrite(stack, gateway_yaml(CATCH_ALL).replace("  routes:\n", "  trusted_proxies: [127.0.0.0/8]\n  routes:\n"))
    out = up_again(stack)
    assert "trusted_proxies changed" in out, out
    assert proto_seen() == ["https"]
    status, _, body = get(f"http://127.0.0.1:{stack.api_port}/v1/flotilla/gateway")
    assert json.loads(body)["TrustedProxies"] == ["127.0.0.0/8"], body
    rewrite(stack, gateway_yaml(CATCH_ALL))
    assert "trusted_proxies changed" in up_again(stack)
    assert proto_seen() == ["http"]
    status, _, body = get(f"http://127.0.0.1:{stack.api_port}/v1/flotilla/gateway")
    assert "TrustedProxies" not in json.loads(body), body
