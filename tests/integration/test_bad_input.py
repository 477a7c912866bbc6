"""Malformed input: every bad request gets a 4xx with a JSON body {"error": ..., "field": ...}
(field where one applies) and changes nothing: the registry, the KV store and every index stay
exactly as they were. The agent keeps serving afterwards, also after garbage on the socket.
"""
import http.client
import json
import socket
import tempfile
import time

import pytest
import requests

from conftest import Agent


@pytest.fixture(scope="module")
def agent():
    """One agent for the module: bad requests must not change it, which each test checks."""
    with tempfile.TemporaryDirectory(prefix="flotilla-test-") as d:
        a = Agent(d).start()
        try:
            populate(a)
            yield a
        finally:
            rc = a.stop()
        assert rc == 0, f"agent exited with {rc} on SIGTERM:\n{a.read_log()}"


def populate(a):
    def put(path, body):
        status, _, data = a.request("PUT", path, body)
        assert status == 200, f"{path}: {status} {data!r}"
        return data

    put("/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["t"],
                                       "Check": {"TTL": "1h", "Status": "passing"}})
    put("/v1/agent/check/register", {"Name": "ttl", "CheckID": "ttl-1", "TTL": "1h", "Status": "passing"})
    put("/v1/kv/cfg/a", "A")
    put("/v1/kv/cfg/b", "B")
    sid = json.loads(put("/v1/session/create", {"Name": "s"}))["ID"]
    put(f"/v1/kv/cfg/lock?acquire={sid}", "L")


def snapshot(a):
    """Everything a bad request could change, with the indexes clients see."""
    snap = {}
    for path in ("/v1/agent/services", "/v1/agent/checks", "/v1/catalog/services", "/v1/health/service/web",
                 "/v1/kv/?recurse", "/v1/session/list", "/v1/catalog/nodes"):
        status, headers, body = a.request("GET", path)
        assert status == 200, f"{path}: {status}"
        snap[path] = (headers.get("X-Consul-Index"), json.loads(body))
    snap["revision"] = json.loads(a.request("GET", "/v1/agent/self")[2])["Flotilla"]["Index"]
    return snap


@pytest.fixture
def unchanged(agent):
    """Asserts, after the test, that the agent's state and indexes did not move."""
    before = snapshot(agent)
    yield
    after = snapshot(agent)
    for key in before:
        assert after[key] == before[key], f"{key} changed after a rejected request:\n{before[key]}\n->\n{after[key]}"


def expect_error(agent, method, path, body=None, status=400, field=None, headers=None):
    code, resp_headers, data = agent.request(method, path, body, headers=headers)
    assert code == status, f"{method} {path} {body!r:.200} -> {code} {data!r:.300}, expected {status}"
    assert resp_headers.get("Content-Type", "").startswith("application/json"), resp_headers
    try:
        j = json.loads(data)
    except ValueError:
        pytest.fail(f"{method} {path}: error body is not JSON: {data!r:.300}")
    assert isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"], j
    if field is not None:
        assert j.get("field") == field, f"{method} {path}: field {j.get('field')!r}, expected {field!r} ({j})"
    return j, resp_headers


def still_serving(agent):
    status, _, body = agent.request("GET", "/v1/agent/services")
    assert status == 200 and "web-1" in json.loads(body)


# --- service registration ------------------------------------------------------------------------

REGISTER = "/v1/agent/service/register"

