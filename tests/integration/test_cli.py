"""The CLI as a user runs it: version, help, and the API-client subcommands against a real agent."""
import json
import os
import socket
import subprocess

from conftest import BIN, free_port, free_ports


def run(*args, api=None, stdin=None):
    env = dict(os.environ)
    if api:
        env["FLOTILLA_API"] = api
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, env=env, timeout=30)


def test_version_and_help():
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("flotilla ")
    r = run("--help")
    assert r.returncode == 0
    for sub in ("agent", "kv", "services", "version"):
        assert sub in r.stdout
    r = run("agent", "--help")
    assert "--data-dir" in r.stdout and "--token" in r.stdout
    r = run("no-such-command")
    assert r.returncode != 0


def test_kv_round_trip(agent):
    assert run("kv", "put", "app/color", "blue", api=agent.addr).returncode == 0
    assert run("kv", "put", "app/size", "-", api=agent.addr, stdin="large\n").returncode == 0
    r = run("kv", "get", "app/color", api=agent.addr)
    assert (r.returncode, r.stdout) == (0, "blue\n")
    # --api may come before or after the kv verb.
    env_free = subprocess.run([BIN, "kv", "get", "app/color", "--api", agent.addr], capture_output=True, text=True)
    assert (env_free.returncode, env_free.stdout) == (0, "blue\n"), env_free.stderr
    r = run("kv", "list", "app/", api=agent.addr)
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["app/color", "app/size"]
    # --cas: a stale index is refused with a clear message and a non-zero exit.
    r = run("kv", "put", "app/color", "red", "--cas", "999999", api=agent.addr)
    assert r.returncode == 1 and "not written" in r.stderr
    assert run("kv", "get", "app/color", api=agent.addr).stdout == "blue\n"
    assert run("kv", "delete", "app", "--recurse", api=agent.addr).returncode == 0
    r = run("kv", "get", "app/color", api=agent.addr)
    assert r.returncode == 1 and "no key" in r.stderr


def test_services_lists_instances_with_health(agent):
    agent.request("PUT", "/v1/agent/service/register",
                  {"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"], "Check": {"TTL": "30s"}})
    agent.request("PUT", "/v1/agent/service/register",
                  {"Name": "web", "ID": "web-2", "Port": 8081, "Check": {"TTL": "30s"}})
    agent.request("PUT", "/v1/agent/check/pass/service:web-1")
    r = run("services", "--json", api=agent.addr)
    assert r.returncode == 0, r.stderr
    rows = {e["id"]: e for e in json.loads(r.stdout)}
    assert rows["web-1"]["health"] == "passing" and rows["web-1"]["tags"] == ["v1"]
    assert rows["web-2"]["health"] == "critical"
    r = run("services", api=agent.addr)
    assert "web-1" in r.stdout and "127.0.0.1:8081" in r.stdout


