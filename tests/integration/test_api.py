"""The agent's Consul-compatible HTTP API, spoken directly (urllib via conftest's helper).

Covers the JSON shapes Consul clients parse, registration semantics, health and maintenance,
KV details, X-Consul-Index, metrics, blocking queries (including the promise that unrelated
writes do not wake a watcher) and token protection.
"""
import base64
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import BIN, free_port


# --- helpers -----------------------------------------------------------------------------------

def ok(agent, method, path, body=None, **kw):
    status, headers, data = agent.json(method, path, body, **kw)
    assert status == 200, f"{method} {path} -> {status}: {data}"
    return data


def register(agent, body, query=""):
    status, _, data = agent.request("PUT", "/v1/agent/service/register" + query, body)
    assert status == 200, f"register {body} -> {status}: {data!r}"


def index_of(headers):
    assert "X-Consul-Index" in headers, f"no X-Consul-Index in {headers}"
    value = int(headers["X-Consul-Index"])
    assert value > 0
    return value


def get_indexed(agent, path):
    status, headers, data = agent.json("GET", path)
    assert status == 200, f"GET {path} -> {status}: {data}"
    return index_of(headers), data


def passing_ids(agent, name):
    return sorted(e["Service"]["ID"] for e in ok(agent, "GET", f"/v1/health/service/{name}?passing"))


class Blocked:
    """A request run in a thread, so the test can write meanwhile and look at when it returned."""

    def __init__(self, agent, path, headers=None):
        self.result = None
        self.elapsed = None

        def run():
            t0 = time.monotonic()
            self.result = agent.request("GET", path, headers=headers, timeout=30)
            self.elapsed = time.monotonic() - t0

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def returned(self):
        return not self.thread.is_alive()

    def join(self, timeout):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"blocking query still waiting after {timeout}s"
        status, headers, body = self.result
        return status, headers, body


