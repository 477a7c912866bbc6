"""The real python-consul library (0.7.1), unchanged, against a flotilla agent.

Whatever a Consul user does with that client must work: registering services with HTTP, TCP and
TTL checks, discovering healthy instances (also with blocking queries), KV with CAS, sessions and
locks, deregistering.
"""
import http.server
import threading
import time

import consul
import pytest

from conftest import free_port, wait_for


# --- helpers -----------------------------------------------------------------------------------

class HealthEndpoint:
    """A tiny real HTTP server on a free loopback port; `status` is what GET /health answers."""

    def __init__(self):
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                body = b"ok" if outer.status < 400 else b"down"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def health_endpoint():
    h = HealthEndpoint()
    yield h
    h.close()


@pytest.fixture
def c(agent, monkeypatch):
    # python-consul reads these at construction; a developer's environment must not redirect it.
    for var in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_HTTP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return consul.Consul(host="127.0.0.1", port=agent.port)


def closed_port():
    """A loopback port nothing listens on."""
    return free_port()



def check_status(c, check_id):
    checks = c.agent.checks()
    return checks[check_id]["Status"] if check_id in checks else None


def passing_ids(c, name):
    _, entries = c.health.service(name, passing=True)
    return sorted(e["Service"]["ID"] for e in entries)


# --- services with HTTP and TCP checks, discovery ------------------------------------------------

def block_then_change(query, change):
    """Starts a blocking query, checks it is still waiting, makes a change; returns (result, seconds)."""
    result = {}

    def watch():
        t = time.monotonic()
        result["value"] = query()
        result["elapsed"] = time.monotonic() - t

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), "the query answered before anything changed"
    change()
    t.join(8)
    assert not t.is_alive(), "the query did not answer after the change"
    return result["value"], result["elapsed"]


def test_http_check_passing_service_is_discovered(c, health_endpoint):
    assert c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=health_endpoint.port,
                                    tags=["v1", "primary"], check=consul.Check.http(health_endpoint.url, "200ms"))
    wait_for(lambda: passing_ids(c, "web") == ["web-1"], what="web-1 to pass its HTTP check")
    assert health_endpoint.hits >= 1, "the agent never probed the HTTP check's URL"

    index, entries = c.health.service("web", passing=True)
    assert int(index) > 0
    (entry,) = entries
    assert entry["Service"]["ID"] == "web-1"
    assert entry["Service"]["Service"] == "web"
    assert entry["Service"]["Port"] == health_endpoint.port
    assert entry["Service"]["Address"] == "127.0.0.1"
    assert entry["Service"]["Tags"] == ["v1", "primary"]
    assert entry["Node"]["Node"] == "test-node"
    checks = {ch["CheckID"]: ch for ch in entry["Checks"]}
    assert checks["service:web-1"]["Status"] == "passing"
    assert checks["service:web-1"]["ServiceID"] == "web-1"
    assert checks["service:web-1"]["ServiceName"] == "web"

    # Tag filter.
    _, tagged = c.health.service("web", passing=True, tag="primary")
    assert [e["Service"]["ID"] for e in tagged] == ["web-1"]
    _, other_tag = c.health.service("web", passing=True, tag="canary")
    assert other_tag == []


def test_failing_http_check_removes_instance_and_wakes_blocking_query(c, health_endpoint):
    c.agent.service.register("api", service_id="api-1", port=health_endpoint.port,
                             check=consul.Check.http(health_endpoint.url, "100ms"))
    wait_for(lambda: passing_ids(c, "api") == ["api-1"], what="api-1 to pass")
    index, entries = c.health.service("api", passing=True)
    assert len(entries) == 1

    result = {}

    def watch():
        t0 = time.monotonic()
        result["value"] = c.health.service("api", passing=True, index=index, wait="10s")
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), f"blocking query returned although nothing changed: {result}"
    health_endpoint.status = 503
    t.join(12)
    assert not t.is_alive()
    new_index, new_entries = result["value"]
    assert result["elapsed"] < 5, f"blocking query took {result['elapsed']:.1f}s; it should return when the check fails"
    assert int(new_index) > int(index)
    assert new_entries == [], "an instance whose HTTP check answers 503 must not be returned with passing=True"
    assert check_status(c, "service:api-1") == "critical"

    # Without passing=True the instance is still listed, with its failing check.
    _, all_entries = c.health.service("api")
    assert [e["Service"]["ID"] for e in all_entries] == ["api-1"]

    # The endpoint recovers: the instance comes back.
    health_endpoint.status = 200
    wait_for(lambda: passing_ids(c, "api") == ["api-1"], what="api-1 to pass again")


