"""Gateway smoke test: `flotilla up` routes to a registered instance (fixtures shared by test_gateway_*)."""
import json
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