def wait_parked(agent, n, timeout=5):
    """Waits until the agent reports n blocking queries parked (flotilla_blocking_queries_waiting)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = metric(agent, "flotilla_blocking_queries_waiting")
        if value == n:
            return
        time.sleep(0.02)
    raise AssertionError(f"expected {n} parked blocking queries, metrics say {value}")


def metric(agent, name, labels=None):
    status, headers, body = agent.request("GET", "/metrics")
    assert status == 200
    text = body.decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == want:
            return float(value)
    return None


# --- service registration and shapes -------------------------------------------------------------

def test_agent_services_shape_and_case_insensitive_keys(agent):
    # Keys in any case, as Consul accepts; ID defaults to Name.
    register(agent, {"name": "web", "TAGS": ["a", "b"], "port": 8080, "address": "10.1.2.3",
                     "meta": {"version": "1.2"}, "weights": {"passing": 5, "warning": 2}})
    services = ok(agent, "GET", "/v1/agent/services")
    assert set(services) == {"web"}
    web = services["web"]
    assert web["ID"] == "web"
    assert web["Service"] == "web"
    assert web["Tags"] == ["a", "b"]
    assert web["Port"] == 8080
    assert web["Address"] == "10.1.2.3"
    assert web["Meta"] == {"version": "1.2"}
    assert web["Weights"] == {"Passing": 5, "Warning": 2}

    one = ok(agent, "GET", "/v1/agent/service/web")
    assert one["ID"] == "web" and one["Port"] == 8080

    # Empty tags and meta are [] and {}, not null: clients iterate over them.
    register(agent, {"Name": "bare"})
    bare = ok(agent, "GET", "/v1/agent/services")["bare"]
    assert bare["Tags"] == [] and bare["Meta"] == {}
    assert bare["Port"] == 0
    assert bare["Weights"] == {"Passing": 1, "Warning": 1}

    # Nested keys too, and on the check endpoint.
    register(agent, {"nAmE": "lower", "check": {"ttl": "10s", "checkid": "lc", "notes": "from lower case"}})
    status, _, body = agent.request("PUT", "/v1/agent/check/register",
                                    {"name": "extra", "serviceid": "lower", "ttl": "10s", "status": "passing"})
    assert status == 200, body
    checks = ok(agent, "GET", "/v1/agent/checks")
    assert checks["lc"]["ServiceID"] == "lower" and checks["lc"]["Notes"] == "from lower case"
    assert checks["extra"]["ServiceID"] == "lower" and checks["extra"]["Status"] == "passing"


def test_reregister_updates_in_place(agent):
    register(agent, {"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["old"]})
    first = ok(agent, "GET", "/v1/agent/service/web-1")
    register(agent, {"Name": "web", "ID": "web-1", "Port": 81, "Tags": ["new"], "Meta": {"k": "v"}})
    second = ok(agent, "GET", "/v1/agent/service/web-1")
    assert second["Port"] == 81 and second["Tags"] == ["new"] and second["Meta"] == {"k": "v"}
    assert second["ModifyIndex"] > first["ModifyIndex"]
    assert second["CreateIndex"] == first["CreateIndex"]
    catalog = ok(agent, "GET", "/v1/catalog/service/web")
    assert len(catalog) == 1 and catalog[0]["ServicePort"] == 81 and catalog[0]["ServiceTags"] == ["new"]


def test_embedded_check_ids(agent):
    register(agent, {"Name": "one", "Check": {"TTL": "30s"}})
    register(agent, {"Name": "two", "Checks": [{"TTL": "30s"}, {"TTL": "30s", "Name": "second"}]})
    register(agent, {"Name": "named", "Checks": [{"CheckID": "mine", "TTL": "30s"}]})
    checks = ok(agent, "GET", "/v1/agent/checks")
    assert checks["service:one"]["ServiceID"] == "one"
    assert checks["service:two:1"]["ServiceID"] == "two"
    assert checks["service:two:2"]["ServiceID"] == "two"
    assert checks["service:two:2"]["Name"] == "second"
    assert checks["mine"]["ServiceID"] == "named"
    assert "service:two" not in checks
    # Unlisted fields of a check default as in Consul: a TTL check starts critical.
    assert checks["service:one"]["Status"] == "critical"
    assert checks["service:one"]["Type"] == "ttl"


def test_replace_existing_checks(agent):
    register(agent, {"Name": "svc", "Checks": [{"CheckID": "a", "TTL": "30s"}, {"CheckID": "b", "TTL": "30s"}]})
    # Without the flag, checks not listed again survive.
    register(agent, {"Name": "svc", "Checks": [{"CheckID": "a", "TTL": "30s"}]})
    assert {"a", "b"} <= set(ok(agent, "GET", "/v1/agent/checks"))
    # With it, they are removed.
    register(agent, {"Name": "svc", "Checks": [{"CheckID": "a", "TTL": "30s"}]}, "?replace-existing-checks")
    checks = ok(agent, "GET", "/v1/agent/checks")
    assert "a" in checks and "b" not in checks
    assert [c["CheckID"] for c in ok(agent, "GET", "/v1/health/checks/svc")] == ["a"]


def test_reregistering_keeps_check_status(agent):
    register(agent, {"Name": "svc", "Check": {"TTL": "30s"}})
    assert agent.request("PUT", "/v1/agent/check/pass/service:svc")[0] == 200
    register(agent, {"Name": "svc", "Port": 99, "Check": {"TTL": "30s"}})
    assert ok(agent, "GET", "/v1/agent/checks")["service:svc"]["Status"] == "passing"


def test_health_service_shape(agent):
    register(agent, {"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["x"], "Check": {"TTL": "30s", "Notes": "n"}})
    entries = ok(agent, "GET", "/v1/health/service/web")
    assert len(entries) == 1
    e = entries[0]
    assert set(e) >= {"Node", "Service", "Checks"}
    assert e["Node"]["Node"] == "test-node"
    assert e["Node"]["Address"]
    assert e["Service"]["ID"] == "web-1"
    assert e["Service"]["Service"] == "web"
    assert e["Service"]["Port"] == 80
    assert e["Service"]["Tags"] == ["x"]
    by_id = {c["CheckID"]: c for c in e["Checks"]}
    # The node's own check is part of every entry, as in Consul.
    assert by_id["serfHealth"]["Status"] == "passing"
    svc = by_id["service:web-1"]
    for key in ("Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName"):
        assert key in svc
    assert svc["ServiceName"] == "web" and svc["Notes"] == "n" and svc["Status"] == "critical"
    # Unknown service: empty list, not 404.
    assert ok(agent, "GET", "/v1/health/service/nosuch") == []


def test_maintenance_mode(agent):
    register(agent, {"Name": "web", "ID": "web-1"})
    register(agent, {"Name": "web", "ID": "web-2"})
    assert passing_ids(agent, "web") == ["web-1", "web-2"]

    status, _, body = agent.request("PUT", "/v1/agent/service/maintenance/web-1?enable=true&reason=upgrading+db")
    assert status == 200, body
    assert passing_ids(agent, "web") == ["web-2"]
    # Still listed without ?passing, with the maintenance check critical and the reason as notes.
    entries = {e["Service"]["ID"]: e for e in ok(agent, "GET", "/v1/health/service/web")}
    maint = [c for c in entries["web-1"]["Checks"] if c["CheckID"] == "_service_maintenance:web-1"]
    assert len(maint) == 1
    assert maint[0]["Status"] == "critical"
    assert maint[0]["Notes"] == "upgrading db"
    assert not any(c["CheckID"].startswith("_service_maintenance") for c in entries["web-2"]["Checks"])

    status, _, _ = agent.request("PUT", "/v1/agent/service/maintenance/web-1?enable=false")
    assert status == 200
    assert passing_ids(agent, "web") == ["web-1", "web-2"]
    assert "_service_maintenance:web-1" not in ok(agent, "GET", "/v1/agent/checks")

    # Node maintenance takes every instance out.
    assert agent.request("PUT", "/v1/agent/maintenance?enable=true&reason=rack")[0] == 200
    assert passing_ids(agent, "web") == []
    assert agent.request("PUT", "/v1/agent/maintenance?enable=false")[0] == 200
    assert passing_ids(agent, "web") == ["web-1", "web-2"]


def test_agent_check_endpoints(agent):
    register(agent, {"Name": "app", "ID": "app-1"})
    status, _, body = agent.request("PUT", "/v1/agent/check/register",
                                    {"Name": "app heartbeat", "CheckID": "hb", "ServiceID": "app-1", "TTL": "30s"})
    assert status == 200, body
    checks = ok(agent, "GET", "/v1/agent/checks")
    assert checks["hb"]["ServiceID"] == "app-1"
    assert checks["hb"]["ServiceName"] == "app"
    assert checks["hb"]["Status"] == "critical"
    assert passing_ids(agent, "app") == []

    def state_of():
        return ok(agent, "GET", "/v1/agent/checks")["hb"]

    assert agent.request("PUT", "/v1/agent/check/pass/hb?note=fine")[0] == 200
    assert state_of()["Status"] == "passing" and state_of()["Output"] == "fine"
    assert passing_ids(agent, "app") == ["app-1"]

    assert agent.request("PUT", "/v1/agent/check/warn/hb?note=slow")[0] == 200
    assert state_of()["Status"] == "warning" and state_of()["Output"] == "slow"
    # Consul: warning is not passing.
    assert passing_ids(agent, "app") == []

    assert agent.request("PUT", "/v1/agent/check/fail/hb")[0] == 200
    assert state_of()["Status"] == "critical"

    status, _, _ = agent.request("PUT", "/v1/agent/check/update/hb", {"Status": "passing", "Output": "via update"})
    assert status == 200
    assert state_of()["Status"] == "passing" and state_of()["Output"] == "via update"

    # /v1/health/checks/:service lists the service's checks.
    svc_checks = ok(agent, "GET", "/v1/health/checks/app")
    assert [(c["CheckID"], c["Status"]) for c in svc_checks] == [("hb", "passing")]

    assert agent.request("PUT", "/v1/agent/check/deregister/hb")[0] == 200
    assert "hb" not in ok(agent, "GET", "/v1/agent/checks")
    assert ok(agent, "GET", "/v1/health/checks/app") == []
    assert passing_ids(agent, "app") == ["app-1"]


def test_ttl_check_expires(agent):
    register(agent, {"Name": "beat", "Check": {"TTL": "500ms"}})
    assert agent.request("PUT", "/v1/agent/check/pass/service:beat")[0] == 200
    assert ok(agent, "GET", "/v1/agent/checks")["service:beat"]["Status"] == "passing"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        c = ok(agent, "GET", "/v1/agent/checks")["service:beat"]
        if c["Status"] == "critical":
            break
        time.sleep(0.05)
    assert c["Status"] == "critical", "a TTL check that is not renewed must turn critical"
    assert "TTL" in c["Output"]


def test_health_state(agent):
    register(agent, {"Name": "a", "Check": {"TTL": "30s", "Status": "passing"}})
    register(agent, {"Name": "b", "Check": {"TTL": "30s"}})
    register(agent, {"Name": "c", "Check": {"TTL": "30s", "Status": "warning"}})

    def ids(state):
        return sorted(c["CheckID"] for c in ok(agent, "GET", f"/v1/health/state/{state}"))

    assert ids("any") == ["serfHealth", "service:a", "service:b", "service:c"]
    assert ids("passing") == ["serfHealth", "service:a"]
    assert ids("critical") == ["service:b"]
    assert ids("warning") == ["service:c"]


def test_catalog_nodes_self_status(agent):
    nodes = ok(agent, "GET", "/v1/catalog/nodes")
    assert len(nodes) == 1
    assert nodes[0]["Node"] == "test-node"
    assert nodes[0]["Address"] == "127.0.0.1"
    assert nodes[0]["Datacenter"] == "dc1"
    assert nodes[0]["ID"]

    me = ok(agent, "GET", "/v1/agent/self")
    assert me["Config"]["NodeName"] == "test-node"
    assert me["Config"]["Datacenter"] == "dc1"
    assert me["Config"]["NodeID"] == nodes[0]["ID"]
    assert me["Member"]["Name"] == "test-node"

    leader = ok(agent, "GET", "/v1/status/leader")
    assert isinstance(leader, str) and re.fullmatch(r"[0-9.]+:\d+", leader)
    peers = ok(agent, "GET", "/v1/status/peers")
    assert peers == [leader]
    assert ok(agent, "GET", "/v1/catalog/datacenters") == ["dc1"]

    register(agent, {"Name": "web", "Port": 1})
    node = ok(agent, "GET", "/v1/catalog/node/test-node")
    assert node["Node"]["Node"] == "test-node"
    assert set(node["Services"]) == {"web"}


# --- KV ------------------------------------------------------------------------------------------

def test_kv_shape_flags_raw(agent):
    assert ok(agent, "PUT", "/v1/kv/cfg/db?flags=7", "postgres://x") is True
    assert ok(agent, "PUT", "/v1/kv/cfg/empty", b"") is True
    status, headers, entries = agent.json("GET", "/v1/kv/cfg/db")
    assert status == 200
    assert len(entries) == 1
    e = entries[0]
    assert set(e) >= {"LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"}
    assert e["Key"] == "cfg/db"
    assert e["Flags"] == 7
    assert e["LockIndex"] == 0
    assert base64.b64decode(e["Value"]) == b"postgres://x"
    assert e["CreateIndex"] == e["ModifyIndex"] == index_of(headers)
    assert "Session" not in e

    empty = ok(agent, "GET", "/v1/kv/cfg/empty")[0]
    assert empty["Value"] is None

    status, headers, raw = agent.request("GET", "/v1/kv/cfg/db?raw")
    assert status == 200 and raw == b"postgres://x"
    index_of(headers)

    # Binary values round-trip.
    blob = bytes(range(256))
    assert ok(agent, "PUT", "/v1/kv/cfg/blob", blob) is True
    assert agent.request("GET", "/v1/kv/cfg/blob?raw")[2] == blob
    assert base64.b64decode(ok(agent, "GET", "/v1/kv/cfg/blob")[0]["Value"]) == blob

    # Flags are a full uint64, as in Consul.
    assert ok(agent, "PUT", f"/v1/kv/cfg/flags?flags={2**64 - 1}", "f") is True
    assert ok(agent, "GET", "/v1/kv/cfg/flags")[0]["Flags"] == 2**64 - 1

    status, headers, body = agent.request("GET", "/v1/kv/cfg/missing")
    assert status == 404
    index_of(headers)


def test_kv_keys_separator_and_recurse(agent):
    for k in ["svc/a/1", "svc/a/2", "svc/b", "svc/c/d/e", "svcx"]:
        assert ok(agent, "PUT", f"/v1/kv/{k}", k) is True
    assert ok(agent, "GET", "/v1/kv/svc/?keys&separator=/") == ["svc/a/", "svc/b", "svc/c/"]
    assert ok(agent, "GET", "/v1/kv/svc/?keys") == ["svc/a/1", "svc/a/2", "svc/b", "svc/c/d/e"]
    assert ok(agent, "GET", "/v1/kv/svc?keys&separator=/") == ["svc/", "svcx"]
    assert [e["Key"] for e in ok(agent, "GET", "/v1/kv/svc/a?recurse")] == ["svc/a/1", "svc/a/2"]
    assert agent.request("GET", "/v1/kv/nothing/?recurse")[0] == 404
    assert agent.request("GET", "/v1/kv/nothing/?keys")[0] == 404

    assert ok(agent, "DELETE", "/v1/kv/svc/a?recurse") is True
    assert ok(agent, "GET", "/v1/kv/?keys") == ["svc/b", "svc/c/d/e", "svcx"]


def test_kv_cas(agent):
    assert ok(agent, "PUT", "/v1/kv/x?cas=0", "first") is True
    assert ok(agent, "PUT", "/v1/kv/x?cas=0", "second") is False
    e = ok(agent, "GET", "/v1/kv/x")[0]
    assert base64.b64decode(e["Value"]) == b"first"
    assert ok(agent, "PUT", f"/v1/kv/x?cas={e['ModifyIndex'] + 1}", "stale") is False
    assert ok(agent, "PUT", f"/v1/kv/x?cas={e['ModifyIndex']}", "third") is True
    assert base64.b64decode(ok(agent, "GET", "/v1/kv/x")[0]["Value"]) == b"third"
    e2 = ok(agent, "GET", "/v1/kv/x")[0]
    assert ok(agent, "DELETE", f"/v1/kv/x?cas={e['ModifyIndex']}") is False
    assert ok(agent, "DELETE", f"/v1/kv/x?cas={e2['ModifyIndex']}") is True
    assert agent.request("GET", "/v1/kv/x")[0] == 404


def test_kv_value_size_limit(agent):
    limit = 512 * 1024
    assert ok(agent, "PUT", "/v1/kv/big", b"v" * limit) is True
    assert len(agent.request("GET", "/v1/kv/big?raw")[2]) == limit
    status, _, body = agent.json("PUT", "/v1/kv/big", b"w" * (limit + 1))
    assert status == 413, body
    assert "error" in body
    assert agent.request("GET", "/v1/kv/big?raw")[2] == b"v" * limit
    status, _, _ = agent.json("PUT", "/v1/kv/other", b"w" * (limit + 1))
    assert status == 413
    assert agent.request("GET", "/v1/kv/other")[0] == 404


def test_kv_keys_with_special_characters(agent):
    key = "app/naïve key+plus&amp=eq"
    path = "/v1/kv/" + urllib.parse.quote(key, safe="/")
    assert ok(agent, "PUT", path, "v") is True
    assert ok(agent, "GET", path)[0]["Key"] == key
    assert ok(agent, "GET", "/v1/kv/app/?keys") == [key]


# --- X-Consul-Index and metrics ------------------------------------------------------------------

def test_x_consul_index_on_reads(agent):
    register(agent, {"Name": "web", "Check": {"TTL": "30s"}})
    assert ok(agent, "PUT", "/v1/kv/k", "v") is True
    sid = ok(agent, "PUT", "/v1/session/create", {"TTL": "30s"})["ID"]
    reads = ["/v1/agent/services", "/v1/agent/service/web", "/v1/agent/checks", "/v1/catalog/services",
             "/v1/catalog/service/web", "/v1/catalog/service/nosuch", "/v1/catalog/nodes",
             "/v1/catalog/node/test-node", "/v1/health/service/web", "/v1/health/service/web?passing",
             "/v1/health/checks/web", "/v1/health/state/any", "/v1/health/state/critical",
             "/v1/health/node/test-node", "/v1/kv/k", "/v1/kv/?recurse", "/v1/kv/?keys", "/v1/kv/k?raw",
             "/v1/kv/absent", f"/v1/session/info/{sid}", "/v1/session/list", "/v1/session/node/test-node"]
    for path in reads:
        status, headers, body = agent.request("GET", path)
        assert status in (200, 404), f"{path}: {status} {body!r}"
        assert "X-Consul-Index" in headers, f"GET {path} has no X-Consul-Index"
        assert int(headers["X-Consul-Index"]) > 0, f"GET {path}: X-Consul-Index {headers['X-Consul-Index']}"


def test_indexes_move_with_writes(agent):
    i1, _ = get_indexed(agent, "/v1/catalog/services")
    register(agent, {"Name": "web"})
    i2, services = get_indexed(agent, "/v1/catalog/services")
    assert i2 > i1 and "web" in services
    k1 = index_of(agent.request("GET", "/v1/kv/k")[1])
    ok(agent, "PUT", "/v1/kv/k", "1")
    k2 = index_of(agent.request("GET", "/v1/kv/k")[1])
    assert k2 > k1


def test_metrics(agent):
    register(agent, {"Name": "a", "Check": {"TTL": "30s", "Status": "passing"}})
    register(agent, {"Name": "b", "Check": {"TTL": "30s"}})
    ok(agent, "PUT", "/v1/kv/m", "1")
    agent.request("GET", "/v1/kv/nope")
    status, headers, body = agent.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in ("flotilla_api_requests_total", "flotilla_blocking_queries_waiting", "flotilla_checks",
                 "flotilla_store_commit_seconds"):
        assert re.search(rf"^# TYPE {name} \w+$", text, re.M), f"no TYPE line for {name}"
    assert re.search(r"^# TYPE flotilla_store_commit_seconds histogram$", text, re.M)
    # Every sample line is NAME{labels} VALUE.
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfa]+', line), line
    assert metric(agent, "flotilla_checks", {"status": "passing"}) == 2  # serfHealth and a
    assert metric(agent, "flotilla_checks", {"status": "critical"}) == 1
    assert metric(agent, "flotilla_checks", {"status": "warning"}) == 0
    assert metric(agent, "flotilla_api_requests_total", {"method": "PUT", "code": "200"}) >= 3
    assert metric(agent, "flotilla_api_requests_total", {"method": "GET", "code": "404"}) >= 1
    assert metric(agent, "flotilla_store_commit_seconds_count") >= 3
    assert metric(agent, "flotilla_blocking_queries_waiting") == 0
    # Also under Consul's path, which needs format=prometheus (Consul answers JSON otherwise).
    status, headers, body = agent.request("GET", "/v1/agent/metrics?format=prometheus")
    assert status == 200 and b"flotilla_api_requests_total" in body
    status, _, body = agent.request("GET", "/v1/agent/metrics")
    assert status == 400 and json.loads(body)["field"] == "format"


# --- blocking queries ---------------------------------------------------------------------------

def test_checks_with_every_field_sent_are_taken(agent):
    # Clients that send every field give an HTTP or TCP check "TTL": "" or "0s" (Consul ignores a
    # TTL there); a TCP port may be a service name.
    for i, check in enumerate([{"HTTP": f"http://127.0.0.1:{agent.port}/v1/status/leader", "Interval": "10s", "TTL": ""},
                               {"TCP": f"127.0.0.1:{agent.port}", "Interval": "10s", "TTL": "0s"},
                               {"TCP": "localhost:http", "Interval": "10s"}]):
        status, _, body = agent.request("PUT", "/v1/agent/service/register", {"Name": f"every{i}", "Check": check})
        assert status == 200, (check, body)


def test_blocking_query_times_out_with_same_index(agent):
    register(agent, {"Name": "web"})
    index, body = get_indexed(agent, "/v1/health/service/web")
    t0 = time.monotonic()
    status, headers, data = agent.json("GET", f"/v1/health/service/web?index={index}&wait=2s")
    elapsed = time.monotonic() - t0
    assert status == 200
    assert 1.95 <= elapsed < 3.0, f"wait=2s answered after {elapsed:.2f}s"
    assert index_of(headers) == index
    assert data == body

    # Also for KV, including a key that does not exist yet (404 blocks too).
    k = index_of(agent.request("GET", "/v1/kv/later")[1])
    t0 = time.monotonic()
    status, headers, _ = agent.request("GET", f"/v1/kv/later?index={k}&wait=1s")
    assert status == 404
    assert 0.95 <= time.monotonic() - t0 < 2.0
    assert index_of(headers) == k


def test_blocking_query_with_wait_0_waits_the_default(agent):
    # Consul reads a wait of 0 as "none given" and blocks for its default; answering at once
    # would make every client that sends its unset wait option as 0 poll in a busy loop.
    register(agent, {"Name": "web", "ID": "web-1"})
    index, _ = get_indexed(agent, "/v1/health/service/web")
    for wait in ("0", "0s"):
        b = Blocked(agent, f"/v1/health/service/web?index={index}&wait={wait}")
        wait_parked(agent, 1)
        time.sleep(0.5)
        assert not b.returned(), f"wait={wait} answered at once"
        register(agent, {"Name": "web", "ID": f"web-{wait}"})
        status, headers, _ = b.join(5)
        assert status == 200 and index_of(headers) > index
        index = index_of(headers)


def test_blocking_query_returns_early_on_own_change(agent):
    register(agent, {"Name": "web", "ID": "web-1"})
    index, _ = get_indexed(agent, "/v1/health/service/web")
    b = Blocked(agent, f"/v1/health/service/web?index={index}&wait=10s")
    wait_parked(agent, 1)
    register(agent, {"Name": "web", "ID": "web-2"})
    status, headers, body = b.join(5)
    assert status == 200
    assert b.elapsed < 2, f"took {b.elapsed:.2f}s to report a new instance"
    assert index_of(headers) > index
    assert sorted(e["Service"]["ID"] for e in json.loads(body)) == ["web-1", "web-2"]

    # A KV key that does not exist yet: woken when it is created.
    k = index_of(agent.request("GET", "/v1/kv/later")[1])
    b = Blocked(agent, f"/v1/kv/later?index={k}&wait=10s")
    wait_parked(agent, 1)
    ok(agent, "PUT", "/v1/kv/later", "now")
    status, headers, body = b.join(5)
    assert status == 200 and b.elapsed < 2
    assert index_of(headers) > k

    # A check turning passing wakes a ?passing watcher.
    register(agent, {"Name": "gated", "Check": {"TTL": "30s"}})
    i, data = get_indexed(agent, "/v1/health/service/gated?passing")
    assert data == []
    b = Blocked(agent, f"/v1/health/service/gated?passing&index={i}&wait=10s")
    wait_parked(agent, 1)
    assert agent.request("PUT", "/v1/agent/check/pass/service:gated")[0] == 200
    status, headers, body = b.join(5)
    assert b.elapsed < 2 and len(json.loads(body)) == 1


def test_blocking_query_with_an_index_from_the_future_gets_the_real_one(agent):
    # An index above any the agent gave (a client kept it across a restore of older data): an
    # early answer would have to invent an index above it, which the client would send back and
    # then miss the changes below it. The query waits, as Consul's does, and gets the real one.
    ok(agent, "PUT", "/v1/kv/fut", "a")
    real = index_of(agent.request("GET", "/v1/kv/fut")[1])
    b = Blocked(agent, f"/v1/kv/fut?index={real + 1000}&wait=2s")
    wait_parked(agent, 1)
    ok(agent, "PUT", "/v1/kv/fut", "b")
    status, headers, body = b.join(5)
    assert status == 200 and b.elapsed >= 1.9, f"answered after {b.elapsed:.2f}s"
    new = index_of(headers)
    assert real < new < real + 1000, (real, new)
    assert json.loads(body)[0]["ModifyIndex"] == new
    # From the real index, the next change is answered at once.
    b = Blocked(agent, f"/v1/kv/fut?index={new}&wait=10s")
    wait_parked(agent, 1)
    ok(agent, "PUT", "/v1/kv/fut", "c")
    status, headers, body = b.join(5)
    assert status == 200 and b.elapsed < 2 and index_of(headers) > new
    assert base64.b64decode(json.loads(body)[0]["Value"]) == b"c"


def test_blocking_query_not_woken_by_unrelated_writes(agent):
    register(agent, {"Name": "web", "ID": "web-1", "Check": {"TTL": "30s", "Status": "passing"}})
    register(agent, {"Name": "other", "ID": "other-1", "Check": {"TTL": "30s"}})
    ok(agent, "PUT", "/v1/kv/cfg/a", "a")
    ok(agent, "PUT", "/v1/kv/cfg/b", "b")

    h_index, h_body = get_indexed(agent, "/v1/health/service/web")
    p_index, p_body = get_indexed(agent, "/v1/health/service/web?passing")
    c_index, c_body = get_indexed(agent, "/v1/catalog/service/web")
    k_index, k_body = get_indexed(agent, "/v1/kv/cfg/a")
    s_index, s_body = get_indexed(agent, "/v1/agent/service/web-1")
    hc_index, hc_body = get_indexed(agent, "/v1/health/checks/web")
    watchers = {
        "agent-service": Blocked(agent, f"/v1/agent/service/web-1?index={s_index}&wait=4s"),
        "health-checks": Blocked(agent, f"/v1/health/checks/web?index={hc_index}&wait=4s"),
        "health": Blocked(agent, f"/v1/health/service/web?index={h_index}&wait=4s"),
        "passing": Blocked(agent, f"/v1/health/service/web?passing&index={p_index}&wait=4s"),
        "catalog": Blocked(agent, f"/v1/catalog/service/web?index={c_index}&wait=4s"),
        "kv": Blocked(agent, f"/v1/kv/cfg/a?index={k_index}&wait=4s"),
    }
    wait_parked(agent, 6)
    start = time.monotonic()

    # Unrelated writes: other services and their checks, other keys (also ones sharing a prefix
    # with the watched key), sessions.
    register(agent, {"Name": "other", "ID": "other-2", "Port": 2})
    register(agent, {"Name": "other", "ID": "other-1", "Port": 3, "Check": {"TTL": "30s"}})
    assert agent.request("PUT", "/v1/agent/check/pass/service:other-1")[0] == 200
    assert agent.request("PUT", "/v1/agent/check/fail/service:other-1")[0] == 200
    assert agent.request("PUT", "/v1/agent/service/maintenance/other-2?enable=true")[0] == 200
    assert agent.request("PUT", "/v1/agent/service/deregister/other-2")[0] == 200
    ok(agent, "PUT", "/v1/kv/cfg/b", "b2")
    ok(agent, "PUT", "/v1/kv/cfg/a2", "x")
    ok(agent, "PUT", "/v1/kv/cfg/a/sub", "x")
    ok(agent, "PUT", "/v1/kv/cfg", "x")
    ok(agent, "DELETE", "/v1/kv/cfg/b")
    ok(agent, "PUT", "/v1/session/create", {})

    # The writes are applied (they are acknowledged); give any wrong wake-up a moment to arrive.
    time.sleep(0.3)
    assert time.monotonic() - start < 3.5, "the unrelated writes took too long for this test to mean anything"
    woken = [name for name, b in watchers.items() if b.returned()]
    assert not woken, f"unrelated writes woke blocking queries: {woken} " \
                      f"{ {n: watchers[n].result[:2] for n in woken} }"
    assert metric(agent, "flotilla_blocking_queries_waiting") == 6

    expected = {"health": (h_index, h_body), "passing": (p_index, p_body), "catalog": (c_index, c_body),
                "kv": (k_index, k_body), "agent-service": (s_index, s_body),
                "health-checks": (hc_index, hc_body)}
    for name, b in watchers.items():
        status, headers, body = b.join(6)
        assert status == 200
        assert b.elapsed >= 3.9, f"{name} returned after {b.elapsed:.2f}s"
        assert index_of(headers) == expected[name][0], f"{name}: index moved without a change to its result"
        assert json.loads(body) == expected[name][1]


def test_kv_prefix_watch_wakes_on_delete(agent):
    for k in ("app/a", "app/b", "app/sub/c", "apple"):
        ok(agent, "PUT", f"/v1/kv/{k}", k)
    index, entries = get_indexed(agent, "/v1/kv/app/?recurse")
    assert [e["Key"] for e in entries] == ["app/a", "app/b", "app/sub/c"]

    # A write outside the prefix does not wake it.
    b = Blocked(agent, f"/v1/kv/app/?recurse&index={index}&wait=10s")
    wait_parked(agent, 1)
    ok(agent, "PUT", "/v1/kv/apple", "changed")
    ok(agent, "PUT", "/v1/kv/other", "x")
    time.sleep(0.3)
    assert not b.returned(), "a write outside the prefix woke a prefix watch"

    ok(agent, "DELETE", "/v1/kv/app/sub/c")
    status, headers, body = b.join(5)
    assert status == 200
    assert b.elapsed < 3
    new_index = index_of(headers)
    assert new_index > index
    assert [e["Key"] for e in json.loads(body)] == ["app/a", "app/b"]

    # Keys listing and a recursive delete that empties the prefix.
    keys_index, keys = get_indexed(agent, "/v1/kv/app/?keys")
    assert keys == ["app/a", "app/b"]
    b = Blocked(agent, f"/v1/kv/app/?keys&index={keys_index}&wait=10s")
    wait_parked(agent, 1)
    ok(agent, "DELETE", "/v1/kv/app/?recurse")
    status, headers, _ = b.join(5)
    assert status == 404
    assert b.elapsed < 3
    assert index_of(headers) > keys_index
    assert ok(agent, "GET", "/v1/kv/apple")[0]["Key"] == "apple"


def test_closed_blocking_client_is_forgotten(agent):
    register(agent, {"Name": "web"})
    index, _ = get_indexed(agent, "/v1/health/service/web")
    s = socket.create_connection(("127.0.0.1", agent.port))
    s.sendall(f"GET /v1/health/service/web?index={index}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    wait_parked(agent, 1)
    s.close()
    wait_parked(agent, 0)


# --- tokens --------------------------------------------------------------------------------------

def test_token_protects_writes(make_agent):
    a = make_agent(["--token", "s3cret"]).start()
    status, headers, body = a.json("PUT", "/v1/agent/service/register", {"Name": "web"})
    assert status == 403
    assert isinstance(body, dict) and body.get("error")
    assert headers["Content-Type"].startswith("application/json")
    assert a.json("PUT", "/v1/kv/k", "v")[0] == 403
    assert a.json("PUT", "/v1/kv/k", "v", headers={"X-Consul-Token": "wrong"})[0] == 403
    assert a.json("PUT", "/v1/kv/k?token=s3cre", "v")[0] == 403
    assert a.json("DELETE", "/v1/kv/k")[0] == 403
    assert a.json("PUT", "/v1/session/create", {})[0] == 403
    # Nothing was written.
    assert a.json("GET", "/v1/agent/services")[2] == {}
    assert a.request("GET", "/v1/kv/k")[0] == 404

    # Reads are open, but a wrong token is refused (as Consul refuses an unknown one), and says so.
    assert a.request("GET", "/v1/agent/services")[0] == 200
    assert a.request("GET", "/v1/health/service/web")[0] == 200
    assert a.request("GET", "/metrics")[0] == 200
    for path in ("/v1/agent/services", "/v1/health/service/web", "/metrics", "/v1/kv/k"):
        status, _, body = a.json("GET", path, headers={"X-Consul-Token": "old"})
        assert status == 403 and body["error"] == "Permission denied: the token presented is not this agent's", \
            (path, status, body)
    assert a.json("PUT", "/v1/kv/k", "v", headers={"X-Consul-Token": "wrong"})[2]["error"] == \
        "Permission denied: the token presented is not this agent's"
    assert "need its token" in a.json("PUT", "/v1/kv/k", "v")[2]["error"]
    # An empty token is none (Consul: anonymous): `X-Consul-Token: $UNSET` still reads.
    assert a.request("GET", "/v1/agent/services", headers={"X-Consul-Token": ""})[0] == 200
    assert a.request("GET", "/v1/agent/services?token=")[0] == 200

    assert a.request("PUT", "/v1/agent/service/register", {"Name": "web"}, headers={"X-Consul-Token": "s3cret"})[0] == 200
    assert a.request("PUT", "/v1/kv/k?token=s3cret", "v")[0] == 200
    assert a.request("PUT", "/v1/kv/k2", "v", headers={"Authorization": "Bearer s3cret"})[0] == 200
    # The scheme is case-insensitive and the value trimmed, as Consul reads it; another scheme is not a token.
    assert a.request("PUT", "/v1/kv/k3", "v", headers={"Authorization": "bearer s3cret"})[0] == 200
    assert a.request("PUT", "/v1/kv/k4", "v", headers={"Authorization": "BEARER  s3cret "})[0] == 200
    assert a.request("PUT", "/v1/kv/k5", "v", headers={"Authorization": "Basic s3cret"})[0] == 403
    assert a.request("PUT", "/v1/kv/k6", "v", headers={"Authorization": "Bearer"})[0] == 403
    assert set(a.json("GET", "/v1/agent/services")[2]) == {"web"}
    assert a.request("GET", "/v1/kv/k?raw")[2] == b"v"
    assert a.stop() == 0


def test_token_protects_reads_with_protect_reads(make_agent):
    a = make_agent(["--token", "s3cret", "--protect-reads"]).start()
    for path in ("/v1/agent/services", "/v1/health/service/web", "/v1/kv/k", "/v1/catalog/services", "/metrics"):
        status, _, body = a.json("GET", path)
        assert status == 403, f"GET {path} without token -> {status}"
        assert body.get("error")
        assert a.request("GET", path, headers={"X-Consul-Token": "s3cret"})[0] in (200, 404)
        sep = "&" if "?" in path else "?"
        assert a.request("GET", path + sep + "token=s3cret")[0] in (200, 404)
    assert a.json("PUT", "/v1/kv/k", "v")[0] == 403
    assert a.request("PUT", "/v1/kv/k", "v", headers={"X-Consul-Token": "s3cret"})[0] == 200
    assert a.stop() == 0


def test_refuses_public_bind_without_token(data_dir):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FLOTILLA_TOKEN"}
    proc = subprocess.Popen([BIN, "agent", "--api", f"0.0.0.0:{port}", "--data-dir", data_dir, "--node", "n"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the agent kept running on 0.0.0.0 without a token")
    assert proc.returncode != 0
    assert b"--token" in out + err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


# --- sessions ------------------------------------------------------------------------------------

def session_ids(agent):
    return [s["ID"] for s in ok(agent, "GET", "/v1/session/list")]


def test_session_ttl_expiry_releases_or_deletes_locks(agent):
    keep = ok(agent, "PUT", "/v1/session/create", {"TTL": "1s", "LockDelay": "0s"})["ID"]
    rel = ok(agent, "PUT", "/v1/session/create", {"TTL": "1s", "LockDelay": "0s"})["ID"]
    dele = ok(agent, "PUT", "/v1/session/create", {"TTL": "1s", "LockDelay": "0s", "Behavior": "delete"})["ID"]
    assert ok(agent, "PUT", f"/v1/kv/lock/rel?acquire={rel}", "r") is True
    assert ok(agent, "PUT", f"/v1/kv/lock/del?acquire={dele}", "d") is True
    assert ok(agent, "GET", "/v1/kv/lock/rel")[0]["Session"] == rel

    # `keep` is renewed, the others are not. Consul invalidates within 2 x TTL.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        renewed = ok(agent, "PUT", f"/v1/session/renew/{keep}")
        assert renewed[0]["ID"] == keep
        if rel not in session_ids(agent) and dele not in session_ids(agent):
            break
        time.sleep(0.2)
    ids = session_ids(agent)
    assert rel not in ids and dele not in ids, "sessions with TTL=1s still alive after 4s without renewal"
    assert keep in ids, "a session renewed every 200ms expired"

    def released():
        status, _, body = agent.json("GET", "/v1/kv/lock/rel")
        return status == 200 and not body[0].get("Session")

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not (released() and agent.request("GET", "/v1/kv/lock/del")[0] == 404):
        time.sleep(0.05)
    assert released(), "the lock of an expired release-session is still held"
    assert base64.b64decode(ok(agent, "GET", "/v1/kv/lock/rel")[0]["Value"]) == b"r"
    assert agent.request("GET", "/v1/kv/lock/del")[0] == 404, "the key of an expired delete-session survived"
    status, _, _ = agent.json("PUT", f"/v1/session/renew/{rel}")
    assert status == 404


@pytest.mark.parametrize("ending", ["fail", "update_critical", "check_deregister", "service_deregister",
                                    "reregister_replacing_checks", "check_reregistered_critical"])
def test_a_check_change_ends_its_sessions_and_their_locks_in_one_write(agent, ending):
    # As in Consul, the session ends and its locks are released in the same write as the check
    # change: once the API has answered, no read sees a lock held by a dead session. (They used to
    # be separate writes, after the answer.)
    sid = f"sr-{ending}"
    register(agent, {"Name": "sr", "ID": sid, "Check": {"TTL": "1h", "Status": "passing"}})
    held = ok(agent, "PUT", "/v1/session/create", {"ServiceChecks": [{"ID": f"service:{sid}"}], "LockDelay": "3s"})["ID"]
    deleting = ok(agent, "PUT", "/v1/session/create",
                  {"ServiceChecks": [{"ID": f"service:{sid}"}], "LockDelay": "0s", "Behavior": "delete"})["ID"]
    other = ok(agent, "PUT", "/v1/session/create", {"LockDelay": "0s"})["ID"]
    assert ok(agent, "PUT", f"/v1/kv/srk/{ending}?acquire={held}", "v") is True
    assert ok(agent, "PUT", f"/v1/kv/srd/{ending}?acquire={deleting}", "v") is True
    if ending == "fail":
        ok(agent, "PUT", f"/v1/agent/check/fail/service:{sid}")
    elif ending == "update_critical":
        ok(agent, "PUT", f"/v1/agent/check/update/service:{sid}", {"Status": "critical", "Output": "down"})
    elif ending == "check_deregister":
        ok(agent, "PUT", f"/v1/agent/check/deregister/service:{sid}")
    elif ending == "service_deregister":
        ok(agent, "PUT", f"/v1/agent/service/deregister/{sid}")
    elif ending == "check_reregistered_critical":
        ok(agent, "PUT", "/v1/agent/check/register",
           {"CheckID": f"service:{sid}", "Name": "again", "ServiceID": sid, "TTL": "2h", "Status": "critical"})
    else:
        ok(agent, "PUT", "/v1/agent/service/register?replace-existing-checks=true", {"Name": "sr", "ID": sid})
    # Read at once, after the answer.
    entry = ok(agent, "GET", f"/v1/kv/srk/{ending}")[0]
    assert not entry.get("Session"), entry
    assert agent.request("GET", f"/v1/kv/srd/{ending}")[0] == 404, "the delete-session's key survived"
    ids = session_ids(agent)
    assert held not in ids and deleting not in ids and other in ids
    # The released lock is in the ended session's lock-delay.
    assert ok(agent, "PUT", f"/v1/kv/srk/{ending}?acquire={other}", "w") is False


def test_lock_delay_after_destroy(agent):
    holder = ok(agent, "PUT", "/v1/session/create", {})["ID"]  # default LockDelay: 15s, as Consul
    other = ok(agent, "PUT", "/v1/session/create", {})["ID"]
    assert ok(agent, "PUT", f"/v1/kv/leader?acquire={holder}", "a") is True
    assert ok(agent, "PUT", f"/v1/session/destroy/{holder}") is True
    assert not ok(agent, "GET", "/v1/kv/leader")[0].get("Session")
    # The lock is free but in its lock-delay: nobody may take it yet.
    assert ok(agent, "PUT", f"/v1/kv/leader?acquire={other}", "b") is False

    quick = ok(agent, "PUT", "/v1/session/create", {"LockDelay": "0s"})["ID"]
    assert ok(agent, "PUT", f"/v1/kv/fast?acquire={quick}", "a") is True
    assert ok(agent, "PUT", f"/v1/session/destroy/{quick}") is True
    assert ok(agent, "PUT", f"/v1/kv/fast?acquire={other}", "b") is True


# --- HTTP details clients depend on ---------------------------------------------------------------

def test_expect_100_continue(agent):
    """Clients that send `Expect: 100-continue` (curl for large uploads, .NET, many proxies) wait for
    a 100 Continue before sending the body; the agent must send it (or a final answer) at once."""
    body = b"v" * 2048
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    try:
        s.sendall(b"PUT /v1/kv/expect HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % len(body))
        s.settimeout(0.5)
        try:
            first = s.recv(4096)
        except socket.timeout:
            first = b""
        assert first.startswith(b"HTTP/1.1 100"), f"no 100 Continue within 0.5s (got {first!r})"
        s.settimeout(5)
        s.sendall(body)
        rest = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        final = (first + rest).split(b"\r\n\r\n", 1)[1]  # after the 100 Continue
        assert final.startswith(b"HTTP/1.1 200"), final
    finally:
        s.close()
    assert agent.request("GET", "/v1/kv/expect?raw")[2] == body


def test_keep_alive_and_pipelining(agent):
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    try:
        s.sendall(b"PUT /v1/kv/p1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
                  b"GET /v1/kv/p1?raw HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    responses = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        responses.append((head.split(b"\r\n")[0], data[:length]))
        data = data[length:]
    assert [r[0] for r in responses] == [b"HTTP/1.1 200 OK"] * 3, responses
    assert [r[1] for r in responses][:2] == [b"true", b"a"]
    assert json.loads(responses[2][1])


def test_check_moving_to_another_service_wakes_the_old_ones_watchers(agent):
    register(agent, {"Name": "old", "ID": "old-1"})
    register(agent, {"Name": "new", "ID": "new-1"})
    ok(agent, "PUT", "/v1/agent/check/register", {"CheckID": "mover", "Name": "m", "TTL": "30s", "ServiceID": "old-1"})
    index, checks = get_indexed(agent, "/v1/health/checks/old")
    assert [c["CheckID"] for c in checks] == ["mover"]
    b = Blocked(agent, f"/v1/health/checks/old?index={index}&wait=10s")
    wait_parked(agent, 1)
    ok(agent, "PUT", "/v1/agent/check/register", {"CheckID": "mover", "Name": "m", "TTL": "30s", "ServiceID": "new-1"})
    status, headers, body = b.join(5)
    assert status == 200 and b.elapsed < 2, f"old service's watcher waited {b.elapsed:.2f}s"
    assert json.loads(body) == []


def test_unknown_methods_share_one_metric_series(agent):
    for i in range(3):
        agent.request(f"M{i}XYZ", "/v1/agent/services")
    assert metric(agent, "flotilla_api_requests_total", {"method": "OTHER", "code": "405"}) == 3
    status, _, body = agent.request("GET", "/metrics")
    assert b"M0XYZ" not in body


def test_watchers_with_different_indexes_share_one_recomputation(agent):
    register(agent, {"Name": "shared", "ID": "shared-1"})
    index, _ = get_indexed(agent, "/v1/health/service/shared")
    register(agent, {"Name": "other", "ID": "other-1"})  # moves the global index, not this result's
    waiters = [Blocked(agent, f"/v1/health/service/shared?index={index}&wait={w}s") for w in (20, 21, 22)]
    waiters.append(Blocked(agent, f"/v1/health/service/shared?wait=23s&index={index}&stale"))
    wait_parked(agent, 4)
    before = metric(agent, "flotilla_blocking_queries_recomputed_total") or 0
    register(agent, {"Name": "shared", "ID": "shared-2"})
    for b in waiters:
        status, _, body = b.join(5)
        assert status == 200 and len(json.loads(body)) == 2
    assert metric(agent, "flotilla_blocking_queries_recomputed_total") - before == 1