def test_tcp_checks(c, health_endpoint):
    dead = closed_port()
    c.agent.service.register("db", service_id="db-up", port=health_endpoint.port,
                             check=consul.Check.tcp("127.0.0.1", health_endpoint.port, "200ms"))
    c.agent.service.register("db", service_id="db-down", port=dead,
                             check=consul.Check.tcp("127.0.0.1", dead, "200ms", timeout="1s"))
    wait_for(lambda: check_status(c, "service:db-up") == "passing", what="TCP check on a listening port to pass")
    wait_for(lambda: c.agent.checks()["service:db-down"]["Output"] != "",
             what="the TCP check on a closed port to run")
    assert check_status(c, "service:db-down") == "critical"
    assert passing_ids(c, "db") == ["db-up"]

    _, critical = c.health.state("critical")
    critical_ids = {ch["CheckID"] for ch in critical}
    assert "service:db-down" in critical_ids
    assert "service:db-up" not in critical_ids
    assert all(ch["Status"] == "critical" for ch in critical)

    checks = c.agent.checks()
    assert checks["service:db-up"]["ServiceID"] == "db-up"
    assert checks["service:db-up"]["Type"] == "tcp"


def test_http_check_429_is_warning(c, health_endpoint):
    # As in Consul: 2xx passing, 429 warning, anything else critical.
    health_endpoint.status = 429
    c.agent.service.register("limited", port=health_endpoint.port, check=consul.Check.http(health_endpoint.url, "100ms"))
    wait_for(lambda: check_status(c, "service:limited") == "warning", what="a 429 to make the check warning")
    assert passing_ids(c, "limited") == []
    _, warning = c.health.state("warning")
    assert [ch["CheckID"] for ch in warning] == ["service:limited"]
    health_endpoint.status = 204
    wait_for(lambda: check_status(c, "service:limited") == "passing", what="a 204 to make the check pass")


def test_critical_service_is_deregistered_after_deadline(c, health_endpoint):
    dead = closed_port()
    c.agent.service.register("flaky", port=dead,
                             check=consul.Check.tcp("127.0.0.1", dead, "100ms", deregister="1s"))
    c.agent.service.register("steady", port=health_endpoint.port,
                             check=consul.Check.tcp("127.0.0.1", health_endpoint.port, "100ms", deregister="1s"))
    assert "flaky" in c.agent.services()
    wait_for(lambda: "flaky" not in c.agent.services(), timeout=6,
             what="a service critical for longer than DeregisterCriticalServiceAfter to be deregistered")
    assert "service:flaky" not in c.agent.checks()
    _, nodes = c.catalog.service("flaky")
    assert nodes == []
    assert "steady" in c.agent.services()
    assert check_status(c, "service:steady") == "passing"


# --- TTL checks ----------------------------------------------------------------------------------

def test_ttl_check_starts_critical(c):
    assert c.agent.service.register("worker", port=9000, check=consul.Check.ttl("10s"))
    assert check_status(c, "service:worker") == "critical"
    assert passing_ids(c, "worker") == []


def test_ttl_check_pass_warn_fail(c):
    """python-consul 0.7.1 sends these as GET /v1/agent/check/pass|warn|fail/<id>."""
    assert c.agent.service.register("worker", port=9000, check=consul.Check.ttl("10s"))
    assert c.agent.check.ttl_pass("service:worker", "all good") is True, \
        "ttl_pass (GET /v1/agent/check/pass/service:worker?note=all+good) was refused"
    assert check_status(c, "service:worker") == "passing"
    assert c.agent.checks()["service:worker"]["Output"] == "all good"
    assert passing_ids(c, "worker") == ["worker"]

    assert c.agent.check.ttl_warn("service:worker") is True
    assert check_status(c, "service:worker") == "warning"
    assert c.agent.check.ttl_fail("service:worker", "broken") is True
    assert check_status(c, "service:worker") == "critical"
    assert passing_ids(c, "worker") == []