def test_unreachable_agent_is_one_readable_line():
    r = run("services", api=f"127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1
    assert "cannot reach the flotilla agent" in r.stderr
    # A bad address is a usage error (exit 2), as for every command that talks to the agent.
    r = run("kv", "get", "x", api="not-an-address")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_second_agent_on_same_data_dir_is_refused(agent):
    r = subprocess.run([BIN, "agent", "--api", f"127.0.0.1:{free_port()}", "--data-dir", agent.data_dir],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "in use by another running agent" in r.stderr
    # The first agent is untouched.
    assert agent.request("GET", "/v1/status/leader")[0] == 200


def test_config_check(tmp_path):
    good = tmp_path / "flotilla.yaml"
    good.write_text("name: shop\ngateway:\n  routes:\n    - match: {path_prefix: /api}\n      service: api\n")
    r = run("config", "check", "-f", str(good))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and "/api -> api" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: shop\ngateway:\n  routes:\n    - service: api\n      timeout: forever\n")
    r = run("config", "check", "-f", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip() == f"{bad}:5:16: timeout must be a duration such as 250ms, 10s or 5m"
    r = run("config", "check", "-f", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "cannot read the file" in r.stderr
    # It prints every setting it understood, so a misread one shows.
    full = tmp_path / "full.yaml"
    full.write_text("name: shop\ngateway:\n  trusted_proxies: [10.0.0.0/8, '::1']\n  routes:\n"
                    "    - match: {path_prefix: /m, methods: [POST], headers: {X-Env: prod}}\n"
                    "      service: api\n      strip_prefix: true\n      max_body: 1KiB\n"
                    "      retry: {attempts: 3, on: [reset], per_try_timeout: 1s}\n"
                    "      rate_limit: {requests_per_second: 5, key: route}\n      on_client_close: wait\n"
                    "services:\n  api: {load_balancer: least_request}\n")
    r = run("config", "check", "-f", str(full))
    assert r.returncode == 0, r.stderr
    for part in ["methods POST", "header x-env: prod", "strip prefix", "max body 1024 bytes", "retry 3 tries on reset, 1s each",
                 "rate limit 5/s burst 5 per route", "a client's close waits", "service api at the gateway: least_request",
                 "trusted proxies (X-Forwarded-For/-Proto believed from): 10.0.0.0/8 ::1"]:
        assert part in r.stdout, (part, r.stdout)
    # What the listeners could not bind is found here, not when `up` starts.
    star = tmp_path / "star.yaml"
    star.write_text("name: shop\ngateway:\n  listen: '*:8080'\n")
    r = run("config", "check", "-f", str(star))
    assert r.returncode == 1 and "is not an IP address" in r.stderr
    # A directory is named as one (it read as an empty file).
    r = run("config", "check", "-f", str(tmp_path))
    assert r.returncode == 1 and "is a directory" in r.stderr, r.stderr
    # --gateway checks the file as `flotilla gateway` reads it: no agent.api beside the listeners.
    alone = tmp_path / "alone.yaml"
    alone.write_text("name: shop\nagent: {api: 127.0.0.1:7700}\ngateway:\n  listen: [127.0.0.1:7700]\n"
                     "  routes:\n    - service: api\n")
    assert run("config", "check", "-f", str(alone)).returncode == 1
    r = run("config", "check", "--gateway", "-f", str(alone))
    assert r.returncode == 0 and "as flotilla gateway reads it" in r.stdout, r.stderr
    # Warnings: a route an earlier one covers.
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text("name: shop\ngateway:\n  routes:\n    - service: api\n    - {service: web, match: {path: /x}}\n")
    r = run("config", "check", "-f", str(shadow))
    assert r.returncode == 0 and f"warning: {shadow}:5: this route never gets a request" in r.stderr, r.stderr


def test_up_names_the_access_log_when_it_cannot_open_it(tmp_path):
    # A missing directory is made; one that cannot be (a file is in its place) fails the start.
    f = tmp_path / "flotilla.yaml"
    (tmp_path / "blocker").write_text("a file, not a directory")
    api, listen = free_ports(2)
    f.write_text(f"name: shop\nagent:\n  api: 127.0.0.1:{api}\n  data_dir: data\n"
                 f"gateway:\n  listen: [127.0.0.1:{listen}]\n  access_log: {tmp_path}/blocker/dir/a.log\n")
    r = subprocess.run([BIN, "up", "-f", str(f)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "cannot open access log" in r.stderr and "gateway.listen" not in r.stderr, r.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created
    # The gateway alone says the same (it used to abort with an uncaught exception).
    r = subprocess.run([BIN, "gateway", "-f", str(f), "--registry", f"http://127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "cannot open access log" in r.stderr, r.stderr


def test_a_port_out_of_range_is_refused_not_wrapped():
    # The resolver reads 85117 as 85117 % 65536 = 19581: another application's agent, maybe.
    for port in ("85117", "0", "99999", "http"):
        r = subprocess.run([BIN, "status", "--api", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and "from 1 to 65535" in r.stderr and f"127.0.0.1:{port}" in r.stderr, (port, r.stderr)


def test_agent_api_flag_errors_are_clear_and_create_nothing(tmp_path):
    # A host name is refused before anything happens, with the reason.
    r = subprocess.run([BIN, "agent", "--api", "example.invalid:7700", "--data-dir", str(tmp_path / "a")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "IP address" in r.stderr
    # A taken port fails before the data dir is created.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([BIN, "agent", "--api", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "Address already in use" in r.stderr and "--api" in r.stderr
    assert not (tmp_path / "b").exists()


def test_cli_token_for_a_protected_agent(make_agent):
    a = make_agent(["--token", "s3cret"]).start()
    r = run("kv", "put", "k", "v", api=a.addr)
    assert r.returncode == 1 and "token" in r.stderr
    assert run("kv", "put", "k", "v", "--token", "s3cret", api=a.addr).returncode == 0
    assert run("kv", "get", "k", api=a.addr).stdout == "v\n"
    r = run("kv", "put", "k", "w", "--cas", "0", "--token", "s3cret", api=a.addr)
    assert r.returncode == 1 and "already exists" in r.stderr
