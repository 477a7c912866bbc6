"""Durability under kill -9: every write the agent acknowledged survives a crash at any moment,
the index never goes back, blocking queries with a pre-crash index still answer, and session TTLs
restart from the restart.

Writers are threads of this process; the agent is killed with SIGKILL by PID and restarted on the
same data dir and port. Every loop is bounded in count and in time.
"""
import base64
import json
import random
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import wait_for

WRITERS = 16
ROUNDS = 5
MAX_OPS_PER_WRITER_ROUND = 5000  # a bound; a round lasts at most 1.5 s anyway
SERVICE_EVERY = 4  # every 4th write of a writer is a service registration



def raw_request(url, method, path, body=None, timeout=10):
    """(status, headers, body) or None when the agent is not there (refused, reset, killed)."""
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (OSError, urllib.error.URLError, ConnectionError):
        return None


class Writer(threading.Thread):
    """Writes unique KV keys and registers unique services until told to stop; remembers what
    the agent acknowledged."""

    def __init__(self, url, round_no, n, stop, acked_kv, acked_svc, lock):
        super().__init__(daemon=True)
        self.url, self.round_no, self.n, self.stop_event = url, round_no, n, stop
        self.acked_kv, self.acked_svc, self.lock = acked_kv, acked_svc, lock
        self.attempts = self.failures = 0

    def run(self):
        for seq in range(MAX_OPS_PER_WRITER_ROUND):
            if self.stop_event.is_set():
                return
            self.attempts += 1
            if seq % SERVICE_EVERY == SERVICE_EVERY - 1:
                sid = f"dur-{self.round_no}-{self.n}-{seq}"
                reg = {"Name": f"dur-svc-{self.n}", "ID": sid, "Port": 1000 + seq,
                       "Tags": [f"r{self.round_no}"], "Meta": {"round": str(self.round_no), "seq": str(seq)}}
                r = raw_request(self.url, "PUT", "/v1/agent/service/register", json.dumps(reg))
                if r is not None and r[0] == 200:
                    with self.lock:
                        self.acked_svc[sid] = reg
                    continue
            else:
                key = f"dur/{self.round_no}/{self.n}/{seq}"
                value = f"value-{self.round_no}-{self.n}-{seq}-{random.getrandbits(64):016x}"
                r = raw_request(self.url, "PUT", "/v1/kv/" + key, value)
                if r is not None and r[0] == 200 and r[2].strip() == b"true":
                    with self.lock:
                        self.acked_kv[key] = value
                    continue
            self.failures += 1
            if r is None:
                time.sleep(0.01)  # the agent is down (being killed): don't spin


class IndexWatcher(threading.Thread):
    """Polls /v1/kv/?recurse and /v1/catalog/services and remembers the highest X-Consul-Index
    of each among the answers received."""

    def __init__(self, url, stop):
        super().__init__(daemon=True)
        self.url, self.stop_event = url, stop
        self.kv = self.catalog = 0
        self.answers = 0
        self.bad = []

    def run(self):
        for i in range(100000):
            if self.stop_event.is_set():
                return
            path = "/v1/catalog/services" if i % 2 else "/v1/kv/?recurse"
            r = raw_request(self.url, "GET", path)
            if r is None or r[0] not in (200, 404):
                time.sleep(0.01)
                continue
            idx = int(r[1]["X-Consul-Index"])
            if idx <= 0:
                self.bad.append(path)  # an index of 0 tells Consul clients not to block
            self.answers += 1
            if i % 2:
                self.catalog = max(self.catalog, idx)
            else:
                self.kv = max(self.kv, idx)
            time.sleep(0.02)


def index_of(agent, path):
    status, headers, _ = agent.request("GET", path)
    assert status in (200, 404), (path, status)
    return int(headers["X-Consul-Index"])