def test_standalone_ttl_check_registered_through_client(c):
    assert c.agent.service.register("batch", port=1)
    assert c.agent.check.register("batch alive", check=consul.Check.ttl("30s"), check_id="batch-ttl",
                                  service_id="batch", notes="heartbeat")
    checks = c.agent.checks()
    assert checks["batch-ttl"]["ServiceID"] == "batch"
    assert checks["batch-ttl"]["Name"] == "batch alive"
    assert checks["batch-ttl"]["Notes"] == "heartbeat"
    _, svc_checks = c.health.checks("batch")
    assert [ch["CheckID"] for ch in svc_checks] == ["batch-ttl"]


# --- blocking queries ----------------------------------------------------------------------------

def test_blocking_health_query_waits_then_returns_early_on_change(c):
    c.agent.service.register("queue", service_id="queue-1", port=5672)
    index, entries = c.health.service("queue")
    assert [e["Service"]["ID"] for e in entries] == ["queue-1"]

    # Nothing changes: the call waits for about `wait` and answers with the same index.
    t0 = time.monotonic()
    same_index, same = c.health.service("queue", index=index, wait="1s")
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3, f"a blocking query with nothing to report took {elapsed:.2f}s (wait=1s)"
    assert same_index == index
    assert same == entries

    (new_index, new_entries), elapsed = block_then_change(
        lambda: c.health.service("queue", index=index, wait="5s"),
        lambda: c.agent.service.register("queue", service_id="queue-2", port=5673))
    assert elapsed < 2.5, f"blocking query took {elapsed:.2f}s to see a new instance"
    assert int(new_index) > int(index)
    assert sorted(e["Service"]["ID"] for e in new_entries) == ["queue-1", "queue-2"]


def test_blocking_kv_get_returns_early_on_change(c):
    c.kv.put("cfg/flag", "off")
    index, entry = c.kv.get("cfg/flag")
    (new_index, new_entry), elapsed = block_then_change(
        lambda: c.kv.get("cfg/flag", index=index, wait="5s"), lambda: c.kv.put("cfg/flag", "on"))
    assert elapsed < 2.5
    assert int(new_index) > int(index)
    assert new_entry["Value"] == b"on"


# --- KV ------------------------------------------------------------------------------------------

def test_kv_put_get_cas_recurse_delete(c):
    index, missing = c.kv.get("app/config/db")
    assert missing is None and int(index) > 0

    assert c.kv.put("app/config/db", "postgres://a") is True
    assert c.kv.put("app/config/cache", "redis://b", flags=42) is True
    assert c.kv.put("app/other", b"\x00\x01binary\xff") is True

    _, entry = c.kv.get("app/config/db")
    assert entry["Key"] == "app/config/db"
    assert entry["Value"] == b"postgres://a"
    assert entry["Flags"] == 0
    modify = entry["ModifyIndex"]
    assert entry["CreateIndex"] == modify

    _, cache = c.kv.get("app/config/cache")
    assert cache["Flags"] == 42
    _, other = c.kv.get("app/other")
    assert other["Value"] == b"\x00\x01binary\xff"

    # CAS: a stale index fails and changes nothing; the current one succeeds.
    assert c.kv.put("app/config/db", "postgres://stale", cas=modify + 1000) is False
    assert c.kv.get("app/config/db")[1]["Value"] == b"postgres://a"
    assert c.kv.put("app/config/db", "postgres://c", cas=modify) is True
    _, updated = c.kv.get("app/config/db")
    assert updated["Value"] == b"postgres://c"
    assert updated["ModifyIndex"] > modify
    assert updated["CreateIndex"] == entry["CreateIndex"]
    assert c.kv.put("app/config/db", "again", cas=modify) is False
    # cas=0: create only.
    assert c.kv.put("app/config/db", "create-only", cas=0) is False
    assert c.kv.put("app/config/new", "created", cas=0) is True

    # Recursive get and key listing.
    _, entries = c.kv.get("app/", recurse=True)
    assert [e["Key"] for e in entries] == ["app/config/cache", "app/config/db", "app/config/new", "app/other"]
    assert {e["Key"]: e["Value"] for e in entries}["app/config/new"] == b"created"
    _, keys = c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/", "app/other"]
    _, all_keys = c.kv.get("app/", keys=True)
    assert all_keys == ["app/config/cache", "app/config/db", "app/config/new", "app/other"]

    # Delete recurse removes the prefix only.
    assert c.kv.delete("app/config/", recurse=True) is True
    _, gone = c.kv.get("app/config/", recurse=True)
    assert gone is None
    assert c.kv.get("app/config/db")[1] is None
    assert c.kv.get("app/other")[1]["Value"] == b"\x00\x01binary\xff"

    # Single delete, and CAS delete.
    _, other = c.kv.get("app/other")
    assert c.kv.delete("app/other", cas=other["ModifyIndex"] + 1000) is False
    assert c.kv.get("app/other")[1] is not None
    assert c.kv.delete("app/other", cas=other["ModifyIndex"]) is True
    assert c.kv.get("app/other")[1] is None


