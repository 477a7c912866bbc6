"""Gateway smoke test: `flotilla up` routes to a registered instance (fixtures shared by test_gateway_*)."""
import json
import os
import time
import urllib.request


def get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_routes_to_registered_instance(make_stack, make_backend):
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 1\n  routes:\n    - service: web\n")
    b = make_backend("one")
    status, _, body = get(stack.gw + "/echo")
    assert status == 503 and json.loads(body)["service"] == "web"
    stack.register("web", b)
    status, headers, body = get(stack.gw + "/echo/x?q=1")
    assert status == 200, body
    echo = json.loads(body)
    assert echo["name"] == "one" and echo["path"] == "/echo/x?q=1"


def test_threads_are_named_for_top(make_stack, data_dir):
    # `top -H`, `ps -L` and perf show /proc/PID/task/TID/comm: each gateway worker, the store's
    # writer and the access log's writer must be told apart there (docs/operations.md, Threads).
    log = os.path.join(data_dir, "access.log")
    stack = make_stack("gateway:\n  listen: [{gw}]\n  workers: 3\n  access_log: " + log +
                       "\n  routes:\n    - service: web\n")
    wanted = ("gw-worker-0", "gw-worker-1", "gw-worker-2", "sqlite-store", "access-log")
    deadline = time.time() + 10  # the ports accept (their backlog) before every thread has started
    while True:
        names = []
        for tid in os.listdir(f"/proc/{stack.proc.pid}/task"):
            try:
                with open(f"/proc/{stack.proc.pid}/task/{tid}/comm") as f:
                    names.append(f.read().strip())
            except FileNotFoundError:  # a thread that ended meanwhile
                pass
        if all(n in names for n in wanted) or time.time() > deadline:
            break
        time.sleep(0.05)
    for name in wanted:
        assert names.count(name) == 1, names
    assert "gw-worker-3" not in names and "flotilla" in names, names