def blocking_answers_within_wait(agent, path, index, wait_s=2.0):
    t0 = time.monotonic()
    status, headers, _ = agent.request("GET", f"{path}{'&' if '?' in path else '?'}index={index}&wait={wait_s:g}s",
                                       timeout=wait_s + 10)
    took = time.monotonic() - t0
    assert status in (200, 404), (path, status)
    # wait plus Consul's jitter (wait/16) plus scheduling slack; a hang hits the client timeout.
    assert took <= wait_s * 17 / 16 + 2.0, f"{path} with index {index} took {took:.2f}s (wait {wait_s}s)"
    return int(headers["X-Consul-Index"]), took


def test_acknowledged_writes_survive_kill9(make_agent):
    agent = make_agent().start()
    acked_kv, acked_svc, lock = {}, {}, threading.Lock()
    rng = random.Random()
    prev_kv_index = prev_catalog_index = 0
    stats = []
    answered = 0
    for round_no in range(ROUNDS):
        stop = threading.Event()
        writers = [Writer(agent.url, round_no, n, stop, acked_kv, acked_svc, lock) for n in range(WRITERS)]
        watcher = IndexWatcher(agent.url, stop)
        for w in writers:
            w.start()
        watcher.start()
        time.sleep(rng.uniform(0.3, 1.5))
        agent.kill9()
        stop.set()
        for t in writers + [watcher]:
            t.join(timeout=20)
            assert not t.is_alive(), "a writer did not stop"
        # A short round under a slow build (ASan, 2 busy cores) may end before the watcher's first
        # answer; a query that got no answer proves nothing, one that did must not go back.
        assert not watcher.bad, f"round {round_no}: answers without an index: {watcher.bad[:3]}"
        if watcher.kv:
            assert watcher.kv >= prev_kv_index, f"round {round_no}: KV index {watcher.kv} < {prev_kv_index}"
        if watcher.catalog:
            assert watcher.catalog >= prev_catalog_index, \
                f"round {round_no}: catalog index {watcher.catalog} < {prev_catalog_index}"
        seen_kv, seen_catalog = max(watcher.kv, prev_kv_index), max(watcher.catalog, prev_catalog_index)
        answered += watcher.answers
        stats.append((sum(w.attempts for w in writers), len(acked_kv), len(acked_svc)))

        agent.start()
        # The index keeps growing: nothing a client saw before the crash is newer than now.
        kv_index = index_of(agent, "/v1/kv/?recurse")
        catalog_index = index_of(agent, "/v1/catalog/services")
        assert kv_index >= seen_kv, f"round {round_no}: KV index {kv_index} after restart < {seen_kv} before kill"
        assert catalog_index >= seen_catalog, \
            f"round {round_no}: catalog index {catalog_index} after restart < {seen_catalog} before kill"
        # A blocking query with the last index seen before the kill answers within its wait.
        idx, _ = blocking_answers_within_wait(agent, "/v1/kv/?recurse", seen_kv)
        assert idx >= seen_kv
        idx, _ = blocking_answers_within_wait(agent, "/v1/catalog/services", seen_catalog)
        assert idx >= seen_catalog
        prev_kv_index, prev_catalog_index = kv_index, catalog_index

    print(f"\nper round (attempts, total acked KV, total acked services): {stats}; index answers {answered}")
    assert answered > 0, "the index watcher never got an answer"
    assert len(acked_kv) > 100 and len(acked_svc) > 30, "too few writes acknowledged to mean anything"

    # Every acknowledged write is there, with its value.
    status, _, entries = agent.json("GET", "/v1/kv/dur/?recurse")
    assert status == 200
    stored = {e["Key"]: base64.b64decode(e["Value"]).decode() if e["Value"] else "" for e in entries}
    missing = sorted(k for k in acked_kv if k not in stored)
    wrong = sorted(k for k in acked_kv if k in stored and stored[k] != acked_kv[k])
    assert not missing, f"{len(missing)} of {len(acked_kv)} acknowledged KV writes lost, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} acknowledged KV writes have another value, e.g. {wrong[:5]}"

    status, _, services = agent.json("GET", "/v1/agent/services")
    assert status == 200
    lost = sorted(s for s in acked_svc if s not in services)
    assert not lost, f"{len(lost)} of {len(acked_svc)} acknowledged registrations lost, e.g. {lost[:5]}"
    for sid, reg in acked_svc.items():
        s = services[sid]
        assert (s["Service"], s["Port"], s["Tags"], s["Meta"]) == (reg["Name"], reg["Port"], reg["Tags"], reg["Meta"])

    # And the index still moves forward on the next write.
    before = index_of(agent, "/v1/kv/?recurse")
    status, _, body = agent.request("PUT", "/v1/kv/dur/final", "x")
    assert (status, body) == (200, b"true")
    assert index_of(agent, "/v1/kv/?recurse") > before
    assert agent.stop() == 0, agent.read_log()


