"""A small, bounded HTTP load generator for the end-to-end tests of behaviour under traffic.

`Load(url, ...)` runs `threads` client threads, each on its own keep-alive connection
(http.client), against one base URL (the gateway). Every request is recorded: when it started and
ended (time.time()), method, status, the answering instance's `version` and `instance` (from the
test services' JSON body), or the connection error. It stops by itself after `duration` seconds or
`max_requests` requests, whichever comes first, or when `stop()` is called.

`rate` (requests per second, all threads together) paces the clients open-loop; None runs them
closed-loop (each thread sends its next request when the answer came). `post_every=N` makes every
Nth request of a thread a POST with a small body (non-idempotent: the gateway may not retry it once
a byte reached the upstream). A connection the server closes is reopened; the closing itself is
not an error, but a request that got no answer is one.
"""
import http.client
import json
import threading
import time
import urllib.parse


class Record:
    __slots__ = ("t0", "t1", "method", "status", "version", "instance", "error")

    def __init__(self, t0, t1, method, status, version, instance, error):
        self.t0, self.t1, self.method, self.status = t0, t1, method, status
        self.version, self.instance, self.error = version, instance, error

    @property
    def ok(self):
        return self.error is None and 200 <= self.status < 300

    def __repr__(self):
        what = self.error or f"{self.status} v={self.version} {self.instance}"
        return f"<{self.method} @{self.t0:.3f}+{(self.t1 - self.t0) * 1000:.0f}ms {what}>"


class Load:
    def __init__(self, url, threads=4, rate=None, duration=60.0, max_requests=100000, path="/",
                 post_every=0, timeout=5.0, name="load"):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.threads = threads
        self.rate = rate
        self.duration = duration
        self.max_requests = max_requests
        self.path = path
        self.post_every = post_every
        self.timeout = timeout
        self.name = name
        self.records = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = []
        self._count = 0
        self.started_at = None
        self.reconnects = 0

    # --- running ---

    def start(self):
        self.started_at = time.time()
        deadline = time.monotonic() + self.duration
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k, deadline), name=f"{self.name}-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self, timeout=None):
        self._stop.set()
        for t in self._workers:
            t.join(timeout if timeout is not None else self.timeout + 5)
        return self

    def running(self):
        return any(t.is_alive() for t in self._workers)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def set_rate(self, rate):
        """Changes the pace (requests per second, all threads) of a running load."""
        self.rate = rate

    def _take(self):
        with self._lock:
            if self._count >= self.max_requests:
                return False
            self._count += 1
            return True

    def _run(self, k, deadline):
        conn = None
        n = 0
        next_at = time.monotonic() + (k / self.rate if self.rate else 0)
        body = json.dumps({"client": k}).encode()
        while not self._stop.is_set() and time.monotonic() < deadline and self._take():
            if self.rate:
                interval = self.threads / self.rate
                now = time.monotonic()
                if next_at > now:
                    if self._stop.wait(next_at - now):
                        break
                else:
                    next_at = max(next_at, now - interval)  # behind: catch up a little, no burst
                next_at += interval
            n += 1
            method = "POST" if self.post_every and n % self.post_every == 0 else "GET"
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            t0 = time.time()
            status, version, instance, error = 0, None, None, None
            try:
                if method == "POST":
                    conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                else:
                    conn.request("GET", self.path)
                r = conn.getresponse()
                data = r.read()
                status = r.status
                try:
                    j = json.loads(data)
                    if isinstance(j, dict):
                        version, instance = j.get("version"), j.get("instance")
                except ValueError:
                    pass
                if r.will_close:
                    conn.close()
                    conn = None
                    self.reconnects += 1
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            rec = Record(t0, time.time(), method, status, version, instance, error)
            with self._lock:
                self.records.append(rec)
        if conn is not None:
            conn.close()

    # --- results ---

    def snapshot(self):
        with self._lock:
            return list(self.records)

    def failures(self, since=None, until=None):
        return [r for r in self.snapshot() if not r.ok and (since is None or r.t0 >= since) and (until is None or r.t0 <= until)]

    def count(self):
        with self._lock:
            return len(self.records)

    def wait_count(self, n, timeout=30):
        """Waits until at least n more requests were answered; returns the total."""
        goal = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < goal and time.monotonic() < deadline and self.running():
            time.sleep(0.02)
        return self.count()

    def versions(self, since=None, until=None):
        out = {}
        for r in self.snapshot():
            if r.ok and (since is None or r.t0 >= since) and (until is None or r.t0 <= until):
                out[r.version] = out.get(r.version, 0) + 1
        return out

    def instances(self, since=None):
        out = {}
        for r in self.snapshot():
            if r.ok and (since is None or r.t0 >= since):
                out[r.instance] = out.get(r.instance, 0) + 1
        return out

    def summary(self):
        recs = self.snapshot()
        if not recs:
            return f"{self.name}: no requests"
        span = max(r.t1 for r in recs) - min(r.t0 for r in recs)
        bad = [r for r in recs if not r.ok]
        posts = sum(1 for r in recs if r.method == "POST")
        lat = sorted(r.t1 - r.t0 for r in recs)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        return (f"{self.name}: {len(recs)} requests ({posts} POST) in {span:.1f}s ({len(recs) / max(span, 1e-3):.0f}/s), "
                f"{len(bad)} failed, p99 {p99:.1f} ms, versions {self.versions()}")

    def describe_failures(self, limit=10):
        bad = [r for r in self.snapshot() if not r.ok]
        return "\n".join(repr(r) for r in bad[:limit]) + (f"\n... {len(bad) - limit} more" if len(bad) > limit else "")