SERVICE_CASES = [
    # (id, body, field)
    ("truncated-json", b'{"Name": "x",', None),
    ("trailing-garbage", b'{"Name": "x"} trailing', None),
    ("empty-body", b"", None),
    ("not-object-list", b'["Name", "x"]', None),
    ("not-object-string", b'"x"', None),
    ("not-object-null", b"null", None),
    ("deeply-nested", b"[" * 100000 + b"]" * 100000, None),
    ("deeply-nested-meta", b'{"Name": "x", "Meta": {"k": ' + b"[" * 100000 + b"]" * 100000 + b"}}", "Meta"),
    ("number-overflow", b'{"Name": "x", "Port": 1e999}', None),
    ("port-string", {"Name": "x", "Port": "80"}, "Port"),
    ("port-huge", b'{"Name": "x", "Port": 18446744073709551616}', "Port"),
    ("port-fraction", {"Name": "x", "Port": 80.5}, "Port"),
    ("port-negative", {"Name": "x", "Port": -1}, "Port"),
    ("port-too-big", {"Name": "x", "Port": 65536}, "Port"),
    ("tags-string", {"Name": "x", "Tags": "a,b"}, "Tags"),
    ("tags-numbers", {"Name": "x", "Tags": ["a", 1]}, "Tags"),
    ("meta-number-value", {"Name": "x", "Meta": {"k": 1}}, "Meta"),
    ("meta-null-value", {"Name": "x", "Meta": {"k": None}}, "Meta"),
    ("meta-list", {"Name": "x", "Meta": ["k"]}, "Meta"),
    ("meta-empty-key", {"Name": "x", "Meta": {"": "v"}}, "Meta"),
    ("address-number", {"Name": "x", "Address": 10}, "Address"),
    ("eto-string", {"Name": "x", "EnableTagOverride": "yes"}, "EnableTagOverride"),
    ("weights-string", {"Name": "x", "Weights": "heavy"}, "Weights"),
    ("weights-zero", {"Name": "x", "Weights": {"Passing": 0}}, "Weights.Passing"),
    ("missing-name", {"Port": 80}, "Name"),
    ("empty-name", {"Name": "", "Port": 80}, "Name"),
    ("name-number", {"Name": 7}, "Name"),
    ("name-too-long", {"Name": "n" * 513}, "Name"),
    ("name-nul", {"Name": "a\u0000b"}, "Name"),
    ("id-slash", {"Name": "x", "ID": "a/b"}, "ID"),
    ("id-number", {"Name": "x", "ID": 5}, "ID"),
    ("check-args", {"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}, "Check.Args"),
    ("check-script-args", {"Name": "x", "Check": {"ScriptArgs": ["/bin/true"], "Interval": "10s"}},
     "Check.ScriptArgs"),
    ("check-grpc", {"Name": "x", "Check": {"GRPC": "127.0.0.1:1", "Interval": "10s"}}, "Check.GRPC"),
    ("check-docker", {"Name": "x", "Check": {"DockerContainerID": "abc", "Shell": "/bin/sh", "Interval": "10s"}},
     "Check.DockerContainerID"),
    ("check-no-kind", {"Name": "x", "Check": {"Interval": "10s"}}, "Check"),
    ("check-script-legacy", {"Name": "x", "Check": {"Script": "/bin/true", "Interval": "10s"}}, None),
    ("check-two-kinds", {"Name": "x", "Check": {"TTL": "10s", "TCP": "127.0.0.1:1", "Interval": "1s"}}, "Check.HTTP"),
    ("check-interval-word", {"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "soon"}},
     "Check.Interval"),
    ("check-interval-missing", {"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}, "Check.Interval"),
    ("check-interval-bool", {"Name": "x", "Check": {"TCP": "127.0.0.1:1", "Interval": True}}, "Check.Interval"),
    ("check-ttl-word", {"Name": "x", "Check": {"TTL": "forever"}}, "Check.TTL"),
    ("check-timeout-word", {"Name": "x", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s", "Timeout": "1 sec"}},
     "Check.Timeout"),
    ("check-http-scheme", {"Name": "x", "Check": {"HTTP": "ftp://127.0.0.1/", "Interval": "1s"}}, "Check.HTTP"),
    ("check-tcp-no-port", {"Name": "x", "Check": {"TCP": "localhost", "Interval": "1s"}}, "Check.TCP"),
    ("check-status-bogus", {"Name": "x", "Check": {"TTL": "10s", "Status": "green"}}, "Check.Status"),
    ("check-header-string", {"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "1s",
                                                    "Header": {"X-A": "b"}}}, "Check.Header"),
    ("check-dcsa-short", {"Name": "x", "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "10ms"}},
     "Check.DeregisterCriticalServiceAfter"),
    ("check-not-object", {"Name": "x", "Check": "ttl"}, "Check"),
    ("check-empty-list", {"Name": "x", "Check": []}, "Check"),  # was taken as "no check"
    ("check-list", {"Name": "x", "Check": [{"TTL": "10s"}]}, "Check"),
    ("check-ttl-zero", {"Name": "x", "Check": {"TTL": "0s"}}, "Check.TTL"),
    ("check-ttl-empty", {"Name": "x", "Check": {"TTL": ""}}, "Check.TTL"),
    ("check-tcp-port-too-big", {"Name": "x", "Check": {"TCP": "127.0.0.1:99999", "Interval": "1s"}}, "Check.TCP"),
    ("check-tcp-port-zero", {"Name": "x", "Check": {"TCP": "127.0.0.1:0", "Interval": "1s"}}, "Check.TCP"),
    ("checks-entry-not-object", {"Name": "x", "Checks": [5]}, "Checks[0]"),
    ("checks-not-list", {"Name": "x", "Checks": {"TTL": "10s"}}, "Checks"),
    ("checks-second-bad", {"Name": "x", "Checks": [{"TTL": "10s"}, {"Interval": "1s"}]}, "Checks[1]"),
    ("checks-duplicate-id", {"Name": "x", "Checks": [{"CheckID": "c", "TTL": "10s"}, {"CheckID": "c", "TTL": "5s"}]},
     "Checks"),
]


@pytest.mark.parametrize("body,field", [c[1:] for c in SERVICE_CASES], ids=[c[0] for c in SERVICE_CASES])
def test_bad_service_registration(agent, unchanged, body, field):
    expect_error(agent, "PUT", REGISTER, body, field=field)


def test_bad_reregistration_keeps_the_old_one(agent, unchanged):
    expect_error(agent, "PUT", REGISTER, {"Name": "web", "ID": "web-1", "Port": "81"}, field="Port")
    expect_error(agent, "PUT", REGISTER, {"Name": "web", "ID": "web-1", "Port": 81, "Check": {"Interval": "1s"}},
                 field="Check")
    expect_error(agent, "PUT", REGISTER + "?replace-existing-checks",
                 {"Name": "web", "ID": "web-1", "Checks": [{"TTL": "1h"}, {"TTL": "soon"}]}, field="Checks[1].TTL")


def test_invalid_utf8_in_body(agent, unchanged):
    expect_error(agent, "PUT", REGISTER, b'{"Name": "caf\xc3", "Port": 80}')
    expect_error(agent, "PUT", REGISTER, b'{"Name": "web\xff\xfe"}')
    expect_error(agent, "PUT", REGISTER, b'{"Name": "x", "Tags": ["\xed\xa0\x80"]}')  # encoded surrogate
    expect_error(agent, "PUT", "/v1/agent/check/register", b'{"Name": "\xc0\xaf", "TTL": "10s"}')
    expect_error(agent, "PUT", "/v1/session/create", b'{"Name": "\xff"}')
    expect_error(agent, "PUT", "/v1/agent/check/update/ttl-1", b'{"Status": "passing", "Output": "\xfe"}')


def test_oversized_bodies(agent, unchanged):
    # requests (python-consul's transport) reads the early 413 as it sends; http.client sends the
    # whole body first, so it gets the 413 only because the agent reads and drops the rest of the
    # body after answering (a lingering close) instead of resetting the connection.
    url = agent.url
    host, port = url.split("//")[1].rsplit(":", 1)
    for body in (b"x" * (1024 * 1024 + 1), b"x" * (16 * 1024 * 1024)):
        c = http.client.HTTPConnection(host, int(port), timeout=20)
        try:
            c.request("PUT", "/v1/kv/cfg/a", body=body)
            r = c.getresponse()
            assert r.status == 413, (len(body), r.status)
            assert json.loads(r.read())["error"]
        finally:
            c.close()
    cases = [
        (REGISTER, b'{"Name": "big", "Meta": {"k": "' + b"x" * (1024 * 1024 + 10) + b'"}}', None),
        ("/v1/kv/cfg/a", b"x" * (1024 * 1024 + 1), None),
        ("/v1/kv/cfg/a", b"x" * (3 * 1024 * 1024), None),
        # Over the KV value limit (512 KiB) but under the body limit (1 MiB).
        ("/v1/kv/cfg/a", b"x" * (512 * 1024 + 1), "value"),
        ("/v1/kv/cfg/new", b"x" * (600 * 1024), "value"),
    ]
    for path, body, field in cases:
        r = requests.put(url + path, data=body, timeout=10)
        assert r.status_code == 413, f"PUT {path} with {len(body)} bytes -> {r.status_code} {r.text[:200]}"
        assert r.headers["Content-Type"].startswith("application/json")
        j = r.json()
        assert j["error"]
        if field:
            assert j.get("field") == field, j
    still_serving(agent)


# --- checks --------------------------------------------------------------------------------------

CHECK_CASES = [
    ("no-kind", {"Name": "c"}, "HTTP"),
    ("missing-name", {"TTL": "10s"}, "Name"),
    ("empty-name", {"Name": "", "TTL": "10s"}, "Name"),
    ("ttl-word", {"Name": "c", "TTL": "soon"}, "TTL"),
    ("ttl-negative", {"Name": "c", "TTL": "-5s"}, None),
    ("interval-word", {"Name": "c", "TCP": "127.0.0.1:1", "Interval": "soon"}, "Interval"),
    ("interval-too-short", {"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "1ms"}, "Interval"),
    ("args", {"Name": "c", "Args": ["/bin/true"], "Interval": "10s"}, "Args"),
    ("h2ping", {"Name": "c", "H2PING": "127.0.0.1:1", "Interval": "10s"}, "H2PING"),
    ("alias", {"Name": "c", "AliasService": "web-1"}, "AliasService"),
    ("unknown-service", {"Name": "c", "TTL": "10s", "ServiceID": "nope"}, "ServiceID"),
    ("reserved-id", {"Name": "c", "CheckID": "serfHealth", "TTL": "10s"}, "CheckID"),
    ("reserved-maint-id", {"Name": "c", "CheckID": "_service_maintenance:web-1", "TTL": "10s"}, "CheckID"),
    ("status-bogus", {"Name": "c", "TTL": "10s", "Status": "ok"}, "Status"),
    ("not-object", [{"Name": "c", "TTL": "10s"}], None),
    # A header the probe could not even send used to kill the agent (and again at every restart).
    ("header-huge", {"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "1s",
                     "Header": {"X-Big": ["a" * 70000]}}, "Header"),
    ("header-crlf", {"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "1s",
                     "Header": {"X-Evil": ["a\r\nHost: other"]}}, "Header"),
    ("header-bad-name", {"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "1s",
                         "Header": {"Bad Name": ["x"]}}, "Header"),
    ("method-bogus", {"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "1s", "Method": "GET /x"}, "Method"),
]


@pytest.mark.parametrize("body,field", [c[1:] for c in CHECK_CASES], ids=[c[0] for c in CHECK_CASES])
def test_bad_check_registration(agent, unchanged, body, field):
    expect_error(agent, "PUT", "/v1/agent/check/register", body, field=field)


def test_check_updates_on_unknown_or_non_ttl_checks(agent, unchanged):
    for verb in ("pass", "warn", "fail"):
        expect_error(agent, "PUT", f"/v1/agent/check/{verb}/no-such-check", status=404)
        # serfHealth is the agent's own check, not a TTL check.
        expect_error(agent, "PUT", f"/v1/agent/check/{verb}/serfHealth", status=400)
        expect_error(agent, "PUT", f"/v1/agent/check/{verb}/", status=400)
    expect_error(agent, "PUT", "/v1/agent/check/update/no-such-check", {"Status": "passing"}, status=404)
    expect_error(agent, "PUT", "/v1/agent/check/update/serfHealth", {"Status": "passing"}, status=400)
    expect_error(agent, "PUT", "/v1/agent/check/update/ttl-1", {"Status": "green"}, field="Status")
    expect_error(agent, "PUT", "/v1/agent/check/update/ttl-1", {}, field="Status")
    expect_error(agent, "PUT", "/v1/agent/check/update/ttl-1", {"Status": "passing", "Output": 5}, field="Output")
    expect_error(agent, "PUT", "/v1/agent/check/update/ttl-1", b"passing")
    expect_error(agent, "PUT", "/v1/agent/check/update/ttl-1", b"[]")
    # Text in the query is held to the rules of the same text in a JSON body.
    expect_error(agent, "PUT", "/v1/agent/check/pass/ttl-1?note=a%00b", field="note")


def test_bad_maintenance_requests(agent, unchanged):
    expect_error(agent, "PUT", "/v1/agent/service/maintenance/web-1", field="enable")
    expect_error(agent, "PUT", "/v1/agent/service/maintenance/web-1?enable=maybe", field="enable")
    expect_error(agent, "PUT", "/v1/agent/service/maintenance/no-such?enable=true", status=404)
    expect_error(agent, "PUT", "/v1/agent/service/maintenance/?enable=true", status=400)
    expect_error(agent, "PUT", "/v1/agent/maintenance?enable=perhaps", field="enable")
    expect_error(agent, "PUT", "/v1/agent/maintenance", field="enable")
    expect_error(agent, "PUT", "/v1/agent/service/maintenance/web-1?enable=true&reason=r%00s", field="reason")
    expect_error(agent, "PUT", "/v1/agent/maintenance?enable=true&reason=r%00s", field="reason")


# --- KV ------------------------------------------------------------------------------------------

KV_CASES = [
    # (id, method, path, body, status, field)
    ("put-no-key", "PUT", "/v1/kv/", b"v", 400, "key"),
    ("put-cas-word", "PUT", "/v1/kv/cfg/a?cas=abc", b"v", 400, "cas"),
    ("put-cas-negative", "PUT", "/v1/kv/cfg/a?cas=-1", b"v", 400, "cas"),
    ("put-cas-empty", "PUT", "/v1/kv/cfg/a?cas=", b"v", 400, "cas"),
    ("put-cas-overflow", "PUT", "/v1/kv/cfg/a?cas=99999999999999999999999", b"v", 400, "cas"),
    ("put-flags-word", "PUT", "/v1/kv/cfg/a?flags=red", b"v", 400, "flags"),
    ("put-flags-negative", "PUT", "/v1/kv/cfg/new?flags=-3", b"v", 400, "flags"),
    ("put-key-ff", "PUT", "/v1/kv/cfg/%FF", b"v", 400, "key"),
    ("put-key-overlong-utf8", "PUT", "/v1/kv/cfg/%C0%AF", b"v", 400, "key"),
    ("put-key-nul", "PUT", "/v1/kv/cfg/a%00b", b"v", 400, "key"),
    ("put-key-too-long", "PUT", "/v1/kv/" + "k" * 2049, b"v", 400, "key"),
    ("put-acquire-empty", "PUT", "/v1/kv/cfg/a?acquire=", b"v", 400, "acquire"),
    ("put-acquire-unknown", "PUT", "/v1/kv/cfg/a?acquire=00000000-0000-0000-0000-000000000000", b"v", 400, "acquire"),
    ("put-release-unknown", "PUT", "/v1/kv/cfg/lock?release=00000000-0000-0000-0000-000000000000", b"v", 400,
     "release"),
    ("put-acquire-and-release", "PUT", "/v1/kv/cfg/a?acquire=x&release=y", b"v", 400, "acquire"),
    ("get-no-key", "GET", "/v1/kv/", None, 400, "key"),
    ("get-key-ff", "GET", "/v1/kv/cfg/%FF", None, 400, "key"),
    ("get-key-ff-recurse", "GET", "/v1/kv/cfg/%FF?recurse", None, 400, "key"),
    ("get-index-negative", "GET", "/v1/kv/cfg/a?index=-1", None, 400, "index"),
    ("get-index-word", "GET", "/v1/kv/cfg/a?index=abc", None, 400, "index"),
    ("get-index-float", "GET", "/v1/kv/cfg/a?index=1.5", None, 400, "index"),
    ("get-wait-forever", "GET", "/v1/kv/cfg/a?index=1&wait=forever", None, 400, "wait"),
    ("get-wait-negative", "GET", "/v1/kv/cfg/a?index=1&wait=-1s", None, 400, "wait"),
    ("get-recurse-word", "GET", "/v1/kv/cfg/?recurse=maybe", None, 400, "recurse"),
    ("get-raw-word", "GET", "/v1/kv/cfg/a?raw=please", None, 400, "raw"),
    ("delete-no-key", "DELETE", "/v1/kv/", None, 400, "key"),
    ("delete-cas-word", "DELETE", "/v1/kv/cfg/a?cas=x", None, 400, "cas"),
    ("delete-recurse-cas", "DELETE", "/v1/kv/cfg/?recurse&cas=1", None, 400, "cas"),
    ("delete-key-ff", "DELETE", "/v1/kv/cfg/%FF", None, 400, "key"),
    ("delete-recurse-word", "DELETE", "/v1/kv/cfg/?recurse=sure", None, 400, "recurse"),
]


@pytest.mark.parametrize("method,path,body,status,field", [c[1:] for c in KV_CASES], ids=[c[0] for c in KV_CASES])
def test_bad_kv_requests(agent, unchanged, method, path, body, status, field):
    expect_error(agent, method, path, body, status=status, field=field)


def test_bad_query_params_on_other_reads(agent, unchanged):
    for path in ("/v1/health/service/web", "/v1/catalog/services", "/v1/agent/services", "/v1/session/list"):
        expect_error(agent, "GET", path + "?index=-1", field="index")
        expect_error(agent, "GET", path + "?index=soon", field="index")
        expect_error(agent, "GET", path + "?index=1&wait=forever", field="wait")
    expect_error(agent, "GET", "/v1/health/service/web?passing=perhaps", field="passing")
    expect_error(agent, "GET", "/v1/health/state/bogus", field="state")
    expect_error(agent, "GET", "/v1/health/service/", field="service")
    expect_error(agent, "GET", "/v1/kv/cfg/a?index=%ZZ", status=400)
    expect_error(agent, "GET", "/v1/kv/cfg/a%", status=400)
    expect_error(agent, "PUT", REGISTER + "?replace-existing-checks=perhaps", {"Name": "web", "ID": "web-1"},
                 field="replace-existing-checks")


# --- sessions ------------------------------------------------------------------------------------

SESSION_CASES = [
    ("behavior", {"Behavior": "explode"}, "Behavior"),
    ("behavior-number", {"Behavior": 1}, "Behavior"),
    ("ttl-word", {"TTL": "soon"}, "TTL"),
    ("ttl-too-short", {"TTL": "100ms"}, "TTL"),
    ("ttl-too-long", {"TTL": "86401s"}, "TTL"),
    ("ttl-list", {"TTL": ["10s"]}, "TTL"),
    ("lock-delay-too-long", {"LockDelay": "2m"}, "LockDelay"),
    ("name-number", {"Name": 5}, "Name"),
    ("other-node", {"Node": "elsewhere"}, "Node"),
    ("unknown-node-check", {"NodeChecks": ["nope"]}, "NodeChecks"),
    ("checks-not-list", {"Checks": "serfHealth"}, "Checks"),
    ("service-checks-bad", {"ServiceChecks": ["service:web-1"]}, "ServiceChecks"),
    ("not-object", b"[]", None),
    ("malformed", b"{TTL: 10s}", None),
]


@pytest.mark.parametrize("body,field", [c[1:] for c in SESSION_CASES], ids=[c[0] for c in SESSION_CASES])
def test_bad_session_create(agent, unchanged, body, field):
    expect_error(agent, "PUT", "/v1/session/create", body, field=field)


def test_bad_session_ids(agent, unchanged):
    expect_error(agent, "PUT", "/v1/session/renew/00000000-0000-0000-0000-000000000000", status=404, field="session")
    expect_error(agent, "PUT", "/v1/session/renew/", status=400, field="session")
    expect_error(agent, "PUT", "/v1/session/destroy/", status=400, field="session")
    expect_error(agent, "GET", "/v1/session/info/", status=400, field="session")


# --- routing -------------------------------------------------------------------------------------

def test_unknown_endpoints_are_json_404(agent, unchanged):
    for method, path in [("GET", "/v1/nope"), ("GET", "/v2/agent/services"), ("GET", "/"), ("PUT", "/v1/agent/nope"),
                         ("GET", "/v1/agent/servicesX"), ("DELETE", "/v1/catalog"), ("GET", "/v1/kv")]:
        j, _ = expect_error(agent, method, path, status=404)
        assert path in j["error"] or "endpoint" in j["error"]


WRONG_METHODS = [
    ("DELETE", "/v1/agent/services", "GET"),
    ("PUT", "/v1/agent/checks", "GET"),
    ("GET", "/v1/agent/check/register", "PUT"),
    ("DELETE", "/v1/agent/service/register", "PUT"),
    ("GET", "/v1/session/create", "PUT"),
    ("DELETE", "/v1/health/service/web", "GET"),
    ("PATCH", "/v1/kv/cfg/a", "GET, PUT, DELETE"),
    ("PUT", "/v1/catalog/services", "GET"),
    ("DELETE", "/metrics", "GET"),
    ("PUT", "/metrics", "GET"),
]


@pytest.mark.parametrize("method,path,allowed", WRONG_METHODS, ids=[f"{m} {p}" for m, p, _ in WRONG_METHODS])
def test_wrong_method_is_405_with_allow(agent, unchanged, method, path, allowed):
    _, headers = expect_error(agent, method, path, b"{}" if method in ("PUT", "PATCH") else None, status=405)
    assert "Allow" in headers, f"405 for {method} {path} without an Allow header: {headers}"
    got = {m.strip() for m in headers["Allow"].split(",")}
    assert set(a.strip() for a in allowed.split(",")) <= got, headers["Allow"]
    assert method not in got


# --- the raw socket ------------------------------------------------------------------------------

def raw_exchange(agent, payload, timeout=5):
    """Sends bytes, returns everything the agent answers until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=timeout)
    try:
        s.sendall(payload)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        s.close()


def parse_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, headers, body


GARBAGE = [
    ("garbage-line", b"GARBAGE\r\n\r\n"),
    ("binary", bytes(range(1, 40)) + b"\r\n\r\n"),
    ("bad-version", b"GET /v1/agent/services HTTP/9.9\r\n\r\n"),
    ("no-version", b"GET /v1/agent/services\r\n\r\n"),
    ("bad-header", b"GET /v1/agent/services HTTP/1.1\r\nHost x\r\n\r\n"),
    ("bad-content-length", b"PUT /v1/kv/cfg/a HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\nv"),
    ("two-content-lengths", b"PUT /v1/kv/cfg/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nvv"),
    ("bad-chunked", b"PUT /v1/kv/cfg/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nv\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("payload", [g[1] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_on_the_socket(agent, unchanged, payload):
    raw = raw_exchange(agent, payload)
    assert raw.startswith(b"HTTP/1."), f"no HTTP answer to {payload!r}: {raw!r:.200}"
    status, headers, body = parse_response(raw)
    assert status == 400, raw
    assert "error" in json.loads(body)
    still_serving(agent)


def test_bad_percent_encoding_in_target(agent, unchanged):
    raw = raw_exchange(agent, b"GET /v1/kv/cfg/%ZZ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 400
    assert "error" in json.loads(body)
    still_serving(agent)


def test_header_size_limit(agent, unchanged):
    # The agent's limit for request headers is 64 KiB (ServerLimits::header_bytes): a request
    # with 16 KiB of headers is served, one with 70 KiB is refused with 431.
    raw = raw_exchange(agent, b"GET /v1/agent/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
                       + b"a" * (16 * 1024) + b"\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 200, f"16 KiB of headers refused: {raw!r:.300}"
    assert "web-1" in json.loads(body)

    raw = raw_exchange(agent, b"GET /v1/agent/services HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024)
                       + b"\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 431, f"70 KiB of headers: {raw!r:.300}"
    assert "error" in json.loads(body)
    still_serving(agent)


def test_half_request_then_close(agent, unchanged):
    for payload in (b"PUT /v1/kv/cfg/a HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly-part",
                    b"GET /v1/agent/serv", b"\r\n"):
        s = socket.create_connection(("127.0.0.1", agent.port))
        s.sendall(payload)
        s.close()
    still_serving(agent)
    assert agent.request("GET", "/v1/kv/cfg/a?raw")[2] == b"A"


def test_huge_numbers_in_query_params(agent, unchanged):
    # A wait beyond any integer is the 10-minute cap, not a 500; answered at once without an index.
    status, headers, _ = agent.request("GET", "/v1/kv/cfg/a?wait=99999999999999999999")
    assert status == 200 and "X-Consul-Index" in headers
    status, _, _ = agent.request("GET", "/v1/catalog/services?wait=18446744074")
    assert status == 200


def test_head_then_bad_target_keeps_framing(agent, unchanged):
    # After a HEAD (answered without a body), an error answer on the same connection must carry
    # its body, or the client would read the next answer as that body.
    raw = raw_exchange(agent, b"HEAD /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /v1/kv/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    status, headers, body = parse_response(rest)
    assert status == 400
    assert len(body) == int(headers["content-length"]) and "error" in json.loads(body)