# --- sessions and locks --------------------------------------------------------------------------

def test_sessions_create_renew_info_destroy(c):
    sid = c.session.create(name="leader-election", ttl=10)
    assert isinstance(sid, str) and len(sid) == 36

    _, info = c.session.info(sid)
    assert info["ID"] == sid
    assert info["Name"] == "leader-election"
    assert info["TTL"] == "10s"
    assert info["Node"] == "test-node"
    assert info["Behavior"] == "release"

    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid
    assert renewed["TTL"] == "10s"

    _, sessions = c.session.list()
    assert sid in [s["ID"] for s in sessions]
    _, on_node = c.session.node("test-node")
    assert sid in [s["ID"] for s in on_node]

    assert c.session.destroy(sid) is True
    _, info = c.session.info(sid)
    assert info is None
    with pytest.raises(consul.NotFound):
        c.session.renew(sid)


def test_lock_acquire_contend_release(c):
    s1 = c.session.create(ttl=10)
    s2 = c.session.create(ttl=10, behavior="delete")

    assert c.kv.put("locks/leader", "node-a", acquire=s1) is True
    _, held = c.kv.get("locks/leader")
    assert held["Session"] == s1
    assert held["LockIndex"] == 1
    assert held["Value"] == b"node-a"

    # Another session cannot take it, nor release it.
    assert c.kv.put("locks/leader", "node-b", acquire=s2) is False
    assert c.kv.put("locks/leader", "node-b", release=s2) is False
    _, still = c.kv.get("locks/leader")
    assert still["Session"] == s1
    assert still["Value"] == b"node-a"

    # The holder re-acquiring keeps the lock (LockIndex does not move) and may update the value.
    assert c.kv.put("locks/leader", "node-a2", acquire=s1) is True
    _, again = c.kv.get("locks/leader")
    assert again["Session"] == s1 and again["LockIndex"] == 1 and again["Value"] == b"node-a2"

    assert c.kv.put("locks/leader", "node-a", release=s1) is True
    _, released = c.kv.get("locks/leader")
    assert "Session" not in released or not released["Session"]

    # Now the other session gets it.
    assert c.kv.put("locks/leader", "node-b", acquire=s2) is True
    _, taken = c.kv.get("locks/leader")
    assert taken["Session"] == s2
    assert taken["LockIndex"] == 2

    # Destroying a session with behavior=delete deletes the keys it holds.
    assert c.session.destroy(s2) is True
    assert c.kv.get("locks/leader")[1] is None

    # A release-behaviour session's destruction only releases.
    assert c.kv.put("locks/other", "x", acquire=s1) is True
    assert c.session.destroy(s1) is True
    _, kept = c.kv.get("locks/other")
    assert kept is not None and kept["Value"] == b"x"
    assert not kept.get("Session")