def test_session_ttl_restarts_from_restart_and_releases_lock(make_agent):
    ttl = 5.0
    agent = make_agent().start()
    status, _, body = agent.json("PUT", "/v1/session/create", {"Name": "leader", "TTL": "5s", "LockDelay": "0s"})
    assert status == 200
    sid = body["ID"]
    status, _, body = agent.json("PUT", "/v1/session/create", {"Name": "renewed", "TTL": "5s"})
    assert status == 200
    renewed = body["ID"]
    status, _, body = agent.request("PUT", f"/v1/kv/service/leader?acquire={sid}", "me")
    assert (status, body) == (200, b"true")
    created = time.monotonic()

    time.sleep(2.0)
    agent.kill9()
    # Down for long enough that the TTL would have run out had it kept counting.
    time.sleep(max(0.0, created + ttl + 1.0 - time.monotonic()))
    agent.start()
    restarted = time.monotonic()

    status, _, info = agent.json("GET", f"/v1/session/info/{sid}")
    assert status == 200 and [s["ID"] for s in info] == [sid], "TTL session gone right after restart"
    status, _, kv = agent.json("GET", "/v1/kv/service/leader")
    assert status == 200 and kv[0].get("Session") == sid, kv

    def session_exists(s):
        status, _, info = agent.json("GET", f"/v1/session/info/{s}")
        assert status == 200
        return bool(info)

    # No renewals for sid; renewed gets one every second and must outlive it.
    gone_at = None
    deadline = restarted + ttl + 5.0
    next_renew = restarted
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_renew:
            status, _, _ = agent.request("PUT", f"/v1/session/renew/{renewed}")
            assert status == 200, f"renewing a live session after restart failed: {status}"
            next_renew = now + 1.0
        if not session_exists(sid):
            gone_at = time.monotonic() - restarted
            break
        time.sleep(0.05)
    assert gone_at is not None, f"session with TTL {ttl}s still there {ttl + 5}s after restart"
    print(f"\nTTL {ttl:g}s session invalidated {gone_at:.2f}s after the restart "
          f"({time.monotonic() - created:.2f}s after creation)")
    assert gone_at >= ttl - 1.0, f"session invalidated {gone_at:.2f}s after restart: its TTL did not restart"
    assert gone_at <= ttl + 3.0

    # Its lock is released (behavior release: the key stays, its Session goes).
    def released():
        status, _, kv = agent.json("GET", "/v1/kv/service/leader")
        assert status == 200, "key deleted; behavior is release"
        return "Session" not in kv[0] or not kv[0]["Session"]

    wait_for(released, 3, what="the lock of the expired session to be released")
    status, _, kv = agent.json("GET", "/v1/kv/service/leader")
    assert base64.b64decode(kv[0]["Value"]) == b"me"
    assert session_exists(renewed), "a renewed session was invalidated too"
    status, _, body = agent.request("PUT", f"/v1/kv/service/leader?acquire={renewed}", "new")
    assert (status, body) == (200, b"true"), "lock not acquirable after the holder expired"
    assert agent.stop() == 0, agent.read_log()