# --- catalog and agent views, maintenance, deregistration ---------------------------------------

def test_catalog_and_agent_views(c):
    c.agent.service.register("web", service_id="web-1", address="10.0.0.1", port=8080, tags=["blue"])
    c.agent.service.register("web", service_id="web-2", address="10.0.0.2", port=8081, tags=["green"])
    c.agent.service.register("cache", port=6379, check=consul.Check.ttl("30s"))

    index, services = c.catalog.services()
    assert int(index) > 0
    assert sorted(services["web"]) == ["blue", "green"]
    assert services["cache"] == []

    _, nodes = c.catalog.service("web")
    by_id = {n["ServiceID"]: n for n in nodes}
    assert set(by_id) == {"web-1", "web-2"}
    assert by_id["web-1"]["ServiceAddress"] == "10.0.0.1"
    assert by_id["web-1"]["ServicePort"] == 8080
    assert by_id["web-1"]["ServiceTags"] == ["blue"]
    assert by_id["web-1"]["ServiceName"] == "web"
    assert by_id["web-1"]["Node"] == "test-node"
    _, blue = c.catalog.service("web", tag="blue")
    assert [n["ServiceID"] for n in blue] == ["web-1"]
    _, none = c.catalog.service("nosuch")
    assert none == []

    _, node_list = c.catalog.nodes()
    assert [n["Node"] for n in node_list] == ["test-node"]

    agent_services = c.agent.services()
    assert set(agent_services) == {"web-1", "web-2", "cache"}
    assert agent_services["web-2"]["Service"] == "web"
    assert agent_services["web-2"]["Port"] == 8081
    assert agent_services["web-2"]["Address"] == "10.0.0.2"
    assert agent_services["web-2"]["Tags"] == ["green"]
    assert agent_services["cache"]["ID"] == "cache"

    agent_checks = c.agent.checks()
    assert agent_checks["service:cache"]["ServiceID"] == "cache"
    assert agent_checks["service:cache"]["Status"] == "critical"

    _, critical = c.health.state("critical")
    assert "service:cache" in [ch["CheckID"] for ch in critical]
    _, passing = c.health.state("passing")
    assert "service:cache" not in [ch["CheckID"] for ch in passing]
    assert "serfHealth" in [ch["CheckID"] for ch in passing]

    me = c.agent.self()
    assert me["Config"]["NodeName"] == "test-node"
    assert c.status.leader()
    assert c.status.peers()


def test_service_maintenance_through_client(c):
    c.agent.service.register("web", port=80)
    assert passing_ids(c, "web") == ["web"]
    assert c.agent.service.maintenance("web", "true", "deploying") is True
    assert passing_ids(c, "web") == []
    _, checks = c.health.checks("web")
    maint = [ch for ch in checks if ch["CheckID"] == "_service_maintenance:web"]
    assert maint and maint[0]["Status"] == "critical" and maint[0]["Notes"] == "deploying"
    assert c.agent.service.maintenance("web", "false") is True
    assert passing_ids(c, "web") == ["web"]


def test_deregister_service_through_client(c):
    """python-consul 0.7.1 deregisters with GET /v1/agent/service/deregister/<id>."""
    c.agent.service.register("web", service_id="web-1", port=80, check=consul.Check.ttl("30s"))
    c.agent.service.register("web", service_id="web-2", port=81)
    assert c.agent.service.deregister("web-1") is True, \
        "deregister (GET /v1/agent/service/deregister/web-1) was refused"
    assert set(c.agent.services()) == {"web-2"}
    assert "service:web-1" not in c.agent.checks()
    _, nodes = c.catalog.service("web")
    assert [n["ServiceID"] for n in nodes] == ["web-2"]


def test_deregister_check_through_client(c):
    """python-consul 0.7.1 deregisters checks with GET /v1/agent/check/deregister/<id>."""
    c.agent.check.register("disk", check=consul.Check.ttl("30s"), check_id="disk")
    assert "disk" in c.agent.checks()
    assert c.agent.check.deregister("disk") is True, \
        "check deregister (GET /v1/agent/check/deregister/disk) was refused"
    assert "disk" not in c.agent.checks()
